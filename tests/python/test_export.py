"""Span export: every audit record of a task reaches an OTLP collector as
one span and a JSON-lines file as one line.

The collector is an http.server on 127.0.0.1 that decodes each request
with the official OTLP protobuf classes (the opentelemetry-proto package).
The gateway serves its bundled example tool servers with the bundled policy
pack, so these tests need no Node.js.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import (
    AGENT_ID,
    HTTP_TIMEOUT_SECONDS,
    STARTUP_TIMEOUT_SECONDS,
    Gateway,
    StartGateway,
    connect,
    free_port,
    run,
    warden_bin,
    write_config,
)

USER = "alice@acme.test"
ALLOWED_PATH = "/workspace/notes/todo.md"
SECRET_PATH = "/workspace/secrets/api-key.txt"
HEADER_NAME = "x-collector-key"
HEADER_ENV = "WARDEN_TEST_COLLECTOR_KEY"
HEADER_VALUE = "collector-key-7f3a91"
EXPORT_TIMEOUT_SECONDS = 15.0
# A tool call through Warden to a bundled server takes milliseconds. An
# export that blocked the call would add at least the 2 s OTLP timeout.
MAX_CALL_SECONDS = 1.0
FAILED_OTLP_SPANS = re.compile(
    r'^warden_export_spans_total\{exporter="otlp",outcome="failed"\} (\d+)$', re.M
)


@dataclass
class Collector:
    """An OTLP/HTTP collector on 127.0.0.1 that keeps every request."""

    server: ThreadingHTTPServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Return the traces URL."""
        return f"http://127.0.0.1:{self.server.server_port}/v1/traces"

    def received(self) -> list[dict[str, Any]]:
        """Return a copy of the requests received so far."""
        with self.lock:
            return list(self.requests)

    def spans(self, trace_id: str) -> list[Span]:
        """Return the decoded spans of `trace_id` received so far."""
        return [
            span
            for request in self.received()
            if request["decoded"] is not None
            for resource_spans in request["decoded"].resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
            if otlp_id(span.trace_id) == trace_id
        ]


def make_handler(collector_ref: list[Collector]) -> type[BaseHTTPRequestHandler]:
    """Return a request handler class that records into `collector_ref[0]`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's method name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            decoded: ExportTraceServiceRequest | None = ExportTraceServiceRequest()
            error = None
            try:
                json_format.Parse(body, decoded)
            except json_format.ParseError as parse_error:
                decoded, error = None, str(parse_error)
            collector = collector_ref[0]
            with collector.lock:
                collector.requests.append(
                    {
                        "path": self.path,
                        "headers": {
                            name.lower(): value for name, value in self.headers.items()
                        },
                        "body": body,
                        "decoded": decoded,
                        "error": error,
                    }
                )
            status = 200 if error is None else 400
            reply = b"{}" if error is None else json.dumps({"message": error}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep the test output free of access logs."""

    return Handler


@pytest.fixture
def collector() -> Iterator[Collector]:
    """Start an OTLP collector on a free loopback port."""
    collector_ref: list[Collector] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(collector_ref))
    collector = Collector(server)
    collector_ref.append(collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield collector
    server.shutdown()
    server.server_close()


def otlp_id(raw: bytes) -> str:
    """Return the hex id that Warden sent for a decoded trace or span id.

    OTLP/JSON carries ids as hex text, but json_format follows the plain
    proto3 JSON mapping and reads bytes fields as base64. Hex digits are
    valid base64, so the text decodes without error, and encoding the bytes
    as base64 again returns the hex text that Warden sent.
    """
    return base64.b64encode(raw).decode()


def attribute_values(attributes: Any) -> dict[str, Any]:
    """Return OTLP attributes as a dict of plain Python values."""
    return {attribute.key: plain(attribute.value) for attribute in attributes}


def plain(value: AnyValue) -> Any:
    """Return the Python value of an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def export_toml(endpoint: str, jsonl_path: Path | None, **settings: Any) -> str:
    """Return an [export] section for `endpoint` and `jsonl_path`."""
    lines = ["", "[export]", f"otlp_endpoint = {json.dumps(endpoint)}"]
    if jsonl_path is not None:
        lines.append(f"jsonl_path = {json.dumps(str(jsonl_path))}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def wait_for(what: str, check: Any) -> Any:
    """Return `check()` once it is truthy, failing after EXPORT_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + EXPORT_TIMEOUT_SECONDS
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {EXPORT_TIMEOUT_SECONDS} s")
        time.sleep(0.1)


def jsonl_lines(path: Path) -> list[dict[str, Any]]:
    """Return every complete line of the JSON-lines file, or none before it exists."""
    if not path.exists():
        return []
    # The last element is empty, or a line that Warden is still writing.
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line]


def jsonl_records(path: Path, trace_id: str) -> list[dict[str, Any]]:
    """Return the record lines of `trace_id` in the JSON-lines file."""
    return [
        line
        for line in jsonl_lines(path)
        if line["type"] == "record" and line["trace_id"] == trace_id
    ]


def call_tools(
    gateway: Gateway, token: str, paths: list[str]
) -> list[tuple[Any, float]]:
    """Call files__read_file on each path and return each result with its duration."""

    async def scenario() -> list[tuple[Any, float]]:
        results = []
        async with connect(gateway.mcp_url(), token, "auto") as client:
            for path in paths:
                started = time.monotonic()
                result = await client.call_tool("files__read_file", {"path": path})
                results.append((result, time.monotonic() - started))
        return results

    return run(scenario())


def test_export_sends_trace_to_collector_and_file(
    start_gateway: StartGateway, collector: Collector, tmp_path: Path
) -> None:
    jsonl_path = tmp_path / "export" / "spans.jsonl"
    extra = export_toml(
        collector.url,
        jsonl_path,
        batch_interval_ms=50,
        service_name="warden-under-test",
    ) + f'otlp_headers_env = {{ "{HEADER_NAME}" = "{HEADER_ENV}" }}\n'
    extra += "\n[audit]\ncheckpoint_interval_seconds = 1\n"
    gateway = start_gateway({}, None, extra=extra, env={HEADER_ENV: HEADER_VALUE})
    task = gateway.start_task(intent="summarise notes", user=USER, tools=["files__*"])
    trace_id = task["trace_id"]

    results = call_tools(gateway, task["token"], [ALLOWED_PATH, SECRET_PATH])
    assert results[0][0].is_error is False
    assert results[1][0].is_error is True

    # task.start, two tool.decision records and one tool.result.
    def all_spans() -> list[Span] | None:
        spans = collector.spans(trace_id)
        return spans if len(spans) >= 4 else None

    spans = wait_for("4 spans of the trace at the collector", all_spans)
    requests = collector.received()
    assert [request["error"] for request in requests] == [None] * len(requests)
    for request in requests:
        assert request["path"] == "/v1/traces"
        assert request["headers"]["content-type"] == "application/json"
        assert request["headers"][HEADER_NAME] == HEADER_VALUE

    # Resource and scope of the first request.
    resource_spans = requests[0]["decoded"].resource_spans[0]
    resource = attribute_values(resource_spans.resource.attributes)
    assert resource["service.name"] == "warden-under-test"
    assert resource["service.version"]
    assert resource_spans.scope_spans[0].scope.name == "warden"

    # The ids in the request body are hex, as OTLP/JSON requires.
    raw_spans = [
        span
        for request in requests
        for resource in json.loads(request["body"])["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert trace_id in {span["traceId"] for span in raw_spans}

    by_kind: dict[str, list[tuple[Span, dict[str, Any]]]] = {}
    for span in spans:
        attributes = attribute_values(span.attributes)
        by_kind.setdefault(attributes["warden.kind"], []).append((span, attributes))
    assert sorted((kind, len(items)) for kind, items in by_kind.items()) == [
        ("task.start", 1),
        ("tool.decision", 2),
        ("tool.result", 1),
    ]

    root, root_attributes = by_kind["task.start"][0]
    assert root.parent_span_id == b""
    assert root.name == "task.start"
    assert root.kind == Span.SPAN_KIND_INTERNAL
    assert root_attributes["warden.task_id"] == task["task_id"]
    assert root_attributes["warden.agent"] == AGENT_ID
    assert root_attributes["enduser.id"] == USER
    assert root_attributes["warden.decision"] == "allow"

    decisions = {
        attributes["warden.decision"]: (span, attributes)
        for span, attributes in by_kind["tool.decision"]
    }
    assert sorted(decisions) == ["allow", "deny"]
    allowed, allowed_attributes = decisions["allow"]
    denied, denied_attributes = decisions["deny"]
    for decision in (allowed, denied):
        assert otlp_id(decision.parent_span_id) == otlp_id(root.span_id)
        assert decision.name == "tool.decision files__read_file"
        assert decision.kind == Span.SPAN_KIND_INTERNAL
    assert allowed_attributes["warden.target"] == "files__read_file"
    assert allowed_attributes["warden.policy_ids"] == ["files-read-notes"]
    assert "files-no-secrets" in denied_attributes["warden.policy_ids"]
    assert "secrets" in denied_attributes["warden.reason"]
    assert isinstance(allowed_attributes["warden.audit.seq"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", allowed_attributes["warden.audit.hash"])
    allowed_detail = json.loads(allowed_attributes["warden.detail"])
    assert allowed_detail["arguments"]["path"] == ALLOWED_PATH

    result, result_attributes = by_kind["tool.result"][0]
    assert otlp_id(result.parent_span_id) == otlp_id(allowed.span_id)
    assert result.kind == Span.SPAN_KIND_CLIENT
    assert result.status.code == 0
    assert 0 < result.start_time_unix_nano <= result.end_time_unix_nano
    assert json.loads(result_attributes["warden.detail"])["outcome"] == "result"

    # The file has the same records, with the same seq, hash and span id,
    # and so has the store.
    def all_lines() -> list[dict[str, Any]] | None:
        lines = jsonl_records(jsonl_path, trace_id)
        return lines if len(lines) >= 4 else None

    lines = wait_for("4 record lines of the trace in the file", all_lines)
    from_spans = sorted(
        (
            attributes["warden.audit.seq"],
            attributes["warden.audit.hash"],
            otlp_id(span.span_id),
        )
        for items in by_kind.values()
        for span, attributes in items
    )
    from_file = sorted((line["seq"], line["hash"], line["span_id"]) for line in lines)
    assert from_file == from_spans
    stored = gateway.trace(task["task_id"], "tool.result", 1)
    from_store = sorted(
        (record["seq"], record["hash"], record["span_id"])
        for record in stored
        if record["trace_id"] == trace_id
    )
    assert from_store == from_spans
    assert stat.S_IMODE(jsonl_path.stat().st_mode) == 0o600

    # A signed checkpoint that covers the trace follows its records, and
    # its hash is that of the record line with the same seq.
    last_seq = max(line["seq"] for line in lines)

    def covering_checkpoint() -> dict[str, Any] | None:
        for line in jsonl_lines(jsonl_path):
            if line["type"] == "checkpoint" and line["seq"] >= last_seq:
                return line
        return None

    checkpoint = wait_for("a checkpoint line of the trace's seq", covering_checkpoint)
    records_by_seq = {
        line["seq"]: line for line in jsonl_lines(jsonl_path) if line["type"] == "record"
    }
    assert checkpoint["hash"] == records_by_seq[checkpoint["seq"]]["hash"]
    assert checkpoint["signature"].count(".") == 2
    assert isinstance(checkpoint["created_at"], int)

    # Neither destination receives the task token, and the log does not
    # contain the collector's header value.
    token = task["token"]
    assert all(token.encode() not in request["body"] for request in requests)
    assert token not in jsonl_path.read_text()
    assert HEADER_VALUE not in gateway.managed.stderr_text()

    metrics = httpx.get(f"{gateway.base_url}/metrics", timeout=HTTP_TIMEOUT_SECONDS).text
    for exporter in ("otlp", "jsonl"):
        sent = re.compile(
            rf'^warden_export_spans_total\{{exporter="{exporter}",outcome="sent"\}} [1-9]',
            re.M,
        )
        assert sent.search(metrics), f"no sent {exporter} spans in /metrics:\n{metrics}"


@pytest.mark.parametrize("endpoint_kind", ["refused", "silent"])
def test_export_to_unreachable_endpoint_keeps_calls_fast(
    start_gateway: StartGateway, endpoint_kind: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        if endpoint_kind == "refused":
            # Nothing listens on this port.
            port = free_port()
        else:
            # The kernel completes TCP handshakes on this socket, but nothing
            # reads from it or responds, so each OTLP request times out.
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            port = silent.getsockname()[1]
        extra = export_toml(
            f"http://127.0.0.1:{port}/v1/traces",
            None,
            batch_interval_ms=20,
            timeout_seconds=2,
        )
        gateway = start_gateway({}, None, extra=extra)
        task = gateway.start_task(intent="summarise notes", user=USER, tools=["files__*"])

        results = call_tools(gateway, task["token"], [ALLOWED_PATH] * 5)
        for result, seconds in results:
            assert result.is_error is False
            assert seconds < MAX_CALL_SECONDS, f"tool call took {seconds:.3f} s"

        def failed_count() -> int:
            metrics = httpx.get(
                f"{gateway.base_url}/metrics", timeout=HTTP_TIMEOUT_SECONDS
            ).text
            match = FAILED_OTLP_SPANS.search(metrics)
            return int(match.group(1)) if match else 0

        # Two retries with backoff and, for the silent endpoint, three 2 s
        # timeouts come before the first batch counts as failed.
        assert wait_for("failed OTLP spans in /metrics", failed_count) >= 1
        assert gateway.managed.process.poll() is None


def test_export_missing_header_variable_stops_start(tmp_path: Path) -> None:
    port = free_port()
    extra = export_toml("http://127.0.0.1:4318/v1/traces", None) + (
        f'otlp_headers_env = {{ "{HEADER_NAME}" = "{HEADER_ENV}_UNSET" }}\n'
    )
    config_path = write_config(tmp_path, port, {}, None, extra=extra)
    completed = subprocess.run(
        [str(warden_bin()), "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode != 0
    assert f"{HEADER_ENV}_UNSET" in completed.stderr
    assert HEADER_NAME in completed.stderr
