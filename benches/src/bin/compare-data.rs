//! The data `benches/compare.sh` measures on, deterministic from a seed:
//!
//! ```text
//! compare-data base OUT SIZE_MIB FILL_PERCENT SEED   # ext4 image of real files
//! compare-data add-files IMAGE GENERATION MIB          # ~MIB of new real files, contiguous
//! compare-data scatter IMAGE SEED PERCENT              # PERCENT of 4 KiB blocks rewritten
//! ```
//!
//! `base` makes an ext4 filesystem (`mkfs.ext4 -d`) holding real files from
//! the machine's `/usr`, picked in an order fixed by the seed, cached under
//! `target/bench-data` and copied (sparse) to OUT. `add-files` writes new
//! files into the filesystem with `debugfs`, as a user's session would.
//! `scatter` overwrites whole 4 KiB blocks at places spread over the whole
//! image with incompressible bytes: the worst case for any delta transfer.
//! Block numbers and bytes both come from blake3's output stream keyed by
//! the seed, so the same seed gives the same image.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, ExitCode};

const BLOCK: u64 = 4096;

fn usage() -> ExitCode {
    eprintln!(
        "usage: compare-data base OUT SIZE_MIB FILL_PERCENT SEED\n       \
         compare-data add-files IMAGE GENERATION MIB\n       \
         compare-data scatter IMAGE SEED PERCENT"
    );
    ExitCode::from(2)
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn base(out: &Path, size_mib: u64, fill_percent: u64, seed: u64) -> Result<(), String> {
    let size = size_mib << 20;
    let name = format!("ext4-{size_mib}m-{fill_percent}pct-seed{seed}");
    let cached = baas_benches::ext4_image_seeded(&name, size, size * fill_percent / 100, seed)
        .map_err(|e| format!("make the ext4 image: {e}"))?;
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(&cached)
        .arg(out)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("cp {} {} failed", cached.display(), out.display()));
    }
    Ok(())
}

fn scatter(image: &Path, seed: u64, percent: u64) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| format!("open {}: {e}", image.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let blocks = len / BLOCK;
    let want = usize::try_from(blocks * percent / 100).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new_derive_key("baas compare-data scatter");
    hasher.update(&seed.to_le_bytes());
    let mut stream = hasher.finalize_xof();
    let mut picked = BTreeSet::new();
    let mut word = [0u8; 8];
    while picked.len() < want && blocks > 0 {
        stream.read_exact(&mut word).map_err(|e| e.to_string())?;
        picked.insert(u64::from_le_bytes(word) % blocks);
    }
    let mut data = vec![0u8; BLOCK as usize];
    for block in picked {
        stream.read_exact(&mut data).map_err(|e| e.to_string())?;
        file.write_all_at(&data, block * BLOCK)
            .map_err(|e| format!("write block {block}: {e}"))?;
    }
    file.sync_all().map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<bool, String> {
    match args {
        [cmd, out, size, fill, seed] if cmd == "base" => {
            base(Path::new(out), num(size)?, num(fill)?, num(seed)?)?;
        }
        [cmd, image, generation, mib] if cmd == "add-files" => {
            let generation = u32::try_from(num(generation)?).map_err(|e| e.to_string())?;
            baas_benches::add_file(Path::new(image), generation, num(mib)? << 20)
                .map_err(|e| format!("add files: {e}"))?;
        }
        [cmd, image, seed, percent] if cmd == "scatter" => {
            scatter(Path::new(image), num(seed)?, num(percent)?)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => usage(),
        Err(e) => {
            eprintln!("compare-data: {e}");
            ExitCode::FAILURE
        }
    }
}
