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

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    /// Chunks looked at (those referenced by committed versions).
    pub scanned: u64,
    /// Chunks recompressed and replaced.
    pub rewritten: u64,
    /// Chunks already compact (or incompressible).
    pub already: u64,
    /// Bytes saved.
    pub saved_bytes: u64,
}

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

    /// Recompresses every referenced chunk not yet compacted at zstd
    /// `level` (admins; a background job: level 19 runs at a few MB/s per
    /// core). Imports compress fast to keep up with the network; this
    /// trades CPU later for space. Frames are replaced atomically and only
    /// after the new frame was checked to decode to the same bytes, so
    /// readers never see a difference, and it can be stopped and re-run.
    pub fn compact_chunks(
        &self,
        actor: &Actor,
        level: i32,
        threads: usize,
    ) -> Result<CompactReport> {
        check_admin(actor, "compact the chunk store")?;
        if !(1..=22).contains(&level) {
            return Err(crate::Error::invalid(
                "level",
                format!("{level} must be a zstd level from 1 to 22"),
            ));
        }
        let mut all: Vec<_> = self.meta.referenced_chunks()?.into_iter().collect();
        all.sort();
        let threads = threads.max(1);
        let per = all.len().div_ceil(threads).max(1);
        let reports = std::thread::scope(|s| {
            let workers: Vec<_> = all
                .chunks(per)
                .map(|part| s.spawn(move || self.compact_some(part, level)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(crate::Error::internal("a compaction worker panicked"))
                    })
                })
                .collect::<Vec<_>>()
        });
        let mut total = CompactReport::default();
        for r in reports {
            let r = r?;
            total.scanned += r.scanned;
            total.rewritten += r.rewritten;
            total.already += r.already;
            total.saved_bytes += r.saved_bytes;
        }
        Ok(total)
    }

    fn compact_some(
        &self,
        hashes: &[crate::content::ChunkHash],
        level: i32,
    ) -> Result<CompactReport> {
        use crate::content::{compact_frame, decode_frame, frame_is_compact};
        let mut report = CompactReport::default();
        for h in hashes {
            report.scanned += 1;
            let frame = match self.chunks.get(h) {
                Ok(f) => f,
                // Deleted by a concurrent collection: nothing to compact.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if frame_is_compact(&frame) {
                report.already += 1;
                continue;
            }
            let data = decode_frame(&frame, h)?;
            if let Some(small) = compact_frame(&data, level, frame.len())? {
                if decode_frame(&small, h)? == data && self.chunks.rewrite(h, &small)? {
                    report.rewritten += 1;
                    report.saved_bytes += (frame.len() - small.len()) as u64;
                }
            } else {
                report.already += 1;
            }
        }
        Ok(report)
    }
}
