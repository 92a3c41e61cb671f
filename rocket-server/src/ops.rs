//! Operations endpoints outside the versioned API: `GET /healthz` (no
//! authentication, for load balancers) and `GET /metrics` (Prometheus text
//! format, authenticated).

use std::fmt::Write;
use std::sync::Arc;

use baas_core::model::JobState;
use baas_core::ports::JobFilter;
use rocket::http::ContentType;
use rocket::{get, State};

use crate::auth::Caller;
use crate::dto::Health;
use crate::error::ApiError;
use crate::json::Out;
use crate::telemetry::Metrics;

/// Liveness: answers as long as the server serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
#[get("/healthz")]
pub fn healthz() -> Out<Health> {
    Out(Health {
        status: "ok".into(),
    })
}

const WAITING: [JobState; 4] = [
    JobState::Queued,
    JobState::Provisioning,
    JobState::Running,
    JobState::Capturing,
];

/// Counters in the Prometheus text format: requests by status class, body
/// bytes in and out, uploads in progress, and the jobs in each unfinished
/// state that the caller may see (moderators and admins: all).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
#[get("/metrics")]
pub async fn metrics(
    caller: Caller,
    metrics: &State<Arc<Metrics>>,
) -> Result<(ContentType, String), ApiError> {
    let jobs = caller
        .run(|b, a| {
            b.list_jobs(
                a,
                JobFilter {
                    states: WAITING.to_vec(),
                    ..JobFilter::default()
                },
            )
        })
        .await?;
    let mut out = String::new();
    let m = metrics.inner();
    let _ = writeln!(
        out,
        "# HELP baas_http_requests_total HTTP requests answered, by status class."
    );
    let _ = writeln!(out, "# TYPE baas_http_requests_total counter");
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "baas_http_requests_total{{class=\"{class}xx\"}} {}",
            m.requests(class)
        );
    }
    let _ = writeln!(
        out,
        "# HELP baas_http_request_bytes_total Request body bytes read."
    );
    let _ = writeln!(out, "# TYPE baas_http_request_bytes_total counter");
    let _ = writeln!(out, "baas_http_request_bytes_total {}", m.bytes_in());
    let _ = writeln!(
        out,
        "# HELP baas_http_response_bytes_total Response body bytes sent."
    );
    let _ = writeln!(out, "# TYPE baas_http_response_bytes_total counter");
    let _ = writeln!(out, "baas_http_response_bytes_total {}", m.bytes_out());
    let _ = writeln!(
        out,
        "# HELP baas_uploads_in_progress Streaming uploads running now."
    );
    let _ = writeln!(out, "# TYPE baas_uploads_in_progress gauge");
    let _ = writeln!(out, "baas_uploads_in_progress {}", m.uploads_in_progress());
    let _ = writeln!(out, "# HELP baas_uploads_total Streaming uploads started.");
    let _ = writeln!(out, "# TYPE baas_uploads_total counter");
    let _ = writeln!(out, "baas_uploads_total {}", m.uploads_total());
    let _ = writeln!(
        out,
        "# HELP baas_jobs Unfinished jobs by state (those the caller may see)."
    );
    let _ = writeln!(out, "# TYPE baas_jobs gauge");
    for state in WAITING {
        let n = jobs.iter().filter(|j| j.state == state).count();
        let _ = writeln!(out, "baas_jobs{{state=\"{}\"}} {n}", state.as_str());
    }
    let ct = ContentType::new("text", "plain").with_params(("version", "0.0.4"));
    Ok((ct, out))
}
