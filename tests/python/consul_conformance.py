#!/usr/bin/env python3
"""Third-party conformance check of a Consul HTTP API (the jobforge dev stack's emulator, or a
real agent) with the py-consul package.

Usage: consul_conformance.py http://127.0.0.1:8500
Exit code 0 when every scenario passes; each scenario prints one line.
"""

import base64
import sys
import threading
import time
import urllib.parse
import uuid

import consul
from consul.exceptions import ClientError


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: consul_conformance.py <http://host:port>", file=sys.stderr)
        return 2
    url = urllib.parse.urlparse(sys.argv[1])
    c = consul.Consul(host=url.hostname, port=url.port, scheme=url.scheme or "http")
    prefix = f"conformance/{uuid.uuid4()}/"
    failures = []

    def scenario(fn):
        try:
            fn(c, prefix)
            print(f"ok   {fn.__name__}")
        except Exception as e:  # noqa: BLE001 - report every scenario
            print(f"FAIL {fn.__name__}: {e!r}")
            failures.append(fn.__name__)

    scenarios = (
        kv_put_get_and_404_index,
        blocking_get_returns_after_write_not_before,
        blocking_get_times_out_with_same_index,
        cas_races_one_winner_per_round,
        session_lowercase_keys_acquire_release_lock_delay,
        session_ttl_expiry_releases_or_deletes_lock,
        txn_commit_and_rollback,
    )
    for fn in scenarios:
        scenario(fn)
    print(f"{len(scenarios) - len(failures)}/{len(scenarios)} scenarios passed")
    return 1 if failures else 0


def kv_put_get_and_404_index(c, p):
    index, value = c.kv.get(p + "missing")
    assert value is None, value
    assert int(index) >= 1, index
    assert c.kv.put(p + "k", "v1", flags=7) is True
    index, value = c.kv.get(p + "k")
    assert value["Value"] == b"v1" and value["Flags"] == 7, value
    assert int(index) == value["ModifyIndex"], (index, value)
    _, keys = c.kv.get(p, keys=True)
    assert keys == [p + "k"], keys


def blocking_get_returns_after_write_not_before(c, p):
    c.kv.put(p + "watch", "a")
    index, _ = c.kv.get(p + "watch")
    result = {}

    def reader():
        result["index"], result["value"] = c.kv.get(p + "watch", index=index, wait="20s")
        result["at"] = time.monotonic()

    t = threading.Thread(target=reader)
    t.start()
    t.join(0.3)
    assert t.is_alive(), "blocking get returned without a change"
    written = time.monotonic()
    c.kv.put(p + "watch", "b")
    t.join(5)
    assert not t.is_alive(), "blocking get did not return after the write"
    latency = result["at"] - written
    assert latency < 0.5, f"latency {latency:.3f}s"
    assert int(result["index"]) > int(index)
    assert result["value"]["Value"] == b"b"


def blocking_get_times_out_with_same_index(c, p):
    c.kv.put(p + "idle", "x")
    index, _ = c.kv.get(p + "idle")
    start = time.monotonic()
    new_index, _ = c.kv.get(p + "idle", index=index, wait="1s")
    took = time.monotonic() - start
    assert new_index == index, (index, new_index)
    assert 1.0 <= took < 2.0, f"took {took:.3f}s"


def cas_races_one_winner_per_round(c, p):
    key = p + "race"
    cas = 0
    for round_no in range(3):
        wins = []
        lock = threading.Lock()

        def writer(i, cas=cas):
            local = consul.Consul(host=c.http.host, port=c.http.port, scheme=c.http.scheme)
            ok = local.kv.put(key, f"{round_no}-{i}", cas=cas)
            with lock:
                wins.append(ok)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 100, len(wins)
        assert wins.count(True) == 1, f"round {round_no}: {wins.count(True)} winners"
        _, value = c.kv.get(key)
        assert value["ModifyIndex"] > cas
        cas = value["ModifyIndex"]


def session_lowercase_keys_acquire_release_lock_delay(c, p):
    key = p + "lock"
    # py-consul sends lowercase JSON keys: name, lockdelay, behavior.
    a = c.session.create(name="a", lock_delay=1)
    b = c.session.create(name="b", lock_delay=1, behavior="delete")
    _, info = c.session.info(b)
    assert info["Behavior"] == "delete" and info["LockDelay"] == 1_000_000_000, info
    assert c.kv.put(key, "a", acquire=a) is True
    assert c.kv.put(key, "b", acquire=b) is False
    _, value = c.kv.get(key)
    assert value["Session"] == a and value["LockIndex"] == 1, value
    assert c.kv.put(key, "x", release=b) is False
    assert c.kv.put(key, "free", release=a) is True
    assert c.kv.put(key, "b", acquire=b) is True, "release must not set a lock-delay"
    destroyed = time.monotonic()
    assert c.session.destroy(b) is True
    index, value = c.kv.get(key)
    assert value is None, "behavior delete deletes the held key"
    assert c.kv.put(key, "a", acquire=a) is False, "lock-delay after invalidation"
    time.sleep(max(0.0, destroyed + 1.05 - time.monotonic()))
    assert c.kv.put(key, "a", acquire=a) is True, "lock-delay over"
    assert c.session.info(str(uuid.uuid4()))[1] is None
    c.session.destroy(a)


def session_ttl_expiry_releases_or_deletes_lock(c, p):
    # Two sessions expire together: Behavior release keeps the key unlocked, delete removes it.
    rel = c.session.create(ttl=10, lock_delay=0)
    dele = c.session.create(ttl=10, lock_delay=0, behavior="delete")
    renewed = c.session.renew(rel)
    assert renewed["ID"] == rel and renewed["TTL"] == "10s", renewed
    assert c.kv.put(p + "ttl-rel", "held", acquire=rel) is True
    assert c.kv.put(p + "ttl-del", "held", acquire=dele) is True
    start = time.monotonic()

    def block_until(key, done):
        index, value = c.kv.get(key)
        while not done(value):
            assert time.monotonic() - start < 25, f"{key}: lock never freed"
            index, value = c.kv.get(key, index=index, wait="25s")
        return time.monotonic() - start

    took = block_until(p + "ttl-rel", lambda v: v is not None and "Session" not in v)
    assert 10 <= took <= 21, f"released after {took:.1f}s (TTL 10s)"
    took = block_until(p + "ttl-del", lambda v: v is None)
    assert 10 <= took <= 21, f"deleted after {took:.1f}s (TTL 10s)"
    assert c.session.info(rel)[1] is None
    assert c.session.info(dele)[1] is None


def txn_commit_and_rollback(c, p):
    def b64(s):
        return base64.b64encode(s.encode()).decode()

    out = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": p + "t1", "Value": b64("1")}},
            {"KV": {"Verb": "cas", "Key": p + "t2", "Value": b64("2"), "Index": 0}},
            {"KV": {"Verb": "get", "Key": p + "t1"}},
        ]
    )
    assert out["Errors"] is None, out
    assert base64.b64decode(out["Results"][2]["KV"]["Value"]) == b"1", out
    try:
        c.txn.put(
            [
                {"KV": {"Verb": "set", "Key": p + "t3", "Value": b64("3")}},
                {"KV": {"Verb": "check-not-exists", "Key": p + "t1"}},
            ]
        )
    except ClientError as e:
        assert "409" in str(e) and '"OpIndex":1' in str(e), e
    else:
        raise AssertionError("conflicting txn committed")
    assert c.kv.get(p + "t3")[1] is None, "rolled back"


if __name__ == "__main__":
    sys.exit(main())
