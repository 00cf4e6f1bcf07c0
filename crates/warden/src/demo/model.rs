//! The demo's scripted model: an OpenAI-compatible chat completions
//! endpoint on loopback that plays the reasoning half of a ReAct agent.
//!
//! Each answer is the next step of a fixed script: a thought as the
//! message text and one tool call. The step is chosen by the number of
//! tool results already in the conversation, so the agent's loop drives
//! it. After the last step it answers without a tool call. It accepts only
//! requests that carry its API key, which only Warden holds.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Name of the scripted model.
pub const MODEL: &str = "demo-react-1";

/// Largest request head or body the scripted model reads.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// One scripted step: the thought and the tool call it leads to.
pub struct Step {
    /// The thought the model states before its tool call.
    pub thought: &'static str,
    /// Qualified tool name.
    pub tool: &'static str,
    /// Tool arguments.
    pub arguments: Value,
}

/// Starts the model on a free loopback port and returns its address.
pub async fn start(key: String, steps: Vec<Step>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let steps = std::sync::Arc::new(steps);
    let key = std::sync::Arc::new(key);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let steps = std::sync::Arc::clone(&steps);
            let key = std::sync::Arc::clone(&key);
            tokio::spawn(async move {
                // A broken connection only ends that request.
                serve(stream, &key, &steps).await.ok();
            });
        }
    });
    Ok(addr)
}

/// Serves one request and closes the connection.
async fn serve(stream: TcpStream, key: &str, steps: &[Step]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut authorized = false;
    let mut head_bytes = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        head_bytes += line.len();
        if head_bytes > MAX_REQUEST_BYTES {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorized = value == format!("Bearer {key}");
            }
        }
    }
    let mut body = vec![0; length.min(MAX_REQUEST_BYTES)];
    reader.read_exact(&mut body).await?;
    let (status, answer) = if authorized {
        let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        ("200 OK", answer(&request, steps))
    } else {
        (
            "401 Unauthorized",
            json!({ "error": { "message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key", "param": null } }),
        )
    };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Builds the next response of the script for this conversation.
fn answer(request: &Value, steps: &[Step]) -> Value {
    let messages = request["messages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let done = messages.iter().filter(|m| m["role"] == "tool").count();
    let prompt_tokens = messages
        .iter()
        .map(|m| m.to_string().len() / 4)
        .sum::<usize>();
    let (message, finish, completion_tokens) = match steps.get(done) {
        Some(step) => (
            json!({
                "role": "assistant",
                "content": step.thought,
                "tool_calls": [{
                    "id": format!("call_{}", done + 1),
                    "type": "function",
                    "function": { "name": step.tool, "arguments": step.arguments.to_string() },
                }],
            }),
            "tool_calls",
            (step.thought.len() + step.arguments.to_string().len()) / 4,
        ),
        None => (
            json!({
                "role": "assistant",
                "content": "The summary is written and sent; the refund is issued. I am done.",
            }),
            "stop",
            16,
        ),
    };
    json!({
        "id": format!("chatcmpl-demo-{}", done + 1),
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}
