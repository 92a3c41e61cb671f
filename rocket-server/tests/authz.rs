//! The authorization matrix: every mounted route, called with no token,
//! as another user, as the owner of the resources, as a moderator, as an
//! admin and as the agent of the machine the jobs run on, against the
//! status the rules say. Destructive calls get fresh
//! resources per cell. A route added without a row here fails the test.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use baas_core::content::{encode_frame, ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::{JobId, JobState, MachineId};
use baas_core::Actor;
use common::TestApp;
use serde_json::{json, Value};
use ureq::http::Method;

/// The callers, in matrix order.
const WHO: [&str; 6] = [
    "no token",
    "another user",
    "the owner",
    "a moderator",
    "an admin",
    "the machine's agent",
];

struct World {
    app: TestApp,
    tokens: [Option<String>; 6],
    owner_id: String,
    owner_token: String,
    image: String,
    setup: String,
    machine: String,
    mac: String,
    job: String,
    upload: String,
    counter: AtomicU64,
}

struct Req {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: &'static str,
}

fn json_req(method: Method, path: String, body: Value) -> Req {
    Req {
        method,
        path,
        body: Some(body.to_string().into_bytes()),
        content_type: "application/json",
    }
}

fn bare(method: Method, path: String) -> Req {
    Req {
        method,
        path,
        body: None,
        content_type: "application/json",
    }
}

fn bytes(method: Method, path: String, body: Vec<u8>) -> Req {
    Req {
        method,
        path,
        body: Some(body),
        content_type: "application/octet-stream",
    }
}

impl World {
    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn owner(&self) -> &str {
        &self.owner_token
    }

    fn fresh_image(&self) -> String {
        let img = self.app.post_image(self.owner(), "fresh", 1 << 20);
        self.app
            .upload(self.owner(), &img, &[self.next() as u8 | 1; 1000])
            .expect(201);
        img
    }

    fn fresh_setup(&self) -> String {
        self.app
            .post("/api/v1/setups", Some(self.owner()), &json!({"name": "s"}))
            .expect(201)
            .json()["id"]
            .as_str()
            .expect("setup id")
            .to_string()
    }

    fn fresh_job(&self) -> String {
        self.app
            .boot_queue(self.owner(), &self.machine, &self.image, 1)
            .expect(201)
            .json()["id"]
            .as_str()
            .expect("job id")
            .to_string()
    }

    /// A placement of the owner's that waits (no machine is in its pool).
    fn fresh_placement(&self) -> String {
        self.app
            .post(
                "/api/v1/jobs",
                Some(self.owner()),
                &json!({"image_id": self.image, "version": 1, "pool": format!("none{}", self.next())}),
            )
            .expect(202)
            .json()["id"]
            .as_str()
            .expect("placement id")
            .to_string()
    }

    fn fresh_token(&self) -> String {
        self.app
            .post(
                &format!("/api/v1/users/{}/tokens", self.owner_id),
                Some(self.owner()),
                &json!({"name": "spare"}),
            )
            .expect(201)
            .json()["token"]["id"]
            .as_str()
            .expect("token id")
            .to_string()
    }

    fn fresh_user(&self) -> String {
        let (id, _) = self.app.user(&format!("victim{}", self.next()), "user");
        id
    }

    /// A chunk no other cell uses, and its frame.
    fn fresh_chunk(&self) -> (Vec<u8>, ChunkHash, Vec<u8>) {
        let mut data = vec![0u8; CHUNK_SIZE as usize];
        let n = self.next();
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u64 ^ n.wrapping_mul(2_654_435_761)) as u8 | 1;
        }
        let hash = ChunkHash::of(&data);
        let frame = encode_frame(&data, 1).expect("frame");
        (data, hash, frame)
    }

    /// An upload of one fresh chunk; returns (upload id, hash, frame).
    fn fresh_upload(&self) -> (String, ChunkHash, Vec<u8>) {
        let (_, hash, frame) = self.fresh_chunk();
        let m =
            Manifest::new(u64::from(CHUNK_SIZE), CHUNK_SIZE, vec![Some(hash)]).expect("manifest");
        let id = self.begin(&m);
        (id, hash, frame)
    }

    /// An upload with nothing to send (all holes): ready to commit.
    fn fresh_blank_upload(&self) -> String {
        self.begin(&Manifest::blank(1 << 20))
    }

    /// Queues a fresh job (marked for capture or not) on the machine and
    /// makes it the machine's active job, in `state` (provisioning, running
    /// or capturing): the jobs queued before it are taken and failed.
    fn active_job(&self, capture: bool, state: JobState) -> String {
        let id = self
            .app
            .post(
                &format!("/api/v1/machines/{}/jobs", self.machine),
                Some(self.owner()),
                &json!({"image_id": self.image, "version": 1, "capture": capture}),
            )
            .expect(201)
            .json()["id"]
            .as_str()
            .expect("job id")
            .to_string();
        let machine: MachineId = self.machine.parse().expect("machine id");
        let baas = &self.app.baas;
        let job = loop {
            let j = baas
                .next_job(&Actor::System, machine)
                .expect("next job")
                .expect("a job is queued");
            if j.id.to_string() == id {
                break j;
            }
            baas.fail_job(&Actor::System, j.id, "test", "making room")
                .expect("fail");
        };
        let mut current = job.state;
        for to in [JobState::Running, JobState::Capturing] {
            if current == state {
                break;
            }
            current = baas
                .advance_job(&Actor::System, job.id, to, "test")
                .expect("advance")
                .state;
        }
        id
    }

    /// A capture session of a fresh capturing job for a manifest of one
    /// fresh chunk; returns (upload id, hash, frame).
    fn capture_session(&self) -> (String, ChunkHash, Vec<u8>) {
        let job: JobId = self
            .active_job(true, JobState::Capturing)
            .parse()
            .expect("job id");
        let (_, hash, frame) = self.fresh_chunk();
        let m =
            Manifest::new(u64::from(CHUNK_SIZE), CHUNK_SIZE, vec![Some(hash)]).expect("manifest");
        let (session, _) = self
            .app
            .baas
            .begin_capture(&Actor::System, job, 0, m)
            .expect("begin capture");
        (session.id.to_string(), hash, frame)
    }

    fn begin(&self, m: &Manifest) -> String {
        self.app
            .send(
                Method::POST,
                &format!("/api/v1/images/{}/uploads", self.image),
                Some(self.owner()),
                &[],
                Some(m.encode()),
            )
            .expect(201)
            .json()["upload_id"]
            .as_str()
            .expect("upload id")
            .to_string()
    }
}

type Build = Box<dyn Fn(&World) -> Req>;

/// (route as Rocket mounts it, expected status per caller, request).
fn rows() -> Vec<(&'static str, [u16; 6], Build)> {
    use Method as M;
    vec![
        // --- operations
        (
            "GET /healthz",
            [200, 200, 200, 200, 200, 200],
            Box::new(|_| bare(M::GET, "/healthz".into())),
        ),
        (
            "GET /metrics",
            [401, 200, 200, 200, 200, 200],
            Box::new(|_| bare(M::GET, "/metrics".into())),
        ),
        (
            "GET /api/v1/openapi.json",
            [401, 200, 200, 200, 200, 200],
            Box::new(|_| bare(M::GET, "/api/v1/openapi.json".into())),
        ),
        // --- users and tokens
        (
            "GET /api/v1/users",
            [401, 403, 403, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/users".into())),
        ),
        (
            "POST /api/v1/users",
            [401, 403, 403, 403, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    "/api/v1/users".into(),
                    json!({"name": format!("new{}", w.next())}),
                )
            }),
        ),
        (
            "GET /api/v1/users/<id>",
            [401, 404, 200, 200, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/users/{}", w.owner_id))),
        ),
        (
            "PATCH /api/v1/users/<id>",
            [401, 404, 200, 403, 200, 404],
            Box::new(|w| {
                json_req(
                    M::PATCH,
                    format!("/api/v1/users/{}", w.owner_id),
                    json!({"display_name": "Owner"}),
                )
            }),
        ),
        (
            "DELETE /api/v1/users/<id>",
            [401, 403, 403, 403, 204, 403],
            Box::new(|w| bare(M::DELETE, format!("/api/v1/users/{}", w.fresh_user()))),
        ),
        (
            "GET /api/v1/users/<id>/tokens",
            [401, 403, 200, 403, 200, 403],
            Box::new(|w| bare(M::GET, format!("/api/v1/users/{}/tokens", w.owner_id))),
        ),
        (
            "POST /api/v1/users/<id>/tokens",
            [401, 403, 201, 403, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/users/{}/tokens", w.owner_id),
                    json!({"name": "t"}),
                )
            }),
        ),
        (
            "DELETE /api/v1/tokens/<id>",
            [401, 404, 204, 404, 204, 404],
            Box::new(|w| bare(M::DELETE, format!("/api/v1/tokens/{}", w.fresh_token()))),
        ),
        // --- images and versions
        (
            "GET /api/v1/images?<owner>",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/images".into())),
        ),
        (
            "POST /api/v1/images",
            [401, 201, 201, 201, 201, 403],
            Box::new(|_| {
                json_req(
                    M::POST,
                    "/api/v1/images".into(),
                    json!({"name": "i", "size": 4096}),
                )
            }),
        ),
        (
            "GET /api/v1/images/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/images/{}", w.image))),
        ),
        (
            "PATCH /api/v1/images/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| {
                json_req(
                    M::PATCH,
                    format!("/api/v1/images/{}", w.image),
                    json!({"name": "renamed"}),
                )
            }),
        ),
        (
            "DELETE /api/v1/images/<id>",
            [401, 404, 204, 404, 204, 404],
            Box::new(|w| bare(M::DELETE, format!("/api/v1/images/{}", w.fresh_image()))),
        ),
        (
            "GET /api/v1/images/<id>/versions",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/images/{}/versions", w.image))),
        ),
        (
            "POST /api/v1/images/<id>/versions?<note>",
            [401, 404, 201, 404, 201, 404],
            Box::new(|w| {
                bytes(
                    M::POST,
                    format!("/api/v1/images/{}/versions", w.image),
                    vec![3u8; 5000],
                )
            }),
        ),
        (
            "GET /api/v1/images/<id>/versions/<version>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/images/{}/versions/1", w.image))),
        ),
        (
            "DELETE /api/v1/images/<id>/versions/<version>",
            [401, 404, 204, 404, 204, 404],
            Box::new(|w| {
                bare(
                    M::DELETE,
                    format!("/api/v1/images/{}/versions/1", w.fresh_image()),
                )
            }),
        ),
        (
            "GET /api/v1/images/<id>/versions/<version>/content",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| {
                bare(
                    M::GET,
                    format!("/api/v1/images/{}/versions/1/content", w.image),
                )
            }),
        ),
        (
            "GET /api/v1/images/<id>/versions/<version>/manifest",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| {
                bare(
                    M::GET,
                    format!("/api/v1/images/{}/versions/1/manifest", w.image),
                )
            }),
        ),
        // --- chunk-level uploads
        (
            "POST /api/v1/images/<id>/uploads",
            [401, 404, 201, 404, 201, 404],
            Box::new(|w| {
                bytes(
                    M::POST,
                    format!("/api/v1/images/{}/uploads", w.image),
                    Manifest::blank(4096).encode(),
                )
            }),
        ),
        (
            "GET /api/v1/uploads/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/uploads/{}", w.upload))),
        ),
        (
            "PUT /api/v1/uploads/<id>/chunks/<hash>",
            [401, 404, 201, 404, 201, 404],
            Box::new(|w| {
                let (id, hash, frame) = w.fresh_upload();
                bytes(M::PUT, format!("/api/v1/uploads/{id}/chunks/{hash}"), frame)
            }),
        ),
        (
            "POST /api/v1/uploads/<id>/chunks",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| {
                let (id, hash, frame) = w.fresh_upload();
                let mut body = hash.0.to_vec();
                body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                body.extend_from_slice(&frame);
                bytes(M::POST, format!("/api/v1/uploads/{id}/chunks"), body)
            }),
        ),
        (
            "POST /api/v1/uploads/<id>/commit",
            [401, 404, 201, 404, 201, 404],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/uploads/{}/commit", w.fresh_blank_upload()),
                    json!({}),
                )
            }),
        ),
        (
            "DELETE /api/v1/uploads/<id>",
            [401, 404, 204, 404, 204, 404],
            Box::new(|w| {
                bare(
                    M::DELETE,
                    format!("/api/v1/uploads/{}", w.fresh_blank_upload()),
                )
            }),
        ),
        // --- setups
        (
            "GET /api/v1/setups?<owner>",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/setups".into())),
        ),
        (
            "POST /api/v1/setups",
            [401, 201, 201, 201, 201, 403],
            Box::new(|_| json_req(M::POST, "/api/v1/setups".into(), json!({"name": "mine"}))),
        ),
        (
            "GET /api/v1/setups/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/api/v1/setups/{}", w.setup))),
        ),
        (
            "PUT /api/v1/setups/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| {
                json_req(
                    M::PUT,
                    format!("/api/v1/setups/{}", w.setup),
                    json!({"name": "renamed", "entries": [{"image_id": w.image, "version": 1}]}),
                )
            }),
        ),
        (
            "DELETE /api/v1/setups/<id>",
            [401, 404, 204, 404, 204, 404],
            Box::new(|w| bare(M::DELETE, format!("/api/v1/setups/{}", w.fresh_setup()))),
        ),
        // --- machines and jobs
        (
            "GET /api/v1/machines",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/machines".into())),
        ),
        (
            "POST /api/v1/machines",
            [401, 403, 403, 201, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    "/api/v1/machines".into(),
                    json!({"mac": format!("52:54:01:00:{:02x}:{:02x}", w.next() / 256 % 256, w.next() % 256)}),
                )
            }),
        ),
        (
            "GET /api/v1/machines/<machine>",
            [401, 200, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/api/v1/machines/{}", w.machine))),
        ),
        (
            "PATCH /api/v1/machines/<machine>",
            [401, 403, 403, 200, 200, 403],
            Box::new(|w| {
                json_req(
                    M::PATCH,
                    format!("/api/v1/machines/{}", w.mac),
                    json!({"pool": "lab"}),
                )
            }),
        ),
        (
            "GET /api/v1/machines/<machine>/queue",
            [401, 200, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/api/v1/machines/{}/queue", w.mac))),
        ),
        (
            "POST /api/v1/machines/<machine>/jobs",
            [401, 404, 201, 404, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/machines/{}/jobs", w.machine),
                    json!({"image_id": w.image, "version": 1}),
                )
            }),
        ),
        (
            "GET /api/v1/jobs?<machine>&<owner>&<state>&<limit>",
            [401, 200, 200, 200, 200, 200],
            Box::new(|_| bare(M::GET, "/api/v1/jobs".into())),
        ),
        (
            "GET /api/v1/jobs/<id>",
            [401, 404, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/api/v1/jobs/{}", w.job))),
        ),
        (
            "GET /api/v1/jobs/<id>/events",
            [401, 404, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/api/v1/jobs/{}/events", w.job))),
        ),
        (
            "POST /api/v1/jobs/<id>/cancel",
            [401, 404, 200, 200, 200, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/jobs/{}/cancel", w.fresh_job()),
                    json!({}),
                )
            }),
        ),
        (
            "POST /api/v1/jobs/<id>/release",
            [401, 404, 200, 200, 200, 403],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Running);
                json_req(M::POST, format!("/api/v1/jobs/{job}/release"), json!({}))
            }),
        ),
        (
            "POST /api/v1/jobs",
            [401, 404, 202, 404, 202, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    "/api/v1/jobs".into(),
                    json!({"image_id": w.image, "version": 1, "pool": "nowhere"}),
                )
            }),
        ),
        (
            "GET /api/v1/placement?<arch>&<min_disk_bytes>&<pool>",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/placement?arch=x86_64".into())),
        ),
        (
            "GET /api/v1/placements",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/placements".into())),
        ),
        (
            "GET /api/v1/placements/<id>",
            [401, 404, 200, 200, 200, 404],
            Box::new(|w| {
                bare(
                    M::GET,
                    format!("/api/v1/placements/{}", w.fresh_placement()),
                )
            }),
        ),
        (
            "POST /api/v1/placements/<id>/cancel",
            [401, 404, 200, 200, 200, 404],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/placements/{}/cancel", w.fresh_placement()),
                    json!({}),
                )
            }),
        ),
        (
            "POST /api/v1/machines/<machine>/accept",
            [401, 403, 403, 200, 200, 403],
            Box::new(|w| bare(M::POST, format!("/api/v1/machines/{}/accept", w.machine))),
        ),
        (
            "POST /api/v1/machines/<machine>/retire",
            [401, 403, 403, 200, 200, 403],
            Box::new(|w| {
                let n = w.next();
                let m = w
                    .app
                    .machine(&format!("52:54:00:ee:{:02x}:{:02x}", n >> 8, n & 0xff));
                bare(M::POST, format!("/api/v1/machines/{m}/retire"))
            }),
        ),
        (
            "PUT /api/v1/machines/<machine>/boot-config",
            [401, 403, 403, 200, 200, 403],
            Box::new(|w| {
                json_req(
                    M::PUT,
                    format!("/api/v1/machines/{}/boot-config", w.machine),
                    json!({"power": {"kind": "manual"}, "neutral": "keep"}),
                )
            }),
        ),
        (
            // The shared machine has no power adapter (manual): moderators
            // and admins get the 409 that says so, everyone else 403.
            "POST /api/v1/machines/<machine>/power",
            [401, 403, 403, 409, 409, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/machines/{}/power", w.machine),
                    json!({"action": "cycle"}),
                )
            }),
        ),
        (
            "GET /api/v1/machines/<machine>/events",
            [401, 200, 200, 200, 200, 403],
            Box::new(|w| bare(M::GET, format!("/api/v1/machines/{}/events", w.mac))),
        ),
        // --- the boot path: anonymous (firmware has no secret)
        (
            "GET /boot/chain.ipxe",
            [200, 200, 200, 200, 200, 200],
            Box::new(|_| bare(M::GET, "/boot/chain.ipxe".into())),
        ),
        (
            "GET /boot/ipxe?<mac>&<arch>",
            [200, 200, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/boot/ipxe?mac={}", w.mac))),
        ),
        (
            "GET /boot/mos/<file>",
            [404, 404, 404, 404, 404, 404],
            Box::new(|_| bare(M::GET, "/boot/mos/vmlinuz".into())),
        ),
        // --- administration
        (
            "POST /api/v1/admin/gc",
            [401, 403, 403, 403, 200, 403],
            Box::new(|_| json_req(M::POST, "/api/v1/admin/gc".into(), json!({}))),
        ),
        (
            "GET /api/v1/admin/storage",
            [401, 403, 403, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/admin/storage".into())),
        ),
        (
            "GET /api/v1/admin/settings",
            [401, 403, 403, 403, 200, 403],
            Box::new(|_| bare(M::GET, "/api/v1/admin/settings".into())),
        ),
        (
            "PUT /api/v1/admin/settings",
            [401, 403, 403, 403, 200, 403],
            Box::new(|_| {
                json_req(
                    M::PUT,
                    "/api/v1/admin/settings".into(),
                    json!({"unknown_machines": "ignore"}),
                )
            }),
        ),
        // --- the agent protocol
        (
            "POST /api/v1/machines/<machine>/agent-token",
            [401, 403, 403, 201, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/machines/{}/agent-token", w.mac),
                    json!({"ttl_seconds": 60}),
                )
            }),
        ),
        (
            "POST /api/v1/agent/machines/<machine>/inventory",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/api/v1/agent/machines/{}/inventory", w.mac),
                    json!({"disks": [{"path": "/dev/nvme0n1", "size": 1u64 << 30,
                        "logical_block": 512, "physical_block": 4096,
                        "rotational": false, "removable": false}],
                        "nics": [{"name": "eth0", "mac": w.mac}],
                        "memory_bytes": 1u64 << 30, "cpu_model": "test", "cpus": 2}),
                )
            }),
        ),
        (
            "GET /api/v1/agent/machines/<machine>/next-job?<wait_ms>",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                w.active_job(false, JobState::Provisioning);
                bare(
                    M::GET,
                    format!("/api/v1/agent/machines/{}/next-job?wait_ms=0", w.machine),
                )
            }),
        ),
        (
            "POST /api/v1/agent/machines/<machine>/logs",
            [401, 403, 403, 204, 204, 204],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                json_req(
                    M::POST,
                    format!("/api/v1/agent/machines/{}/logs", w.mac),
                    json!({"job_id": job, "lines": ["hello", "world"]}),
                )
            }),
        ),
        (
            "GET /api/v1/agent/jobs/<job>/entries/<entry>/manifest",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                bare(
                    M::GET,
                    format!("/api/v1/agent/jobs/{job}/entries/0/manifest"),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/entries/<entry>/chunks",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                let nines = ChunkHash::of(&[9u8; CHUNK_SIZE as usize]);
                json_req(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/entries/0/chunks"),
                    json!({"hashes": [nines.to_hex()]}),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/entries/<entry>/deltas",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                let nines = [9u8; CHUNK_SIZE as usize];
                let want = baas_core::delta::DeltaWant {
                    hash: ChunkHash::of(&nines),
                    blocks: baas_core::delta::BlockHashes::of(&nines[..CHUNK_SIZE as usize - 1]),
                };
                bytes(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/entries/0/deltas"),
                    baas_core::delta::encode_wants(&[want]),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/entries/<entry>/captures",
            [401, 403, 403, 201, 201, 201],
            Box::new(|w| {
                let job = w.active_job(true, JobState::Capturing);
                bytes(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/entries/0/captures"),
                    Manifest::blank(1 << 20).encode(),
                )
            }),
        ),
        (
            "POST /api/v1/agent/captures/<upload>/chunks",
            [401, 404, 200, 404, 200, 200],
            Box::new(|w| {
                let (upload, hash, frame) = w.capture_session();
                let mut body = hash.0.to_vec();
                body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                body.extend_from_slice(&frame);
                bytes(
                    M::POST,
                    format!("/api/v1/agent/captures/{upload}/chunks"),
                    body,
                )
            }),
        ),
        (
            "POST /api/v1/agent/captures/<upload>/commit",
            [401, 404, 201, 404, 201, 201],
            Box::new(|w| {
                let job: JobId = w
                    .active_job(true, JobState::Capturing)
                    .parse()
                    .expect("job id");
                let (session, _) = w
                    .app
                    .baas
                    .begin_capture(&Actor::System, job, 0, Manifest::blank(1 << 20))
                    .expect("begin capture");
                bare(
                    M::POST,
                    format!("/api/v1/agent/captures/{}/commit", session.id),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/progress",
            [401, 403, 403, 204, 204, 204],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                json_req(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/progress"),
                    json!({"phase": "flash", "bytes_done": 1, "bytes_total": 2, "rate": 3}),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/advance",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                json_req(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/advance"),
                    json!({"state": "running", "message": "flashed"}),
                )
            }),
        ),
        (
            "POST /api/v1/agent/jobs/<job>/fail",
            [401, 403, 403, 200, 200, 200],
            Box::new(|w| {
                let job = w.active_job(false, JobState::Provisioning);
                json_req(
                    M::POST,
                    format!("/api/v1/agent/jobs/{job}/fail"),
                    json!({"phase": "flash", "reason": "test"}),
                )
            }),
        ),
        // --- the original's routes
        (
            "POST /user",
            [401, 403, 403, 403, 201, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    "/user".into(),
                    json!({"name": format!("old{}", w.next()), "email": "e", "role": "user"}),
                )
            }),
        ),
        (
            "GET /user/me",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/user/me".into())),
        ),
        (
            "POST /user/<name>/image",
            [401, 404, 201, 403, 201, 404],
            Box::new(|_| {
                json_req(
                    M::POST,
                    "/user/owner/image".into(),
                    json!({"name": "Test image", "DiskUUID": "/dev/sda", "size": 4096}),
                )
            }),
        ),
        (
            "GET /user/<name>/images",
            [401, 404, 200, 200, 200, 404],
            Box::new(|_| bare(M::GET, "/user/owner/images".into())),
        ),
        (
            "GET /user/<name>/image_setups",
            [401, 404, 200, 403, 200, 404],
            Box::new(|_| bare(M::GET, "/user/owner/image_setups".into())),
        ),
        (
            "POST /user/<name>/image_setup",
            [401, 403, 201, 403, 403, 403],
            Box::new(|_| {
                json_req(
                    M::POST,
                    "/user/owner/image_setup".into(),
                    json!({"Name": "setup"}),
                )
            }),
        ),
        (
            "GET /image/<id>/<version>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bare(M::GET, format!("/image/{}/latest", w.image))),
        ),
        (
            "POST /image/<id>",
            [401, 404, 200, 404, 200, 404],
            Box::new(|w| bytes(M::POST, format!("/image/{}", w.image), vec![5u8; 3000])),
        ),
        (
            "GET /machines",
            [401, 200, 200, 200, 200, 403],
            Box::new(|_| bare(M::GET, "/machines".into())),
        ),
        (
            "GET /machine/<mac>",
            [401, 200, 200, 200, 200, 200],
            Box::new(|w| bare(M::GET, format!("/machine/{}", w.mac))),
        ),
        (
            "POST /machine/<mac>/boot",
            [401, 404, 200, 404, 200, 403],
            Box::new(|w| {
                json_req(
                    M::POST,
                    format!("/machine/{}/boot", w.mac),
                    json!({"Version": 1, "ImageUUID": w.image, "update": false}),
                )
            }),
        ),
    ]
}

#[test]
fn every_route_against_every_kind_of_caller() {
    let app = TestApp::spawn();
    let (_, other) = app.user("other", "user");
    let (owner_id, owner) = app.user("owner", "user");
    let (_, moderator) = app.user("moderator", "moderator");
    let mac = "52:54:00:12:34:56".to_string();
    let machine = app.machine(&mac);
    let image = app.post_image(&owner, "private", 1 << 20);
    app.upload(&owner, &image, &[9u8; 70_000]).expect(201);
    let setup = app
        .post(
            "/api/v1/setups",
            Some(&owner),
            &json!({"name": "shared fixture"}),
        )
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("setup id")
        .to_string();
    let job = app
        .boot_queue(&owner, &machine, &image, 1)
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("job id")
        .to_string();
    let admin = app.admin.clone();
    let agent = app.agent_token(&machine);
    let mut w = World {
        tokens: [
            None,
            Some(other),
            Some(owner.clone()),
            Some(moderator),
            Some(admin),
            Some(agent),
        ],
        owner_id,
        owner_token: owner,
        image,
        setup,
        machine,
        mac,
        job,
        upload: String::new(),
        counter: AtomicU64::new(1),
        app,
    };
    w.upload = w.fresh_upload().0;

    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for (route, expected, build) in rows() {
        covered.insert(route.to_string());
        for (i, want) in expected.iter().enumerate() {
            let req = build(&w);
            let res = w.app.send(
                req.method.clone(),
                &req.path,
                w.tokens[i].as_deref(),
                &[("Content-Type", req.content_type)],
                req.body,
            );
            if res.status != *want {
                failures.push(format!(
                    "{route} as {}: expected {want}, got {} {}",
                    WHO[i],
                    res.status,
                    res.text()
                ));
                continue;
            }
            if res.status >= 400 {
                let v = res.json();
                if !v["error"]["code"].is_string() {
                    failures.push(format!("{route} as {}: no error envelope: {v}", WHO[i]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Every mounted route has a row.
    let dir = tempfile::tempdir().expect("temp dir");
    let rocket = baas_server::build(
        common::open_store(dir.path()),
        baas_server::Settings::default(),
    );
    // The web UI's routes (session cookies, not bearer tokens) have their
    // own matrix: tests/ui_http.rs, every_ui_route_refuses_anonymous_callers.
    let mounted: BTreeSet<String> = rocket
        .routes()
        .filter(|r| r.uri.path() != "/" && !r.uri.path().starts_with("/ui"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    let missing: Vec<_> = mounted.difference(&covered).collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    let stale: Vec<_> = covered.difference(&mounted).collect();
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );
}
