"""Task endpoints over plain HTTP: POST, GET and DELETE /v1/tasks/{id}.

The gateway here has no upstreams of its own, so Warden serves its bundled
example tool servers with the bundled policy pack. These tests need no
Node.js.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from conftest import AGENT_ID, HTTP_TIMEOUT_SECONDS, Gateway, StartGateway

DEFAULT_TTL_SECONDS = 60
MAX_TTL_SECONDS = 120
# Slack between Warden's clock reading and the test's, in seconds.
CLOCK_SLACK_SECONDS = 5

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "warden-tests", "version": "1.0"},
    },
}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway) -> Gateway:
    """Return a Warden on its embedded example servers with small task lifetimes."""
    return start_gateway(
        {},
        None,
        tasks={
            "default_ttl_seconds": DEFAULT_TTL_SECONDS,
            "max_ttl_seconds": MAX_TTL_SECONDS,
        },
    )


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp such as 2026-12-04T10:00:00Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def now() -> datetime:
    """Return the current UTC time."""
    return datetime.now(timezone.utc)


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


def mcp_post(
    gateway: Gateway, token: str, message: dict[str, Any], session: str | None = None
) -> httpx.Response:
    """POST one JSON-RPC message to /mcp with `token`."""
    headers = {**bearer(token), "Accept": "application/json, text/event-stream"}
    if session is not None:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-11-25"
    return httpx.post(
        gateway.mcp_url(), headers=headers, json=message, timeout=HTTP_TIMEOUT_SECONDS
    )


def get_task(gateway: Gateway, task_id: str, token: str) -> httpx.Response:
    """Send GET /v1/tasks/{task_id} with `token`."""
    return httpx.get(
        f"{gateway.base_url}/v1/tasks/{task_id}",
        headers=bearer(token),
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def end_task(gateway: Gateway, task_id: str, token: str) -> httpx.Response:
    """Send DELETE /v1/tasks/{task_id} with `token`."""
    return httpx.delete(
        f"{gateway.base_url}/v1/tasks/{task_id}",
        headers=bearer(token),
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def test_start_task_returns_fields(gateway: Gateway) -> None:
    before = now()
    response = gateway.post_task(
        gateway.issue_svid(), intent="summarise notes", user="bob@acme.test"
    )
    assert response.status_code == 201, response.text
    body = response.json()

    assert str(uuid.UUID(body["task_id"])) == body["task_id"]
    assert len(body["token"].split(".")) == 3
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"]), body["trace_id"]
    lifetime = (parse_time(body["expires_at"]) - before).total_seconds()
    assert (
        DEFAULT_TTL_SECONDS - CLOCK_SLACK_SECONDS
        <= lifetime
        <= DEFAULT_TTL_SECONDS + CLOCK_SLACK_SECONDS
    )


def test_ttl_above_max_is_capped(gateway: Gateway) -> None:
    before = now()
    task = gateway.start_task(ttl_seconds=86_400)
    lifetime = (parse_time(task["expires_at"]) - before).total_seconds()
    assert lifetime <= MAX_TTL_SECONDS + CLOCK_SLACK_SECONDS

    fetched = get_task(gateway, task["task_id"], task["token"]).json()
    stored = parse_time(fetched["expires_at"]) - parse_time(fetched["created_at"])
    assert stored.total_seconds() == MAX_TTL_SECONDS


def test_get_task_with_its_token(gateway: Gateway) -> None:
    task = gateway.start_task(
        intent="read the roadmap", user="carol@acme.test", tools=["files__read_file"]
    )
    response = get_task(gateway, task["task_id"], task["token"])
    assert response.status_code == 200, response.text
    fetched = response.json()
    assert fetched["task_id"] == task["task_id"]
    assert fetched["trace_id"] == task["trace_id"]
    assert fetched["agent"] == AGENT_ID
    assert fetched["user"] == "carol@acme.test"
    assert fetched["intent"] == "read the roadmap"
    assert fetched["tools"] == ["files__read_file"]
    assert fetched["expires_at"] == task["expires_at"]
    assert fetched["state"] == "active"
    assert fetched["revoked_at"] is None


def test_delete_revokes_token_for_mcp(gateway: Gateway) -> None:
    task = gateway.start_task()
    token = task["token"]
    opened = mcp_post(gateway, token, INITIALIZE)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    assert mcp_post(gateway, token, TOOLS_LIST, session).status_code == 200

    ended = end_task(gateway, task["task_id"], token)
    assert ended.status_code == 200, ended.text
    assert ended.json()["revoked"] == [task["task_id"]]

    on_session = mcp_post(gateway, token, TOOLS_LIST, session)
    assert on_session.status_code == 401
    assert on_session.headers["www-authenticate"].startswith("Bearer ")
    new_session = mcp_post(gateway, token, INITIALIZE)
    assert new_session.status_code == 401
    fetched = get_task(gateway, task["task_id"], gateway.issue_svid()).json()
    assert fetched["state"] == "ended"


def test_token_of_other_task_cannot_end_task(gateway: Gateway) -> None:
    first = gateway.start_task()
    second = gateway.start_task()

    rejected = end_task(gateway, second["task_id"], first["token"])
    assert rejected.status_code == 403
    assert rejected.json()["error"] == "forbidden"

    fetched = get_task(gateway, second["task_id"], second["token"])
    assert fetched.json()["state"] == "active"
    assert mcp_post(gateway, second["token"], INITIALIZE).status_code == 200


def test_token_of_other_task_cannot_read_task(gateway: Gateway) -> None:
    first = gateway.start_task()
    second = gateway.start_task()
    assert get_task(gateway, second["task_id"], first["token"]).status_code == 403


def test_other_agent_cannot_end_task(gateway: Gateway) -> None:
    task = gateway.start_task()
    intruder = gateway.issue_svid("spiffe://warden.local/agent/intruder")
    rejected = end_task(gateway, task["task_id"], intruder)
    assert rejected.status_code == 403
    assert get_task(gateway, task["task_id"], task["token"]).json()["state"] == "active"


def test_start_task_rejects_missing_credential(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/tasks",
        json={"intent": "x", "user": "alice@acme.test"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_start_task_rejects_foreign_audience(gateway: Gateway) -> None:
    svid = gateway.issue_svid(audience="billing-api")
    assert gateway.post_task(svid).status_code == 401


def test_start_task_rejects_task_token(gateway: Gateway) -> None:
    task = gateway.start_task()
    assert gateway.post_task(task["token"]).status_code == 401


def test_mcp_rejects_svid_as_task_token(gateway: Gateway) -> None:
    assert mcp_post(gateway, gateway.issue_svid(), INITIALIZE).status_code == 401
