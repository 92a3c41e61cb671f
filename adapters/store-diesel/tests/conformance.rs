//! The diesel store passes the metadata store and boot queue conformance
//! suites on SQLite and on PostgreSQL, and the services suite on top of
//! them.

mod support;

use std::any::Any;
use std::sync::Arc;

use baas_core::conformance::Subject;
use baas_core::services::Ports;
use baas_memory::{MemoryChunkStore, OsEntropy, SystemClock};
use baas_store_diesel::DieselMetadataStore;

fn fresh_sqlite() -> Subject {
    let (store, dir) = support::sqlite();
    support::subject(store, dir)
}

/// `None` only when PostgreSQL is unreachable outside CI (see `support`).
fn fresh_postgres() -> Option<Subject> {
    let (store, db) = support::postgres()?;
    Some(support::subject(store, db))
}

/// The services on this store, with in-memory chunks.
fn ports(store: DieselMetadataStore, guard: impl Any) -> (Ports, Box<dyn Any>) {
    let store = Arc::new(store);
    let clock = Arc::new(SystemClock);
    let ports = Ports {
        meta: store.clone(),
        queue: store,
        chunks: Arc::new(MemoryChunkStore::new(clock.clone())),
        clock,
        entropy: Arc::new(OsEntropy),
    };
    (ports, Box::new(guard))
}

fn services_sqlite() -> (Ports, Box<dyn Any>) {
    let (store, dir) = support::sqlite();
    ports(store, dir)
}

fn services_postgres() -> Option<(Ports, Box<dyn Any>)> {
    let (store, db) = support::postgres()?;
    Some(ports(store, db))
}

mod sqlite {
    baas_core::metadata_store_conformance!(crate::fresh_sqlite());
}

mod postgres {
    // `return` leaves the generated test early when PostgreSQL is missing
    // outside CI; under CI=true `fresh_postgres` fails the test instead.
    baas_core::metadata_store_conformance!(match crate::fresh_postgres() {
        Some(subject) => subject,
        None => return,
    });
}

mod services_sqlite {
    baas_core::services_conformance!(crate::services_sqlite());
}

mod services_postgres {
    baas_core::services_conformance!(match crate::services_postgres() {
        Some(ports) => ports,
        None => return,
    });
}
