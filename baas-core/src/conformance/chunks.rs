//! The chunk store contract (see [`crate::ports::ChunkStore`]).

use std::time::Duration;

use super::ChunkSubject;
use crate::content::{encode_frame, ChunkHash};
use crate::model::Timestamp;
use crate::ports::Put;
use crate::ErrorKind;

fn chunk(seed: u8, len: usize) -> (ChunkHash, Vec<u8>) {
    let mut data = vec![0u8; len];
    let salt = super::fresh_uuid();
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u8)
            .wrapping_mul(seed)
            .wrapping_add(salt.as_bytes()[i % 16]);
    }
    let frame = encode_frame(&data, 1).expect("encode");
    (ChunkHash::of(&data), frame)
}

/// Lets the store's clock move on (file timestamps have fine but finite
/// resolution; the fake clock ticks on every reading anyway).
fn pause() {
    std::thread::sleep(Duration::from_millis(5));
}

/// What goes in comes out, byte for byte.
pub fn put_get_round_trip(s: &ChunkSubject) {
    for (seed, len) in [(1u8, 1usize), (2, 4096), (3, 65536), (4, 1 << 20)] {
        let (h, f) = chunk(seed, len);
        assert_eq!(s.store.put(&h, &f).expect("put"), Put::New(f.len() as u64));
        s.store.sync().expect("sync");
        assert_eq!(s.store.get(&h).expect("get"), f);
    }
    s.store.sync().expect("sync");
}

/// `get_many` answers like `get` for each hash, in order: missing ones
/// `NotFound`, repeated ones each time.
pub fn get_many_answers_like_get_in_order(s: &ChunkSubject) {
    let stored: Vec<_> = (0..20u8)
        .map(|i| chunk(40 + i, 1000 + 3000 * usize::from(i)))
        .collect();
    for (h, f) in &stored {
        s.store.put(h, f).expect("put");
    }
    s.store.sync().expect("sync");
    let (absent, _) = chunk(99, 10);
    let mut ask: Vec<ChunkHash> = stored.iter().rev().map(|(h, _)| *h).collect();
    ask.insert(3, absent);
    ask.push(stored[0].0);
    let got = s.store.get_many(&ask);
    assert_eq!(got.len(), ask.len());
    for (h, r) in ask.iter().zip(got) {
        if *h == absent {
            assert_eq!(r.expect_err("missing").kind(), ErrorKind::NotFound);
        } else {
            assert_eq!(r.expect("present"), s.store.get(h).expect("get"));
        }
    }
    assert!(s.store.get_many(&[]).is_empty());
}

/// A second put of the same chunk stores nothing.
pub fn put_is_idempotent(s: &ChunkSubject) {
    let (h, f) = chunk(5, 10_000);
    assert!(matches!(s.store.put(&h, &f).expect("put"), Put::New(_)));
    s.store.sync().expect("sync");
    assert_eq!(s.store.put(&h, &f).expect("put"), Put::Existing);
    assert_eq!(s.store.get(&h).expect("get"), f);
}

/// A missing chunk is `NotFound`.
pub fn missing_chunk_is_not_found(s: &ChunkSubject) {
    let (h, _) = chunk(6, 100);
    assert_eq!(
        s.store.get(&h).expect_err("missing").kind(),
        ErrorKind::NotFound
    );
    assert!(!s.store.contains(&h).expect("contains"));
}

/// `touch` reports presence and never creates.
pub fn touch_and_contains(s: &ChunkSubject) {
    let (h, f) = chunk(7, 100);
    assert!(!s.store.touch(&h).expect("touch"));
    assert!(
        !s.store.contains(&h).expect("contains"),
        "touch must not create"
    );
    s.store.put(&h, &f).expect("put");
    s.store.sync().expect("sync");
    assert!(s.store.touch(&h).expect("touch"));
    assert!(s.store.contains(&h).expect("contains"));
}

/// A sweep removes old unreferenced chunks only.
pub fn sweep_keeps_referenced_and_recent(s: &ChunkSubject) {
    let (kept, kf) = chunk(8, 1000);
    let (orphan, of) = chunk(9, 1000);
    s.store.put(&kept, &kf).expect("put");
    s.store.put(&orphan, &of).expect("put");
    s.store.sync().expect("sync");
    pause();
    let cutoff = (s.now)();
    pause();
    let (young, yf) = chunk(10, 1000);
    s.store.put(&young, &yf).expect("put");
    s.store.sync().expect("sync");
    let stats = s.store.sweep(&|h| *h == kept, cutoff).expect("sweep");
    assert!(stats.removed >= 1);
    assert!(stats.kept_recent >= 1);
    assert!(s.store.contains(&kept).expect("contains"));
    assert!(!s.store.contains(&orphan).expect("contains"));
    assert!(
        s.store.contains(&young).expect("contains"),
        "younger than the cutoff"
    );
    assert_eq!(
        s.store.get(&orphan).expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    // Sweeping with a cutoff in the past removes nothing.
    let stats = s.store.sweep(&|_| false, Timestamp(0)).expect("sweep");
    assert_eq!(stats.removed, 0);
}

/// A chunk touched after the cutoff was fixed survives the sweep.
pub fn touched_chunks_survive_sweep(s: &ChunkSubject) {
    let (h, f) = chunk(11, 1000);
    s.store.put(&h, &f).expect("put");
    s.store.sync().expect("sync");
    pause();
    let cutoff = (s.now)();
    pause();
    assert!(s.store.touch(&h).expect("touch"));
    s.store.sweep(&|_| false, cutoff).expect("sweep");
    assert!(s.store.contains(&h).expect("contains"));
    // And a put of an existing chunk counts as a touch.
    pause();
    let cutoff = (s.now)();
    pause();
    assert_eq!(s.store.put(&h, &f).expect("put"), Put::Existing);
    s.store.sweep(&|_| false, cutoff).expect("sweep");
    assert!(s.store.contains(&h).expect("contains"));
}

/// `usage` counts stored frames.
pub fn usage_counts_frames(s: &ChunkSubject) {
    let before = s.store.usage().expect("usage");
    let (h, f) = chunk(12, 3000);
    s.store.put(&h, &f).expect("put");
    s.store.sync().expect("sync");
    s.store.put(&h, &f).expect("put");
    s.store.sync().expect("sync");
    let after = s.store.usage().expect("usage");
    assert_eq!(after.chunks, before.chunks + 1);
    assert_eq!(after.bytes, before.bytes + f.len() as u64);
}

/// A put chunk is visible after `sync`, even when another thread's
/// concurrent `sync` installed it.
pub fn sync_makes_puts_visible(s: &ChunkSubject) {
    let chunks: Vec<_> = (0..64u8).map(|i| chunk(i.wrapping_add(50), 5000)).collect();
    let store = &*s.store;
    std::thread::scope(|sc| {
        for part in chunks.chunks(16) {
            sc.spawn(move || {
                for (h, f) in part {
                    store.put(h, f).expect("put");
                }
                store.sync().expect("sync");
                for (h, f) in part {
                    assert_eq!(store.get(h).expect("visible after sync"), *f);
                }
            });
        }
    });
}

/// `rewrite` replaces a present chunk's frame and never creates one.
pub fn rewrite_replaces_present_frames(s: &ChunkSubject) {
    let (h, f) = chunk(14, 20_000);
    assert!(!s.store.rewrite(&h, &f).expect("rewrite absent"));
    assert!(
        !s.store.contains(&h).expect("contains"),
        "rewrite must not create"
    );
    s.store.put(&h, &f).expect("put");
    s.store.sync().expect("sync");
    let mut other = f.clone();
    other.push(0);
    assert!(s.store.rewrite(&h, &other).expect("rewrite"));
    assert_eq!(s.store.get(&h).expect("get"), other);
}

/// Many threads putting the same chunk at once leave one intact copy.
pub fn concurrent_puts_of_one_chunk(s: &ChunkSubject) {
    let (h, f) = chunk(13, 200_000);
    let store = &*s.store;
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| store.put(&h, &f).expect("put"));
        }
    });
    s.store.sync().expect("sync");
    assert_eq!(s.store.get(&h).expect("get"), f);
}

/// `scan_headers` sees every stored chunk with the start of its frame.
pub fn scan_headers_sees_every_chunk(s: &ChunkSubject) {
    let chunks: Vec<_> = [(21u8, 1usize), (22, 4096), (23, 65536)]
        .into_iter()
        .map(|(seed, len)| chunk(seed, len))
        .collect();
    for (h, f) in &chunks {
        s.store.put(h, f).expect("put");
    }
    s.store.sync().expect("sync");
    let seen = std::sync::Mutex::new(std::collections::HashMap::new());
    s.store
        .scan_headers(33, &|h, head| {
            seen.lock().expect("lock").insert(*h, head.to_vec());
        })
        .expect("scan");
    let seen = seen.into_inner().expect("lock");
    for (h, f) in &chunks {
        assert_eq!(
            seen.get(h).map(Vec::as_slice),
            Some(&f[..f.len().min(33)]),
            "{h}"
        );
    }
}
