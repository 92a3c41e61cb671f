//! Lab machines: identity by MAC address, inventory reported by the agent,
//! and lifecycle state.

use std::fmt;
use std::str::FromStr;

use super::{check_name, MachineId, SetupId, Timestamp};
use crate::{Error, Result};

/// A MAC address, normalised to lower-case colon form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// The `52-54-00-12-34-56` form iPXE prints with `:hexhyp`.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

impl FromStr for MacAddress {
    type Err = Error;
    /// Accepts `52:54:00:12:34:56`, `52-54-00-12-34-56`, `5254.0012.3456`,
    /// `525400123456` and the percent-encoded colon form iPXE sends
    /// (`52%3A54%3A...`), in any case. Rejects multicast addresses and
    /// all-zero.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "mac",
                format!(
                    "{s:?} is not a MAC address (expected six hex octets like 52:54:00:12:34:56)"
                ),
            )
        };
        let t = s.trim();
        if t.len() > 64 {
            return Err(bad());
        }
        let decoded = t.replace("%3A", ":").replace("%3a", ":");
        let hex: String = if decoded.len() == 12 {
            decoded.clone()
        } else if decoded.len() == 17 {
            let sep = decoded.as_bytes()[2];
            if !matches!(sep, b':' | b'-') {
                return Err(bad());
            }
            let parts: Vec<&str> = decoded.split(sep as char).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                return Err(bad());
            }
            parts.concat()
        } else if decoded.len() == 14 {
            let parts: Vec<&str> = decoded.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                return Err(bad());
            }
            parts.concat()
        } else {
            return Err(bad());
        };
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        if out == [0; 6] {
            return Err(Error::invalid(
                "mac",
                "00:00:00:00:00:00 is not a NIC address",
            ));
        }
        if out[0] & 1 == 1 {
            return Err(Error::invalid(
                "mac",
                format!("{s:?} is a multicast address, not a NIC address"),
            ));
        }
        Ok(MacAddress(out))
    }
}

/// CPU architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 / amd64.
    X86_64,
    /// AArch64 / arm64.
    Aarch64,
    /// Anything else, by name.
    Other(String),
}

impl Arch {
    /// Canonical name.
    pub fn as_str(&self) -> &str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Other(s) => s,
        }
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        Ok(match l.as_str() {
            "x86_64" | "amd64" | "x86-64" => Arch::X86_64,
            "aarch64" | "arm64" => Arch::Aarch64,
            "" => return Err(Error::invalid("arch", "must not be empty")),
            _ => {
                if l.len() > 32
                    || !l
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(Error::invalid(
                        "arch",
                        format!("{s:?} is not an architecture name"),
                    ));
                }
                Arch::Other(l)
            }
        })
    }
}

/// A disk as the agent found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Kernel name, e.g. `/dev/nvme0n1`.
    pub path: String,
    /// Stable ids (`/dev/disk/by-id` names), if any.
    pub by_id: Vec<String>,
    /// Serial number, if known.
    pub serial: Option<String>,
    /// World Wide Name, if known.
    pub wwn: Option<String>,
    /// Model, if known.
    pub model: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size.
    pub logical_block: u32,
    /// Physical block size.
    pub physical_block: u32,
    /// Spinning disk.
    pub rotational: bool,
    /// Removable media (USB sticks, CD-ROMs): never a target for `first`.
    pub removable: bool,
}

/// A network interface as the agent found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicInfo {
    /// Interface name.
    pub name: String,
    /// Its MAC.
    pub mac: MacAddress,
    /// Link speed in Mbit/s, if known.
    pub speed_mbps: Option<u32>,
}

/// What the agent reports about its machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Disks in kernel enumeration order.
    pub disks: Vec<DiskInfo>,
    /// NICs.
    pub nics: Vec<NicInfo>,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// CPU model string.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: u32,
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineState {
    /// Seen by the server (enrolled by its agent) but not yet accepted by an
    /// admin: BAAS will not write its disks.
    Pending,
    /// Accepted and in service.
    Ready,
    /// Out of service; kept for history.
    Retired,
}

impl MachineState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Pending => "pending",
            MachineState::Ready => "ready",
            MachineState::Retired => "retired",
        }
    }
}

impl FromStr for MachineState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(MachineState::Pending),
            "ready" => Ok(MachineState::Ready),
            "retired" => Ok(MachineState::Retired),
            other => Err(Error::invalid(
                "state",
                format!("{other:?} is not one of pending, ready, retired"),
            )),
        }
    }
}

/// A lab machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Stable id.
    pub id: MachineId,
    /// The MAC it PXE-boots with; unique.
    pub mac: MacAddress,
    /// Name; unique.
    pub name: String,
    /// Architecture.
    pub arch: Arch,
    /// A pool name for scheduling ("any machine in pool X").
    pub pool: Option<String>,
    /// Lifecycle state.
    pub state: MachineState,
    /// Last inventory the agent reported.
    pub inventory: Option<Inventory>,
    /// Last time its agent talked to the server.
    pub last_seen: Option<Timestamp>,
    /// Registration time.
    pub created_at: Timestamp,
    /// How the server switches it and what it returns to between jobs
    /// (set by admins).
    pub boot: MachineBoot,
}

/// How the server reaches a machine's power.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum PowerConfig {
    /// No remote power control: jobs wait for the machine's next boot.
    #[default]
    Manual,
    /// A QEMU VM's QMP socket: `unix:/path` or `tcp:host:port`.
    Qmp {
        /// Where the QMP server listens.
        address: String,
    },
    /// A BMC driven with `ipmitool -I lanplus`.
    Ipmi {
        /// The BMC's host name or address.
        host: String,
        /// The BMC user.
        username: String,
        /// The BMC password (never shown by the API; handed to ipmitool
        /// through its environment, never its command line).
        password: String,
    },
}

impl fmt::Debug for PowerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerConfig::Manual => f.write_str("Manual"),
            PowerConfig::Qmp { address } => write!(f, "Qmp({address})"),
            PowerConfig::Ipmi { host, username, .. } => write!(f, "Ipmi({username}@{host})"),
        }
    }
}

impl PowerConfig {
    /// `manual`, `qmp` or `ipmi`.
    pub fn kind(&self) -> &'static str {
        match self {
            PowerConfig::Manual => "manual",
            PowerConfig::Qmp { .. } => "qmp",
            PowerConfig::Ipmi { .. } => "ipmi",
        }
    }

    /// Checks the fields.
    pub fn check(&self) -> Result<()> {
        let plain = |field: &str, v: &str| -> Result<()> {
            check_name(field, v, 255)?;
            if v.starts_with('-') || v.chars().any(char::is_whitespace) {
                return Err(Error::invalid(
                    field,
                    format!("{v:?} must not start with '-' or contain spaces"),
                ));
            }
            Ok(())
        };
        match self {
            PowerConfig::Manual => Ok(()),
            PowerConfig::Qmp { address } => {
                let ok = address
                    .strip_prefix("unix:")
                    .map(|p| p.starts_with('/'))
                    .or_else(|| {
                        address.strip_prefix("tcp:").map(|hp| {
                            hp.rsplit_once(':')
                                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                        })
                    })
                    .unwrap_or(false);
                if !ok || address.len() > 255 || address.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "address",
                        format!("{address:?} is not unix:/PATH or tcp:HOST:PORT"),
                    ));
                }
                Ok(())
            }
            PowerConfig::Ipmi {
                host,
                username,
                password,
            } => {
                plain("host", host)?;
                plain("username", username)?;
                if password.len() > 255 || password.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "password",
                        "at most 255 characters, no control characters",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// What a machine returns to when a job has ended (after any capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NeutralState {
    /// Leave the disks as the job left them.
    #[default]
    Keep,
    /// Write zeros over what the job wrote.
    Wipe,
    /// Write this setup (an admin's).
    Setup(SetupId),
}

impl fmt::Display for NeutralState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeutralState::Keep => f.write_str("keep"),
            NeutralState::Wipe => f.write_str("wipe"),
            NeutralState::Setup(s) => write!(f, "setup:{s}"),
        }
    }
}

impl FromStr for NeutralState {
    type Err = Error;
    /// `keep`, `wipe` or `setup:<id>`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "keep" => Ok(NeutralState::Keep),
            "wipe" => Ok(NeutralState::Wipe),
            other => match other.strip_prefix("setup:") {
                Some(id) => Ok(NeutralState::Setup(id.parse()?)),
                None => Err(Error::invalid(
                    "neutral",
                    format!("{other:?} is not one of keep, wipe, setup:<id>"),
                )),
            },
        }
    }
}

/// A machine's power access and neutral state, set by admins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineBoot {
    /// How to power-cycle it.
    pub power: PowerConfig,
    /// What it returns to between jobs.
    pub neutral: NeutralState,
}

/// Validates a machine name.
pub fn check_machine_name(name: &str) -> Result<()> {
    check_name("name", name, 64)
}

/// Validates a pool name.
pub fn check_pool(pool: &Option<String>) -> Result<()> {
    match pool {
        Some(p) => check_name("pool", p, 64),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_normalise() {
        let want = "52:54:00:12:34:56";
        for s in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52:54:00:12:34:56 ",
            "525400123456",
            "5254.0012.3456",
            "52%3A54%3A00%3A12%3A34%3A56",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            let m: MacAddress = s.parse().expect(s);
            assert_eq!(m.to_string(), want, "{s}");
        }
        let m: MacAddress = want.parse().expect("valid");
        assert_eq!(m.hyphenated(), "52-54-00-12-34-56");
    }

    #[test]
    fn macs_reject() {
        for s in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:5g",
            "52:54-00:12:34:56",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "[your MAC address]",
            "52::54:00:12:34:56",
        ] {
            assert!(s.parse::<MacAddress>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn arches() {
        assert_eq!("amd64".parse::<Arch>().ok(), Some(Arch::X86_64));
        assert_eq!("Arm64".parse::<Arch>().ok(), Some(Arch::Aarch64));
        assert_eq!(
            "riscv64".parse::<Arch>().ok(),
            Some(Arch::Other("riscv64".into()))
        );
        assert!("x y".parse::<Arch>().is_err());
    }
}
