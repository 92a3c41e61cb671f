//! Machines (by id or MAC address): register, list, read, change (accept,
//! retire), see the queue, and queue jobs on them.

use baas_core::services::JobRequest;
use rocket::{get, patch, post};

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
    let target = body.0.into_target()?;
    let job = caller
        .run(move |b, a| {
            let machine = key.resolve(b, a)?;
            b.enqueue_job(a, JobRequest { machine, target })
        })
        .await?;
    Ok(created(JobView::from(&job)))
}
