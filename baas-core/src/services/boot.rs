//! The boot path: what a machine that PXE-boots should boot now (the
//! management OS, with a credential for this boot only, or its local disk),
//! enrollment of unknown machines, the user's session (reservation and
//! release), and which machines the server should power-cycle.
//!
//! The boot decision is asked anonymously (firmware carries no secret); it
//! reveals nothing but "boot this" and hands a credential only to a machine
//! that has work to do. That credential authenticates as the machine's
//! agent ([`Actor::Agent`]): it reads only that machine's active job, it
//! expires after [`Config::boot_token_ttl_ms`](super::Config), and the
//! machine's next boot decision revokes it (whatever that boot does, the
//! agent that held it is gone, so its long poll must not take a job).

use super::policy::{can_cancel_job, check_admin, check_moderator};
use super::{Actor, Baas};
use crate::model::*;
use crate::ports::{JobFilter, PowerAction};
use crate::{Error, Result};

/// What to do with machines whose MAC the server does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnrollPolicy {
    /// Boot them from their local disk; BAAS never touches them.
    #[default]
    Ignore,
    /// Register them as `pending` and boot the management OS, whose agent
    /// reports the inventory; an admin then accepts (or retires) them.
    Enroll,
}

impl EnrollPolicy {
    /// The name, as stored and shown: `ignore` or `enroll`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollPolicy::Ignore => "ignore",
            EnrollPolicy::Enroll => "enroll",
        }
    }
}

/// The name of the per-boot agent credentials: each boot decision revokes
/// the machine's earlier ones.
pub const BOOT_TOKEN_NAME: &str = "boot";

/// The settings key of the enrollment policy.
const ENROLL_KEY: &str = "unknown_machines";

/// The server settings an admin changes at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    /// What happens to machines whose MAC the server does not know.
    pub unknown_machines: EnrollPolicy,
}

/// A change to [`AdminSettings`]; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminSettingsPatch {
    /// The new enrollment policy.
    pub unknown_machines: Option<EnrollPolicy>,
}

impl std::str::FromStr for EnrollPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "ignore" => Ok(EnrollPolicy::Ignore),
            "enroll" => Ok(EnrollPolicy::Enroll),
            other => Err(Error::invalid(
                "unknown_machines",
                format!("{other:?} is not one of enroll, ignore"),
            )),
        }
    }
}

/// What a booting machine should boot.
#[derive(Debug, Clone)]
pub enum BootAction {
    /// The management OS, whose agent authenticates with `secret`.
    ManagementOs {
        /// The machine (created `pending` when it enrolled just now).
        machine: Box<Machine>,
        /// The agent credential for this boot (shown only this once).
        secret: String,
        /// Why, for the console and the logs.
        reason: String,
    },
    /// The machine's local disk.
    LocalDisk {
        /// Why, for the console and the logs.
        reason: String,
    },
}

/// A power cycle the server should do now.
#[derive(Debug, Clone)]
pub struct PowerRequest {
    /// The machine (its `boot.power` says how).
    pub machine: Machine,
    /// The job it is for.
    pub job: JobId,
    /// What to do.
    pub action: PowerAction,
    /// Why.
    pub reason: String,
}

impl Baas {
    /// Stores the configured settings as the initial ones unless an admin
    /// set them already (the server, at start: so a flag is the default of
    /// a new installation, and what the admin chose later survives
    /// restarts).
    pub fn init_settings(&self, actor: &Actor) -> Result<AdminSettings> {
        if *actor != Actor::System {
            return Err(Error::forbidden(
                "only the server itself initialises settings",
            ));
        }
        match self
            .meta
            .init_setting(ENROLL_KEY, self.config.enroll.as_str())
        {
            Ok(_) => {}
            // Another server initialised it at the same moment.
            Err(e) if e.kind() == crate::ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
        self.current_settings()
    }

    /// The settings in force: what an admin stored, else the configuration.
    fn current_settings(&self) -> Result<AdminSettings> {
        let unknown_machines = match self.meta.setting(ENROLL_KEY)? {
            Some(v) => v.parse().map_err(|e: Error| {
                Error::internal(format!("the stored setting {ENROLL_KEY} is {v:?}")).with_source(e)
            })?,
            None => self.config.enroll,
        };
        Ok(AdminSettings { unknown_machines })
    }

    /// The server settings an admin changes at runtime (admins).
    pub fn admin_settings(&self, actor: &Actor) -> Result<AdminSettings> {
        check_admin(actor, "read the server settings")?;
        self.current_settings()
    }

    /// Changes server settings (admins); effective at once (the next boot
    /// decision uses the new enrollment policy), on every server sharing
    /// the database.
    pub fn set_admin_settings(
        &self,
        actor: &Actor,
        patch: AdminSettingsPatch,
    ) -> Result<AdminSettings> {
        check_admin(actor, "change the server settings")?;
        if let Some(p) = patch.unknown_machines {
            self.meta.set_setting(ENROLL_KEY, p.as_str())?;
        }
        self.current_settings()
    }

    /// Decides what the machine with `mac` boots now. Anonymous: see the
    /// module documentation. Unknown machines enroll or are ignored, as the
    /// admin's setting says (see [`Baas::set_admin_settings`]; initially
    /// [`Config::enroll`](super::Config)); `arch` is what the firmware
    /// reported, used when a machine enrolls.
    pub fn boot(&self, mac: MacAddress, arch: Option<Arch>) -> Result<BootAction> {
        let unknown = |reason: String| Ok(BootAction::LocalDisk { reason });
        let machine = match self.meta.machine_by_mac(mac)? {
            Some(m) => m,
            None => match self.current_settings()?.unknown_machines {
                EnrollPolicy::Ignore => {
                    return unknown(format!("{mac} is not a BAAS machine (enrollment is off)"))
                }
                EnrollPolicy::Enroll => {
                    let new = super::NewMachine {
                        mac,
                        name: None,
                        arch: arch.unwrap_or(Arch::X86_64),
                        pool: None,
                    };
                    match self.insert_new_machine(new, MachineState::Pending) {
                        Ok(m) => m,
                        // Two boots of one machine racing: the other enrolled it.
                        Err(e) if e.kind() == crate::ErrorKind::Conflict => self
                            .meta
                            .machine_by_mac(mac)?
                            .ok_or_else(|| Error::internal("an enrolled machine vanished"))?,
                        Err(e) => return Err(e),
                    }
                }
            },
        };
        self.record_contact(&machine)?;
        let now = self.clock.now();
        // Whatever it boots, the agents of its earlier boots are dead: their
        // credentials stop working now.
        let local = |reason: String| {
            self.meta
                .rotate_machine_tokens(machine.id, BOOT_TOKEN_NAME, now, None)?;
            self.auth_cache.invalidate();
            Ok(BootAction::LocalDisk { reason })
        };
        let reason = match machine.state {
            MachineState::Retired => {
                return local(format!("{} is retired", machine.name));
            }
            MachineState::Pending => format!(
                "{} is enrolling: the agent reports its inventory and waits for an admin",
                machine.name
            ),
            MachineState::Ready => match self.queue.active_job(machine.id)? {
                Some(job) if job.state == JobState::Running && !job.session.ended(now) => {
                    let until = job
                        .session
                        .ends_at
                        .map_or("until released".to_string(), |t| {
                            format!("until {} ms after the epoch", t.millis())
                        });
                    self.queue.append_event(
                        job.id,
                        &self.event("boot", "booting the user's OS from the local disk"),
                    )?;
                    return local(format!("job {} runs {until}", job.id));
                }
                Some(job) => {
                    let why = match job.state {
                        JobState::Provisioning => "flashing (again, after a reset)",
                        JobState::Running => "the session has ended: capturing and cleaning up",
                        _ => "capturing",
                    };
                    self.queue.append_event(
                        job.id,
                        &self.event("boot", format!("booting the management OS: {why}")),
                    )?;
                    format!("job {}: {why}", job.id)
                }
                None => {
                    let filter = JobFilter {
                        machine: Some(machine.id),
                        states: vec![JobState::Queued],
                        limit: None,
                        ..JobFilter::default()
                    };
                    let mut queued = self.queue.jobs(&filter)?;
                    // An idle machine booting: a waiting placement may fit.
                    if queued.is_empty() && self.bind_waiting_to(&machine) {
                        queued = self.queue.jobs(&filter)?;
                    }
                    match queued.first() {
                        Some(job) if !job.session.due(now) => {
                            return local(format!(
                                "job {} starts at {} ms after the epoch",
                                job.id,
                                job.session.not_before.map_or(0, Timestamp::millis)
                            ))
                        }
                        Some(job) => {
                            self.queue.append_event(
                                job.id,
                                &self.event("boot", "booting the management OS to flash"),
                            )?;
                            format!("job {} is next", job.id)
                        }
                        None => return local(format!("nothing to do for {}", machine.name)),
                    }
                }
            },
        };
        let secret = self.new_secret();
        let token = Token {
            id: TokenId(self.entropy.uuid()),
            subject: TokenSubject::Machine(machine.id),
            name: BOOT_TOKEN_NAME.into(),
            secret_hash: super::auth::hash_secret(&secret),
            created_at: now,
            expires_at: Some(now.plus_millis(self.config.boot_token_ttl_ms.max(1))),
            revoked_at: None,
        };
        self.meta
            .rotate_machine_tokens(machine.id, BOOT_TOKEN_NAME, now, Some(&token))?;
        self.auth_cache.invalidate();
        Ok(BootAction::ManagementOs {
            machine: Box::new(machine),
            secret,
            reason,
        })
    }

    /// Accepts a pending machine into service (moderators and admins).
    pub fn accept_machine(&self, actor: &Actor, id: MachineId) -> Result<Machine> {
        check_moderator(actor, "accept machines")?;
        let m = self.get_machine(actor, id)?;
        if m.state == MachineState::Ready {
            return Ok(m);
        }
        let m = self.update_machine(
            actor,
            id,
            super::MachinePatch {
                state: Some(MachineState::Ready),
                ..Default::default()
            },
        )?;
        self.bind_waiting_now();
        Ok(m)
    }

    /// Takes a machine out of service (moderators and admins); refused
    /// while it has an active job.
    pub fn retire_machine(&self, actor: &Actor, id: MachineId) -> Result<Machine> {
        self.update_machine(
            actor,
            id,
            super::MachinePatch {
                state: Some(MachineState::Retired),
                ..Default::default()
            },
        )
    }

    /// Sets how the server reaches a machine's power and what the machine
    /// returns to between jobs (moderators and admins). A neutral setup
    /// must be one the caller may use.
    pub fn set_machine_boot(
        &self,
        actor: &Actor,
        id: MachineId,
        boot: MachineBoot,
    ) -> Result<Machine> {
        check_moderator(actor, "change how machines are powered and reset")?;
        boot.power.check()?;
        if let NeutralState::Setup(s) = boot.neutral {
            match self.meta.setup(s)? {
                Some(setup) if super::policy::can_access_setup(actor, &setup) => {}
                _ => return Err(Error::not_found(format!("setup {s}"))),
            }
        }
        let mut m = self.get_machine(actor, id)?;
        m.boot = boot;
        self.meta.update_machine(&m)?;
        Ok(m)
    }

    /// Ends the user's session now (the job's owner, moderators, admins):
    /// the machine's next boot goes to the management OS, which captures
    /// and cleans up. With power control the server power-cycles it.
    pub fn release_job(&self, actor: &Actor, id: JobId) -> Result<Job> {
        let mut job = self.get_job(actor, id)?;
        if !can_cancel_job(actor, &job) {
            return Err(Error::forbidden(format!(
                "only the owner of job {id} or a moderator may release it"
            )));
        }
        if job.state != JobState::Running {
            return Err(Error::conflict(format!(
                "job {id} is {}; only a running job can be released (cancel a queued one)",
                job.state
            )));
        }
        let now = self.clock.now();
        if job.session.ended(now) {
            return Ok(job);
        }
        job.session.ends_at = Some(now);
        self.queue.set_session(id, &job.session)?;
        let who = match actor {
            Actor::User { name, .. } => name.clone(),
            _ => "the system".into(),
        };
        self.queue.append_event(
            id,
            &self.event("released", format!("session released by {who}")),
        )?;
        Ok(job)
    }

    /// After `job` ended (succeeded, failed or cancelled once it had touched
    /// the disks): unless the machine keeps its disks as they are, or other
    /// jobs wait (they overwrite the disks anyway), queues the machine's
    /// return to its neutral state: a *restore job*, whose session has zero
    /// length, so it ends as soon as it is flashed. `wipe` writes each
    /// entry's blank version 0 (zeros over what the job wrote); `setup`
    /// writes the admin's setup. Returns the restore job.
    pub(crate) fn return_to_neutral(&self, job: &Job) -> Result<Option<Job>> {
        if job.is_restore() || job.started_at.is_none() {
            return Ok(None);
        }
        let Some(m) = self.meta.machine(job.machine)? else {
            return Ok(None);
        };
        if m.state != MachineState::Ready || m.boot.neutral == NeutralState::Keep {
            return Ok(None);
        }
        let waiting = self.queue.jobs(&JobFilter {
            machine: Some(m.id),
            states: vec![JobState::Queued],
            ..JobFilter::default()
        })?;
        if !waiting.is_empty() {
            self.queue.append_event(
                job.id,
                &self.event(
                    "neutral",
                    "other jobs wait for the machine: no return to the neutral state",
                ),
            )?;
            return Ok(None);
        }
        let (owner, setup, entries, what) = match m.boot.neutral {
            NeutralState::Keep => return Ok(None),
            NeutralState::Wipe => (
                job.owner,
                None,
                job.entries
                    .iter()
                    .map(|e| JobEntry {
                        version: 0,
                        capture: false,
                        ..e.clone()
                    })
                    .collect::<Vec<_>>(),
                "wipe the disks (blank version 0 of each image)".to_string(),
            ),
            NeutralState::Setup(id) => {
                let Some(setup) = self.meta.setup(id)? else {
                    self.queue.append_event(
                        job.id,
                        &self.event(
                            "neutral",
                            format!("the neutral setup {id} no longer exists: disks kept"),
                        ),
                    )?;
                    return Ok(None);
                };
                let entries = setup
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        self.resolve_entry(&Actor::System, i, e).map(|mut r| {
                            r.capture = false;
                            r
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                (
                    setup.owner,
                    Some(id),
                    entries,
                    format!("restore the neutral setup {:?}", setup.name),
                )
            }
        };
        if entries.is_empty() {
            return Ok(None);
        }
        let restore = Job::queued(
            JobId(self.entropy.uuid()),
            m.id,
            owner,
            setup,
            entries,
            self.clock.now(),
            Session {
                hold_ms: Some(0),
                ..Session::default()
            },
        );
        let restore = self.queue.enqueue(&restore)?;
        self.queue.append_event(
            job.id,
            &self.event("neutral", format!("queued job {} to {what}", restore.id)),
        )?;
        Ok(Some(restore))
    }

    /// Starts the session clock of a job that just reached `running`.
    pub(crate) fn start_session(&self, job: &Job) -> Result<()> {
        if job.is_restore() {
            let event = self.event("succeeded", "the machine is back in its neutral state");
            self.queue.transition(
                job.id,
                &[JobState::Running],
                JobState::Succeeded,
                None,
                &event,
            )?;
            self.bind_waiting_now();
            return Ok(());
        }
        let max = self.config.max_hold_ms;
        let hold = job.session.hold_ms.unwrap_or(max).min(max);
        let mut session = job.session;
        let ends = self
            .clock
            .now()
            .plus_millis(hold.min(i64::MAX as u64) as i64);
        session.ends_at = Some(ends);
        self.queue.set_session(job.id, &session)?;
        self.queue.append_event(
            job.id,
            &self.event(
                "session",
                format!(
                    "the user's session runs for at most {} s (until released)",
                    hold / 1000
                ),
            ),
        )
    }

    /// The power cycles due now (the system; the server runs this every
    /// few seconds and applies them with its `PowerControl`): a machine
    /// with power control is cycled once to start its next job, and once
    /// when the session of its running job has ended. Each is recorded in
    /// the job's timeline. Machines without power control wait for their
    /// next boot.
    pub fn power_due(&self, actor: &Actor) -> Result<Vec<PowerRequest>> {
        if *actor != Actor::System {
            return Err(Error::forbidden("only the server itself cycles power"));
        }
        let now = self.clock.now();
        let mut out = Vec::new();
        for m in self.meta.machines()? {
            if m.state != MachineState::Ready || m.boot.power == PowerConfig::Manual {
                continue;
            }
            let (job, reason) = match self.queue.active_job(m.id)? {
                Some(j)
                    if j.state == JobState::Running
                        && j.session.ended(now)
                        && j.session
                            .cycled_at
                            .is_none_or(|c| Some(c) < j.session.ends_at) =>
                {
                    (
                        j,
                        "the session has ended: power-cycling into the management OS",
                    )
                }
                Some(_) => continue,
                None => {
                    let queued = self.queue.jobs(&JobFilter {
                        machine: Some(m.id),
                        states: vec![JobState::Queued],
                        ..JobFilter::default()
                    })?;
                    match queued.into_iter().next() {
                        Some(j) if j.session.cycled_at.is_none() && j.session.due(now) => {
                            (j, "power-cycling the machine to start the job")
                        }
                        _ => continue,
                    }
                }
            };
            let mut session = job.session;
            session.cycled_at = Some(now);
            self.queue.set_session(job.id, &session)?;
            self.queue
                .append_event(job.id, &self.event("power", reason))?;
            out.push(PowerRequest {
                machine: m,
                job: job.id,
                action: PowerAction::Cycle,
                reason: reason.to_string(),
            });
        }
        Ok(out)
    }

    /// Records the outcome of a power request in its job's timeline.
    pub fn power_done(
        &self,
        actor: &Actor,
        request: &PowerRequest,
        error: Option<&str>,
    ) -> Result<()> {
        if *actor != Actor::System {
            return Err(Error::forbidden("only the server itself cycles power"));
        }
        let text = match error {
            None => format!(
                "power cycle of {} done ({})",
                request.machine.name,
                request.machine.boot.power.kind()
            ),
            Some(e) => format!(
                "power cycle of {} failed ({}): {e}; the job waits for the machine's next boot",
                request.machine.name,
                request.machine.boot.power.kind()
            ),
        };
        self.queue
            .append_event(request.job, &self.event("power", text))
    }
}
