//! The tool calls that model responses asked for, per task tree, so that a
//! later `tools/call` is linked to the model call that requested it.
//!
//! A call matches by the provider's tool-call id when the agent passes it
//! in `params._meta["dev.warden/tool_call_id"]`, and otherwise by tool
//! name and the canonical hash of the arguments. Each request matches at
//! most one call. The registry is bounded: old requests drop out first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};

/// Requests remembered per task tree; older ones drop out first.
const MAX_PER_TASK: usize = 256;
/// Task trees remembered; the registry is emptied when full.
const MAX_TASKS: usize = 10_000;

/// One tool call that a model response asked for.
#[derive(Clone, Debug)]
pub struct Requested {
    /// The provider's tool-call id.
    pub tool_call_id: String,
    /// The tool name as the model saw it.
    pub name: String,
    /// Canonical hash of the parsed arguments; `None` when the model's
    /// arguments were not JSON, so only the id can match.
    pub arguments_hash: Option<String>,
    /// Span id of the `model.result` record of the response.
    pub span_id: String,
}

/// The link from a tool call to the model request that asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// Span id of the model call's result.
    pub span_id: String,
    /// The provider's tool-call id.
    pub tool_call_id: String,
    /// `id` or `arguments`.
    pub matched_by: &'static str,
}

impl Link {
    /// Returns the `requested_by` detail of a tool call record.
    pub fn to_json(&self) -> Value {
        json!({
            "span_id": self.span_id,
            "tool_call_id": self.tool_call_id,
            "match": self.matched_by,
        })
    }
}

/// Tool calls requested by model responses, keyed by root task id.
#[derive(Default)]
pub struct RequestedCalls {
    tasks: Mutex<HashMap<String, VecDeque<Requested>>>,
}

impl RequestedCalls {
    /// Remembers the tool calls of one model response.
    pub fn add(&self, root_task: &str, calls: Vec<Requested>) {
        if calls.is_empty() {
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= MAX_TASKS && !tasks.contains_key(root_task) {
            tasks.clear();
        }
        let queue = tasks.entry(root_task.to_owned()).or_default();
        for call in calls {
            if queue.len() >= MAX_PER_TASK {
                queue.pop_front();
            }
            queue.push_back(call);
        }
    }

    /// Finds and removes the request that a tool call answers.
    ///
    /// `names` are the names the model may have used for the tool (the
    /// qualified `server__tool` and, on `/mcp/{server}`, the bare tool).
    /// With `tool_call_id`, only the request of that id, one of these names
    /// and the same argument hash matches; without it, the oldest request
    /// of one of these names and the same argument hash matches.
    pub fn take(
        &self,
        root_task: &str,
        tool_call_id: Option<&str>,
        names: &[&str],
        arguments_hash: &str,
    ) -> Option<Link> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let queue = tasks.get_mut(root_task)?;
        let named = |call: &Requested| names.contains(&call.name.as_str());
        let (position, matched_by) = match tool_call_id {
            // The id picks among identical requests; the call must still be
            // the one the model asked for, so the arguments must match too.
            Some(id) => (
                queue.iter().position(|call| {
                    call.tool_call_id == id
                        && named(call)
                        && call.arguments_hash.as_deref() == Some(arguments_hash)
                })?,
                "id",
            ),
            None => (
                queue.iter().position(|call| {
                    named(call) && call.arguments_hash.as_deref() == Some(arguments_hash)
                })?,
                "arguments",
            ),
        };
        let call = queue.remove(position)?;
        if queue.is_empty() {
            tasks.remove(root_task);
        }
        Some(Link {
            span_id: call.span_id,
            tool_call_id: call.tool_call_id,
            matched_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(id: &str, name: &str, hash: Option<&str>) -> Requested {
        Requested {
            tool_call_id: id.into(),
            name: name.into(),
            arguments_hash: hash.map(str::to_owned),
            span_id: format!("span-{id}"),
        }
    }

    #[test]
    fn take_matches_by_arguments_once() {
        let calls = RequestedCalls::default();
        calls.add("t", vec![requested("call_1", "fs__read", Some("h1"))]);

        assert_eq!(calls.take("t", None, &["fs__read"], "h2"), None);
        let link = calls.take("t", None, &["fs__read"], "h1").expect("matches");
        assert_eq!(link.matched_by, "arguments");
        assert_eq!(link.span_id, "span-call_1");
        assert_eq!(calls.take("t", None, &["fs__read"], "h1"), None);
    }

    #[test]
    fn take_by_id_requires_the_same_tool_and_arguments() {
        let calls = RequestedCalls::default();
        calls.add("t", vec![requested("call_1", "fs__read", Some("h"))]);

        assert_eq!(calls.take("t", Some("call_1"), &["fs__write"], "h"), None);
        assert_eq!(calls.take("t", Some("call_2"), &["fs__read"], "h"), None);
        assert_eq!(
            calls.take("t", Some("call_1"), &["fs__read"], "other"),
            None
        );
        let link = calls
            .take("t", Some("call_1"), &["read", "fs__read"], "h")
            .expect("matches");
        assert_eq!(link.matched_by, "id");
    }

    #[test]
    fn take_by_id_never_links_unparsed_arguments() {
        let calls = RequestedCalls::default();
        calls.add("t", vec![requested("call_1", "fs__read", None)]);
        assert_eq!(calls.take("t", Some("call_1"), &["fs__read"], "h"), None);
    }

    #[test]
    fn take_keeps_tasks_apart() {
        let calls = RequestedCalls::default();
        calls.add("t1", vec![requested("call_1", "fs__read", Some("h"))]);
        assert_eq!(calls.take("t2", None, &["fs__read"], "h"), None);
    }

    #[test]
    fn add_drops_the_oldest_beyond_the_limit() {
        let calls = RequestedCalls::default();
        let many = (0..=MAX_PER_TASK)
            .map(|index| requested(&format!("call_{index}"), "fs__read", Some("h")))
            .collect();
        calls.add("t", many);
        assert_eq!(calls.take("t", Some("call_0"), &["fs__read"], "h"), None);
        assert!(
            calls
                .take("t", Some("call_1"), &["fs__read"], "h")
                .is_some()
        );
    }
}
