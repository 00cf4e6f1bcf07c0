"""A stdio MCP server, built with the official Python SDK, whose one tool
returns the value of an environment variable. Warden sets a variable at
spawn from an upstream credential of kind `env`, so a test can check that
the secret arrived, that the agent receives it only redacted, and that the
server did not inherit Warden's own environment.

Usage: python env_echo.py
"""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("env-echo")


@server.tool()
def read_variable(name: str) -> str:
    """Return the value of the environment variable `name`, or a note that it is unset."""
    return os.environ.get(name, f"{name} is unset")


if __name__ == "__main__":
    server.run(transport="stdio")
