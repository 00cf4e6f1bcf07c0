"""A stdio MCP server built with the official Python SDK whose tools send
what a server may send during a call: progress and logging notifications,
and a sampling request to the client's model.

Usage: python relay_probe.py
"""

import warnings

from mcp import types
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("relay-probe")


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Log each step and report it as progress."""
    for step in range(1, steps + 1):
        await ctx.info(f"step {step} of {steps}")
        await ctx.report_progress(step, steps)
    return f"counted {steps} steps"


@server.tool()
async def ask(question: str, ctx: Context) -> str:
    """Ask the client's model a question and return its answer."""
    # Sampling is deprecated in revision 2026-07-28 but is the subject here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=question)
                )
            ],
            max_tokens=20,
        )
    return f"model answered: {result.content.text}"


if __name__ == "__main__":
    server.run(transport="stdio")
