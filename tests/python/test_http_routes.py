"""Plain HTTP API routes (`/http/{route}/...`) through `warden serve`.

One gateway serves the routes of almost every test here. Its upstream is
servers/http_upstream.py on 127.0.0.1, which records each request it gets,
so the tests can check what reached it: the decided path and query, the
injected credential and nothing of the agent's own credentials. A second
instance of that server stands for another origin and must never receive a
request. The gateway also spawns servers/env_echo.py as an MCP upstream
whose credential Warden passes in an environment variable. A second gateway
with the same configuration serves only the test that searches Warden's log
and store for secrets, so that leaks found by other tests do not mask it.

Requests with unusual paths are sent with http.client, which puts the
request target on the wire as given; httpx would resolve `..` itself.
These tests need no Node.js.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from conftest import (
    AGENT_ID,
    DECISION_KEY,
    HTTP_TIMEOUT_SECONDS,
    STARTUP_TIMEOUT_SECONDS,
    Gateway,
    ManagedProcess,
    StartGateway,
    connect,
    free_port,
    result_text,
    run,
    spawn,
    wait_for_port,
    warden_bin,
    write_config,
)
from servers.http_upstream import LEAKS

SERVERS = Path(__file__).parent / "servers"
UPSTREAM_SCRIPT = SERVERS / "http_upstream.py"
ENV_ECHO_SCRIPT = SERVERS / "env_echo.py"

ADMIN_TOKEN = "http-routes-test-admin-token-4e8b1d"
API_SECRET = "api-secret-7Q2mX9vL4pR8wE"
ROTATING_SECRET = "rotating-secret-first-Jk5Hs2Dq"
ROTATED_SECRET = "rotating-secret-second-Nf8Yc3Lw"
# A key with `/`, `+` and `=`, which percent-encoding changes.
KEY_SECRET = "k3y/Secret+Value=Gz4Tm9Rb"
BASIC_USER = "svc-orders"
BASIC_SECRET = "basic-password-Tq4Ge8Mz2Wc"
MCP_SECRET = "mcp-env-secret-Pk7Rf3Xa9Ud"
DELEGATE_ID = "spiffe://warden.local/agent/order-checker"
MCP_VARIABLE = "ENV_ECHO_TOKEN"
CUSTOM_AUDIENCE = "https://orders.example.test"
WRONG_AUDIENCE = "https://elsewhere.example.test"
CUSTOM_TXN_TTL_SECONDS = 60
DEFAULT_TXN_TTL_SECONDS = 300
TXN_TOKEN_TYPE = "txntoken+jwt"

HOLD_POLICY = "payment-approval"
CAP_POLICY = "payment-cap"
ADMIN_POLICY = "no-admin-writes"
QUERY_POLICY = "no-forbidden-query"
DEBUG_POLICY = "no-debug-parameter"
EXTERNAL_POLICY = "no-external-send"

# Built-in policy ids of a pre-check whose request Warden rejects before
# deciding it.
METHOD_POLICY_ID = "warden:method"
TARGET_POLICY_ID = "warden:invalid-target"
BODY_TYPE_POLICY_ID = "warden:body-type"
DESTINATION_POLICY_ID = "warden:destination"
ARGUMENTS_POLICY_ID = "warden:arguments"

POLICIES = {
    "tasks.cedar": """
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("list-tools")
permit (principal, action == Warden::Action::"list_tools", resource);

@id("delegate")
permit (principal, action == Warden::Action::"delegate", resource);

@id("env-echo")
permit (principal, action == Warden::Action::"envecho__read_variable", resource);
""",
    "routes.cedar": f"""
@id("http-routes")
permit (principal, action in Warden::Action::"http_request", resource);

@id("{ADMIN_POLICY}")
@reason("agents may not write below /admin")
forbid (principal, action == Warden::Action::"route:api", resource)
when {{ context.method == "POST" && context.path in Warden::Path::"/admin" }};

@id("{QUERY_POLICY}")
@reason("the query q=forbidden is not allowed")
forbid (principal, action == Warden::Action::"route:api", resource)
when {{ context.query has q && context.query.q == "forbidden" }};

@id("{DEBUG_POLICY}")
@reason("the debug parameter is not allowed")
forbid (principal, action == Warden::Action::"route:api", resource)
when {{ context.query_names.contains("debug") }};

@id("{HOLD_POLICY}")
@hold("payments above 100 need a person's approval")
forbid (principal, action == Warden::Action::"route:api", resource)
when {{ context has body && context.body has amount && context.body.amount > 100 }};

@id("{CAP_POLICY}")
@reason("payments above 1000 are not allowed for agents")
forbid (principal, action == Warden::Action::"route:api", resource)
when {{ context has body && context.body has amount && context.body.amount > 1000 }};

@id("{EXTERNAL_POLICY}")
@reason("agents may read from external-send routes but not post to them")
forbid (principal, action in Warden::Action::"http_request", resource)
when {{ resource.classes.contains("external-send") && context.method == "POST" }};
""",
}

# Routes without `allow_private` whose base URL spells a loopback address.
PRIVATE_SPELLINGS = {
    "loopback": "127.0.0.1",
    "decimal": "2130706433",
    "hex": "0x7f.0.0.1",
    "mapped": "[::ffff:127.0.0.1]",
    "localhost": "localhost",
}

# Redirect targets at the cloud metadata address, in several spellings.
# Warden must refuse them before connecting, so nothing is ever sent there.
METADATA_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
]


@dataclass
class Upstream:
    """A running servers/http_upstream.py."""

    port: int

    @property
    def origin(self) -> str:
        """Return the scheme, host and port of the server."""
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """Return every request the server recorded, oldest first."""
        response = httpx.get(f"{self.origin}/_requests", timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        return response.json()["requests"]

    def configure(self, **settings: str) -> None:
        """Send settings such as `jwks_url` to POST /_configure."""
        response = httpx.post(
            f"{self.origin}/_configure", json=settings, timeout=HTTP_TIMEOUT_SECONDS
        )
        response.raise_for_status()


@dataclass
class Setup:
    """The module's gateway, its upstreams and its rotating secret file."""

    gateway: Gateway
    upstream: Upstream
    other: Upstream
    rotating_secret_file: Path


def start_upstream(directory: Path, name: str) -> tuple[Upstream, ManagedProcess]:
    """Start servers/http_upstream.py on a free port."""
    port = free_port()
    managed = spawn(name, [sys.executable, str(UPSTREAM_SCRIPT), str(port)], directory)
    wait_for_port(managed, port)
    return Upstream(port), managed


def route_toml(name: str, settings: str, credential: str | None = None) -> str:
    """Return an `[http.NAME]` section, with `[http.NAME.credential]` if given."""
    text = f"\n[http.{name}]\n{settings.strip()}\n"
    if credential is not None:
        text += f"\n[http.{name}.credential]\n{credential.strip()}\n"
    return text


def routes_toml(upstream: Upstream, api_secret_file: Path, rotating_file: Path) -> str:
    """Return the `[http.*]` sections of the module's gateway."""
    port = upstream.port
    private = "allow_private = true"
    sections = [
        route_toml(
            "api",
            f"""
url = "{upstream.origin}/v1"
{private}
methods = ["GET", "POST"]
classes = ["read"]
query_params = ["q"]
body_schema = {{ type = "object", properties = {{ amount = {{ type = "integer" }}, to = {{ type = "string" }} }} }}
forward_headers = ["X-Trace-Me"]
max_redirects = 5
""",
            f'kind = "bearer"\nsecret_file = {json.dumps(str(api_secret_file))}',
        ),
        route_toml(
            "keyed",
            f'url = "{upstream.origin}/v1"\n{private}',
            'kind = "header"\nheader = "X-Api-Key"\nsecret_env = "HTTP_TEST_KEY_SECRET"',
        ),
        route_toml(
            "basic",
            f'url = "{upstream.origin}/v1"\n{private}',
            f'kind = "basic"\nusername = "{BASIC_USER}"\nsecret_env = "HTTP_TEST_BASIC_SECRET"',
        ),
        route_toml(
            "rotating",
            f'url = "{upstream.origin}/v1"\n{private}',
            f'kind = "bearer"\nsecret_file = {json.dumps(str(rotating_file))}',
        ),
        route_toml(
            "mailer",
            f'url = "{upstream.origin}/v1"\n{private}\nclasses = ["external-send"]',
        ),
        route_toml("txn", f'url = "{upstream.origin}/txn"\n{private}', 'kind = "txn_token"'),
        route_toml(
            "txn_custom",
            f'url = "{upstream.origin}/v1"\n{private}',
            f'kind = "txn_token"\nheader = "X-Txn"\naudience = "{CUSTOM_AUDIENCE}"\n'
            f"ttl_seconds = {CUSTOM_TXN_TTL_SECONDS}",
        ),
        route_toml(
            "txn_elsewhere",
            f'url = "{upstream.origin}/txn"\n{private}',
            f'kind = "txn_token"\naudience = "{WRONG_AUDIENCE}"',
        ),
    ]
    # Only pre-checked, never requested: Warden must deny it without
    # connecting anywhere.
    sections.append(
        route_toml("metadata", f'url = "http://169.254.169.254/latest"\n{private}')
    )
    for name, host in PRIVATE_SPELLINGS.items():
        sections.append(
            route_toml(
                f"private_{name}",
                f'url = "http://{host}:{port}/v1"',
                f'kind = "bearer"\nsecret_file = {json.dumps(str(api_secret_file))}',
            )
        )
    return "".join(sections)


@dataclass
class Upstreams:
    """The recording upstream and the server that stands for another origin."""

    upstream: Upstream
    other: Upstream


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    """Start the recording upstream and a second one on another port."""
    directory = tmp_path_factory.mktemp("http-upstreams")
    upstream, upstream_process = start_upstream(directory, "http-upstream")
    other, other_process = start_upstream(directory, "other-origin")
    yield Upstreams(upstream, other)
    upstream_process.stop()
    other_process.stop()


def start_routes_gateway(
    start_gateway: StartGateway, directory: Path, servers: Upstreams
) -> Setup:
    """Start a gateway with every route of this module, its secrets in `directory`."""
    api_secret_file = directory / "api-secret"
    api_secret_file.write_text(API_SECRET + "\n")
    rotating_file = directory / "rotating-secret"
    rotating_file.write_text(ROTATING_SECRET + "\n")
    extra = (
        "\n[approvals]\nwait_seconds = 0\n"
        f"\n[upstreams.envecho.credential]\nkind = \"env\"\nenv = \"{MCP_VARIABLE}\"\n"
        'secret_env = "HTTP_TEST_MCP_SECRET"\n'
        + routes_toml(servers.upstream, api_secret_file, rotating_file)
    )
    gateway = start_gateway(
        {"envecho": {"command": sys.executable, "args": [str(ENV_ECHO_SCRIPT)]}},
        POLICIES,
        extra=extra,
        env={
            "WARDEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "HTTP_TEST_KEY_SECRET": KEY_SECRET,
            "HTTP_TEST_BASIC_SECRET": BASIC_SECRET,
            "HTTP_TEST_MCP_SECRET": MCP_SECRET,
        },
    )
    return Setup(gateway, servers.upstream, servers.other, rotating_file)


@pytest.fixture(scope="module")
def setup(
    start_gateway: StartGateway,
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: Upstreams,
) -> Setup:
    """Start the module's gateway and point the upstream at Warden's JWKS."""
    started = start_routes_gateway(
        start_gateway, tmp_path_factory.mktemp("http-routes"), upstreams
    )
    upstreams.upstream.configure(jwks_url=f"{started.gateway.base_url}/.well-known/jwks.json")
    return started


@pytest.fixture(scope="module")
def quiet_setup(
    start_gateway: StartGateway,
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: Upstreams,
) -> Setup:
    """Start a second gateway whose log and store only one test writes to."""
    return start_routes_gateway(
        start_gateway, tmp_path_factory.mktemp("http-routes-quiet"), upstreams
    )


# ---------------------------------------------------------------- helpers


def send(
    setup: Setup,
    token: str | None,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> httpx.Response:
    """Send one request to `/http/{path}` with `token` as the task bearer."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers.setdefault("Authorization", f"Bearer {token}")
    return httpx.request(
        method,
        f"{setup.gateway.base_url}/http/{path}",
        headers=all_headers,
        timeout=HTTP_TIMEOUT_SECONDS,
        **options,
    )


@dataclass
class RawResponse:
    """Status, headers and body of a request sent with http.client."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


def send_raw(
    setup: Setup, token: str, method: str, target: str, body: bytes | None = None
) -> RawResponse:
    """Send one request whose request target goes on the wire unchanged."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", setup.gateway.port, timeout=HTTP_TIMEOUT_SECONDS
    )
    try:
        connection.request(
            method, target, body=body, headers={"Authorization": f"Bearer {token}"}
        )
        response = connection.getresponse()
        return RawResponse(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def header_values(record: dict[str, Any], name: str) -> list[str]:
    """Return every value of header `name` in a recorded upstream request."""
    return [value for key, value in record["headers"] if key.lower() == name.lower()]


def recorded_with(upstream: Upstream, marker: str) -> list[dict[str, Any]]:
    """Return the recorded requests whose target contains `marker`."""
    return [record for record in upstream.requests() if marker in record["path"]]


def unique_marker() -> str:
    """Return a string that no earlier request of the module contains."""
    return f"m{uuid.uuid4().hex}"


def decision_body(response: httpx.Response | RawResponse) -> dict[str, Any]:
    """Return Warden's decision from a refusal's JSON body."""
    body = response.json()
    assert DECISION_KEY in body, f"no {DECISION_KEY} in {body}"
    return body[DECISION_KEY]


def records_of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the trace records of one kind."""
    return [record for record in records if record["kind"] == kind]


def expires_at_unix(task: dict[str, Any]) -> int:
    """Return the task's `expires_at` as a Unix time in seconds."""
    moment = datetime.fromisoformat(task["expires_at"].replace("Z", "+00:00"))
    return int(moment.timestamp())


def jwks(setup: Setup) -> dict[str, Any]:
    """Return Warden's JWK set."""
    response = httpx.get(
        f"{setup.gateway.base_url}/.well-known/jwks.json", timeout=HTTP_TIMEOUT_SECONDS
    )
    assert response.status_code == 200, response.text
    return response.json()


def verify_txn_token(setup: Setup, token: str, audience: str) -> dict[str, Any]:
    """Verify a transaction token against Warden's JWKS and return its claims."""
    header = jwt.get_unverified_header(token)
    keys = {key["kid"]: key for key in jwks(setup)["keys"]}
    assert header["kid"] in keys, f"kid {header['kid']} not in the JWKS {list(keys)}"
    key = jwt.PyJWK(keys[header["kid"]])
    return jwt.decode(token, key, algorithms=["ES256"], audience=audience)


def approve(setup: Setup, approval_id: str) -> httpx.Response:
    """Approve one held request through the admin API."""
    return httpx.post(
        f"{setup.gateway.base_url}/v1/approvals/{approval_id}/approve",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def basic_pair() -> str:
    """Return the base64 `user:password` of the basic route."""
    return base64.b64encode(f"{BASIC_USER}:{BASIC_SECRET}".encode()).decode()


def percent_encoded(value: str) -> str:
    """Return `value` with every reserved character percent-encoded."""
    return urllib.parse.quote(value, safe="")


# ------------------------------------------------------- authentication


def test_missing_or_invalid_task_token_is_401(setup: Setup) -> None:
    before = len(setup.upstream.requests())
    missing = send(setup, None, "GET", "api/public/items")
    invalid = send(setup, None, "GET", "api/public/items", {"Authorization": "Bearer abc"})
    assert missing.status_code == 401, missing.text
    assert invalid.status_code == 401, invalid.text
    assert len(setup.upstream.requests()) == before


def test_ended_task_token_is_401(setup: Setup) -> None:
    task = setup.gateway.start_task()
    ended = httpx.delete(
        f"{setup.gateway.base_url}/v1/tasks/{task['task_id']}",
        headers={"Authorization": f"Bearer {task['token']}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert ended.status_code in (200, 204), ended.text
    before = len(setup.upstream.requests())
    response = send(setup, task["token"], "GET", "api/public/items")
    assert response.status_code == 401, response.text
    assert len(setup.upstream.requests()) == before


def test_unknown_route_is_404(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "nosuchroute/items")
    assert response.status_code == 404, response.text


def test_method_outside_route_methods_is_405(setup: Setup) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    for method in ("PUT", "DELETE", "PATCH"):
        response = send(setup, task["token"], method, "api/public/items")
        assert response.status_code == 405, f"{method}: {response.text}"
    assert len(setup.upstream.requests()) == before


# ------------------------------------------------------ path and query


@pytest.mark.parametrize(
    "raw_path",
    [
        "/http/api/public/../admin",
        "/http/api/public/%2e%2e/admin",
        "/http/api/public/%2E%2E/admin",
        "/http/api//admin",
        "/http/api/public/./../admin",
    ],
)
def test_dot_segments_forwarded_as_decided_path(setup: Setup, raw_path: str) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send_raw(setup, task["token"], "GET", f"{raw_path}?q={marker}")
    assert response.status == 200, response.body
    received = recorded_with(setup.upstream, marker)
    assert [record["path"] for record in received] == [f"/v1/admin?q={marker}"]
    records = setup.gateway.trace(task["task_id"], "http.decision", 1)
    decision = records_of(records, "http.decision")[0]
    assert decision["detail"]["path"] == "/admin"
    assert decision["detail"]["url"] == f"{setup.upstream.origin}/v1/admin?q={marker}"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/http/api/public/../admin/users",
        "/http/api/public/%2e%2e/admin/users",
        "/http/api//admin/users",
        "/http/api/admin/./users",
    ],
)
def test_dot_segments_denied_on_decided_path(setup: Setup, raw_path: str) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send_raw(setup, task["token"], "POST", raw_path, body=b"")
    assert response.status == 403, response.body
    assert response.json()["error"] == "warden_denied"
    decision = decision_body(response)
    assert decision["decision"] == "deny"
    assert ADMIN_POLICY in decision["policy_ids"]
    assert len(setup.upstream.requests()) == before


@pytest.mark.parametrize(
    "raw_path",
    [
        "/http/api/public%2f..%2fadmin",
        "/http/api/public%2F..%2Fadmin",
        "/http/api/public/..%2fadmin",
        "/http/api/a%5cb",
        "/http/api/a\\b",
        "/http/api/a%00b",
        "/http/api/a%0ab",
        "/http/api/a%09b",
        "/http/api/a%7fb",
        "/http/api/%ff",
        "/http/api/a%c0%afb",
    ],
)
def test_ambiguous_path_rejected_before_decision(setup: Setup, raw_path: str) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send_raw(setup, task["token"], "GET", raw_path)
    assert response.status == 400, response.body
    assert len(setup.upstream.requests()) == before
    # A request that is decided afterwards shows that the rejected one left
    # no decision record behind.
    marker = unique_marker()
    follow_up = send(setup, task["token"], "GET", f"api/public/{marker}")
    assert follow_up.status_code == 200, follow_up.text
    records = setup.gateway.trace(task["task_id"], "http.decision", 1)
    paths = [record["detail"]["path"] for record in records_of(records, "http.decision")]
    assert paths == [f"/public/{marker}"]


def test_escaped_route_name_keeps_path(setup: Setup) -> None:
    # `%61pi` decodes to `api`. Warden may treat it as that route or as an
    # unknown one, but it must not drop the path that follows.
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send_raw(setup, task["token"], "GET", f"/http/%61pi/public/items?q={marker}")
    received = recorded_with(setup.upstream, marker)
    if response.status == 404:
        assert received == []
        return
    assert response.status == 200, response.body
    assert [record["path"] for record in received] == [f"/v1/public/items?q={marker}"]


def test_query_decoded_for_decision(setup: Setup) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    escaped = send_raw(setup, task["token"], "GET", "/http/api/search?q=forb%69dden")
    assert escaped.status == 403, escaped.body
    assert QUERY_POLICY in decision_body(escaped)["policy_ids"]
    plus = send_raw(setup, task["token"], "GET", "/http/api/search?q=forbidden&page=1")
    assert plus.status == 403, plus.body
    escaped_name = send_raw(setup, task["token"], "GET", "/http/api/search?de%62ug=1")
    assert escaped_name.status == 403, escaped_name.body
    assert DEBUG_POLICY in decision_body(escaped_name)["policy_ids"]
    assert len(setup.upstream.requests()) == before


def test_query_reencoded_from_decided_values(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    target = f"/http/api/search?q=a%20b%2Bc&page=2&tag={marker}"
    response = send_raw(setup, task["token"], "GET", target)
    assert response.status == 200, response.body
    received = recorded_with(setup.upstream, marker)
    assert len(received) == 1
    path, _, query = received[0]["path"].partition("?")
    assert path == "/v1/search"
    assert urllib.parse.parse_qsl(query) == [("q", "a b+c"), ("page", "2"), ("tag", marker)]
    records = setup.gateway.trace(task["task_id"], "http.decision", 1)
    decided = records_of(records, "http.decision")[0]["detail"]["query"]
    assert decided == [["q", "a b+c"], ["page", "2"], ["tag", marker]]


def test_repeated_declared_parameter_not_smuggled(setup: Setup) -> None:
    # Policies see one value of a declared parameter. An upstream that
    # reads the last of repeated parameters must not get a value that was
    # never decided on: Warden either refuses the request or forwards only
    # the value it decided on.
    task = setup.gateway.start_task()
    marker = unique_marker()
    target = f"/http/api/search?q=fine&q=forbidden&tag={marker}"
    response = send_raw(setup, task["token"], "GET", target)
    received = recorded_with(setup.upstream, marker)
    if response.status in (400, 403):
        assert received == []
        return
    assert response.status == 200, response.body
    assert len(received) == 1
    query = urllib.parse.parse_qsl(received[0]["path"].partition("?")[2])
    assert ("q", "forbidden") not in query, (
        f"the upstream received q=forbidden, which the policy never saw: {query}"
    )


@pytest.mark.parametrize(
    "raw_path",
    [
        "/http/api/admin;x=1",
        "/http/api/public/..;/admin",
        "/http/api/admin%3bx=1",
        "/http/api/admin%3Bx=1",
        "/http/api/public;/items",
    ],
)
def test_semicolon_in_path_rejected(setup: Setup, raw_path: str) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send_raw(setup, task["token"], "GET", f"{raw_path}?tag={marker}")
    assert response.status == 400, response.body
    assert response.json()["error"] == "invalid_request"
    assert "';'" in response.json()["message"]
    assert recorded_with(setup.upstream, marker) == []


@pytest.mark.parametrize(
    "query",
    [
        "q[]=forbidden",
        "q[0]=forbidden",
        "q%5B%5D=forbidden",
        "q[x][y]=forbidden",
        "Q=forbidden",
        "Q[]=forbidden",
    ],
)
def test_declared_query_name_variant_rejected(setup: Setup, query: str) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send_raw(setup, task["token"], "GET", f"/http/api/search?{query}&tag={marker}")
    assert response.status == 400, response.body
    assert response.json()["error"] == "invalid_request"
    assert '"q"' in response.json()["message"]
    assert recorded_with(setup.upstream, marker) == []


@pytest.mark.parametrize(
    "query",
    ["q=forbidden%00", "q%00=", "q=ok&tag%00=1", "q=a%0Ab", "q=a%09b", "q=%7F"],
)
def test_query_control_character_rejected(setup: Setup, query: str) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send_raw(setup, task["token"], "GET", f"/http/api/search?{query}&tag={marker}")
    assert response.status == 400, response.body
    assert "control character" in response.json()["message"]
    assert recorded_with(setup.upstream, marker) == []


def test_undeclared_names_sharing_prefix_forwarded(setup: Setup) -> None:
    # Only the declared name itself followed by `[` is a variant of it.
    task = setup.gateway.start_task()
    marker = unique_marker()
    target = f"/http/api/search?qq=1&query=2&tag[]={marker}"
    response = send_raw(setup, task["token"], "GET", target)
    assert response.status == 200, response.body
    [record] = recorded_with(setup.upstream, marker)
    query = urllib.parse.parse_qsl(record["path"].partition("?")[2])
    assert query == [("qq", "1"), ("query", "2"), ("tag[]", marker)]


# ------------------------------------------------------ forwarded request


def test_forwarded_headers_swap_agent_credentials(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(
        setup,
        task["token"],
        "GET",
        f"api/public/{marker}",
        {
            "Cookie": "session=agent-cookie",
            "Proxy-Authorization": "Basic YWdlbnQ6cHJveHk=",
            "X-Api-Key": "agent-own-key",
            "X-Trace-Me": "yes",
            "X-Other": "dropped",
            "Accept": "application/json",
            "Idempotency-Key": "idem-1",
        },
    )
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    assert header_values(record, "authorization") == [f"Bearer {API_SECRET}"]
    assert header_values(record, "cookie") == []
    assert header_values(record, "proxy-authorization") == []
    assert header_values(record, "x-api-key") == []
    assert header_values(record, "x-other") == []
    assert header_values(record, "x-trace-me") == ["yes"]
    assert header_values(record, "accept") == ["application/json"]
    assert header_values(record, "idempotency-key") == ["idem-1"]
    [traceparent] = header_values(record, "traceparent")
    assert re.fullmatch(rf"00-{task['trace_id']}-[0-9a-f]{{16}}-0[01]", traceparent), traceparent


def test_header_credential_replaces_agent_key(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"keyed/{marker}", {"X-Api-Key": "agent-key"})
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    assert header_values(record, "x-api-key") == [KEY_SECRET]
    assert header_values(record, "authorization") == []


def test_basic_credential_sent(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"basic/{marker}")
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    assert header_values(record, "authorization") == [f"Basic {basic_pair()}"]


def test_json_body_reserialised_from_parsed_value(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(
        setup,
        task["token"],
        "POST",
        f"api/payments/{marker}",
        content=b'{ "amount" :  50 ,\n  "to":"bob" }',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    assert json.loads(record["body"]) == {"amount": 50, "to": "bob"}
    assert record["body"] == '{"amount":50,"to":"bob"}'
    assert header_values(record, "content-type") == ["application/json"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 5, "to": "bob", "amount": 5000}',
        b'{"amount": 5, "to": "bob", "meta": {"x": 1, "x": 2}}',
    ],
)
def test_duplicate_json_keys_rejected(setup: Setup, body: bytes) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send(
        setup,
        task["token"],
        "POST",
        "api/payments",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert len(setup.upstream.requests()) == before


@pytest.mark.parametrize("amount", [5000, "5000"])
def test_body_over_cap_denied(setup: Setup, amount: Any) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send(
        setup, task["token"], "POST", "api/payments", json={"amount": amount, "to": "bob"}
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "warden_denied"
    decision = decision_body(response)
    assert decision["decision"] == "deny"
    assert CAP_POLICY in decision["policy_ids"]
    assert len(setup.upstream.requests()) == before


def test_body_schema_mismatch_names_body_field(setup: Setup) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send(
        setup, task["token"], "POST", "api/payments", json={"amount": "lots", "to": "bob"}
    )
    assert response.status_code == 403, response.text
    decision = decision_body(response)
    assert decision["policy_ids"] == [ARGUMENTS_POLICY_ID]
    assert decision["reason"].startswith('body field "amount" of route api must be ')
    assert "the request sent" in decision["reason"]
    assert "tool" not in decision["reason"]
    assert len(setup.upstream.requests()) == before


def test_resource_classes_seen_by_policy(setup: Setup) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    posted = send(setup, task["token"], "POST", "mailer/send", json={"to": "bob"})
    assert posted.status_code == 403, posted.text
    assert EXTERNAL_POLICY in decision_body(posted)["policy_ids"]
    assert len(setup.upstream.requests()) == before
    read = send(setup, task["token"], "GET", "mailer/outbox")
    assert read.status_code == 200, read.text


def test_held_request_passes_once_after_approval(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    path = f"api/payments/{marker}"
    payment = {"amount": 500, "to": "bob"}
    held = send(setup, task["token"], "POST", path, json=payment)
    assert held.status_code == 403, held.text
    assert held.json()["error"] == "warden_held"
    decision = decision_body(held)
    assert decision["decision"] == "hold"
    assert HOLD_POLICY in decision["policy_ids"]
    approval_id = decision["approval_id"]
    assert recorded_with(setup.upstream, marker) == []

    approved = approve(setup, approval_id)
    assert approved.status_code == 200, approved.text

    # The approval covers that exact request, not one with another body.
    other = send(setup, task["token"], "POST", path, json={"amount": 500, "to": "mallory"})
    assert other.status_code == 403, other.text
    assert other.json()["error"] == "warden_held"
    assert recorded_with(setup.upstream, marker) == []

    retried = send(setup, task["token"], "POST", path, json=payment)
    assert retried.status_code == 200, retried.text
    received = recorded_with(setup.upstream, marker)
    assert [json.loads(record["body"]) for record in received] == [payment]

    again = send(setup, task["token"], "POST", path, json=payment)
    assert again.status_code == 403, again.text
    assert again.json()["error"] == "warden_held"
    assert len(recorded_with(setup.upstream, marker)) == 1


# ------------------------------------------------------------- response


def test_upstream_status_and_selected_headers_passed(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "api/status/418")
    assert response.status_code == 418, response.text
    assert response.json() == {"status": "418"}
    assert response.headers.get("etag") == '"v1"'
    assert response.headers.get("content-type") == "application/json"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("kind", sorted(LEAKS))
def test_secret_shapes_redacted_in_response(setup: Setup, kind: str) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", f"api/leak/{kind}")
    assert response.status_code == 200, response.text
    secret = LEAKS[kind]
    for line in secret.strip().splitlines():
        assert line not in response.text, f"{kind} line {line!r} reached the agent"
    assert "[redacted" in response.json()["secret"]


@pytest.mark.parametrize(
    ("route", "secrets"),
    [
        ("api", [API_SECRET]),
        ("keyed", [KEY_SECRET]),
        ("basic", [BASIC_SECRET, basic_pair()]),
    ],
)
def test_echoed_credential_redacted_in_body(
    setup: Setup, route: str, secrets: list[str]
) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", f"{route}/echo-secrets")
    assert response.status_code == 200, response.text
    for secret in secrets:
        assert secret not in response.text
    assert "[redacted" in response.text


def test_percent_encoded_credential_redacted_in_body(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "keyed/echo-secrets?in=encoded")
    assert response.status_code == 200, response.text
    assert KEY_SECRET not in response.text
    assert percent_encoded(KEY_SECRET) not in response.text, (
        f"the percent-encoded credential reached the agent: {response.text}"
    )


def test_credential_absent_from_response_headers(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "api/echo-secrets?in=headers")
    assert response.status_code == 200, response.text
    leaking = {
        name: value for name, value in response.headers.items() if API_SECRET in value
    }
    assert leaking == {}, f"response headers carry the injected credential: {leaking}"


# ------------------------------------------------------------- redirects


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_cross_origin_redirect_returned_unfollowed(setup: Setup, code: int) -> None:
    task = setup.gateway.start_task()
    target = f"{setup.other.origin}/v1/collect"
    response = send(
        setup,
        task["token"],
        "GET",
        "api/redirect",
        params={"to": target, "code": str(code)},
    )
    assert response.status_code == code, response.text
    assert response.headers.get("location") == target
    assert setup.other.requests() == []
    records = setup.gateway.trace(task["task_id"], "http.result", 1)
    result = records_of(records, "http.result")[0]["detail"]
    assert result["status"] == code
    assert result["redirects"] == 0
    assert result["redirect_refused"] == target


def test_redirect_to_other_host_same_port_unfollowed(setup: Setup) -> None:
    # localhost and 127.0.0.1 reach the same server, but they are different
    # origins, so the credential must not follow.
    task = setup.gateway.start_task()
    marker = unique_marker()
    target = f"http://localhost:{setup.upstream.port}/v1/echo-secrets?tag={marker}"
    response = send(setup, task["token"], "GET", "api/redirect", params={"to": target})
    assert response.status_code == 302, response.text
    assert recorded_with(setup.upstream, f"tag={marker}") == []


def test_same_origin_redirect_followed_with_credential(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(
        setup,
        task["token"],
        "GET",
        "api/redirect",
        params={"to": f"/v1/echo-secrets?tag={marker}", "code": "307"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["received"]["authorization"] == "Bearer [redacted]"
    [followed] = recorded_with(setup.upstream, f"tag={marker}")
    assert followed["path"] == f"/v1/echo-secrets?tag={marker}"
    assert header_values(followed, "authorization") == [f"Bearer {API_SECRET}"]
    records = setup.gateway.trace(task["task_id"], "http.result", 1)
    result = records_of(records, "http.result")[0]["detail"]
    assert result["redirects"] == 1
    assert result["redirect_refused"] is None


def nested_redirect(hops: int, final: str) -> str:
    """Return a same-origin target that redirects `hops` times before `final`."""
    target = final
    for _ in range(hops - 1):
        target = "/v1/redirect?" + urllib.parse.urlencode({"to": target})
    return target


@pytest.mark.parametrize(("hops", "followed"), [(5, True), (6, False)])
def test_same_origin_redirects_limited(setup: Setup, hops: int, followed: bool) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    target = nested_redirect(hops, f"/v1/echo-secrets?tag={marker}")
    response = send(setup, task["token"], "GET", "api/redirect", params={"to": target})
    reached = recorded_with(setup.upstream, f"tag={marker}")
    if followed:
        assert response.status_code == 200, response.text
        assert response.json()["received"]["authorization"] == "Bearer [redacted]"
        assert len(reached) == 1
    else:
        assert response.status_code >= 400, response.text
        assert reached == []


@pytest.mark.parametrize("target", METADATA_TARGETS)
def test_redirect_to_metadata_refused(setup: Setup, target: str) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "api/redirect", params={"to": target})
    # Either answer keeps Warden away from the address: a refusal before
    # connecting, or the redirect handed back unfollowed.
    if response.status_code == 403:
        assert response.json()["error"] == "destination_denied", response.text
    else:
        assert response.status_code == 302, response.text
        assert response.headers.get("location") == target


def test_cross_origin_redirect_location_redacted(setup: Setup) -> None:
    # The upstream copies the credential it received into the Location of
    # a redirect to another origin; the agent must not learn it from there.
    task = setup.gateway.start_task()
    target = f"{setup.other.origin}/v1/collect"
    response = send(
        setup, task["token"], "GET", "api/redirect", params={"to": target, "leak": "1"}
    )
    assert response.status_code == 302, response.text
    assert API_SECRET not in response.headers.get("location", ""), (
        f"the Location header carries the credential: {response.headers.get('location')}"
    )
    assert setup.other.requests() == []


def test_cross_origin_redirect_location_absent_from_trace(setup: Setup) -> None:
    task = setup.gateway.start_task()
    target = f"{setup.other.origin}/v1/collect"
    response = send(
        setup, task["token"], "GET", "api/redirect", params={"to": target, "leak": "1"}
    )
    assert response.status_code == 302, response.text
    records = setup.gateway.trace(task["task_id"], "http.result", 1)
    text = json.dumps(records)
    assert API_SECRET not in text, (
        f"the trace stores the credential: {records_of(records, 'http.result')}"
    )


# -------------------------------------------------- outbound destinations


@pytest.mark.parametrize("spelling", sorted(PRIVATE_SPELLINGS))
def test_private_destination_denied_without_allow_private(
    setup: Setup, spelling: str
) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    response = send(setup, task["token"], "GET", f"private_{spelling}/items")
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "destination_denied"
    assert API_SECRET not in response.text
    assert len(setup.upstream.requests()) == before


# ------------------------------------------------------------ pre-checks


def precheck(setup: Setup, token: str, question: dict[str, Any]) -> dict[str, Any]:
    """Send POST /v1/decisions and return the answer, which must be a 200."""
    response = httpx.post(
        f"{setup.gateway.base_url}/v1/decisions",
        headers={"Authorization": f"Bearer {token}"},
        json=question,
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_precheck_allows_and_denies_as_policy(setup: Setup) -> None:
    task = setup.gateway.start_task()
    allowed = precheck(
        setup, task["token"], {"route": "api", "path": "/search", "query": "q=ok"}
    )
    assert allowed["decision"] == "allow", allowed
    denied = precheck(
        setup, task["token"], {"route": "api", "path": "/search", "query": "q=forbidden"}
    )
    assert denied["decision"] == "deny", denied
    assert denied["policy_ids"] == [QUERY_POLICY]


def test_precheck_repeated_parameter_matches_request(setup: Setup) -> None:
    task = setup.gateway.start_task()
    answer = precheck(
        setup,
        task["token"],
        {"route": "api", "path": "/search", "query": "q=ok&q=forbidden"},
    )
    real = send_raw(setup, task["token"], "GET", "/http/api/search?q=ok&q=forbidden")
    assert real.status == 400, real.body
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [TARGET_POLICY_ID]
    assert answer["reason"] == real.json()["message"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin;x=1", None),
        ("/admin%3bx=1", None),
        ("/search", "q[]=forbidden"),
        ("/search", "Q=forbidden"),
        ("/search", "q=forbidden%00"),
    ],
)
def test_precheck_rejected_target_matches_request(
    setup: Setup, path: str, query: str | None
) -> None:
    task = setup.gateway.start_task()
    question: dict[str, Any] = {"route": "api", "path": path}
    target = f"/http/api{path}"
    if query is not None:
        question["query"] = query
        target += f"?{query}"
    answer = precheck(setup, task["token"], question)
    real = send_raw(setup, task["token"], "GET", target)
    assert real.status == 400, real.body
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [TARGET_POLICY_ID]
    assert answer["reason"] == real.json()["message"]


def test_precheck_method_outside_route_matches_request(setup: Setup) -> None:
    task = setup.gateway.start_task()
    answer = precheck(
        setup, task["token"], {"route": "api", "method": "DELETE", "path": "/items"}
    )
    real = send(setup, task["token"], "DELETE", "api/items")
    assert real.status_code == 405, real.text
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [METHOD_POLICY_ID]
    assert answer["reason"] == real.json()["message"]


@pytest.mark.parametrize("body", ["amount=5", [{"amount": 5}], 5, True])
def test_precheck_non_object_body_matches_request(setup: Setup, body: Any) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    answer = precheck(
        setup,
        task["token"],
        {"route": "api", "method": "POST", "path": "/payments", "body": body},
    )
    real = send(setup, task["token"], "POST", "api/payments", json=body)
    assert real.status_code == 415, real.text
    assert len(setup.upstream.requests()) == before
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [BODY_TYPE_POLICY_ID]
    assert answer["reason"] == real.json()["message"]


def test_precheck_body_field_mismatch_denied(setup: Setup) -> None:
    task = setup.gateway.start_task()
    answer = precheck(
        setup,
        task["token"],
        {"route": "api", "method": "POST", "path": "/payments", "body": {"amount": "lots"}},
    )
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [ARGUMENTS_POLICY_ID]
    assert answer["reason"].startswith('body field "amount" of route api must be ')


@pytest.mark.parametrize("spelling", ["loopback", "decimal", "hex", "mapped"])
def test_precheck_private_address_matches_request(setup: Setup, spelling: str) -> None:
    task = setup.gateway.start_task()
    before = len(setup.upstream.requests())
    answer = precheck(setup, task["token"], {"route": f"private_{spelling}", "path": "/items"})
    real = send(setup, task["token"], "GET", f"private_{spelling}/items")
    assert real.status_code == 403, real.text
    assert real.json()["error"] == "destination_denied"
    assert len(setup.upstream.requests()) == before
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [DESTINATION_POLICY_ID]
    assert answer["reason"] == real.json()["message"]


def test_precheck_metadata_address_denied(setup: Setup) -> None:
    # The route allows private addresses, but never a metadata address.
    task = setup.gateway.start_task()
    answer = precheck(setup, task["token"], {"route": "metadata", "path": "/meta-data/"})
    assert answer["decision"] == "deny", answer
    assert answer["policy_ids"] == [DESTINATION_POLICY_ID]
    assert "169.254.169.254 is a cloud metadata endpoint" in answer["reason"]


def test_precheck_host_name_checked_when_connecting(setup: Setup) -> None:
    task = setup.gateway.start_task()
    answer = precheck(setup, task["token"], {"route": "private_localhost", "path": "/items"})
    assert answer["decision"] == "allow", answer
    assert "localhost" in answer["note"]
    assert "when Warden connects" in answer["note"]
    literal = precheck(setup, task["token"], {"route": "api", "path": "/items"})
    assert literal["decision"] == "allow", literal
    assert "note" not in literal


def test_precheck_denial_recorded_in_trace(setup: Setup) -> None:
    task = setup.gateway.start_task()
    precheck(setup, task["token"], {"route": "private_loopback", "path": "/items"})
    records = setup.gateway.trace(task["task_id"], "precheck.decision", 1)
    [record] = records_of(records, "precheck.decision")
    assert record["decision"] == "deny"
    assert record["target"] == "route:private_loopback"


# ------------------------------------------------------------- rotation


def test_secret_file_rotation_without_restart(setup: Setup) -> None:
    task = setup.gateway.start_task()
    first_marker = unique_marker()
    first = send(setup, task["token"], "GET", f"rotating/echo-secrets?tag={first_marker}")
    assert first.status_code == 200, first.text
    [record] = recorded_with(setup.upstream, first_marker)
    assert header_values(record, "authorization") == [f"Bearer {ROTATING_SECRET}"]

    setup.rotating_secret_file.write_text(ROTATED_SECRET + "\n")
    second_marker = unique_marker()
    second = send(setup, task["token"], "GET", f"rotating/echo-secrets?tag={second_marker}")
    assert second.status_code == 200, second.text
    [record] = recorded_with(setup.upstream, second_marker)
    assert header_values(record, "authorization") == [f"Bearer {ROTATED_SECRET}"]
    assert ROTATED_SECRET not in second.text
    assert "[redacted" in second.text


def test_empty_secret_file_fails_closed(setup: Setup) -> None:
    task = setup.gateway.start_task()
    original = setup.rotating_secret_file.read_text()
    setup.rotating_secret_file.write_text("")
    try:
        marker = unique_marker()
        response = send(setup, task["token"], "GET", f"rotating/items?tag={marker}")
        assert response.status_code == 503, response.text
        assert recorded_with(setup.upstream, marker) == []
    finally:
        setup.rotating_secret_file.write_text(original)


# -------------------------------------------------------------- trace


def test_trace_records_decision_and_result(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"api/public/{marker}", params={"q": "x y"})
    assert response.status_code == 200, response.text
    records = setup.gateway.trace(task["task_id"], "http.result", 1)
    [decision] = records_of(records, "http.decision")
    [result] = records_of(records, "http.result")
    assert decision["target"] == "route:api"
    assert decision["decision"] == "allow"
    assert decision["detail"]["method"] == "GET"
    assert decision["detail"]["path"] == f"/public/{marker}"
    assert decision["detail"]["query"] == [["q", "x y"]]
    assert decision["detail"]["url"] == f"{setup.upstream.origin}/v1/public/{marker}?q=x+y"
    assert result["target"] == "route:api"
    assert result["parent_span_id"] == decision["span_id"]
    assert result["detail"]["status"] == 200
    assert result["detail"]["redirects"] == 0
    assert result["detail"]["redirect_refused"] is None
    assert result["detail"]["redactions"] == 0
    assert result["detail"]["duration_ms"] >= 0


def test_trace_counts_redactions(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "api/leak/github")
    assert response.status_code == 200, response.text
    records = setup.gateway.trace(task["task_id"], "http.result", 1)
    [result] = records_of(records, "http.result")
    assert result["detail"]["redactions"] >= 1


# --------------------------------------------------- transaction tokens


def test_jwks_publishes_p256_signing_key(setup: Setup) -> None:
    keys = jwks(setup)["keys"]
    assert len(keys) >= 1
    key = keys[0]
    assert key["kty"] == "EC"
    assert key["crv"] == "P-256"
    assert key["alg"] == "ES256"
    assert key["use"] == "sig"
    assert key["kid"]
    assert "d" not in key, "the JWKS publishes the private key"


def test_txn_token_verified_by_upstream(setup: Setup) -> None:
    user = "carol@acme.test"
    task = setup.gateway.start_task(
        intent="check open orders", user=user, tools=["envecho__*", "files__read_file"]
    )
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"txn/orders/{marker}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verified"] is True
    assert body["header"]["alg"] == "ES256"
    assert body["header"]["typ"] == TXN_TOKEN_TYPE
    assert body["header"]["kid"] in {key["kid"] for key in jwks(setup)["keys"]}
    claims = body["claims"]
    assert claims["iss"] == "warden"
    assert claims["aud"] == setup.upstream.origin
    assert claims["txn"] == task["task_id"]
    assert claims["task_id"] == task["task_id"]
    assert claims["sub"] == user
    assert claims["user"] == user
    assert claims["scope"] == "envecho__* files__read_file"
    assert claims["agent"] == AGENT_ID
    assert claims["jti"]
    assert claims["tctx"] == {
        "task_id": task["task_id"],
        "root_task_id": task["task_id"],
        "trace_id": task["trace_id"],
        "intent": "check open orders",
    }
    assert claims["rctx"] == {"req_wl": AGENT_ID}
    assert "act" not in claims
    assert claims["exp"] <= expires_at_unix(task)
    assert 0 < claims["exp"] - claims["iat"] <= DEFAULT_TXN_TTL_SECONDS
    [record] = recorded_with(setup.upstream, marker)
    assert header_values(record, "authorization") == []
    assert len(header_values(record, "txn-token")) == 1


def test_txn_token_capped_by_task_expiry(setup: Setup) -> None:
    task = setup.gateway.start_task(ttl_seconds=20)
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"txn/orders/{marker}")
    assert response.status_code == 200, response.text
    claims = response.json()["claims"]
    assert claims["exp"] <= expires_at_unix(task)
    assert claims["exp"] - claims["iat"] <= 20


def test_tampered_txn_token_rejected_by_upstream(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"txn/orders/{marker}")
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    [token] = header_values(record, "txn-token")
    header, payload, signature = token.split(".")

    def ask_upstream(candidate: str) -> int:
        return httpx.get(
            f"{setup.upstream.origin}/txn/orders/direct",
            headers={"Txn-Token": candidate},
            timeout=HTTP_TIMEOUT_SECONDS,
        ).status_code

    assert ask_upstream(token) == 200
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory@acme.test"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert ask_upstream(f"{header}.{forged}.{signature}") == 401
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert ask_upstream(f"{header}.{payload}.{flipped}") == 401
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"typ": TXN_TOKEN_TYPE})
    assert ask_upstream(unsigned) == 401


def test_txn_token_settings_applied(setup: Setup) -> None:
    task = setup.gateway.start_task()
    marker = unique_marker()
    response = send(setup, task["token"], "GET", f"txn_custom/orders/{marker}")
    assert response.status_code == 200, response.text
    [record] = recorded_with(setup.upstream, marker)
    assert header_values(record, "txn-token") == []
    [token] = header_values(record, "x-txn")
    assert jwt.get_unverified_header(token)["typ"] == TXN_TOKEN_TYPE
    claims = verify_txn_token(setup, token, CUSTOM_AUDIENCE)
    assert claims["aud"] == CUSTOM_AUDIENCE
    assert claims["exp"] - claims["iat"] == CUSTOM_TXN_TTL_SECONDS
    with pytest.raises(jwt.InvalidAudienceError):
        verify_txn_token(setup, token, setup.upstream.origin)


def test_txn_token_wrong_audience_rejected(setup: Setup) -> None:
    task = setup.gateway.start_task()
    response = send(setup, task["token"], "GET", "txn_elsewhere/orders")
    assert response.status_code == 401, response.text
    assert "audience" in response.json()["error"].lower()


def test_txn_token_of_delegated_task_names_actor(setup: Setup) -> None:
    parent = setup.gateway.start_task(tools=["envecho__*", "files__*"])
    exchanged = httpx.post(
        f"{setup.gateway.base_url}/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": parent["token"],
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "actor_token": setup.gateway.issue_svid(DELEGATE_ID),
            "actor_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "scope": "envecho__*",
        },
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert exchanged.status_code == 200, exchanged.text
    child = exchanged.json()
    response = send(setup, child["access_token"], "GET", "txn/orders/delegated")
    assert response.status_code == 200, response.text
    claims = response.json()["claims"]
    assert claims["task_id"] == child["task_id"]
    assert claims["agent"] == DELEGATE_ID
    assert claims["rctx"] == {"req_wl": DELEGATE_ID}
    assert claims["scope"] == "envecho__*"
    assert claims["tctx"]["root_task_id"] == parent["task_id"]
    assert claims["tctx"]["trace_id"] == parent["trace_id"]
    assert claims["act"]["sub"] == DELEGATE_ID
    assert claims["exp"] <= expires_at_unix(parent)


# ------------------------------------------------------ MCP credentials


def call_read_variable(setup: Setup, token: str, name: str) -> Any:
    """Call envecho__read_variable through Warden and return the result."""

    async def scenario() -> Any:
        async with connect(setup.gateway.mcp_url(), token, "auto") as client:
            return await client.call_tool("envecho__read_variable", {"name": name})

    return run(scenario())


def test_mcp_env_credential_injected_and_redacted(setup: Setup) -> None:
    task = setup.gateway.start_task(tools=["envecho__*"])
    result = call_read_variable(setup, task["token"], MCP_VARIABLE)
    text = result_text(result)
    assert result.is_error is False, text
    assert MCP_SECRET not in text
    assert "is unset" not in text, "the spawned server did not get its credential"
    assert "[redacted" in text


def test_mcp_spawned_server_lacks_warden_secrets(setup: Setup) -> None:
    task = setup.gateway.start_task(tools=["envecho__*"])
    result = call_read_variable(setup, task["token"], "HTTP_TEST_KEY_SECRET")
    text = result_text(result)
    assert result.is_error is False, text
    assert text == "HTTP_TEST_KEY_SECRET is unset"


# --------------------------------------------------- secrets at rest


def test_secrets_absent_from_log_store_and_trace(quiet_setup: Setup) -> None:
    # This gateway serves only the requests below, so what its log and
    # store hold comes from the ordinary use of each credential kind.
    setup = quiet_setup
    tasks = [setup.gateway.start_task(tools=["envecho__*"]) for _ in range(2)]
    token = tasks[0]["token"]
    for route in ("api", "keyed", "basic", "rotating"):
        response = send(setup, token, "GET", f"{route}/echo-secrets")
        assert response.status_code == 200, response.text
    marker = unique_marker()
    # The upstream checks tokens against the other gateway's key, so it
    # rejects this one; Warden has minted and sent it all the same.
    send(setup, token, "GET", f"txn/orders/{marker}")
    [record] = recorded_with(setup.upstream, marker)
    [txn_token] = header_values(record, "txn-token")
    mcp_result = call_read_variable(setup, tasks[1]["token"], MCP_VARIABLE)
    assert mcp_result.is_error is False, result_text(mcp_result)

    secrets = {
        "api": API_SECRET,
        "key": KEY_SECRET,
        "basic": BASIC_SECRET,
        "basic pair": basic_pair(),
        "rotating": ROTATING_SECRET,
        "mcp": MCP_SECRET,
        "txn token": txn_token,
    }
    setup.gateway.trace(tasks[0]["task_id"], "http.result", 5)
    trace_text = ""
    for task in tasks:
        shown = setup.gateway.warden("trace", "show", task["task_id"], "--json")
        assert shown.returncode == 0, shown.stderr
        trace_text += shown.stdout
    stderr = setup.gateway.managed.stderr_text()
    state = setup.gateway.config_path.parent / "state"
    stored = b"".join(path.read_bytes() for path in sorted(state.glob("warden.db*")))
    assert stored, f"no database files in {state}"
    for name, secret in secrets.items():
        assert secret not in stderr, f"the {name} secret is in Warden's stderr"
        assert secret.encode() not in stored, f"the {name} secret is in the database files"
        assert secret not in trace_text, f"the {name} secret is in `warden trace show`"


# ------------------------------------------------------ policy loading


def test_body_policy_without_schema_fails_load(
    tmp_path: Path,
) -> None:
    policies = {
        "routes.cedar": """
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("plain-body")
permit (principal, action == Warden::Action::"route:plain", resource)
when { context has body && context.body.amount > 100 };
""",
    }
    extra = route_toml("plain", 'url = "http://127.0.0.1:9/v1"\nallow_private = true')
    config_path = write_config(tmp_path, free_port(), {}, policies, extra=extra)
    command = [str(warden_bin()), "serve", "--config", str(config_path)]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("warden serve started with a policy that reads an undeclared body")
    assert completed.returncode != 0
    assert "plain-body" in completed.stderr, completed.stderr
    assert "body" in completed.stderr, completed.stderr
