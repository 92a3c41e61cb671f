//! The agents' hot path: a machine polling for work it does not have.
//!
//! Hundreds of agents poll `next-job`; almost every answer is "nothing".
//! [`IdleMemo`] remembers, per machine, that the last answer was nothing,
//! and [`WatchedQueue`] (the boot queue as the services see it) forgets all
//! of that whenever this process changes the queue in a way that could make
//! the answer something (a job queued, taken, moved, rescheduled; a
//! placement made, bound, cancelled), as do the services when a machine
//! changes. A change made by another server on the same database, or a
//! reservation window opening with the passing of time, is seen within
//! [`IDLE_MEMO_MS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::*;
use crate::ports::{BootQueue, JobFilter};
use crate::Result;

/// How long "this machine has nothing to do" is believed without asking
/// the store again.
pub const IDLE_MEMO_MS: i64 = 1_000;

/// Most machines remembered at once (the memo starts over when full).
const IDLE_MEMO_MAX: usize = 65_536;

/// Machines whose last poll found nothing, and since when.
#[derive(Debug, Default)]
pub(crate) struct IdleMemo {
    /// Bumped by every change that could give an idle machine work.
    epoch: AtomicU64,
    /// Machine -> (found idle at, believed until, epoch).
    idle: Mutex<HashMap<MachineId, (Timestamp, Timestamp, u64)>>,
}

impl IdleMemo {
    /// The epoch to pass to [`IdleMemo::remember`]: read it before looking
    /// at the store, so a change made meanwhile voids what was seen.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether `machine` was found idle a moment ago (less than
    /// [`IDLE_MEMO_MS`], and before anything it waits for is due), with
    /// nothing changed since.
    pub(crate) fn is_idle(&self, machine: MachineId, now: Timestamp) -> bool {
        let Ok(idle) = self.idle.lock() else {
            return false;
        };
        idle.get(&machine)
            .is_some_and(|(at, until, epoch)| *epoch == self.epoch() && *at <= now && now < *until)
    }

    /// Records that `machine` had nothing to do at `now`, as seen from
    /// `epoch`, and that nothing it waits for is due before `due` (a
    /// queued job's reservation window), if given.
    pub(crate) fn remember(
        &self,
        machine: MachineId,
        now: Timestamp,
        due: Option<Timestamp>,
        epoch: u64,
    ) {
        let mut until = now.plus_millis(IDLE_MEMO_MS);
        if let Some(due) = due {
            until = until.min(due);
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= IDLE_MEMO_MAX {
                idle.clear();
            }
            idle.insert(machine, (now, until, epoch));
        }
    }

    /// Forgets every idle machine.
    pub(crate) fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// The boot queue, telling the [`IdleMemo`] of every change that could
/// give a machine work. Reads and progress reports pass straight through.
#[derive(Debug)]
pub(crate) struct WatchedQueue {
    inner: Arc<dyn BootQueue>,
    memo: Arc<IdleMemo>,
}

impl WatchedQueue {
    pub(crate) fn new(inner: Arc<dyn BootQueue>, memo: Arc<IdleMemo>) -> WatchedQueue {
        WatchedQueue { inner, memo }
    }

    /// `r`, after telling the memo (even on failure: a failed write may
    /// still have happened, e.g. a lost commit acknowledgement).
    fn changed<T>(&self, r: Result<T>) -> Result<T> {
        self.memo.changed();
        r
    }
}

impl BootQueue for WatchedQueue {
    fn enqueue(&self, job: &Job) -> Result<Job> {
        self.changed(self.inner.enqueue(job))
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.job(id)
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.inner.jobs(filter)
    }

    fn active_job(&self, machine: MachineId) -> Result<Option<Job>> {
        self.inner.active_job(machine)
    }

    fn take_next(&self, machine: MachineId, now: Timestamp) -> Result<Option<Job>> {
        self.changed(self.inner.take_next(machine, now))
    }

    fn transition(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        error: Option<String>,
        event: &JobEvent,
    ) -> Result<Job> {
        self.changed(self.inner.transition(id, from, to, error, event))
    }

    fn set_session(&self, id: JobId, session: &Session) -> Result<()> {
        self.changed(self.inner.set_session(id, session))
    }

    fn set_progress(&self, id: JobId, progress: &Progress) -> Result<()> {
        self.inner.set_progress(id, progress)
    }

    fn append_event(&self, id: JobId, event: &JobEvent) -> Result<()> {
        self.inner.append_event(id, event)
    }

    fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.inner.events(id)
    }

    fn insert_placement(&self, placement: &Placement) -> Result<Placement> {
        self.changed(self.inner.insert_placement(placement))
    }

    fn placement(&self, id: JobId) -> Result<Option<Placement>> {
        self.inner.placement(id)
    }

    fn placements(&self, states: &[PlacementState]) -> Result<Vec<Placement>> {
        self.inner.placements(states)
    }

    fn bind_placement(&self, job: &Job) -> Result<Job> {
        self.changed(self.inner.bind_placement(job))
    }

    fn cancel_placement(&self, id: JobId, reason: &str, at: Timestamp) -> Result<Placement> {
        self.changed(self.inner.cancel_placement(id, reason, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn idle_is_believed_only_briefly_and_only_until_something_changes() {
        let memo = IdleMemo::default();
        let m = MachineId(uuid::Uuid::from_u128(7));
        assert!(!memo.is_idle(m, at(1_000)));
        let epoch = memo.epoch();
        memo.remember(m, at(1_000), None, epoch);
        assert!(memo.is_idle(m, at(1_000 + IDLE_MEMO_MS - 1)));
        assert!(!memo.is_idle(m, at(1_000 + IDLE_MEMO_MS)));
        // A clock that went back does not extend the belief either.
        assert!(!memo.is_idle(m, at(999)));
        memo.changed();
        assert!(!memo.is_idle(m, at(1_001)));
        // What was seen before a change is never remembered after it.
        memo.remember(m, at(1_002), None, epoch);
        assert!(!memo.is_idle(m, at(1_003)));
        // A queued job due soon is not hidden past its start.
        memo.remember(m, at(2_000), Some(at(2_100)), memo.epoch());
        assert!(memo.is_idle(m, at(2_099)));
        assert!(!memo.is_idle(m, at(2_100)));
    }
}
