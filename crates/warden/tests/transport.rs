//! Bad input on the MCP transport: batches, duplicate keys, request id
//! collisions, oversized bodies, foreign Host and Origin headers and
//! malformed JSON, each sent to a real `warden serve` over HTTP.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Session, Setup, Warden, result_text};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Returns a write call that the `files` upstream performs if it is forwarded.
fn write_call(id: Value, path: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "files__write_file", "arguments": { "path": path, "content": "y" } }
    })
}

async fn permissive() -> Warden {
    Warden::start(Setup::permissive()).await
}

#[tokio::test]
async fn transport_single_write_reaches_upstream() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;

    let (status, reply) = session
        .exchange(write_call(json!(7), "/workspace/drafts/x").to_string())
        .await;

    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert!(warden.files.workspace_file("/workspace/drafts/x").exists());
}

#[tokio::test]
async fn transport_batch_is_rejected() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;
    let batch = json!([write_call(json!(7), "/workspace/drafts/x")]);

    let (status, reply) = session.exchange(batch.to_string()).await;

    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
    assert!(reply.get("id").is_some(), "reply lacks id: {reply}");
    assert!(!warden.files.workspace_file("/workspace/drafts/x").exists());
}

#[tokio::test]
async fn transport_batch_spellings_are_rejected() {
    let warden = permissive().await;
    let task = warden.task().await;
    let session = warden.session(&task).await;
    let write = write_call(json!(7), "/workspace/drafts/x").to_string();
    let bodies = [
        "[]".to_owned(),
        format!(" \r\n\t[{write}]"),
        format!("[{write},{write}]"),
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#.to_owned(),
        format!("[[{write}]]"),
    ];
    for body in bodies {
        let (status, reply) = session.exchange(body.clone()).await;
        assert_eq!(status, 400, "{body} got {reply}");
        assert_eq!(reply["error"]["code"], json!(-32600), "{body} got {reply}");
        assert_eq!(reply["id"], Value::Null, "{body} got {reply}");
    }

    let files_session = warden.session_at("/mcp/files", &task).await;
    let own_name = json!([{
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "write_file", "arguments": { "path": "/workspace/drafts/x", "content": "y" } }
    }]);
    let (status, reply) = files_session.exchange(own_name.to_string()).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
    assert!(!warden.files.workspace_file("/workspace/drafts/x").exists());
}

#[tokio::test]
async fn transport_duplicate_argument_key_is_rejected() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"files__write_file","arguments":{"path":"/workspace/drafts/a","path":"/workspace/drafts/b","content":"y"}}}"#;

    let (status, reply) = session.exchange(body).await;

    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
    assert!(!warden.files.workspace_file("/workspace/drafts/a").exists());
    assert!(!warden.files.workspace_file("/workspace/drafts/b").exists());
}

#[tokio::test]
async fn transport_duplicate_key_at_any_depth_is_rejected() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;
    let bodies = [
        // Top level.
        r#"{"jsonrpc":"2.0","id":2,"id":3,"method":"tools/call","params":{"name":"files__write_file","arguments":{"path":"/workspace/drafts/a","content":"y"}}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call","params":{"name":"files__write_file","arguments":{"path":"/workspace/drafts/a","content":"y"}}}"#,
        // In params.
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"testkit__echo","name":"files__write_file","arguments":{"path":"/workspace/drafts/a","content":"y","text":"t"}}}"#,
        // The same key spelled with a JSON escape.
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"files__write_file","arguments":{"path":"/workspace/drafts/a","p\u0061th":"/workspace/drafts/b","content":"y"}}}"#,
        // Deep inside _meta.
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"files__write_file","_meta":{"a":{"b":[{"c":1,"c":2}]}},"arguments":{"path":"/workspace/drafts/a","content":"y"}}}"#,
    ];
    for body in bodies {
        let (status, reply) = session.exchange(body).await;
        assert_eq!(status, 400, "{body} got {reply}");
        assert_eq!(reply["error"]["code"], json!(-32600), "{body} got {reply}");
        assert_eq!(reply["id"], Value::Null, "{body} got {reply}");
    }
    assert!(!warden.files.workspace_file("/workspace/drafts/a").exists());
    assert!(!warden.files.workspace_file("/workspace/drafts/b").exists());
}

#[tokio::test]
async fn transport_in_flight_duplicate_id_is_rejected() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;

    let slow = session.call_tool_with_id(json!(1), "testkit__sleep", json!({ "seconds": 1 }));
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        session
            .request(
                json!(1),
                "tools/call",
                json!({ "name": "testkit__echo", "arguments": { "text": "second" } }),
            )
            .await
    };
    let (slow_reply, (duplicate_status, duplicate_reply)) = tokio::join!(slow, duplicate);

    assert_eq!(duplicate_status, 200, "{duplicate_reply}");
    assert_eq!(
        duplicate_reply["error"]["code"],
        json!(-32600),
        "{duplicate_reply}"
    );
    assert!(duplicate_reply.get("result").is_none(), "{duplicate_reply}");
    assert_eq!(result_text(&slow_reply), "slept 1 s", "{slow_reply}");

    let after = session
        .call_tool_with_id(json!(1), "testkit__echo", json!({ "text": "again" }))
        .await;
    assert_eq!(
        result_text(&after),
        "again",
        "the id was not released: {after}"
    );
}

#[tokio::test]
async fn transport_same_id_on_two_sessions_both_succeed() {
    let warden = permissive().await;
    let task = warden.task().await;
    let first = warden.session(&task).await;
    let second = warden.session(&task).await;

    // The first call is still running on the upstream when the second one
    // arrives, so both are in flight there at once under request id 1.
    let slow = first.call_tool_with_id(json!(1), "testkit__sleep", json!({ "seconds": 1 }));
    let fast = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        second
            .call_tool_with_id(
                json!(1),
                "testkit__echo",
                json!({ "text": "second session" }),
            )
            .await
    };
    let (slow_reply, fast_reply) = tokio::join!(slow, fast);

    assert_eq!(result_text(&slow_reply), "slept 1 s", "{slow_reply}");
    assert_eq!(slow_reply["id"], json!(1), "{slow_reply}");
    assert_eq!(result_text(&fast_reply), "second session", "{fast_reply}");
    assert_eq!(fast_reply["id"], json!(1), "{fast_reply}");
}

/// Returns the bytes of a `testkit__echo` call with empty text.
fn echo_overhead() -> usize {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "testkit__echo", "arguments": { "text": "" } }
    })
    .to_string()
    .len()
}

/// Returns a `testkit__echo` call whose serialised body is exactly `size`
/// bytes.
fn echo_body_of_size(size: usize) -> String {
    let text = "a".repeat(size - echo_overhead());
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "testkit__echo", "arguments": { "text": text } }
    })
    .to_string()
}

const BODY_LIMIT: usize = 65536;

async fn small_limit() -> Warden {
    let mut setup = Setup::permissive();
    setup.limits.push(format!("max_body_bytes = {BODY_LIMIT}"));
    Warden::start(setup).await
}

#[tokio::test]
async fn transport_body_at_limit_is_accepted() {
    let warden = small_limit().await;
    let session = warden.session(&warden.task().await).await;

    let (status, reply) = session.exchange(echo_body_of_size(BODY_LIMIT)).await;

    assert_eq!(status, 200, "{}", reply["error"]);
    assert_eq!(result_text(&reply).len(), BODY_LIMIT - echo_overhead());
}

#[tokio::test]
async fn transport_oversized_body_is_rejected_413() {
    let warden = small_limit().await;
    let session = warden.session(&warden.task().await).await;

    let response = session.post_raw(echo_body_of_size(BODY_LIMIT + 1)).await;

    assert_eq!(response.status().as_u16(), 413);
}

/// How a raw request frames its endless body.
#[derive(Clone, Copy)]
enum Framing {
    /// `Content-Length: 4294967296`.
    HugeContentLength,
    /// `Transfer-Encoding: chunked` with chunks that never end.
    Chunked,
}

/// Sends a `POST /mcp` head, then body bytes until the gateway responds or
/// 64 times the limit went out, and returns the response's status line.
/// Raw TCP is used because an HTTP client reports a write error instead of
/// the response when the server closes the connection while it sends.
async fn endless_body_status(warden: &Warden, session: &Session, framing: Framing) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", warden.port))
        .await
        .expect("connect to the gateway");
    let length = match framing {
        Framing::HugeContentLength => "Content-Length: 4294967296",
        Framing::Chunked => "Transfer-Encoding: chunked",
    };
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
         Mcp-Session-Id: {}\r\nMcp-Protocol-Version: 2025-11-25\r\n\
         Content-Type: application/json\r\n{length}\r\n\r\n",
        warden.port, session.token, session.id
    );

    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request head");

    let (mut reader, mut writer) = stream.into_split();
    let writer = tokio::spawn(async move {
        let data = vec![b' '; 8192];
        let chunk = match framing {
            Framing::HugeContentLength => data,
            Framing::Chunked => [
                format!("{:x}\r\n", data.len()).into_bytes(),
                data,
                b"\r\n".to_vec(),
            ]
            .concat(),
        };
        for _ in 0..(64 * BODY_LIMIT / 8192) {
            // A write error means the gateway closed the connection.
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });

    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !received.windows(2).any(|w| w == b"\r\n") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "the gateway sent no response within 10 s");

    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn transport_huge_content_length_is_rejected_413() {
    let warden = small_limit().await;
    let session = warden.session(&warden.task().await).await;

    let status_line = endless_body_status(&warden, &session, Framing::HugeContentLength).await;

    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "status line {status_line:?}"
    );
}

#[tokio::test]
async fn transport_endless_chunked_body_is_rejected_413() {
    let warden = small_limit().await;
    let session = warden.session(&warden.task().await).await;

    let status_line = endless_body_status(&warden, &session, Framing::Chunked).await;

    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "status line {status_line:?}"
    );
}

#[tokio::test]
async fn transport_oversized_chunked_body_is_rejected_413() {
    let warden = small_limit().await;
    let session = warden.session(&warden.task().await).await;
    // Small enough for the socket buffers, so the client finishes sending
    // before it reads the response.
    let body = echo_body_of_size(BODY_LIMIT + 4096).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(4096).map(|chunk| Ok(chunk.to_vec())).collect();

    let response = session
        .post()
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("POST a chunked body");

    assert_eq!(response.status().as_u16(), 413);
}

#[tokio::test]
async fn transport_foreign_host_is_rejected_403() {
    let warden = permissive().await;
    let task = warden.task().await;
    let session = warden.session(&task).await;

    let response = session
        .post()
        .header("host", "attacker.test:8080")
        .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(response.status().as_u16(), 403);
}

#[tokio::test]
async fn transport_foreign_host_spellings_are_rejected_403() {
    let warden = permissive().await;
    let task = warden.task().await;
    let session = warden.session(&task).await;
    let hosts = [
        "attacker.test".to_owned(),
        "127.0.0.1".to_owned(),
        "127.0.0.1:1".to_owned(),
        format!("127.0.0.1:{}.attacker.test", warden.port),
        format!("attacker.test:{}", warden.port),
        "0.0.0.0:8080".to_owned(),
    ];
    for host in hosts {
        let response = session
            .post()
            .header("host", &host)
            .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
            .send()
            .await
            .expect("POST /mcp");
        assert_eq!(response.status().as_u16(), 403, "Host {host}");
    }

    let svid = warden.issue_svid();
    let response = warden
        .http
        .post(format!("{}/v1/tasks", warden.base))
        .header("host", "attacker.test:8080")
        .bearer_auth(svid)
        .json(&json!({ "intent": "x", "user": "alice@acme.test" }))
        .send()
        .await
        .expect("POST /v1/tasks");
    assert_eq!(response.status().as_u16(), 403, "POST /v1/tasks");
}

#[tokio::test]
async fn transport_localhost_host_is_accepted() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;

    let response = session
        .post()
        .header("host", format!("localhost:{}", warden.port))
        .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn transport_foreign_origin_is_rejected_403() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;
    let origins = [
        "http://attacker.test:8080".to_owned(),
        "null".to_owned(),
        format!("http://127.0.0.1:{}.attacker.test", warden.port),
    ];
    for origin in origins {
        let response = session
            .post()
            .header("origin", &origin)
            .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
            .send()
            .await
            .expect("POST /mcp");
        assert_eq!(response.status().as_u16(), 403, "Origin {origin}");
    }
}

#[tokio::test]
async fn transport_allowed_origin_is_accepted() {
    let mut setup = Setup::permissive();
    setup
        .server
        .push("allowed_origins = [\"http://localhost:3000\"]".to_owned());
    let warden = Warden::start(setup).await;
    let session = warden.session(&warden.task().await).await;

    let allowed = session
        .post()
        .header("origin", "http://localhost:3000")
        .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("POST /mcp");
    let other_port = session
        .post()
        .header("origin", "http://localhost:3001")
        .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
        .send()
        .await
        .expect("POST /mcp");

    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(other_port.status().as_u16(), 403);
}

#[tokio::test]
async fn transport_malformed_json_keeps_session() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;

    let (status, reply) = session.exchange("not json").await;

    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32700), "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
    let after = session
        .call_tool("testkit__echo", json!({ "text": "still here" }))
        .await;
    assert_eq!(result_text(&after), "still here", "{after}");
}

#[tokio::test]
async fn transport_malformed_json_spellings_return_parse_error() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;
    let bodies: [&[u8]; 5] = [
        b"",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list""#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"} {"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/\xff\"}",
        br#"{'jsonrpc':'2.0','id':1,'method':'tools/list'}"#,
    ];
    for body in bodies {
        let body_text = String::from_utf8_lossy(body).into_owned();
        let (status, reply) = session.exchange(body.to_vec()).await;
        assert_eq!(status, 400, "{body_text} got {reply}");
        assert_eq!(
            reply["error"]["code"],
            json!(-32700),
            "{body_text} got {reply}"
        );
        assert_eq!(reply["id"], Value::Null, "{body_text} got {reply}");
    }
    let after = session
        .call_tool("testkit__echo", json!({ "text": "still here" }))
        .await;
    assert_eq!(result_text(&after), "still here", "{after}");
}

#[tokio::test]
async fn transport_oversized_task_body_is_rejected_413() {
    let warden = small_limit().await;
    let svid = warden.issue_svid();
    // A valid task request padded with white space past the limit.
    let body = format!(
        "{}{}",
        json!({ "intent": "integration test", "user": "alice@acme.test" }),
        " ".repeat(4 * BODY_LIMIT)
    );

    let response = warden
        .http
        .post(format!("{}/v1/tasks", warden.base))
        .bearer_auth(svid)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /v1/tasks");

    assert_eq!(response.status().as_u16(), 413);
}

#[tokio::test]
async fn transport_session_of_other_task_is_not_found() {
    let warden = permissive().await;
    let owner = warden.session(&warden.task().await).await;
    let intruder = warden.task().await;

    let (status, reply) = owner
        .with_token(intruder.token)
        .request(
            json!(1),
            "tools/call",
            json!({ "name": "testkit__echo", "arguments": { "text": "x" } }),
        )
        .await;

    assert_eq!(status, 404, "{reply}");
    assert!(reply.get("result").is_none(), "{reply}");
}

#[tokio::test]
async fn transport_closed_session_is_not_found() {
    let warden = permissive().await;
    let session = warden.session(&warden.task().await).await;

    let closed = warden
        .http
        .delete(&session.url)
        .bearer_auth(&session.token)
        .header("mcp-session-id", &session.id)
        .send()
        .await
        .expect("DELETE /mcp");
    let (status, reply) = session.request(json!(1), "tools/list", json!({})).await;

    assert_eq!(closed.status().as_u16(), 200);
    assert_eq!(status, 404, "{reply}");
}

#[tokio::test]
async fn transport_declared_oversize_rejected_before_body() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", warden.port))
        .await
        .expect("connect to the gateway");
    // The head declares 4 GiB and no body byte follows: the answer must not
    // wait for the body.
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n",
        warden.port, task.token
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request head");
    let mut response = vec![0u8; 512];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut response),
    )
    .await
    .expect("an answer within 5 s")
    .expect("read the answer");
    let status_line = String::from_utf8_lossy(&response[..read]);

    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
}

#[tokio::test]
async fn transport_repeated_routing_header_rejected() {
    let warden = Warden::start(Setup::permissive()).await;
    let task = warden.task().await;
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "files__write_file",
            "arguments": { "path": "/workspace/drafts/m2", "content": "x" },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/mcp", warden.port))
        .bearer_auth(&task.token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "files__write_file")
        .header("mcp-name", "files__read_file")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let reply: serde_json::Value = response.json().await.expect("json");

    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32020), "{reply}");
    assert!(
        !warden.files.workspace_file("/workspace/drafts/m2").exists(),
        "the call ran"
    );
}

#[tokio::test]
async fn transport_slow_headers_close_connection() {
    let warden = Warden::start(Setup::permissive()).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", warden.port))
        .await
        .expect("connect to the gateway");
    // Half a request head, then silence.
    stream
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("send part of the head");
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
        .await
        .expect("the gateway closes a silent connection within 15 s");

    // A closed connection reads as end of file or a reset, never as data
    // that answers the half-sent request with success.
    let text = match read {
        Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
        Err(_) => String::new(),
    };
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn transport_silent_connection_closed() {
    let warden = Warden::start(Setup::permissive()).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", warden.port))
        .await
        .expect("connect to the gateway");
    // Not a single byte is sent.
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
        .await
        .expect("the gateway closes a silent connection within 15 s");

    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn transport_repeated_session_headers_rejected() {
    let warden = Warden::start(Setup::permissive()).await;
    let session = warden.session(&warden.task().await).await;
    let response = session
        .post()
        .header("mcp-protocol-version", "1999-01-01")
        .body(json!({ "jsonrpc": "2.0", "id": 5, "method": "ping" }).to_string())
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let reply: Value = response.json().await.expect("json");

    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
}
