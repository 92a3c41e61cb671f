//! Request logging and metrics: a fairing that gives every request an id
//! and logs one line per request (id, method, path, status, duration), and
//! the counters behind `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Data, Request, Response};

/// Counters kept for the whole process, shared through managed state.
#[derive(Debug, Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    uploads_in_progress: AtomicU64,
    uploads_total: AtomicU64,
}

impl Metrics {
    /// Counts a response of `status`.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts request body bytes read.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts response body bytes sent.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks an upload as running until the guard is dropped.
    pub fn upload_started(self: &Arc<Self>) -> UploadGuard {
        self.uploads_in_progress.fetch_add(1, Ordering::Relaxed);
        self.uploads_total.fetch_add(1, Ordering::Relaxed);
        UploadGuard(self.clone())
    }

    /// Requests answered with a status in `class` (1 to 5).
    pub fn requests(&self, class: usize) -> u64 {
        self.by_class[class.clamp(1, 5) - 1].load(Ordering::Relaxed)
    }

    /// Body bytes received.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Body bytes sent.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Uploads running now.
    pub fn uploads_in_progress(&self) -> u64 {
        self.uploads_in_progress.load(Ordering::Relaxed)
    }

    /// Uploads started since the process started.
    pub fn uploads_total(&self) -> u64 {
        self.uploads_total.load(Ordering::Relaxed)
    }
}

/// Decrements the uploads-in-progress gauge when dropped.
#[derive(Debug)]
pub struct UploadGuard(Arc<Metrics>);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.uploads_in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request bookkeeping, in the request's local cache.
#[derive(Debug)]
struct Started {
    id: String,
    at: Instant,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn started<'r>(req: &'r Request<'_>) -> &'r Started {
    req.local_cache(|| Started {
        id: format!(
            "{:08x}-{:06x}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
        at: Instant::now(),
    })
}

/// The id of this request (also sent back as `X-Request-Id`).
pub fn request_id<'r>(req: &'r Request<'_>) -> &'r str {
    &started(req).id
}

/// Logs one line per request and counts it.
#[derive(Debug)]
pub struct RequestLog {
    /// The counters.
    pub metrics: Arc<Metrics>,
}

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info {
            name: "request log and metrics",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        started(req);
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let s = started(req);
        let status = res.status().code;
        self.metrics.count_status(status);
        // Streamed bodies (downloads) count their bytes as they go.
        if let Some(n) = res.body().preset_size() {
            if !crate::download::is_streamed(req) {
                self.metrics.add_out(n as u64);
            }
        }
        res.set_header(Header::new("X-Request-Id", s.id.clone()));
        let ms = s.at.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "baas_server::request",
            request_id = %s.id,
            method = %req.method(),
            path = %req.uri().path(),
            status,
            duration_ms = format_args!("{ms:.2}"),
            "{} {} {}",
            req.method(),
            req.uri().path(),
            status
        );
    }
}
