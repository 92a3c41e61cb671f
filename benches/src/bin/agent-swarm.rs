//! A bounded swarm of simulated agents over loopback: registers MACHINES
//! machines (admin), queues JOBS jobs on them, then runs one thread per
//! machine that polls `next-job`, reports progress, and finishes each job
//! (`running`, then `succeeded`), spreading requests over every server URL
//! given (servers share one PostgreSQL and one chunk directory). Prints
//! jobs handed out, duplicates (a job handed out after it finished, or to
//! two machines), jobs left, elapsed time and jobs per second.
//!
//!     agent-swarm ADMIN_TOKEN MACHINES JOBS URL [URL...]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

fn json_body(r: &mut ureq::http::Response<ureq::Body>) -> Value {
    r.body_mut()
        .read_to_vec()
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn post(a: &ureq::Agent, url: &str, token: &str, body: &Value) -> (u16, Value) {
    match a
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
    {
        Ok(mut r) => {
            let s = r.status().as_u16();
            (s, json_body(&mut r))
        }
        Err(e) => {
            eprintln!("POST {url}: {e}");
            (0, Value::Null)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: agent-swarm ADMIN_TOKEN MACHINES JOBS URL [URL...]");
        std::process::exit(2);
    }
    let admin = args[1].clone();
    let machines: usize = args[2].parse().expect("MACHINES");
    let jobs: usize = args[3].parse().expect("JOBS");
    let urls: Vec<String> = args[4..].to_vec();
    let a = agent();
    let base = &urls[0];
    let run = std::process::id() % 0xffff;
    let (s, img) = post(
        &a,
        &format!("{base}/api/v1/images"),
        &admin,
        &json!({"name": format!("swarm-{run}"), "size": 1 << 20}),
    );
    assert_eq!(s, 201, "image: {img}");
    let image = img["image"]["id"].as_str().expect("image id").to_string();
    let mut fleet = Vec::new();
    for i in 0..machines {
        let mac = format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:00",
            run >> 8,
            run & 0xff,
            i >> 8,
            i & 0xff
        );
        let (s, m) = post(
            &a,
            &format!("{base}/api/v1/machines"),
            &admin,
            &json!({"mac": mac}),
        );
        assert_eq!(s, 201, "machine: {m}");
        let id = m["id"].as_str().expect("id").to_string();
        let (s, t) = post(
            &a,
            &format!("{base}/api/v1/machines/{id}/agent-token"),
            &admin,
            &json!({}),
        );
        assert_eq!(s, 201, "token: {t}");
        fleet.push((id, t["secret"].as_str().expect("secret").to_string()));
    }
    for j in 0..jobs {
        let (m, _) = &fleet[j % machines];
        let (s, b) = post(
            &a,
            &format!("{base}/api/v1/machines/{m}/jobs"),
            &admin,
            &json!({"image_id": image, "version": 0}),
        );
        assert_eq!(s, 201, "job: {b}");
    }
    let owner: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let finished: Arc<Mutex<HashSet<String>>> = Arc::default();
    let duplicates = Arc::new(AtomicUsize::new(0));
    let handed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = fleet
        .into_iter()
        .enumerate()
        .map(|(i, (m, token))| {
            let (urls, owner, finished, duplicates, handed, done) = (
                urls.clone(),
                owner.clone(),
                finished.clone(),
                duplicates.clone(),
                handed.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                let mut n = i;
                let mut idle = 0;
                while done.load(Ordering::Relaxed) < jobs && idle < 50 {
                    n += 1;
                    let url = &urls[n % urls.len()];
                    let r = a
                        .get(format!(
                            "{url}/api/v1/agent/machines/{m}/next-job?wait_ms=0"
                        ))
                        .header("Authorization", &format!("Bearer {token}"))
                        .call();
                    let Ok(mut r) = r else { continue };
                    if r.status().as_u16() != 200 {
                        idle += 1;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    idle = 0;
                    let job = json_body(&mut r);
                    let id = job["id"].as_str().unwrap_or_default().to_string();
                    handed.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut o = owner.lock().expect("owner");
                        if finished.lock().expect("finished").contains(&id)
                            || o.get(&id).is_some_and(|prev| prev != &m)
                        {
                            duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        o.insert(id.clone(), m.clone());
                    }
                    let url = &urls[(n + 1) % urls.len()];
                    let _ = post(
                        &a,
                        &format!("{url}/api/v1/agent/jobs/{id}/progress"),
                        &token,
                        &json!({"phase": "flash", "bytes_done": 1, "bytes_total": 1}),
                    );
                    let already = job["state"].as_str() == Some("running");
                    for state in ["running", "succeeded"] {
                        if already && state == "running" {
                            continue;
                        }
                        let url = &urls[(n + 2) % urls.len()];
                        let (s, b) = post(
                            &a,
                            &format!("{url}/api/v1/agent/jobs/{id}/advance"),
                            &token,
                            &json!({"state": state}),
                        );
                        if s != 200 {
                            eprintln!("advance {id} to {state}: {s} {b}");
                            break;
                        }
                        if state == "succeeded" {
                            finished.lock().expect("finished").insert(id.clone());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let finished = finished.lock().expect("finished").len();
    println!(
        "servers={} machines={machines} jobs={jobs} handed_out={} finished={finished} duplicates={} left={} seconds={secs:.1} jobs_per_s={:.1}",
        urls.len(),
        handed.load(Ordering::Relaxed),
        duplicates.load(Ordering::Relaxed),
        jobs - finished,
        finished as f64 / secs
    );
}
