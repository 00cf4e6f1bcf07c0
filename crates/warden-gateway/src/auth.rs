//! Authentication of agents, tasks and administrators, and the HTTP error
//! type shared by the JSON endpoints.
//!
//! Agents prove their identity with a JWT-SVID when they start a task, and
//! use the task token afterwards. Every failure is a 401 with a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750) and a message saying what
//! to do next. Tokens never appear in logs.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warden_identity::{SvidClaims, TaskClaims};

use crate::state::{AppState, TaskStatus};

/// An error returned by a JSON endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing, malformed, expired, revoked or foreign credential.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the body exceeds the configured limit.
    #[error("request body larger than {0} bytes; raise limits.max_body_bytes if this is expected")]
    PayloadTooLarge(usize),
    /// 503: a dependency (the store) is unavailable.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Short machine-readable code, e.g. `invalid_token`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "invalid_token",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl ApiError {
    /// Builds the response for the MCP endpoint: the same status and
    /// challenge, with a JSON-RPC error body, so MCP clients show the
    /// message instead of a bare status.
    pub fn into_mcp_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32001, "message": message, "data": { "error": self.code() } }
        });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge(&message));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = json!({ "error": self.code(), "message": message });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge(&message));
        }
        response
    }
}

/// Builds an RFC 6750 challenge carrying `message` as the error description.
pub fn challenge(message: &str) -> HeaderValue {
    let description: String = message
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect();
    HeaderValue::from_str(&format!(
        "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{description}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"warden\""))
}

/// Returns the bearer credential of the request.
pub fn bearer(headers: &HeaderMap, what: &str) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(format!(
            "missing Authorization header; send Authorization: Bearer <{what}>"
        )));
    };
    let value = value.to_str().map_err(|_| {
        ApiError::Unauthorized(
            "Authorization header is not ASCII; send Authorization: Bearer <token>".into(),
        )
    })?;
    let mut parts = value.splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default().trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(ApiError::Unauthorized(format!(
            "malformed Authorization header; send Authorization: Bearer <{what}>"
        )));
    }
    Ok(token.to_owned())
}

/// Verifies the agent's JWT-SVID.
pub fn authenticate_agent(state: &AppState, headers: &HeaderMap) -> Result<SvidClaims, ApiError> {
    let token = bearer(headers, "JWT-SVID")?;
    state.verifier.verify(&token, now_unix()).map_err(|error| {
        state
            .metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%error, "JWT-SVID rejected");
        ApiError::Unauthorized(error.to_string())
    })
}

/// Verifies a task token and checks that its task is still live.
pub async fn authenticate_task(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<TaskClaims, ApiError> {
    let token = bearer(headers, "task token from POST /v1/tasks")?;
    verify_task_token(state, token).await
}

/// Verifies a task token given in any header and checks that its task is
/// still live.
pub async fn verify_task_token(state: &AppState, token: String) -> Result<TaskClaims, ApiError> {
    let now = now_unix();
    let claims = match state.verified_tokens.get(&token, now) {
        Some(claims) => claims,
        None => {
            let claims = state.tokens.verify(&token, now).map_err(|error| {
                state
                    .metrics
                    .auth_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%error, "task token rejected");
                ApiError::Unauthorized(error.to_string())
            })?;
            state.verified_tokens.insert(token, claims.clone());
            claims
        }
    };
    check_live(state, &claims).await?;
    Ok(claims)
}

/// Fails when the task of `claims` was ended or is unknown to the store.
pub async fn check_live(state: &AppState, claims: &TaskClaims) -> Result<(), ApiError> {
    let status = match state.tasks.cached(&claims.task_id) {
        Some(status) => status,
        None => {
            let record = state.store.task(&claims.task_id).await.map_err(|error| {
                tracing::error!(%error, task.id = %claims.task_id, "store lookup of task failed");
                ApiError::Unavailable(format!(
                    "cannot check task {}: the store is unavailable; retry shortly",
                    claims.task_id
                ))
            })?;
            let status = match record {
                None => TaskStatus::Unknown,
                Some(record) => match record.revoked_at {
                    Some(at) => TaskStatus::Revoked(at),
                    None => TaskStatus::Active,
                },
            };
            // A revocation recorded while the store was read wins over
            // the older "active" result.
            match status {
                TaskStatus::Active => state.tasks.set_active_if_absent(&claims.task_id),
                other => state.tasks.set(&claims.task_id, other),
            }
            state
                .tasks
                .cached(&claims.task_id)
                .unwrap_or(TaskStatus::Unknown)
        }
    };
    match status {
        TaskStatus::Active => Ok(()),
        TaskStatus::Revoked(at) => {
            state
                .metrics
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(ApiError::Unauthorized(format!(
                "task {} was ended at {}; start a new task with POST /v1/tasks",
                claims.task_id,
                format_time(at)
            )))
        }
        TaskStatus::Unknown => {
            state
                .metrics
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(ApiError::Unauthorized(format!(
                "task {} is not known to this gateway; start a new task with POST /v1/tasks",
                claims.task_id
            )))
        }
    }
}

/// Checks the admin bearer token. Admin endpoints are closed when no admin
/// token is configured.
pub fn authenticate_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::Forbidden(
            "admin endpoints are disabled; set WARDEN_ADMIN_TOKEN for `warden serve` to enable them".into(),
        ));
    };
    let token = bearer(headers, "admin token")?;
    if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("wrong admin token".into()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Current unix time in microseconds.
pub fn now_micros() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// Formats unix seconds as RFC 3339.
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
