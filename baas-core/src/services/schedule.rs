//! Scheduling onto any machine that fits: instead of naming a machine, a
//! user names what the job needs (architecture, a disk at least this big,
//! a pool). The request becomes a *placement*: the server binds it to an
//! idle, accepted machine that fits, at once when one does, else as soon
//! as one does (a job ends or is cancelled, a machine is accepted, boots
//! or asks for work idle, the server's periodic pass), oldest placement
//! first. A placement for a window that opens later holds no machine until
//! it opens (the periodic pass binds it then): an idle machine is not kept
//! from other users for hours. Meanwhile the user sees
//! why it waits. An idle machine is one with neither an active nor a queued
//! job, so a bound job starts at the machine's next boot instead of waiting
//! behind another user's; the store binds atomically, so one machine never
//! goes to two placements, even from two servers on one database.

use std::collections::HashMap;

use super::policy::can_cancel_placement;
use super::{Actor, Baas, JobTarget};
use crate::model::*;
use crate::ports::JobFilter;
use crate::{Error, ErrorKind, Result};

pub use crate::model::Fit;

/// One machine against a [`Fit`].
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The machine.
    pub machine: Machine,
    /// Why it cannot take the job now; `None` when it can.
    pub unfit: Option<String>,
}

/// What became of a placement request.
#[derive(Debug, Clone)]
pub enum Placed {
    /// A machine fitted: the job is queued on it (with the placement's id).
    Job(Job),
    /// None fits now: the placement waits.
    Waiting {
        /// The placement.
        placement: Placement,
        /// Why it waits.
        reason: String,
    },
}

/// A placement with, while it waits, the reason.
#[derive(Debug, Clone)]
pub struct PlacementStatus {
    /// The placement.
    pub placement: Placement,
    /// Why it waits (`None` once bound or cancelled).
    pub reason: Option<String>,
}

/// Busy machines and why (see `Baas::busy_machines`).
type Busy = HashMap<MachineId, String>;

/// `n` bytes for people: whole GiB or MiB when exact, else bytes.
fn bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if n >= GIB && n % GIB == 0 {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// What `fit` asks for, in words ("architecture x86_64, pool gpu and a
/// disk of at least 64 GiB").
fn describe(fit: &Fit) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &fit.arch {
        parts.push(format!("architecture {}", a.as_str()));
    }
    if let Some(p) = &fit.pool {
        parts.push(format!("pool {p}"));
    }
    if fit.min_disk_bytes > 0 {
        parts.push(format!("a disk of at least {}", bytes(fit.min_disk_bytes)));
    }
    match parts.len() {
        0 => "what it asks for".to_string(),
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}

/// Why `m` can never take a job needing `fit` as it is now (state, arch,
/// pool, disks), whatever runs on it.
fn static_unfit(m: &Machine, fit: &Fit) -> Option<String> {
    if m.state != MachineState::Ready {
        return Some(m.state.as_str().to_string());
    }
    if let Some(a) = &fit.arch {
        if *a != m.arch {
            return Some(format!("architecture {}", m.arch.as_str()));
        }
    }
    if let Some(p) = &fit.pool {
        if m.pool.as_deref() != Some(p.as_str()) {
            return Some(match &m.pool {
                Some(other) => format!("pool {other}"),
                None => "in no pool".to_string(),
            });
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
            None => return Some("no inventory of its disks yet".to_string()),
            Some(b) if b < fit.min_disk_bytes => {
                return Some(format!("largest disk {b} bytes ({})", bytes(b)))
            }
            Some(_) => {}
        }
    }
    None
}

impl Baas {
    /// Every busy machine (one with a queued or active job) and why, in
    /// one query.
    fn busy_machines(&self) -> Result<Busy> {
        let jobs = self.queue.jobs(&JobFilter {
            states: vec![
                JobState::Queued,
                JobState::Provisioning,
                JobState::Running,
                JobState::Capturing,
            ],
            ..JobFilter::default()
        })?;
        let mut by_machine: HashMap<MachineId, Vec<&Job>> = HashMap::new();
        for j in &jobs {
            by_machine.entry(j.machine).or_default().push(j);
        }
        Ok(by_machine
            .into_iter()
            .map(|(m, jobs)| {
                // The active job first, else the oldest queued one.
                let first = jobs
                    .iter()
                    .find(|j| j.state.is_active())
                    .or(jobs.first())
                    .map_or_else(String::new, |j| format!("job {} is {}", j.id, j.state));
                let more = if jobs.len() > 1 {
                    format!(", {} more waiting", jobs.len() - 1)
                } else {
                    String::new()
                };
                (m, format!("busy: {first}{more}"))
            })
            .collect())
    }

    /// Every machine against `fit`, by name: which could take a job now,
    /// and why the others cannot (any user).
    pub fn machines_for(&self, actor: &Actor, fit: &Fit) -> Result<Vec<Candidate>> {
        check_pool(&fit.pool)?;
        let machines = self.list_machines(actor)?;
        let busy = self.busy_machines()?;
        Ok(machines
            .into_iter()
            .map(|m| {
                let unfit = static_unfit(&m, fit).or_else(|| busy.get(&m.id).cloned());
                Candidate { machine: m, unfit }
            })
            .collect())
    }

    /// Why nothing fits `fit` now, in one sentence with each machine's
    /// reason: "all 2 fitting machines are busy (...)", "no accepted
    /// machine has a disk of at least 64 GiB (...)".
    fn wait_reason(p: &Placement, now: Timestamp, machines: &[Machine], busy: &Busy) -> String {
        if let Some(t) = p.session.not_before.filter(|_| !p.session.due(now)) {
            return format!(
                "its window opens in {} s ({} ms after the epoch): it takes a machine then",
                (t.millis() - now.millis() + 999) / 1000,
                t.millis()
            );
        }
        let fit = &p.fit;
        if machines.is_empty() {
            return "there are no machines yet".to_string();
        }
        let mut fitting = Vec::new();
        let mut others = Vec::new();
        for m in machines {
            match static_unfit(m, fit) {
                None => fitting.push(format!(
                    "{}: {}",
                    m.name,
                    busy.get(&m.id).map_or("idle", String::as_str)
                )),
                Some(why) => others.push(format!("{}: {why}", m.name)),
            }
        }
        let rest = if others.is_empty() {
            String::new()
        } else {
            format!("; the others do not fit ({})", others.join("; "))
        };
        match fitting.len() {
            0 => format!(
                "no accepted machine has {} ({})",
                describe(fit),
                others.join("; ")
            ),
            1 => format!("the only fitting machine is busy ({}){rest}", fitting[0]),
            n => format!(
                "all {n} fitting machines are busy ({}){rest}",
                fitting.join("; ")
            ),
        }
    }

    /// Places `target` on any machine that fits: queued at once on the
    /// first idle, accepted machine (by name) that fits, else a waiting
    /// placement, bound as soon as one does. Only input that can never be
    /// valid is refused (`Invalid`, `NotFound` for what it writes).
    pub fn place_job(
        &self,
        actor: &Actor,
        fit: &Fit,
        target: JobTarget,
        hold_ms: Option<u64>,
        not_before: Option<Timestamp>,
    ) -> Result<Placed> {
        let owner = super::policy::check_user(actor)?;
        check_pool(&fit.pool)?;
        self.check_hold(hold_ms)?;
        let (setup, entries) = self.resolve_target(actor, target)?;
        let placement = self.queue.insert_placement(&Placement {
            id: JobId(self.entropy.uuid()),
            seq: 0,
            owner,
            fit: fit.clone(),
            setup,
            entries,
            session: Session {
                hold_ms,
                not_before,
                ..Session::default()
            },
            state: PlacementState::Waiting,
            machine: None,
            error: None,
            created_at: self.clock.now(),
            finished_at: None,
        })?;
        let machines = self.meta.machines()?;
        let mut busy = self.busy_machines()?;
        if let Some(job) = self.try_bind(&placement, &machines, &mut busy)? {
            return Ok(Placed::Job(job));
        }
        let placement = self.queue.placement(placement.id)?.unwrap_or(placement);
        if placement.state == PlacementState::Bound {
            // Another server's pass bound it meanwhile.
            return self.get_job(actor, placement.id).map(Placed::Job);
        }
        let reason = Self::wait_reason(
            &placement,
            self.clock.now(),
            &machines,
            &self.busy_machines()?,
        );
        Ok(Placed::Waiting { placement, reason })
    }

    /// Binds `p` to the first machine (of `machines`) that fits and is
    /// idle (not in `busy`, which gets the machine it binds to); `None`
    /// when none is, or `p` stopped waiting meanwhile. `busy` may be stale:
    /// the store checks again, atomically.
    fn try_bind(
        &self,
        p: &Placement,
        machines: &[Machine],
        busy: &mut Busy,
    ) -> Result<Option<Job>> {
        if !p.session.due(self.clock.now()) {
            // Its window has not opened: no machine is held for it yet.
            return Ok(None);
        }
        if !machines
            .iter()
            .any(|m| static_unfit(m, &p.fit).is_none() && !busy.contains_key(&m.id))
        {
            return Ok(None);
        }
        // A machine fits: what the job writes must still exist.
        for e in &p.entries {
            if self.meta.version(e.image, e.version)?.is_none() {
                let why = format!(
                    "version {} of image {} was deleted while the job waited",
                    e.version, e.image
                );
                match self.queue.cancel_placement(p.id, &why, self.clock.now()) {
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == ErrorKind::Conflict => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
        for m in machines {
            if static_unfit(m, &p.fit).is_some() || busy.contains_key(&m.id) {
                continue;
            }
            let now = self.clock.now();
            let job = Job::queued(
                p.id,
                m.id,
                p.owner,
                p.setup,
                p.entries.clone(),
                now,
                p.session,
            );
            match self.queue.bind_placement(&job) {
                Ok(job) => {
                    busy.insert(m.id, format!("busy: job {} is queued", job.id));
                    let waited = now.millis().saturating_sub(p.created_at.millis());
                    self.queue.append_event(
                        job.id,
                        &self.event(
                            "placed",
                            if waited > 0 {
                                format!(
                                    "placed on {} after waiting {} s for a machine that fits",
                                    m.name,
                                    waited / 1000
                                )
                            } else {
                                format!("placed on {}, an idle machine that fits", m.name)
                            },
                        ),
                    )?;
                    return Ok(Some(job));
                }
                // The machine was taken (or retired) meanwhile, or the
                // placement was cancelled or bound elsewhere.
                Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound) => {
                    busy.insert(m.id, "busy".to_string());
                    match self.queue.placement(p.id)? {
                        Some(now) if now.state == PlacementState::Waiting => continue,
                        _ => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Binds every waiting placement that fits an idle machine now, oldest
    /// first (the server itself, every few seconds). Returns the jobs.
    pub fn bind_waiting(&self, actor: &Actor) -> Result<Vec<Job>> {
        if *actor != Actor::System {
            return Err(Error::forbidden(
                "only the server itself binds waiting placements",
            ));
        }
        let waiting = self.queue.placements(&[PlacementState::Waiting])?;
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let machines = self.meta.machines()?;
        let mut busy = self.busy_machines()?;
        let mut bound = Vec::new();
        for p in &waiting {
            if machines.iter().all(|m| busy.contains_key(&m.id)) {
                break;
            }
            if let Some(job) = self.try_bind(p, &machines, &mut busy)? {
                bound.push(job);
            }
        }
        Ok(bound)
    }

    /// [`Baas::bind_waiting`] right after something may have freed a
    /// machine. Best effort: what it cannot do now, the server's periodic
    /// pass does, so a failure here must not fail what freed the machine.
    pub(crate) fn bind_waiting_now(&self) {
        let _ = self.bind_waiting(&Actor::System);
    }

    /// Binds the oldest waiting placement that `machine` fits to it, if it
    /// is idle (when it boots or its agent asks for work: cheaper than a
    /// whole pass, and anonymous boot requests must stay cheap). Best
    /// effort, as [`Baas::bind_waiting_now`]. Whether it bound one.
    pub(crate) fn bind_waiting_to(&self, machine: &Machine) -> bool {
        (|| -> Result<bool> {
            let waiting = self.queue.placements(&[PlacementState::Waiting])?;
            let mut busy = Busy::new();
            let one = std::slice::from_ref(machine);
            for p in waiting
                .iter()
                .filter(|p| static_unfit(machine, &p.fit).is_none())
            {
                if self.try_bind(p, one, &mut busy)?.is_some() {
                    return Ok(true);
                }
                if busy.contains_key(&machine.id) {
                    break;
                }
            }
            Ok(false)
        })()
        .unwrap_or(false)
    }

    /// Placements still waiting, oldest first, each with why it waits
    /// (any user: it shows what is waiting and why).
    pub fn waiting_placements(&self, actor: &Actor) -> Result<Vec<PlacementStatus>> {
        super::policy::check_user(actor)?;
        let machines = self.meta.machines()?;
        let busy = self.busy_machines()?;
        let now = self.clock.now();
        Ok(self
            .queue
            .placements(&[PlacementState::Waiting])?
            .into_iter()
            .map(|p| {
                let reason = Self::wait_reason(&p, now, &machines, &busy);
                PlacementStatus {
                    placement: p,
                    reason: Some(reason),
                }
            })
            .collect())
    }

    /// A placement (its owner, moderators, admins), with why it waits.
    pub fn get_placement(&self, actor: &Actor, id: JobId) -> Result<PlacementStatus> {
        let p = match self.queue.placement(id)? {
            Some(p) if can_cancel_placement(actor, &p) => p,
            _ => return Err(Error::not_found(format!("placement {id}"))),
        };
        let reason = match p.state {
            PlacementState::Waiting => Some(Self::wait_reason(
                &p,
                self.clock.now(),
                &self.meta.machines()?,
                &self.busy_machines()?,
            )),
            _ => None,
        };
        Ok(PlacementStatus {
            placement: p,
            reason,
        })
    }

    /// Cancels a placement still waiting for a machine (its owner,
    /// moderators, admins). Once bound, cancel the job instead.
    pub fn cancel_placement(&self, actor: &Actor, id: JobId) -> Result<Placement> {
        let p = self.get_placement(actor, id)?.placement;
        if p.state == PlacementState::Bound {
            return Err(Error::conflict(format!(
                "placement {id} is already bound to a machine: cancel job {id}"
            )));
        }
        let who = match actor {
            Actor::User { name, .. } => name.clone(),
            _ => "the system".into(),
        };
        self.queue
            .cancel_placement(id, &format!("cancelled by {who}"), self.clock.now())
    }
}
