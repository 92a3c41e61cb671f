//! The metadata store contract (see [`crate::ports::MetadataStore`]).

use std::sync::Arc;

use super::*;
use crate::content::{ChunkHash, Manifest, CHUNK_SIZE};
use crate::ports::{ImageFilter, UploadSession};
use crate::ErrorKind;

fn kind<T: std::fmt::Debug>(r: crate::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

fn manifest_with(hashes: &[u8]) -> Manifest {
    let chunks = hashes
        .iter()
        .map(|b| {
            if *b == 0 {
                None
            } else {
                Some(ChunkHash([*b; 32]))
            }
        })
        .collect::<Vec<_>>();
    Manifest::new(
        chunks.len() as u64 * u64::from(CHUNK_SIZE),
        CHUNK_SIZE,
        chunks,
    )
    .expect("manifest")
}

fn new_version(image: &Image, manifest: Manifest, added: u64) -> NewVersion {
    NewVersion {
        image: image.id,
        manifest,
        added_bytes: added,
        created_by: image.owner,
        created_at: Timestamp(5_000),
        source: VersionSource::Upload,
        note: Some("note ✓".into()),
    }
}

/// Users read back as written, by id and by name; updates replace them.
pub fn users_round_trip(s: &Subject) {
    let m = &*s.meta;
    let mut u = add_user(m, Role::Moderator);
    u.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    m.update_user(&u).expect("update");
    assert_eq!(m.user(u.id).expect("get"), Some(u.clone()));
    assert_eq!(m.user_by_name(&u.name).expect("by name"), Some(u.clone()));
    assert!(m.users().expect("list").contains(&u));
    u.role = Role::Admin;
    u.display_name = "Renamed Ünïcode".into();
    m.update_user(&u).expect("update");
    assert_eq!(m.user(u.id).expect("get"), Some(u.clone()));
    let names: Vec<String> = m
        .users()
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    assert_eq!(names, sorted_names, "users are listed by name");
}

/// Two users cannot share a login name.
pub fn user_names_are_unique(s: &Subject) {
    let m = &*s.meta;
    let a = add_user(m, Role::User);
    let mut b = a.clone();
    b.id = UserId(fresh_uuid());
    assert_eq!(kind(m.insert_user(&b)), ErrorKind::Conflict);
    let mut c = add_user(m, Role::User);
    c.name = a.name.clone();
    assert_eq!(kind(m.update_user(&c)), ErrorKind::Conflict);
}

/// Getters of missing rows are `None`; changes to missing rows `NotFound`.
pub fn missing_rows(s: &Subject) {
    let m = &*s.meta;
    let ghost = add_user(m, Role::User);
    let mut u = ghost.clone();
    u.id = UserId(fresh_uuid());
    u.name = format!("ghost-{}", suffix());
    assert_eq!(m.user(u.id).expect("get"), None);
    assert_eq!(m.user_by_name(&u.name).expect("get"), None);
    assert_eq!(kind(m.update_user(&u)), ErrorKind::NotFound);
    assert_eq!(kind(m.delete_user(u.id)), ErrorKind::NotFound);
    let img = ImageId(fresh_uuid());
    assert_eq!(m.image(img).expect("get"), None);
    assert_eq!(kind(m.delete_image(img)), ErrorKind::NotFound);
    assert_eq!(m.version(img, 0).expect("get"), None);
    assert_eq!(m.latest_version(img).expect("get"), None);
    assert_eq!(m.manifest(img, 0).expect("get"), None);
    assert_eq!(kind(m.delete_version(img, 0)), ErrorKind::NotFound);
    assert_eq!(m.setup(SetupId(fresh_uuid())).expect("get"), None);
    assert_eq!(
        kind(m.delete_setup(SetupId(fresh_uuid()))),
        ErrorKind::NotFound
    );
    assert_eq!(m.machine(MachineId(fresh_uuid())).expect("get"), None);
    assert_eq!(m.upload(UploadId(fresh_uuid())).expect("get"), None);
    assert_eq!(
        kind(m.revoke_token(TokenId(fresh_uuid()), Timestamp(1))),
        ErrorKind::NotFound
    );
    let real = add_image(m, ghost.id, 4096);
    assert_eq!(
        kind(m.commit_version(&new_version(
            &Image {
                id: ImageId(fresh_uuid()),
                ..real
            },
            manifest_with(&[1]),
            0
        ))),
        ErrorKind::NotFound
    );
}

/// Tokens are found by secret hash and revoked by id.
pub fn tokens_round_trip(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(fresh_uuid().as_bytes());
    let t = Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::User(u.id),
        name: "laptop".into(),
        secret_hash: hash,
        created_at: Timestamp(10),
        expires_at: Some(Timestamp(99_999)),
        revoked_at: None,
    };
    m.insert_token(&t).expect("insert");
    assert_eq!(m.token_by_hash(&hash).expect("by hash"), Some(t.clone()));
    assert_eq!(m.token(t.id).expect("by id"), Some(t.clone()));
    assert_eq!(m.tokens(u.id).expect("list"), vec![t.clone()]);
    m.revoke_token(t.id, Timestamp(50)).expect("revoke");
    assert_eq!(
        m.token(t.id).expect("get").and_then(|t| t.revoked_at),
        Some(Timestamp(50))
    );
    // A machine's agent token: not listed among the user's tokens.
    let machine = add_machine(m);
    let mut mhash = [0u8; 32];
    mhash[..16].copy_from_slice(fresh_uuid().as_bytes());
    let mt = Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::Machine(machine.id),
        name: "agent".into(),
        secret_hash: mhash,
        created_at: Timestamp(11),
        expires_at: Some(Timestamp(20)),
        revoked_at: None,
    };
    m.insert_token(&mt).expect("insert machine token");
    assert_eq!(m.token_by_hash(&mhash).expect("by hash"), Some(mt));
    assert_eq!(m.tokens(u.id).expect("list").len(), 1);
    let ghost = Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::Machine(MachineId(fresh_uuid())),
        secret_hash: [9; 32],
        ..t.clone()
    };
    assert_eq!(
        m.insert_token(&ghost).expect_err("unknown machine").kind(),
        ErrorKind::NotFound
    );
    let mut other = [0u8; 32];
    other[..16].copy_from_slice(fresh_uuid().as_bytes());
    assert_eq!(m.token_by_hash(&other).expect("miss"), None);
}

/// An image comes with its blank version 0, which stores nothing.
pub fn images_and_blank_version(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let friend = add_user(m, Role::User);
    let mut img = add_image(m, u.id, 3 * u64::from(CHUNK_SIZE) + 7);
    assert_eq!(m.image(img.id).expect("get"), Some(img.clone()));
    let v0 = m.version(img.id, 0).expect("get").expect("version 0");
    assert_eq!(v0.number, 0);
    assert_eq!(v0.size, img.size);
    assert_eq!(v0.root, Manifest::blank(img.size).root());
    assert_eq!(v0.data_chunks, 0);
    assert_eq!(v0.source, VersionSource::Blank);
    assert_eq!(
        m.manifest(img.id, 0).expect("get"),
        Some(Manifest::blank(img.size))
    );
    assert_eq!(m.latest_version(img.id).expect("latest"), Some(v0));
    img.name = "<script>alert(1)</script> ünïcode".into();
    img.disk = "serial:ABC#2".parse().expect("selector");
    img.visibility = Visibility::Shared;
    img.shared_with = vec![friend.id];
    img.metadata
        .insert("kernel".into(), "6.1 \"quoted\"".into());
    m.update_image(&img).expect("update");
    assert_eq!(m.image(img.id).expect("get"), Some(img.clone()));
    img.shared_with = vec![];
    m.update_image(&img).expect("update");
    assert_eq!(m.image(img.id).expect("get"), Some(img));
}

/// Listing by owner and by what a user may read.
pub fn image_listing_filters(s: &Subject) {
    let m = &*s.meta;
    let (a, b, c) = (
        add_user(m, Role::User),
        add_user(m, Role::User),
        add_user(m, Role::User),
    );
    let private = add_image(m, a.id, 4096);
    let mut shared = add_image(m, a.id, 4096);
    shared.visibility = Visibility::Shared;
    shared.shared_with = vec![b.id];
    m.update_image(&shared).expect("update");
    let mut public = add_image(m, a.id, 4096);
    public.visibility = Visibility::Public;
    m.update_image(&public).expect("update");
    let ids = |f: ImageFilter| -> Vec<ImageId> {
        m.images(&f)
            .expect("list")
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    let mine = ids(ImageFilter {
        owner: Some(a.id),
        readable_by: None,
    });
    assert_eq!(mine.len(), 3);
    for i in [private.id, shared.id, public.id] {
        assert!(mine.contains(&i));
    }
    let for_b = ids(ImageFilter {
        owner: Some(a.id),
        readable_by: Some(b.id),
    });
    assert_eq!(for_b.len(), 2);
    assert!(for_b.contains(&shared.id) && for_b.contains(&public.id));
    let for_c = ids(ImageFilter {
        owner: None,
        readable_by: Some(c.id),
    });
    assert!(
        for_c.contains(&public.id) && !for_c.contains(&shared.id) && !for_c.contains(&private.id)
    );
    assert!(ids(ImageFilter::default()).contains(&private.id));
}

/// Numbers are consecutive and never reused, even after deleting the
/// latest.
pub fn version_numbers_are_never_reused(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let img = add_image(m, u.id, 4096);
    let v1 = m
        .commit_version(&new_version(&img, manifest_with(&[1, 0, 2]), 10))
        .expect("commit");
    let v2 = m
        .commit_version(&new_version(&img, manifest_with(&[3]), 20))
        .expect("commit");
    assert_eq!((v1.number, v2.number), (1, 2));
    assert_eq!(v1.note.as_deref(), Some("note ✓"));
    assert_eq!(v1.data_chunks, 2);
    assert_eq!(m.version(img.id, 1).expect("get"), Some(v1.clone()));
    assert_eq!(
        m.manifest(img.id, 1).expect("get"),
        Some(manifest_with(&[1, 0, 2]))
    );
    m.delete_version(img.id, 2).expect("delete");
    assert_eq!(
        m.latest_version(img.id).expect("latest").map(|v| v.number),
        Some(1)
    );
    let v3 = m
        .commit_version(&new_version(&img, manifest_with(&[4]), 0))
        .expect("commit");
    assert_eq!(v3.number, 3, "a deleted number is never reused");
    let numbers: Vec<u32> = m
        .versions(img.id)
        .expect("list")
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, vec![0, 1, 3]);
    let src = NewVersion {
        source: VersionSource::Capture {
            job: JobId(fresh_uuid()),
        },
        note: None,
        ..new_version(&img, manifest_with(&[5]), 0)
    };
    let v4 = m.commit_version(&src).expect("commit");
    assert_eq!(
        m.version(img.id, v4.number).expect("get").map(|v| v.source),
        Some(src.source)
    );
}

/// Eight threads committing to one image get eight distinct consecutive
/// numbers.
pub fn concurrent_commits_get_distinct_consecutive_numbers(s: &Subject) {
    let u = add_user(&*s.meta, Role::User);
    let img = add_image(&*s.meta, u.id, 4096);
    let meta: Arc<dyn MetadataStore> = s.meta.clone();
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let (meta, img) = (meta.clone(), img.clone());
            std::thread::spawn(move || {
                meta.commit_version(&new_version(&img, manifest_with(&[i + 1]), 1))
                    .expect("commit")
                    .number
            })
        })
        .collect();
    let mut numbers: Vec<u32> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    for n in 1..=8 {
        let man = meta.manifest(img.id, n).expect("get").expect("present");
        assert_eq!(man.data_chunks(), 1);
    }
}

/// A version or image that a queued or active job needs cannot be deleted.
pub fn versions_in_use_cannot_be_deleted(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let img = add_image(m, u.id, 4096);
    let v = m
        .commit_version(&new_version(&img, manifest_with(&[7]), 0))
        .expect("commit");
    let machine = add_machine(m);
    let entry = JobEntry {
        image: img.id,
        version: v.number,
        disk: DiskSelector::first(),
        capture: false,
    };
    let j = s
        .queue
        .enqueue(&job(machine.id, u.id, vec![entry], 100))
        .expect("enqueue");
    assert_eq!(
        kind(m.delete_version(img.id, v.number)),
        ErrorKind::Conflict
    );
    assert_eq!(kind(m.delete_image(img.id)), ErrorKind::Conflict);
    m.delete_version(img.id, 0)
        .expect("version 0 is not needed");
    let ev = JobEvent {
        at: Timestamp(200),
        kind: "cancelled".into(),
        message: "test".into(),
    };
    s.queue
        .transition(j.id, &[JobState::Queued], JobState::Cancelled, None, &ev)
        .expect("cancel");
    m.delete_version(img.id, v.number)
        .expect("no longer needed");
    m.delete_image(img.id).expect("delete image");
}

/// Deleting one image removes it, its versions and setup entries that use
/// it, and nothing else.
pub fn deleting_an_image_touches_nothing_else(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let a = add_image(m, u.id, 4096);
    let b = add_image(m, u.id, 4096);
    m.commit_version(&new_version(&b, manifest_with(&[9]), 0))
        .expect("commit");
    let setup = Setup {
        id: SetupId(fresh_uuid()),
        owner: u.id,
        name: "both".into(),
        entries: vec![
            SetupEntry {
                image: a.id,
                version: VersionRef::Latest,
                disk: None,
                capture: false,
            },
            SetupEntry {
                image: b.id,
                version: VersionRef::Number(1),
                disk: Some("index:1".parse().expect("sel")),
                capture: true,
            },
        ],
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    m.insert_setup(&setup).expect("setup");
    m.delete_image(a.id).expect("delete");
    assert_eq!(m.image(a.id).expect("get"), None);
    assert_eq!(m.versions(a.id).expect("list"), vec![]);
    assert!(m.image(b.id).expect("get").is_some());
    assert_eq!(m.versions(b.id).expect("list").len(), 2);
    let left = m.setup(setup.id).expect("get").expect("setup stays");
    assert_eq!(left.entries, vec![setup.entries[1].clone()]);
}

/// GC's mark set and the quota sum.
pub fn referenced_chunks_and_quota_bytes(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let img = add_image(m, u.id, 4096);
    let mark = fresh_uuid().as_bytes()[0] | 1;
    let h = ChunkHash([mark; 32]);
    let v = m
        .commit_version(&new_version(&img, manifest_with(&[mark, 0, mark]), 1000))
        .expect("commit");
    m.commit_version(&new_version(&img, manifest_with(&[0]), 24))
        .expect("commit");
    assert!(m.referenced_chunks().expect("mark").contains(&h));
    assert_eq!(m.bytes_added_by_owner(u.id).expect("sum"), 1024);
    m.delete_version(img.id, v.number).expect("delete");
    let still = m.referenced_chunks().expect("mark").contains(&h);
    // Another test may have committed the same synthetic hash in a shared
    // database; only assert absence when this image was its only user.
    if still {
        assert!(m.images(&ImageFilter::default()).expect("list").len() > 1);
    }
    assert_eq!(m.bytes_added_by_owner(u.id).expect("sum"), 24);
}

/// Upload sessions: liveness, touch, cleanup.
pub fn upload_sessions(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let img = add_image(m, u.id, 4096);
    let base = 1_000_000_000_000i64 + i64::from(fresh_uuid().as_bytes()[0]) * 1000;
    let mk = |start: i64, manifest: Option<Manifest>| UploadSession {
        id: UploadId(fresh_uuid()),
        image: img.id,
        created_by: u.id,
        manifest,
        source: VersionSource::Upload,
        started_at: Timestamp(start),
        last_active: Timestamp(start),
        added_bytes: 0,
    };
    let old = mk(base, None);
    let new = mk(base + 500, Some(manifest_with(&[1, 0])));
    m.insert_upload(&old).expect("insert");
    m.insert_upload(&new).expect("insert");
    assert_eq!(m.upload(new.id).expect("get"), Some(new.clone()));
    m.touch_upload(new.id, Timestamp(base + 600), 100)
        .expect("touch");
    m.touch_upload(new.id, Timestamp(base + 700), 23)
        .expect("touch");
    let got = m.upload(new.id).expect("get").expect("present");
    assert_eq!(
        (got.last_active, got.added_bytes),
        (Timestamp(base + 700), 123)
    );
    assert_eq!(
        m.oldest_live_upload(Timestamp(base + 550)).expect("oldest"),
        Some(Timestamp(base + 500))
    );
    assert!(m.oldest_live_upload(Timestamp(base)).expect("oldest") <= Some(Timestamp(base)));
    assert!(m.delete_dead_uploads(Timestamp(base + 550)).expect("reap") >= 1);
    assert_eq!(m.upload(old.id).expect("get"), None);
    m.delete_upload(new.id).expect("delete");
    assert_eq!(m.upload(new.id).expect("get"), None);
}

/// Setups keep their entries in order.
pub fn setups_round_trip(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let (a, b) = (add_image(m, u.id, 4096), add_image(m, u.id, 4096));
    let mut setup = Setup {
        id: SetupId(fresh_uuid()),
        owner: u.id,
        name: "exp-42".into(),
        entries: vec![
            SetupEntry {
                image: b.id,
                version: VersionRef::Number(0),
                disk: Some("/dev/nvme0n1#2".parse().expect("sel")),
                capture: true,
            },
            SetupEntry {
                image: a.id,
                version: VersionRef::Latest,
                disk: None,
                capture: false,
            },
            SetupEntry {
                image: b.id,
                version: VersionRef::Latest,
                disk: Some("index:1".parse().expect("sel")),
                capture: false,
            },
        ],
        created_at: Timestamp(10),
        updated_at: Timestamp(10),
    };
    m.insert_setup(&setup).expect("insert");
    assert_eq!(m.setup(setup.id).expect("get"), Some(setup.clone()));
    assert_eq!(m.setups(Some(u.id)).expect("list"), vec![setup.clone()]);
    setup.entries.reverse();
    setup.name = "renamed".into();
    setup.updated_at = Timestamp(20);
    m.update_setup(&setup).expect("update");
    assert_eq!(m.setup(setup.id).expect("get"), Some(setup.clone()));
    let bad = Setup {
        id: SetupId(fresh_uuid()),
        entries: vec![SetupEntry {
            image: ImageId(fresh_uuid()),
            version: VersionRef::Latest,
            disk: None,
            capture: false,
        }],
        ..setup.clone()
    };
    assert!(
        m.insert_setup(&bad).is_err(),
        "entries must name existing images"
    );
    m.delete_setup(setup.id).expect("delete");
    assert_eq!(m.setups(Some(u.id)).expect("list"), vec![]);
}

/// MACs and names are unique; inventory round-trips.
pub fn machines_are_unique_and_round_trip(s: &Subject) {
    let m = &*s.meta;
    let mut a = add_machine(m);
    let b = add_machine(m);
    assert_eq!(m.machine_by_mac(a.mac).expect("get"), Some(a.clone()));
    let mut dup = b.clone();
    dup.id = MachineId(fresh_uuid());
    assert_eq!(kind(m.insert_machine(&dup)), ErrorKind::Conflict);
    dup.mac = MacAddress([0x52, 0, 0, 0, 0, 1]);
    dup.name = a.name.clone();
    assert_eq!(kind(m.insert_machine(&dup)), ErrorKind::Conflict);
    a.inventory = Some(Inventory {
        disks: vec![DiskInfo {
            path: "/dev/nvme0n1".into(),
            by_id: vec!["nvme-Samsung_SSD_1".into()],
            serial: Some("S1".into()),
            wwn: None,
            model: Some("Samsung SSD 970".into()),
            size: 1 << 40,
            logical_block: 512,
            physical_block: 4096,
            rotational: false,
            removable: false,
        }],
        nics: vec![NicInfo {
            name: "eth0".into(),
            mac: a.mac,
            speed_mbps: Some(1000),
        }],
        memory_bytes: 1 << 34,
        cpu_model: "AMD EPYC".into(),
        cpus: 16,
    });
    a.last_seen = Some(Timestamp(77));
    a.pool = Some("gpu".into());
    a.arch = Arch::Other("riscv64".into());
    a.state = MachineState::Retired;
    m.update_machine(&a).expect("update");
    assert_eq!(m.machine(a.id).expect("get"), Some(a.clone()));
    let mut clash = b.clone();
    clash.name = a.name.clone();
    assert_eq!(kind(m.update_machine(&clash)), ErrorKind::Conflict);
    let all = m.machines().expect("list");
    assert!(all.contains(&a) && all.contains(&b));
}

/// Contact only moves `last_seen` forward and touches nothing else; a
/// machine's history lists newest first, bounded, per machine.
pub fn machine_contact_and_history(s: &Subject) {
    let m = &*s.meta;
    let a = add_machine(m);
    let b = add_machine(m);
    m.touch_machine(a.id, Timestamp(500)).expect("touch");
    m.touch_machine(a.id, Timestamp(400))
        .expect("an older contact");
    let got = m.machine(a.id).expect("get").expect("exists");
    assert_eq!(got.last_seen, Some(Timestamp(500)));
    assert_eq!(got.name, a.name);
    let missing = MachineId(fresh_uuid());
    assert_eq!(
        kind(m.touch_machine(missing, Timestamp(1))),
        ErrorKind::NotFound
    );
    for i in 0..3 {
        let e = JobEvent {
            at: Timestamp(i),
            kind: "power".into(),
            message: format!("line {i}"),
        };
        m.append_machine_event(a.id, &e).expect("append");
    }
    let e = JobEvent {
        at: Timestamp(9),
        kind: "power".into(),
        message: "other".into(),
    };
    m.append_machine_event(b.id, &e).expect("append to b");
    let lines: Vec<String> = m
        .machine_events(a.id, 2)
        .expect("history")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(lines, ["line 2", "line 1"]);
    assert_eq!(m.machine_events(b.id, 10).expect("b").len(), 1);
    assert_eq!(
        kind(m.append_machine_event(missing, &e)),
        ErrorKind::NotFound
    );
}

/// Deleting a user takes their things with them, unless jobs are pending.
pub fn deleting_a_user_cascades_but_not_with_pending_jobs(s: &Subject) {
    let m = &*s.meta;
    let u = add_user(m, Role::User);
    let keep = add_user(m, Role::User);
    let img = add_image(m, u.id, 4096);
    let kept_img = add_image(m, keep.id, 4096);
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(fresh_uuid().as_bytes());
    m.insert_token(&Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::User(u.id),
        name: "t".into(),
        secret_hash: hash,
        created_at: Timestamp(1),
        expires_at: None,
        revoked_at: None,
    })
    .expect("token");
    let setup = Setup {
        id: SetupId(fresh_uuid()),
        owner: u.id,
        name: "s".into(),
        entries: vec![],
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    m.insert_setup(&setup).expect("setup");
    let machine = add_machine(m);
    let entry = JobEntry {
        image: img.id,
        version: 0,
        disk: DiskSelector::first(),
        capture: false,
    };
    let j = s
        .queue
        .enqueue(&job(machine.id, u.id, vec![entry], 1))
        .expect("enqueue");
    assert_eq!(kind(m.delete_user(u.id)), ErrorKind::Conflict);
    let ev = JobEvent {
        at: Timestamp(2),
        kind: "cancelled".into(),
        message: "x".into(),
    };
    s.queue
        .transition(j.id, &[JobState::Queued], JobState::Cancelled, None, &ev)
        .expect("cancel");
    m.delete_user(u.id).expect("delete");
    assert_eq!(m.user(u.id).expect("get"), None);
    assert_eq!(m.token_by_hash(&hash).expect("get"), None);
    assert_eq!(m.image(img.id).expect("get"), None);
    assert_eq!(m.setup(setup.id).expect("get"), None);
    assert!(m.image(kept_img.id).expect("get").is_some());
    assert!(m.user(keep.id).expect("get").is_some());
}

/// Settings: absent until set; `init_setting` keeps a value already set;
/// `set_setting` replaces it.
pub fn settings_round_trip(s: &Subject) {
    let m = &*s.meta;
    let key = format!("test.key-{}", suffix());
    assert_eq!(m.setting(&key).expect("read"), None);
    assert_eq!(m.init_setting(&key, "first").expect("init"), "first");
    assert_eq!(
        m.init_setting(&key, "second").expect("init"),
        "first",
        "kept"
    );
    assert_eq!(m.setting(&key).expect("read").as_deref(), Some("first"));
    m.set_setting(&key, "third").expect("set");
    assert_eq!(m.setting(&key).expect("read").as_deref(), Some("third"));
    let other = format!("test.other-{}", suffix());
    m.set_setting(&other, "x").expect("set a new key");
    assert_eq!(m.setting(&other).expect("read").as_deref(), Some("x"));
    assert_eq!(m.setting(&key).expect("read").as_deref(), Some("third"));
}

/// A machine token named `name` with a fresh secret.
fn machine_token(machine: MachineId, name: &str) -> Token {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(fresh_uuid().as_bytes());
    Token {
        id: TokenId(fresh_uuid()),
        subject: TokenSubject::Machine(machine),
        name: name.into(),
        secret_hash: hash,
        created_at: Timestamp(10),
        expires_at: Some(Timestamp(99_999)),
        revoked_at: None,
    }
}

/// `rotate_machine_tokens` revokes the machine's earlier tokens of that
/// name only (not its other tokens, not other machines'), adds the new
/// one, and under concurrency leaves exactly one of the new ones active.
pub fn rotating_machine_tokens_revokes_the_earlier_ones(s: &Subject) {
    let m = &*s.meta;
    let machine = add_machine(m);
    let other = add_machine(m);
    let agent = machine_token(machine.id, "agent");
    m.insert_token(&agent).expect("insert");
    let elsewhere = machine_token(other.id, "boot");
    m.insert_token(&elsewhere).expect("insert");
    let first = machine_token(machine.id, "boot");
    assert_eq!(
        m.rotate_machine_tokens(machine.id, "boot", Timestamp(20), Some(&first))
            .expect("rotate"),
        0
    );
    assert_eq!(m.token(first.id).expect("read"), Some(first.clone()));
    let second = machine_token(machine.id, "boot");
    assert_eq!(
        m.rotate_machine_tokens(machine.id, "boot", Timestamp(30), Some(&second))
            .expect("rotate"),
        1
    );
    let revoked = |id: TokenId| m.token(id).expect("read").expect("kept").revoked_at;
    assert_eq!(revoked(first.id), Some(Timestamp(30)));
    assert_eq!(revoked(second.id), None);
    assert_eq!(revoked(agent.id), None, "another name");
    assert_eq!(revoked(elsewhere.id), None, "another machine");
    assert_eq!(
        m.rotate_machine_tokens(machine.id, "boot", Timestamp(40), None)
            .expect("revoke only"),
        1
    );
    assert_eq!(revoked(second.id), Some(Timestamp(40)));
    assert_eq!(
        m.rotate_machine_tokens(MachineId(fresh_uuid()), "boot", Timestamp(41), None)
            .expect_err("no such machine")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        m.rotate_machine_tokens(machine.id, "boot", Timestamp(42), Some(&elsewhere))
            .expect_err("another machine's token")
            .kind(),
        ErrorKind::Invalid
    );

    let news: Vec<Token> = (0..8).map(|_| machine_token(machine.id, "boot")).collect();
    let handles: Vec<_> = news
        .iter()
        .cloned()
        .map(|t| {
            let (meta, id) = (s.meta.clone(), machine.id);
            std::thread::spawn(move || {
                meta.rotate_machine_tokens(id, "boot", Timestamp(50), Some(&t))
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread").expect("rotate");
    }
    let active = news.iter().filter(|t| revoked(t.id).is_none()).count();
    assert_eq!(active, 1, "one boot, one live credential");
}
