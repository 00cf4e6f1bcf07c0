//! Shared building blocks of Warden that do no I/O.
//!
//! - [`json`]: a strict JSON parser that rejects duplicate keys, and the
//!   canonical encoding that argument hashes and the audit chain rely on.
//! - [`path`]: lexical normalisation of file paths so that policies compare
//!   whole path components.
//! - [`Decision`]: the outcome of a policy decision.

pub mod json;
pub mod path;

use serde::{Deserialize, Serialize};

/// The outcome of deciding one step of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The step may run.
    Allow,
    /// The step is refused.
    Deny,
    /// The step waits for a human approval.
    Hold,
}

impl Decision {
    /// Returns the lowercase wire name (`allow`, `deny`, `hold`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Hold => "hold",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the lowercase hex SHA-256 digest of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
