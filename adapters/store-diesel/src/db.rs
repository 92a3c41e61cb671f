//! Choosing the backend from the URL, the connection pool, migrations and
//! transactions. The only module that knows there are two backends, apart
//! from the few per-backend lock statements in the stores.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use baas_core::{Error, Result};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{db_error, TxError};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Every backend this crate is built with. Queries are written once against
/// this enum; per-backend arms appear only where the SQL differs.
#[derive(diesel::MultiConnection)]
pub(crate) enum DbConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// The URL schemes [`crate::open`] understands, for error messages.
const SCHEMES: &str = "sqlite://PATH, postgres://... or postgresql://...";

/// Where the database is, parsed from the URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file path (created if missing; its directory is not).
    Sqlite(String),
    /// A libpq connection URL.
    Postgres(String),
}

impl Target {
    /// Parses a database URL. Never touches the filesystem beyond checking
    /// that a SQLite file's directory exists.
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let url = url.trim();
        let bad = |why: String| Error::invalid("database_url", why);
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/baas/baas.db".into(),
                ));
            }
            if path == ":memory:" || path.starts_with("file:") || path.contains('?') {
                return Err(bad(format!(
                    "{path:?} is not a plain file path; in-memory databases and URI parameters are not supported"
                )));
            }
            let dir = match Path::new(path).parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if Path::new(path).is_dir() {
                return Err(bad(format!("{path} is a directory, not a SQLite file")));
            }
            if !dir.is_dir() {
                return Err(bad(format!(
                    "directory {} does not exist; create it first (the SQLite file itself is created on first use)",
                    dir.display()
                )));
            }
            return Ok(Target::Sqlite(path.to_string()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_string()));
        }
        let shown = redact(url);
        match url.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("mysql") || scheme.eq_ignore_ascii_case("mariadb") => {
                Err(bad(format!("{scheme} is not supported; use {SCHEMES}")))
            }
            Some((scheme, _)) => Err(bad(format!("unknown scheme {scheme:?} in {shown:?}; use {SCHEMES}"))),
            None if url.is_empty() => Err(bad(format!("must not be empty; use {SCHEMES}"))),
            None => Err(bad(format!(
                "{shown:?} has no scheme; for a SQLite file write sqlite://{shown} (the known schemes are {SCHEMES})"
            ))),
        }
    }

    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "sqlite://{path}"),
            Target::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` without the password, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Opens connections for the pool, to the one backend the URL chose.
#[derive(Debug)]
pub(crate) struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        Ok(match &self.target {
            Target::Sqlite(path) => DbConnection::Sqlite(SqliteConnection::establish(path)?),
            Target::Postgres(url) => DbConnection::Postgres(PgConnection::establish(url)?),
        })
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// Settings every new connection gets.
#[derive(Debug)]
struct Pragmas;

/// `busy_timeout` first: switching to WAL needs a lock another connection
/// may hold. `synchronous=FULL`: a commit the API acknowledged survives a
/// power cut.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;";

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        match conn {
            DbConnection::Sqlite(c) => c
                .batch_execute(SQLITE_PRAGMAS)
                .map_err(diesel::r2d2::Error::QueryError),
            DbConnection::Postgres(_) => Ok(()),
        }
    }
}

/// The pool, with what it connects to.
pub(crate) struct Db {
    pool: Pool<Manager>,
    target: Target,
    timeout: Duration,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("Db")
            .field("target", &self.target)
            .field("max_size", &self.pool.max_size())
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish()
    }
}

/// Read transactions see one snapshot; write transactions take the write
/// lock (SQLite) or row locks (PostgreSQL) up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

impl Db {
    /// Builds the pool and runs pending migrations.
    pub(crate) fn open(target: Target, pool_size: u32, timeout: Duration) -> Result<Db> {
        if pool_size == 0 {
            return Err(Error::invalid("pool_size", "must be at least 1"));
        }
        // A pooled PostgreSQL connection may have died with its server
        // (restart, failover): check it with a ping at each checkout. A
        // SQLite connection is a file handle that cannot go away; a ping
        // would be one more statement on every store call (the agents'
        // polls make several).
        let check_out_ping = matches!(target, Target::Postgres(_));
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(0))
            .test_on_check_out(check_out_ping)
            .connection_timeout(timeout)
            .connection_customizer(Box::new(Pragmas))
            .build_unchecked(Manager {
                target: target.clone(),
            });
        let db = Db {
            pool,
            target,
            timeout,
        };
        db.migrate()?;
        Ok(db)
    }

    pub(crate) fn backend(&self) -> &'static str {
        self.target.backend()
    }

    /// A pooled connection, or `Unavailable` when none frees up in time.
    pub(crate) fn conn(&self) -> Result<PooledConnection<Manager>> {
        self.pool.get().map_err(|e| {
            Error::unavailable(format!(
                "no {} connection within {} s: the database is unreachable or all {} connections are busy",
                self.backend(),
                self.timeout.as_secs_f32(),
                self.pool.max_size()
            ))
            .with_source(e)
        })
    }

    /// Applies the embedded migrations that have not run yet. Concurrent
    /// openers wait for each other: SQLite through its write lock,
    /// PostgreSQL through an advisory lock held until the transaction ends.
    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let result = match &mut *conn {
            DbConnection::Sqlite(c) => c.immediate_transaction(|c| {
                c.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(drop)
                    .map_err(MigrationError)
            }),
            DbConnection::Postgres(c) => c.transaction(|c| {
                // Any constant works; this one spells "BAAS" in ASCII.
                diesel::sql_query("SELECT pg_advisory_xact_lock(1111572819)").execute(c)?;
                c.run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(drop)
                    .map_err(MigrationError)
            }),
        };
        result.map_err(|e| match e.0.downcast::<diesel::result::Error>() {
            Ok(db) => db_error("migrating the database schema", *db),
            Err(other) => {
                Error::internal("migrating the database schema failed").with_source(other)
            }
        })
    }
}

/// A migration failure, wrapped so diesel's transaction helpers accept it.
#[derive(Debug)]
struct MigrationError(Box<dyn std::error::Error + Send + Sync>);

impl From<diesel::result::Error> for MigrationError {
    fn from(e: diesel::result::Error) -> Self {
        MigrationError(Box::new(e))
    }
}

/// Runs `f` in one transaction. SQLite writers begin with `BEGIN IMMEDIATE`
/// (what `SqliteConnection::immediate_transaction` does, here on the
/// multi-backend connection), so two writers never both hold a read lock
/// and then deadlock upgrading it; PostgreSQL writers run at READ COMMITTED
/// and lock the rows they decide on. Readers get one snapshot.
///
/// Rolls back when `f` fails; the use case's own verdict (`TxError::Abort`)
/// wins over a failing rollback, which leaves the connection marked broken
/// for the pool to discard.
pub(crate) fn transaction<T>(
    conn: &mut DbConnection,
    mode: Mode,
    f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
) -> Result<T, TxError> {
    match (&mut *conn, mode) {
        (DbConnection::Sqlite(c), Mode::Write) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
        }
        (DbConnection::Sqlite(c), Mode::Read) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN DEFERRED")?
        }
        (DbConnection::Postgres(c), Mode::Write) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN")?
        }
        (DbConnection::Postgres(c), Mode::Read) => AnsiTransactionManager::begin_transaction_sql(
            c,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )?,
    }
    match f(conn) {
        Ok(value) => {
            <DbConnection as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            // A failed rollback leaves the transaction manager broken; the
            // pool sees that and drops the connection.
            let _ = <DbConnection as Connection>::TransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            Target::parse("postgres://u:p@localhost/db").ok(),
            Some(Target::Postgres("postgres://u:p@localhost/db".into()))
        );
        assert_eq!(
            Target::parse("postgresql://localhost/db").ok(),
            Some(Target::Postgres("postgresql://localhost/db".into()))
        );
        assert_eq!(
            Target::parse("sqlite://x.db").ok(),
            Some(Target::Sqlite("x.db".into()))
        );
        assert_eq!(
            Target::parse("sqlite:///tmp/x.db").ok(),
            Some(Target::Sqlite("/tmp/x.db".into()))
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://bob:s3cret@db:5432/baas"),
            "postgres://bob:***@db:5432/baas"
        );
        assert_eq!(redact("postgres://db/baas"), "postgres://db/baas");
        let e = Target::parse("postgress://bob:s3cret@db/baas").expect_err("typo");
        assert!(!e.message().contains("s3cret"), "{}", e.message());
        assert_eq!(
            format!("{:?}", Target::Postgres("postgresql://bob:pw@h/d".into())),
            "postgresql://bob:***@h/d"
        );
    }
}
