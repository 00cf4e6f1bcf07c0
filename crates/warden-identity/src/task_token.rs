//! Warden task tokens: short-lived ES256 JWTs that bind one agent to one
//! task.
//!
//! Only Warden signs and verifies them, so verification accepts exactly one
//! key (by `kid`) and one algorithm (ES256), and compares `iss` and `aud`
//! for equality. Delegated tokens carry the RFC 8693 `act` claim and the
//! parent task id.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{IdentityError, TokenKind};
use crate::jwk::{Algorithm, VerifyingKey};
use crate::jwt;
use crate::signing::SigningKey;
use crate::spiffe::SpiffeId;

const KIND: TokenKind = TokenKind::TaskToken;

/// Claims of a Warden task token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskClaims {
    /// Issuer: the Warden instance that signed the token.
    pub iss: String,
    /// Audience: the Warden instance that accepts the token.
    pub aud: String,
    /// Subject: the agent's SPIFFE ID.
    pub sub: String,
    /// Unique token id.
    pub jti: String,
    /// The task the token is bound to.
    pub task_id: String,
    /// The user the task acts for.
    pub user: String,
    /// The declared intent of the task.
    pub intent: String,
    /// The tools the task may call, as namespaced tool names.
    pub tools: Vec<String>,
    /// The W3C trace id shared by the task and its delegated sub-tasks.
    pub trace_id: String,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// RFC 8693 actor chain, present on delegated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// The task this one was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    /// The root task of a delegated task's chain; absent on a root task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_task_id: Option<String>,
}

impl TaskClaims {
    /// Returns the id of the root task: this task's own id unless it was
    /// delegated. A task tree shares counters such as model budgets.
    pub fn root_task(&self) -> &str {
        self.root_task_id.as_deref().unwrap_or(&self.task_id)
    }
}

/// Signs and verifies task tokens with Warden's own key.
#[derive(Debug)]
pub struct TaskTokens {
    key: SigningKey,
    verifying_key: VerifyingKey,
    issuer: String,
    audience: String,
    leeway_seconds: i64,
}

impl TaskTokens {
    /// Creates the signer and verifier. A negative `leeway_seconds` is
    /// treated as 0.
    pub fn new(
        key: SigningKey,
        issuer: String,
        audience: String,
        leeway_seconds: i64,
    ) -> TaskTokens {
        TaskTokens {
            verifying_key: key.verifying_key(),
            key,
            issuer,
            audience,
            leeway_seconds: leeway_seconds.max(0),
        }
    }

    /// Signs `claims` as a task token.
    ///
    /// Rejects claims whose `iss` or `aud` differ from this instance's (the
    /// token could never verify), whose `sub` is not a SPIFFE ID, or whose
    /// `exp` is not after `iat`.
    pub fn issue(&self, claims: &TaskClaims) -> Result<String, IdentityError> {
        if claims.iss != self.issuer {
            return Err(invalid_request(format!(
                "`iss` is `{}`, but this Warden issues as `{}`",
                claims.iss, self.issuer
            )));
        }
        if claims.aud != self.audience {
            return Err(invalid_request(format!(
                "`aud` is `{}`, but this Warden accepts `{}`",
                claims.aud, self.audience
            )));
        }
        SpiffeId::parse(&claims.sub)
            .map_err(|error| invalid_request(format!("`sub` is not an agent identity: {error}")))?;
        if claims.exp <= claims.iat {
            return Err(invalid_request(format!(
                "`exp` ({}) must be later than `iat` ({})",
                claims.exp, claims.iat
            )));
        }
        let value = serde_json::to_value(claims).map_err(|error| {
            invalid_request(format!("the claims cannot be encoded as JSON: {error}"))
        })?;
        self.key.sign_jwt(&value)
    }

    /// Verifies a task token at time `now_unix` (seconds since the Unix
    /// epoch) and returns its claims.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<TaskClaims, IdentityError> {
        let jws = jwt::parse(token, KIND)?;
        if jws.algorithm != Algorithm::ES256 {
            return Err(IdentityError::AlgorithmMismatch {
                kind: KIND,
                header: jws.algorithm.to_string(),
                expected: Algorithm::ES256,
                kid: Some(self.key.kid().to_owned()),
            });
        }
        match &jws.kid {
            None => {
                return Err(IdentityError::InvalidHeader {
                    kind: KIND,
                    reason: "`kid` is missing".to_owned(),
                });
            }
            Some(kid) if kid != self.key.kid() => {
                return Err(IdentityError::UnknownKey {
                    kind: KIND,
                    kid: kid.chars().take(128).collect(),
                    scope: "task token keys of this Warden instance".to_owned(),
                });
            }
            Some(_) => {}
        }
        if !self.verifying_key.verify(jws.signing_input, &jws.signature) {
            return Err(IdentityError::InvalidSignature { kind: KIND });
        }

        jwt::check_time_claims(&jws.payload, KIND, now_unix, self.leeway_seconds)?;
        self.check_issuer(&jws.payload)?;
        self.check_audience(&jws.payload)?;

        let claims: TaskClaims = serde_json::from_value(Value::Object(jws.payload))
            .map_err(|error| jwt::invalid_claim(KIND, "payload", error.to_string()))?;
        SpiffeId::parse(&claims.sub)
            .map_err(|error| jwt::invalid_claim(KIND, "sub", error.to_string()))?;
        Ok(claims)
    }

    /// Returns the JWK set that verifies task tokens, with `"use":"sig"`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.key.public_jwk(Some("sig"))]})
    }

    /// Returns the `kid` of the signing key.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// Returns the issuer this instance writes into `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Returns the audience this instance requires in `aud`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn check_issuer(&self, payload: &Map<String, Value>) -> Result<(), IdentityError> {
        match payload.get("iss") {
            None => Err(IdentityError::MissingClaim {
                kind: KIND,
                claim: "iss",
            }),
            Some(Value::String(issuer)) if *issuer == self.issuer => Ok(()),
            Some(other) => Err(jwt::invalid_claim(
                KIND,
                "iss",
                format!(
                    "expected \"{}\", found {}",
                    self.issuer,
                    jwt::shorten(other)
                ),
            )),
        }
    }

    fn check_audience(&self, payload: &Map<String, Value>) -> Result<(), IdentityError> {
        match payload.get("aud") {
            None => Err(IdentityError::MissingClaim {
                kind: KIND,
                claim: "aud",
            }),
            Some(Value::String(audience)) if *audience == self.audience => Ok(()),
            Some(Value::String(audience)) => Err(IdentityError::AudienceMismatch {
                kind: KIND,
                expected: self.audience.clone(),
                found: vec![audience.clone()],
            }),
            Some(other) => Err(jwt::invalid_claim(
                KIND,
                "aud",
                format!("must be a single string, found {}", jwt::json_type(other)),
            )),
        }
    }
}

fn invalid_request(reason: String) -> IdentityError {
    IdentityError::InvalidIssueRequest { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{es256_token, tamper_payload};

    const NOW: i64 = 1_796_378_400;
    const ISSUER: &str = "https://warden.local";
    const AUDIENCE: &str = "warden";

    fn tokens() -> TaskTokens {
        let key = SigningKey::generate().expect("generate key");
        TaskTokens::new(key, ISSUER.to_owned(), AUDIENCE.to_owned(), 0)
    }

    fn claims() -> TaskClaims {
        TaskClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: "spiffe://acme.test/agent/support-bot".to_owned(),
            jti: "jti-1".to_owned(),
            task_id: "task-1".to_owned(),
            user: "alice@acme.test".to_owned(),
            intent: "answer ticket 42".to_owned(),
            tools: vec!["fs__read_file".to_owned()],
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            iat: NOW,
            exp: NOW + 600,
            act: None,
            parent_task_id: None,
            root_task_id: None,
        }
    }

    #[test]
    fn task_token_round_trip() {
        let tokens = tokens();
        let token = tokens.issue(&claims()).expect("issue");
        assert_eq!(tokens.verify(&token, NOW + 1).expect("verify"), claims());
    }

    #[test]
    fn task_token_round_trip_with_delegation() {
        let tokens = tokens();
        let mut delegated = claims();
        delegated.act = Some(json!({"sub": "spiffe://acme.test/agent/planner"}));
        delegated.parent_task_id = Some("task-0".to_owned());
        let token = tokens.issue(&delegated).expect("issue");
        assert_eq!(tokens.verify(&token, NOW + 1).expect("verify"), delegated);
    }

    #[test]
    fn task_token_expired() {
        let tokens = tokens();
        let token = tokens.issue(&claims()).expect("issue");
        let error = tokens.verify(&token, NOW + 601).expect_err("expired");
        assert!(matches!(error, IdentityError::Expired { .. }), "{error:?}");
        assert!(error.to_string().contains("POST /v1/tasks"), "{error}");
    }

    #[test]
    fn task_token_wrong_issuer_key() {
        let other = tokens();
        let token = other.issue(&claims()).expect("issue");
        let error = tokens().verify(&token, NOW + 1).expect_err("other key");
        assert!(
            matches!(error, IdentityError::UnknownKey { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_other_key_with_our_kid() {
        let tokens = tokens();
        let attacker = SigningKey::generate().expect("generate key");
        let payload = serde_json::to_value(claims()).expect("claims encode");
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": tokens.kid()});
        let token = es256_token(&attacker, &header, &payload);
        let error = tokens.verify(&token, NOW + 1).expect_err("forged kid");
        assert!(
            matches!(error, IdentityError::InvalidSignature { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_tampered_payload() {
        let tokens = tokens();
        let token = tokens.issue(&claims()).expect("issue");
        let tampered = tamper_payload(&token, |payload| {
            payload["tools"] = json!(["fs__write_file"]);
        });
        let error = tokens.verify(&tampered, NOW + 1).expect_err("tampered");
        assert!(
            matches!(error, IdentityError::InvalidSignature { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_rejects_hs256_header() {
        let tokens = tokens();
        let token = tokens.issue(&claims()).expect("issue");
        let (_, rest) = token.split_once('.').expect("three segments");
        let header = jwt::encode_segment(
            format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, tokens.kid()).as_bytes(),
        );
        let error = tokens
            .verify(&format!("{header}.{rest}"), NOW + 1)
            .expect_err("HS256");
        assert!(
            matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_rejects_missing_kid() {
        let tokens = tokens();
        let payload = serde_json::to_value(claims()).expect("claims encode");
        let token = es256_token(&tokens.key, &json!({"alg": "ES256"}), &payload);
        let error = tokens.verify(&token, NOW + 1).expect_err("no kid");
        assert!(
            matches!(error, IdentityError::InvalidHeader { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_rejects_other_issuer_claim() {
        let tokens = tokens();
        let mut payload = serde_json::to_value(claims()).expect("claims encode");
        payload["iss"] = json!("https://other.test");
        let header = json!({"alg": "ES256", "kid": tokens.kid()});
        let token = es256_token(&tokens.key, &header, &payload);
        let error = tokens.verify(&token, NOW + 1).expect_err("other iss");
        assert!(error.to_string().contains("`iss`"), "{error}");
    }

    #[test]
    fn task_token_rejects_other_audience_claim() {
        let tokens = tokens();
        let mut payload = serde_json::to_value(claims()).expect("claims encode");
        payload["aud"] = json!("billing-api");
        let header = json!({"alg": "ES256", "kid": tokens.kid()});
        let token = es256_token(&tokens.key, &header, &payload);
        let error = tokens.verify(&token, NOW + 1).expect_err("other aud");
        assert!(
            matches!(error, IdentityError::AudienceMismatch { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_rejects_audience_list() {
        let tokens = tokens();
        let mut payload = serde_json::to_value(claims()).expect("claims encode");
        payload["aud"] = json!([AUDIENCE, "billing-api"]);
        let header = json!({"alg": "ES256", "kid": tokens.kid()});
        let token = es256_token(&tokens.key, &header, &payload);
        assert!(tokens.verify(&token, NOW + 1).is_err());
    }

    #[test]
    fn task_token_rejects_string_exp() {
        let tokens = tokens();
        let mut payload = serde_json::to_value(claims()).expect("claims encode");
        payload["exp"] = json!("never");
        let header = json!({"alg": "ES256", "kid": tokens.kid()});
        let token = es256_token(&tokens.key, &header, &payload);
        let error = tokens.verify(&token, NOW + 1).expect_err("string exp");
        assert!(
            matches!(error, IdentityError::InvalidClaim { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn task_token_issue_rejects_foreign_issuer() {
        let mut foreign = claims();
        foreign.iss = "https://other.test".to_owned();
        assert!(tokens().issue(&foreign).is_err());
    }

    #[test]
    fn task_token_issue_rejects_exp_before_iat() {
        let mut backwards = claims();
        backwards.exp = backwards.iat;
        assert!(tokens().issue(&backwards).is_err());
    }

    #[test]
    fn task_token_jwks_verifies_issued_token() {
        let tokens = tokens();
        let jwks = crate::jwk::Jwks::from_json(&tokens.jwks()).expect("jwks parses");
        let key = &jwks.keys()[0];
        assert_eq!(key.kid.as_deref(), Some(tokens.kid()));
        assert_eq!(key.key_use.as_deref(), Some("sig"));
        let token = tokens.issue(&claims()).expect("issue");
        let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .expect("base64url");
        assert!(key.verify(signing_input.as_bytes(), &signature));
    }
}
