"""A small MCP server built with the official Python SDK, served over
Streamable HTTP on 127.0.0.1. The SDK answers `server/discover`, so Warden
talks to it in the stateless revision 2026-07-28.

Usage: python modern_calc.py PORT
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("modern-calc")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
