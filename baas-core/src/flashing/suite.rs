//! The agent's algorithms end to end on a real block device: written once,
//! run by every block-device adapter (`flashing_conformance!`), the
//! in-memory fake and the mmap device alike. Each case builds users,
//! images, versions, a machine and jobs through the services, takes the job
//! as the machine's agent and drives [`flash`], [`capture`] and [`run_job`]
//! through a [`LocalAgentLink`] (wrapped, where a case injects faults), then
//! reads the device back byte for byte.

use std::any::Any;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{capture, flash, run_job, FlashOptions};
use crate::content::{is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use crate::delta::{DeltaReply, DeltaWant, DELTA_BLOCK};
use crate::model::*;
use crate::ports::{AgentLink, BlockDevice};
use crate::services::*;
use crate::{Baas, Error, ErrorKind, Result};

/// What a flashing case gets: services on some ports, a maker of blank
/// devices of the adapter under test, and whatever keeps them alive.
#[allow(missing_debug_implementations, reason = "holds opaque guards")]
pub struct FlashSubject {
    /// The services (in-memory or embedded).
    pub baas: Baas,
    /// A fresh, all-zero device of the given size.
    pub device: Box<dyn Fn(u64) -> Arc<dyn BlockDevice>>,
    /// Dropped after the case.
    pub guard: Box<dyn Any>,
}

const CHUNK: usize = CHUNK_SIZE as usize;

// --- data

/// A deterministic xorshift stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (any seed).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with noise.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A disk-like image of `len` bytes: runs of zeros (whole chunks and
/// more), of noise and of compressible text.
pub fn disk_image(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let run = (rng.below(6 * CHUNK as u64) as usize + CHUNK / 2).min(len - i);
        match rng.below(3) {
            0 => {}
            1 => rng.fill(&mut v[i..i + run]),
            _ => {
                let text = b"the quick brown fox jumps over the lazy dog; ";
                for (k, b) in v[i..i + run].iter_mut().enumerate() {
                    *b = text[(k + i) % text.len()];
                }
            }
        }
        i += run;
    }
    v
}

/// The root hash of `data` as the store computes it.
pub fn root_of(data: &[u8]) -> ChunkHash {
    let chunks = data
        .chunks(CHUNK)
        .map(|c| (!is_zero(c)).then(|| ChunkHash::of(c)))
        .collect();
    Manifest::new(data.len() as u64, CHUNK_SIZE, chunks)
        .expect("manifest")
        .root()
}

/// Chunks where `a` and `b` differ: those `b` holds data in, and those it
/// holds zeros in (a delta flash from `a` to `b` fetches the first and
/// zeroes the second).
pub fn chunk_delta(a: &[u8], b: &[u8]) -> (u64, u64) {
    let (mut data, mut zeros) = (0, 0);
    for (i, cb) in b.chunks(CHUNK).enumerate() {
        let start = i * CHUNK;
        let ca = a.get(start..(start + cb.len()).min(a.len())).unwrap_or(&[]);
        if ca != cb {
            if is_zero(cb) {
                zeros += 1;
            } else {
                data += 1;
            }
        }
    }
    (data, zeros)
}

fn data_chunks(data: &[u8]) -> u64 {
    data.chunks(CHUNK).filter(|c| !is_zero(c)).count() as u64
}

/// The first `len` bytes of `device`.
pub fn read_back(device: &dyn BlockDevice, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    device.read_at(0, &mut buf).expect("read the device");
    buf
}

fn fill_device(device: &dyn BlockDevice, seed: u64) {
    let mut noise = vec![0u8; device.size() as usize];
    Rng::new(seed).fill(&mut noise);
    device.write_at(0, &noise).expect("fill the device");
}

/// Options that keep cases fast: short backoff, small batches (so images
/// of a few MiB take several), two threads per stage.
pub fn test_options() -> FlashOptions {
    FlashOptions {
        fetch_batch: 8,
        workers: 2,
        retries: 4,
        retry_delay: Duration::from_millis(2),
        progress_interval: Duration::from_millis(1),
        ..FlashOptions::default()
    }
}

fn no_progress() -> impl FnMut(&Progress) {
    |_: &Progress| {}
}

// --- the world a case runs in

struct World {
    baas: Baas,
    alice: Actor,
    machine: Machine,
    link: LocalAgentLink,
}

fn world(s: &FlashSubject) -> World {
    let b = s.baas.clone();
    let mk = |name: &str, role| {
        let u = b
            .create_user(
                &Actor::System,
                NewUser {
                    name: format!("{name}-{}", crate::conformance::suffix()),
                    display_name: String::new(),
                    email: String::new(),
                    role,
                },
            )
            .expect("create user");
        Actor::user(&u)
    };
    let alice = mk("alice", Role::User);
    let moderator = mk("mod", Role::Moderator);
    let id = crate::conformance::fresh_uuid();
    let u = id.as_bytes();
    let machine = b
        .register_machine(
            &moderator,
            NewMachine {
                mac: MacAddress([0x52, 0x54, u[0], u[1], u[2], u[3]]),
                name: None,
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("register machine");
    let link = LocalAgentLink::new(b.clone(), machine.id);
    World {
        baas: b,
        alice,
        machine,
        link,
    }
}

impl World {
    fn image(&self, size: u64) -> Image {
        self.baas
            .create_image(
                &self.alice,
                NewImage {
                    owner: None,
                    name: format!("disk-{}", crate::conformance::suffix()),
                    disk: DiskSelector::first(),
                    size,
                    metadata: Default::default(),
                    visibility: Visibility::Private,
                },
            )
            .expect("create image")
            .0
    }

    fn import(&self, image: &Image, data: &[u8]) -> Version {
        self.baas
            .import_version(
                &self.alice,
                image.id,
                &mut Cursor::new(data),
                ImportOptions::default(),
            )
            .expect("import")
    }

    fn export(&self, image: ImageId, number: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.baas
            .open_version(&self.alice, image, VersionRef::Number(number))
            .expect("open version")
            .read_to_end(&mut out)
            .expect("read version");
        out
    }

    /// Queues a setup of `entries` (image, version, disk index, capture)
    /// and takes it as the agent: the job comes back provisioning.
    fn job(&self, entries: &[(&Image, u32, u32, bool)]) -> Job {
        let setup = self
            .baas
            .create_setup(
                &self.alice,
                NewSetup {
                    name: format!("setup-{}", crate::conformance::suffix()),
                    entries: entries
                        .iter()
                        .map(|(img, v, disk, capture)| SetupEntry {
                            image: img.id,
                            version: VersionRef::Number(*v),
                            disk: Some(DiskSelector {
                                disk: DiskMatch::Index(*disk),
                                partition: None,
                            }),
                            capture: *capture,
                        })
                        .collect(),
                },
            )
            .expect("create setup");
        let queued = self
            .baas
            .enqueue_job(
                &self.alice,
                JobRequest {
                    machine: self.machine.id,
                    target: JobTarget::Setup(setup.id),
                },
            )
            .expect("enqueue");
        let job = self
            .link
            .next_job(0)
            .expect("next job")
            .expect("a job is queued");
        assert_eq!(job.id, queued.id);
        assert_eq!(job.state, JobState::Provisioning);
        job
    }

    fn job_state(&self, job: &Job) -> Job {
        self.baas.get_job(&self.alice, job.id).expect("get job")
    }

    fn event_kinds(&self, job: &Job) -> Vec<String> {
        self.baas
            .job_events(&self.alice, job.id)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

// --- links and devices with faults

/// What a [`TestLink`] does wrong, by the number of the `chunks` call
/// (0-based).
#[derive(Debug, Default, Clone)]
struct Faults {
    /// Flip a byte of the first frame of these calls' responses.
    corrupt: Vec<u64>,
    /// Corrupt every frame of this chunk, always.
    always_corrupt: Option<ChunkHash>,
    /// These calls fail with `Unavailable`.
    unavailable: Range<u64>,
    /// Calls from this one on fail fatally (`Internal`).
    fatal_from: Option<u64>,
    /// These `upload_chunks` calls fail with `Unavailable`.
    upload_unavailable: Range<u64>,
    /// Corrupt every delta (not frames) of `chunk_deltas` answers.
    corrupt_deltas: bool,
}

/// The real in-process link, with faults injected and what crossed it
/// counted (what a server's counters would show).
#[derive(Debug)]
struct TestLink {
    inner: LocalAgentLink,
    faults: Faults,
    chunk_calls: AtomicU64,
    upload_calls: AtomicU64,
    /// Frames and frame bytes that reached the agent.
    served: AtomicU64,
    served_bytes: AtomicU64,
    /// Frames the agent uploaded.
    uploaded: AtomicU64,
    /// Deltas (rather than frames) among what was served.
    deltas: AtomicU64,
    /// Chunks asked for as deltas.
    asked: AtomicU64,
}

impl TestLink {
    fn new(inner: &LocalAgentLink, faults: Faults) -> TestLink {
        TestLink {
            inner: inner.clone(),
            faults,
            chunk_calls: AtomicU64::new(0),
            upload_calls: AtomicU64::new(0),
            served: AtomicU64::new(0),
            served_bytes: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        }
    }
}

fn flip(frame: &mut [u8]) {
    if let Some(last) = frame.last_mut() {
        *last ^= 0x5a;
    }
}

impl AgentLink for TestLink {
    fn report_inventory(&self, inventory: &Inventory) -> Result<Machine> {
        self.inner.report_inventory(inventory)
    }
    fn next_job(&self, wait_ms: u64) -> Result<Option<Job>> {
        self.inner.next_job(wait_ms)
    }
    fn manifest(&self, job: JobId, entry: usize) -> Result<Manifest> {
        self.inner.manifest(job, entry)
    }
    fn chunks(&self, job: JobId, entry: usize, hashes: &[ChunkHash]) -> Result<Vec<Vec<u8>>> {
        let n = self.chunk_calls.fetch_add(1, Ordering::SeqCst);
        if self.faults.fatal_from.is_some_and(|f| n >= f) {
            return Err(Error::internal("the agent was killed"));
        }
        if self.faults.unavailable.contains(&n) {
            return Err(Error::unavailable("the server is restarting"));
        }
        let mut frames = self.inner.chunks(job, entry, hashes)?;
        if self.faults.corrupt.contains(&n) {
            if let Some(f) = frames.first_mut() {
                flip(f);
            }
        }
        for (h, f) in hashes.iter().zip(frames.iter_mut()) {
            if self.faults.always_corrupt == Some(*h) {
                flip(f);
            }
        }
        self.served.fetch_add(frames.len() as u64, Ordering::SeqCst);
        self.served_bytes.fetch_add(
            frames.iter().map(|f| f.len() as u64).sum(),
            Ordering::SeqCst,
        );
        Ok(frames)
    }
    fn chunk_deltas(
        &self,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        let n = self.chunk_calls.fetch_add(1, Ordering::SeqCst);
        if self.faults.fatal_from.is_some_and(|f| n >= f) {
            return Err(Error::internal("the agent was killed"));
        }
        if self.faults.unavailable.contains(&n) {
            return Err(Error::unavailable("the server is restarting"));
        }
        self.asked.fetch_add(wants.len() as u64, Ordering::SeqCst);
        let mut replies = self.inner.chunk_deltas(job, entry, wants)?;
        for (i, (w, r)) in wants.iter().zip(replies.iter_mut()).enumerate() {
            let is_delta = matches!(r, DeltaReply::Delta(_));
            let (DeltaReply::Frame(b) | DeltaReply::Delta(b)) = r;
            if (i == 0 && self.faults.corrupt.contains(&n))
                || self.faults.always_corrupt == Some(w.hash)
                || (is_delta && self.faults.corrupt_deltas)
            {
                flip(b);
            }
            if is_delta {
                self.deltas.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.served
            .fetch_add(replies.len() as u64, Ordering::SeqCst);
        self.served_bytes.fetch_add(
            replies.iter().map(|r| r.len() as u64).sum(),
            Ordering::SeqCst,
        );
        Ok(replies)
    }
    fn begin_capture(
        &self,
        job: JobId,
        entry: usize,
        manifest: &Manifest,
    ) -> Result<(UploadId, Vec<ChunkHash>)> {
        self.inner.begin_capture(job, entry, manifest)
    }
    fn upload_chunks(&self, upload: UploadId, frames: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        let n = self.upload_calls.fetch_add(1, Ordering::SeqCst);
        if self.faults.upload_unavailable.contains(&n) {
            return Err(Error::unavailable("the server is restarting"));
        }
        self.inner.upload_chunks(upload, frames)?;
        self.uploaded
            .fetch_add(frames.len() as u64, Ordering::SeqCst);
        Ok(())
    }
    fn commit_capture(&self, upload: UploadId) -> Result<Version> {
        self.inner.commit_capture(upload)
    }
    fn progress(&self, job: JobId, progress: &Progress) -> Result<()> {
        self.inner.progress(job, progress)
    }
    fn advance(&self, job: JobId, to: JobState, message: &str) -> Result<Job> {
        self.inner.advance(job, to, message)
    }
    fn fail(&self, job: JobId, phase: &str, reason: &str) -> Result<Job> {
        self.inner.fail(job, phase, reason)
    }
    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()> {
        self.inner.log(job, lines)
    }
}

/// A device that silently corrupts one write at `offset`: what verification
/// exists to catch.
#[derive(Debug)]
struct LyingDevice {
    inner: Arc<dyn BlockDevice>,
    offset: u64,
}

impl BlockDevice for LyingDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if offset == self.offset && !data.is_empty() {
            let mut bad = data.to_vec();
            bad[data.len() / 2] ^= 1;
            return self.inner.write_at(offset, &bad);
        }
        self.inner.write_at(offset, data)
    }
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

/// A device whose writes fail once `writes_left` is used up: the agent's
/// disk vanishing (or the agent killed) in the middle of a flash.
#[derive(Debug)]
struct DyingDevice {
    inner: Arc<dyn BlockDevice>,
    writes_left: AtomicU64,
}

impl BlockDevice for DyingDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let left = self
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match left {
            Ok(_) => self.inner.write_at(offset, data),
            Err(_) => Err(Error::unavailable("the disk went away")),
        }
    }
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

// --- the cases

/// A full flash of A onto a blank device, then B (about 1% changed in one
/// place) and C (single bytes changed here and there): each fetches exactly
/// the chunks that differ, and the device ends equal to the image. Flashing
/// C again changes nothing.
pub fn full_flash_then_deltas(s: &FlashSubject) {
    let w = world(s);
    let size = 6 * CHUNK * 16 + 12_345; // 6 MiB and a partial chunk
    let a = disk_image(1, size);
    let mut b = a.clone();
    let at = 2 * (1 << 20) + 30_000; // straddles chunks 32 and 33
    Rng::new(2).fill(&mut b[at..at + size / 100]);
    let mut c = b.clone();
    let mut rng = Rng::new(3);
    for _ in 0..12 {
        let i = rng.below(size as u64) as usize;
        c[i] = c[i].wrapping_add(1);
    }
    let img = w.image(size as u64);
    let (va, vb, vc) = (w.import(&img, &a), w.import(&img, &b), w.import(&img, &c));
    let job = w.job(&[
        (&img, va.number, 0, false),
        (&img, vb.number, 0, false),
        (&img, vc.number, 0, false),
        (&img, vc.number, 0, false),
    ]);
    let device = (s.device)(8 << 20);
    let link = TestLink::new(&w.link, Faults::default());
    let opts = test_options();

    let mut phases: Vec<Progress> = Vec::new();
    let r = flash(&*device, &link, job.id, 0, &opts, &mut |p| {
        phases.push(p.clone())
    })
    .expect("flash A");
    assert_eq!(read_back(&*device, device.size())[..size], a[..]);
    assert!(is_zero(&read_back(&*device, device.size())[size..]));
    let chunks = size.div_ceil(CHUNK) as u64;
    assert_eq!(r.chunks, chunks);
    assert_eq!(r.size, size as u64);
    assert_eq!(r.fetched, data_chunks(&a), "every data chunk of A");
    assert_eq!(
        r.unchanged,
        chunks - data_chunks(&a),
        "holes on a blank disk"
    );
    assert_eq!(r.zeroed, 0);
    assert_eq!(r.root, va.root);
    assert_eq!(r.fetched_bytes, link.served_bytes.load(Ordering::SeqCst));
    assert!(r.frames <= r.fetched && r.frames > 0);
    assert_eq!(r.refetched, 0);
    assert_eq!(r.tail_zeroed, device.size() - size as u64);
    assert!(r.verified);
    // Progress: compare, flash, verify, in order, each ending complete.
    let mut order: Vec<&str> = phases.iter().map(|p| p.phase.as_str()).collect();
    order.dedup();
    assert_eq!(order, ["compare", "flash", "verify"]);
    for p in &phases {
        assert!(p.bytes_done <= p.bytes_total, "{p:?}");
    }
    for phase in ["compare", "flash", "verify"] {
        let last = phases
            .iter()
            .rev()
            .find(|p| p.phase == phase)
            .expect("phase reported");
        assert_eq!(last.bytes_done, last.bytes_total, "{phase} ends complete");
    }
    assert_eq!(
        phases
            .iter()
            .find(|p| p.phase == "compare")
            .map(|p| p.bytes_total),
        Some(size as u64)
    );

    let served = link.served_bytes.load(Ordering::SeqCst);
    let r = flash(&*device, &link, job.id, 1, &opts, &mut no_progress()).expect("flash B");
    assert_eq!(read_back(&*device, size as u64), b);
    let (want, zeros) = chunk_delta(&a, &b);
    assert_eq!(want + zeros, 2, "1% in one place straddles two chunks");
    assert_eq!((r.fetched, r.zeroed), (want, zeros), "only what differs");
    assert_eq!(r.unchanged, chunks - want - zeros);
    assert_eq!(
        r.fetched_bytes,
        link.served_bytes.load(Ordering::SeqCst) - served
    );
    assert!(r.fetched_bytes <= want * (CHUNK as u64 + 64));
    assert_eq!(r.root, vb.root);

    let r = flash(&*device, &link, job.id, 2, &opts, &mut no_progress()).expect("flash C");
    assert_eq!(read_back(&*device, size as u64), c);
    let (want, zeros) = chunk_delta(&b, &c);
    assert!(want > 0);
    assert_eq!((r.fetched, r.zeroed), (want, zeros));
    assert_eq!(r.root, vc.root);

    let served = link.served_bytes.load(Ordering::SeqCst);
    let r = flash(&*device, &link, job.id, 3, &opts, &mut no_progress()).expect("again");
    assert_eq!((r.fetched, r.zeroed, r.unchanged), (0, 0, chunks));
    assert_eq!(link.served_bytes.load(Ordering::SeqCst), served);
    assert_eq!(read_back(&*device, size as u64), c);
}

/// A (disk-like data), C = A with 2% of its 4 KiB blocks rewritten at
/// scattered places (every data chunk touched): over a disk holding A,
/// the chunks that differ cross as deltas of their changed blocks, several
/// times fewer bytes than whole frames (measured in the same case); B =
/// A with a contiguous run rewritten gets whole frames, having asked for
/// no more than the block hashes; deltas corrupted in transit are
/// replaced by whole frames and the disk still ends right.
pub fn scattered_blocks_cross_as_deltas(s: &FlashSubject) {
    let w = world(s);
    let size = 4 << 20;
    let a = disk_image(21, size);
    let mut c = a.clone();
    let mut rng = Rng::new(22);
    let blocks = size / DELTA_BLOCK;
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < blocks / 50 {
        changed.insert(rng.below(blocks as u64) as usize);
    }
    for b in &changed {
        rng.fill(&mut c[b * DELTA_BLOCK..(b + 1) * DELTA_BLOCK]);
    }
    let mut b = a.clone();
    Rng::new(23).fill(&mut b[CHUNK..5 * CHUNK]);
    let img = w.image(size as u64);
    let (va, vb, vc) = (w.import(&img, &a), w.import(&img, &b), w.import(&img, &c));
    let job = w.job(&[
        (&img, va.number, 0, false),
        (&img, vc.number, 0, false),
        (&img, vb.number, 0, false),
    ]);
    let opts = test_options();
    let on_a = || {
        let d = (s.device)(size as u64);
        d.write_at(0, &a).expect("write A");
        d
    };

    // C, the whole-frame way and the delta way.
    let device = on_a();
    let whole = TestLink::new(&w.link, Faults::default());
    let no_deltas = FlashOptions {
        deltas: false,
        ..opts.clone()
    };
    let r = flash(&*device, &whole, job.id, 1, &no_deltas, &mut no_progress()).expect("C whole");
    assert_eq!(read_back(&*device, size as u64), c);
    assert_eq!((r.deltas, r.delta_request_bytes), (0, 0));
    let whole_bytes = whole.served_bytes.load(Ordering::SeqCst);

    let device = on_a();
    let link = TestLink::new(&w.link, Faults::default());
    let r = flash(&*device, &link, job.id, 1, &opts, &mut no_progress()).expect("C deltas");
    assert_eq!(read_back(&*device, size as u64), c);
    assert_eq!(r.root, vc.root);
    let (want, _) = chunk_delta(&a, &c);
    assert_eq!(r.fetched, want);
    assert!(r.deltas > want / 2, "{} of {want} as deltas", r.deltas);
    assert_eq!(r.deltas, link.deltas.load(Ordering::SeqCst));
    assert_eq!(r.refetched, 0);
    let delta_bytes = link.served_bytes.load(Ordering::SeqCst);
    assert_eq!(r.fetched_bytes, delta_bytes);
    // Both directions: what came back plus the block hashes sent.
    let wire = delta_bytes + r.delta_request_bytes;
    assert!(
        wire * 3 < whole_bytes,
        "deltas {delta_bytes} + {} asked, whole frames {whole_bytes}",
        r.delta_request_bytes
    );
    assert!(
        delta_bytes <= (changed.len() * (DELTA_BLOCK + 64)) as u64,
        "{delta_bytes} for {} changed blocks",
        changed.len()
    );

    // B: contiguous new data; no delta wins, little asked.
    let device = on_a();
    let link = TestLink::new(&w.link, Faults::default());
    let r = flash(&*device, &link, job.id, 2, &opts, &mut no_progress()).expect("B");
    assert_eq!(read_back(&*device, size as u64), b);
    assert_eq!(r.deltas, 0);
    assert!(r.delta_request_bytes <= r.fetched * (34 + 4 * 16), "{r:?}");

    // Deltas corrupted in transit: whole frames instead, the disk right.
    let device = on_a();
    let link = TestLink::new(
        &w.link,
        Faults {
            corrupt_deltas: true,
            ..Faults::default()
        },
    );
    let r = flash(&*device, &link, job.id, 1, &opts, &mut no_progress()).expect("C, bad deltas");
    assert_eq!(read_back(&*device, size as u64), c);
    assert_eq!(r.deltas, 0);
    assert_eq!(r.refetched, link.deltas.load(Ordering::SeqCst));
    assert!(r.refetched > 0);
}

/// Over a device full of unrelated data every delta loses to the whole
/// frame, so the flash stops asking for them after a while (but for a
/// probe now and then): fewer chunks are asked for as deltas than fetched,
/// none comes as one, and the disk ends right.
pub fn deltas_that_keep_losing_are_no_longer_asked(s: &FlashSubject) {
    let w = world(s);
    let size = 32 << 20;
    let a = disk_image(31, size);
    let img = w.image(size as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let device = (s.device)(size as u64);
    fill_device(&*device, 32);
    let link = TestLink::new(&w.link, Faults::default());
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash over old data");
    assert_eq!(read_back(&*device, size as u64), a);
    assert_eq!(r.fetched, data_chunks(&a));
    assert_eq!(r.deltas, 0);
    let asked = link.asked.load(Ordering::SeqCst);
    assert!(asked > 0);
    assert!(
        asked < r.fetched,
        "{asked} asked as deltas of {}",
        r.fetched
    );
}

/// Holes of the image over a device full of old data are zeroed without a
/// byte of them crossing the link, and so is the tail past the image.
pub fn holes_are_zeroed_without_transfer(s: &FlashSubject) {
    let w = world(s);
    let size = 4 << 20;
    let mut a = vec![0u8; size];
    // Data in chunks 3, 10..12 and the last one; holes everywhere else.
    for r in [
        3 * CHUNK..4 * CHUNK,
        10 * CHUNK..12 * CHUNK,
        size - CHUNK..size,
    ] {
        Rng::new(r.start as u64).fill(&mut a[r]);
    }
    let img = w.image(size as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let device = (s.device)(6 << 20);
    fill_device(&*device, 77);
    let link = TestLink::new(&w.link, Faults::default());
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash");
    let back = read_back(&*device, device.size());
    assert!(back[..size] == a[..], "the device equals the image");
    assert!(is_zero(&back[size..]), "the tail is zeroed");
    assert_eq!(r.fetched, 4);
    assert_eq!(r.zeroed, (size / CHUNK) as u64 - 4);
    assert_eq!(r.unchanged, 0);
    assert_eq!(link.served.load(Ordering::SeqCst), 4, "no zeros fetched");
    assert!(r.fetched_bytes <= 4 * (CHUNK as u64 + 64));
    // A second run finds nothing to do.
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("again");
    assert_eq!((r.fetched, r.zeroed), (0, 0));
}

/// An image larger than the device is refused before a byte is written,
/// naming both sizes; as a job step it fails the job in phase `flash`.
pub fn image_larger_than_device_is_refused(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(5, 2 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let device = (s.device)(1 << 20);
    fill_device(&*device, 9);
    let before = read_back(&*device, device.size());
    let job = w.job(&[(&img, v.number, 0, false)]);
    let e = flash(
        &*device,
        &w.link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect_err("too large");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.message().contains(&(2u64 << 20).to_string())
            && e.message().contains(&(1u64 << 20).to_string()),
        "{e}"
    );
    assert!(
        read_back(&*device, device.size()) == before,
        "nothing written"
    );
    let dev = device.clone();
    let open = move |_: &DiskSelector| -> Result<Arc<dyn BlockDevice>> { Ok(dev.clone()) };
    let e = run_job(&w.link, &job, &open, &test_options(), &mut no_progress())
        .expect_err("job step fails");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let failed = w.job_state(&job);
    assert_eq!(failed.state, JobState::Failed);
    let reason = failed.error.unwrap_or_default();
    assert!(
        reason.starts_with("flash: ") && reason.contains("nothing was written"),
        "{reason}"
    );
    assert!(
        read_back(&*device, device.size()) == before,
        "still nothing written"
    );
}

/// A frame corrupted in transit is fetched again and the disk ends right;
/// one that stays corrupted fails the flash and is never written.
pub fn corrupted_frame_is_refetched_never_written(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(11, 3 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let device = (s.device)(a.len() as u64);
    let link = TestLink::new(
        &w.link,
        Faults {
            corrupt: vec![0, 2],
            ..Faults::default()
        },
    );
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash despite corruption");
    assert_eq!(r.refetched, 2);
    assert_eq!(r.frames, r.fetched + 2);
    assert!(read_back(&*device, a.len() as u64) == a);

    // A chunk that arrives corrupted every time.
    let manifest = w.link.manifest(job.id, 0).expect("manifest");
    let (victim, hash) = manifest
        .chunks()
        .enumerate()
        .find_map(|(i, c)| c.map(|h| (i, h)))
        .expect("a data chunk");
    let device = (s.device)(a.len() as u64);
    let link = TestLink::new(
        &w.link,
        Faults {
            always_corrupt: Some(hash),
            ..Faults::default()
        },
    );
    let e = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect_err("never verifies");
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains(&hash.to_string()), "{e}");
    let back = read_back(&*device, a.len() as u64);
    for (i, c) in manifest.chunks().enumerate() {
        if c == Some(hash) {
            assert!(
                is_zero(&back[i * CHUNK..(i + 1) * CHUNK]),
                "chunk {i} (like {victim}) was written from a bad frame"
            );
        }
    }
}

/// Frames compacted with an image's dictionary: the agent fetches the
/// dictionary once, together with a chunk whose frame needs it (the server
/// gives it out no other way), and the disk ends byte for byte right.
pub fn compacted_frames_bring_their_dictionary(s: &FlashSubject) {
    let w = world(s);
    let mut rng = Rng::new(5);
    let word = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3).to_le_bytes();
    let mut a = Vec::new();
    while a.len() < crate::services::DICTIONARY_MIN_CHUNKS * CHUNK {
        let x = rng.next_u64();
        a.extend_from_slice(&word(if x & 1 == 0 { x % 16 } else { x % 4096 }));
    }
    a.extend(std::iter::repeat_n(0u8, 3 * CHUNK));
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let report = w
        .baas
        .compact_chunks(&Actor::System, 3, 2)
        .expect("compact");
    assert_eq!(report.dictionaries, 1, "{report:?}");
    let job = w.job(&[(&img, v.number, 0, false)]);
    let manifest = w.link.manifest(job.id, 0).expect("manifest");
    let first = manifest.chunks().flatten().next().expect("data");
    let frame = w.link.chunks(job.id, 0, &[first]).expect("chunk").remove(0);
    let dict = crate::content::frame_dictionary(&frame).expect("a dictionary frame");
    assert_eq!(
        w.link
            .chunks(job.id, 0, &[dict])
            .expect_err("not alone")
            .kind(),
        ErrorKind::NotFound
    );
    let both = w
        .link
        .chunks(job.id, 0, &[first, dict])
        .expect("with its chunk");
    crate::content::Dictionary::from_frame(&both[1], &dict).expect("the dictionary");

    let device = (s.device)(a.len() as u64);
    fill_device(&*device, 3);
    let link = TestLink::new(&w.link, Faults::default());
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash");
    assert_eq!(
        r.frames,
        r.fetched + 2,
        "one extra call of two frames: {r:?}"
    );
    assert!(read_back(&*device, a.len() as u64) == a);
    assert_eq!(r.root, root_of(&a));
}

/// A server that is unavailable for a while mid-fetch: the flash waits,
/// resumes where it stopped (nothing fetched twice) and ends right. An
/// outage longer than the retries is an `Unavailable` error.
pub fn unavailable_server_mid_fetch_resumes(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(21, 4 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let device = (s.device)(a.len() as u64);
    let link = TestLink::new(
        &w.link,
        Faults {
            unavailable: 2..5,
            ..Faults::default()
        },
    );
    let r = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("rides out the outage");
    assert_eq!(r.retries, 3);
    assert!(read_back(&*device, a.len() as u64) == a);
    let batches = r.frames.div_ceil(test_options().fetch_batch as u64);
    assert!(batches > 3, "the outage is mid-transfer");
    assert_eq!(
        link.served.load(Ordering::SeqCst),
        r.frames,
        "nothing fetched twice"
    );

    let device = (s.device)(a.len() as u64);
    let link = TestLink::new(
        &w.link,
        Faults {
            unavailable: 1..100,
            ..Faults::default()
        },
    );
    let e = flash(
        &*device,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect_err("gives up");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

/// Data chunks of `image` the device already holds.
fn matching_data_chunks(device: &dyn BlockDevice, image: &[u8]) -> u64 {
    let back = read_back(device, image.len() as u64);
    image
        .chunks(CHUNK)
        .zip(back.chunks(CHUNK))
        .filter(|(want, got)| !is_zero(want) && want == got)
        .count() as u64
}

/// The agent killed mid-flash, twice over: once by its disk failing after
/// exactly ten chunk writes, once by its link dying after three batches.
/// Each time, running the flash again converges to the image and fetches
/// exactly the data chunks the disk does not hold yet.
pub fn crash_mid_flash_converges(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(31, 4 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let opts = test_options();
    let total = data_chunks(&a);

    let device = (s.device)(5 << 20);
    fill_device(&*device, 4);
    let dying: Arc<dyn BlockDevice> = Arc::new(DyingDevice {
        inner: device.clone(),
        writes_left: AtomicU64::new(10),
    });
    let e = flash(&*dying, &w.link, job.id, 0, &opts, &mut no_progress()).expect_err("killed");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(matching_data_chunks(&*device, &a), 10);
    let r = flash(&*device, &w.link, job.id, 0, &opts, &mut no_progress()).expect("rerun");
    assert!(read_back(&*device, a.len() as u64) == a);
    assert!(is_zero(&read_back(&*device, device.size())[a.len()..]));
    assert_eq!(
        r.fetched,
        total - 10,
        "only what the first run did not write"
    );

    let device = (s.device)(5 << 20);
    fill_device(&*device, 5);
    let killed = TestLink::new(
        &w.link,
        Faults {
            fatal_from: Some(3),
            ..Faults::default()
        },
    );
    let e = flash(&*device, &killed, job.id, 0, &opts, &mut no_progress()).expect_err("killed");
    assert_eq!(e.kind(), ErrorKind::Internal);
    let held = matching_data_chunks(&*device, &a);
    let r = flash(&*device, &w.link, job.id, 0, &opts, &mut no_progress()).expect("rerun");
    assert!(read_back(&*device, a.len() as u64) == a);
    assert_eq!(r.fetched, total - held);
    // And once more: nothing left to do.
    let r = flash(&*device, &w.link, job.id, 0, &opts, &mut no_progress()).expect("third run");
    assert_eq!((r.fetched, r.zeroed), (0, 0));
}

fn modify(device: &dyn BlockDevice, size: usize) {
    let mut rng = Rng::new(99);
    let mut patch = vec![0u8; 100_000];
    rng.fill(&mut patch);
    device.write_at(1_000_000, &patch).expect("user writes");
    device
        .zero_range(3 * CHUNK as u64, CHUNK as u64)
        .expect("user zeroes a chunk");
    device
        .write_at(size as u64 - 10, b"the marker")
        .expect("user writes the end");
}

fn enter_capturing(w: &World, job: &Job) {
    w.link
        .advance(job.id, JobState::Running, "booted")
        .expect("running");
    w.link
        .advance(job.id, JobState::Capturing, "session over")
        .expect("capturing");
}

/// Capturing a modified disk commits a new version whose root is the
/// bytes' root and which reads back identical; only new chunks travel, and
/// an upload outage is ridden out.
pub fn capture_of_a_modified_disk(s: &FlashSubject) {
    let w = world(s);
    let size = (3 << 20) + 5000;
    let a = disk_image(41, size);
    let img = w.image(size as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, true)]);
    let device = (s.device)(4 << 20);
    flash(
        &*device,
        &w.link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash");
    enter_capturing(&w, &job);
    modify(&*device, size);
    let bytes = read_back(&*device, size as u64);
    let link = TestLink::new(
        &w.link,
        Faults {
            upload_unavailable: 0..2,
            ..Faults::default()
        },
    );
    let mut phases = Vec::new();
    let r = capture(
        &*device,
        size as u64,
        &link,
        job.id,
        0,
        &test_options(),
        &mut |p| phases.push(p.phase.clone()),
    )
    .expect("capture");
    phases.dedup();
    assert_eq!(phases, ["capture", "upload"]);
    assert_eq!(r.version.root, root_of(&bytes));
    assert_eq!(r.version.size, size as u64);
    assert_eq!(r.version.source, VersionSource::Capture { job: job.id });
    assert_eq!(r.chunks, size.div_ceil(CHUNK) as u64);
    let (changed, _) = chunk_delta(&a, &bytes);
    assert!(r.uploaded > 0 && r.uploaded <= changed, "{r:?}, {changed}");
    assert_eq!(link.uploaded.load(Ordering::SeqCst), r.uploaded);
    assert_eq!(r.retries, 2);
    assert!(w.export(img.id, r.version.number) == bytes);
    w.link
        .advance(job.id, JobState::Succeeded, "captured")
        .expect("done");
}

/// Capturing a disk that still holds the flashed version uploads no chunk.
pub fn capture_of_an_unchanged_disk_uploads_nothing(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(51, 3 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, true)]);
    let device = (s.device)(a.len() as u64);
    flash(
        &*device,
        &w.link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("flash");
    enter_capturing(&w, &job);
    let link = TestLink::new(&w.link, Faults::default());
    let r = capture(
        &*device,
        a.len() as u64,
        &link,
        job.id,
        0,
        &test_options(),
        &mut no_progress(),
    )
    .expect("capture");
    assert_eq!((r.uploaded, r.uploaded_bytes), (0, 0));
    assert_eq!(link.upload_calls.load(Ordering::SeqCst), 0);
    assert_eq!(r.version.root, v.root);
    assert_eq!(r.version.number, v.number + 1);
}

/// `run_job` takes a two-disk setup through provisioning, running,
/// capturing and succeeded; the timeline shows every step, the server saw
/// progress, and the capture is a new version of the marked image only.
pub fn run_job_walks_the_lifecycle(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(61, 2 << 20);
    let d = disk_image(62, (1 << 20) + 3);
    let (ia, id) = (w.image(a.len() as u64), w.image(d.len() as u64));
    let (va, vd) = (w.import(&ia, &a), w.import(&id, &d));
    let job = w.job(&[(&ia, va.number, 0, true), (&id, vd.number, 1, false)]);
    let disks = [(s.device)(3 << 20), (s.device)(2 << 20)];
    fill_device(&*disks[1], 8);
    let opened = Mutex::new(Vec::new());
    let open = |sel: &DiskSelector| -> Result<Arc<dyn BlockDevice>> {
        opened.lock().expect("lock").push(sel.to_string());
        match sel.disk {
            DiskMatch::Index(i) if (i as usize) < disks.len() => Ok(disks[i as usize].clone()),
            _ => Err(Error::not_found(format!("disk {sel}"))),
        }
    };
    let mut phases = Vec::new();
    run_job(&w.link, &job, &open, &test_options(), &mut |p| {
        phases.push(p.phase.clone())
    })
    .expect("provision");
    let running = w.job_state(&job);
    assert_eq!(running.state, JobState::Running);
    assert!(
        !running.progress.phase.is_empty(),
        "the server saw progress"
    );
    assert!(read_back(&*disks[0], a.len() as u64) == a);
    assert!(read_back(&*disks[1], d.len() as u64) == d);
    assert!(is_zero(&read_back(&*disks[1], 2 << 20)[d.len()..]));
    assert_eq!(*opened.lock().expect("lock"), ["index:0", "index:1"]);

    // The user's session changes disk 0, then the machine comes back.
    modify(&*disks[0], a.len());
    let changed = read_back(&*disks[0], a.len() as u64);
    let again = w.link.next_job(0).expect("next").expect("the running job");
    assert_eq!(again.state, JobState::Running);
    run_job(&w.link, &again, &open, &test_options(), &mut |p| {
        phases.push(p.phase.clone())
    })
    .expect("capture");
    let done = w.job_state(&job);
    assert_eq!(done.state, JobState::Succeeded);
    phases.dedup();
    assert_eq!(
        phases,
        ["compare", "flash", "verify", "compare", "flash", "verify", "capture", "upload"]
    );
    let kinds = w.event_kinds(&job);
    let steps: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "log")
        .collect();
    assert_eq!(
        steps,
        [
            "queued",
            "provisioning",
            "running",
            "session",
            "capturing",
            "capture",
            "succeeded"
        ]
    );
    assert_eq!(kinds.iter().filter(|k| *k == "log").count(), 3, "{kinds:?}");
    let versions = w.baas.list_versions(&w.alice, ia.id).expect("versions");
    let captured = versions.last().expect("a version");
    assert_eq!(captured.source, VersionSource::Capture { job: job.id });
    assert_eq!(captured.root, root_of(&changed));
    assert!(w.export(ia.id, captured.number) == changed);
    assert_eq!(
        w.baas
            .list_versions(&w.alice, id.id)
            .expect("versions")
            .len(),
        2,
        "the unmarked image got no version"
    );
    // Nothing more to do for a finished job.
    let e =
        run_job(&w.link, &done, &open, &test_options(), &mut no_progress()).expect_err("finished");
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

/// A running job with nothing to capture goes straight to succeeded.
pub fn run_job_without_capture_succeeds(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(71, 1 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let job = w.job(&[(&img, v.number, 0, false)]);
    let device = (s.device)(1 << 20);
    let dev = device.clone();
    let open = move |_: &DiskSelector| -> Result<Arc<dyn BlockDevice>> { Ok(dev.clone()) };
    run_job(&w.link, &job, &open, &test_options(), &mut no_progress()).expect("provision");
    let running = w.link.next_job(0).expect("next").expect("job");
    run_job(
        &w.link,
        &running,
        &open,
        &test_options(),
        &mut no_progress(),
    )
    .expect("end");
    assert_eq!(w.job_state(&job).state, JobState::Succeeded);
    let kinds = w.event_kinds(&job);
    assert!(!kinds.iter().any(|k| k == "capturing"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("succeeded"));
}

/// Every failure of a job step ends the job `failed`, with the phase:
/// `resolve` (no such disk), `verify` (the disk read back wrong),
/// `capture` (the disk shrank).
pub fn run_job_failures_name_the_phase(s: &FlashSubject) {
    let w = world(s);
    let a = disk_image(81, 2 << 20);
    let img = w.image(a.len() as u64);
    let v = w.import(&img, &a);
    let opts = test_options();

    let job = w.job(&[(&img, v.number, 0, false)]);
    let nowhere = |sel: &DiskSelector| -> Result<Arc<dyn BlockDevice>> {
        Err(Error::not_found(format!("disk {sel}")))
    };
    let e = run_job(&w.link, &job, &nowhere, &opts, &mut no_progress()).expect_err("resolve");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let failed = w.job_state(&job);
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("resolve: disk index:0 not found")
    );

    let job = w.job(&[(&img, v.number, 0, false)]);
    let manifest = w.link.manifest(job.id, 0).expect("manifest");
    let victim = manifest
        .chunks()
        .position(|c| c.is_some())
        .expect("a data chunk");
    let liar: Arc<dyn BlockDevice> = Arc::new(LyingDevice {
        inner: (s.device)(a.len() as u64),
        offset: (victim * CHUNK) as u64,
    });
    let open = move |_: &DiskSelector| -> Result<Arc<dyn BlockDevice>> { Ok(liar.clone()) };
    let e = run_job(&w.link, &job, &open, &opts, &mut no_progress()).expect_err("verify");
    assert_eq!(e.kind(), ErrorKind::Internal);
    let reason = w.job_state(&job).error.unwrap_or_default();
    assert!(
        reason.starts_with("verify: ")
            && reason.contains(&format!("chunks {victim}..{}", victim + 1)),
        "{reason}"
    );
    assert_eq!(w.job_state(&job).state, JobState::Failed);

    let job = w.job(&[(&img, v.number, 0, true)]);
    let device = (s.device)(a.len() as u64);
    let dev = device.clone();
    let open = move |_: &DiskSelector| -> Result<Arc<dyn BlockDevice>> { Ok(dev.clone()) };
    run_job(&w.link, &job, &open, &opts, &mut no_progress()).expect("provision");
    let running = w.link.next_job(0).expect("next").expect("job");
    let small = (s.device)(1 << 20);
    let open_small = move |_: &DiskSelector| -> Result<Arc<dyn BlockDevice>> { Ok(small.clone()) };
    let e =
        run_job(&w.link, &running, &open_small, &opts, &mut no_progress()).expect_err("capture");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let failed = w.job_state(&job);
    assert_eq!(failed.state, JobState::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("capture: "),
        "{failed:?}"
    );
    assert_eq!(
        w.baas
            .list_versions(&w.alice, img.id)
            .expect("versions")
            .len(),
        2,
        "a failed capture commits nothing"
    );
}

/// Runs the flashing suite: `flashing_conformance!(expr)` where `expr`
/// builds a fresh [`FlashSubject`].
#[macro_export]
macro_rules! flashing_conformance {
    ($make:expr) => {
        $crate::__flashing_cases!($make;
            full_flash_then_deltas, holes_are_zeroed_without_transfer,
            image_larger_than_device_is_refused, corrupted_frame_is_refetched_never_written,
            unavailable_server_mid_fetch_resumes, crash_mid_flash_converges,
            capture_of_a_modified_disk, capture_of_an_unchanged_disk_uploads_nothing,
            run_job_walks_the_lifecycle, run_job_without_capture_succeeds,
            run_job_failures_name_the_phase, compacted_frames_bring_their_dictionary,
            scattered_blocks_cross_as_deltas, deltas_that_keep_losing_are_no_longer_asked);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __flashing_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let subject = $make;
                $crate::flashing::suite::$case(&subject);
            }
        )*
    };
}
