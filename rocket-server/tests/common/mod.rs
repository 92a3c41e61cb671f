//! `TestApp`: the real server, built by the same `baas_server::build` that
//! `main` uses, on a temporary data directory, listening on a free port,
//! with a bootstrapped admin token and typed helpers over a blocking HTTP
//! client.

#![allow(dead_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::time::Duration;

use baas_server::Settings;
use rocket::fairing::AdHoc;
use serde_json::{json, Value};
use tempfile::TempDir;
use ureq::http::{self, Method};
use ureq::SendBody;

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The port.
    pub port: u16,
    /// The bootstrapped admin's token.
    pub admin: String,
    /// The data directory (kept while the app lives).
    pub dir: TempDir,
    /// The services the server runs on (for what the API cannot do yet,
    /// such as issuing an agent's credential).
    pub baas: baas_core::Baas,
    agent: ureq::Agent,
    shutdown: Option<rocket::Shutdown>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body otherwise.
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "body: {}", self.text());
        self
    }

    /// Asserts an error envelope with `status` and `code`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "envelope: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "envelope has a message: {v}"
        );
        v
    }
}

/// Opens the store the tests run on: the embedded default (SQLite and
/// chunks in `dir`).
pub fn open_store(dir: &std::path::Path) -> baas_core::Baas {
    baas_embedded::open_data_dir(dir).expect("open the embedded store")
}

impl TestApp {
    /// A server with the default settings.
    pub fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {})
    }

    /// A server with settings changed by `f`.
    pub fn spawn_with(f: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_full(f, |_| {})
    }

    /// A server with settings changed by `f` and the services' configuration
    /// changed by `c`.
    pub fn spawn_full(
        f: impl FnOnce(&mut Settings),
        c: impl FnOnce(&mut baas_core::Config),
    ) -> TestApp {
        TestApp::spawn_in(tempfile::tempdir().expect("temp dir"), f, c)
    }

    /// A server on the data directory `dir` (a fresh one, or one an
    /// earlier server ran on: see [`TestApp::stop`]).
    pub fn spawn_in(
        dir: TempDir,
        f: impl FnOnce(&mut Settings),
        c: impl FnOnce(&mut baas_core::Config),
    ) -> TestApp {
        let mut options = baas_embedded::Options::data_dir(dir.path());
        c(&mut options.config);
        let baas = baas_embedded::open(&options).expect("open the embedded store");
        baas_server::cli::bootstrap(&baas, dir.path()).expect("bootstrap");
        let admin = std::fs::read_to_string(dir.path().join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string();
        let mut settings = Settings {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            handle_signals: false,
            ..Settings::default()
        };
        f(&mut settings);
        let (tx, rx) = mpsc::channel();
        let rocket = baas_server::build(baas.clone(), settings).attach(AdHoc::on_liftoff(
            "test port",
            move |r| {
                Box::pin(async move {
                    let _ = tx.send((r.config().port, r.shutdown()));
                })
            },
        ));
        std::thread::spawn(move || {
            if let Err(e) = rocket::execute(rocket.launch()) {
                eprintln!("test server failed: {e}");
            }
        });
        let (port, shutdown) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server started");
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build(),
        );
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin,
            dir,
            baas,
            agent,
            shutdown: Some(shutdown),
        }
    }

    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn builder(&self, method: Method, path: &str, token: Option<&str>) -> http::request::Builder {
        let mut b = http::Request::builder().method(method).uri(self.url(path));
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        b
    }

    /// Sends a request with optional headers and body; reads the response.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut b = self.builder(method, path, token);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(bytes) => self.agent.run(b.body(bytes).expect("request")),
            None => self.agent.run(b.body(()).expect("request")),
        };
        read(res.expect("request sent"))
    }

    /// Streams `reader` as the body (chunked).
    pub fn send_reader(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        reader: &mut dyn Read,
    ) -> Resp {
        let mut b = self.builder(method, path, token);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(SendBody::from_reader(reader)).expect("request");
        read(self.agent.run(req).expect("request sent"))
    }

    /// Opens a response without reading its body (for big downloads).
    pub fn open(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> http::Response<ureq::Body> {
        let mut b = self.builder(Method::GET, path, token);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.agent
            .run(b.body(()).expect("request"))
            .expect("request sent")
    }

    /// GET.
    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, &[], None)
    }

    /// DELETE.
    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::DELETE, path, token, &[], None)
    }

    /// A JSON request.
    pub fn json(&self, method: Method, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.send(
            method,
            path,
            token,
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
    }

    /// POST JSON.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.json(Method::POST, path, token, body)
    }

    // --- typed helpers

    /// Creates a user with `role` (as the admin) and a token for them;
    /// returns (user id, token).
    pub fn user(&self, name: &str, role: &str) -> (String, String) {
        let u = self
            .post(
                "/api/v1/users",
                Some(&self.admin),
                &json!({"name": name, "role": role}),
            )
            .expect(201)
            .json();
        let id = u["id"].as_str().expect("id").to_string();
        let t = self
            .post(
                &format!("/api/v1/users/{id}/tokens"),
                Some(&self.admin),
                &json!({"name": "test"}),
            )
            .expect(201)
            .json();
        (id, t["secret"].as_str().expect("secret").to_string())
    }

    /// Creates an image of `size` bytes; returns its id.
    pub fn post_image(&self, token: &str, name: &str, size: u64) -> String {
        let v = self
            .post(
                "/api/v1/images",
                Some(token),
                &json!({"name": name, "size": size}),
            )
            .expect(201)
            .json();
        v["image"]["id"].as_str().expect("image id").to_string()
    }

    /// Uploads `bytes` as the next version (raw body); returns the response.
    pub fn upload(&self, token: &str, image: &str, bytes: &[u8]) -> Resp {
        self.send(
            Method::POST,
            &format!("/api/v1/images/{image}/versions"),
            Some(token),
            &[("Content-Type", "application/octet-stream")],
            Some(bytes.to_vec()),
        )
    }

    /// Registers a machine (as the admin); returns its id.
    pub fn machine(&self, mac: &str) -> String {
        let v = self
            .post("/api/v1/machines", Some(&self.admin), &json!({"mac": mac}))
            .expect(201)
            .json();
        v["id"].as_str().expect("machine id").to_string()
    }

    /// Queues one image version on a machine; returns the job.
    pub fn boot_queue(&self, token: &str, machine: &str, image: &str, version: u32) -> Resp {
        self.post(
            &format!("/api/v1/machines/{machine}/jobs"),
            Some(token),
            &json!({"image_id": image, "version": version}),
        )
    }

    /// A credential for `machine`'s agent, issued as the system does when it
    /// boots the machine.
    pub fn agent_token(&self, machine: &str) -> String {
        let id: baas_core::model::MachineId = machine.parse().expect("machine id");
        let (_, secret) = self
            .baas
            .issue_agent_token(&baas_core::Actor::System, id, 3_600_000)
            .expect("agent token");
        secret
    }

    /// A metric's value from `/metrics`.
    pub fn metric(&self, line_prefix: &str) -> u64 {
        let text = self.get("/metrics", Some(&self.admin)).expect(200).text();
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {line_prefix} in {text}"))
    }
}

/// Reads a response whole.
pub fn read(mut res: http::Response<ureq::Body>) -> Resp {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("response body");
    Resp {
        status,
        headers,
        body,
    }
}

impl TestApp {
    /// Shuts the server down and hands its data directory back (to start
    /// another server on it).
    pub fn stop(mut self) -> TempDir {
        if let Some(s) = self.shutdown.take() {
            s.notify();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.notify();
        }
    }
}

/// A deterministic, mostly-zero image: `len` bytes where each 8 MiB stretch
/// starts with 64 KiB of pseudo-random data (seeded), the rest zeros.
#[derive(Debug, Clone)]
pub struct SparseImage {
    len: u64,
    pos: u64,
    seed: u64,
}

impl SparseImage {
    /// An image of `len` bytes.
    pub fn new(len: u64, seed: u64) -> SparseImage {
        SparseImage { len, pos: 0, seed }
    }

    fn byte_at(&self, at: u64) -> u8 {
        const STRETCH: u64 = 8 << 20;
        const DATA: u64 = 64 << 10;
        if at % STRETCH >= DATA {
            return 0;
        }
        let mut x = at
            .wrapping_add(self.seed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        (x >> 17) as u8 | 1
    }

    /// The whole image in memory (small images only).
    pub fn bytes(len: u64, seed: u64) -> Vec<u8> {
        let mut v = Vec::new();
        SparseImage::new(len, seed)
            .read_to_end(&mut v)
            .expect("in memory");
        v
    }
}

impl Read for SparseImage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        const STRETCH: u64 = 8 << 20;
        const DATA: u64 = 64 << 10;
        let mut i = 0;
        while i < n {
            let at = self.pos + i as u64;
            let in_stretch = at % STRETCH;
            if in_stretch >= DATA {
                // A run of zeros up to the next stretch.
                let run = ((STRETCH - in_stretch) as usize).min(n - i);
                buf[i..i + run].fill(0);
                i += run;
            } else {
                buf[i] = self.byte_at(at);
                i += 1;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// blake3 of everything `r` yields, and its length.
pub fn hash_reader(r: &mut dyn Read) -> (String, u64) {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    (h.finalize().to_hex().to_string(), total)
}
