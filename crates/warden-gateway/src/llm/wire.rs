//! What Warden reads from model API messages: the request fields policy
//! decides on, and the model, usage, finish reasons and tool calls of a
//! response, whole or streamed as server-sent events.

use serde_json::{Value, json};
use warden_config::ProviderKind;

/// The fields of a model request that policy sees.
#[derive(Debug, PartialEq)]
pub struct ModelRequest {
    /// The requested model.
    pub model: String,
    /// True for a streaming call.
    pub stream: bool,
    /// Output token limit; 0 when the request sets none.
    pub max_tokens: i64,
    /// Names of the tools offered to the model.
    pub tools: Vec<String>,
}

/// Reads the policy-relevant fields of a request body.
pub fn inspect_request(kind: ProviderKind, body: &Value) -> Result<ModelRequest, String> {
    let object = body
        .as_object()
        .ok_or("the request body must be a JSON object")?;
    let model = match object.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
        _ => return Err("the request has no \"model\"; name the model to call".into()),
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err("\"stream\" must be true or false".into()),
    };
    let limit_keys: &[&str] = match kind {
        ProviderKind::Openai => &["max_completion_tokens", "max_tokens"],
        ProviderKind::Anthropic => &["max_tokens"],
    };
    let mut max_tokens = 0;
    for key in limit_keys {
        match object.get(*key) {
            None | Some(Value::Null) => {}
            Some(value) => {
                max_tokens = value
                    .as_i64()
                    .filter(|limit| *limit >= 0)
                    .ok_or_else(|| format!("\"{key}\" must be a non-negative integer"))?;
                break;
            }
        }
    }
    let mut tools = Vec::new();
    if let Some(list) = object.get("tools").and_then(Value::as_array) {
        for tool in list {
            let name = match kind {
                ProviderKind::Openai => tool.pointer("/function/name").or_else(|| tool.get("name")),
                ProviderKind::Anthropic => tool.get("name"),
            };
            if let Some(name) = name.and_then(Value::as_str) {
                tools.push(name.to_owned());
            }
        }
    }
    if let Some(list) = object.get("functions").and_then(Value::as_array) {
        tools.extend(
            list.iter()
                .filter_map(|function| function.get("name").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    Ok(ModelRequest {
        model,
        stream,
        max_tokens,
        tools,
    })
}

/// A tool call that a model response asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// The provider's id of the call, e.g. `call_abc` or `toolu_abc`.
    pub id: String,
    /// The tool name as the model saw it.
    pub name: String,
    /// The arguments: a JSON text for OpenAI, an object for Anthropic.
    pub arguments: Value,
}

impl ToolCall {
    /// Returns the parsed arguments, or `None` when the model produced
    /// text that is not JSON.
    pub fn parsed_arguments(&self) -> Option<Value> {
        match &self.arguments {
            Value::String(text) if text.trim().is_empty() => Some(json!({})),
            Value::String(text) => serde_json::from_str(text).ok(),
            other => Some(other.clone()),
        }
    }
}

/// The model, usage, finish reasons and tool calls of a response.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// The model that produced the response.
    pub model: Option<String>,
    /// The provider's response id.
    pub response_id: Option<String>,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
    /// Finish or stop reasons, one per choice.
    pub finish_reasons: Vec<String>,
    /// Tool calls the model asked for.
    pub tool_calls: Vec<ToolCall>,
}

/// Reads a whole (non-streamed) response body.
pub fn summarize(kind: ProviderKind, body: &Value) -> Summary {
    let mut summary = Summary {
        model: text(body.get("model")),
        response_id: text(body.get("id")),
        ..Summary::default()
    };
    match kind {
        ProviderKind::Openai => {
            let usage = body.get("usage");
            summary.input_tokens = count(usage, "prompt_tokens");
            summary.output_tokens = count(usage, "completion_tokens");
            for choice in array(body.get("choices")) {
                if let Some(reason) = text(choice.get("finish_reason")) {
                    summary.finish_reasons.push(reason);
                }
                for call in array(choice.pointer("/message/tool_calls")) {
                    summary.tool_calls.push(ToolCall {
                        id: text(call.get("id")).unwrap_or_default(),
                        name: text(call.pointer("/function/name")).unwrap_or_default(),
                        arguments: call
                            .pointer("/function/arguments")
                            .cloned()
                            .unwrap_or(Value::Null),
                    });
                }
            }
        }
        ProviderKind::Anthropic => {
            let usage = body.get("usage");
            summary.input_tokens = count(usage, "input_tokens");
            summary.output_tokens = count(usage, "output_tokens");
            if let Some(reason) = text(body.get("stop_reason")) {
                summary.finish_reasons.push(reason);
            }
            for block in array(body.get("content")) {
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    summary.tool_calls.push(ToolCall {
                        id: text(block.get("id")).unwrap_or_default(),
                        name: text(block.get("name")).unwrap_or_default(),
                        arguments: block.get("input").cloned().unwrap_or(Value::Null),
                    });
                }
            }
        }
    }
    summary
}

/// Reads a streamed response one server-sent-event line at a time.
pub struct StreamReader {
    kind: ProviderKind,
    summary: Summary,
    /// Tool calls being assembled: (choice or block index, tool index),
    /// id, name and argument text so far.
    partial: Vec<((i64, i64), String, String, String)>,
}

impl StreamReader {
    /// Starts reading a stream of `kind`.
    pub fn new(kind: ProviderKind) -> StreamReader {
        StreamReader {
            kind,
            summary: Summary::default(),
            partial: Vec::new(),
        }
    }

    /// Reads one line, with or without its line ending. Lines other than
    /// `data:` lines with a JSON object are skipped.
    pub fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
            return;
        };
        match self.kind {
            ProviderKind::Openai => self.openai_chunk(&event),
            ProviderKind::Anthropic => self.anthropic_event(&event),
        }
    }

    /// Ends the stream and returns what it said.
    pub fn finish(mut self) -> Summary {
        for (_, id, name, arguments) in self.partial.drain(..) {
            let arguments = match self.kind {
                ProviderKind::Openai => Value::String(arguments),
                ProviderKind::Anthropic if arguments.trim().is_empty() => json!({}),
                ProviderKind::Anthropic => {
                    serde_json::from_str(&arguments).unwrap_or(Value::String(arguments))
                }
            };
            self.summary.tool_calls.push(ToolCall {
                id,
                name,
                arguments,
            });
        }
        self.summary
    }

    fn openai_chunk(&mut self, chunk: &Value) {
        if self.summary.model.is_none() {
            self.summary.model = text(chunk.get("model"));
            self.summary.response_id = text(chunk.get("id"));
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.summary.input_tokens = count(Some(usage), "prompt_tokens");
            self.summary.output_tokens = count(Some(usage), "completion_tokens");
        }
        for choice in array(chunk.get("choices")) {
            let choice_index = choice.get("index").and_then(Value::as_i64).unwrap_or(0);
            if let Some(reason) = text(choice.get("finish_reason")) {
                self.summary.finish_reasons.push(reason);
            }
            for call in array(choice.pointer("/delta/tool_calls")) {
                let index = call.get("index").and_then(Value::as_i64).unwrap_or(0);
                let entry = self.entry((choice_index, index));
                if let Some(id) = text(call.get("id")) {
                    entry.1 = id;
                }
                if let Some(name) = text(call.pointer("/function/name")) {
                    entry.2.push_str(&name);
                }
                if let Some(fragment) = call.pointer("/function/arguments").and_then(Value::as_str)
                {
                    entry.3.push_str(fragment);
                }
            }
        }
    }

    fn anthropic_event(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message");
                self.summary.model = message.and_then(|m| text(m.get("model")));
                self.summary.response_id = message.and_then(|m| text(m.get("id")));
                let usage = message.and_then(|m| m.get("usage"));
                self.summary.input_tokens = count(usage, "input_tokens");
                self.summary.output_tokens = count(usage, "output_tokens");
            }
            Some("content_block_start") => {
                let block = event.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let index = event.get("index").and_then(Value::as_i64).unwrap_or(0);
                    let id = block.and_then(|b| text(b.get("id"))).unwrap_or_default();
                    let name = block.and_then(|b| text(b.get("name"))).unwrap_or_default();
                    let entry = self.entry((index, 0));
                    entry.1 = id;
                    entry.2 = name;
                }
            }
            Some("content_block_delta") => {
                let index = event.get("index").and_then(Value::as_i64).unwrap_or(0);
                if let Some(fragment) = event.pointer("/delta/partial_json").and_then(Value::as_str)
                    && let Some(entry) = self.partial.iter_mut().find(|e| e.0 == (index, 0))
                {
                    entry.3.push_str(fragment);
                }
            }
            Some("message_delta") => {
                if let Some(reason) = text(event.pointer("/delta/stop_reason")) {
                    self.summary.finish_reasons.push(reason);
                }
                let usage = event.get("usage");
                if usage.and_then(|u| u.get("output_tokens")).is_some() {
                    self.summary.output_tokens = count(usage, "output_tokens");
                }
                if usage
                    .and_then(|u| u.get("input_tokens"))
                    .is_some_and(|n| n.is_i64())
                {
                    self.summary.input_tokens = count(usage, "input_tokens");
                }
            }
            _ => {}
        }
    }

    fn entry(&mut self, key: (i64, i64)) -> &mut ((i64, i64), String, String, String) {
        let position = match self.partial.iter().position(|entry| entry.0 == key) {
            Some(position) => position,
            None => {
                self.partial
                    .push((key, String::new(), String::new(), String::new()));
                self.partial.len() - 1
            }
        };
        &mut self.partial[position]
    }
}

/// Builds an error body in the provider's own shape, so the provider's SDK
/// raises its usual error type with Warden's message.
pub fn error_body(
    kind: Option<ProviderKind>,
    status: u16,
    code: &str,
    message: &str,
    decision: Option<Value>,
) -> Value {
    let mut body = match kind {
        Some(ProviderKind::Anthropic) => json!({
            "type": "error",
            "error": { "type": anthropic_error_type(status), "message": message },
        }),
        _ => json!({
            "error": { "message": message, "type": code, "code": code, "param": null },
        }),
    };
    if let Some(decision) = decision {
        body[crate::mcp::DECISION_META_KEY] = decision;
    }
    body
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn count(usage: Option<&Value>, key: &str) -> i64 {
    usage
        .and_then(|usage| usage.get(key))
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .max(0)
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_request_reads_openai_fields() {
        let body = json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "max_completion_tokens": 64,
            "tools": [{"type": "function", "function": {"name": "files__read_file"}}],
        });
        let request = inspect_request(ProviderKind::Openai, &body).expect("valid request");
        assert_eq!(
            request,
            ModelRequest {
                model: "gpt-4o-mini".into(),
                stream: true,
                max_tokens: 64,
                tools: vec!["files__read_file".into()],
            }
        );
    }

    #[test]
    fn inspect_request_rejects_missing_model_and_bad_types() {
        for body in [
            json!({}),
            json!({"model": ""}),
            json!({"model": "m", "stream": "yes"}),
            json!({"model": "m", "max_tokens": -1}),
            json!([1]),
        ] {
            assert!(
                inspect_request(ProviderKind::Anthropic, &body).is_err(),
                "{body} accepted"
            );
        }
    }

    #[test]
    fn summarize_reads_openai_tool_calls_and_usage() {
        let body = json!({
            "id": "chatcmpl-1",
            "model": "gpt-4o-mini-2024",
            "choices": [{
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "files__read_file", "arguments": "{\"path\":\"/a\"}"}
                }]}
            }],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7},
        });
        let summary = summarize(ProviderKind::Openai, &body);
        assert_eq!(summary.model.as_deref(), Some("gpt-4o-mini-2024"));
        assert_eq!((summary.input_tokens, summary.output_tokens), (11, 7));
        assert_eq!(summary.finish_reasons, ["tool_calls"]);
        assert_eq!(summary.tool_calls[0].id, "call_1");
        assert_eq!(
            summary.tool_calls[0].parsed_arguments(),
            Some(json!({"path": "/a"}))
        );
    }

    #[test]
    fn stream_reader_assembles_openai_tool_call_fragments() {
        let mut reader = StreamReader::new(ProviderKind::Openai);
        for line in [
            r#"data: {"id":"c","model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","function":{"name":"mail__send","arguments":"{\"to\":"}}]}}]}"#,
            r#"data: {"id":"c","model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"bob\"}"}}]}}]}"#,
            r#"data: {"id":"c","model":"gpt","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"data: {"id":"c","model":"gpt","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            "data: [DONE]",
        ] {
            reader.line(line.as_bytes());
        }
        let summary = reader.finish();
        assert_eq!((summary.input_tokens, summary.output_tokens), (3, 4));
        assert_eq!(summary.finish_reasons, ["tool_calls"]);
        assert_eq!(summary.tool_calls.len(), 1);
        assert_eq!(summary.tool_calls[0].name, "mail__send");
        assert_eq!(
            summary.tool_calls[0].parsed_arguments(),
            Some(json!({"to": "bob"}))
        );
    }

    #[test]
    fn stream_reader_reads_anthropic_events() {
        let mut reader = StreamReader::new(ProviderKind::Anthropic);
        for line in [
            "event: message_start",
            r#"data: {"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":12,"output_tokens":1}}}"#,
            r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"files__read_file","input":{}}}"#,
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"path\": \"/x\"}"}}"#,
            r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
        ] {
            reader.line(line.as_bytes());
        }
        let summary = reader.finish();
        assert_eq!(summary.model.as_deref(), Some("claude"));
        assert_eq!((summary.input_tokens, summary.output_tokens), (12, 9));
        assert_eq!(summary.finish_reasons, ["tool_use"]);
        assert_eq!(summary.tool_calls[0].id, "toolu_1");
        assert_eq!(
            summary.tool_calls[0].parsed_arguments(),
            Some(json!({"path": "/x"}))
        );
    }

    #[test]
    fn error_body_follows_provider_shape() {
        let openai = error_body(Some(ProviderKind::Openai), 403, "warden_denied", "no", None);
        assert_eq!(openai["error"]["code"], "warden_denied");
        let anthropic = error_body(
            Some(ProviderKind::Anthropic),
            403,
            "warden_denied",
            "no",
            Some(json!({"decision": "deny"})),
        );
        assert_eq!(anthropic["error"]["type"], "permission_error");
        assert_eq!(anthropic["dev.warden/decision"]["decision"], "deny");
    }
}
