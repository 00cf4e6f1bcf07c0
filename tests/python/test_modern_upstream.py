"""An upstream of the stateless revision 2026-07-28, reached over
Streamable HTTP: Warden probes it with `server/discover`, then sends each
request with the per-request envelope. Agents of both eras reach it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    MODES,
    StartGateway,
    connect,
    decision_of,
    free_port,
    result_text,
    run,
    spawn,
    wait_for_port,
)

SERVER_SCRIPT = Path(__file__).parent / "servers" / "modern_calc.py"

POLICIES = {
    "calc.cedar": """
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("list-tools")
permit (principal, action == Warden::Action::"list_tools", resource);

@id("small-sums")
permit (principal, action == Warden::Action::"calc__add", resource)
when { context.arguments.a < 100 && context.arguments.b < 100 };
""",
}


@pytest.fixture(scope="module")
def modern_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the SDK server and return its /mcp URL."""
    directory = tmp_path_factory.mktemp("modern")
    port = free_port()
    managed = spawn(
        "modern-calc", [sys.executable, str(SERVER_SCRIPT), str(port)], directory
    )
    wait_for_port(managed, port)
    yield f"http://127.0.0.1:{port}/mcp"
    managed.stop()


@pytest.mark.parametrize("mode", MODES)
def test_modern_upstream_allowed_and_denied(
    start_gateway: StartGateway, modern_server: str, mode: str
) -> None:
    gateway = start_gateway({"calc": {"url": modern_server}}, POLICIES)
    token = gateway.start_task(intent="add numbers", user="alice")["token"]

    async def scenario() -> tuple[list[str], object, object]:
        async with connect(gateway.mcp_url(), token, mode) as client:
            tools = await client.list_tools()
            allowed = await client.call_tool("calc__add", {"a": 2, "b": 3})
            denied = await client.call_tool("calc__add", {"a": 200, "b": 3})
            return [tool.name for tool in tools.tools], allowed, denied

    names, allowed, denied = run(scenario())
    assert names == ["calc__add"]
    assert allowed.is_error is False
    assert result_text(allowed) == "5"
    assert denied.is_error is True
    assert decision_of(denied)["decision"] == "deny"


def test_modern_upstream_connected_in_2026_revision(
    start_gateway: StartGateway, modern_server: str
) -> None:
    gateway = start_gateway({"calc": {"url": modern_server}}, POLICIES)
    log = gateway.managed.stderr_text()
    assert "protocol=2026-07-28" in log, log
