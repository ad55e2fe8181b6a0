"""Drives `jobforge mcp` with the official MCP Python SDK, over streamable HTTP or stdio.

Usage:
  mcp_client.py http URL [--token T]      # a running `jobforge mcp --http` at URL (…/mcp)
  mcp_client.py stdio JOBFORGE_BIN CONSUL_ADDR

Checks: initialize; tools/list with input and output schemas; resource templates and a
request status resource; submitJob (also that it answers the effective tags, [latest] when none
are given), getStatus, getLogs,
killJob, getHistory, listRequests, cleanup; an invalid submitJob returns isError naming the field
path; over HTTP, that the SDK's session termination (DELETE) succeeds without the SDK logging
"Session termination failed". Prints "OK" on success; any failed check raises (non-zero exit).
"""

import json
import logging
import sys
import uuid

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {"submitJob", "getStatus", "getLogs", "killJob", "cleanup", "getHistory", "listRequests"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def exercise(session: ClientSession) -> None:
    init = await session.initialize()
    check(init.server_info.name == "jobforge", f"server name {init.server_info.name}")

    tools = {t.name: t for t in (await session.list_tools()).tools}
    check(EXPECTED_TOOLS <= set(tools), f"tools {sorted(tools)}")
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


def main() -> None:
    mode = sys.argv[1]
    if mode == "http":
        token = None
        if "--token" in sys.argv:
            token = sys.argv[sys.argv.index("--token") + 1]
        anyio.run(run_http, sys.argv[2], token)
    elif mode == "stdio":
        anyio.run(run_stdio, sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("OK")


if __name__ == "__main__":
    main()
