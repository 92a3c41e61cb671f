//! In-memory fakes of the BAAS ports: metadata store, boot queue, chunk
//! store, clock and entropy. They obey the same contracts as the real
//! adapters (they pass the same conformance suites) and are used for fast
//! tests and as the reference for what each contract means.

mod block;
mod chunks;
mod meta;
mod system;

use std::sync::Arc;

pub use block::{BlockStats, MemoryBlockDevice};
pub use chunks::MemoryChunkStore;
pub use meta::MemoryMetadataStore;
pub use system::{OsEntropy, SeededEntropy, SystemClock, TickingClock};

use baas_core::services::Ports;

/// Ports entirely in memory, on the system clock and OS randomness.
pub fn ports() -> Ports {
    let meta = Arc::new(MemoryMetadataStore::default());
    let clock = Arc::new(SystemClock);
    Ports {
        meta: meta.clone(),
        queue: meta,
        chunks: Arc::new(MemoryChunkStore::new(clock.clone())),
        clock,
        entropy: Arc::new(OsEntropy),
    }
}
