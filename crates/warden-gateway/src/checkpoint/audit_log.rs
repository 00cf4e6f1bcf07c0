//! Verification of a whole audit log: the hash chain, read in pages, and
//! every checkpoint against the chain.
//!
//! Records and checkpoints are walked together in seq order, so the defect
//! reported is the one with the lowest seq. Each checkpoint must carry a
//! valid signature, and the record at its seq must exist and have its hash.
//! A checkpoint beyond the newest record shows that the tail was deleted.

use warden_identity::Jwks;
use warden_store::{
    AuditRecord, ChainError, Checkpoint, GENESIS_HASH, Store, StoreError, first_bad_seq,
    verify_chain,
};

use super::{PAGE_RECORDS, verify_checkpoint};
use crate::auth::format_time;

/// Counts and head of a valid audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLogSummary {
    /// Number of records.
    pub records: u64,
    /// Seq of the newest record; 0 when the log is empty.
    pub head_seq: i64,
    /// Hash of the newest record; the genesis hash when the log is empty.
    pub head_hash: String,
    /// Number of checkpoints.
    pub checkpoints: usize,
    /// Seq of the newest checkpoint, if any.
    pub newest_checkpoint: Option<i64>,
}

/// The first bad record of an invalid audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLogDefect {
    /// Seq of the first record that was changed, deleted, inserted or
    /// moved, or that a bad checkpoint names.
    pub seq: i64,
    /// Description of the defect, its meaning and the next step.
    pub message: String,
}

/// The outcome of [`verify_audit_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLogVerdict {
    /// The chain and every checkpoint verify.
    Valid(AuditLogSummary),
    /// The log was tampered with, or a checkpoint does not verify.
    Invalid(AuditLogDefect),
}

/// Verifies the audit log of `store`: the hash chain from the first record
/// to the newest, and every checkpoint with `keys`.
///
/// Fails only when the store fails; a tampered log is an
/// [`AuditLogVerdict::Invalid`].
pub async fn verify_audit_log(
    store: &dyn Store,
    keys: &Jwks,
) -> Result<AuditLogVerdict, StoreError> {
    let checkpoints = store.checkpoints().await?;
    let mut pending = checkpoints.iter().peekable();
    // The newest checkpoint that verified, for locating a rebuilt chain.
    let mut vouched: Option<&Checkpoint> = None;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut head_seq = 0;
    let mut records: u64 = 0;

    loop {
        let page = store.audit_range(head_seq, PAGE_RECORDS).await?;
        if page.is_empty() {
            break;
        }
        let expected_prev = prev_hash.clone();
        let (page, chain) = tokio::task::spawn_blocking(move || {
            let chain = verify_chain(&page, &expected_prev);
            (page, chain)
        })
        .await
        .map_err(|error| StoreError::Interrupted {
            store: "the audit log".to_owned(),
            operation: "verify the hash chain".to_owned(),
            message: error.to_string(),
        })?;
        let intact = match &chain {
            Ok(()) => page.len(),
            Err(error) => page
                .iter()
                .position(|record| record.seq == error.seq())
                .unwrap_or(0),
        };

        for record in &page[..intact] {
            while let Some(checkpoint) = pending.next_if(|checkpoint| checkpoint.seq <= record.seq)
            {
                if let Err(defect) = check_checkpoint(checkpoint, record, keys, vouched) {
                    return Ok(AuditLogVerdict::Invalid(defect));
                }
                vouched = Some(checkpoint);
            }
        }
        if let Err(error) = chain {
            return Ok(AuditLogVerdict::Invalid(chain_defect(
                &error,
                &page[intact],
            )));
        }

        records += page.len() as u64;
        if let Some(last) = page.last() {
            prev_hash.clone_from(&last.hash);
            head_seq = last.seq;
        }
    }

    if let Some(beyond) = pending.next() {
        return Ok(AuditLogVerdict::Invalid(truncation_defect(
            beyond, head_seq, keys,
        )));
    }
    Ok(AuditLogVerdict::Valid(AuditLogSummary {
        records,
        head_seq,
        head_hash: prev_hash,
        checkpoints: checkpoints.len(),
        newest_checkpoint: checkpoints.last().map(|checkpoint| checkpoint.seq),
    }))
}

/// Checks one checkpoint against `record`, the first record at or after
/// its seq. `vouched` is the previous checkpoint that verified.
fn check_checkpoint(
    checkpoint: &Checkpoint,
    record: &AuditRecord,
    keys: &Jwks,
    vouched: Option<&Checkpoint>,
) -> Result<(), AuditLogDefect> {
    if let Err(error) = verify_checkpoint(checkpoint, keys) {
        return Err(signature_defect(checkpoint, &error));
    }
    if record.seq != checkpoint.seq {
        return Err(AuditLogDefect {
            seq: checkpoint.seq,
            message: format!(
                "the checkpoint signed at {} names seq {}, which no record has; restore the store from a backup",
                format_time(checkpoint.created_at),
                checkpoint.seq
            ),
        });
    }
    if record.hash != checkpoint.hash {
        let changed = match vouched {
            Some(previous) => format!(
                "a record after seq {} and up to seq {}",
                previous.seq, checkpoint.seq
            ),
            None => format!("a record up to seq {}", checkpoint.seq),
        };
        return Err(AuditLogDefect {
            seq: checkpoint.seq,
            message: format!(
                "its hash is {}, but the checkpoint signed at {} fixed it as {}; {changed} was changed and every later hash recomputed, so restore the store from a backup",
                record.hash,
                format_time(checkpoint.created_at),
                checkpoint.hash
            ),
        });
    }
    Ok(())
}

/// Describes a checkpoint whose signature does not verify.
fn signature_defect(checkpoint: &Checkpoint, error: &super::CheckpointError) -> AuditLogDefect {
    AuditLogDefect {
        seq: checkpoint.seq,
        message: format!(
            "its checkpoint is invalid: {error}; the checkpoint was edited, forged or signed with another key, so the records up to seq {} are not vouched for; restore the store from a backup, or verify with the JWK set of the key that signed it",
            checkpoint.seq
        ),
    }
}

/// Describes a break in the hash chain at `record`, the record that
/// `error` names.
fn chain_defect(error: &ChainError, record: &AuditRecord) -> AuditLogDefect {
    AuditLogDefect {
        seq: first_bad_seq(error, record),
        message: error.to_string(),
    }
}

/// Describes a checkpoint beyond the newest record at `head_seq`: the tail
/// was deleted, unless the checkpoint itself is forged.
fn truncation_defect(checkpoint: &Checkpoint, head_seq: i64, keys: &Jwks) -> AuditLogDefect {
    if let Err(error) = verify_checkpoint(checkpoint, keys) {
        return signature_defect(checkpoint, &error);
    }
    let ends = if head_seq == 0 {
        "the audit log is empty".to_owned()
    } else {
        format!("the audit log ends at seq {head_seq}")
    };
    AuditLogDefect {
        seq: head_seq + 1,
        message: format!(
            "it is missing because {ends} but the checkpoint signed at {} covers records up to seq {}, so records {} to {} were deleted; restore the store from a backup",
            format_time(checkpoint.created_at),
            checkpoint.seq,
            head_seq + 1,
            checkpoint.seq
        ),
    }
}
