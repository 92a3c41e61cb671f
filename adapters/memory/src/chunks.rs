//! An in-memory chunk store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use baas_core::content::ChunkHash;
use baas_core::model::Timestamp;
use baas_core::ports::{ChunkStore, Clock, Put, SweepStats, Usage};
use baas_core::{Error, Result};

type Frames = HashMap<ChunkHash, (Vec<u8>, Timestamp)>;

/// Chunk frames in a hash map, timestamped by a [`Clock`].
#[derive(Debug)]
pub struct MemoryChunkStore {
    clock: Arc<dyn Clock>,
    chunks: Mutex<Frames>,
}

impl MemoryChunkStore {
    /// An empty store on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryChunkStore {
            clock,
            chunks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Frames>> {
        self.chunks
            .lock()
            .map_err(|_| Error::internal("chunk store lock poisoned"))
    }

    /// Replaces a stored frame's bytes (for corruption tests).
    pub fn corrupt(&self, hash: &ChunkHash, frame: Vec<u8>) -> Result<()> {
        let mut map = self.lock()?;
        let entry = map
            .get_mut(hash)
            .ok_or_else(|| Error::not_found(format!("chunk {hash}")))?;
        entry.0 = frame;
        Ok(())
    }
}

impl ChunkStore for MemoryChunkStore {
    fn put(&self, hash: &ChunkHash, frame: &[u8]) -> Result<Put> {
        let now = self.clock.now();
        let mut map = self.lock()?;
        if let Some(entry) = map.get_mut(hash) {
            entry.1 = now;
            return Ok(Put::Existing);
        }
        map.insert(*hash, (frame.to_vec(), now));
        Ok(Put::New(frame.len() as u64))
    }

    fn rewrite(&self, hash: &ChunkHash, frame: &[u8]) -> Result<bool> {
        let now = self.clock.now();
        Ok(self
            .lock()?
            .get_mut(hash)
            .map(|e| *e = (frame.to_vec(), now))
            .is_some())
    }

    fn touch(&self, hash: &ChunkHash) -> Result<bool> {
        let now = self.clock.now();
        Ok(self.lock()?.get_mut(hash).map(|e| e.1 = now).is_some())
    }

    fn contains(&self, hash: &ChunkHash) -> Result<bool> {
        Ok(self.lock()?.contains_key(hash))
    }

    fn get(&self, hash: &ChunkHash) -> Result<Vec<u8>> {
        self.lock()?
            .get(hash)
            .map(|e| e.0.clone())
            .ok_or_else(|| Error::not_found(format!("chunk {hash}")))
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn sweep(
        &self,
        keep: &(dyn Fn(&ChunkHash) -> bool + Sync),
        cutoff: Timestamp,
    ) -> Result<SweepStats> {
        let mut map = self.lock()?;
        let mut stats = SweepStats {
            scanned: map.len() as u64,
            ..SweepStats::default()
        };
        map.retain(|h, (frame, at)| {
            if keep(h) {
                return true;
            }
            if *at >= cutoff {
                stats.kept_recent += 1;
                return true;
            }
            stats.removed += 1;
            stats.freed_bytes += frame.len() as u64;
            false
        });
        Ok(stats)
    }

    fn usage(&self) -> Result<Usage> {
        let map = self.lock()?;
        Ok(Usage {
            chunks: map.len() as u64,
            bytes: map.values().map(|(f, _)| f.len() as u64).sum(),
        })
    }
}
