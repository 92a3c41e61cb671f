//! Streaming uploads and downloads over real HTTP: a 1 GiB sparse image up
//! by multipart and back byte-identical, the resumable chunk-level
//! protocol, ranges and resumed downloads, a client that disconnects
//! mid-upload, concurrent uploads, and a server that keeps answering while
//! an upload runs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baas_core::content::{encode_frame, is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use common::{hash_reader, SparseImage, TestApp};
use serde_json::json;
use ureq::http::Method;

/// Hashes what passes through it.
struct Tee<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

const BOUNDARY: &str = "baas-test-boundary-7MA4YWxkTrZu0gW";

fn multipart_head(field: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nfrom the test\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"image.img\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

fn multipart_tail() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[test]
fn one_gib_sparse_image_by_multipart_and_back_byte_identical() {
    const SIZE: u64 = 1 << 30;
    let app = TestApp::spawn();
    let (_, tok) = app.user("erin", "user");
    let img = app.post_image(&tok, "big", SIZE);

    let started = Instant::now();
    let mut tee = Tee {
        inner: SparseImage::new(SIZE, 42),
        hasher: blake3::Hasher::new(),
        len: 0,
    };
    let mut body = std::io::Cursor::new(multipart_head("disk"))
        .chain(&mut tee)
        .chain(std::io::Cursor::new(multipart_tail()));
    let v = app
        .send_reader(
            Method::POST,
            &format!("/api/v1/images/{img}/versions"),
            Some(&tok),
            &[("Content-Type", &multipart_type())],
            &mut body,
        )
        .expect(201)
        .json();
    let sent_hash = tee.hasher.finalize().to_hex().to_string();
    assert_eq!(tee.len, SIZE);
    assert_eq!(v["number"], 1);
    assert_eq!(v["size"], SIZE);
    assert_eq!(v["note"], "from the test");
    // Mostly zeros: 128 stretches of 64 KiB of data are all that is stored.
    assert_eq!(v["data_chunks"], 128);
    eprintln!("uploaded 1 GiB in {:?}", started.elapsed());

    let started = Instant::now();
    let res = app.open(
        &format!("/api/v1/images/{img}/versions/latest/content"),
        Some(&tok),
        &[],
    );
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(SIZE.to_string().as_str())
    );
    let (_, body) = res.into_parts();
    let (got_hash, got_len) = hash_reader(&mut body.into_reader());
    assert_eq!(got_len, SIZE);
    assert_eq!(got_hash, sent_hash);
    eprintln!("downloaded 1 GiB in {:?}", started.elapsed());
}

fn manifest_of(data: &[u8]) -> Manifest {
    let chunks = data
        .chunks(CHUNK_SIZE as usize)
        .map(|c| (!is_zero(c)).then(|| ChunkHash::of(c)))
        .collect();
    Manifest::new(data.len() as u64, CHUNK_SIZE, chunks).expect("manifest")
}

fn chunk_of<'a>(data: &'a [u8], m: &Manifest, hash: &str) -> &'a [u8] {
    let want: ChunkHash = hash.parse().expect("hash");
    let i = m
        .chunks()
        .position(|c| c == Some(want))
        .expect("chunk in manifest");
    let cs = CHUNK_SIZE as usize;
    &data[i * cs..(i * cs + cs).min(data.len())]
}

fn missing(v: &serde_json::Value) -> Vec<String> {
    v["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect()
}

#[test]
fn chunk_level_upload_resumes_and_reuploads_only_new_chunks() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("frank", "user");
    let (_, other) = app.user("grace", "user");
    let img = app.post_image(&tok, "resumable", 8 << 20);
    let mut data = SparseImage::bytes(40 * u64::from(CHUNK_SIZE) + 1234, 9);
    // A duplicate chunk: stored once.
    let cs = CHUNK_SIZE as usize;
    let first = data[..cs].to_vec();
    data[20 * cs..21 * cs].copy_from_slice(&first);
    let m = manifest_of(&data);

    let begun = app
        .send(
            Method::POST,
            &format!("/api/v1/images/{img}/uploads"),
            Some(&tok),
            &[("Content-Type", "application/octet-stream")],
            Some(m.encode()),
        )
        .expect(201)
        .json();
    let upload = begun["upload_id"].as_str().expect("upload id").to_string();
    let need = missing(&begun);
    assert_eq!(need.len(), m.distinct_chunks().len());

    // Another user cannot see or feed this upload.
    app.get(&format!("/api/v1/uploads/{upload}"), Some(&other))
        .expect_error(404, "not_found");

    // Send half, then "lose the connection" and ask what is still missing.
    let (sent, rest) = need.split_at(need.len() / 2);
    for h in sent {
        let frame = encode_frame(chunk_of(&data, &m, h), 1).expect("frame");
        app.send(
            Method::PUT,
            &format!("/api/v1/uploads/{upload}/chunks/{h}"),
            Some(&tok),
            &[("Content-Type", "application/octet-stream")],
            Some(frame),
        )
        .expect(201);
    }
    app.post(
        &format!("/api/v1/uploads/{upload}/commit"),
        Some(&tok),
        &json!({}),
    )
    .expect_error(409, "conflict");
    let still = missing(
        &app.get(&format!("/api/v1/uploads/{upload}"), Some(&tok))
            .expect(200)
            .json(),
    );
    let mut want_rest = rest.to_vec();
    want_rest.sort();
    let mut got_rest = still.clone();
    got_rest.sort();
    assert_eq!(got_rest, want_rest);

    // A frame that does not match its hash, and a chunk not in the manifest.
    let wrong = encode_frame(&[1u8; 100], 1).expect("frame");
    app.send(
        Method::PUT,
        &format!("/api/v1/uploads/{upload}/chunks/{}", still[0]),
        Some(&tok),
        &[],
        Some(wrong.clone()),
    )
    .expect_error(400, "invalid_input");
    app.send(
        Method::PUT,
        &format!(
            "/api/v1/uploads/{upload}/chunks/{}",
            ChunkHash::of(&[1u8; 100])
        ),
        Some(&tok),
        &[],
        Some(wrong),
    )
    .expect_error(400, "invalid_input");

    for h in &still {
        let frame = encode_frame(chunk_of(&data, &m, h), 1).expect("frame");
        app.send(
            Method::PUT,
            &format!("/api/v1/uploads/{upload}/chunks/{h}"),
            Some(&tok),
            &[],
            Some(frame),
        )
        .expect(201);
    }
    let v = app
        .send(
            Method::POST,
            &format!("/api/v1/uploads/{upload}/commit"),
            Some(&tok),
            &[],
            None,
        )
        .expect(201)
        .json();
    assert_eq!(v["number"], 1);
    assert_eq!(v["root"], m.root().to_hex());
    let back = app
        .get(
            &format!("/api/v1/images/{img}/versions/1/content"),
            Some(&tok),
        )
        .expect(200);
    assert_eq!(back.body, data);

    // Re-upload with one chunk changed: only that chunk is missing.
    let mut changed = data.clone();
    changed[5 * cs + 10] ^= 0xff;
    let m2 = manifest_of(&changed);
    let begun = app
        .send(
            Method::POST,
            &format!("/api/v1/images/{img}/uploads"),
            Some(&tok),
            &[],
            Some(m2.encode()),
        )
        .expect(201)
        .json();
    let need = missing(&begun);
    assert_eq!(need.len(), 1);
    let upload2 = begun["upload_id"].as_str().expect("upload id");
    let frame = encode_frame(chunk_of(&changed, &m2, &need[0]), 3).expect("frame");
    app.send(
        Method::PUT,
        &format!("/api/v1/uploads/{upload2}/chunks/{}", need[0]),
        Some(&tok),
        &[],
        Some(frame),
    )
    .expect(201);
    let v2 = app
        .post(
            &format!("/api/v1/uploads/{upload2}/commit"),
            Some(&tok),
            &json!({"note": "one chunk changed"}),
        )
        .expect(201)
        .json();
    assert_eq!(v2["number"], 2);
    assert_eq!(v2["note"], "one chunk changed");
    assert_eq!(
        app.get(
            &format!("/api/v1/images/{img}/versions/2/content"),
            Some(&tok)
        )
        .expect(200)
        .body,
        changed
    );

    // An aborted upload is gone; a bad manifest is refused.
    let begun = app
        .send(
            Method::POST,
            &format!("/api/v1/images/{img}/uploads"),
            Some(&tok),
            &[],
            Some(m.encode()),
        )
        .expect(201)
        .json();
    let upload3 = begun["upload_id"].as_str().expect("upload id");
    app.delete(&format!("/api/v1/uploads/{upload3}"), Some(&tok))
        .expect(204);
    app.get(&format!("/api/v1/uploads/{upload3}"), Some(&tok))
        .expect_error(404, "not_found");
    app.send(
        Method::POST,
        &format!("/api/v1/images/{img}/uploads"),
        Some(&tok),
        &[],
        Some(b"not a manifest".to_vec()),
    )
    .expect_error(400, "invalid_input");
}

#[test]
fn ranges_conditional_requests_head_and_curl_resume() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("heidi", "user");
    let img = app.post_image(&tok, "ranged", 4 << 20);
    let data = SparseImage::bytes((2 << 20) + 123, 5);
    let v = app.upload(&tok, &img, &data).expect(201).json();
    let path = format!("/api/v1/images/{img}/versions/1/content");
    let len = data.len();
    let etag = format!("\"{}\"", v["root"].as_str().expect("root"));

    let full = app.get(&path, Some(&tok)).expect(200);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.header("etag"), Some(etag.as_str()));
    assert_eq!(
        full.header("content-type"),
        Some("application/octet-stream")
    );

    let r = app
        .send(
            Method::GET,
            &path,
            Some(&tok),
            &[("Range", "bytes=1000-1999")],
            None,
        )
        .expect(206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{len}").as_str())
    );
    assert_eq!(r.body, data[1000..2000]);
    let r = app
        .send(
            Method::GET,
            &path,
            Some(&tok),
            &[("Range", "bytes=-77")],
            None,
        )
        .expect(206);
    assert_eq!(r.body, data[len - 77..]);
    let r = app
        .send(
            Method::GET,
            &path,
            Some(&tok),
            &[("Range", &format!("bytes={}-", len - 70_000))],
            None,
        )
        .expect(206);
    assert_eq!(r.body, data[len - 70_000..]);
    let r = app.send(
        Method::GET,
        &path,
        Some(&tok),
        &[("Range", &format!("bytes={len}-"))],
        None,
    );
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    r.expect_error(416, "range_not_satisfiable");
    // If-Range with another ETag: the whole body.
    app.send(
        Method::GET,
        &path,
        Some(&tok),
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
        None,
    )
    .expect(200);

    let r = app
        .send(
            Method::GET,
            &path,
            Some(&tok),
            &[("If-None-Match", &etag)],
            None,
        )
        .expect(304);
    assert!(r.body.is_empty());
    let r = app
        .send(Method::HEAD, &path, Some(&tok), &[], None)
        .expect(200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // The original's download route serves the same bytes, ranges included.
    let r = app
        .send(
            Method::GET,
            &format!("/image/{img}/latest"),
            Some(&tok),
            &[("Range", "bytes=5-9")],
            None,
        )
        .expect(206);
    assert_eq!(r.body, data[5..10]);

    // `curl -C -` resumes a partial download.
    let have_curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_curl {
        assert!(
            std::env::var("CI").is_err(),
            "curl is missing (CI installs it with apt)"
        );
        return;
    }
    let out = app.dir.path().join("partial.img");
    std::fs::write(&out, &data[..777_777]).expect("partial file");
    let status = std::process::Command::new("curl")
        .args(["-sS", "-f", "-C", "-", "-o"])
        .arg(&out)
        .args(["-H", &format!("Authorization: Bearer {tok}")])
        .arg(app.url(&path))
        .status()
        .expect("curl runs");
    assert!(status.success());
    assert_eq!(std::fs::read(&out).expect("resumed file"), data);
}

fn versions_of(app: &TestApp, tok: &str, img: &str) -> Vec<u64> {
    app.get(&format!("/api/v1/images/{img}/versions"), Some(tok))
        .expect(200)
        .json()
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["number"].as_u64())
        .collect()
}

/// Waits until `started` uploads have started and none is running.
fn wait_for_uploads_to_end(app: &TestApp, started: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("baas_uploads_total") < started || app.metric("baas_uploads_in_progress") != 0
    {
        assert!(Instant::now() < deadline, "an upload never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_no_version() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("ivan", "user");
    let img = app.post_image(&tok, "dropped", 64 << 20);
    let chunk = SparseImage::bytes(3 << 20, 3);

    // A raw body that promises 16 MiB and stops after 3 MiB.
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    write!(
        s,
        "POST /api/v1/images/{img}/versions HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {tok}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        16 << 20
    )
    .expect("headers");
    s.write_all(&chunk).expect("part of the body");
    s.flush().expect("flush");
    drop(s);

    // The same with a multipart body cut off inside the file part.
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    write!(
        s,
        "POST /image/{img} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {tok}\r\nContent-Type: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        multipart_type()
    )
    .expect("headers");
    let mut part = multipart_head("file");
    part.extend_from_slice(&chunk);
    write!(s, "{:x}\r\n", part.len()).expect("chunk size");
    s.write_all(&part).expect("chunk");
    s.write_all(b"\r\n").expect("chunk end");
    s.flush().expect("flush");
    drop(s);

    wait_for_uploads_to_end(&app, 2);
    assert_eq!(versions_of(&app, &tok, &img), [0]);
    // And the image still takes a complete upload, as version 1.
    app.upload(&tok, &img, &chunk).expect(201);
    assert_eq!(versions_of(&app, &tok, &img), [0, 1]);
}

#[test]
fn eight_concurrent_uploads_get_eight_distinct_versions() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("judy", "user");
    let img = app.post_image(&tok, "busy", 1 << 20);
    let results: Vec<(u64, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let (app, tok, img) = (&app, &tok, &img);
                s.spawn(move || {
                    let data = SparseImage::bytes(200_000 + i * 1000, 100 + i);
                    let v = app.upload(tok, img, &data).expect(201).json();
                    (v["number"].as_u64().expect("number"), data)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("upload thread"))
            .collect()
    });
    let mut numbers: Vec<u64> = results.iter().map(|(n, _)| *n).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    for (n, data) in &results {
        let back = app
            .get(
                &format!("/api/v1/images/{img}/versions/{n}/content"),
                Some(&tok),
            )
            .expect(200);
        assert_eq!(&back.body, data, "version {n}");
    }
}

/// A body that sends `first` bytes, then waits for a signal before sending
/// the rest.
struct Gated {
    inner: SparseImage,
    first: u64,
    sent: u64,
    gate: Option<mpsc::Receiver<()>>,
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.first {
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv_timeout(Duration::from_secs(60));
            }
        }
        let max = if self.sent < self.first {
            ((self.first - self.sent) as usize).min(buf.len())
        } else {
            buf.len()
        };
        let n = self.inner.read(&mut buf[..max])?;
        self.sent += n as u64;
        Ok(n)
    }
}

#[test]
fn the_server_answers_while_a_long_upload_runs() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("mallory", "user");
    let img = app.post_image(&tok, "slow", 64 << 20);
    let (open_gate, gate) = mpsc::channel();
    std::thread::scope(|s| {
        let upload = s.spawn(|| {
            let mut body = Gated {
                inner: SparseImage::new(32 << 20, 8),
                first: 4 << 20,
                sent: 0,
                gate: Some(gate),
            };
            app.send_reader(
                Method::POST,
                &format!("/api/v1/images/{img}/versions"),
                Some(&tok),
                &[],
                &mut body,
            )
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.metric("baas_uploads_in_progress") != 1 {
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The upload is stalled half-way; everything else still answers.
        for _ in 0..20 {
            app.get("/healthz", None).expect(200);
        }
        app.get(&format!("/api/v1/images/{img}"), Some(&tok))
            .expect(200);
        assert_eq!(versions_of(&app, &tok, &img), [0]);
        open_gate.send(()).expect("open the gate");
        let v = upload.join().expect("upload thread").expect(201).json();
        assert_eq!(v["size"], 32 << 20);
    });
}

#[test]
fn multipart_takes_the_first_part_whatever_its_name_and_a_note() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("olivia", "user");
    let img = app.post_image(&tok, "parts", 1 << 20);
    let data = SparseImage::bytes(100_000, 12);
    // No filename, an unusual field name, a note before it and a part after.
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nkernel 6.12\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(
        format!(
            "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"extra\"\r\n\r\nignored\r\n--{BOUNDARY}--\r\n"
        )
        .as_bytes(),
    );
    let v = app
        .send(
            Method::POST,
            &format!("/api/v1/images/{img}/versions"),
            Some(&tok),
            &[("Content-Type", &multipart_type())],
            Some(body),
        )
        .expect(201)
        .json();
    assert_eq!(v["note"], "kernel 6.12");
    assert_eq!(v["size"], 100_000);
    assert_eq!(
        app.get(
            &format!("/api/v1/images/{img}/versions/1/content"),
            Some(&tok)
        )
        .expect(200)
        .body,
        data
    );
    // A multipart body with no part, and one that is not multipart at all.
    app.send(
        Method::POST,
        &format!("/api/v1/images/{img}/versions"),
        Some(&tok),
        &[("Content-Type", &multipart_type())],
        Some(format!("--{BOUNDARY}--\r\n").into_bytes()),
    )
    .expect_error(400, "invalid_input");
    app.send(
        Method::POST,
        &format!("/api/v1/images/{img}/versions"),
        Some(&tok),
        &[("Content-Type", &multipart_type())],
        Some(b"garbage".to_vec()),
    )
    .expect_error(400, "invalid_input");
}
