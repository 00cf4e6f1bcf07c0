"""Model calls through Warden's `/llm/{provider}` proxy, with the official
OpenAI and Anthropic Python SDKs as the agent's clients.

The upstream is servers/llm_stub.py, a local stand-in for both model APIs
that records every request it receives, responds with fixed usage (11 input
and 7 output tokens) and requests a tool call when the user message contains
"use the tool {JSON}". The MCP upstream is servers/modern_calc.py, whose
`add` tool is what the model asks for in the correlation tests.

One gateway serves the module, with these providers:
- `openai` and `anthropic`: plain providers, `openai` with a model allow-list;
- `capped` (Anthropic API): at most CALL_BUDGET calls per task tree;
- `metered` (OpenAI API): at most TOKEN_BUDGET tokens per task tree;
- `rotating` (Anthropic API): its own stub, whose key file a test rewrites.

These tests need no Node.js.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import (
    DECISION_KEY,
    HTTP_TIMEOUT_SECONDS,
    STARTUP_TIMEOUT_SECONDS,
    Gateway,
    ManagedProcess,
    StartGateway,
    free_port,
    result_text,
    run,
    spawn,
    toml_value,
    wait_for_port,
)

SERVERS = Path(__file__).parent / "servers"
STUB_SCRIPT = SERVERS / "llm_stub.py"
CALC_SCRIPT = SERVERS / "modern_calc.py"

# Provider keys. Each is long and distinctive, so that a search for it in
# logs and database files cannot match anything else.
OPENAI_KEY = "sk-stub-openai-5b0d7f3e9a2c4e81b6d4f0a7c3e9b512"
ANTHROPIC_KEY = "sk-ant-stub-8e41c0d2f7a94b6e9c3d5a1f0b7e2c64"
ROTATING_KEY_FIRST = "sk-ant-stub-rotating-first-2f9c7a1e4b8d6053"
ROTATING_KEY_SECOND = "sk-ant-stub-rotating-second-7d3b9e0a5c1f8462"
PROVIDER_KEYS = [OPENAI_KEY, ANTHROPIC_KEY, ROTATING_KEY_FIRST, ROTATING_KEY_SECOND]
OPENAI_KEY_ENV = "STUB_OPENAI_KEY"

# Values that the stub returns: see servers/llm_stub.py.
REPLY_TEXT = "Hello from the stub model."
INPUT_TOKENS = 11
OUTPUT_TOKENS = 7
RESPONSE_MODEL_SUFFIX = "-2024-07-18"
OPENAI_TOOL_CALL_ID = "call_1"
ANTHROPIC_TOOL_USE_ID = "toolu_1"
# Seconds that the stub pauses after the first text chunk of a stream
# whose user message contains "stream slowly".
STUB_PAUSE_SECONDS = 1.0

OPENAI_MODEL = "gpt-4o-mini"
NANO_MODEL = "gpt-4.1-nano"
UNLISTED_MODEL = "gpt-4o"
CLAUDE_MODEL = "claude-sonnet-4-5"
MAX_TOKENS = 256
ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_BETA = "token-efficient-tools-2025-02-19"
MAX_TOKENS_CAP = 4096

CALL_BUDGET = 2
TOKEN_BUDGET = 30

STRICT_AGENT = "spiffe://warden.local/agent/strict"
FRUGAL_AGENT = "spiffe://warden.local/agent/frugal"
HELPER_AGENT = "spiffe://warden.local/agent/helper"
MODE = "auto"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"

NOT_ALLOWED_POLICY = "warden:model-not-allowed"
BUDGET_POLICY = "warden:model-budget"
STREAM_REASON = "gpt-4.1-nano may not stream"
SHELL_REASON = "models may not be offered the shell tool"
MAX_TOKENS_REASON = "max_tokens above 4096 is not allowed"
USAGE_REASON = "agent frugal stops after 18 tokens"
UNREQUESTED_REASON = "agent strict calls calc only when a model asked for it"

POLICIES = {
    "tasks.cedar": (
        '@id("start-task")\n'
        'permit (principal, action == Warden::Action::"start_task", resource);\n'
        '@id("list-tools")\n'
        'permit (principal, action == Warden::Action::"list_tools", resource);\n'
        '@id("delegate")\n'
        'permit (principal, action == Warden::Action::"delegate", resource);\n'
    ),
    "calc.cedar": (
        '@id("calc-add")\n'
        'permit (principal, action == Warden::Action::"calc__add", resource);\n'
        '@id("model-requested-only")\n'
        f'@reason("{UNREQUESTED_REASON}")\n'
        "forbid (\n"
        f'  principal == Warden::Agent::"{STRICT_AGENT}",\n'
        '  action == Warden::Action::"calc__add",\n'
        "  resource\n"
        ") when { !context.model_requested };\n"
    ),
    "models.cedar": (
        '@id("models")\n'
        'permit (principal, action == Warden::Action::"call_model", resource);\n'
        '@id("no-streaming-nano")\n'
        f'@reason("{STREAM_REASON}")\n'
        'forbid (principal, action == Warden::Action::"call_model", resource)\n'
        f'when {{ context.stream && resource.name == "{NANO_MODEL}" }};\n'
        '@id("no-shell-tools")\n'
        f'@reason("{SHELL_REASON}")\n'
        'forbid (principal, action == Warden::Action::"call_model", resource)\n'
        'when { context.tools.contains("shell__exec") };\n'
        '@id("max-tokens-cap")\n'
        f'@reason("{MAX_TOKENS_REASON}")\n'
        'forbid (principal, action == Warden::Action::"call_model", resource)\n'
        f"when {{ context.max_tokens > {MAX_TOKENS_CAP} }};\n"
        '@id("usage-cap")\n'
        f'@reason("{USAGE_REASON}")\n'
        "forbid (\n"
        f'  principal == Warden::Agent::"{FRUGAL_AGENT}",\n'
        '  action == Warden::Action::"call_model",\n'
        "  resource\n"
        f") when {{ context.usage.total_tokens >= {INPUT_TOKENS + OUTPUT_TOKENS} }};\n"
    ),
}

ADD_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


@dataclass
class Stub:
    """A running llm_stub.py."""

    managed: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        """Return the stub's root URL, the `base_url` of its providers."""
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """Return every request the stub received, oldest first."""
        response = httpx.get(f"{self.url}/_requests", timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        return response.json()

    def requests_with(self, marker: str) -> list[dict[str, Any]]:
        """Return the received requests whose body contains `marker`."""
        return [request for request in self.requests() if marker in request["body"]]

    def expect_anthropic_key(self, key: str) -> None:
        """Make the stub accept only `key` on the Anthropic path from now on."""
        response = httpx.post(
            f"{self.url}/_keys", json={"anthropic": key}, timeout=HTTP_TIMEOUT_SECONDS
        )
        response.raise_for_status()


@dataclass
class Setup:
    """The module's gateway and the stubs behind its providers."""

    gateway: Gateway
    stub: Stub
    rotating_stub: Stub
    rotating_key_file: Path


def start_stub(directory: Path, name: str, anthropic_key: str) -> Stub:
    """Start llm_stub.py on a port it picks and wait for the port on its stdout."""
    managed = spawn(
        name,
        [
            sys.executable,
            str(STUB_SCRIPT),
            "0",
            "--openai-key",
            OPENAI_KEY,
            "--anthropic-key",
            anthropic_key,
        ],
        directory,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        port_text, newline, _ = managed.stdout_path.read_text().partition("\n")
        if newline:
            return Stub(managed, int(port_text))
        if managed.process.poll() is not None or time.monotonic() > deadline:
            managed.stop()
            pytest.fail(
                f"{name} printed no port within {STARTUP_TIMEOUT_SECONDS} s; "
                f"stderr:\n{managed.stderr_text()}",
                pytrace=False,
            )
        time.sleep(0.05)


def provider_toml(name: str, settings: dict[str, Any]) -> str:
    """Return one `[llm.NAME]` table."""
    lines = [f"[llm.{name}]"] + [
        f"{key} = {toml_value(value)}" for key, value in settings.items()
    ]
    return "\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def calc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the SDK calculator server and return its /mcp URL."""
    directory = tmp_path_factory.mktemp("calc")
    port = free_port()
    managed = spawn(
        "modern-calc", [sys.executable, str(CALC_SCRIPT), str(port)], directory
    )
    wait_for_port(managed, port)
    yield f"http://127.0.0.1:{port}/mcp"
    managed.stop()


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    start_gateway: StartGateway,
    calc_server: str,
) -> Iterator[Setup]:
    """Start both stubs and a gateway with the module's five providers."""
    directory = tmp_path_factory.mktemp("llm")
    stub = start_stub(directory, "llm-stub", ANTHROPIC_KEY)
    rotating_stub = start_stub(directory, "llm-stub-rotating", ROTATING_KEY_FIRST)
    # Key files end with a newline, as `echo KEY > FILE` writes them.
    anthropic_key_file = directory / "anthropic.key"
    anthropic_key_file.write_text(ANTHROPIC_KEY + "\n")
    rotating_key_file = directory / "rotating.key"
    rotating_key_file.write_text(ROTATING_KEY_FIRST + "\n")

    openai_settings = {"kind": "openai", "base_url": stub.url}
    anthropic_settings = {"kind": "anthropic", "base_url": stub.url}
    extra = "".join(
        [
            provider_toml(
                "openai",
                {
                    **openai_settings,
                    "api_key_env": OPENAI_KEY_ENV,
                    "models": [OPENAI_MODEL, NANO_MODEL],
                },
            ),
            provider_toml(
                "anthropic",
                {**anthropic_settings, "api_key_file": str(anthropic_key_file)},
            ),
            provider_toml(
                "capped",
                {
                    **anthropic_settings,
                    "api_key_file": str(anthropic_key_file),
                    "max_calls_per_task": CALL_BUDGET,
                },
            ),
            provider_toml(
                "metered",
                {
                    **openai_settings,
                    "api_key_env": OPENAI_KEY_ENV,
                    "max_tokens_per_task": TOKEN_BUDGET,
                },
            ),
            provider_toml(
                "rotating",
                {
                    "kind": "anthropic",
                    "base_url": rotating_stub.url,
                    "api_key_file": str(rotating_key_file),
                },
            ),
        ]
    )
    gateway = start_gateway(
        {"calc": {"url": calc_server}},
        POLICIES,
        extra=extra,
        env={OPENAI_KEY_ENV: OPENAI_KEY},
    )
    yield Setup(gateway, stub, rotating_stub, rotating_key_file)
    stub.managed.stop()
    rotating_stub.managed.stop()


@pytest.fixture
def gateway(setup: Setup) -> Gateway:
    """Return the module's gateway."""
    return setup.gateway


@pytest.fixture
def stub(setup: Setup) -> Stub:
    """Return the stub behind every provider but `rotating`."""
    return setup.stub


# Clients and calls.


def openai_client(
    gateway: Gateway, token: str, provider: str = "openai"
) -> openai.OpenAI:
    """Return an OpenAI SDK client that reaches `provider` through Warden."""
    return openai.OpenAI(
        base_url=f"{gateway.base_url}/llm/{provider}/v1",
        api_key=token,
        max_retries=0,
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def anthropic_client(
    gateway: Gateway, token: str, provider: str = "anthropic"
) -> anthropic.Anthropic:
    """Return an Anthropic SDK client that reaches `provider` through Warden."""
    return anthropic.Anthropic(
        base_url=f"{gateway.base_url}/llm/{provider}",
        api_key=token,
        max_retries=0,
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def marker() -> str:
    """Return a unique text that finds one test's requests at the stub."""
    return f"marker-{uuid.uuid4().hex}"


def user_message(text: str) -> list[dict[str, Any]]:
    """Return a conversation of one user message."""
    return [{"role": "user", "content": text}]


def tool_request(name: str, arguments: dict[str, Any], note: str) -> str:
    """Return a user message that makes the stub ask for tool `name`."""
    return f"{note}: use the tool {json.dumps({'name': name, 'arguments': arguments})}"


def chat(
    gateway: Gateway,
    token: str,
    text: str,
    provider: str = "openai",
    model: str = OPENAI_MODEL,
    **options: Any,
) -> Any:
    """Send one non-streamed chat completion and return the SDK's result."""
    with openai_client(gateway, token, provider) as client:
        return client.chat.completions.create(
            model=model, messages=user_message(text), **options
        )


def chat_stream(
    gateway: Gateway,
    token: str,
    text: str,
    provider: str = "openai",
    model: str = OPENAI_MODEL,
    **options: Any,
) -> list[Any]:
    """Send one streamed chat completion and return all its chunks."""
    with openai_client(gateway, token, provider) as client:
        stream = client.chat.completions.create(
            model=model, messages=user_message(text), stream=True, **options
        )
        return list(stream)


def message(
    gateway: Gateway,
    token: str,
    text: str,
    provider: str = "anthropic",
    max_tokens: int = MAX_TOKENS,
    **options: Any,
) -> Any:
    """Send one non-streamed Anthropic message and return the SDK's result."""
    with anthropic_client(gateway, token, provider) as client:
        return client.messages.create(
            model=CLAUDE_MODEL,
            max_tokens=max_tokens,
            messages=user_message(text),
            **options,
        )


def message_stream(
    gateway: Gateway, token: str, text: str, provider: str = "anthropic"
) -> tuple[list[str], Any]:
    """Stream one Anthropic message; return its text pieces and the final message."""
    with anthropic_client(gateway, token, provider) as client:
        with client.messages.stream(
            model=CLAUDE_MODEL, max_tokens=MAX_TOKENS, messages=user_message(text)
        ) as stream:
            pieces = list(stream.text_stream)
            return pieces, stream.get_final_message()


def chunk_text(chunks: list[Any]) -> str:
    """Join the text deltas of streamed chat completion chunks."""
    return "".join(
        chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices
    )


def openai_denial(call: Any) -> dict[str, Any]:
    """Run `call`, check Warden's denial in the OpenAI shape and return its body."""
    with pytest.raises(openai.PermissionDeniedError) as raised:
        call()
    assert raised.value.status_code == 403
    body = raised.value.response.json()
    assert body["error"]["type"] == "warden_denied", body
    assert body["error"]["code"] == "warden_denied", body
    assert body["error"]["param"] is None, body
    assert body["error"]["message"], body
    assert body[DECISION_KEY]["decision"] == "deny", body
    return body


def anthropic_denial(call: Any) -> dict[str, Any]:
    """Run `call`, check Warden's denial in the Anthropic shape and return its body."""
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        call()
    assert raised.value.status_code == 403
    body = raised.value.response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "permission_error", body
    assert body["error"]["message"], body
    assert body[DECISION_KEY]["decision"] == "deny", body
    return body


def start_task_as(gateway: Gateway, agent: str, **fields: Any) -> dict[str, Any]:
    """Start a task as `agent` and return the JSON body of the 201 response."""
    response = gateway.post_task(gateway.issue_svid(agent), **fields)
    assert response.status_code == 201, f"POST /v1/tasks: {response.text}"
    return response.json()


def delegate(gateway: Gateway, token: str, agent: str) -> dict[str, Any]:
    """Delegate the task of `token` to `agent` and return the token response."""
    response = httpx.post(
        f"{gateway.base_url}/oauth2/token",
        data={
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": token,
            "subject_token_type": JWT_TOKEN_TYPE,
            "actor_token": gateway.issue_svid(agent),
            "actor_token_type": JWT_TOKEN_TYPE,
        },
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, f"POST /oauth2/token: {response.text}"
    return response.json()


@asynccontextmanager
async def connect_with(
    url: str, token: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """Open an MCP client on `url` that sends `token` and `headers` on every request."""
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
        timeout=HTTP_TIMEOUT_SECONDS,
    ) as http_client:
        transport = streamable_http_client(url, http_client=http_client)
        async with Client(transport, mode=MODE) as client:
            yield client


def call_tool(
    gateway: Gateway,
    token: str,
    name: str,
    arguments: dict[str, Any],
    server: str | None = None,
    meta: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """Make one tools/call on /mcp, or on /mcp/{server}, and return its result."""

    async def scenario() -> Any:
        async with connect_with(gateway.mcp_url(server), token, headers) as client:
            return await client.call_tool(name, arguments, meta=meta)

    return run(scenario())


# Trace records.


def records_of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the records of `kind`, oldest first."""
    return [record for record in records if record["kind"] == kind]


def model_records(
    gateway: Gateway, task_id: str, results: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Wait for `results` model.result records; return the decisions and the results."""
    records = gateway.trace(task_id, "model.result", results)
    return records_of(records, "model.decision"), records_of(records, "model.result")


def new_traceparent(trace_id: str) -> tuple[str, str]:
    """Return a fresh span id and a sampled `traceparent` for it in `trace_id`."""
    span_id = uuid.uuid4().hex[:16]
    return span_id, f"00-{trace_id}-{span_id}-01"


def header_values(request: dict[str, Any], name: str) -> list[str]:
    """Return the values of header `name` in a request recorded by the stub."""
    return [value for key, value in request["headers"] if key.lower() == name.lower()]


def sha256_hex(text: str) -> str:
    """Return the SHA-256 of `text` in UTF-8 as lowercase hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """Return `value` as JSON with sorted keys and no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# OpenAI API.


def test_openai_chat_completion(gateway: Gateway) -> None:
    task = gateway.start_task()
    completion = chat(gateway, task["token"], f"{marker()} hello")

    assert completion.choices[0].message.content == REPLY_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == OPENAI_MODEL + RESPONSE_MODEL_SUFFIX
    assert completion.usage.prompt_tokens == INPUT_TOKENS
    assert completion.usage.completion_tokens == OUTPUT_TOKENS


def test_openai_call_traced(gateway: Gateway) -> None:
    task = gateway.start_task()
    chat(gateway, task["token"], f"{marker()} hello")

    decisions, results = model_records(gateway, task["task_id"], 1)
    assert len(decisions) == 1
    assert decisions[0]["decision"] == "allow"
    assert decisions[0]["policy_ids"] == ["models"]
    assert decisions[0]["target"] == f"openai/{OPENAI_MODEL}"
    assert len(results) == 1
    result = results[0]
    assert result["parent_span_id"] == decisions[0]["span_id"]
    detail = result["detail"]
    assert detail["gen_ai.operation.name"] == "chat"
    assert detail["gen_ai.provider.name"] == "openai"
    assert detail["gen_ai.request.model"] == OPENAI_MODEL
    assert detail["gen_ai.response.model"] == OPENAI_MODEL + RESPONSE_MODEL_SUFFIX
    assert detail["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    assert detail["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    assert detail["gen_ai.response.finish_reasons"] == ["stop"]
    assert detail["tool_calls"] == []
    assert detail["stream"] is False
    assert detail["status"] == 200
    # Milliseconds as a number, fractional as in tool.result records.
    assert isinstance(detail["duration_ms"], (int, float))
    assert not isinstance(detail["duration_ms"], bool)
    assert detail["duration_ms"] >= 0


def test_openai_stream(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    chunks = chat_stream(gateway, task["token"], f"{note} hello")

    assert chunk_text(chunks) == REPLY_TEXT
    finish_reasons = [
        chunk.choices[0].finish_reason
        for chunk in chunks
        if chunk.choices and chunk.choices[0].finish_reason
    ]
    assert finish_reasons == ["stop"]

    # The client requested no usage, so Warden requested it upstream.
    [received] = stub.requests_with(note)
    body = json.loads(received["body"])
    assert body["stream"] is True
    assert body["stream_options"]["include_usage"] is True

    _, results = model_records(gateway, task["task_id"], 1)
    detail = results[0]["detail"]
    assert detail["stream"] is True
    assert detail["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    assert detail["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    assert detail["gen_ai.response.finish_reasons"] == ["stop"]
    assert detail["gen_ai.response.model"] == OPENAI_MODEL + RESPONSE_MODEL_SUFFIX


def test_openai_stream_usage_option_kept(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    chunks = chat_stream(
        gateway, task["token"], note, stream_options={"include_usage": True}
    )

    usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(usage) == 1
    assert usage[0].total_tokens == INPUT_TOKENS + OUTPUT_TOKENS
    [received] = stub.requests_with(note)
    assert json.loads(received["body"])["stream_options"] == {"include_usage": True}


def test_stream_not_buffered(gateway: Gateway) -> None:
    task = gateway.start_task()
    arrivals: list[tuple[str, float]] = []
    with openai_client(gateway, task["token"]) as client:
        stream = client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=user_message(f"{marker()} stream slowly"),
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((chunk.choices[0].delta.content, time.monotonic()))

    assert "".join(text for text, _ in arrivals) == REPLY_TEXT
    first_at = arrivals[0][1]
    last_at = arrivals[-1][1]
    # The stub pauses after the first piece; a buffering proxy would deliver
    # every piece after the pause.
    assert last_at - first_at >= STUB_PAUSE_SECONDS / 2


# Anthropic API.


def test_anthropic_message(gateway: Gateway) -> None:
    task = gateway.start_task()
    reply = message(gateway, task["token"], f"{marker()} hello")

    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == REPLY_TEXT
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens == INPUT_TOKENS
    assert reply.usage.output_tokens == OUTPUT_TOKENS

    decisions, results = model_records(gateway, task["task_id"], 1)
    assert decisions[0]["decision"] == "allow"
    assert decisions[0]["target"] == f"anthropic/{CLAUDE_MODEL}"
    detail = results[0]["detail"]
    assert detail["gen_ai.operation.name"] == "chat"
    assert detail["gen_ai.provider.name"] == "anthropic"
    assert detail["gen_ai.request.model"] == CLAUDE_MODEL
    assert detail["gen_ai.response.model"] == CLAUDE_MODEL + RESPONSE_MODEL_SUFFIX
    assert detail["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    assert detail["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    assert detail["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert detail["stream"] is False
    assert detail["status"] == 200


def test_anthropic_stream(gateway: Gateway) -> None:
    task = gateway.start_task()
    pieces, final = message_stream(gateway, task["token"], f"{marker()} hello")

    assert "".join(pieces) == REPLY_TEXT
    assert len(pieces) > 1
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == INPUT_TOKENS
    assert final.usage.output_tokens == OUTPUT_TOKENS

    _, results = model_records(gateway, task["task_id"], 1)
    detail = results[0]["detail"]
    assert detail["stream"] is True
    assert detail["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    # message_start reports 1 output token and message_delta reports 7. The
    # final count replaces the first one.
    assert detail["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    assert detail["gen_ai.response.finish_reasons"] == ["end_turn"]


def test_anthropic_accepts_x_api_key(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    response = httpx.post(
        f"{gateway.base_url}/llm/anthropic/v1/messages",
        headers={"x-api-key": task["token"], "anthropic-version": ANTHROPIC_VERSION},
        json={
            "model": CLAUDE_MODEL,
            "max_tokens": MAX_TOKENS,
            "messages": user_message(note),
        },
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == REPLY_TEXT
    [received] = stub.requests_with(note)
    assert header_values(received, "x-api-key") == [ANTHROPIC_KEY]


# What the upstream receives.


def test_openai_upstream_gets_key_not_token(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    chat(
        gateway,
        task["token"],
        note,
        extra_headers={"Cookie": "session=agent-cookie"},
    )

    [received] = stub.requests_with(note)
    assert received["path"] == "/v1/chat/completions"
    assert header_values(received, "authorization") == [f"Bearer {OPENAI_KEY}"]
    assert header_values(received, "cookie") == []
    assert header_values(received, "x-api-key") == []
    for name, value in received["headers"]:
        assert task["token"] not in value, f"task token forwarded in header {name}"
    assert json.loads(received["body"]) == {
        "model": OPENAI_MODEL,
        "messages": user_message(note),
    }


def test_anthropic_upstream_gets_key_not_token(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    message(
        gateway,
        task["token"],
        note,
        extra_headers={
            "anthropic-version": ANTHROPIC_VERSION,
            "anthropic-beta": ANTHROPIC_BETA,
            "Cookie": "session=agent-cookie",
        },
    )

    [received] = stub.requests_with(note)
    assert received["path"] == "/v1/messages"
    assert header_values(received, "x-api-key") == [ANTHROPIC_KEY]
    assert header_values(received, "authorization") == []
    assert header_values(received, "cookie") == []
    assert header_values(received, "anthropic-version") == [ANTHROPIC_VERSION]
    assert header_values(received, "anthropic-beta") == [ANTHROPIC_BETA]
    for name, value in received["headers"]:
        assert task["token"] not in value, f"task token forwarded in header {name}"
    assert json.loads(received["body"]) == {
        "model": CLAUDE_MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": user_message(note),
    }


# Requests that Warden refuses before any policy runs.


def test_missing_token_unauthorized(gateway: Gateway, stub: Stub) -> None:
    note = marker()
    response = httpx.post(
        f"{gateway.base_url}/llm/openai/v1/chat/completions",
        json={"model": OPENAI_MODEL, "messages": user_message(note)},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 401, response.text
    assert stub.requests_with(note) == []


def test_bad_token_unauthorized(gateway: Gateway, stub: Stub) -> None:
    note = marker()
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, "not-a-task-token", note)
    with pytest.raises(anthropic.AuthenticationError):
        message(gateway, "not-a-task-token", note)
    # A JWT-SVID proves the agent but is no task token.
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, gateway.issue_svid(), note)
    assert stub.requests_with(note) == []


def test_unknown_provider_not_found(gateway: Gateway) -> None:
    task = gateway.start_task()
    with pytest.raises(openai.NotFoundError):
        chat(gateway, task["token"], marker(), provider="nosuch")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/llm/openai/v1/embeddings"),
        ("POST", "/llm/openai/v1/messages"),
        ("GET", "/llm/openai/v1/models"),
    ],
)
def test_openai_unserved_path_not_found(
    gateway: Gateway, stub: Stub, method: str, path: str
) -> None:
    task = gateway.start_task()
    note = marker()
    response = httpx.request(
        method,
        f"{gateway.base_url}{path}",
        headers={"Authorization": f"Bearer {task['token']}"},
        json={"model": OPENAI_MODEL, "messages": user_message(note)},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert path.removeprefix("/llm/openai") in error["message"], error
    assert stub.requests_with(note) == []


def test_served_path_with_another_method_not_allowed(
    gateway: Gateway, stub: Stub
) -> None:
    task = gateway.start_task()
    response = httpx.get(
        f"{gateway.base_url}/llm/openai/v1/chat/completions",
        headers={"Authorization": f"Bearer {task['token']}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 405, response.text
    assert "use POST" in response.json()["error"]["message"]


def test_anthropic_unserved_path_not_found(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    response = httpx.post(
        f"{gateway.base_url}/llm/anthropic/v1/chat/completions",
        headers={"Authorization": f"Bearer {task['token']}"},
        json={"model": CLAUDE_MODEL, "messages": user_message(note)},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["type"] == "error", body
    assert "/v1/chat/completions" in body["error"]["message"], body
    assert stub.requests_with(note) == []


# Denials.


def test_model_not_allowed(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    body = openai_denial(
        lambda: chat(gateway, task["token"], note, model=UNLISTED_MODEL)
    )

    assert body[DECISION_KEY]["policy_ids"] == [NOT_ALLOWED_POLICY]
    assert UNLISTED_MODEL in body["error"]["message"]
    assert stub.requests_with(note) == []
    records = gateway.trace(task["task_id"], "model.decision", 1)
    [decision] = records_of(records, "model.decision")
    assert decision["decision"] == "deny"
    assert decision["policy_ids"] == [NOT_ALLOWED_POLICY]
    assert decision["target"] == f"openai/{UNLISTED_MODEL}"
    assert records_of(records, "model.result") == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f'"model": "{OPENAI_MODEL}"', f'"model": "{UNLISTED_MODEL}"'),
        (f'"model": "{NANO_MODEL}", "stream": false', '"stream": true'),
    ],
    ids=["model", "stream"],
)
def test_repeated_body_field_not_forwarded(
    gateway: Gateway, stub: Stub, first: str, second: str
) -> None:
    # Most JSON parsers keep the last of two equal keys. A proxy that
    # decided on the first one would let the provider run an unlisted
    # model, or stream where policy forbids it.
    task = gateway.start_task()
    note = marker()
    messages = json.dumps(user_message(note))
    response = httpx.post(
        f"{gateway.base_url}/llm/openai/v1/chat/completions",
        headers={
            "Authorization": f"Bearer {task['token']}",
            "Content-Type": "application/json",
        },
        content=f'{{{first}, "messages": {messages}, {second}}}',
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert 400 <= response.status_code < 500, response.text
    assert stub.requests_with(note) == []


def test_stream_forbidden_by_policy(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    body = openai_denial(
        lambda: chat_stream(gateway, task["token"], note, model=NANO_MODEL)
    )

    assert body[DECISION_KEY]["policy_ids"] == ["no-streaming-nano"]
    assert STREAM_REASON in body["error"]["message"]
    assert stub.requests_with(note) == []
    # The same model without streaming is allowed.
    completion = chat(gateway, task["token"], note, model=NANO_MODEL)
    assert completion.choices[0].message.content == REPLY_TEXT


def test_offered_tools_in_policy_context(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()

    def offer(tool: str) -> Any:
        return chat(
            gateway,
            task["token"],
            note,
            tools=[
                {
                    "type": "function",
                    "function": {"name": tool, "parameters": ADD_TOOL_SCHEMA},
                }
            ],
        )

    body = openai_denial(lambda: offer("shell__exec"))
    assert body[DECISION_KEY]["policy_ids"] == ["no-shell-tools"]
    assert SHELL_REASON in body["error"]["message"]
    assert stub.requests_with(note) == []
    assert offer("calc__add").choices[0].message.content == REPLY_TEXT


def test_max_tokens_in_policy_context(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    note = marker()
    body = anthropic_denial(
        lambda: message(gateway, task["token"], note, max_tokens=MAX_TOKENS_CAP * 2)
    )

    assert body[DECISION_KEY]["policy_ids"] == ["max-tokens-cap"]
    assert MAX_TOKENS_REASON in body["error"]["message"]
    assert stub.requests_with(note) == []
    reply = message(gateway, task["token"], note, max_tokens=MAX_TOKENS_CAP)
    assert reply.content[0].text == REPLY_TEXT


def test_usage_in_policy_context(gateway: Gateway) -> None:
    task = start_task_as(gateway, FRUGAL_AGENT)
    first = chat(gateway, task["token"], marker())
    assert first.choices[0].message.content == REPLY_TEXT

    body = openai_denial(lambda: chat(gateway, task["token"], marker()))
    assert body[DECISION_KEY]["policy_ids"] == ["usage-cap"]
    assert USAGE_REASON in body["error"]["message"]


def test_ended_task_unauthenticated(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    ended = httpx.delete(
        f"{gateway.base_url}/v1/tasks/{task['task_id']}",
        headers={"Authorization": f"Bearer {task['token']}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert ended.status_code == 200, ended.text

    # An ended task's token no longer authenticates: 401, as on /mcp.
    note = marker()
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway, task["token"], note)
    assert "was ended" in str(refused.value)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        message(gateway, task["token"], note)
    assert "was ended" in str(refused.value)
    assert stub.requests_with(note) == []


# Budgets.


def test_call_budget_exhausted(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    for _ in range(CALL_BUDGET):
        reply = message(gateway, task["token"], marker(), provider="capped")
        assert reply.content[0].text == REPLY_TEXT

    note = marker()
    body = anthropic_denial(
        lambda: message(gateway, task["token"], note, provider="capped")
    )
    assert body[DECISION_KEY]["policy_ids"] == [BUDGET_POLICY]
    assert stub.requests_with(note) == []

    records = gateway.trace(task["task_id"], "model.decision", CALL_BUDGET + 1)
    decisions = records_of(records, "model.decision")
    assert [record["decision"] for record in decisions] == ["allow"] * CALL_BUDGET + [
        "deny"
    ]
    assert decisions[-1]["policy_ids"] == [BUDGET_POLICY]
    assert decisions[-1]["target"] == f"capped/{CLAUDE_MODEL}"


def test_call_budget_per_provider_and_task(gateway: Gateway) -> None:
    task = gateway.start_task()
    for _ in range(CALL_BUDGET):
        message(gateway, task["token"], marker(), provider="capped")
    anthropic_denial(
        lambda: message(gateway, task["token"], marker(), provider="capped")
    )

    # Another provider in the same task keeps its own count.
    reply = message(gateway, task["token"], marker(), provider="anthropic")
    assert reply.content[0].text == REPLY_TEXT
    # Another task starts from zero.
    other = gateway.start_task()
    reply = message(gateway, other["token"], marker(), provider="capped")
    assert reply.content[0].text == REPLY_TEXT


def test_token_budget_exhausted(gateway: Gateway, stub: Stub) -> None:
    task = gateway.start_task()
    # A stream whose client requested no usage still counts, because Warden
    # requests usage upstream.
    chunks = chat_stream(gateway, task["token"], marker(), provider="metered")
    assert chunk_text(chunks) == REPLY_TEXT
    completion = chat(gateway, task["token"], marker(), provider="metered")
    assert completion.choices[0].message.content == REPLY_TEXT
    # Two calls used 36 tokens of the 30 allowed, so the next call is denied.
    note = marker()
    body = openai_denial(
        lambda: chat(gateway, task["token"], note, provider="metered")
    )
    assert body[DECISION_KEY]["policy_ids"] == [BUDGET_POLICY]
    assert stub.requests_with(note) == []

    # Another provider in the same task keeps its own count.
    other = chat(gateway, task["token"], marker(), provider="openai")
    assert other.choices[0].message.content == REPLY_TEXT


def test_budget_shared_with_delegated_task(gateway: Gateway) -> None:
    root = gateway.start_task()
    child = delegate(gateway, root["token"], HELPER_AGENT)
    child_token = child["access_token"]

    message(gateway, root["token"], marker(), provider="capped")
    reply = message(gateway, child_token, marker(), provider="capped")
    assert reply.content[0].text == REPLY_TEXT

    for token in [root["token"], child_token]:
        body = anthropic_denial(
            lambda token=token: message(gateway, token, marker(), provider="capped")
        )
        assert body[DECISION_KEY]["policy_ids"] == [BUDGET_POLICY]


# Provider keys.


def test_key_file_rotation(setup: Setup) -> None:
    gateway = setup.gateway
    rotating_stub = setup.rotating_stub
    task = gateway.start_task()

    first = marker()
    reply = message(gateway, task["token"], first, provider="rotating")
    assert reply.content[0].text == REPLY_TEXT
    [received] = rotating_stub.requests_with(first)
    assert header_values(received, "x-api-key") == [ROTATING_KEY_FIRST]

    # The upstream now expects the second key, and the key file still
    # contains the first.
    rotating_stub.expect_anthropic_key(ROTATING_KEY_SECOND)
    stale = marker()
    with pytest.raises(anthropic.AuthenticationError) as raised:
        message(gateway, task["token"], stale, provider="rotating")
    [received] = rotating_stub.requests_with(stale)
    assert header_values(received, "x-api-key") == [ROTATING_KEY_FIRST]
    # The stub's error message repeats the key it received.
    assert ROTATING_KEY_FIRST not in raised.value.response.text

    setup.rotating_key_file.write_text(ROTATING_KEY_SECOND + "\n")
    second = marker()
    reply = message(gateway, task["token"], second, provider="rotating")
    assert reply.content[0].text == REPLY_TEXT
    [received] = rotating_stub.requests_with(second)
    assert header_values(received, "x-api-key") == [ROTATING_KEY_SECOND]


def test_provider_keys_never_leak(setup: Setup) -> None:
    gateway = setup.gateway
    task = gateway.start_task()
    bearer = {"Authorization": f"Bearer {task['token']}"}
    openai_url = f"{gateway.base_url}/llm/openai/v1/chat/completions"
    anthropic_url = f"{gateway.base_url}/llm/anthropic/v1/messages"
    anthropic_body = {
        "model": CLAUDE_MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": user_message(marker()),
    }
    requests = [
        (openai_url, {"model": OPENAI_MODEL, "messages": user_message(marker())}),
        (
            openai_url,
            {"model": OPENAI_MODEL, "messages": user_message(marker()), "stream": True},
        ),
        (openai_url, {"model": UNLISTED_MODEL, "messages": user_message(marker())}),
        (anthropic_url, anthropic_body),
        (anthropic_url, {**anthropic_body, "stream": True}),
        (f"{gateway.base_url}/llm/openai/v1/embeddings", {"input": "x"}),
        # The stub responds to these with a 401 whose message repeats the key.
        (
            openai_url,
            {"model": OPENAI_MODEL, "messages": user_message("reject the key")},
        ),
        (
            openai_url,
            {
                "model": OPENAI_MODEL,
                "messages": user_message("reject the key"),
                "stream": True,
            },
        ),
        (
            anthropic_url,
            {**anthropic_body, "messages": user_message("reject the key")},
        ),
        (
            anthropic_url,
            {
                **anthropic_body,
                "messages": user_message("reject the key"),
                "stream": True,
            },
        ),
    ]
    responses = [
        httpx.post(url, headers=bearer, json=body, timeout=HTTP_TIMEOUT_SECONDS)
        for url, body in requests
    ]
    assert [response.status_code for response in responses] == [
        200,
        200,
        403,
        200,
        200,
        404,
        401,
        401,
        401,
        401,
    ]
    gateway.trace(task["task_id"], "model.result", 4)
    trace = gateway.warden("trace", "show", task["task_id"], "--json")
    assert trace.returncode == 0, trace.stderr

    state_dir = gateway.config_path.parent / "state"
    state_files = [path for path in state_dir.rglob("*") if path.is_file()]
    assert any(path.name == "warden.db" for path in state_files), state_files
    for key in PROVIDER_KEYS:
        for response in responses:
            assert key not in response.text, f"key in the body from {response.url}"
            for name, value in response.headers.items():
                assert key not in value, f"key in header {name} from {response.url}"
        assert key not in trace.stdout, "key in the trace"
        assert key not in gateway.managed.stderr_text(), "key in Warden's stderr"
        assert key not in gateway.managed.stdout_path.read_text(), "key in stdout"
        for path in state_files:
            assert key.encode() not in path.read_bytes(), f"key in {path}"


# Trace context.


def test_traceparent_joins_agent_trace(gateway: Gateway, stub: Stub) -> None:
    trace_id = uuid.uuid4().hex
    task_span, task_traceparent = new_traceparent(trace_id)
    response = httpx.post(
        f"{gateway.base_url}/v1/tasks",
        headers={
            "Authorization": f"Bearer {gateway.issue_svid()}",
            "traceparent": task_traceparent,
        },
        json={"intent": "trace context test", "user": "alice@acme.test"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["trace_id"] == trace_id

    model_span, model_traceparent = new_traceparent(trace_id)
    note = marker()
    chat(gateway, task["token"], note, extra_headers={"traceparent": model_traceparent})

    header_span, header_traceparent = new_traceparent(trace_id)
    call_tool(
        gateway,
        task["token"],
        "calc__add",
        {"a": 1, "b": 1},
        headers={"traceparent": header_traceparent},
    )
    meta_span, meta_traceparent = new_traceparent(trace_id)
    call_tool(
        gateway,
        task["token"],
        "calc__add",
        {"a": 2, "b": 2},
        meta={"traceparent": meta_traceparent},
    )

    records = gateway.trace(task["task_id"], "tool.decision", 2)
    [task_start] = records_of(records, "task.start")
    assert task_start["parent_span_id"] == task_span
    [model_decision] = records_of(records, "model.decision")
    assert model_decision["parent_span_id"] == model_span
    tool_decisions = records_of(records, "tool.decision")
    assert [record["parent_span_id"] for record in tool_decisions] == [
        header_span,
        meta_span,
    ]

    [received] = stub.requests_with(note)
    [upstream_traceparent] = header_values(received, "traceparent")
    match = re.fullmatch(
        r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", upstream_traceparent
    )
    assert match is not None, upstream_traceparent
    assert match.group(1) == trace_id
    assert match.group(2) == model_decision["span_id"]


# Correlation of tool calls with the model responses that asked for them.


def test_tool_call_matched_by_arguments(gateway: Gateway) -> None:
    task = gateway.start_task()
    completion = chat(
        gateway,
        task["token"],
        tool_request("calc__add", {"a": 2, "b": 3}, marker()),
        tools=[
            {
                "type": "function",
                "function": {"name": "calc__add", "parameters": ADD_TOOL_SCHEMA},
            }
        ],
    )
    [tool_call] = completion.choices[0].message.tool_calls
    assert tool_call.id == OPENAI_TOOL_CALL_ID
    assert completion.choices[0].finish_reason == "tool_calls"

    # The same arguments in another key order still match.
    result = call_tool(gateway, task["token"], "calc__add", {"b": 3, "a": 2})
    assert result.is_error is False
    assert result_text(result) == "5"

    records = gateway.trace(task["task_id"], "tool.decision", 1)
    [model_result] = records_of(records, "model.result")
    detail = model_result["detail"]
    assert detail["gen_ai.response.finish_reasons"] == ["tool_calls"]
    [traced_call] = detail["tool_calls"]
    assert traced_call["id"] == OPENAI_TOOL_CALL_ID
    assert traced_call["name"] == "calc__add"
    assert traced_call["arguments_sha256"] in {
        sha256_hex(tool_call.function.arguments),
        sha256_hex(canonical_json({"a": 2, "b": 3})),
    }
    [tool_decision] = records_of(records, "tool.decision")
    assert tool_decision["decision"] == "allow"
    assert tool_decision["detail"]["requested_by"] == {
        "span_id": model_result["span_id"],
        "tool_call_id": OPENAI_TOOL_CALL_ID,
        "match": "arguments",
    }


def test_tool_call_matched_by_id(gateway: Gateway) -> None:
    task = gateway.start_task()
    reply = message(
        gateway,
        task["token"],
        tool_request("calc__add", {"a": 4, "b": 5}, marker()),
        tools=[{"name": "calc__add", "input_schema": ADD_TOOL_SCHEMA}],
    )
    [tool_use] = reply.content
    assert tool_use.type == "tool_use"
    assert tool_use.id == ANTHROPIC_TOOL_USE_ID
    assert reply.stop_reason == "tool_use"

    result = call_tool(
        gateway,
        task["token"],
        "calc__add",
        tool_use.input,
        meta={"dev.warden/tool_call_id": tool_use.id},
    )
    assert result_text(result) == "9"

    records = gateway.trace(task["task_id"], "tool.decision", 1)
    [model_result] = records_of(records, "model.result")
    assert model_result["detail"]["gen_ai.response.finish_reasons"] == ["tool_use"]
    [traced_call] = model_result["detail"]["tool_calls"]
    assert traced_call["id"] == ANTHROPIC_TOOL_USE_ID
    assert traced_call["name"] == "calc__add"
    [tool_decision] = records_of(records, "tool.decision")
    assert tool_decision["detail"]["requested_by"] == {
        "span_id": model_result["span_id"],
        "tool_call_id": ANTHROPIC_TOOL_USE_ID,
        "match": "id",
    }


def test_streamed_tool_call_matched(gateway: Gateway) -> None:
    task = gateway.start_task()
    chunks = chat_stream(
        gateway, task["token"], tool_request("calc__add", {"a": 6, "b": 1}, marker())
    )
    deltas = [
        call
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    ]
    assert deltas[0].id == OPENAI_TOOL_CALL_ID
    arguments = "".join(call.function.arguments or "" for call in deltas)
    assert json.loads(arguments) == {"a": 6, "b": 1}

    result = call_tool(gateway, task["token"], "calc__add", json.loads(arguments))
    assert result_text(result) == "7"

    records = gateway.trace(task["task_id"], "tool.decision", 1)
    [model_result] = records_of(records, "model.result")
    assert model_result["detail"]["stream"] is True
    assert [call["id"] for call in model_result["detail"]["tool_calls"]] == [
        OPENAI_TOOL_CALL_ID
    ]
    [tool_decision] = records_of(records, "tool.decision")
    assert tool_decision["detail"]["requested_by"] == {
        "span_id": model_result["span_id"],
        "tool_call_id": OPENAI_TOOL_CALL_ID,
        "match": "arguments",
    }


def test_server_endpoint_tool_call_matched(gateway: Gateway) -> None:
    task = gateway.start_task()
    # An agent on /mcp/calc offers the model the bare tool name.
    completion = chat(
        gateway, task["token"], tool_request("add", {"a": 10, "b": 20}, marker())
    )
    [tool_call] = completion.choices[0].message.tool_calls
    assert tool_call.function.name == "add"

    result = call_tool(
        gateway, task["token"], "add", json.loads(tool_call.function.arguments), "calc"
    )
    assert result_text(result) == "30"

    records = gateway.trace(task["task_id"], "tool.decision", 1)
    [model_result] = records_of(records, "model.result")
    [tool_decision] = records_of(records, "tool.decision")
    assert tool_decision["detail"]["requested_by"] == {
        "span_id": model_result["span_id"],
        "tool_call_id": OPENAI_TOOL_CALL_ID,
        "match": "arguments",
    }


def test_unrequested_tool_call_marked(gateway: Gateway) -> None:
    task = gateway.start_task()
    # The model asked for other arguments, so this call does not match.
    chat(gateway, task["token"], tool_request("calc__add", {"a": 1, "b": 2}, marker()))
    result = call_tool(gateway, task["token"], "calc__add", {"a": 1, "b": 3})
    assert result.is_error is False
    assert result_text(result) == "4"

    records = gateway.trace(task["task_id"], "tool.decision", 1)
    [tool_decision] = records_of(records, "tool.decision")
    assert tool_decision["decision"] == "allow"
    assert "requested_by" in tool_decision["detail"]
    assert tool_decision["detail"]["requested_by"] is None


def test_unrequested_tool_call_denied_by_policy(gateway: Gateway) -> None:
    task = start_task_as(gateway, STRICT_AGENT)
    refused = call_tool(gateway, task["token"], "calc__add", {"a": 5, "b": 5})
    assert refused.is_error is True
    decision = refused.meta[DECISION_KEY]
    assert decision["decision"] == "deny"
    assert decision["policy_ids"] == ["model-requested-only"]
    assert UNREQUESTED_REASON in result_text(refused)

    chat(gateway, task["token"], tool_request("calc__add", {"a": 5, "b": 5}, marker()))
    allowed = call_tool(gateway, task["token"], "calc__add", {"a": 5, "b": 5})
    assert allowed.is_error is False
    assert result_text(allowed) == "10"

    records = gateway.trace(task["task_id"], "tool.decision", 2)
    decisions = records_of(records, "tool.decision")
    assert [record["decision"] for record in decisions] == ["deny", "allow"]
    assert decisions[0]["detail"]["requested_by"] is None
    assert decisions[1]["detail"]["requested_by"]["match"] == "arguments"
