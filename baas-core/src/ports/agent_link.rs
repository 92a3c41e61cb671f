//! The agent's view of the server: everything the management OS asks of
//! BAAS during a boot. The HTTP adapter (`adapters/client-http`) implements
//! it over the agent endpoints; `services::LocalAgentLink` implements it
//! in-process over the same services (tests, embedded use).

use crate::content::{ChunkHash, Manifest};
use crate::delta::{DeltaReply, DeltaWant};
use crate::model::*;
use crate::Result;

/// Most chunk frames one `chunks` or `upload_chunks` call carries.
pub const MAX_CHUNKS_PER_CALL: usize = 256;

/// The calls an agent makes, always as the one machine its credential is
/// for. Implementations bound every call in time; the agent retries
/// `Unavailable` errors with backoff.
pub trait AgentLink: Send + Sync + std::fmt::Debug {
    /// Records what the machine has (disks, NICs, memory, CPU); returns the
    /// machine's record.
    fn report_inventory(&self, inventory: &Inventory) -> Result<Machine>;

    /// The job to work on now, waiting up to `wait_ms` for one to be
    /// queued (long poll); `None` when there is still none.
    fn next_job(&self, wait_ms: u64) -> Result<Option<Job>>;

    /// The manifest of entry `entry` (0-based) of `job`.
    fn manifest(&self, job: JobId, entry: usize) -> Result<Manifest>;

    /// The stored frames of `hashes` (at most [`MAX_CHUNKS_PER_CALL`]),
    /// which must all be in entry `entry`'s manifest, in order, except a
    /// dictionary that the frame of another hash of the same call needs
    /// (`content::frame_dictionary`). The caller verifies each frame
    /// against its hash.
    fn chunks(&self, job: JobId, entry: usize, hashes: &[ChunkHash]) -> Result<Vec<Vec<u8>>>;

    /// For each wanted chunk of entry `entry`'s manifest (at most
    /// [`MAX_CHUNKS_PER_CALL`]), in order: a delta against the local
    /// content whose block hashes it gives, or the stored frame when a
    /// delta would not be smaller (`crate::delta`). The caller verifies
    /// each result against its hash. By default, every chunk as its frame.
    fn chunk_deltas(
        &self,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        frames_for(self, job, entry, wants)
    }

    /// Starts capturing the disk of entry `entry` of `job` as a new version
    /// of its image: returns the upload and the chunks the server lacks.
    fn begin_capture(
        &self,
        job: JobId,
        entry: usize,
        manifest: &Manifest,
    ) -> Result<(UploadId, Vec<ChunkHash>)>;

    /// Sends frames of a capture (at most [`MAX_CHUNKS_PER_CALL`]).
    fn upload_chunks(&self, upload: UploadId, frames: &[(ChunkHash, Vec<u8>)]) -> Result<()>;

    /// Commits a capture once every chunk is there; returns the version.
    fn commit_capture(&self, upload: UploadId) -> Result<Version>;

    /// Reports progress of the current phase.
    fn progress(&self, job: JobId, progress: &Progress) -> Result<()>;

    /// Moves the job on (provisioning -> running, running -> capturing,
    /// capturing or running -> succeeded).
    fn advance(&self, job: JobId, to: JobState, message: &str) -> Result<Job>;

    /// Fails the job, saying in which phase and why.
    fn fail(&self, job: JobId, phase: &str, reason: &str) -> Result<Job>;

    /// Ships log lines, to the job's timeline when `job` is given.
    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()>;
}

/// `chunk_deltas` answered without deltas: every wanted chunk as its
/// stored frame, from one `chunks` call (the trait's default, and what a
/// link falls back to when its server has no deltas).
pub fn frames_for<L: AgentLink + ?Sized>(
    link: &L,
    job: JobId,
    entry: usize,
    wants: &[DeltaWant],
) -> Result<Vec<DeltaReply>> {
    let hashes: Vec<ChunkHash> = wants.iter().map(|w| w.hash).collect();
    Ok(link
        .chunks(job, entry, &hashes)?
        .into_iter()
        .map(DeltaReply::Frame)
        .collect())
}
