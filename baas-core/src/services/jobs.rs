//! The boot queue's use cases: queue a setup (or one image version) on a
//! machine, follow and cancel jobs, and the agent's side: take the next job,
//! report progress, move the job along, fail it with a reason.

use super::policy::{
    can_access_setup, can_cancel_job, can_read_image, can_read_job, can_write_image,
    check_agent_for, check_user,
};
use super::{Actor, Baas};
use crate::model::*;
use crate::ports::JobFilter;
use crate::{Error, Result};

/// What a job writes.
#[derive(Debug, Clone)]
pub enum JobTarget {
    /// Every entry of a setup.
    Setup(SetupId),
    /// One image version (the original quickstart's form).
    Image {
        /// The image.
        image: ImageId,
        /// Which version.
        version: VersionRef,
        /// Target disk; the image's own when `None`.
        disk: Option<DiskSelector>,
        /// Capture the disk when the session ends.
        capture: bool,
    },
}

/// A request to queue a job.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The machine.
    pub machine: MachineId,
    /// What to write.
    pub target: JobTarget,
}

impl Baas {
    pub(crate) fn resolve_entry(
        &self,
        actor: &Actor,
        index: usize,
        entry: &SetupEntry,
    ) -> Result<JobEntry> {
        let image = match self.meta.image(entry.image)? {
            Some(img) if can_read_image(actor, &img) => img,
            _ => return Err(Error::not_found(format!("image {}", entry.image))),
        };
        if entry.capture && !can_write_image(actor, &image) {
            return Err(Error::forbidden(format!(
                "entry {index}: capture needs write access to image {}",
                image.id
            )));
        }
        let version = self.resolve_version(image.id, entry.version)?;
        Ok(JobEntry {
            image: image.id,
            version: version.number,
            disk: entry.disk.clone().unwrap_or(image.disk),
            capture: entry.capture,
        })
    }

    /// Queues a job at the end of a machine's queue. Versions are resolved
    /// now ("latest" means latest at queueing time), so what runs is what
    /// was asked for. Its session lasts the admin's maximum or until
    /// released.
    pub fn enqueue_job(&self, actor: &Actor, request: JobRequest) -> Result<Job> {
        self.enqueue_job_for(actor, request, None)
    }

    /// [`Baas::enqueue_job`] with the session length the user asks for
    /// (`hold_ms`; more than the admin's maximum is `Invalid`).
    pub fn enqueue_job_for(
        &self,
        actor: &Actor,
        request: JobRequest,
        hold_ms: Option<u64>,
    ) -> Result<Job> {
        self.enqueue_job_at(actor, request, hold_ms, None)
    }

    /// [`Baas::enqueue_job_for`] in a window: the job starts no earlier
    /// than `not_before` (the machine is not booted for it before).
    pub fn enqueue_job_at(
        &self,
        actor: &Actor,
        request: JobRequest,
        hold_ms: Option<u64>,
        not_before: Option<Timestamp>,
    ) -> Result<Job> {
        self.check_hold(hold_ms)?;
        let owner = check_user(actor)?;
        let machine = self
            .meta
            .machine(request.machine)?
            .ok_or_else(|| Error::not_found(format!("machine {}", request.machine)))?;
        match machine.state {
            MachineState::Ready => {}
            MachineState::Pending => {
                return Err(Error::conflict(format!(
                    "machine {} is waiting to be accepted by an admin",
                    machine.name
                )))
            }
            MachineState::Retired => {
                return Err(Error::conflict(format!(
                    "machine {} is retired",
                    machine.name
                )))
            }
        }
        let (setup, entries) = self.resolve_target(actor, request.target)?;
        let job = Job::queued(
            JobId(self.entropy.uuid()),
            machine.id,
            owner,
            setup,
            entries,
            self.clock.now(),
            Session {
                hold_ms,
                not_before,
                ..Session::default()
            },
        );
        self.queue.enqueue(&job)
    }

    /// A session length the user asks for: 1 ms to the admin's maximum.
    pub(crate) fn check_hold(&self, hold_ms: Option<u64>) -> Result<()> {
        if let Some(h) = hold_ms {
            if h == 0 || h > self.config.max_hold_ms {
                return Err(Error::invalid(
                    "hold_seconds",
                    format!(
                        "a session lasts from 1 s to the maximum of {} s",
                        self.config.max_hold_ms / 1000
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What a job writes, with versions resolved now, and the setup it
    /// came from.
    pub(crate) fn resolve_target(
        &self,
        actor: &Actor,
        target: JobTarget,
    ) -> Result<(Option<SetupId>, Vec<JobEntry>)> {
        let (setup, wanted) = match target {
            JobTarget::Setup(id) => {
                let setup = match self.meta.setup(id)? {
                    Some(s) if can_access_setup(actor, &s) => s,
                    _ => return Err(Error::not_found(format!("setup {id}"))),
                };
                (Some(id), setup.entries)
            }
            JobTarget::Image {
                image,
                version,
                disk,
                capture,
            } => (
                None,
                vec![SetupEntry {
                    image,
                    version,
                    disk,
                    capture,
                }],
            ),
        };
        if wanted.is_empty() {
            return Err(Error::invalid("setup", "the setup has no images to write"));
        }
        let entries = wanted
            .iter()
            .enumerate()
            .map(|(i, e)| self.resolve_entry(actor, i, e))
            .collect::<Result<Vec<_>>>()?;
        Ok((setup, entries))
    }

    /// A job the caller may see.
    pub fn get_job(&self, actor: &Actor, id: JobId) -> Result<Job> {
        match self.queue.job(id)? {
            Some(j) if can_read_job(actor, &j) => Ok(j),
            _ => Err(Error::not_found(format!("job {id}"))),
        }
    }

    /// Jobs: users see their own, moderators and admins everyone's.
    pub fn list_jobs(&self, actor: &Actor, mut filter: JobFilter) -> Result<Vec<Job>> {
        match actor {
            Actor::User { id, role, .. } if *role < Role::Moderator => {
                if filter.owner.is_some_and(|o| o != *id) {
                    return Err(Error::forbidden("you may list only your own jobs"));
                }
                filter.owner = Some(*id);
            }
            Actor::Agent { machine } => filter.machine = Some(*machine),
            _ => {}
        }
        self.queue.jobs(&filter)
    }

    /// A machine's waiting and active jobs, in order (any user: it shows
    /// what is waiting and why).
    pub fn machine_queue(&self, actor: &Actor, machine: MachineId) -> Result<Vec<Job>> {
        self.get_machine(actor, machine)?;
        self.queue.jobs(&JobFilter {
            machine: Some(machine),
            states: vec![
                JobState::Queued,
                JobState::Provisioning,
                JobState::Running,
                JobState::Capturing,
            ],
            ..JobFilter::default()
        })
    }

    /// A job's timeline.
    pub fn job_events(&self, actor: &Actor, id: JobId) -> Result<Vec<JobEvent>> {
        self.get_job(actor, id)?;
        self.queue.events(id)
    }

    /// Cancels a job that has not finished (its owner, moderators, admins).
    pub fn cancel_job(&self, actor: &Actor, id: JobId) -> Result<Job> {
        let job = match self.get_job(actor, id) {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => match self.queue.placement(id)? {
                Some(p)
                    if p.state == PlacementState::Waiting
                        && super::policy::can_cancel_placement(actor, &p) =>
                {
                    return Err(Error::conflict(format!(
                        "job {id} still waits for a machine that fits: cancel the placement"
                    )))
                }
                _ => return Err(e),
            },
            other => other?,
        };
        if !can_cancel_job(actor, &job) {
            return Err(Error::forbidden(format!(
                "only the owner of job {id} or a moderator may cancel it"
            )));
        }
        if job.state.is_final() {
            return Err(Error::conflict(format!("job {id} already {}", job.state)));
        }
        let who = match actor {
            Actor::User { name, .. } => name.clone(),
            _ => "the system".into(),
        };
        let event = self.event("cancelled", format!("cancelled by {who}"));
        let job = self.queue.transition(
            id,
            &[
                JobState::Queued,
                JobState::Provisioning,
                JobState::Running,
                JobState::Capturing,
            ],
            JobState::Cancelled,
            Some(format!("cancelled by {who}")),
            &event,
        )?;
        self.return_to_neutral(&job)?;
        self.bind_waiting_now();
        Ok(job)
    }

    // --- the agent's side

    /// The job the machine's agent should work on now: the active one if a
    /// previous boot died in the middle of it (flashing is idempotent, so it
    /// is simply redone), else the next queued one, handed out exactly once.
    pub fn next_job(&self, actor: &Actor, machine: MachineId) -> Result<Option<Job>> {
        check_agent_for(actor, machine)?;
        let now = self.clock.now();
        // The hot path: a machine that had nothing to do a moment ago, with
        // nothing changed since, still has nothing (see `idle`).
        if self.idle.is_idle(machine, now) {
            return Ok(None);
        }
        let epoch = self.idle.epoch();
        let idle = |due: Option<Timestamp>| {
            self.idle.remember(machine, now, due, epoch);
            Ok(None)
        };
        let m = self.get_machine(actor, machine)?;
        if m.state != MachineState::Ready {
            return idle(None);
        }
        if let Some(active) = self.queue.active_job(machine)? {
            if active.state == JobState::Provisioning {
                self.queue.append_event(
                    active.id,
                    &self.event("provisioning", "agent restarted; redoing the job"),
                )?;
            }
            return Ok(Some(active));
        }
        let oldest = self.queue.jobs(&JobFilter {
            machine: Some(machine),
            states: vec![JobState::Queued],
            ..JobFilter::default()
        })?;
        if let Some(first) = oldest.first().filter(|j| !j.session.due(now)) {
            return idle(first.session.not_before);
        }
        // An idle machine asking for work: a waiting placement may fit. If
        // none does, there is nothing to take, and the poll ends without the
        // store's write transaction.
        if oldest.is_empty() && !self.bind_waiting_to(&m) {
            return idle(None);
        }
        self.queue.take_next(machine, now)
    }

    pub(crate) fn agent_job(&self, actor: &Actor, id: JobId) -> Result<Job> {
        let job = self
            .queue
            .job(id)?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        check_agent_for(actor, job.machine)?;
        Ok(job)
    }

    /// Records the agent's progress on an active job.
    pub fn report_progress(&self, actor: &Actor, id: JobId, progress: Progress) -> Result<()> {
        let job = self.agent_job(actor, id)?;
        if !job.state.is_active() {
            return Err(Error::conflict(format!(
                "job {id} is {}, not active",
                job.state
            )));
        }
        if progress.bytes_done > progress.bytes_total {
            return Err(Error::invalid("bytes_done", "exceeds bytes_total"));
        }
        crate::model::check_name("phase", &progress.phase, 32)?;
        self.queue.set_progress(id, &progress)
    }

    /// Moves a job to its next state (agent, moderators, admins).
    pub fn advance_job(
        &self,
        actor: &Actor,
        id: JobId,
        to: JobState,
        message: &str,
    ) -> Result<Job> {
        let job = self.agent_job(actor, id)?;
        if !job.state.can_become(to) || matches!(to, JobState::Failed | JobState::Cancelled) {
            return Err(Error::conflict(format!(
                "job {id} cannot go from {} to {to}",
                job.state
            )));
        }
        let event = self.event(to.as_str(), message);
        let job = self.queue.transition(id, &[job.state], to, None, &event)?;
        if to == JobState::Running {
            self.start_session(&job)?;
            return self.get_job(actor, id);
        }
        if to == JobState::Succeeded {
            self.return_to_neutral(&job)?;
            self.bind_waiting_now();
        }
        Ok(job)
    }

    /// Fails a job with the reason and the phase it failed in.
    pub fn fail_job(&self, actor: &Actor, id: JobId, phase: &str, reason: &str) -> Result<Job> {
        let job = self.agent_job(actor, id)?;
        if job.state.is_final() {
            return Err(Error::conflict(format!("job {id} already {}", job.state)));
        }
        let text = format!("{phase}: {reason}");
        let event = self.event("failed", text.clone());
        let job = self.queue.transition(
            id,
            &[
                JobState::Queued,
                JobState::Provisioning,
                JobState::Running,
                JobState::Capturing,
            ],
            JobState::Failed,
            Some(text),
            &event,
        )?;
        self.return_to_neutral(&job)?;
        self.bind_waiting_now();
        Ok(job)
    }

    /// Adds a log line from the agent to a job's timeline.
    pub fn log_job(&self, actor: &Actor, id: JobId, message: &str) -> Result<()> {
        self.agent_job(actor, id)?;
        let message: String = message.chars().take(4096).collect();
        self.queue.append_event(id, &self.event("log", message))
    }
}
