#!/usr/bin/env python3
"""Third-party conformance check of Consul ACL enforcement (the jobforge dev stack's emulator with
--consul-acl-initial-management, or a real agent with ACLs on and default policy deny) with the
py-consul package.

Usage: consul_acl_conformance.py http://127.0.0.1:8500 <management token>
Exit code 0 when every scenario passes; each scenario prints one line.
"""

import json
import sys
import urllib.parse
import uuid

import consul
from consul.callback import CB
from consul.exceptions import ACLPermissionDenied


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: consul_acl_conformance.py <http://host:port> <management token>", file=sys.stderr)
        return 2
    url = urllib.parse.urlparse(sys.argv[1])
    management = sys.argv[2]

    def client(token):
        return consul.Consul(host=url.hostname, port=url.port, scheme=url.scheme or "http", token=token)

    admin = client(management)
    run = uuid.uuid4().hex[:8]
    mine, theirs = f"acl-{run}/team-a/", f"acl-{run}/team-b/"
    # py-consul sends the rules JSON-encoded (Consul accepts policy rules as HCL or JSON).
    policy = admin.acl.policy.create(
        name=f"team-a-{run}",
        rules={
            "key_prefix": {mine: {"policy": "write"}},
            "session_prefix": {"": {"policy": "write"}},
        },
    )
    token = admin.acl.token.create(policies_id=[policy["ID"]], description="team a")
    team = client(token["SecretID"])
    anonymous = client(None)
    admin.kv.put(theirs + "secret", "b")
    admin.kv.put(mine + "seed", "a")

    failures = []

    def scenario(fn, *args):
        try:
            fn(*args)
            print(f"ok   {fn.__name__}")
        except Exception as e:  # noqa: BLE001 - report every scenario
            print(f"FAIL {fn.__name__}: {e!r}")
            failures.append(fn.__name__)

    scenarios = (
        (token_reads_itself_with_its_policy, team, token, policy),
        (writes_inside_the_key_prefix_succeed, team, mine),
        (writes_outside_the_key_prefix_are_403, team, theirs),
        (reads_outside_the_key_prefix_are_403, team, theirs),
        (recursive_get_lists_only_readable_keys, team, admin, f"acl-{run}/", mine),
        (keys_listing_is_filtered_too, team, f"acl-{run}/", mine),
        (anonymous_token_is_denied, anonymous, mine),
        (unknown_token_is_denied, client(str(uuid.uuid4())), mine),
        (txn_with_one_denied_op_changes_nothing, team, admin, mine, theirs),
        (lock_needs_key_write, team, mine, theirs),
    )
    for fn, *args in scenarios:
        scenario(fn, *args)
    print(f"{len(scenarios) - len(failures)}/{len(scenarios)} scenarios passed")
    return 1 if failures else 0


def expect_denied(call):
    try:
        call()
    except ACLPermissionDenied as e:
        return str(e)
    raise AssertionError("expected 403 Permission denied, the call succeeded")


def token_reads_itself_with_its_policy(team, token, policy):
    me = team.acl.token.read_self()
    assert me["AccessorID"] == token["AccessorID"], me
    assert [p["ID"] for p in me["Policies"]] == [policy["ID"]], me


def writes_inside_the_key_prefix_succeed(team, mine):
    assert team.kv.put(mine + "k", "v") is True
    _, v = team.kv.get(mine + "k")
    assert v["Value"] == b"v", v
    assert team.kv.delete(mine + "k") is True


def writes_outside_the_key_prefix_are_403(team, theirs):
    text = expect_denied(lambda: team.kv.put(theirs + "x", "v"))
    assert "Permission denied" in text and "key:write" in text, text
    expect_denied(lambda: team.kv.delete(theirs, recurse=True))


def reads_outside_the_key_prefix_are_403(team, theirs):
    text = expect_denied(lambda: team.kv.get(theirs + "secret"))
    assert "key:read" in text, text


def recursive_get_lists_only_readable_keys(team, admin, root, mine):
    _, everything = admin.kv.get(root, recurse=True)
    assert len(everything) >= 2, everything
    _, visible = team.kv.get(root, recurse=True)
    keys = [e["Key"] for e in visible or []]
    assert keys and all(k.startswith(mine) for k in keys), keys


def keys_listing_is_filtered_too(team, root, mine):
    _, keys = team.kv.get(root, keys=True, separator="/")
    assert keys == [mine], keys


def anonymous_token_is_denied(anonymous, mine):
    text = expect_denied(lambda: anonymous.kv.put(mine + "anon", "v"))
    assert "anonymous token" in text, text


def unknown_token_is_denied(stranger, mine):
    text = expect_denied(lambda: stranger.kv.get(mine + "seed"))
    assert "ACL not found" in text, text


def txn_with_one_denied_op_changes_nothing(team, admin, mine, theirs):
    import base64

    def b64(s):
        return base64.b64encode(s.encode()).decode()

    ops = [
        {"KV": {"Verb": "set", "Key": mine + "txn", "Value": b64("a")}},
        {"KV": {"Verb": "set", "Key": theirs + "txn", "Value": b64("b")}},
    ]
    # py-consul's txn.put sends no token; its HTTP layer with the token's header does.
    try:
        team.http.put(CB.json(), "/v1/txn", data=json.dumps(ops), headers=team.prepare_headers())
        raise AssertionError("a txn with a denied op committed")
    except consul.ConsulException as e:
        text = str(e)
        assert text.startswith("409 "), text
        errors = json.loads(text[4:])["Errors"]
        assert [x["OpIndex"] for x in errors] == [1], errors
        assert errors[0]["What"].startswith("Permission denied"), errors
    _, v = admin.kv.get(mine + "txn")
    assert v is None, v


def lock_needs_key_write(team, mine, theirs):
    sid = team.session.create(ttl=30)
    try:
        assert team.kv.put(mine + "lock", "x", acquire=sid) is True
        expect_denied(lambda: team.kv.put(theirs + "lock", "x", acquire=sid))
        assert team.kv.put(mine + "lock", "x", release=sid) is True
    finally:
        team.session.destroy(sid)


if __name__ == "__main__":
    sys.exit(main())
