"""A plain HTTP API on 127.0.0.1 for the tests of Warden's `/http/{route}`.

It records every request it receives, except its own control requests,
and returns JSON. The path selects the behaviour, wherever the
selecting segment sits, so any route base path (`/v1`, `/txn`) reaches it:

- `GET /_requests`: the recorded requests, oldest first, as
  `{"requests": [{"method", "path", "headers", "body"}]}`. `path` is the
  request target exactly as received (path and query), `headers` a list of
  `[name, value]` pairs in the order received.
- `POST /_configure` with a JSON object: sets `jwks_url` (Warden's
  `/.well-known/jwks.json`) and optionally `audience` (default: this
  server's origin) for the Txn-Token check below.
- `.../redirect?to=URL&code=302`: a redirect to URL (default code 302).
  With `&leak=1` the received `Authorization` value is appended to the
  Location as the query parameter `credential`.
- `.../echo-secrets`: the credential headers received (`Authorization`,
  `X-Api-Key`, `Txn-Token`, `Cookie`, `Proxy-Authorization`) in the body.
  With `?in=headers` the `Authorization` value is also sent back in the
  `X-Request-Id`, `ETag` and `Link` response headers; with `?in=encoded`
  each received value is also sent percent-encoded.
- `.../leak/KIND`: a body that contains one secret of KIND: `pem`, `aws`,
  `github`, `slack` or `jwt`.
- `.../status/CODE`: a JSON response with that status, plus `ETag` and
  `Set-Cookie` headers.
- a path whose first segment is `txn`: the `Txn-Token` header must be a JWT
  that verifies against the configured JWKS (ES256, JWS header `typ`
  `txntoken+jwt`, `aud` equal to the configured audience, `exp` in the
  future); the response is 401 when it does not, and otherwise 200 with the
  token's claims and header.
- anything else: `{"method", "path", "body"}` of the request.

Usage: python http_upstream.py PORT
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

TXN_TOKEN_TYPE = "txntoken+jwt"
CREDENTIAL_HEADERS = [
    "authorization",
    "x-api-key",
    "txn-token",
    "cookie",
    "proxy-authorization",
]

# Fixed secrets of well-known shapes, returned by `.../leak/KIND`. They are
# made up and match the shapes only.
LEAKS = {
    "pem": (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        "MIIEowIBAAKCAQEAvS0yDwWvmTMxbqOv1ZuhJ4sIxzMlMQZ3Ci8cY9Z0jHpDpXbH\n"
        "3ezJOsP8e+lVsWlq2HrKsE1q5DCF7kxS+0eR9f1nAWBq8n0zEx1bHj7pDgRvUyAa\n"
        "-----END RSA PRIVATE KEY-----\n"
    ),
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
    "slack": "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    "jwt": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    ),
}


class Upstream(ThreadingHTTPServer):
    """The server with its record of requests and its Txn-Token settings."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.jwks_url: str | None = None
        self.audience = f"http://127.0.0.1:{port}"
        self.jwks_client: jwt.PyJWKClient | None = None


class Handler(BaseHTTPRequestHandler):
    """Handle one request as the module docstring describes."""

    server: Upstream
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.handle_any()

    def do_HEAD(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def do_PATCH(self) -> None:
        self.handle_any()

    def do_DELETE(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        body = self.read_body()
        target = urllib.parse.urlsplit(self.path)
        if target.path == "/_requests":
            with self.server.lock:
                recorded = list(self.server.requests)
            self.respond(200, {"requests": recorded})
            return
        if target.path == "/_configure":
            self.configure(body)
            return
        with self.server.lock:
            self.server.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[name, value] for name, value in self.headers.items()],
                    "body": body.decode("utf-8", errors="replace"),
                }
            )
        query = dict(urllib.parse.parse_qsl(target.query))
        segments = target.path.split("/")
        if len(segments) > 1 and segments[1] == "txn":
            self.verify_txn_token()
        elif "redirect" in segments:
            self.redirect(query)
        elif "echo-secrets" in segments:
            self.echo_secrets(query.get("in", ""))
        elif "leak" in segments:
            kind = segments[segments.index("leak") + 1 :][:1]
            self.leak(kind[0] if kind else "")
        elif "status" in segments:
            following = segments[segments.index("status") + 1 :][:1]
            code = following[0] if following else ""
            self.respond(
                int(code) if code.isdigit() else 400,
                {"status": code},
                {"ETag": '"v1"', "Set-Cookie": "session=upstream-cookie"},
            )
        else:
            self.respond(
                200,
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body.decode("utf-8", errors="replace"),
                },
            )

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def configure(self, body: bytes) -> None:
        settings = json.loads(body or b"{}")
        with self.server.lock:
            if "jwks_url" in settings:
                self.server.jwks_url = settings["jwks_url"]
                self.server.jwks_client = jwt.PyJWKClient(
                    settings["jwks_url"], cache_keys=False, cache_jwk_set=False
                )
            if "audience" in settings:
                self.server.audience = settings["audience"]
        self.respond(200, {"jwks_url": self.server.jwks_url, "audience": self.server.audience})

    def verify_txn_token(self) -> None:
        token = self.headers.get("Txn-Token")
        client = self.server.jwks_client
        if token is None:
            self.respond(401, {"error": "missing Txn-Token header"})
            return
        if client is None:
            self.respond(500, {"error": "no JWKS URL configured; POST /_configure first"})
            return
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != TXN_TOKEN_TYPE:
                raise jwt.InvalidTokenError(
                    f"JWS header typ is {header.get('typ')!r}, expected {TXN_TOKEN_TYPE!r}"
                )
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self.server.audience,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as error:
            self.respond(401, {"error": f"Txn-Token rejected: {error}"})
            return
        self.respond(200, {"verified": True, "header": header, "claims": claims})

    def redirect(self, query: dict[str, str]) -> None:
        location = query.get("to", "/")
        if query.get("leak") == "1":
            separator = "&" if "?" in location else "?"
            credential = urllib.parse.quote(self.headers.get("Authorization", ""), safe="")
            location = f"{location}{separator}credential={credential}"
        code = int(query.get("code", "302"))
        self.respond(code, {"redirect": location}, {"Location": location})

    def echo_secrets(self, placement: str) -> None:
        received = {name: self.headers.get(name) for name in CREDENTIAL_HEADERS}
        extra_headers: dict[str, str] = {}
        authorization = received["authorization"] or ""
        if placement == "headers":
            extra_headers = {
                "X-Request-Id": authorization,
                "ETag": f'"{authorization}"',
                "Link": f"<http://127.0.0.1/?auth={authorization}>; rel=next",
            }
        body: dict[str, Any] = {"received": received}
        if placement == "encoded":
            body["encoded"] = {
                name: urllib.parse.quote(value, safe="")
                for name, value in received.items()
                if value is not None
            }
        self.respond(200, body, extra_headers)

    def leak(self, kind: str) -> None:
        if kind not in LEAKS:
            self.respond(404, {"error": f"unknown leak kind {kind!r}; use one of {sorted(LEAKS)}"})
            return
        self.respond(200, {"kind": kind, "secret": LEAKS[kind]})

    def respond(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Keep per-request access logs out of the test output.
        return


if __name__ == "__main__":
    Upstream(int(sys.argv[1])).serve_forever()
