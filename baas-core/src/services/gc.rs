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

//!
//! Compaction may store frames that need a zstd dictionary, itself stored
//! as a chunk (see `content::Dictionary`). No manifest names a dictionary,
//! so a collection first reads the header of every stored frame and keeps
//! each dictionary some frame still needs, referenced or not: a chunk kept
//! only because it is recent may be reused by the next import, and must
//! still decode. Compaction refreshes a dictionary's timestamp before each
//! frame it writes with it, so a collection that missed that frame sees a
//! dictionary newer than its cutoff.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{policy::check_admin, Actor, Baas};
use crate::content::{
    compact_frame, decode_frame, decode_frame_with, frame_dictionary, frame_is_compact,
    frame_is_raw, ChunkHash, DictEncoder, Dictionary, FRAME_HEADER_LEN, MAX_DICTIONARY_SIZE,
};
use crate::ports::{ImageFilter, Put, SweepStats, Usage};
use crate::{Error, ErrorKind, Result};

/// Fewest chunks of one image worth training a dictionary for.
pub const DICTIONARY_MIN_CHUNKS: usize = 64;
/// Chunks a dictionary is trained on, spread evenly over the image.
const DICTIONARY_SAMPLES: usize = 256;
/// Chunks compressed with and without the dictionary to decide whether it
/// pays for its own storage.
const DICTIONARY_TRIAL: usize = 32;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    /// Chunks looked at (those referenced by committed versions).
    pub scanned: u64,
    /// Chunks recompressed and replaced.
    pub rewritten: u64,
    /// Chunks already compact (or incompressible).
    pub already: u64,
    /// Bytes saved, net of the dictionaries stored.
    pub saved_bytes: u64,
    /// Dictionaries trained and stored (at most one per image).
    pub dictionaries: u64,
    /// Bytes those dictionaries take in the store.
    pub dictionary_bytes: u64,
}

impl CompactReport {
    fn add(&mut self, r: CompactReport) {
        self.scanned += r.scanned;
        self.rewritten += r.rewritten;
        self.already += r.already;
        self.saved_bytes += r.saved_bytes;
        self.dictionaries += r.dictionaries;
        self.dictionary_bytes += r.dictionary_bytes;
    }
}

/// What a collection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks referenced by committed versions.
    pub referenced: u64,
    /// Dictionaries kept because stored frames need them.
    pub dictionaries: u64,
    /// What the sweep did.
    pub sweep: SweepStats,
    /// Dead upload sessions removed.
    pub dead_uploads: u64,
    /// Space used afterwards.
    pub usage: Usage,
}

/// Runs `work` on `items` split into small blocks that up to `threads`
/// threads take one at a time; the results in the order of the blocks.
/// Blocks, not one fixed share per thread: chunks differ a lot in cost (an
/// incompressible one is skipped after a quick test, a compressible one
/// takes the slow level), and a thread whose share was cheap would
/// otherwise idle while another finishes. After a failure the threads stop
/// taking blocks.
fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: &(dyn Fn(&[T]) -> Result<R> + Sync),
) -> Result<Vec<R>> {
    let threads = threads.max(1);
    let per = items.len().div_ceil(threads * 16).clamp(1, 1024);
    let blocks: Vec<&[T]> = items.chunks(per).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<Vec<(usize, R)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(blocks.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(block) = blocks.get(i) else { break };
                        match work(block) {
                            Ok(r) => out.push((i, r)),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::internal("a compaction worker panicked")))
            })
            .collect()
    });
    let mut done = Vec::with_capacity(blocks.len());
    for r in results {
        done.extend(r?);
    }
    done.sort_unstable_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// A chunk's frame as compaction found it.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// Gone (collected meanwhile).
    Missing,
    /// Already with a dictionary: nothing to do.
    Done(Option<ChunkHash>),
    /// zstd without a dictionary.
    Plain,
    /// Stored raw: the import found it incompressible, maybe only from a
    /// sample of its first bytes.
    Raw,
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
        let dictionaries = self.dictionaries_in_use()?;
        let sweep = self.chunks.sweep(
            &|h| referenced.contains(h) || dictionaries.contains(h),
            cutoff,
        )?;
        Ok(GcReport {
            referenced: referenced.len() as u64,
            dictionaries: dictionaries.len() as u64,
            sweep,
            dead_uploads,
            usage: self.chunks.usage()?,
        })
    }

    /// Every dictionary some stored frame needs.
    fn dictionaries_in_use(&self) -> Result<HashSet<ChunkHash>> {
        let found = Mutex::new(HashSet::new());
        self.chunks.scan_headers(FRAME_HEADER_LEN, &|_, head| {
            if let (Some(d), Ok(mut f)) = (frame_dictionary(head), found.lock()) {
                f.insert(d);
            }
        })?;
        found
            .into_inner()
            .map_err(|_| Error::internal("dictionary scan lock poisoned"))
    }

    /// Space used by the chunk store (moderators and admins).
    pub fn storage_usage(&self, actor: &Actor) -> Result<Usage> {
        super::policy::check_moderator(actor, "read storage figures")?;
        self.chunks.usage()
    }

    /// Recompresses every referenced chunk not yet compacted at zstd
    /// `level` (admins; a background job: levels 15 to 19 run at a few
    /// MB/s per core; `baas-server admin compact` uses 15). Imports
    /// compress fast to keep up with the network; this trades CPU later
    /// for space. Image by image: when an image has
    /// enough chunks, a zstd dictionary is trained on them (or the one its
    /// frames already use is reused) and used if it pays for itself; 64
    /// KiB chunks compress much better with what their image has in common.
    /// Frames are replaced atomically and only after the new frame was
    /// checked to decode to the same bytes, so readers never see a
    /// difference, and it can be stopped and re-run.
    pub fn compact_chunks(
        &self,
        actor: &Actor,
        level: i32,
        threads: usize,
    ) -> Result<CompactReport> {
        check_admin(actor, "compact the chunk store")?;
        if !(1..=22).contains(&level) {
            return Err(Error::invalid(
                "level",
                format!("{level} must be a zstd level from 1 to 22"),
            ));
        }
        let referenced = self.meta.referenced_chunks()?;
        let mut total = CompactReport::default();
        for group in self.compaction_groups(&referenced)? {
            total.add(self.compact_group(&group, level, threads.max(1))?);
        }
        Ok(total)
    }

    /// The referenced chunks by image (each chunk with the first image that
    /// has it), then any left over.
    fn compaction_groups(&self, referenced: &HashSet<ChunkHash>) -> Result<Vec<Vec<ChunkHash>>> {
        let mut images = self.meta.images(&ImageFilter {
            owner: None,
            readable_by: None,
        })?;
        images.sort_by_key(|i| i.id.0);
        let mut seen = HashSet::new();
        let mut groups = Vec::new();
        for image in images {
            let mut group = BTreeSet::new();
            for v in self.meta.versions(image.id)? {
                let Some(m) = self.meta.manifest(image.id, v.number)? else {
                    continue;
                };
                for h in m.chunks().flatten() {
                    if referenced.contains(&h) && seen.insert(h) {
                        group.insert(h);
                    }
                }
            }
            if !group.is_empty() {
                groups.push(group.into_iter().collect());
            }
        }
        let mut rest: Vec<_> = referenced.difference(&seen).copied().collect();
        if !rest.is_empty() {
            rest.sort();
            groups.push(rest);
        }
        Ok(groups)
    }

    /// The frame of a chunk compaction works on (`None`: collected
    /// meanwhile).
    fn frame_of(&self, h: &ChunkHash) -> Result<Option<Vec<u8>>> {
        match self.chunks.get(h) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn compact_group(
        &self,
        hashes: &[ChunkHash],
        level: i32,
        threads: usize,
    ) -> Result<CompactReport> {
        let found: Vec<Found> = on_threads(hashes, threads, &|part| {
            part.iter()
                .map(|h| {
                    Ok(match self.frame_of(h)? {
                        None => Found::Missing,
                        Some(f) if frame_is_raw(&f) => Found::Raw,
                        Some(f) => match frame_dictionary(&f) {
                            Some(d) => Found::Done(Some(d)),
                            None => Found::Plain,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let mut report = CompactReport::default();
        let mut used: HashMap<ChunkHash, usize> = HashMap::new();
        let (mut todo, mut raw) = (Vec::new(), Vec::new());
        for (h, f) in hashes.iter().zip(&found) {
            match f {
                Found::Missing => {}
                Found::Done(d) => {
                    report.scanned += 1;
                    report.already += 1;
                    if let Some(d) = d {
                        *used.entry(*d).or_default() += 1;
                    }
                }
                Found::Plain => {
                    report.scanned += 1;
                    todo.push(*h);
                }
                Found::Raw => {
                    report.scanned += 1;
                    raw.push(*h);
                }
            }
        }
        if todo.is_empty() && raw.is_empty() {
            return Ok(report);
        }
        // Trained on compressed frames only: raw ones are mostly data that
        // does not compress at all.
        let dictionary = self.group_dictionary(&used, &todo, level, &mut report)?;
        todo.append(&mut raw);
        let dictionary = dictionary.as_ref();
        let parts = on_threads(&todo, threads, &|part| {
            self.recompress(part, level, dictionary)
        })?;
        let mut saved = 0u64;
        for r in parts {
            report.rewritten += r.rewritten;
            report.already += r.already;
            saved += r.saved_bytes;
        }
        report.saved_bytes = saved.saturating_sub(report.dictionary_bytes);
        Ok(report)
    }

    /// The dictionary an image's chunks are compacted with, stored: the
    /// one its frames already use most, else one trained on `todo` if it
    /// saves more than it costs, else none.
    fn group_dictionary(
        &self,
        used: &HashMap<ChunkHash, usize>,
        todo: &[ChunkHash],
        level: i32,
        report: &mut CompactReport,
    ) -> Result<Option<(Arc<Dictionary>, Vec<u8>)>> {
        if let Some((best, _)) = used.iter().max_by_key(|(h, n)| (**n, **h)) {
            if let Some(frame) = self.frame_of(best)? {
                let d = Dictionary::from_frame(&frame, best)?;
                return Ok(Some((Arc::new(d), frame)));
            }
        }
        if todo.len() < DICTIONARY_MIN_CHUNKS {
            return Ok(None);
        }
        let step = (todo.len() / DICTIONARY_SAMPLES).max(1);
        let mut samples = Vec::new();
        for h in todo.iter().step_by(step).take(DICTIONARY_SAMPLES) {
            if let Some(frame) = self.frame_of(h)? {
                samples.push(decode_frame(&frame, h)?);
            }
        }
        let refs: Vec<&[u8]> = samples.iter().map(Vec::as_slice).collect();
        // Too few or too uniform samples: compact without.
        let Ok(dict) = Dictionary::train(&refs, MAX_DICTIONARY_SIZE) else {
            return Ok(None);
        };
        let frame = dict.frame()?;
        let mut enc = DictEncoder::new(&dict, level)?;
        let trial_step = (samples.len() / DICTIONARY_TRIAL).max(1);
        let (mut plain, mut with, mut n) = (0usize, 0usize, 0usize);
        for data in samples.iter().step_by(trial_step) {
            let p = compact_frame(data, level, usize::MAX)?.map_or(data.len(), |f| f.len());
            let w = enc
                .encode(data, usize::MAX)?
                .map_or(data.len(), |f| f.len());
            plain += p;
            with += w;
            n += 1;
        }
        let gain = plain.saturating_sub(with) as f64 * todo.len() as f64 / n.max(1) as f64;
        if gain <= 2.0 * frame.len() as f64 {
            return Ok(None);
        }
        if let Put::New(bytes) = self.chunks.put(&dict.hash(), &frame)? {
            report.dictionaries += 1;
            report.dictionary_bytes += bytes;
        }
        // Durable before any frame that needs it.
        self.chunks.sync()?;
        Ok(Some((Arc::new(dict), frame)))
    }

    fn recompress(
        &self,
        hashes: &[ChunkHash],
        level: i32,
        dictionary: Option<&(Arc<Dictionary>, Vec<u8>)>,
    ) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let mut enc = dictionary
            .map(|(d, _)| DictEncoder::new(d, level))
            .transpose()?;
        for h in hashes {
            let Some(frame) = self.frame_of(h)? else {
                continue;
            };
            if frame_dictionary(&frame).is_some() {
                report.already += 1;
                continue;
            }
            let data = decode_frame(&frame, h)?;
            // A raw frame gets the slow treatment only if it compresses at
            // all (the import judged many by their first 4 KiB).
            if frame_is_raw(&frame) && compact_frame(&data, 1, frame.len())?.is_none() {
                report.already += 1;
                continue;
            }
            let mut small = match &mut enc {
                Some(enc) => enc.encode(&data, frame.len())?,
                None => None,
            };
            if small.is_none() && (frame_is_raw(&frame) || !frame_is_compact(&frame)) {
                small = compact_frame(&data, level, frame.len())?;
            }
            let Some(small) = small else {
                report.already += 1;
                continue;
            };
            let dict = dictionary.map(|(d, _)| &**d);
            if decode_frame_with(&small, h, dict)? != data {
                return Err(Error::internal(format!(
                    "chunk {h} recompressed does not decode to its bytes"
                )));
            }
            if let (Some((d, stored)), Some(_)) = (dictionary, frame_dictionary(&small)) {
                // Fresh (or back) before the frame that needs it exists.
                if !self.chunks.touch(&d.hash())? {
                    self.chunks.put(&d.hash(), stored)?;
                    self.chunks.sync()?;
                }
            }
            if self.chunks.rewrite(h, &small)? {
                report.rewritten += 1;
                report.saved_bytes += (frame.len() - small.len()) as u64;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::on_threads;
    use crate::Error;

    #[test]
    fn on_threads_answers_in_order_whatever_the_split() {
        for (len, threads) in [(0usize, 3usize), (1, 4), (5, 2), (1000, 3), (100_000, 2)] {
            let items: Vec<usize> = (0..len).collect();
            let parts = on_threads(&items, threads, &|part| Ok(part.to_vec())).expect("no error");
            let flat: Vec<usize> = parts.into_iter().flatten().collect();
            assert_eq!(flat, items, "{len} items on {threads} threads");
        }
    }

    #[test]
    fn on_threads_reports_a_failure() {
        let items: Vec<usize> = (0..10_000).collect();
        let err = on_threads(&items, 2, &|part| {
            if part.contains(&7777) {
                Err(Error::internal("chunk 7777 failed"))
            } else {
                Ok(part.len())
            }
        })
        .expect_err("one block fails");
        assert_eq!(err.message(), "chunk 7777 failed");
    }
}
