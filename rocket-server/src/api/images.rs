//! Images and their versions: CRUD, streaming uploads (raw or multipart)
//! and streaming, ranged downloads.

use baas_core::model::{ImageId, UserId, VersionRef};
use rocket::data::Data;
use rocket::http::{ContentType, Status};
use rocket::{delete, get, patch, post};

use super::{no_content, parse};
use crate::auth::Caller;
use crate::download::{Conditions, Download};
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};
use crate::upload::{self, BodyInfo};

/// Images you may read (admins: all), optionally only those of `owner`.
#[utoipa::path(get, path = "/api/v1/images", tag = "images",
    params(("owner" = Option<String>, Query, description = "only this owner's images (a user id)")),
    responses((status = 200, body = [ImageView]), (status = 400, body = ErrorEnvelope)))]
#[get("/images?<owner>")]
pub async fn list_images(
    caller: Caller,
    owner: Option<&str>,
) -> Result<Out<Vec<ImageView>>, ApiError> {
    let owner: Option<UserId> = owner
        .map(|o| super::user_ref(caller.actor(), o))
        .transpose()?;
    let images = caller.run(move |b, a| b.list_images(a, owner)).await?;
    Ok(Out(images.iter().map(ImageView::from).collect()))
}

/// Creates an image and its blank version 0 (which stores nothing).
#[utoipa::path(post, path = "/api/v1/images", tag = "images", request_body = NewImageBody,
    responses((status = 201, body = CreatedImage), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[post("/images", data = "<body>")]
pub async fn create_image(
    caller: Caller,
    body: Json<NewImageBody>,
) -> Result<Created<CreatedImage>, ApiError> {
    let new = body.0.into_core()?;
    let (image, v0) = caller.run(move |b, a| b.create_image(a, new)).await?;
    Ok(created(CreatedImage {
        image: ImageView::from(&image),
        version: VersionView::from(&v0),
    }))
}

/// An image you may read.
#[utoipa::path(get, path = "/api/v1/images/{id}", tag = "images",
    params(("id" = uuid::Uuid, Path, description = "image id")),
    responses((status = 200, body = ImageView), (status = 404, body = ErrorEnvelope)))]
#[get("/images/<id>")]
pub async fn get_image(caller: Caller, id: &str) -> Result<Out<ImageView>, ApiError> {
    let id: ImageId = parse(id)?;
    let image = caller.run(move |b, a| b.get_image(a, id)).await?;
    Ok(Out(ImageView::from(&image)))
}

/// Renames, re-targets, shares or publishes an image (owner or admin;
/// publishing needs a moderator).
#[utoipa::path(patch, path = "/api/v1/images/{id}", tag = "images", request_body = ImagePatchBody,
    params(("id" = uuid::Uuid, Path, description = "image id")),
    responses((status = 200, body = ImageView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[patch("/images/<id>", data = "<body>")]
pub async fn update_image(
    caller: Caller,
    id: &str,
    body: Json<ImagePatchBody>,
) -> Result<Out<ImageView>, ApiError> {
    let id: ImageId = parse(id)?;
    let patch = body.0.into_core()?;
    let image = caller.run(move |b, a| b.update_image(a, id, patch)).await?;
    Ok(Out(ImageView::from(&image)))
}

/// Deletes one image (owner or admin); garbage collection reclaims its data.
#[utoipa::path(delete, path = "/api/v1/images/{id}", tag = "images",
    params(("id" = uuid::Uuid, Path, description = "image id")),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[delete("/images/<id>")]
pub async fn delete_image(caller: Caller, id: &str) -> Result<Status, ApiError> {
    let id: ImageId = parse(id)?;
    caller.run(move |b, a| b.delete_image(a, id)).await?;
    Ok(no_content())
}

/// An image's versions, by number.
#[utoipa::path(get, path = "/api/v1/images/{id}/versions", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id")),
    responses((status = 200, body = [VersionView]), (status = 404, body = ErrorEnvelope)))]
#[get("/images/<id>/versions")]
pub async fn list_versions(caller: Caller, id: &str) -> Result<Out<Vec<VersionView>>, ApiError> {
    let id: ImageId = parse(id)?;
    let versions = caller.run(move |b, a| b.list_versions(a, id)).await?;
    Ok(Out(versions.iter().map(VersionView::from).collect()))
}

/// Uploads the next version, streamed: a raw body
/// (`application/octet-stream`) or `multipart/form-data` (the first file
/// part, any field name; a `note` text part before it is kept).
#[utoipa::path(post, path = "/api/v1/images/{id}/versions", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("note" = Option<String>, Query, description = "a note stored with the version")),
    request_body(description = "the image bytes, raw or as a multipart form",
        content((Binary = "application/octet-stream"), (UploadForm = "multipart/form-data"))),
    responses((status = 201, body = VersionView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope)))]
#[post("/images/<id>/versions?<note>", data = "<data>")]
pub async fn upload_version(
    caller: Caller,
    id: &str,
    note: Option<String>,
    info: BodyInfo,
    data: Data<'_>,
) -> Result<Created<VersionView>, ApiError> {
    let id: ImageId = parse(id)?;
    let version = upload::import(&caller, id, info, data, note).await?;
    Ok(created(VersionView::from(&version)))
}

/// One version (`latest` for the newest), with its root hash.
#[utoipa::path(get, path = "/api/v1/images/{id}/versions/{version}", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("version" = String, Path, description = "a version number, or `latest`")),
    responses((status = 200, body = VersionView), (status = 404, body = ErrorEnvelope)))]
#[get("/images/<id>/versions/<version>")]
pub async fn get_version(
    caller: Caller,
    id: &str,
    version: &str,
) -> Result<Out<VersionView>, ApiError> {
    let id: ImageId = parse(id)?;
    let v: VersionRef = parse(version)?;
    let version = caller.run(move |b, a| b.get_version(a, id, v)).await?;
    Ok(Out(VersionView::from(&version)))
}

/// Deletes a version (owner or admin), unless a queued or running job
/// needs it.
#[utoipa::path(delete, path = "/api/v1/images/{id}/versions/{version}", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("version" = u32, Path, description = "a version number")),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[delete("/images/<id>/versions/<version>")]
pub async fn delete_version(caller: Caller, id: &str, version: &str) -> Result<Status, ApiError> {
    let id: ImageId = parse(id)?;
    let number = match parse::<VersionRef>(version)? {
        VersionRef::Number(n) => n,
        VersionRef::Latest => {
            return Err(baas_core::Error::invalid(
                "version",
                "name the version to delete by its number",
            )
            .into())
        }
    };
    caller
        .run(move |b, a| b.delete_version(a, id, number))
        .await?;
    Ok(no_content())
}

/// A version's bytes, streamed, with `ETag`, `Range` (206/416),
/// `If-None-Match` (304) and `HEAD`.
#[utoipa::path(get, path = "/api/v1/images/{id}/versions/{version}/content", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("version" = String, Path, description = "a version number, or `latest`"),
        ("Range" = Option<String>, Header, description = "one byte range, e.g. `bytes=1024-`"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier download")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary),
        (status = 206, content_type = "application/octet-stream", body = Binary),
        (status = 304), (status = 404, body = ErrorEnvelope), (status = 416, body = ErrorEnvelope)))]
#[get("/images/<id>/versions/<version>/content")]
pub async fn download_version(
    caller: Caller,
    id: &str,
    version: &str,
    conditions: Conditions,
) -> Result<Download, ApiError> {
    let id: ImageId = parse(id)?;
    let v: VersionRef = parse(version)?;
    let reader = caller.run(move |b, a| b.open_version(a, id, v)).await?;
    let name = format!("{id}-{}.img", reader.version().number);
    Ok(Download::new(reader, conditions, name))
}

/// A version's manifest in its canonical binary encoding (for clients that
/// compare chunks before uploading or flashing).
#[utoipa::path(get, path = "/api/v1/images/{id}/versions/{version}/manifest", tag = "versions",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("version" = String, Path, description = "a version number, or `latest`")),
    responses((status = 200, content_type = "application/octet-stream", body = Binary),
        (status = 404, body = ErrorEnvelope)))]
#[get("/images/<id>/versions/<version>/manifest")]
pub async fn get_manifest(
    caller: Caller,
    id: &str,
    version: &str,
) -> Result<(ContentType, Vec<u8>), ApiError> {
    let id: ImageId = parse(id)?;
    let v: VersionRef = parse(version)?;
    let (_, manifest) = caller.run(move |b, a| b.get_manifest(a, id, v)).await?;
    Ok((ContentType::Binary, manifest.encode()))
}
