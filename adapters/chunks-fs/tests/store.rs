//! `FsChunkStore` beyond the shared suite: the on-disk layout, crash
//! leftovers, sharing a directory between instances, races between sweep
//! and touch, a full disk, and a model-based run on a fake clock.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baas_chunks_fs::FsChunkStore;
use baas_core::content::{encode_frame, ChunkHash};
use baas_core::model::Timestamp;
use baas_core::ports::{ChunkStore, Clock, Put, SweepStats, Usage};
use baas_core::ErrorKind;
use proptest::prelude::*;

/// A chunk whose bytes depend on `seed` (incompressible enough that frame
/// sizes differ by seed).
fn chunk(seed: u64, len: usize) -> (ChunkHash, Vec<u8>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (
        ChunkHash::of(&data),
        encode_frame(&data, 1).expect("encode"),
    )
}

fn chunk_path(dir: &Path, h: &ChunkHash) -> PathBuf {
    let hex = h.to_hex();
    dir.join(&hex[..2]).join(hex)
}

/// A stored chunk's fan-out directory.
fn fanout_of(dir: &Path, h: &ChunkHash) -> PathBuf {
    chunk_path(dir, h).parent().expect("fan-out").to_path_buf()
}

fn now_ms() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64,
    )
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).expect("stat").modified().expect("mtime")
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::open(path)
        .expect("open")
        .set_modified(t)
        .expect("set mtime");
}

fn an_hour_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

/// What is left in `tmp/`, and the temp files of `put`s (`put-*.tmp`) in
/// the fan-out directories.
fn tmp_entries(dir: &Path) -> Vec<String> {
    let mut left: Vec<String> = fs::read_dir(dir.join("tmp"))
        .expect("tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for entry in fs::read_dir(dir).expect("store") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !entry.file_type().expect("type").is_dir() {
            continue;
        }
        for inner in fs::read_dir(entry.path()).expect("fan-out") {
            let inner = inner
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if inner.starts_with("put-") {
                left.push(format!("{name}/{inner}"));
            }
        }
    }
    left
}

#[test]
fn put_writes_one_file_per_chunk_under_its_fanout_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("a/b/chunks");
    let store = FsChunkStore::open(&root).expect("open creates the directory");
    assert!(root.join("tmp").is_dir());
    let (h, f) = chunk(1, 70_000);
    assert_eq!(store.put(&h, &f).expect("put"), Put::New(f.len() as u64));
    store.sync().expect("sync");
    assert_eq!(fs::read(chunk_path(&root, &h)).expect("file"), f);
    assert_eq!(store.get(&h).expect("get"), f);
    assert!(store.contains(&h).expect("contains"));
    assert!(tmp_entries(&root).is_empty(), "no temp file left behind");
    // Only the one fan-out directory was created.
    let dirs: Vec<_> = fs::read_dir(&root)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(
        store.usage().expect("usage"),
        Usage {
            chunks: 1,
            bytes: f.len() as u64
        }
    );
    // Reopening finds it.
    drop(store);
    assert_eq!(
        FsChunkStore::open(&root)
            .expect("reopen")
            .get(&h)
            .expect("get"),
        f
    );
}

#[test]
fn open_fails_clearly_on_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plain");
    fs::write(&file, b"x").expect("write");
    let e = FsChunkStore::open(&file).expect_err("not a directory");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.message().contains("opening the chunk store"),
        "{}",
        e.message()
    );
}

#[test]
fn put_of_an_existing_chunk_refreshes_it_without_rewriting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let (h, f) = chunk(2, 5000);
    store.put(&h, &f).expect("put");
    store.sync().expect("sync");
    let path = chunk_path(dir.path(), &h);
    set_mtime(&path, an_hour_ago());
    let before = SystemTime::now() - Duration::from_secs(1);
    // Different bytes under the same name: if put rewrote, we would see them.
    assert_eq!(store.put(&h, b"other bytes").expect("put"), Put::Existing);
    assert_eq!(store.get(&h).expect("get"), f);
    assert!(mtime(&path) >= before);
}

#[test]
fn touch_refreshes_present_chunks_and_never_creates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let (h, f) = chunk(3, 1000);
    assert!(!store.touch(&h).expect("touch"));
    assert!(!chunk_path(dir.path(), &h).exists());
    assert!(!chunk_path(dir.path(), &h)
        .parent()
        .expect("fan-out")
        .exists());
    store.put(&h, &f).expect("put");
    store.sync().expect("sync");
    let path = chunk_path(dir.path(), &h);
    set_mtime(&path, an_hour_ago());
    let before = SystemTime::now() - Duration::from_secs(1);
    assert!(store.touch(&h).expect("touch"));
    assert!(mtime(&path) >= before);
    // contains does not touch.
    set_mtime(&path, an_hour_ago());
    assert!(store.contains(&h).expect("contains"));
    assert!(mtime(&path) < before);
}

#[test]
fn sweep_removes_only_old_unreferenced_chunks_and_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let chunks: Vec<_> = (0..7)
        .map(|i| chunk(100 + i, 1000 + 100 * i as usize))
        .collect();
    for (h, f) in &chunks {
        store.put(h, f).expect("put");
        store.sync().expect("sync");
    }
    // 0..3 old and referenced, 3..5 old and unreferenced, 5 recent and
    // unreferenced, 6 recent and referenced.
    for (h, _) in &chunks[..5] {
        set_mtime(&chunk_path(dir.path(), h), an_hour_ago());
    }
    let referenced: Vec<ChunkHash> = [0, 1, 2, 6].iter().map(|&i| chunks[i].0).collect();
    let cutoff = Timestamp(now_ms().0 - 60_000);
    let stats = store
        .sweep(&|h| referenced.contains(h), cutoff)
        .expect("sweep");
    let freed = (chunks[3].1.len() + chunks[4].1.len()) as u64;
    assert_eq!(
        stats,
        SweepStats {
            scanned: 7,
            removed: 2,
            freed_bytes: freed,
            kept_recent: 1
        }
    );
    for (i, (h, _)) in chunks.iter().enumerate() {
        assert_eq!(
            store.contains(h).expect("contains"),
            ![3, 4].contains(&i),
            "chunk {i}"
        );
    }
    assert_eq!(
        store.get(&chunks[3].0).expect_err("swept").kind(),
        ErrorKind::NotFound
    );
    assert!(tmp_entries(dir.path()).is_empty());
    // A removed chunk can be stored again.
    assert!(matches!(
        store.put(&chunks[3].0, &chunks[3].1).expect("put"),
        Put::New(_)
    ));
    store.sync().expect("sync");
}

/// The race the sweep's rename-then-recheck exists for: whenever `touch`
/// says a chunk is there, the sweep must not remove it.
#[test]
fn touch_racing_a_sweep_never_loses_a_chunk_it_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let chunks: Vec<_> = (0..1500).map(|i| chunk(10_000 + i, 64)).collect();
    for round in 0..3 {
        for (h, f) in &chunks {
            store.put(h, f).expect("put");
            store.sync().expect("sync");
            set_mtime(&chunk_path(dir.path(), h), an_hour_ago());
        }
        let cutoff = now_ms();
        let (stats, touched) = std::thread::scope(|s| {
            let sweeper = s.spawn(|| store.sweep(&|_| false, cutoff).expect("sweep"));
            let touchers: Vec<_> = (0..2)
                .map(|t| {
                    let (store, chunks) = (&store, &chunks);
                    s.spawn(move || {
                        // Opposite orders, so that the touchers meet the
                        // sweep at different places.
                        let order: Vec<usize> = if t == 0 {
                            (0..chunks.len()).collect()
                        } else {
                            (0..chunks.len()).rev().collect()
                        };
                        order
                            .into_iter()
                            .filter(|&i| store.touch(&chunks[i].0).expect("touch"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let touched: Vec<usize> = touchers
                .into_iter()
                .flat_map(|t| t.join().expect("toucher"))
                .collect();
            (sweeper.join().expect("sweeper"), touched)
        });
        for &i in &touched {
            assert!(
                store.contains(&chunks[i].0).expect("contains"),
                "round {round}: chunk {i} was touched yet removed"
            );
        }
        let present = chunks
            .iter()
            .filter(|(h, _)| store.contains(h).expect("contains"))
            .count() as u64;
        assert_eq!(stats.scanned, chunks.len() as u64);
        assert_eq!(
            present + stats.removed,
            chunks.len() as u64,
            "round {round}: {stats:?}"
        );
        assert!(tmp_entries(dir.path()).is_empty(), "round {round}");
    }
}

/// What an importer does (touch, else put) racing a sweep: every chunk it
/// went through is there afterwards.
#[test]
fn an_import_racing_a_sweep_ends_with_every_chunk_present() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let chunks: Vec<_> = (0..1500).map(|i| chunk(20_000 + i, 64)).collect();
    for (h, f) in &chunks {
        store.put(h, f).expect("put");
        store.sync().expect("sync");
        set_mtime(&chunk_path(dir.path(), h), an_hour_ago());
    }
    let cutoff = now_ms();
    std::thread::scope(|s| {
        s.spawn(|| store.sweep(&|_| false, cutoff).expect("sweep"));
        for half in chunks.chunks(chunks.len() / 2) {
            let store = &store;
            s.spawn(move || {
                for (h, f) in half {
                    if !store.touch(h).expect("touch") {
                        store.put(h, f).expect("put");
                        store.sync().expect("sync");
                    }
                }
            });
        }
    });
    store.sync().expect("sync");
    for (i, (h, f)) in chunks.iter().enumerate() {
        assert_eq!(
            &store.get(h).unwrap_or_else(|e| panic!("chunk {i}: {e:?}")),
            f
        );
    }
}

#[test]
fn leftovers_of_a_crashed_put_are_ignored_then_cleaned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path())
        .expect("open")
        .with_stale_age(Duration::ZERO);
    let (h, f) = chunk(4, 3000);
    store.put(&h, &f).expect("put");
    store.sync().expect("sync");
    // A put's temp file lives in the chunk's fan-out directory; older
    // versions wrote it to tmp/.
    let fanout = fanout_of(dir.path(), &h);
    let halves = [
        fanout.join("put-4242-00000000deadbeef-7.tmp"),
        dir.path().join("tmp/put-4242-00000000deadbeef-8.tmp"),
    ];
    for half in &halves {
        fs::write(half, &f[..100]).expect("write");
        set_mtime(half, an_hour_ago());
    }
    // Strangers in a fan-out directory and at the top are ignored, never
    // deleted.
    let strangers = [
        fanout.join("notes.txt"),
        fanout.join(h.to_hex().to_uppercase()),
        dir.path().join("README"),
    ];
    for p in &strangers {
        fs::write(p, b"not a chunk").expect("write");
        set_mtime(p, an_hour_ago());
    }
    assert_eq!(
        store.usage().expect("usage"),
        Usage {
            chunks: 1,
            bytes: f.len() as u64
        }
    );
    let stats = store
        .sweep(&|_| true, now_ms().plus_millis(60_000))
        .expect("sweep");
    assert_eq!(
        stats,
        SweepStats {
            scanned: 1,
            ..SweepStats::default()
        }
    );
    for half in &halves {
        assert!(!half.exists(), "the stale temp file {half:?} is cleaned");
    }
    for p in &strangers {
        assert!(p.exists(), "{p:?} was deleted");
    }
    assert_eq!(store.get(&h).expect("get"), f);
}

#[test]
fn a_recent_temp_file_survives_a_sweep() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Default stale age: a temp file changed a moment ago may belong to a
    // put in progress in another process, whatever its mtime says.
    let store = FsChunkStore::open(dir.path()).expect("open");
    let (h, f) = chunk(7, 3000);
    store.put(&h, &f).expect("put");
    store.sync().expect("sync");
    let fanout = fanout_of(dir.path(), &h);
    let live = [
        fanout.join("put-1-1-1.tmp"),
        dir.path().join("tmp/put-1-1-2.tmp"),
    ];
    for p in &live {
        fs::write(p, b"in progress").expect("write");
        set_mtime(p, an_hour_ago());
    }
    store.sweep(&|_| true, now_ms()).expect("sweep");
    for p in &live {
        assert!(p.exists(), "{p:?}");
    }
}

#[test]
fn a_chunk_an_interrupted_sweep_took_out_is_put_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let (a, fa) = chunk(5, 2000);
    let (b, fb) = chunk(6, 2000);
    store.put(&a, &fa).expect("put");
    store.sync().expect("sync");
    store.put(&b, &fb).expect("put");
    store.sync().expect("sync");
    // A sweep renamed them out and died before deciding.
    let out_a = dir
        .path()
        .join(format!("tmp/gc-{}-77-0000000000000001-0", a.to_hex()));
    let out_b = dir
        .path()
        .join(format!("tmp/gc-{}-77-0000000000000001-1", b.to_hex()));
    fs::rename(chunk_path(dir.path(), &a), &out_a).expect("take out");
    fs::rename(chunk_path(dir.path(), &b), &out_b).expect("take out");
    assert_eq!(store.get(&a).expect_err("out").kind(), ErrorKind::NotFound);
    // The next open puts them back...
    let reopened = FsChunkStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.get(&a).expect("get"), fa);
    // ...and so does a sweep, once they have sat there long enough.
    fs::rename(chunk_path(dir.path(), &b), &out_b).expect("take out");
    let store = store.with_stale_age(Duration::ZERO);
    let stats = store.sweep(&|h| *h == b, now_ms()).expect("sweep");
    assert_eq!(stats.scanned, 2);
    assert_eq!(store.get(&b).expect("get"), fb);
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn two_instances_share_one_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = FsChunkStore::open(dir.path()).expect("open a");
    let b = FsChunkStore::open(dir.path()).expect("open b");
    let (h, f) = chunk(7, 4000);
    assert!(matches!(a.put(&h, &f).expect("put"), Put::New(_)));
    a.sync().expect("sync");
    assert_eq!(b.get(&h).expect("get"), f);
    assert_eq!(b.put(&h, &f).expect("put"), Put::Existing);
    set_mtime(&chunk_path(dir.path(), &h), an_hour_ago());
    assert_eq!(b.sweep(&|_| false, now_ms()).expect("sweep").removed, 1);
    assert!(!a.contains(&h).expect("contains"));
    assert!(!a.touch(&h).expect("touch"));
    assert!(matches!(a.put(&h, &f).expect("put"), Put::New(_)));

    // Both storing overlapping sets at once, as two servers importing
    // similar images do.
    let chunks: Vec<_> = (0..300).map(|i| chunk(30_000 + i, 2000)).collect();
    std::thread::scope(|s| {
        for (store, range) in [(&a, 0..200), (&b, 100..300), (&a, 150..300), (&b, 0..120)] {
            let chunks = &chunks;
            s.spawn(move || {
                for (h, f) in &chunks[range] {
                    store.put(h, f).expect("put");
                    store.sync().expect("sync");
                }
                store.sync().expect("sync");
            });
        }
    });
    for (h, f) in &chunks {
        assert_eq!(&a.get(h).expect("get"), f);
    }
    let usage = b.usage().expect("usage");
    assert_eq!(usage.chunks, 301);
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn damaged_chunk_files_are_internal_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsChunkStore::open(dir.path()).expect("open");
    let (h, f) = chunk(8, 1000);
    store.put(&h, &f).expect("put");
    store.sync().expect("sync");
    File::create(chunk_path(dir.path(), &h)).expect("truncate");
    let e = store.get(&h).expect_err("empty");
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(
        e.message().contains(&h.to_hex()) && e.message().contains("corrupted"),
        "{}",
        e.message()
    );

    // A directory where a chunk file should be.
    let (g, _) = chunk(9, 1000);
    fs::create_dir_all(chunk_path(dir.path(), &g)).expect("mkdir");
    let e = store.get(&g).expect_err("a directory");
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains(&g.to_hex()), "{}", e.message());
    assert!(!store.contains(&g).expect("contains"));
}

/// A tiny tmpfs, where root may mount one; unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount() -> Option<TinyFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyFs { dir })
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_recovers_after_a_sweep() {
    let Some(fs) = TinyFs::mount() else {
        // Not root, or no mount namespace: the message itself is checked
        // by the unit tests of the error translation.
        eprintln!("skipping: cannot mount a tmpfs here");
        return;
    };
    let store = FsChunkStore::open(fs.dir.path()).expect("open");
    let mut stored = Vec::new();
    let err = loop {
        let (h, f) = chunk(40_000 + stored.len() as u64, 100_000);
        match store.put(&h, &f) {
            Ok(_) => stored.push((h, f)),
            Err(e) => break e,
        }
        assert!(stored.len() < 100, "a 1 MiB filesystem never filled up");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.retryable());
    assert!(
        err.message().starts_with("storing chunk "),
        "{}",
        err.message()
    );
    assert!(err.message().contains("no space left"), "{}", err.message());
    // The chunks staged before the disk filled up are installed by the next
    // sync (renames need no space); the failed put left nothing behind.
    store.sync().expect("sync installs what was staged");
    assert!(
        tmp_entries(fs.dir.path()).is_empty(),
        "the failed put cleaned up"
    );
    for (h, f) in &stored {
        assert_eq!(&store.get(h).expect("earlier chunks intact"), f);
    }
    store.sync().expect("sync");
    let stats = store
        .sweep(&|_| false, now_ms().plus_millis(1000))
        .expect("sweep");
    assert_eq!(stats.removed, stored.len() as u64);
    let (h, f) = chunk(49_999, 100_000);
    assert!(matches!(
        store.put(&h, &f).expect("room again"),
        Put::New(_)
    ));
    drop(store);
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Touch(usize),
    Get(usize),
    Contains(usize),
    Advance(i64),
    /// Keep the chunks whose bit is set; cutoff this far before now.
    Sweep {
        keep: u8,
        back: i64,
    },
    Usage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6usize).prop_map(Op::Put),
        2 => (0..6usize).prop_map(Op::Touch),
        1 => (0..6usize).prop_map(Op::Get),
        1 => (0..6usize).prop_map(Op::Contains),
        2 => (1..50i64).prop_map(Op::Advance),
        1 => (any::<u8>(), 0..60i64).prop_map(|(keep, back)| Op::Sweep { keep, back }),
        1 => Just(Op::Usage),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The store behaves like a map from hash to (frame, timestamp).
    #[test]
    fn store_matches_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock(AtomicI64::new(1_600_000_000_000)));
        let store = FsChunkStore::open_with_clock(dir.path(), clock.clone()).expect("open");
        let chunks: Vec<_> = (0..6).map(|i| chunk(50_000 + i, 100 * (i as usize + 1))).collect();
        let mut model: BTreeMap<usize, Timestamp> = BTreeMap::new();
        for op in ops {
            let now = clock.now();
            match op {
                Op::Put(i) => {
                    let (h, f) = &chunks[i];
                    let want = if model.contains_key(&i) { Put::Existing } else { Put::New(f.len() as u64) };
                    model.insert(i, now);
                    prop_assert_eq!(store.put(h, f).expect("put"), want);
                    store.sync().expect("sync");
                }
                Op::Touch(i) => {
                    let present = model.get_mut(&i).map(|t| *t = now).is_some();
                    prop_assert_eq!(store.touch(&chunks[i].0).expect("touch"), present);
                }
                Op::Get(i) => match store.get(&chunks[i].0) {
                    Ok(f) => prop_assert!(model.contains_key(&i) && f == chunks[i].1),
                    Err(e) => prop_assert!(!model.contains_key(&i) && e.kind() == ErrorKind::NotFound),
                },
                Op::Contains(i) => prop_assert_eq!(store.contains(&chunks[i].0).expect("contains"), model.contains_key(&i)),
                Op::Advance(ms) => { clock.0.fetch_add(ms, Ordering::SeqCst); }
                Op::Sweep { keep, back } => {
                    let cutoff = now.plus_millis(-back);
                    let kept = |i: usize| keep & (1 << i) != 0;
                    let mut want = SweepStats { scanned: model.len() as u64, ..SweepStats::default() };
                    model.retain(|&i, t| {
                        if kept(i) {
                            return true;
                        }
                        if *t >= cutoff {
                            want.kept_recent += 1;
                            return true;
                        }
                        want.removed += 1;
                        want.freed_bytes += chunks[i].1.len() as u64;
                        false
                    });
                    let got = store
                        .sweep(&|h| chunks.iter().position(|(c, _)| c == h).is_some_and(kept), cutoff)
                        .expect("sweep");
                    prop_assert_eq!(got, want);
                }
                Op::Usage => {
                    let want = Usage {
                        chunks: model.len() as u64,
                        bytes: model.keys().map(|&i| chunks[i].1.len() as u64).sum(),
                    };
                    prop_assert_eq!(store.usage().expect("usage"), want);
                }
            }
        }
        store.sync().expect("sync");
    }
}
