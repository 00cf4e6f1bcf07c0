//! Secret redaction for text that an agent or the audit log will see.
//!
//! Warden injects upstream credentials that the agent must never hold, and
//! upstream responses may echo them or carry other secrets (private keys,
//! cloud keys, tokens). A [`Redactor`] replaces each of them with
//! `[redacted:<kind>]` before the text leaves Warden. It finds two sorts of
//! secrets:
//!
//! - exact values, such as the credentials Warden injects, including their
//!   JSON-escaped and percent-encoded spellings;
//! - shapes: well-known secret formats recognised by pattern (see
//!   [`Redactor::with_shapes`]).
//!
//! Matches that overlap are merged, so a secret is never partly left in the
//! text because another match started inside it. The patterns are compiled
//! once per process, and the text is scanned without decoding it, so bytes
//! that are not UTF-8 are handled too.

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use serde_json::Value;

/// Shortest exact value the redactor accepts, in bytes. Shorter values would
/// match ordinary words and numbers.
pub const MIN_VALUE_LEN: usize = 8;

/// Kind named in the marker of an exact value.
const VALUE_KIND: &str = "secret";

/// Removes secrets from text before it reaches an agent or the audit log.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Matcher of the exact values and their encodings, if any.
    values: Option<AhoCorasick>,
    /// Whether the shapes are searched.
    shapes: bool,
    /// Whether every non-empty text is replaced whole, because a matcher
    /// could not be built.
    whole: bool,
    /// Problems with the values given to [`Redactor::new`].
    warnings: Vec<String>,
}

impl Redactor {
    /// Builds a redactor for `values`, the exact secret values to remove
    /// (such as injected credentials), with the shapes on.
    ///
    /// Values shorter than [`MIN_VALUE_LEN`] bytes are ignored, each with a
    /// warning in [`Redactor::warnings`] and in the log (which names the
    /// value's length, never the value).
    pub fn new(values: Vec<String>) -> Redactor {
        let mut patterns: Vec<String> = Vec::new();
        let mut warnings = Vec::new();
        for value in values {
            if value.len() < MIN_VALUE_LEN {
                tracing::warn!(
                    secret.len = value.len(),
                    secret.min_len = MIN_VALUE_LEN,
                    "secret value shorter than the minimum length is not redacted"
                );
                warnings.push(format!(
                    "a secret value of {} bytes is shorter than {MIN_VALUE_LEN} bytes and is not \
                     redacted; use a credential of at least {MIN_VALUE_LEN} bytes",
                    value.len()
                ));
                continue;
            }
            for spelling in spellings(&value) {
                if !patterns.contains(&spelling) {
                    patterns.push(spelling);
                }
            }
        }
        let mut whole = false;
        let values = if patterns.is_empty() {
            None
        } else {
            let built = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&patterns);
            match built {
                Ok(matcher) => Some(matcher),
                Err(error) => {
                    // Only a size limit can fail here. Without the matcher
                    // the values could leak, so every text is redacted whole.
                    tracing::error!(
                        %error,
                        "building the secret value matcher failed; redacting whole texts"
                    );
                    warnings.push(format!(
                        "building the secret value matcher failed ({error}), so every text is \
                         redacted whole; pass fewer or shorter secret values"
                    ));
                    whole = true;
                    None
                }
            }
        };
        Redactor {
            values,
            shapes: true,
            whole,
            warnings,
        }
    }

    /// Turns the search for shapes on or off (on by default). The shapes
    /// are:
    ///
    /// - PEM private key blocks (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP and
    ///   plain `PRIVATE KEY`), from `BEGIN` to `END` or to the end of the
    ///   base64 body when `END` is missing;
    /// - AWS access key ids (`AKIA` or `ASIA` and 16 characters), and secret
    ///   access keys and session tokens after a label such as
    ///   `aws_secret_access_key =` or `"SessionToken":`;
    /// - GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`,
    ///   `github_pat_`), Slack tokens (`xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`,
    ///   `xoxs-`, `xapp-`) and Slack webhook URLs;
    /// - OpenAI keys (`sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-`) and
    ///   Anthropic keys (`sk-ant-`) of at least 32 characters after the
    ///   prefix;
    /// - Google API keys (`AIza` and 35 characters);
    /// - `Bearer` tokens of at least 16 characters, and the credentials of
    ///   `Authorization:` and `Proxy-Authorization:` values;
    /// - JWTs and JWEs: base64url parts separated by dots, the first
    ///   starting with `eyJ`.
    pub fn with_shapes(mut self, on: bool) -> Redactor {
        self.shapes = on;
        self
    }

    /// Returns the problems found in the values given to [`Redactor::new`].
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Returns the text with each match replaced by `[redacted:<kind>]`, and
    /// the number of replacements.
    pub fn redact_str<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        match self.redact_bytes(text.as_bytes()) {
            (Cow::Borrowed(_), count) => (Cow::Borrowed(text), count),
            (Cow::Owned(bytes), count) => {
                // Every match starts and ends next to an ASCII byte or at the
                // end of a whole UTF-8 value, so the output stays UTF-8.
                let text = match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
                };
                (Cow::Owned(text), count)
            }
        }
    }

    /// Returns the bytes with each match replaced by `[redacted:<kind>]`, and
    /// the number of replacements. Bytes that are not UTF-8 are kept as they
    /// are.
    ///
    /// NOTE: each call sees only `bytes`, so a secret split across two
    /// chunks of a stream is found in neither. Redact a whole body, or carry
    /// the tail of one chunk over into the next.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        let broken = self.whole || (self.shapes && SHAPES.is_none());
        if broken && !bytes.is_empty() {
            return (Cow::Owned(b"[redacted:all]".to_vec()), 1);
        }
        let spans = self.find(bytes);
        if spans.is_empty() {
            return (Cow::Borrowed(bytes), 0);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut position = 0;
        for span in &spans {
            out.extend_from_slice(&bytes[position..span.start]);
            // An exact secret value reads `[redacted]`, a shape names its kind.
            if span.kind == VALUE_KIND {
                out.extend_from_slice(b"[redacted]");
            } else {
                out.extend_from_slice(b"[redacted:");
                out.extend_from_slice(span.kind.as_bytes());
                out.push(b']');
            }
            position = span.end;
        }
        out.extend_from_slice(&bytes[position..]);
        (Cow::Owned(out), spans.len())
    }

    /// Redacts every string value in `value` in place, and returns the
    /// number of replacements. Object keys are left as they are.
    pub fn redact_json(&self, value: &mut Value) -> usize {
        match value {
            Value::String(text) => {
                let (redacted, count) = self.redact_str(text);
                if let Cow::Owned(redacted) = redacted {
                    *text = redacted;
                }
                count
            }
            Value::Array(items) => items.iter_mut().map(|item| self.redact_json(item)).sum(),
            Value::Object(members) => members
                .values_mut()
                .map(|member| self.redact_json(member))
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }

    /// Returns the merged spans to replace, in order.
    fn find(&self, bytes: &[u8]) -> Vec<Span> {
        let mut spans = Vec::new();
        if let Some(values) = &self.values {
            spans.extend(values.find_overlapping_iter(bytes).map(|found| Span {
                start: found.start(),
                end: found.end(),
                kind: VALUE_KIND,
            }));
        }
        if self.shapes
            && let Some(shapes) = SHAPES.as_ref()
        {
            shapes.find(bytes, &mut spans);
        }
        merge(spans)
    }
}

/// One region to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    kind: &'static str,
}

/// One secret format.
struct Shape {
    kind: &'static str,
    regex: Regex,
    /// Whether the secret is a capture group inside the match (the first
    /// group that took part); otherwise it is the whole match.
    grouped: bool,
}

/// All shapes, compiled once.
struct Shapes {
    list: Vec<Shape>,
}

/// The compiled shapes, or `None` when a pattern failed to compile; then
/// every text is redacted whole, because a missing shape could leak.
static SHAPES: LazyLock<Option<Shapes>> = LazyLock::new(|| match Shapes::compile() {
    Ok(shapes) => Some(shapes),
    Err(error) => {
        tracing::error!(%error, "compiling the secret patterns failed; redacting whole texts");
        None
    }
});

/// Base64url characters of a JWT part.
const B64URL: &str = "[A-Za-z0-9_-]";
/// Characters of a token68 credential (RFC 7235), and `%` for URL-encoded
/// ones.
const TOKEN68: &str = "[A-Za-z0-9._~+/%-]";
/// Separator between a label and its value: `=`, `:`, `=>` or the `>` of an
/// XML element, with optional quotes and spaces.
const LABEL_SEP: &str = r#"["']?\s*(?:=>|[:=>])\s*["']?"#;

/// Returns `(kind, pattern, grouped)` for every shape.
fn shape_patterns() -> Vec<(&'static str, String, bool)> {
    let pem_label = "[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----";
    // Base64 lines, PEM headers such as `DEK-Info: AES-128-CBC,0A1B`, and
    // newlines escaped as `\n` inside JSON strings.
    let pem_body = r"(?:[A-Za-z0-9+/=\s:,.\\]|-[A-Za-z0-9])*";
    let aws_secret = r"([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)";
    // Credentials after a scheme need 8 characters and without a scheme
    // 20, so that prose such as `Authorization: required` is left alone.
    let param = format!(r#"[A-Za-z0-9_-]+\s*=\s*(?:"[^"\r\n]*"|{TOKEN68}+)"#);
    let params = format!(r"{param}(?:\s*,\s*{param})*");
    let credentials =
        format!(r"(?:[A-Za-z][A-Za-z0-9_.-]*\s+({params}|{TOKEN68}{{8,}}=*)|({TOKEN68}{{20,}}=*))");
    // A JWE has five parts, the second of which may be empty.
    let jwe_tail = format!(r"\.{B64URL}*\.{B64URL}+\.{B64URL}+\.{B64URL}+");
    let jws_tail = format!(r"\.{B64URL}{{2,}}\.{B64URL}*");
    vec![
        (
            "private_key",
            format!("-----BEGIN{pem_label}{pem_body}(?:-----END{pem_label})?"),
            false,
        ),
        (
            "aws_access_key_id",
            r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b".to_owned(),
            false,
        ),
        (
            "aws_secret_access_key",
            format!(r"(?i:secret[_-]?access[_-]?key){LABEL_SEP}{aws_secret}"),
            true,
        ),
        (
            "session_token",
            format!(r"(?i:session[_-]?token){LABEL_SEP}([A-Za-z0-9/+=]{{100,}})"),
            true,
        ),
        (
            "github_token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,251})\b".to_owned(),
            false,
        ),
        (
            "slack_token",
            r"\b(?:xox[abprs]-[A-Za-z0-9-]{10,250}|xapp-[0-9]+-[A-Za-z0-9-]{10,250})".to_owned(),
            false,
        ),
        (
            "slack_webhook",
            r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}".to_owned(),
            false,
        ),
        (
            "anthropic_key",
            r"\bsk-ant-[A-Za-z0-9_-]{32,}".to_owned(),
            false,
        ),
        (
            "openai_key",
            r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}|[A-Za-z0-9]{32,}\b)".to_owned(),
            false,
        ),
        (
            "google_api_key",
            r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)".to_owned(),
            true,
        ),
        (
            "bearer_token",
            format!(r"(?i:\bbearer)\s+({TOKEN68}{{16,}}=*)"),
            true,
        ),
        (
            "authorization",
            format!(r"(?i:\b(?:proxy-)?authorization){LABEL_SEP}{credentials}"),
            true,
        ),
        (
            "jwt",
            format!(r"\beyJ{B64URL}{{10,}}(?:{jwe_tail}|{jws_tail})"),
            false,
        ),
    ]
}

impl Shapes {
    fn compile() -> Result<Shapes, regex::Error> {
        let mut list = Vec::new();
        for (kind, pattern, grouped) in shape_patterns() {
            let regex = RegexBuilder::new(&pattern).unicode(false).build()?;
            list.push(Shape {
                kind,
                regex,
                grouped,
            });
        }
        Ok(Shapes { list })
    }

    /// Appends the span of every shape match in `bytes` to `spans`.
    fn find(&self, bytes: &[u8], spans: &mut Vec<Span>) {
        for shape in &self.list {
            if shape.grouped {
                for captures in shape.regex.captures_iter(bytes) {
                    let secret = captures.iter().skip(1).flatten().next();
                    if let Some(found) = secret.or_else(|| captures.get(0)) {
                        spans.push(Span {
                            start: found.start(),
                            end: found.end(),
                            kind: shape.kind,
                        });
                    }
                }
            } else {
                spans.extend(shape.regex.find_iter(bytes).map(|found| Span {
                    start: found.start(),
                    end: found.end(),
                    kind: shape.kind,
                }));
            }
        }
    }
}

/// Sorts spans and merges the overlapping ones. A merged span keeps the
/// kind of the span that starts first (the longest one on a tie).
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|span| span.start < span.end);
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// Returns the spellings of a secret value to search for: as is,
/// JSON-escaped and percent-encoded.
fn spellings(value: &str) -> Vec<String> {
    let mut spellings = vec![value.to_owned()];
    if let Ok(quoted) = serde_json::to_string(value)
        && let Some(escaped) = quoted
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
    {
        spellings.push(escaped.to_owned());
    }
    spellings.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    let percent: String = value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    spellings.push(percent);
    spellings
}

#[cfg(test)]
mod tests;
