"""A local stand-in for the OpenAI and Anthropic model APIs, for tests.

It serves `POST /v1/chat/completions` in the OpenAI shape and
`POST /v1/messages` in the Anthropic shape, with and without streaming
(Server-Sent Events sent with chunked transfer encoding). Every response
reports the same usage: 11 input and 7 output tokens.

The response depends on the text of the last user message:
- "use the tool {JSON}" gets one tool call, whose name and arguments are the
  `name` and `arguments` of the JSON object after that phrase;
- "stream slowly" makes a streamed response pause PAUSE_SECONDS after its
  first text chunk;
- any other text gets REPLY_TEXT.
A request whose body contains "reject the key" anywhere gets a 401 response,
as if its key were wrong.

A request must carry the provider's API key: `Authorization: Bearer KEY` on
the OpenAI path and `x-api-key: KEY` on the Anthropic path. Otherwise the
response is 401 in the provider's error shape, and its message repeats the
key received, the worst case of a provider's error message.

Test endpoints:
- `GET /_requests` returns every request received so far as a JSON list of
  {method, path, headers: [[name, value], ...], body}, where `body` is the
  request body decoded as UTF-8;
- `POST /_keys` with {"openai": KEY, "anthropic": KEY} (either field may be
  left out) replaces the expected keys.

Usage: python llm_stub.py [PORT] --openai-key KEY --anthropic-key KEY
PORT 0 (the default) picks a free port. The first line on stdout is the port.
Only 127.0.0.1 is served.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY_TEXT = "Hello from the stub model."
TOOL_PHRASE = "use the tool"
SLOW_PHRASE = "stream slowly"
REJECT_PHRASE = "reject the key"
PAUSE_SECONDS = 1.0
INPUT_TOKENS = 11
OUTPUT_TOKENS = 7
# Appended to the requested model to form the model named in responses, the
# way OpenAI returns "gpt-4o-mini-2024-07-18" for "gpt-4o-mini".
RESPONSE_MODEL_SUFFIX = "-2024-07-18"
OPENAI_TOOL_CALL_ID = "call_1"
ANTHROPIC_TOOL_USE_ID = "toolu_1"
CREATED = 1_767_225_600

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


class BadRequest(Exception):
    """A request body that the stub cannot respond to; the message gives the reason."""


class StubState:
    """Expected API keys and received requests, shared by all handler threads."""

    def __init__(self, openai_key: str, anthropic_key: str) -> None:
        self.lock = threading.Lock()
        self.keys = {"openai": openai_key, "anthropic": anthropic_key}
        self.requests: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        """Store one received request."""
        with self.lock:
            self.requests.append(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of the received requests."""
        with self.lock:
            return list(self.requests)

    def key(self, provider: str) -> str:
        """Return the API key currently expected for `provider`."""
        with self.lock:
            return self.keys[provider]

    def replace_keys(self, keys: dict[str, Any]) -> None:
        """Replace the expected keys named in `keys`."""
        with self.lock:
            for provider in ("openai", "anthropic"):
                if isinstance(keys.get(provider), str):
                    self.keys[provider] = keys[provider]


def last_user_text(messages: Any) -> str:
    """Return the text of the last user message of a chat or messages request."""
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        return ""
    return ""


def requested_tool(text: str) -> tuple[str, dict[str, Any]] | None:
    """Return the tool name and arguments that `text` requests, or None."""
    start = text.find(TOOL_PHRASE)
    if start < 0:
        return None
    rest = text[start + len(TOOL_PHRASE) :].lstrip()
    try:
        request, _ = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"expected a JSON object after {TOOL_PHRASE!r}: {error}"
        ) from error
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("name"), str)
        or not isinstance(request.get("arguments", {}), dict)
    ):
        raise BadRequest(
            f'expected {{"name": "...", "arguments": {{...}}}} after {TOOL_PHRASE!r}'
        )
    return request["name"], request.get("arguments", {})


def split_in_two(text: str) -> list[str]:
    """Split `text` into two non-empty halves, or keep it whole when shorter than 2."""
    if len(text) < 2:
        return [text]
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def text_pieces() -> list[str]:
    """Return REPLY_TEXT as the word-sized pieces that a stream sends."""
    words = REPLY_TEXT.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


class Handler(BaseHTTPRequestHandler):
    """Request handler for the model endpoints and the test endpoints."""

    protocol_version = "HTTP/1.1"
    server: StubServer

    def do_GET(self) -> None:  # noqa: N802
        """Serve GET /_requests."""
        self.read_body()
        if self.path == "/_requests":
            self.send_json(200, self.server.state.snapshot())
        else:
            self.send_json(404, {"error": f"no GET route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        """Serve the model endpoints and POST /_keys."""
        body = self.read_body()
        if self.path == "/_keys":
            self.server.state.replace_keys(json.loads(body or b"{}"))
            self.send_json(200, {"ok": True})
            return
        self.server.state.record(
            {
                "method": "POST",
                "path": self.path,
                "headers": [[name, value] for name, value in self.headers.items()],
                "body": body.decode("utf-8", errors="replace"),
            }
        )
        if self.path == OPENAI_PATH:
            self.serve_openai(body)
        elif self.path == ANTHROPIC_PATH:
            self.serve_anthropic(body)
        else:
            self.send_json(404, {"error": f"no POST route {self.path}"})

    def read_body(self) -> bytes:
        """Read the request body announced by Content-Length."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # OpenAI chat completions.

    def serve_openai(self, body: bytes) -> None:
        """Respond to one chat completions request."""
        received = self.headers.get("Authorization") or ""
        expected = f"Bearer {self.server.state.key('openai')}"
        if received != expected or REJECT_PHRASE.encode() in body:
            key = received.removeprefix("Bearer ")
            error = openai_error(
                f"Incorrect API key provided: {key}.",
                "invalid_request_error",
                "invalid_api_key",
            )
            self.send_json(401, error)
            return

        try:
            request = json.loads(body)
            model = request["model"]
            text = last_user_text(request.get("messages"))
            tool = requested_tool(text)
        except (BadRequest, json.JSONDecodeError, KeyError, TypeError) as error:
            self.log_error("invalid chat completions request: %s", error)
            self.send_json(400, openai_error(str(error), "invalid_request_error", None))
            return
        response_model = model + RESPONSE_MODEL_SUFFIX
        if not request.get("stream"):
            self.send_json(200, openai_completion(response_model, tool))
            return

        stream_options = request.get("stream_options") or {}
        pause = SLOW_PHRASE in text
        self.start_stream()
        for chunk in openai_chunks(response_model, tool):
            self.send_event(None, chunk)
            if pause and chunk["choices"][0]["delta"].get("content"):
                time.sleep(PAUSE_SECONDS)
                pause = False
        if stream_options.get("include_usage"):
            last = openai_chunk(response_model, [])
            last["usage"] = openai_usage()
            self.send_event(None, last)
        self.send_chunk(b"data: [DONE]\n\n")
        self.end_stream()

    # Anthropic messages.

    def serve_anthropic(self, body: bytes) -> None:
        """Respond to one messages request."""
        received = self.headers.get("x-api-key") or ""
        expected = self.server.state.key("anthropic")
        if received != expected or REJECT_PHRASE.encode() in body:
            message = f"invalid x-api-key {received}"
            error = anthropic_error("authentication_error", message)
            self.send_json(401, error)
            return

        try:
            request = json.loads(body)
            model = request["model"]
            text = last_user_text(request.get("messages"))
            tool = requested_tool(text)
        except (BadRequest, json.JSONDecodeError, KeyError, TypeError) as error:
            self.log_error("invalid messages request: %s", error)
            self.send_json(400, anthropic_error("invalid_request_error", str(error)))
            return
        if not request.get("stream"):
            self.send_json(200, anthropic_message(model, tool))
            return

        pause = SLOW_PHRASE in text
        self.start_stream()
        for event in anthropic_events(model, tool):
            self.send_event(event["type"], event)
            if pause and event.get("delta", {}).get("type") == "text_delta":
                time.sleep(PAUSE_SECONDS)
                pause = False
        self.end_stream()

    # Response writing.

    def send_json(self, status: int, payload: Any) -> None:
        """Send `payload` as a JSON response with a Content-Length."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        """Send the headers of an SSE response with chunked transfer encoding."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, event: str | None, payload: Any) -> None:
        """Send one SSE event as one HTTP chunk."""
        lines = f"event: {event}\n" if event else ""
        lines += f"data: {json.dumps(payload)}\n\n"
        self.send_chunk(lines.encode())

    def send_chunk(self, data: bytes) -> None:
        """Send `data` as one HTTP chunk and flush it."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        """Send the last, empty HTTP chunk."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class StubServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the stub's state."""

    daemon_threads = True

    def __init__(self, port: int, state: StubState) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = state


def openai_error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    """Return an error body in the OpenAI shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    """Return an error body in the Anthropic shape."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_usage() -> dict[str, int]:
    """Return the usage object of every OpenAI response."""
    return {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


def openai_tool_call(tool: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the `tool_calls` entry that requests `tool`."""
    name, arguments = tool
    return {
        "id": OPENAI_TOOL_CALL_ID,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def openai_completion(
    model: str, tool: tuple[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """Return a non-streamed chat completion: REPLY_TEXT or a call of `tool`."""
    if tool is None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": REPLY_TEXT,
            "refusal": None,
        }
        finish_reason = "stop"
    else:
        message = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [openai_tool_call(tool)],
        }
        finish_reason = "tool_calls"
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": openai_usage(),
    }


def openai_chunk(model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one chat completion chunk with `choices`."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": choices,
    }


def openai_choice(
    delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    """Return the one choice of a chunk."""
    return {
        "index": 0,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def openai_chunks(
    model: str, tool: tuple[str, dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Return the chunks of a streamed response, without the usage chunk.

    A tool call's arguments arrive in two pieces, as OpenAI sends them.
    """
    opening = openai_choice({"role": "assistant", "content": ""})
    chunks = [openai_chunk(model, [opening])]
    if tool is None:
        chunks += [
            openai_chunk(model, [openai_choice({"content": piece})])
            for piece in text_pieces()
        ]
        finish_reason = "stop"
    else:
        call = openai_tool_call(tool)
        first = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        chunks.append(openai_chunk(model, [openai_choice({"tool_calls": [first]})]))
        for piece in split_in_two(call["function"]["arguments"]):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            chunks.append(openai_chunk(model, [openai_choice(delta)]))
        finish_reason = "tool_calls"
    chunks.append(openai_chunk(model, [openai_choice({}, finish_reason)]))
    return chunks


def anthropic_message(
    model: str, tool: tuple[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """Return a non-streamed message: REPLY_TEXT or a tool_use block for `tool`."""
    if tool is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": REPLY_TEXT}]
        stop_reason = "end_turn"
    else:
        name, arguments = tool
        content = [
            {
                "type": "tool_use",
                "id": ANTHROPIC_TOOL_USE_ID,
                "name": name,
                "input": arguments,
            }
        ]
        stop_reason = "tool_use"
    return {
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": model + RESPONSE_MODEL_SUFFIX,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
    }


def anthropic_events(
    model: str, tool: tuple[str, dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Return the events of a streamed message.

    As the Anthropic API does, message_start reports 1 output token and
    message_delta the final output count, which replaces it.
    """
    start = anthropic_message(model, tool)
    start.update(content=[], stop_reason=None)
    start["usage"] = {"input_tokens": INPUT_TOKENS, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
    ]
    if tool is None:
        events.append(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )
        events += [
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            for piece in text_pieces()
        ]
        stop_reason = "end_turn"
    else:
        name, arguments = tool
        events.append(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": ANTHROPIC_TOOL_USE_ID,
                    "name": name,
                    "input": {},
                },
            }
        )
        events += [
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            for piece in split_in_two(json.dumps(arguments))
        ]
        stop_reason = "tool_use"
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": OUTPUT_TOKENS},
        },
        {"type": "message_stop"},
    ]
    return events


def main() -> None:
    """Parse the arguments, print the port and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "port", type=int, nargs="?", default=0, help="TCP port; 0 picks a free one"
    )
    parser.add_argument(
        "--openai-key", required=True, help="expected OpenAI API key"
    )
    parser.add_argument(
        "--anthropic-key", required=True, help="expected Anthropic API key"
    )
    arguments = parser.parse_args()
    state = StubState(arguments.openai_key, arguments.anthropic_key)
    server = StubServer(arguments.port, state)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
