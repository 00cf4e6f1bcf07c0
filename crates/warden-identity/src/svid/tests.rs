//! Unit tests of JWT-SVID verification, including the identity attack cases:
//! `alg: none`, algorithm confusion, wrongly typed time claims, leeway,
//! trust domain mismatch and tokens minted for another audience.

use std::collections::HashMap;

use ring::hmac;
use serde_json::{Value, json};

use super::*;
use crate::jwk::Algorithm;
use crate::test_support::{TestKey, tamper_payload};

const NOW: i64 = 1_796_378_400;
const AUDIENCE: &str = "warden";
const AGENT: &str = "spiffe://a.test/agent/support-bot";

fn bundle(keys: Vec<Value>) -> Jwks {
    Jwks::from_json(&json!({"keys": keys, "spiffe_refresh_hint": 300})).expect("bundle parses")
}

fn verifier_with(bundles: Vec<(&str, Jwks)>, leeway_seconds: i64) -> SvidVerifier {
    let bundles: HashMap<String, Jwks> = bundles
        .into_iter()
        .map(|(trust_domain, jwks)| (trust_domain.to_owned(), jwks))
        .collect();
    SvidVerifier::new(bundles, AUDIENCE.to_owned(), leeway_seconds).expect("verifier")
}

/// Builds a verifier for trust domain `a.test` with `key` under kid `k1`.
fn verifier_for(key: &TestKey) -> SvidVerifier {
    verifier_with(
        vec![("a.test", bundle(vec![key.jwk("k1", Some("jwt-svid"))]))],
        0,
    )
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": [AUDIENCE], "exp": NOW + 300, "iat": NOW, "jti": "j1"})
}

fn header(alg: &str, kid: Option<&str>) -> String {
    match kid {
        Some(kid) => json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string(),
        None => json!({"alg": alg, "typ": "JWT"}).to_string(),
    }
}

fn expect_error(result: Result<SvidClaims, IdentityError>) -> IdentityError {
    match result {
        Ok(claims) => panic!("verification passed with claims {claims:?}"),
        Err(error) => error,
    }
}

// Valid tokens of each supported algorithm.

#[test]
fn verify_accepts_es256() {
    let key = TestKey::p256();
    let token = key.token(&header("ES256", Some("k1")), &claims(AGENT).to_string());
    let verified = verifier_for(&key).verify(&token, NOW).expect("valid ES256");
    assert_eq!(verified.spiffe_id.as_str(), AGENT);
    assert_eq!(verified.audience, vec![AUDIENCE.to_owned()]);
    assert_eq!(verified.expires_at, NOW + 300);
    assert_eq!(verified.issued_at, Some(NOW));
    assert_eq!(verified.jti.as_deref(), Some("j1"));
}

#[test]
fn verify_accepts_es256_without_kid() {
    let key = TestKey::p256();
    let token = key.token(&header("ES256", None), &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

#[test]
fn verify_accepts_es384() {
    let key = TestKey::p384();
    let token = key.token(&header("ES384", Some("k1")), &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

#[test]
fn verify_accepts_eddsa() {
    let key = TestKey::ed25519();
    let token = key.token(&header("EdDSA", Some("k1")), &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

#[test]
fn verify_accepts_rs256() {
    let key = TestKey::rsa();
    let token = key.token(&header("RS256", Some("k1")), &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

#[test]
fn verify_accepts_ps256_declared_by_jwk() {
    let key = TestKey::rsa();
    let mut jwk = key.jwk("k1", Some("jwt-svid"));
    jwk["alg"] = json!("PS256");
    let verifier = verifier_with(vec![("a.test", bundle(vec![jwk]))], 0);
    let token = key.token_with(
        &header("PS256", Some("k1")),
        &claims(AGENT).to_string(),
        true,
    );
    assert!(verifier.verify(&token, NOW).is_ok());
}

#[test]
fn verify_accepts_key_without_use() {
    let key = TestKey::p256();
    let verifier = verifier_with(vec![("a.test", bundle(vec![key.jwk("k1", None)]))], 0);
    let token = key.token(&header("ES256", Some("k1")), &claims(AGENT).to_string());
    assert!(verifier.verify(&token, NOW).is_ok());
}

// `alg: none`.

#[test]
fn verify_rejects_alg_none() {
    let key = TestKey::p256();
    let token = format!(
        "{}.{}.",
        jwt::encode_segment(br#"{"alg":"none","typ":"JWT"}"#),
        jwt::encode_segment(claims(AGENT).to_string().as_bytes())
    );
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_alg_none_with_known_kid() {
    let key = TestKey::p256();
    let token = format!(
        "{}.{}.",
        jwt::encode_segment(header("none", Some("k1")).as_bytes()),
        jwt::encode_segment(claims(AGENT).to_string().as_bytes())
    );
    assert!(verifier_for(&key).verify(&token, NOW).is_err());
}

// Algorithm confusion.

fn hmac_token(alg: &str, kid: &str, secret: &[u8], payload: &str) -> String {
    let algorithm = match alg {
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    let signing_input = format!(
        "{}.{}",
        jwt::encode_segment(header(alg, Some(kid)).as_bytes()),
        jwt::encode_segment(payload.as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), signing_input.as_bytes());
    format!("{signing_input}.{}", jwt::encode_segment(tag.as_ref()))
}

#[test]
fn verify_rejects_hs256_keyed_with_ec_public_key() {
    let key = TestKey::p256();
    let token = hmac_token(
        "HS256",
        "k1",
        &key.public_key_bytes(),
        &claims(AGENT).to_string(),
    );
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_hs256_keyed_with_jwk_text() {
    let key = TestKey::p256();
    let secret = key.jwk("k1", Some("jwt-svid")).to_string();
    let token = hmac_token("HS256", "k1", secret.as_bytes(), &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_err());
}

#[test]
fn verify_rejects_hmac_keyed_with_rsa_public_key() {
    let key = TestKey::rsa();
    for alg in ["HS256", "HS384", "HS512"] {
        let token = hmac_token(
            alg,
            "k1",
            &key.public_key_bytes(),
            &claims(AGENT).to_string(),
        );
        let error = expect_error(verifier_for(&key).verify(&token, NOW));
        assert!(
            matches!(error, IdentityError::UnsupportedAlgorithm { .. }),
            "{alg}: {error:?}"
        );
    }
}

#[test]
fn verify_rejects_header_alg_other_than_key_alg() {
    let key = TestKey::p256();
    let other = TestKey::p384();
    let token = other.token(&header("ES384", Some("k1")), &claims(AGENT).to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(
            error,
            IdentityError::AlgorithmMismatch {
                expected: Algorithm::ES256,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_rs256_for_ec_key() {
    let key = TestKey::p256();
    let rsa = TestKey::rsa();
    let token = rsa.token(&header("RS256", None), &claims(AGENT).to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::AlgorithmMismatch { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_ps256_header_for_rs256_key() {
    let key = TestKey::rsa();
    let token = key.token_with(
        &header("PS256", Some("k1")),
        &claims(AGENT).to_string(),
        true,
    );
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::AlgorithmMismatch { .. }),
        "{error:?}"
    );
}

// Wrongly typed time claims.

#[test]
fn verify_rejects_exp_never() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": AUDIENCE, "exp": "never"});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(&error, IdentityError::InvalidClaim { claim, .. } if claim == "exp"),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_nbf_as_string() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": AUDIENCE, "exp": NOW + 300, "nbf": "99999999999"});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(&error, IdentityError::InvalidClaim { claim, .. } if claim == "nbf"),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_numeric_nbf_in_future() {
    let key = TestKey::p256();
    let payload =
        json!({"sub": AGENT, "aud": AUDIENCE, "exp": NOW + 300, "nbf": 99_999_999_999_i64});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::NotYetValid { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_missing_exp() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": AUDIENCE});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::MissingClaim { claim: "exp", .. }),
        "{error:?}"
    );
}

// Leeway.

fn expired_by_30_seconds(key: &TestKey) -> String {
    let payload = json!({"sub": AGENT, "aud": AUDIENCE, "exp": NOW - 30});
    key.token(&header("ES256", Some("k1")), &payload.to_string())
}

#[test]
fn verify_rejects_expired_without_leeway() {
    let key = TestKey::p256();
    let error = expect_error(verifier_for(&key).verify(&expired_by_30_seconds(&key), NOW));
    assert!(
        matches!(error, IdentityError::Expired { at, .. } if at == NOW - 30),
        "{error:?}"
    );
}

#[test]
fn verify_expired_message_names_time_and_remedy() {
    let key = TestKey::p256();
    let error = expect_error(verifier_for(&key).verify(&expired_by_30_seconds(&key), NOW));
    assert_eq!(
        error.to_string(),
        "JWT-SVID expired at 2026-12-04T09:59:30Z; fetch a fresh one from the \
         SPIRE agent, or run `warden identity issue` with the same --config or \
         WARDEN_DATA_DIR as the gateway"
    );
}

#[test]
fn verify_accepts_expired_within_leeway() {
    let key = TestKey::p256();
    let verifier = verifier_with(
        vec![("a.test", bundle(vec![key.jwk("k1", Some("jwt-svid"))]))],
        60,
    );
    assert!(verifier.verify(&expired_by_30_seconds(&key), NOW).is_ok());
}

// Trust domain mismatch and audience forms.

#[test]
fn verify_rejects_foreign_subject_with_kid() {
    let key_a = TestKey::p256();
    let key_b = TestKey::p256();
    let verifier = verifier_with(
        vec![
            ("a.test", bundle(vec![key_a.jwk("ka", Some("jwt-svid"))])),
            ("b.test", bundle(vec![key_b.jwk("kb", Some("jwt-svid"))])),
        ],
        0,
    );
    let payload = claims("spiffe://b.test/agent/x").to_string();
    let token = key_a.token(&header("ES256", Some("ka")), &payload);
    let error = expect_error(verifier.verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::UnknownKey { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_foreign_subject_without_kid() {
    let key_a = TestKey::p256();
    let key_b = TestKey::p256();
    let verifier = verifier_with(
        vec![
            ("a.test", bundle(vec![key_a.jwk("ka", Some("jwt-svid"))])),
            ("b.test", bundle(vec![key_b.jwk("kb", Some("jwt-svid"))])),
        ],
        0,
    );
    let payload = claims("spiffe://b.test/agent/x").to_string();
    let token = key_a.token(&header("ES256", None), &payload);
    let error = expect_error(verifier.verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::InvalidSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_unconfigured_trust_domain() {
    let key = TestKey::p256();
    let payload = claims("spiffe://b.test/agent/x").to_string();
    let token = key.token(&header("ES256", Some("k1")), &payload);
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(&error, IdentityError::UnknownTrustDomain { trust_domain, .. } if trust_domain == "b.test"),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_missing_aud() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::MissingClaim { claim: "aud", .. }),
        "{error:?}"
    );
}

#[test]
fn verify_accepts_aud_as_plain_string() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": AUDIENCE, "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let verified = verifier_for(&key).verify(&token, NOW).expect("string aud");
    assert_eq!(verified.audience, vec![AUDIENCE.to_owned()]);
}

#[test]
fn verify_accepts_aud_list_containing_audience() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": ["billing-api", AUDIENCE], "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

#[test]
fn verify_rejects_empty_aud_list() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": [], "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::AudienceMismatch { .. }),
        "{error:?}"
    );
}

#[test]
fn verifier_new_rejects_no_trust_domain() {
    let error =
        SvidVerifier::new(HashMap::new(), AUDIENCE.to_owned(), 0).expect_err("no trust domain");
    assert!(matches!(error, IdentityError::NoTrustDomain), "{error:?}");
    assert!(
        error.to_string().contains("no trust domain configured"),
        "{error}"
    );
}

// Token minted for another audience.

#[test]
fn verify_rejects_other_audience_string() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": "billing-api", "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::AudienceMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("billing-api"), "{error}");
    assert!(error.to_string().contains("`warden`"), "{error}");
}

#[test]
fn verify_rejects_other_audience_list() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": ["billing-api"], "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_err());
}

#[test]
fn verify_rejects_audience_differing_in_case() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": "Warden", "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_err());
}

// Key selection.

#[test]
fn verify_rejects_unknown_kid() {
    let key = TestKey::p256();
    let token = key.token(&header("ES256", Some("k2")), &claims(AGENT).to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(&error, IdentityError::UnknownKey { kid, .. } if kid == "k2"),
        "{error:?}"
    );
}

fn verifier_with_x509_key(jwt_key: &TestKey, x509_key: &TestKey) -> SvidVerifier {
    verifier_with(
        vec![(
            "a.test",
            bundle(vec![
                jwt_key.jwk("k1", Some("jwt-svid")),
                x509_key.jwk("x1", Some("x509-svid")),
            ]),
        )],
        0,
    )
}

#[test]
fn verify_skips_x509_svid_key_by_kid() {
    let jwt_key = TestKey::p256();
    let x509_key = TestKey::p256();
    let verifier = verifier_with_x509_key(&jwt_key, &x509_key);
    let token = x509_key.token(&header("ES256", Some("x1")), &claims(AGENT).to_string());
    let error = expect_error(verifier.verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::UnknownKey { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_skips_x509_svid_key_without_kid() {
    let jwt_key = TestKey::p256();
    let x509_key = TestKey::p256();
    let verifier = verifier_with_x509_key(&jwt_key, &x509_key);
    let token = x509_key.token(&header("ES256", None), &claims(AGENT).to_string());
    let error = expect_error(verifier.verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::InvalidSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_tries_every_key_without_kid() {
    let first = TestKey::p256();
    let second = TestKey::p256();
    let verifier = verifier_with(
        vec![(
            "a.test",
            bundle(vec![
                first.jwk("k1", Some("jwt-svid")),
                second.jwk("k2", Some("jwt-svid")),
            ]),
        )],
        0,
    );
    let token = second.token(&header("ES256", None), &claims(AGENT).to_string());
    assert!(verifier.verify(&token, NOW).is_ok());
}

#[test]
fn verify_ignores_jku_header() {
    let trusted = TestKey::p256();
    let attacker = TestKey::p256();
    let header = json!({
        "alg": "ES256",
        "typ": "JWT",
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5u": "http://127.0.0.1:9/cert.pem",
        "jwk": attacker.jwk("evil", None),
    })
    .to_string();
    let token = attacker.token(&header, &claims(AGENT).to_string());
    let error = expect_error(verifier_for(&trusted).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::InvalidSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_accepts_token_with_jku_header() {
    let key = TestKey::p256();
    let header = json!({
        "alg": "ES256",
        "kid": "k1",
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5c": ["MIIB"],
    })
    .to_string();
    let token = key.token(&header, &claims(AGENT).to_string());
    assert!(verifier_for(&key).verify(&token, NOW).is_ok());
}

// Signature and subject.

#[test]
fn verify_rejects_tampered_payload() {
    let key = TestKey::p256();
    let token = key.token(&header("ES256", Some("k1")), &claims(AGENT).to_string());
    let tampered = tamper_payload(&token, |payload| {
        payload["sub"] = json!("spiffe://a.test/agent/admin");
    });
    let error = expect_error(verifier_for(&key).verify(&tampered, NOW));
    assert!(
        matches!(error, IdentityError::InvalidSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_truncated_signature() {
    let key = TestKey::p256();
    let token = key.token(&header("ES256", Some("k1")), &claims(AGENT).to_string());
    let truncated = &token[..token.len() - 4];
    assert!(verifier_for(&key).verify(truncated, NOW).is_err());
}

#[test]
fn verify_rejects_duplicate_sub() {
    let key = TestKey::p256();
    let payload = format!(
        r#"{{"sub":"{AGENT}","sub":"spiffe://a.test/agent/admin","aud":"{AUDIENCE}","exp":{}}}"#,
        NOW + 300
    );
    let token = key.token(&header("ES256", Some("k1")), &payload);
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::Malformed { .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_missing_sub() {
    let key = TestKey::p256();
    let payload = json!({"aud": AUDIENCE, "exp": NOW + 300});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::MissingClaim { claim: "sub", .. }),
        "{error:?}"
    );
}

#[test]
fn verify_rejects_sub_that_is_not_spiffe_id() {
    let key = TestKey::p256();
    for sub in [
        "support-bot",
        "spiffe://A.test/agent",
        "spiffe://a.test/agent/../admin",
    ] {
        let token = key.token(&header("ES256", Some("k1")), &claims(sub).to_string());
        let error = expect_error(verifier_for(&key).verify(&token, NOW));
        assert!(
            matches!(&error, IdentityError::InvalidClaim { claim, .. } if claim == "sub"),
            "{sub}: {error:?}"
        );
    }
}

#[test]
fn verify_rejects_trust_domain_id_as_sub() {
    let key = TestKey::p256();
    let token = key.token(
        &header("ES256", Some("k1")),
        &claims("spiffe://a.test").to_string(),
    );
    assert!(verifier_for(&key).verify(&token, NOW).is_err());
}

#[test]
fn verify_rejects_non_string_jti() {
    let key = TestKey::p256();
    let payload = json!({"sub": AGENT, "aud": AUDIENCE, "exp": NOW + 300, "jti": 7});
    let token = key.token(&header("ES256", Some("k1")), &payload.to_string());
    let error = expect_error(verifier_for(&key).verify(&token, NOW));
    assert!(
        matches!(error, IdentityError::InvalidClaim { .. }),
        "{error:?}"
    );
}

// Construction.

#[test]
fn verifier_new_rejects_negative_leeway() {
    let key = TestKey::p256();
    let bundles = HashMap::from([("a.test".to_owned(), bundle(vec![key.jwk("k1", None)]))]);
    assert!(SvidVerifier::new(bundles, AUDIENCE.to_owned(), -1).is_err());
}

#[test]
fn verifier_new_rejects_leeway_above_maximum() {
    let key = TestKey::p256();
    let bundles = HashMap::from([("a.test".to_owned(), bundle(vec![key.jwk("k1", None)]))]);
    assert!(SvidVerifier::new(bundles, AUDIENCE.to_owned(), MAX_LEEWAY_SECONDS + 1).is_err());
}

#[test]
fn verifier_new_rejects_empty_audience() {
    let key = TestKey::p256();
    let bundles = HashMap::from([("a.test".to_owned(), bundle(vec![key.jwk("k1", None)]))]);
    assert!(SvidVerifier::new(bundles, String::new(), 0).is_err());
}

#[test]
fn verifier_new_rejects_invalid_trust_domain_name() {
    let key = TestKey::p256();
    let bundles = HashMap::from([(
        "spiffe://a.test".to_owned(),
        bundle(vec![key.jwk("k1", None)]),
    )]);
    assert!(SvidVerifier::new(bundles, AUDIENCE.to_owned(), 0).is_err());
}

#[test]
fn verifier_new_rejects_bundle_without_jwt_key() {
    let key = TestKey::p256();
    let bundles = HashMap::from([(
        "a.test".to_owned(),
        bundle(vec![key.jwk("x1", Some("x509-svid"))]),
    )]);
    let error = SvidVerifier::new(bundles, AUDIENCE.to_owned(), 0).expect_err("no JWT key");
    assert!(
        matches!(error, IdentityError::NoUsableKey { .. }),
        "{error:?}"
    );
}

#[test]
fn verifier_trust_domains_are_sorted() {
    let key = TestKey::p256();
    let verifier = verifier_with(
        vec![
            ("b.test", bundle(vec![key.jwk("k1", None)])),
            ("a.test", bundle(vec![key.jwk("k1", None)])),
        ],
        0,
    );
    assert_eq!(verifier.trust_domains(), vec!["a.test", "b.test"]);
}
