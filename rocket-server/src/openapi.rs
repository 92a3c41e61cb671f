//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the DTOs' `ToSchema` derives, so it cannot drift from the
//! code (a test checks that every mounted route is in it, the original's
//! routes under the tag `original` included).

use rocket::get;
use rocket::http::ContentType;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{api, compat};

/// The document's root.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "BAAS: Bare Metal as a Service",
        description = "Images, versions, setups, machines and the boot queue. Every route \
            but /healthz needs `Authorization: Bearer <token>`. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    paths(
        api::users::list_users,
        api::users::create_user,
        api::users::get_user,
        api::users::update_user,
        api::users::delete_user,
        api::users::list_tokens,
        api::users::create_token,
        api::users::revoke_token,
        api::images::list_images,
        api::images::create_image,
        api::images::get_image,
        api::images::update_image,
        api::images::delete_image,
        api::images::list_versions,
        api::images::upload_version,
        api::images::get_version,
        api::images::delete_version,
        api::images::download_version,
        api::images::get_manifest,
        api::uploads::begin_upload,
        api::uploads::upload_missing,
        api::uploads::upload_chunk,
        api::uploads::upload_chunks,
        api::uploads::commit_upload,
        api::uploads::abort_upload,
        api::setups::list_setups,
        api::setups::create_setup,
        api::setups::get_setup,
        api::setups::update_setup,
        api::setups::delete_setup,
        api::machines::list_machines,
        api::machines::register_machine,
        api::machines::get_machine,
        api::machines::update_machine,
        api::machines::machine_queue,
        api::machines::enqueue_job,
        api::machines::accept_machine,
        api::machines::retire_machine,
        api::machines::set_boot_config,
        api::machines::power_machine,
        api::machines::machine_events,
        api::jobs::list_jobs,
        api::jobs::get_job,
        api::jobs::job_events,
        api::jobs::cancel_job,
        api::jobs::release_job,
        api::jobs::place_job,
        api::jobs::placement,
        api::jobs::list_placements,
        api::jobs::get_placement,
        api::jobs::cancel_placement,
        api::boot::chain,
        api::boot::decide,
        api::boot::mos_file,
        api::admin::collect_garbage,
        api::admin::storage_usage,
        api::admin::get_settings,
        api::admin::put_settings,
        openapi_json,
        crate::ops::healthz,
        crate::ops::metrics,
        compat::create_user,
        compat::me,
        compat::create_image,
        compat::user_images,
        compat::user_setups,
        compat::create_setup,
        compat::download,
        compat::upload_image,
        compat::list_machines,
        compat::get_machine,
        compat::boot,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi().merge_from(api::agent::AgentApi::openapi());
    common_errors(&mut doc);
    doc
}

/// Documents on every operation the errors any request can get whatever
/// the route: a malformed path or query value (400), a missing or bad
/// token (401), too many bad tokens from one address (429, see
/// `ratelimit.rs`) and the database out of reach (503). schemathesis
/// checks every answer against the document.
fn common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            for (code, what) in [
                ("400", "a path or query value is malformed"),
                ("401", "no valid bearer token"),
                ("429", "too many failed authentications from this address"),
                ("503", "the database or chunk store is out of reach; retry"),
            ] {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(what));
            }
        }
    }
}

/// This document, as JSON.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json(_caller: Caller) -> Result<(ContentType, String), ApiError> {
    let json = document()
        .to_pretty_json()
        .map_err(|e| ApiError::internal(format!("serialising the OpenAPI document: {e}")))?;
    Ok((ContentType::JSON, json))
}
