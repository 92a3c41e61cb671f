//! Jobs: list, read, timeline, cancel.

use baas_core::model::{Arch, JobId, JobState, MachineId};
use baas_core::ports::JobFilter;
use baas_core::services::Fit;
use rocket::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{parse, user_ref};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};

/// Jobs: yours, or everyone's for moderators and admins; filtered by
/// machine, owner and state, newest first with `limit`.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(("machine" = Option<uuid::Uuid>, Query, description = "only this machine's jobs"),
        ("owner" = Option<String>, Query, description = "only this owner's jobs (a user id, or `me`)"),
        ("state" = Option<String>, Query, description = "only jobs in these states, comma-separated"),
        ("limit" = Option<u32>, Query, description = "at most this many, newest first")),
    responses((status = 200, body = [JobView]), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)))]
#[get("/jobs?<machine>&<owner>&<state>&<limit>")]
pub async fn list_jobs(
    caller: Caller,
    machine: Option<&str>,
    owner: Option<&str>,
    state: Option<&str>,
    limit: Option<&str>,
) -> Result<Out<Vec<JobView>>, ApiError> {
    let filter = JobFilter {
        machine: machine.map(parse::<MachineId>).transpose()?,
        owner: owner.map(|o| user_ref(caller.actor(), o)).transpose()?,
        states: state
            .map(|s| {
                s.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| parse::<JobState>(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default(),
        limit: limit
            .map(|l| {
                l.trim().parse::<u32>().map_err(|_| {
                    ApiError::from(baas_core::Error::invalid(
                        "limit",
                        format!("{l:?} is not a number"),
                    ))
                })
            })
            .transpose()?,
    };
    let jobs = caller.run(move |b, a| b.list_jobs(a, filter)).await?;
    Ok(Out(jobs.iter().map(JobView::from).collect()))
}

/// A job (its owner, the machine's agent, moderators, admins).
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorEnvelope)))]
#[get("/jobs/<id>")]
pub async fn get_job(caller: Caller, id: &str) -> Result<Out<JobView>, ApiError> {
    let id: JobId = parse(id)?;
    let job = caller.run(move |b, a| b.get_job(a, id)).await?;
    Ok(Out(JobView::from(&job)))
}

/// A job's timeline, oldest first.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = [JobEventView]), (status = 404, body = ErrorEnvelope)))]
#[get("/jobs/<id>/events")]
pub async fn job_events(caller: Caller, id: &str) -> Result<Out<Vec<JobEventView>>, ApiError> {
    let id: JobId = parse(id)?;
    let events = caller.run(move |b, a| b.job_events(a, id)).await?;
    Ok(Out(events.iter().map(JobEventView::from).collect()))
}

/// Ends the user's session on the machine now (the job's owner,
/// moderators, admins): its next boot goes to the management OS, which
/// captures what the job asked and restores the machine; with power
/// control the server power-cycles it.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/release", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/jobs/<id>/release")]
pub async fn release_job(caller: Caller, id: &str) -> Result<Out<JobView>, ApiError> {
    let id: JobId = parse(id)?;
    let job = caller.run(move |b, a| b.release_job(a, id)).await?;
    Ok(Out(JobView::from(&job)))
}

/// Cancels a job that has not finished (its owner, moderators, admins).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/jobs/<id>/cancel")]
pub async fn cancel_job(caller: Caller, id: &str) -> Result<Out<JobView>, ApiError> {
    let id: JobId = parse(id)?;
    let job = caller.run(move |b, a| b.cancel_job(a, id)).await?;
    Ok(Out(JobView::from(&job)))
}

/// A job for any machine that fits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceJobBody {
    /// The machine's architecture (`x86_64`, `aarch64`, ...), any when absent.
    pub arch: Option<String>,
    /// A disk of at least this many bytes (as the machine's agent reported).
    #[serde(default)]
    pub min_disk_bytes: u64,
    /// The machine's pool, any when absent.
    pub pool: Option<String>,
    /// Write every entry of this setup.
    pub setup_id: Option<Uuid>,
    /// Or write this one image.
    pub image_id: Option<Uuid>,
    /// Its version (`"latest"` when absent).
    pub version: Option<VersionRefDto>,
    /// Its target disk (the image's own when absent).
    pub disk: Option<String>,
    /// Capture it when the session ends.
    #[serde(default)]
    pub capture: bool,
    /// The session's length in seconds (at most the admin's maximum).
    pub hold_seconds: Option<u64>,
    /// Start no earlier than this many seconds from now.
    pub start_after_seconds: Option<u64>,
}

fn fit_of(arch: Option<&str>, min_disk_bytes: u64, pool: Option<String>) -> Result<Fit, ApiError> {
    Ok(Fit {
        arch: arch.map(parse::<Arch>).transpose()?,
        min_disk_bytes,
        pool,
    })
}

/// Queues a job on the first idle, accepted machine that fits (any user);
/// 409 with each machine's reason when none fits now.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = PlaceJobBody,
    responses((status = 201, body = JobView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/jobs", data = "<body>")]
pub async fn place_job(
    caller: Caller,
    body: Json<PlaceJobBody>,
) -> Result<Created<JobView>, ApiError> {
    let b = body.0;
    let fit = fit_of(b.arch.as_deref(), b.min_disk_bytes, b.pool)?;
    let hold_ms = b.hold_seconds.map(|s| s.saturating_mul(1000));
    let target = NewJobBody {
        setup_id: b.setup_id,
        image_id: b.image_id,
        version: b.version,
        disk: b.disk,
        capture: b.capture,
        hold_seconds: b.hold_seconds,
        start_after_seconds: b.start_after_seconds,
    }
    .into_target()?;
    let start_after = b.start_after_seconds;
    let job = caller
        .run(move |s, a| {
            let not_before =
                start_after.map(|t| s.now().plus_millis(super::machines::seconds_ms(t)));
            s.place_job(a, &fit, target, hold_ms, not_before)
        })
        .await?;
    Ok(created(JobView::from(&job)))
}

/// A machine against a placement request.
#[derive(Debug, Serialize, ToSchema)]
pub struct CandidateView {
    /// The machine.
    pub machine: MachineView,
    /// Whether a job placed now would go there.
    pub fits: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
}

/// Every machine against what a job needs: which are idle and fit, and why
/// the others do not (any user).
#[utoipa::path(get, path = "/api/v1/placement", tag = "jobs",
    params(("arch" = Option<String>, Query, description = "architecture"),
        ("min_disk_bytes" = Option<u64>, Query, description = "smallest acceptable disk"),
        ("pool" = Option<String>, Query, description = "pool")),
    responses((status = 200, body = [CandidateView]), (status = 400, body = ErrorEnvelope)))]
#[get("/placement?<arch>&<min_disk_bytes>&<pool>")]
pub async fn placement(
    caller: Caller,
    arch: Option<&str>,
    min_disk_bytes: Option<u64>,
    pool: Option<&str>,
) -> Result<Out<Vec<CandidateView>>, ApiError> {
    let fit = fit_of(arch, min_disk_bytes.unwrap_or(0), pool.map(str::to_string))?;
    let list = caller.run(move |s, a| s.machines_for(a, &fit)).await?;
    Ok(Out(list
        .iter()
        .map(|c| CandidateView {
            machine: MachineView::from(&c.machine),
            fits: c.unfit.is_none(),
            reason: c.unfit.clone(),
        })
        .collect()))
}
