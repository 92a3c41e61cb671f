//! IPMI through the `ipmitool` command line (`-I lanplus`): the password
//! goes through the environment (`-E` reads `IPMI_PASSWORD`), never the
//! command line, where any user of the host could read it.

use baas_core::ports::{PowerAction, PowerState};
use baas_core::{Error, Result};

/// The `chassis power` subcommand for `action`.
pub fn subcommand(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::SoftOff => "soft",
        PowerAction::Cycle => "cycle",
    }
}

/// The arguments `ipmitool` gets for `chassis power <what>`.
pub fn argv(host: &str, username: &str, what: &str) -> Vec<String> {
    [
        "-I", "lanplus", "-H", host, "-U", username, "-E", "chassis", "power", what,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run(
    program: &str,
    host: &str,
    username: &str,
    password: &str,
    what: &str,
) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(argv(host, username, what))
        .env("IPMI_PASSWORD", password)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::unavailable(format!("cannot run {program}")).with_source(e))?;
    if !out.status.success() {
        return Err(Error::unavailable(format!(
            "{program} chassis power {what} on {host} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `action` through the BMC at `host`; returns ipmitool's output.
pub async fn apply(
    program: &str,
    host: &str,
    username: &str,
    password: &str,
    action: PowerAction,
) -> Result<String> {
    run(program, host, username, password, subcommand(action)).await
}

/// Reads the chassis power (`Chassis Power is on|off`).
pub async fn state(
    program: &str,
    host: &str,
    username: &str,
    password: &str,
) -> Result<PowerState> {
    let out = run(program, host, username, password, "status").await?;
    let l = out.to_ascii_lowercase();
    Ok(if l.contains("power is on") {
        PowerState::On
    } else if l.contains("power is off") {
        PowerState::Off
    } else {
        PowerState::Unknown
    })
}
