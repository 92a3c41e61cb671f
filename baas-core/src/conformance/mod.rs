//! Conformance suites: one per port, written once and run against every
//! adapter (the in-memory fakes, SQLite, PostgreSQL, the filesystem), plus a
//! services suite that runs the use cases end to end on a given set of
//! ports. Enabled by the `conformance` feature; adapters use it from their
//! tests through the macros at the bottom of this file, which expand to one
//! `#[test]` per case.

pub mod block;
pub mod chunks;
pub mod metadata;
pub mod queue;
pub mod services;

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use crate::model::*;
use crate::ports::{BootQueue, ChunkStore, MetadataStore};

#[allow(missing_debug_implementations, reason = "holds opaque guards")]
/// A metadata store and boot queue under test. `guard` keeps whatever backs
/// them (a temporary directory, a throwaway database) alive.
pub struct Subject {
    /// The store.
    pub meta: Arc<dyn MetadataStore>,
    /// The queue (usually the same object).
    pub queue: Arc<dyn BootQueue>,
    /// Dropped after the test.
    pub guard: Box<dyn Any>,
}

#[allow(missing_debug_implementations, reason = "holds opaque guards")]
/// A chunk store under test. `now` must read the clock the store stamps
/// chunks with.
pub struct ChunkSubject {
    /// The store.
    pub store: Arc<dyn ChunkStore>,
    /// The store's notion of now.
    pub now: Box<dyn Fn() -> Timestamp>,
    /// Dropped after the test.
    pub guard: Box<dyn Any>,
}

/// A fresh UUID that differs across calls, processes and runs (suites may
/// share one database between cases).
pub fn fresh_uuid() -> Uuid {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    h.update(&t.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// A unique short suffix for names.
pub fn suffix() -> String {
    fresh_uuid().simple().to_string()[..12].to_string()
}

/// Inserts a user with a unique name and `role`.
pub fn add_user(meta: &dyn MetadataStore, role: Role) -> User {
    let user = User {
        id: UserId(fresh_uuid()),
        name: format!("u-{}", suffix()),
        display_name: "Test User".into(),
        email: "t@example.org".into(),
        role,
        password_hash: None,
        created_at: Timestamp(1_000),
    };
    meta.insert_user(&user).expect("insert user");
    user
}

/// Inserts an image of `owner` with its blank version 0.
pub fn add_image(meta: &dyn MetadataStore, owner: UserId, size: u64) -> Image {
    let image = Image {
        id: ImageId(fresh_uuid()),
        owner,
        name: "image".into(),
        disk: DiskSelector::first(),
        size,
        metadata: [("os".to_string(), "debian".to_string())]
            .into_iter()
            .collect(),
        visibility: Visibility::Private,
        shared_with: vec![],
        created_at: Timestamp(2_000),
    };
    let blank = NewVersion {
        image: image.id,
        manifest: crate::content::Manifest::blank(size),
        added_bytes: 0,
        created_by: owner,
        created_at: Timestamp(2_000),
        source: VersionSource::Blank,
        note: None,
    };
    meta.insert_image(&image, &blank).expect("insert image");
    image
}

/// Inserts a ready machine with a unique MAC and name.
pub fn add_machine(meta: &dyn MetadataStore) -> Machine {
    let id = fresh_uuid();
    let b = id.as_bytes();
    let machine = Machine {
        id: MachineId(id),
        mac: MacAddress([0x52, b[1], b[2], b[3], b[4], b[5]]),
        name: format!("m-{}", suffix()),
        arch: Arch::X86_64,
        pool: None,
        state: MachineState::Ready,
        inventory: None,
        last_seen: None,
        created_at: Timestamp(3_000),
        boot: MachineBoot::default(),
    };
    meta.insert_machine(&machine).expect("insert machine");
    machine
}

/// A queued job (not yet enqueued) writing `entries` on `machine`.
pub fn job(machine: MachineId, owner: UserId, entries: Vec<JobEntry>, at: i64) -> Job {
    Job {
        id: JobId(fresh_uuid()),
        seq: 0,
        machine,
        owner,
        setup: None,
        entries,
        state: JobState::Queued,
        progress: Progress::default(),
        error: None,
        created_at: Timestamp(at),
        started_at: None,
        finished_at: None,
        session: Session::default(),
    }
}

/// Runs the metadata store suite: `metadata_store_conformance!(expr)` where
/// `expr` builds a fresh [`Subject`]. Covers [`metadata`] and [`queue`].
#[macro_export]
macro_rules! metadata_store_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!($make, metadata:
            users_round_trip, user_names_are_unique, missing_rows, tokens_round_trip,
            images_and_blank_version, image_listing_filters, version_numbers_are_never_reused,
            concurrent_commits_get_distinct_consecutive_numbers, versions_in_use_cannot_be_deleted,
            deleting_an_image_touches_nothing_else, referenced_chunks_and_quota_bytes,
            upload_sessions, setups_round_trip, machines_are_unique_and_round_trip,
            machine_contact_and_history, deleting_a_user_cascades_but_not_with_pending_jobs,
            settings_round_trip, rotating_machine_tokens_revokes_the_earlier_ones);
        $crate::__conformance_cases!($make, queue:
            enqueue_assigns_increasing_seq, take_next_is_fifo_and_one_at_a_time,
            take_next_hands_out_each_job_once_under_concurrency, transition_is_compare_and_set,
            progress_events_and_filters, queue_matches_model, sessions_and_machine_boot_round_trip,
            placements_bind_only_waiting_to_idle_machines, binding_is_atomic_under_concurrency);
    };
}

/// Runs the chunk store suite: `chunk_store_conformance!(expr)` where
/// `expr` builds a fresh [`ChunkSubject`].
#[macro_export]
macro_rules! chunk_store_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!($make, chunks:
            put_get_round_trip, put_is_idempotent, missing_chunk_is_not_found, touch_and_contains,
            sweep_keeps_referenced_and_recent, touched_chunks_survive_sweep, usage_counts_frames,
            concurrent_puts_of_one_chunk, sync_makes_puts_visible, rewrite_replaces_present_frames,
            scan_headers_sees_every_chunk, get_many_answers_like_get_in_order);
    };
}

/// Runs the services suite on real ports: `services_conformance!(expr)`
/// where `expr` builds a fresh `(Ports, Box<dyn Any>)`.
#[macro_export]
macro_rules! services_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!($make, services:
            import_export_round_trips_sparse_data, reimport_stores_no_new_chunk,
            chunk_sources_import_like_readers,
            concurrent_imports_get_consecutive_versions, failed_import_leaves_no_version,
            chunk_upload_protocol_resumes, corrupted_chunk_is_an_error, gc_reclaims_only_orphans,
            gc_spares_chunks_of_an_import_in_progress, authorization_rules, tokens_authenticate_until_revoked,
            queue_flow_and_capture_rules, range_reads_and_latest, compaction_saves_space_and_keeps_bytes,
            compaction_dictionary_outlives_every_frame_that_needs_it,
            machine_presence_and_power_by_hand, sharing_with_named_users,
            boot_decisions_enrollment_sessions_and_power, neutral_state_after_jobs,
            placement_on_any_machine_that_fits, jobs_wait_for_their_window,
            enrollment_policy_is_an_admin_setting, placements_hold_no_machine_before_their_window);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:expr, $suite:ident: $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let subject = $make;
                $crate::conformance::$suite::$case(&subject);
            }
        )*
    };
}
