#!/usr/bin/env python3
"""Checks the Vault emulator with a third-party client (hvac 2.4.0).

Usage: vault_conformance.py <vault url> <token>
KV v2 at secret/: write, read, cas conflict, second version, read of an old version, list,
soft delete, missing path (InvalidPath), and a wrong token (Forbidden).
"""
import sys

import hvac
from hvac import exceptions


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        fail("usage: vault_conformance.py <vault url> <token>")
    url, token = sys.argv[1], sys.argv[2]
    c = hvac.Client(url=url, token=token)
    if not c.is_authenticated():
        fail("root token not authenticated")
    kv = c.secrets.kv.v2
    w = kv.create_or_update_secret(path="py/app", secret={"k": "v1"}, cas=0)
    if w["data"]["version"] != 1:
        fail(f"first version {w}")
    r = kv.read_secret_version(path="py/app", raise_on_deleted_version=True)
    if r["data"]["data"] != {"k": "v1"} or r["data"]["metadata"]["version"] != 1:
        fail(f"read {r}")
    try:
        kv.create_or_update_secret(path="py/app", secret={"k": "x"}, cas=0)
        fail("cas=0 on an existing secret succeeded")
    except exceptions.InvalidRequest:
        pass
    kv.create_or_update_secret(path="py/app", secret={"k": "v2"}, cas=1)
    old = kv.read_secret_version(path="py/app", version=1, raise_on_deleted_version=True)
    if old["data"]["data"] != {"k": "v1"}:
        fail(f"version 1 {old}")
    keys = kv.list_secrets(path="py")["data"]["keys"]
    if keys != ["app"]:
        fail(f"list {keys}")
    meta = kv.read_secret_metadata(path="py/app")
    if meta["data"]["current_version"] != 2:
        fail(f"metadata {meta}")
    kv.delete_latest_version_of_secret(path="py/app")
    try:
        kv.read_secret_version(path="py/app", raise_on_deleted_version=True)
        fail("deleted version still readable")
    except exceptions.InvalidPath:
        pass
    try:
        kv.read_secret_version(path="py/none", raise_on_deleted_version=True)
        fail("missing secret readable")
    except exceptions.InvalidPath:
        pass
    bad = hvac.Client(url=url, token="wrong")
    try:
        bad.secrets.kv.v2.read_secret_version(path="py/app", raise_on_deleted_version=True)
        fail("wrong token accepted")
    except exceptions.Forbidden:
        pass
    print("vault conformance: ok")


if __name__ == "__main__":
    main()
