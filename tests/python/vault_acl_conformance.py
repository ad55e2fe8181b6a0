#!/usr/bin/env python3
"""Checks the Vault emulator's ACL policies and tokens with a third-party client (hvac 2.4.0).

Usage: vault_acl_conformance.py <vault url> <root token>
As an operator: writes a policy (sys.create_or_update_acl_policy) and reads it back, creates a
token with it (auth.token.create), and checks with that token (auth.token.lookup_self) that it
reads and writes inside the policy and is refused (hvac.exceptions.Forbidden, Vault's 403 body)
outside it; that it cannot mint a token with more policies, nor an orphan; that revoking it
revokes its child; that a malformed policy is refused. Exits non-zero on the first mismatch.
"""
import sys

import hvac
from hvac import exceptions

DENIED = "1 error occurred:\n\t* permission denied\n\n"

TEAM_A = """
path "secret/data/team-a/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/team-a/*" {
  capabilities = ["list"]
}
path "auth/token/create" {
  capabilities = ["update"]
}
"""


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def forbidden(what, f):
    try:
        f()
    except exceptions.Forbidden as e:
        if DENIED not in (e.errors or []):
            fail(f"{what}: 403 body {e.errors!r}, want [{DENIED!r}]")
        return
    fail(f"{what}: was allowed")


def invalid(what, f):
    try:
        f()
    except exceptions.InvalidRequest:
        return
    fail(f"{what}: was not refused with 400")


def main():
    if len(sys.argv) != 3:
        fail("usage: vault_acl_conformance.py <vault url> <root token>")
    url, root_token = sys.argv[1], sys.argv[2]
    root = hvac.Client(url=url, token=root_token)
    root.sys.create_or_update_acl_policy(name="team-a", policy=TEAM_A)
    read_back = root.sys.read_acl_policy(name="team-a")["data"]["policy"]
    if read_back != TEAM_A:
        fail(f"policy read back {read_back!r}")
    names = root.sys.list_acl_policies()["data"]["keys"]
    for n in ("default", "root", "team-a"):
        if n not in names:
            fail(f"policy list {names} lacks {n}")
    invalid("a policy with an unknown capability",
            lambda: root.sys.create_or_update_acl_policy(
                name="bad", policy='path "x" { capabilities = ["fly"] }'))
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path="team-a/git", secret={"token": "a-secret"})
    kv.create_or_update_secret(path="team-b/git", secret={"token": "b-secret"})

    created = root.auth.token.create(policies=["team-a"], ttl="1h", display_name="build")
    token = created["auth"]["client_token"]
    if created["auth"]["policies"] != ["default", "team-a"]:
        fail(f"token policies {created['auth']['policies']}")
    a = hvac.Client(url=url, token=token)
    me = a.auth.token.lookup_self()["data"]
    if me["policies"] != ["default", "team-a"] or me["display_name"] != "token-build":
        fail(f"lookup_self {me}")
    if not 3500 <= me["ttl"] <= 3600:
        fail(f"ttl {me['ttl']}")

    akv = a.secrets.kv.v2
    got = akv.read_secret_version(path="team-a/git", raise_on_deleted_version=True)
    if got["data"]["data"] != {"token": "a-secret"}:
        fail(f"own secret {got}")
    akv.create_or_update_secret(path="team-a/new", secret={"k": "v"})
    if akv.list_secrets(path="team-a")["data"]["keys"] != ["git", "new"]:
        fail("listing its own folder")
    forbidden("reading another team's secret",
              lambda: akv.read_secret_version(path="team-b/git", raise_on_deleted_version=True))
    forbidden("writing another team's secret",
              lambda: akv.create_or_update_secret(path="team-b/git", secret={"k": "x"}))
    forbidden("listing another team's folder", lambda: akv.list_secrets(path="team-b"))
    forbidden("reading metadata it was not granted",
              lambda: akv.read_secret_metadata(path="team-a/git"))
    forbidden("writing a policy", lambda: a.sys.create_or_update_acl_policy(
        name="team-a", policy='path "*" { capabilities = ["sudo", "read"] }'))
    forbidden("reading a policy", lambda: a.sys.read_acl_policy(name="team-a"))
    # The token store: no escalation through child tokens.
    invalid("a child with a policy the parent lacks",
            lambda: a.auth.token.create(policies=["team-b"]))
    invalid("a root child", lambda: a.auth.token.create(policies=["root"]))
    invalid("an orphan without sudo", lambda: a.auth.token.create(policies=["team-a"], no_parent=True))
    child = a.auth.token.create(policies=["team-a"])["auth"]["client_token"]
    c = hvac.Client(url=url, token=child)
    c.auth.token.lookup_self()
    # Revoking the parent revokes the child; both are then unknown (403).
    a.auth.token.revoke_self()
    forbidden("lookup with a revoked token", lambda: a.auth.token.lookup_self())
    forbidden("lookup with the child of a revoked token", lambda: c.auth.token.lookup_self())
    forbidden("an unknown token", lambda: hvac.Client(url=url, token="hvs.nope").auth.token.lookup_self())
    # The older sys/policy API that hvac also speaks.
    root.sys.create_or_update_policy(name="legacy", policy='path "secret/data/legacy" { capabilities = ["read"] }')
    legacy = root.sys.read_policy(name="legacy")
    if "secret/data/legacy" not in legacy["data"]["rules"]:
        fail(f"legacy policy read back {legacy}")
    root.sys.delete_acl_policy(name="team-a")
    if "team-a" in root.sys.list_acl_policies()["data"]["keys"]:
        fail("deleted policy still listed")
    invalid("deleting the default policy", lambda: root.sys.delete_acl_policy(name="default"))
    print("vault acl conformance: ok")


if __name__ == "__main__":
    main()
