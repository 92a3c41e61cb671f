//! Jobs in a machine's boot queue: what to write, and where the job is in
//! its life.

use std::fmt;
use std::str::FromStr;

use super::{DiskSelector, ImageId, JobId, MachineId, SetupId, Timestamp, UserId};
use crate::{Error, Result};

/// One image version to write, fully resolved when the job is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    /// The image.
    pub image: ImageId,
    /// The pinned version number.
    pub version: u32,
    /// Target disk.
    pub disk: DiskSelector,
    /// Capture this disk as a new version when the session ends.
    pub capture: bool,
}

/// A job's lifecycle.
///
/// ```text
/// queued -> provisioning -> running -> capturing -> succeeded
///    |            |            |           |
///    +------------+------------+-----------+--> failed | cancelled
/// ```
/// `running -> succeeded` directly when nothing is to be captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting in the machine's queue.
    Queued,
    /// Handed to the machine's agent: writing disks.
    Provisioning,
    /// The machine runs the user's OS.
    Running,
    /// The session ended; the agent captures the marked disks.
    Capturing,
    /// Done.
    Succeeded,
    /// Ended with an error (see the job's `error` and `phase`).
    Failed,
    /// Cancelled by a user or moderator.
    Cancelled,
}

impl JobState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Provisioning => "provisioning",
            JobState::Running => "running",
            JobState::Capturing => "capturing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Succeeded, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Holds the machine (provisioning, running, capturing).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Provisioning | JobState::Running | JobState::Capturing
        )
    }

    /// Whether `self -> next` is a legal transition.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        match (self, next) {
            (Queued, Provisioning) | (Provisioning, Running) | (Running, Capturing) => true,
            (Running | Capturing, Succeeded) => true,
            (s, Failed | Cancelled) => !s.is_final(),
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        use JobState::*;
        Ok(match s {
            "queued" => Queued,
            "provisioning" => Provisioning,
            "running" => Running,
            "capturing" => Capturing,
            "succeeded" => Succeeded,
            "failed" => Failed,
            "cancelled" => Cancelled,
            other => {
                return Err(Error::invalid(
                    "state",
                    format!("{other:?} is not a job state"),
                ))
            }
        })
    }
}

/// Progress of the current phase, as the agent last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Phase name, e.g. `flash`, `verify`, `capture`.
    pub phase: String,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes this phase will handle.
    pub bytes_total: u64,
    /// Current rate, bytes per second.
    pub rate: u64,
}

/// A job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Stable id.
    pub id: JobId,
    /// Queue order: assigned by the store, strictly increasing.
    pub seq: i64,
    /// The machine.
    pub machine: MachineId,
    /// Who queued it.
    pub owner: UserId,
    /// The setup it came from, if any (a single image version otherwise).
    pub setup: Option<SetupId>,
    /// What to write, in order.
    pub entries: Vec<JobEntry>,
    /// Lifecycle state.
    pub state: JobState,
    /// Progress of the current phase.
    pub progress: Progress,
    /// Why it failed (with `Failed`), or who cancelled it.
    pub error: Option<String>,
    /// When queued.
    pub created_at: Timestamp,
    /// When handed to the agent.
    pub started_at: Option<Timestamp>,
    /// When it reached a final state.
    pub finished_at: Option<Timestamp>,
    /// The user's session on the machine (the reservation).
    pub session: Session,
}

impl Job {
    /// A new job, queued on `machine` at `created_at` (the store assigns
    /// `seq` when it enqueues it).
    pub fn queued(
        id: JobId,
        machine: MachineId,
        owner: UserId,
        setup: Option<SetupId>,
        entries: Vec<JobEntry>,
        created_at: Timestamp,
        session: Session,
    ) -> Job {
        Job {
            id,
            seq: 0,
            machine,
            owner,
            setup,
            entries,
            state: JobState::Queued,
            progress: Progress::default(),
            error: None,
            created_at,
            started_at: None,
            finished_at: None,
            session,
        }
    }

    /// A job that returns a machine to its neutral state (queued by the
    /// server, its session has zero length).
    pub fn is_restore(&self) -> bool {
        self.session.hold_ms == Some(0)
    }
}

/// The user's time on the machine: how long they asked for, when it ends,
/// and when the server last power-cycled the machine for this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Session {
    /// How long the user's OS may run, in milliseconds (the admin's
    /// maximum when the user asked for nothing or for more).
    pub hold_ms: Option<u64>,
    /// When the session ends: set when the job starts `running`
    /// (`now + hold_ms`), moved to now when the user releases the machine.
    pub ends_at: Option<Timestamp>,
    /// The last power cycle the server did for this job (to start it, or
    /// to end its session), so that it does each only once.
    pub cycled_at: Option<Timestamp>,
    /// The earliest the job may start (a reservation's window opens);
    /// until then the machine is not booted for it.
    pub not_before: Option<Timestamp>,
}

impl Session {
    /// Whether the session is over at `now` (a `running` job's machine
    /// should then boot the management OS to capture and clean up).
    pub fn ended(&self, now: Timestamp) -> bool {
        self.ends_at.is_some_and(|e| e <= now)
    }

    /// Whether a queued job may start at `now`.
    pub fn due(&self, now: Timestamp) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }
}

/// A line in a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// When.
    pub at: Timestamp,
    /// Short kind: a state name, `progress`, `log`, `capture`...
    pub kind: String,
    /// Human text.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::JobState::*;

    #[test]
    fn transitions() {
        assert!(Queued.can_become(Provisioning));
        assert!(Queued.can_become(Cancelled));
        assert!(!Queued.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(!Succeeded.can_become(Failed));
        assert!(!Cancelled.can_become(Cancelled));
        for s in [
            Queued,
            Provisioning,
            Running,
            Capturing,
            Succeeded,
            Failed,
            Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<super::JobState>().ok(), Some(s));
        }
    }
}
