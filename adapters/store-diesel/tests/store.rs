//! What the conformance suites do not cover: URL dispatch, reopening and
//! migrations, heavier races, error messages, corrupted rows.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use baas_core::conformance::{add_image, add_machine, add_user, fresh_uuid, job};
use baas_core::content::{ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::*;
use baas_core::ports::{BootQueue, JobFilter, MetadataStore};
use baas_core::ErrorKind;
use baas_store_diesel::{open, DieselMetadataStore};
use diesel::{Connection, RunQueryDsl, SqliteConnection};

/// Runs each listed `fn(&DieselMetadataStore)` on a fresh SQLite file and
/// on a fresh PostgreSQL database.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let (store, _dir) = crate::support::sqlite();
                    crate::$name(&store);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some((store, _db)) = crate::support::postgres() else { return };
                    crate::$name(&store);
                }
            )*
        }
    };
}

on_both_backends!(
    commits_under_contention_number_consecutively,
    racing_take_next_fills_one_slot_with_the_oldest_job,
    concurrent_enqueues_get_distinct_increasing_seq,
    conflicts_name_what_clashed,
    deleting_a_user_whose_images_others_need_is_a_conflict,
    deleted_setups_leave_their_jobs_alone,
    enqueue_racing_deletes_never_leaves_a_job_without_its_version,
);

fn manifest_of(byte: u8) -> Manifest {
    Manifest::new(
        u64::from(CHUNK_SIZE),
        CHUNK_SIZE,
        vec![Some(ChunkHash([byte; 32]))],
    )
    .expect("manifest")
}

fn upload(image: &Image, byte: u8) -> NewVersion {
    NewVersion {
        image: image.id,
        manifest: manifest_of(byte),
        added_bytes: 1,
        created_by: image.owner,
        created_at: Timestamp(10),
        source: VersionSource::Upload,
        note: None,
    }
}

fn event(kind: &str) -> JobEvent {
    JobEvent {
        at: Timestamp(50),
        kind: kind.into(),
        message: kind.into(),
    }
}

fn entry(image: &Image) -> JobEntry {
    JobEntry {
        image: image.id,
        version: 0,
        disk: DiskSelector::first(),
        capture: false,
    }
}

// --- on both backends

/// 8 threads x 10 commits: numbers 1..=80, each once.
fn commits_under_contention_number_consecutively(store: &DieselMetadataStore) {
    let owner = add_user(store, Role::User);
    let image = add_image(store, owner.id, 4096);
    let barrier = Barrier::new(8);
    let mut numbers: Vec<u32> = thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|t| {
                let (image, barrier) = (&image, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..10u8)
                        .map(|i| {
                            store
                                .commit_version(&upload(image, t * 10 + i + 1))
                                .expect("commit")
                                .number
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=80).collect::<Vec<_>>());
    let listed: Vec<u32> = store
        .versions(image.id)
        .expect("list")
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(listed, (0..=80).collect::<Vec<_>>());
    // The manifest stored under each number is the one committed with it.
    let roots: HashSet<ChunkHash> = store
        .versions(image.id)
        .expect("list")
        .iter()
        .map(|v| v.root)
        .collect();
    assert_eq!(roots.len(), 81);
}

/// Eight callers race for one machine's slot at once: exactly one gets a
/// job, and it is the oldest; again after each finishes.
fn racing_take_next_fills_one_slot_with_the_oldest_job(store: &DieselMetadataStore) {
    let owner = add_user(store, Role::User);
    let image = add_image(store, owner.id, 4096);
    let machine = add_machine(store);
    let queued: Vec<Job> = (0..3)
        .map(|i| {
            store
                .enqueue(&job(machine.id, owner.id, vec![entry(&image)], i))
                .expect("enqueue")
        })
        .collect();
    for want in &queued {
        let barrier = Barrier::new(8);
        let got: Vec<Job> = thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        store.take_next(machine.id, Timestamp(40)).expect("take")
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(got.len(), 1, "exactly one caller gets the slot: {got:?}");
        assert_eq!(got[0].id, want.id, "FIFO");
        assert_eq!(got[0].state, JobState::Provisioning);
        assert_eq!(got[0].started_at, Some(Timestamp(40)));
        let events: Vec<String> = store
            .events(want.id)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(events, vec!["queued", "provisioning"]);
        store
            .transition(
                want.id,
                &[JobState::Provisioning],
                JobState::Failed,
                Some("x".into()),
                &event("failed"),
            )
            .expect("fail");
    }
    assert_eq!(
        store.take_next(machine.id, Timestamp(41)).expect("take"),
        None
    );
}

/// Enqueues from 8 threads: every `seq` distinct, increasing per thread,
/// and the machine's queue lists them in `seq` order.
fn concurrent_enqueues_get_distinct_increasing_seq(store: &DieselMetadataStore) {
    let owner = add_user(store, Role::User);
    let image = add_image(store, owner.id, 4096);
    let machine = add_machine(store);
    let per_thread: Vec<Vec<i64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (owner, image) = (&owner, &image);
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            store
                                .enqueue(&job(machine.id, owner.id, vec![entry(image)], i))
                                .expect("enqueue")
                                .seq
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for seqs in &per_thread {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    let all: HashSet<i64> = per_thread.iter().flatten().copied().collect();
    assert_eq!(all.len(), 80);
    let listed: Vec<i64> = store
        .jobs(&JobFilter {
            machine: Some(machine.id),
            ..JobFilter::default()
        })
        .expect("list")
        .iter()
        .map(|j| j.seq)
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(listed, sorted);
    assert_eq!(listed.len(), 80);
}

/// Unique violations come back as `Conflict` naming the clash.
fn conflicts_name_what_clashed(store: &DieselMetadataStore) {
    let bob = add_user(store, Role::User);
    let twin = User {
        id: UserId(fresh_uuid()),
        ..bob.clone()
    };
    let err = store.insert_user(&twin).expect_err("same name");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.message(),
        format!("a user named {:?} already exists", bob.name)
    );
    let same_id = User {
        name: format!("other-{}", baas_core::conformance::suffix()),
        ..bob.clone()
    };
    let err = store.insert_user(&same_id).expect_err("same id");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains(&bob.id.to_string()),
        "{}",
        err.message()
    );

    let m = add_machine(store);
    let same_mac = Machine {
        id: MachineId(fresh_uuid()),
        name: format!("other-{}", baas_core::conformance::suffix()),
        ..m.clone()
    };
    let err = store.insert_machine(&same_mac).expect_err("same MAC");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.message(),
        format!("a machine with MAC {} already exists", m.mac)
    );
    let same_name = Machine {
        id: MachineId(fresh_uuid()),
        mac: MacAddress([0x52, 0x54, 0, 0, 0, 0x99]),
        ..m.clone()
    };
    let err = store.insert_machine(&same_name).expect_err("same name");
    assert_eq!(
        err.message(),
        format!("a machine named {:?} already exists", m.name)
    );

    let token = Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::User(bob.id),
        name: "t".into(),
        secret_hash: [7; 32],
        created_at: Timestamp(1),
        expires_at: None,
        revoked_at: None,
    };
    store.insert_token(&token).expect("token");
    let err = store
        .insert_token(&Token {
            id: TokenId(fresh_uuid()),
            ..token.clone()
        })
        .expect_err("same secret");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let ghost = Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::User(UserId(fresh_uuid())),
        secret_hash: [8; 32],
        ..token
    };
    assert_eq!(
        store.insert_token(&ghost).expect_err("no such user").kind(),
        ErrorKind::NotFound
    );
}

/// Deleting a user would delete their images; not while another user's
/// queued job needs one of them.
fn deleting_a_user_whose_images_others_need_is_a_conflict(store: &DieselMetadataStore) {
    let publisher = add_user(store, Role::Moderator);
    let consumer = add_user(store, Role::User);
    let mut image = add_image(store, publisher.id, 4096);
    image.visibility = Visibility::Public;
    store.update_image(&image).expect("publish");
    let machine = add_machine(store);
    let j = store
        .enqueue(&job(machine.id, consumer.id, vec![entry(&image)], 1))
        .expect("enqueue");
    let err = store
        .delete_user(publisher.id)
        .expect_err("image is needed");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains(&j.id.to_string()),
        "{}",
        err.message()
    );
    store
        .transition(
            j.id,
            &[JobState::Queued],
            JobState::Cancelled,
            None,
            &event("cancelled"),
        )
        .expect("cancel");
    store.delete_user(publisher.id).expect("delete");
    assert_eq!(store.image(image.id).expect("get"), None);
    // The consumer's finished job still says what it would have written.
    assert_eq!(
        store.job(j.id).expect("get").map(|j| j.entries),
        Some(vec![entry(&image)])
    );
}

/// A job keeps the id of the setup it came from after the setup is gone.
fn deleted_setups_leave_their_jobs_alone(store: &DieselMetadataStore) {
    let owner = add_user(store, Role::User);
    let image = add_image(store, owner.id, 4096);
    let machine = add_machine(store);
    let setup = Setup {
        id: SetupId(fresh_uuid()),
        owner: owner.id,
        name: "s".into(),
        entries: vec![SetupEntry {
            image: image.id,
            version: VersionRef::Number(0),
            disk: None,
            capture: false,
        }],
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store.insert_setup(&setup).expect("setup");
    let queued = store
        .enqueue(&Job {
            setup: Some(setup.id),
            ..job(machine.id, owner.id, vec![entry(&image)], 1)
        })
        .expect("enqueue");
    store.delete_setup(setup.id).expect("delete");
    assert_eq!(store.job(queued.id).expect("get"), Some(queued));
}

/// An enqueue racing the deletion of the version it names, or of the user
/// who owns both: one of the two wins cleanly, never both, never an
/// internal error (a PostgreSQL deadlock would surface as one).
fn enqueue_racing_deletes_never_leaves_a_job_without_its_version(store: &DieselMetadataStore) {
    let machine = add_machine(store);
    for round in 0..10 {
        let owner = add_user(store, Role::User);
        let image = add_image(store, owner.id, 4096);
        let v = store.commit_version(&upload(&image, 1)).expect("commit");
        let pinned = JobEntry {
            version: v.number,
            ..entry(&image)
        };
        let barrier = Barrier::new(2);
        let (queued, deleted) = thread::scope(|s| {
            let q = s.spawn(|| {
                barrier.wait();
                store.enqueue(&job(machine.id, owner.id, vec![pinned.clone()], round))
            });
            let d = s.spawn(|| {
                barrier.wait();
                if round % 2 == 0 {
                    store.delete_version(image.id, v.number)
                } else {
                    store.delete_user(owner.id)
                }
            });
            (q.join().expect("thread"), d.join().expect("thread"))
        });
        match (&queued, &deleted) {
            (Ok(j), Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Conflict, "{e:?}");
                store
                    .transition(
                        j.id,
                        &[JobState::Queued],
                        JobState::Cancelled,
                        None,
                        &event("cancelled"),
                    )
                    .expect("cancel");
            }
            (Err(e), Ok(())) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}"),
            other => panic!("round {round}: both or neither won: {other:?}"),
        }
    }
}

// --- URL dispatch, reopening, migrations

#[test]
fn urls_that_name_no_database_are_invalid_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("baas.db");
    let path = file.display().to_string();
    for (url, says) in [
        (path.clone(), "sqlite://"),
        (format!("sqlte://{path}"), "unknown scheme"),
        (format!("sqlite:{path}"), "sqlite://PATH"),
        ("mysql://root@localhost/baas".to_string(), "not supported"),
        (String::new(), "must not be empty"),
        ("sqlite://".to_string(), "needs a file path"),
        ("sqlite://:memory:".to_string(), "in-memory"),
        (
            format!("sqlite://{}", dir.path().join("missing/baas.db").display()),
            "does not exist",
        ),
    ] {
        let err = open(&url, 2).expect_err(&url);
        assert_eq!(err.kind(), ErrorKind::Invalid, "{url}: {err:?}");
        assert_eq!(err.field(), Some("database_url"), "{url}");
        assert!(err.message().contains(says), "{url}: {}", err.message());
    }
    let err = open(&format!("sqlite://{path}"), 0).expect_err("empty pool");
    assert_eq!(err.field(), Some("pool_size"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "nothing may be created: {left:?}");
}

#[test]
fn an_unreachable_postgres_is_unavailable() {
    // Port 1 on loopback: connection refused, every time.
    let err = open("postgres://postgres:secret@127.0.0.1:1/baas", 2).expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.retryable());
    assert!(!err.detailed().contains("secret"), "{}", err.detailed());
}

/// Count of applied migrations in a SQLite file, read behind the store's
/// back.
fn sqlite_migrations(path: &std::path::Path) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c =
        SqliteConnection::establish(&path.display().to_string()).expect("direct connection");
    diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .get_result::<Count>(&mut c)
        .expect("count")
        .n
}

#[test]
fn a_sqlite_file_survives_reopening_and_migrates_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("baas.db");
    let url = format!("sqlite://{}", file.display());
    let user = {
        let store = open(&url, 2).expect("create");
        assert_eq!(store.backend(), "sqlite");
        add_user(&store, Role::Admin)
    };
    assert!(file.is_file());
    let applied = sqlite_migrations(&file);
    assert!(applied >= 1);
    // Several openers at once, as when two servers start together.
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| open(&url, 2).expect("reopen"));
        }
    });
    let store = open(&url, 2).expect("reopen");
    assert_eq!(store.user(user.id).expect("get"), Some(user));
    assert_eq!(sqlite_migrations(&file), applied, "no migration ran twice");

    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let mut c =
        SqliteConnection::establish(&file.display().to_string()).expect("direct connection");
    let mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result::<Mode>(&mut c)
        .expect("pragma");
    assert_eq!(mode.journal_mode, "wal");
}

#[test]
fn a_postgres_database_survives_reopening_and_migrates_once() {
    let Some(db) = support::postgres_database() else {
        return;
    };
    let stores: Vec<DieselMetadataStore> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| open(&db.url, 2).expect("open")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(stores.iter().all(|s| s.backend() == "postgres"));
    let user = add_user(&stores[0], Role::Admin);
    drop(stores);
    let store = open(&db.url, 2).expect("reopen");
    assert_eq!(store.user(user.id).expect("get"), Some(user));
}

#[test]
fn corrupted_rows_are_internal_errors() {
    let (store, dir) = support::sqlite();
    let store = Arc::new(store);
    let user = add_user(&*store, Role::User);
    let mut c = SqliteConnection::establish(&dir.path().join("baas.db").display().to_string())
        .expect("direct");
    diesel::sql_query("UPDATE users SET role = 'emperor'")
        .execute(&mut c)
        .expect("corrupt the row");
    let err = store.user(user.id).expect_err("corrupted");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.message().contains("users"), "{}", err.message());
    let image = add_image(&*store, user.id, 4096);
    diesel::sql_query("UPDATE versions SET manifest = x'00'")
        .execute(&mut c)
        .expect("corrupt the manifest");
    assert_eq!(
        store.manifest(image.id, 0).expect_err("corrupted").kind(),
        ErrorKind::Internal
    );
    assert_eq!(
        store.referenced_chunks().expect_err("corrupted").kind(),
        ErrorKind::Internal
    );
}
