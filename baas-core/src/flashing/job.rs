//! One agent step of a job: flash its entries, or capture them once the
//! user's session has ended, then move the job on. Every failure is
//! reported to the server with the phase it happened in.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::flash::flash_in_phases;
use super::pipeline::retry;
use super::{capture, FlashOptions};
use crate::model::{DiskSelector, Job, JobState, Progress};
use crate::ports::{AgentLink, BlockDevice};
use crate::{Error, Result};

/// One agent step for `job`, as [`AgentLink::next_job`] returned it:
///
/// - `provisioning`: flash every entry in order onto the device `open`
///   resolves its disk selector to, then advance to `running` (the machine
///   then boots the user's OS).
/// - `running`: the session has ended and the machine is back in the
///   management OS. Advance to `capturing` when any entry is marked for
///   capture (and capture, as below), else to `succeeded`.
/// - `capturing`: capture every entry marked for capture (its first
///   `size` bytes, the size of the version that was flashed) as a new
///   version of its image, then advance to `succeeded`.
///
/// Progress of every phase is sent to the server ([`AgentLink::progress`],
/// best effort) and to `progress` (for the console); a summary of each
/// entry goes to the job's timeline ([`AgentLink::log`], best effort).
///
/// Any error is reported with [`AgentLink::fail`] and the phase it happened
/// in (`resolve`: `open` failed; `flash`; `verify`: the disk read back
/// wrong after writing; `capture`; `advance`: moving the job on failed),
/// then returned. A job in any other state is a `Conflict`, and is left as
/// it is.
pub fn run_job(
    link: &dyn AgentLink,
    job: &Job,
    open: &dyn Fn(&DiskSelector) -> Result<Arc<dyn BlockDevice>>,
    opts: &FlashOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let mut forward = |p: &Progress| {
        // Progress is advisory: a dropped report must not stop a flash.
        let _ = link.progress(job.id, p);
        progress(p);
    };
    let step = Step {
        link,
        job,
        open,
        opts,
    };
    let result = match job.state {
        JobState::Provisioning => step.provision(&mut forward),
        JobState::Running => step.session_ended(&mut forward),
        JobState::Capturing => step.capture_all(&mut forward),
        other => {
            return Err(Error::conflict(format!(
                "job {} is {other}; the agent has nothing to do for it",
                job.id
            )))
        }
    };
    result.map_err(|(phase, error)| step.fail(phase, error))
}

type Phased<T> = Result<T, (&'static str, Error)>;

fn in_phase(phase: &'static str) -> impl Fn(Error) -> (&'static str, Error) {
    move |e| (phase, e)
}

struct Step<'a> {
    link: &'a dyn AgentLink,
    job: &'a Job,
    open: &'a dyn Fn(&DiskSelector) -> Result<Arc<dyn BlockDevice>>,
    opts: &'a FlashOptions,
}

impl Step<'_> {
    fn provision(&self, progress: &mut dyn FnMut(&Progress)) -> Phased<()> {
        let (mut fetched, mut bytes, mut unchanged) = (0, 0, 0);
        for (i, entry) in self.job.entries.iter().enumerate() {
            let device = (self.open)(&entry.disk).map_err(in_phase("resolve"))?;
            let r = flash_in_phases(&*device, self.link, self.job.id, i, self.opts, progress)
                .map_err(|f| (f.phase, f.error))?;
            self.log(format!(
                "entry {i} on {}: {} chunks, {} unchanged, {} written from {} fetched frames \
                 ({} bytes), {} zeroed, root {}",
                entry.disk,
                r.chunks,
                r.unchanged,
                r.fetched,
                r.frames,
                r.fetched_bytes,
                r.zeroed,
                r.root
            ));
            fetched += r.fetched;
            bytes += r.fetched_bytes;
            unchanged += r.unchanged;
        }
        self.advance(
            JobState::Running,
            format!(
                "flashed {} entries: {fetched} chunks fetched ({bytes} bytes), {unchanged} unchanged",
                self.job.entries.len()
            ),
        )
    }

    fn session_ended(&self, progress: &mut dyn FnMut(&Progress)) -> Phased<()> {
        if self.job.entries.iter().any(|e| e.capture) {
            self.advance(JobState::Capturing, "session ended; capturing".into())?;
            self.capture_all(progress)
        } else {
            self.advance(
                JobState::Succeeded,
                "session ended; nothing to capture".into(),
            )
        }
    }

    fn capture_all(&self, progress: &mut dyn FnMut(&Progress)) -> Phased<()> {
        let mut versions = Vec::new();
        for (i, entry) in self.job.entries.iter().enumerate() {
            if !entry.capture {
                continue;
            }
            let device = (self.open)(&entry.disk).map_err(in_phase("resolve"))?;
            let retries = AtomicU64::new(0);
            let size = retry(self.opts, &retries, "fetching the manifest", || {
                self.link.manifest(self.job.id, i)
            })
            .map_err(in_phase("capture"))?
            .size();
            let r = capture(
                &*device,
                size,
                self.link,
                self.job.id,
                i,
                self.opts,
                progress,
            )
            .map_err(in_phase("capture"))?;
            self.log(format!(
                "entry {i} on {}: captured as version {} ({} chunks, {} uploaded, {} bytes)",
                entry.disk, r.version.number, r.chunks, r.uploaded, r.uploaded_bytes
            ));
            versions.push(r.version.number.to_string());
        }
        let message = if versions.is_empty() {
            "nothing was marked for capture".to_string()
        } else {
            format!("captured as version {}", versions.join(", "))
        };
        self.advance(JobState::Succeeded, message)
    }

    fn advance(&self, to: JobState, message: String) -> Phased<()> {
        let retries = AtomicU64::new(0);
        retry(self.opts, &retries, "moving the job on", || {
            self.link.advance(self.job.id, to, &message)
        })
        .map(drop)
        .map_err(in_phase("advance"))
    }

    fn log(&self, line: String) {
        let _ = self.link.log(Some(self.job.id), &[line]);
    }

    /// Reports `error` to the server (retrying a server that is briefly
    /// away) and hands it back.
    fn fail(&self, phase: &'static str, error: Error) -> Error {
        let retries = AtomicU64::new(0);
        let _ = retry(self.opts, &retries, "failing the job", || {
            self.link.fail(self.job.id, phase, error.message())
        });
        error
    }
}
