"""Credentials that Warden injects into Streamable HTTP MCP upstreams.

Two upstreams run `servers/header_echo.py`, which records the credential
headers of every request: one takes a static bearer secret, the other a
per-task transaction token. The agent's task token must reach neither.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    Gateway,
    StartGateway,
    connect,
    free_port,
    result_text,
    run,
    spawn,
    wait_for_port,
)

SERVER = Path(__file__).parent / "servers" / "header_echo.py"
SECRET = "s3cret-bearer-value-0042"
POLICIES = {
    "all.cedar": (
        'permit (principal, action == Warden::Action::"start_task", resource);\n'
        'permit (principal, action == Warden::Action::"list_tools", resource);\n'
        'permit (principal, action in Warden::Action::"call_tool", resource);\n'
    )
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Start two header-recording MCP servers and return their base URLs."""
    urls = {}
    for name in ("bearer", "txn"):
        port = free_port()
        managed = spawn(
            f"header-echo-{name}",
            [sys.executable, str(SERVER), str(port)],
            tmp_path_factory.mktemp(name),
        )
        wait_for_port(managed, port)
        urls[name] = f"http://127.0.0.1:{port}"
    return urls


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, servers: dict[str, str]) -> Gateway:
    extra = (
        "\n[upstreams.b.credential]\nkind = \"bearer\"\nsecret_env = \"ECHO_SECRET\"\n"
        "\n[upstreams.t.credential]\nkind = \"txn_token\"\n"
    )
    return start_gateway(
        {"b": {"url": f"{servers['bearer']}/mcp"}, "t": {"url": f"{servers['txn']}/mcp"}},
        POLICIES,
        extra=extra,
        env={"ECHO_SECRET": SECRET},
    )


def seen(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/_headers", timeout=10.0).json()


def call(gateway: Gateway, token: str, tool: str) -> Any:
    async def go() -> Any:
        async with connect(gateway.mcp_url(), token, "legacy") as client:
            return await client.call_tool(tool, {})

    return run(go())


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_static_bearer_reaches_every_request(gateway: Gateway, servers: dict[str, str]) -> None:
    task = gateway.start_task()
    result = call(gateway, task["token"], "b__whoami")

    assert not result.is_error, result
    requests = seen(servers["bearer"])
    assert requests, "the upstream saw no request"
    assert all(r["authorization"] == f"Bearer {SECRET}" for r in requests), requests
    assert all(task["token"] not in json.dumps(r) for r in requests), requests
    # The upstream echoing the secret back does not hand it to the agent.
    assert SECRET not in result_text(result)


def test_txn_token_goes_with_tool_calls(gateway: Gateway, servers: dict[str, str]) -> None:
    task = gateway.start_task()
    result = call(gateway, task["token"], "t__whoami")

    assert not result.is_error, result
    requests = seen(servers["txn"])
    with_token = [r for r in requests if r["txn-token"]]
    assert with_token, f"no request carried a Txn-Token: {requests}"
    assert all(r["authorization"] is None for r in requests), requests
    assert all(task["token"] not in json.dumps(r) for r in requests), requests
    token = with_token[-1]["txn-token"]
    assert jwt_part(token, 0)["typ"] == "txntoken+jwt"
    claims = jwt_part(token, 1)
    assert claims["txn"] == task["task_id"]
    assert claims["aud"] == servers["txn"]
    keys = httpx.get(f"{gateway.base_url}/.well-known/jwks.json", timeout=10.0).json()
    assert jwt_part(token, 0)["kid"] in [key["kid"] for key in keys["keys"]]
