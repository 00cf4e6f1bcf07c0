//! Compact JWS parsing and the claim checks shared by JWT-SVIDs and task
//! tokens.
//!
//! `parse` splits a token, decodes its header and payload with the strict
//! JSON parser (duplicate keys are rejected, so the verifier and any later
//! reader see the same claims) and applies the header rules. It never looks
//! at `jwk`, `jku`, `x5u` or `x5c`: keys come only from configuration.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::{IdentityError, TokenKind};
use crate::jwk::Algorithm;

/// Maximum size of a token in bytes. JWT-SVIDs and task tokens are a few
/// hundred bytes, so a larger input is rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compact JWS split and decoded, with its signature not yet checked.
#[derive(Debug)]
pub(crate) struct UnverifiedJws<'a> {
    /// The algorithm the header names. The caller must compare it with the
    /// trusted key's algorithm.
    pub algorithm: Algorithm,
    /// The `kid` header, when present.
    pub kid: Option<String>,
    /// The decoded payload object.
    pub payload: Map<String, Value>,
    /// The bytes the signature covers: `header.payload` as received.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The time claims of a token that passed the expiry checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeClaims {
    pub expires_at: i64,
    pub issued_at: Option<i64>,
}

/// Splits and decodes a compact JWS and checks its header.
///
/// Header rules:
/// - `alg` is a string naming an algorithm Warden verifies, so `none` and
///   HMAC are rejected.
/// - `crit` is rejected, because Warden implements no JWS extension.
/// - `typ`, if present, is `JWT` or `JOSE`.
/// - `kid`, if present, is a non-empty string.
pub(crate) fn parse(token: &str, kind: TokenKind) -> Result<UnverifiedJws<'_>, IdentityError> {
    let malformed = |reason: String| IdentityError::Malformed { kind, reason };

    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(format!(
            "it is {} bytes long, more than the maximum of {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let segments: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = segments[..] else {
        return Err(malformed(format!(
            "expected 3 dot-separated segments (header.payload.signature), found {}",
            segments.len()
        )));
    };

    let header = decode_json_object(header_b64, "header", kind)?;
    let (algorithm, kid) = check_header(&header, kind)?;
    let payload = decode_json_object(payload_b64, "payload", kind)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|error| malformed(format!("the signature is not unpadded base64url: {error}")))?;

    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    Ok(UnverifiedJws {
        algorithm,
        kid,
        payload,
        signing_input: &token.as_bytes()[..signing_input_len],
        signature,
    })
}

/// Checks `exp` (required), `nbf` and `iat` (optional), which must all be
/// JSON numbers. A token is expired when `exp + leeway < now` and not yet valid
/// when `nbf - leeway > now`.
pub(crate) fn check_time_claims(
    payload: &Map<String, Value>,
    kind: TokenKind,
    now_unix: i64,
    leeway_seconds: i64,
) -> Result<TimeClaims, IdentityError> {
    // Non-integer times are rounded towards the stricter side: `exp` down
    // and `nbf` up.
    let expires_at = numeric_date(payload, "exp", kind, f64::floor)?
        .ok_or(IdentityError::MissingClaim { kind, claim: "exp" })?;
    let not_before = numeric_date(payload, "nbf", kind, f64::ceil)?;
    let issued_at = numeric_date(payload, "iat", kind, f64::floor)?;

    if expires_at.saturating_add(leeway_seconds) < now_unix {
        return Err(IdentityError::Expired {
            kind,
            at: expires_at,
        });
    }
    if let Some(not_before) = not_before
        && not_before.saturating_sub(leeway_seconds) > now_unix
    {
        return Err(IdentityError::NotYetValid { kind, not_before });
    }
    Ok(TimeClaims {
        expires_at,
        issued_at,
    })
}

/// Reads `aud` as a list. A string becomes a one-element list, and an
/// array must contain only strings.
pub(crate) fn audience(
    payload: &Map<String, Value>,
    kind: TokenKind,
) -> Result<Vec<String>, IdentityError> {
    match payload.get("aud") {
        None => Err(IdentityError::MissingClaim { kind, claim: "aud" }),
        Some(Value::String(audience)) => Ok(vec![audience.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(audience) => Ok(audience.clone()),
                other => Err(invalid_claim(
                    kind,
                    "aud",
                    format!(
                        "the list holds {}, but every entry must be a string",
                        json_type(other)
                    ),
                )),
            })
            .collect(),
        Some(other) => Err(invalid_claim(
            kind,
            "aud",
            format!(
                "must be a string or a list of strings, found {}",
                json_type(other)
            ),
        )),
    }
}

/// Reads an optional string claim and rejects any other JSON type.
pub(crate) fn optional_string_claim(
    payload: &Map<String, Value>,
    claim: &str,
    kind: TokenKind,
) -> Result<Option<String>, IdentityError> {
    match payload.get(claim) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(invalid_claim(
            kind,
            claim,
            format!("must be a string, found {}", json_type(other)),
        )),
    }
}

/// Builds an [`IdentityError::InvalidClaim`].
pub(crate) fn invalid_claim(kind: TokenKind, claim: &str, reason: String) -> IdentityError {
    IdentityError::InvalidClaim {
        kind,
        claim: claim.to_owned(),
        reason,
    }
}

/// Encodes `bytes` as unpadded base64url, the JWS segment encoding.
pub(crate) fn encode_segment(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Names the JSON type of `value` for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn decode_json_object(
    segment: &str,
    name: &str,
    kind: TokenKind,
) -> Result<Map<String, Value>, IdentityError> {
    let malformed = |reason: String| IdentityError::Malformed { kind, reason };
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|error| malformed(format!("the {name} is not unpadded base64url: {error}")))?;
    let value = warden_core::json::parse_strict(&bytes)
        .map_err(|error| malformed(format!("the {name} is not valid JSON: {error}")))?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(malformed(format!(
            "the {name} must be a JSON object, found {}",
            json_type(&other)
        ))),
    }
}

fn check_header(
    header: &Map<String, Value>,
    kind: TokenKind,
) -> Result<(Algorithm, Option<String>), IdentityError> {
    let invalid = |reason: String| IdentityError::InvalidHeader { kind, reason };

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(other) => {
            return Err(invalid(format!(
                "`alg` must be a string, found {}",
                json_type(other)
            )));
        }
        None => return Err(invalid("`alg` is missing".to_owned())),
    };
    if header.contains_key("crit") {
        return Err(invalid(
            "`crit` lists extensions that Warden does not implement, so the token is rejected"
                .to_owned(),
        ));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ == "JWT" || typ == "JOSE" => {}
        Some(other) => {
            return Err(invalid(format!(
                "`typ` must be \"JWT\" or \"JOSE\", found {}",
                shorten(other)
            )));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "`kid` must be a non-empty string, found {}",
                shorten(other)
            )));
        }
    };

    let algorithm =
        Algorithm::from_jws_name(alg).ok_or_else(|| IdentityError::UnsupportedAlgorithm {
            kind,
            alg: alg.chars().take(32).collect(),
        })?;
    Ok((algorithm, kid))
}

/// Returns `value` as JSON text cut to 64 characters, so an error message
/// never echoes a large attacker-chosen value.
pub(crate) fn shorten(value: &Value) -> String {
    const MAX_CHARS: usize = 64;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CHARS).collect();
    cut.push_str("...");
    cut
}

/// Reads a NumericDate claim: absent is `None`, a JSON number becomes whole
/// seconds, anything else (such as the string "never") is an error.
fn numeric_date(
    payload: &Map<String, Value>,
    claim: &str,
    kind: TokenKind,
    round: fn(f64) -> f64,
) -> Result<Option<i64>, IdentityError> {
    let Some(value) = payload.get(claim) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(invalid_claim(
            kind,
            claim,
            format!(
                "must be a JSON number of seconds since the Unix epoch, found {} ({})",
                json_type(value),
                shorten(value)
            ),
        ));
    };
    if let Some(seconds) = number.as_i64() {
        return Ok(Some(seconds));
    }
    // i64 bounds as f64; the comparison rejects values a cast would clamp.
    const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;
    match number.as_f64().map(round) {
        Some(seconds) if (-I64_BOUND..I64_BOUND).contains(&seconds) => Ok(Some(seconds as i64)),
        _ => Err(invalid_claim(
            kind,
            claim,
            format!("the number {number} is outside the range of Unix times"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KIND: TokenKind = TokenKind::JwtSvid;

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            encode_segment(header.as_bytes()),
            encode_segment(payload.as_bytes()),
            encode_segment(b"signature")
        )
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => panic!("test input must be an object"),
        }
    }

    #[test]
    fn parse_rejects_two_segments() {
        let error = parse("a.b", KIND).expect_err("two segments");
        assert!(error.to_string().contains("found 2"), "{error}");
    }

    #[test]
    fn parse_rejects_four_segments() {
        assert!(parse("a.b.c.d", KIND).is_err());
    }

    #[test]
    fn parse_rejects_padded_segment() {
        let header = format!("{}=", encode_segment(br#"{"alg":"ES256"}"#));
        let input = format!(
            "{header}.{}.{}",
            encode_segment(b"{}"),
            encode_segment(b"s")
        );
        let error = parse(&input, KIND).expect_err("padding");
        assert!(
            matches!(error, IdentityError::Malformed { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn parse_rejects_standard_base64_alphabet() {
        // "+" and "/" belong to standard base64, not base64url.
        let input = format!(
            "{}.{}.ab+/",
            encode_segment(br#"{"alg":"ES256"}"#),
            encode_segment(b"{}")
        );
        assert!(parse(&input, KIND).is_err());
    }

    #[test]
    fn parse_rejects_oversized_token() {
        let input = "a".repeat(MAX_TOKEN_BYTES + 1);
        let error = parse(&input, KIND).expect_err("too large");
        assert!(error.to_string().contains("maximum"), "{error}");
    }

    #[test]
    fn parse_rejects_duplicate_header_key() {
        let input = token(r#"{"alg":"ES256","alg":"none"}"#, "{}");
        let error = parse(&input, KIND).expect_err("duplicate alg");
        assert!(error.to_string().contains("duplicate key `alg`"), "{error}");
    }

    #[test]
    fn parse_rejects_duplicate_payload_key() {
        let input = token(
            r#"{"alg":"ES256"}"#,
            r#"{"sub":"spiffe://a.test/x","sub":"spiffe://a.test/admin"}"#,
        );
        let error = parse(&input, KIND).expect_err("duplicate sub");
        assert!(error.to_string().contains("duplicate key `sub`"), "{error}");
    }

    #[test]
    fn parse_rejects_non_string_alg() {
        let error = parse(&token(r#"{"alg":["ES256"]}"#, "{}"), KIND).expect_err("alg list");
        assert!(
            matches!(error, IdentityError::InvalidHeader { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn parse_rejects_missing_alg() {
        let error = parse(&token(r#"{"typ":"JWT"}"#, "{}"), KIND).expect_err("no alg");
        assert!(
            matches!(error, IdentityError::InvalidHeader { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn parse_rejects_crit() {
        let input = token(r#"{"alg":"ES256","crit":["b64"],"b64":false}"#, "{}");
        let error = parse(&input, KIND).expect_err("crit");
        assert!(error.to_string().contains("`crit`"), "{error}");
    }

    #[test]
    fn parse_rejects_unexpected_typ() {
        let input = token(r#"{"alg":"ES256","typ":"at+jwt"}"#, "{}");
        let error = parse(&input, KIND).expect_err("typ");
        assert!(error.to_string().contains("`typ`"), "{error}");
    }

    #[test]
    fn parse_accepts_jose_typ() {
        let input = token(r#"{"alg":"ES256","typ":"JOSE"}"#, "{}");
        assert!(parse(&input, KIND).is_ok());
    }

    #[test]
    fn parse_rejects_none_in_any_case() {
        for alg in ["none", "None", "NONE"] {
            let input = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            let error = parse(&input, KIND).expect_err(alg);
            assert!(
                matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
                "{alg}: {error:?}"
            );
        }
    }

    #[test]
    fn parse_rejects_hmac_algorithms() {
        for alg in ["HS256", "HS384", "HS512"] {
            let input = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            let error = parse(&input, KIND).expect_err(alg);
            assert!(
                matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
                "{alg}: {error:?}"
            );
        }
    }

    #[test]
    fn parse_rejects_payload_that_is_not_object() {
        let error = parse(&token(r#"{"alg":"ES256"}"#, "[1]"), KIND).expect_err("list");
        assert!(
            error.to_string().contains("must be a JSON object"),
            "{error}"
        );
    }

    #[test]
    fn parse_signing_input_is_first_two_segments() {
        let input = token(r#"{"alg":"ES256"}"#, "{}");
        let parsed = parse(&input, KIND).expect("valid");
        let dot = input.rfind('.').expect("three segments");
        assert_eq!(parsed.signing_input, &input.as_bytes()[..dot]);
    }

    #[test]
    fn time_claims_reject_string_exp() {
        let payload = object(json!({"exp": "never"}));
        let error = check_time_claims(&payload, KIND, 100, 0).expect_err("string exp");
        assert!(
            matches!(error, IdentityError::InvalidClaim { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn time_claims_reject_missing_exp() {
        let error = check_time_claims(&Map::new(), KIND, 100, 0).expect_err("no exp");
        assert!(
            matches!(error, IdentityError::MissingClaim { claim: "exp", .. }),
            "{error:?}"
        );
    }

    #[test]
    fn time_claims_exp_boundary_uses_leeway() {
        let payload = object(json!({"exp": 100}));
        assert!(check_time_claims(&payload, KIND, 110, 10).is_ok());
        assert!(check_time_claims(&payload, KIND, 111, 10).is_err());
    }

    #[test]
    fn time_claims_round_fractional_exp_down() {
        let payload = object(json!({"exp": 100.9}));
        let claims = check_time_claims(&payload, KIND, 0, 0).expect("valid");
        assert_eq!(claims.expires_at, 100);
    }

    #[test]
    fn time_claims_reject_huge_exp() {
        let payload = object(json!({"exp": 1e300}));
        assert!(check_time_claims(&payload, KIND, 0, 0).is_err());
    }

    #[test]
    fn time_claims_reject_future_nbf() {
        let payload = object(json!({"exp": 1000, "nbf": 200}));
        let error = check_time_claims(&payload, KIND, 100, 30).expect_err("nbf ahead");
        assert!(
            matches!(error, IdentityError::NotYetValid { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn time_claims_reject_string_iat() {
        let payload = object(json!({"exp": 1000, "iat": "0"}));
        assert!(check_time_claims(&payload, KIND, 100, 0).is_err());
    }

    #[test]
    fn audience_rejects_number() {
        let error = audience(&object(json!({"aud": 5})), KIND).expect_err("number");
        assert!(
            matches!(error, IdentityError::InvalidClaim { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn audience_rejects_list_with_number() {
        assert!(audience(&object(json!({"aud": ["warden", 5]})), KIND).is_err());
    }
}
