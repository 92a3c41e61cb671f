//! `HttpAgentLink` against the real server: every `AgentLink` call
//! round-trips through HTTP and agrees with the services; errors come back
//! as the core's kinds and 4xx are never retried; connection errors and
//! 5xx are retried with backoff (a scripted server, a proxy that drops
//! connections and loses answers, a server restarted on the same data
//! directory).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baas_client_http::{HttpAgentLink, HttpLinkConfig};
use baas_core::content::{decode_frame, encode_frame, ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::*;
use baas_core::ports::AgentLink;
use baas_core::{Actor, ErrorKind};
use common::{disk_image, Lab, Mode, Proxy};

const MAC: &str = "52:54:00:12:34:56";

fn quick() -> HttpLinkConfig {
    HttpLinkConfig {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(30),
        attempts: 10,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
    }
}

fn link(base: &str, token: &str) -> HttpAgentLink {
    HttpAgentLink::new(base, MAC.parse().expect("mac"), token, quick()).expect("link")
}

fn inventory() -> Inventory {
    Inventory {
        disks: vec![DiskInfo {
            path: "/dev/nvme0n1".into(),
            by_id: vec!["nvme-Samsung_SSD_980_S1".into()],
            serial: Some("S1".into()),
            wwn: Some("eui.0025385b71b0b2c1".into()),
            model: Some("Samsung SSD 980".into()),
            size: 1 << 30,
            logical_block: 512,
            physical_block: 4096,
            rotational: false,
            removable: false,
        }],
        nics: vec![NicInfo {
            name: "enp1s0".into(),
            mac: MAC.parse().expect("mac"),
            speed_mbps: Some(1000),
        }],
        memory_bytes: 8 << 30,
        cpu_model: "Test CPU".into(),
        cpus: 4,
    }
}

/// A lab with a machine, an image with one version, a job for it, and the
/// agent's link.
struct Setup {
    lab: Lab,
    machine: String,
    image: String,
    data: Vec<u8>,
    token: String,
}

fn setup(size: usize) -> Setup {
    let lab = Lab::new();
    let machine = lab.machine(MAC);
    let image = lab.image("disk", size as u64);
    let data = disk_image(size, 7);
    lab.upload(&image, &data);
    let token = lab.agent_token(&machine);
    Setup {
        lab,
        machine,
        image,
        data,
        token,
    }
}

#[test]
fn every_agent_link_call_round_trips_through_http() {
    let s = setup(1 << 20);
    let l = link(&s.lab.base(), &s.token);
    let baas = s.lab.baas().clone();
    let machine_id: MachineId = s.machine.parse().expect("id");
    let local = baas_core::services::LocalAgentLink::new(baas.clone(), machine_id);

    // Inventory: what is sent is what the server stores.
    let m = l.report_inventory(&inventory()).expect("inventory");
    assert_eq!(m.id, machine_id);
    assert_eq!(m.inventory.as_ref(), Some(&inventory()));
    assert_eq!(
        m,
        baas.get_machine(&Actor::System, machine_id)
            .expect("machine")
    );

    // No job yet: the long poll waits, then says so.
    let t = Instant::now();
    assert_eq!(l.next_job(300).expect("poll"), None);
    assert!(t.elapsed() >= Duration::from_millis(250));

    let job_id = s.lab.queue(&s.machine, &s.image, 1, "serial:S1#2", true);
    let job = l.next_job(5_000).expect("poll").expect("a job");
    assert_eq!(job.id.to_string(), job_id);
    assert_eq!(job.state, JobState::Provisioning);
    assert_eq!(job.entries[0].disk.to_string(), "serial:S1#2");
    assert_eq!(Some(&job), local.next_job(0).expect("local").as_ref());

    // Manifest and frames, as the services give them.
    let manifest = l.manifest(job.id, 0).expect("manifest");
    assert_eq!(manifest, local.manifest(job.id, 0).expect("local manifest"));
    assert_eq!(manifest.size(), s.data.len() as u64);
    let hashes: Vec<ChunkHash> = manifest.distinct_chunks().into_iter().collect();
    assert!(!hashes.is_empty());
    let frames = l.chunks(job.id, 0, &hashes).expect("chunks");
    assert_eq!(
        frames,
        local.chunks(job.id, 0, &hashes).expect("local chunks")
    );
    let mut rebuilt = vec![0u8; s.data.len()];
    for (i, c) in manifest.chunks().enumerate() {
        if let Some(h) = c {
            let pos = hashes.iter().position(|x| *x == h).expect("fetched");
            let bytes = decode_frame(&frames[pos], &h).expect("verifies");
            let at = i * CHUNK_SIZE as usize;
            rebuilt[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    assert_eq!(rebuilt, s.data);
    assert!(l.stats().frame_bytes_received > 0);

    // Progress, logs, advance.
    let p = Progress {
        phase: "flash".into(),
        bytes_done: 5,
        bytes_total: 10,
        rate: 100,
    };
    l.progress(job.id, &p).expect("progress");
    assert_eq!(
        baas.get_job(&Actor::System, job.id).expect("job").progress,
        p
    );
    l.log(Some(job.id), &["first line".into(), "second line".into()])
        .expect("log");
    l.log(None, &["no job".into()]).expect("log without a job");
    let lines: Vec<String> = (0..2500).map(|i| format!("line {i}")).collect();
    l.log(Some(job.id), &lines)
        .expect("many lines, several calls");
    let running = l
        .advance(job.id, JobState::Running, "flashed")
        .expect("advance");
    assert_eq!(running.state, JobState::Running);
    let events = s.lab.events(&job_id);
    assert!(events.contains(&("log".into(), "second line".into())));
    assert!(events.contains(&("log".into(), "line 2499".into())));
    assert!(events.contains(&("running".into(), "flashed".into())));

    // Capture: the session ends, the agent captures a changed disk.
    s.lab.advance(&job_id, JobState::Capturing);
    let mut disk = s.data.clone();
    disk[3 * CHUNK_SIZE as usize + 1] ^= 0x55;
    let cs = CHUNK_SIZE as usize;
    let chunks: Vec<Option<ChunkHash>> = disk
        .chunks(cs)
        .map(|c| (!c.iter().all(|b| *b == 0)).then(|| ChunkHash::of(c)))
        .collect();
    let captured = Manifest::new(disk.len() as u64, CHUNK_SIZE, chunks).expect("manifest");
    let (upload, missing) = l.begin_capture(job.id, 0, &captured).expect("begin");
    assert_eq!(missing, vec![ChunkHash::of(&disk[3 * cs..4 * cs])]);
    let frames: Vec<(ChunkHash, Vec<u8>)> = missing
        .iter()
        .map(|h| {
            let i = captured
                .chunks()
                .position(|c| c == Some(*h))
                .expect("in manifest");
            (
                *h,
                encode_frame(&disk[i * cs..(i + 1) * cs], 3).expect("frame"),
            )
        })
        .collect();
    l.upload_chunks(upload, &frames).expect("upload");
    let v = l.commit_capture(upload).expect("commit");
    assert_eq!(v.number, 2);
    assert_eq!(v.root, captured.root());
    assert_eq!(v.source, VersionSource::Capture { job: job.id });
    let image_id: ImageId = s.image.parse().expect("image id");
    assert_eq!(
        v,
        baas.get_version(&Actor::System, image_id, VersionRef::Number(2))
            .expect("version")
    );
    assert_eq!(s.lab.content(&s.image, 2), disk);
    let done = l
        .advance(job.id, JobState::Succeeded, "captured")
        .expect("succeed");
    assert_eq!(done.state, JobState::Succeeded);

    // Fail, on a second job.
    let second = s.lab.queue(&s.machine, &s.image, 2, "first", false);
    let j = l.next_job(0).expect("poll").expect("second job");
    assert_eq!(j.id.to_string(), second);
    let failed = l.fail(j.id, "flash", "disk too small").expect("fail");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("flash: disk too small"));
    assert_eq!(l.stats().retries, 0, "nothing needed a retry");
}

/// `chunk_deltas` over HTTP answers what the services answer: each chunk
/// whose local copy differs in one byte comes back as a delta that
/// rebuilds it from that copy; the counters see what crossed.
#[test]
fn chunk_deltas_round_trip_through_http() {
    use baas_core::delta::{apply_delta, encode_wants, BlockHashes, DeltaReply, DeltaWant};
    let s = setup(1 << 20);
    let l = link(&s.lab.base(), &s.token);
    let machine_id: MachineId = s.machine.parse().expect("id");
    let local = baas_core::services::LocalAgentLink::new(s.lab.baas().clone(), machine_id);
    s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(5_000).expect("poll").expect("a job");
    let manifest = l.manifest(job.id, 0).expect("manifest");
    let cs = CHUNK_SIZE as usize;
    let (wants, olds): (Vec<DeltaWant>, Vec<Vec<u8>>) = manifest
        .chunks()
        .enumerate()
        .filter_map(|(i, c)| {
            let mut old = s.data[i * cs..((i + 1) * cs).min(s.data.len())].to_vec();
            old[100] ^= 0xff;
            c.map(|hash| {
                let blocks = BlockHashes::of(&old);
                (DeltaWant { hash, blocks }, old)
            })
        })
        .unzip();
    assert!(!wants.is_empty());
    let replies = l.chunk_deltas(job.id, 0, &wants).expect("deltas");
    assert_eq!(
        replies,
        local.chunk_deltas(job.id, 0, &wants).expect("local")
    );
    let mut deltas = 0;
    for ((w, old), r) in wants.iter().zip(&olds).zip(&replies) {
        let bytes = match r {
            DeltaReply::Delta(d) => {
                deltas += 1;
                apply_delta(d, old, &w.hash).expect("applies")
            }
            DeltaReply::Frame(f) => decode_frame(f, &w.hash).expect("frame"),
        };
        assert_eq!(ChunkHash::of(&bytes), w.hash);
    }
    assert!(deltas > 0);
    let st = l.stats();
    assert_eq!(st.deltas_received, deltas);
    assert_eq!(st.fetch_request_bytes, encode_wants(&wants).len() as u64);
    assert_eq!(
        st.frame_bytes_received,
        replies.iter().map(|r| r.len() as u64).sum::<u64>()
    );
}

/// An agent newer than its server: the server has no deltas route (the
/// proxy answers 404 for it, as the server does for any route it lacks).
/// `chunk_deltas` then answers with whole frames from `chunks`, and stops
/// asking for the route once that worked; a job entry that does not exist
/// is still an error, not taken for a missing route.
#[test]
fn chunk_deltas_fall_back_to_frames_on_a_server_without_the_route() {
    use baas_core::delta::{BlockHashes, DeltaReply, DeltaWant};
    let s = setup(1 << 20);
    let proxy = Proxy::start(s.lab.port);
    proxy.set(Mode::NoRoute("/deltas"));
    let l = link(&proxy.base(), &s.token);
    s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(5_000).expect("poll").expect("a job");
    let manifest = l.manifest(job.id, 0).expect("manifest");
    let cs = CHUNK_SIZE as usize;
    let wants: Vec<DeltaWant> = manifest
        .chunks()
        .enumerate()
        .filter_map(|(i, c)| {
            let mut old = s.data[i * cs..((i + 1) * cs).min(s.data.len())].to_vec();
            old[100] ^= 0xff;
            c.map(|hash| DeltaWant {
                hash,
                blocks: BlockHashes::of(&old),
            })
        })
        .collect();
    assert!(!wants.is_empty());

    let e = l.chunk_deltas(job.id, 7, &wants).expect_err("no entry 7");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");

    for round in 0..2 {
        let before = l.stats().requests;
        let replies = l.chunk_deltas(job.id, 0, &wants).expect("frames");
        assert_eq!(replies.len(), wants.len());
        for (w, r) in wants.iter().zip(&replies) {
            let DeltaReply::Frame(f) = r else {
                panic!("a delta from a server without deltas")
            };
            let bytes = decode_frame(f, &w.hash).expect("frame");
            assert_eq!(ChunkHash::of(&bytes), w.hash);
        }
        // The first round asks for deltas, then for frames; the second
        // only for frames.
        assert_eq!(l.stats().requests - before, 2 - round, "round {round}");
    }
    assert_eq!(l.stats().deltas_received, 0);
    assert_eq!(l.stats().retries, 0, "a 404 is not retried");
}

#[test]
fn errors_come_back_as_core_kinds_and_4xx_are_not_retried() {
    let s = setup(256 * 1024);
    let l = link(&s.lab.base(), &s.token);
    let job_id = s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(0).expect("poll").expect("job");

    let bad = link(&s.lab.base(), "baas_not_a_token");
    let e = bad.next_job(0).expect_err("bad token");
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);

    let e = l.manifest(job.id, 7).expect_err("no entry 7");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = l
        .chunks(job.id, 0, &[ChunkHash::of(b"not in the manifest")])
        .expect_err("unknown chunk");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = l
        .advance(job.id, JobState::Succeeded, "too early")
        .expect_err("illegal");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let e = l
        .progress(
            job.id,
            &Progress {
                phase: "flash".into(),
                bytes_done: 9,
                bytes_total: 1,
                rate: 0,
            },
        )
        .expect_err("done > total");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(e.field(), Some("bytes_done"));
    let e = l
        .begin_capture(job.id, 0, &Manifest::blank(1 << 20))
        .expect_err("not capturing");
    assert_eq!(e.kind(), ErrorKind::Conflict);

    // Another machine's credential: nothing of this machine's.
    let other = s.lab.machine("52:54:00:00:00:77");
    let theirs = link(&s.lab.base(), &s.lab.agent_token(&other));
    for e in [
        theirs.next_job(0).expect_err("not its machine"),
        theirs
            .report_inventory(&inventory())
            .expect_err("not its machine"),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    }
    for e in [
        theirs.manifest(job.id, 0).expect_err("not its job"),
        theirs
            .advance(job.id, JobState::Running, "x")
            .expect_err("not its job"),
        theirs.fail(job.id, "x", "y").expect_err("not its job"),
    ] {
        assert_eq!(e.kind(), ErrorKind::Forbidden, "{e:?}");
    }
    let after = s.lab.job(&job_id);
    assert_eq!(after["state"], "provisioning");
    assert!(!s.lab.events(&job_id).iter().any(|(k, _)| k == "log"));

    assert_eq!(l.stats().retries, 0);
    assert_eq!(theirs.stats().retries, 0);
    assert_eq!(bad.stats().retries, 0);
}

/// A one-connection-at-a-time HTTP server answering from a script, one
/// answer per connection; counts requests.
fn scripted(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // Read the request head and its body (Content-Length).
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
                if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while req.len() < head_end + len {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            c.fetch_add(1, Ordering::Relaxed);
            let Some((status, body)) = answers.next() else {
                break;
            };
            if status == 0 {
                // Hang up without an answer.
                continue;
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (format!("http://127.0.0.1:{port}"), count)
}

const UNAVAILABLE: &str =
    r#"{"error": {"code": "unavailable", "message": "the pool is exhausted"}}"#;
const INTERNAL: &str = r#"{"error": {"code": "internal", "message": "internal error"}}"#;
const NOT_FOUND: &str =
    r#"{"error": {"code": "not_found", "message": "machine 52:54:00:12:34:56 not found"}}"#;
const INVALID: &str =
    r#"{"error": {"code": "invalid_input", "message": "wait_ms: bad", "field": "wait_ms"}}"#;

#[test]
fn connection_errors_and_5xx_are_retried_4xx_never() {
    // 503, 500 and a hang-up, then success.
    let (base, count) = scripted(vec![
        (503, UNAVAILABLE),
        (500, INTERNAL),
        (0, ""),
        (204, ""),
    ]);
    let l = link(&base, "t");
    assert_eq!(l.next_job(0).expect("fourth attempt"), None);
    assert_eq!(count.load(Ordering::Relaxed), 4);
    assert_eq!(l.stats().retries, 3);

    for (status, body, kind) in [
        (404, NOT_FOUND, ErrorKind::NotFound),
        (400, INVALID, ErrorKind::Invalid),
        (409, "", ErrorKind::Conflict),
        (401, "", ErrorKind::Unauthenticated),
    ] {
        let (base, count) = scripted(vec![(status, body), (204, "")]);
        let l = link(&base, "t");
        let e = l.next_job(0).expect_err("a 4xx");
        assert_eq!(e.kind(), kind, "{status}: {e:?}");
        assert_eq!(count.load(Ordering::Relaxed), 1, "{status} not retried");
        assert_eq!(l.stats().retries, 0);
    }

    // Bounded: a server that keeps failing gets `attempts` tries.
    let (base, count) = scripted(vec![(503, UNAVAILABLE); 20]);
    let l = HttpAgentLink::new(
        &base,
        MAC.parse().expect("mac"),
        "t",
        HttpLinkConfig {
            attempts: 3,
            ..quick()
        },
    )
    .expect("link");
    let e = l.next_job(0).expect_err("gives up");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.retryable());
    assert_eq!(count.load(Ordering::Relaxed), 3);

    // Nobody listening at all.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let l = HttpAgentLink::new(
        &format!("http://127.0.0.1:{port}"),
        MAC.parse().expect("mac"),
        "t",
        HttpLinkConfig {
            attempts: 3,
            ..quick()
        },
    )
    .expect("link");
    let e = l.next_job(0).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(l.stats().requests, 3);
}

/// Fetches every frame of entry 0 in small batches and checks them.
fn fetch_all(l: &HttpAgentLink, job: JobId, data: &[u8]) {
    let manifest = l.manifest(job, 0).expect("manifest");
    let mut rebuilt = vec![0u8; data.len()];
    let cs = CHUNK_SIZE as usize;
    let entries: Vec<(usize, ChunkHash)> = manifest
        .chunks()
        .enumerate()
        .filter_map(|(i, c)| c.map(|h| (i, h)))
        .collect();
    for batch in entries.chunks(4) {
        let hashes: Vec<ChunkHash> = batch.iter().map(|(_, h)| *h).collect();
        let frames = l.chunks(job, 0, &hashes).expect("frames");
        for ((i, h), f) in batch.iter().zip(&frames) {
            let bytes = decode_frame(f, h).expect("verifies");
            rebuilt[i * cs..i * cs + bytes.len()].copy_from_slice(&bytes);
        }
    }
    assert_eq!(rebuilt, data);
}

#[test]
fn transfers_survive_connections_cut_mid_answer() {
    let s = setup(4 << 20);
    let proxy = Proxy::start(s.lab.port);
    let l = link(&proxy.base(), &s.token);
    s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(0).expect("poll").expect("job");
    // Cut in the middle of several answers.
    for cut in [100_000, 5_000, 70_000] {
        proxy.set(Mode::CutAfter(cut));
        fetch_all(&l, job.id, &s.data);
    }
    assert!(proxy.broken.load(Ordering::Relaxed) >= 3);
    assert!(l.stats().retries >= 3, "{:?}", l.stats());
    // The proxy down for a while, then back.
    proxy.set(Mode::Down);
    let p = &proxy;
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            p.set(Mode::Pass);
        });
        fetch_all(&l, job.id, &s.data);
    });
}

#[test]
fn a_lost_answer_to_advance_or_fail_is_reconciled_not_an_error() {
    let s = setup(256 * 1024);
    let proxy = Proxy::start(s.lab.port);
    let l = link(&proxy.base(), &s.token);
    let job_id = s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(0).expect("poll").expect("job");
    // The server moves the job, the answer is lost, the retry gets 409:
    // the link sees the job already running and succeeds.
    proxy.set(Mode::LoseAnswers(1));
    let j = l
        .advance(job.id, JobState::Running, "flashed")
        .expect("reconciled");
    assert_eq!(j.state, JobState::Running);
    assert_eq!(s.lab.job(&job_id)["state"], "running");
    assert!(l.stats().retries >= 1);
    proxy.set(Mode::LoseAnswers(1));
    let j = l.fail(job.id, "boot", "no marker").expect("reconciled");
    assert_eq!(j.state, JobState::Failed);
    // A real conflict still is one.
    let e = l
        .advance(job.id, JobState::Running, "again")
        .expect_err("final");
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn a_server_restarted_mid_transfer_on_the_same_data_dir_is_waited_for() {
    let mut s = setup(4 << 20);
    let l = HttpAgentLink::new(
        &s.lab.base(),
        MAC.parse().expect("mac"),
        &s.token,
        HttpLinkConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            attempts: 30,
            ..quick()
        },
    )
    .expect("link");
    s.lab.queue(&s.machine, &s.image, 1, "first", false);
    let job = l.next_job(0).expect("poll").expect("job");
    let manifest = l.manifest(job.id, 0).expect("manifest");
    let hashes: Vec<ChunkHash> = manifest.distinct_chunks().into_iter().collect();
    let mut got = BTreeSet::new();
    for (n, batch) in hashes.chunks(2).enumerate() {
        if n == 3 {
            s.lab.stop();
            // Back in a moment, on the same directory and port.
            let dir = s.lab.data_dir();
            let port = s.lab.port;
            let restarted = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                common::Server::start(&dir, port)
            });
            let frames = l.chunks(job.id, 0, batch).expect("waits for the server");
            for (h, f) in batch.iter().zip(&frames) {
                decode_frame(f, h).expect("verifies");
                got.insert(*h);
            }
            s.lab.server = Some(restarted.join().expect("restarted"));
            continue;
        }
        let frames = l.chunks(job.id, 0, batch).expect("frames");
        for (h, f) in batch.iter().zip(&frames) {
            decode_frame(f, h).expect("verifies");
            got.insert(*h);
        }
    }
    assert_eq!(got.len(), hashes.len());
    assert!(l.stats().retries >= 1, "{:?}", l.stats());
    // The job is still the machine's, in provisioning.
    let again = l.next_job(0).expect("poll").expect("job");
    assert_eq!(again.id, job.id);
    assert_eq!(again.state, JobState::Provisioning);
}

/// A disk in memory, for flashing through the real link.
#[derive(Debug)]
struct VecDisk(std::sync::Mutex<Vec<u8>>);

impl baas_core::ports::BlockDevice for VecDisk {
    fn size(&self) -> u64 {
        self.0.lock().expect("lock").len() as u64
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> baas_core::Result<()> {
        let d = self.0.lock().expect("lock");
        buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> baas_core::Result<()> {
        let mut d = self.0.lock().expect("lock");
        d[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn zero_range(&self, offset: u64, len: u64) -> baas_core::Result<()> {
        let mut d = self.0.lock().expect("lock");
        d[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn flush(&self) -> baas_core::Result<()> {
        Ok(())
    }
}

/// Frames compacted with an image's zstd dictionary travel over HTTP: the
/// server hands the dictionary out only together with a chunk whose frame
/// needs it, and a full flash through the link ends byte for byte right.
#[test]
fn compacted_frames_and_their_dictionary_travel_over_http() {
    let lab = Lab::new();
    let machine = lab.machine(MAC);
    let word = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3).to_le_bytes();
    let (mut data, mut x) = (Vec::new(), 42u64);
    while data.len() < baas_core::services::DICTIONARY_MIN_CHUNKS * CHUNK_SIZE as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&word(if x & 1 == 0 { x % 16 } else { x % 4096 }));
    }
    let image = lab.image("dict", data.len() as u64);
    lab.upload(&image, &data);
    let r = lab
        .baas()
        .compact_chunks(&Actor::System, 3, 2)
        .expect("compact");
    assert_eq!(r.dictionaries, 1, "{r:?}");
    let token = lab.agent_token(&machine);
    lab.queue(&machine, &image, 1, "first", false);
    let l = link(&lab.base(), &token);
    let job = l.next_job(5_000).expect("poll").expect("a job");
    let manifest = l.manifest(job.id, 0).expect("manifest");
    let first = manifest.chunks().flatten().next().expect("data");
    let frame = l.chunks(job.id, 0, &[first]).expect("chunk").remove(0);
    let dict = baas_core::content::frame_dictionary(&frame).expect("a dictionary frame");
    assert_eq!(
        l.chunks(job.id, 0, &[dict]).expect_err("not alone").kind(),
        ErrorKind::NotFound
    );
    let disk = VecDisk(std::sync::Mutex::new(vec![0u8; data.len()]));
    let report = baas_core::flashing::flash(
        &disk,
        &l,
        job.id,
        0,
        &baas_core::flashing::FlashOptions::default(),
        &mut |_| {},
    )
    .expect("flash");
    assert_eq!(report.root, manifest.root());
    assert!(*disk.0.lock().expect("lock") == data);
}
