//! The boot queue: per-machine FIFO of jobs, with exactly-once hand-out.

use crate::model::*;
use crate::Result;

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this machine's.
    pub machine: Option<MachineId>,
    /// Only this owner's.
    pub owner: Option<UserId>,
    /// Only in these states (any when empty).
    pub states: Vec<JobState>,
    /// At most this many, newest first when set (oldest first otherwise).
    pub limit: Option<u32>,
}

/// Jobs and their timelines.
///
/// Contract, checked by `baas_core::conformance::boot_queue`:
/// - `take_next` hands each queued job out at most once, in FIFO order per
///   machine, and never while the machine has an active job, even when
///   called concurrently.
/// - `transition` is compare-and-set on the state and records the event in
///   the same transaction: it fails with `Conflict` when the job is not in
///   one of `from`.
/// - `bind_placement` turns a waiting placement into a queued job on a
///   machine only if, in the same transaction, the placement is still
///   waiting and the machine is accepted and idle (no queued or active
///   job): two binders (threads or servers) never give one machine to two
///   placements, and a cancelled placement is never bound.
pub trait BootQueue: Send + Sync + std::fmt::Debug {
    /// Appends a queued job; the store assigns `seq`. Records a `queued`
    /// event.
    fn enqueue(&self, job: &Job) -> Result<Job>;
    /// A job.
    fn job(&self, id: JobId) -> Result<Option<Job>>;
    /// Jobs matching `filter`, by `seq`.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// The machine's job in an active state, if any.
    fn active_job(&self, machine: MachineId) -> Result<Option<Job>>;
    /// Atomically moves the machine's oldest queued job to `provisioning`
    /// (unless the machine has an active job) and returns it.
    fn take_next(&self, machine: MachineId, now: Timestamp) -> Result<Option<Job>>;
    /// Moves a job from one of `from` to `to`, sets `error` (when given) and
    /// the timestamps, and records `event`.
    fn transition(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        error: Option<String>,
        event: &JobEvent,
    ) -> Result<Job>;
    /// Replaces a job's session (reservation end, last power cycle).
    fn set_session(&self, id: JobId, session: &Session) -> Result<()>;
    /// Replaces a job's progress.
    fn set_progress(&self, id: JobId, progress: &Progress) -> Result<()>;
    /// Adds a line to a job's timeline.
    fn append_event(&self, id: JobId, event: &JobEvent) -> Result<()>;
    /// A job's timeline, oldest first.
    fn events(&self, id: JobId) -> Result<Vec<JobEvent>>;

    // --- placements (jobs for any machine that fits, not yet bound)

    /// Records a waiting placement; the store assigns `seq`.
    fn insert_placement(&self, placement: &Placement) -> Result<Placement>;
    /// A placement.
    fn placement(&self, id: JobId) -> Result<Option<Placement>>;
    /// Placements in one of `states` (all when empty), by `seq`.
    fn placements(&self, states: &[PlacementState]) -> Result<Vec<Placement>>;
    /// Atomically: when placement `job.id` is waiting and `job.machine` is
    /// accepted and has no queued or active job, marks the placement bound
    /// to it and enqueues `job` (as [`BootQueue::enqueue`] does). Otherwise
    /// `Conflict` (placement no longer waiting, machine taken or not
    /// accepted) or `NotFound`, and nothing changes.
    fn bind_placement(&self, job: &Job) -> Result<Job>;
    /// Moves a waiting placement to cancelled with `reason`; `Conflict`
    /// when it is no longer waiting.
    fn cancel_placement(&self, id: JobId, reason: &str, at: Timestamp) -> Result<Placement>;
}
