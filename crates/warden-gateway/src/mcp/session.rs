//! MCP sessions of the handshake era.
//!
//! A session is created by `initialize`, named by a random id, bound to the
//! task whose token opened it and to the endpoint (`/mcp` or one server).
//! It stores the negotiated revision, the client's capabilities and the
//! request ids in flight, so that the second of two concurrent requests with
//! the same id on one session is rejected while the first is running.
//!
//! [`Sessions`] also holds the server-to-client requests that Warden relayed
//! to an agent and that wait for the agent's answer, by the id Warden gave
//! them; an answer counts only from the task (and session) it was sent to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warden_identity::TaskClaims;

use crate::upstream::RpcOutcome;

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
    /// The `capabilities` object of the client's `initialize`.
    pub client_capabilities: Value,
    in_flight: Mutex<HashSet<String>>,
    stream: Mutex<Option<AgentStream>>,
}

/// The session's standalone event stream (`GET`), for messages that belong
/// to no request, such as resource updates.
#[derive(Debug)]
struct AgentStream {
    sender: mpsc::Sender<String>,
    claims: TaskClaims,
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
    /// Opens the session's standalone event stream and returns its
    /// receiving end. Returns `None` while another stream of the session is
    /// open, because each message goes to one stream only.
    pub fn open_stream(
        &self,
        claims: &TaskClaims,
        capacity: usize,
    ) -> Option<mpsc::Receiver<String>> {
        let mut slot = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|open| !open.sender.is_closed()) {
            return None;
        }
        let (sender, receiver) = mpsc::channel(capacity);
        *slot = Some(AgentStream {
            sender,
            claims: claims.clone(),
        });
        Some(receiver)
    }

    /// Queues one event on the standalone stream and returns the claims of
    /// the task that opened it. Returns `None` when no stream is open or its
    /// queue is full: a reader that stalls loses events rather than holding
    /// up the upstream.
    pub fn push_event(&self, event: String) -> Option<TaskClaims> {
        let slot = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let open = slot.as_ref()?;
        open.sender.try_send(event).ok()?;
        Some(open.claims.clone())
    }

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
    answers: Arc<Mutex<HashMap<String, PendingAnswer>>>,
    /// Session ids subscribed to each (server, resource URI).
    subscriptions: Mutex<HashMap<(String, String), HashSet<String>>>,
    /// Servers whose resource updates are being routed to sessions.
    routed: Mutex<HashSet<String>>,
}

/// A relayed server-to-client request that waits for the agent's response.
struct PendingAnswer {
    task_id: String,
    session_id: Option<String>,
    reply: oneshot::Sender<RpcOutcome>,
}

/// Error when an agent's response to a relayed request is rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No relayed request waits under this id for this task and session.
    #[error("no request from Warden with id {0} is waiting for an answer in this task and session")]
    Unknown(String),
}

/// Keeps a relayed request's id registered until dropped.
pub struct AwaitedAnswer {
    /// The id Warden gave the request towards the agent.
    pub id: String,
    /// Receives the agent's response.
    pub answer: oneshot::Receiver<RpcOutcome>,
    answers: Arc<Mutex<HashMap<String, PendingAnswer>>>,
}

impl Drop for AwaitedAnswer {
    fn drop(&mut self) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
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
        client_capabilities: Value,
        expires_at: i64,
    ) -> Option<Arc<Session>> {
        let now = crate::auth::now_unix();
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
            client_capabilities,
            in_flight: Mutex::default(),
            stream: Mutex::default(),
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
        self.forget_subscriptions(&[id.to_owned()]);
    }

    /// Closes every session of the given tasks.
    pub fn close_task_sessions(&self, task_ids: &[String]) {
        let mut closed = Vec::new();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, s| {
                let keep = !task_ids.contains(&s.task_id);
                if !keep {
                    closed.push(id.clone());
                }
                keep
            });
        self.forget_subscriptions(&closed);
    }

    // NOTE: the upstream stays subscribed to a resource whose last
    // subscriber was a closed session; its updates are then dropped.
    fn forget_subscriptions(&self, session_ids: &[String]) {
        if session_ids.is_empty() {
            return;
        }
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, subscribers| {
                subscribers.retain(|id| !session_ids.contains(id));
                !subscribers.is_empty()
            });
    }

    /// Adds a session's subscription to a resource of a server. Returns
    /// true for the first subscription to it, when the upstream must be
    /// asked to subscribe.
    pub fn subscribe(&self, server: &str, uri: &str, session_id: &str) -> bool {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let subscribers = subscriptions
            .entry((server.to_owned(), uri.to_owned()))
            .or_default();
        let first = subscribers.is_empty();
        subscribers.insert(session_id.to_owned());
        first
    }

    /// Removes a session's subscription; returns true when no session is
    /// subscribed to the resource any more, so that the upstream can be
    /// asked to unsubscribe.
    pub fn unsubscribe(&self, server: &str, uri: &str, session_id: &str) -> bool {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (server.to_owned(), uri.to_owned());
        let Some(subscribers) = subscriptions.get_mut(&key) else {
            return false;
        };
        if !subscribers.remove(session_id) {
            return false;
        }
        if subscribers.is_empty() {
            subscriptions.remove(&key);
            return true;
        }
        false
    }

    /// Returns the open sessions subscribed to a resource of a server.
    pub fn subscribers(&self, server: &str, uri: &str) -> Vec<Arc<Session>> {
        let ids: Vec<String> = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(server.to_owned(), uri.to_owned()))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Marks a server's resource updates as routed; returns true the first
    /// time, when the caller must start routing them.
    pub fn start_routing(&self, server: &str) -> bool {
        self.routed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned())
    }

    /// Registers a relayed request of a task (and session) under a fresh
    /// random id, so that the agent's response can find it.
    pub fn await_answer(&self, task_id: &str, session_id: Option<&str>) -> AwaitedAnswer {
        let id = format!("warden-{}", uuid::Uuid::new_v4().simple());
        let (reply, answer) = oneshot::channel();
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                PendingAnswer {
                    task_id: task_id.to_owned(),
                    session_id: session_id.map(str::to_owned),
                    reply,
                },
            );
        AwaitedAnswer {
            id,
            answer,
            answers: self.answers.clone(),
        }
    }

    /// Hands an agent's answer to the relayed request with this id. The
    /// answer must come from the task, and on the session, that the request
    /// was sent to.
    pub fn deliver_answer(
        &self,
        id: &Value,
        task_id: &str,
        session_id: Option<&str>,
        outcome: RpcOutcome,
    ) -> Result<(), AnswerError> {
        let unknown = || AnswerError::Unknown(id.to_string());
        let key = id.as_str().ok_or_else(unknown)?;
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let matches = answers
            .get(key)
            .is_some_and(|p| p.task_id == task_id && p.session_id.as_deref() == session_id);
        if !matches {
            return Err(unknown());
        }
        let pending = answers.remove(key).ok_or_else(unknown)?;
        // The waiter may have timed out in the meantime; the answer then
        // has nowhere to go, which is the same as arriving too late.
        let _ = pending.reply.send(outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn answer_reaches_the_waiting_request() {
        let sessions = Sessions::default();
        let mut awaited = sessions.await_answer("task-1", Some("s1"));
        let id = json!(awaited.id.clone());

        let delivered = sessions.deliver_answer(&id, "task-1", Some("s1"), Ok(json!({"ok": 1})));
        let answer = (&mut awaited.answer).await.expect("answer");

        assert_eq!(delivered, Ok(()));
        assert_eq!(answer.expect("result"), json!({"ok": 1}));
    }

    #[test]
    fn answer_from_another_task_is_rejected() {
        let sessions = Sessions::default();
        let awaited = sessions.await_answer("task-1", Some("s1"));
        let id = json!(awaited.id.clone());

        let other_task = sessions.deliver_answer(&id, "task-2", Some("s1"), Ok(json!({})));
        let other_session = sessions.deliver_answer(&id, "task-1", Some("s2"), Ok(json!({})));
        let no_session = sessions.deliver_answer(&id, "task-1", None, Ok(json!({})));

        assert!(other_task.is_err());
        assert!(other_session.is_err());
        assert!(no_session.is_err());
    }

    #[test]
    fn answer_after_the_wait_ended_is_rejected() {
        let sessions = Sessions::default();
        let awaited = sessions.await_answer("task-1", None);
        let id = json!(awaited.id.clone());
        drop(awaited);

        let late = sessions.deliver_answer(&id, "task-1", None, Ok(json!({})));

        assert!(late.is_err());
    }

    #[test]
    fn answer_is_taken_once() {
        let sessions = Sessions::default();
        let awaited = sessions.await_answer("task-1", None);
        let id = json!(awaited.id.clone());

        let first = sessions.deliver_answer(&id, "task-1", None, Ok(json!({})));
        let second = sessions.deliver_answer(&id, "task-1", None, Ok(json!({})));

        assert!(first.is_ok());
        assert!(second.is_err());
    }
}
