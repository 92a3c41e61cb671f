//! Stored bytes for 10 successive versions of a 1 GiB ext4 image, each
//! adding about 1% (10 MiB) of new real files, against 10 full copies, one
//! `zstd -3` compressed version and 10 compressed copies. Not a timing: it
//! prints the figures and the ratio the target is stated in (at most 1.3x
//! one compressed version).
//!
//! `cargo bench -p baas-benches --bench storage`

use std::fs;

use baas_core::model::{DiskSelector, Visibility};
use baas_core::services::{ImportOptions, NewImage};
use baas_core::Actor;

const GIB: u64 = 1 << 30;
const VERSIONS: u32 = 10;

fn main() {
    // `cargo test --benches` runs this too; keep that cheap.
    if std::env::args().any(|a| a == "--test") {
        println!("storage: skipped in test mode (run with cargo bench)");
        return;
    }
    let base = baas_benches::ext4_image("ext4-1g-25", GIB, GIB / 4).expect("make the ext4 image");
    let work_dir = tempfile::tempdir_in(baas_benches::data_dir()).expect("tempdir");
    let work = work_dir.path().join("disk.img");
    fs::copy(&base, &work).expect("copy image");
    let data = work_dir.path().join("baas");
    let baas = baas_embedded::open_data_dir(&data).expect("open");
    let (admin, _) = baas
        .bootstrap_admin("admin")
        .expect("bootstrap")
        .expect("empty store");
    let actor = Actor::user(&admin);
    let (img, _) = baas
        .create_image(
            &actor,
            NewImage {
                owner: None,
                name: "storage".into(),
                disk: DiskSelector::first(),
                size: GIB,
                metadata: Default::default(),
                visibility: Visibility::Private,
            },
        )
        .expect("image");
    let (mut compressed_copies, mut first_compressed) = (0u64, 0u64);
    for v in 0..VERSIONS {
        if v > 0 {
            baas_benches::add_file(&work, v, GIB / 100).expect("add 1% of new files");
        }
        let mut f = fs::File::open(&work).expect("open");
        let version = baas
            .import_version(&actor, img.id, &mut f, ImportOptions::default())
            .expect("import");
        let (z, _) = baas_benches::zstd_cli(&work, 3).expect("zstd");
        if v == 0 {
            first_compressed = z;
        }
        compressed_copies += z;
        println!(
            "version {:2}: added {:>12} bytes to the store (zstd -3 of this version alone: {z})",
            version.number, version.added_bytes
        );
    }
    let chunks = baas_benches::dir_bytes(&data.join("chunks"));
    let meta = fs::metadata(data.join("baas.sqlite3")).map_or(0, |m| m.len());
    let stored = chunks + meta;
    let one = first_compressed.max(1) as f64;
    println!("frames as imported: {}", frame_kinds(&data.join("chunks")));
    let t = std::time::Instant::now();
    let compact = baas.compact_chunks(&Actor::System, 15, 2).expect("compact");
    let compact_secs = t.elapsed().as_secs_f64();
    let chunks_c = baas_benches::dir_bytes(&data.join("chunks"));
    let stored_c = chunks_c + fs::metadata(data.join("baas.sqlite3")).map_or(0, |m| m.len());
    println!(
        "frames after compaction: {}",
        frame_kinds(&data.join("chunks"))
    );
    println!();
    println!("| what | bytes | vs one zstd -3 version |");
    println!("|---|---:|---:|");
    println!(
        "| BAAS chunk store + metadata, {VERSIONS} versions | {stored} | {:.3}x |",
        stored as f64 / one
    );
    println!(
        "| of which chunk frames | {chunks} | {:.3}x |",
        chunks as f64 / one
    );
    println!(
        "| the same after `admin compact` (zstd -15, {:.0} s on 2 threads, {} chunks, {} dictionaries of {} bytes) | {stored_c} | {:.3}x |",
        compact_secs,
        compact.rewritten,
        compact.dictionaries,
        compact.dictionary_bytes,
        stored_c as f64 / one
    );
    println!("| one version, zstd -3 | {first_compressed} | 1.000x |");
    println!(
        "| {VERSIONS} copies, zstd -3 | {compressed_copies} | {:.3}x |",
        compressed_copies as f64 / one
    );
    println!(
        "| {VERSIONS} raw copies | {} | {:.3}x |",
        u64::from(VERSIONS) * GIB,
        (u64::from(VERSIONS) * GIB) as f64 / one
    );
}

/// Stored frames by kind (their first byte, see `baas_core::content`):
/// how many and how many bytes.
fn frame_kinds(dir: &std::path::Path) -> String {
    fn walk(dir: &std::path::Path, tally: &mut std::collections::BTreeMap<u8, (u64, u64)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tmp") {
                    walk(&p, tally);
                }
            } else if let Ok(bytes) = fs::read(&p) {
                let t = tally
                    .entry(bytes.first().copied().unwrap_or(255))
                    .or_default();
                t.0 += 1;
                t.1 += bytes.len() as u64;
            }
        }
    }
    let mut tally = Default::default();
    walk(dir, &mut tally);
    tally
        .iter()
        .map(|(tag, (n, b))| {
            let kind = match tag {
                0 => "raw",
                1 => "zstd",
                2 => "zstd compacted",
                3 => "zstd with dictionary",
                _ => "other",
            };
            format!("{kind}: {n} frames, {b} bytes")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
