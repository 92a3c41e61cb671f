//! What the UI's scripts call, with the session cookie: the dashboard's
//! and a job's live state (polled every few seconds), and the browser's
//! side of the resumable chunk upload (`static/upload.js`): the same
//! upload-session services as `/api/v1/images/{id}/uploads`, so a refresh
//! in the middle of a 4 GiB upload resumes with the chunks still missing.
//! Every POST and PUT here needs the session's CSRF token in the
//! `X-CSRF-Token` header.

use std::sync::Arc;

use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::{ImageId, JobId, UploadId};
use baas_core::ports::Put;
use baas_core::services::ImportOptions;
use rocket::data::Data;
use rocket::http::{ContentType, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{get, post, put, State};
use serde_json::{json, Value};

use super::pages::{job_row, machine_rows, user_names};
use super::session::{same_token, Viewer};
use crate::api::parse;
use crate::dto::hexes;
use crate::error::ApiError;
use crate::telemetry::Metrics;

/// Largest manifest (as in the REST API).
const MANIFEST_LIMIT: u64 = 64 << 20;
/// Largest chunk frame.
const FRAME_LIMIT: u64 = 1 << 20;

/// A JSON answer.
pub type JsonOut = Result<(Status, (ContentType, String)), ApiError>;

fn out(status: Status, v: Value) -> JsonOut {
    Ok((status, (ContentType::JSON, v.to_string())))
}

/// The `X-CSRF-Token` header, checked against the session.
#[derive(Debug)]
pub struct CsrfHeader(String);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CsrfHeader {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(CsrfHeader(
            req.headers()
                .get_one("X-CSRF-Token")
                .unwrap_or("")
                .to_string(),
        ))
    }
}

fn check(viewer: &Viewer, csrf: &CsrfHeader) -> Result<(), ApiError> {
    if same_token(&viewer.csrf, csrf.0.trim()) {
        Ok(())
    } else {
        Err(ApiError::new(
            Status::Forbidden,
            "csrf",
            "missing or stale X-CSRF-Token header: reload the page",
        ))
    }
}

async fn run<T, F>(viewer: &Viewer, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&baas_core::Baas, &baas_core::Actor) -> baas_core::Result<T> + Send + 'static,
{
    let baas = viewer.baas.clone();
    let actor = viewer.actor.clone();
    crate::auth::blocking(move || f(&baas, &actor)).await
}

/// Every machine's state, for the dashboard's live refresh.
#[get("/live/dashboard")]
pub async fn dashboard_json(viewer: Viewer) -> JsonOut {
    let machines = run(&viewer, |b, a| b.list_machines(a)).await?;
    let states = viewer.power_states(&machines).await;
    let rows = run(&viewer, move |b, a| machine_rows(b, a, &machines, &states)).await?;
    let machines: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "name": m.name, "mac": m.mac, "state": m.state,
                "status": m.status, "job": m.job, "job_state": m.job_state,
                "owner": m.owner, "percent": m.percent, "queued": m.queued,
                "last_seen": m.last_seen, "offline": m.offline,
            })
        })
        .collect();
    out(Status::Ok, json!({ "machines": machines }))
}

/// A job's state, progress and timeline, for its page's live refresh.
#[get("/live/jobs/<id>")]
pub async fn job_json(viewer: Viewer, id: &str) -> JsonOut {
    let id: JobId = parse(id)?;
    let (job, events, names) = run(&viewer, move |b, a| {
        let job = b.get_job(a, id)?;
        let events = b.job_events(a, id)?;
        Ok((job, events, user_names(b, a)))
    })
    .await?;
    let row = job_row(&job, &names, &Default::default());
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({"at": super::views::when(e.at), "kind": e.kind, "message": e.message}))
        .collect();
    out(
        Status::Ok,
        json!({
            "id": row.id, "state": row.state, "percent": row.percent,
            "phase": job.progress.phase,
            "done": super::views::human_size(job.progress.bytes_done),
            "total": super::views::human_size(job.progress.bytes_total),
            "error": job.error, "final": job.state.is_final(), "events": events,
        }),
    )
}

/// Starts an upload of the next version: the body is the manifest.
#[post("/live/images/<id>/uploads", data = "<data>")]
pub async fn begin_upload(
    viewer: Viewer,
    csrf: CsrfHeader,
    metrics: &State<Arc<Metrics>>,
    id: &str,
    data: Data<'_>,
) -> JsonOut {
    check(&viewer, &csrf)?;
    let id: ImageId = parse(id)?;
    let bytes = crate::json::read_body(Some(metrics), data, MANIFEST_LIMIT).await?;
    let manifest = Manifest::decode(&bytes)?;
    let (session, missing) = run(&viewer, move |b, a| b.begin_upload(a, id, manifest)).await?;
    out(
        Status::Created,
        json!({"upload_id": session.id.to_string(), "missing": hexes(&missing)}),
    )
}

/// The chunks an upload still lacks (404 once it is gone or dead).
#[get("/live/uploads/<id>")]
pub async fn upload_missing(viewer: Viewer, id: &str) -> JsonOut {
    let id: UploadId = parse(id)?;
    let missing = run(&viewer, move |b, a| b.upload_missing(a, id)).await?;
    out(
        Status::Ok,
        json!({"upload_id": id.to_string(), "missing": hexes(&missing)}),
    )
}

/// One chunk frame. Browsers cannot compress with zstd, so they send raw
/// frames; those are compressed here (as an import would) before the
/// service checks and stores them.
#[put("/live/uploads/<id>/chunks/<hash>", data = "<data>")]
pub async fn upload_chunk(
    viewer: Viewer,
    csrf: CsrfHeader,
    metrics: &State<Arc<Metrics>>,
    id: &str,
    hash: &str,
    data: Data<'_>,
) -> JsonOut {
    check(&viewer, &csrf)?;
    let id: UploadId = parse(id)?;
    let hash: ChunkHash = parse(hash)?;
    let frame = crate::json::read_body(Some(metrics), data, FRAME_LIMIT).await?;
    let put = run(&viewer, move |b, a| {
        // Tag 0 is a raw frame (`baas_core::content`'s encoding).
        let frame = if frame.first() == Some(&0) {
            baas_core::content::encode_frame(&frame[1..], b.config().compression_level)?
        } else {
            frame
        };
        b.upload_chunk(a, id, hash, &frame)
    })
    .await?;
    match put {
        Put::New(n) => out(Status::Created, json!({"new": true, "stored_bytes": n})),
        Put::Existing => out(Status::Ok, json!({"new": false, "stored_bytes": 0})),
    }
}

/// Commits an upload once every chunk is there.
#[post("/live/uploads/<id>/commit")]
pub async fn commit_upload(viewer: Viewer, csrf: CsrfHeader, id: &str) -> JsonOut {
    check(&viewer, &csrf)?;
    let id: UploadId = parse(id)?;
    let opts = ImportOptions {
        note: Some("uploaded from the web UI".into()),
    };
    let v = run(&viewer, move |b, a| b.commit_upload(a, id, opts)).await?;
    out(
        Status::Created,
        json!({"version": v.number, "size": v.size, "added_bytes": v.added_bytes}),
    )
}
