//! Placements: a job asked for "any machine that fits" rather than a named
//! machine. It waits, unbound, until an idle, accepted machine fits; then
//! the store binds it (atomically) and it becomes a job with the same id.

use std::fmt;
use std::str::FromStr;

use super::*;
use crate::{Error, Result};

/// What a job needs from its machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    /// This architecture, if given.
    pub arch: Option<Arch>,
    /// At least one (non-removable) disk of at least this many bytes, as
    /// the machine's agent last reported.
    pub min_disk_bytes: u64,
    /// This pool, if given.
    pub pool: Option<String>,
}

/// Where a placement is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlacementState {
    /// No machine fits now; it waits.
    Waiting,
    /// Bound to a machine: the job with the same id carries on.
    Bound,
    /// Cancelled before any machine was found (by a user, or because what
    /// it writes no longer exists).
    Cancelled,
}

impl PlacementState {
    /// The lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementState::Waiting => "waiting",
            PlacementState::Bound => "bound",
            PlacementState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for PlacementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlacementState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "waiting" => Ok(PlacementState::Waiting),
            "bound" => Ok(PlacementState::Bound),
            "cancelled" => Ok(PlacementState::Cancelled),
            other => Err(Error::invalid(
                "state",
                format!("{other:?} is not one of waiting, bound, cancelled"),
            )),
        }
    }
}

/// A job waiting for any machine that fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its id, which the job keeps once bound.
    pub id: JobId,
    /// Waiting order: assigned by the store, strictly increasing.
    pub seq: i64,
    /// Who asked.
    pub owner: UserId,
    /// What the machine must have.
    pub fit: Fit,
    /// The setup it came from, if any.
    pub setup: Option<SetupId>,
    /// What to write (versions resolved when it was asked for).
    pub entries: Vec<JobEntry>,
    /// The session asked for (`hold_ms`, `not_before`).
    pub session: Session,
    /// Where it is.
    pub state: PlacementState,
    /// The machine it was bound to.
    pub machine: Option<MachineId>,
    /// Why it was cancelled.
    pub error: Option<String>,
    /// When asked for.
    pub created_at: Timestamp,
    /// When bound or cancelled.
    pub finished_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::PlacementState::*;

    #[test]
    fn states_round_trip() {
        for s in [Waiting, Bound, Cancelled] {
            assert_eq!(s.as_str().parse::<super::PlacementState>().ok(), Some(s));
        }
        assert!("queued".parse::<super::PlacementState>().is_err());
    }
}
