//! The one error type handlers return, and how it is rendered.
//!
//! npm prints only the `error` field of a JSON error body
//! (docs/npm-protocol.md, "Errors"),
//! so every failure is `{"error": "<what happened and what to do>"}` with the
//! HTTP status that fits. A 401 also carries `WWW-Authenticate`, from which
//! npm words its own message.

use http::StatusCode;

/// A request that failed: the status and the sentence the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `WWW-Authenticate` value for 401 answers.
    pub www_authenticate: Option<&'static str>,
    /// `Retry-After` seconds for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// The same error, telling the client to retry after `seconds`.
    pub fn retry_after(self, seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// 400: the request itself is malformed or invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 with `WWW-Authenticate: Bearer realm="nmr"`, so npm tells the user
    /// to log in again (docs/npm-protocol.md, "Errors").
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            www_authenticate: Some("Bearer realm=\"nmr\""),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: absent, or not visible to the caller (the two are never told apart).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request conflicts with what is stored (version exists, stale `_rev`).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 500: nmr failed; the message says where, never with secrets.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503: a service nmr depends on (storage, GitHub) could not be used.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The JSON body: `{"error": message}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}
