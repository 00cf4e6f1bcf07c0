"""An MCP server over Streamable HTTP that records the credentials it
receives, for tests of credentials Warden injects into HTTP upstreams.

Its one tool, `whoami`, returns the `Authorization`, `X-Api-Key` and
`Txn-Token` headers of the request that carried the call, and
`GET /_headers` returns those headers for every request so far.

Usage: python header_echo.py PORT
"""

import contextvars
import json
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

SEEN: list[dict[str, str | None]] = []
CURRENT: contextvars.ContextVar[dict[str, str | None]] = contextvars.ContextVar("current")
RECORDED = ("authorization", "x-api-key", "txn-token", "cookie")

server = MCPServer("header-echo")


@server.tool()
def whoami() -> str:
    """Return the credential headers of this request."""
    return json.dumps(CURRENT.get({}))


def recording(app):
    """Wrap an ASGI app so every HTTP request's credential headers are kept."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if scope["path"] == "/_headers":
                body = json.dumps(SEEN).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            seen = {name: headers.get(name) for name in RECORDED}
            SEEN.append(seen)
            CURRENT.set(seen)
        await app(scope, receive, send)

    return wrapped


if __name__ == "__main__":
    uvicorn.run(recording(server.streamable_http_app()), host="127.0.0.1",
                port=int(sys.argv[1]), log_level="warning")
