//! The in-memory fakes pass every conformance suite.

use std::sync::Arc;

use baas_core::conformance::{ChunkSubject, Subject};
use baas_core::ports::Clock;
use baas_memory::{MemoryChunkStore, MemoryMetadataStore, TickingClock};

fn subject() -> Subject {
    let store = Arc::new(MemoryMetadataStore::default());
    Subject {
        meta: store.clone(),
        queue: store,
        guard: Box::new(()),
    }
}

fn chunk_subject() -> ChunkSubject {
    let clock = Arc::new(TickingClock::new(1_000_000));
    let store = Arc::new(MemoryChunkStore::new(clock.clone()));
    ChunkSubject {
        store,
        now: Box::new(move || clock.now()),
        guard: Box::new(()),
    }
}

mod metadata {
    baas_core::metadata_store_conformance!(crate::subject());
}

mod chunks {
    baas_core::chunk_store_conformance!(crate::chunk_subject());
}

mod services {
    baas_core::services_conformance!((
        baas_memory::ports(),
        Box::new(()) as Box<dyn std::any::Any>
    ));
}
