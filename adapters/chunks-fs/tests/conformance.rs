//! `FsChunkStore` passes the chunk store suite (on the system clock and on
//! a fake one) and the services suite with real chunk files.

use std::sync::Arc;

use baas_chunks_fs::FsChunkStore;
use baas_core::conformance::ChunkSubject;
use baas_core::ports::Clock;
use baas_core::services::Ports;
use baas_memory::{SystemClock, TickingClock};

fn system_clock_subject() -> ChunkSubject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(FsChunkStore::open(dir.path().join("chunks")).expect("open"));
    ChunkSubject {
        store,
        now: Box::new(|| SystemClock.now()),
        guard: Box::new(dir),
    }
}

fn fake_clock_subject() -> ChunkSubject {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(TickingClock::new(1_700_000_000_000));
    let store = Arc::new(FsChunkStore::open_with_clock(dir.path(), clock.clone()).expect("open"));
    ChunkSubject {
        store,
        now: Box::new(move || clock.now()),
        guard: Box::new(dir),
    }
}

fn services_ports() -> (Ports, Box<dyn std::any::Any>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ports = baas_memory::ports();
    ports.chunks = Arc::new(FsChunkStore::open(dir.path()).expect("open"));
    (ports, Box::new(dir))
}

mod chunks_system_clock {
    baas_core::chunk_store_conformance!(crate::system_clock_subject());
}

mod chunks_fake_clock {
    baas_core::chunk_store_conformance!(crate::fake_clock_subject());
}

mod services {
    baas_core::services_conformance!(crate::services_ports());
}
