//! A lab for the agent's tests: the real `baas-server` (built by
//! `baas_server::build`, as `main` does) on a data directory that survives
//! restarts on the same port, typed admin helpers over HTTP, and a loopback
//! proxy that can drop connections, cut transfers and lose answers.
//! Shared by `baas-client-http`'s and `baas-agent`'s tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use baas_server::Settings;
use rocket::fairing::AdHoc;
use serde_json::{json, Value};

/// A running server.
pub struct Server {
    /// Its port.
    pub port: u16,
    /// The services it runs on.
    pub baas: baas_core::Baas,
    shutdown: rocket::Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server on `dir` (created and bootstrapped on first use) on
    /// `port` (0: any free port).
    pub fn start(dir: &Path, port: u16) -> Server {
        let baas = baas_embedded::open_data_dir(dir).expect("open the data directory");
        baas_server::cli::bootstrap(&baas, dir).expect("bootstrap");
        let settings = Settings {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            handle_signals: false,
            ..Settings::default()
        };
        let (tx, rx) = mpsc::channel();
        let rocket = baas_server::build(baas.clone(), settings).attach(AdHoc::on_liftoff(
            "test port",
            move |r| {
                Box::pin(async move {
                    let _ = tx.send((r.config().port, r.shutdown()));
                })
            },
        ));
        let thread = std::thread::spawn(move || {
            if let Err(e) = rocket::execute(rocket.launch()) {
                eprintln!("test server stopped: {e}");
            }
        });
        let (port, shutdown) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server started");
        Server {
            port,
            baas,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until it has let go of its port.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shutdown.clone().notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// Asserts the status; the body as JSON.
    #[track_caller]
    pub fn json(self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A server on a data directory, with an admin, a user and helpers.
pub struct Lab {
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// The server (None while stopped).
    pub server: Option<Server>,
    /// Its port (kept across restarts).
    pub port: u16,
    /// The admin's token.
    pub admin: String,
    /// A user's token, who owns the images.
    pub user: String,
    http: ureq::Agent,
}

impl Lab {
    /// A fresh lab.
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(dir.path(), 0);
        let admin = std::fs::read_to_string(dir.path().join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string();
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        let mut lab = Lab {
            port: server.port,
            dir,
            server: Some(server),
            admin,
            user: String::new(),
            http,
        };
        let u = lab
            .post(
                "/api/v1/users",
                &lab.admin.clone(),
                &json!({"name": "alice"}),
            )
            .json(201);
        let id = u["id"].as_str().expect("user id").to_string();
        let t = lab
            .post(
                &format!("/api/v1/users/{id}/tokens"),
                &lab.admin.clone(),
                &json!({"name": "test"}),
            )
            .json(201);
        lab.user = t["secret"].as_str().expect("secret").to_string();
        lab
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The services of the running server.
    pub fn baas(&self) -> &baas_core::Baas {
        &self.server.as_ref().expect("the server runs").baas
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }

    /// Starts the server again on the same directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.server = Some(Server::start(self.dir.path(), self.port));
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn send(&self, method: &str, path: &str, token: &str, body: Option<(&str, Vec<u8>)>) -> Resp {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base()))
            .header("Authorization", format!("Bearer {token}"));
        let res = match body {
            Some((ct, bytes)) => {
                b = b.header("Content-Type", ct);
                self.http.run(b.body(bytes).expect("request"))
            }
            None => self.http.run(b.body(()).expect("request")),
        };
        let mut res = res.expect("request sent");
        let status = res.status().as_u16();
        let body = res
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("body");
        Resp { status, body }
    }

    /// GET.
    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.send("GET", path, token, None)
    }

    /// POST JSON.
    pub fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(
            "POST",
            path,
            token,
            Some(("application/json", body.to_string().into_bytes())),
        )
    }

    /// Creates an image of `size` bytes owned by the user; returns its id.
    pub fn image(&self, name: &str, size: u64) -> String {
        let v = self
            .post(
                "/api/v1/images",
                &self.user,
                &json!({"name": name, "size": size}),
            )
            .json(201);
        v["image"]["id"].as_str().expect("image id").to_string()
    }

    /// Uploads `bytes` as the image's next version; returns the version.
    pub fn upload(&self, image: &str, bytes: &[u8]) -> Value {
        self.send(
            "POST",
            &format!("/api/v1/images/{image}/versions"),
            &self.user,
            Some(("application/octet-stream", bytes.to_vec())),
        )
        .json(201)
    }

    /// Registers a machine; returns its id.
    pub fn machine(&self, mac: &str) -> String {
        let v = self
            .post("/api/v1/machines", &self.admin, &json!({"mac": mac}))
            .json(201);
        v["id"].as_str().expect("machine id").to_string()
    }

    /// A credential for the machine's agent, through the API.
    pub fn agent_token(&self, machine: &str) -> String {
        let v = self
            .post(
                &format!("/api/v1/machines/{machine}/agent-token"),
                &self.admin,
                &json!({"ttl_seconds": 3600}),
            )
            .json(201);
        v["secret"].as_str().expect("secret").to_string()
    }

    /// Queues one image version on a machine; returns the job id.
    pub fn queue(
        &self,
        machine: &str,
        image: &str,
        version: u32,
        disk: &str,
        capture: bool,
    ) -> String {
        let v = self
            .post(
                &format!("/api/v1/machines/{machine}/jobs"),
                &self.user,
                &json!({"image_id": image, "version": version, "disk": disk, "capture": capture}),
            )
            .json(201);
        v["id"].as_str().expect("job id").to_string()
    }

    /// A job as the admin sees it.
    pub fn job(&self, job: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{job}"), &self.admin)
            .json(200)
    }

    /// A job's timeline as (kind, message).
    pub fn events(&self, job: &str) -> Vec<(String, String)> {
        self.get(&format!("/api/v1/jobs/{job}/events"), &self.admin)
            .json(200)
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// A version's record.
    pub fn version(&self, image: &str, version: &str) -> Value {
        self.get(
            &format!("/api/v1/images/{image}/versions/{version}"),
            &self.user,
        )
        .json(200)
    }

    /// A version's bytes.
    pub fn content(&self, image: &str, version: u32) -> Vec<u8> {
        let r = self.get(
            &format!("/api/v1/images/{image}/versions/{version}/content"),
            &self.user,
        );
        assert_eq!(r.status, 200);
        r.body
    }

    /// Moves a job on as the system would (the end of a user's session).
    pub fn advance(&self, job: &str, to: baas_core::model::JobState) {
        let id: baas_core::model::JobId = job.parse().expect("job id");
        self.baas()
            .advance_job(&baas_core::Actor::System, id, to, "test")
            .expect("advance");
    }
}

/// Deterministic test data: `len` bytes, about a quarter of them data in
/// runs of 64 KiB-aligned blocks, the rest zeros.
pub fn disk_image(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, block) in v.chunks_mut(64 * 1024).enumerate() {
        if i % 4 != 0 {
            continue;
        }
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
    }
    v
}

/// What the proxy does with traffic from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relay everything.
    Pass,
    /// Close every connection (and refuse new ones) until set otherwise.
    Down,
    /// Relay this many more bytes from the server, then cut every
    /// connection once; then relay again.
    CutAfter(u64),
    /// Let requests reach the server but drop the next `n` answers
    /// (closing those connections).
    LoseAnswers(u32),
    /// Relay this many more bytes from the server, then go `Down`.
    StallAfter(u64),
    /// Flip one byte 4 KiB into the body of the next `n` binary answers
    /// longer than that (chunk frames): corruption in transit.
    CorruptFrames(u32),
    /// Answer every request whose path ends with this as a server without
    /// such a route would (404, the server's JSON error), and close the
    /// connection; relay everything else.
    NoRoute(&'static str),
}

/// The length of the request at the start of `buf` (head and
/// `content-length` body), once its head is complete.
fn request_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + body)
}

/// If `head` starts a request whose path ends with `suffix`: a 404 answer
/// like the server's for a route it does not have.
fn no_route_answer(head: &[u8], suffix: &str) -> Option<Vec<u8>> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, path) = (parts.next()?, parts.next()?);
    if !path.split('?').next()?.ends_with(suffix) {
        return None;
    }
    let body =
        format!(r#"{{"error":{{"code":"not_found","message":"no route for {method} {path}"}}}}"#);
    Some(
        format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Where in a binary answer's body `CorruptFrames` flips a byte.
const CORRUPT_AT: u64 = 4096;

/// If `buf` holds the head of a binary answer with a body longer than
/// [`CORRUPT_AT`], the offset in `buf` of the byte to flip (which may lie
/// beyond `buf`).
fn corrupt_target(buf: &[u8]) -> Option<u64> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") || !head.contains("application/octet-stream") {
        return None;
    }
    let len: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    (len > CORRUPT_AT).then_some(end as u64 + CORRUPT_AT)
}

/// A loopback TCP proxy in front of the server.
pub struct Proxy {
    /// Its port.
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    /// Connections it broke on purpose.
    pub broken: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicU64::new(0));
        let (m, s, a, b) = (mode.clone(), stop.clone(), accepted.clone(), broken.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                a.fetch_add(1, Ordering::Relaxed);
                if *m.lock().expect("mode") == Mode::Down {
                    b.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (m, b) = (m.clone(), b.clone());
                std::thread::spawn(move || relay(client, server, m, b));
            }
        });
        Proxy {
            port,
            mode,
            stop,
            accepted,
            broken,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets what happens next.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay(client: TcpStream, server: TcpStream, mode: Arc<Mutex<Mode>>, broken: Arc<AtomicU64>) {
    let (Ok(c2), Ok(c3), Ok(s2)) = (client.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    // Client to server: plain copy, unless the proxy is down or the
    // request is for a route it hides.
    let up_mode = mode.clone();
    let up = std::thread::spawn(move || {
        let (mut from, mut to, mut back) = (c2, s2, c3);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = *up_mode.lock().expect("mode");
                    if m == Mode::Down {
                        break;
                    }
                    // A request's head starts a read: the client sends the
                    // next one only after the answer to the last.
                    if let Some(answer) = match m {
                        Mode::NoRoute(suffix) => no_route_answer(&buf[..n], suffix),
                        _ => None,
                    } {
                        // Read the whole request first: closing with
                        // unread bytes would reset the connection and
                        // lose the answer.
                        let mut got = buf[..n].to_vec();
                        while request_len(&got).is_none_or(|len| got.len() < len) {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => got.extend_from_slice(&buf[..k]),
                            }
                        }
                        let _ = back.write_all(&answer);
                        let _ = back.shutdown(Shutdown::Both);
                        break;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    // Server to client: where the faults happen.
    let (mut from, mut to) = (server, client);
    let mut buf = vec![0u8; 16 * 1024];
    // With `CorruptFrames`: bytes until the one to flip, on this connection.
    let mut armed: Option<u64> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut m = mode.lock().expect("mode");
        if let Mode::CorruptFrames(left) = *m {
            if armed.is_none() && left > 0 {
                armed = corrupt_target(&buf[..n]);
            }
            if let Some(k) = armed {
                if k < n as u64 {
                    buf[k as usize] ^= 0xFF;
                    armed = None;
                    broken.fetch_add(1, Ordering::Relaxed);
                    *m = if left > 1 {
                        Mode::CorruptFrames(left - 1)
                    } else {
                        Mode::Pass
                    };
                } else {
                    armed = Some(k - n as u64);
                }
            }
        }
        let pass = match *m {
            Mode::Pass | Mode::CorruptFrames(_) | Mode::NoRoute(_) => n,
            Mode::Down => 0,
            Mode::CutAfter(left) => {
                let k = left.min(n as u64) as usize;
                *m = if (k as u64) < left {
                    Mode::CutAfter(left - k as u64)
                } else {
                    Mode::Pass
                };
                if (k as u64) == left {
                    // Send what is left of the budget, then cut.
                    let _ = to.write_all(&buf[..k]);
                    broken.fetch_add(1, Ordering::Relaxed);
                    0
                } else {
                    k
                }
            }
            Mode::StallAfter(left) => {
                let k = left.min(n as u64) as usize;
                if (k as u64) == left {
                    *m = Mode::Down;
                    let _ = to.write_all(&buf[..k]);
                    broken.fetch_add(1, Ordering::Relaxed);
                    0
                } else {
                    *m = Mode::StallAfter(left - k as u64);
                    k
                }
            }
            Mode::LoseAnswers(left) => {
                *m = if left > 1 {
                    Mode::LoseAnswers(left - 1)
                } else {
                    Mode::Pass
                };
                broken.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        drop(m);
        if pass == 0 || to.write_all(&buf[..pass]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    let _ = up.join();
}
