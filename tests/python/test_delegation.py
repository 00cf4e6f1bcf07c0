"""Delegation between agents by token exchange, through `warden serve`.

Agent A starts a task and hands part of it to agent B with OAuth 2.0 Token
Exchange (RFC 8693) on POST /oauth2/token, and B may hand part of its share
to agent C. Most tests run on a gateway with the bundled example servers and
the bundled policy pack. That pack permits delegation inside one trust
domain while the new task is at most two hops below the root task, and it
forbids tools classed `payment` to a delegated agent. The gateway also trusts a
second trust domain, `other.test`, whose key the test generates, so that a
JWT-SVID from outside Warden's development issuer can be presented. The
`[delegation] max_depth` tests run on gateways whose policies permit every
delegation, so that only the configured limit stops the chain.

B acts through the official MCP client, or through plain httpx requests
where a test checks HTTP status codes on /mcp. The token endpoint is driven
with httpx. These tests need no Node.js.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from conftest import (
    HTTP_TIMEOUT_SECONDS,
    Gateway,
    connect,
    decision_of,
    free_port,
    result_text,
    run,
    spawn,
    toml_value,
    wait_until_serving,
    warden_bin,
    write_config,
)

AGENT_A = "spiffe://warden.local/agent/a"
AGENT_B = "spiffe://warden.local/agent/b"
AGENT_C = "spiffe://warden.local/agent/c"
AGENT_D = "spiffe://warden.local/agent/d"
AGENT_E = "spiffe://warden.local/agent/e"
AGENT_F = "spiffe://warden.local/agent/f"

OTHER_TRUST_DOMAIN = "other.test"
OTHER_AGENT = f"spiffe://{OTHER_TRUST_DOMAIN}/agent/x"
OTHER_KEY_ID = "other-test-key"

AUDIENCE = "warden"
USER = "alice@acme.test"
MODE = "auto"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

A_SCOPE = ["files__*", "mail__send_email"]
MAIL = "mail__send_email"
READ_FILE = "files__read_file"
REFUND = "billing__refund"
NOTES_FILE = "/workspace/notes/todo.md"
MAIL_ARGUMENTS = {
    "to": "team@acme.test",
    "subject": "Weekly summary",
    "body": "Refund flow ships on Thursday.",
}

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "warden-delegation-tests", "version": "1.0"},
    },
}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

# Concurrent token exchanges sent while the parent task is ended, and the
# time spent repeating that race before the test passes.
RACE_EXCHANGES = 4
RACE_SECONDS = 12.0

# Policies for the max_depth gateways: every delegation is permitted, so a
# rejected hop can only come from `[delegation] max_depth`. The mail rules
# name the acting agent and the root agent of the task.
PERMISSIVE_POLICIES = {
    "tasks.cedar": (
        '@id("start-task")\n'
        'permit (principal, action == Warden::Action::"start_task", resource);\n'
        '@id("list-tools")\n'
        'permit (principal, action == Warden::Action::"list_tools", resource);\n'
        '@id("delegate-any-depth")\n'
        'permit (principal, action == Warden::Action::"delegate", resource);\n'
    ),
    "mail.cedar": (
        '@id("mail-any")\n'
        'permit (principal, action == Warden::Action::"mail__send_email", resource);\n'
        '@id("mail-not-by-c")\n'
        '@reason("agent c may not send mail")\n'
        'forbid (\n'
        f'  principal == Warden::Agent::"{AGENT_C}",\n'
        '  action == Warden::Action::"mail__send_email",\n'
        '  resource\n'
        ');\n'
        '@id("mail-only-in-tasks-of-a")\n'
        '@reason("mail is sent only in tasks that agent a started")\n'
        'forbid (principal, action == Warden::Action::"mail__send_email", resource)\n'
        f'unless {{ context.task.root_agent == "{AGENT_A}" }};\n'
    ),
}


@pytest.fixture(scope="module")
def other_domain_key() -> ec.EllipticCurvePrivateKey:
    """Return the P-256 signing key of the `other.test` trust domain."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def running() -> Iterator[list[Gateway]]:
    """Collect the gateways of this module and stop them at its end."""
    gateways: list[Gateway] = []
    yield gateways
    for gateway in gateways:
        gateway.managed.stop()


def start_gateway_with(
    directory: Path,
    running: list[Gateway],
    upstreams: dict[str, dict[str, Any]],
    policies: dict[str, str] | None,
    extra_toml: str,
) -> Gateway:
    """Write a config with `extra_toml` appended, then start `warden serve` on it."""
    port = free_port()
    config_path = write_config(directory, port, upstreams, policies)
    with config_path.open("a") as config:
        config.write(extra_toml)
    managed = spawn(
        "warden", [str(warden_bin()), "serve", "--config", str(config_path)], directory
    )
    gateway = Gateway(config_path, port, managed)
    running.append(gateway)
    wait_until_serving(gateway)
    return gateway


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """Return the public half of a P-256 key as a JWK for JWT-SVIDs."""
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": base64url(numbers.x.to_bytes(32, "big")),
        "y": base64url(numbers.y.to_bytes(32, "big")),
        "kid": OTHER_KEY_ID,
        "alg": "ES256",
        "use": "jwt-svid",
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    running: list[Gateway],
    other_domain_key: ec.EllipticCurvePrivateKey,
) -> Gateway:
    """Return a Warden on the bundled servers and pack that also trusts `other.test`."""
    directory = tmp_path_factory.mktemp("delegation")
    bundle_path = directory / "other.test.bundle.json"
    bundle = {"keys": [public_jwk(other_domain_key)], "spiffe_refresh_hint": 300}
    bundle_path.write_text(json.dumps(bundle))
    extra = (
        "\n[[trust_domain]]\n"
        f"name = {toml_value(OTHER_TRUST_DOMAIN)}\n"
        f"bundle = {toml_value(str(bundle_path))}\n"
    )
    return start_gateway_with(directory, running, {}, None, extra)


def bundled_servers(root: Path) -> dict[str, dict[str, Any]]:
    """Return upstream settings that run the bundled files and mail servers under `root`."""
    (root / "workspace" / "notes").mkdir(parents=True)
    return {
        server: {
            "command": str(warden_bin()),
            "args": ["example-server", server, "--root", str(root)],
        }
        for server in ["files", "mail"]
    }


def start_permissive_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    running: list[Gateway],
    max_depth: int | None,
) -> Gateway:
    """Start a Warden whose policies permit every delegation, with `max_depth` if given."""
    directory = tmp_path_factory.mktemp("depth")
    upstreams = bundled_servers(tmp_path_factory.mktemp("servers"))
    extra = "" if max_depth is None else f"\n[delegation]\nmax_depth = {max_depth}\n"
    return start_gateway_with(directory, running, upstreams, PERMISSIVE_POLICIES, extra)


@pytest.fixture(scope="module")
def depth_one_gateway(
    tmp_path_factory: pytest.TempPathFactory, running: list[Gateway]
) -> Gateway:
    """Return a Warden that permits every delegation but caps the chain at one hop."""
    return start_permissive_gateway(tmp_path_factory, running, max_depth=1)


@pytest.fixture(scope="module")
def permissive_gateway(
    tmp_path_factory: pytest.TempPathFactory, running: list[Gateway]
) -> Gateway:
    """Return a Warden that permits every delegation with the default max_depth."""
    return start_permissive_gateway(tmp_path_factory, running, max_depth=None)


def base64url(data: bytes) -> str:
    """Encode `data` as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_claims(token: str) -> dict[str, Any]:
    """Decode the payload of a compact JWT without checking its signature."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


def start_task_as(gateway: Gateway, agent: str, **fields: Any) -> dict[str, Any]:
    """Start a task as `agent` and return the JSON body of the 201 response."""
    response = gateway.post_task(gateway.issue_svid(agent), user=USER, **fields)
    assert response.status_code == 201, f"POST /v1/tasks: {response.text}"
    return response.json()


def exchange_form(subject_token: str, actor_token: str) -> dict[str, str | None]:
    """Return a complete token exchange form for `subject_token` and `actor_token`."""
    return {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": JWT_TOKEN_TYPE,
        "actor_token": actor_token,
        "actor_token_type": JWT_TOKEN_TYPE,
    }


def post_form(gateway: Gateway, form: dict[str, str | None]) -> httpx.Response:
    """POST `form` to /oauth2/token, leaving out fields whose value is None."""
    return httpx.post(
        f"{gateway.base_url}/oauth2/token",
        data={name: value for name, value in form.items() if value is not None},
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def exchange(
    gateway: Gateway, subject_token: str, actor_token: str, **fields: str | None
) -> httpx.Response:
    """Send a token exchange with extra `fields` and return the raw response."""
    return post_form(gateway, {**exchange_form(subject_token, actor_token), **fields})


def delegate(
    gateway: Gateway, subject_token: str, agent: str, scope: str | None = None
) -> dict[str, Any]:
    """Delegate the task of `subject_token` to `agent` and return the 200 response body."""
    response = exchange(gateway, subject_token, gateway.issue_svid(agent), scope=scope)
    assert response.status_code == 200, f"POST /oauth2/token: {response.text}"
    return response.json()


def oauth_error(response: httpx.Response) -> str:
    """Return the RFC 6749 `error` code of a failed token exchange."""
    return response.json()["error"]


def end_task(gateway: Gateway, task_id: str, token: str) -> httpx.Response:
    """Send DELETE /v1/tasks/{task_id} with `token`."""
    return httpx.delete(
        f"{gateway.base_url}/v1/tasks/{task_id}",
        headers=bearer(token),
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def get_task(gateway: Gateway, task_id: str, token: str) -> httpx.Response:
    """Send GET /v1/tasks/{task_id} with `token`."""
    return httpx.get(
        f"{gateway.base_url}/v1/tasks/{task_id}",
        headers=bearer(token),
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def mcp_post(
    gateway: Gateway, token: str, message: dict[str, Any], session: str | None = None
) -> httpx.Response:
    """POST one JSON-RPC message to /mcp with `token`, on `session` if given."""
    headers = {**bearer(token), "Accept": "application/json, text/event-stream"}
    if session is not None:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-11-25"
    return httpx.post(
        gateway.mcp_url(), headers=headers, json=message, timeout=HTTP_TIMEOUT_SECONDS
    )


def open_session(gateway: Gateway, token: str) -> str:
    """Initialize an MCP session with `token` and return its Mcp-Session-Id."""
    opened = mcp_post(gateway, token, INITIALIZE)
    assert opened.status_code == 200, f"initialize: {opened.status_code} {opened.text}"
    return opened.headers["mcp-session-id"]


def call_tool(gateway: Gateway, token: str, name: str, arguments: dict[str, Any]) -> Any:
    """Make one tools/call with the official MCP client and return its result."""

    async def scenario() -> Any:
        async with connect(gateway.mcp_url(), token, MODE) as client:
            return await client.call_tool(name, arguments)

    return run(scenario())


def sign_other_domain_svid(
    key: ec.EllipticCurvePrivateKey, expires_in_seconds: int
) -> str:
    """Sign a JWT-SVID for OTHER_AGENT with the `other.test` key."""
    now = int(time.time())
    claims = {
        "sub": OTHER_AGENT,
        "aud": [AUDIENCE],
        "iat": now,
        "exp": now + expires_in_seconds,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": OTHER_KEY_ID})


def test_delegated_call_allowed_and_traced(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    response = exchange(
        gateway, parent["token"], gateway.issue_svid(AGENT_B), scope=MAIL
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    child = response.json()
    assert child["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert child["token_type"] == "Bearer"
    assert child["scope"] == MAIL
    assert child["trace_id"] == parent["trace_id"]
    assert child["task_id"] != parent["task_id"]

    async def scenario() -> tuple[list[str], Any, Any]:
        async with connect(gateway.mcp_url(), child["access_token"], MODE) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            sent = await client.call_tool(MAIL, MAIL_ARGUMENTS)
            read = await client.call_tool(READ_FILE, {"path": NOTES_FILE})
            return names, sent, read

    names, sent, read = run(scenario())
    assert names == [MAIL]
    assert not sent.is_error, result_text(sent)
    assert result_text(sent) == "queued message"
    assert read.is_error
    assert decision_of(read)["decision"] == "deny"
    assert decision_of(read)["policy_ids"] == ["warden:task-scope"]
    assert decision_of(read)["task_id"] == child["task_id"]

    records = gateway.trace(parent["task_id"], "tool.decision", 2)
    task_start = next(record for record in records if record["kind"] == "task.start")
    delegated = [record for record in records if record["kind"] == "task.delegated"]
    assert len(delegated) == 1
    assert delegated[0]["agent"] == AGENT_B
    assert delegated[0]["task_id"] == child["task_id"]
    assert delegated[0]["detail"]["from_agent"] == AGENT_A
    assert delegated[0]["detail"]["from_task"] == parent["task_id"]
    assert delegated[0]["detail"]["tools"] == [MAIL]
    assert delegated[0]["parent_span_id"] == task_start["span_id"]
    decisions = [record for record in records if record["kind"] == "tool.decision"]
    assert [record["agent"] for record in decisions] == [AGENT_B, AGENT_B]
    assert [record["target"] for record in decisions] == [MAIL, READ_FILE]
    assert [record["decision"] for record in decisions] == ["allow", "deny"]
    assert {record["task_id"] for record in decisions} == {child["task_id"]}
    assert {record["parent_span_id"] for record in decisions} == {delegated[0]["span_id"]}


def test_delegated_task_readable_by_child(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)

    response = get_task(gateway, child["task_id"], child["access_token"])
    assert response.status_code == 200, response.text
    fetched = response.json()
    assert fetched["agent"] == AGENT_B
    assert fetched["parent_task_id"] == parent["task_id"]
    assert fetched["tools"] == [MAIL]
    assert fetched["user"] == USER
    assert fetched["state"] == "active"


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("mail__*", id="server-wildcard"),
        pytest.param(REFUND, id="other-tool"),
        pytest.param("*", id="everything"),
        pytest.param(f"{MAIL} {REFUND}", id="one-of-two"),
        pytest.param("mail", id="bad-pattern"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
    ],
)
def test_wider_scope_rejected(gateway: Gateway, scope: str) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    actor = gateway.issue_svid(AGENT_B)
    response = exchange(gateway, parent["token"], actor, scope=scope)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_scope"
    assert "access_token" not in response.json()


def test_wider_scope_recorded_in_trace(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    actor = gateway.issue_svid(AGENT_B)
    response = exchange(gateway, parent["token"], actor, scope="*")
    assert response.status_code == 400, response.text

    records = gateway.trace(parent["task_id"], "delegation.decision", 1)
    [refused] = [r for r in records if r["kind"] == "delegation.decision"]
    assert refused["decision"] == "deny"
    assert refused["policy_ids"] == ["warden:delegation-scope"]
    assert refused["target"] == AGENT_B


def test_omitted_scope_inherits_parent(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B)
    assert child["scope"] == " ".join(A_SCOPE)
    assert token_claims(child["access_token"])["tools"] == A_SCOPE


def test_scope_subset_accepted(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=f"{READ_FILE} {MAIL}")
    assert child["scope"] == f"{READ_FILE} {MAIL}"


def test_sibling_scope_not_reachable(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    mailer = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    reader = delegate(gateway, parent["token"], AGENT_C, scope=READ_FILE)
    assert reader["scope"] == READ_FILE

    for agent in [AGENT_C, AGENT_D]:
        response = exchange(
            gateway, mailer["access_token"], gateway.issue_svid(agent), scope=READ_FILE
        )
        assert response.status_code == 400, f"{agent}: {response.text}"
        assert oauth_error(response) == "invalid_scope", agent


def test_child_expiry_clamped_to_parent(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE, ttl_seconds=30)
    parent_expiry = token_claims(parent["token"])["exp"]
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    remaining = parent_expiry - time.time()

    assert 0 < child["expires_in"]
    assert child["expires_in"] <= 30
    assert child["expires_in"] <= remaining + 1
    assert token_claims(child["access_token"])["exp"] <= parent_expiry


def test_revoked_parent_ends_child_sessions(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    grandchild = delegate(gateway, child["access_token"], AGENT_C, scope=MAIL)
    session = open_session(gateway, child["access_token"])
    assert mcp_post(gateway, child["access_token"], TOOLS_LIST, session).status_code == 200

    ended = end_task(gateway, parent["task_id"], parent["token"])
    assert ended.status_code == 200, ended.text
    assert ended.json()["revoked"] == [
        parent["task_id"],
        child["task_id"],
        grandchild["task_id"],
    ]

    on_session = mcp_post(gateway, child["access_token"], TOOLS_LIST, session)
    assert on_session.status_code == 401
    assert on_session.headers["www-authenticate"].startswith("Bearer ")
    assert mcp_post(gateway, child["access_token"], INITIALIZE).status_code == 401
    assert mcp_post(gateway, grandchild["access_token"], INITIALIZE).status_code == 401


def test_revoked_parent_fails_sdk_client(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    statuses: list[int] = []

    async def record_status(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def scenario() -> tuple[Any, MCPError | None]:
        async with httpx2.AsyncClient(
            headers=bearer(child["access_token"]),
            timeout=HTTP_TIMEOUT_SECONDS,
            event_hooks={"response": [record_status]},
        ) as http_client:
            transport = streamable_http_client(gateway.mcp_url(), http_client=http_client)
            async with Client(transport, mode=MODE) as client:
                before = await client.call_tool(MAIL, MAIL_ARGUMENTS)
                ended = end_task(gateway, parent["task_id"], parent["token"])
                assert ended.status_code == 200, ended.text
                try:
                    await client.call_tool(MAIL, MAIL_ARGUMENTS)
                except MCPError as error:
                    return before, error
                return before, None

    before, error = run(scenario())
    assert result_text(before) == "queued message"
    assert error is not None, "a call after the parent task ended was answered"
    assert statuses[-1] == 401, statuses


def race_revocation_with_exchanges(
    gateway: Gateway, pool: ThreadPoolExecutor
) -> list[str]:
    """End a task during RACE_EXCHANGES delegations by its child, and return leaked task ids.

    A leaked task is one that the DELETE response lists as revoked but whose
    token /mcp still accepts.
    """
    parent = start_task_as(gateway, AGENT_A, tools=[MAIL])
    child = delegate(gateway, parent["token"], AGENT_B)
    actor = gateway.issue_svid(AGENT_C)
    exchanges = [
        pool.submit(exchange, gateway, child["access_token"], actor)
        for _ in range(RACE_EXCHANGES)
    ]
    ended = pool.submit(end_task, gateway, parent["task_id"], parent["token"]).result()
    assert ended.status_code == 200, ended.text
    revoked = set(ended.json()["revoked"])

    leaked = []
    for future in exchanges:
        response = future.result()
        if response.status_code != 200 or response.json()["task_id"] not in revoked:
            continue
        token = response.json()["access_token"]
        if mcp_post(gateway, token, INITIALIZE).status_code != 401:
            leaked.append(response.json()["task_id"])
    return leaked


def test_revocation_race_leaves_no_live_child(gateway: Gateway) -> None:
    deadline = time.monotonic() + RACE_SECONDS
    leaked: list[str] = []
    rounds = 0
    with ThreadPoolExecutor(max_workers=RACE_EXCHANGES + 1) as pool:
        while not leaked and time.monotonic() < deadline:
            leaked = race_revocation_with_exchanges(gateway, pool)
            rounds += 1
    assert leaked == [], f"revoked tasks still accepted on /mcp after {rounds} rounds"


def test_revoked_child_token_replay_fails(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    assert end_task(gateway, parent["task_id"], parent["token"]).status_code == 200

    replayed = mcp_post(gateway, child["access_token"], INITIALIZE)
    assert replayed.status_code == 401
    as_subject = exchange(
        gateway, child["access_token"], gateway.issue_svid(AGENT_C), scope=MAIL
    )
    assert as_subject.status_code == 400, as_subject.text
    assert oauth_error(as_subject) == "invalid_grant"
    parent_as_subject = exchange(
        gateway, parent["token"], gateway.issue_svid(AGENT_C), scope=MAIL
    )
    assert oauth_error(parent_as_subject) == "invalid_grant"


def test_ending_child_keeps_parent(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    grandchild = delegate(gateway, child["access_token"], AGENT_C, scope=MAIL)

    ended = end_task(gateway, child["task_id"], child["access_token"])
    assert ended.status_code == 200, ended.text
    assert ended.json()["revoked"] == [child["task_id"], grandchild["task_id"]]
    assert mcp_post(gateway, grandchild["access_token"], INITIALIZE).status_code == 401
    assert mcp_post(gateway, parent["token"], INITIALIZE).status_code == 200


def test_child_cannot_end_parent(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)

    with_token = end_task(gateway, parent["task_id"], child["access_token"])
    assert with_token.status_code == 403
    with_svid = end_task(gateway, parent["task_id"], gateway.issue_svid(AGENT_B))
    assert with_svid.status_code == 403
    fetched = get_task(gateway, parent["task_id"], parent["token"]).json()
    assert fetched["state"] == "active"


def test_bundled_pack_allows_two_hops(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    grandchild = delegate(gateway, child["access_token"], AGENT_C, scope=MAIL)

    denied = exchange(
        gateway, grandchild["access_token"], gateway.issue_svid(AGENT_D), scope=MAIL
    )
    assert denied.status_code == 403, denied.text
    assert oauth_error(denied) == "access_denied"
    assert "access_token" not in denied.json()

    records = gateway.trace(parent["task_id"], "delegation.decision", 3)
    decisions = [r for r in records if r["kind"] == "delegation.decision"]
    assert [r["decision"] for r in decisions] == ["allow", "allow", "deny"]
    assert [r["target"] for r in decisions] == [AGENT_B, AGENT_C, AGENT_D]
    assert [r["agent"] for r in decisions] == [AGENT_A, AGENT_B, AGENT_C]
    assert [r["detail"]["depth"] for r in decisions] == [1, 2, 3]


def test_max_depth_one_stops_second_hop(depth_one_gateway: Gateway) -> None:
    gateway = depth_one_gateway
    parent = start_task_as(gateway, AGENT_A, tools=[MAIL])
    child = delegate(gateway, parent["token"], AGENT_B)

    rejected = exchange(gateway, child["access_token"], gateway.issue_svid(AGENT_C))
    assert rejected.status_code == 400, rejected.text
    assert oauth_error(rejected) == "invalid_grant"
    assert "max_depth" in rejected.json()["error_description"]


def test_max_depth_one_child_still_acts(depth_one_gateway: Gateway) -> None:
    gateway = depth_one_gateway
    parent = start_task_as(gateway, AGENT_A, tools=[MAIL])
    child = delegate(gateway, parent["token"], AGENT_B)

    sent = call_tool(gateway, child["access_token"], MAIL, MAIL_ARGUMENTS)
    assert not sent.is_error, result_text(sent)
    assert result_text(sent) == "queued message"


def test_default_max_depth_is_four(permissive_gateway: Gateway) -> None:
    gateway = permissive_gateway
    token = start_task_as(gateway, AGENT_A, tools=[MAIL])["token"]
    for agent in [AGENT_B, AGENT_C, AGENT_D, AGENT_E]:
        token = delegate(gateway, token, agent)["access_token"]

    rejected = exchange(gateway, token, gateway.issue_svid(AGENT_F))
    assert rejected.status_code == 400, rejected.text
    assert oauth_error(rejected) == "invalid_grant"
    assert "max_depth" in rejected.json()["error_description"]


def test_other_trust_domain_denied(
    gateway: Gateway, other_domain_key: ec.EllipticCurvePrivateKey
) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    outsider = sign_other_domain_svid(other_domain_key, expires_in_seconds=300)

    own_task = gateway.post_task(outsider, user=USER, tools=[MAIL])
    assert own_task.status_code == 201, own_task.text
    inward = exchange(gateway, parent["token"], outsider, scope=MAIL)
    assert inward.status_code == 403, inward.text
    assert oauth_error(inward) == "access_denied"
    outward = exchange(gateway, own_task.json()["token"], gateway.issue_svid(AGENT_B))
    assert outward.status_code == 403, outward.text
    assert oauth_error(outward) == "access_denied"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        pytest.param(
            {"grant_type": "client_credentials"},
            "unsupported_grant_type",
            id="wrong-grant-type",
        ),
        pytest.param({"grant_type": None}, "invalid_request", id="missing-grant-type"),
        pytest.param({"actor_token": None}, "invalid_request", id="missing-actor-token"),
        pytest.param({"subject_token": None}, "invalid_request", id="missing-subject-token"),
        pytest.param({"audience": "billing-api"}, "invalid_target", id="other-audience"),
        pytest.param(
            {"resource": "https://billing.acme.test/"}, "invalid_target", id="other-resource"
        ),
        pytest.param(
            {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            "invalid_request",
            id="subject-token-type",
        ),
        pytest.param(
            {"actor_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            "invalid_request",
            id="actor-token-type",
        ),
        pytest.param(
            {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "invalid_request",
            id="requested-token-type",
        ),
        pytest.param({"subject_token": "not-a-token"}, "invalid_grant", id="garbage-subject"),
        pytest.param({"actor_token": "not-a-token"}, "invalid_request", id="garbage-actor"),
    ],
)
def test_malformed_exchange_rejected(
    gateway: Gateway, fields: dict[str, str | None], error: str
) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    form = exchange_form(parent["token"], gateway.issue_svid(AGENT_B))
    response = post_form(gateway, {**form, "scope": MAIL, **fields})
    assert response.status_code == 400, response.text
    assert oauth_error(response) == error
    assert "access_token" not in response.json()
    assert response.json()["error_description"]


def test_own_audience_accepted(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    response = exchange(
        gateway,
        parent["token"],
        gateway.issue_svid(AGENT_B),
        scope=MAIL,
        audience=AUDIENCE,
    )
    assert response.status_code == 200, response.text


def test_repeated_parameter_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    form = [
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", parent["token"]),
        ("actor_token", gateway.issue_svid(AGENT_B)),
        ("scope", MAIL),
        ("scope", READ_FILE),
    ]
    response = httpx.post(
        f"{gateway.base_url}/oauth2/token",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_json_body_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    body = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": parent["token"],
        "actor_token": gateway.issue_svid(AGENT_B),
        "scope": MAIL,
    }
    response = httpx.post(
        f"{gateway.base_url}/oauth2/token", json=body, timeout=HTTP_TIMEOUT_SECONDS
    )
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_task_token_as_actor_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    other = start_task_as(gateway, AGENT_B, tools=A_SCOPE)
    response = exchange(gateway, parent["token"], other["token"], scope=MAIL)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_svid_as_subject_rejected(gateway: Gateway) -> None:
    response = exchange(
        gateway, gateway.issue_svid(AGENT_A), gateway.issue_svid(AGENT_B), scope=MAIL
    )
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_grant"


def test_forged_actor_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    header, payload, signature = gateway.issue_svid(AGENT_B).split(".")
    claims = token_claims(f"{header}.{payload}.{signature}")
    claims["sub"] = AGENT_C
    forged_payload = base64url(json.dumps(claims).encode())
    forged = f"{header}.{forged_payload}.{signature}"

    response = exchange(gateway, parent["token"], forged, scope=MAIL)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_expired_actor_rejected(
    gateway: Gateway, other_domain_key: ec.EllipticCurvePrivateKey
) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    expired = sign_other_domain_svid(other_domain_key, expires_in_seconds=-600)
    response = exchange(gateway, parent["token"], expired, scope=MAIL)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_actor_svid_for_other_audience_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    foreign = gateway.issue_svid(AGENT_B, audience="billing-api")
    response = exchange(gateway, parent["token"], foreign, scope=MAIL)
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_request"


def test_delegation_back_into_chain_rejected(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)

    back = exchange(gateway, child["access_token"], gateway.issue_svid(AGENT_A), scope=MAIL)
    assert back.status_code == 400, back.text
    assert oauth_error(back) == "invalid_grant"
    to_self = exchange(gateway, parent["token"], gateway.issue_svid(AGENT_A), scope=MAIL)
    assert to_self.status_code == 400, to_self.text
    assert oauth_error(to_self) == "invalid_grant"


def test_delegated_agent_cannot_refund(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=[REFUND, MAIL])
    child = delegate(gateway, parent["token"], AGENT_B, scope=REFUND)
    arguments = {"order_id": "A-1001", "amount": 10}

    own = call_tool(gateway, parent["token"], REFUND, arguments)
    assert not own.is_error, result_text(own)
    assert result_text(own) == "refund issued"
    delegated = call_tool(gateway, child["access_token"], REFUND, arguments)
    assert delegated.is_error
    assert decision_of(delegated)["decision"] == "deny"
    assert decision_of(delegated)["policy_ids"] == ["no-payments-when-delegated"]


def test_policy_principal_is_acting_agent(permissive_gateway: Gateway) -> None:
    gateway = permissive_gateway
    parent = start_task_as(gateway, AGENT_A, tools=[MAIL])
    mailer = delegate(gateway, parent["token"], AGENT_B)
    barred = delegate(gateway, parent["token"], AGENT_C)

    sent = call_tool(gateway, mailer["access_token"], MAIL, MAIL_ARGUMENTS)
    assert not sent.is_error, result_text(sent)
    denied = call_tool(gateway, barred["access_token"], MAIL, MAIL_ARGUMENTS)
    assert denied.is_error
    assert decision_of(denied)["policy_ids"] == ["mail-not-by-c"]


def test_policy_sees_root_agent(permissive_gateway: Gateway) -> None:
    gateway = permissive_gateway
    parent = start_task_as(gateway, AGENT_D, tools=[MAIL])
    child = delegate(gateway, parent["token"], AGENT_B)

    denied = call_tool(gateway, child["access_token"], MAIL, MAIL_ARGUMENTS)
    assert denied.is_error
    assert decision_of(denied)["policy_ids"] == ["mail-only-in-tasks-of-a"]


def test_act_claim_nests_actors(gateway: Gateway) -> None:
    parent = start_task_as(gateway, AGENT_A, tools=A_SCOPE)
    child = delegate(gateway, parent["token"], AGENT_B, scope=MAIL)
    grandchild = delegate(gateway, child["access_token"], AGENT_C, scope=MAIL)
    b_claims = token_claims(child["access_token"])
    c_claims = token_claims(grandchild["access_token"])

    assert "act" not in token_claims(parent["token"])
    assert b_claims["sub"] == AGENT_A
    assert b_claims["act"] == {"sub": AGENT_B}
    assert b_claims["parent_task_id"] == parent["task_id"]
    assert b_claims["task_id"] == child["task_id"]
    assert b_claims["jti"] != token_claims(parent["token"])["jti"]
    assert c_claims["sub"] == AGENT_A
    assert c_claims["act"]["sub"] == AGENT_C
    assert c_claims["act"]["act"]["sub"] == AGENT_B
    assert "act" not in c_claims["act"]["act"]
    assert c_claims["parent_task_id"] == child["task_id"]
    assert c_claims["trace_id"] == parent["trace_id"]
