#!/usr/bin/env python3
"""Checks task Vault tokens of the Nomad emulator with third-party clients (python-nomad 2.1.0,
hvac 2.4.0).

Usage: nomad_vault_conformance.py <nomad url> <vault url> <root token>
As an operator, writes the policy "ci" (read secret/data/ci/*) and two secrets with hvac; then
registers jobs with python-nomad whose task has a Vault block and checks, from the task's own
output, that:
- the task sees VAULT_TOKEN, secrets/vault_token holds the same token, and an env value
  "${VAULT_TOKEN}" is interpolated to it (as in real Nomad);
- a template reads its own team's secret with that token, and the token itself is refused
  another team's secret (403);
- the token is revoked once the allocation ends (lookup_self with it: Forbidden);
- with Env = false and DisableFile = true the task sees neither;
- a template naming a path outside the task's policies is never rendered: the task never starts
  and fails with a Killing event "Template failed: ... permission denied".
"""
import sys
import time
from urllib.parse import urlparse

import hvac
import nomad
from hvac import exceptions

CI = 'path "secret/data/ci/*" {\n  capabilities = ["read"]\n}\n'


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run(n, job_id, vault, script, env=None, templates=None):
    task = {"Name": "t", "Driver": "raw_exec", "Vault": vault, "Env": env or {},
            "Config": {"command": "/bin/sh", "args": ["-c", script]}}
    if templates:
        task["Templates"] = templates
    job = {"Job": {"ID": job_id, "Name": job_id, "Type": "batch", "Datacenters": ["dc1"],
                   "TaskGroups": [{"Name": "g", "Count": 1,
                                   "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                                   "Tasks": [task]}]}}
    n.job.register_job(job_id, job)
    deadline = time.time() + 30
    while time.time() < deadline:
        allocs = n.job.get_allocations(job_id)
        if allocs and allocs[0]["ClientStatus"] in ("complete", "failed"):
            return n.allocation.get_allocation(allocs[0]["ID"])
        index = max([a["ModifyIndex"] for a in allocs] or [1])
        n.job.request(job_id, "allocations", params={"index": str(index), "wait": "2s"}, method="get")
    fail(f"{job_id}: allocation did not finish in 30s")


def output(n, alloc):
    text = n.client.stream_logs.stream(alloc["ID"], "t", "stdout", plain=True)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def template(path):
    return [{"DestPath": "secrets/ci.env", "ChangeMode": "noop", "Perms": "0600",
             "EmbeddedTmpl": '{{ with secret "%s" }}CI={{ .Data.data.token }}{{ end }}\n' % path}]


def main():
    if len(sys.argv) != 4:
        fail("usage: nomad_vault_conformance.py <nomad url> <vault url> <root token>")
    u = urlparse(sys.argv[1])
    vault_url, root_token = sys.argv[2], sys.argv[3]
    n = nomad.Nomad(host=u.hostname, port=u.port, timeout=30)
    root = hvac.Client(url=vault_url, token=root_token)
    root.sys.create_or_update_acl_policy(name="ci", policy=CI)
    root.secrets.kv.v2.create_or_update_secret(path="ci/git", secret={"token": "ci-secret"})
    root.secrets.kv.v2.create_or_update_secret(path="other/git", secret={"token": "other-secret"})
    stamp = int(time.time() * 1000)

    script = (
        'echo "env=$VAULT_TOKEN"; echo "file=$(cat secrets/vault_token)"; echo "leak=$LEAK"; '
        'cat secrets/ci.env; '
        'echo "other=$(curl -s -o /dev/null -w %{http_code} -H "X-Vault-Token: $VAULT_TOKEN" '
        '"$VAULT_ADDR/v1/secret/data/other/git")"'
    )
    a = run(n, f"vault-env-{stamp}", {"Policies": ["ci"]}, script,
            env={"LEAK": "token=${VAULT_TOKEN}", "VAULT_ADDR": vault_url},
            templates=template("secret/data/ci/git"))
    if a["ClientStatus"] != "complete":
        fail(f"task with a Vault block: {a['ClientStatus']} {a['TaskStates']['t']['Events']}")
    out = output(n, a)
    token = out.get("env", "")
    if not token.startswith("hvs.") or token == root_token:
        fail(f"VAULT_TOKEN {token!r} is not a task token")
    if out.get("file") != token:
        fail(f"secrets/vault_token {out.get('file')!r} != VAULT_TOKEN")
    if out.get("leak") != "token=" + token:
        fail(f"${{VAULT_TOKEN}} in an env value became {out.get('leak')!r}")
    if out.get("CI") != "ci-secret":
        fail(f"template with the task token rendered {out.get('CI')!r}")
    if out.get("other") != "403":
        fail(f"the task token read another team's secret: HTTP {out.get('other')}")
    # Revoked once the allocation has ended (the runner revokes right after the task states).
    deadline = time.time() + 10
    while True:
        try:
            hvac.Client(url=vault_url, token=token).auth.token.lookup_self()
        except exceptions.Forbidden:
            break
        if time.time() > deadline:
            fail("the task token is still valid 10 s after its allocation ended")
        time.sleep(0.1)

    script = ('echo "env=${VAULT_TOKEN:-unset}"; '
              'if [ -e secrets/vault_token ]; then echo file=present; else echo file=absent; fi; '
              'echo "leak=$LEAK"')
    a = run(n, f"vault-noenv-{stamp}", {"Policies": ["ci"], "Env": False, "DisableFile": True},
            script, env={"LEAK": "token=${VAULT_TOKEN}"})
    out = output(n, a)
    if out != {"env": "unset", "file": "absent", "leak": "token=${VAULT_TOKEN}"}:
        fail(f"Env = false, DisableFile = true: {out}")

    a = run(n, f"vault-denied-{stamp}", {"Policies": ["ci"]}, "echo started",
            templates=template("secret/data/other/git"))
    events = a["TaskStates"]["t"]["Events"]
    if a["ClientStatus"] != "failed":
        fail(f"template outside the policy: ClientStatus {a['ClientStatus']}")
    if any(e["Type"] == "Started" for e in events):
        fail("the task started although its template could not be rendered")
    kill = [e for e in events if e["Type"] == "Killing" and e.get("FailsTask")]
    if not kill or "Template failed" not in kill[0]["DisplayMessage"] \
            or "permission denied" not in kill[0]["DisplayMessage"]:
        fail(f"no failing Killing event 'Template failed: ... permission denied': {events}")
    print("nomad vault conformance: ok")


if __name__ == "__main__":
    main()
