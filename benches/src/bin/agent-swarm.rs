//! A bounded swarm of simulated agents over loopback: registers MACHINES
//! machines (admin), queues JOBS jobs on them, then runs one thread per
//! machine that polls `next-job`, reports progress, and finishes each job
//! (`running`, then `succeeded`), spreading requests over every server URL
//! given (servers share one PostgreSQL and one chunk directory). Each agent
//! stops after its own jobs and one last poll that must find nothing, so
//! the work per job is the same however long a run takes. Prints jobs
//! handed out (`again`: of those, a machine's own unfinished job handed
//! back after its agent's call failed, as after an agent restart),
//! duplicates (a job handed out after it finished, to two machines, or
//! beyond a machine's share), jobs left, elapsed time and jobs
//! per second, counted from the first poll to the moment the last job
//! finished.
//!
//!     agent-swarm ADMIN_TOKEN MACHINES JOBS URL [URL...]
//!
//! `SWARM_CPUACCT="label=/sys/fs/cgroup/cpuacct/x/cpuacct.usage,..."` (set
//! by `benches/swarm.sh`) also prints, per label, the cores the cgroups under
//! it used during the timed part (several paths may share one label; their
//! usage adds up), so a run shows whether the servers were at their CPU cap
//! and whether this tool itself had CPU to spare.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Threads that register machines, issue tokens and queue jobs before the
/// timed part (setup through capped servers would otherwise take minutes).
const SETUP_THREADS: usize = 16;

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

/// `(label, cpuacct.usage path)` pairs from `SWARM_CPUACCT`.
fn cpu_sources() -> Vec<(String, String)> {
    std::env::var("SWARM_CPUACCT")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (label, path) = pair.split_once('=')?;
            Some((label.trim().to_string(), path.trim().to_string()))
        })
        .collect()
}

/// CPU nanoseconds used so far, per label, in first-seen label order.
fn cpu_now(sources: &[(String, String)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for (label, path) in sources {
        let ns = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("SWARM_CPUACCT: cannot read {path}"));
        match out.iter_mut().find(|(l, _)| l == label) {
            Some((_, total)) => *total += ns,
            None => out.push((label.clone(), ns)),
        }
    }
    out
}

/// Runs `f(i)` for every `i` in `0..n` on `SETUP_THREADS` threads and
/// returns the results in order.
fn setup_parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..SETUP_THREADS.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let v = f(i);
                *slots[i].lock().expect("slot") = Some(v);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("slot").expect("every slot filled"))
        .collect()
}

/// What every simulated agent saw, shared by all of them.
#[derive(Default)]
struct Tally {
    /// Job id -> the machine it was handed to.
    owner: Mutex<HashMap<String, String>>,
    finished: Mutex<HashSet<String>>,
    duplicates: AtomicUsize,
    handed: AtomicUsize,
    /// Hand-outs of a machine's own unfinished job again (its agent's
    /// previous call failed, as after an agent restart): not duplicates.
    again: AtomicUsize,
    done: AtomicUsize,
    /// When the last job finished.
    last: OnceLock<Instant>,
}

/// One machine's agent (the `i`th): takes and finishes the `share` jobs
/// queued for it, then polls once more, which must find nothing (a job
/// then is a duplicate: handed out twice, or after it finished). Like a
/// real agent, it does not poll again after its last job (a real machine
/// reboots into its user's system), so the work per job does not depend on
/// how long the run takes. Gives up after 50 polls in a row without a job.
fn run_agent(
    i: usize,
    m: &str,
    token: &str,
    share: usize,
    jobs: usize,
    urls: &[String],
    tally: &Tally,
) {
    let a = agent();
    let mut n = i;
    let mut idle = 0;
    let mut mine = 0;
    while idle < 50 {
        n += 1;
        let last_poll = mine >= share;
        let url = &urls[n % urls.len()];
        let r = a
            .get(format!(
                "{url}/api/v1/agent/machines/{m}/next-job?wait_ms=0"
            ))
            .header("Authorization", &format!("Bearer {token}"))
            .call();
        let mut r = match r {
            Ok(r) if r.status().as_u16() == 200 => r,
            Ok(_) if last_poll => break,
            other => {
                if let Err(e) = other {
                    eprintln!("next-job for {m}: {e}");
                }
                idle += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        idle = 0;
        let job = json_body(&mut r);
        let id = job["id"].as_str().unwrap_or_default().to_string();
        tally.handed.fetch_add(1, Ordering::Relaxed);
        {
            let mut o = tally.owner.lock().expect("owner");
            if last_poll
                || tally.finished.lock().expect("finished").contains(&id)
                || o.get(&id).is_some_and(|prev| prev != m)
            {
                tally.duplicates.fetch_add(1, Ordering::Relaxed);
            } else if o.contains_key(&id) {
                tally.again.fetch_add(1, Ordering::Relaxed);
            }
            o.insert(id.clone(), m.to_string());
        }
        if last_poll {
            break;
        }
        let url = &urls[(n + 1) % urls.len()];
        let _ = post(
            &a,
            &format!("{url}/api/v1/agent/jobs/{id}/progress"),
            token,
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
                token,
                &json!({"state": state}),
            );
            if s != 200 {
                eprintln!("advance {id} to {state}: {s} {b}");
                break;
            }
            if state == "succeeded" {
                tally.finished.lock().expect("finished").insert(id.clone());
                mine += 1;
                if tally.done.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                    let _ = tally.last.set(Instant::now());
                }
            }
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
    assert!(
        machines > 0 && jobs > 0,
        "MACHINES and JOBS must be positive"
    );
    let cpu = cpu_sources();
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
    let fleet: Vec<(String, String)> = setup_parallel(machines, |i| {
        let a = agent();
        let base = &urls[i % urls.len()];
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
        (id, t["secret"].as_str().expect("secret").to_string())
    });
    // Each machine's jobs are queued in order by one setup thread.
    setup_parallel(machines, |i| {
        let a = agent();
        let base = &urls[i % urls.len()];
        let m = &fleet[i].0;
        for _ in (i..jobs).step_by(machines) {
            let (s, b) = post(
                &a,
                &format!("{base}/api/v1/machines/{m}/jobs"),
                &admin,
                &json!({"image_id": image, "version": 0}),
            );
            assert_eq!(s, 201, "job: {b}");
        }
    });
    let tally = Arc::new(Tally::default());
    let cpu_start = cpu_now(&cpu);
    let start = Instant::now();
    let threads: Vec<_> = fleet
        .into_iter()
        .enumerate()
        .map(|(i, (m, token))| {
            let (urls, tally) = (urls.clone(), tally.clone());
            let share = (i..jobs).step_by(machines).count();
            std::thread::spawn(move || run_agent(i, &m, &token, share, jobs, &urls, &tally))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let end = tally.last.get().copied().unwrap_or_else(Instant::now);
    let cpu_end = cpu_now(&cpu);
    let secs = end.duration_since(start).as_secs_f64();
    // CPU shares are over the whole timed part, join included.
    let wall = start.elapsed().as_secs_f64();
    let finished = tally.finished.lock().expect("finished").len();
    let mut line = format!(
        "servers={} machines={machines} jobs={jobs} handed_out={} again={} finished={finished} duplicates={} left={} seconds={secs:.1} jobs_per_s={:.1}",
        urls.len(),
        tally.handed.load(Ordering::Relaxed),
        tally.again.load(Ordering::Relaxed),
        tally.duplicates.load(Ordering::Relaxed),
        jobs - finished,
        finished as f64 / secs
    );
    if !cpu.is_empty() {
        line.push_str(" cores:");
        for ((label, a), (_, b)) in cpu_start.iter().zip(&cpu_end) {
            let cores = b.saturating_sub(*a) as f64 / 1e9 / wall;
            line.push_str(&format!(" {label}={cores:.2}"));
        }
        let of = std::thread::available_parallelism().map_or(0, |n| n.get());
        line.push_str(&format!(" (of {of})"));
    }
    println!("{line}");
}
