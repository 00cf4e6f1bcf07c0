//! A small incremental parser for `text/event-stream` bodies.
//!
//! It follows the WHATWG event-stream rules that MCP uses: events end at a
//! blank line, `data:` lines join with a newline, lines starting with `:`
//! are comments, and CR, LF and CRLF all end a line. The buffer is capped so
//! a peer that never ends an event cannot grow it without bound.

/// One parsed event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty means `message`.
    pub event: String,
    /// The joined `data:` lines.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Error when one event exceeds the size limit.
#[derive(Debug, thiserror::Error)]
#[error("event-stream event larger than {limit} bytes")]
pub struct EventTooLarge {
    /// The limit in bytes.
    pub limit: usize,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct Parser {
    buffer: Vec<u8>,
    current: Event,
    has_data: bool,
    limit: usize,
}

impl Parser {
    /// Creates a parser whose events may be at most `limit` bytes.
    pub fn new(limit: usize) -> Parser {
        Parser {
            buffer: Vec::new(),
            current: Event::default(),
            has_data: false,
            limit,
        }
    }

    /// Feeds bytes and returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of CRLF.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let skip = if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        if self.buffer.len() + self.current.data.len() > self.limit {
            return Err(EventTooLarge { limit: self.limit });
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.current = Event::default();
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// Formats one `message` event carrying `data`.
pub fn format_event(data: &str) -> String {
    let mut out = String::from("event: message\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_joins_data_lines() {
        let mut parser = Parser::new(1024);
        let events = parser
            .feed(b"event: message\ndata: a\ndata: b\n\n")
            .expect("parse");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\nb");
    }

    #[test]
    fn parser_handles_split_crlf() {
        let mut parser = Parser::new(1024);
        assert!(parser.feed(b"data: x\r").expect("parse").is_empty());
        let events = parser.feed(b"\n\r\n").expect("parse");
        assert_eq!(events[0].data, "x");
    }

    #[test]
    fn parser_skips_comments_and_empty_events() {
        let mut parser = Parser::new(1024);
        let events = parser
            .feed(b": ping\n\nid: 4\n\ndata: y\n\n")
            .expect("parse");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "y");
    }

    #[test]
    fn parser_rejects_oversized_event() {
        let mut parser = Parser::new(16);
        let result = parser.feed(b"data: 01234567890123456789");
        assert!(result.is_err());
    }
}
