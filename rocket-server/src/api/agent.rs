//! The agent protocol under `/api/v1/agent/`: what a machine's agent calls
//! during a management-OS boot, one route per `AgentLink` call, each over
//! one service. A machine credential (`POST /api/v1/machines/{id}/agent-token`)
//! authenticates as that machine's agent; the services scope every call to
//! that machine and its active job.
//!
//! Binary bodies (documented in the OpenAPI document too):
//! - a manifest is `Manifest::encode`;
//! - a *frame stream* (the answer of `.../chunks`) is, for each requested
//!   hash in order, the frame's length as a 4-byte little-endian unsigned
//!   integer followed by the frame (`encode_frame`);
//! - a *capture record stream* (the body of `/captures/{id}/chunks`) is, for
//!   each chunk, its 32-byte blake3 hash, the frame's length as a 4-byte
//!   little-endian unsigned integer, then the frame;
//! - a *delta request* (the body of `.../deltas`) is, for each chunk, its
//!   32-byte hash, the number of 4 KiB blocks (2 bytes, little-endian), then
//!   a 4-byte short hash per block of the agent's local content; the answer
//!   is, per chunk in order, a kind byte (0: the stored frame, 1: a delta),
//!   a 4-byte little-endian length, the bytes (`baas_core::delta`).

use std::time::Duration;

use baas_core::content::{ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::*;
use baas_core::ports::{Put, MAX_CHUNKS_PER_CALL};
use baas_core::services::{policy, Actor, Baas, ImportOptions};
use baas_core::{Error, Result};
use rocket::data::Data;
use rocket::http::{ContentType, Status};
use rocket::{get, post, Route};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{no_content, parse, MachineKey};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, parse_strict, read_body, Created, Json, Out};
use crate::upload::BodyInfo;

/// Longest a `next-job` long poll waits, whatever `wait_ms` asks.
pub const MAX_WAIT_MS: u64 = 30_000;
/// How often a long poll asks the queue again.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Largest manifest a capture may begin with (as for uploads).
const MANIFEST_LIMIT: u64 = 64 << 20;
/// Largest frame in a capture record (a raw 64 KiB chunk and its tag).
const FRAME_LIMIT: usize = CHUNK_SIZE as usize + 1;
/// Largest delta request: 256 chunks of the largest chunk size.
const WANTS_LIMIT: u64 = baas_core::delta::MAX_WANTS_BYTES as u64;
/// Largest capture record stream.
const RECORDS_LIMIT: u64 = MAX_CHUNKS_PER_CALL as u64 * (32 + 4 + FRAME_LIMIT as u64);
/// Most log lines one call ships, and the longest line kept.
const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_LINE: usize = 4096;
/// Lifetime of an agent credential when the request names none: a day.
const DEFAULT_AGENT_TTL_SECONDS: u64 = 24 * 3600;

/// The agent's routes, to mount at `/api/v1/agent`.
pub fn routes() -> Vec<Route> {
    rocket::routes![
        report_inventory,
        next_job,
        ship_logs,
        manifest,
        chunks,
        deltas,
        begin_capture,
        capture_chunks,
        commit_capture,
        progress,
        advance,
        fail,
    ]
}

/// Routes about agents that live with the machines, to mount at `/api/v1`.
pub fn machine_routes() -> Vec<Route> {
    rocket::routes![issue_agent_token]
}

/// The agent routes' part of the OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(paths(
    report_inventory,
    next_job,
    ship_logs,
    manifest,
    chunks,
    deltas,
    begin_capture,
    capture_chunks,
    commit_capture,
    progress,
    advance,
    fail,
    issue_agent_token
))]
pub struct AgentApi;

// --- wire types

/// Log lines from the agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBody {
    /// The job the lines belong to: they go to its timeline. Without one
    /// they only go to the server's log.
    pub job_id: Option<Uuid>,
    /// The lines (at most 1000; each cut at 4096 characters).
    pub lines: Vec<String>,
}

/// Which chunk frames to send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunksBody {
    /// Blake3 hashes (64 hex digits), at most 256, all in the entry's
    /// manifest.
    pub hashes: Vec<String>,
}

/// What a batch of capture chunks did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaptureChunksView {
    /// Chunks received.
    pub chunks: u64,
    /// Of those, chunks new to the store.
    pub new: u64,
    /// Bytes stored for the new chunks.
    pub stored_bytes: u64,
}

/// Progress of the current phase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// Phase name (`flash`, `verify`, `capture`...).
    pub phase: String,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes this phase handles.
    pub bytes_total: u64,
    /// Bytes per second.
    #[serde(default)]
    pub rate: u64,
}

/// A state to move a job to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    /// `running`, `capturing` or `succeeded`.
    pub state: String,
    /// For the job's timeline.
    #[serde(default)]
    pub message: String,
}

/// Why a job failed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// The phase it failed in (`flash`, `verify`, `capture`...).
    pub phase: String,
    /// What went wrong.
    pub reason: String,
}

/// An agent credential to issue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenBody {
    /// Lifetime in seconds (default a day, at most a year).
    pub ttl_seconds: Option<u64>,
}

/// The answer of `next-job`: a job, or nothing yet.
#[derive(Debug, rocket::Responder)]
pub enum NextJob {
    /// The job to work on.
    #[response(status = 200)]
    Job(Box<Out<JobView>>),
    /// Nothing to do within the wait.
    #[response(status = 204)]
    Idle(()),
}

fn job_id(s: &str) -> std::result::Result<JobId, ApiError> {
    parse(s)
}

fn entry_index(s: &str) -> std::result::Result<usize, ApiError> {
    s.parse::<usize>().map_err(|_| {
        ApiError::from(Error::invalid(
            "entry",
            format!("{s:?} is not an entry number"),
        ))
    })
}

/// Parses a capture record stream (see the module doc).
pub fn parse_records(mut body: &[u8]) -> Result<Vec<(ChunkHash, Vec<u8>)>> {
    let bad = |why: &str| Error::invalid("body", format!("capture records: {why}"));
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() == MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        if body.len() < 36 {
            return Err(bad("truncated record header"));
        }
        let (head, rest) = body.split_at(36);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[..32]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[32..]);
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > FRAME_LIMIT {
            return Err(bad("frame length out of range"));
        }
        if rest.len() < len {
            return Err(bad("truncated frame"));
        }
        let (frame, rest) = rest.split_at(len);
        out.push((ChunkHash(hash), frame.to_vec()));
        body = rest;
    }
    Ok(out)
}

/// Encodes frames as a frame stream (see the module doc).
pub fn frame_stream(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 4).sum());
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

// --- handlers

/// Records the machine's inventory (its agent; moderators, admins).
#[utoipa::path(post, path = "/api/v1/agent/machines/{machine}/inventory", tag = "agent",
    request_body = InventoryDto,
    params(("machine" = String, Path, description = "the machine's id or MAC address")),
    responses((status = 200, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[post("/machines/<machine>/inventory", data = "<body>")]
pub async fn report_inventory(
    caller: Caller,
    machine: &str,
    body: Json<InventoryDto>,
) -> std::result::Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let inventory = body.0.into_core()?;
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.report_inventory(a, id, inventory)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// The job the machine's agent should work on: its active job (again, if
/// a previous boot died in it), else the next queued one, handed out once.
/// Waits up to `wait_ms` (at most 30000) for one to be queued; `204` when
/// there is still none.
#[utoipa::path(get, path = "/api/v1/agent/machines/{machine}/next-job", tag = "agent",
    params(("machine" = String, Path, description = "the machine's id or MAC address"),
        ("wait_ms" = Option<u64>, Query, description = "long poll: wait this long for a job (capped at 30000)")),
    responses((status = 200, body = JobView), (status = 204, description = "no job within the wait"),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>/next-job?<wait_ms>")]
pub async fn next_job(
    caller: Caller,
    machine: &str,
    wait_ms: Option<&str>,
) -> std::result::Result<NextJob, ApiError> {
    let key = MachineKey::parse(machine)?;
    let wait = match wait_ms {
        None => 0,
        Some(w) => w.trim().parse::<u64>().map_err(|_| {
            ApiError::from(Error::invalid(
                "wait_ms",
                format!("{w:?} is not a number of milliseconds"),
            ))
        })?,
    }
    .min(MAX_WAIT_MS);
    // The wait happens here, on the async side: between two quick calls on
    // the blocking pool, no thread is held.
    let deadline = rocket::tokio::time::Instant::now() + Duration::from_millis(wait);
    let mut first = true;
    loop {
        // Authenticated again at each later round: a credential revoked
        // while the poll waits (the machine booted again) takes no job. The
        // first round runs on the guard's fresh authentication.
        let call = move |b: &Baas, a: &Actor| {
            let id = key.resolve(b, a)?;
            b.next_job(a, id)
        };
        let job = if std::mem::take(&mut first) {
            caller.run(call).await?
        } else {
            caller.run_current(call).await?
        };
        if let Some(job) = job {
            return Ok(NextJob::Job(Box::new(Out(JobView::from(&job)))));
        }
        let now = rocket::tokio::time::Instant::now();
        if now >= deadline {
            return Ok(NextJob::Idle(()));
        }
        rocket::tokio::time::sleep((deadline - now).min(POLL_EVERY)).await;
    }
}

/// Ships agent log lines: to the job's timeline with `job_id`, else to the
/// server's log.
#[utoipa::path(post, path = "/api/v1/agent/machines/{machine}/logs", tag = "agent",
    request_body = LogBody,
    params(("machine" = String, Path, description = "the machine's id or MAC address")),
    responses((status = 204), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/machines/<machine>/logs", data = "<body>")]
pub async fn ship_logs(
    caller: Caller,
    machine: &str,
    body: Json<LogBody>,
) -> std::result::Result<Status, ApiError> {
    let key = MachineKey::parse(machine)?;
    let LogBody { job_id, lines } = body.0;
    if lines.len() > MAX_LOG_LINES {
        return Err(Error::too_large(format!("at most {MAX_LOG_LINES} lines per call")).into());
    }
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| l.chars().take(MAX_LOG_LINE).collect())
        .collect();
    let job = job_id.map(JobId);
    caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            match job {
                Some(job) => lines.iter().try_for_each(|l| b.log_job(a, job, l)),
                None => {
                    policy::check_agent_for(a, id)?;
                    for l in &lines {
                        tracing::info!(machine = %id, "agent: {l}");
                    }
                    Ok(())
                }
            }
        })
        .await?;
    Ok(no_content())
}

/// The manifest (`Manifest::encode`) of entry `entry` (0-based) of the
/// caller's active job.
#[utoipa::path(get, path = "/api/v1/agent/jobs/{job}/entries/{entry}/manifest", tag = "agent",
    params(("job" = uuid::Uuid, Path, description = "job id"),
        ("entry" = u32, Path, description = "entry number, from 0")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
#[get("/jobs/<job>/entries/<entry>/manifest")]
pub async fn manifest(
    caller: Caller,
    job: &str,
    entry: &str,
) -> std::result::Result<(ContentType, Vec<u8>), ApiError> {
    let job = job_id(job)?;
    let entry = entry_index(entry)?;
    let m = caller
        .run(move |b, a| b.agent_manifest(a, job, entry))
        .await?;
    Ok((ContentType::Binary, m.encode()))
}

/// Stored frames of chunks of entry `entry`'s version, as a frame stream:
/// for each requested hash in order, the frame's length (4 bytes,
/// little-endian) then the frame (a tag byte, then raw or zstd bytes). The
/// agent checks each against its hash.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/entries/{entry}/chunks", tag = "agent",
    request_body = ChunksBody,
    params(("job" = uuid::Uuid, Path, description = "job id"),
        ("entry" = u32, Path, description = "entry number, from 0")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary,
            description = "for each hash: u32 LE frame length, then the frame"),
        (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/jobs/<job>/entries/<entry>/chunks", data = "<body>")]
pub async fn chunks(
    caller: Caller,
    job: &str,
    entry: &str,
    body: Json<ChunksBody>,
) -> std::result::Result<Frames, ApiError> {
    let job = job_id(job)?;
    let entry = entry_index(entry)?;
    if body.0.hashes.len() > MAX_CHUNKS_PER_CALL {
        return Err(
            Error::too_large(format!("at most {MAX_CHUNKS_PER_CALL} chunks per call")).into(),
        );
    }
    let hashes = body
        .0
        .hashes
        .iter()
        .map(|h| parse::<ChunkHash>(h))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let frames = caller
        .run(move |b, a| b.agent_chunks(a, job, entry, &hashes))
        .await?;
    Ok(Frames::new(frames))
}

/// Chunks of entry `entry`'s version as deltas against what the agent's
/// disk holds at their places: for each chunk, its hash and the short
/// hashes of its local 4 KiB blocks; the answer carries, per chunk in
/// order, only the blocks that differ (zstd-compressed), or the stored
/// frame when that is not smaller. The agent checks each rebuilt chunk
/// against its hash.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/entries/{entry}/deltas", tag = "agent",
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "for each chunk: 32-byte hash, u16 LE block count, a 4-byte hash per 4 KiB block"),
    params(("job" = uuid::Uuid, Path, description = "job id"),
        ("entry" = u32, Path, description = "entry number, from 0")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary,
            description = "for each chunk: kind (0 frame, 1 delta), u32 LE length, the bytes"),
        (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope)))]
#[post("/jobs/<job>/entries/<entry>/deltas", data = "<data>")]
pub async fn deltas(
    caller: Caller,
    job: &str,
    entry: &str,
    info: BodyInfo,
    data: Data<'_>,
) -> std::result::Result<FrameStream, ApiError> {
    let job = job_id(job)?;
    let entry = entry_index(entry)?;
    let bytes = read_body(info.metrics(), data, WANTS_LIMIT).await?;
    let wants = baas_core::delta::decode_wants(&bytes)?;
    let replies = caller
        .run(move |b, a| b.agent_chunk_deltas(a, job, entry, &wants))
        .await?;
    Ok(FrameStream(baas_core::delta::encode_replies(&replies)))
}

/// How many bytes of a frame stream go to the connection per write:
/// Rocket's default (4 KiB) costs a body chunk, and most of the server's
/// CPU time, for every 4 KiB of a multi-MiB answer.
const FRAME_STREAM_WRITE: usize = 1 << 20;

/// A frame stream as a response: written in large pieces.
#[derive(Debug)]
pub struct FrameStream(pub Vec<u8>);

impl<'r> rocket::response::Responder<'r, 'static> for FrameStream {
    fn respond_to(self, _: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        let len = self.0.len();
        Ok(rocket::Response::build()
            .header(ContentType::Binary)
            .sized_body(len, std::io::Cursor::new(self.0))
            .max_chunk_size(FRAME_STREAM_WRITE)
            .finalize())
    }
}

/// Stored frames as a response in the [`frame_stream`] format, read from
/// the frames themselves: no concatenated copy of a multi-MiB answer.
#[derive(Debug)]
pub struct Frames {
    frames: Vec<Vec<u8>>,
    /// The frame being sent, and how far into its length prefix and bytes.
    at: usize,
    within: usize,
    /// Bytes sent so far, and in all.
    pos: u64,
    len: u64,
}

impl Frames {
    pub fn new(frames: Vec<Vec<u8>>) -> Frames {
        let len = frames.iter().map(|f| 4 + f.len() as u64).sum();
        Frames {
            frames,
            at: 0,
            within: 0,
            pos: 0,
            len,
        }
    }
}

impl rocket::tokio::io::AsyncRead for Frames {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut rocket::tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while buf.remaining() > 0 && this.at < this.frames.len() {
            let frame = &this.frames[this.at];
            if this.within < 4 {
                let prefix = (frame.len() as u32).to_le_bytes();
                let n = (4 - this.within).min(buf.remaining());
                buf.put_slice(&prefix[this.within..this.within + n]);
                this.within += n;
                this.pos += n as u64;
            } else {
                let from = this.within - 4;
                let n = (frame.len() - from).min(buf.remaining());
                buf.put_slice(&frame[from..from + n]);
                this.within += n;
                this.pos += n as u64;
            }
            if this.within == 4 + frame.len() {
                // Sent: free it now rather than with the whole answer.
                this.frames[this.at] = Vec::new();
                this.at += 1;
                this.within = 0;
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl rocket::tokio::io::AsyncSeek for Frames {
    /// Rocket seeks only to learn the size of a body whose size it was not
    /// given, and it is given here: only seeks that stay put are allowed.
    fn start_seek(self: std::pin::Pin<&mut Self>, to: std::io::SeekFrom) -> std::io::Result<()> {
        match to {
            std::io::SeekFrom::Current(0) => Ok(()),
            std::io::SeekFrom::Start(p) if p == self.pos => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a frame stream is read once, front to back",
            )),
        }
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::task::Poll::Ready(Ok(self.pos))
    }
}

impl<'r> rocket::response::Responder<'r, 'static> for Frames {
    fn respond_to(self, _: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        let len = self.len as usize;
        Ok(rocket::Response::build()
            .header(ContentType::Binary)
            .sized_body(len, self)
            .max_chunk_size(FRAME_STREAM_WRITE)
            .finalize())
    }
}

/// Starts capturing entry `entry` of a job in `capturing` as a new version
/// of its image. The body is the disk's manifest; the answer lists the
/// chunks the server lacks.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/entries/{entry}/captures", tag = "agent",
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "the captured disk's manifest (`Manifest::encode`)"),
    params(("job" = uuid::Uuid, Path, description = "job id"),
        ("entry" = u32, Path, description = "entry number, from 0")),
    responses((status = 201, body = UploadView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/jobs/<job>/entries/<entry>/captures", data = "<data>")]
pub async fn begin_capture(
    caller: Caller,
    job: &str,
    entry: &str,
    info: BodyInfo,
    data: Data<'_>,
) -> std::result::Result<Created<UploadView>, ApiError> {
    let job = job_id(job)?;
    let entry = entry_index(entry)?;
    let bytes = read_body(info.metrics(), data, MANIFEST_LIMIT).await?;
    let manifest = Manifest::decode(&bytes)?;
    let (session, missing) = caller
        .run(move |b, a| b.begin_capture(a, job, entry, manifest))
        .await?;
    Ok(created(UploadView {
        upload_id: session.id.uuid(),
        image_id: session.image.uuid(),
        missing: hexes(&missing),
    }))
}

/// Sends chunks of a capture as a record stream: for each chunk, its
/// 32-byte hash, the frame's length (4 bytes, little-endian), the frame.
/// At most 256 chunks; each is checked against its hash before it is
/// stored.
#[utoipa::path(post, path = "/api/v1/agent/captures/{upload}/chunks", tag = "agent",
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "for each chunk: 32-byte hash, u32 LE frame length, the frame"),
    params(("upload" = uuid::Uuid, Path, description = "the capture's upload id")),
    responses((status = 200, body = CaptureChunksView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/captures/<upload>/chunks", data = "<data>")]
pub async fn capture_chunks(
    caller: Caller,
    upload: &str,
    info: BodyInfo,
    data: Data<'_>,
) -> std::result::Result<Out<CaptureChunksView>, ApiError> {
    let upload: UploadId = parse(upload)?;
    let bytes = read_body(info.metrics(), data, RECORDS_LIMIT).await?;
    let records = parse_records(&bytes)?;
    let view = caller
        .run(move |b, a| {
            let mut view = CaptureChunksView {
                chunks: 0,
                new: 0,
                stored_bytes: 0,
            };
            for (hash, frame) in &records {
                view.chunks += 1;
                if let Put::New(n) = b.upload_chunk(a, upload, *hash, frame)? {
                    view.new += 1;
                    view.stored_bytes += n;
                }
            }
            Ok(view)
        })
        .await?;
    Ok(Out(view))
}

/// Commits a capture once every chunk is there: the new version.
#[utoipa::path(post, path = "/api/v1/agent/captures/{upload}/commit", tag = "agent",
    params(("upload" = uuid::Uuid, Path, description = "the capture's upload id")),
    responses((status = 201, body = VersionView), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
#[post("/captures/<upload>/commit")]
pub async fn commit_capture(
    caller: Caller,
    upload: &str,
) -> std::result::Result<Created<VersionView>, ApiError> {
    let upload: UploadId = parse(upload)?;
    let version = caller
        .run(move |b, a| b.commit_upload(a, upload, ImportOptions::default()))
        .await?;
    Ok(created(VersionView::from(&version)))
}

/// Reports progress of the current phase of an active job.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/progress", tag = "agent",
    request_body = ProgressBody,
    params(("job" = uuid::Uuid, Path, description = "job id")),
    responses((status = 204), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/jobs/<job>/progress", data = "<body>")]
pub async fn progress(
    caller: Caller,
    job: &str,
    body: Json<ProgressBody>,
) -> std::result::Result<Status, ApiError> {
    let job = job_id(job)?;
    let p = body.0;
    let p = Progress {
        phase: p.phase,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        rate: p.rate,
    };
    caller.run(move |b, a| b.report_progress(a, job, p)).await?;
    Ok(no_content())
}

/// Moves a job on: provisioning -> running, running -> capturing,
/// running or capturing -> succeeded.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/advance", tag = "agent",
    request_body = AdvanceBody,
    params(("job" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
#[post("/jobs/<job>/advance", data = "<body>")]
pub async fn advance(
    caller: Caller,
    job: &str,
    body: Json<AdvanceBody>,
) -> std::result::Result<Out<JobView>, ApiError> {
    let job = job_id(job)?;
    let to: JobState = parse(&body.0.state)?;
    let message = body.0.message;
    let j = caller
        .run(move |b, a| b.advance_job(a, job, to, &message))
        .await?;
    Ok(Out(JobView::from(&j)))
}

/// Fails a job, saying in which phase and why.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/fail", tag = "agent",
    request_body = FailBody,
    params(("job" = uuid::Uuid, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/jobs/<job>/fail", data = "<body>")]
pub async fn fail(
    caller: Caller,
    job: &str,
    body: Json<FailBody>,
) -> std::result::Result<Out<JobView>, ApiError> {
    let job = job_id(job)?;
    let FailBody { phase, reason } = body.0;
    let j = caller
        .run(move |b, a| b.fail_job(a, job, &phase, &reason))
        .await?;
    Ok(Out(JobView::from(&j)))
}

/// Issues a credential for a machine's agent (moderators and admins). The
/// boot path puts it on the management OS's kernel command line.
#[utoipa::path(post, path = "/api/v1/machines/{machine}/agent-token", tag = "machines",
    request_body(content = Option<AgentTokenBody>),
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[post("/machines/<machine>/agent-token", data = "<data>")]
pub async fn issue_agent_token(
    caller: Caller,
    machine: &str,
    info: BodyInfo,
    data: Data<'_>,
) -> std::result::Result<Created<CreatedToken>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let bytes = read_body(info.metrics(), data, crate::json::JSON_LIMIT).await?;
    let body: AgentTokenBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        AgentTokenBody::default()
    } else {
        parse_strict(&bytes)?
    };
    let ttl_ms = body
        .ttl_seconds
        .unwrap_or(DEFAULT_AGENT_TTL_SECONDS)
        .checked_mul(1000)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| ApiError::from(Error::invalid("ttl_seconds", "too large")))?;
    let (token, secret) = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.issue_agent_token(a, id, ttl_ms)
        })
        .await?;
    Ok(created(CreatedToken {
        token: TokenView::from(&token),
        secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_reject_truncation() {
        let h = ChunkHash::of(b"x");
        let mut body = h.0.to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        let r = parse_records(&body).expect("one record");
        assert_eq!(r, vec![(h, b"abc".to_vec())]);
        assert!(parse_records(&body[..body.len() - 1]).is_err());
        assert!(parse_records(&body[..10]).is_err());
        let mut zero = h.0.to_vec();
        zero.extend_from_slice(&0u32.to_le_bytes());
        assert!(parse_records(&zero).is_err());
        assert!(parse_records(&[]).expect("empty").is_empty());
    }

    #[test]
    fn frame_streams_are_length_prefixed() {
        let s = frame_stream(&[b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(s, [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']);
    }

    #[test]
    fn frames_read_as_the_frame_stream_whatever_the_read_size() {
        use rocket::tokio::io::AsyncReadExt;
        let frames: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; usize::from(i) * 37 % 300])
            .collect();
        let want = frame_stream(&frames);
        let rt = rocket::tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for step in [1usize, 3, 4, 5, 1000, 1 << 20] {
            let mut r = Frames::new(frames.clone());
            assert_eq!(r.len, want.len() as u64);
            let mut got = Vec::new();
            let mut piece = vec![0u8; step];
            loop {
                let n = rt.block_on(r.read(&mut piece)).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&piece[..n]);
            }
            assert_eq!(got, want, "reads of {step} bytes");
        }
    }
}
