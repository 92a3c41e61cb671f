//! Machines: registration, inventory, acceptance and retirement.

use super::policy::{check_agent_for, check_moderator};
use super::{Actor, Baas};
use crate::model::*;
use crate::{Error, Result};

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
        Ok(m)
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
        Ok(m)
    }
}
