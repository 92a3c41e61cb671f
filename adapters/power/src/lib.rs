//! `PowerControl` adapters: [`LabPower`] switches each machine the way its
//! admin-set `PowerConfig` says: QEMU's QMP over a unix or TCP socket
//! ([`qmp`]), a BMC through the `ipmitool` command line ([`ipmi`]), or not
//! at all (manual: the job waits for the machine's next boot).
//!
//! Every call is bounded by a timeout; failures come back as the core's
//! `Unavailable` (the controller did not answer) or `Conflict` (no power
//! control for this machine).

use std::time::Duration;

use async_trait::async_trait;
use baas_core::model::{Machine, PowerConfig};
use baas_core::ports::{PowerAction, PowerControl, PowerState};
use baas_core::{Error, Result};

pub mod ipmi;
pub mod qmp;

/// The power control of a lab: dispatches on each machine's `PowerConfig`.
#[derive(Debug, Clone)]
pub struct LabPower {
    /// The `ipmitool` program to run (a name looked up in `PATH`, or a path).
    pub ipmitool: String,
    /// Longest one call may take.
    pub timeout: Duration,
}

impl Default for LabPower {
    fn default() -> Self {
        LabPower {
            ipmitool: "ipmitool".into(),
            timeout: Duration::from_secs(15),
        }
    }
}

fn manual(machine: &Machine) -> Error {
    Error::conflict(format!(
        "machine {} has no power control (manual): it starts its job at its next boot",
        machine.name
    ))
}

#[async_trait]
impl PowerControl for LabPower {
    async fn apply(&self, machine: &Machine, action: PowerAction) -> Result<()> {
        let work = async {
            match &machine.boot.power {
                PowerConfig::Manual => Err(manual(machine)),
                PowerConfig::Qmp { address } => qmp::apply(address, action).await,
                PowerConfig::Ipmi {
                    host,
                    username,
                    password,
                } => ipmi::apply(&self.ipmitool, host, username, password, action)
                    .await
                    .map(drop),
            }
        };
        bounded(self.timeout, &machine.name, work).await
    }

    async fn state(&self, machine: &Machine) -> Result<PowerState> {
        let work = async {
            match &machine.boot.power {
                PowerConfig::Manual => Ok(PowerState::Unknown),
                PowerConfig::Qmp { address } => qmp::state(address).await,
                PowerConfig::Ipmi {
                    host,
                    username,
                    password,
                } => ipmi::state(&self.ipmitool, host, username, password).await,
            }
        };
        bounded(self.timeout, &machine.name, work).await
    }
}

async fn bounded<T>(
    limit: Duration,
    name: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "the power controller of {name} did not answer within {} s",
            limit.as_secs()
        )))
    })
}
