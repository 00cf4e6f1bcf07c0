//! Shared state of a running gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use warden_config::Config;
use warden_identity::{SvidVerifier, TaskClaims, TaskTokens};
use warden_policy::PolicyEngine;
use warden_store::{Store, StoreEvent};

use crate::mcp::Sessions;
use crate::metrics::Metrics;
use crate::policy_source::PolicySource;
use crate::upstream::Upstream;

/// Everything a request handler needs, shared behind an `Arc`.
pub struct AppState {
    /// The loaded configuration.
    pub config: Config,
    /// Verifies agents' JWT-SVIDs.
    pub verifier: SvidVerifier,
    /// Issuer name written into task tokens.
    pub issuer: String,
    /// Issues and verifies task tokens.
    pub tokens: TaskTokens,
    /// Source of the policies, for reloads.
    pub policy_source: PolicySource,
    /// The current policy engine; replaced whole on reload.
    pub engine: RwLock<Arc<PolicyEngine>>,
    /// The shadow policy set of `[policy] shadow_dir`, decided beside the
    /// enforced one and never applied.
    pub shadow: RwLock<Option<Arc<PolicyEngine>>>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Upstream MCP servers by name.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Task tokens whose signature was verified already.
    pub verified_tokens: VerifiedTokens,
    /// Tasks seen by this process, with their revocation state.
    pub tasks: TaskTable,
    /// Calls waiting for a human decision, and the approval webhook.
    pub approvals: crate::approvals::Approvals,
    /// MCP sessions of agents.
    pub sessions: Sessions,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Accepted `Host` header values.
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` header values.
    pub allowed_origins: Vec<String>,
    /// Admin bearer token from `WARDEN_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
    /// Model API providers of `/llm/{provider}/...`.
    pub providers: crate::llm::Providers,
    /// Tool calls that model responses asked for, for linking tool calls.
    pub requested_calls: crate::llm::RequestedCalls,
    /// Plain HTTP API routes of `/http/{route}/...`.
    pub routes: crate::http_routes::Routes,
    /// Mints per-task transaction tokens for upstreams that trust Warden.
    pub txn_tokens: crate::credentials::TxnTokens,
    /// Removes common secret shapes from what upstreams return.
    pub redactor: crate::redact::Redactor,
}

impl AppState {
    /// Returns the current policy engine.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes `secrets` (values Warden injected, in any spelling) and
    /// common secret shapes from an upstream's answer; returns the result
    /// and the number of removals.
    pub fn redact(&self, body: bytes::Bytes, secrets: &[String]) -> (bytes::Bytes, usize) {
        let scoped;
        let redactor = if secrets.is_empty() {
            &self.redactor
        } else {
            scoped = crate::redact::Redactor::new(secrets.to_vec());
            &scoped
        };
        match redactor.redact_bytes(&body) {
            (std::borrow::Cow::Borrowed(_), count) => (body, count),
            (std::borrow::Cow::Owned(owned), count) => (bytes::Bytes::from(owned), count),
        }
    }

    /// Removes `secrets` and common secret shapes from every string of a
    /// JSON value; returns the number of removals.
    pub fn redact_json(&self, value: &mut serde_json::Value, secrets: &[String]) -> usize {
        if secrets.is_empty() {
            self.redactor.redact_json(value)
        } else {
            crate::redact::Redactor::new(secrets.to_vec()).redact_json(value)
        }
    }

    /// Returns the shadow policy engine, if one is configured.
    pub fn shadow_engine(&self) -> Option<Arc<PolicyEngine>> {
        self.shadow
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy engine.
    pub fn set_engine(&self, engine: PolicyEngine) {
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
    }
}

/// Revocation state of a task as cached by this process.
#[derive(Debug, Clone)]
pub enum TaskStatus {
    /// The task is live.
    Active,
    /// The task was ended at this unix time.
    Revoked(i64),
    /// The store has no such task.
    Unknown,
}

/// Cache of task status in front of the store.
///
/// Revocations made through this process update it at once; other tasks
/// are read from the store once. A store that several replicas share
/// publishes [`StoreEvent`]s. The cache then applies the revocations that
/// other replicas announce and empties itself when events may have been
/// missed. It also reads a live or unknown task from the store again once
/// its entry is older than [`SHARED_MAX_AGE`], so a revocation on another
/// replica takes effect here within that age even when its announcement is
/// lost.
#[derive(Default)]
pub struct TaskTable {
    status: Arc<Mutex<HashMap<String, Cached>>>,
    /// Age after which a live or unknown entry is read again; `None` keeps
    /// entries until the cache is full.
    max_age: Option<Duration>,
}

/// Maximum age of a cached live or unknown task status when replicas share
/// the store.
pub const SHARED_MAX_AGE: Duration = Duration::from_secs(1);

struct Cached {
    status: TaskStatus,
    at: Instant,
}

impl TaskTable {
    /// Creates the cache for `store`. When the store publishes events, the
    /// cache follows them on a task of the current Tokio runtime and its
    /// entries expire after [`SHARED_MAX_AGE`].
    pub fn for_store(store: &dyn Store) -> TaskTable {
        let Some(events) = store.events() else {
            return TaskTable::default();
        };
        let table = TaskTable {
            status: Arc::default(),
            max_age: Some(SHARED_MAX_AGE),
        };
        tokio::spawn(follow_revocations(Arc::downgrade(&table.status), events));
        table
    }

    /// Returns the cached status, if any and not expired.
    pub fn cached(&self, task_id: &str) -> Option<TaskStatus> {
        let entries = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(task_id)?;
        let expired = !matches!(entry.status, TaskStatus::Revoked(_))
            && self.max_age.is_some_and(|age| entry.at.elapsed() >= age);
        (!expired).then(|| entry.status.clone())
    }

    /// Records a status.
    pub fn set(&self, task_id: &str, status: TaskStatus) {
        let mut entries = self.status.lock().unwrap_or_else(|e| e.into_inner());
        bound(&mut entries);
        entries.insert(task_id.to_owned(), Cached::now(status));
    }

    /// Records `Active` for a task just created or just read from the
    /// store, unless a revocation of it landed first: a parent can be ended
    /// while its child is being created, and the revocation must win.
    pub fn set_active_if_absent(&self, task_id: &str) {
        let mut entries = self.status.lock().unwrap_or_else(|e| e.into_inner());
        bound(&mut entries);
        let revoked = entries
            .get(task_id)
            .is_some_and(|entry| matches!(entry.status, TaskStatus::Revoked(_)));
        if !revoked {
            entries.insert(task_id.to_owned(), Cached::now(TaskStatus::Active));
        }
    }
}

impl Cached {
    fn now(status: TaskStatus) -> Cached {
        Cached {
            status,
            at: Instant::now(),
        }
    }
}

/// Applies the revocations that `events` announce to the cache, and
/// empties the cache when events were missed. It returns when the cache is
/// dropped or the store closes its events.
async fn follow_revocations(
    status: Weak<Mutex<HashMap<String, Cached>>>,
    mut events: broadcast::Receiver<StoreEvent>,
) {
    loop {
        let event = events.recv().await;
        let Some(status) = status.upgrade() else {
            return;
        };
        let mut entries = status.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(StoreEvent::TaskRevoked {
                task_ids,
                revoked_at,
            }) => {
                bound(&mut entries);
                for id in task_ids {
                    entries.insert(id, Cached::now(TaskStatus::Revoked(revoked_at)));
                }
            }
            Ok(StoreEvent::ApprovalDecided { .. }) => {}
            Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                tracing::debug!(
                    "store events may have been missed; emptying the task status cache"
                );
                entries.clear();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Maximum number of tasks whose status is cached before the cache is emptied.
pub const MAX_CACHED_TASKS: usize = 200_000;

/// Empties a full cache. The store contains every task and revocation, so a
/// dropped entry is read again on the task's next request.
fn bound(entries: &mut HashMap<String, Cached>) {
    if entries.len() >= MAX_CACHED_TASKS {
        entries.clear();
    }
}

/// Maximum number of entries in [`VerifiedTokens`] before it is emptied.
pub const MAX_VERIFIED_TOKENS: usize = 10_000;

/// Cache of task tokens whose signature checked out, keyed by the exact
/// token text, so that an agent's later requests skip the ECDSA
/// verification. Expiry is checked on every hit, with the same leeway as a
/// full verification, and revocation is checked by the caller as for any
/// token. A token that differs in one byte misses the cache.
pub struct VerifiedTokens {
    entries: Mutex<HashMap<String, TaskClaims>>,
    leeway: i64,
}

impl VerifiedTokens {
    /// Creates an empty cache whose hits honour `leeway` seconds past `exp`.
    pub fn new(leeway: i64) -> VerifiedTokens {
        VerifiedTokens {
            entries: Mutex::default(),
            leeway,
        }
    }

    /// Returns the claims of a verified, unexpired token.
    pub fn get(&self, token: &str, now: i64) -> Option<TaskClaims> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let claims = entries.get(token)?;
        if claims.exp + self.leeway < now {
            entries.remove(token);
            return None;
        }
        Some(claims.clone())
    }

    /// Remembers a verified token.
    pub fn insert(&self, token: String, claims: TaskClaims) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_VERIFIED_TOKENS {
            entries.clear();
        }
        entries.insert(token, claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_table(max_age: Duration) -> TaskTable {
        TaskTable {
            status: Arc::default(),
            max_age: Some(max_age),
        }
    }

    /// Waits until `check` holds, for at most one second.
    async fn eventually(check: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        check()
    }

    #[test]
    fn shared_table_expires_live_entries() {
        let table = shared_table(Duration::from_millis(20));
        table.set_active_if_absent("live");
        table.set("ended", TaskStatus::Revoked(7));

        std::thread::sleep(Duration::from_millis(30));

        assert!(table.cached("live").is_none());
        assert!(matches!(
            table.cached("ended"),
            Some(TaskStatus::Revoked(7))
        ));
    }

    #[test]
    fn set_active_keeps_revocation() {
        let table = TaskTable::default();
        table.set("task", TaskStatus::Revoked(9));

        table.set_active_if_absent("task");

        assert!(matches!(table.cached("task"), Some(TaskStatus::Revoked(9))));
    }

    #[tokio::test]
    async fn follow_applies_announced_revocations() {
        let table = shared_table(Duration::from_secs(60));
        table.set_active_if_absent("task");
        let (events, receiver) = broadcast::channel(8);
        tokio::spawn(follow_revocations(Arc::downgrade(&table.status), receiver));

        events
            .send(StoreEvent::TaskRevoked {
                task_ids: vec!["task".into()],
                revoked_at: 42,
            })
            .expect("send the event");

        let revoked =
            eventually(|| matches!(table.cached("task"), Some(TaskStatus::Revoked(42)))).await;
        assert!(revoked, "the revocation was not applied");
    }

    #[tokio::test]
    async fn follow_empties_cache_on_resync() {
        let table = shared_table(Duration::from_secs(60));
        table.set_active_if_absent("task");
        let (events, receiver) = broadcast::channel(8);
        tokio::spawn(follow_revocations(Arc::downgrade(&table.status), receiver));

        events.send(StoreEvent::Resync).expect("send the event");

        assert!(eventually(|| table.cached("task").is_none()).await);
    }
}
