//! The chunk-level, resumable upload protocol: send the manifest, learn
//! which chunks the server lacks, send only those (in any order, again
//! after a break), then commit. Re-uploading a mostly unchanged image sends
//! only its new chunks.

use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::{ImageId, UploadId};
use baas_core::ports::Put;
use baas_core::services::ImportOptions;
use rocket::data::Data;
use rocket::http::Status;
use rocket::{delete, get, post, put};

use super::{no_content, parse};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, parse_strict, read_body, Created, Out};

/// Largest manifest accepted (32 bytes per data chunk of 64 KiB: 64 MiB
/// describes 128 GiB of distinct data, and holes cost almost nothing).
const MANIFEST_LIMIT: u64 = 64 << 20;
/// Largest chunk frame accepted.
const FRAME_LIMIT: u64 = 1 << 20;

/// Starts a chunk-level upload of the next version of an image. The body
/// is the manifest in its canonical binary encoding.
#[utoipa::path(post, path = "/api/v1/images/{id}/uploads", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "image id")),
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "the manifest (`Manifest::encode`)"),
    responses((status = 201, body = UploadView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/images/<id>/uploads", data = "<data>")]
pub async fn begin_upload(
    caller: Caller,
    id: &str,
    req_info: crate::upload::BodyInfo,
    data: Data<'_>,
) -> Result<Created<UploadView>, ApiError> {
    let id: ImageId = parse(id)?;
    let bytes = read_body(req_info.metrics(), data, MANIFEST_LIMIT).await?;
    let manifest = Manifest::decode(&bytes)?;
    let (session, missing) = caller
        .run(move |b, a| b.begin_upload(a, id, manifest))
        .await?;
    Ok(created(UploadView {
        upload_id: session.id.uuid(),
        image_id: session.image.uuid(),
        missing: hexes(&missing),
    }))
}

/// The chunks an upload still lacks (ask after a break, then resume).
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "upload id")),
    responses((status = 200, body = MissingView), (status = 404, body = ErrorEnvelope)))]
#[get("/uploads/<id>")]
pub async fn upload_missing(caller: Caller, id: &str) -> Result<Out<MissingView>, ApiError> {
    let id: UploadId = parse(id)?;
    let missing = caller.run(move |b, a| b.upload_missing(a, id)).await?;
    Ok(Out(MissingView {
        upload_id: id.uuid(),
        missing: hexes(&missing),
    }))
}

/// Sends one chunk as a frame (`encode_frame`); it is decoded and checked
/// against its hash before anything is stored.
#[utoipa::path(put, path = "/api/v1/uploads/{id}/chunks/{hash}", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "upload id"),
        ("hash" = String, Path, description = "the chunk's blake3 hash, 64 hex digits")),
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "the chunk frame"),
    responses((status = 201, body = ChunkStored), (status = 200, body = ChunkStored),
        (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[put("/uploads/<id>/chunks/<hash>", data = "<data>")]
pub async fn upload_chunk(
    caller: Caller,
    id: &str,
    hash: &str,
    req_info: crate::upload::BodyInfo,
    data: Data<'_>,
) -> Result<(Status, Out<ChunkStored>), ApiError> {
    let id: UploadId = parse(id)?;
    let hash: ChunkHash = parse(hash)?;
    let frame = read_body(req_info.metrics(), data, FRAME_LIMIT).await?;
    let put = caller
        .run(move |b, a| b.upload_chunk(a, id, hash, &frame))
        .await?;
    Ok(match put {
        Put::New(n) => (
            Status::Created,
            Out(ChunkStored {
                new: true,
                stored_bytes: n,
            }),
        ),
        Put::Existing => (
            Status::Ok,
            Out(ChunkStored {
                new: false,
                stored_bytes: 0,
            }),
        ),
    })
}

/// Sends many chunks at once, as a record stream: for each chunk its
/// 32-byte hash, the frame's length (4 bytes, little-endian), the frame (at
/// most 256 chunks). Every frame is checked against its hash before any is
/// stored; the batch is made durable at once, so this is much faster than
/// one `PUT` per chunk.
#[utoipa::path(post, path = "/api/v1/uploads/{id}/chunks", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "upload id")),
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "for each chunk: 32-byte hash, u32 LE frame length, the frame"),
    responses((status = 200, body = super::agent::CaptureChunksView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/uploads/<id>/chunks", data = "<data>")]
pub async fn upload_chunks(
    caller: Caller,
    id: &str,
    req_info: crate::upload::BodyInfo,
    data: Data<'_>,
) -> Result<Out<super::agent::CaptureChunksView>, ApiError> {
    let id: UploadId = parse(id)?;
    let limit = baas_core::ports::MAX_CHUNKS_PER_CALL as u64 * (36 + FRAME_LIMIT);
    let bytes = read_body(req_info.metrics(), data, limit).await?;
    let records = super::agent::parse_records(&bytes)?;
    let puts = caller
        .run(move |b, a| b.upload_chunks(a, id, &records))
        .await?;
    let mut view = super::agent::CaptureChunksView {
        chunks: puts.len() as u64,
        new: 0,
        stored_bytes: 0,
    };
    for put in puts {
        if let Put::New(n) = put {
            view.new += 1;
            view.stored_bytes += n;
        }
    }
    Ok(Out(view))
}

/// Commits an upload once every chunk is there; the body (optional) may
/// carry a note.
#[utoipa::path(post, path = "/api/v1/uploads/{id}/commit", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "upload id")),
    request_body(content = Option<CommitBody>),
    responses((status = 201, body = VersionView), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)))]
#[post("/uploads/<id>/commit", data = "<data>")]
pub async fn commit_upload(
    caller: Caller,
    id: &str,
    req_info: crate::upload::BodyInfo,
    data: Data<'_>,
) -> Result<Created<VersionView>, ApiError> {
    let id: UploadId = parse(id)?;
    let bytes = read_body(req_info.metrics(), data, crate::json::JSON_LIMIT).await?;
    let body: CommitBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CommitBody::default()
    } else {
        parse_strict(&bytes)?
    };
    let opts = ImportOptions { note: body.note };
    let version = caller.run(move |b, a| b.commit_upload(a, id, opts)).await?;
    Ok(created(VersionView::from(&version)))
}

/// Abandons an upload; garbage collection reclaims its chunks.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = uuid::Uuid, Path, description = "upload id")),
    responses((status = 204), (status = 404, body = ErrorEnvelope)))]
#[delete("/uploads/<id>")]
pub async fn abort_upload(caller: Caller, id: &str) -> Result<Status, ApiError> {
    let id: UploadId = parse(id)?;
    caller.run(move |b, a| b.abort_upload(a, id)).await?;
    Ok(no_content())
}
