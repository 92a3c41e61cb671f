//! Two servers on one database bind waiting placements at the same time
//! (issue 8 runs three servers on one PostgreSQL): each opens its own store
//! (its own connection pool) on the same SQLite file or PostgreSQL
//! database, and both run their binding passes concurrently. No machine
//! gets two placements, no placement two machines, and every machine gets
//! one.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use baas_core::model::*;
use baas_core::ports::JobFilter;
use baas_core::services::{Config, Fit, JobTarget, NewImage, NewMachine, NewUser, Placed, Ports};
use baas_core::{Actor, Baas};
use baas_memory::{MemoryChunkStore, OsEntropy, SystemClock};
use baas_store_diesel::DieselMetadataStore;

/// A server: the services on `store`, with in-memory chunks.
fn server(store: DieselMetadataStore) -> Baas {
    let store = Arc::new(store);
    let clock = Arc::new(SystemClock);
    Baas::new(
        Ports {
            meta: store.clone(),
            queue: store,
            chunks: Arc::new(MemoryChunkStore::new(clock.clone())),
            clock,
            entropy: Arc::new(OsEntropy),
        },
        Config::default(),
    )
}

fn two_servers_bind_each_machine_once(a: Baas, b: Baas) {
    const MACHINES: usize = 4;
    const PLACEMENTS: usize = 10;
    let admin = a
        .create_user(
            &Actor::System,
            NewUser {
                name: "root".into(),
                display_name: String::new(),
                email: String::new(),
                role: Role::Admin,
            },
        )
        .expect("admin");
    let admin = Actor::user(&admin);
    let image = a
        .create_image(
            &admin,
            NewImage {
                owner: None,
                name: "disk".into(),
                disk: DiskSelector::first(),
                size: 4096,
                metadata: Default::default(),
                visibility: Visibility::Private,
            },
        )
        .expect("image")
        .0;
    let fit = Fit {
        pool: Some("lab".into()),
        ..Fit::default()
    };
    // Everything waits: the pool has no machine yet.
    let mut waiting = Vec::new();
    for i in 0..PLACEMENTS {
        let server = if i % 2 == 0 { &a } else { &b };
        match server
            .place_job(
                &admin,
                &fit,
                JobTarget::Image {
                    image: image.id,
                    version: VersionRef::Number(0),
                    disk: None,
                    capture: false,
                },
                None,
                None,
            )
            .expect("placed")
        {
            Placed::Waiting { placement, .. } => waiting.push(placement.id),
            other => panic!("no machine is in the pool yet: {other:?}"),
        }
    }
    let machines: Vec<MachineId> = (0..MACHINES)
        .map(|i| {
            a.register_machine(
                &admin,
                NewMachine {
                    mac: MacAddress([0x52, 0x54, 0x00, 0x9a, 0x00, i as u8]),
                    name: Some(format!("lab-{i}")),
                    arch: Arch::X86_64,
                    pool: Some("lab".into()),
                },
            )
            .expect("machine")
            .id
        })
        .collect();
    // Both servers' passes, four threads each, released together.
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (server, barrier) = (
                if t % 2 == 0 { a.clone() } else { b.clone() },
                barrier.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                let mut bound = Vec::new();
                for _ in 0..3 {
                    bound.extend(server.bind_waiting(&Actor::System).expect("pass"));
                }
                bound
            })
        })
        .collect();
    let bound: Vec<Job> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let ids: HashSet<JobId> = bound.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), bound.len(), "a placement was bound twice");
    assert_eq!(bound.len(), MACHINES, "one placement per idle machine");
    let used: HashSet<MachineId> = bound.iter().map(|j| j.machine).collect();
    assert_eq!(used.len(), MACHINES, "a machine got two placements");
    for m in &machines {
        let jobs = b
            .list_jobs(
                &admin,
                JobFilter {
                    machine: Some(*m),
                    ..JobFilter::default()
                },
            )
            .expect("jobs");
        assert_eq!(jobs.len(), 1, "machine {m}: {jobs:?}");
    }
    // The oldest placements got the machines; the rest still wait.
    let first: HashSet<JobId> = waiting[..MACHINES].iter().copied().collect();
    assert_eq!(ids, first, "oldest first");
    let still = a.waiting_placements(&admin).expect("list");
    assert_eq!(still.len(), PLACEMENTS - MACHINES);
    assert!(still.iter().all(|p| p
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("all 4 fitting machines are busy"))));
}

#[test]
fn two_servers_on_one_sqlite_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("baas.db").display());
    let a = baas_store_diesel::open(&url, support::POOL).expect("server a");
    let b = baas_store_diesel::open(&url, support::POOL).expect("server b");
    two_servers_bind_each_machine_once(server(a), server(b));
}

#[test]
fn two_servers_on_one_postgres_database() {
    let Some(db) = support::postgres_database() else {
        return;
    };
    let a = baas_store_diesel::open(&db.url, support::POOL).expect("server a");
    let b = baas_store_diesel::open(&db.url, support::POOL).expect("server b");
    two_servers_bind_each_machine_once(server(a), server(b));
}
