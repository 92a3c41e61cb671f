//! The BAAS agent: the program the management OS runs on every boot of a
//! lab machine. It learns the server, its MAC and a credential from the
//! kernel command line ([`config`]), checks that MAC is one of its NICs,
//! reports the machine's inventory ([`system`]), then takes jobs (long
//! polling while there are none) and runs each with the core's
//! `flashing::run_job` over the HTTP link and memory-mapped disks. A
//! provisioning step that succeeds ends in a reboot into the user's OS.
//!
//! Architecture invariant: the agent decides nothing about images or jobs;
//! the algorithms are the core's (`baas_core::flashing`), the wire is
//! `baas-client-http`'s, the disks are `baas-flash-mmap`'s. What is here
//! is the machine: its kernel's view of disks and NICs, its console, its
//! reboot.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use baas_core::flashing::{run_job, FlashOptions};
use baas_core::model::{DiskSelector, JobState};
use baas_core::ports::{AgentLink, BlockDevice};
use baas_flash_mmap::MmapBlockDevice;
use tracing::{error, info, warn};

pub mod config;
pub mod console;
pub mod logship;
pub mod reporter;
pub mod system;

use config::Config;
use console::Console;
use logship::LogShipper;
use system::System;

/// How the agent behaves (everything that is not identity).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Exit after one job instead of waiting for the next.
    pub once: bool,
    /// The command that reboots the machine after a successful flash;
    /// `None` exits instead (tests).
    pub reboot: Option<Vec<String>>,
    /// How long one long poll for a job waits.
    pub poll: Duration,
    /// The flashing tunables.
    pub flash: FlashOptions,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A flash succeeded and the reboot command ran.
    Rebooted,
    /// A flash succeeded and rebooting is off: the session ends here.
    Flashed,
    /// `once`: one job was run.
    DoneOnce,
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    /// The link to the server.
    pub link: Arc<dyn AgentLink>,
    /// The machine.
    pub system: System,
    /// Identity and disk overrides.
    pub config: Config,
    /// Behaviour.
    pub options: RunOptions,
    /// The console.
    pub console: Console,
    /// Log shipping (its current job is set while a job runs).
    pub logs: Arc<LogShipper>,
}

impl Agent {
    /// Opens the device `selector` points at: a disk map entry from the
    /// config, else the kernel's disk or partition.
    pub fn open(&self, selector: &DiskSelector) -> baas_core::Result<Arc<dyn BlockDevice>> {
        let path = match self.config.disks.iter().find(|(s, _)| s == selector) {
            Some((_, p)) => p.clone(),
            None => {
                let t = self.system.resolve(selector)?;
                info!(disk = %selector, device = %t.name, size = t.size, "resolved the target disk");
                t.path
            }
        };
        let device = MmapBlockDevice::open(&path)?;
        info!(disk = %selector, path = %path.display(), size = device.size(), "opened");
        Ok(Arc::new(device))
    }

    /// Checks the identity and reports the inventory, retrying while the
    /// server is unavailable.
    pub fn register(&self) -> anyhow::Result<()> {
        let inventory = self
            .system
            .inventory()
            .context("reading the machine's inventory")?;
        if !inventory.nics.iter().any(|n| n.mac == self.config.mac) {
            bail!(
                "the MAC {} given to the agent is not one of this machine's NICs ({})",
                self.config.mac,
                inventory
                    .nics
                    .iter()
                    .map(|n| format!("{} {}", n.name, n.mac))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        info!(
            mac = %self.config.mac,
            disks = inventory.disks.len(),
            nics = inventory.nics.len(),
            memory = inventory.memory_bytes,
            cpu = %inventory.cpu_model,
            "reporting the inventory"
        );
        let m = self.patiently("reporting the inventory", || {
            self.link.report_inventory(&inventory)
        })?;
        info!(machine = %m.name, state = m.state.as_str(), "registered");
        Ok(())
    }

    /// Calls `f` until it succeeds or fails with an error retrying cannot
    /// fix; the link has retried each call already, so this waits longer.
    fn patiently<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> baas_core::Result<T>,
    ) -> anyhow::Result<T> {
        let mut pause = Duration::from_secs(1);
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => {
                    warn!(
                        "{what}: {}; trying again in {} s",
                        e.message(),
                        pause.as_secs()
                    );
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
            }
        }
    }

    /// The main loop: take a job (waiting while there is none), run it,
    /// and after a successful flash reboot into the user's OS.
    pub fn run(&self) -> anyhow::Result<Ending> {
        self.register()?;
        let current = self.logs.current();
        loop {
            let poll_ms = self.options.poll.as_millis() as u64;
            let Some(job) = self.patiently("asking for a job", || self.link.next_job(poll_ms))?
            else {
                continue;
            };
            current.set(Some(job.id));
            info!(
                job = %job.id,
                state = job.state.as_str(),
                entries = job.entries.len(),
                "working on a job"
            );
            let open = |s: &DiskSelector| self.open(s);
            let mut show = |p: &baas_core::model::Progress| self.console.progress(p);
            let result = run_job(&*self.link, &job, &open, &self.options.flash, &mut show);
            self.console.done();
            match &result {
                Ok(()) => info!(job = %job.id, "step done"),
                Err(e) => error!(job = %job.id, "the job failed: {}", e.detailed()),
            }
            current.set(None);
            if result.is_ok() && job.state == JobState::Provisioning {
                return self.reboot();
            }
            // After a capture the machine reboots too, so that the server
            // decides its next boot (a neutral restore, the next job, or
            // its local disk).
            if result.is_ok() && self.options.reboot.is_some() && !self.options.once {
                return self.reboot();
            }
            if self.options.once {
                self.logs.flush(Duration::from_secs(5));
                return match result {
                    Ok(()) => Ok(Ending::DoneOnce),
                    Err(e) => Err(anyhow::Error::new(e).context(format!("job {}", job.id))),
                };
            }
        }
    }

    fn reboot(&self) -> anyhow::Result<Ending> {
        let Some(cmd) = &self.options.reboot else {
            info!("flashed; rebooting is off, so the agent stops here");
            self.logs.flush(Duration::from_secs(5));
            return Ok(Ending::Flashed);
        };
        info!(command = %cmd.join(" "), "flashed; rebooting into the user's OS");
        self.logs.flush(Duration::from_secs(5));
        let (prog, args) = cmd.split_first().context("the reboot command is empty")?;
        let status = std::process::Command::new(prog)
            .args(args)
            .status()
            .with_context(|| format!("running the reboot command {prog:?}"))?;
        if !status.success() {
            bail!("the reboot command {:?} failed: {status}", cmd.join(" "));
        }
        Ok(Ending::Rebooted)
    }
}
