//! The agent's algorithms: delta flashing of an image version onto a block
//! device, delta capture of a device as a new version, and the job step
//! that strings them together. Pure: they talk to the server only through
//! [`AgentLink`] and to the disk only through [`BlockDevice`], so the agent
//! binary, the tests and the benches run exactly the same code.
//!
//! # Flashing
//! [`flash`] compares the device with the version's [`Manifest`] in place,
//! chunk by chunk at the manifest's fixed offsets, and touches only what
//! differs: a data chunk whose bytes hash differently is fetched (in
//! batches, [`AgentLink::chunks`]), verified ([`decode_frame`]) and written;
//! when the disk holds data at a differing chunk's place, the chunk is
//! asked for as a delta against it ([`AgentLink::chunk_deltas`]), so only
//! its changed 4 KiB blocks cross the link, and the result is checked
//! against the chunk's hash like a frame;
//! a hole whose bytes are not already zero is zeroed with
//! [`BlockDevice::zero_range`] (contiguous runs in one call), never by
//! sending zeros. Reading and hashing, fetching, decoding and writing run at
//! once on worker threads joined by bounded channels, so memory stays
//! bounded whatever the image size. Then the tail past the image is zeroed
//! (optional), the device flushed, and every chunk written re-read and
//! hashed: with the hashes of the chunks found unchanged, they must give the
//! manifest's root. Running it again on a fully or partly written disk
//! converges to the image, which is how a crash mid-flash is recovered.
//!
//! # Capturing
//! [`capture`] hashes the device's first `size` bytes in the same layout,
//! asks the server which chunks it lacks ([`AgentLink::begin_capture`]),
//! compresses and uploads only those, and commits. An unchanged disk uploads
//! nothing but its manifest.
//!
//! # Failures
//! Calls that fail with a retryable error ([`Error::retryable`]) are retried
//! with exponential backoff ([`FlashOptions::retries`]), one batch at a
//! time, so a server that drops out mid-transfer costs the batch in flight,
//! not the transfer. A frame that fails verification is fetched again (at
//! most [`MAX_REFETCHES`] times) and never written. [`run_job`] reports
//! every other failure to the server with the phase it happened in.
//!
//! [`Manifest`]: crate::content::Manifest
//! [`decode_frame`]: crate::content::decode_frame

mod capture;
mod flash;
mod job;
mod pipeline;

#[cfg(feature = "conformance")]
pub mod suite;

use std::time::Duration;

use crate::content::ChunkHash;
use crate::model::Version;
use crate::ports::MAX_CHUNKS_PER_CALL;

pub use capture::capture;
pub use flash::flash;
pub use job::run_job;

#[cfg(doc)]
use crate::{
    ports::{AgentLink, BlockDevice},
    Error,
};

/// How often a frame that fails verification is fetched again before the
/// flash gives up on it (a delta that fails is replaced by the whole frame,
/// which counts as the first of these).
pub const MAX_REFETCHES: u32 = 3;

/// Tunables of [`flash`], [`capture`] and [`run_job`].
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// Chunks per [`AgentLink::chunks`] and [`AgentLink::upload_chunks`]
    /// call; clamped to `1..=`[`MAX_CHUNKS_PER_CALL`].
    pub fetch_batch: usize,
    /// Threads that read and hash, and threads that decode and write (each
    /// stage gets this many).
    pub workers: usize,
    /// Zero the device past the end of the image. Cheap where the device
    /// zeroes natively (hole punching, write-zeroes, discard); on a large
    /// disk that cannot, the kernel writes every byte of the tail, so turn
    /// it off when the tail does not matter.
    pub zero_tail: bool,
    /// After the flush, re-read every chunk written or zeroed and check it
    /// against a fingerprint (xxh3) of the bytes written there, which had
    /// been checked against the image's blake3 hash, or for zeros.
    pub verify: bool,
    /// zstd level of captured chunks.
    pub compression_level: i32,
    /// Retries of a link call that failed with a retryable error.
    pub retries: u32,
    /// Wait before the first retry; doubled after each, up to 10 s.
    pub retry_delay: Duration,
    /// Least time between two progress reports of one phase (the first and
    /// last report of each phase always go out).
    pub progress_interval: Duration,
    /// Ask for a differing chunk as a delta against the disk's bytes at its
    /// place (all zeros included: then only its non-zero blocks travel;
    /// [`AgentLink::chunk_deltas`], `crate::delta`), instead of always
    /// fetching its whole frame.
    pub deltas: bool,
}

impl Default for FlashOptions {
    fn default() -> Self {
        FlashOptions {
            fetch_batch: 64,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            zero_tail: true,
            verify: true,
            compression_level: 3,
            retries: 8,
            retry_delay: Duration::from_millis(200),
            progress_interval: Duration::from_millis(250),
            deltas: true,
        }
    }
}

impl FlashOptions {
    pub(crate) fn batch(&self) -> usize {
        self.fetch_batch.clamp(1, MAX_CHUNKS_PER_CALL)
    }

    pub(crate) fn threads(&self) -> usize {
        self.workers.clamp(1, 64)
    }
}

/// What [`flash`] did. Chunk counts are positions in the image:
/// `chunks == unchanged + fetched + zeroed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// Image size in bytes.
    pub size: u64,
    /// Chunks in the image.
    pub chunks: u64,
    /// Chunks the device already held (holes included).
    pub unchanged: u64,
    /// Chunks written from fetched frames.
    pub fetched: u64,
    /// Frame bytes received over the link, refetches included.
    pub fetched_bytes: u64,
    /// Holes that held data and were zeroed on the device.
    pub zeroed: u64,
    /// The image's root hash.
    pub root: ChunkHash,
    /// Frames and deltas received over the link: fewer than `fetched` when
    /// chunks of one batch share content, more when some were fetched
    /// again.
    pub frames: u64,
    /// Chunks written from deltas (`crate::delta`), of `fetched`.
    pub deltas: u64,
    /// Bytes of block hashes sent to ask for deltas.
    pub delta_request_bytes: u64,
    /// Frames fetched again because they failed verification.
    pub refetched: u64,
    /// Link calls retried after a retryable error.
    pub retries: u64,
    /// Bytes zeroed past the end of the image.
    pub tail_zeroed: u64,
    /// Whether the written chunks were re-read and the root checked.
    pub verified: bool,
}

/// What [`capture`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureReport {
    /// The committed version.
    pub version: Version,
    /// Chunks in the captured image.
    pub chunks: u64,
    /// Chunks uploaded (the server lacked them).
    pub uploaded: u64,
    /// Frame bytes uploaded.
    pub uploaded_bytes: u64,
    /// Link calls retried after a retryable error.
    pub retries: u64,
}
