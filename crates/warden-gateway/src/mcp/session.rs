//! MCP sessions of the handshake era.
//!
//! A session is created by `initialize`, named by a random id, bound to the
//! task whose token opened it and to the endpoint (`/mcp` or one server).
//! It remembers the negotiated revision and the request ids in flight, so
//! that two concurrent requests with the same id on one session are told
//! apart: the second is rejected while the first is running.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Most sessions one task may hold open at once.
pub const MAX_SESSIONS_PER_TASK: usize = 64;
/// Most sessions one agent may hold open at once, across its tasks.
pub const MAX_SESSIONS_PER_AGENT: usize = 1024;
/// Most sessions open at once across all tasks.
pub const MAX_SESSIONS: usize = 65_536;

/// One agent session.
#[derive(Debug)]
pub struct Session {
    /// Session id sent in `Mcp-Session-Id`.
    pub id: String,
    /// Task that opened the session.
    pub task_id: String,
    /// Agent acting with the task's token.
    pub agent: String,
    /// Server of `/mcp/{server}`, or `None` for `/mcp`.
    pub server: Option<String>,
    /// Negotiated protocol revision.
    pub protocol_version: String,
    /// Expiry of the task, in unix seconds; the session ends with it.
    pub expires_at: i64,
    in_flight: Mutex<HashSet<String>>,
}

/// Marks a request id as in flight until dropped.
pub struct InFlight {
    session: Arc<Session>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Session {
    /// Marks `id` as in flight; `None` when it already is.
    pub fn begin(self: &Arc<Self>, id: &Value) -> Option<InFlight> {
        let key = id.to_string();
        let inserted = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        inserted.then(|| InFlight {
            session: self.clone(),
            key,
        })
    }
}

/// All open sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Opens a session for a task; `None` when the task, its agent or the
    /// gateway already has too many.
    pub fn create(
        &self,
        task_id: &str,
        agent: &str,
        server: Option<&str>,
        protocol_version: &str,
        expires_at: i64,
        now: i64,
    ) -> Option<Arc<Session>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions of expired tasks are useless; they go when new ones come.
        map.retain(|_, session| session.expires_at >= now);
        let of_task = map.values().filter(|s| s.task_id == task_id).count();
        let of_agent = map.values().filter(|s| s.agent == agent).count();
        if of_task >= MAX_SESSIONS_PER_TASK
            || of_agent >= MAX_SESSIONS_PER_AGENT
            || map.len() >= MAX_SESSIONS
        {
            return None;
        }
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            task_id: task_id.to_owned(),
            agent: agent.to_owned(),
            server: server.map(str::to_owned),
            protocol_version: protocol_version.to_owned(),
            expires_at,
            in_flight: Mutex::default(),
        });
        map.insert(session.id.clone(), session.clone());
        Some(session)
    }

    /// Looks a session up.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Closes a session.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Closes every session of the given tasks.
    pub fn close_task_sessions(&self, task_ids: &[String]) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| !task_ids.contains(&s.task_id));
    }
}
