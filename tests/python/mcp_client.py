"""Drives `jobforge mcp` with the official MCP Python SDK, over streamable HTTP or stdio.

Usage:
  mcp_client.py http URL [--token T]      # a running `jobforge mcp --http` at URL (…/mcp)
  mcp_client.py stdio JOBFORGE_BIN CONSUL_ADDR
  mcp_client.py scope-http URL TOKEN_A TOKEN_B   # tokens file: A -> [team-a], B -> [team-b]
  mcp_client.py scope-stdio JOBFORGE_BIN CONSUL_ADDR   # `jobforge mcp --stdio -n team-a`
  mcp_client.py verify-stdio JOBFORGE_BIN CONSUL_ADDR VAULT_ADDR VAULT_TOKEN NAME COMMIT
      # verifyImage of request NAME (namespace default) verifies and names COMMIT; a request
      # that does not exist and a name that is not a DNS label are tool errors

Checks: initialize; tools/list with input and output schemas; resource templates and a
request status resource; submitJob (also that it answers the effective tags, [latest] when none
are given), getStatus, getLogs,
killJob, getHistory, listRequests, cleanup; an invalid submitJob returns isError naming the field
path; over HTTP, that the SDK's session termination (DELETE) succeeds without the SDK logging
"Session termination failed". Prints "OK" on success; any failed check raises (non-zero exit).

The scope modes (issue 14) check, as team A (scope [team-a]): calls naming team-b are tool errors
naming team-b and the allowed namespace; a call naming none goes to team-a; names and namespaces
that are not DNS labels (`../../../jobforge/leader`) are tool errors; listRequests and getHistory
return only team-a, paged (limit, cursor, next_cursor, at most 500); a team-b resource is refused.
scope-http also checks, as team B, that it sees only team-b.
"""

import json
import logging
import sys
import uuid

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {
    "submitJob", "getStatus", "getLogs", "killJob", "cleanup", "getHistory", "listRequests", "verifyImage",
}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def exercise(session: ClientSession) -> None:
    init = await session.initialize()
    check(init.server_info.name == "jobforge", f"server name {init.server_info.name}")

    tools = {t.name: t for t in (await session.list_tools()).tools}
    check(EXPECTED_TOOLS <= set(tools), f"tools {sorted(tools)}")
    # The server's instructions name every tool an agent may use, so it can find them all.
    for name in sorted(set(tools)):
        check(name in (init.instructions or ""), f"instructions do not mention {name}: {init.instructions!r}")
    for name in EXPECTED_TOOLS:
        t = tools[name]
        check(t.input_schema.get("type") == "object", f"{name} input schema {t.input_schema}")
        check(t.output_schema is not None, f"{name} has no output schema")
        check(len(t.description or "") > 40, f"{name} description too short")
    check("repo_url" in tools["submitJob"].input_schema["properties"], "submitJob schema lacks repo_url")

    name = "mcp-" + uuid.uuid4().hex[:6]
    res = await session.call_tool("submitJob", {
        "name": name,
        "repo_url": "https://github.com/example/repo.git",
        "image_name": "myapp",
        "registry_url": "registry.example.com",
        "image_tags": ["latest", "v1.0.0"],
        "test_commands": ["npm test"],
    })
    check(not res.is_error, f"submitJob failed: {res.content}")
    check(res.structured_content["name"] == name, f"submit result {res.structured_content}")
    check(res.structured_content["generation"] > 0, "generation")

    res = await session.call_tool("submitJob", {
        "name": name + "-t",
        "repo_url": "https://github.com/example/repo.git",
        "image_name": "myapp",
        "registry_url": "registry.example.com",
    })
    check(not res.is_error, f"submitJob without tags failed: {res.content}")
    check(res.structured_content["image_tags"] == ["latest"], f"default tags {res.structured_content}")
    res = await session.call_tool("cleanup", {"name": name + "-t", "purge": True})
    check(not res.is_error, f"cleanup failed: {res.content}")

    res = await session.call_tool("getStatus", {"name": name})
    check(not res.is_error, f"getStatus failed: {res.content}")
    check(res.structured_content["phase"] == "Pending", f"status {res.structured_content}")
    check(res.structured_content["finished"] is False, "finished")

    res = await session.call_tool("getLogs", {"name": name, "phase": "build"})
    check(not res.is_error, f"getLogs failed: {res.content}")
    check(res.structured_content["logs"] == {}, f"logs {res.structured_content}")

    # Resources: status JSON and log tails by URI.
    templates = {t.uri_template for t in (await session.list_resource_templates()).resource_templates}
    check("jobforge://requests/{namespace}/{name}" in templates, f"templates {templates}")
    check("jobforge://logs/{namespace}/{name}/{phase}" in templates, f"templates {templates}")
    read = await session.read_resource(f"jobforge://requests/default/{name}")
    data = json.loads(read.contents[0].text)
    check(data["name"] == name and data["phase"] == "Pending", f"resource {data}")

    res = await session.call_tool("killJob", {"name": name})
    check(not res.is_error, f"killJob failed: {res.content}")
    check(res.structured_content["result"] == "cancel requested", f"kill {res.structured_content}")

    res = await session.call_tool("getHistory", {"limit": 5})
    check(not res.is_error, f"getHistory failed: {res.content}")
    check("items" in res.structured_content and "total" in res.structured_content, "history shape")

    res = await session.call_tool("listRequests", {})
    check(not res.is_error, f"listRequests failed: {res.content}")
    check(any(i["name"] == name for i in res.structured_content["items"]), "listed")

    # Invalid input: a tool error (isError) naming the field path, not a protocol error.
    res = await session.call_tool("submitJob", {
        "repo_url": "https://github.com/example/repo.git",
        "image_name": "myapp",
        "registry_url": "registry.example.com",
        "image_tags": ["ok", "Not A Tag!"],
    })
    check(res.is_error, "invalid submit was accepted")
    text = " ".join(c.text for c in res.content if getattr(c, "text", None))
    check("image_tags[1]" in text, f"error does not name the field: {text}")

    res = await session.call_tool("getStatus", {"name": "does-not-exist"})
    check(res.is_error, "unknown request accepted")
    res = await session.call_tool("getStatus", {"nam": "typo"})
    check(res.is_error, "unknown field accepted")

    res = await session.call_tool("cleanup", {"name": name})
    check(not res.is_error, f"cleanup failed: {res.content}")


def text_of(res) -> str:
    return " ".join(c.text for c in res.content if getattr(c, "text", None))


SUBMIT = {
    "repo_url": "https://github.com/example/repo.git",
    "image_name": "myapp",
    "registry_url": "registry.example.com",
}


async def scope_as_team_a(session: ClientSession, tag: str) -> None:
    await session.initialize()
    # Three requests in team-a (one without a namespace: the scope's namespace), for paging.
    names = [f"a-{tag}-{i}" for i in range(3)]
    for i, n in enumerate(names):
        args = dict(SUBMIT, name=n)
        if i:
            args["namespace"] = "team-a"
        res = await session.call_tool("submitJob", args)
        check(not res.is_error, f"submitJob in scope failed: {text_of(res)}")
        check(res.structured_content["namespace"] == "team-a", f"namespace {res.structured_content}")

    # Outside the scope: a tool error naming the namespace and the allowed ones.
    res = await session.call_tool("submitJob", dict(SUBMIT, name=f"x-{tag}", namespace="team-b"))
    check(res.is_error, "submitJob into team-b accepted")
    t = text_of(res)
    check("team-b" in t and "team-a" in t and "scope" in t, f"unclear error: {t}")
    for tool in ("getStatus", "getLogs", "killJob", "cleanup"):
        res = await session.call_tool(tool, {"name": f"b-{tag}", "namespace": "team-b"})
        check(res.is_error, f"{tool} on team-b accepted")
        t = text_of(res)
        check("team-b" in t and "allowed namespaces: team-a" in t, f"{tool}: unclear error: {t}")
    for tool in ("listRequests", "getHistory"):
        res = await session.call_tool(tool, {"namespace": "team-b"})
        check(res.is_error and "team-b" in text_of(res), f"{tool} on team-b: {text_of(res)}")

    # Names and namespaces that are not DNS labels never reach a key.
    for args in ({"name": "../../../jobforge/leader"},
                 {"name": "../../../jobforge/leader", "namespace": "team-a"},
                 {"name": "x", "namespace": "../jobforge"},
                 {"name": "a/b"}):
        res = await session.call_tool("cleanup", args)
        check(res.is_error and "DNS label" in text_of(res), f"cleanup {args}: {text_of(res)}")
        res = await session.call_tool("getStatus", args)
        check(res.is_error and "DNS label" in text_of(res), f"getStatus {args}: {text_of(res)}")

    # Lists: only team-a, paged.
    res = await session.call_tool("listRequests", {"limit": 2})
    check(not res.is_error, f"listRequests: {text_of(res)}")
    page = res.structured_content
    check(page["total"] == 3 and len(page["items"]) == 2, f"page 1 {page}")
    check(all(i["namespace"] == "team-a" for i in page["items"]), f"out of scope items {page}")
    check(page["next_cursor"], f"no next_cursor {page}")
    res = await session.call_tool("listRequests", {"limit": 2, "cursor": page["next_cursor"]})
    page2 = res.structured_content
    check(not res.is_error and len(page2["items"]) == 1 and page2["next_cursor"] is None, f"page 2 {page2}")
    seen = [i["name"] for i in page["items"] + page2["items"]]
    check(seen == sorted(names), f"pages {seen}")
    res = await session.call_tool("listRequests", {"limit": 501})
    check(res.is_error and "500" in text_of(res), f"limit over the cap: {text_of(res)}")
    res = await session.call_tool("getHistory", {"limit": 501})
    check(res.is_error and "500" in text_of(res), f"history limit over the cap: {text_of(res)}")
    res = await session.call_tool("getHistory", {})
    check(not res.is_error and "next_cursor" in res.structured_content, f"history {res.structured_content}")

    # Resources of another namespace are refused.
    try:
        await session.read_resource(f"jobforge://requests/team-b/b-{tag}")
        raise AssertionError("team-b resource readable")
    except AssertionError:
        raise
    except Exception as e:  # McpError
        check("team-b" in str(e), f"resource error {e}")
    read = await session.read_resource(f"jobforge://requests/team-a/{names[0]}")
    check(json.loads(read.contents[0].text)["name"] == names[0], "own resource")

    for n in names:
        res = await session.call_tool("cleanup", {"name": n, "namespace": "team-a", "purge": True})
        check(not res.is_error, f"cleanup {n}: {text_of(res)}")


async def scope_as_team_b(session: ClientSession, tag: str) -> None:
    await session.initialize()
    res = await session.call_tool("submitJob", dict(SUBMIT, name=f"b-{tag}"))
    check(not res.is_error and res.structured_content["namespace"] == "team-b", f"B submit {text_of(res)}")
    res = await session.call_tool("listRequests", {})
    items = res.structured_content["items"]
    check(not res.is_error and [i["name"] for i in items] == [f"b-{tag}"], f"B sees {items}")
    res = await session.call_tool("getStatus", {"name": f"a-{tag}-0", "namespace": "team-a"})
    check(res.is_error and "allowed namespaces: team-b" in text_of(res), f"B reads A: {text_of(res)}")


async def run_scope_http(url: str, token_a: str, token_b: str) -> None:
    from mcp.shared._httpx_utils import create_mcp_http_client

    tag = uuid.uuid4().hex[:6]

    async def as_token(token, body):
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client:
            async with streamable_http_client(url, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await body(session, tag)

    await as_token(token_b, scope_as_team_b)
    await as_token(token_a, scope_as_team_a)


async def run_scope_stdio(binary: str, consul: str) -> None:
    params = StdioServerParameters(command=binary, args=["mcp", "--stdio", "-n", "team-a"],
                                   env={"CONSUL_HTTP_ADDR": consul})
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await scope_as_team_a(session, uuid.uuid4().hex[:6])


async def run_http(url: str, token: str | None) -> None:
    import httpx2
    from mcp.shared._httpx_utils import create_mcp_http_client

    class Warnings(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    warnings = Warnings()
    logging.getLogger("mcp").addHandler(warnings)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await exercise(session)
    _ = httpx2
    # Leaving streamable_http_client sends DELETE with the session id (session termination).
    failed = [m for m in warnings.messages if "termination" in m]
    check(not failed, f"session termination: {failed}")


async def run_stdio(binary: str, consul: str) -> None:
    params = StdioServerParameters(command=binary, args=["mcp", "--stdio"], env={"CONSUL_HTTP_ADDR": consul})
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await exercise(session)


async def run_verify_stdio(binary: str, consul: str, vault: str, token: str, name: str, commit: str) -> None:
    env = {"CONSUL_HTTP_ADDR": consul, "VAULT_ADDR": vault, "VAULT_TOKEN": token}
    params = StdioServerParameters(command=binary, args=["mcp", "--stdio"], env=env)
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            res = await session.call_tool("verifyImage", {"name": name, "insecure_registry": True})
            check(not res.is_error, f"verifyImage failed: {res.content}")
            out = res.structured_content or {}
            check(out.get("signature") == "verified", f"signature {out}")
            check(out.get("provenance", "").startswith("verified"), f"provenance {out}")
            check(commit in out.get("summary", ""), f"summary lacks {commit}: {out}")
            check("@sha256:" in out.get("image", ""), f"image {out}")
            res = await session.call_tool("verifyImage", {"name": name + "-absent", "insecure_registry": True})
            check(res.is_error, f"verifyImage of an absent request: {res.content}")
            res = await session.call_tool("verifyImage", {"name": "../../x"})
            check(res.is_error, f"verifyImage of ../../x: {res.content}")


def main() -> None:
    mode = sys.argv[1]
    if mode == "http":
        token = None
        if "--token" in sys.argv:
            token = sys.argv[sys.argv.index("--token") + 1]
        anyio.run(run_http, sys.argv[2], token)
    elif mode == "stdio":
        anyio.run(run_stdio, sys.argv[2], sys.argv[3])
    elif mode == "verify-stdio":
        anyio.run(run_verify_stdio, *sys.argv[2:8])
    elif mode == "scope-http":
        anyio.run(run_scope_http, sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "scope-stdio":
        anyio.run(run_scope_stdio, sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("OK")


if __name__ == "__main__":
    main()
