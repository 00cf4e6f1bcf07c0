"""What an upstream sends during a call reaches the agent through Warden.

Two upstreams: the reference everything server over Streamable HTTP (its
tools report progress, ask for sampling and elicitation, and send resource
updates) and `servers/relay_probe.py` over stdio (progress, logging and
sampling from the official Python SDK). The agent is the official MCP client
in the handshake era, with callbacks that play the agent's model and user.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from conftest import HTTP_TIMEOUT_SECONDS, Gateway, StartGateway, result_text, run

PROBE_SERVER = Path(__file__).parent / "servers" / "relay_probe.py"
MODE = "legacy"
UPDATE_TIMEOUT_SECONDS = 12.0

POLICIES = {
    "relay.cedar": """
@id("allow-all")
permit (principal, action, resource);

@id("no-sampling-in-audits")
@reason("an audit task may not ask the agent's model")
forbid (principal, action == Warden::Action::"server_request", resource)
when { context.method == "sampling/createMessage" && context.task.intent == "audit" };
""",
}

MODEL_ANSWER = "the model says forty-two"


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, everything_server: str) -> Gateway:
    """Start Warden with the everything server and the stdio probe."""
    return start_gateway(
        {
            "everything": {"url": everything_server},
            "probe": {"command": sys.executable, "args": [str(PROBE_SERVER)]},
        },
        POLICIES,
    )


class Agent:
    """The agent's side of server requests: records what it was asked."""

    def __init__(self) -> None:
        self.sampling: list[str] = []
        self.elicitation: list[str] = []
        self.progress: list[tuple[float, float | None]] = []
        self.logs: list[Any] = []

    async def sample(self, context: Any, params: Any) -> Any:
        self.sampling.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=MODEL_ANSWER),
            model="test-model",
            stopReason="endTurn",
        )

    async def elicit(self, context: Any, params: Any) -> Any:
        self.elicitation.append(params.message)
        return types.ElicitResult(
            action="accept",
            content={"name": "Ada Lovelace", "check": True, "email": "ada@example.com"},
        )

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total))

    async def on_log(self, params: Any) -> None:
        self.logs.append(params.data)


async def call(
    gateway: Gateway,
    token: str,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    agent: Agent,
    mode: str = MODE,
) -> Any:
    """Call one tool on /mcp/{server} with the agent's callbacks."""
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_SECONDS
    ) as http_client:
        transport = streamable_http_client(gateway.mcp_url(server), http_client=http_client)
        async with Client(
            transport,
            mode=mode,
            sampling_callback=agent.sample,
            elicitation_callback=agent.elicit,
            logging_callback=agent.on_log,
        ) as client:
            return await client.call_tool(tool, arguments, progress_callback=agent.on_progress)


def records_of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the records of one kind, in order."""
    return [record for record in records if record["kind"] == kind]


def test_relay_progress_over_http(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    agent = Agent()

    result = run(
        call(
            gateway,
            task["token"],
            "everything",
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            agent,
        )
    )
    records = gateway.trace(task["task_id"], "notification.relayed", 3)
    relayed = records_of(records, "notification.relayed")

    assert "Long running operation completed" in result_text(result)
    assert agent.progress == [(1, 3), (2, 3), (3, 3)]
    assert [r["detail"]["method"] for r in relayed] == ["notifications/progress"] * 3
    assert [r["detail"]["params"]["progress"] for r in relayed] == [1, 2, 3]


def test_relay_sampling_over_http(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    agent = Agent()

    result = run(
        call(
            gateway,
            task["token"],
            "everything",
            "trigger-sampling-request",
            {"prompt": "what is the answer", "maxTokens": 20},
            agent,
        )
    )
    records = gateway.trace(task["task_id"], "server_request.result", 1)
    decision = records_of(records, "server_request.decision")[0]
    outcome = records_of(records, "server_request.result")[0]

    assert len(agent.sampling) == 1
    assert "what is the answer" in agent.sampling[0]
    assert MODEL_ANSWER in result_text(result)
    assert decision["decision"] == "allow"
    assert decision["policy_ids"] == ["allow-all"]
    assert decision["detail"]["method"] == "sampling/createMessage"
    assert decision["detail"]["tool"] == "everything__trigger-sampling-request"
    assert outcome["detail"]["outcome"] == "result"
    assert outcome["parent_span_id"] == decision["span_id"]


def test_relay_elicitation_over_http(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    agent = Agent()

    result = run(
        call(gateway, task["token"], "everything", "trigger-elicitation-request", {}, agent)
    )
    records = gateway.trace(task["task_id"], "server_request.result", 1)
    outcome = records_of(records, "server_request.result")[0]

    assert len(agent.elicitation) == 1
    assert "Ada Lovelace" in result_text(result)
    assert outcome["detail"]["method"] == "elicitation/create"
    assert outcome["detail"]["action"] == "accept"


def test_relay_sampling_denied_by_policy(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"], intent="audit")
    agent = Agent()

    result = run(
        call(
            gateway,
            task["token"],
            "everything",
            "trigger-sampling-request",
            {"prompt": "leak it", "maxTokens": 20},
            agent,
        )
    )
    records = gateway.trace(task["task_id"], "server_request.decision", 1)
    decision = records_of(records, "server_request.decision")[0]

    assert agent.sampling == []
    assert "Warden refused sampling/createMessage" in result_text(result)
    assert "an audit task may not ask the agent's model" in result_text(result)
    assert decision["decision"] == "deny"
    assert decision["policy_ids"] == ["no-sampling-in-audits"]


def test_relay_progress_and_logging_over_stdio(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["probe__*"])
    agent = Agent()

    result = run(call(gateway, task["token"], "probe", "count", {"steps": 3}, agent))
    records = gateway.trace(task["task_id"], "notification.relayed", 6)
    methods = [r["detail"]["method"] for r in records_of(records, "notification.relayed")]

    assert result_text(result) == "counted 3 steps"
    assert agent.progress == [(1, 3), (2, 3), (3, 3)]
    assert agent.logs == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert methods.count("notifications/progress") == 3
    assert methods.count("notifications/message") == 3


def test_relay_sampling_over_stdio(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["probe__*"])
    agent = Agent()

    result = run(call(gateway, task["token"], "probe", "ask", {"question": "why?"}, agent))
    records = gateway.trace(task["task_id"], "server_request.result", 1)
    outcome = records_of(records, "server_request.result")[0]

    assert agent.sampling == ["why?"]
    assert result_text(result) == f"model answered: {MODEL_ANSWER}"
    assert outcome["detail"]["outcome"] == "result"


def test_relay_sampling_refused_to_stateless_agent(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    agent = Agent()

    result = run(
        call(
            gateway,
            task["token"],
            "everything",
            "trigger-sampling-request",
            {"prompt": "hello", "maxTokens": 20},
            agent,
            mode="auto",
        )
    )
    records = gateway.trace(task["task_id"], "server_request.decision", 1)
    decision = records_of(records, "server_request.decision")[0]

    assert agent.sampling == []
    assert "Warden refused sampling/createMessage" in result_text(result)
    assert decision["policy_ids"] == ["warden:protocol-revision"]


def test_relay_resource_update_reaches_subscriber(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    updates: list[str] = []
    updated = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            updated.set()

    async def scenario() -> str:
        async with httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {task['token']}"},
            timeout=HTTP_TIMEOUT_SECONDS,
        ) as http_client:
            transport = streamable_http_client(
                gateway.mcp_url("everything"), http_client=http_client
            )
            async with Client(transport, mode=MODE, message_handler=on_message) as client:
                uri = str((await client.list_resources()).resources[0].uri)
                await client.subscribe_resource(uri)
                await client.call_tool("toggle-subscriber-updates", {})
                try:
                    await asyncio.wait_for(updated.wait(), UPDATE_TIMEOUT_SECONDS)
                finally:
                    await client.call_tool("toggle-subscriber-updates", {})
                    await client.unsubscribe_resource(uri)
                return uri

    uri = run(scenario())
    records = gateway.trace(task["task_id"], "notification.relayed", 1)
    subscribed = records_of(records, "resource.subscribe")[0]
    relayed = records_of(records, "notification.relayed")[0]

    assert uri in updates
    assert subscribed["decision"] == "allow"
    assert relayed["detail"]["method"] == "notifications/resources/updated"
    assert relayed["detail"]["params"]["uri"] == uri


def raw_session(gateway: Gateway, token: str, accept: str) -> dict[str, str]:
    """Open a session on /mcp/everything with raw HTTP; return its request headers."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": accept,
        "Content-Type": "application/json",
    }
    opened = httpx.post(
        gateway.mcp_url("everything"),
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert opened.status_code == 200, opened.text
    return {
        **headers,
        "Mcp-Session-Id": opened.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }


def test_relay_needs_event_stream(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    headers = raw_session(gateway, task["token"], "application/json")

    response = httpx.post(
        gateway.mcp_url("everything"),
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "trigger-sampling-request",
                "arguments": {"prompt": "hi", "maxTokens": 5},
            },
        },
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    records = gateway.trace(task["task_id"], "server_request.decision", 1)
    decision = records_of(records, "server_request.decision")[0]
    text = response.json()["result"]["content"][0]["text"]

    assert response.headers["content-type"].startswith("application/json")
    assert "does not accept text/event-stream" in text
    assert decision["policy_ids"] == ["warden:no-event-stream"]


def test_relay_answer_to_unknown_request_rejected(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    headers = raw_session(gateway, task["token"], "application/json, text/event-stream")

    response = httpx.post(
        gateway.mcp_url("everything"),
        headers=headers,
        json={"jsonrpc": "2.0", "id": "warden-0", "result": {"role": "assistant"}},
        timeout=HTTP_TIMEOUT_SECONDS,
    )

    assert response.status_code == 400
    assert "no request from Warden with id" in response.json()["error"]["message"]


def test_relay_stream_answer_for_preferred_stream(gateway: Gateway) -> None:
    task = gateway.start_task(tools=["everything__*"])
    headers = raw_session(gateway, task["token"], "text/event-stream, application/json")

    response = httpx.post(
        gateway.mcp_url("everything"),
        headers=headers,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text.startswith("event: message\ndata: ")
    assert '"id":2' in response.text
