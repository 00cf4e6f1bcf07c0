//! JWT-SVID verification against SPIFFE trust bundles.
//!
//! The subject's trust domain selects the bundle, the header `kid` (or,
//! without one, every JWT key of that bundle) selects the key, and the key
//! fixes the algorithm. Only then are the claims read: `exp` and `aud` are
//! required, time claims must be JSON numbers, and the audience must contain
//! the one Warden was configured with.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{IdentityError, TokenKind};
use crate::jwk::{Jwks, VerifyingKey};
use crate::jwt::{self, UnverifiedJws};
use crate::spiffe::SpiffeId;

/// Maximum clock leeway, in seconds, that [`SvidVerifier::new`] accepts.
pub const MAX_LEEWAY_SECONDS: i64 = 300;

const KIND: TokenKind = TokenKind::JwtSvid;

/// The verified claims of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidClaims {
    /// The workload's SPIFFE ID, from `sub`.
    pub spiffe_id: SpiffeId,
    /// The `aud` claim as a list; it contains the verifier's audience.
    pub audience: Vec<String>,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The `iat` claim, in seconds since the Unix epoch, when present.
    pub issued_at: Option<i64>,
    /// The `jti` claim, when present.
    pub jti: Option<String>,
}

/// Verifies JWT-SVIDs with one SPIFFE bundle per trust domain.
#[derive(Debug, Clone)]
pub struct SvidVerifier {
    bundles: HashMap<String, Jwks>,
    audience: String,
    leeway_seconds: i64,
}

impl SvidVerifier {
    /// Creates a verifier from bundles keyed by trust domain name (such as
    /// `acme.test`), the audience a token must contain, and the clock
    /// leeway in seconds.
    ///
    /// Fails when `bundles` is empty, a trust domain name is invalid, a
    /// bundle has no JWT-SVID key, the audience is empty, or the leeway is
    /// negative or above [`MAX_LEEWAY_SECONDS`].
    pub fn new(
        bundles: HashMap<String, Jwks>,
        audience: String,
        leeway_seconds: i64,
    ) -> Result<SvidVerifier, IdentityError> {
        if bundles.is_empty() {
            return Err(IdentityError::NoTrustDomain);
        }
        for (trust_domain, bundle) in &bundles {
            SpiffeId::from_trust_domain(trust_domain).map_err(|error| {
                IdentityError::InvalidConfig {
                    reason: format!(
                        "trust bundle key `{trust_domain}` is not a trust domain name: {error}"
                    ),
                }
            })?;
            if bundle.jwt_svid_keys().next().is_none() {
                return Err(IdentityError::NoUsableKey {
                    trust_domain: trust_domain.clone(),
                });
            }
        }
        if audience.is_empty() {
            return Err(IdentityError::InvalidConfig {
                reason: "the JWT-SVID audience is empty; set it to the audience agents \
                         request for Warden, e.g. `warden`"
                    .to_owned(),
            });
        }
        if !(0..=MAX_LEEWAY_SECONDS).contains(&leeway_seconds) {
            return Err(IdentityError::InvalidConfig {
                reason: format!(
                    "clock leeway {leeway_seconds} s is outside 0 to {MAX_LEEWAY_SECONDS} s; \
                     use a small value such as 30"
                ),
            });
        }
        Ok(SvidVerifier {
            bundles,
            audience,
            leeway_seconds,
        })
    }

    /// Verifies a compact JWT-SVID at time `now_unix` (seconds since the
    /// Unix epoch) and returns its claims.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<SvidClaims, IdentityError> {
        let jws = jwt::parse(token, KIND)?;
        let spiffe_id = subject(&jws.payload)?;
        let trust_domain = spiffe_id.trust_domain();
        let bundle =
            self.bundles
                .get(trust_domain)
                .ok_or_else(|| IdentityError::UnknownTrustDomain {
                    trust_domain: trust_domain.to_owned(),
                    configured: self.trust_domains(),
                })?;
        verify_signature(&jws, bundle, trust_domain)?;

        let times = jwt::check_time_claims(&jws.payload, KIND, now_unix, self.leeway_seconds)?;
        let audience = jwt::audience(&jws.payload, KIND)?;
        if !audience.contains(&self.audience) {
            return Err(IdentityError::AudienceMismatch {
                kind: KIND,
                expected: self.audience.clone(),
                found: audience,
            });
        }
        let jti = jwt::optional_string_claim(&jws.payload, "jti", KIND)?;

        Ok(SvidClaims {
            spiffe_id,
            audience,
            expires_at: times.expires_at,
            issued_at: times.issued_at,
            jti,
        })
    }

    /// Returns the configured trust domain names, sorted.
    pub fn trust_domains(&self) -> Vec<String> {
        let mut names: Vec<String> = self.bundles.keys().cloned().collect();
        names.sort();
        names
    }

    /// Returns the audience a JWT-SVID must contain.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// Reads `sub` as the SPIFFE ID of a workload.
fn subject(payload: &serde_json::Map<String, Value>) -> Result<SpiffeId, IdentityError> {
    let sub = match payload.get("sub") {
        None => {
            return Err(IdentityError::MissingClaim {
                kind: KIND,
                claim: "sub",
            });
        }
        Some(Value::String(sub)) => sub,
        Some(other) => {
            return Err(jwt::invalid_claim(
                KIND,
                "sub",
                format!(
                    "must be a SPIFFE ID string, found {}",
                    jwt::json_type(other)
                ),
            ));
        }
    };
    let spiffe_id =
        SpiffeId::parse(sub).map_err(|error| jwt::invalid_claim(KIND, "sub", error.to_string()))?;
    if spiffe_id.is_trust_domain_id() {
        return Err(jwt::invalid_claim(
            KIND,
            "sub",
            format!("`{spiffe_id}` names a trust domain, not a workload; it needs a path"),
        ));
    }
    Ok(spiffe_id)
}

/// Finds the key for the token in `bundle` and checks the signature.
fn verify_signature(
    jws: &UnverifiedJws<'_>,
    bundle: &Jwks,
    trust_domain: &str,
) -> Result<(), IdentityError> {
    if let Some(kid) = &jws.kid {
        let key = bundle
            .jwt_svid_keys()
            .find(|key| key.kid.as_deref() == Some(kid.as_str()))
            .ok_or_else(|| IdentityError::UnknownKey {
                kind: KIND,
                kid: kid.chars().take(128).collect(),
                scope: format!("JWT-SVID keys of trust domain `{trust_domain}`"),
            })?;
        check_algorithm(jws, key)?;
        return if key.verify(jws.signing_input, &jws.signature) {
            Ok(())
        } else {
            Err(IdentityError::InvalidSignature { kind: KIND })
        };
    }

    // Without a kid, every JWT key whose algorithm matches the header is
    // tried; the header cannot pick an algorithm no key has.
    let candidates: Vec<&VerifyingKey> = bundle.jwt_svid_keys().collect();
    let Some(first) = candidates.first() else {
        return Err(IdentityError::NoUsableKey {
            trust_domain: trust_domain.to_owned(),
        });
    };
    let matching: Vec<&&VerifyingKey> = candidates
        .iter()
        .filter(|key| key.algorithm == jws.algorithm)
        .collect();
    if matching.is_empty() {
        return check_algorithm(jws, first);
    }
    if matching
        .iter()
        .any(|key| key.verify(jws.signing_input, &jws.signature))
    {
        Ok(())
    } else {
        Err(IdentityError::InvalidSignature { kind: KIND })
    }
}

fn check_algorithm(jws: &UnverifiedJws<'_>, key: &VerifyingKey) -> Result<(), IdentityError> {
    if jws.algorithm == key.algorithm {
        return Ok(());
    }
    Err(IdentityError::AlgorithmMismatch {
        kind: KIND,
        header: jws.algorithm.to_string(),
        expected: key.algorithm,
        kid: key.kid.clone(),
    })
}

#[cfg(test)]
mod tests;
