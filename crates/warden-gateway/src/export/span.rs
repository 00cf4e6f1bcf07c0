//! Mapping of audit records to OTLP spans in the OTLP/JSON encoding.
//!
//! OTLP/JSON is the proto3 JSON mapping with two deviations set by the OTLP
//! specification ("JSON Protobuf Encoding"). Trace and span ids are hex
//! strings, not base64, and enum fields are integers. As in proto3 JSON,
//! 64-bit integers are decimal strings.

use serde_json::{Map, Value, json};
use warden_store::AuditRecord;

/// `SPAN_KIND_INTERNAL` of `opentelemetry.proto.trace.v1.Span.SpanKind`.
const SPAN_KIND_INTERNAL: u8 = 1;
/// `SPAN_KIND_CLIENT`: the step called another service (a tool or a model).
const SPAN_KIND_CLIENT: u8 = 3;
/// `STATUS_CODE_ERROR` of `opentelemetry.proto.trace.v1.Status.StatusCode`.
const STATUS_CODE_ERROR: u8 = 2;

/// Detail key of the GenAI operation, e.g. `chat`.
const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
/// Detail key of the requested model.
const GEN_AI_MODEL: &str = "gen_ai.request.model";

/// The resource and scope shared by every exported span.
pub(crate) struct SpanSource {
    resource: Value,
    scope: Value,
}

impl SpanSource {
    /// Builds the resource with `service.name` and `service.version`, and
    /// the instrumentation scope `warden`.
    pub(crate) fn new(service_name: &str) -> SpanSource {
        let version = env!("CARGO_PKG_VERSION");
        SpanSource {
            resource: json!({
                "attributes": [
                    attribute("service.name", string_value(service_name)),
                    attribute("service.version", string_value(version)),
                ]
            }),
            scope: json!({ "name": "warden", "version": version }),
        }
    }

    /// Builds one `ExportTraceServiceRequest` from encoded spans.
    pub(crate) fn request(&self, spans: Vec<Value>) -> Value {
        json!({
            "resourceSpans": [{
                "resource": self.resource,
                "scopeSpans": [{
                    "scope": self.scope,
                    "spans": spans,
                }],
            }]
        })
    }
}

/// Encodes one audit record as an OTLP/JSON `Span`.
///
/// Returns `None` when the record's trace id is not 32 hex digits or its
/// span id is not 16, because a receiver rejects a whole request that
/// contains such an id. An invalid parent span id is left out, which makes
/// the span a root.
pub(crate) fn encode(record: &AuditRecord) -> Option<Value> {
    let fields = &record.record;
    if !is_hex_id(&fields.trace_id, 32) || !is_hex_id(&fields.span_id, 16) {
        return None;
    }
    let end_ns = unix_nanos(fields.time_us);
    let start_ns = match duration_nanos(&fields.detail) {
        Some(duration) => end_ns.saturating_sub(duration),
        None => end_ns,
    };
    let kind = if fields.kind.ends_with(".result") {
        SPAN_KIND_CLIENT
    } else {
        SPAN_KIND_INTERNAL
    };

    let mut span = Map::new();
    span.insert(
        "traceId".into(),
        fields.trace_id.to_ascii_lowercase().into(),
    );
    span.insert("spanId".into(), fields.span_id.to_ascii_lowercase().into());
    if let Some(parent) = fields.parent_span_id.as_deref()
        && is_hex_id(parent, 16)
    {
        span.insert("parentSpanId".into(), parent.to_ascii_lowercase().into());
    }
    span.insert("name".into(), span_name(record).into());
    span.insert("kind".into(), kind.into());
    span.insert("startTimeUnixNano".into(), start_ns.to_string().into());
    span.insert("endTimeUnixNano".into(), end_ns.to_string().into());
    span.insert("attributes".into(), Value::Array(attributes(record)));
    if let Some(status) = error_status(record) {
        span.insert("status".into(), status);
    }
    Some(Value::Object(span))
}

/// Returns the span name: `"{operation} {model}"` for a model call, as the
/// OpenTelemetry GenAI semantic conventions name it, otherwise the record
/// kind followed by the target when there is one.
fn span_name(record: &AuditRecord) -> String {
    let fields = &record.record;
    let operation = fields.detail.get(GEN_AI_OPERATION).and_then(Value::as_str);
    let model = fields.detail.get(GEN_AI_MODEL).and_then(Value::as_str);
    if let (Some(operation), Some(model)) = (operation, model) {
        return format!("{operation} {model}");
    }
    match &fields.target {
        Some(target) => format!("{} {target}", fields.kind),
        None => fields.kind.clone(),
    }
}

/// Builds the span attributes: the record's fields under `warden.*` and
/// `enduser.id`, every `gen_ai.*` detail key with its own type, and the
/// remaining detail as one JSON string `warden.detail`.
fn attributes(record: &AuditRecord) -> Vec<Value> {
    let fields = &record.record;
    let mut attributes = vec![
        attribute("warden.kind", string_value(&fields.kind)),
        attribute("warden.task_id", string_value(&fields.task_id)),
        attribute("warden.agent", string_value(&fields.agent)),
        attribute("enduser.id", string_value(&fields.user)),
    ];
    if let Some(target) = &fields.target {
        attributes.push(attribute("warden.target", string_value(target)));
    }
    if let Some(decision) = fields.decision {
        attributes.push(attribute(
            "warden.decision",
            string_value(decision.as_str()),
        ));
    }
    let policy_ids = fields
        .policy_ids
        .iter()
        .map(|id| string_value(id))
        .collect::<Vec<_>>();
    attributes.push(attribute(
        "warden.policy_ids",
        json!({ "arrayValue": { "values": policy_ids } }),
    ));
    if let Some(reason) = &fields.reason {
        attributes.push(attribute("warden.reason", string_value(reason)));
    }
    attributes.push(attribute("warden.audit.seq", int_value(record.seq)));
    attributes.push(attribute("warden.audit.hash", string_value(&record.hash)));

    match &fields.detail {
        Value::Object(detail) => {
            let mut rest = Map::new();
            for (key, value) in detail {
                if key.starts_with("gen_ai.") {
                    if let Some(value) = any_value(value) {
                        attributes.push(attribute(key, value));
                    }
                } else {
                    rest.insert(key.clone(), value.clone());
                }
            }
            if !rest.is_empty() {
                let text = Value::Object(rest).to_string();
                attributes.push(attribute("warden.detail", string_value(&text)));
            }
        }
        Value::Null => {}
        other => {
            attributes.push(attribute("warden.detail", string_value(&other.to_string())));
        }
    }
    attributes
}

/// Returns an ERROR status when `detail.outcome` is `error` (the upstream
/// returned an error) or `failure` (the upstream was not reached).
fn error_status(record: &AuditRecord) -> Option<Value> {
    let detail = &record.record.detail;
    let outcome = detail.get("outcome").and_then(Value::as_str)?;
    if outcome != "error" && outcome != "failure" {
        return None;
    }
    let message = match detail.get("error") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Null) | None => record.record.reason.clone(),
        Some(other) => Some(other.to_string()),
    };
    let mut status = Map::new();
    status.insert("code".into(), STATUS_CODE_ERROR.into());
    if let Some(message) = message {
        status.insert("message".into(), message.into());
    }
    Some(Value::Object(status))
}

/// Converts a JSON value to an OTLP `AnyValue`; `None` for null.
///
/// Integers that fit an int64 become `intValue`, other numbers
/// `doubleValue`. An object has no attribute type of its own, so it becomes
/// its JSON text.
fn any_value(value: &Value) -> Option<Value> {
    let converted = match value {
        Value::Null => return None,
        Value::Bool(flag) => json!({ "boolValue": flag }),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => int_value(integer),
            None => json!({ "doubleValue": number.as_f64() }),
        },
        Value::String(text) => string_value(text),
        Value::Array(items) => {
            let values = items.iter().filter_map(any_value).collect::<Vec<_>>();
            json!({ "arrayValue": { "values": values } })
        }
        Value::Object(_) => string_value(&value.to_string()),
    };
    Some(converted)
}

fn attribute(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value })
}

fn string_value(text: &str) -> Value {
    json!({ "stringValue": text })
}

fn int_value(integer: i64) -> Value {
    json!({ "intValue": integer.to_string() })
}

/// Converts unix microseconds to unix nanoseconds; times before 1970 are 0.
fn unix_nanos(time_us: i64) -> u64 {
    u64::try_from(time_us).unwrap_or(0).saturating_mul(1000)
}

/// Returns `detail.duration_ms` in nanoseconds, when it is a finite,
/// non-negative number.
fn duration_nanos(detail: &Value) -> Option<u64> {
    let millis = detail.get("duration_ms")?.as_f64()?;
    if !millis.is_finite() || millis < 0.0 {
        return None;
    }
    // A float-to-int `as` cast saturates, so a huge duration cannot wrap.
    Some((millis * 1_000_000.0).round() as u64)
}

/// Checks that `id` has `digits` hex digits and is not all zeros, which
/// OTLP treats as an invalid id.
fn is_hex_id(id: &str, digits: usize) -> bool {
    id.len() == digits
        && id.bytes().all(|byte| byte.is_ascii_hexdigit())
        && id.bytes().any(|byte| byte != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::Decision;
    use warden_store::NewAuditRecord;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const PARENT: &str = "53995c3f42cd8ad8";

    fn record(kind: &str, parent: Option<&str>, detail: Value) -> AuditRecord {
        AuditRecord {
            seq: 42,
            record: NewAuditRecord {
                time_us: 1_700_000_000_123_456,
                trace_id: TRACE.into(),
                span_id: SPAN.into(),
                parent_span_id: parent.map(str::to_owned),
                task_id: "task-1".into(),
                agent: "spiffe://warden.local/agent/a".into(),
                user: "alice@acme.test".into(),
                kind: kind.into(),
                target: Some("files__read_file".into()),
                decision: Some(Decision::Allow),
                policy_ids: vec!["read-notes".into(), "base".into()],
                reason: Some("permitted".into()),
                detail,
            },
            prev_hash: "0".repeat(64),
            hash: "ab".repeat(32),
        }
    }

    fn attribute_value(span: &Value, key: &str) -> Value {
        span["attributes"]
            .as_array()
            .and_then(|attributes| attributes.iter().find(|a| a["key"] == key))
            .map(|a| a["value"].clone())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn encode_sets_ids_name_and_kind() {
        let span = encode(&record("tool.decision", Some(PARENT), json!({})))
            .expect("valid record encodes");
        assert_eq!(span["traceId"], TRACE);
        assert_eq!(span["spanId"], SPAN);
        assert_eq!(span["parentSpanId"], PARENT);
        assert_eq!(span["name"], "tool.decision files__read_file");
        assert_eq!(span["kind"], 1);
        assert!(span.get("status").is_none());
    }

    #[test]
    fn encode_lowercases_hex_ids() {
        let mut upper = record("tool.decision", Some(&PARENT.to_uppercase()), json!({}));
        upper.record.trace_id = TRACE.to_uppercase();
        let span = encode(&upper).expect("valid record encodes");
        assert_eq!(span["traceId"], TRACE);
        assert_eq!(span["parentSpanId"], PARENT);
    }

    #[test]
    fn encode_treats_empty_or_missing_parent_as_root() {
        for parent in [None, Some(""), Some("not-hex-at-all!!")] {
            let span =
                encode(&record("task.start", parent, json!({}))).expect("valid record encodes");
            assert!(span.get("parentSpanId").is_none(), "parent {parent:?}");
        }
    }

    #[test]
    fn encode_rejects_invalid_ids() {
        let mut short = record("tool.decision", None, json!({}));
        short.record.trace_id = "abc".into();
        assert!(encode(&short).is_none());
        let mut zero = record("tool.decision", None, json!({}));
        zero.record.span_id = "0".repeat(16);
        assert!(encode(&zero).is_none());
    }

    #[test]
    fn encode_times_as_decimal_strings() {
        let span = encode(&record("tool.decision", None, json!({}))).expect("valid record encodes");
        assert_eq!(span["endTimeUnixNano"], "1700000000123456000");
        assert_eq!(span["startTimeUnixNano"], "1700000000123456000");
    }

    #[test]
    fn encode_starts_span_duration_before_end() {
        let detail = json!({ "outcome": "result", "duration_ms": 1.5 });
        let span =
            encode(&record("tool.result", Some(PARENT), detail)).expect("valid record encodes");
        assert_eq!(span["endTimeUnixNano"], "1700000000123456000");
        assert_eq!(span["startTimeUnixNano"], "1700000000121956000");
        assert_eq!(span["kind"], 3);
    }

    #[test]
    fn encode_ignores_negative_duration() {
        let detail = json!({ "duration_ms": -5 });
        let span = encode(&record("tool.result", None, detail)).expect("valid record encodes");
        assert_eq!(span["startTimeUnixNano"], span["endTimeUnixNano"]);
    }

    #[test]
    fn encode_marks_error_and_failure_outcomes() {
        let error = json!({ "outcome": "error", "error": "no such file" });
        let span = encode(&record("tool.result", None, error)).expect("valid record encodes");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["status"]["message"], "no such file");

        let failure = json!({ "outcome": "failure", "error": { "code": -32000 } });
        let span = encode(&record("tool.result", None, failure)).expect("valid record encodes");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["status"]["message"], r#"{"code":-32000}"#);

        let result = json!({ "outcome": "result" });
        let span = encode(&record("tool.result", None, result)).expect("valid record encodes");
        assert!(span.get("status").is_none());
    }

    #[test]
    fn encode_writes_record_attributes() {
        let span = encode(&record("tool.decision", None, json!({}))).expect("valid record encodes");
        let expected = [
            ("warden.kind", string_value("tool.decision")),
            ("warden.task_id", string_value("task-1")),
            (
                "warden.agent",
                string_value("spiffe://warden.local/agent/a"),
            ),
            ("enduser.id", string_value("alice@acme.test")),
            ("warden.target", string_value("files__read_file")),
            ("warden.decision", string_value("allow")),
            ("warden.reason", string_value("permitted")),
            ("warden.audit.seq", json!({ "intValue": "42" })),
            ("warden.audit.hash", string_value(&"ab".repeat(32))),
            (
                "warden.policy_ids",
                json!({ "arrayValue": { "values": [
                    { "stringValue": "read-notes" },
                    { "stringValue": "base" },
                ] } }),
            ),
        ];
        for (key, value) in expected {
            assert_eq!(attribute_value(&span, key), value, "attribute {key}");
        }

        // An empty detail leaves nothing for `warden.detail`.
        assert_eq!(attribute_value(&span, "warden.detail"), Value::Null);
    }

    #[test]
    fn encode_lifts_gen_ai_attributes_with_types() {
        let detail = json!({
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.request.temperature": 0.25,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.request.stream": false,
            "gen_ai.request.seed": null,
            "duration_ms": 10,
            "outcome": "result",
        });
        let span =
            encode(&record("model.result", Some(PARENT), detail)).expect("valid record encodes");
        assert_eq!(span["name"], "chat gpt-4o-mini");
        assert_eq!(span["kind"], 3);
        assert_eq!(
            attribute_value(&span, "gen_ai.operation.name"),
            json!({ "stringValue": "chat" })
        );
        assert_eq!(
            attribute_value(&span, "gen_ai.usage.input_tokens"),
            json!({ "intValue": "12" })
        );
        assert_eq!(
            attribute_value(&span, "gen_ai.request.temperature"),
            json!({ "doubleValue": 0.25 })
        );
        assert_eq!(
            attribute_value(&span, "gen_ai.response.finish_reasons"),
            json!({ "arrayValue": { "values": [{ "stringValue": "stop" }] } })
        );
        assert_eq!(
            attribute_value(&span, "gen_ai.request.stream"),
            json!({ "boolValue": false })
        );
        assert_eq!(attribute_value(&span, "gen_ai.request.seed"), Value::Null);
        assert_eq!(
            attribute_value(&span, "warden.detail")["stringValue"],
            r#"{"duration_ms":10,"outcome":"result"}"#
        );
    }

    #[test]
    fn encode_keeps_non_object_detail_as_text() {
        let span =
            encode(&record("task.end", None, json!("revoked"))).expect("valid record encodes");
        assert_eq!(
            attribute_value(&span, "warden.detail")["stringValue"],
            r#""revoked""#
        );
    }

    #[test]
    fn request_wraps_spans_in_resource_and_scope() {
        let source = SpanSource::new("warden-test");
        let span = encode(&record("tool.decision", None, json!({}))).expect("valid record encodes");
        let request = source.request(vec![span]);
        let resource = &request["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(resource[0]["key"], "service.name");
        assert_eq!(resource[0]["value"]["stringValue"], "warden-test");
        assert_eq!(resource[1]["key"], "service.version");
        let scope_spans = &request["resourceSpans"][0]["scopeSpans"][0];
        assert_eq!(scope_spans["scope"]["name"], "warden");
        assert_eq!(scope_spans["spans"][0]["spanId"], SPAN);
    }
}
