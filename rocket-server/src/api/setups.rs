//! Setups: ordered lists of image versions and target disks, owned by a
//! user, queued on machines as jobs.

use baas_core::model::{SetupId, UserId};
use rocket::http::Status;
use rocket::{delete, get, post, put};

use super::{no_content, parse, user_ref};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};

/// Your setups (admins: everyone's, or `owner`'s).
#[utoipa::path(get, path = "/api/v1/setups", tag = "setups",
    params(("owner" = Option<String>, Query, description = "only this owner's setups (a user id, or `me`)")),
    responses((status = 200, body = [SetupView]), (status = 403, body = ErrorEnvelope)))]
#[get("/setups?<owner>")]
pub async fn list_setups(
    caller: Caller,
    owner: Option<&str>,
) -> Result<Out<Vec<SetupView>>, ApiError> {
    let owner: Option<UserId> = owner.map(|o| user_ref(caller.actor(), o)).transpose()?;
    let setups = caller.run(move |b, a| b.list_setups(a, owner)).await?;
    Ok(Out(setups.iter().map(SetupView::from).collect()))
}

/// Creates a setup owned by you.
#[utoipa::path(post, path = "/api/v1/setups", tag = "setups", request_body = SetupBody,
    responses((status = 201, body = SetupView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)))]
#[post("/setups", data = "<body>")]
pub async fn create_setup(
    caller: Caller,
    body: Json<SetupBody>,
) -> Result<Created<SetupView>, ApiError> {
    let new = body.0.into_core()?;
    let setup = caller.run(move |b, a| b.create_setup(a, new)).await?;
    Ok(created(SetupView::from(&setup)))
}

/// A setup (owner or admin).
#[utoipa::path(get, path = "/api/v1/setups/{id}", tag = "setups",
    params(("id" = uuid::Uuid, Path, description = "setup id")),
    responses((status = 200, body = SetupView), (status = 404, body = ErrorEnvelope)))]
#[get("/setups/<id>")]
pub async fn get_setup(caller: Caller, id: &str) -> Result<Out<SetupView>, ApiError> {
    let id: SetupId = parse(id)?;
    let setup = caller.run(move |b, a| b.get_setup(a, id)).await?;
    Ok(Out(SetupView::from(&setup)))
}

/// Replaces a setup's name and entries (owner or admin).
#[utoipa::path(put, path = "/api/v1/setups/{id}", tag = "setups", request_body = SetupBody,
    params(("id" = uuid::Uuid, Path, description = "setup id")),
    responses((status = 200, body = SetupView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[put("/setups/<id>", data = "<body>")]
pub async fn update_setup(
    caller: Caller,
    id: &str,
    body: Json<SetupBody>,
) -> Result<Out<SetupView>, ApiError> {
    let id: SetupId = parse(id)?;
    let new = body.0.into_core()?;
    let setup = caller.run(move |b, a| b.update_setup(a, id, new)).await?;
    Ok(Out(SetupView::from(&setup)))
}

/// Deletes a setup (owner or admin); queued jobs keep what they resolved.
#[utoipa::path(delete, path = "/api/v1/setups/{id}", tag = "setups",
    params(("id" = uuid::Uuid, Path, description = "setup id")),
    responses((status = 204), (status = 404, body = ErrorEnvelope)))]
#[delete("/setups/<id>")]
pub async fn delete_setup(caller: Caller, id: &str) -> Result<Status, ApiError> {
    let id: SetupId = parse(id)?;
    caller.run(move |b, a| b.delete_setup(a, id)).await?;
    Ok(no_content())
}
