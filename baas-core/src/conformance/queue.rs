//! The boot queue contract (see [`crate::ports::BootQueue`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::ports::JobFilter;
use crate::ErrorKind;

struct World {
    owner: User,
    entry: JobEntry,
}

fn world(s: &Subject) -> World {
    let owner = add_user(&*s.meta, Role::User);
    let image = add_image(&*s.meta, owner.id, 4096);
    World {
        entry: JobEntry {
            image: image.id,
            version: 0,
            disk: "/dev/vda".parse().expect("selector"),
            capture: true,
        },
        owner,
    }
}

fn ev(kind: &str, at: i64) -> JobEvent {
    JobEvent {
        at: Timestamp(at),
        kind: kind.into(),
        message: format!("{kind} at {at}"),
    }
}

fn finish(q: &dyn BootQueue, id: JobId) {
    q.transition(
        id,
        &[JobState::Provisioning],
        JobState::Running,
        None,
        &ev("running", 10),
    )
    .expect("run");
    q.transition(
        id,
        &[JobState::Running],
        JobState::Succeeded,
        None,
        &ev("succeeded", 11),
    )
    .expect("succeed");
}

/// `enqueue` assigns increasing `seq` and records a `queued` event.
pub fn enqueue_assigns_increasing_seq(s: &Subject) {
    let w = world(s);
    let m = add_machine(&*s.meta);
    let a = s
        .queue
        .enqueue(&job(m.id, w.owner.id, vec![w.entry.clone()], 1))
        .expect("enqueue");
    let b = s
        .queue
        .enqueue(&job(
            m.id,
            w.owner.id,
            vec![w.entry.clone(), w.entry.clone()],
            2,
        ))
        .expect("enqueue");
    assert!(b.seq > a.seq);
    let got = s.queue.job(b.id).expect("get").expect("present");
    assert_eq!(got, b);
    assert_eq!(got.entries.len(), 2);
    assert_eq!(got.entries[0], w.entry);
    let events = s.queue.events(a.id).expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "queued");
    assert_eq!(s.queue.job(JobId(fresh_uuid())).expect("get"), None);
    let ghost = job(
        MachineId(fresh_uuid()),
        w.owner.id,
        vec![w.entry.clone()],
        3,
    );
    assert!(s.queue.enqueue(&ghost).is_err(), "the machine must exist");
}

/// FIFO per machine, one active job at a time, machines independent.
pub fn take_next_is_fifo_and_one_at_a_time(s: &Subject) {
    let w = world(s);
    let (m1, m2) = (add_machine(&*s.meta), add_machine(&*s.meta));
    let q = &*s.queue;
    assert_eq!(q.take_next(m1.id, Timestamp(1)).expect("empty"), None);
    let a = q
        .enqueue(&job(m1.id, w.owner.id, vec![w.entry.clone()], 1))
        .expect("enqueue");
    let b = q
        .enqueue(&job(m1.id, w.owner.id, vec![w.entry.clone()], 2))
        .expect("enqueue");
    let c = q
        .enqueue(&job(m2.id, w.owner.id, vec![w.entry.clone()], 3))
        .expect("enqueue");
    let got = q
        .take_next(m1.id, Timestamp(5))
        .expect("take")
        .expect("a job");
    assert_eq!(got.id, a.id);
    assert_eq!(got.state, JobState::Provisioning);
    assert_eq!(got.started_at, Some(Timestamp(5)));
    assert_eq!(
        q.active_job(m1.id).expect("active").map(|j| j.id),
        Some(a.id)
    );
    assert_eq!(
        q.take_next(m1.id, Timestamp(6)).expect("take"),
        None,
        "one active job per machine"
    );
    assert_eq!(
        q.take_next(m2.id, Timestamp(6))
            .expect("take")
            .map(|j| j.id),
        Some(c.id)
    );
    finish(q, a.id);
    assert_eq!(q.active_job(m1.id).expect("active"), None);
    assert_eq!(
        q.take_next(m1.id, Timestamp(7))
            .expect("take")
            .map(|j| j.id),
        Some(b.id)
    );
}

/// Eight threads racing on `take_next` hand every job out exactly once.
pub fn take_next_hands_out_each_job_once_under_concurrency(s: &Subject) {
    let w = world(s);
    let machines: Vec<Machine> = (0..2).map(|_| add_machine(&*s.meta)).collect();
    let mut all = HashSet::new();
    for i in 0..24 {
        let m = &machines[i % 2];
        all.insert(
            s.queue
                .enqueue(&job(m.id, w.owner.id, vec![w.entry.clone()], i as i64))
                .expect("enqueue")
                .id,
        );
    }
    let taken = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (queue, taken, m) = (s.queue.clone(), taken.clone(), machines[t % 2].id);
            std::thread::spawn(move || {
                let mut idle = 0;
                while idle < 50 {
                    match queue.take_next(m, Timestamp(100)).expect("take") {
                        Some(j) => {
                            idle = 0;
                            taken.lock().expect("lock").push(j.id);
                            // Whoever took it finishes it; a second taker of
                            // the same job would fail this compare-and-set.
                            finish(&*queue, j.id);
                        }
                        None => {
                            idle += 1;
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let taken = taken.lock().expect("lock").clone();
    let unique: HashSet<JobId> = taken.iter().copied().collect();
    assert_eq!(taken.len(), unique.len(), "a job was handed out twice");
    assert_eq!(unique, all, "every job was handed out");
}

/// `transition` only moves from the given states, and records the event.
pub fn transition_is_compare_and_set(s: &Subject) {
    let w = world(s);
    let m = add_machine(&*s.meta);
    let q = &*s.queue;
    let a = q
        .enqueue(&job(m.id, w.owner.id, vec![w.entry.clone()], 1))
        .expect("enqueue");
    let err = q
        .transition(
            a.id,
            &[JobState::Running],
            JobState::Succeeded,
            None,
            &ev("succeeded", 2),
        )
        .expect_err("not running");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let failed = q
        .transition(
            a.id,
            &[JobState::Queued, JobState::Running],
            JobState::Failed,
            Some("flash: disk too small".into()),
            &ev("failed", 3),
        )
        .expect("fail");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("flash: disk too small"));
    assert_eq!(failed.finished_at, Some(Timestamp(3)));
    assert_eq!(q.job(a.id).expect("get"), Some(failed));
    let kinds: Vec<String> = q
        .events(a.id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["queued", "failed"]);
    let missing = q.transition(
        JobId(fresh_uuid()),
        &[JobState::Queued],
        JobState::Cancelled,
        None,
        &ev("x", 4),
    );
    assert_eq!(missing.expect_err("missing").kind(), ErrorKind::NotFound);
}

/// Progress, events and listing filters.
pub fn progress_events_and_filters(s: &Subject) {
    let w = world(s);
    let other = add_user(&*s.meta, Role::User);
    let (m1, m2) = (add_machine(&*s.meta), add_machine(&*s.meta));
    let q = &*s.queue;
    let a = q
        .enqueue(&job(m1.id, w.owner.id, vec![w.entry.clone()], 1))
        .expect("enqueue");
    let b = q
        .enqueue(&job(m1.id, other.id, vec![w.entry.clone()], 2))
        .expect("enqueue");
    let c = q
        .enqueue(&job(m2.id, w.owner.id, vec![w.entry.clone()], 3))
        .expect("enqueue");
    q.take_next(m1.id, Timestamp(4)).expect("take");
    let p = Progress {
        phase: "flash".into(),
        bytes_done: 10,
        bytes_total: 100,
        rate: 5,
    };
    q.set_progress(a.id, &p).expect("progress");
    assert_eq!(q.job(a.id).expect("get").map(|j| j.progress), Some(p));
    q.append_event(a.id, &ev("log", 5)).expect("log");
    assert_eq!(
        q.events(a.id)
            .expect("events")
            .last()
            .map(|e| e.message.clone()),
        Some("log at 5".into())
    );
    assert!(q.append_event(JobId(fresh_uuid()), &ev("log", 6)).is_err());
    let ids = |f: JobFilter| -> Vec<JobId> {
        q.jobs(&f)
            .expect("list")
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(
        ids(JobFilter {
            machine: Some(m1.id),
            ..Default::default()
        }),
        vec![a.id, b.id]
    );
    assert_eq!(
        ids(JobFilter {
            owner: Some(w.owner.id),
            ..Default::default()
        }),
        vec![a.id, c.id]
    );
    assert_eq!(
        ids(JobFilter {
            machine: Some(m1.id),
            states: vec![JobState::Queued],
            ..Default::default()
        }),
        vec![b.id]
    );
    assert_eq!(
        ids(JobFilter {
            owner: Some(w.owner.id),
            limit: Some(1),
            ..Default::default()
        }),
        vec![c.id]
    );
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(usize),
    Take(usize),
    Finish(usize),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::Enqueue),
        (0..3usize).prop_map(Op::Take),
        (0..3usize).prop_map(Op::Finish),
        (0..16usize).prop_map(Op::Cancel),
    ]
}

/// Model-based: random sequences of enqueue, take, finish and cancel on
/// three machines behave like a simple per-machine FIFO with one active
/// slot.
pub fn queue_matches_model(s: &Subject) {
    let w = world(s);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let machines: Vec<MachineId> = (0..3).map(|_| add_machine(&*s.meta).id).collect();
            // Model: per machine, a FIFO of queued ids and an active slot.
            let mut queued: Vec<Vec<JobId>> = vec![vec![]; 3];
            let mut active: Vec<Option<JobId>> = vec![None; 3];
            let mut all: Vec<JobId> = vec![];
            for op in ops {
                match op {
                    Op::Enqueue(m) => {
                        let j = s
                            .queue
                            .enqueue(&job(machines[m], w.owner.id, vec![w.entry.clone()], 1))
                            .expect("enqueue");
                        queued[m].push(j.id);
                        all.push(j.id);
                    }
                    Op::Take(m) => {
                        let got = s
                            .queue
                            .take_next(machines[m], Timestamp(2))
                            .expect("take")
                            .map(|j| j.id);
                        let want = if active[m].is_some() || queued[m].is_empty() {
                            None
                        } else {
                            Some(queued[m].remove(0))
                        };
                        prop_assert_eq!(got, want);
                        if want.is_some() {
                            active[m] = want;
                        }
                    }
                    Op::Finish(m) => {
                        if let Some(id) = active[m].take() {
                            finish(&*s.queue, id);
                        }
                    }
                    Op::Cancel(k) => {
                        let Some(&id) = all.get(k) else { continue };
                        let state = s.queue.job(id).expect("get").expect("present").state;
                        let r = s.queue.transition(
                            id,
                            &[JobState::Queued],
                            JobState::Cancelled,
                            None,
                            &ev("cancelled", 3),
                        );
                        let was_queued = queued.iter().any(|q| q.contains(&id));
                        prop_assert_eq!(r.is_ok(), was_queued, "state was {}", state);
                        for q in queued.iter_mut() {
                            q.retain(|j| *j != id);
                        }
                    }
                }
                for (m, id) in machines.iter().enumerate() {
                    let got = s.queue.active_job(*id).expect("active").map(|j| j.id);
                    prop_assert_eq!(got, active[m]);
                }
            }
            Ok(())
        })
        .expect("the queue matches its model");
}

/// `set_session` replaces a job's session and nothing else; a job's session
/// is stored with it from `enqueue`; a machine's power and neutral settings
/// round-trip through `update_machine`.
pub fn sessions_and_machine_boot_round_trip(s: &Subject) {
    let w = world(s);
    let m = add_machine(&*s.meta);
    let q = &*s.queue;
    let mut j = job(m.id, w.owner.id, vec![w.entry.clone()], 1);
    j.session.hold_ms = Some(90_000);
    let j = q.enqueue(&j).expect("enqueue");
    assert_eq!(
        q.job(j.id).expect("job").expect("some").session.hold_ms,
        Some(90_000)
    );
    let session = Session {
        hold_ms: Some(90_000),
        ends_at: Some(Timestamp(5_000)),
        cycled_at: Some(Timestamp(4_000)),
        not_before: Some(Timestamp(3_000)),
    };
    q.set_session(j.id, &session).expect("set");
    let back = q.job(j.id).expect("job").expect("some");
    assert_eq!(back.session, session);
    assert_eq!(back.state, JobState::Queued);
    q.set_session(j.id, &Session::default()).expect("clear");
    assert_eq!(
        q.job(j.id).expect("job").expect("some").session,
        Session::default()
    );
    let missing = JobId(fresh_uuid());
    assert_eq!(
        q.set_session(missing, &session)
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );

    for boot in [
        MachineBoot {
            power: PowerConfig::Qmp {
                address: "unix:/run/vm7.qmp".into(),
            },
            neutral: NeutralState::Wipe,
        },
        MachineBoot {
            power: PowerConfig::Ipmi {
                host: "bmc7".into(),
                username: "root".into(),
                password: "p w".into(),
            },
            neutral: NeutralState::Setup(SetupId(fresh_uuid())),
        },
        MachineBoot::default(),
    ] {
        let mut changed = m.clone();
        changed.boot = boot.clone();
        s.meta.update_machine(&changed).expect("update");
        let back = s.meta.machine(m.id).expect("machine").expect("some");
        assert_eq!(back.boot, boot);
    }
}

/// A waiting placement (not yet stored) asking for any machine.
fn placement(owner: UserId, entries: Vec<JobEntry>, at: i64) -> Placement {
    Placement {
        id: JobId(fresh_uuid()),
        seq: 0,
        owner,
        fit: Fit {
            arch: Some(Arch::X86_64),
            min_disk_bytes: 64 << 30,
            pool: Some("gpu".into()),
        },
        setup: None,
        entries,
        session: Session {
            hold_ms: Some(60_000),
            not_before: Some(Timestamp(at + 5)),
            ..Session::default()
        },
        state: PlacementState::Waiting,
        machine: None,
        error: None,
        created_at: Timestamp(at),
        finished_at: None,
    }
}

/// The job a placement becomes on `machine`.
fn bound_job(p: &Placement, machine: MachineId, at: i64) -> Job {
    Job {
        id: p.id,
        session: p.session,
        ..job(machine, p.owner, p.entries.clone(), at)
    }
}

/// Placements round-trip; `bind_placement` binds a waiting placement only
/// to an accepted, idle machine, and a cancelled or bound one never again.
pub fn placements_bind_only_waiting_to_idle_machines(s: &Subject) {
    let w = world(s);
    let q = &*s.queue;
    let p1 = q
        .insert_placement(&placement(w.owner.id, vec![w.entry.clone()], 100))
        .expect("insert");
    let p2 = q
        .insert_placement(&placement(w.owner.id, vec![w.entry.clone()], 101))
        .expect("insert");
    assert!(p2.seq > p1.seq, "seq increases");
    let read = q.placement(p1.id).expect("read").expect("stored");
    assert_eq!(read, p1, "round trip");
    assert_eq!(q.placement(JobId(fresh_uuid())).expect("read"), None);
    let waiting: Vec<JobId> = q
        .placements(&[PlacementState::Waiting])
        .expect("list")
        .iter()
        .map(|p| p.id)
        .collect();
    let i1 = waiting
        .iter()
        .position(|id| *id == p1.id)
        .expect("p1 waits");
    let i2 = waiting
        .iter()
        .position(|id| *id == p2.id)
        .expect("p2 waits");
    assert!(i1 < i2, "oldest first");
    assert_eq!(
        q.insert_placement(&p1).expect_err("same id").kind(),
        ErrorKind::Conflict
    );

    let m = add_machine(&*s.meta);
    let job = q.bind_placement(&bound_job(&p1, m.id, 200)).expect("bind");
    assert_eq!(
        (job.id, job.machine, job.state),
        (p1.id, m.id, JobState::Queued)
    );
    assert_eq!(job.session, p1.session);
    assert_eq!(q.job(p1.id).expect("read"), Some(job.clone()));
    let now = q.placement(p1.id).expect("read").expect("stored");
    assert_eq!(now.state, PlacementState::Bound);
    assert_eq!(now.machine, Some(m.id));
    assert_eq!(now.finished_at, Some(Timestamp(200)));
    assert!(!q
        .placements(&[PlacementState::Waiting])
        .expect("list")
        .iter()
        .any(|p| p.id == p1.id));

    // The machine is taken: p2 stays waiting.
    let e = q
        .bind_placement(&bound_job(&p2, m.id, 201))
        .expect_err("busy");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e:?}");
    assert_eq!(
        q.placement(p2.id).expect("read").expect("stored").state,
        PlacementState::Waiting
    );
    assert_eq!(q.job(p2.id).expect("read"), None, "nothing left behind");
    // Bound already: never again, not even elsewhere.
    let other = add_machine(&*s.meta);
    assert_eq!(
        q.bind_placement(&bound_job(&p1, other.id, 202))
            .expect_err("bound")
            .kind(),
        ErrorKind::Conflict
    );
    // A machine that is not accepted takes nothing.
    let mut pending = add_machine(&*s.meta);
    pending.state = MachineState::Pending;
    s.meta.update_machine(&pending).expect("update");
    assert_eq!(
        q.bind_placement(&bound_job(&p2, pending.id, 203))
            .expect_err("pending")
            .kind(),
        ErrorKind::Conflict
    );
    // Cancel: only while waiting.
    let c = q
        .cancel_placement(p2.id, "cancelled by alice", Timestamp(204))
        .expect("cancel");
    assert_eq!(c.state, PlacementState::Cancelled);
    assert_eq!(c.error.as_deref(), Some("cancelled by alice"));
    assert_eq!(c.finished_at, Some(Timestamp(204)));
    assert_eq!(
        q.bind_placement(&bound_job(&p2, other.id, 205))
            .expect_err("cancelled")
            .kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        q.cancel_placement(p1.id, "late", Timestamp(206))
            .expect_err("bound")
            .kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        q.cancel_placement(JobId(fresh_uuid()), "x", Timestamp(207))
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );
    // Once the machine's job ends, it is idle again.
    let p3 = q
        .insert_placement(&placement(w.owner.id, vec![w.entry.clone()], 300))
        .expect("insert");
    q.take_next(m.id, Timestamp(301))
        .expect("take")
        .expect("job");
    finish(q, p1.id);
    q.bind_placement(&bound_job(&p3, m.id, 302))
        .expect("idle again");
}

/// Threads racing to bind: many placements to one idle machine, and one
/// placement to many machines. Exactly one wins each race (as two servers
/// on one database would).
pub fn binding_is_atomic_under_concurrency(s: &Subject) {
    let w = world(s);
    let m = add_machine(&*s.meta);
    let ps: Vec<Placement> = (0..8)
        .map(|i| {
            s.queue
                .insert_placement(&placement(w.owner.id, vec![w.entry.clone()], i))
                .expect("insert")
        })
        .collect();
    let handles: Vec<_> = ps
        .iter()
        .map(|p| {
            let (queue, job) = (s.queue.clone(), bound_job(p, m.id, 50));
            std::thread::spawn(move || queue.bind_placement(&job).map_err(|e| e.kind()))
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(ErrorKind::Conflict)));
    let on_m = s
        .queue
        .jobs(&JobFilter {
            machine: Some(m.id),
            ..JobFilter::default()
        })
        .expect("jobs");
    assert_eq!(on_m.len(), 1, "one machine, one placement");

    let machines: Vec<Machine> = (0..6).map(|_| add_machine(&*s.meta)).collect();
    let p = s
        .queue
        .insert_placement(&placement(w.owner.id, vec![w.entry.clone()], 60))
        .expect("insert");
    let handles: Vec<_> = machines
        .iter()
        .map(|m| {
            let (queue, job) = (s.queue.clone(), bound_job(&p, m.id, 61));
            std::thread::spawn(move || queue.bind_placement(&job).map_err(|e| e.kind()))
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let jobs: usize = machines
        .iter()
        .map(|m| {
            s.queue
                .jobs(&JobFilter {
                    machine: Some(m.id),
                    ..JobFilter::default()
                })
                .expect("jobs")
                .len()
        })
        .sum();
    assert_eq!(jobs, 1, "one placement, one machine");
}
