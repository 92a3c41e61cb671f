//! QEMU's QMP: a line-delimited JSON protocol on a unix or TCP socket
//! (`-qmp unix:/path,server=on,wait=off` or `-qmp tcp:host:port,...`).
//! Each call connects, negotiates capabilities, runs one command and
//! closes: QEMU accepts one QMP client at a time per socket, so holding
//! the connection would lock other tools out.

use baas_core::ports::{PowerAction, PowerState};
use baas_core::{Error, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The QMP command for `action`.
pub fn command(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "cont",
        PowerAction::Off => "quit",
        PowerAction::SoftOff => "system_powerdown",
        PowerAction::Cycle => "system_reset",
    }
}

/// Applies `action` to the VM whose QMP listens at `address`.
pub async fn apply(address: &str, action: PowerAction) -> Result<()> {
    execute(address, command(action)).await.map(drop)
}

/// The VM's power: `query-status` says `running` (on) or anything else
/// (off: paused, shut down); nothing listening means the VM is off.
pub async fn state(address: &str) -> Result<PowerState> {
    match execute(address, "query-status").await {
        Ok(v) => Ok(if v["status"] == "running" {
            PowerState::On
        } else {
            PowerState::Off
        }),
        Err(e) if e.kind() == baas_core::ErrorKind::Unavailable => Ok(PowerState::Off),
        Err(e) => Err(e),
    }
}

/// Runs one QMP command (no arguments) and returns its `return` value.
pub async fn execute(address: &str, cmd: &str) -> Result<Value> {
    let down = |e: std::io::Error| {
        Error::unavailable(format!("cannot reach QMP at {address}")).with_source(e)
    };
    if let Some(path) = address.strip_prefix("unix:") {
        let s = tokio::net::UnixStream::connect(path).await.map_err(down)?;
        session(s, address, cmd).await
    } else if let Some(hp) = address.strip_prefix("tcp:") {
        let s = tokio::net::TcpStream::connect(hp).await.map_err(down)?;
        session(s, address, cmd).await
    } else {
        Err(Error::invalid(
            "address",
            format!("{address:?} is not unix:/PATH or tcp:HOST:PORT"),
        ))
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    address: &str,
    cmd: &str,
) -> Result<Value> {
    let mut s = BufReader::new(s);
    let greeting = read(&mut s, address).await?;
    if greeting.get("QMP").is_none() {
        return Err(Error::unavailable(format!(
            "{address} does not speak QMP: {greeting}"
        )));
    }
    call(&mut s, address, "qmp_capabilities").await?;
    let out = call(&mut s, address, cmd).await;
    // `quit` may close the socket before answering; that is success.
    match (cmd, out) {
        ("quit", Err(e)) if e.kind() == baas_core::ErrorKind::Unavailable => Ok(Value::Null),
        (_, out) => out,
    }
}

async fn call<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    address: &str,
    cmd: &str,
) -> Result<Value> {
    let mut line = json!({ "execute": cmd }).to_string();
    line.push('\n');
    s.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| Error::unavailable(format!("writing to QMP at {address}")).with_source(e))?;
    loop {
        let v = read(s, address).await?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(Error::conflict(format!(
                "QMP {cmd} at {address} failed: {}",
                e["desc"].as_str().unwrap_or("unknown error")
            )));
        }
        // Asynchronous events (RESET, SHUTDOWN...) come in between.
    }
}

async fn read<S: AsyncRead + Unpin>(s: &mut BufReader<S>, address: &str) -> Result<Value> {
    let mut line = String::new();
    let n = s
        .read_line(&mut line)
        .await
        .map_err(|e| Error::unavailable(format!("reading from QMP at {address}")).with_source(e))?;
    if n == 0 {
        return Err(Error::unavailable(format!(
            "QMP at {address} closed the connection"
        )));
    }
    serde_json::from_str(&line).map_err(|e| {
        Error::unavailable(format!("QMP at {address} sent something that is not JSON"))
            .with_source(e)
    })
}
