//! Administration: garbage collection, storage figures, and the server
//! settings an admin changes at runtime.

use baas_core::services::{AdminSettings, AdminSettingsPatch, EnrollPolicy};
use rocket::{get, post, put};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse;
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{Json, Out};

/// Runs one garbage collection (admins).
#[utoipa::path(post, path = "/api/v1/admin/gc", tag = "admin",
    responses((status = 200, body = GcReportView), (status = 403, body = ErrorEnvelope)))]
#[post("/admin/gc")]
pub async fn collect_garbage(caller: Caller) -> Result<Out<GcReportView>, ApiError> {
    let report = caller.run(|b, a| b.collect_garbage(a)).await?;
    Ok(Out(report.into()))
}

/// Space used by the chunk store (moderators and admins).
#[utoipa::path(get, path = "/api/v1/admin/storage", tag = "admin",
    responses((status = 200, body = UsageView), (status = 403, body = ErrorEnvelope)))]
#[get("/admin/storage")]
pub async fn storage_usage(caller: Caller) -> Result<Out<UsageView>, ApiError> {
    let usage = caller.run(|b, a| b.storage_usage(a)).await?;
    Ok(Out(usage.into()))
}

/// The server settings an admin changes at runtime. They live in the
/// database: every server sharing it follows them, and they survive
/// restarts (the command line only gives their first values).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSettingsView {
    /// Machines with an unknown MAC that PXE-boot: `enroll` (they boot the
    /// management OS, report their inventory and wait as `pending` for an
    /// admin) or `ignore` (they boot their local disk).
    pub unknown_machines: String,
}

impl From<AdminSettings> for AdminSettingsView {
    fn from(s: AdminSettings) -> Self {
        AdminSettingsView {
            unknown_machines: s.unknown_machines.as_str().to_string(),
        }
    }
}

/// A change to the server settings; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSettingsBody {
    /// `enroll` or `ignore`.
    pub unknown_machines: Option<String>,
}

/// The server settings (admins).
#[utoipa::path(get, path = "/api/v1/admin/settings", tag = "admin",
    responses((status = 200, body = AdminSettingsView), (status = 403, body = ErrorEnvelope)))]
#[get("/admin/settings")]
pub async fn get_settings(caller: Caller) -> Result<Out<AdminSettingsView>, ApiError> {
    let s = caller.run(|b, a| b.admin_settings(a)).await?;
    Ok(Out(s.into()))
}

/// Changes the server settings (admins), effective at once: the next boot
/// decision of any server on this database follows the new enrollment
/// policy.
#[utoipa::path(put, path = "/api/v1/admin/settings", tag = "admin",
    request_body = AdminSettingsBody,
    responses((status = 200, body = AdminSettingsView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)))]
#[put("/admin/settings", data = "<body>")]
pub async fn put_settings(
    caller: Caller,
    body: Json<AdminSettingsBody>,
) -> Result<Out<AdminSettingsView>, ApiError> {
    let patch = AdminSettingsPatch {
        unknown_machines: body
            .0
            .unknown_machines
            .as_deref()
            .map(parse::<EnrollPolicy>)
            .transpose()?,
    };
    let s = caller
        .run(move |b, a| b.set_admin_settings(a, patch))
        .await?;
    Ok(Out(s.into()))
}
