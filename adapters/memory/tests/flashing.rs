//! The agent's algorithms on the in-memory block device: the block-device
//! conformance suite, the flashing suite on in-memory services, and what
//! only the fake can tell (which calls the device got, what a power cut
//! would have kept).

use std::sync::Arc;

use baas_core::conformance::block::BlockSubject;
use baas_core::content::{is_zero, CHUNK_SIZE};
use baas_core::flashing::suite::{disk_image, read_back, test_options, FlashSubject, Rng};
use baas_core::flashing::{capture, flash};
use baas_core::model::*;
use baas_core::ports::{AgentLink, BlockDevice};
use baas_core::services::*;
use baas_core::{Baas, Config};
use baas_memory::MemoryBlockDevice;

const CHUNK: usize = CHUNK_SIZE as usize;

fn block_subject() -> BlockSubject {
    let device = MemoryBlockDevice::new(16 << 20).expect("device");
    let again = device.reopen();
    BlockSubject {
        device: Arc::new(device),
        reopen: Box::new(move || Arc::new(again.reopen())),
        guard: Box::new(()),
    }
}

fn flash_subject() -> FlashSubject {
    FlashSubject {
        baas: Baas::new(baas_memory::ports(), Config::default()),
        device: Box::new(|size| Arc::new(MemoryBlockDevice::new(size).expect("device"))),
        guard: Box::new(()),
    }
}

mod block {
    baas_core::block_device_conformance!(crate::block_subject());
}

mod suite {
    baas_core::flashing_conformance!(crate::flash_subject());
}

/// Services, a machine and a provisioning job of one entry per image given.
struct Setup {
    baas: Baas,
    alice: Actor,
    link: LocalAgentLink,
    job: Job,
    versions: Vec<Version>,
}

fn setup(images: &[&[u8]], capture: bool) -> Setup {
    let baas = Baas::new(baas_memory::ports(), Config::default());
    let user = |name: &str, role| {
        let u = baas
            .create_user(
                &Actor::System,
                NewUser {
                    name: name.into(),
                    display_name: String::new(),
                    email: String::new(),
                    role,
                },
            )
            .expect("user");
        Actor::user(&u)
    };
    let alice = user("alice", Role::User);
    let moderator = user("moderator", Role::Moderator);
    let machine = baas
        .register_machine(
            &moderator,
            NewMachine {
                mac: "52:54:00:12:34:56".parse().expect("mac"),
                name: None,
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("machine");
    let image = baas
        .create_image(
            &alice,
            NewImage {
                owner: None,
                name: "disk".into(),
                disk: DiskSelector::first(),
                size: images[0].len() as u64,
                metadata: Default::default(),
                visibility: Visibility::Private,
            },
        )
        .expect("image")
        .0;
    let versions: Vec<Version> = images
        .iter()
        .map(|data| {
            baas.import_version(
                &alice,
                image.id,
                &mut std::io::Cursor::new(data),
                ImportOptions::default(),
            )
            .expect("import")
        })
        .collect();
    let s = baas
        .create_setup(
            &alice,
            NewSetup {
                name: "all".into(),
                entries: versions
                    .iter()
                    .map(|v| SetupEntry {
                        image: image.id,
                        version: VersionRef::Number(v.number),
                        disk: None,
                        capture,
                    })
                    .collect(),
            },
        )
        .expect("setup");
    baas.enqueue_job(
        &alice,
        JobRequest {
            machine: machine.id,
            target: JobTarget::Setup(s.id),
        },
    )
    .expect("enqueue");
    let link = LocalAgentLink::new(baas.clone(), machine.id);
    let job = link.next_job(0).expect("next").expect("job");
    Setup {
        baas,
        alice,
        link,
        job,
        versions,
    }
}

/// Zeroing goes to the device in one call per run of holes (plus one for
/// the tail), and hole chunks that are already zero cost no call at all.
#[test]
fn zero_runs_are_coalesced_into_one_call_each() {
    let size = 2 << 20;
    let mut image = vec![0u8; size];
    // Data chunks 4 and 20: holes are the runs 0..4, 5..20 and 21..32.
    for c in [4, 20] {
        Rng::new(c as u64).fill(&mut image[c * CHUNK..(c + 1) * CHUNK]);
    }
    let s = setup(&[&image], false);
    let device = MemoryBlockDevice::new(3 << 20).expect("device");
    let mut junk = vec![0u8; 3 << 20];
    Rng::new(5).fill(&mut junk);
    // Chunks 8..12 are zero already: the run 5..20 splits around them.
    junk[8 * CHUNK..12 * CHUNK].fill(0);
    device.write_at(0, &junk).expect("junk");
    let before = device.stats();
    let r = flash(
        &device,
        &s.link,
        s.job.id,
        0,
        &test_options(),
        &mut |_: &Progress| {},
    )
    .expect("flash");
    let st = device.stats();
    assert_eq!(
        st.zero_calls - before.zero_calls,
        5,
        "0..4, 5..8, 12..20, 21..32, tail"
    );
    assert_eq!(r.zeroed, 32 - 2 - 4);
    assert_eq!(r.unchanged, 4);
    assert_eq!(
        st.bytes_zeroed - before.bytes_zeroed,
        (26 * CHUNK + (1 << 20)) as u64
    );
    assert_eq!(
        st.writes - before.writes,
        2,
        "only the two data chunks written"
    );
    assert_eq!(st.bytes_written - before.bytes_written, 2 * CHUNK as u64);
    assert!(st.flushes > before.flushes);
    assert!(device.contents().expect("contents")[..size] == image[..]);
}

/// A too-large image is refused before the device sees a single write.
#[test]
fn too_large_image_touches_nothing() {
    let image = disk_image(3, 2 << 20);
    let s = setup(&[&image], false);
    let device = MemoryBlockDevice::new(1 << 20).expect("device");
    flash(
        &device,
        &s.link,
        s.job.id,
        0,
        &test_options(),
        &mut |_: &Progress| {},
    )
    .expect_err("too large");
    assert_eq!(device.stats(), Default::default());
}

/// A flash whose writes were never flushed is lost to a power cut; the
/// next run on what survived converges all the same.
#[test]
fn power_cut_before_the_flush_then_rerun() {
    let a = disk_image(8, 3 << 20);
    let s = setup(&[&a], false);
    let device = MemoryBlockDevice::new(3 << 20).expect("device");
    device
        .write_at(0, &disk_image(9, 3 << 20))
        .expect("old data");
    device.flush().expect("flush");
    // A flash that writes everything, then the power goes before any
    // flush: simulate by writing the image without flushing.
    device.write_at(0, &a).expect("unflushed");
    let survived = device.crashed().expect("power cut");
    assert!(survived.contents().expect("contents") != a);
    let r = flash(
        &survived,
        &s.link,
        s.job.id,
        0,
        &test_options(),
        &mut |_: &Progress| {},
    )
    .expect("rerun");
    assert!(r.fetched > 0);
    let after = survived.crashed().expect("another power cut");
    assert!(
        after.contents().expect("contents") == a,
        "flushed before it returned"
    );
}

/// Chunks of one batch that share content are fetched once and written to
/// every position.
#[test]
fn repeated_chunks_are_fetched_once_per_batch() {
    let mut a = vec![0u8; 16 * CHUNK];
    let mut block = vec![0u8; CHUNK];
    Rng::new(1).fill(&mut block);
    for c in 0..16 {
        a[c * CHUNK..(c + 1) * CHUNK].copy_from_slice(&block);
    }
    let s = setup(&[&a], false);
    let device = MemoryBlockDevice::new(a.len() as u64).expect("device");
    let opts = baas_core::flashing::FlashOptions {
        fetch_batch: 64,
        ..test_options()
    };
    let r = flash(&device, &s.link, s.job.id, 0, &opts, &mut |_: &Progress| {}).expect("flash");
    assert_eq!((r.fetched, r.frames), (16, 1));
    assert!(device.contents().expect("contents") == a);
}

/// Without verification nothing is re-read; without `zero_tail` the tail
/// keeps its bytes.
#[test]
fn verify_and_zero_tail_can_be_turned_off() {
    let a = disk_image(12, 1 << 20);
    let s = setup(&[&a], false);
    let device = MemoryBlockDevice::new(2 << 20).expect("device");
    device
        .write_at(1 << 20, &[7u8; 1 << 20])
        .expect("tail data");
    let opts = baas_core::flashing::FlashOptions {
        verify: false,
        zero_tail: false,
        ..test_options()
    };
    let reads_before = device.stats().bytes_read;
    let r = flash(&device, &s.link, s.job.id, 0, &opts, &mut |_: &Progress| {}).expect("flash");
    assert!(!r.verified);
    assert_eq!(r.tail_zeroed, 0);
    assert_eq!(
        device.stats().bytes_read - reads_before,
        1 << 20,
        "read once to compare, never to verify"
    );
    let back = read_back(&device, 2 << 20);
    assert!(back[..1 << 20] == a[..]);
    assert!(back[1 << 20..].iter().all(|b| *b == 7));
}

/// A capture reads the disk once to hash it and once more only for the
/// chunks the server lacks, and holes travel as holes.
#[test]
fn capture_reads_back_only_what_it_uploads() {
    let a = disk_image(13, 2 << 20);
    let s = setup(&[&a], true);
    let device = MemoryBlockDevice::new(a.len() as u64).expect("device");
    flash(
        &device,
        &s.link,
        s.job.id,
        0,
        &test_options(),
        &mut |_: &Progress| {},
    )
    .expect("flash");
    s.link
        .advance(s.job.id, JobState::Running, "booted")
        .expect("running");
    s.link
        .advance(s.job.id, JobState::Capturing, "over")
        .expect("capturing");
    device.zero_range(0, a.len() as u64).expect("wipe");
    device
        .write_at(5 * CHUNK as u64, &[1u8; 10])
        .expect("one chunk");
    let before = device.stats().bytes_read;
    let r = capture(
        &device,
        a.len() as u64,
        &s.link,
        s.job.id,
        0,
        &test_options(),
        &mut |_: &Progress| {},
    )
    .expect("capture");
    assert_eq!(r.uploaded, 1);
    assert_eq!(
        device.stats().bytes_read - before,
        a.len() as u64 + CHUNK as u64
    );
    assert_eq!(r.version.data_chunks, 1);
    let mut back = Vec::new();
    std::io::Read::read_to_end(
        &mut s
            .baas
            .open_version(
                &s.alice,
                r.version.image,
                VersionRef::Number(r.version.number),
            )
            .expect("open"),
        &mut back,
    )
    .expect("read");
    assert!(back == device.contents().expect("contents"));
    assert!(is_zero(&back[..5 * CHUNK]));
    assert_eq!(s.versions.len(), 1);
}
