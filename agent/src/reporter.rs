//! Progress reports off the flashing path: [`Reporting`] wraps the link so
//! that `progress` only records the latest report, and a background thread
//! sends it at most once per interval. A slow or absent server then delays
//! nothing (progress is advisory), and the server sees a steady, throttled
//! stream whatever rate the flash reports at.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use baas_core::content::{ChunkHash, Manifest};
use baas_core::delta::{DeltaReply, DeltaWant};
use baas_core::model::*;
use baas_core::ports::AgentLink;
use baas_core::Result;

#[derive(Debug, Default)]
struct Slot {
    latest: Option<(JobId, Progress)>,
    closed: bool,
}

/// An [`AgentLink`] whose `progress` never waits for the network.
#[derive(Debug, Clone)]
pub struct Reporting {
    inner: Arc<dyn AgentLink>,
    slot: Arc<(Mutex<Slot>, Condvar)>,
}

impl Reporting {
    /// Wraps `inner`; reports go out at most once per `every`.
    pub fn new(inner: Arc<dyn AgentLink>, every: Duration) -> Reporting {
        let slot = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let (link, s) = (inner.clone(), slot.clone());
        let _ = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || send_loop(&*link, &s, every));
        Reporting { inner, slot }
    }

    /// Sends the last report now (if any) and stops the thread.
    pub fn close(&self) {
        if let Ok(mut s) = self.slot.0.lock() {
            s.closed = true;
        }
        self.slot.1.notify_all();
    }
}

fn send_loop(link: &dyn AgentLink, slot: &(Mutex<Slot>, Condvar), every: Duration) {
    let mut last_sent = Instant::now() - every;
    loop {
        let next = {
            let Ok(mut s) = slot.0.lock() else { return };
            while s.latest.is_none() && !s.closed {
                s = match slot.1.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            if s.latest.is_none() {
                return;
            }
            // Throttle: wait out the interval (a close cuts it short).
            let wait = every.saturating_sub(last_sent.elapsed());
            if !wait.is_zero() && !s.closed {
                s = match slot.1.wait_timeout(s, wait) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
                if last_sent.elapsed() < every && !s.closed {
                    continue;
                }
            }
            s.latest.take()
        };
        if let Some((job, p)) = next {
            // Advisory: a failed report is replaced by the next one.
            let _ = link.progress(job, &p);
            last_sent = Instant::now();
        }
    }
}

impl AgentLink for Reporting {
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
        self.inner.chunks(job, entry, hashes)
    }

    fn chunk_deltas(
        &self,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        self.inner.chunk_deltas(job, entry, wants)
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
        self.inner.upload_chunks(upload, frames)
    }

    fn commit_capture(&self, upload: UploadId) -> Result<Version> {
        self.inner.commit_capture(upload)
    }

    fn progress(&self, job: JobId, progress: &Progress) -> Result<()> {
        if let Ok(mut s) = self.slot.0.lock() {
            s.latest = Some((job, progress.clone()));
        }
        self.slot.1.notify_all();
        Ok(())
    }

    fn advance(&self, job: JobId, to: JobState, message: &str) -> Result<Job> {
        self.send_pending(job);
        self.inner.advance(job, to, message)
    }

    fn fail(&self, job: JobId, phase: &str, reason: &str) -> Result<Job> {
        self.send_pending(job);
        self.inner.fail(job, phase, reason)
    }

    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()> {
        self.inner.log(job, lines)
    }
}

impl Reporting {
    /// Before a job changes state, its last report goes out (so the job
    /// shows where its phase ended), here and now.
    fn send_pending(&self, job: JobId) {
        let pending = match self.slot.0.lock() {
            Ok(mut s) if s.latest.as_ref().is_some_and(|(j, _)| *j == job) => s.latest.take(),
            _ => None,
        };
        if let Some((job, p)) = pending {
            let _ = self.inner.progress(job, &p);
        }
    }
}
