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

/// Connections per test store: enough for the 8-thread tests to overlap.
pub const POOL: u32 = 8;

/// A store on a new SQLite file, and the directory holding it.
pub fn sqlite() -> (DieselMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("baas.db").display());
    let store = baas_store_diesel::open(&url, POOL).expect("opening a fresh SQLite store");
    (store, dir)
}

pub use baas_store_diesel::testing::{postgres_database, PgDatabase};

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
