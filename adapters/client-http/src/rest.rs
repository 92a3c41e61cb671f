//! [`RestClient`]: the core's [`BaasClient`] over the server's REST API
//! (`/api/v1`), as the user a bearer token authenticates.
//!
//! Uploads use the chunk-level protocol (`api/uploads.rs`): the source is
//! hashed locally with the core's content functions into a manifest, the
//! server answers which chunks it lacks, only those are sent (compressed
//! here, several in flight), then the upload is committed. A broken
//! transfer is retried; after the retries the client asks again what is
//! missing and goes on, and running an interrupted upload again sends only
//! what never arrived. Downloads stream the version's bytes into the
//! caller's writer and check them against the version's root hash.
//!
//! Idempotent calls (GET, PUT, DELETE) are retried with backoff on
//! connection errors and 502/503/504; a 4xx never is. Errors come back as
//! the core's kinds, from the server's JSON envelope.

use std::collections::HashMap;
use std::io::{Read, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::time::Duration;

use baas_core::client::{source_len, BaasClient, ProgressFn, Transfer, UploadSource};
use baas_core::content::{encode_frame, is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::*;
use baas_core::ports::JobFilter;
use baas_core::services::{
    ImagePatch, ImportOptions, JobRequest, JobTarget, MachinePatch, NewImage, NewMachine, NewSetup,
    NewUser, UserPatch,
};
use baas_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ureq::http::{Method, Request, Response};

use crate::wire::{error_of, parse_time, JobWire, MachineWire, UploadWire, VersionWire};

/// Largest JSON answer read.
const MAX_JSON: u64 = 64 << 20;
/// Chunks sent per request during an upload (the server takes up to 256;
/// it makes each batch durable with one flush, so fewer, larger batches
/// cost fewer flushes).
const BATCH_CHUNKS: usize = 128;
/// Rounds of "ask what is missing, send it" before an upload gives up.
const UPLOAD_ROUNDS: u32 = 4;

/// Timeouts, retries and parallelism of a [`RestClient`].
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Connecting may take this long.
    pub connect_timeout: Duration,
    /// No byte may take longer than this to arrive.
    pub read_timeout: Duration,
    /// Attempts per idempotent call, the first included.
    pub attempts: u32,
    /// First backoff; doubles with every retry, up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Chunks compressed and sent at once during an upload.
    pub upload_threads: usize,
    /// zstd level of the chunk frames an upload sends (stored as sent).
    pub compression_level: i32,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            upload_threads: std::thread::available_parallelism().map_or(4, |n| n.get().max(4)),
            compression_level: 3,
        }
    }
}

/// A [`BaasClient`] speaking to a BAAS server over HTTP.
#[derive(Clone)]
pub struct RestClient {
    http: ureq::Agent,
    base: String,
    auth: String,
    config: RestConfig,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A request body.
enum Payload<'a> {
    None,
    Json(Vec<u8>),
    Binary(&'a [u8]),
}

impl RestClient {
    /// A client of the server at `base_url` (`http://host:port`), as the
    /// user `token` authenticates.
    pub fn new(base_url: &str, token: &str, config: RestConfig) -> Result<RestClient> {
        let (base, token) = crate::endpoint(base_url, token, "url")?;
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(config.connect_timeout))
                .timeout_per_read(Some(config.read_timeout))
                .max_idle_connections_per_host(64)
                .user_agent(concat!("baas-client/", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Ok(RestClient {
            http,
            base,
            auth: format!("Bearer {token}"),
            config: RestConfig {
                attempts: config.attempts.max(1),
                upload_threads: config.upload_threads.max(1),
                ..config
            },
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One attempt; any status comes back as a response.
    fn once(
        &self,
        what: &str,
        method: &Method,
        path: &str,
        payload: &Payload<'_>,
    ) -> Result<Response<ureq::Body>> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Accept", "application/json, application/octet-stream");
        let bytes: &[u8] = match payload {
            Payload::None => &[],
            Payload::Json(v) => {
                b = b.header("Content-Type", "application/json");
                v
            }
            Payload::Binary(v) => {
                b = b.header("Content-Type", "application/octet-stream");
                v
            }
        };
        let req = b
            .body(bytes)
            .map_err(|e| Error::invalid("url", format!("{what}: cannot build the request: {e}")))?;
        self.http
            .run(req)
            .map_err(|e| transport_error(what, &self.base, e))
    }

    /// A call, retried when idempotent and worth it; an error status is
    /// mapped from its envelope.
    fn request(
        &self,
        what: &str,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<Response<ureq::Body>> {
        let idempotent = matches!(method, Method::GET | Method::PUT | Method::DELETE);
        self.request_with(what, method, path, payload, idempotent)
    }

    /// [`Self::request`], retried (when `retry`) on connection errors and
    /// 502/503/504.
    fn request_with(
        &self,
        what: &str,
        method: Method,
        path: &str,
        payload: Payload<'_>,
        retry: bool,
    ) -> Result<Response<ureq::Body>> {
        let attempts = if retry { self.config.attempts } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.once(what, &method, path, &payload) {
                Ok(res) if res.status().as_u16() < 400 => return Ok(res),
                Ok(mut res) => {
                    let status = res.status().as_u16();
                    let body = res
                        .body_mut()
                        .with_config()
                        .limit(1 << 20)
                        .read_to_vec()
                        .unwrap_or_default();
                    let err = error_of(what, status, &body);
                    if !matches!(status, 502..=504) {
                        return Err(err);
                    }
                    err
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => e,
                Err(e) => return Err(e),
            };
            if attempt >= attempts {
                return Err(err);
            }
            std::thread::sleep(self.backoff(attempt));
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.config.backoff_max)
    }

    fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<T> {
        let mut res = self.request(what, method, path, payload)?;
        let body = res
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .map_err(|e| transport_error(what, &self.base, e))?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::internal(format!(
                "{what}: the server's answer is not the expected JSON"
            ))
            .with_source(e)
        })
    }

    fn call_empty(&self, what: &str, method: Method, path: &str) -> Result<()> {
        let mut res = self.request(what, method, path, Payload::None)?;
        let _ = res.body_mut().with_config().limit(1 << 20).read_to_vec();
        Ok(())
    }

    fn json(v: &impl Serialize) -> Result<Payload<'static>> {
        serde_json::to_vec(v)
            .map(Payload::Json)
            .map_err(|e| Error::internal("encoding a request failed").with_source(e))
    }

    /// Hashes `source` into a manifest (holes for zero chunks).
    fn hash_source(
        source: &mut dyn UploadSource,
        total: u64,
        progress: ProgressFn<'_>,
    ) -> Result<Manifest> {
        let cs = CHUNK_SIZE as usize;
        let mut buf = vec![0u8; 64 * cs];
        let mut entries: Vec<Option<ChunkHash>> = Vec::new();
        let mut done = 0u64;
        let mut reported = 0u64;
        progress(Transfer {
            phase: "hash",
            done: 0,
            total,
        });
        loop {
            let n = read_full(source, &mut buf)?;
            if n == 0 {
                break;
            }
            for piece in buf[..n].chunks(cs) {
                entries.push((!is_zero(piece)).then(|| ChunkHash::of(piece)));
            }
            done += n as u64;
            if done - reported >= 16 << 20 {
                reported = done;
                progress(Transfer {
                    phase: "hash",
                    done,
                    total: total.max(done),
                });
            }
            if n < buf.len() {
                break;
            }
        }
        progress(Transfer {
            phase: "hash",
            done,
            total: done,
        });
        Manifest::new(done, CHUNK_SIZE, entries)
    }

    /// Sends the chunks `missing` names, read from `source`, on several
    /// threads. Returns the first error.
    fn send_chunks(
        &self,
        upload: UploadId,
        manifest: &Manifest,
        source: &mut dyn UploadSource,
        missing: &[ChunkHash],
        progress: ProgressFn<'_>,
        sent: &SendCount,
    ) -> Result<()> {
        let (send_total, sent) = (sent.total, &sent.bytes);
        let mut first: HashMap<ChunkHash, usize> = HashMap::with_capacity(missing.len());
        for (i, c) in manifest.chunks().enumerate() {
            if let Some(h) = c {
                first.entry(h).or_insert(i);
            }
        }
        let mut order: Vec<(usize, ChunkHash)> = missing
            .iter()
            .map(|h| {
                first.get(h).map(|i| (*i, *h)).ok_or_else(|| {
                    Error::internal(format!("the server asked for chunk {h}, not in the upload"))
                })
            })
            .collect::<Result<_>>()?;
        order.sort_unstable();
        let threads = self.config.upload_threads;
        let level = self.config.compression_level;
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let (tx, rx) = sync_channel::<Vec<(ChunkHash, Vec<u8>)>>(2);
        let rx = Mutex::new(rx);
        std::thread::scope(|s| -> Result<()> {
            for _ in 0..threads {
                let (rx, failed, first_error) = (&rx, &failed, &first_error);
                s.spawn(move || loop {
                    let next = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(batch) = next else { return };
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    let r = self.send_batch(upload, &batch, level);
                    match r {
                        Ok(()) => {
                            let n: usize = batch.iter().map(|(_, d)| d.len()).sum();
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                });
            }
            let mut reported = 0u64;
            let mut read_result = Ok(());
            let mut batch = Vec::with_capacity(BATCH_CHUNKS);
            for (index, hash) in order {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let mut data = vec![0u8; manifest.chunk_len(index)];
                let offset = index as u64 * u64::from(CHUNK_SIZE);
                let r = source
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| source_error(&e))
                    .and_then(|_| read_full(source, &mut data));
                match r {
                    Ok(n) if n == data.len() => {}
                    Ok(_) => {
                        read_result = Err(Error::invalid(
                            "source",
                            "the source became shorter during the upload",
                        ));
                        break;
                    }
                    Err(e) => {
                        read_result = Err(e);
                        break;
                    }
                }
                batch.push((hash, data));
                if batch.len() < BATCH_CHUNKS {
                    continue;
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_CHUNKS));
                if tx.send(full).is_err() {
                    break;
                }
                let now = sent.load(Ordering::Relaxed);
                if now - reported >= 4 << 20 {
                    reported = now;
                    progress(Transfer {
                        phase: "send",
                        done: now,
                        total: send_total,
                    });
                }
            }
            if read_result.is_ok() && !batch.is_empty() && !failed.load(Ordering::Relaxed) {
                let _ = tx.send(batch);
            }
            drop(tx);
            read_result
        })?;
        progress(Transfer {
            phase: "send",
            done: sent.load(Ordering::Relaxed),
            total: send_total,
        });
        match first_error.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => Err(Error::internal("an upload thread panicked")),
        }
    }

    /// Compresses a batch of chunks and sends it as one record stream
    /// (`POST /api/v1/uploads/{id}/chunks`), retried: storing a chunk twice
    /// is harmless.
    fn send_batch(
        &self,
        upload: UploadId,
        batch: &[(ChunkHash, Vec<u8>)],
        level: i32,
    ) -> Result<()> {
        let mut body = Vec::with_capacity(batch.iter().map(|(_, d)| d.len() + 40).sum());
        for (hash, data) in batch {
            let frame = encode_frame(data, level)?;
            body.extend_from_slice(&hash.0);
            body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            body.extend_from_slice(&frame);
        }
        let mut res = self.request_with(
            "upload chunks",
            Method::POST,
            &format!("/api/v1/uploads/{upload}/chunks"),
            Payload::Binary(&body),
            true,
        )?;
        let _ = res.body_mut().with_config().limit(1 << 20).read_to_vec();
        Ok(())
    }

    fn missing(&self, upload: UploadId) -> Result<Vec<ChunkHash>> {
        let m: MissingWire = self.call(
            "ask which chunks are missing",
            Method::GET,
            &format!("/api/v1/uploads/{upload}"),
            Payload::None,
        )?;
        m.missing
            .iter()
            .map(|h| {
                h.parse::<ChunkHash>()
                    .map_err(|_| Error::internal(format!("the server sent a bad hash {h:?}")))
            })
            .collect()
    }
}

/// Bytes an upload has sent so far, of how many.
struct SendCount {
    bytes: AtomicU64,
    total: u64,
}

/// The core error for a failure below HTTP: unavailable (retryable).
fn transport_error(what: &str, base: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            Error::invalid("url", format!("{what}: cannot build a request to {base}"))
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

fn source_error(e: &std::io::Error) -> Error {
    Error::invalid("source", format!("reading the upload source failed: {e}"))
}

/// Fills `buf` from `r` until full or end of stream.
fn read_full(r: &mut dyn UploadSource, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A BAAS error inside (a Python exception, say) comes back out.
                if e.get_ref().is_some_and(|i| i.is::<Error>()) {
                    if let Some(inner) = e.into_inner() {
                        if let Ok(err) = inner.downcast::<Error>() {
                            return Err(*err);
                        }
                    }
                    return Err(Error::invalid("source", "reading the upload source failed"));
                }
                return Err(source_error(&e));
            }
        }
    }
    Ok(n)
}

// --- wire types the agent's link does not have

#[derive(Debug, Deserialize)]
struct UserWire {
    id: String,
    name: String,
    display_name: String,
    email: String,
    role: String,
    created_at: String,
}

fn parsed<T: std::str::FromStr<Err = Error>>(what: &str, s: &str) -> Result<T> {
    s.parse::<T>().map_err(|e| {
        Error::internal(format!(
            "the server sent a malformed {what}: {}",
            e.message()
        ))
    })
}

impl UserWire {
    fn into_core(self) -> Result<User> {
        Ok(User {
            id: parsed("user id", &self.id)?,
            name: self.name,
            display_name: self.display_name,
            email: self.email,
            role: parsed("role", &self.role)?,
            password_hash: None,
            created_at: parse_time(&self.created_at)?,
        })
    }
}

#[derive(Debug, Deserialize)]
struct TokenWire {
    id: String,
    user_id: Option<String>,
    machine_id: Option<String>,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl TokenWire {
    fn into_core(self) -> Result<Token> {
        let subject = match (self.user_id, self.machine_id) {
            (Some(u), _) => TokenSubject::User(parsed("user id", &u)?),
            (None, Some(m)) => TokenSubject::Machine(parsed("machine id", &m)?),
            (None, None) => return Err(Error::internal("the server sent a token of nobody")),
        };
        Ok(Token {
            id: parsed("token id", &self.id)?,
            subject,
            name: self.name,
            secret_hash: [0; 32],
            created_at: parse_time(&self.created_at)?,
            expires_at: self.expires_at.as_deref().map(parse_time).transpose()?,
            revoked_at: self.revoked_at.as_deref().map(parse_time).transpose()?,
        })
    }
}

#[derive(Debug, Deserialize)]
struct CreatedTokenWire {
    token: TokenWire,
    secret: String,
}

#[derive(Debug, Deserialize)]
struct ImageWire {
    id: String,
    owner_id: String,
    name: String,
    disk: String,
    size: u64,
    metadata: std::collections::BTreeMap<String, String>,
    visibility: String,
    shared_with: Vec<String>,
    created_at: String,
}

impl ImageWire {
    fn into_core(self) -> Result<Image> {
        Ok(Image {
            id: parsed("image id", &self.id)?,
            owner: parsed("user id", &self.owner_id)?,
            name: self.name,
            disk: parsed("disk selector", &self.disk)?,
            size: self.size,
            metadata: self.metadata,
            visibility: parsed("visibility", &self.visibility)?,
            shared_with: self
                .shared_with
                .iter()
                .map(|u| parsed("user id", u))
                .collect::<Result<_>>()?,
            created_at: parse_time(&self.created_at)?,
        })
    }
}

#[derive(Debug, Deserialize)]
struct CreatedImageWire {
    image: ImageWire,
    version: VersionWire,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum VersionRefWire {
    Number(u32),
    Name(String),
}

impl From<VersionRef> for VersionRefWire {
    fn from(v: VersionRef) -> Self {
        match v {
            VersionRef::Number(n) => VersionRefWire::Number(n),
            VersionRef::Latest => VersionRefWire::Name("latest".into()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SetupEntryWire {
    image_id: String,
    version: VersionRefWire,
    #[serde(default)]
    disk: Option<String>,
    #[serde(default)]
    capture: bool,
}

impl From<&SetupEntry> for SetupEntryWire {
    fn from(e: &SetupEntry) -> Self {
        SetupEntryWire {
            image_id: e.image.to_string(),
            version: e.version.into(),
            disk: e.disk.as_ref().map(ToString::to_string),
            capture: e.capture,
        }
    }
}

impl SetupEntryWire {
    fn into_core(self) -> Result<SetupEntry> {
        Ok(SetupEntry {
            image: parsed("image id", &self.image_id)?,
            version: match self.version {
                VersionRefWire::Number(n) => VersionRef::Number(n),
                VersionRefWire::Name(s) => parsed("version", &s)?,
            },
            disk: self
                .disk
                .as_deref()
                .map(|d| parsed("disk selector", d))
                .transpose()?,
            capture: self.capture,
        })
    }
}

#[derive(Debug, Deserialize)]
struct SetupWire {
    id: String,
    owner_id: String,
    name: String,
    entries: Vec<SetupEntryWire>,
    created_at: String,
    updated_at: String,
}

impl SetupWire {
    fn into_core(self) -> Result<Setup> {
        Ok(Setup {
            id: parsed("setup id", &self.id)?,
            owner: parsed("user id", &self.owner_id)?,
            name: self.name,
            entries: self
                .entries
                .into_iter()
                .map(SetupEntryWire::into_core)
                .collect::<Result<_>>()?,
            created_at: parse_time(&self.created_at)?,
            updated_at: parse_time(&self.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize)]
struct SetupBodyWire {
    name: String,
    entries: Vec<SetupEntryWire>,
}

impl From<&NewSetup> for SetupBodyWire {
    fn from(n: &NewSetup) -> Self {
        SetupBodyWire {
            name: n.name.clone(),
            entries: n.entries.iter().map(SetupEntryWire::from).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct EventWire {
    at: String,
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct MissingWire {
    missing: Vec<String>,
}

fn list<W, T>(items: Vec<W>, f: impl Fn(W) -> Result<T>) -> Result<Vec<T>> {
    items.into_iter().map(f).collect()
}

impl BaasClient for RestClient {
    fn me(&self) -> Result<User> {
        self.call::<UserWire>(
            "read yourself",
            Method::GET,
            "/api/v1/users/me",
            Payload::None,
        )?
        .into_core()
    }

    fn list_users(&self) -> Result<Vec<User>> {
        let v: Vec<UserWire> =
            self.call("list users", Method::GET, "/api/v1/users", Payload::None)?;
        list(v, UserWire::into_core)
    }

    fn create_user(&self, new: NewUser) -> Result<User> {
        let body = Self::json(&serde_json::json!({
            "name": new.name, "display_name": new.display_name,
            "email": new.email, "role": new.role.as_str(),
        }))?;
        self.call::<UserWire>("create a user", Method::POST, "/api/v1/users", body)?
            .into_core()
    }

    fn get_user(&self, id: UserId) -> Result<User> {
        self.call::<UserWire>(
            "read a user",
            Method::GET,
            &format!("/api/v1/users/{id}"),
            Payload::None,
        )?
        .into_core()
    }

    fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        let mut m = serde_json::Map::new();
        if let Some(d) = patch.display_name {
            m.insert("display_name".into(), d.into());
        }
        if let Some(e) = patch.email {
            m.insert("email".into(), e.into());
        }
        if let Some(r) = patch.role {
            m.insert("role".into(), r.as_str().into());
        }
        let body = Self::json(&m)?;
        self.call::<UserWire>(
            "change a user",
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            body,
        )?
        .into_core()
    }

    fn delete_user(&self, id: UserId) -> Result<()> {
        self.call_empty(
            "delete a user",
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
        )
    }

    fn list_tokens(&self, user: UserId) -> Result<Vec<Token>> {
        let v: Vec<TokenWire> = self.call(
            "list tokens",
            Method::GET,
            &format!("/api/v1/users/{user}/tokens"),
            Payload::None,
        )?;
        list(v, TokenWire::into_core)
    }

    fn create_token(
        &self,
        user: UserId,
        name: &str,
        ttl_ms: Option<i64>,
    ) -> Result<(Token, String)> {
        let ttl_seconds = ttl_ms.map(|ms| (ms.max(0) as u64).div_ceil(1000));
        let body = Self::json(&serde_json::json!({"name": name, "ttl_seconds": ttl_seconds}))?;
        let c: CreatedTokenWire = self.call(
            "create a token",
            Method::POST,
            &format!("/api/v1/users/{user}/tokens"),
            body,
        )?;
        Ok((c.token.into_core()?, c.secret))
    }

    fn revoke_token(&self, id: TokenId) -> Result<()> {
        self.call_empty(
            "revoke a token",
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
        )
    }

    fn list_images(&self, owner: Option<UserId>) -> Result<Vec<Image>> {
        let path = match owner {
            Some(o) => format!("/api/v1/images?owner={o}"),
            None => "/api/v1/images".into(),
        };
        let v: Vec<ImageWire> = self.call("list images", Method::GET, &path, Payload::None)?;
        list(v, ImageWire::into_core)
    }

    fn create_image(&self, new: NewImage) -> Result<(Image, Version)> {
        let body = Self::json(&serde_json::json!({
            "name": new.name, "disk": new.disk.to_string(), "size": new.size,
            "metadata": new.metadata, "visibility": new.visibility.as_str(),
            "owner_id": new.owner.map(|o| o.to_string()),
        }))?;
        let c: CreatedImageWire =
            self.call("create an image", Method::POST, "/api/v1/images", body)?;
        Ok((c.image.into_core()?, c.version.into_core()?))
    }

    fn get_image(&self, id: ImageId) -> Result<Image> {
        self.call::<ImageWire>(
            "read an image",
            Method::GET,
            &format!("/api/v1/images/{id}"),
            Payload::None,
        )?
        .into_core()
    }

    fn update_image(&self, id: ImageId, patch: ImagePatch) -> Result<Image> {
        let mut m = serde_json::Map::new();
        if let Some(n) = patch.name {
            m.insert("name".into(), n.into());
        }
        if let Some(d) = patch.disk {
            m.insert("disk".into(), d.to_string().into());
        }
        if let Some(md) = patch.metadata {
            m.insert("metadata".into(), serde_json::json!(md));
        }
        if let Some(v) = patch.visibility {
            m.insert("visibility".into(), v.as_str().into());
        }
        if let Some(users) = patch.shared_with {
            let ids: Vec<String> = users.iter().map(ToString::to_string).collect();
            m.insert("shared_with".into(), serde_json::json!(ids));
        }
        let body = Self::json(&m)?;
        self.call::<ImageWire>(
            "change an image",
            Method::PATCH,
            &format!("/api/v1/images/{id}"),
            body,
        )?
        .into_core()
    }

    fn delete_image(&self, id: ImageId) -> Result<()> {
        self.call_empty(
            "delete an image",
            Method::DELETE,
            &format!("/api/v1/images/{id}"),
        )
    }

    fn list_versions(&self, image: ImageId) -> Result<Vec<Version>> {
        let v: Vec<VersionWire> = self.call(
            "list versions",
            Method::GET,
            &format!("/api/v1/images/{image}/versions"),
            Payload::None,
        )?;
        list(v, VersionWire::into_core)
    }

    fn get_version(&self, image: ImageId, version: VersionRef) -> Result<Version> {
        self.call::<VersionWire>(
            "read a version",
            Method::GET,
            &format!("/api/v1/images/{image}/versions/{version}"),
            Payload::None,
        )?
        .into_core()
    }

    fn delete_version(&self, image: ImageId, number: u32) -> Result<()> {
        self.call_empty(
            "delete a version",
            Method::DELETE,
            &format!("/api/v1/images/{image}/versions/{number}"),
        )
    }

    fn upload(
        &self,
        image: ImageId,
        source: &mut dyn UploadSource,
        opts: ImportOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Version> {
        let total = source_len(source)?;
        let manifest = Self::hash_source(source, total, progress)?;
        let encoded = manifest.encode();
        let begun: UploadWire = self.call(
            "begin an upload",
            Method::POST,
            &format!("/api/v1/images/{image}/uploads"),
            Payload::Binary(&encoded),
        )?;
        let (upload, mut missing) = begun.into_core()?;
        let sizes: HashMap<ChunkHash, u64> = manifest
            .chunks()
            .enumerate()
            .filter_map(|(i, c)| c.map(|h| (h, manifest.chunk_len(i) as u64)))
            .collect();
        let send_total: u64 = missing.iter().filter_map(|h| sizes.get(h)).sum();
        let sent = SendCount {
            bytes: AtomicU64::new(0),
            total: send_total,
        };
        progress(Transfer {
            phase: "send",
            done: 0,
            total: send_total,
        });
        let mut round = 0;
        while !missing.is_empty() {
            round += 1;
            match self.send_chunks(upload, &manifest, source, &missing, progress, &sent) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Unavailable && round < UPLOAD_ROUNDS => {
                    std::thread::sleep(self.backoff(round));
                }
                Err(e) => return Err(e),
            }
            missing = self.missing(upload)?;
            if !missing.is_empty() && round >= UPLOAD_ROUNDS {
                return Err(Error::unavailable(format!(
                    "{} chunks of the upload did not arrive after {round} rounds; run the upload again to resume",
                    missing.len()
                )));
            }
        }
        let body = Self::json(&serde_json::json!({"note": opts.note}))?;
        self.call::<VersionWire>(
            "commit an upload",
            Method::POST,
            &format!("/api/v1/uploads/{upload}/commit"),
            body,
        )?
        .into_core()
    }

    fn download(
        &self,
        image: ImageId,
        version: VersionRef,
        sink: &mut (dyn Write + Send),
        progress: ProgressFn<'_>,
    ) -> Result<Version> {
        let v = self.get_version(image, version)?;
        let what = "download a version";
        let mut res = self.request(
            what,
            Method::GET,
            &format!("/api/v1/images/{image}/versions/{}/content", v.number),
            Payload::None,
        )?;
        let mut body = res.body_mut().with_config().reader();
        let cs = CHUNK_SIZE as usize;
        let total = v.size;
        progress(Transfer {
            phase: "receive",
            done: 0,
            total,
        });
        // This thread reads the socket; another hashes (for the root check)
        // and writes, so neither waits for the other. Buffers go round.
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(4);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(6);
        for _ in 0..6 {
            let _ = empty_tx.send(vec![0u8; 16 * cs]);
        }
        let mut done = 0u64;
        let (read_result, write_result) = std::thread::scope(|s| {
            let writer = s.spawn(move || -> Result<Vec<Option<ChunkHash>>> {
                let mut entries: Vec<Option<ChunkHash>> =
                    Vec::with_capacity(total.div_ceil(cs as u64) as usize);
                for (buf, n) in full_rx.iter() {
                    for piece in buf[..n].chunks(cs) {
                        entries.push((!is_zero(piece)).then(|| ChunkHash::of(piece)));
                    }
                    sink.write_all(&buf[..n]).map_err(|e| {
                        Error::invalid("sink", format!("writing the download failed: {e}"))
                            .with_source(e)
                    })?;
                    let _ = empty_tx.send(buf);
                }
                sink.flush().map_err(|e| {
                    Error::invalid("sink", format!("writing the download failed: {e}"))
                        .with_source(e)
                })?;
                Ok(entries)
            });
            let mut reported = 0u64;
            let read_result = (|| -> Result<()> {
                loop {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(()); // the writer failed; its error follows
                    };
                    // Fill whole chunks (the last may be short) so each is
                    // hashed once.
                    let mut n = 0;
                    while n < buf.len() {
                        match body.read(&mut buf[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                return Err(Error::unavailable(format!(
                                    "{what}: the transfer broke after {} bytes: {e}",
                                    done + n as u64
                                )))
                            }
                        }
                    }
                    if n == 0 {
                        return Ok(());
                    }
                    let last = n < buf.len();
                    if full_tx.send((std::mem::take(&mut buf), n)).is_err() {
                        return Ok(());
                    }
                    done += n as u64;
                    if done - reported >= 8 << 20 || done == total {
                        reported = done;
                        progress(Transfer {
                            phase: "receive",
                            done,
                            total,
                        });
                    }
                    if last {
                        return Ok(());
                    }
                }
            })();
            drop(full_tx);
            let write_result = writer
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the download's writer panicked")));
            (read_result, write_result)
        });
        let entries = write_result?;
        read_result?;
        if done != total {
            return Err(Error::unavailable(format!(
                "{what}: received {done} of {total} bytes"
            )));
        }
        let root = Manifest::new(done, CHUNK_SIZE, entries)?.root();
        if root != v.root {
            return Err(Error::internal(format!(
                "{what}: the bytes received do not match version {}'s root hash",
                v.number
            )));
        }
        Ok(v)
    }

    fn list_setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>> {
        let path = match owner {
            Some(o) => format!("/api/v1/setups?owner={o}"),
            None => "/api/v1/setups".into(),
        };
        let v: Vec<SetupWire> = self.call("list setups", Method::GET, &path, Payload::None)?;
        list(v, SetupWire::into_core)
    }

    fn create_setup(&self, new: NewSetup) -> Result<Setup> {
        let body = Self::json(&SetupBodyWire::from(&new))?;
        self.call::<SetupWire>("create a setup", Method::POST, "/api/v1/setups", body)?
            .into_core()
    }

    fn get_setup(&self, id: SetupId) -> Result<Setup> {
        self.call::<SetupWire>(
            "read a setup",
            Method::GET,
            &format!("/api/v1/setups/{id}"),
            Payload::None,
        )?
        .into_core()
    }

    fn update_setup(&self, id: SetupId, new: NewSetup) -> Result<Setup> {
        let body = Self::json(&SetupBodyWire::from(&new))?;
        self.call::<SetupWire>(
            "change a setup",
            Method::PUT,
            &format!("/api/v1/setups/{id}"),
            body,
        )?
        .into_core()
    }

    fn delete_setup(&self, id: SetupId) -> Result<()> {
        self.call_empty(
            "delete a setup",
            Method::DELETE,
            &format!("/api/v1/setups/{id}"),
        )
    }

    fn list_machines(&self) -> Result<Vec<Machine>> {
        let v: Vec<MachineWire> = self.call(
            "list machines",
            Method::GET,
            "/api/v1/machines",
            Payload::None,
        )?;
        list(v, MachineWire::into_core)
    }

    fn register_machine(&self, new: NewMachine) -> Result<Machine> {
        let body = Self::json(&serde_json::json!({
            "mac": new.mac.to_string(), "name": new.name,
            "arch": new.arch.as_str(), "pool": new.pool,
        }))?;
        self.call::<MachineWire>("register a machine", Method::POST, "/api/v1/machines", body)?
            .into_core()
    }

    fn get_machine(&self, id: MachineId) -> Result<Machine> {
        self.call::<MachineWire>(
            "read a machine",
            Method::GET,
            &format!("/api/v1/machines/{id}"),
            Payload::None,
        )?
        .into_core()
    }

    fn get_machine_by_mac(&self, mac: MacAddress) -> Result<Machine> {
        self.call::<MachineWire>(
            "read a machine",
            Method::GET,
            &format!("/api/v1/machines/{mac}"),
            Payload::None,
        )?
        .into_core()
    }

    fn update_machine(&self, id: MachineId, patch: MachinePatch) -> Result<Machine> {
        let mut m = serde_json::Map::new();
        if let Some(n) = patch.name {
            m.insert("name".into(), n.into());
        }
        if let Some(a) = patch.arch {
            m.insert("arch".into(), a.as_str().into());
        }
        if let Some(p) = patch.pool {
            m.insert("pool".into(), serde_json::json!(p));
        }
        if let Some(s) = patch.state {
            m.insert("state".into(), s.as_str().into());
        }
        let body = Self::json(&m)?;
        self.call::<MachineWire>(
            "change a machine",
            Method::PATCH,
            &format!("/api/v1/machines/{id}"),
            body,
        )?
        .into_core()
    }

    fn machine_queue(&self, id: MachineId) -> Result<Vec<Job>> {
        let v: Vec<JobWire> = self.call(
            "read a machine's queue",
            Method::GET,
            &format!("/api/v1/machines/{id}/queue"),
            Payload::None,
        )?;
        list(v, JobWire::into_core)
    }

    fn enqueue_job(&self, request: JobRequest) -> Result<Job> {
        let body = match request.target {
            JobTarget::Setup(s) => serde_json::json!({"setup_id": s.to_string()}),
            JobTarget::Image {
                image,
                version,
                disk,
                capture,
            } => serde_json::json!({
                "image_id": image.to_string(),
                "version": VersionRefWire::from(version),
                "disk": disk.map(|d| d.to_string()),
                "capture": capture,
            }),
        };
        let body = Self::json(&body)?;
        self.call::<JobWire>(
            "queue a job",
            Method::POST,
            &format!("/api/v1/machines/{}/jobs", request.machine),
            body,
        )?
        .into_core()
    }

    fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>> {
        let mut q: Vec<String> = Vec::new();
        if let Some(m) = filter.machine {
            q.push(format!("machine={m}"));
        }
        if let Some(o) = filter.owner {
            q.push(format!("owner={o}"));
        }
        if !filter.states.is_empty() {
            let s: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            q.push(format!("state={}", s.join(",")));
        }
        if let Some(l) = filter.limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() {
            "/api/v1/jobs".to_string()
        } else {
            format!("/api/v1/jobs?{}", q.join("&"))
        };
        let v: Vec<JobWire> = self.call("list jobs", Method::GET, &path, Payload::None)?;
        list(v, JobWire::into_core)
    }

    fn get_job(&self, id: JobId) -> Result<Job> {
        self.call::<JobWire>(
            "read a job",
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            Payload::None,
        )?
        .into_core()
    }

    fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let v: Vec<EventWire> = self.call(
            "read a job's events",
            Method::GET,
            &format!("/api/v1/jobs/{id}/events"),
            Payload::None,
        )?;
        list(v, |e| {
            Ok(JobEvent {
                at: parse_time(&e.at)?,
                kind: e.kind,
                message: e.message,
            })
        })
    }

    fn cancel_job(&self, id: JobId) -> Result<Job> {
        self.call::<JobWire>(
            "cancel a job",
            Method::POST,
            &format!("/api/v1/jobs/{id}/cancel"),
            Payload::None,
        )?
        .into_core()
    }
}
