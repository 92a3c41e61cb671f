//! Test data for the benches and comparison scripts: real ext4 filesystem
//! images made with e2fsprogs (`mkfs.ext4 -d`, `debugfs`), filled with real
//! files from the machine's `/usr`, plus helpers to measure a data
//! directory. Images are cached under `target/bench-data/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The clock e2fsprogs sees (`E2FSPROGS_FAKE_TIME`), so the same seed
/// makes the same bytes.
const FAKE_TIME: &str = "1764028800";

/// Where generated images are cached.
pub fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Real files from the system, about `bytes` of them, picked in an order
/// fixed by `seed` (blake3 of the seed and the path): a mix from the whole
/// tree, as a user's files would be, not one directory of near-identical
/// generated files. `exclude` seeds are skipped, so versions add new files.
fn system_files(seed: u64, bytes: u64) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for root in [
        "/usr/lib",
        "/usr/share",
        "/usr/bin",
        "/usr/libexec",
        "/usr/sbin",
    ] {
        walk(Path::new(root), &mut all);
    }
    let key = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(p.as_os_str().as_encoded_bytes());
        *h.finalize().as_bytes()
    };
    all.sort_by_cached_key(|(p, _)| key(p));
    // Files up to 1 MiB, and never past `bytes`: a version changes about
    // what it says, not one huge file more.
    let (mut seen, mut picked) = (0u64, Vec::new());
    for (path, len) in all {
        if len > (1 << 20) || seen + len > bytes {
            continue;
        }
        picked.push(path);
        seen += len;
        if seen + 4096 > bytes {
            break;
        }
    }
    picked
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk(&e.path(), out);
        } else if meta.is_file() && meta.len() > 0 && meta.len() < (64 << 20) {
            out.push((e.path(), meta.len()));
        }
    }
}

/// An ext4 image of `size` bytes holding about `fill` bytes of real files
/// (picked with seed 0). Made once and cached.
pub fn ext4_image(name: &str, size: u64, fill: u64) -> io::Result<PathBuf> {
    ext4_image_seeded(name, size, fill, 0)
}

/// An ext4 image of `size` bytes holding about `fill` bytes of real files
/// picked in the order `seed` fixes. Made once and cached under `name`.
pub fn ext4_image_seeded(name: &str, size: u64, fill: u64, seed: u64) -> io::Result<PathBuf> {
    let path = data_dir().join(format!("{name}.img"));
    if path.exists() {
        return Ok(path);
    }
    let tree = tempfile::tempdir()?;
    for (i, f) in system_files(seed, fill).iter().enumerate() {
        let dst = tree
            .path()
            .join(format!("d{:03}", i / 500))
            .join(format!("{i:06}"));
        fs::create_dir_all(dst.parent().unwrap_or(tree.path()))?;
        if fs::copy(f, &dst).is_err() {
            continue;
        }
    }
    let tmp = path.with_extension("tmp");
    let file = fs::File::create(&tmp)?;
    file.set_len(size)?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0,nodiscard,\
             hash_seed=6e1a1b7e-0000-4000-8000-000000000002",
            "-U",
        ])
        .arg("6e1a1b7e-0000-4000-8000-000000000001")
        .args(["-d"])
        .arg(tree.path())
        .arg(&tmp))?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Writes a new file of about `bytes` real bytes into the ext4 image
/// `image` (in place) with debugfs, as a user's session would: contiguous
/// new data. `generation` picks which system files, so each call adds new
/// content.
pub fn add_file(image: &Path, generation: u32, bytes: u64) -> io::Result<()> {
    let mut blob = tempfile::NamedTempFile::new()?;
    let mut written = 0u64;
    for f in system_files(u64::from(generation) + 1000, bytes) {
        let data = fs::read(f)?;
        blob.write_all(&data)?;
        written += data.len() as u64;
    }
    blob.flush()?;
    let name = format!("write {} /new-{generation}.bin", blob.path().display());
    run(Command::new("debugfs")
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .args(["-w", "-R", &name])
        .arg(image))?;
    let _ = written;
    Ok(())
}

/// Total bytes of regular files under `dir` (apparent size).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Bytes `zstd -<level> -T1` makes of `file` (single core), and the
/// seconds it takes.
pub fn zstd_cli(file: &Path, level: i32) -> io::Result<(u64, f64)> {
    let t = std::time::Instant::now();
    let out = Command::new("zstd")
        .args([&format!("-{level}"), "-T1", "-q", "-c"])
        .arg(file)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other("zstd failed"));
    }
    Ok((out.stdout.len() as u64, t.elapsed().as_secs_f64()))
}
