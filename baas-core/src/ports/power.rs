//! Power control of lab machines (QMP for virtual labs, IPMI for real ones).

use async_trait::async_trait;

use crate::model::Machine;
use crate::Result;

/// What to do to a machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Ask the OS to shut down (ACPI power button).
    SoftOff,
    /// Hard reset (power cycle).
    Cycle,
}

/// What a machine's power is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Running.
    On,
    /// Off.
    Off,
    /// The adapter cannot tell.
    Unknown,
}

/// Switches machines on and off. Calls wait on remote controllers, so they
/// are async and must be bounded in time by the adapter.
#[async_trait]
pub trait PowerControl: Send + Sync + std::fmt::Debug {
    /// Applies `action` to `machine`.
    async fn apply(&self, machine: &Machine, action: PowerAction) -> Result<()>;

    /// Reads `machine`'s power state.
    async fn state(&self, machine: &Machine) -> Result<PowerState>;
}
