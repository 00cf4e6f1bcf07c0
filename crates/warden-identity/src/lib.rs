//! Warden's workload identity: SPIFFE IDs, JWT-SVID verification, the
//! development issuer and task tokens.
//!
//! An agent authenticates with a JWT-SVID, which [`SvidVerifier`] checks
//! against the SPIFFE bundle ([`Jwks`]) of the subject's trust domain.
//! Warden then issues a task token with [`TaskTokens`], signed by its own
//! [`SigningKey`]. Without SPIRE, [`DevIssuer`] signs JWT-SVIDs for a local
//! trust domain and publishes the matching bundle.
//!
//! Every verification error is an [`IdentityError`] whose message can be
//! sent to the caller as it is: it names the failed check, the offending
//! value and how to get a valid token.
//!
//! - [`spiffe`]: SPIFFE ID parsing.
//! - [`jwk`]: JWKs, JWK sets and SPIFFE bundles.
//! - [`svid`]: JWT-SVID verification.
//! - [`signing`]: Warden's ES256 key.
//! - [`dev_issuer`]: the development JWT-SVID issuer.
//! - [`task_token`]: task tokens.

pub mod dev_issuer;
pub mod error;
pub mod jwk;
pub mod jwt;
pub mod signing;
pub mod spiffe;
pub mod svid;
pub mod task_token;

#[cfg(test)]
mod test_support;

pub use dev_issuer::DevIssuer;
pub use error::{IdentityError, TokenKind};
pub use jwk::{Algorithm, Jwks, VerifyingKey};
pub use signing::SigningKey;
pub use spiffe::SpiffeId;
pub use svid::{SvidClaims, SvidVerifier};
pub use task_token::{TaskClaims, TaskTokens};
