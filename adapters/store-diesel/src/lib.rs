//! The BAAS metadata store and boot queue on diesel: SQLite and PostgreSQL
//! in one build, chosen at run time from the database URL.
//!
//! [`open`] is the one place the backend is picked. It returns a
//! [`DieselMetadataStore`], which implements both
//! [`MetadataStore`](baas_core::ports::MetadataStore) and
//! [`BootQueue`](baas_core::ports::BootQueue); wrap it in an `Arc` and hand
//! it out as both.
//!
//! - Queries are written once, against a `#[derive(diesel::MultiConnection)]`
//!   enum; per-backend arms exist only where the SQL differs: how a write
//!   transaction begins, and the row locks PostgreSQL needs where SQLite's
//!   single writer already serialises.
//! - Every port method is one transaction. SQLite writers begin
//!   `IMMEDIATE`; PostgreSQL writers run at READ COMMITTED and lock the
//!   rows they decide on (`FOR UPDATE` / `FOR SHARE`).
//! - Migrations for each backend are embedded and run on open.
//! - Diesel errors are translated here, saying what the call was doing;
//!   callers only ever see [`baas_core::Error`].

use std::time::Duration;

use baas_core::Result;

mod db;
mod error;
mod metadata;
mod placement;
mod queue;
mod rows;
mod schema;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

use db::{DbConnection, Mode};
use error::TxError;

/// How long a caller waits for a pooled connection before the store
/// answers `Unavailable`.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the metadata store at `url` with a pool of at most `pool_size`
/// connections, creating or migrating its schema.
///
/// - `sqlite://PATH`: a SQLite file, absolute (`sqlite:///var/lib/baas.db`)
///   or relative (`sqlite://baas.db`). The file is created if missing; its
///   directory is not.
/// - `postgres://...` or `postgresql://...`: a PostgreSQL database (libpq
///   URL).
///
/// Anything else, a bare path included, is `Invalid`: a typo never creates
/// an empty database. An unreachable database is `Unavailable`.
pub fn open(url: &str, pool_size: u32) -> Result<DieselMetadataStore> {
    open_with_timeout(url, pool_size, CONNECTION_TIMEOUT)
}

fn open_with_timeout(url: &str, pool_size: u32, timeout: Duration) -> Result<DieselMetadataStore> {
    let target = db::Target::parse(url)?;
    Ok(DieselMetadataStore {
        db: db::Db::open(target, pool_size, timeout)?,
    })
}

/// The metadata store and boot queue over a pool of SQLite or PostgreSQL
/// connections. Built by [`open`].
#[derive(Debug)]
pub struct DieselMetadataStore {
    db: db::Db,
}

impl DieselMetadataStore {
    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Runs `f` in one transaction on a pooled connection; `what` says what
    /// the call is doing, for error messages.
    fn run<T>(
        &self,
        mode: Mode,
        what: &str,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T> {
        let mut conn = self.db.conn()?;
        db::transaction(&mut conn, mode, f).map_err(|e| e.into_error(what))
    }

    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T> {
        self.run(Mode::Read, what, f)
    }

    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T> {
        self.run(Mode::Write, what, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baas_core::ErrorKind;

    #[test]
    fn an_exhausted_pool_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("pool.db").display());
        let store = open_with_timeout(&url, 1, Duration::from_millis(200)).expect("open");
        let held = store.db.conn().expect("the only connection");
        let err = store
            .read("waiting", |_| Ok(()))
            .expect_err("pool is empty");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert!(err.retryable());
        drop(held);
        store.read("waiting", |_| Ok(())).expect("free again");
    }
}
