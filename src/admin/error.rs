//! Errors of the vault API, in the Anthropic API's shape:
//! `{"type": "error", "error": {"type": "not_found_error", "message": "…"}}`.
//!
//! SECURITY: messages name ids, keys and rules, never a submitted value.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::live::WriteError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} `{id}` not found"),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }

    pub fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "request body is too large".into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            413 => "request_too_large",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": self.kind(), "message": self.message },
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            // The write is checked by the same rules as the file; the positions are the file's,
            // so the API shows the rule alone.
            WriteError::Invalid(errors) => {
                let messages: Vec<_> = errors.0.iter().map(|e| e.message.as_str()).collect();
                ApiError::invalid(messages.join("; "))
            }
            WriteError::FileInvalid(errors) => ApiError::conflict(format!(
                "the configuration file has errors that its operator must fix first: {errors}"
            )),
            // SPEC §10: the database is down; nothing was written, the proxy goes on.
            WriteError::Database(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message:
                    "the database is unreachable: the change was not made; retry when it is back"
                        .into(),
            },
            WriteError::Io { .. } | WriteError::Store(_) => {
                tracing::error!(error = %err, "admin write failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "cannot persist the change".into(),
                }
            }
        }
    }
}
