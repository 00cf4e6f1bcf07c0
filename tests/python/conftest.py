"""Fixtures for Warden's integration tests.

Each test talks real protocols to real processes: `warden serve` started
from the binary in WARDEN_BIN (default target/debug/warden), the reference
MCP servers from tests/node_modules as upstreams, the official MCP Python
SDK as the agent's client, and httpx for the task endpoints. Every process
listens on 127.0.0.1 only, except the everything server, which binds its
port on all interfaces (it offers no host option) and is reached through
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = REPO_ROOT / "tests" / "node_modules" / ".bin"
FILESYSTEM_SERVER = NODE_BIN / "mcp-server-filesystem"
EVERYTHING_SERVER = NODE_BIN / "mcp-server-everything"

AGENT_ID = "spiffe://warden.local/agent/integration-test"
DECISION_KEY = "dev.warden/decision"
MODES = ["auto", "legacy"]

STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
TRACE_TIMEOUT_SECONDS = 10.0
HTTP_TIMEOUT_SECONDS = 30.0

requires_node = pytest.mark.skipif(
    not (FILESYSTEM_SERVER.exists() and EVERYTHING_SERVER.exists())
    or shutil.which("node") is None,
    reason=(
        f"reference MCP servers not found in {NODE_BIN}, or node is not on PATH; "
        "install Node.js and run `npm ci --prefix tests` (scripts/test does this)"
    ),
)

# Processes started by the fixtures, so that a failing test's report can
# show their stderr.
_RUNNING: list[ManagedProcess] = []


def warden_bin() -> Path:
    """Return the Warden binary under test, failing when it was not built."""
    path = Path(os.environ.get("WARDEN_BIN", REPO_ROOT / "target" / "debug" / "warden"))
    if not path.is_file():
        pytest.fail(
            f"Warden binary not found at {path}; build it with `cargo build -p warden` "
            "or set WARDEN_BIN to its path",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(coroutine: Any) -> Any:
    """Run one coroutine to completion on a fresh event loop."""
    return asyncio.run(coroutine)


@dataclass
class ManagedProcess:
    """A child process whose output goes to files in the test's directory."""

    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stderr_text(self) -> str:
        """Return what the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the process with SIGTERM, then SIGKILL after a timeout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self in _RUNNING:
            _RUNNING.remove(self)


def spawn(
    name: str, command: list[str], directory: Path, env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start `command` with its output in `directory/name.stdout|stderr`."""
    stdout_path = directory / f"{name}.stdout"
    stderr_path = directory / f"{name}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
            cwd=directory,
            start_new_session=True,
        )
    managed = ManagedProcess(name, process, stdout_path, stderr_path)
    _RUNNING.append(managed)
    return managed


def toml_value(value: Any) -> str:
    """Render a string, integer, boolean or list as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string with its escapes is a valid TOML basic string.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {value!r} as a TOML value")


def write_config(
    directory: Path,
    port: int,
    upstreams: dict[str, dict[str, Any]],
    policies: dict[str, str] | None,
    tasks: dict[str, int] | None = None,
    extra: str = "",
) -> Path:
    """Write warden.toml and the policy files into `directory`.

    Without `policies` no policy directory is configured, which is valid only
    without upstreams (Warden then serves its bundled example servers).
    `extra` is TOML text appended as it is, for sections such as `[llm.NAME]`.
    """
    lines = [
        f"data_dir = {toml_value(str(directory / 'state'))}",
        "",
        "[server]",
        f'listen = "127.0.0.1:{port}"',
    ]
    if policies is not None:
        policy_dir = directory / "policies"
        policy_dir.mkdir()
        for name, text in policies.items():
            (policy_dir / name).write_text(text)
        lines += ["", "[policy]", f"dir = {toml_value(str(policy_dir))}"]
    if tasks:
        lines += ["", "[tasks]"] + [
            f"{key} = {toml_value(value)}" for key, value in tasks.items()
        ]
    for name, settings in upstreams.items():
        lines += ["", f"[upstreams.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    path = directory / "warden.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class Gateway:
    """A running `warden serve` with its configuration file."""

    config_path: Path
    port: int
    managed: ManagedProcess
    svid_cache: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """Return the gateway's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def mcp_url(self, server: str | None = None) -> str:
        """Return the URL of /mcp, or of /mcp/{server} for one upstream."""
        return (
            f"{self.base_url}/mcp"
            if server is None
            else f"{self.base_url}/mcp/{server}"
        )

    def warden(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run a `warden` command against this gateway's configuration."""
        return subprocess.run(
            [str(warden_bin()), *arguments, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT_SECONDS,
            check=False,
        )

    def issue_svid(self, spiffe_id: str = AGENT_ID, audience: str | None = None) -> str:
        """Return a JWT-SVID for `spiffe_id` from the development issuer."""
        key = f"{spiffe_id} {audience}"
        if key not in self.svid_cache:
            arguments = ["identity", "issue", spiffe_id]
            if audience is not None:
                arguments += ["--audience", audience]
            completed = self.warden(*arguments)
            assert completed.returncode == 0, (
                f"warden identity issue failed: {completed.stderr}"
            )
            self.svid_cache[key] = completed.stdout.strip()
        return self.svid_cache[key]

    def post_task(self, svid: str, **fields: Any) -> httpx.Response:
        """Send POST /v1/tasks with `svid` and return the raw response."""
        body = {"intent": "integration test", "user": "alice@acme.test", **fields}
        return httpx.post(
            f"{self.base_url}/v1/tasks",
            headers={"Authorization": f"Bearer {svid}"},
            json=body,
            timeout=HTTP_TIMEOUT_SECONDS,
        )

    def start_task(self, **fields: Any) -> dict[str, Any]:
        """Start a task for the test agent and return the JSON body."""
        response = self.post_task(self.issue_svid(), **fields)
        assert response.status_code == 201, (
            f"POST /v1/tasks: {response.status_code} {response.text}"
        )
        return response.json()

    def trace(self, task_id: str, kind: str, count: int) -> list[dict[str, Any]]:
        """Return the task's audit records once `count` records of `kind` are stored.

        The audit log is written off the request path, so records appear
        shortly after the response; this polls `warden trace show`.
        """
        deadline = time.monotonic() + TRACE_TIMEOUT_SECONDS
        records: list[dict[str, Any]] = []
        while True:
            completed = self.warden("trace", "show", task_id, "--json")
            if completed.returncode == 0:
                records = [
                    json.loads(line)
                    for line in completed.stdout.splitlines()
                    if line.strip()
                ]
                if sum(1 for record in records if record["kind"] == kind) >= count:
                    return records
            if time.monotonic() > deadline:
                kinds = [record["kind"] for record in records]
                pytest.fail(
                    f"trace of task {task_id} has no {count} {kind} records after "
                    f"{TRACE_TIMEOUT_SECONDS} s; records: {kinds}; stderr: {completed.stderr}"
                )
            time.sleep(0.2)


def wait_until_serving(gateway: Gateway) -> None:
    """Wait until GET /healthz returns 200, failing with Warden's stderr if it exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if gateway.managed.process.poll() is not None:
            pytest.fail(
                f"warden serve exited with {gateway.managed.process.returncode} before serving; "
                f"stderr:\n{gateway.managed.stderr_text()}",
                pytrace=False,
            )
        try:
            if httpx.get(f"{gateway.base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            gateway.managed.stop()
            pytest.fail(
                f"warden serve did not answer /healthz within {STARTUP_TIMEOUT_SECONDS} s; "
                f"stderr:\n{gateway.managed.stderr_text()}",
                pytrace=False,
            )
        time.sleep(0.1)


def wait_for_port(managed: ManagedProcess, port: int) -> None:
    """Wait until 127.0.0.1:`port` accepts connections."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if managed.process.poll() is not None:
            pytest.fail(
                f"{managed.name} exited with {managed.process.returncode} before listening; "
                f"stderr:\n{managed.stderr_text()}",
                pytrace=False,
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            managed.stop()
            pytest.fail(
                f"{managed.name} did not listen on port {port} within {STARTUP_TIMEOUT_SECONDS} s"
            )
        time.sleep(0.1)


StartGateway = Callable[..., Gateway]


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Return a function that writes a config, starts `warden serve` and waits for /healthz.

    Its arguments are those of `write_config` after the directory and port,
    then `env`: extra environment variables for `warden serve`.
    Every gateway started is stopped at the end of the module.
    """
    binary = warden_bin()
    started: list[Gateway] = []

    def start(
        upstreams: dict[str, dict[str, Any]],
        policies: dict[str, str] | None,
        tasks: dict[str, int] | None = None,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> Gateway:
        directory = tmp_path_factory.mktemp("gateway")
        port = free_port()
        config_path = write_config(directory, port, upstreams, policies, tasks, extra)
        managed = spawn(
            "warden",
            [str(binary), "serve", "--config", str(config_path)],
            directory,
            env,
        )
        gateway = Gateway(config_path, port, managed)
        started.append(gateway)
        wait_until_serving(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.managed.stop()


@pytest.fixture(scope="module")
def everything_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the reference everything server over Streamable HTTP and return its /mcp URL."""
    if not EVERYTHING_SERVER.exists():
        pytest.skip(
            f"{EVERYTHING_SERVER} not found; install it with `npm ci --prefix tests`"
        )
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH; the reference MCP servers need Node.js")
    directory = tmp_path_factory.mktemp("everything")
    port = free_port()
    managed = spawn(
        "everything",
        [str(EVERYTHING_SERVER), "streamableHttp"],
        directory,
        env={"PORT": str(port)},
    )
    wait_for_port(managed, port)
    yield f"http://127.0.0.1:{port}/mcp"
    managed.stop()


@asynccontextmanager
async def connect(url: str, token: str, mode: str) -> AsyncIterator[Client]:
    """Open an official-SDK MCP client on `url` that sends `token` as its bearer."""
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    ) as http_client:
        transport = streamable_http_client(url, http_client=http_client)
        async with Client(transport, mode=mode) as client:
            yield client


def result_text(result: Any) -> str:
    """Return the text blocks of a CallToolResult joined by newlines."""
    return "\n".join(
        block.text for block in result.content if getattr(block, "type", None) == "text"
    )


def decision_of(result: Any) -> dict[str, Any]:
    """Return Warden's decision from a refused CallToolResult's `_meta`."""
    meta = result.meta or {}
    assert DECISION_KEY in meta, f"no {DECISION_KEY} in _meta of {result!r}"
    return meta[DECISION_KEY]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Attach the stderr of every running child process to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for managed in _RUNNING:
            tail = managed.stderr_text()[-20_000:]
            report.sections.append(
                (f"{managed.name} stderr (pid {managed.process.pid})", tail)
            )
