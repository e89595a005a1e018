"""Real MCP clients for the tests: the official Python SDK over Streamable HTTP, with a bearer
token, and a fresh W3C traceparent on every HTTP request so each call's audit trace can be found."""
from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass, field

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


@dataclass
class SentRequest:
    http_method: str
    trace_id: str
    body: dict | None


@dataclass
class TraceRecorder:
    sent: list[SentRequest] = field(default_factory=list)

    async def hook(self, request) -> None:
        trace_id = secrets.token_hex(16)
        request.headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        body = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = None
        self.sent.append(SentRequest(request.method, trace_id, body))

    def trace_of(self, method: str, name: str | None = None) -> str:
        """Trace id of the last request with this JSON-RPC method (and params.name)."""
        for sent in reversed(self.sent):
            body = sent.body or {}
            if body.get("method") != method:
                continue
            if name is not None and (body.get("params") or {}).get("name") != name:
                continue
            return sent.trace_id
        raise AssertionError(f"no {method} {name or ''} request was sent")


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None, mode: str = "legacy", **client_args):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    recorder = TraceRecorder()
    http = create_mcp_http_client(headers=headers)
    http.event_hooks["request"] = [recorder.hook]
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, **client_args) as client:
        client.recorder = recorder
        yield client
