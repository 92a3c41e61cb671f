//! The server's side of the agent protocol: what a machine's agent may read
//! and write during a job, always scoped to that machine's active job. Plus
//! [`LocalAgentLink`], the in-process [`AgentLink`] over these services.

use std::collections::HashSet;

use super::{Actor, Baas, ImportOptions};
use crate::content::{ChunkHash, Manifest, CHUNK_SIZE};
use crate::delta::{DeltaReply, DeltaWant};
use crate::model::*;
use crate::ports::{AgentLink, UploadSession, MAX_CHUNKS_PER_CALL};
use crate::{Error, Result};

/// How many versions' chunk sets [`Baas::chunk_set`] keeps (a few jobs
/// flashing at once; each set is about 40 bytes per chunk).
const CHUNK_SET_CACHE: usize = 16;

/// Threads that read the chunks of one [`Baas::agent_chunks`] call.
const CHUNK_READERS: usize = 8;

/// Fewest chunks worth a reader thread of their own.
const CHUNK_READERS_MIN_SHARE: usize = 8;

/// zstd level of the blocks a delta sends (a few KiB each: cheap).
const DELTA_LEVEL: i32 = 3;

impl Baas {
    /// The active job `job` of the caller's machine and its entry `entry`.
    fn agent_entry(&self, actor: &Actor, job: JobId, entry: usize) -> Result<(Job, JobEntry)> {
        let job = self.agent_job(actor, job)?;
        if !job.state.is_active() {
            return Err(Error::conflict(format!(
                "job {} is {}, not active",
                job.id, job.state
            )));
        }
        let e = job
            .entries
            .get(entry)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("entry {entry} of job {}", job.id)))?;
        Ok((job, e))
    }

    /// The manifest the agent writes for entry `entry` of its job.
    pub fn agent_manifest(&self, actor: &Actor, job: JobId, entry: usize) -> Result<Manifest> {
        let (_, e) = self.agent_entry(actor, job, entry)?;
        self.meta
            .manifest(e.image, e.version)?
            .ok_or_else(|| Error::not_found(format!("version {} of image {}", e.version, e.image)))
    }

    /// The distinct chunks of a version, cached: versions are immutable, and
    /// an agent asks for a version's chunks in hundreds of batches, each of
    /// which must be checked against the manifest.
    fn chunk_set(
        &self,
        image: ImageId,
        version: u32,
    ) -> Result<std::sync::Arc<HashSet<ChunkHash>>> {
        let key = (image, version);
        if let Ok(cache) = self.chunk_sets.lock() {
            if let Some((_, set)) = cache.iter().find(|(k, _)| *k == key) {
                return Ok(set.clone());
            }
        }
        let manifest = self
            .meta
            .manifest(image, version)?
            .ok_or_else(|| Error::not_found(format!("version {version} of image {image}")))?;
        let set = std::sync::Arc::new(manifest.chunks().flatten().collect::<HashSet<_>>());
        if let Ok(mut cache) = self.chunk_sets.lock() {
            cache.retain(|(k, _)| *k != key);
            cache.insert(0, (key, set.clone()));
            cache.truncate(CHUNK_SET_CACHE);
        }
        Ok(set)
    }

    /// Stored frames of chunks of entry `entry`'s version, in order. Every
    /// hash must be in that manifest, or be the dictionary that the frame
    /// of another hash of the same call needs.
    pub fn agent_chunks(
        &self,
        actor: &Actor,
        job: JobId,
        entry: usize,
        hashes: &[ChunkHash],
    ) -> Result<Vec<Vec<u8>>> {
        if hashes.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        let (_, e) = self.agent_entry(actor, job, entry)?;
        let known = self.chunk_set(e.image, e.version)?;
        if hashes.iter().any(|h| !known.contains(h)) {
            // Allowed only as the dictionary a compacted frame of this same
            // call needs (`content::frame_dictionary`).
            let needed: HashSet<ChunkHash> = hashes
                .iter()
                .filter(|h| known.contains(h))
                .filter_map(|h| self.chunks.get(h).ok())
                .filter_map(|f| crate::content::frame_dictionary(&f))
                .collect();
            if let Some(h) = hashes
                .iter()
                .find(|h| !known.contains(h) && !needed.contains(h))
            {
                return Err(Error::not_found(format!(
                    "chunk {h} in entry {entry} of job {job}"
                )));
            }
        }
        let missing = |h: &ChunkHash, e: Error| match e.kind() {
            crate::ErrorKind::NotFound => Error::internal(format!(
                "chunk {h} of a committed version is missing from the store"
            )),
            _ => e,
        };
        // Each reader asks the store for its share at once (`get_many`).
        let get = |part: &[ChunkHash]| -> Result<Vec<Vec<u8>>> {
            part.iter()
                .zip(self.chunks.get_many(part))
                .map(|(h, r)| r.map_err(|e| missing(h, e)))
                .collect()
        };
        // Read on a few threads: one read at a time leaves a cold store's
        // disk waiting on each small file in turn.
        let per = hashes
            .len()
            .div_ceil(CHUNK_READERS)
            .max(CHUNK_READERS_MIN_SHARE);
        if hashes.len() <= per {
            return get(hashes);
        }
        std::thread::scope(|s| {
            let parts: Vec<_> = hashes
                .chunks(per)
                .map(|part| s.spawn(move || get(part)))
                .collect();
            let mut frames = Vec::with_capacity(hashes.len());
            for part in parts {
                let got = part
                    .join()
                    .map_err(|_| Error::internal("a chunk reader panicked"))??;
                frames.extend(got);
            }
            Ok(frames)
        })
    }

    /// Chunks of entry `entry`'s version as deltas against the agent's
    /// local content (`crate::delta`): for each wanted chunk, in order, a
    /// delta when it saves bytes against the stored frame, else the frame.
    /// Every hash must be in the manifest, and each want must give one
    /// block hash per 4 KiB block of its chunk, or none (all-zero local
    /// content).
    pub fn agent_chunk_deltas(
        &self,
        actor: &Actor,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        if wants.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        let (_, e) = self.agent_entry(actor, job, entry)?;
        let known = self.chunk_set(e.image, e.version)?;
        if let Some(w) = wants.iter().find(|w| !known.contains(&w.hash)) {
            return Err(Error::not_found(format!(
                "chunk {} in entry {entry} of job {job}",
                w.hash
            )));
        }
        let decoder = crate::content::FrameDecoder::new();
        let answer = |w: &DeltaWant| -> Result<DeltaReply> {
            fn missing(h: ChunkHash) -> impl Fn(Error) -> Error {
                move |e: Error| match e.kind() {
                    crate::ErrorKind::NotFound => Error::internal(format!(
                        "chunk {h} of a committed version is missing from the store"
                    )),
                    _ => e,
                }
            }
            let frame = self.chunks.get(&w.hash).map_err(missing(w.hash))?;
            let new =
                decoder.decode(&frame, &w.hash, |d| self.chunks.get(d).map_err(missing(*d)))?;
            if !w.blocks.all_zero() && w.blocks.len() != crate::delta::blocks_of(new.len()) {
                return Err(Error::invalid(
                    "blocks",
                    format!(
                        "chunk {} has {} blocks of 4 KiB, not {}",
                        w.hash,
                        crate::delta::blocks_of(new.len()),
                        w.blocks.len()
                    ),
                ));
            }
            let delta = crate::delta::encode_delta(&new, &w.blocks, DELTA_LEVEL)?;
            Ok(crate::delta::choose(frame, delta))
        };
        // Decoding and compressing cost CPU: spread a batch over threads.
        let per = wants
            .len()
            .div_ceil(CHUNK_READERS)
            .max(CHUNK_READERS_MIN_SHARE);
        if wants.len() <= per {
            return wants.iter().map(answer).collect();
        }
        std::thread::scope(|s| {
            let answer = &answer;
            let parts: Vec<_> = wants
                .chunks(per)
                .map(|part| s.spawn(move || part.iter().map(answer).collect::<Result<Vec<_>>>()))
                .collect();
            let mut out = Vec::with_capacity(wants.len());
            for part in parts {
                let got = part
                    .join()
                    .map_err(|_| Error::internal("a delta worker panicked"))??;
                out.extend(got);
            }
            Ok(out)
        })
    }

    /// Starts the capture of entry `entry` of a job in `capturing`: a
    /// chunk-level upload whose version is made by the job's owner, from
    /// the capture of this job. Returns the session and the missing chunks.
    pub fn begin_capture(
        &self,
        actor: &Actor,
        job: JobId,
        entry: usize,
        manifest: Manifest,
    ) -> Result<(UploadSession, Vec<ChunkHash>)> {
        let (job, e) = self.agent_entry(actor, job, entry)?;
        if job.state != JobState::Capturing {
            return Err(Error::conflict(format!(
                "job {} is {}, not capturing",
                job.id, job.state
            )));
        }
        if !e.capture {
            return Err(Error::forbidden(format!(
                "entry {entry} of job {} is not marked for capture",
                job.id
            )));
        }
        if manifest.size() > self.config.max_version_size {
            return Err(Error::too_large(format!(
                "the capture is larger than the limit of {} bytes",
                self.config.max_version_size
            )));
        }
        if manifest.chunk_size() != CHUNK_SIZE {
            return Err(Error::invalid(
                "manifest",
                format!("chunk size must be {CHUNK_SIZE}"),
            ));
        }
        let image = self
            .meta
            .image(e.image)?
            .ok_or_else(|| Error::not_found(format!("image {}", e.image)))?;
        let now = self.clock.now();
        let session = UploadSession {
            id: UploadId(self.entropy.uuid()),
            image: image.id,
            created_by: job.owner,
            manifest: Some(manifest.clone()),
            source: VersionSource::Capture { job: job.id },
            started_at: now,
            last_active: now,
            added_bytes: 0,
        };
        self.meta.insert_upload(&session)?;
        let missing = self.missing_of(&manifest)?;
        self.queue.append_event(
            job.id,
            &self.event(
                "capture",
                format!(
                    "capturing entry {entry}: {} of {} chunks to upload",
                    missing.len(),
                    manifest.distinct_chunks().len()
                ),
            ),
        )?;
        Ok((session, missing))
    }

    /// Whether `actor` is the agent of the machine whose job `session`
    /// captures.
    pub(crate) fn agent_owns_capture(
        &self,
        actor: &Actor,
        session: &UploadSession,
    ) -> Result<bool> {
        let (Actor::Agent { machine }, VersionSource::Capture { job }) = (actor, &session.source)
        else {
            return Ok(false);
        };
        Ok(self
            .queue
            .job(*job)?
            .is_some_and(|j| j.machine == *machine && j.state == JobState::Capturing))
    }
}

/// An [`AgentLink`] that calls the services in-process, as the agent of one
/// machine. What the HTTP link does over the network, minus the network.
#[derive(Debug, Clone)]
pub struct LocalAgentLink {
    baas: Baas,
    machine: MachineId,
    actor: Actor,
}

impl LocalAgentLink {
    /// The link of `machine`'s agent.
    pub fn new(baas: Baas, machine: MachineId) -> LocalAgentLink {
        LocalAgentLink {
            baas,
            machine,
            actor: Actor::Agent { machine },
        }
    }
}

impl AgentLink for LocalAgentLink {
    fn report_inventory(&self, inventory: &Inventory) -> Result<Machine> {
        self.baas
            .report_inventory(&self.actor, self.machine, inventory.clone())
    }

    fn next_job(&self, wait_ms: u64) -> Result<Option<Job>> {
        let deadline = self
            .baas
            .now()
            .plus_millis(wait_ms.min(i64::MAX as u64) as i64);
        loop {
            if let Some(job) = self.baas.next_job(&self.actor, self.machine)? {
                return Ok(Some(job));
            }
            if self.baas.now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn manifest(&self, job: JobId, entry: usize) -> Result<Manifest> {
        self.baas.agent_manifest(&self.actor, job, entry)
    }

    fn chunks(&self, job: JobId, entry: usize, hashes: &[ChunkHash]) -> Result<Vec<Vec<u8>>> {
        self.baas.agent_chunks(&self.actor, job, entry, hashes)
    }

    fn chunk_deltas(
        &self,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        self.baas.agent_chunk_deltas(&self.actor, job, entry, wants)
    }

    fn begin_capture(
        &self,
        job: JobId,
        entry: usize,
        manifest: &Manifest,
    ) -> Result<(UploadId, Vec<ChunkHash>)> {
        let (session, missing) =
            self.baas
                .begin_capture(&self.actor, job, entry, manifest.clone())?;
        Ok((session.id, missing))
    }

    fn upload_chunks(&self, upload: UploadId, frames: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        if frames.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        for (hash, frame) in frames {
            self.baas.upload_chunk(&self.actor, upload, *hash, frame)?;
        }
        Ok(())
    }

    fn commit_capture(&self, upload: UploadId) -> Result<Version> {
        self.baas
            .commit_upload(&self.actor, upload, ImportOptions::default())
    }

    fn progress(&self, job: JobId, progress: &Progress) -> Result<()> {
        self.baas
            .report_progress(&self.actor, job, progress.clone())
    }

    fn advance(&self, job: JobId, to: JobState, message: &str) -> Result<Job> {
        self.baas.advance_job(&self.actor, job, to, message)
    }

    fn fail(&self, job: JobId, phase: &str, reason: &str) -> Result<Job> {
        self.baas.fail_job(&self.actor, job, phase, reason)
    }

    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()> {
        match job {
            Some(j) => lines
                .iter()
                .try_for_each(|l| self.baas.log_job(&self.actor, j, l)),
            None => Ok(()),
        }
    }
}
