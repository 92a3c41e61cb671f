//! The agent protocol over real HTTP: the long poll, the binary formats
//! (manifest, frame stream, deltas, capture records), the capture flow,
//! logs, and a machine credential that cannot reach another machine.

mod common;

use std::time::{Duration, Instant};

use baas_core::content::{decode_frame, encode_frame, ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::{JobId, JobState};
use baas_core::Actor;
use common::TestApp;
use serde_json::{json, Value};
use ureq::http::Method;

/// A machine with one image version queued on it, and its agent's token.
struct Rig {
    app: TestApp,
    owner: String,
    image: String,
    machine: String,
    mac: String,
    agent: String,
    data: Vec<u8>,
}

fn rig() -> Rig {
    let app = TestApp::spawn();
    let (_, owner) = app.user("owner", "user");
    let mac = "52:54:00:aa:bb:01".to_string();
    let machine = app.machine(&mac);
    let image = app.post_image(&owner, "disk", 1 << 20);
    let mut data = vec![0u8; 3 * CHUNK_SIZE as usize + 100];
    for (i, b) in data.iter_mut().enumerate().take(CHUNK_SIZE as usize) {
        *b = (i % 251) as u8 + 1;
    }
    data[2 * CHUNK_SIZE as usize..].fill(7);
    app.upload(&owner, &image, &data).expect(201);
    let agent = app.agent_token(&machine);
    Rig {
        app,
        owner,
        image,
        machine,
        mac,
        agent,
        data,
    }
}

impl Rig {
    fn queue(&self, capture: bool) -> String {
        self.app
            .post(
                &format!("/api/v1/machines/{}/jobs", self.machine),
                Some(&self.owner),
                &json!({"image_id": self.image, "version": 1, "capture": capture}),
            )
            .expect(201)
            .json()["id"]
            .as_str()
            .expect("job id")
            .to_string()
    }

    fn next_job(&self, wait_ms: u64) -> common::Resp {
        self.app.get(
            &format!(
                "/api/v1/agent/machines/{}/next-job?wait_ms={wait_ms}",
                self.mac
            ),
            Some(&self.agent),
        )
    }

    fn agent_post(&self, path: &str, body: &Value) -> common::Resp {
        self.app.post(path, Some(&self.agent), body)
    }

    fn events(&self, job: &str) -> Vec<(String, String)> {
        self.app
            .get(&format!("/api/v1/jobs/{job}/events"), Some(&self.app.admin))
            .expect(200)
            .json()
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
}

/// Splits a frame stream into frames.
fn frames_of(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        out.push(body[4..4 + len].to_vec());
        body = &body[4 + len..];
    }
    out
}

#[test]
fn long_poll_waits_then_hands_out_a_job_queued_meanwhile() {
    let r = rig();
    // Nothing queued: 204 after about the wait.
    let t = Instant::now();
    r.next_job(400).expect(204);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    // A job queued while the agent waits is handed out during the wait.
    let job = std::thread::scope(|s| {
        let poll = s.spawn(|| r.next_job(20_000));
        std::thread::sleep(Duration::from_millis(300));
        let id = r.queue(false);
        let res = poll.join().expect("poll").expect(200).json();
        assert_eq!(res["id"], id.as_str());
        assert_eq!(res["state"], "provisioning");
        id
    });
    // Asked again (a restarted agent), the same active job comes back.
    let again = r.next_job(0).expect(200).json();
    assert_eq!(again["id"], job.as_str());
    // wait_ms must be a number.
    r.app
        .get(
            &format!("/api/v1/agent/machines/{}/next-job?wait_ms=soon", r.mac),
            Some(&r.agent),
        )
        .expect_error(400, "invalid_input");
}

#[test]
fn the_agent_reads_its_manifest_and_frames_and_drives_the_job() {
    let r = rig();
    let job = r.queue(false);
    r.next_job(0).expect(200);
    // Inventory.
    let m = r
        .agent_post(
            &format!("/api/v1/agent/machines/{}/inventory", r.mac),
            &json!({"disks": [{"path": "/dev/nvme0n1", "by_id": ["nvme-X"], "serial": "S1",
                "size": 1u64 << 30, "logical_block": 512, "physical_block": 4096,
                "rotational": false, "removable": false}],
                "nics": [{"name": "eno1", "mac": r.mac.to_uppercase(), "speed_mbps": 1000}],
                "memory_bytes": 1u64 << 32, "cpu_model": "Test CPU", "cpus": 4}),
        )
        .expect(200)
        .json();
    assert_eq!(m["inventory"]["disks"][0]["serial"], "S1");
    assert_eq!(m["inventory"]["nics"][0]["mac"], r.mac.as_str());
    // Manifest.
    let res = r
        .app
        .get(
            &format!("/api/v1/agent/jobs/{job}/entries/0/manifest"),
            Some(&r.agent),
        )
        .expect(200);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    let manifest = Manifest::decode(&res.body).expect("manifest");
    assert_eq!(manifest.size(), r.data.len() as u64);
    assert!(manifest.chunk(1).is_none(), "a zero chunk is a hole");
    // Frames, in the order asked, each verifying against its hash.
    let hashes: Vec<ChunkHash> = {
        let mut h: Vec<ChunkHash> = manifest.chunks().flatten().collect();
        h.reverse();
        h
    };
    let res = r
        .agent_post(
            &format!("/api/v1/agent/jobs/{job}/entries/0/chunks"),
            &json!({"hashes": hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>()}),
        )
        .expect(200);
    let frames = frames_of(&res.body);
    assert_eq!(frames.len(), hashes.len());
    for (f, h) in frames.iter().zip(&hashes) {
        decode_frame(f, h).expect("frame verifies");
    }
    // A hash that is not in the manifest, and one that is not a hash.
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/entries/0/chunks"),
        &json!({"hashes": [ChunkHash::of(b"other").to_hex()]}),
    )
    .expect_error(404, "not_found");
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/entries/0/chunks"),
        &json!({"hashes": ["zz"]}),
    )
    .expect_error(400, "invalid_input");
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/entries/0/chunks"),
        &json!({"hashes": vec![hashes[0].to_hex(); 257]}),
    )
    .expect_error(413, "too_large");
    // An entry that does not exist.
    r.app
        .get(
            &format!("/api/v1/agent/jobs/{job}/entries/5/manifest"),
            Some(&r.agent),
        )
        .expect_error(404, "not_found");
    // Progress, logs to the timeline, advance.
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/progress"),
        &json!({"phase": "flash", "bytes_done": 10, "bytes_total": 20, "rate": 5}),
    )
    .expect(204);
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/progress"),
        &json!({"phase": "flash", "bytes_done": 30, "bytes_total": 20}),
    )
    .expect_error(400, "invalid_input");
    let j = r
        .app
        .get(&format!("/api/v1/jobs/{job}"), Some(&r.agent))
        .expect(200)
        .json();
    assert_eq!(j["progress"]["bytes_done"], 10);
    r.agent_post(
        &format!("/api/v1/agent/machines/{}/logs", r.mac),
        &json!({"job_id": job, "lines": ["writing /dev/nvme0n1", "done"]}),
    )
    .expect(204);
    r.agent_post(
        &format!("/api/v1/agent/machines/{}/logs", r.mac),
        &json!({"lines": ["no job: server log only"]}),
    )
    .expect(204);
    let j = r
        .agent_post(
            &format!("/api/v1/agent/jobs/{job}/advance"),
            &json!({"state": "running", "message": "flashed"}),
        )
        .expect(200)
        .json();
    assert_eq!(j["state"], "running");
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/advance"),
        &json!({"state": "running", "message": "again"}),
    )
    .expect_error(409, "conflict");
    r.agent_post(
        &format!("/api/v1/agent/jobs/{job}/advance"),
        &json!({"state": "flying"}),
    )
    .expect_error(400, "invalid_input");
    let events = r.events(&job);
    assert!(events.contains(&("log".into(), "writing /dev/nvme0n1".into())));
    assert!(events.contains(&("running".into(), "flashed".into())));
    assert!(!events.iter().any(|(_, m)| m.contains("server log only")));
    // Fail, with the phase.
    let j = r
        .agent_post(
            &format!("/api/v1/agent/jobs/{job}/fail"),
            &json!({"phase": "verify", "reason": "root hash differs"}),
        )
        .expect(200)
        .json();
    assert_eq!(j["state"], "failed");
    assert_eq!(j["error"], "verify: root hash differs");
    // A finished job serves no manifest.
    r.app
        .get(
            &format!("/api/v1/agent/jobs/{job}/entries/0/manifest"),
            Some(&r.agent),
        )
        .expect_error(409, "conflict");
}

/// `.../deltas`: a chunk whose local copy differs in one 4 KiB block comes
/// back as a delta of that block, one that differs wholly as its frame;
/// malformed, oversized and foreign requests are 4xx with the envelope.
#[test]
fn deltas_carry_only_changed_blocks_and_bad_requests_are_4xx() {
    use baas_core::delta::{
        apply_delta, decode_replies, encode_wants, BlockHashes, DeltaReply, DeltaWant,
        MAX_WANTS_BYTES,
    };
    let r = rig();
    let job = r.queue(false);
    r.next_job(0).expect(200);
    let cs = CHUNK_SIZE as usize;
    let chunk0 = &r.data[..cs];
    let mut local = chunk0.to_vec();
    local[5 * 4096 + 10] ^= 1;
    let near = DeltaWant {
        hash: ChunkHash::of(chunk0),
        blocks: BlockHashes::of(&local),
    };
    let tail = &r.data[3 * cs..];
    let far = DeltaWant {
        hash: ChunkHash::of(tail),
        blocks: BlockHashes::of(&[1u8; 100]),
    };
    let path = format!("/api/v1/agent/jobs/{job}/entries/0/deltas");
    let post = |body: Vec<u8>| {
        r.app.send(
            Method::POST,
            &path,
            Some(&r.agent),
            &[("Content-Type", "application/octet-stream")],
            Some(body),
        )
    };
    let res = post(encode_wants(&[near.clone(), far.clone()])).expect(200);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    let replies = decode_replies(&res.body, 2).expect("two answers");
    let DeltaReply::Delta(d) = &replies[0] else {
        unreachable!("one changed block comes as a delta: {:?}", replies[0])
    };
    assert!(d.len() < 4096, "{}", d.len());
    assert_eq!(apply_delta(d, &local, &near.hash).expect("applies"), chunk0);
    let DeltaReply::Frame(f) = &replies[1] else {
        unreachable!(
            "a wholly different chunk comes as its frame: {:?}",
            replies[1]
        )
    };
    assert_eq!(decode_frame(f, &far.hash).expect("frame"), tail);

    post(vec![1, 2, 3]).expect_error(400, "invalid_input");
    post(encode_wants(&[DeltaWant {
        hash: ChunkHash::of(b"other"),
        blocks: BlockHashes::default(),
    }]))
    .expect_error(404, "not_found");
    post(encode_wants(&[DeltaWant {
        hash: near.hash,
        blocks: BlockHashes::of(&[1u8; 3 * 4096]),
    }]))
    .expect_error(400, "invalid_input");
    post(encode_wants(&vec![far.clone(); 257])).expect_error(413, "too_large");
    post(vec![0u8; MAX_WANTS_BYTES + 1]).expect_error(413, "too_large");
    r.app
        .send(
            Method::POST,
            &path,
            None,
            &[("Content-Type", "application/octet-stream")],
            Some(encode_wants(&[far])),
        )
        .expect_error(401, "unauthenticated");
}

#[test]
fn a_capture_uploads_only_missing_chunks_as_records_and_commits() {
    let r = rig();
    let job = r.queue(true);
    r.next_job(0).expect(200);
    // Not capturing yet: refused.
    let disk = {
        let mut d = r.data.clone();
        d[CHUNK_SIZE as usize + 5] = 42; // the hole now holds data
        d
    };
    let cs = CHUNK_SIZE as usize;
    let chunks: Vec<Option<ChunkHash>> = disk
        .chunks(cs)
        .map(|c| (!c.iter().all(|b| *b == 0)).then(|| ChunkHash::of(c)))
        .collect();
    let manifest = Manifest::new(disk.len() as u64, CHUNK_SIZE, chunks).expect("manifest");
    let begin = |r: &Rig| {
        r.app.send(
            Method::POST,
            &format!("/api/v1/agent/jobs/{job}/entries/0/captures"),
            Some(&r.agent),
            &[("Content-Type", "application/octet-stream")],
            Some(manifest.encode()),
        )
    };
    begin(&r).expect_error(409, "conflict");
    let id: JobId = job.parse().expect("job id");
    for to in [JobState::Running, JobState::Capturing] {
        r.app
            .baas
            .advance_job(&Actor::System, id, to, "session over")
            .expect("advance");
    }
    let up = begin(&r).expect(201).json();
    let missing: Vec<String> = up["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|h| h.as_str().expect("hex").to_string())
        .collect();
    // Only the changed chunk is missing: the others are in the store.
    assert_eq!(missing, vec![ChunkHash::of(&disk[cs..2 * cs]).to_hex()]);
    let upload = up["upload_id"].as_str().expect("upload id");
    // Commit before sending: conflict.
    r.app
        .send(
            Method::POST,
            &format!("/api/v1/agent/captures/{upload}/commit"),
            Some(&r.agent),
            &[],
            None,
        )
        .expect_error(409, "conflict");
    // A corrupted frame is refused, nothing stored.
    let chunk = &disk[cs..2 * cs];
    let hash = ChunkHash::of(chunk);
    let record = |frame: &[u8]| {
        let mut body = hash.0.to_vec();
        body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        body.extend_from_slice(frame);
        body
    };
    let mut bad = encode_frame(chunk, 1).expect("frame");
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let send = |body: Vec<u8>| {
        r.app.send(
            Method::POST,
            &format!("/api/v1/agent/captures/{upload}/chunks"),
            Some(&r.agent),
            &[("Content-Type", "application/octet-stream")],
            Some(body),
        )
    };
    send(record(&bad)).expect_error(400, "invalid_input");
    send(record(&encode_frame(chunk, 1).expect("frame"))[..40].to_vec())
        .expect_error(400, "invalid_input");
    let stored = send(record(&encode_frame(chunk, 1).expect("frame")))
        .expect(200)
        .json();
    assert_eq!(stored["chunks"], 1);
    assert_eq!(stored["new"], 1);
    let v = r
        .app
        .send(
            Method::POST,
            &format!("/api/v1/agent/captures/{upload}/commit"),
            Some(&r.agent),
            &[],
            None,
        )
        .expect(201)
        .json();
    assert_eq!(v["number"], 2);
    assert_eq!(v["source"], "capture");
    assert_eq!(v["source_job_id"], job.as_str());
    assert_eq!(v["root"], manifest.root().to_hex());
    // The captured version reads back as the disk.
    let back = r
        .app
        .get(
            &format!("/api/v1/images/{}/versions/2/content", r.image),
            Some(&r.owner),
        )
        .expect(200);
    assert_eq!(back.body, disk);
}

#[test]
fn a_machine_credential_cannot_reach_another_machine() {
    let r = rig();
    let other_mac = "52:54:00:aa:bb:02";
    let other = r.app.machine(other_mac);
    // A job on the other machine.
    let other_job = r
        .app
        .post(
            &format!("/api/v1/machines/{other}/jobs"),
            Some(&r.owner),
            &json!({"image_id": r.image, "version": 1}),
        )
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("job id")
        .to_string();
    let other_agent = r.app.agent_token(&other);
    r.app
        .get(
            &format!("/api/v1/agent/machines/{other}/next-job"),
            Some(&other_agent),
        )
        .expect(200);
    let before = r
        .app
        .get(&format!("/api/v1/jobs/{other_job}"), Some(&r.app.admin))
        .expect(200)
        .json();
    // r.agent is the first machine's credential.
    for m in [other.as_str(), other_mac] {
        r.app
            .get(
                &format!("/api/v1/agent/machines/{m}/next-job"),
                Some(&r.agent),
            )
            .expect_error(
                if m == other { 403 } else { 404 },
                if m == other { "forbidden" } else { "not_found" },
            );
        let s = r
            .agent_post(
                &format!("/api/v1/agent/machines/{m}/inventory"),
                &json!({"disks": [], "nics": [], "memory_bytes": 1, "cpu_model": "x", "cpus": 1}),
            )
            .status;
        assert!(s == 403 || s == 404, "inventory of another machine: {s}");
    }
    for (path, body) in [
        (
            format!("/api/v1/agent/jobs/{other_job}/progress"),
            json!({"phase": "x", "bytes_done": 0, "bytes_total": 0}),
        ),
        (
            format!("/api/v1/agent/jobs/{other_job}/advance"),
            json!({"state": "running"}),
        ),
        (
            format!("/api/v1/agent/jobs/{other_job}/fail"),
            json!({"phase": "x", "reason": "y"}),
        ),
        (
            format!("/api/v1/agent/jobs/{other_job}/entries/0/chunks"),
            json!({"hashes": []}),
        ),
        (
            format!("/api/v1/agent/machines/{other_mac}/logs"),
            json!({"job_id": other_job, "lines": ["x"]}),
        ),
        (
            format!("/api/v1/agent/machines/{}/logs", r.mac),
            json!({"job_id": other_job, "lines": ["x"]}),
        ),
    ] {
        let s = r.agent_post(&path, &body).status;
        assert!(s == 403 || s == 404, "{path}: {s}");
    }
    r.app
        .get(
            &format!("/api/v1/agent/jobs/{other_job}/entries/0/manifest"),
            Some(&r.agent),
        )
        .expect_error(403, "forbidden");
    // Nothing changed on the other machine's job.
    let after = r
        .app
        .get(&format!("/api/v1/jobs/{other_job}"), Some(&r.app.admin))
        .expect(200)
        .json();
    assert_eq!(before, after);
    assert!(!r.events(&other_job).iter().any(|(k, _)| k == "log"));
    // Nor can it mint credentials.
    r.app
        .post(
            &format!("/api/v1/machines/{}/agent-token", r.machine),
            Some(&r.agent),
            &json!({}),
        )
        .expect_error(403, "forbidden");
}

#[test]
fn moderators_issue_agent_tokens_that_authenticate_as_the_machine() {
    let r = rig();
    let (_, moderator) = r.app.user("mod", "moderator");
    let created = r
        .app
        .send(
            Method::POST,
            &format!("/api/v1/machines/{}/agent-token", r.mac),
            Some(&moderator),
            &[],
            None,
        )
        .expect(201)
        .json();
    assert_eq!(created["token"]["machine_id"], r.machine.as_str());
    assert!(created["token"]["expires_at"].is_string());
    let secret = created["secret"].as_str().expect("secret");
    r.app
        .get(
            &format!("/api/v1/agent/machines/{}/next-job", r.mac),
            Some(secret),
        )
        .expect(204);
    r.app
        .get("/api/v1/images", Some(secret))
        .expect_error(403, "forbidden");
    r.app
        .post(
            &format!("/api/v1/machines/{}/agent-token", r.mac),
            Some(&moderator),
            &json!({"ttl_seconds": 0}),
        )
        .expect_error(400, "invalid_input");
    r.app
        .post(
            "/api/v1/machines/52:54:00:00:00:99/agent-token",
            Some(&moderator),
            &json!({}),
        )
        .expect_error(404, "not_found");
}
