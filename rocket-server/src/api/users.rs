//! Users (`/api/v1/users`, with `me` for yourself) and their API tokens.

use baas_core::model::TokenId;
use rocket::http::Status;
use rocket::{delete, get, patch, post};

use super::{no_content, parse, user_ref};
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};

/// Every user (moderators and admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = [UserView]), (status = 403, body = ErrorEnvelope)))]
#[get("/users")]
pub async fn list_users(caller: Caller) -> Result<Out<Vec<UserView>>, ApiError> {
    let users = caller.run(|b, a| b.list_users(a)).await?;
    Ok(Out(users.iter().map(UserView::from).collect()))
}

/// Creates a user (admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUserBody,
    responses((status = 201, body = UserView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/users", data = "<body>")]
pub async fn create_user(
    caller: Caller,
    body: Json<NewUserBody>,
) -> Result<Created<UserView>, ApiError> {
    let new = body.0.into_core()?;
    let user = caller.run(move |b, a| b.create_user(a, new)).await?;
    Ok(created(UserView::from(&user)))
}

/// A user: yourself (`me`), or anyone for moderators and admins.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "a user id, or `me`")),
    responses((status = 200, body = UserView), (status = 404, body = ErrorEnvelope)))]
#[get("/users/<id>")]
pub async fn get_user(caller: Caller, id: &str) -> Result<Out<UserView>, ApiError> {
    let id = user_ref(caller.actor(), id)?;
    let user = caller.run(move |b, a| b.get_user(a, id)).await?;
    Ok(Out(UserView::from(&user)))
}

/// Changes a user: your own display name and e-mail; admins change others
/// and roles (never their own role).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserPatchBody,
    params(("id" = String, Path, description = "a user id, or `me`")),
    responses((status = 200, body = UserView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[patch("/users/<id>", data = "<body>")]
pub async fn update_user(
    caller: Caller,
    id: &str,
    body: Json<UserPatchBody>,
) -> Result<Out<UserView>, ApiError> {
    let id = user_ref(caller.actor(), id)?;
    let patch = body.0.into_core()?;
    let user = caller.run(move |b, a| b.update_user(a, id, patch)).await?;
    Ok(Out(UserView::from(&user)))
}

/// Deletes a user with their tokens, images and setups (admins; not
/// yourself).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "a user id")),
    responses((status = 204), (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[delete("/users/<id>")]
pub async fn delete_user(caller: Caller, id: &str) -> Result<Status, ApiError> {
    let id = user_ref(caller.actor(), id)?;
    caller.run(move |b, a| b.delete_user(a, id)).await?;
    Ok(no_content())
}

/// A user's tokens, without secrets (yourself, or anyone for admins).
#[utoipa::path(get, path = "/api/v1/users/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, description = "a user id, or `me`")),
    responses((status = 200, body = [TokenView]), (status = 403, body = ErrorEnvelope)))]
#[get("/users/<id>/tokens")]
pub async fn list_tokens(caller: Caller, id: &str) -> Result<Out<Vec<TokenView>>, ApiError> {
    let id = user_ref(caller.actor(), id)?;
    let tokens = caller.run(move |b, a| b.list_tokens(a, id)).await?;
    Ok(Out(tokens.iter().map(TokenView::from).collect()))
}

/// Creates a token; the secret is in this response only.
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "tokens", request_body = NewTokenBody,
    params(("id" = String, Path, description = "a user id, or `me`")),
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorEnvelope)))]
#[post("/users/<id>/tokens", data = "<body>")]
pub async fn create_token(
    caller: Caller,
    id: &str,
    body: Json<NewTokenBody>,
) -> Result<Created<CreatedToken>, ApiError> {
    let id = user_ref(caller.actor(), id)?;
    let ttl = body.0.ttl_ms()?;
    let name = body.0.name;
    let (token, secret) = caller
        .run(move |b, a| b.create_token(a, id, &name, ttl))
        .await?;
    Ok(created(CreatedToken {
        token: TokenView::from(&token),
        secret,
    }))
}

/// Revokes a token (its owner or an admin).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "a token id")),
    responses((status = 204), (status = 404, body = ErrorEnvelope)))]
#[delete("/tokens/<id>")]
pub async fn revoke_token(caller: Caller, id: &str) -> Result<Status, ApiError> {
    let id: TokenId = parse(id)?;
    caller.run(move |b, a| b.revoke_token(a, id)).await?;
    Ok(no_content())
}
