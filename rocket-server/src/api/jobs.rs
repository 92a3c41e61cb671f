//! Jobs: list, read, timeline, cancel.

use baas_core::model::{JobId, JobState, MachineId};
use baas_core::ports::JobFilter;
use rocket::{get, post};

use super::{parse, user_ref};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::Out;

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
