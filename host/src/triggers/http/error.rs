//! One error shape for every answer: `{"error": {"code", "message"}}`,
//! with conversions from what handlers meet.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::approval::DecideError;
use crate::store::StoreError;

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    code: &'static str,
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), when throttled.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `429`: the peer has spent its failed token checks for now.
    pub fn throttled(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many failed token checks from this address: try again in {secs} s"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::unavailable(e)
    }
}

/// The body limit surfaces as a failed read: 413 in our error shape.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, e.body_text())
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        let (status, code) = match &e {
            DecideError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_run"),
            DecideError::NotPending { .. } => (StatusCode::CONFLICT, "not_pending"),
            DecideError::Expired { .. } => (StatusCode::GONE, "plan_expired"),
            DecideError::Paused { .. } => (StatusCode::CONFLICT, "paused"),
            DecideError::PluginGone(_) => (StatusCode::CONFLICT, "plugin_gone"),
            DecideError::PluginChanged { .. } => (StatusCode::CONFLICT, "plugin_changed"),
            DecideError::OwnRequest { .. } => (StatusCode::FORBIDDEN, "own_request"),
            DecideError::AlreadyApproved { .. } => (StatusCode::CONFLICT, "already_approved"),
            DecideError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::triggers::alerts::AlertError> for ApiError {
    fn from(e: crate::triggers::alerts::AlertError) -> Self {
        match e {
            crate::triggers::alerts::AlertError::Store(e) => ApiError::unavailable(e),
            e => ApiError::bad_request(e.to_string()),
        }
    }
}
