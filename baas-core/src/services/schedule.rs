//! Scheduling onto any machine that fits: instead of naming a machine, a
//! user names what the job needs (architecture, a disk at least this big,
//! a pool) and the server places it on an idle, accepted machine that fits,
//! or says, machine by machine, why none does. One machine never runs two
//! jobs at once (its queue hands out one at a time), and an idle machine is
//! one with neither an active nor a queued job, so a placed job starts at
//! the machine's next boot instead of waiting behind another user's.

use super::{Actor, Baas, JobRequest, JobTarget};
use crate::model::*;
use crate::ports::JobFilter;
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

/// One machine against a [`Fit`].
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The machine.
    pub machine: Machine,
    /// Why it cannot take the job now; `None` when it can.
    pub unfit: Option<String>,
}

impl Baas {
    fn why_unfit(&self, m: &Machine, fit: &Fit) -> Result<Option<String>> {
        if m.state != MachineState::Ready {
            return Ok(Some(m.state.as_str().to_string()));
        }
        if let Some(a) = &fit.arch {
            if *a != m.arch {
                return Ok(Some(format!("architecture {}", m.arch.as_str())));
            }
        }
        if let Some(p) = &fit.pool {
            if m.pool.as_deref() != Some(p.as_str()) {
                return Ok(Some(match &m.pool {
                    Some(other) => format!("pool {other}"),
                    None => "in no pool".to_string(),
                }));
            }
        }
        if fit.min_disk_bytes > 0 {
            let biggest = m.inventory.as_ref().and_then(|i| {
                i.disks
                    .iter()
                    .filter(|d| !d.removable)
                    .map(|d| d.size)
                    .max()
            });
            match biggest {
                None => return Ok(Some("no inventory of its disks yet".to_string())),
                Some(b) if b < fit.min_disk_bytes => {
                    return Ok(Some(format!("largest disk {b} bytes")))
                }
                Some(_) => {}
            }
        }
        let busy = self.queue.jobs(&JobFilter {
            machine: Some(m.id),
            states: vec![
                JobState::Queued,
                JobState::Provisioning,
                JobState::Running,
                JobState::Capturing,
            ],
            ..JobFilter::default()
        })?;
        if let Some(j) = busy.first() {
            return Ok(Some(format!(
                "busy: job {} is {}{}",
                j.id,
                j.state,
                if busy.len() > 1 {
                    format!(", {} more waiting", busy.len() - 1)
                } else {
                    String::new()
                }
            )));
        }
        Ok(None)
    }

    /// Every machine against `fit`, by name: which could take a job now,
    /// and why the others cannot (any user).
    pub fn machines_for(&self, actor: &Actor, fit: &Fit) -> Result<Vec<Candidate>> {
        check_pool(&fit.pool)?;
        self.list_machines(actor)?
            .into_iter()
            .map(|m| {
                let unfit = self.why_unfit(&m, fit)?;
                Ok(Candidate { machine: m, unfit })
            })
            .collect()
    }

    /// Queues `target` on the first idle, accepted machine (by name) that
    /// fits; `Conflict` naming each machine's reason when none does.
    pub fn place_job(
        &self,
        actor: &Actor,
        fit: &Fit,
        target: JobTarget,
        hold_ms: Option<u64>,
        not_before: Option<Timestamp>,
    ) -> Result<Job> {
        super::policy::check_user(actor)?;
        let candidates = self.machines_for(actor, fit)?;
        match candidates.iter().find(|c| c.unfit.is_none()) {
            Some(c) => self.enqueue_job_at(
                actor,
                JobRequest {
                    machine: c.machine.id,
                    target,
                },
                hold_ms,
                not_before,
            ),
            None if candidates.is_empty() => Err(Error::conflict("there are no machines")),
            None => Err(Error::conflict(format!(
                "no machine fits now: {}",
                candidates
                    .iter()
                    .map(|c| format!(
                        "{}: {}",
                        c.machine.name,
                        c.unfit.as_deref().unwrap_or("fits")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
}
