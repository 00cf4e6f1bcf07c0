#!/usr/bin/env python3
"""Measure the latency Warden adds to model calls and HTTP API requests.

Starts a minimal provider on 127.0.0.1 (one fixed OpenAI-style chat
completion for every request, written in one send with TCP_NODELAY, so the
backend adds as little as possible) and a release `warden serve` with one
`[llm.stub]` provider and one `[http.stub]` route in front of it, then sends the same requests alternately to the stub
directly and through Warden over kept-alive connections, one at a time,
and prints p50 and p99 for both and the difference.

Usage: .venv/bin/python scripts/bench-proxies.py [REQUESTS]
(default 2000 per target and kind). Only 127.0.0.1 is used. Build first
with `cargo build --release -p warden`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
WARDEN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "warden"
KEY = "sk-bench-0123456789abcdef"

BACKEND = r"""
import asyncio, json, socket, sys
BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

async def serve(reader, writer):
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer within 30 s")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if not WARDEN.exists():
        sys.exit(f"{WARDEN} not found; run `cargo build --release -p warden` first")
    work = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stub = subprocess.Popen(
            [sys.executable, "-c", BACKEND],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        processes.append(stub)
        assert stub.stdout is not None
        stub_port = int(stub.stdout.readline())
        stub_url = f"http://127.0.0.1:{stub_port}"

        port = free_port()
        (work / "policies").mkdir()
        (work / "policies" / "all.cedar").write_text(
            "permit (principal, action, resource);\n"
        )
        (work / "warden.toml").write_text(
            f'data_dir = "{work / "state"}"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[policy]\ndir = "{work / "policies"}"\n'
            f'[llm.stub]\nkind = "openai"\nbase_url = "{stub_url}"\napi_key_env = "BENCH_KEY"\n'
            f'[http.stub]\nurl = "{stub_url}"\nallow_private = true\n'
            f'[http.stub.credential]\nkind = "bearer"\nsecret_env = "BENCH_KEY"\n'
        )
        warden = subprocess.Popen(
            [str(WARDEN), "serve", "--config", str(work / "warden.toml")],
            env={**os.environ, "BENCH_KEY": KEY, "WARDEN_LOG": "warn"},
            stderr=subprocess.DEVNULL,
        )
        processes.append(warden)
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/healthz")
        svid = subprocess.run(
            [str(WARDEN), "identity", "issue", "spiffe://warden.local/agent/bench",
             "--config", str(work / "warden.toml")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        task = httpx.post(
            f"{base}/v1/tasks",
            headers={"Authorization": f"Bearer {svid}"},
            json={"intent": "benchmark", "user": "bench", "ttl_seconds": 900},
        ).json()
        token = task["token"]

        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        kinds = {
            "model call": (
                ("POST", f"{stub_url}/v1/chat/completions", {"Authorization": f"Bearer {KEY}"}, chat),
                ("POST", f"{base}/llm/stub/v1/chat/completions", {"Authorization": f"Bearer {token}"}, chat),
            ),
            "HTTP route": (
                ("POST", f"{stub_url}/v1/chat/completions", {"Authorization": f"Bearer {KEY}"}, chat),
                ("POST", f"{base}/http/stub/v1/chat/completions", {"Authorization": f"Bearer {token}"}, chat),
            ),
        }
        with httpx.Client(timeout=10.0) as direct_client, httpx.Client(timeout=10.0) as warden_client:
            for kind, (direct, through) in kinds.items():
                samples: dict[str, list[float]] = {"direct": [], "warden": []}
                for index in range(requests + 100):
                    for label, (method, url, headers, body), client in (
                        ("direct", direct, direct_client),
                        ("warden", through, warden_client),
                    ):
                        started = time.perf_counter()
                        response = client.request(method, url, headers=headers, json=body)
                        elapsed = time.perf_counter() - started
                        if response.status_code >= 500:
                            sys.exit(f"{kind} {label}: {response.status_code} {response.text}")
                        if index >= 100:
                            samples[label].append(elapsed * 1e6)
                direct_p50 = percentile(samples["direct"], 0.5)
                warden_p50 = percentile(samples["warden"], 0.5)
                direct_p99 = percentile(samples["direct"], 0.99)
                warden_p99 = percentile(samples["warden"], 0.99)
                print(json.dumps({
                    "kind": kind,
                    "requests": requests,
                    "direct_p50_us": round(direct_p50),
                    "warden_p50_us": round(warden_p50),
                    "added_p50_us": round(warden_p50 - direct_p50),
                    "direct_p99_us": round(direct_p99),
                    "warden_p99_us": round(warden_p99),
                    "added_p99_us": round(warden_p99 - direct_p99),
                }))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
