#!/usr/bin/env python3
"""A real MCP client (the official Python SDK) calling through Behavry: lists tools, calls an
allowed tool and a denied one, and prints what the agent sees.

usage: demo_client.py URL TOKEN
"""
import sys

import anyio
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, token: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        print("protocol version:", client.protocol_version)
        tools = await client.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))
        result = await client.call_tool("echo", {"message": "hello through Behavry"})
        print("echo ->", result.content[0].text)
        try:
            await client.call_tool("get-env", {})
        except MCPError as err:
            print(f"get-env -> denied: code {err.code}: {err.message} (trace {err.data.get('traceId')})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    anyio.run(main, sys.argv[1], sys.argv[2])
