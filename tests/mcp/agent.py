"""An AI agent's side of Remedy's MCP server, with the official Python SDK
(`mcp` on PyPI): connects over Streamable HTTP (or stdio, through
`remedy mcp`), then runs the steps given as JSON on the command line and
prints one JSON line per step.

    python3 agent.py http URL '[["list_tools"], ["call", "detect", {"runbook": "x"}]]'

The bearer token comes from REMEDY_TOKEN. A step that fails prints
{"error": "..."} and the script goes on.
"""

import json
import os
import sys

import anyio
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


def dump(result):
    if isinstance(result, types.CallToolResult):
        return {
            "is_error": bool(result.is_error),
            "text": [c.text for c in result.content if getattr(c, "text", None) is not None],
            "structured": result.structured_content,
        }
    if isinstance(result, types.ListToolsResult):
        return {"tools": [{"name": t.name, "input_schema": t.input_schema, "description": t.description} for t in result.tools]}
    return json.loads(result.model_dump_json())


async def steps(session, plan):
    init = await session.initialize()
    print(json.dumps({"initialized": init.server_info.name, "protocol": init.protocol_version}), flush=True)
    for step in plan:
        try:
            if step[0] == "list_tools":
                out = dump(await session.list_tools())
            elif step[0] == "call":
                out = dump(await session.call_tool(step[1], step[2] if len(step) > 2 else {}))
            elif step[0] == "read":
                r = await session.read_resource(step[1])
                out = {"contents": [getattr(c, "text", None) for c in r.contents]}
            elif step[0] == "templates":
                r = await session.list_resource_templates()
                out = {"templates": [t.uri_template for t in r.resource_templates]}
            elif step[0] == "wait":
                await anyio.sleep(step[1])
                out = {"waited": step[1]}
            else:
                out = {"error": f"unknown step {step[0]}"}
        except Exception as e:  # the step's failure is the result
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


async def main():
    transport, target, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    token = os.environ.get("REMEDY_TOKEN")
    info = types.Implementation(name="remedy-test-agent", version="1.2.3")
    if transport == "http":
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(target, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1], client_info=info) as s:
                    await steps(s, plan)
    else:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=target, args=sys.argv[4:], env=dict(os.environ))
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1], client_info=info) as s:
                await steps(s, plan)


anyio.run(main)
