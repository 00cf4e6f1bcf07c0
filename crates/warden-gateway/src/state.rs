//! Shared state of a running gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use warden_config::Config;
use warden_identity::{SvidVerifier, TaskClaims, TaskTokens};
use warden_policy::PolicyEngine;
use warden_store::Store;

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
}

impl AppState {
    /// Returns the current policy engine.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine
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

/// Cache of task status in front of the store. Revocations made through this
/// process update it at once; other tasks are read from the store once.
#[derive(Default)]
pub struct TaskTable {
    status: Mutex<HashMap<String, TaskStatus>>,
}

impl TaskTable {
    /// Returns the cached status, if any.
    pub fn cached(&self, task_id: &str) -> Option<TaskStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task_id)
            .cloned()
    }

    /// Records a status.
    pub fn set(&self, task_id: &str, status: TaskStatus) {
        let mut entries = self.status.lock().unwrap_or_else(|e| e.into_inner());
        bound(&mut entries);
        entries.insert(task_id.to_owned(), status);
    }

    /// Records `Active` for a task just created, unless a revocation of it
    /// landed first: a parent can be ended while its child is being created,
    /// and the revocation must win.
    pub fn set_active_if_absent(&self, task_id: &str) {
        let mut entries = self.status.lock().unwrap_or_else(|e| e.into_inner());
        bound(&mut entries);
        entries
            .entry(task_id.to_owned())
            .or_insert(TaskStatus::Active);
    }
}

/// Maximum number of tasks whose status is cached before the cache is emptied.
pub const MAX_CACHED_TASKS: usize = 200_000;

/// Empties a full cache. The store contains every task and revocation, so a
/// dropped entry is read again on the task's next request.
fn bound(entries: &mut HashMap<String, TaskStatus>) {
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
