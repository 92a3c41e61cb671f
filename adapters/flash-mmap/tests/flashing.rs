//! The agent's algorithms on real disks: the flashing suite on file-backed
//! mmap devices with the embedded store (SQLite and a chunk directory), a
//! 64 MiB delta flash on a sparse file, and, as root, a flash onto a loop
//! device read back through the kernel's block layer.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use baas_core::content::CHUNK_SIZE;
use baas_core::flashing::suite::{chunk_delta, disk_image, test_options, FlashSubject, Rng};
use baas_core::flashing::{flash, FlashOptions};
use baas_core::model::*;
use baas_core::ports::{AgentLink, BlockDevice};
use baas_core::services::*;
use baas_core::Baas;
use baas_flash_mmap::MmapBlockDevice;

const CHUNK: usize = CHUNK_SIZE as usize;

fn sparse_file(path: &Path, size: u64) -> MmapBlockDevice {
    File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("sparse file");
    MmapBlockDevice::open(path).expect("open")
}

fn flash_subject() -> FlashSubject {
    let dir = tempfile::tempdir().expect("tempdir");
    let baas = baas_embedded::open_data_dir(dir.path().join("data")).expect("open baas");
    let disks = dir.path().join("disks");
    std::fs::create_dir(&disks).expect("disk dir");
    let n = AtomicUsize::new(0);
    FlashSubject {
        baas,
        device: Box::new(move |size| {
            let path = disks.join(format!("disk{}.img", n.fetch_add(1, Ordering::SeqCst)));
            Arc::new(sparse_file(&path, size))
        }),
        guard: Box::new(dir),
    }
}

mod suite {
    baas_core::flashing_conformance!(crate::flash_subject());
}

/// Embedded services with one image holding `images` as versions 1..,
/// and a machine whose agent has taken a job writing each in turn.
struct Lab {
    _dir: tempfile::TempDir,
    link: LocalAgentLink,
    job: Job,
}

fn lab(dir: tempfile::TempDir, images: &[&[u8]]) -> Lab {
    let baas: Baas = baas_embedded::open_data_dir(dir.path().join("data")).expect("open baas");
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
                mac: "52:54:00:aa:bb:cc".parse().expect("mac"),
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
    let mut entries = Vec::new();
    for data in images {
        let v = baas
            .import_version(
                &alice,
                image.id,
                &mut std::io::Cursor::new(data),
                ImportOptions::default(),
            )
            .expect("import");
        entries.push(SetupEntry {
            image: image.id,
            version: VersionRef::Number(v.number),
            disk: None,
            capture: false,
        });
    }
    let setup = baas
        .create_setup(
            &alice,
            NewSetup {
                name: "versions".into(),
                entries,
            },
        )
        .expect("setup");
    baas.enqueue_job(
        &alice,
        JobRequest {
            machine: machine.id,
            target: JobTarget::Setup(setup.id),
        },
    )
    .expect("enqueue");
    let link = LocalAgentLink::new(baas.clone(), machine.id);
    let job = link.next_job(0).expect("next").expect("job");
    Lab {
        _dir: dir,
        link,
        job,
    }
}

/// 64 MiB, a quarter data: a full flash onto a sparse file leaves the
/// holes unallocated (zeros are neither sent nor written), and the delta
/// to a version with 1% changed in one place fetches at most twice the
/// changed bytes.
#[test]
fn large_image_full_then_delta_on_a_sparse_file() {
    let size = 64 << 20;
    let mut a = vec![0u8; size];
    let mut rng = Rng::new(64);
    // A quarter of the image in 1 MiB extents, spread out.
    for e in 0..16 {
        let at = e * (4 << 20) + (e % 3) * CHUNK;
        rng.fill(&mut a[at..at + (1 << 20)]);
    }
    let mut b = a.clone();
    let changed = size / 100;
    let at = 3 * (4 << 20) + 1000;
    Rng::new(65).fill(&mut b[at..at + changed]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    let lab = lab(dir, &[&a, &b]);
    let device = sparse_file(&path, size as u64 + (8 << 20));
    let opts = FlashOptions {
        retry_delay: std::time::Duration::from_millis(5),
        ..FlashOptions::default()
    };

    let r = flash(
        &device,
        &lab.link,
        lab.job.id,
        0,
        &opts,
        &mut |_: &Progress| {},
    )
    .expect("full flash");
    assert_eq!(r.fetched, (16 << 20) / CHUNK as u64);
    assert_eq!(r.zeroed, 0);
    // The kernel writes back whole page-cache folios, and since Linux 6.16
    // ext4 uses large ones (up to 2 MiB) for mmap writes: each 1 MiB extent
    // (none straddles a 2 MiB boundary) may allocate up to 2 MiB. Either
    // way, most of the 48 MiB of holes must stay unallocated.
    let allocated = std::fs::metadata(&path).expect("stat").blocks() * 512;
    assert!(
        allocated <= (32 << 20) + (1 << 20),
        "the holes were written: {allocated} bytes allocated"
    );
    let mut back = vec![0u8; size];
    device.read_at(0, &mut back).expect("read");
    assert!(back == a);

    let r = flash(
        &device,
        &lab.link,
        lab.job.id,
        1,
        &opts,
        &mut |_: &Progress| {},
    )
    .expect("delta flash");
    let (want, zeros) = chunk_delta(&a, &b);
    assert_eq!((r.fetched, r.zeroed), (want, zeros));
    assert!(
        r.fetched_bytes <= 2 * changed as u64,
        "{} bytes fetched for {changed} changed",
        r.fetched_bytes
    );
    // Read through a fresh mapping, as after a reboot.
    drop(device);
    let again = MmapBlockDevice::open(&path).expect("reopen");
    again.read_at(0, &mut back).expect("read");
    assert!(back == b);
}

/// Detaches the loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// As root (CI is): flash A then B onto a real loop device, holes over old
/// data included, and read the bytes back through the backing file.
#[test]
fn flash_onto_a_loop_device() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must test a loop device"
        );
        eprintln!("NOTE: not root, so the loop-device flash is skipped");
        return;
    }
    let size = 6 << 20;
    let a = disk_image(100, size);
    let mut b = a.clone();
    Rng::new(101).fill(&mut b[(2 << 20) + 5..(2 << 20) + 5 + size / 100]);
    b[..3 * CHUNK].fill(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("loop.img");
    File::create(&backing)
        .and_then(|f| f.set_len(8 << 20))
        .expect("backing file");
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup runs");
    assert!(
        out.status.success(),
        "losetup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let lab = lab(dir, &[&a, &b]);
    let device = MmapBlockDevice::open(&guard.0).expect("open loop device");
    assert!(format!("{device:?}").contains("is_block_device: true"));
    let mut noise = vec![0u8; 8 << 20];
    Rng::new(102).fill(&mut noise);
    device.write_at(0, &noise).expect("old data");
    device.flush().expect("flush");

    let opts = test_options();
    let r = flash(
        &device,
        &lab.link,
        lab.job.id,
        0,
        &opts,
        &mut |_: &Progress| {},
    )
    .expect("flash A");
    assert_eq!(r.unchanged, 0);
    let r2 = flash(
        &device,
        &lab.link,
        lab.job.id,
        1,
        &opts,
        &mut |_: &Progress| {},
    )
    .expect("flash B");
    let (want, zeros) = chunk_delta(&a, &b);
    assert_eq!((r2.fetched, r2.zeroed), (want, zeros));
    drop(device);
    let on_disk = std::fs::read(&backing).expect("read backing file");
    assert!(on_disk[..size] == b[..], "the loop device holds B");
    assert!(
        on_disk[size..].iter().all(|x| *x == 0),
        "the tail is zeroed"
    );
    drop(guard);
}

/// The job step on a sparse file: the agent's whole provisioning, then the
/// machine runs the user's OS.
#[test]
fn run_job_provisions_a_file_backed_disk() {
    let a = disk_image(110, 3 << 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    let lab = lab(dir, &[&a]);
    let device: Arc<dyn BlockDevice> = Arc::new(sparse_file(&path, 4 << 20));
    let open = |sel: &DiskSelector| -> baas_core::Result<Arc<dyn BlockDevice>> {
        assert_eq!(sel, &DiskSelector::first());
        Ok(device.clone())
    };
    baas_core::flashing::run_job(&lab.link, &lab.job, &open, &test_options(), &mut |_| {})
        .expect("provision");
    let job = lab.link.next_job(0).expect("next").expect("job");
    assert_eq!(job.state, JobState::Running);
    let on_disk = std::fs::read(&path).expect("read");
    assert!(on_disk[..a.len()] == a[..]);
}
