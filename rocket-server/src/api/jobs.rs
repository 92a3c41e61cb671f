//! Jobs: list, read, timeline, cancel; and placements, jobs for any
//! machine that fits, which wait (saying why) until one does.

use baas_core::model::{Arch, JobId, JobState, MachineId, Placement};
use baas_core::ports::JobFilter;
use baas_core::services::{Fit, Placed, PlacementStatus};
use rocket::http::Status;
use rocket::{get, post, Responder};
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

/// A placement request no machine could ever satisfy as written (a bad
/// architecture or pool name): 422, naming the field.
fn unprocessable(e: ApiError) -> ApiError {
    if e.status() == Status::BadRequest && e.code() == "invalid_input" {
        let mut out = ApiError::new(Status::UnprocessableEntity, "invalid_input", e.message());
        if let Some(field) = e.envelope().error.field {
            out = out.with_field(field);
        }
        return out;
    }
    e
}

/// A job asked for any machine that fits: waiting until one does, then
/// bound (its job has the same id).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementView {
    /// Id; the job keeps it once bound.
    pub id: Uuid,
    /// Waiting order.
    pub seq: i64,
    /// Who asked.
    pub owner_id: Uuid,
    /// `waiting`, `bound` or `cancelled`.
    pub state: String,
    /// Why it waits (while it waits).
    pub reason: Option<String>,
    /// The architecture asked for.
    pub arch: Option<String>,
    /// The smallest disk asked for.
    pub min_disk_bytes: u64,
    /// The pool asked for.
    pub pool: Option<String>,
    /// The setup it came from, if any.
    pub setup_id: Option<Uuid>,
    /// What it writes, in order.
    pub entries: Vec<JobEntryView>,
    /// The session length asked for, in seconds.
    pub hold_seconds: Option<u64>,
    /// The earliest the job may start.
    pub not_before: Option<String>,
    /// The machine it was bound to.
    pub machine_id: Option<Uuid>,
    /// The job it became (`/api/v1/jobs/{id}`), once bound.
    pub job_id: Option<Uuid>,
    /// Who cancelled it, or why.
    pub error: Option<String>,
    /// When asked for.
    pub created_at: String,
    /// When bound or cancelled.
    pub finished_at: Option<String>,
}

impl PlacementView {
    fn new(p: &Placement, reason: Option<String>) -> PlacementView {
        PlacementView {
            id: p.id.uuid(),
            seq: p.seq,
            owner_id: p.owner.uuid(),
            state: p.state.as_str().to_string(),
            reason,
            arch: p.fit.arch.as_ref().map(|a| a.as_str().to_string()),
            min_disk_bytes: p.fit.min_disk_bytes,
            pool: p.fit.pool.clone(),
            setup_id: p.setup.map(|s| s.uuid()),
            entries: p
                .entries
                .iter()
                .map(|e| JobEntryView {
                    image_id: e.image.uuid(),
                    version: e.version,
                    disk: e.disk.to_string(),
                    capture: e.capture,
                })
                .collect(),
            hold_seconds: p.session.hold_ms.map(|h| h / 1000),
            not_before: p.session.not_before.map(rfc3339),
            machine_id: p.machine.map(|m| m.uuid()),
            job_id: (p.state == baas_core::model::PlacementState::Bound).then(|| p.id.uuid()),
            error: p.error.clone(),
            created_at: rfc3339(p.created_at),
            finished_at: p.finished_at.map(rfc3339),
        }
    }
}

impl From<&PlacementStatus> for PlacementView {
    fn from(s: &PlacementStatus) -> Self {
        PlacementView::new(&s.placement, s.reason.clone())
    }
}

/// What `POST /jobs` answers: the job (201) or the waiting placement (202).
#[derive(Debug, Responder)]
pub enum PlacedView {
    /// A machine fitted now.
    Job(Created<JobView>),
    /// None fits now: it waits (`Location` names the placement).
    #[response(status = 202)]
    Waiting(Out<PlacementView>, rocket::http::Header<'static>),
}

/// Queues a job on the first idle, accepted machine that fits (any user):
/// 201 with the job. When none fits now, 202 with a *placement* that waits
/// and says why (`GET /api/v1/placements/{id}`); it becomes the job with
/// the same id as soon as a machine fits. 422 for a request no machine
/// could ever satisfy as written (a bad architecture or pool name).
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = PlaceJobBody,
    responses((status = 201, body = JobView), (status = 202, body = PlacementView),
        (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)))]
#[post("/jobs", data = "<body>")]
pub async fn place_job(caller: Caller, body: Json<PlaceJobBody>) -> Result<PlacedView, ApiError> {
    let b = body.0;
    let fit = fit_of(b.arch.as_deref(), b.min_disk_bytes, b.pool).map_err(unprocessable)?;
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
    .into_target()
    .map_err(|e| unprocessable(e.into()))?;
    let start_after = b.start_after_seconds;
    let placed = caller
        .run(move |s, a| {
            let not_before =
                start_after.map(|t| s.now().plus_millis(super::machines::seconds_ms(t)));
            s.place_job(a, &fit, target, hold_ms, not_before)
        })
        .await
        .map_err(unprocessable)?;
    Ok(match placed {
        Placed::Job(job) => PlacedView::Job(created(JobView::from(&job))),
        Placed::Waiting { placement, reason } => PlacedView::Waiting(
            Out(PlacementView::new(&placement, Some(reason))),
            rocket::http::Header::new("Location", format!("/api/v1/placements/{}", placement.id)),
        ),
    })
}

/// Placements still waiting for a machine, oldest first, each with why it
/// waits (any user: it shows what is waiting and why).
#[utoipa::path(get, path = "/api/v1/placements", tag = "jobs",
    responses((status = 200, body = [PlacementView]), (status = 403, body = ErrorEnvelope)))]
#[get("/placements")]
pub async fn list_placements(caller: Caller) -> Result<Out<Vec<PlacementView>>, ApiError> {
    let list = caller.run(|s, a| s.waiting_placements(a)).await?;
    Ok(Out(list.iter().map(PlacementView::from).collect()))
}

/// A placement (its owner, moderators, admins), with why it waits.
#[utoipa::path(get, path = "/api/v1/placements/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "placement id (the job's, once bound)")),
    responses((status = 200, body = PlacementView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[get("/placements/<id>")]
pub async fn get_placement(caller: Caller, id: &str) -> Result<Out<PlacementView>, ApiError> {
    let id: JobId = parse(id)?;
    let p = caller.run(move |s, a| s.get_placement(a, id)).await?;
    Ok(Out(PlacementView::from(&p)))
}

/// Cancels a placement still waiting for a machine (its owner, moderators,
/// admins); 409 once bound (cancel the job instead).
#[utoipa::path(post, path = "/api/v1/placements/{id}/cancel", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "placement id")),
    responses((status = 200, body = PlacementView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/placements/<id>/cancel")]
pub async fn cancel_placement(caller: Caller, id: &str) -> Result<Out<PlacementView>, ApiError> {
    let id: JobId = parse(id)?;
    let p = caller.run(move |s, a| s.cancel_placement(a, id)).await?;
    Ok(Out(PlacementView::new(&p, None)))
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
