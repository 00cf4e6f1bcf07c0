//! Host and Origin checks against DNS rebinding.
//!
//! A browser tricked into calling a loopback gateway sends the attacker's
//! host name in `Host` and the attacker's page in `Origin`. Every request is
//! checked against the allow-lists, also on loopback: an unknown `Host` or a
//! present but unknown `Origin` gets 403 before any handler runs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::ApiError;
use crate::state::AppState;

/// Returns the default `Host` values for a listener: its address, plus
/// `localhost:PORT` when it listens on loopback.
pub fn default_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{port}"));
        hosts.push(format!("127.0.0.1:{port}"));
        hosts.push(format!("[::1]:{port}"));
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Middleware rejecting requests whose `Host` or `Origin` is not allowed.
pub async fn check_host_and_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().count() > 1 {
        return ApiError::BadRequest("the Host header appears more than once".into())
            .into_response();
    }
    // In an absolute-form request target the target's authority is the
    // host (RFC 9112 section 3.2.2), so that is what gets checked.
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str().to_ascii_lowercase(),
        None => headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase(),
    };
    if !state
        .allowed_hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&host))
    {
        tracing::warn!(host = %host, "request with a Host that is not allowed");
        return ApiError::Forbidden(format!(
            "Host {host:?} is not allowed; add it to server.allowed_hosts if this gateway is reached under that name"
        ))
        .into_response();
    }
    let limit = state.config.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        if !state
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&origin))
        {
            tracing::warn!(origin = %origin, "request with an Origin that is not allowed");
            return ApiError::Forbidden(format!(
                "Origin {origin:?} is not allowed; add it to server.allowed_origins to let that web page call Warden"
            ))
            .into_response();
        }
    }
    next.run(request).await
}
