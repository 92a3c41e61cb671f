//! The mmap block device passes the block-device conformance suite on a
//! sparse file, and, as root, on a real loop device.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use baas_core::conformance::block::BlockSubject;
use baas_core::ports::BlockDevice;
use baas_flash_mmap::MmapBlockDevice;

const SIZE: u64 = 16 << 20;

fn sparse_file() -> BlockSubject {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("sparse file");
    let open = move |p: &PathBuf| -> Arc<dyn BlockDevice> {
        Arc::new(MmapBlockDevice::open(p).expect("open"))
    };
    let reopen_path = path.clone();
    BlockSubject {
        device: open(&path),
        reopen: Box::new(move || open(&reopen_path)),
        guard: Box::new(dir),
    }
}

/// Detaches the loop device and removes its backing file when dropped.
struct Loop {
    device: String,
    _dir: tempfile::TempDir,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn loop_device() -> Option<BlockSubject> {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must test a loop device"
        );
        eprintln!("NOTE: not root, so the loop-device conformance run is skipped");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loop.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("backing file");
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&path)
        .output()
        .expect("losetup runs");
    assert!(
        out.status.success(),
        "losetup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let guard = Loop {
        device: device.clone(),
        _dir: dir,
    };
    let dev = device.clone();
    let open = move || -> Arc<dyn BlockDevice> {
        Arc::new(MmapBlockDevice::open(&dev).expect("open loop device"))
    };
    let first = open();
    assert!(format!("{first:?}").contains("is_block_device: true"));
    Some(BlockSubject {
        device: first,
        reopen: Box::new(open),
        guard: Box::new(guard),
    })
}

mod sparse_file {
    baas_core::block_device_conformance!(crate::sparse_file());
}

/// One test per case on the loop device; each skips (outside CI) when not
/// root.
mod loop_device {
    macro_rules! on_loop {
        ($($case:ident),*) => {$(
            #[test]
            fn $case() {
                if let Some(s) = crate::loop_device() {
                    baas_core::conformance::block::$case(&s);
                }
            }
        )*};
    }
    on_loop!(
        geometry,
        write_then_read,
        out_of_range_is_invalid,
        zero_range_zeroes_exactly,
        flushed_writes_persist,
        concurrent_disjoint_writes,
        reads_as_zeros_is_never_wrong
    );
}

#[test]
fn zeroing_a_file_punches_holes() {
    use std::os::unix::fs::MetadataExt;
    let s = sparse_file();
    let data = vec![0xa5u8; 8 << 20];
    s.device.write_at(0, &data).expect("write");
    s.device.flush().expect("flush");
    let path = format!("{:?}", s.device);
    let path = path
        .split('"')
        .nth(1)
        .expect("path in debug output")
        .to_string();
    let allocated = |p: &str| std::fs::metadata(p).expect("stat").blocks() * 512;
    let before = allocated(&path);
    s.device.zero_range(0, 8 << 20).expect("zero");
    s.device.flush().expect("flush");
    let after = allocated(&path);
    assert!(
        after + (7 << 20) <= before,
        "holes punched: {before} -> {after} bytes allocated"
    );
    let mut buf = vec![1u8; 8 << 20];
    s.device.read_at(0, &mut buf).expect("read");
    assert!(buf.iter().all(|b| *b == 0));
}

#[test]
fn holes_of_a_sparse_file_are_known_zeros_and_written_data_is_not() {
    let s = sparse_file();
    let d = &*s.device;
    assert!(
        d.reads_as_zeros(0, d.size()),
        "a fresh sparse file is one hole"
    );
    d.write_at(1 << 20, &[1u8; 4096]).expect("write");
    // Dirty, not yet written back: still data.
    assert!(!d.reads_as_zeros(1 << 20, 4096));
    assert!(!d.reads_as_zeros(0, 2 << 20));
    assert!(d.reads_as_zeros(4 << 20, 1 << 20));
}
