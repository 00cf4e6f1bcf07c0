//! Signed checkpoints of the audit chain's head.
//!
//! The hash chain exposes an edited, deleted, inserted or moved record, but
//! not a deleted tail or a chain recomputed after an edit: both leave a
//! consistent chain. A checkpoint fixes the seq and hash of the head at one
//! moment with a signature by Warden's task-token key, which write access
//! to the database alone cannot forge. [`verify_audit_log`] checks the
//! chain and then every checkpoint against it.
//!
//! A running gateway writes a checkpoint every
//! `audit.checkpoint_interval_seconds` when the head moved, and a final one
//! at shutdown ([`CheckpointTask`]). Before it signs, the [`Checkpointer`]
//! verifies the records added since its previous checkpoint, so it reports
//! a chain changed in the database while Warden runs instead of signing it.

mod audit_log;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use warden_identity::{Algorithm, IdentityError, Jwks, SigningKey};
use warden_store::{Checkpoint, GENESIS_HASH, Store, StoreError, verify_chain};

use crate::state::AppState;

pub use self::audit_log::{AuditLogDefect, AuditLogSummary, AuditLogVerdict, verify_audit_log};

/// The JWS `typ` header of a checkpoint signature. Task token verification
/// accepts only `JWT` or `JOSE`, so a checkpoint never passes as a token.
pub const CHECKPOINT_TYPE: &str = "warden-audit-checkpoint";

/// Maximum size of a checkpoint signature, in bytes. A signature that
/// Warden writes is about 400 bytes, so a larger one is rejected before
/// any decoding.
pub const MAX_SIGNATURE_BYTES: usize = 4096;

/// Maximum time between periodic checkpoints. A longer configured interval
/// is shortened to it, because a timer that far ahead overflows the clock.
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Records loaded and hashed at a time when records are verified.
const PAGE_RECORDS: usize = 10_000;

/// An error from signing, verifying or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signature is not a compact JWS that Warden writes for
    /// checkpoints.
    #[error("the checkpoint signature is malformed: {reason}")]
    Malformed {
        /// The broken rule.
        reason: String,
    },

    /// The signature names a key that is not among the verification keys.
    #[error(
        "the checkpoint is signed with key id {kid:?}, which is not among the verification keys ({known}); verify with the key that signed it, for example with --jwks FILE"
    )]
    UnknownKey {
        /// The `kid` header.
        kid: String,
        /// The ids of the keys tried, comma-separated.
        known: String,
    },

    /// The signature does not verify with the key it names.
    #[error("the checkpoint signature does not verify with key {kid:?}")]
    InvalidSignature {
        /// The `kid` of the key tried.
        kid: String,
    },

    /// The signature is valid, but over other values than the checkpoint's
    /// stored seq, hash and time.
    #[error(
        "the stored checkpoint (seq {seq}, hash {hash}, created_at {created_at}) differs from its signed payload {signed}"
    )]
    PayloadMismatch {
        /// The stored seq.
        seq: i64,
        /// The stored hash.
        hash: String,
        /// The stored creation time, in unix seconds.
        created_at: i64,
        /// The signed payload, shortened.
        signed: String,
    },

    /// The signing key failed to sign.
    #[error("cannot sign the checkpoint of seq {seq}: {source}")]
    Sign {
        /// The seq to be checkpointed.
        seq: i64,
        /// The key's error.
        source: IdentityError,
    },

    /// The signing key's public half does not load as a JWK.
    #[error("the checkpoint signing key is unusable: {source}")]
    Key {
        /// The key's error.
        source: IdentityError,
    },

    /// The records since the previous checkpoint do not verify, so the
    /// head is not signed.
    #[error(
        "not signing a checkpoint of seq {seq}: {reason}; `warden audit verify` names the first bad record"
    )]
    ChainChanged {
        /// The head seq that was to be signed.
        seq: i64,
        /// Description of the defect in the records.
        reason: String,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Returns the canonical JSON that a checkpoint's signature covers:
/// `{"created_at":...,"hash":"...","seq":...}`.
pub fn checkpoint_payload(seq: i64, hash: &str, created_at: i64) -> String {
    warden_core::json::canonical(&json!({
        "seq": seq,
        "hash": hash,
        "created_at": created_at,
    }))
}

/// Signs the head `seq` and `hash` at `created_at` (unix seconds) with
/// `key`.
pub fn sign_checkpoint(
    key: &SigningKey,
    seq: i64,
    hash: &str,
    created_at: i64,
) -> Result<Checkpoint, CheckpointError> {
    let payload = checkpoint_payload(seq, hash, created_at);
    let signature = key
        .sign_jws(CHECKPOINT_TYPE, payload.as_bytes())
        .map_err(|source| CheckpointError::Sign { seq, source })?;
    Ok(Checkpoint {
        seq,
        hash: hash.to_owned(),
        created_at,
        signature,
    })
}

/// Verifies that `checkpoint.signature` is an ES256 signature by one of
/// `keys` (matched by `kid`) over exactly the checkpoint's seq, hash and
/// creation time.
///
/// Only keys without a `use` or with `"use":"sig"` are tried, and the
/// algorithm comes from the key, never from the header.
pub fn verify_checkpoint(checkpoint: &Checkpoint, keys: &Jwks) -> Result<(), CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed { reason };
    let jws = checkpoint.signature.as_str();
    if jws.len() > MAX_SIGNATURE_BYTES {
        return Err(malformed(format!(
            "it is {} bytes long, more than the maximum of {MAX_SIGNATURE_BYTES}",
            jws.len()
        )));
    }
    let segments: Vec<&str> = jws.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = segments[..] else {
        return Err(malformed(format!(
            "expected 3 dot-separated segments (header.payload.signature), found {}",
            segments.len()
        )));
    };

    let header = decode_header(header_b64)?;
    let kid = check_header(&header)?;
    let signing_keys: Vec<_> = keys
        .keys()
        .iter()
        .filter(|key| key.algorithm == Algorithm::ES256)
        .filter(|key| matches!(key.key_use.as_deref(), None | Some("sig")))
        .collect();
    let Some(key) = signing_keys
        .iter()
        .find(|key| key.kid.as_deref() == Some(kid))
    else {
        let known: Vec<&str> = signing_keys
            .iter()
            .filter_map(|key| key.kid.as_deref())
            .collect();
        return Err(CheckpointError::UnknownKey {
            kid: kid.chars().take(128).collect(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    };

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|error| malformed(format!("the signature is not unpadded base64url: {error}")))?;
    let signing_input = &jws.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify(signing_input, &signature) {
        return Err(CheckpointError::InvalidSignature {
            kid: kid.to_owned(),
        });
    }

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|error| malformed(format!("the payload is not unpadded base64url: {error}")))?;
    let expected = checkpoint_payload(checkpoint.seq, &checkpoint.hash, checkpoint.created_at);
    if payload != expected.as_bytes() {
        return Err(CheckpointError::PayloadMismatch {
            seq: checkpoint.seq,
            hash: checkpoint.hash.clone(),
            created_at: checkpoint.created_at,
            signed: String::from_utf8_lossy(&payload)
                .chars()
                .take(256)
                .collect(),
        });
    }
    Ok(())
}

/// Returns a JWK set holding the public half of `key`, with
/// `"use":"sig"`, as `warden audit jwks` prints it.
pub fn checkpoint_jwks(key: &SigningKey) -> Value {
    json!({ "keys": [key.public_jwk(Some("sig"))] })
}

/// Writes checkpoints of one store's head with one key.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    key: SigningKey,
    keys: Jwks,
    /// Seq and hash of the newest head known to be good: the last one
    /// signed, or the newest stored checkpoint at start. `None` until the
    /// first call.
    base: Mutex<Option<(i64, String)>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Creates a checkpointer of `store` that signs with `key`.
    pub fn new(store: Arc<dyn Store>, key: SigningKey) -> Result<Checkpointer, CheckpointError> {
        let keys = Jwks::from_json(&checkpoint_jwks(&key))
            .map_err(|source| CheckpointError::Key { source })?;
        Ok(Checkpointer {
            store,
            key,
            keys,
            base: Mutex::new(None),
        })
    }

    /// Signs and stores a checkpoint of the head at `now` (unix seconds)
    /// when the head moved since the previous checkpoint, and returns it.
    /// Returns `None` when the log is empty or the head has not moved.
    ///
    /// Fails with [`CheckpointError::ChainChanged`], and signs nothing,
    /// when the records since the previous checkpoint do not verify from
    /// its hash. It also fails so when the log shrank below that checkpoint.
    pub async fn checkpoint(&self, now: i64) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut base = self.base.lock().await;
        let (base_seq, base_hash) = match &*base {
            Some(known) => known.clone(),
            None => {
                let resumed = self.resume().await?;
                *base = Some(resumed.clone());
                resumed
            }
        };

        let Some((head_seq, head_hash)) = self.store.audit_head().await? else {
            if base_seq > 0 {
                return Err(CheckpointError::ChainChanged {
                    seq: 0,
                    reason: format!(
                        "the audit log is empty although a checkpoint covers records up to seq {base_seq}, so records were deleted"
                    ),
                });
            }
            return Ok(None);
        };
        if head_seq < base_seq {
            return Err(CheckpointError::ChainChanged {
                seq: head_seq,
                reason: format!(
                    "the audit log ends at seq {head_seq}, before seq {base_seq} of the previous checkpoint, so records were deleted"
                ),
            });
        }
        if head_seq == base_seq {
            if head_hash != base_hash {
                return Err(CheckpointError::ChainChanged {
                    seq: head_seq,
                    reason: format!(
                        "the record at seq {head_seq} has hash {head_hash}, but the previous checkpoint signed {base_hash}, so the record was changed"
                    ),
                });
            }
            return Ok(None);
        }

        let verified_hash = self.verify_since(base_seq, &base_hash, head_seq).await?;
        let checkpoint = sign_checkpoint(&self.key, head_seq, &verified_hash, now)?;
        self.store.insert_checkpoint(&checkpoint).await?;
        *base = Some((head_seq, verified_hash));
        Ok(Some(checkpoint))
    }

    /// Returns the newest stored checkpoint's seq and hash when it verifies
    /// with this checkpointer's key, else the current head.
    async fn resume(&self) -> Result<(i64, String), CheckpointError> {
        let checkpoints = self.store.checkpoints().await?;
        let Some(newest) = checkpoints.last() else {
            return Ok((0, GENESIS_HASH.to_owned()));
        };
        match verify_checkpoint(newest, &self.keys) {
            Ok(()) => Ok((newest.seq, newest.hash.clone())),
            Err(error) => {
                // The key file was replaced, or the row was edited, and
                // `warden audit verify` reports both. Later checkpoints can
                // only vouch for records from the current head on.
                tracing::warn!(
                    %error,
                    audit.seq = newest.seq,
                    "newest audit checkpoint does not verify with this Warden's key; new checkpoints start from the current head"
                );
                Ok(self
                    .store
                    .audit_head()
                    .await?
                    .unwrap_or_else(|| (0, GENESIS_HASH.to_owned())))
            }
        }
    }

    /// Verifies the records after `base_seq` up to `head_seq` from
    /// `base_hash`, and returns the hash of the record at `head_seq`.
    async fn verify_since(
        &self,
        base_seq: i64,
        base_hash: &str,
        head_seq: i64,
    ) -> Result<String, CheckpointError> {
        let changed = |reason: String| CheckpointError::ChainChanged {
            seq: head_seq,
            reason,
        };
        let mut prev_hash = base_hash.to_owned();
        let mut after = base_seq;
        while after < head_seq {
            let remaining = usize::try_from(head_seq - after).unwrap_or(usize::MAX);
            let page = self
                .store
                .audit_range(after, remaining.min(PAGE_RECORDS))
                .await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                return Err(changed(format!(
                    "the records after seq {after} up to seq {head_seq} are missing"
                )));
            };
            if first.seq != after + 1 {
                return Err(changed(format!(
                    "the record at seq {} is missing, and the next record is seq {}",
                    after + 1,
                    first.seq
                )));
            }
            let (next_seq, next_hash) = (last.seq, last.hash.clone());
            let expected_prev = prev_hash.clone();
            let verified = tokio::task::spawn_blocking(move || verify_chain(&page, &expected_prev))
                .await
                .map_err(|error| changed(format!("chain verification stopped: {error}")))?;
            verified.map_err(|error| changed(error.to_string()))?;
            prev_hash = next_hash;
            after = next_seq;
        }
        Ok(prev_hash)
    }
}

/// The checkpoints of a running gateway: periodic ones on a task, and a
/// final one from [`CheckpointTask::finish`].
#[derive(Debug)]
pub struct CheckpointTask {
    checkpointer: Arc<Checkpointer>,
    stop: Option<oneshot::Sender<()>>,
    periodic: Option<JoinHandle<()>>,
}

impl CheckpointTask {
    /// Starts writing a checkpoint every `interval`, the first one at once.
    /// A zero interval writes only the final checkpoint.
    pub fn start(checkpointer: Arc<Checkpointer>, interval: Duration) -> CheckpointTask {
        if interval.is_zero() {
            return CheckpointTask {
                checkpointer,
                stop: None,
                periodic: None,
            };
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let periodic_checkpointer = Arc::clone(&checkpointer);
        let periodic = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.min(MAX_INTERVAL));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => write_checkpoint(&periodic_checkpointer).await,
                }
            }
        });
        CheckpointTask {
            checkpointer,
            stop: Some(stop),
            periodic: Some(periodic),
        }
    }

    /// Starts the checkpoints of a gateway: the store of `state`, the
    /// task-token key of its data directory and its configured interval.
    pub fn for_gateway(state: &AppState) -> anyhow::Result<CheckpointTask> {
        let path = crate::server::task_key_path(&state.config.data_dir());
        let key = SigningKey::load_or_create(&path).with_context(|| {
            format!("cannot load the checkpoint signing key {}", path.display())
        })?;
        let checkpointer = Checkpointer::new(Arc::clone(&state.store), key)?;
        let interval = Duration::from_secs(state.config.audit.checkpoint_interval_seconds);
        Ok(CheckpointTask::start(Arc::new(checkpointer), interval))
    }

    /// Stops the periodic checkpoints and writes the final one. Call it
    /// after the store is flushed, so the final checkpoint covers every
    /// record.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already, and then there is nothing to stop.
            stop.send(()).ok();
        }
        if let Some(periodic) = self.periodic.take()
            && let Err(error) = periodic.await
        {
            tracing::error!(%error, "the periodic audit checkpoint task failed");
        }
        write_checkpoint(&self.checkpointer).await;
    }
}

/// Writes one checkpoint and logs a failure. Checkpoints are off the
/// request path, so a failure is logged, not returned.
async fn write_checkpoint(checkpointer: &Checkpointer) {
    match checkpointer.checkpoint(crate::auth::now_unix()).await {
        Ok(Some(checkpoint)) => {
            tracing::info!(audit.seq = checkpoint.seq, "audit checkpoint written");
        }
        Ok(None) => tracing::debug!("audit head unchanged; no checkpoint written"),
        Err(error) => tracing::error!(%error, "audit checkpoint failed"),
    }
}

/// Decodes the header segment as a JSON object, rejecting duplicate keys.
fn decode_header(segment: &str) -> Result<Map<String, Value>, CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed { reason };
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|error| malformed(format!("the header is not unpadded base64url: {error}")))?;
    match warden_core::json::parse_strict(&bytes) {
        Ok(Value::Object(header)) => Ok(header),
        Ok(_) => Err(malformed("the header is not a JSON object".to_owned())),
        Err(error) => Err(malformed(format!("the header is not valid JSON: {error}"))),
    }
}

/// Checks `alg`, `typ` and `crit` and returns the `kid`.
fn check_header(header: &Map<String, Value>) -> Result<&str, CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed { reason };
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(malformed(format!(
            "header alg is {}, but checkpoints are signed with ES256",
            describe(header.get("alg"))
        )));
    }
    if header.get("typ").and_then(Value::as_str) != Some(CHECKPOINT_TYPE) {
        return Err(malformed(format!(
            "header typ is {}, but checkpoints have typ {CHECKPOINT_TYPE:?}",
            describe(header.get("typ"))
        )));
    }
    if header.contains_key("crit") {
        return Err(malformed(
            "the header has crit, but checkpoints use no JWS extension".to_owned(),
        ));
    }
    match header.get("kid").and_then(Value::as_str) {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(malformed(format!(
            "header kid is {}, but a non-empty string is required",
            describe(header.get("kid"))
        ))),
    }
}

/// Describes a header value for messages, shortened.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(value) => value.to_string().chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests;
