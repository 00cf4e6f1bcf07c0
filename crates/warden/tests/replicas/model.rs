//! A stand-in for an OpenAI-compatible model API on a loopback port: every
//! `POST` gets the same chat completion, which reports
//! [`INPUT_TOKENS`] input and [`OUTPUT_TOKENS`] output tokens.

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Input tokens that every response reports.
pub const INPUT_TOKENS: i64 = 11;
/// Output tokens that every response reports.
pub const OUTPUT_TOKENS: i64 = 7;

/// Largest request accepted, in bytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Starts the stub on a free port of the current runtime and returns its
/// base URL; it serves until the runtime ends.
pub async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the model stub");
    let port = listener.local_addr().expect("stub address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// Reads one request (headers, then `Content-Length` bytes of body) and
/// writes the fixed completion, closing the connection.
async fn answer(mut stream: tokio::net::TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0_u8; 8192];
    let body_start = loop {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 || request.len() > MAX_REQUEST_BYTES {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let headers = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length: usize = headers
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < body_start + length.min(MAX_REQUEST_BYTES) {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
    let body = json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": "stub-model",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": "Hello from the stub." },
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
        }
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.ok();
    stream.shutdown().await.ok();
}
