//! Administration: garbage collection and storage figures.

use rocket::{get, post};

use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::Out;

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
