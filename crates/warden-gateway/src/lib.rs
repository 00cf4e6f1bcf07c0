//! Warden's HTTP gateway.
//!
//! Agents start tasks at `/v1/tasks` with their JWT-SVID and reach their
//! tools through the MCP endpoint at `/mcp` with the task token. Every
//! `tools/call`, `resources/read` and `prompts/get` is decided by the
//! policy engine before the upstream sees it, and every decision and
//! outcome is appended to the task's trace in the store.
//!
//! - [`server`]: building, routing, reload and shutdown.
//! - [`tasks`]: the task endpoints.
//! - [`delegation`]: token exchange between agents.
//! - [`mcp`]: the agent-facing MCP endpoint.
//! - [`upstream`]: Warden as MCP client of the upstream servers.
//! - [`approvals`]: human approval of held calls.
//! - [`llm`]: model calls through `/llm/{provider}/...`.
//! - [`audit`]: trace records of each step.
//! - [`checkpoint`]: signed checkpoints of the audit chain's head and
//!   verification of the whole audit log.
//! - [`export`]: export of those records as spans over OTLP and to a
//!   JSON-lines file.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod credentials;
pub mod delegation;
pub mod export;
pub mod guard;
pub mod http_routes;
pub mod llm;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod pins;
pub mod policy_source;
pub mod precheck;
pub mod redact;
pub mod scope;
pub mod server;
pub mod sse;
pub mod state;
pub mod tasks;
pub mod tracecontext;
pub mod upstream;

pub use policy_source::PolicySource;
pub use server::{Gateway, GatewayOptions, reload_policies};
