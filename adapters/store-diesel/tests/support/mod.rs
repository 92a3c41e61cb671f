//! Fresh, real databases for the tests: a SQLite file in a temporary
//! directory, or a PostgreSQL database of its own, dropped afterwards.
//!
//! PostgreSQL comes from `BAAS_TEST_POSTGRES_URL` (an admin URL; default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`). When it cannot
//! be reached the test fails under `CI=true`, and otherwise says so loudly
//! and passes without running.

#![allow(dead_code, reason = "each test crate uses a different part")]

use std::sync::Arc;

use baas_core::conformance::Subject;
use baas_store_diesel::DieselMetadataStore;
use diesel::{Connection, PgConnection, RunQueryDsl};

/// Connections per test store: enough for the 8-thread tests to overlap.
pub const POOL: u32 = 8;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// A store on a new SQLite file, and the directory holding it.
pub fn sqlite() -> (DieselMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("baas.db").display());
    let store = baas_store_diesel::open(&url, POOL).expect("opening a fresh SQLite store");
    (store, dir)
}

/// A throwaway PostgreSQL database, dropped (connections and all) with
/// this guard.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the database itself.
    pub url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&self.admin_url).and_then(|mut c| {
            diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut c)
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A new, empty PostgreSQL database, or `None` (after a loud note) when
/// PostgreSQL is unreachable outside CI.
pub fn postgres_database() -> Option<PgDatabase> {
    let admin_url =
        std::env::var("BAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let mut admin = match PgConnection::establish(&admin_url) {
        Ok(c) => c,
        Err(e) => {
            let e = e.to_string();
            let e = e.trim();
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "PostgreSQL is unreachable at BAAS_TEST_POSTGRES_URL ({e}); CI=true needs it: run .ci/postgres-up"
            );
            eprintln!(
                "\n!!!!! NOTE: PostgreSQL is unreachable ({e}); this PostgreSQL test did NOT run. \
                 Start it with .ci/postgres-up or set BAAS_TEST_POSTGRES_URL. !!!!!\n"
            );
            return None;
        }
    };
    let name = format!(
        "baas_test_{}",
        baas_core::conformance::fresh_uuid().simple()
    );
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .expect("creating a test database");
    Some(PgDatabase {
        url: with_database(&admin_url, &name),
        admin_url,
        name,
    })
}

/// A store on a new PostgreSQL database, and the guard that drops it.
pub fn postgres() -> Option<(DieselMetadataStore, PgDatabase)> {
    let db = postgres_database()?;
    let store = baas_store_diesel::open(&db.url, POOL).expect("opening a fresh PostgreSQL store");
    Some((store, db))
}

/// A conformance subject over `store`, keeping `guard` alive until after
/// the store is gone.
pub fn subject(store: DieselMetadataStore, guard: impl std::any::Any) -> Subject {
    let store = Arc::new(store);
    Subject {
        meta: store.clone(),
        queue: store,
        guard: Box::new(guard),
    }
}

#[test]
fn database_urls_swap_the_name() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
}
