//! The boot path over HTTP, for iPXE: `GET /boot/chain.ipxe` (what DHCP
//! hands iPXE: it chains to the next route with the NIC's MAC),
//! `GET /boot/ipxe?mac=..` (the server's decision for this boot, as an iPXE
//! script: the management OS with a credential for this boot only, or the
//! local disk), and `GET /boot/mos/{vmlinuz,initrd.gz}` (the management OS,
//! from the data directory; `baas-server admin install-mos` puts it there).
//!
//! These routes are anonymous: firmware carries no secret. The server's
//! address in the scripts is the one the machine used (its `Host` header),
//! or `--public-url`, so nothing is baked into the management OS.
//!
//! Also the power loop: every few seconds the server asks the services
//! which machines to power-cycle and does it through its `PowerControl`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baas_core::model::{Arch, MacAddress};
use baas_core::ports::PowerControl;
use baas_core::services::BootAction;
use baas_core::{Actor, Baas, Error};
use rocket::fs::NamedFile;
use rocket::http::{ContentType, Header};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{get, Responder, State};

use super::parse;
use crate::error::{ApiError, ErrorEnvelope};
use crate::Settings;

/// The file names of an installed management OS under `<data-dir>/mos/`.
pub const MOS_FILES: [&str; 2] = ["vmlinuz", "initrd.gz"];

/// The server's base URL as the booting machine reached it.
#[derive(Debug)]
pub struct BootBase(pub String);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for BootBase {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        if let Some(url) = req
            .rocket()
            .state::<Settings>()
            .and_then(|s| s.public_url.clone())
        {
            return Outcome::Success(BootBase(url.trim_end_matches('/').to_string()));
        }
        match req.host() {
            Some(h) => Outcome::Success(BootBase(format!("http://{h}"))),
            None => {
                let e = ApiError::from(Error::invalid(
                    "host",
                    "no Host header: the boot script needs the address the machine reached \
                     the server at (or start the server with --public-url)",
                ));
                Outcome::Error((rocket::http::Status::BadRequest, e))
            }
        }
    }
}

/// An iPXE script, never cached (it may carry a credential).
#[derive(Debug, Responder)]
#[response(content_type = "text/plain; charset=utf-8")]
pub struct IpxeScript {
    body: String,
    cache: Header<'static>,
}

impl IpxeScript {
    fn new(body: String) -> IpxeScript {
        IpxeScript {
            body,
            cache: Header::new("Cache-Control", "no-store"),
        }
    }
}

/// Text safe inside an iPXE `echo` (iPXE expands `${...}` everywhere).
fn echo_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .,:;()_-/@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The script that sends `base`'s iPXE to the decision route with the
/// NIC's MAC (hyphenated: iPXE percent-encodes colons).
pub fn chain_script(base: &str) -> String {
    format!(
        "#!ipxe\n\
         echo BAAS: asking {base} what to boot\n\
         chain --autofree {base}/boot/ipxe?mac=${{net0/mac:hexhyp}}&arch=${{buildarch}} || goto local\n\
         :local\n\
         echo BAAS: the server did not answer: booting the local disk\n\
         sanboot --no-describe --drive 0x80 || exit\n"
    )
}

/// The iPXE script for a decision.
pub fn decision_script(base: &str, mac: MacAddress, action: &BootAction, cmdline: &str) -> String {
    match action {
        BootAction::LocalDisk { reason } => format!(
            "#!ipxe\n\
             echo BAAS: {}: booting the local disk\n\
             sanboot --no-describe --drive 0x80 || exit\n",
            echo_safe(reason)
        ),
        BootAction::ManagementOs { secret, reason, .. } => format!(
            "#!ipxe\n\
             echo BAAS: {}: booting the management OS\n\
             kernel {base}/boot/mos/vmlinuz initrd=initrd.gz {cmdline} baas.server={base} baas.mac={mac} baas.token={secret} || goto local\n\
             initrd {base}/boot/mos/initrd.gz || goto local\n\
             boot || goto local\n\
             :local\n\
             echo BAAS: the management OS did not start: booting the local disk\n\
             sanboot --no-describe --drive 0x80 || exit\n",
            echo_safe(reason)
        ),
    }
}

/// What DHCP hands iPXE: chains to `/boot/ipxe` with the NIC's MAC.
#[utoipa::path(get, path = "/boot/chain.ipxe", tag = "boot", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
#[get("/boot/chain.ipxe")]
pub async fn chain(base: BootBase) -> IpxeScript {
    IpxeScript::new(chain_script(&base.0))
}

/// The server's decision for this boot, as an iPXE script: the management
/// OS (with `baas.server=`, `baas.mac=` and a credential valid for this
/// machine only, for a few hours) when the machine has work, enrolls, or
/// must capture and clean up; else its local disk. Anonymous.
#[utoipa::path(get, path = "/boot/ipxe", tag = "boot", security(()),
    params(("mac" = String, Query, description = "the booting NIC's MAC (any common spelling; iPXE's `${net0/mac:hexhyp}`)"),
        ("arch" = Option<String>, Query, description = "iPXE's `${buildarch}`, used when the machine enrolls")),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 400, body = ErrorEnvelope)))]
#[get("/boot/ipxe?<mac>&<arch>")]
pub async fn decide(
    baas: &State<Baas>,
    settings: &State<Settings>,
    base: BootBase,
    mac: Option<&str>,
    arch: Option<&str>,
) -> Result<IpxeScript, ApiError> {
    let mac: MacAddress = parse(mac.unwrap_or(""))?;
    // iPXE's buildarch: i386 on 32-bit BIOS builds that still run 64-bit
    // machines, so only 64-bit names are taken at their word.
    let arch = arch
        .and_then(|a| a.parse::<Arch>().ok())
        .filter(|a| *a != Arch::Other("i386".into()));
    let b = baas.inner().clone();
    let action = rocket::tokio::task::spawn_blocking(move || b.boot(mac, arch))
        .await
        .map_err(|e| ApiError::internal(format!("the boot decision panicked: {e}")))??;
    match &action {
        BootAction::ManagementOs {
            machine, reason, ..
        } => {
            tracing::info!(%mac, machine = %machine.name, reason = %reason, "boot: management OS")
        }
        BootAction::LocalDisk { reason } => {
            tracing::info!(%mac, reason = %reason, "boot: local disk")
        }
    }
    Ok(IpxeScript::new(decision_script(
        &base.0,
        mac,
        &action,
        &settings.mos_cmdline,
    )))
}

/// A file of the installed management OS: `vmlinuz` or `initrd.gz`.
#[utoipa::path(get, path = "/boot/mos/{file}", tag = "boot", security(()),
    params(("file" = String, Path, description = "`vmlinuz` or `initrd.gz`")),
    responses((status = 200, content_type = "application/octet-stream", body = [u8]),
        (status = 404, body = ErrorEnvelope)))]
#[get("/boot/mos/<file>")]
pub async fn mos_file(
    settings: &State<Settings>,
    file: &str,
) -> Result<(ContentType, NamedFile), ApiError> {
    if !MOS_FILES.contains(&file) {
        return Err(Error::not_found(format!(
            "{file:?}: the management OS has only vmlinuz and initrd.gz"
        ))
        .into());
    }
    let missing = || {
        ApiError::from(Error::not_found(
            "no management OS is installed: run `baas-server admin install-mos --kernel K --initrd I` \
             (agent/mos/build.sh builds them)",
        ))
    };
    let dir: PathBuf = settings.mos_dir.clone().ok_or_else(missing)?;
    let f = NamedFile::open(dir.join(file))
        .await
        .map_err(|_| missing())?;
    Ok((ContentType::Binary, f))
}

/// Every boot route, mounted at `/`.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![chain, decide, mos_file]
}

/// Runs forever: every `every`, binds waiting placements to machines that
/// now fit (what the services do at once when a job ends is redone here
/// for what they cannot see: another server's changes, a machine's new
/// inventory or pool), then applies the power cycles the services say are
/// due, and records each outcome in its job's timeline.
pub async fn power_loop(baas: Baas, power: Arc<dyn PowerControl>, every: Duration) {
    loop {
        rocket::tokio::time::sleep(every).await;
        let b = baas.clone();
        match rocket::tokio::task::spawn_blocking(move || b.bind_waiting(&Actor::System)).await {
            Ok(Ok(bound)) => {
                for job in bound {
                    tracing::info!(job = %job.id, machine = %job.machine, "placement bound");
                }
            }
            Ok(Err(e)) => tracing::warn!("binding waiting placements failed: {}", e.detailed()),
            Err(_) => {}
        }
        let b = baas.clone();
        let due =
            match rocket::tokio::task::spawn_blocking(move || b.power_due(&Actor::System)).await {
                Ok(Ok(due)) => due,
                Ok(Err(e)) => {
                    tracing::warn!("power: finding due power cycles failed: {}", e.detailed());
                    continue;
                }
                Err(_) => continue,
            };
        for request in due {
            let result = power.apply(&request.machine, request.action).await;
            let error = result.as_ref().err().map(|e| e.message().to_string());
            match &error {
                None => {
                    tracing::info!(machine = %request.machine.name, reason = %request.reason, "power cycled")
                }
                Some(e) => {
                    tracing::warn!(machine = %request.machine.name, "power cycle failed: {e}")
                }
            }
            let b = baas.clone();
            let _ = rocket::tokio::task::spawn_blocking(move || {
                b.power_done(&Actor::System, &request, error.as_deref())
            })
            .await;
        }
    }
}
