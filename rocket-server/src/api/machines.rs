//! Machines (by id or MAC address): register, list, read, change (accept,
//! retire), see the queue, and queue jobs on them.

use baas_core::model::{MachineBoot, NeutralState, PowerConfig};
use baas_core::services::JobRequest;
use rocket::{get, patch, post, put};
use serde::Deserialize;
use utoipa::ToSchema;

use super::MachineKey;
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};

/// Every machine.
#[utoipa::path(get, path = "/api/v1/machines", tag = "machines",
    responses((status = 200, body = [MachineView])))]
#[get("/machines")]
pub async fn list_machines(caller: Caller) -> Result<Out<Vec<MachineView>>, ApiError> {
    let machines = caller.run(|b, a| b.list_machines(a)).await?;
    Ok(Out(machines.iter().map(MachineView::from).collect()))
}

/// Registers a machine, ready for jobs (moderators and admins).
#[utoipa::path(post, path = "/api/v1/machines", tag = "machines", request_body = NewMachineBody,
    responses((status = 201, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines", data = "<body>")]
pub async fn register_machine(
    caller: Caller,
    body: Json<NewMachineBody>,
) -> Result<Created<MachineView>, ApiError> {
    let new = body.0.into_core()?;
    let machine = caller.run(move |b, a| b.register_machine(a, new)).await?;
    Ok(created(MachineView::from(&machine)))
}

/// A machine, by id or MAC address.
#[utoipa::path(get, path = "/api/v1/machines/{machine}", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>")]
pub async fn get_machine(caller: Caller, machine: &str) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let machine = caller
        .run(move |b, a| match key {
            MachineKey::Id(id) => b.get_machine(a, id),
            MachineKey::Mac(mac) => b.get_machine_by_mac(a, mac),
        })
        .await?;
    Ok(Out(MachineView::from(&machine)))
}

/// Changes a machine: rename, pool, accept (`"state": "ready"`) or retire
/// (`"state": "retired"`) (moderators and admins).
#[utoipa::path(patch, path = "/api/v1/machines/{machine}", tag = "machines", request_body = MachinePatchBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[patch("/machines/<machine>", data = "<body>")]
pub async fn update_machine(
    caller: Caller,
    machine: &str,
    body: Json<MachinePatchBody>,
) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let patch = body.0.into_core()?;
    let machine = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.update_machine(a, id, patch)
        })
        .await?;
    Ok(Out(MachineView::from(&machine)))
}

/// A machine's waiting and active jobs, in order.
#[utoipa::path(get, path = "/api/v1/machines/{machine}/queue", tag = "jobs",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = [JobView]), (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>/queue")]
pub async fn machine_queue(caller: Caller, machine: &str) -> Result<Out<Vec<JobView>>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let jobs = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.machine_queue(a, id)
        })
        .await?;
    Ok(Out(jobs.iter().map(JobView::from).collect()))
}

/// Queues a job on a machine: a setup, or one image version.
#[utoipa::path(post, path = "/api/v1/machines/{machine}/jobs", tag = "jobs", request_body = NewJobBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 201, body = JobView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines/<machine>/jobs", data = "<body>")]
pub async fn enqueue_job(
    caller: Caller,
    machine: &str,
    body: Json<NewJobBody>,
) -> Result<Created<JobView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let hold_ms = body.0.hold_seconds.map(|s| s.saturating_mul(1000));
    let start_after = body.0.start_after_seconds;
    let target = body.0.into_target()?;
    let job = caller
        .run(move |b, a| {
            let machine = key.resolve(b, a)?;
            let not_before = start_after.map(|s| b.now().plus_millis(seconds_ms(s)));
            b.enqueue_job_at(a, JobRequest { machine, target }, hold_ms, not_before)
        })
        .await?;
    Ok(created(JobView::from(&job)))
}

/// Accepts an enrolled (`pending`) machine into service (moderators and
/// admins).
#[utoipa::path(post, path = "/api/v1/machines/{machine}/accept", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[post("/machines/<machine>/accept")]
pub async fn accept_machine(caller: Caller, machine: &str) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.accept_machine(a, id)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// Takes a machine out of service: it then boots its local disk and BAAS
/// never writes it (moderators and admins; not while a job is active).
#[utoipa::path(post, path = "/api/v1/machines/{machine}/retire", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines/<machine>/retire")]
pub async fn retire_machine(caller: Caller, machine: &str) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.retire_machine(a, id)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// How the server reaches a machine's power.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PowerBody {
    /// No remote power control: jobs wait for the machine's next boot.
    Manual,
    /// A QEMU VM's QMP socket.
    Qmp {
        /// `unix:/path` or `tcp:host:port`.
        address: String,
    },
    /// A BMC, through `ipmitool -I lanplus`.
    Ipmi {
        /// The BMC's host name or address.
        host: String,
        /// The BMC user.
        username: String,
        /// The BMC password (stored; never shown again).
        password: String,
    },
}

/// A machine's power control and neutral state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineBootBody {
    /// How to power-cycle it.
    pub power: PowerBody,
    /// What it returns to after each job: `keep`, `wipe` or
    /// `setup:<id>` (default `keep`).
    pub neutral: Option<String>,
}

/// Sets how the server power-cycles a machine (to start a job and to end
/// its session) and what the machine returns to between jobs (moderators
/// and admins).
#[utoipa::path(put, path = "/api/v1/machines/{machine}/boot-config", tag = "machines",
    request_body = MachineBootBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[put("/machines/<machine>/boot-config", data = "<body>")]
pub async fn set_boot_config(
    caller: Caller,
    machine: &str,
    body: Json<MachineBootBody>,
) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let body = body.0;
    let boot = MachineBoot {
        power: match body.power {
            PowerBody::Manual => PowerConfig::Manual,
            PowerBody::Qmp { address } => PowerConfig::Qmp { address },
            PowerBody::Ipmi {
                host,
                username,
                password,
            } => PowerConfig::Ipmi {
                host,
                username,
                password,
            },
        },
        neutral: match body.neutral {
            Some(n) => super::parse(&n)?,
            None => NeutralState::Keep,
        },
    };
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.set_machine_boot(a, id, boot)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// Seconds as milliseconds for a timestamp offset (saturating).
pub fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
