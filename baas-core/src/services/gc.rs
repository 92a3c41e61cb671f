//! Garbage collection: removes chunks that no committed version references,
//! and never one an import in progress may still need.
//!
//! Why this is safe without a global lock: every import registers an
//! upload session before it touches the chunk store, and every chunk it
//! writes or reuses gets a timestamp at or after the session's start. The
//! sweep's cutoff is at or before the start of every live session (and
//! before the collection itself began), so anything an import relies on is
//! newer than the cutoff and kept. The chunk store's `sweep` re-checks the
//! timestamp after taking a chunk out of place, which closes the race with a
//! concurrent `touch`.

use super::{policy::check_admin, Actor, Baas};
use crate::ports::{SweepStats, Usage};
use crate::Result;

/// What a collection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks referenced by committed versions.
    pub referenced: u64,
    /// What the sweep did.
    pub sweep: SweepStats,
    /// Dead upload sessions removed.
    pub dead_uploads: u64,
    /// Space used afterwards.
    pub usage: Usage,
}

impl Baas {
    /// Runs one garbage collection (admins).
    pub fn collect_garbage(&self, actor: &Actor) -> Result<GcReport> {
        check_admin(actor, "collect garbage")?;
        let now = self.clock.now();
        let alive_since = now.plus_millis(-self.config.upload_idle_timeout_ms);
        let dead_uploads = self.meta.delete_dead_uploads(alive_since)?;
        let oldest = self.meta.oldest_live_upload(alive_since)?.unwrap_or(now);
        let cutoff = oldest.min(now).plus_millis(-self.config.gc_margin_ms);
        // Read the references only after fixing the cutoff: a version
        // committed in between had a live session, so its chunks are newer
        // than the cutoff.
        let referenced = self.meta.referenced_chunks()?;
        let sweep = self.chunks.sweep(&|h| referenced.contains(h), cutoff)?;
        Ok(GcReport {
            referenced: referenced.len() as u64,
            sweep,
            dead_uploads,
            usage: self.chunks.usage()?,
        })
    }

    /// Space used by the chunk store (moderators and admins).
    pub fn storage_usage(&self, actor: &Actor) -> Result<Usage> {
        super::policy::check_moderator(actor, "read storage figures")?;
        self.chunks.usage()
    }
}
