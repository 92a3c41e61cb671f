//! Machines: registration, inventory, acceptance and retirement; power
//! actions by hand and the machine's own history.

use super::policy::{check_agent_for, check_moderator, check_power};
use super::{Actor, Baas};
use crate::model::*;
use crate::ports::{PowerAction, PowerState};
use crate::{Error, Result};

/// Contact with a machine is written down at most this often (every agent
/// call authenticates; one write per call would be one fsync per chunk
/// request).
pub const CONTACT_EVERY_MS: i64 = 10_000;

/// Whether a machine is there, as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Heard from recently, or not expected to talk: idle machines boot
    /// their own disk and a user's OS runs no agent.
    Online,
    /// Expected to talk (its agent works on a job, it enrolls, or the
    /// server power-cycled it to boot) and silent for longer than
    /// `Config::offline_after_ms`.
    Silent,
    /// Its power adapter says it is off.
    PoweredOff,
}

impl Presence {
    /// Whether the dashboard should say `offline`.
    pub fn is_offline(self) -> bool {
        self != Presence::Online
    }
}

/// Lines of a machine's history a page shows.
pub const MACHINE_HISTORY: u32 = 50;

/// The words for a power action in a machine's history.
fn action_words(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "power on",
        PowerAction::Off => "power off",
        PowerAction::SoftOff => "shut down (ACPI)",
        PowerAction::Cycle => "power cycle",
    }
}

/// A machine to register.
#[derive(Debug, Clone)]
pub struct NewMachine {
    /// The MAC it PXE-boots with.
    pub mac: MacAddress,
    /// Name; defaults to the MAC in hyphen form.
    pub name: Option<String>,
    /// Architecture.
    pub arch: Arch,
    /// Pool.
    pub pool: Option<String>,
}

/// Changes to a machine; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct MachinePatch {
    /// New name.
    pub name: Option<String>,
    /// New architecture.
    pub arch: Option<Arch>,
    /// New pool (`Some(None)` clears it).
    pub pool: Option<Option<String>>,
    /// New state (accept a pending machine, retire, bring back).
    pub state: Option<MachineState>,
}

impl Baas {
    /// Registers a machine, ready for jobs (moderators and admins).
    pub fn register_machine(&self, actor: &Actor, new: NewMachine) -> Result<Machine> {
        check_moderator(actor, "register machines")?;
        self.insert_new_machine(new, MachineState::Ready)
    }

    pub(crate) fn insert_new_machine(
        &self,
        new: NewMachine,
        state: MachineState,
    ) -> Result<Machine> {
        let name = new.name.unwrap_or_else(|| new.mac.hyphenated());
        check_machine_name(&name)?;
        check_pool(&new.pool)?;
        let machine = Machine {
            id: MachineId(self.entropy.uuid()),
            mac: new.mac,
            name,
            arch: new.arch,
            pool: new.pool,
            state,
            inventory: None,
            last_seen: None,
            created_at: self.clock.now(),
            boot: MachineBoot::default(),
        };
        self.meta.insert_machine(&machine)?;
        Ok(machine)
    }

    /// Every machine (any user: they choose where to run).
    pub fn list_machines(&self, actor: &Actor) -> Result<Vec<Machine>> {
        if let Actor::Agent { .. } = actor {
            return Err(Error::forbidden(
                "machine credentials may only be used by the agent",
            ));
        }
        self.meta.machines()
    }

    /// A machine by id.
    pub fn get_machine(&self, actor: &Actor, id: MachineId) -> Result<Machine> {
        if let Actor::Agent { machine } = actor {
            if *machine != id {
                return Err(Error::not_found(format!("machine {id}")));
            }
        }
        self.meta
            .machine(id)?
            .ok_or_else(|| Error::not_found(format!("machine {id}")))
    }

    /// A machine by MAC.
    pub fn get_machine_by_mac(&self, actor: &Actor, mac: MacAddress) -> Result<Machine> {
        let m = self
            .meta
            .machine_by_mac(mac)?
            .ok_or_else(|| Error::not_found(format!("machine {mac}")))?;
        if let Actor::Agent { machine } = actor {
            if *machine != m.id {
                return Err(Error::not_found(format!("machine {mac}")));
            }
        }
        Ok(m)
    }

    /// Changes a machine (moderators and admins). Retiring a machine with
    /// an active job is refused.
    pub fn update_machine(
        &self,
        actor: &Actor,
        id: MachineId,
        patch: MachinePatch,
    ) -> Result<Machine> {
        check_moderator(actor, "change machines")?;
        let mut m = self.get_machine(actor, id)?;
        if let Some(name) = patch.name {
            check_machine_name(&name)?;
            m.name = name;
        }
        if let Some(arch) = patch.arch {
            m.arch = arch;
        }
        if let Some(pool) = patch.pool {
            check_pool(&pool)?;
            m.pool = pool;
        }
        if let Some(state) = patch.state {
            if state == MachineState::Retired && self.queue.active_job(id)?.is_some() {
                return Err(Error::conflict(format!(
                    "machine {} has an active job; cancel it before retiring the machine",
                    m.name
                )));
            }
            m.state = state;
        }
        self.meta.update_machine(&m)?;
        self.auth_cache.invalidate();
        self.idle.changed();
        Ok(m)
    }

    /// Checks a power action asked for by hand (moderators and admins) and
    /// returns the machine: the shell applies it with its `PowerControl`
    /// (async, on the machine's configured adapter) and then records the
    /// outcome with [`Baas::power_applied`]. A machine without a power
    /// adapter (manual) is `Conflict`: nothing could switch it.
    pub fn request_power(
        &self,
        actor: &Actor,
        id: MachineId,
        action: PowerAction,
    ) -> Result<Machine> {
        check_power(actor)?;
        let m = self.get_machine(actor, id)?;
        if m.boot.power == PowerConfig::Manual {
            return Err(Error::conflict(format!(
                "machine {} has no power adapter configured (manual power control), \
                 so it cannot {}: configure QMP or IPMI in its boot configuration",
                m.name,
                action_words(action)
            )));
        }
        Ok(m)
    }

    /// Records in the machine's history how a power action asked for by
    /// hand went (`error` when the adapter failed).
    pub fn power_applied(
        &self,
        actor: &Actor,
        machine: &Machine,
        action: PowerAction,
        error: Option<&str>,
    ) -> Result<()> {
        check_power(actor)?;
        let who = match actor {
            Actor::User { name, .. } => name.as_str(),
            _ => "the server",
        };
        let how = machine.boot.power.kind();
        let text = match error {
            None => format!("{} by {who} ({how})", action_words(action)),
            Some(e) => format!("{} by {who} failed ({how}): {e}", action_words(action)),
        };
        self.meta
            .append_machine_event(machine.id, &self.event("power", text))
    }

    /// A machine's own history (power actions), newest first: anyone who
    /// may see the machine.
    pub fn machine_history(&self, actor: &Actor, id: MachineId) -> Result<Vec<JobEvent>> {
        if let Actor::Agent { .. } = actor {
            return Err(Error::forbidden(
                "machine credentials may only be used by the agent",
            ));
        }
        self.get_machine(actor, id)?;
        self.meta.machine_events(id, MACHINE_HISTORY)
    }

    /// Whether `m` is there (see [`Presence`]), from its last contact (boot
    /// decisions and agent calls), its jobs (`jobs`: its queue, the active
    /// job included) and what its power adapter says (`power`;
    /// `Unknown` when it has none or it was not asked). Pure: the time
    /// comes from the clock port.
    pub fn machine_presence(&self, m: &Machine, jobs: &[Job], power: PowerState) -> Presence {
        if m.state == MachineState::Retired {
            return Presence::Online;
        }
        if power == PowerState::Off {
            return Presence::PoweredOff;
        }
        let now = self.clock.now();
        let limit = self.config.offline_after_ms;
        let heard_since = |t: Timestamp| m.last_seen.is_some_and(|s| s >= t);
        // Nothing heard since the later of its last contact and `since`
        // (when contact became due), for longer than the limit.
        let silent = |since: Option<Timestamp>| {
            m.last_seen
                .max(since)
                .is_none_or(|t| now.millis().saturating_sub(t.millis()) > limit)
        };
        // Silent since the server cycled its power to make it boot, for
        // longer than the limit.
        let cycled_and_silent = |j: &Job| {
            j.session
                .cycled_at
                .is_some_and(|c| !heard_since(c) && now.millis().saturating_sub(c.millis()) > limit)
        };
        let active = jobs
            .iter()
            .find(|j| j.state.is_active() && j.state != JobState::Queued);
        let expected_silent = match (m.state, active) {
            (MachineState::Pending, _) => silent(None),
            (_, Some(j)) => match j.state {
                JobState::Provisioning | JobState::Capturing => silent(j.started_at),
                // The user's OS runs no agent: silence says nothing, unless
                // the session ended and the server cycled it back.
                JobState::Running if j.session.ended(now) => cycled_and_silent(j),
                _ => false,
            },
            (_, None) => jobs
                .iter()
                .find(|j| j.state == JobState::Queued)
                .is_some_and(cycled_and_silent),
        };
        if expected_silent {
            Presence::Silent
        } else {
            Presence::Online
        }
    }

    /// Writes down contact with `m` now (its boot, or its agent's call),
    /// at most every [`CONTACT_EVERY_MS`].
    pub(crate) fn record_contact(&self, m: &Machine) -> Result<()> {
        let now = self.clock.now();
        if m.last_seen
            .is_some_and(|t| now.millis().saturating_sub(t.millis()) < CONTACT_EVERY_MS)
        {
            return Ok(());
        }
        self.meta.touch_machine(m.id, now)
    }

    /// Records what the machine's agent found (the agent itself, or a
    /// moderator).
    pub fn report_inventory(
        &self,
        actor: &Actor,
        id: MachineId,
        inventory: Inventory,
    ) -> Result<Machine> {
        check_agent_for(actor, id)?;
        let mut m = self.get_machine(actor, id)?;
        if inventory.disks.len() > 256 || inventory.nics.len() > 256 {
            return Err(Error::invalid(
                "inventory",
                "at most 256 disks and 256 NICs",
            ));
        }
        m.inventory = Some(inventory);
        m.last_seen = Some(self.clock.now());
        self.meta.update_machine(&m)?;
        // Placements that wait for a disk this big may fit it now.
        self.idle.changed();
        Ok(m)
    }
}
