//! Crash consistency of the real `baas-server` binary: SIGKILL at random
//! points while clients upload versions, queue jobs, agents take and finish
//! them, and an admin runs garbage collection; restart; check. After every
//! restart:
//! - every version the server acknowledged (201) is listed and reads back
//!   with its root hash, and every listed version (acknowledged or not)
//!   reads back whole under its root: no partial version exists;
//! - every job the server acknowledged still exists; no job an agent
//!   finished is handed out again; no machine has two active jobs.
//!
//! At the end a garbage collection (no safety margin, on the same data
//! directory) leaves exactly the chunks the versions reference.
//!
//! Iterations: `BAAS_CRASH_ITERATIONS` (default 12, CI);
//! `benches/crash-loop.sh` runs 60.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baas_core::content::{is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use serde_json::{json, Value};
use ureq::http::{self, Method};

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

fn start_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> Server {
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_baas-server"))
        .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start baas-server");
    let base = format!("http://127.0.0.1:{port}");
    let agent = client(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = agent.get(format!("{base}/healthz")).call() {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, base }
}

fn client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build(),
    )
}

/// One request; `None` when the connection failed (the server died).
fn call(
    agent: &ureq::Agent,
    method: Method,
    url: &str,
    token: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Option<(u16, Vec<u8>)> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"));
    let res = match body {
        Some((ct, bytes)) => {
            b = b.header("Content-Type", ct);
            agent.run(b.body(bytes).expect("request"))
        }
        None => agent.run(b.body(()).expect("request")),
    };
    let mut res = res.ok()?;
    let status = res.status().as_u16();
    let body = res
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .ok()?;
    Some((status, body))
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn root_of(bytes: &[u8]) -> String {
    let chunks = bytes
        .chunks(CHUNK_SIZE as usize)
        .map(|c| (!is_zero(c)).then(|| ChunkHash::of(c)))
        .collect();
    Manifest::new(bytes.len() as u64, CHUNK_SIZE, chunks)
        .expect("manifest")
        .root()
        .to_hex()
}

/// A small pseudo-random image: data, holes and chunks shared with others.
fn image_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let chunks = 1 + (x % 6) as usize;
    let mut out = Vec::new();
    for c in 0..chunks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => out.extend(std::iter::repeat_n(0u8, CHUNK_SIZE as usize)),
            1 => out.extend(std::iter::repeat_n((c % 3) as u8 + 1, CHUNK_SIZE as usize)),
            _ => out.extend((0..CHUNK_SIZE).map(|i| (x >> (i % 56)) as u8 ^ i as u8)),
        }
    }
    out.truncate(out.len() - (x % 1000) as usize);
    out
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    /// (image, version number) -> root, acknowledged with 201.
    versions: BTreeMap<(String, u64), String>,
    /// Jobs acknowledged with 201.
    jobs: BTreeSet<String>,
    /// Jobs an agent finished (advance to succeeded answered 200).
    finished: BTreeSet<String>,
    /// Times a job was handed out again after it finished.
    duplicates: u64,
    handed_out: u64,
}

struct Lab {
    admin: String,
    images: Vec<String>,
    machines: Vec<(String, String)>,
}

fn setup(base: &str, admin: &str) -> Lab {
    let a = client(Duration::from_secs(30));
    let mut images = Vec::new();
    for i in 0..3 {
        let (s, b) = call(
            &a,
            Method::POST,
            &format!("{base}/api/v1/images"),
            admin,
            Some((
                "application/json",
                json!({"name": format!("crash{i}"), "size": 1 << 20})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .expect("create image");
        assert_eq!(s, 201);
        images.push(json_of(&b)["image"]["id"].as_str().expect("id").to_string());
    }
    let (s, _) = call(
        &a,
        Method::POST,
        &format!("{base}/api/v1/images/{}/versions", images[0]),
        admin,
        Some(("application/octet-stream", image_bytes(7))),
    )
    .expect("seed version");
    assert_eq!(s, 201);
    let mut machines = Vec::new();
    for i in 0..3 {
        let (s, b) = call(
            &a,
            Method::POST,
            &format!("{base}/api/v1/machines"),
            admin,
            Some((
                "application/json",
                json!({"mac": format!("52:54:00:aa:00:0{i}")})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .expect("machine");
        assert_eq!(s, 201);
        let id = json_of(&b)["id"].as_str().expect("id").to_string();
        let (s, b) = call(
            &a,
            Method::POST,
            &format!("{base}/api/v1/machines/{id}/agent-token"),
            admin,
            Some((
                "application/json",
                json!({"ttl_seconds": 86400}).to_string().into_bytes(),
            )),
        )
        .expect("agent token");
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        machines.push((
            id,
            json_of(&b)["secret"].as_str().expect("secret").to_string(),
        ));
    }
    Lab {
        admin: admin.to_string(),
        images,
        machines,
    }
}

/// Clients at work until `stop`.
fn load(
    base: &str,
    lab: &Lab,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
    seed: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for u in 0..2u64 {
        let (base, admin, images, ledger, stop) = (
            base.to_string(),
            lab.admin.clone(),
            lab.images.clone(),
            ledger.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let a = client(Duration::from_secs(30));
            let mut n = seed * 1000 + u * 100;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let img = &images[(n % images.len() as u64) as usize];
                let bytes = image_bytes(n);
                let Some((s, b)) = call(
                    &a,
                    Method::POST,
                    &format!("{base}/api/v1/images/{img}/versions"),
                    &admin,
                    Some(("application/octet-stream", bytes.clone())),
                ) else {
                    return;
                };
                if s == 201 {
                    let v = json_of(&b);
                    let number = v["number"].as_u64().expect("number");
                    assert_eq!(
                        v["root"].as_str(),
                        Some(root_of(&bytes).as_str()),
                        "acknowledged root"
                    );
                    ledger
                        .lock()
                        .expect("ledger")
                        .versions
                        .insert((img.clone(), number), root_of(&bytes));
                }
            }
        }));
    }
    {
        let (base, admin, img, machines, ledger, stop) = (
            base.to_string(),
            lab.admin.clone(),
            lab.images[0].clone(),
            lab.machines.clone(),
            ledger.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let a = client(Duration::from_secs(30));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (m, _) = &machines[n % machines.len()];
                let body = json!({"image_id": img, "version": 1})
                    .to_string()
                    .into_bytes();
                let Some((s, b)) = call(
                    &a,
                    Method::POST,
                    &format!("{base}/api/v1/machines/{m}/jobs"),
                    &admin,
                    Some(("application/json", body)),
                ) else {
                    return;
                };
                if s == 201 {
                    let id = json_of(&b)["id"].as_str().expect("job id").to_string();
                    ledger.lock().expect("ledger").jobs.insert(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    for (m, token) in lab.machines.clone() {
        let (base, ledger, stop) = (base.to_string(), ledger.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let a = client(Duration::from_secs(30));
            while !stop.load(Ordering::Relaxed) {
                let Some((s, b)) = call(
                    &a,
                    Method::GET,
                    &format!("{base}/api/v1/agent/machines/{m}/next-job?wait_ms=200"),
                    &token,
                    None,
                ) else {
                    return;
                };
                if s != 200 {
                    continue;
                }
                let job = json_of(&b)["id"].as_str().expect("job id").to_string();
                {
                    let mut l = ledger.lock().expect("ledger");
                    l.handed_out += 1;
                    if l.finished.contains(&job) {
                        l.duplicates += 1;
                    }
                }
                let state = json_of(&b)["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                for next in ["running", "succeeded"] {
                    if state == "running" && next == "running" {
                        continue;
                    }
                    let body = json!({"state": next}).to_string().into_bytes();
                    let Some((s, _)) = call(
                        &a,
                        Method::POST,
                        &format!("{base}/api/v1/agent/jobs/{job}/advance"),
                        &token,
                        Some(("application/json", body)),
                    ) else {
                        return;
                    };
                    if s != 200 && s != 204 {
                        break;
                    }
                    if next == "succeeded" {
                        ledger.lock().expect("ledger").finished.insert(job.clone());
                    }
                }
            }
        }));
    }
    {
        let (base, admin, stop) = (base.to_string(), lab.admin.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let a = client(Duration::from_secs(60));
            while !stop.load(Ordering::Relaxed) {
                if call(
                    &a,
                    Method::POST,
                    &format!("{base}/api/v1/admin/gc"),
                    &admin,
                    None,
                )
                .is_none()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    threads
}

/// Checks the invariants against a freshly restarted server.
fn check(base: &str, lab: &Lab, ledger: &Ledger) -> usize {
    let a = client(Duration::from_secs(60));
    let mut checked = 0;
    for img in &lab.images {
        let (s, b) = call(
            &a,
            Method::GET,
            &format!("{base}/api/v1/images/{img}/versions"),
            &lab.admin,
            None,
        )
        .expect("list versions");
        assert_eq!(s, 200);
        let listed: HashMap<u64, String> = json_of(&b)
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| {
                (
                    v["number"].as_u64().expect("n"),
                    v["root"].as_str().expect("root").to_string(),
                )
            })
            .collect();
        for ((i, n), root) in ledger
            .versions
            .range((img.clone(), 0)..=(img.clone(), u64::MAX))
        {
            assert_eq!(i, img);
            assert_eq!(
                listed.get(n),
                Some(root),
                "acknowledged version {n} of {img} lost or changed"
            );
        }
        for (n, root) in &listed {
            if *n == 0 {
                continue;
            }
            let (s, bytes) = call(
                &a,
                Method::GET,
                &format!("{base}/api/v1/images/{img}/versions/{n}/content"),
                &lab.admin,
                None,
            )
            .expect("download");
            assert_eq!(s, 200, "version {n} of {img} does not read back");
            assert_eq!(
                &root_of(&bytes),
                root,
                "version {n} of {img} reads back other bytes: a partial version"
            );
            checked += 1;
        }
    }
    let (s, b) = call(
        &a,
        Method::GET,
        &format!("{base}/api/v1/jobs?limit=100000"),
        &lab.admin,
        None,
    )
    .expect("jobs");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let jobs = json_of(&b);
    let jobs = jobs.as_array().expect("jobs");
    let present: BTreeSet<String> = jobs
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();
    for j in &ledger.jobs {
        assert!(present.contains(j), "acknowledged job {j} was lost");
    }
    for j in jobs {
        let id = j["id"].as_str().expect("id");
        if ledger.finished.contains(id) {
            assert_eq!(
                j["state"], "succeeded",
                "finished job {id} came back as {}",
                j["state"]
            );
        }
    }
    for (m, _) in &lab.machines {
        let active = jobs
            .iter()
            .filter(|j| j["machine_id"] == m.as_str())
            .filter(|j| {
                matches!(
                    j["state"].as_str(),
                    Some("provisioning" | "running" | "capturing")
                )
            })
            .count();
        assert!(active <= 1, "machine {m} has {active} active jobs");
    }
    assert_eq!(ledger.duplicates, 0, "a finished job was handed out again");
    checked
}

fn chunk_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for fan in std::fs::read_dir(dir.join("chunks"))
        .expect("chunks")
        .flatten()
    {
        let name = fan.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !fan.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(fan.path()).expect("fan-out").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            // The temp file of a put the kill interrupted: never read as a
            // chunk, deleted by a sweep once it is stale (a minute).
            if name.starts_with("put-") && name.ends_with(".tmp") {
                continue;
            }
            out.insert(name);
        }
    }
    out
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_leaves_nothing_partial() {
    let iterations: usize = std::env::var("BAAS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir: PathBuf = tmp.path().join("data");
    let mut server = start(&dir);
    let admin = std::fs::read_to_string(dir.join("admin-token"))
        .expect("admin token")
        .trim()
        .to_string();
    let lab = setup(&server.base, &admin);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut versions_checked = 0;
    for i in 0..iterations {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(&server.base, &lab, &ledger, &stop, i as u64 + 1);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 900));
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("client thread");
        }
        server = start(&dir);
        let l = ledger.lock().expect("ledger");
        versions_checked += check(&server.base, &lab, &l);
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");

    // The next collection, with no margin, reclaims every orphan chunk.
    let mut options = baas_embedded::Options::data_dir(&dir);
    options.config.gc_margin_ms = 0;
    options.config.upload_idle_timeout_ms = 0;
    let baas = baas_embedded::open(&options).expect("open the data directory");
    let report = baas.collect_garbage(&baas_core::Actor::System).expect("gc");
    let mut referenced = BTreeSet::new();
    for img in &lab.images {
        let id = img.parse().expect("image id");
        for v in baas
            .list_versions(&baas_core::Actor::System, id)
            .expect("versions")
        {
            let (_, m) = baas
                .get_manifest(
                    &baas_core::Actor::System,
                    id,
                    baas_core::model::VersionRef::Number(v.number),
                )
                .expect("manifest");
            referenced.extend(m.distinct_chunks().into_iter().map(|h| h.to_hex()));
        }
    }
    let on_disk = chunk_files(&dir);
    let orphans: Vec<_> = on_disk.difference(&referenced).collect();
    let missing: Vec<_> = referenced.difference(&on_disk).collect();
    assert!(missing.is_empty(), "referenced chunks missing: {missing:?}");
    assert!(
        orphans.is_empty(),
        "orphan chunks left after gc: {orphans:?}"
    );
    let l = ledger.lock().expect("ledger");
    let mut log = String::new();
    let _ = std::fs::File::open(dir.with_extension("log")).map(|mut f| f.read_to_string(&mut log));
    eprintln!(
        "crash loop: {iterations} SIGKILLs survived; {} versions acknowledged, {versions_checked} version reads verified; \
         {} jobs acknowledged, {} handed out, {} finished, {} duplicates; gc removed {} orphan chunks, {} referenced",
        l.versions.len(),
        l.jobs.len(),
        l.handed_out,
        l.finished.len(),
        l.duplicates,
        report.sweep.removed,
        referenced.len()
    );
}

/// Unmounts a test filesystem when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_chunk_disk_fails_the_upload_clearly_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tmp");
    let chunks = tmp.path().join("chunks");
    std::fs::create_dir_all(&chunks).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&chunks)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must be able to mount a small tmpfs for the disk-full test"
        );
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        return;
    }
    let _unmount = Mounted(chunks.clone());
    let dir = tmp.path().join("data");
    let mut server = start_with(&dir, &["--chunk-dir".as_ref(), chunks.as_os_str()]);
    let admin = std::fs::read_to_string(dir.join("admin-token"))
        .expect("admin token")
        .trim()
        .to_string();
    let lab = setup(&server.base, &admin);
    let a = client(Duration::from_secs(60));
    let base = &server.base;
    let img = &lab.images[1];
    let small = image_bytes(3);
    let (s, _) = call(
        &a,
        Method::POST,
        &format!("{base}/api/v1/images/{img}/versions"),
        &admin,
        Some(("application/octet-stream", small.clone())),
    )
    .expect("small upload");
    assert_eq!(s, 201);
    // 8 MiB that do not compress, on a 2 MiB filesystem.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (s, b) = call(
        &a,
        Method::POST,
        &format!("{base}/api/v1/images/{img}/versions"),
        &admin,
        Some(("application/octet-stream", big)),
    )
    .expect("big upload answered");
    let e = json_of(&b);
    assert_eq!(s, 503, "{e}");
    assert_eq!(e["error"]["code"], "unavailable", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no space left"),
        "{e}"
    );
    // No version, and everything already stored still reads back.
    let (s, b) = call(
        &a,
        Method::GET,
        &format!("{base}/api/v1/images/{img}/versions"),
        &admin,
        None,
    )
    .expect("versions");
    assert_eq!(s, 200);
    let numbers: Vec<u64> = json_of(&b)
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["number"].as_u64().expect("n"))
        .collect();
    assert_eq!(numbers, vec![0, 1], "a failed upload left a version");
    let (s, back) = call(
        &a,
        Method::GET,
        &format!("{base}/api/v1/images/{img}/versions/1/content"),
        &admin,
        None,
    )
    .expect("download");
    assert_eq!(s, 200);
    assert!(back == small, "a stored version changed");
    let (s, _) = call(&a, Method::GET, &format!("{base}/healthz"), &admin, None).expect("healthz");
    assert_eq!(s, 200);
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");
}

/// A private PostgreSQL cluster (Debian's `initdb`/`pg_ctl`, run as the
/// `postgres` user) that the test may stop and start without disturbing
/// anyone else's.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn create(dir: &Path) -> Option<PrivatePostgres> {
        let ver = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max()?;
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{ver}/bin"));
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).ok()?;
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .ok()?;
        if !chown.success() {
            return None;
        }
        let pg = PrivatePostgres {
            bin,
            data,
            port: free_port(),
        };
        let ok = pg
            .as_postgres(&[
                pg.bin.join("initdb").as_os_str(),
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
            ])
            .ok()?;
        ok.then_some(pg)
    }

    fn as_postgres(&self, args: &[&std::ffi::OsStr]) -> std::io::Result<bool> {
        Ok(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success())
    }

    fn ctl(&self, what: &str) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.data.display()
        );
        let ok = self
            .as_postgres(&[
                self.bin.join("pg_ctl").as_os_str(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                what.as_ref(),
            ])
            .expect("pg_ctl");
        assert!(ok, "pg_ctl {what} failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.as_postgres(&[
            self.bin.join("pg_ctl").as_os_str(),
            "-D".as_ref(),
            self.data.as_os_str(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "stop".as_ref(),
        ]);
    }
}

#[test]
fn postgres_restarted_under_load_gives_503s_then_recovers_by_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(pg) = PrivatePostgres::create(tmp.path()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI installs postgresql: initdb must work for the restart test"
        );
        eprintln!("skipping: no PostgreSQL binaries or not root");
        return;
    };
    pg.ctl("start");
    let dir = tmp.path().join("data");
    let url = pg.url();
    let mut server = start_with(
        &dir,
        &[
            "--database-url".as_ref(),
            url.as_ref(),
            "--db-pool-size".as_ref(),
            "4".as_ref(),
        ],
    );
    let admin = std::fs::read_to_string(dir.join("admin-token"))
        .expect("admin token")
        .trim()
        .to_string();
    let lab = setup(&server.base, &admin);
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (base, admin, img, stop, statuses) = (
            server.base.clone(),
            admin.clone(),
            lab.images[0].clone(),
            stop.clone(),
            statuses.clone(),
        );
        load.push(std::thread::spawn(move || {
            let a = client(Duration::from_secs(60));
            while !stop.load(Ordering::Relaxed) {
                let (s, b) = call(
                    &a,
                    Method::GET,
                    &format!("{base}/api/v1/images/{img}/versions"),
                    &admin,
                    None,
                )
                .expect("the server answers");
                if s != 200 {
                    let e = json_of(&b);
                    assert_eq!(e["error"]["code"], "unavailable", "{s}: {e}");
                }
                statuses.lock().expect("statuses").push(s);
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    pg.ctl("stop");
    std::thread::sleep(Duration::from_secs(3));
    pg.ctl("start");
    // Recovery by itself: answers turn 200 again without a restart.
    let a = client(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, _) = call(
            &a,
            Method::GET,
            &format!("{}/api/v1/images", server.base),
            &admin,
            None,
        )
        .expect("answer");
        if s == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not recover after PostgreSQL came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    let statuses = statuses.lock().expect("statuses");
    let unavailable = statuses.iter().filter(|s| **s == 503).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(unavailable > 0, "no request saw the gap: {statuses:?}");
    assert_eq!(*statuses.last().expect("some"), 200, "not recovered");
    eprintln!("postgres restart: {} requests, {ok} answered 200, {unavailable} answered 503 during the gap", statuses.len());
    server.child.kill().expect("kill");
    server.child.wait().expect("reap");
}
