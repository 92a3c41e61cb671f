//! Translating diesel's errors into BAAS errors, inside the adapter: nothing
//! diesel-typed crosses a port.

use baas_core::Error;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Why a transaction body stopped: the use case decided (a missing row, a
/// conflict), or the database failed. Only the latter is translated by
/// [`db_error`], with the call's context.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The use case's verdict, passed through as is.
    Abort(Error),
    /// The database failed.
    Db(DieselError),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        TxError::Db(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Abort(e)
    }
}

impl TxError {
    /// The BAAS error, `what` saying what the call was doing ("adding user
    /// \"bob\"").
    pub(crate) fn into_error(self, what: &str) -> Error {
        match self {
            TxError::Abort(e) => e,
            TxError::Db(e) => db_error(what, e),
        }
    }
}

/// Translates a database failure while doing `what`. Specific constraint
/// violations are translated at their call sites (see [`violates`]); what
/// reaches this function is the generic case.
pub(crate) fn db_error(what: &str, e: DieselError) -> Error {
    match &e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            Error::conflict(format!("{what}: a record with the same key already exists")).with_source(e)
        }
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => Error::conflict(format!(
            "{what}: it refers to something that no longer exists, or something still refers to it"
        ))
        .with_source(e),
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure,
            _,
        ) => Error::unavailable(format!("{what} failed: the database connection was lost or the call clashed with another; try again"))
            .with_source(e),
        DieselError::DatabaseError(_, info) if is_busy(info.message()) => {
            Error::unavailable(format!("{what} failed: the database was busy or the call clashed with another; try again")).with_source(e)
        }
        _ => Error::internal(format!("{what} failed")).with_source(e),
    }
}

/// SQLite's "another connection holds the lock past `busy_timeout`",
/// PostgreSQL's deadlock victim, and the PostgreSQL messages of a server
/// going away.
fn is_busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("database is locked")
        || m.contains("deadlock detected")
        || m.contains("database is busy")
        || m.contains("database table is locked")
        || m.contains("terminating connection")
        || m.contains("server closed the connection")
        || m.contains("the database system is shutting down")
        || m.contains("the database system is starting up")
}

/// Whether `e` is a violation of `kind` on one of `constraints`. SQLite
/// names the columns ("UNIQUE constraint failed: users.name"), PostgreSQL
/// the constraint ("users_name_key"), so callers pass both spellings.
pub(crate) fn violates(e: &DieselError, kind: DatabaseErrorKind, constraints: &[&str]) -> bool {
    match e {
        DieselError::DatabaseError(k, info)
            if std::mem::discriminant(k) == std::mem::discriminant(&kind) =>
        {
            let message = info.message();
            let name = info.constraint_name().unwrap_or("");
            constraints
                .iter()
                .any(|c| name == *c || message.ends_with(c) || message.contains(&format!("{c},")))
        }
        _ => false,
    }
}

/// A unique violation on one of `constraints` (see [`violates`]).
pub(crate) fn duplicate(e: &DieselError, constraints: &[&str]) -> bool {
    violates(e, DatabaseErrorKind::UniqueViolation, constraints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_lost_connections_are_retryable() {
        assert!(is_busy("database is locked"));
        assert!(is_busy(
            "FATAL: terminating connection due to administrator command"
        ));
        assert!(!is_busy("no such table: users"));
        let e = db_error("listing users", DieselError::BrokenTransactionManager);
        assert_eq!(e.kind(), baas_core::ErrorKind::Internal);
        assert_eq!(e.message(), "listing users failed");
    }
}
