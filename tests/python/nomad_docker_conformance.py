#!/usr/bin/env python3
"""Checks the Nomad emulator's docker driver with a third-party client (python-nomad 2.1.0).

Usage: nomad_docker_conformance.py <nomad url> <image>
Registers a docker batch job with nomad.job.register_job whose container prints its task env and
exits 3, waits (blocking queries) for the allocation to fail, checks the Terminated event's exit
code, the node's driver.docker attribute, and both log streams (plain=True), then deregisters with
purge. Exits non-zero with a message on the first mismatch.
"""
import sys
import time
from urllib.parse import urlparse

import nomad


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        fail("usage: nomad_docker_conformance.py <nomad url> <image>")
    u = urlparse(sys.argv[1])
    image = sys.argv[2]
    n = nomad.Nomad(host=u.hostname, port=u.port, timeout=60)
    nodes = n.nodes.get_nodes()
    if not nodes:
        fail("no node")
    node = n.node.get_node(nodes[0]["ID"])
    if node["Attributes"].get("driver.docker") != "1":
        fail(f"node has no driver.docker attribute: {node['Attributes']}")
    if "docker" not in node["Drivers"]:
        fail(f"node Drivers lacks docker: {list(node['Drivers'])}")
    job_id = "pydocker-%d" % int(time.time() * 1000)
    script = 'echo "out:$NOMAD_TASK_DIR:$FOO:${HOME_OF_AGENT:-unset}"; echo err >&2; exit 3'
    job = {"Job": {
        "ID": job_id, "Name": job_id, "Type": "batch", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1,
                        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                        "Tasks": [{"Name": "t", "Driver": "docker",
                                   "Env": {"FOO": "bar-${NOMAD_TASK_NAME}"},
                                   "Resources": {"CPU": 100, "MemoryMB": 64},
                                   "Config": {"image": image, "command": "/bin/sh",
                                              "args": ["-c", script]}}]}]}}
    reg = n.job.register_job(job_id, job)
    if not reg.get("EvalID"):
        fail(f"register returned no EvalID: {reg}")
    deadline = time.time() + 90
    alloc = None
    while time.time() < deadline:
        allocs = n.job.get_allocations(job_id)
        if allocs and allocs[0]["ClientStatus"] in ("complete", "failed"):
            alloc = n.allocation.get_allocation(allocs[0]["ID"])
            break
        index = max([a["ModifyIndex"] for a in allocs] or [1])
        n.job.request(job_id, "allocations", params={"index": str(index), "wait": "5s"}, method="get")
    if alloc is None:
        fail("allocation did not finish in 90s")
    events = alloc["TaskStates"]["t"]["Events"]
    if alloc["ClientStatus"] != "failed":
        fail(f"ClientStatus {alloc['ClientStatus']}, want failed; events {events}")
    term = [e for e in events if e["Type"] == "Terminated"]
    if not term or term[0]["ExitCode"] != 3 or term[0]["Details"].get("exit_code") != "3":
        fail(f"Terminated event with ExitCode 3 missing: {events}")
    out = n.client.stream_logs.stream(alloc["ID"], "t", "stdout", plain=True)
    if out != "out:/local:bar-t:unset\n":
        fail(f"plain stdout {out!r}")
    err = n.client.stream_logs.stream(alloc["ID"], "t", "stderr", plain=True)
    if err != "err\n":
        fail(f"plain stderr {err!r}")
    n.job.deregister_job(job_id, purge=True)
    print("ok")


if __name__ == "__main__":
    main()
