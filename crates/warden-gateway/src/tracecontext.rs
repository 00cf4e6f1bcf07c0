//! W3C Trace Context (`traceparent`) parsing and propagation.
//!
//! An agent that traces its own work sends `traceparent` on `POST
//! /v1/tasks`, on model calls and on tool calls (as an HTTP header, or in
//! MCP `params._meta.traceparent`). Warden then records its spans in the
//! agent's trace, under the agent's span, and passes its own span on to the
//! upstream as the new parent.

use axum::http::HeaderMap;

/// A parsed `traceparent` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id: 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span id: 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// Trace flags, e.g. `01` for sampled.
    pub flags: String,
}

impl TraceParent {
    /// Parses a `traceparent` value as the W3C Trace Context
    /// recommendation reads it: version `00` has exactly four fields, a
    /// later version may append more; version `ff`, upper-case hex and
    /// all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches([' ', '\t']);
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let parent_id = fields.next()?;
        let flags = fields.next()?;
        let rest = fields.next();
        let valid = is_hex(version, 2)
            && version != "ff"
            && (version != "00" || rest.is_none())
            && is_hex(trace_id, 32)
            && is_hex(parent_id, 16)
            && is_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// Reads the request's `traceparent` header; a missing, repeated or
    /// invalid header gives `None`, and the trace then starts at Warden.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all("traceparent").iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(value.to_str().ok()?)
    }

    /// Returns the caller's span id when this context belongs to
    /// `trace_id`, so that a step joins the caller's span only within its
    /// own task's trace.
    pub fn parent_in(&self, trace_id: &str) -> Option<&str> {
        (self.trace_id == trace_id).then_some(self.parent_id.as_str())
    }
}

/// Formats the `traceparent` that Warden sends upstream for its span
/// `span_id` in `trace_id`, keeping the caller's flags when given.
pub fn format(trace_id: &str, span_id: &str, caller: Option<&TraceParent>) -> String {
    let flags = caller.map_or("01", |parent| parent.flags.as_str());
    format!("00-{trace_id}-{span_id}-{flags}")
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_reads_the_four_fields() {
        let parsed = TraceParent::parse(VALID).expect("valid traceparent");
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        assert_eq!(parsed.flags, "01");
    }

    #[test]
    fn parse_rejects_invalid_values() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(value), None, "{value:?} accepted");
        }
    }

    #[test]
    fn parse_accepts_later_versions_with_more_fields() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(TraceParent::parse(value).is_some());
    }

    #[test]
    fn from_headers_ignores_repeated_header() {
        let mut headers = HeaderMap::new();
        headers.append("traceparent", VALID.parse().expect("header value"));
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append("traceparent", VALID.parse().expect("header value"));
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[test]
    fn parent_in_requires_the_same_trace() {
        let parsed = TraceParent::parse(VALID).expect("valid traceparent");
        assert_eq!(
            parsed.parent_in("4bf92f3577b34da6a3ce929d0e0e4736"),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(parsed.parent_in("11111111111111111111111111111111"), None);
    }

    #[test]
    fn format_keeps_caller_flags() {
        let caller = TraceParent::parse(VALID).expect("valid traceparent");
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            format(trace, "1111111111111111", Some(&caller)),
            format!("00-{trace}-1111111111111111-01")
        );
        assert_eq!(
            format(trace, "2222222222222222", None),
            format!("00-{trace}-2222222222222222-01")
        );
    }
}
