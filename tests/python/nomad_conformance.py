#!/usr/bin/env python3
"""Checks the Nomad emulator with a third-party client (python-nomad 2.1.0).

Usage: nomad_conformance.py <nomad url>
Registers a raw_exec batch job with nomad.job.register_job, waits (blocking queries) for its
allocation to finish, reads both log streams with plain=True and framed, then deregisters with
purge. Exits non-zero with a message on the first mismatch.
"""
import base64
import json
import sys
import time
from urllib.parse import urlparse

import nomad


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: nomad_conformance.py <nomad url>")
    u = urlparse(sys.argv[1])
    n = nomad.Nomad(host=u.hostname, port=u.port, timeout=30)
    job_id = "pyconf-%d" % int(time.time() * 1000)
    job = {"Job": {
        "ID": job_id, "Name": job_id, "Type": "batch", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1,
                        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                        "Tasks": [{"Name": "t", "Driver": "raw_exec",
                                   "Config": {"command": "/bin/sh",
                                              "args": ["-c", "echo py-out; echo py-err >&2; exit 3"]}}]}]}}
    reg = n.job.register_job(job_id, job)
    if not reg.get("EvalID"):
        fail(f"register returned no EvalID: {reg}")
    if n.job.get_job(job_id)["ID"] != job_id:
        fail("get_job returned another job")
    deadline = time.time() + 30
    alloc = None
    while time.time() < deadline:
        allocs = n.job.get_allocations(job_id)
        if allocs and allocs[0]["ClientStatus"] in ("complete", "failed"):
            alloc = n.allocation.get_allocation(allocs[0]["ID"])
            break
        # Block on the allocations index instead of sleeping.
        index = max([a["ModifyIndex"] for a in allocs] or [1])
        n.job.request(job_id, "allocations", params={"index": str(index), "wait": "2s"}, method="get")
    if alloc is None:
        fail("allocation did not finish in 30s")
    if alloc["ClientStatus"] != "failed":
        fail(f"ClientStatus {alloc['ClientStatus']}, want failed")
    term = [e for e in alloc["TaskStates"]["t"]["Events"] if e["Type"] == "Terminated"]
    if not term or term[0]["ExitCode"] != 3:
        fail(f"Terminated event with ExitCode 3 missing: {term}")
    out = n.client.stream_logs.stream(alloc["ID"], "t", "stdout", plain=True)
    if out != "py-out\n":
        fail(f"plain stdout {out!r}")
    err = n.client.stream_logs.stream(alloc["ID"], "t", "stderr", plain=True)
    if err != "py-err\n":
        fail(f"plain stderr {err!r}")
    framed = n.client.stream_logs.stream(alloc["ID"], "t", "stdout", follow=True)
    dec = json.JSONDecoder()
    pos, data = 0, b""
    while pos < len(framed):
        obj, pos = dec.raw_decode(framed, pos)
        if "Data" in obj:
            data += base64.b64decode(obj["Data"])
    if data != b"py-out\n":
        fail(f"framed stdout {data!r}")
    n.job.deregister_job(job_id, purge=True)
    n.job.deregister_job(job_id, purge=True)
    if n.job.get_allocations(job_id) != []:
        fail("allocations of a purged job are not []")
    print("nomad conformance: ok")


if __name__ == "__main__":
    main()
