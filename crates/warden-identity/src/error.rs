//! The error type of this crate.
//!
//! Every message that concerns a presented token states what failed, on which
//! value, and what the caller does next, so an HTTP 401 body can show it
//! unchanged. Messages never contain the token itself.

use std::fmt;
use std::path::PathBuf;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::jwk::Algorithm;

/// The kind of token a verification error is about.
///
/// It selects the wording of the message and the remedy it suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A SPIFFE JWT-SVID presented by an agent.
    JwtSvid,
    /// A task token issued by Warden.
    TaskToken,
}

impl TokenKind {
    /// Returns the remedy sentence: how the caller obtains a valid token of
    /// this kind.
    pub fn remedy(self) -> &'static str {
        match self {
            TokenKind::JwtSvid => {
                "fetch a fresh one from the SPIRE agent, or run `warden identity issue` \
                 with the same --config or WARDEN_DATA_DIR as the gateway"
            }
            TokenKind::TaskToken => "start a new task with POST /v1/tasks",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::JwtSvid => f.write_str("JWT-SVID"),
            TokenKind::TaskToken => f.write_str("task token"),
        }
    }
}

/// Failure of parsing an identity, loading a key or verifying a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The token is not a compact JWS of three base64url segments holding
    /// JSON objects, or it is too large.
    #[error("malformed {kind}: {reason}; {}", kind.remedy())]
    Malformed {
        /// The kind of token.
        kind: TokenKind,
        /// The broken rule.
        reason: String,
    },

    /// The JOSE header breaks a rule other than the algorithm choice, for
    /// example it carries `crit` or an unexpected `typ`.
    #[error("invalid {kind} header: {reason}; {}", kind.remedy())]
    InvalidHeader {
        /// The kind of token.
        kind: TokenKind,
        /// The broken header rule.
        reason: String,
    },

    /// The header names an algorithm that Warden never accepts (`none`,
    /// HMAC, or an algorithm it does not implement).
    #[error(
        "{kind} is signed with algorithm `{alg}`, which Warden does not accept \
         (`none` and HMAC are always rejected); {}",
        kind.remedy()
    )]
    UnsupportedAlgorithm {
        /// The kind of token.
        kind: TokenKind,
        /// The `alg` header value.
        alg: String,
    },

    /// The header algorithm differs from the algorithm of the trusted key.
    #[error(
        "{kind} header alg `{header}` does not match the trusted key {}, which \
         requires {expected}; the algorithm comes from the key, so sign with {expected}",
        describe_kid(kid.as_deref())
    )]
    AlgorithmMismatch {
        /// The kind of token.
        kind: TokenKind,
        /// The `alg` header value.
        header: String,
        /// The algorithm of the trusted key.
        expected: Algorithm,
        /// The `kid` of the trusted key, when it has one.
        kid: Option<String>,
    },

    /// The subject's trust domain has no configured bundle.
    #[error(
        "no trust bundle is configured for trust domain `{trust_domain}` (configured: {}); \
         add its bundle to Warden's configuration or use an identity from a configured trust domain",
        configured.join(", ")
    )]
    UnknownTrustDomain {
        /// The trust domain of the token's subject.
        trust_domain: String,
        /// The trust domains Warden has bundles for.
        configured: Vec<String>,
    },

    /// The header `kid` names no usable key.
    #[error("{kind} key id `{kid}` is not among the {scope}; {}", kind.remedy())]
    UnknownKey {
        /// The kind of token.
        kind: TokenKind,
        /// The `kid` header value.
        kid: String,
        /// The key set searched, e.g. "JWT-SVID keys of trust domain `a.test`".
        scope: String,
    },

    /// A trust bundle contains no key usable for JWT-SVIDs.
    #[error(
        "the trust bundle of `{trust_domain}` has no key for JWT-SVIDs \
         (`use` absent or \"jwt-svid\"); add a JWT signing key to the bundle"
    )]
    NoUsableKey {
        /// The trust domain whose bundle was searched.
        trust_domain: String,
    },

    /// No trusted key verifies the signature.
    #[error("{kind} signature is invalid for the trusted key; {}", kind.remedy())]
    InvalidSignature {
        /// The kind of token.
        kind: TokenKind,
    },

    /// `exp` plus the leeway lies in the past.
    #[error("{kind} expired at {}; {}", format_unix(*at), kind.remedy())]
    Expired {
        /// The kind of token.
        kind: TokenKind,
        /// The `exp` claim, in seconds since the Unix epoch.
        at: i64,
    },

    /// `nbf` minus the leeway lies in the future.
    #[error(
        "{kind} is not valid before {}; check the issuer's clock or wait until then",
        format_unix(*not_before)
    )]
    NotYetValid {
        /// The kind of token.
        kind: TokenKind,
        /// The `nbf` claim, in seconds since the Unix epoch.
        not_before: i64,
    },

    /// A required claim is absent.
    #[error("{kind} has no `{claim}` claim; {}", kind.remedy())]
    MissingClaim {
        /// The kind of token.
        kind: TokenKind,
        /// The claim name.
        claim: &'static str,
    },

    /// A claim has the wrong type or value.
    #[error("{kind} claim `{claim}` is invalid: {reason}; {}", kind.remedy())]
    InvalidClaim {
        /// The kind of token.
        kind: TokenKind,
        /// The claim name.
        claim: String,
        /// The broken rule.
        reason: String,
    },

    /// The audience does not contain the expected value.
    #[error(
        "{kind} audience {found:?} does not contain `{expected}`; \
         request a token for audience `{expected}`"
    )]
    AudienceMismatch {
        /// The kind of token.
        kind: TokenKind,
        /// The audience Warden expects.
        expected: String,
        /// The audience values the token carries.
        found: Vec<String>,
    },

    /// A string is not a valid SPIFFE ID.
    #[error(
        "invalid SPIFFE ID `{value}`: {reason}; use the form \
         spiffe://trust-domain/path with a lowercase trust domain"
    )]
    InvalidSpiffeId {
        /// The rejected input, cut to a printable length.
        value: String,
        /// The broken rule.
        reason: String,
    },

    /// A SPIFFE ID lies outside the trust domain an issuer serves.
    #[error(
        "SPIFFE ID `{spiffe_id}` is outside trust domain `{trust_domain}`; \
         issue only identities of the form spiffe://{trust_domain}/..."
    )]
    ForeignTrustDomain {
        /// The SPIFFE ID that was requested.
        spiffe_id: String,
        /// The trust domain of the issuer.
        trust_domain: String,
    },

    /// A request to issue a token has invalid parameters.
    #[error("cannot issue token: {reason}")]
    InvalidIssueRequest {
        /// The invalid parameter and how to fix it.
        reason: String,
    },

    /// A JWK or JWK set cannot be used.
    #[error("invalid JWK set: {reason}; publish public EC, RSA or Ed25519 keys only")]
    InvalidJwks {
        /// The problem, naming the key by index and `kid`.
        reason: String,
    },

    /// A signing key cannot be created, parsed or used.
    #[error("signing key error: {reason}")]
    Key {
        /// The failure and what to do about it.
        reason: String,
    },

    /// A constructor argument is invalid.
    #[error("invalid identity configuration: {reason}")]
    InvalidConfig {
        /// The invalid setting and how to fix it.
        reason: String,
    },

    /// The verifier has no trust domain to accept identities from.
    #[error(
        "no trust domain configured; add at least one SPIFFE trust bundle \
         or enable the development issuer"
    )]
    NoTrustDomain,

    /// A file operation failed.
    #[error("failed to {operation} `{}`: {source}", path.display())]
    Io {
        /// The operation, e.g. "read key file".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC, or as the raw
/// number when it is outside the representable range.
pub(crate) fn format_unix(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|moment| moment.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("Unix time {seconds}"))
}

fn describe_kid(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("`{kid}`"),
        None => "without kid".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_message_shows_time_and_remedy() {
        let error = IdentityError::Expired {
            kind: TokenKind::JwtSvid,
            at: 1_796_378_400,
        };
        assert_eq!(
            error.to_string(),
            "JWT-SVID expired at 2026-12-04T10:00:00Z; fetch a fresh one from the \
             SPIRE agent, or run `warden identity issue` with the same --config or \
             WARDEN_DATA_DIR as the gateway"
        );
    }

    #[test]
    fn format_unix_out_of_range_falls_back() {
        assert_eq!(format_unix(i64::MAX), format!("Unix time {}", i64::MAX));
    }
}
