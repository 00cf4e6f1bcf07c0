//! The built-in development JWT-SVID issuer.
//!
//! On a machine without SPIRE, Warden signs JWT-SVIDs for one local trust
//! domain with its own key and publishes that key as a SPIFFE bundle, so
//! the same [`SvidVerifier`](crate::SvidVerifier) path checks them.

use serde_json::{Value, json};

use crate::error::IdentityError;
use crate::jwk::JWT_SVID_USE;
use crate::signing::SigningKey;
use crate::spiffe::SpiffeId;

/// The `spiffe_refresh_hint`, in seconds, published in the bundle.
pub const BUNDLE_REFRESH_HINT_SECONDS: u64 = 300;

/// The built-in development JWT-SVID issuer for machines without SPIRE.
#[derive(Debug)]
pub struct DevIssuer {
    trust_domain: String,
    key: SigningKey,
}

impl DevIssuer {
    /// Creates an issuer for `trust_domain` (a name such as `dev.local`)
    /// that signs with `key`.
    pub fn new(trust_domain: &str, key: SigningKey) -> Result<DevIssuer, IdentityError> {
        SpiffeId::from_trust_domain(trust_domain)?;
        Ok(DevIssuer {
            trust_domain: trust_domain.to_owned(),
            key,
        })
    }

    /// Returns the trust domain this issuer serves.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a JWT-SVID for `spiffe_id` with claims `sub`, `aud` (always a
    /// list), `exp`, `iat` and a random `jti`.
    ///
    /// Rejects an ID outside this issuer's trust domain, an ID without a
    /// workload path, an empty audience and a TTL of zero.
    pub fn issue(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl_seconds: u64,
        now_unix: i64,
    ) -> Result<String, IdentityError> {
        if spiffe_id.trust_domain() != self.trust_domain {
            return Err(IdentityError::ForeignTrustDomain {
                spiffe_id: spiffe_id.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if spiffe_id.is_trust_domain_id() {
            return Err(invalid_request(format!(
                "`{spiffe_id}` names the trust domain, not a workload; \
                 add a path such as spiffe://{}/agent/NAME",
                self.trust_domain
            )));
        }
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            return Err(invalid_request(
                "the audience is empty; pass the audience of the service that will \
                 verify the JWT-SVID, e.g. `warden`"
                    .to_owned(),
            ));
        }
        if ttl_seconds == 0 {
            return Err(invalid_request(
                "the TTL is 0 seconds; pass a positive lifetime".to_owned(),
            ));
        }
        let expires_at = i64::try_from(ttl_seconds)
            .ok()
            .and_then(|ttl| now_unix.checked_add(ttl))
            .ok_or_else(|| {
                invalid_request(format!(
                    "the TTL of {ttl_seconds} seconds puts the expiry beyond the range of Unix times"
                ))
            })?;

        let claims = json!({
            "sub": spiffe_id.as_str(),
            "aud": audience,
            "exp": expires_at,
            "iat": now_unix,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        self.key.sign_jwt(&claims)
    }

    /// Returns the SPIFFE bundle that verifies this issuer's JWT-SVIDs:
    /// `{"keys":[jwk with "use":"jwt-svid"],"spiffe_refresh_hint":300}`.
    pub fn bundle(&self) -> Value {
        json!({
            "keys": [self.key.public_jwk(Some(JWT_SVID_USE))],
            "spiffe_refresh_hint": BUNDLE_REFRESH_HINT_SECONDS,
        })
    }
}

fn invalid_request(reason: String) -> IdentityError {
    IdentityError::InvalidIssueRequest { reason }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::jwk::Jwks;
    use crate::svid::SvidVerifier;

    const NOW: i64 = 1_796_378_400;

    fn issuer() -> DevIssuer {
        DevIssuer::new("dev.test", SigningKey::generate().expect("generate key")).expect("issuer")
    }

    fn agent() -> SpiffeId {
        SpiffeId::parse("spiffe://dev.test/agent/support-bot").expect("valid id")
    }

    fn audience() -> Vec<String> {
        vec!["warden".to_owned()]
    }

    #[test]
    fn dev_issuer_token_verifies_with_its_bundle() {
        let issuer = issuer();
        let bundle = Jwks::from_json(&issuer.bundle()).expect("bundle parses");
        let verifier = SvidVerifier::new(
            HashMap::from([("dev.test".to_owned(), bundle)]),
            "warden".to_owned(),
            0,
        )
        .expect("verifier");

        let token = issuer
            .issue(&agent(), &audience(), 300, NOW)
            .expect("issue");
        let claims = verifier.verify(&token, NOW + 10).expect("verify");
        assert_eq!(claims.spiffe_id, agent());
        assert_eq!(claims.audience, audience());
        assert_eq!(claims.expires_at, NOW + 300);
        assert_eq!(claims.issued_at, Some(NOW));
        assert!(claims.jti.is_some());
    }

    #[test]
    fn dev_issuer_bundle_has_refresh_hint_and_use() {
        let bundle = issuer().bundle();
        assert_eq!(bundle["spiffe_refresh_hint"], 300);
        assert_eq!(bundle["keys"][0]["use"], "jwt-svid");
    }

    #[test]
    fn dev_issuer_rejects_foreign_trust_domain() {
        let other = SpiffeId::parse("spiffe://prod.test/agent/x").expect("valid id");
        let error = issuer()
            .issue(&other, &audience(), 300, NOW)
            .expect_err("foreign trust domain");
        assert!(
            matches!(error, IdentityError::ForeignTrustDomain { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn dev_issuer_rejects_trust_domain_id() {
        let root = SpiffeId::from_trust_domain("dev.test").expect("valid id");
        assert!(issuer().issue(&root, &audience(), 300, NOW).is_err());
    }

    #[test]
    fn dev_issuer_rejects_empty_audience() {
        assert!(issuer().issue(&agent(), &[], 300, NOW).is_err());
    }

    #[test]
    fn dev_issuer_rejects_zero_ttl() {
        assert!(issuer().issue(&agent(), &audience(), 0, NOW).is_err());
    }

    #[test]
    fn dev_issuer_rejects_overflowing_ttl() {
        assert!(
            issuer()
                .issue(&agent(), &audience(), u64::MAX, NOW)
                .is_err()
        );
    }

    #[test]
    fn dev_issuer_rejects_invalid_trust_domain() {
        let key = SigningKey::generate().expect("generate key");
        assert!(DevIssuer::new("Dev.Test", key).is_err());
    }

    #[test]
    fn dev_issuer_issues_unique_jti() {
        let issuer = issuer();
        let first = issuer
            .issue(&agent(), &audience(), 300, NOW)
            .expect("issue");
        let second = issuer
            .issue(&agent(), &audience(), 300, NOW)
            .expect("issue");
        assert_ne!(first, second);
    }
}
