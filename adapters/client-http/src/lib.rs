//! The agent's link to the BAAS server over HTTP: [`HttpAgentLink`]
//! implements `baas_core::ports::AgentLink` on the server's agent endpoints
//! (`/api/v1/agent/...`) with ureq.
//!
//! Every call is bounded in time (a connect timeout, a read timeout that a
//! stalled transfer trips, and a cap on the whole call) and retried a
//! bounded number of times, with exponential backoff and full jitter, when
//! it may pass on a second try: the server could not be reached, the
//! connection broke, or the server answered 5xx (503 included, honouring
//! `Retry-After`). A 4xx is never retried: it will not get better. Errors
//! come back as the core's kinds, from the server's JSON envelope.
//!
//! Retrying a call whose first attempt may have reached the server is safe
//! for every call but two, which this client reconciles: `advance` and
//! `fail` answered `409` after such a retry look the job up and succeed if
//! it already is where they were taking it. A retried `commit_capture`
//! whose first attempt committed answers `404` (the upload is gone); the
//! capture is then simply redone.
//!
//! Architecture invariant: this crate knows HTTP and the wire formats of
//! `rocket-server`'s agent module, and nothing of how the core decides.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baas_core::content::{ChunkHash, Manifest};
use baas_core::delta::{self, DeltaReply, DeltaWant};
use baas_core::model::*;
use baas_core::ports::{agent_link, AgentLink, MAX_CHUNKS_PER_CALL};
use baas_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use ureq::http::{Method, Request};

pub mod rest;
mod wire;

pub use rest::{RestClient, RestConfig};

use wire::*;

/// Longest wait one `next-job` request asks the server for (the server's
/// cap); longer waits are several requests.
const SERVER_MAX_WAIT_MS: u64 = 30_000;
/// Largest response body read (a manifest of a very large disk, or a full
/// batch of frames).
const MAX_RESPONSE: u64 = 80 << 20;
/// Most log lines per request (the server's limit).
const MAX_LOG_LINES: usize = 1000;

/// Timeouts and retries.
#[derive(Debug, Clone)]
pub struct HttpLinkConfig {
    /// Connecting (and TLS) may take this long.
    pub connect_timeout: Duration,
    /// No byte may take longer than this to arrive (a stalled transfer).
    pub read_timeout: Duration,
    /// One attempt of one call may take this long in all (long polls get
    /// their wait on top).
    pub call_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub attempts: u32,
    /// First backoff; it doubles with every retry...
    pub backoff_base: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
}

impl Default for HttpLinkConfig {
    fn default() -> Self {
        HttpLinkConfig {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
            attempts: 8,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What the link has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Attempts sent (retries included).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Bytes of chunk frames and deltas received (`chunks`,
    /// `chunk_deltas`).
    pub frame_bytes_received: u64,
    /// Bytes of chunk frames sent (`upload_chunks`).
    pub frame_bytes_sent: u64,
    /// Request body bytes of `chunks` and `chunk_deltas` calls: what asking
    /// for chunks cost on the way up (block hashes, for deltas).
    pub fetch_request_bytes: u64,
    /// Chunks that came as deltas rather than frames (`chunk_deltas`).
    pub deltas_received: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    frame_bytes_received: AtomicU64,
    frame_bytes_sent: AtomicU64,
    fetch_request_bytes: AtomicU64,
    deltas_received: AtomicU64,
}

/// An [`AgentLink`] over HTTP, as the agent of the machine with one MAC.
#[derive(Clone)]
pub struct HttpAgentLink {
    http: ureq::Agent,
    base: String,
    auth: String,
    machine: String,
    config: HttpLinkConfig,
    counters: Arc<Counters>,
    jitter: Arc<AtomicU64>,
    /// Set once the server answered that it has no deltas route (a server
    /// older than this agent): `chunk_deltas` then asks for whole frames.
    no_deltas_route: Arc<AtomicBool>,
}

impl std::fmt::Debug for HttpAgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("HttpAgentLink")
            .field("base", &self.base)
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

/// A response that arrived (any status).
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// The outcome of a call after its retries, and whether an attempt that
/// may have reached the server failed before the last one.
struct Outcome {
    result: Result<Reply>,
    uncertain: bool,
}

/// A request body.
enum Body<'a> {
    None,
    Json(Vec<u8>),
    Binary(&'a [u8]),
}

/// Checks a server URL (`http://host[:port]` or https) and a bearer token
/// as a caller typed them: the URL without a trailing slash and the token
/// trimmed, or an `Invalid` error naming `url_field` or `token`.
pub(crate) fn endpoint(base_url: &str, token: &str, url_field: &str) -> Result<(String, String)> {
    let base = base_url.trim().trim_end_matches('/').to_string();
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::invalid(
                url_field,
                format!("{base_url:?} is not an http:// or https:// URL"),
            )
        })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(Error::invalid(
            url_field,
            format!("{base_url:?} has no host"),
        ));
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "token",
            "must be a non-empty printable token",
        ));
    }
    Ok((base, token.to_string()))
}

impl HttpAgentLink {
    /// A link to the server at `base_url` (`http://host:port`, or https) as
    /// the agent of the machine with `mac`, authenticated by `token`.
    pub fn new(
        base_url: &str,
        mac: MacAddress,
        token: &str,
        config: HttpLinkConfig,
    ) -> Result<HttpAgentLink> {
        let (base, token) = endpoint(base_url, token, "server")?;
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(config.connect_timeout))
                .timeout_per_read(Some(config.read_timeout))
                .timeout_global(Some(config.call_timeout))
                .user_agent(concat!("baas-agent/", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(HttpAgentLink {
            http,
            base,
            auth: format!("Bearer {token}"),
            machine: mac.to_string(),
            config: HttpLinkConfig {
                attempts: config.attempts.max(1),
                ..config
            },
            counters: Arc::new(Counters::default()),
            jitter: Arc::new(AtomicU64::new(seed | 1)),
            no_deltas_route: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The counters so far (shared by clones of this link).
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            frame_bytes_received: c.frame_bytes_received.load(Ordering::Relaxed),
            frame_bytes_sent: c.frame_bytes_sent.load(Ordering::Relaxed),
            fetch_request_bytes: c.fetch_request_bytes.load(Ordering::Relaxed),
            deltas_received: c.deltas_received.load(Ordering::Relaxed),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A random number (xorshift64*), for jitter.
    fn random(&self) -> u64 {
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.jitter.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The pause before retry number `retry` (from 1): exponential, capped,
    /// with full jitter over its upper half, and at least `Retry-After`.
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.config.backoff_max);
        let half = exp.as_millis() as u64 / 2;
        let jittered = Duration::from_millis(half + self.random() % (half + 1));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.config.backoff_max)),
            None => jittered,
        }
    }

    /// One attempt.
    fn once(
        &self,
        method: &Method,
        url: &str,
        body: &Body<'_>,
        extra_wait: Duration,
    ) -> std::result::Result<Reply, ureq::Error> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(url)
            .header("Authorization", &self.auth)
            .header("Accept", "application/json, application/octet-stream");
        let (bytes, sent): (&[u8], u64) = match body {
            Body::None => (&[], 0),
            Body::Json(v) => {
                b = b.header("Content-Type", "application/json");
                (v, v.len() as u64)
            }
            Body::Binary(v) => {
                b = b.header("Content-Type", "application/octet-stream");
                (v, v.len() as u64)
            }
        };
        let req = b.body(bytes).map_err(ureq::Error::Http)?;
        let req = if extra_wait.is_zero() {
            req
        } else {
            // A long poll: the server is silent for up to the wait.
            self.http
                .configure_request(req)
                .timeout_per_read(Some(self.config.read_timeout + extra_wait))
                .timeout_global(Some(self.config.call_timeout + extra_wait))
                .build()
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        let mut res = self.http.run(req)?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Room for the whole answer up front: growing a Vec while reading a
        // multi-MiB frame stream copies it about once more.
        let declared = res
            .headers()
            .get("Content-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |n| n.min(MAX_RESPONSE) as usize);
        let mut body = Vec::with_capacity(declared);
        std::io::Read::read_to_end(
            &mut res.body_mut().with_config().limit(MAX_RESPONSE).reader(),
            &mut body,
        )
        .map_err(ureq::Error::from)?;
        self.counters
            .bytes_received
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// A call with its retries. `what` names it in errors and logs.
    fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Body<'_>,
        extra_wait: Duration,
    ) -> Outcome {
        let url = format!("{}{path}", self.base);
        let mut uncertain = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.config.attempts;
            let (err, retry_after, reached) = match self.once(&method, &url, &body, extra_wait) {
                Ok(reply) if reply.status < 400 => {
                    return Outcome {
                        result: Ok(reply),
                        uncertain,
                    }
                }
                Ok(reply) => {
                    let err = error_of(what, reply.status, &reply.body);
                    if reply.status < 500 || last {
                        return Outcome {
                            result: Err(err),
                            uncertain,
                        };
                    }
                    // 503 means "not done"; other 5xx may have done part.
                    (err, reply.retry_after, reply.status != 503)
                }
                Err(e) => {
                    let reached = !matches!(
                        e,
                        ureq::Error::ConnectionFailed
                            | ureq::Error::HostNotFound
                            | ureq::Error::Timeout(ureq::Timeout::Connect)
                            | ureq::Error::Timeout(ureq::Timeout::Resolve)
                    ) && !is_refused(&e);
                    let err = transport_error(what, &self.base, e);
                    if err.kind() != ErrorKind::Unavailable || last {
                        return Outcome {
                            result: Err(err),
                            uncertain: uncertain || reached,
                        };
                    }
                    (err, None, reached)
                }
            };
            uncertain |= reached;
            let pause = self.backoff(attempt, retry_after);
            tracing::warn!(
                call = what,
                attempt,
                of = self.config.attempts,
                "{}; retrying in {} ms",
                err.message(),
                pause.as_millis()
            );
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(pause);
        }
    }

    fn json<T: DeserializeOwned>(what: &str, reply: &Reply) -> Result<T> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            Error::internal(format!(
                "{what}: the server's answer is not the expected JSON"
            ))
            .with_source(e)
        })
    }

    fn to_json(v: &impl serde::Serialize) -> Result<Body<'static>> {
        serde_json::to_vec(v)
            .map(Body::Json)
            .map_err(|e| Error::internal("encoding a request failed").with_source(e))
    }

    /// After an uncertain retry answered 409: the job, if it already is in
    /// `want`.
    fn reconcile(&self, job: JobId, want: JobState) -> Option<Job> {
        let out = self.call(
            "read job",
            Method::GET,
            &format!("/api/v1/jobs/{job}"),
            Body::None,
            Duration::ZERO,
        );
        let reply = out.result.ok()?;
        let job = Self::json::<JobWire>("read job", &reply)
            .and_then(JobWire::into_core)
            .ok()?;
        (job.state == want).then_some(job)
    }

    fn transition(
        &self,
        what: &str,
        job: JobId,
        path: String,
        body: Body<'_>,
        want: JobState,
    ) -> Result<Job> {
        let out = self.call(what, Method::POST, &path, body, Duration::ZERO);
        match out.result {
            Ok(reply) => Self::json::<JobWire>(what, &reply)?.into_core(),
            Err(e) if out.uncertain && e.kind() == ErrorKind::Conflict => {
                match self.reconcile(job, want) {
                    Some(j) => {
                        tracing::info!(%job, "{what}: an earlier attempt had already done it");
                        Ok(j)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn is_refused(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// The core error for a failure below HTTP: unavailable (retryable) unless
/// the request itself was wrong.
fn transport_error(what: &str, base: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            Error::invalid(
                "server",
                format!("{what}: cannot build a request to {base}"),
            )
            .with_source(e)
        }
        ureq::Error::BodyExceedsLimit(n) => Error::internal(format!(
            "{what}: the server's answer is larger than {n} bytes"
        )),
        other => Error::unavailable(format!(
            "{what}: cannot reach the server at {base}: {other}"
        ))
        .with_source(other),
    }
}

/// Splits a frame stream (u32 LE length, frame; repeated) into `n` frames.
fn split_frames(what: &str, mut body: &[u8], n: usize) -> Result<Vec<Vec<u8>>> {
    let bad = |why: &str| Error::internal(format!("{what}: malformed frame stream: {why}"));
    let mut out = Vec::with_capacity(n);
    while !body.is_empty() {
        let (len, rest) = body
            .split_at_checked(4)
            .ok_or_else(|| bad("truncated length"))?;
        let mut l = [0u8; 4];
        l.copy_from_slice(len);
        let len = u32::from_le_bytes(l) as usize;
        let (frame, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| bad("truncated frame"))?;
        out.push(frame.to_vec());
        body = rest;
    }
    if out.len() != n {
        return Err(bad(&format!("{} frames for {n} hashes", out.len())));
    }
    Ok(out)
}

impl AgentLink for HttpAgentLink {
    fn report_inventory(&self, inventory: &Inventory) -> Result<Machine> {
        let what = "report inventory";
        let reply = self
            .call(
                what,
                Method::POST,
                &format!("/api/v1/agent/machines/{}/inventory", self.machine),
                Self::to_json(&InventoryWire::from(inventory))?,
                Duration::ZERO,
            )
            .result?;
        Self::json::<MachineWire>(what, &reply)?.into_core()
    }

    fn next_job(&self, wait_ms: u64) -> Result<Option<Job>> {
        let what = "next job";
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = (left.as_millis() as u64).min(SERVER_MAX_WAIT_MS);
            let reply = self
                .call(
                    what,
                    Method::GET,
                    &format!(
                        "/api/v1/agent/machines/{}/next-job?wait_ms={wait}",
                        self.machine
                    ),
                    Body::None,
                    Duration::from_millis(wait),
                )
                .result?;
            if reply.status == 200 {
                return Self::json::<JobWire>(what, &reply)?.into_core().map(Some);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn manifest(&self, job: JobId, entry: usize) -> Result<Manifest> {
        let what = "manifest";
        let reply = self
            .call(
                what,
                Method::GET,
                &format!("/api/v1/agent/jobs/{job}/entries/{entry}/manifest"),
                Body::None,
                Duration::ZERO,
            )
            .result?;
        Manifest::decode(&reply.body).map_err(|e| {
            Error::internal(format!("{what}: the server sent a malformed manifest")).with_source(e)
        })
    }

    fn chunks(&self, job: JobId, entry: usize, hashes: &[ChunkHash]) -> Result<Vec<Vec<u8>>> {
        let what = "fetch chunks";
        if hashes.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        let body = Self::to_json(&ChunksWire {
            hashes: hashes.iter().map(ChunkHash::to_hex).collect(),
        })?;
        if let Body::Json(b) = &body {
            self.counters
                .fetch_request_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        let reply = self
            .call(
                what,
                Method::POST,
                &format!("/api/v1/agent/jobs/{job}/entries/{entry}/chunks"),
                body,
                Duration::ZERO,
            )
            .result?;
        let frames = split_frames(what, &reply.body, hashes.len())?;
        self.counters.frame_bytes_received.fetch_add(
            frames.iter().map(|f| f.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok(frames)
    }

    fn chunk_deltas(
        &self,
        job: JobId,
        entry: usize,
        wants: &[DeltaWant],
    ) -> Result<Vec<DeltaReply>> {
        let what = "fetch deltas";
        if wants.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        if self.no_deltas_route.load(Ordering::Relaxed) {
            return agent_link::frames_for(self, job, entry, wants);
        }
        let body = delta::encode_wants(wants);
        let reply = match self
            .call(
                what,
                Method::POST,
                &format!("/api/v1/agent/jobs/{job}/entries/{entry}/deltas"),
                Body::Binary(&body),
                Duration::ZERO,
            )
            .result
        {
            Ok(reply) => reply,
            // A server older than this agent has no deltas route and
            // answers 404. Ask the same job for the frames: if that works
            // the route is what was missing, and every later call asks
            // for frames straight away; if the job itself is gone, that
            // call says so.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let frames = agent_link::frames_for(self, job, entry, wants)?;
                if !self.no_deltas_route.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the server has no deltas route ({}); fetching whole chunks",
                        e.message()
                    );
                }
                return Ok(frames);
            }
            Err(e) => return Err(e),
        };
        let replies = delta::decode_replies(&reply.body, wants.len())
            .map_err(|e| Error::internal(format!("{what}: {}", e.message())))?;
        let c = &self.counters;
        c.fetch_request_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        c.frame_bytes_received.fetch_add(
            replies.iter().map(|r| r.len() as u64).sum(),
            Ordering::Relaxed,
        );
        c.deltas_received.fetch_add(
            replies
                .iter()
                .filter(|r| matches!(r, DeltaReply::Delta(_)))
                .count() as u64,
            Ordering::Relaxed,
        );
        Ok(replies)
    }

    fn begin_capture(
        &self,
        job: JobId,
        entry: usize,
        manifest: &Manifest,
    ) -> Result<(UploadId, Vec<ChunkHash>)> {
        let what = "begin capture";
        let encoded = manifest.encode();
        let reply = self
            .call(
                what,
                Method::POST,
                &format!("/api/v1/agent/jobs/{job}/entries/{entry}/captures"),
                Body::Binary(&encoded),
                Duration::ZERO,
            )
            .result?;
        Self::json::<UploadWire>(what, &reply)?.into_core()
    }

    fn upload_chunks(&self, upload: UploadId, frames: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        let what = "upload chunks";
        if frames.len() > MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        if frames.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(frames.iter().map(|(_, f)| 36 + f.len()).sum());
        for (hash, frame) in frames {
            let len = u32::try_from(frame.len())
                .map_err(|_| Error::too_large("a chunk frame is larger than 4 GiB"))?;
            body.extend_from_slice(&hash.0);
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(frame);
        }
        self.call(
            what,
            Method::POST,
            &format!("/api/v1/agent/captures/{upload}/chunks"),
            Body::Binary(&body),
            Duration::ZERO,
        )
        .result?;
        self.counters.frame_bytes_sent.fetch_add(
            frames.iter().map(|(_, f)| f.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok(())
    }

    fn commit_capture(&self, upload: UploadId) -> Result<Version> {
        let what = "commit capture";
        let reply = self
            .call(
                what,
                Method::POST,
                &format!("/api/v1/agent/captures/{upload}/commit"),
                Body::None,
                Duration::ZERO,
            )
            .result?;
        Self::json::<VersionWire>(what, &reply)?.into_core()
    }

    fn progress(&self, job: JobId, progress: &Progress) -> Result<()> {
        self.call(
            "report progress",
            Method::POST,
            &format!("/api/v1/agent/jobs/{job}/progress"),
            Self::to_json(&ProgressWire::from(progress))?,
            Duration::ZERO,
        )
        .result
        .map(drop)
    }

    fn advance(&self, job: JobId, to: JobState, message: &str) -> Result<Job> {
        let body = Self::to_json(&AdvanceWire {
            state: to.as_str(),
            message,
        })?;
        self.transition(
            "advance job",
            job,
            format!("/api/v1/agent/jobs/{job}/advance"),
            body,
            to,
        )
    }

    fn fail(&self, job: JobId, phase: &str, reason: &str) -> Result<Job> {
        let body = Self::to_json(&FailWire { phase, reason })?;
        self.transition(
            "fail job",
            job,
            format!("/api/v1/agent/jobs/{job}/fail"),
            body,
            JobState::Failed,
        )
    }

    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()> {
        for batch in lines.chunks(MAX_LOG_LINES) {
            let body = Self::to_json(&LogWire {
                job_id: job.map(|j| j.to_string()),
                lines: batch,
            })?;
            self.call(
                "ship logs",
                Method::POST,
                &format!("/api/v1/agent/machines/{}/logs", self.machine),
                body,
                Duration::ZERO,
            )
            .result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> HttpAgentLink {
        HttpAgentLink::new(
            "http://127.0.0.1:9/",
            "52:54:00:12:34:56".parse().expect("mac"),
            "baas_secret",
            HttpLinkConfig::default(),
        )
        .expect("link")
    }

    #[test]
    fn urls_and_tokens_are_checked() {
        let mac: MacAddress = "52:54:00:12:34:56".parse().expect("mac");
        let c = HttpLinkConfig::default;
        assert!(HttpAgentLink::new("ftp://x", mac, "t", c()).is_err());
        assert!(HttpAgentLink::new("http://", mac, "t", c()).is_err());
        assert!(HttpAgentLink::new("http://x", mac, "", c()).is_err());
        assert!(HttpAgentLink::new("http://x", mac, "a b", c()).is_err());
        let l = link();
        assert_eq!(l.base_url(), "http://127.0.0.1:9");
        assert!(
            !format!("{l:?}").contains("secret"),
            "Debug hides the token"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let l = link();
        for retry in 1..12 {
            let d = l.backoff(retry, None);
            let exp = (200u64 << (retry - 1).min(20)).min(5000);
            assert!(
                d.as_millis() as u64 >= exp / 2 && d.as_millis() as u64 <= exp,
                "{retry}: {d:?}"
            );
        }
        let many: std::collections::BTreeSet<_> = (0..20).map(|_| l.backoff(6, None)).collect();
        assert!(many.len() > 1, "jitter varies");
        assert!(l.backoff(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        assert!(l.backoff(1, Some(Duration::from_secs(3600))) <= Duration::from_secs(5));
    }

    #[test]
    fn frame_streams_split_exactly() {
        let body = [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c'];
        let f = split_frames("t", &body, 2).expect("two");
        assert_eq!(f, vec![b"ab".to_vec(), b"c".to_vec()]);
        assert!(split_frames("t", &body, 3).is_err());
        assert!(split_frames("t", &body[..10], 2).is_err());
        assert!(split_frames("t", &body[..5], 1).is_err());
        assert!(split_frames("t", &[], 0).expect("none").is_empty());
    }
}
