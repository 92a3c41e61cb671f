//! Import and export throughput of a 1 GiB ext4 image that is about 25%
//! real files and 75% free (zeros), beside baselines measured in the same
//! run: reading the file into a blake3 hasher, and single-core `zstd -1`.
//!
//! `cargo bench -p baas-benches --bench import_export`

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read};
use std::time::Duration;

use baas_core::model::{DiskSelector, Visibility};
use baas_core::services::{ImportOptions, NewImage};
use baas_core::{Actor, Baas};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const GIB: u64 = 1 << 30;

fn fresh(dir: &std::path::Path) -> (Baas, baas_core::model::ImageId) {
    let baas = baas_embedded::open_data_dir(dir).expect("open");
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
                name: "bench".into(),
                disk: DiskSelector::first(),
                size: GIB,
                metadata: Default::default(),
                visibility: Visibility::Private,
            },
        )
        .expect("image");
    (baas, img.id)
}

fn import(baas: &Baas, image: baas_core::model::ImageId, path: &std::path::Path) -> u32 {
    let mut f = File::open(path).expect("open image file");
    baas.import_version(&Actor::System, image, &mut f, ImportOptions::default())
        .expect("import")
        .number
}

fn bench(c: &mut Criterion) {
    let path = baas_benches::ext4_image("ext4-1g-25", GIB, GIB / 4).expect("make the ext4 image");
    let mut g = c.benchmark_group("1GiB_ext4_25pct");
    g.throughput(Throughput::Bytes(GIB));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));

    g.bench_function("baseline_blake3_read", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            let mut f = File::open(&path).expect("open");
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            black_box(h.finalize())
        })
    });
    g.bench_function("baseline_zstd1_single_core", |b| {
        b.iter(|| black_box(baas_benches::zstd_cli(&path, 1).expect("zstd")))
    });
    // Stores are kept until the group ends: deleting thousands of chunk
    // files between iterations would make ext4 hunt for inodes that were
    // not "recently deleted" and measure that instead of an import.
    let kept = std::sync::Mutex::new(Vec::new());
    g.bench_function("baas_import_fresh_store", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir_in(baas_benches::data_dir()).expect("tempdir");
                let (baas, image) = fresh(dir.path());
                (dir, baas, image)
            },
            |(dir, baas, image)| {
                black_box(import(&baas, image, &path));
                kept.lock().expect("lock").push(dir);
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir_in(baas_benches::data_dir()).expect("tempdir");
    let (baas, image) = fresh(dir.path());
    let version = import(&baas, image, &path);
    g.bench_function("baas_reimport_unchanged", |b| {
        b.iter(|| black_box(import(&baas, image, &path)))
    });
    g.bench_function("baas_export", |b| {
        b.iter(|| {
            let mut r = baas
                .open_version(
                    &Actor::System,
                    image,
                    baas_core::model::VersionRef::Number(version),
                )
                .expect("open version");
            black_box(io::copy(&mut r, &mut io::sink()).expect("export"))
        })
    });
    g.finish();
    drop(kept);
}

criterion_group!(benches, bench);
criterion_main!(benches);
