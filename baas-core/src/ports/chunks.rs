//! The chunk store: content-addressed, compressed chunk frames.

use crate::content::ChunkHash;
use crate::model::Timestamp;
use crate::Result;

/// What [`ChunkStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The chunk was new; this many bytes were stored.
    New(u64),
    /// The chunk was already there (its timestamp is refreshed).
    Existing,
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepStats {
    /// Chunks looked at.
    pub scanned: u64,
    /// Chunks removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Unreferenced chunks kept because they are newer than the cutoff
    /// (an import may still need them).
    pub kept_recent: u64,
}

/// Space used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Stored chunks.
    pub chunks: u64,
    /// Stored bytes (frames).
    pub bytes: u64,
}

/// Stores chunk frames (see [`crate::content::encode_frame`]) by the hash of
/// their decoded bytes.
///
/// Contract, checked by `baas_core::conformance::chunk_store`:
/// - `put` is idempotent. A put chunk is durable and visible (to `get`,
///   `touch`, `contains`) once a later [`ChunkStore::sync`] returns; an
///   adapter may make it visible earlier (the filesystem store stages
///   chunks and installs a whole batch at `sync`, so durability costs one
///   flush per batch, not one per chunk). A chunk is either absent or
///   complete under its name, never partial.
/// - `touch` and `put` of an existing chunk refresh its timestamp; `sweep`
///   never removes a chunk whose timestamp is at or after `cutoff`, even if
///   `touch` races with the sweep.
/// - `get` of a missing chunk is `NotFound`.
pub trait ChunkStore: Send + Sync + std::fmt::Debug {
    /// Stores `frame` under `hash` unless already present.
    fn put(&self, hash: &ChunkHash, frame: &[u8]) -> Result<Put>;

    /// Replaces the frame of a present chunk with `frame`, which the caller
    /// has checked decodes to the same bytes (compaction). Atomic and
    /// durable when it returns: readers see the old frame or the new one,
    /// never a mix. Returns false, storing nothing, if the chunk is absent.
    fn rewrite(&self, hash: &ChunkHash, frame: &[u8]) -> Result<bool>;

    /// Refreshes the timestamp of `hash` if present; returns whether it is.
    fn touch(&self, hash: &ChunkHash) -> Result<bool>;

    /// Whether `hash` is present (no timestamp change).
    fn contains(&self, hash: &ChunkHash) -> Result<bool>;

    /// The frame stored under `hash`.
    fn get(&self, hash: &ChunkHash) -> Result<Vec<u8>>;

    /// The frames of `hashes`, in order: [`ChunkStore::get`] of each. A
    /// store may start every read before waiting for the first (a cold
    /// disk then serves them in parallel rather than one after another).
    fn get_many(&self, hashes: &[ChunkHash]) -> Vec<Result<Vec<u8>>> {
        hashes.iter().map(|h| self.get(h)).collect()
    }

    /// Makes every `put` that returned before this call durable and
    /// visible (directory entries included).
    fn sync(&self) -> Result<()>;

    /// Removes every chunk for which `keep` is false and whose timestamp is
    /// before `cutoff`.
    fn sweep(
        &self,
        keep: &(dyn Fn(&ChunkHash) -> bool + Sync),
        cutoff: Timestamp,
    ) -> Result<SweepStats>;

    /// Space used.
    fn usage(&self) -> Result<Usage>;

    /// Calls `each` with the hash and the first `len` bytes (all of it when
    /// shorter) of every stored chunk's frame: how garbage collection finds
    /// the dictionaries frames need (`content::frame_dictionary`) without
    /// reading whole frames. A chunk put or removed meanwhile may or may
    /// not be seen. The default lists the chunks with a sweep that keeps
    /// everything and reads each frame whole; adapters can do better.
    fn scan_headers(&self, len: usize, each: &(dyn Fn(&ChunkHash, &[u8]) + Sync)) -> Result<()> {
        let seen = std::sync::Mutex::new(Vec::new());
        self.sweep(
            &|h| {
                if let Ok(mut s) = seen.lock() {
                    s.push(*h);
                }
                true
            },
            Timestamp(i64::MIN),
        )?;
        let seen = seen
            .into_inner()
            .map_err(|_| crate::Error::internal("chunk scan lock poisoned"))?;
        for h in seen {
            match self.get(&h) {
                Ok(frame) => each(&h, &frame[..len.min(frame.len())]),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
