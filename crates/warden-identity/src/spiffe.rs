//! SPIFFE IDs: parsing and validation.
//!
//! A SPIFFE ID is `spiffe://` followed by a trust domain and an optional
//! path. Warden applies the SPIFFE ID rules strictly, because the trust
//! domain selects the keys that verify a JWT-SVID and the whole ID becomes
//! the policy principal. Two spellings of one workload must not exist, so
//! nothing is normalised: uppercase trust domains, percent-encoding, empty
//! or dot segments and trailing slashes are rejected instead of rewritten.

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;

/// The URI scheme prefix of every SPIFFE ID.
pub const SCHEME_PREFIX: &str = "spiffe://";

/// Maximum length of a SPIFFE ID in bytes.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// A validated SPIFFE ID such as `spiffe://acme.test/agent/support-bot`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    /// Byte offset in `id` where the path starts (the length of scheme and
    /// trust domain).
    path_start: usize,
}

impl SpiffeId {
    /// Parses and validates `s` as a SPIFFE ID.
    ///
    /// Rules:
    /// - The scheme is exactly `spiffe://`.
    /// - The trust domain is non-empty and made of `a-z`, `0-9`, `.`, `-`
    ///   and `_`, so a port, user info or uppercase letter is rejected.
    /// - The path is empty or a sequence of `/segment`. Each segment is
    ///   non-empty, not `.` or `..`, and made of `A-Z`, `a-z`, `0-9`, `.`,
    ///   `-` and `_`, so a query, fragment or percent-encoding is rejected.
    /// - The whole ID is at most [`MAX_SPIFFE_ID_BYTES`] bytes.
    pub fn parse(s: &str) -> Result<SpiffeId, IdentityError> {
        let invalid = |reason: &str| IdentityError::InvalidSpiffeId {
            value: printable_prefix(s),
            reason: reason.to_owned(),
        };

        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > MAX_SPIFFE_ID_BYTES {
            return Err(invalid(&format!(
                "it is {} bytes long, more than the maximum of {MAX_SPIFFE_ID_BYTES}",
                s.len()
            )));
        }
        let Some(rest) = s.strip_prefix(SCHEME_PREFIX) else {
            return Err(invalid("the scheme must be exactly `spiffe://`"));
        };

        let path_offset = rest.find('/').unwrap_or(rest.len());
        let (trust_domain, path) = rest.split_at(path_offset);
        validate_trust_domain(trust_domain).map_err(|reason| invalid(&reason))?;
        validate_path(path).map_err(|reason| invalid(&reason))?;

        Ok(SpiffeId {
            id: s.to_owned(),
            path_start: SCHEME_PREFIX.len() + trust_domain.len(),
        })
    }

    /// Builds the SPIFFE ID of a trust domain itself, `spiffe://{trust_domain}`,
    /// validating the trust domain name.
    pub fn from_trust_domain(trust_domain: &str) -> Result<SpiffeId, IdentityError> {
        validate_trust_domain(trust_domain).map_err(|reason| IdentityError::InvalidSpiffeId {
            value: printable_prefix(trust_domain),
            reason: format!("invalid trust domain name: {reason}"),
        })?;
        SpiffeId::parse(&format!("{SCHEME_PREFIX}{trust_domain}"))
    }

    /// Returns the trust domain name, e.g. `acme.test`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..self.path_start]
    }

    /// Returns the path including its leading `/`, or `""` for the ID of a
    /// trust domain itself.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// Returns the whole ID as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Returns true when the ID names a trust domain, not a workload (its
    /// path is empty).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<SpiffeId, IdentityError> {
        SpiffeId::parse(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

/// Checks a trust domain name, returning the broken rule on failure.
fn validate_trust_domain(trust_domain: &str) -> Result<(), String> {
    if trust_domain.is_empty() {
        return Err("the trust domain is empty".to_owned());
    }
    if trust_domain.contains('@') {
        return Err("user info (`@`) is not allowed in the trust domain".to_owned());
    }
    if trust_domain.contains(':') {
        return Err("a port (`:`) is not allowed in the trust domain".to_owned());
    }
    if let Some(bad) = trust_domain.chars().find(|c| !is_trust_domain_char(*c)) {
        return Err(format!(
            "character {bad:?} is not allowed in the trust domain \
             (only lowercase a-z, 0-9, `.`, `-` and `_`)"
        ));
    }
    Ok(())
}

/// Checks a path (empty or starting with `/`), returning the broken rule.
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    // The caller split at the first '/', so a non-empty path starts with it.
    for segment in path[1..].split('/') {
        match segment {
            "" => {
                return Err("the path has an empty segment or a trailing `/`".to_owned());
            }
            "." | ".." => {
                return Err(format!("the path segment `{segment}` is not allowed"));
            }
            _ => {}
        }
        if let Some(bad) = segment.chars().find(|c| !is_path_char(*c)) {
            let reason = match bad {
                '?' => "a query (`?`) is not allowed".to_owned(),
                '#' => "a fragment (`#`) is not allowed".to_owned(),
                '%' => "percent-encoding (`%`) is not allowed".to_owned(),
                _ => format!(
                    "character {bad:?} is not allowed in the path \
                     (only A-Z, a-z, 0-9, `.`, `-` and `_`)"
                ),
            };
            return Err(reason);
        }
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Returns at most the first 256 characters of `s` with control characters
/// escaped, so an error message stays short and printable.
fn printable_prefix(s: &str) -> String {
    const MAX_CHARS: usize = 256;
    let mut out: String = s
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(MAX_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_accepts_valid_ids() {
        let cases = [
            (
                "spiffe://acme.test/agent/support-bot",
                "acme.test",
                "/agent/support-bot",
            ),
            ("spiffe://acme.test", "acme.test", ""),
            ("spiffe://a-b_c.9/A.b-C_d/0", "a-b_c.9", "/A.b-C_d/0"),
            ("spiffe://td/...", "td", "/..."),
            ("spiffe://td/.hidden", "td", "/.hidden"),
        ];
        for (input, trust_domain, path) in cases {
            let id = SpiffeId::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"));
            assert_eq!(id.trust_domain(), trust_domain, "trust domain of {input}");
            assert_eq!(id.path(), path, "path of {input}");
            assert_eq!(id.as_str(), input, "as_str of {input}");
            assert_eq!(id.to_string(), input, "Display of {input}");
        }
    }

    #[test]
    fn spiffe_id_rejects_invalid_ids() {
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_BYTES));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("http://acme.test/agent", "scheme"),
            ("SPIFFE://acme.test/agent", "scheme"),
            ("spiffe:/acme.test/agent", "scheme"),
            ("spiffe://", "trust domain is empty"),
            ("spiffe:///agent", "trust domain is empty"),
            (
                "spiffe://Acme.test/agent",
                "not allowed in the trust domain",
            ),
            ("spiffe://acme.test:8443/agent", "port"),
            ("spiffe://user@acme.test/agent", "user info"),
            ("spiffe://acme.test/", "trailing"),
            ("spiffe://acme.test/agent/", "trailing"),
            ("spiffe://acme.test//agent", "empty segment"),
            ("spiffe://acme.test/agent/./x", "`.`"),
            ("spiffe://acme.test/agent/../admin", "`..`"),
            ("spiffe://acme.test/agent?x=1", "query"),
            ("spiffe://acme.test/agent#frag", "fragment"),
            ("spiffe://acme.test/agent%2Fx", "percent"),
            ("spiffe://acme.test/agent x", "not allowed in the path"),
            ("spiffe://acme.test/agent\u{e9}", "not allowed in the path"),
            ("spiffe://acme.test?x=1", "not allowed in the trust domain"),
            (long.as_str(), "maximum"),
        ];
        for (input, reason) in cases {
            let error = SpiffeId::parse(input).expect_err(input);
            assert!(
                matches!(error, IdentityError::InvalidSpiffeId { .. }),
                "{input}: {error:?}"
            );
            assert!(
                error.to_string().contains(reason),
                "{input}: message {error} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn spiffe_id_from_str_matches_parse() {
        let id: SpiffeId = "spiffe://acme.test/agent/x".parse().expect("valid id");
        assert_eq!(
            id,
            SpiffeId::parse("spiffe://acme.test/agent/x").expect("valid id")
        );
    }

    #[test]
    fn spiffe_id_from_trust_domain_builds_root_id() {
        let id = SpiffeId::from_trust_domain("acme.test").expect("valid trust domain");
        assert_eq!(id.as_str(), "spiffe://acme.test");
        assert!(id.is_trust_domain_id());
    }

    #[test]
    fn spiffe_id_from_trust_domain_rejects_path() {
        assert!(SpiffeId::from_trust_domain("acme.test/agent").is_err());
    }

    #[test]
    fn spiffe_id_error_escapes_control_characters() {
        let error = SpiffeId::parse("spiffe://a\n.test").expect_err("newline is invalid");
        assert!(error.to_string().contains("a\\n.test"), "{error}");
    }
}
