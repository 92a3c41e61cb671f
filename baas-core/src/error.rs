//! The one error type of BAAS, grouped by what the caller can do about it.
//!
//! Shells map it exactly once: the REST server to a status code and a JSON
//! envelope, the Python bindings to an exception class. The `message` is for
//! the caller; the `source` is the internal cause, for logs only.

use std::fmt;

/// A boxed internal cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, by remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The thing does not exist, or the caller may not know it exists.
    NotFound,
    /// The request clashes with the current state (duplicate name, in use).
    Conflict,
    /// The request itself is malformed or out of range; fix the input.
    Invalid,
    /// The request is larger than a limit or quota allows.
    TooLarge,
    /// No or bad credentials.
    Unauthenticated,
    /// Known caller, not allowed.
    Forbidden,
    /// A dependency is down or overloaded; retrying later may work.
    Unavailable,
    /// A bug or a broken invariant (for example a corrupted chunk).
    Internal,
}

impl ErrorKind {
    /// A stable, snake_case code for envelopes and logs.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid_input",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The BAAS error: a kind, an external message, an optional field name and an
/// optional internal cause.
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    field: Option<String>,
    #[source]
    source: Option<Cause>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with an external `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            field: None,
            source: None,
        }
    }

    /// `what` (e.g. "image 1234") does not exist or is not visible.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }

    /// A state conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Bad input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Error {
            kind: ErrorKind::Invalid,
            message: format!("{field}: {message}"),
            field: Some(field),
            source: None,
        }
    }

    /// Over a limit or quota.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// Missing or bad credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// Not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// A dependency failed in a way that may pass.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A bug or broken invariant.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Attaches the internal cause.
    pub fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind, by remedy.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The offending input field, for `Invalid`.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Whether retrying the same call later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable)
    }

    /// The message followed by the chain of causes, for logs.
    pub fn detailed(&self) -> String {
        let mut out = format!("{}: {}", self.kind.code(), self.message);
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detailed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detailed_lists_causes_but_display_does_not() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::unavailable("storing chunk failed").with_source(io);
        assert_eq!(e.to_string(), "storing chunk failed");
        assert_eq!(
            e.detailed(),
            "unavailable: storing chunk failed: disk on fire"
        );
        assert!(e.retryable());
    }

    #[test]
    fn invalid_names_the_field() {
        let e = Error::invalid("mac", "expected six hex octets");
        assert_eq!(e.field(), Some("mac"));
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(e.message(), "mac: expected six hex octets");
    }
}
