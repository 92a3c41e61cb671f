//! The one place where errors become HTTP: [`ApiError`] maps the core's
//! [`baas_core::Error`] to a status and the JSON error envelope, and the
//! catchers answer everything Rocket itself rejects (unknown routes, failed
//! guards) with the same envelope.
//!
//! The envelope is `{"error": {"code": "...", "message": "...", "field": ...}}`.
//! `code` is stable and machine-readable; `message` says what was wrong;
//! `field` names the offending input when there is one. Internal causes are
//! logged with the request, never sent.

use std::io::Cursor;
use std::sync::Mutex;

use baas_core::{Error, ErrorKind};
use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: Status,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// The internal cause chain, logged for 5xx and never sent.
    detail: Option<String>,
}

/// The JSON error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, snake_case code: `not_found`, `conflict`, `invalid_input`,
    /// `malformed_json`, `too_large`, `unauthenticated`, `forbidden`,
    /// `unavailable`, `internal`, `range_not_satisfiable`, ...
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
    /// The offending input field, when one is to blame.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            detail: None,
        }
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// A body that is not JSON at all.
    pub fn malformed_json(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::BadRequest, "malformed_json", message)
    }

    /// A failure of the server itself; `detail` is logged, not sent.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(
                Status::InternalServerError,
                "internal",
                "internal error; the server log has the details",
            )
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The envelope sent to the client.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

/// The status for each kind of core error: the mapping, exactly once.
fn status_of(kind: ErrorKind) -> Status {
    match kind {
        ErrorKind::NotFound => Status::NotFound,
        ErrorKind::Conflict => Status::Conflict,
        ErrorKind::Invalid => Status::BadRequest,
        ErrorKind::TooLarge => Status::PayloadTooLarge,
        ErrorKind::Unauthenticated => Status::Unauthorized,
        ErrorKind::Forbidden => Status::Forbidden,
        ErrorKind::Unavailable => Status::ServiceUnavailable,
        ErrorKind::Internal => Status::InternalServerError,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let kind = e.kind();
        if kind == ErrorKind::Internal {
            return ApiError::internal(e.detailed());
        }
        ApiError {
            status: status_of(kind),
            code: kind.code(),
            message: e.message().to_string(),
            field: e.field().map(str::to_string),
            detail: matches!(kind, ErrorKind::Unavailable).then(|| e.detailed()),
        }
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        if let Some(detail) = &self.detail {
            let id = crate::telemetry::request_id(req);
            if self.status.code >= 500 {
                tracing::error!(request_id = %id, status = self.status.code, "{detail}");
            }
        }
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = Response::build();
        res.status(self.status)
            .header(ContentType::JSON)
            .sized_body(body.len(), Cursor::new(body));
        match self.status.code {
            401 => {
                res.header(Header::new("WWW-Authenticate", "Bearer realm=\"baas\""));
            }
            503 => {
                res.header(Header::new("Retry-After", "1"));
            }
            _ => {}
        }
        Ok(res.finalize())
    }
}

/// The error a request guard or data guard failed with, kept for the
/// catcher that renders it (Rocket's catchers only see the status).
#[derive(Debug, Default)]
pub struct GuardError(Mutex<Option<ApiError>>);

/// Remembers why a guard failed; returns the status to fail with.
pub fn remember(req: &Request<'_>, err: ApiError) -> Status {
    let status = err.status;
    if let Ok(mut slot) = req.local_cache(GuardError::default).0.lock() {
        *slot = Some(err);
    }
    status
}

fn remembered(req: &Request<'_>) -> Option<ApiError> {
    req.local_cache(GuardError::default)
        .0
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
}

fn code_of(status: Status) -> &'static str {
    match status.code {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "invalid_input",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Every status Rocket answers by itself: the remembered guard error if a
/// guard failed, else a generic envelope for the status.
#[rocket::catch(default)]
pub fn catch_all(status: Status, req: &Request<'_>) -> ApiError {
    if let Some(err) = remembered(req) {
        if err.status == status {
            return err;
        }
    }
    let message = match status.code {
        404 => format!("no route for {} {}", req.method(), req.uri().path()),
        422 => format!(
            "a path segment or query parameter of {} is not valid",
            req.uri().path()
        ),
        _ => status.reason_lossy().to_string(),
    };
    if status.code >= 500 {
        return ApiError::internal(format!(
            "rocket answered {status} for {} {}",
            req.method(),
            req.uri()
        ));
    }
    ApiError::new(status, code_of(status), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_their_status_and_keep_the_field() {
        let cases = [
            (Error::not_found("image 1"), 404, "not_found"),
            (Error::conflict("busy"), 409, "conflict"),
            (Error::invalid("mac", "bad"), 400, "invalid_input"),
            (Error::too_large("big"), 413, "too_large"),
            (Error::unauthenticated("who"), 401, "unauthenticated"),
            (Error::forbidden("no"), 403, "forbidden"),
            (Error::unavailable("down"), 503, "unavailable"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status().code, status);
            assert_eq!(api.code(), code);
        }
        let api = ApiError::from(Error::invalid("mac", "bad"));
        assert_eq!(api.envelope().error.field.as_deref(), Some("mac"));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = Error::internal("chunk abc is corrupted")
            .with_source(std::io::Error::other("secret path /var/x"));
        let api = ApiError::from(e);
        assert_eq!(api.status().code, 500);
        assert!(!api.message().contains("secret"));
        assert!(!api.message().contains("corrupted"));
    }
}
