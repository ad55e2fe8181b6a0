#!/usr/bin/env python3
"""Third-party conformance of the agent service/check endpoints, health and catalog reads, and
sessions bound to checks (the jobforge dev stack's Consul emulator, or a real agent), with the
py-consul package.

Usage: consul_catalog_conformance.py http://127.0.0.1:8500
A local HTTP server in this process is the checks' target; its answer (200, 429, 500, or no
listener at all) is switched per scenario. Exit code 0 when every scenario passes.
"""

import http.server
import sys
import threading
import time
import urllib.parse
import uuid

import consul
from consul.exceptions import ConsulException


class Target:
    """An HTTP server answering GET with a configurable status code."""

    def __init__(self):
        self.code = 200
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                body = f"answer {target.code}\n".encode()
                self.send_response(target.code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(what, cond, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def check_status(c, check_id):
    return c.agent.checks().get(check_id, {}).get("Status")


def register(c, name, sid, target, interval="1s"):
    c.agent.service.register(
        name,
        service_id=sid,
        port=9090,
        meta={"identity": sid, "version": "1"},
        check=consul.Check.http(target.url, interval=interval, timeout="1s"),
    )
    return f"service:{sid}"


def service_check_runs_and_maps_status_codes(c, name):
    t = Target()
    try:
        cid = register(c, name, f"{name}-1", t)
        svc = c.agent.services()[f"{name}-1"]
        assert svc["Service"] == name and svc["Meta"]["identity"] == f"{name}-1", svc
        wait_for("passing", lambda: check_status(c, cid) == "passing")
        t.code = 429
        wait_for("warning", lambda: check_status(c, cid) == "warning")
        t.code = 503
        wait_for("critical", lambda: check_status(c, cid) == "critical")
        out = c.agent.checks()[cid]["Output"]
        assert "503" in out, out
    finally:
        c.agent.service.deregister(f"{name}-1")
        t.close()
    assert f"{name}-1" not in c.agent.services()
    assert cid not in c.agent.checks()


def health_passing_filter_and_catalog(c, name):
    t = Target()
    try:
        register(c, name, f"{name}-a", t)
        register(c, name, f"{name}-b", t)
        wait_for("both passing", lambda: len(c.health.service(name, passing=True)[1]) == 2)
        _, entries = c.health.service(name)
        ids = sorted(e["Service"]["ID"] for e in entries)
        assert ids == [f"{name}-a", f"{name}-b"], ids
        assert all(any(k["CheckID"] == "serfHealth" for k in e["Checks"]) for e in entries)
        _, cat = c.catalog.service(name)
        assert sorted(e["ServiceID"] for e in cat) == ids, cat
        _, services = c.catalog.services()
        assert name in services and "consul" in services, services
        t.code = 429
        wait_for("warning excluded by ?passing", lambda: c.health.service(name, passing=True)[1] == [])
        assert len(c.catalog.service(name)[1]) == 2, "the catalog lists instances whatever their health"
        # A blocking health query answers when a check changes.
        index, _ = c.health.service(name)
        t.code = 200
        started = time.monotonic()
        index2, _ = c.health.service(name, index=index, wait="10s")
        assert int(index2) > int(index) and time.monotonic() - started < 9, (index, index2)
    finally:
        for sid in (f"{name}-a", f"{name}-b"):
            c.agent.service.deregister(sid)
        t.close()


def session_bound_to_a_check_is_invalidated_when_it_turns_critical(c, name):
    t = Target()
    key = f"conformance/{name}/lock"
    try:
        cid = register(c, name, f"{name}-s", t)
        wait_for("passing", lambda: check_status(c, cid) == "passing")
        s = c.session.create(name="bound", checks=["serfHealth", cid], lock_delay=2, ttl=60)
        info = c.session.info(s)[1]
        assert cid in (info.get("NodeChecks") or []) + [x["ID"] for x in (info.get("ServiceChecks") or [])], info
        assert c.kv.put(key, "held", acquire=s) is True
        t.close()  # nothing listens any more: the check fails, critical
        wait_for("critical", lambda: check_status(c, cid) == "critical")
        wait_for("session invalidated", lambda: c.session.info(s)[1] is None)
        _, entry = c.kv.get(key)
        assert entry is not None and entry.get("Session") is None, entry
        # Lock-delay applies as for any invalidation: another session cannot acquire at once.
        other = c.session.create(name="other", lock_delay=0)
        assert c.kv.put(key, "x", acquire=other) is False, "acquired during lock-delay"
        wait_for("lock-delay over", lambda: c.kv.put(key, "x", acquire=other), timeout=5)
        c.session.destroy(other)
        # A session cannot be bound to a critical check.
        try:
            c.session.create(name="refused", checks=[cid])
            raise AssertionError("session bound to a critical check")
        except ConsulException as e:
            assert "critical" in str(e), e
        try:
            c.session.create(name="refused", checks=["service:nope"])
            raise AssertionError("session bound to a missing check")
        except ConsulException as e:
            assert "Missing check" in str(e), e
    finally:
        c.agent.service.deregister(f"{name}-s")


def deregistering_the_service_invalidates_its_sessions(c, name):
    t = Target()
    try:
        cid = register(c, name, f"{name}-d", t)
        wait_for("passing", lambda: check_status(c, cid) == "passing")
        s = c.session.create(name="bound", checks=[cid], lock_delay=0)
        c.agent.service.deregister(f"{name}-d")
        wait_for("session invalidated", lambda: c.session.info(s)[1] is None)
    finally:
        t.close()


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: consul_catalog_conformance.py <http://host:port>", file=sys.stderr)
        return 2
    url = urllib.parse.urlparse(sys.argv[1])
    c = consul.Consul(host=url.hostname, port=url.port, scheme=url.scheme or "http")
    failures = []
    scenarios = (
        service_check_runs_and_maps_status_codes,
        health_passing_filter_and_catalog,
        session_bound_to_a_check_is_invalidated_when_it_turns_critical,
        deregistering_the_service_invalidates_its_sessions,
    )
    for fn in scenarios:
        name = f"svc-{uuid.uuid4().hex[:8]}"
        try:
            fn(c, name)
            print(f"ok   {fn.__name__}")
        except Exception as e:  # noqa: BLE001 - report every scenario
            print(f"FAIL {fn.__name__}: {e!r}")
            failures.append(fn.__name__)
    print(f"{len(scenarios) - len(failures)}/{len(scenarios)} scenarios passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
