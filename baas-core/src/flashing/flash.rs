//! Delta flashing: compare the device with a version's manifest in place,
//! fetch and write only the chunks that differ, zero holes that hold data,
//! then flush and verify.
//!
//! Threads, all inside one `std::thread::scope`:
//! ```text
//!  scan workers --(stripes)--> caller --(batches)--> fetchers --(frames)--> writers
//!  read + hash                 in order: zero runs,   AgentLink::chunks      decode, verify,
//!                              batch what differs     with retries          refetch, write
//! ```
//! A differing chunk whose place on the disk holds data goes in a delta
//! batch instead (`AgentLink::chunk_deltas`, with the block hashes the scan
//! computed); the writer rebuilds it from the disk's bytes and checks its
//! hash, and fetches the whole frame when that fails. Asking costs 4 bytes
//! a block and a decompression on the server, so a flash whose deltas keep
//! losing to whole frames (the disk held unrelated data) stops asking,
//! except for one chunk in [`PROBE_EVERY`], until they win again.
//!
//! Every channel is bounded, so at most a few MiB are in flight. The
//! calling thread only coordinates (and so is the one that reports
//! progress); the first failure anywhere stops every stage.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};

use super::pipeline::{retry, runs, scan, Crew, Fault, Layout, Meter};
use super::{FlashOptions, FlashReport, MAX_REFETCHES};
use crate::content::{is_zero, ChunkHash, FrameDecoder, Manifest};
use crate::delta::{apply_delta, BlockHashes, DeltaReply, DeltaWant};
use crate::model::{JobId, Progress};
use crate::ports::{AgentLink, BlockDevice};
use crate::{Error, Result};

/// Threads that call [`AgentLink::chunks`] at once: two keep the link busy
/// while the writers work through the previous batch.
const FETCHERS: usize = 2;

/// What a written chunk must read back as: xxh3 of the bytes written,
/// which were checked against the chunk's blake3 hash just before.
type Fingerprint = u64;

fn fingerprint(bytes: &[u8]) -> Fingerprint {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Fetched chunks handed from a fetcher to a writer at a time.
const HANDOFF: usize = 8;

/// While deltas lose, still ask for one chunk in this many.
const PROBE_EVERY: usize = 16;

/// How often deltas have won lately: an exponential moving average of
/// "the server sent a delta rather than the frame", in 1/1024ths.
#[derive(Debug)]
struct DeltaGauge(AtomicU32);

impl DeltaGauge {
    const ONE: u32 = 1024;
    /// Below this (1/16) asking is not worth the server's work.
    const WORTH: u32 = Self::ONE / 16;

    fn new() -> DeltaGauge {
        DeltaGauge(AtomicU32::new(Self::ONE))
    }

    fn record(&self, won: bool) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v - v / 16 + if won { Self::ONE / 16 } else { 0 })
            });
    }

    /// Whether to ask for chunk `index` as a delta.
    fn asking(&self, index: usize) -> bool {
        self.0.load(Ordering::Relaxed) >= Self::WORTH || index % PROBE_EVERY == 0
    }
}

/// A failure and the phase it happened in (`flash` or `verify`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub phase: &'static str,
    pub error: Error,
}

fn in_phase(phase: &'static str) -> impl Fn(Error) -> Failure {
    move |error| Failure { phase, error }
}

/// Writes version `entry` of `job` onto `device`, touching only what
/// differs, and verifies the result (see the [module docs](super)).
///
/// Refuses an image larger than the device before writing anything
/// (`Invalid`, naming both sizes). A verification mismatch after writing is
/// `Internal` and names the chunks. Progress goes to `progress` in the
/// phases `compare`, `flash` and `verify`, throttled by
/// [`FlashOptions::progress_interval`].
pub fn flash(
    device: &dyn BlockDevice,
    link: &dyn AgentLink,
    job: JobId,
    entry: usize,
    opts: &FlashOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<FlashReport> {
    flash_in_phases(device, link, job, entry, opts, progress).map_err(|f| f.error)
}

/// How each chunk of the device compares with the image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    /// Already what the image holds.
    Same,
    /// A hole in the image, but the device holds data there.
    Zero,
    /// Differs: fetch the image's chunk.
    Fetch,
    /// Differs: ask for a delta against these block hashes of what the
    /// device holds there.
    Patch(BlockHashes),
}

fn classify(manifest: &Manifest, index: usize, bytes: &[u8], deltas: Option<&DeltaGauge>) -> Local {
    match manifest.chunk(index) {
        None if is_zero(bytes) => Local::Same,
        None => Local::Zero,
        Some(want) => {
            // Comparing against a blank disk is common (a first flash), and
            // zero detection is far cheaper than hashing.
            let blank = is_zero(bytes);
            let have = if blank {
                ChunkHash::of_zeros(bytes.len())
            } else {
                ChunkHash::of(bytes)
            };
            if have == want {
                Local::Same
            } else if !blank && deltas.is_some_and(|g| g.asking(index)) {
                Local::Patch(BlockHashes::of(bytes))
            } else {
                // Over all-zero content a delta would carry the chunk's
                // non-zero blocks, and its stored frame already holds just
                // those, compressed (the import compresses every chunk
                // with a zero block): the frame costs no more and comes the
                // cheap way, read ahead in batches. Nor does a blank disk
                // say anything about whether deltas pay where it holds
                // data, so it leaves the gauge alone.
                Local::Fetch
            }
        }
    }
}

/// Chunks to fetch in one call.
enum Batch {
    /// Whole frames: distinct hashes, each with every position that holds
    /// it.
    Frames(Vec<(ChunkHash, Vec<usize>)>),
    /// Deltas: distinct wants (hash and local block hashes), each with
    /// every position that wants it.
    Deltas(Vec<(DeltaWant, Vec<usize>)>),
}

/// What arrived for a chunk.
enum Payload {
    Frame(Vec<u8>),
    /// A delta against the device's bytes at each position.
    Delta(Vec<u8>),
}

/// A fetched frame or delta and the positions to write it to.
struct Fetched {
    hash: ChunkHash,
    payload: Payload,
    positions: Vec<usize>,
}

#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    fetched_bytes: AtomicU64,
    refetched: AtomicU64,
    retries: AtomicU64,
    /// Positions written from fetched frames, and their bytes.
    written: AtomicU64,
    written_bytes: AtomicU64,
    /// Positions written from deltas, and the bytes asking for them took.
    deltas: AtomicU64,
    delta_request_bytes: AtomicU64,
}

/// What the compare stage found and did, in chunk order.
struct Plan {
    unchanged: u64,
    /// Zeroed ranges of chunks.
    zeroed: Vec<Range<usize>>,
    /// Bytes of the chunks that are being fetched.
    fetch_bytes: u64,
    compared_bytes: u64,
    batch: Vec<(ChunkHash, Vec<usize>)>,
    batch_index: HashMap<ChunkHash, usize>,
    deltas: Vec<(DeltaWant, Vec<usize>)>,
    delta_index: HashMap<DeltaWant, usize>,
    zero_run: Option<Range<usize>>,
}

impl Plan {
    fn flush_zero_run(&mut self, device: &dyn BlockDevice, layout: Layout) -> Result<()> {
        if let Some(run) = self.zero_run.take() {
            device.zero_range(layout.offset(run.start), layout.bytes(&run))?;
            self.zeroed.push(run);
        }
        Ok(())
    }
}

pub(crate) fn flash_in_phases(
    device: &dyn BlockDevice,
    link: &dyn AgentLink,
    job: JobId,
    entry: usize,
    opts: &FlashOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<FlashReport, Failure> {
    let counters = Counters::default();
    let manifest = retry(opts, &counters.retries, "fetching the manifest", || {
        link.manifest(job, entry)
    })
    .map_err(in_phase("flash"))?;
    let size = manifest.size();
    if size > device.size() {
        return Err(Failure {
            phase: "flash",
            error: Error::invalid(
                "disk",
                format!(
                    "the image is {size} bytes but the disk has only {} bytes; nothing was written",
                    device.size()
                ),
            ),
        });
    }
    let layout = Layout {
        size,
        chunk_size: u64::from(manifest.chunk_size()),
    };
    let mut meter = Meter::new(progress, opts.progress_interval);
    let ctx = Ctx {
        device,
        link,
        job,
        entry,
        opts,
        manifest: &manifest,
        layout,
        counters: &counters,
        fault: Fault::default(),
        decoder: FrameDecoder::new(),
        gauge: DeltaGauge::new(),
    };
    let (plan, written) = ctx.write(&mut meter)?;

    let mut tail_zeroed = 0;
    if opts.zero_tail && device.size() > size {
        tail_zeroed = device.size() - size;
        device
            .zero_range(size, tail_zeroed)
            .map_err(in_phase("flash"))?;
    }
    device.flush().map_err(in_phase("flash"))?;

    if opts.verify {
        let mut written = written;
        written.sort_unstable_by_key(|&(i, _)| i);
        ctx.verify(&written, &plan.zeroed, &mut meter)
            .map_err(|(phase, error)| Failure { phase, error })?;
    }
    let zeroed: u64 = plan.zeroed.iter().map(|r| r.len() as u64).sum();
    Ok(FlashReport {
        size,
        chunks: layout.count() as u64,
        unchanged: plan.unchanged,
        fetched: counters.written.load(Ordering::Relaxed),
        fetched_bytes: counters.fetched_bytes.load(Ordering::Relaxed),
        zeroed,
        root: manifest.root(),
        frames: counters.frames.load(Ordering::Relaxed),
        deltas: counters.deltas.load(Ordering::Relaxed),
        delta_request_bytes: counters.delta_request_bytes.load(Ordering::Relaxed),
        refetched: counters.refetched.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        tail_zeroed,
        verified: opts.verify,
    })
}

/// Everything the stages of one flash share.
struct Ctx<'a> {
    device: &'a dyn BlockDevice,
    link: &'a dyn AgentLink,
    job: JobId,
    entry: usize,
    opts: &'a FlashOptions,
    manifest: &'a Manifest,
    layout: Layout,
    counters: &'a Counters,
    fault: Fault,
    /// Keeps the dictionaries of compacted frames, fetched once each.
    decoder: FrameDecoder,
    /// Whether deltas have been worth asking for lately.
    gauge: DeltaGauge,
}

impl Ctx<'_> {
    /// Compares, fetches, zeroes and writes. Returns the compare stage's
    /// plan and the positions written (from frames or deltas) with the
    /// fingerprints of what was written there.
    fn write(&self, meter: &mut Meter<'_>) -> Result<(Plan, Vec<(usize, Fingerprint)>), Failure> {
        let threads = self.opts.threads();
        let batch_size = self.opts.batch();
        let interval = self.opts.progress_interval;
        std::thread::scope(|s| {
            let (batch_tx, batch_rx) = sync_channel::<Batch>(FETCHERS);
            let batch_rx = Arc::new(Mutex::new(batch_rx));
            let (frame_tx, frame_rx) =
                sync_channel::<Vec<Fetched>>((batch_size * 2).div_ceil(HANDOFF));
            let frame_rx = Arc::new(Mutex::new(frame_rx));
            // Every fetcher and writer holds a sender; when all are gone,
            // the pipeline has drained.
            let (done_tx, done_rx) = channel::<()>();
            for _ in 0..FETCHERS {
                let (rx, tx, done) = (Arc::clone(&batch_rx), frame_tx.clone(), done_tx.clone());
                s.spawn(move || {
                    self.fetcher(&rx, &tx);
                    drop(done);
                });
            }
            let writers: Vec<_> = (0..threads)
                .map(|_| {
                    let (rx, done) = (Arc::clone(&frame_rx), done_tx.clone());
                    s.spawn(move || {
                        let written = self.writer(&rx);
                        drop(done);
                        written
                    })
                })
                .collect();
            drop((batch_rx, frame_rx, frame_tx, done_tx));

            meter.start("compare", self.layout.size);
            let plan = self.compare(threads, batch_size, &batch_tx, meter);
            drop(batch_tx);
            let plan = match plan {
                Ok(plan) => {
                    meter.start("flash", plan.fetch_bytes);
                    Some(plan)
                }
                Err(e) => {
                    self.fault.set("flash", e);
                    None
                }
            };
            loop {
                match done_rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Disconnected) => break,
                    _ => meter.set(self.counters.written_bytes.load(Ordering::Relaxed)),
                }
            }
            let mut written = Vec::new();
            for w in writers {
                match w.join() {
                    Ok(mut mine) => written.append(&mut mine),
                    Err(_) => self
                        .fault
                        .set("flash", Error::internal("a flash writer thread panicked")),
                }
            }
            if let Some((phase, error)) = self.fault.take() {
                return Err(Failure { phase, error });
            }
            let plan = plan.ok_or_else(|| Failure {
                phase: "flash",
                error: Error::internal("the compare stage stopped without a reason"),
            })?;
            meter.finish(self.counters.written_bytes.load(Ordering::Relaxed));
            Ok((plan, written))
        })
    }

    /// The compare stage, on the calling thread: scans the device, zeroes
    /// runs of holes that hold data, and sends batches of differing chunks
    /// to the fetchers.
    fn compare(
        &self,
        threads: usize,
        batch_size: usize,
        batches: &SyncSender<Batch>,
        meter: &mut Meter<'_>,
    ) -> Result<Plan> {
        let (layout, device) = (self.layout, self.device);
        let mut plan = Plan {
            unchanged: 0,
            zeroed: Vec::new(),
            fetch_bytes: 0,
            compared_bytes: 0,
            batch: Vec::new(),
            batch_index: HashMap::new(),
            deltas: Vec::new(),
            delta_index: HashMap::new(),
            zero_run: None,
        };
        let send = |plan: &mut Plan| -> Result<()> {
            if plan.batch.is_empty() {
                return Ok(());
            }
            plan.batch_index.clear();
            batches
                .send(Batch::Frames(std::mem::take(&mut plan.batch)))
                .map_err(|_| Error::internal("the fetchers stopped"))
        };
        let send_deltas = |plan: &mut Plan| -> Result<()> {
            if plan.deltas.is_empty() {
                return Ok(());
            }
            plan.delta_index.clear();
            batches
                .send(Batch::Deltas(std::mem::take(&mut plan.deltas)))
                .map_err(|_| Error::internal("the fetchers stopped"))
        };
        let manifest = self.manifest;
        let gauge = self.opts.deltas.then_some(&self.gauge);
        let new_worker = || Ok(|i: usize, bytes: &[u8]| Ok(classify(manifest, i, bytes, gauge)));
        scan(
            device,
            layout,
            layout.stripes(std::iter::once(0..layout.count())),
            Crew {
                workers: threads,
                abort: self.fault.flag(),
                tick: self.opts.progress_interval,
            },
            &new_worker,
            &mut |stripe| {
                let Some((range, locals)) = stripe else {
                    meter.set(plan.compared_bytes);
                    return Ok(());
                };
                for (i, local) in range.clone().zip(locals) {
                    if local != Local::Zero {
                        plan.flush_zero_run(device, layout)?;
                    }
                    match local {
                        Local::Same => plan.unchanged += 1,
                        Local::Zero => match &mut plan.zero_run {
                            Some(run) => run.end = i + 1,
                            None => plan.zero_run = Some(i..i + 1),
                        },
                        Local::Patch(blocks) => {
                            plan.fetch_bytes += layout.len(i) as u64;
                            let want = DeltaWant {
                                hash: manifest.chunk_hash(i),
                                blocks,
                            };
                            match plan.delta_index.get(&want) {
                                Some(&at) => plan.deltas[at].1.push(i),
                                None => {
                                    plan.delta_index.insert(want.clone(), plan.deltas.len());
                                    plan.deltas.push((want, vec![i]));
                                    if plan.deltas.len() >= batch_size {
                                        send_deltas(&mut plan)?;
                                    }
                                }
                            }
                        }
                        Local::Fetch => {
                            let hash = manifest.chunk_hash(i);
                            plan.fetch_bytes += layout.len(i) as u64;
                            match plan.batch_index.get(&hash) {
                                Some(&at) => plan.batch[at].1.push(i),
                                None => {
                                    plan.batch_index.insert(hash, plan.batch.len());
                                    plan.batch.push((hash, vec![i]));
                                    if plan.batch.len() >= batch_size {
                                        send(&mut plan)?;
                                    }
                                }
                            }
                        }
                    }
                }
                plan.compared_bytes += layout.bytes(&range);
                meter.set(plan.compared_bytes);
                Ok(())
            },
        )?;
        plan.flush_zero_run(device, layout)?;
        send(&mut plan)?;
        send_deltas(&mut plan)?;
        meter.finish(plan.compared_bytes);
        Ok(plan)
    }

    /// A fetcher thread: fetches batches, retrying retryable errors, and
    /// passes the frames on.
    fn fetcher(&self, batches: &Mutex<Receiver<Batch>>, frames: &SyncSender<Vec<Fetched>>) {
        loop {
            let next = match batches.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(batch) = next else { return };
            if self.fault.is_set() {
                return;
            }
            let items: Vec<Fetched> = match batch {
                Batch::Frames(batch) => {
                    let hashes: Vec<ChunkHash> = batch.iter().map(|(h, _)| *h).collect();
                    let got = match self.fetch(&hashes) {
                        Ok(got) => got,
                        Err(e) => return self.fault.set("flash", e),
                    };
                    batch
                        .into_iter()
                        .zip(got)
                        .map(|((hash, positions), frame)| Fetched {
                            hash,
                            payload: Payload::Frame(frame),
                            positions,
                        })
                        .collect()
                }
                Batch::Deltas(batch) => {
                    let (wants, positions): (Vec<DeltaWant>, Vec<Vec<usize>>) =
                        batch.into_iter().unzip();
                    let got = match self.fetch_deltas(&wants) {
                        Ok(got) => got,
                        Err(e) => return self.fault.set("flash", e),
                    };
                    wants
                        .into_iter()
                        .zip(positions)
                        .zip(got)
                        .map(|((want, positions), reply)| {
                            self.gauge.record(matches!(reply, DeltaReply::Delta(_)));
                            Fetched {
                                hash: want.hash,
                                payload: match reply {
                                    DeltaReply::Frame(f) => Payload::Frame(f),
                                    DeltaReply::Delta(d) => Payload::Delta(d),
                                },
                                positions,
                            }
                        })
                        .collect()
                }
            };
            // A few chunks per message: one hand-off (and wake-up) per
            // chunk costs more than the channel is worth, while both
            // writers still share every batch.
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let group: Vec<Fetched> = items.by_ref().take(HANDOFF).collect();
                if frames.send(group).is_err() {
                    return;
                }
            }
        }
    }

    /// One `chunks` call with retries; counts what arrived.
    fn fetch(&self, hashes: &[ChunkHash]) -> Result<Vec<Vec<u8>>> {
        let frames = retry(self.opts, &self.counters.retries, "fetching chunks", || {
            self.link.chunks(self.job, self.entry, hashes)
        })?;
        if frames.len() != hashes.len() {
            return Err(Error::internal(format!(
                "asked the server for {} chunks and got {}",
                hashes.len(),
                frames.len()
            )));
        }
        let bytes: usize = frames.iter().map(Vec::len).sum();
        self.counters
            .frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.counters
            .fetched_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(frames)
    }

    /// One `chunk_deltas` call with retries; counts what crossed.
    fn fetch_deltas(&self, wants: &[DeltaWant]) -> Result<Vec<DeltaReply>> {
        let replies = retry(self.opts, &self.counters.retries, "fetching deltas", || {
            self.link.chunk_deltas(self.job, self.entry, wants)
        })?;
        if replies.len() != wants.len() {
            return Err(Error::internal(format!(
                "asked the server for {} chunks and got {}",
                wants.len(),
                replies.len()
            )));
        }
        let bytes: usize = replies.iter().map(DeltaReply::len).sum();
        let asked: usize = wants.iter().map(|w| 34 + 4 * w.blocks.len()).sum();
        let c = self.counters;
        c.frames.fetch_add(replies.len() as u64, Ordering::Relaxed);
        c.fetched_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        c.delta_request_bytes
            .fetch_add(asked as u64, Ordering::Relaxed);
        Ok(replies)
    }

    /// The stored frame of dictionary `dictionary`, which the frame of
    /// `chunk` needs: the server hands out a dictionary only together with
    /// a chunk of the job whose frame needs it.
    fn fetch_dictionary(&self, chunk: &ChunkHash, dictionary: &ChunkHash) -> Result<Vec<u8>> {
        self.fetch(&[*chunk, *dictionary])?
            .pop()
            .ok_or_else(|| Error::internal("the server sent no dictionary"))
    }

    /// A writer thread: decodes and verifies frames (fetching a corrupted
    /// one again), and writes them. Returns the positions it wrote.
    fn writer(&self, frames: &Mutex<Receiver<Vec<Fetched>>>) -> Vec<(usize, Fingerprint)> {
        let mut written = Vec::new();
        'groups: loop {
            let next = match frames.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => break,
            };
            let Ok(group) = next else { break };
            for item in group {
                if self.fault.is_set() {
                    break 'groups;
                }
                if let Err(e) = self.write_one(item, &mut written) {
                    self.fault.set("flash", e);
                    break 'groups;
                }
            }
        }
        written
    }

    fn write_one(&self, item: Fetched, written: &mut Vec<(usize, Fingerprint)>) -> Result<()> {
        let Fetched {
            hash,
            payload,
            mut positions,
        } = item;
        let mut refetches = 0;
        let mut frame = match payload {
            Payload::Frame(frame) => frame,
            Payload::Delta(delta) => {
                // One position at a time: memory stays one chunk whatever
                // the number of positions.
                let mut failed = None;
                for (k, &at) in positions.iter().enumerate() {
                    let mut local = vec![0u8; self.layout.len(at)];
                    self.device.read_at(self.layout.offset(at), &mut local)?;
                    match apply_delta(&delta, &local, &hash) {
                        Ok(bytes) => {
                            self.write_data(&hash, &bytes, vec![at], written)?;
                            self.counters.deltas.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed = Some((k, e));
                            break;
                        }
                    }
                }
                match failed {
                    None => return Ok(()),
                    // A wrong delta (or a short hash that collided) costs
                    // the whole frame, never a wrong disk; it goes to the
                    // positions not rebuilt yet.
                    Some((k, _)) => {
                        positions.drain(..k);
                        refetches += 1;
                        self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                        self.fetch(std::slice::from_ref(&hash))?
                            .pop()
                            .ok_or_else(|| Error::internal("the server sent no frame"))?
                    }
                }
            }
        };
        let data = loop {
            let decoded = self
                .decoder
                .decode_borrowed(&frame, &hash, |d| self.fetch_dictionary(&hash, d));
            match decoded {
                Ok(std::borrow::Cow::Owned(data)) => break (data, 0),
                // Raw: write straight from the frame, after its tag.
                Ok(std::borrow::Cow::Borrowed(_)) => break (frame, 1),
                Err(e) if refetches >= MAX_REFETCHES => {
                    return Err(Error::internal(format!(
                        "chunk {hash} failed verification {} times; the last: {}",
                        refetches + 1,
                        e.message()
                    ))
                    .with_source(e))
                }
                Err(_) => {
                    refetches += 1;
                    self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                    frame = self
                        .fetch(std::slice::from_ref(&hash))?
                        .pop()
                        .ok_or_else(|| Error::internal("the server sent no frame"))?;
                }
            }
        };
        let (bytes, start) = data;
        self.write_data(&hash, &bytes[start..], positions, written)
    }

    /// Writes a verified chunk's bytes at `positions`.
    fn write_data(
        &self,
        hash: &ChunkHash,
        data: &[u8],
        positions: Vec<usize>,
        written: &mut Vec<(usize, Fingerprint)>,
    ) -> Result<()> {
        let print = fingerprint(data);
        for i in positions {
            let len = self.layout.len(i);
            if data.len() != len {
                return Err(Error::internal(format!(
                    "chunk {hash} is {} bytes but chunk {i} of the image is {len}",
                    data.len()
                )));
            }
            self.device.write_at(self.layout.offset(i), data)?;
            written.push((i, print));
            self.counters.written.fetch_add(1, Ordering::Relaxed);
            self.counters
                .written_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Re-reads every chunk written or zeroed, after the flush, and checks
    /// it: a written chunk against the fingerprint of the bytes that were
    /// written (bytes checked against the image's hash before writing), a
    /// zeroed one for zeros. With the chunks the compare stage found
    /// unchanged, that is the whole image.
    fn verify(
        &self,
        written: &[(usize, Fingerprint)],
        zeroed: &[Range<usize>],
        meter: &mut Meter<'_>,
    ) -> Result<(), (&'static str, Error)> {
        let layout = self.layout;
        let mut indices: Vec<usize> = written.iter().map(|&(i, _)| i).collect();
        indices.extend(zeroed.iter().flat_map(|r| r.clone()));
        indices.sort_unstable();
        let ranges = runs(&indices);
        drop(indices);
        let total: u64 = ranges.iter().map(|r| layout.bytes(r)).sum();
        meter.start("verify", total);
        let mut bad: Option<Range<usize>> = None;
        let mut done = 0u64;
        // `written` is sorted by position; a position not in it was zeroed.
        let new_worker = || {
            Ok(|i: usize, bytes: &[u8]| {
                Ok(match written.binary_search_by_key(&i, |&(at, _)| at) {
                    Ok(k) => fingerprint(bytes) == written[k].1,
                    Err(_) => is_zero(bytes),
                })
            })
        };
        let never = AtomicBool::new(false);
        scan(
            self.device,
            layout,
            layout.stripes(ranges.into_iter()),
            Crew {
                workers: self.opts.threads(),
                abort: &never,
                tick: self.opts.progress_interval,
            },
            &new_worker,
            &mut |stripe| {
                if let Some((range, good)) = stripe {
                    done += layout.bytes(&range);
                    for (i, ok) in range.zip(good) {
                        if !ok {
                            bad = Some(match bad.take() {
                                Some(b) => b.start..i + 1,
                                None => i..i + 1,
                            });
                        }
                    }
                }
                meter.set(done);
                Ok(())
            },
        )
        .map_err(|e| ("verify", e))?;
        meter.finish(done);
        match bad {
            None => Ok(()),
            Some(r) => Err((
                "verify",
                Error::internal(format!(
                    "the disk does not match the image after writing: chunks {}..{} (bytes {}..{}) read back wrong",
                    r.start,
                    r.end,
                    layout.offset(r.start),
                    layout.end(r.end - 1)
                )),
            )),
        }
    }
}
