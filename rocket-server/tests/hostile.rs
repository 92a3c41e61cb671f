//! Hostile clients against the real server over real HTTP: bodies over the
//! limits, clients that never finish a request, path traversal in every
//! path parameter, tokens guessed at a high rate, an agent credential used
//! for another machine. Each gets a clear 4xx with the JSON error envelope,
//! the server keeps serving everyone else, and nothing changes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::{json, Value};
use ureq::http::Method;

/// Everything a client can see of the server's state, plus the files in
/// its chunk store: equal fingerprints mean nothing changed.
fn fingerprint(app: &TestApp) -> String {
    let mut out = String::new();
    for path in [
        "/api/v1/users",
        "/api/v1/images",
        "/api/v1/setups",
        "/api/v1/machines",
        "/api/v1/jobs",
        "/api/v1/admin/storage",
    ] {
        let mut v = app.get(path, Some(&app.admin)).expect(200).json();
        if path == "/api/v1/machines" {
            // Contact is not state: every call of a machine's agent, even
            // a refused one, is the machine talking (its last contact).
            for m in v.as_array_mut().into_iter().flatten() {
                if let Some(m) = m.as_object_mut() {
                    m.remove("last_seen");
                }
            }
        }
        out.push_str(&v.to_string());
        if path == "/api/v1/images" {
            for img in v.as_array().into_iter().flatten() {
                let id = img["id"].as_str().expect("id");
                let vs = app.get(&format!("/api/v1/images/{id}/versions"), Some(&app.admin));
                out.push_str(&vs.expect(200).text());
            }
        }
    }
    let mut files: Vec<String> = walk(app.dir.path())
        .into_iter()
        // Temp files of an aborted upload's chunks (`put-*.tmp` in the
        // fan-out directories) may sit there until a sweep deletes them
        // (see FsChunkStore::with_stale_age): they are invisible, and not
        // state.
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or_default();
            !p.contains("sqlite")
                && !p.contains(".db")
                && !p.contains("/chunks/tmp/")
                && (!name.starts_with("put-") || !name.ends_with(".tmp"))
        })
        .collect();
    files.sort();
    out.push_str(&files.join("\n"));
    out
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Sends `request` as it is (no client-side normalisation of the path) and
/// reads the answer: (status, body).
fn raw(app: &TestApp, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn envelope(body: &str) -> Value {
    let v: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("error body is not the JSON envelope ({e}): {body:?}"));
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
    v
}

/// An image with one uploaded version, a machine with a queued job: state
/// for the attacks to (fail to) change.
fn populated() -> (TestApp, String, String) {
    let app = TestApp::spawn_with(|s| s.max_upload_bytes = 1 << 20);
    let img = app.post_image(&app.admin, "victim", 1 << 20);
    app.upload(&app.admin, &img, &[7u8; 200_000]).expect(201);
    let m = app.machine("52:54:00:00:00:01");
    app.boot_queue(&app.admin, &m, &img, 1).expect(201);
    (app, img, m)
}

#[test]
fn bodies_over_the_limits_are_413_and_change_nothing() {
    let (app, img, _) = populated();
    let before = fingerprint(&app);

    // A JSON body over the 1 MiB JSON limit.
    let big = json!({"name": "x".repeat(2 << 20), "size": 1024});
    app.post("/api/v1/images", Some(&app.admin), &big)
        .expect_error(413, "too_large");

    // An upload over --max-upload-bytes, streamed.
    let body = vec![1u8; 3 << 20];
    app.upload(&app.admin, &img, &body)
        .expect_error(413, "too_large");

    // The same as multipart.
    let mut mp =
        b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n".to_vec();
    mp.extend_from_slice(&body);
    mp.extend_from_slice(b"\r\n--XX--\r\n");
    app.send(
        Method::POST,
        &format!("/api/v1/images/{img}/versions"),
        Some(&app.admin),
        &[("Content-Type", "multipart/form-data; boundary=XX")],
        Some(mp),
    )
    .expect_error(413, "too_large");

    // A declared length far over the limit is refused before any byte.
    let (status, text) = raw(
        &app,
        &format!(
            "POST /api/v1/images/{img}/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 1099511627776\r\nConnection: close\r\n\r\n{}",
            app.admin,
            // Rocket reads the first bytes of every body before routing.
            "x".repeat(64)
        ),
    );
    assert_eq!(status, 413, "{text}");
    envelope(&text);

    // A chunk-level upload manifest that is garbage, and a chunk over the
    // chunk size.
    app.send(
        Method::POST,
        &format!("/api/v1/images/{img}/uploads"),
        Some(&app.admin),
        &[("Content-Type", "application/octet-stream")],
        Some(b"BAASMF1\0garbage".to_vec()),
    )
    .expect_error(400, "invalid_input");

    assert_eq!(before, fingerprint(&app), "an oversized body changed state");
}

#[test]
fn slow_clients_are_cut_off_and_do_not_stop_the_server() {
    let (app, img, _) = populated();
    let before = fingerprint(&app);
    // Clients that stop half-way: in the request line, in the headers, and
    // in the body of an upload.
    let mut stalled_headers = Vec::new();
    let mut stalled_bodies = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
        let part = match i % 3 {
            0 => "GET /api/v1/ima".to_string(),
            1 => format!("GET /api/v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n", app.admin),
            _ => format!(
                "POST /api/v1/images/{img}/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 500000\r\n\r\n{}",
                app.admin,
                "partial body ".repeat(100)
            ),
        };
        s.write_all(part.as_bytes()).expect("send part");
        if i % 3 == 2 {
            stalled_bodies.push(s);
        } else {
            stalled_headers.push(s);
        }
    }
    // Everyone else is still served while they hang.
    for _ in 0..20 {
        app.get("/healthz", None).expect(200);
        app.get("/api/v1/images", Some(&app.admin)).expect(200);
    }
    // The server answers each stalled body (upload::BODY_IDLE_TIMEOUT) and
    // hangs up; the bound here is generous. (A client stalled inside its
    // headers only holds its own socket and task: Rocket 0.5 has no header
    // read timeout, see benches/README.md, "Proof".)
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut s in stalled_bodies {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                assert!(
                    text.starts_with("HTTP/1.1 400"),
                    "a stalled upload got {text:?}"
                );
                assert!(text.contains("invalid_input"), "{text}");
            }
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "the server never hung up on a stalled client: {e}"
            ),
        }
    }
    app.get("/healthz", None).expect(200);
    app.get("/api/v1/images", Some(&app.admin)).expect(200);
    drop(stalled_headers);
    assert_eq!(before, fingerprint(&app), "a stalled upload changed state");
}

/// Hostile values for a path parameter.
const TRAVERSALS: &[&str] = &[
    "..",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5C..%5Cwindows",
    "%2Fetc%2Fpasswd",
    "x%00y",
    "%252e%252e%252f",
    "....%2F%2F",
    "%c0%ae%c0%ae%2f",
];

#[test]
fn path_traversal_in_every_path_parameter_is_a_4xx_and_changes_nothing() {
    let (app, img, m) = populated();
    let job = app
        .get(&format!("/api/v1/machines/{m}/queue"), Some(&app.admin))
        .expect(200)
        .json();
    let job = job[0]["id"].as_str().unwrap_or_default().to_string();
    let doc = app
        .get("/api/v1/openapi.json", Some(&app.admin))
        .expect(200)
        .json();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    // The original's routes (not in the document).
    for (m, p) in [
        ("POST", "/user/{name}/image"),
        ("GET", "/user/{name}/images"),
        ("GET", "/user/{name}/image_setups"),
        ("POST", "/user/{name}/image_setup"),
        ("GET", "/image/{id}/{version}"),
        ("POST", "/image/{id}"),
        ("GET", "/machine/{mac}"),
        ("POST", "/machine/{mac}/boot"),
    ] {
        routes.push((m.into(), p.into()));
    }
    let before = fingerprint(&app);
    let mut tried = 0;
    for (method, path) in &routes {
        if !path.contains('{') {
            continue;
        }
        let params: Vec<&str> = path.split('/').filter(|s| s.starts_with('{')).collect();
        for (i, _) in params.iter().enumerate() {
            for evil in TRAVERSALS {
                // The other parameters get plausible values.
                let mut n = 0;
                let target: String = path
                    .split('/')
                    .map(|seg| {
                        if !seg.starts_with('{') {
                            return seg.to_string();
                        }
                        let here = n;
                        n += 1;
                        if here == i {
                            return evil.to_string();
                        }
                        match seg {
                            "{machine}" | "{mac}" => m.clone(),
                            "{job}" => job.clone(),
                            "{version}" | "{entry}" => "1".into(),
                            "{name}" => "admin".into(),
                            _ => img.clone(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let body = "{}";
                let (status, text) = raw(
                    &app,
                    &format!(
                        "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        app.admin,
                        body.len()
                    ),
                );
                tried += 1;
                assert!(
                    (400..500).contains(&status),
                    "{method} {target} answered {status}: {text}"
                );
                envelope(&text);
                assert!(
                    !text.contains("root:"),
                    "{method} {target} leaked a file: {text}"
                );
            }
        }
    }
    assert!(tried > 100, "only {tried} requests tried");
    assert_eq!(
        before,
        fingerprint(&app),
        "a traversal attempt changed state"
    );
    eprintln!(
        "path traversal: {tried} requests over {} routes, all 4xx",
        routes.len()
    );
}

#[test]
fn guessed_tokens_are_rate_limited_with_429() {
    let (app, _, _) = populated();
    let before = fingerprint(&app);
    let mut statuses = Vec::new();
    for i in 0..200 {
        let guess = format!("baas_{i:032x}");
        let r = app.get("/api/v1/images", Some(&guess));
        statuses.push(r.status);
        let code = if r.status == 429 {
            "rate_limited"
        } else {
            "unauthenticated"
        };
        r.expect_error(*statuses.last().expect("status"), code);
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        statuses[0], 401,
        "the first bad token is only unauthenticated"
    );
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        limited >= 100,
        "only {limited} of 200 guesses were rate limited"
    );
    assert_eq!(*statuses.last().expect("last"), 429);
    // While blocked, even a right guess learns nothing.
    app.get("/api/v1/images", Some(&app.admin))
        .expect_error(429, "rate_limited");
    // Unauthenticated routes still answer.
    app.get("/healthz", None).expect(200);
    // The block lifts by itself.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = app.get("/api/v1/images", Some(&app.admin));
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(Instant::now() < deadline, "the block never lifted");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(before, fingerprint(&app));
}

#[test]
fn an_agent_credential_for_one_machine_cannot_touch_another() {
    let (app, img, victim) = populated();
    let mine = app.machine("52:54:00:00:00:02");
    let token = app.agent_token(&mine);
    let victim_job = app
        .get(
            &format!("/api/v1/machines/{victim}/queue"),
            Some(&app.admin),
        )
        .expect(200)
        .json()[0]["id"]
        .as_str()
        .expect("victim's job")
        .to_string();
    let before = fingerprint(&app);
    let inventory =
        json!({"disks": [], "nics": [], "memory_bytes": 1, "cpu_model": "evil", "cpus": 1});
    let attempts: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            format!("/api/v1/agent/machines/{victim}/inventory"),
            inventory.clone(),
        ),
        (
            Method::POST,
            "/api/v1/agent/machines/52:54:00:00:00:01/inventory".into(),
            inventory,
        ),
        (
            Method::GET,
            format!("/api/v1/agent/machines/{victim}/next-job?wait_ms=0"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/agent/machines/{victim}/logs"),
            json!({"lines": ["x"]}),
        ),
        (
            Method::GET,
            format!("/api/v1/agent/jobs/{victim_job}/entries/0/manifest"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/agent/jobs/{victim_job}/entries/0/chunks"),
            json!({"hashes": []}),
        ),
        (
            Method::POST,
            format!("/api/v1/agent/jobs/{victim_job}/progress"),
            json!({"phase": "flash", "bytes_done": 1, "bytes_total": 2}),
        ),
        (
            Method::POST,
            format!("/api/v1/agent/jobs/{victim_job}/advance"),
            json!({"state": "running"}),
        ),
        (
            Method::POST,
            format!("/api/v1/agent/jobs/{victim_job}/fail"),
            json!({"phase": "x", "reason": "y"}),
        ),
        (
            Method::POST,
            format!("/api/v1/machines/{victim}/agent-token"),
            json!({}),
        ),
        (
            Method::GET,
            format!("/api/v1/machines/{victim}"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/api/v1/images/{img}/versions/1/content"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/machines/{victim}/jobs"),
            json!({"image_id": img}),
        ),
        (
            Method::POST,
            format!("/api/v1/jobs/{victim_job}/cancel"),
            Value::Null,
        ),
    ];
    for (method, path, body) in attempts {
        let r = if body.is_null() {
            app.send(method.clone(), &path, Some(&token), &[], None)
        } else {
            app.json(method.clone(), &path, Some(&token), &body)
        };
        assert!(
            matches!(r.status, 403 | 404),
            "{method} {path} with another machine's agent credential: {} {}",
            r.status,
            r.text()
        );
        let code = if r.status == 403 {
            "forbidden"
        } else {
            "not_found"
        };
        r.expect_error(if code == "forbidden" { 403 } else { 404 }, code);
    }
    assert_eq!(
        before,
        fingerprint(&app),
        "another machine's agent changed state"
    );
}
