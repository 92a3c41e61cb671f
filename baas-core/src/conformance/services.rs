//! The use cases end to end on a real set of ports: what a user of BAAS
//! relies on, whatever the adapters.

use std::any::Any;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::mpsc;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};

use crate::content::{encode_frame, is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use crate::model::*;
use crate::ports::JobFilter;
use crate::services::*;
use crate::{Baas, Config, ErrorKind};

/// What a services test gets: the ports and whatever keeps them alive.
pub type ServicesSubject = (Ports, Box<dyn Any>);

fn baas(s: &ServicesSubject) -> Baas {
    Baas::new(
        s.0.clone(),
        Config {
            import_workers: 4,
            gc_margin_ms: 0,
            ..Config::default()
        },
    )
}

struct People {
    admin: Actor,
    alice: Actor,
    bob: Actor,
    moderator: Actor,
}

fn people(b: &Baas) -> People {
    let mk = |role| {
        let u = b
            .create_user(
                &Actor::System,
                NewUser {
                    name: format!("{}-{}", role, super::suffix()),
                    display_name: String::new(),
                    email: String::new(),
                    role,
                },
            )
            .expect("create user");
        Actor::user(&u)
    };
    People {
        admin: mk(Role::Admin),
        alice: mk(Role::User),
        bob: mk(Role::User),
        moderator: mk(Role::Moderator),
    }
}

fn new_image(b: &Baas, who: &Actor, size: u64) -> Image {
    b.create_image(
        who,
        NewImage {
            owner: None,
            name: "disk".into(),
            disk: DiskSelector::first(),
            size,
            metadata: Default::default(),
            visibility: Visibility::Private,
        },
    )
    .expect("create image")
    .0
}

/// Deterministic sparse test data: runs of zeros and of patterned bytes.
fn sparse(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed | 1;
    let mut i = 0;
    while i < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = (x % 150_000) as usize + 1;
        let end = (i + run).min(len);
        if x % 3 == 0 {
            for (k, b) in v[i..end].iter_mut().enumerate() {
                *b = (x >> (k % 56)) as u8 ^ k as u8;
            }
        }
        i = end;
    }
    v
}

fn import(b: &Baas, who: &Actor, image: ImageId, data: &[u8]) -> Version {
    b.import_version(who, image, &mut Cursor::new(data), ImportOptions::default())
        .expect("import")
}

fn export(b: &Baas, who: &Actor, image: ImageId, v: VersionRef) -> Vec<u8> {
    let mut out = Vec::new();
    b.open_version(who, image, v)
        .expect("open")
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// The root hash a client computes from the bytes alone.
fn root_of(data: &[u8]) -> ChunkHash {
    let chunks = data
        .chunks(CHUNK_SIZE as usize)
        .map(|c| {
            if is_zero(c) {
                None
            } else {
                Some(ChunkHash::of(c))
            }
        })
        .collect();
    Manifest::new(data.len() as u64, CHUNK_SIZE, chunks)
        .expect("manifest")
        .root()
}

/// Property: importing random sparse data and exporting it gives the same
/// bytes, and the root hash is what the bytes alone give.
pub fn import_export_round_trips_sparse_data(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 1 << 20);
    let mut runner = TestRunner::new(PropConfig {
        cases: 12,
        failure_persistence: None,
        ..PropConfig::default()
    });
    runner
        .run(&(any::<u64>(), 0usize..1_500_000), |(seed, len)| {
            let data = sparse(seed, len);
            let v = import(&b, &p.alice, img.id, &data);
            prop_assert_eq!(v.size, len as u64);
            prop_assert_eq!(v.root, root_of(&data));
            let back = export(&b, &p.alice, img.id, VersionRef::Number(v.number));
            prop_assert!(back == data, "exported bytes differ");
            Ok(())
        })
        .expect("round trip");
    // Version 0 reads back as zeros of the declared size.
    let zeros = export(&b, &p.alice, img.id, VersionRef::Number(0));
    assert_eq!(zeros.len(), 1 << 20);
    assert!(is_zero(&zeros));
}

/// A [`crate::services::ChunkSource`] that hands over its own buffers
/// imports what a reader of the same bytes does; one that breaks the
/// contract (a chunk too long, or a count that is not its length) is an
/// error and leaves no version.
pub fn chunk_sources_import_like_readers(s: &ServicesSubject) {
    use crate::services::ChunkSource;
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl ChunkSource for Chunks {
        fn next_chunk(&mut self, buf: &mut Vec<u8>) -> crate::Result<usize> {
            *buf = self.0.next().unwrap_or_default();
            Ok(buf.len())
        }
    }
    struct Lying(bool);
    impl ChunkSource for Lying {
        fn next_chunk(&mut self, buf: &mut Vec<u8>) -> crate::Result<usize> {
            *buf = vec![7u8; CHUNK_SIZE as usize + 1];
            Ok(if self.0 { buf.len() } else { 10 })
        }
    }
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 1 << 20);
    let data = sparse(7, 5 * CHUNK_SIZE as usize + 1234);
    let by_reader = import(&b, &p.alice, img.id, &data);
    let chunks: Vec<Vec<u8>> = data
        .chunks(CHUNK_SIZE as usize)
        .map(<[u8]>::to_vec)
        .collect();
    let by_source = b
        .import_chunks(
            &p.alice,
            img.id,
            &mut Chunks(chunks.into_iter()),
            ImportOptions::default(),
        )
        .expect("import from chunks");
    assert_eq!(by_source.root, by_reader.root);
    assert_eq!(by_source.size, data.len() as u64);
    assert_eq!(
        export(&b, &p.alice, img.id, VersionRef::Number(by_source.number)),
        data
    );
    for honest_count in [true, false] {
        let e = b
            .import_chunks(
                &p.alice,
                img.id,
                &mut Lying(honest_count),
                ImportOptions::default(),
            )
            .expect_err("a chunk longer than a chunk");
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    }
    let versions = b.list_versions(&p.alice, img.id).expect("versions");
    assert_eq!(
        versions.last().map(|v| v.number),
        Some(by_source.number),
        "no version from a broken source"
    );
}

/// Importing the same bytes again stores nothing new.
pub fn reimport_stores_no_new_chunk(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data = sparse(42, 3_000_000);
    let v1 = import(&b, &p.alice, img.id, &data);
    assert!(v1.added_bytes > 0);
    let before = s.0.chunks.usage().expect("usage");
    let v2 = import(&b, &p.alice, img.id, &data);
    assert_eq!(v2.added_bytes, 0);
    assert_eq!(v2.root, v1.root);
    assert_eq!(s.0.chunks.usage().expect("usage"), before);
    // Another user's identical upload is deduplicated too.
    let other = new_image(&b, &p.bob, 4096);
    assert_eq!(import(&b, &p.bob, other.id, &data).added_bytes, 0);
}

/// Eight concurrent imports into one image get eight distinct, consecutive
/// versions, each reading back as what was sent.
pub fn concurrent_imports_get_consecutive_versions(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let results: Vec<(u32, Vec<u8>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let (b, who) = (b.clone(), p.alice.clone());
                sc.spawn(move || {
                    let data = sparse(1000 + i, 400_000 + i as usize * 10_000);
                    (import(&b, &who, img.id, &data).number, data)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut numbers: Vec<u32> = results.iter().map(|r| r.0).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    for (n, data) in results {
        assert!(
            export(&b, &p.alice, img.id, VersionRef::Number(n)) == data,
            "version {n}"
        );
    }
}

struct Failing {
    left: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0xab);
        self.left -= n;
        Ok(n)
    }
}

/// A broken stream or an oversized one leaves no version and no session.
pub fn failed_import_leaves_no_version(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let err = b
        .import_version(
            &p.alice,
            img.id,
            &mut Failing { left: 1_000_000 },
            ImportOptions::default(),
        )
        .expect_err("broken stream");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let small = Baas::new(
        s.0.clone(),
        Config {
            max_version_size: 100_000,
            ..Config::default()
        },
    );
    let err = small
        .import_version(
            &p.alice,
            img.id,
            &mut Cursor::new(vec![1u8; 200_000]),
            ImportOptions::default(),
        )
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let versions = b.list_versions(&p.alice, img.id).expect("versions");
    assert_eq!(versions.len(), 1, "only the blank version 0");
    assert_eq!(
        s.0.meta.oldest_live_upload(Timestamp(0)).expect("sessions"),
        None
    );
    // The next import still gets number 1.
    assert_eq!(import(&b, &p.alice, img.id, b"hello").number, 1);
}

/// The chunk-level protocol: send the manifest, then only missing chunks,
/// across a "broken connection", then commit.
pub fn chunk_upload_protocol_resumes(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data = sparse(7, 2_000_000);
    let chunks: Vec<&[u8]> = data.chunks(CHUNK_SIZE as usize).collect();
    let entries = chunks
        .iter()
        .map(|c| {
            if is_zero(c) {
                None
            } else {
                Some(ChunkHash::of(c))
            }
        })
        .collect();
    let manifest = Manifest::new(data.len() as u64, CHUNK_SIZE, entries).expect("manifest");
    let (session, missing) = b
        .begin_upload(&p.alice, img.id, manifest.clone())
        .expect("begin");
    assert_eq!(missing.len(), manifest.distinct_chunks().len());
    let frame_of = |h: &ChunkHash| {
        let c = chunks
            .iter()
            .find(|c| ChunkHash::of(c) == *h)
            .expect("chunk");
        encode_frame(c, 1).expect("frame")
    };
    let half = missing.len() / 2;
    for h in &missing[..half] {
        b.upload_chunk(&p.alice, session.id, *h, &frame_of(h))
            .expect("chunk");
    }
    let err = b
        .commit_upload(&p.alice, session.id, ImportOptions::default())
        .expect_err("incomplete");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let wrong = b
        .upload_chunk(&p.alice, session.id, missing[half], &frame_of(&missing[0]))
        .expect_err("mismatch");
    assert_eq!(wrong.kind(), ErrorKind::Invalid);
    assert_eq!(
        b.upload_chunk(&p.bob, session.id, missing[half], &frame_of(&missing[half]))
            .expect_err("not bob's")
            .kind(),
        ErrorKind::NotFound
    );
    let rest = b.upload_missing(&p.alice, session.id).expect("resume");
    assert_eq!(rest.len(), missing.len() - half);
    for h in &rest {
        b.upload_chunk(&p.alice, session.id, *h, &frame_of(h))
            .expect("chunk");
    }
    let v = b
        .commit_upload(
            &p.alice,
            session.id,
            ImportOptions {
                note: Some("chunked".into()),
            },
        )
        .expect("commit");
    assert_eq!(v.root, manifest.root());
    assert!(export(&b, &p.alice, img.id, VersionRef::Latest) == data);
    // Uploading the same image again needs no chunk at all.
    let (again, missing) = b.begin_upload(&p.alice, img.id, manifest).expect("begin");
    assert!(missing.is_empty());
    assert_eq!(
        b.commit_upload(&p.alice, again.id, ImportOptions::default())
            .expect("commit")
            .added_bytes,
        0
    );
}

/// A stored chunk whose bytes do not match its hash is an error on read,
/// never wrong data.
pub fn corrupted_chunk_is_an_error(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let good: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i % 251) as u8 | 1).collect();
    let mut evil = good.clone();
    evil[100] ^= 1;
    let h = ChunkHash::of(&good);
    s.0.chunks
        .put(&h, &encode_frame(&evil, 1).expect("frame"))
        .expect("plant");
    s.0.chunks.sync().expect("sync");
    let v = import(&b, &p.alice, img.id, &good);
    let mut r = b
        .open_version(&p.alice, img.id, VersionRef::Number(v.number))
        .expect("open");
    let err = r
        .read_to_end(&mut Vec::new())
        .expect_err("corruption detected");
    let inner = err
        .into_inner()
        .and_then(|e| e.downcast::<crate::Error>().ok())
        .expect("a BAAS error");
    assert_eq!(inner.kind(), ErrorKind::Internal);
    assert!(inner.message().contains("corrupted"), "{}", inner.message());
}

/// Garbage collection removes chunks of deleted versions and images only.
pub fn gc_reclaims_only_orphans(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let a = sparse(1, 1_000_000);
    let mut bb = a.clone();
    bb[500_000..600_000].fill(0x5a);
    let va = import(&b, &p.alice, img.id, &a);
    let vb = import(&b, &p.alice, img.id, &bb);
    let gone = new_image(&b, &p.alice, 4096);
    import(&b, &p.alice, gone.id, &sparse(2, 500_000));
    assert_eq!(
        b.collect_garbage(&p.alice).expect_err("admins only").kind(),
        ErrorKind::Forbidden
    );
    let before = s.0.chunks.usage().expect("usage");
    let noop = b.collect_garbage(&p.admin).expect("gc");
    assert_eq!(noop.usage, before, "nothing is garbage yet");
    b.delete_version(&p.alice, img.id, va.number)
        .expect("delete");
    b.delete_image(&p.alice, gone.id).expect("delete");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = b.collect_garbage(&p.admin).expect("gc");
    assert!(report.sweep.removed > 0);
    assert!(report.usage.bytes < before.bytes);
    assert!(export(&b, &p.alice, img.id, VersionRef::Number(vb.number)) == bb);
    let again = b.collect_garbage(&p.admin).expect("gc");
    assert_eq!(again.sweep.removed, 0, "a second collection finds nothing");
}

struct Gate {
    first: Vec<u8>,
    rest: Vec<u8>,
    pos: usize,
    reached: Option<mpsc::Sender<()>>,
    open: mpsc::Receiver<()>,
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.first.len() {
            let n = buf.len().min(self.first.len() - self.pos);
            buf[..n].copy_from_slice(&self.first[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if let Some(tx) = self.reached.take() {
            let _ = tx.send(());
            let _ = self.open.recv();
        }
        let at = self.pos - self.first.len();
        let n = buf.len().min(self.rest.len() - at);
        buf[..n].copy_from_slice(&self.rest[at..at + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A collection that runs while an import is half done keeps the chunks
/// the import already stored, so the import commits a readable version.
pub fn gc_spares_chunks_of_an_import_in_progress(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data = sparse(77, 2_000_000);
    let (reached_tx, reached_rx) = mpsc::channel();
    let (open_tx, open_rx) = mpsc::channel();
    let half = 16 * CHUNK_SIZE as usize;
    let gate = Gate {
        first: data[..half].to_vec(),
        rest: data[half..].to_vec(),
        pos: 0,
        reached: Some(reached_tx),
        open: open_rx,
    };
    std::thread::scope(|sc| {
        let (b2, who) = (b.clone(), p.alice.clone());
        let h = sc.spawn(move || {
            let mut gate = gate;
            b2.import_version(&who, img.id, &mut gate, ImportOptions::default())
        });
        reached_rx.recv().expect("import reached the gate");
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.collect_garbage(&p.admin).expect("gc");
        open_tx.send(()).expect("open gate");
        let v = h.join().expect("thread").expect("import commits");
        assert!(export(&b, &p.alice, img.id, VersionRef::Number(v.number)) == data);
    });
}

/// Compaction shrinks the store, keeps every byte, and is idempotent.
pub fn compaction_saves_space_and_keeps_bytes(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| ((i / 11) % 17) as u8 ^ ((i >> 9) % 3) as u8)
        .collect();
    let v = import(&b, &p.alice, img.id, &data);
    let before = s.0.chunks.usage().expect("usage");
    assert_eq!(
        b.compact_chunks(&p.alice, 19, 2)
            .expect_err("admins only")
            .kind(),
        ErrorKind::Forbidden
    );
    let r = b.compact_chunks(&p.admin, 19, 2).expect("compact");
    assert!(r.rewritten > 0, "{r:?}");
    let after = s.0.chunks.usage().expect("usage");
    assert_eq!(before.bytes - after.bytes, r.saved_bytes);
    assert!(export(&b, &p.alice, img.id, VersionRef::Number(v.number)) == data);
    let again = b.compact_chunks(&p.admin, 19, 2).expect("compact again");
    assert_eq!(again.rewritten, 0);
}

/// Data whose 64 KiB chunks share a vocabulary of pseudo-random words:
/// each chunk alone compresses poorly, an image's dictionary learns them.
fn vocabulary(len: usize) -> Vec<u8> {
    let word = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3).to_le_bytes();
    let mut x = 987_654_321u64;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Half from a few common words, so that each chunk compresses
        // some on its own (else it is stored raw).
        v.extend_from_slice(&word(if x & 1 == 0 { x % 16 } else { x % 4096 }));
    }
    v.truncate(len);
    v
}

/// Compaction with a per-image dictionary: every byte reads back, the
/// dictionary is reused rather than trained again, and a collection keeps
/// it while any stored frame needs it, even a frame no version references
/// that an import in progress is reusing. Only when no frame needs it any
/// more is it collected.
pub fn compaction_dictionary_outlives_every_frame_that_needs_it(s: &ServicesSubject) {
    use crate::content::frame_dictionary;
    use crate::services::DICTIONARY_MIN_CHUNKS;
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data = vocabulary(DICTIONARY_MIN_CHUNKS * CHUNK_SIZE as usize);
    let v = import(&b, &p.alice, img.id, &data);
    let before = s.0.chunks.usage().expect("usage");
    let r = b.compact_chunks(&p.admin, 3, 2).expect("compact");
    assert_eq!(r.dictionaries, 1, "{r:?}");
    assert!(r.rewritten > 0 && r.saved_bytes > 0, "{r:?}");
    let after = s.0.chunks.usage().expect("usage");
    assert_eq!(before.bytes - after.bytes, r.saved_bytes);
    assert_eq!(after.chunks, before.chunks + 1, "the dictionary is a chunk");
    assert!(export(&b, &p.alice, img.id, VersionRef::Number(v.number)) == data);
    let (_, manifest) = b
        .get_manifest(&p.alice, img.id, VersionRef::Number(v.number))
        .expect("manifest");
    let first = manifest.chunks().flatten().next().expect("data");
    let dict =
        frame_dictionary(&s.0.chunks.get(&first).expect("frame")).expect("a dictionary frame");
    assert!(s.0.chunks.contains(&dict).expect("contains"));
    let again = b.compact_chunks(&p.admin, 3, 2).expect("compact again");
    assert_eq!((again.rewritten, again.dictionaries), (0, 0), "{again:?}");

    std::thread::sleep(std::time::Duration::from_millis(20));
    let gc = b.collect_garbage(&p.admin).expect("gc");
    assert_eq!(gc.sweep.removed, 0, "{gc:?}");
    assert!(gc.dictionaries >= 1);
    assert!(export(&b, &p.alice, img.id, VersionRef::Number(v.number)) == data);

    // The image goes; an import of the same data reuses its first chunks
    // (dictionary frames, recent again) while a collection runs.
    b.delete_image(&p.alice, img.id).expect("delete");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let img2 = new_image(&b, &p.alice, 4096);
    let (reached_tx, reached_rx) = mpsc::channel();
    let (open_tx, open_rx) = mpsc::channel();
    let half = 16 * CHUNK_SIZE as usize;
    let gate = Gate {
        first: data[..half].to_vec(),
        rest: data[half..].to_vec(),
        pos: 0,
        reached: Some(reached_tx),
        open: open_rx,
    };
    std::thread::scope(|sc| {
        let (b2, who) = (b.clone(), p.alice.clone());
        let h = sc.spawn(move || {
            let mut gate = gate;
            b2.import_version(&who, img2.id, &mut gate, ImportOptions::default())
        });
        reached_rx.recv().expect("import reached the gate");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let gc = b.collect_garbage(&p.admin).expect("gc");
        assert!(gc.sweep.removed > 0, "{gc:?}");
        assert!(
            s.0.chunks.contains(&dict).expect("contains"),
            "a frame kept for the import needs the dictionary"
        );
        open_tx.send(()).expect("open gate");
        let v2 = h.join().expect("thread").expect("import commits");
        assert!(export(&b, &p.alice, img2.id, VersionRef::Number(v2.number)) == data);
    });

    // No frame needs it any more: the next collections take it.
    b.delete_image(&p.alice, img2.id).expect("delete");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.collect_garbage(&p.admin).expect("gc");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let last = b.collect_garbage(&p.admin).expect("gc");
    assert!(!s.0.chunks.contains(&dict).expect("contains"), "{last:?}");
}

/// Who may do what, through the services.
pub fn authorization_rules(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let k = |r: crate::Result<Image>| r.expect_err("denied").kind();
    assert_eq!(k(b.get_image(&p.bob, img.id)), ErrorKind::NotFound);
    assert_eq!(
        b.import_version(
            &p.bob,
            img.id,
            &mut Cursor::new(b"x"),
            ImportOptions::default()
        )
        .expect_err("denied")
        .kind(),
        ErrorKind::NotFound
    );
    assert!(b.get_image(&p.admin, img.id).is_ok());
    let bob_id = p.bob.user_id().expect("user");
    let shared = b
        .update_image(
            &p.alice,
            img.id,
            ImagePatch {
                visibility: Some(Visibility::Shared),
                shared_with: Some(vec![bob_id]),
                ..Default::default()
            },
        )
        .expect("share");
    assert_eq!(shared.shared_with, vec![bob_id]);
    assert!(b.get_image(&p.bob, img.id).is_ok());
    assert_eq!(
        k(b.update_image(
            &p.bob,
            img.id,
            ImagePatch {
                name: Some("mine".into()),
                ..Default::default()
            }
        )),
        ErrorKind::Forbidden
    );
    assert_eq!(
        k(b.update_image(
            &p.alice,
            img.id,
            ImagePatch {
                visibility: Some(Visibility::Public),
                ..Default::default()
            }
        )),
        ErrorKind::Forbidden
    );
    assert!(
        b.update_image(
            &p.moderator,
            img.id,
            ImagePatch {
                visibility: Some(Visibility::Public),
                ..Default::default()
            }
        )
        .is_err(),
        "moderators do not write others' images"
    );
    assert!(b
        .update_image(
            &p.admin,
            img.id,
            ImagePatch {
                visibility: Some(Visibility::Public),
                ..Default::default()
            }
        )
        .is_ok());
    assert!(b
        .list_images(&p.bob, None)
        .expect("list")
        .iter()
        .any(|i| i.id == img.id));
    // Users never raise their own role, and never manage others.
    let alice_id = p.alice.user_id().expect("user");
    let up = b.update_user(
        &p.alice,
        alice_id,
        UserPatch {
            role: Some(Role::Admin),
            ..Default::default()
        },
    );
    assert_eq!(
        up.expect_err("no self-promotion").kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        b.update_user(
            &p.alice,
            alice_id,
            UserPatch {
                display_name: Some("Alice".into()),
                ..Default::default()
            }
        )
        .expect("own name")
        .display_name,
        "Alice"
    );
    assert_eq!(
        b.get_user(&p.alice, bob_id)
            .expect_err("not visible")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.list_users(&p.alice).expect_err("denied").kind(),
        ErrorKind::Forbidden
    );
    assert!(b.list_users(&p.moderator).is_ok());
    let nu = NewUser {
        name: format!("x-{}", super::suffix()),
        display_name: String::new(),
        email: String::new(),
        role: Role::Admin,
    };
    assert_eq!(
        b.create_user(&p.moderator, nu.clone())
            .expect_err("admins only")
            .kind(),
        ErrorKind::Forbidden
    );
    let x = b.create_user(&p.admin, nu).expect("admin creates");
    assert_eq!(
        b.update_user(
            &p.admin,
            p.admin.user_id().expect("id"),
            UserPatch {
                role: Some(Role::User),
                ..Default::default()
            }
        )
        .expect_err("own role")
        .kind(),
        ErrorKind::Forbidden
    );
    b.update_user(
        &p.admin,
        x.id,
        UserPatch {
            role: Some(Role::User),
            ..Default::default()
        },
    )
    .expect("admin demotes");
    // Setups are private to their owner.
    let setup = b
        .create_setup(
            &p.alice,
            NewSetup {
                name: "s".into(),
                entries: vec![],
            },
        )
        .expect("setup");
    assert_eq!(
        b.get_setup(&p.bob, setup.id).expect_err("hidden").kind(),
        ErrorKind::NotFound
    );
    assert!(b.list_setups(&p.bob, Some(alice_id)).is_err());
    assert!(b.get_setup(&p.admin, setup.id).is_ok());
    // Machines are managed by moderators.
    let nm = NewMachine {
        mac: "52:54:00:aa:bb:cc".parse().expect("mac"),
        name: Some(format!("m-{}", super::suffix())),
        arch: Arch::X86_64,
        pool: None,
    };
    let nm = NewMachine {
        mac: MacAddress([
            0x52,
            0x54,
            0,
            1,
            super::fresh_uuid().as_bytes()[0],
            super::fresh_uuid().as_bytes()[1],
        ]),
        ..nm
    };
    assert_eq!(
        b.register_machine(&p.alice, nm.clone())
            .expect_err("denied")
            .kind(),
        ErrorKind::Forbidden
    );
    assert!(b.register_machine(&p.moderator, nm).is_ok());
    assert!(b.list_machines(&p.bob).is_ok());
}

/// Tokens authenticate until revoked or expired; garbage never does.
pub fn tokens_authenticate_until_revoked(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let alice = p.alice.user_id().expect("id");
    let (token, secret) = b
        .create_token(&p.alice, alice, "laptop", None)
        .expect("token");
    assert!(secret.starts_with("baas_") && secret.len() == 5 + 64);
    assert_eq!(b.authenticate(&secret).expect("auth"), p.alice);
    assert_eq!(
        b.authenticate("baas_0000").expect_err("garbage").kind(),
        ErrorKind::Unauthenticated
    );
    assert_eq!(
        b.authenticate("").expect_err("empty").kind(),
        ErrorKind::Unauthenticated
    );
    assert!(b
        .list_tokens(&p.alice, alice)
        .expect("list")
        .iter()
        .all(|t| t.secret_hash != [0; 32]));
    assert_eq!(
        b.create_token(&p.bob, alice, "evil", None)
            .expect_err("not bob's")
            .kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        b.revoke_token(&p.bob, token.id)
            .expect_err("not bob's")
            .kind(),
        ErrorKind::NotFound
    );
    b.revoke_token(&p.alice, token.id).expect("revoke");
    assert_eq!(
        b.authenticate(&secret).expect_err("revoked").kind(),
        ErrorKind::Unauthenticated
    );
    let (_, short) = b
        .create_token(&p.alice, alice, "short", Some(1))
        .expect("token");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        b.authenticate(&short).expect_err("expired").kind(),
        ErrorKind::Unauthenticated
    );
    assert!(b
        .create_token(&p.alice, alice, "forever", Some(-5))
        .is_err());
}

/// Queueing, the agent's side of a job, and who may capture what.
pub fn queue_flow_and_capture_rules(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let v1 = import(&b, &p.alice, img.id, &sparse(5, 300_000));
    let mut public = new_image(&b, &p.moderator, 4096);
    public = b
        .update_image(
            &p.moderator,
            public.id,
            ImagePatch {
                visibility: Some(Visibility::Public),
                ..Default::default()
            },
        )
        .expect("publish");
    let mac = MacAddress([
        0x52,
        0x54,
        0,
        2,
        super::fresh_uuid().as_bytes()[0],
        super::fresh_uuid().as_bytes()[1],
    ]);
    let m = b
        .register_machine(
            &p.moderator,
            NewMachine {
                mac,
                name: None,
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("machine");
    assert_eq!(m.name, mac.hyphenated());
    let entry = |image: ImageId, capture| SetupEntry {
        image,
        version: VersionRef::Latest,
        disk: None,
        capture,
    };
    let bad = b.create_setup(
        &p.alice,
        NewSetup {
            name: "x".into(),
            entries: vec![entry(public.id, true)],
        },
    );
    assert_eq!(
        bad.expect_err("capture needs write").kind(),
        ErrorKind::Forbidden
    );
    let setup = b
        .create_setup(
            &p.alice,
            NewSetup {
                name: "exp".into(),
                entries: vec![entry(img.id, true), entry(public.id, false)],
            },
        )
        .expect("setup");
    let job = b
        .enqueue_job(
            &p.alice,
            JobRequest {
                machine: m.id,
                target: JobTarget::Setup(setup.id),
            },
        )
        .expect("enqueue");
    assert_eq!(
        job.entries[0].version, v1.number,
        "latest resolved when queued"
    );
    assert_eq!(job.entries[1].version, 0);
    assert_eq!(
        b.enqueue_job(
            &p.bob,
            JobRequest {
                machine: m.id,
                target: JobTarget::Setup(setup.id)
            }
        )
        .expect_err("not bob's")
        .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.delete_version(&p.alice, img.id, v1.number)
            .expect_err("in use")
            .kind(),
        ErrorKind::Conflict
    );
    let q2 = b
        .enqueue_job(
            &p.bob,
            JobRequest {
                machine: m.id,
                target: JobTarget::Image {
                    image: public.id,
                    version: VersionRef::Number(0),
                    disk: None,
                    capture: false,
                },
            },
        )
        .expect("bob queues");
    assert_eq!(b.machine_queue(&p.bob, m.id).expect("queue").len(), 2);
    assert_eq!(
        b.get_job(&p.bob, job.id).expect_err("hidden").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.cancel_job(&p.bob, job.id).expect_err("hidden").kind(),
        ErrorKind::NotFound
    );
    let (_, agent_secret) = b
        .issue_agent_token(&p.moderator, m.id, 60_000)
        .expect("agent token");
    assert!(
        b.issue_agent_token(&p.alice, m.id, 60_000).is_err(),
        "users do not issue machine credentials"
    );
    let agent = b.authenticate(&agent_secret).expect("agent authenticates");
    assert_eq!(agent, Actor::Agent { machine: m.id });
    let stranger = Actor::Agent {
        machine: MachineId(super::fresh_uuid()),
    };
    assert_eq!(
        b.next_job(&stranger, m.id)
            .expect_err("other machine")
            .kind(),
        ErrorKind::Forbidden
    );
    let got = b.next_job(&agent, m.id).expect("next").expect("a job");
    assert_eq!(got.id, job.id);
    assert_eq!(
        b.next_job(&agent, m.id).expect("again").map(|j| j.id),
        Some(job.id),
        "a rebooted agent redoes its job"
    );
    b.report_progress(
        &agent,
        job.id,
        Progress {
            phase: "flash".into(),
            bytes_done: 5,
            bytes_total: 10,
            rate: 1,
        },
    )
    .expect("progress");
    assert!(b
        .report_progress(
            &agent,
            job.id,
            Progress {
                phase: "flash".into(),
                bytes_done: 11,
                bytes_total: 10,
                rate: 1
            }
        )
        .is_err());
    b.advance_job(&agent, job.id, JobState::Running, "booted")
        .expect("running");
    assert_eq!(
        b.advance_job(&agent, job.id, JobState::Provisioning, "back")
            .expect_err("illegal")
            .kind(),
        ErrorKind::Conflict
    );
    b.advance_job(&agent, job.id, JobState::Capturing, "session over")
        .expect("capturing");
    b.advance_job(&agent, job.id, JobState::Succeeded, "captured")
        .expect("done");
    let kinds: Vec<String> = b
        .job_events(&p.alice, job.id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            "queued",
            "provisioning",
            "provisioning",
            "running",
            "session",
            "capturing",
            "succeeded"
        ]
    );
    let next = b.next_job(&agent, m.id).expect("next").expect("bob's job");
    assert_eq!(next.id, q2.id);
    let failed = b
        .fail_job(
            &agent,
            q2.id,
            "flash",
            "disk /dev/vda is smaller than the image",
        )
        .expect("fail");
    assert_eq!(
        failed.error.as_deref(),
        Some("flash: disk /dev/vda is smaller than the image")
    );
    assert_eq!(
        b.list_jobs(&p.alice, JobFilter::default())
            .expect("mine")
            .len(),
        1
    );
    assert_eq!(
        b.list_jobs(
            &p.moderator,
            JobFilter {
                machine: Some(m.id),
                ..Default::default()
            }
        )
        .expect("all")
        .len(),
        2
    );
    b.update_machine(
        &p.moderator,
        m.id,
        MachinePatch {
            state: Some(MachineState::Pending),
            ..Default::default()
        },
    )
    .expect("unaccept");
    let pending = b.enqueue_job(
        &p.alice,
        JobRequest {
            machine: m.id,
            target: JobTarget::Setup(setup.id),
        },
    );
    assert_eq!(
        pending.expect_err("not accepted").kind(),
        ErrorKind::Conflict
    );
}

/// Seeking reads the right bytes; "latest" follows deletes.
pub fn range_reads_and_latest(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let data = sparse(3, 700_001);
    let v1 = import(&b, &p.alice, img.id, &data);
    let v2 = import(&b, &p.alice, img.id, b"tiny");
    let mut r = b
        .open_version(&p.alice, img.id, VersionRef::Number(v1.number))
        .expect("open");
    for (start, len) in [
        (0usize, 10usize),
        (65_530, 20),
        (400_000, 100_000),
        (700_000, 1),
        (699_990, 50),
    ] {
        r.seek(SeekFrom::Start(start as u64)).expect("seek");
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = r.read(&mut buf[got..]).expect("read");
            if n == 0 {
                break;
            }
            got += n;
        }
        let want = &data[start.min(data.len())..(start + len).min(data.len())];
        assert_eq!(&buf[..got], want, "range {start}+{len}");
    }
    assert_eq!(
        b.get_version(&p.alice, img.id, VersionRef::Latest)
            .expect("latest")
            .number,
        v2.number
    );
    b.delete_version(&p.alice, img.id, v2.number)
        .expect("delete");
    assert_eq!(
        b.get_version(&p.alice, img.id, VersionRef::Latest)
            .expect("latest")
            .number,
        v1.number
    );
    assert_eq!(
        b.get_version(&p.alice, img.id, VersionRef::Number(v2.number))
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    let _ = Arc::new(());
}

/// A clock the test moves by hand.
#[derive(Debug)]
struct HandClock(std::sync::atomic::AtomicI64);

impl crate::ports::Clock for HandClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl HandClock {
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

fn is_mos(a: &BootAction) -> Option<(MachineId, String)> {
    match a {
        BootAction::ManagementOs {
            machine, secret, ..
        } => Some((machine.id, secret.clone())),
        BootAction::LocalDisk { .. } => None,
    }
}

/// The boot decision: unknown MACs are ignored or enroll as `pending`
/// (management OS, no jobs until accepted); a ready machine boots the
/// management OS only when it has work, with a credential scoped to it that
/// expires; a running job's machine boots its disk until the session ends
/// (its length, release); power cycles are due once per start and end.
pub fn boot_decisions_enrollment_sessions_and_power(s: &ServicesSubject) {
    let u = *super::fresh_uuid().as_bytes();
    let mac = MacAddress([0x52, 0x54, 0xb0, u[0], u[1], u[2]]);
    let clock = Arc::new(HandClock(std::sync::atomic::AtomicI64::new(
        s.0.clock.now().millis(),
    )));
    let ports = |clock: Arc<HandClock>| Ports {
        clock,
        ..s.0.clone()
    };
    let ignoring = Baas::new(ports(clock.clone()), Config::default());
    assert!(
        is_mos(&ignoring.boot(mac, None).expect("boot")).is_none(),
        "enrollment off: the local disk"
    );
    assert!(ignoring.get_machine_by_mac(&Actor::System, mac).is_err());
    let b = Baas::new(
        ports(clock.clone()),
        Config {
            enroll: EnrollPolicy::Enroll,
            boot_token_ttl_ms: 600_000,
            max_hold_ms: 3_600_000,
            ..Config::default()
        },
    );
    let p = people(&b);
    let (id, secret) = is_mos(&b.boot(mac, Some(Arch::X86_64)).expect("boot")).expect("enrolls");
    let m = b.get_machine(&p.alice, id).expect("machine");
    assert_eq!(m.state, MachineState::Pending);
    let agent = b.authenticate(&secret).expect("the boot credential");
    assert_eq!(agent, Actor::Agent { machine: id });
    assert!(
        b.next_job(&agent, id).expect("next").is_none(),
        "pending: no work"
    );
    let image = new_image(&b, &p.alice, 4096);
    let request = || JobRequest {
        machine: id,
        target: JobTarget::Image {
            image: image.id,
            version: VersionRef::Number(0),
            disk: None,
            capture: false,
        },
    };
    assert_eq!(
        b.enqueue_job(&p.alice, request())
            .expect_err("pending")
            .kind(),
        ErrorKind::Conflict
    );
    let (again, _) = is_mos(&b.boot(mac, None).expect("boot")).expect("still enrolling");
    assert_eq!(again, id, "one machine per MAC");
    assert_eq!(
        b.accept_machine(&p.alice, id).expect_err("users").kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        b.accept_machine(&p.moderator, id).expect("accept").state,
        MachineState::Ready
    );
    assert!(
        is_mos(&b.boot(mac, None).expect("boot")).is_none(),
        "nothing to do"
    );

    assert_eq!(
        b.enqueue_job_for(&p.alice, request(), Some(3_600_001))
            .expect_err("longer than the maximum")
            .kind(),
        ErrorKind::Invalid
    );
    let job = b
        .enqueue_job_for(&p.alice, request(), Some(60_000))
        .expect("queue");
    let (_, secret) = is_mos(&b.boot(mac, None).expect("boot")).expect("work to do");
    let agent = b.authenticate(&secret).expect("agent");
    let other = Actor::Agent {
        machine: MachineId(super::fresh_uuid()),
    };
    assert_eq!(
        b.next_job(&other, id).expect_err("another machine").kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        b.next_job(&agent, id).expect("next").map(|j| j.id),
        Some(job.id)
    );
    assert!(
        is_mos(&b.boot(mac, None).expect("boot")).is_some(),
        "reset mid-flash: the management OS again"
    );
    b.advance_job(&agent, job.id, JobState::Running, "flashed")
        .expect("running");
    let running = b.get_job(&p.alice, job.id).expect("job");
    assert_eq!(
        running.session.ends_at,
        Some(crate::ports::Clock::now(&*clock).plus_millis(60_000)),
        "the session runs for what was asked"
    );
    assert!(
        is_mos(&b.boot(mac, None).expect("boot")).is_none(),
        "the user's OS"
    );
    assert!(
        b.power_due(&Actor::System).expect("due").is_empty(),
        "manual power"
    );
    assert_eq!(
        b.power_due(&p.admin).expect_err("only the server").kind(),
        ErrorKind::Forbidden
    );
    let qmp = MachineBoot {
        power: PowerConfig::Qmp {
            address: "unix:/run/vm.qmp".into(),
        },
        neutral: NeutralState::Keep,
    };
    assert_eq!(
        b.set_machine_boot(&p.alice, id, qmp.clone())
            .expect_err("users")
            .kind(),
        ErrorKind::Forbidden
    );
    let bad = MachineBoot {
        power: PowerConfig::Qmp {
            address: "/no/scheme".into(),
        },
        neutral: NeutralState::Keep,
    };
    assert_eq!(
        b.set_machine_boot(&p.admin, id, bad)
            .expect_err("bad")
            .kind(),
        ErrorKind::Invalid
    );
    b.set_machine_boot(&p.admin, id, qmp).expect("qmp");
    assert!(
        b.power_due(&Actor::System).expect("due").is_empty(),
        "still running"
    );
    assert_eq!(
        b.release_job(&p.bob, job.id).expect_err("not bob's").kind(),
        ErrorKind::NotFound
    );
    b.release_job(&p.alice, job.id).expect("release");
    let due = b.power_due(&Actor::System).expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].job, job.id);
    assert_eq!(due[0].action, crate::ports::PowerAction::Cycle);
    b.power_done(&Actor::System, &due[0], None).expect("done");
    assert!(b.power_due(&Actor::System).expect("due").is_empty(), "once");
    assert!(
        is_mos(&b.boot(mac, None).expect("boot")).is_some(),
        "the session ended: the management OS"
    );
    b.advance_job(&agent, job.id, JobState::Succeeded, "nothing to capture")
        .expect("done");
    assert!(is_mos(&b.boot(mac, None).expect("boot")).is_none());

    // Without a length the session lasts the maximum.
    let job2 = b.enqueue_job(&p.alice, request()).expect("queue");
    let due = b.power_due(&Actor::System).expect("due");
    assert_eq!(
        due.iter().map(|r| r.job).collect::<Vec<_>>(),
        vec![job2.id],
        "cycled to start"
    );
    assert!(b.power_due(&Actor::System).expect("due").is_empty(), "once");
    b.next_job(&agent, id).expect("next");
    b.advance_job(&agent, job2.id, JobState::Running, "flashed")
        .expect("running");
    clock.advance(3_600_000 - 1);
    assert!(is_mos(&b.boot(mac, None).expect("boot")).is_none());
    clock.advance(1);
    assert!(
        is_mos(&b.boot(mac, None).expect("boot")).is_some(),
        "the maximum ran out"
    );
    assert_eq!(b.power_due(&Actor::System).expect("due").len(), 1);

    let kinds: Vec<String> = b
        .job_events(&p.alice, job.id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in [
        "queued",
        "boot",
        "provisioning",
        "running",
        "session",
        "released",
        "power",
        "succeeded",
    ] {
        assert!(
            kinds.iter().any(|x| x == k),
            "{k} in the timeline: {kinds:?}"
        );
    }

    // Credentials expire; retired machines boot their disk.
    clock.advance(600_000);
    assert_eq!(
        b.authenticate(&secret).expect_err("expired").kind(),
        ErrorKind::Unauthenticated
    );
    b.cancel_job(&p.alice, job2.id).expect("cancel");
    b.retire_machine(&p.moderator, id).expect("retire");
    assert!(is_mos(&b.boot(mac, None).expect("boot")).is_none());
}

/// The return to a neutral state: after a job, a machine set to `wipe`
/// gets a restore job writing each entry's blank version 0, one set to a
/// setup gets that setup; a restore job ends as soon as it is flashed;
/// nothing is queued while other jobs wait, or for `keep`.
pub fn neutral_state_after_jobs(s: &ServicesSubject) {
    let b = Baas::new(s.0.clone(), Config::default());
    let p = people(&b);
    let m = b
        .register_machine(
            &p.admin,
            NewMachine {
                mac: MacAddress([0x52, 0x54, 0xb1, super::fresh_uuid().as_bytes()[0], 1, 2]),
                name: Some(format!("n-{}", super::suffix())),
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("machine");
    let agent = Actor::Agent { machine: m.id };
    let image = new_image(&b, &p.alice, 8192);
    let queue = |who: &Actor| {
        b.enqueue_job(
            who,
            JobRequest {
                machine: m.id,
                target: JobTarget::Image {
                    image: image.id,
                    version: VersionRef::Number(0),
                    disk: Some("/dev/vdb".parse().expect("disk")),
                    capture: false,
                },
            },
        )
        .expect("queue")
    };
    let run_and_release = |job: &Job| {
        let got = b.next_job(&agent, m.id).expect("next").expect("job");
        assert_eq!(got.id, job.id);
        b.advance_job(&agent, job.id, JobState::Running, "flashed")
            .expect("running");
        b.release_job(&p.alice, job.id).expect("release");
        b.advance_job(&agent, job.id, JobState::Succeeded, "done")
            .expect("done");
    };
    let queued = || {
        b.machine_queue(&p.admin, m.id)
            .expect("queue")
            .into_iter()
            .filter(|j| j.state == JobState::Queued)
            .collect::<Vec<_>>()
    };

    // keep: nothing follows.
    let j = queue(&p.alice);
    run_and_release(&j);
    assert!(queued().is_empty());

    // wipe: version 0 of each entry, on the same disks, then done at once.
    let wipe = MachineBoot {
        power: PowerConfig::Manual,
        neutral: NeutralState::Wipe,
    };
    b.set_machine_boot(&p.admin, m.id, wipe).expect("wipe");
    let j = queue(&p.alice);
    run_and_release(&j);
    let restore = queued();
    assert_eq!(restore.len(), 1, "{restore:?}");
    let r = &restore[0];
    assert!(r.is_restore());
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].version, 0);
    assert_eq!(r.entries[0].disk.to_string(), "/dev/vdb");
    assert!(!r.entries[0].capture);
    assert!(b
        .job_events(&p.alice, j.id)
        .expect("events")
        .iter()
        .any(|e| e.kind == "neutral" && e.message.contains(&r.id.to_string())));
    let got = b.next_job(&agent, m.id).expect("next").expect("restore");
    assert_eq!(got.id, r.id);
    let done = b
        .advance_job(&agent, r.id, JobState::Running, "flashed")
        .expect("flashed");
    assert_eq!(
        done.state,
        JobState::Succeeded,
        "a restore job ends when flashed"
    );
    assert!(queued().is_empty(), "no restore of a restore");

    // A setup, after a cancelled job; nothing while others wait.
    let neutral_image = new_image(&b, &p.admin, 4096);
    let setup = b
        .create_setup(
            &p.admin,
            NewSetup {
                name: "neutral".into(),
                entries: vec![SetupEntry {
                    image: neutral_image.id,
                    version: VersionRef::Latest,
                    disk: None,
                    capture: false,
                }],
            },
        )
        .expect("setup");
    let to_setup = MachineBoot {
        power: PowerConfig::Manual,
        neutral: NeutralState::Setup(setup.id),
    };
    assert_eq!(
        b.set_machine_boot(&p.moderator, m.id, to_setup.clone())
            .expect_err("not the moderator's setup")
            .kind(),
        ErrorKind::NotFound
    );
    b.set_machine_boot(&p.admin, m.id, to_setup).expect("setup");
    let j = queue(&p.alice);
    b.next_job(&agent, m.id).expect("next");
    b.cancel_job(&p.alice, j.id).expect("cancel");
    let restore = queued();
    assert_eq!(restore.len(), 1);
    assert_eq!(restore[0].entries[0].image, neutral_image.id);
    assert_eq!(restore[0].setup, Some(setup.id));
    b.cancel_job(&p.admin, restore[0].id)
        .expect("cancel the restore");
    assert!(
        queued().is_empty(),
        "a restore that never started restores nothing"
    );
    let j = queue(&p.alice);
    let waiting = queue(&p.alice);
    run_and_release(&j);
    assert_eq!(
        queued().iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![waiting.id],
        "the next job overwrites the disks anyway"
    );
}

fn job_of(p: Placed, why: &str) -> Job {
    match p {
        Placed::Job(j) => j,
        other => panic!("{why}: {other:?}"),
    }
}

fn waiting_of(p: Placed, why: &str) -> (Placement, String) {
    match p {
        Placed::Waiting { placement, reason } => (placement, reason),
        other => panic!("{why}: {other:?}"),
    }
}

/// Placement on any machine that fits: architecture, pool, the largest
/// reported disk, and idleness; when none fits, each machine's reason.
pub fn placement_on_any_machine_that_fits(s: &ServicesSubject) {
    let b = Baas::new(s.0.clone(), Config::default());
    let p = people(&b);
    let pool = format!("gpu-{}", super::suffix());
    let machine = |arch: Arch, pool: Option<String>, disk: Option<u64>| {
        let u = *super::fresh_uuid().as_bytes();
        let m = b
            .register_machine(
                &p.admin,
                NewMachine {
                    mac: MacAddress([0x52, 0x54, 0xb2, u[0], u[1], u[2]]),
                    name: Some(format!("p-{}", super::suffix())),
                    arch,
                    pool,
                },
            )
            .expect("machine");
        if let Some(size) = disk {
            let disk = DiskInfo {
                path: "/dev/sda".into(),
                by_id: vec![],
                serial: None,
                wwn: None,
                model: None,
                size,
                logical_block: 512,
                physical_block: 512,
                rotational: false,
                removable: false,
            };
            b.report_inventory(
                &p.admin,
                m.id,
                Inventory {
                    disks: vec![disk],
                    ..Inventory::default()
                },
            )
            .expect("inventory");
        }
        m
    };
    let arm = machine(Arch::Aarch64, Some(pool.clone()), Some(1 << 40));
    let big = machine(Arch::X86_64, Some(pool.clone()), Some(1 << 40));
    let small = machine(Arch::X86_64, Some(pool.clone()), Some(10 << 30));
    let image = new_image(&b, &p.alice, 4096);
    let target = || JobTarget::Image {
        image: image.id,
        version: VersionRef::Number(0),
        disk: None,
        capture: false,
    };
    let fit = Fit {
        arch: Some(Arch::X86_64),
        min_disk_bytes: 100 << 30,
        pool: Some(pool.clone()),
    };
    let bobs_image = new_image(&b, &p.bob, 4096);
    let placed = |who: &Actor, fit: &Fit| {
        b.place_job(
            who,
            fit,
            if *who == p.bob {
                JobTarget::Image {
                    image: bobs_image.id,
                    version: VersionRef::Number(0),
                    disk: None,
                    capture: false,
                }
            } else {
                target()
            },
            None,
            None,
        )
        .expect("accepted")
    };
    let job = match b
        .place_job(&p.alice, &fit, target(), Some(60_000), None)
        .expect("placed")
    {
        Placed::Job(j) => j,
        other => panic!("an idle machine fits: {other:?}"),
    };
    assert_eq!(job.machine, big.id);
    assert_eq!(job.session.hold_ms, Some(60_000));
    let bound = b.get_placement(&p.alice, job.id).expect("kept");
    assert_eq!(bound.placement.state, PlacementState::Bound);
    assert_eq!(bound.placement.machine, Some(big.id));
    assert!(bound.reason.is_none());

    // Nothing fits now: bob's request waits, saying why.
    let (waiting, reason) = waiting_of(placed(&p.bob, &fit), "nothing fits now");
    assert_eq!(waiting.state, PlacementState::Waiting);
    assert!(reason.contains("only fitting machine is busy"), "{reason}");
    assert!(reason.contains(&job.id.to_string()), "{reason}");
    assert!(reason.contains("largest disk"), "{reason}");
    assert!(reason.contains("architecture aarch64"), "{reason}");
    assert_eq!(
        b.get_job(&p.bob, waiting.id)
            .expect_err("no job yet")
            .kind(),
        ErrorKind::NotFound
    );
    let listed = b.waiting_placements(&p.alice).expect("anyone lists");
    let mine = listed
        .iter()
        .find(|w| w.placement.id == waiting.id)
        .expect("listed");
    assert!(mine.reason.as_deref().is_some_and(|r| r.contains("busy")));
    assert_eq!(
        b.get_placement(&p.alice, waiting.id)
            .expect_err("not hers")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.cancel_job(&p.bob, waiting.id)
            .expect_err("a placement")
            .kind(),
        ErrorKind::Conflict
    );
    let why = b.machines_for(&p.bob, &fit).expect("candidates");
    let reason = |id: MachineId| {
        why.iter()
            .find(|c| c.machine.id == id)
            .expect("listed")
            .unfit
            .clone()
    };
    assert!(reason(big.id).is_some_and(|r| r.contains(&job.id.to_string())));
    assert!(reason(small.id).is_some());
    assert!(reason(arm.id).is_some());
    let smaller = Fit {
        min_disk_bytes: 1 << 30,
        ..fit.clone()
    };
    assert_eq!(
        job_of(placed(&p.alice, &smaller), "placed").machine,
        small.id,
        "the idle machine that fits"
    );
    // Alice's job ends: bob's placement gets the machine at once, as a
    // job with the placement's id.
    b.cancel_job(&p.alice, job.id).expect("cancel");
    let bobs = b.get_job(&p.bob, waiting.id).expect("bound on cancel");
    assert_eq!((bobs.machine, bobs.state), (big.id, JobState::Queued));
    assert_eq!(bobs.owner, waiting.owner);
    assert!(b
        .job_events(&p.bob, bobs.id)
        .expect("timeline")
        .iter()
        .any(|e| e.kind == "placed"));
    assert_eq!(
        b.get_placement(&p.bob, waiting.id)
            .expect("kept")
            .placement
            .state,
        PlacementState::Bound
    );
    assert_eq!(
        b.cancel_placement(&p.bob, waiting.id)
            .expect_err("bound: cancel the job")
            .kind(),
        ErrorKind::Conflict
    );

    // A pool no machine is in: waits; a machine joining it takes it at the
    // server's next pass; a cancelled placement is never bound.
    let late = format!("late-{}", super::suffix());
    let nowhere = Fit {
        pool: Some(late.clone()),
        ..Fit::default()
    };
    let (first, reason) = waiting_of(placed(&p.alice, &nowhere), "no pool");
    assert!(
        reason.contains(&format!("no accepted machine has pool {late}")),
        "{reason}"
    );
    let (second, _) = waiting_of(placed(&p.alice, &nowhere), "no pool");
    let (third, _) = waiting_of(placed(&p.bob, &nowhere), "no pool");
    assert_eq!(
        b.cancel_placement(&p.bob, first.id)
            .expect_err("not his")
            .kind(),
        ErrorKind::NotFound
    );
    let c = b.cancel_placement(&p.alice, first.id).expect("cancel");
    assert_eq!(c.state, PlacementState::Cancelled);
    assert_eq!(
        b.cancel_placement(&p.alice, first.id)
            .expect_err("twice")
            .kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        b.bind_waiting(&p.admin).expect_err("the server's").kind(),
        ErrorKind::Forbidden
    );
    let joined = machine(Arch::X86_64, Some(late.clone()), None);
    let bound = b.bind_waiting(&Actor::System).expect("pass");
    let ids: Vec<JobId> = bound.iter().map(|j| j.id).collect();
    assert!(ids.contains(&second.id), "the oldest waiting one");
    assert!(!ids.contains(&first.id) && !ids.contains(&third.id));
    assert_eq!(
        b.get_job(&p.alice, second.id).expect("job").machine,
        joined.id
    );
    let reason = b
        .get_placement(&p.bob, third.id)
        .expect("waits")
        .reason
        .expect("why");
    assert!(reason.contains("only fitting machine is busy"), "{reason}");
    // The agent of an idle machine that fits, asking for work, gets the
    // oldest waiting placement at once (no server pass needed).
    let later = format!("later-{}", super::suffix());
    let (fourth, _) = waiting_of(
        placed(
            &p.alice,
            &Fit {
                pool: Some(later.clone()),
                ..Fit::default()
            },
        ),
        "no pool yet",
    );
    let newcomer = machine(Arch::X86_64, Some(later), None);
    let taken = b
        .next_job(
            &Actor::Agent {
                machine: newcomer.id,
            },
            newcomer.id,
        )
        .expect("next")
        .expect("bound and handed out");
    assert_eq!((taken.id, taken.state), (fourth.id, JobState::Provisioning));
    // What a waiting placement writes is deleted meanwhile: when a machine
    // fits, the placement is cancelled with the reason, not bound.
    let doomed_pool = format!("doomed-{}", super::suffix());
    let doomed_image = new_image(&b, &p.alice, 4096);
    let doomed = match b
        .place_job(
            &p.alice,
            &Fit {
                pool: Some(doomed_pool.clone()),
                ..Fit::default()
            },
            JobTarget::Image {
                image: doomed_image.id,
                version: VersionRef::Number(0),
                disk: None,
                capture: false,
            },
            None,
            None,
        )
        .expect("waits")
    {
        Placed::Waiting { placement, .. } => placement,
        other => panic!("no machine in the pool: {other:?}"),
    };
    b.delete_image(&p.alice, doomed_image.id)
        .expect("nothing queued needs it");
    machine(Arch::X86_64, Some(doomed_pool), None);
    assert!(!b
        .bind_waiting(&Actor::System)
        .expect("pass")
        .iter()
        .any(|j| j.id == doomed.id));
    let gone = b.get_placement(&p.alice, doomed.id).expect("kept");
    assert_eq!(gone.placement.state, PlacementState::Cancelled);
    assert!(
        gone.placement
            .error
            .as_deref()
            .is_some_and(|e| e.contains("deleted")),
        "{gone:?}"
    );

    // Input that can never be valid is refused; agents do not queue.
    assert_eq!(
        b.place_job(&p.alice, &fit, target(), Some(0), None)
            .expect_err("zero session")
            .kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        b.place_job(
            &p.alice,
            &Fit {
                pool: Some("bad pool\n".into()),
                ..Fit::default()
            },
            target(),
            None,
            None
        )
        .expect_err("bad pool")
        .kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        b.place_job(
            &Actor::Agent { machine: big.id },
            &fit,
            target(),
            None,
            None
        )
        .expect_err("agents do not queue")
        .kind(),
        ErrorKind::Forbidden
    );
}

/// A job queued for a window that opens later: until then the machine
/// boots its disk, the agent gets nothing and no power cycle is due.
pub fn jobs_wait_for_their_window(s: &ServicesSubject) {
    let clock = Arc::new(HandClock(std::sync::atomic::AtomicI64::new(
        s.0.clock.now().millis(),
    )));
    let b = Baas::new(
        Ports {
            clock: clock.clone(),
            ..s.0.clone()
        },
        Config::default(),
    );
    let p = people(&b);
    let u = *super::fresh_uuid().as_bytes();
    let mac = MacAddress([0x52, 0x54, 0xb3, u[0], u[1], u[2]]);
    let m = b
        .register_machine(
            &p.admin,
            NewMachine {
                mac,
                name: Some(format!("w-{}", super::suffix())),
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("machine");
    b.set_machine_boot(
        &p.admin,
        m.id,
        MachineBoot {
            power: PowerConfig::Qmp {
                address: "tcp:127.0.0.1:4444".into(),
            },
            neutral: NeutralState::Keep,
        },
    )
    .expect("power");
    let image = new_image(&b, &p.alice, 4096);
    let opens = crate::ports::Clock::now(&*clock).plus_millis(60_000);
    let job = b
        .enqueue_job_at(
            &p.alice,
            JobRequest {
                machine: m.id,
                target: JobTarget::Image {
                    image: image.id,
                    version: VersionRef::Number(0),
                    disk: None,
                    capture: false,
                },
            },
            None,
            Some(opens),
        )
        .expect("queue");
    assert_eq!(job.session.not_before, Some(opens));
    let agent = Actor::Agent { machine: m.id };
    match b.boot(mac, None).expect("boot") {
        BootAction::LocalDisk { reason } => assert!(reason.contains("starts at"), "{reason}"),
        other => panic!("not yet: {other:?}"),
    }
    assert!(b.next_job(&agent, m.id).expect("next").is_none());
    assert!(b.power_due(&Actor::System).expect("due").is_empty());
    clock.advance(60_000);
    assert_eq!(b.power_due(&Actor::System).expect("due").len(), 1);
    assert!(is_mos(&b.boot(mac, None).expect("boot")).is_some());
    assert_eq!(
        b.next_job(&agent, m.id).expect("next").map(|j| j.id),
        Some(job.id)
    );
}

/// A machine's presence: offline only when it is expected to talk and is
/// silent past the limit (never from a user's OS's silence), or its power
/// adapter says off; contact is every boot and agent call. Power actions by
/// hand: moderators only, a machine without an adapter is `Conflict`, the
/// outcome is in the machine's history.
pub fn machine_presence_and_power_by_hand(s: &ServicesSubject) {
    use crate::ports::{PowerAction, PowerState};
    let u = *super::fresh_uuid().as_bytes();
    let mac = MacAddress([0x52, 0x54, 0xc0, u[0], u[1], u[2]]);
    let clock = Arc::new(HandClock(std::sync::atomic::AtomicI64::new(
        s.0.clock.now().millis(),
    )));
    let b = Baas::new(
        Ports {
            clock: clock.clone(),
            ..s.0.clone()
        },
        Config {
            offline_after_ms: 60_000,
            ..Config::default()
        },
    );
    let p = people(&b);
    let m = b
        .register_machine(
            &p.moderator,
            NewMachine {
                mac,
                name: None,
                arch: Arch::X86_64,
                pool: None,
            },
        )
        .expect("register");
    let presence = |power| {
        let m = b.get_machine(&p.alice, m.id).expect("machine");
        let queue = b.machine_queue(&p.moderator, m.id).expect("queue");
        b.machine_presence(&m, &queue, power)
    };
    assert_eq!(presence(PowerState::Unknown), Presence::Online, "idle");
    clock.advance(3_600_000);
    assert_eq!(
        presence(PowerState::Unknown),
        Presence::Online,
        "an idle machine boots its own disk: silence says nothing"
    );
    assert_eq!(presence(PowerState::Off), Presence::PoweredOff);
    assert!(presence(PowerState::Off).is_offline());

    let image = new_image(&b, &p.alice, 4096);
    let job = b
        .enqueue_job_for(
            &p.alice,
            JobRequest {
                machine: m.id,
                target: JobTarget::Image {
                    image: image.id,
                    version: VersionRef::Number(0),
                    disk: None,
                    capture: false,
                },
            },
            Some(60_000_000),
        )
        .expect("queue");
    let (_, secret) = is_mos(&b.boot(mac, None).expect("boot")).expect("work");
    let seen = b.get_machine(&p.alice, m.id).expect("m").last_seen;
    assert_eq!(
        seen,
        Some(crate::ports::Clock::now(&*clock)),
        "a boot is contact"
    );
    clock.advance(CONTACT_EVERY_MS);
    let agent = b.authenticate(&secret).expect("agent");
    b.next_job(&agent, m.id).expect("next").expect("the job");
    assert_eq!(
        b.get_machine(&p.alice, m.id).expect("m").last_seen,
        Some(crate::ports::Clock::now(&*clock)),
        "an agent call is contact"
    );
    clock.advance(1_000);
    b.authenticate(&secret).expect("agent");
    assert_eq!(
        b.get_machine(&p.alice, m.id).expect("m").last_seen,
        Some(Timestamp(
            crate::ports::Clock::now(&*clock).millis() - 1_000
        )),
        "written down at most every CONTACT_EVERY_MS"
    );
    assert_eq!(presence(PowerState::Unknown), Presence::Online, "flashing");
    clock.advance(60_001);
    assert_eq!(
        presence(PowerState::Unknown),
        Presence::Silent,
        "the agent went quiet mid-flash"
    );
    let agent = b.authenticate(&secret).expect("agent");
    assert_eq!(presence(PowerState::Unknown), Presence::Online, "back");
    b.advance_job(&agent, job.id, JobState::Running, "flashed")
        .expect("running");
    clock.advance(3_600_000);
    assert_eq!(
        presence(PowerState::Unknown),
        Presence::Online,
        "the user's OS runs no agent: not offline"
    );
    assert_eq!(presence(PowerState::Off), Presence::PoweredOff);

    // Power by hand.
    assert_eq!(
        b.request_power(&p.alice, m.id, PowerAction::Cycle)
            .expect_err("users")
            .kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(
        b.request_power(&agent, m.id, PowerAction::Cycle)
            .expect_err("agents")
            .kind(),
        ErrorKind::Forbidden
    );
    let e = b
        .request_power(&p.moderator, m.id, PowerAction::Off)
        .expect_err("manual");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("no power adapter configured"), "{e}");
    let mut boot = m.boot.clone();
    boot.power = PowerConfig::Qmp {
        address: "unix:/nowhere/qmp.sock".into(),
    };
    b.set_machine_boot(&p.moderator, m.id, boot)
        .expect("boot config");
    let got = b
        .request_power(&p.admin, m.id, PowerAction::Off)
        .expect("admins may");
    b.power_applied(&p.admin, &got, PowerAction::Off, None)
        .expect("record");
    b.power_applied(&p.moderator, &got, PowerAction::On, Some("no answer"))
        .expect("record");
    let history: Vec<String> = b
        .machine_history(&p.alice, m.id)
        .expect("anyone may read it")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains("power on") && history[0].contains("failed (qmp): no answer"));
    assert!(history[1].starts_with("power off by ") && history[1].ends_with("(qmp)"));
    assert_eq!(
        b.machine_history(&agent, m.id).expect_err("agents").kind(),
        ErrorKind::Forbidden
    );
}

/// Sharing by login name: only the owner (or an admin) manages the list; a
/// private image becomes shared; the named user reads it until unshared;
/// unknown names and the owner's own name are `Invalid`.
pub fn sharing_with_named_users(s: &ServicesSubject) {
    let b = baas(s);
    let p = people(&b);
    let img = new_image(&b, &p.alice, 4096);
    let bob_name = match &p.bob {
        Actor::User { name, .. } => name.clone(),
        _ => unreachable!("bob is a user"),
    };
    let alice_name = match &p.alice {
        Actor::User { name, .. } => name.clone(),
        _ => unreachable!("alice is a user"),
    };
    assert_eq!(
        b.get_image(&p.bob, img.id).expect_err("private").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.share_image_with(&p.bob, img.id, &bob_name)
            .expect_err("not his")
            .kind(),
        ErrorKind::NotFound
    );
    for bad in ["", "nobody-by-this-name", alice_name.as_str()] {
        assert_eq!(
            b.share_image_with(&p.alice, img.id, bad)
                .expect_err(bad)
                .kind(),
            ErrorKind::Invalid,
            "{bad:?}"
        );
    }
    let shared = b
        .share_image_with(&p.alice, img.id, &bob_name)
        .expect("share");
    assert_eq!(shared.visibility, Visibility::Shared);
    b.share_image_with(&p.alice, img.id, &format!(" {bob_name} "))
        .expect("twice is once");
    assert_eq!(
        b.image_shared_names(&p.alice, img.id).expect("names"),
        std::slice::from_ref(&bob_name)
    );
    assert_eq!(
        b.image_shared_names(&p.bob, img.id)
            .expect_err("readers do not manage the list")
            .kind(),
        ErrorKind::Forbidden
    );
    b.get_image(&p.bob, img.id).expect("bob reads it");
    assert!(b
        .list_images(&p.bob, None)
        .expect("list")
        .iter()
        .any(|i| i.id == img.id));
    b.unshare_image_from(&p.alice, img.id, &bob_name)
        .expect("unshare");
    assert_eq!(
        b.get_image(&p.bob, img.id).expect_err("unshared").kind(),
        ErrorKind::NotFound
    );
    assert!(b
        .image_shared_names(&p.admin, img.id)
        .expect("admins manage it too")
        .is_empty());
}

/// The enrollment policy is an admin setting in the store: the
/// configuration only seeds it (at the server's start), an admin changes
/// it at runtime, and the next boot decision, on any server sharing the
/// store, follows it.
pub fn enrollment_policy_is_an_admin_setting(s: &ServicesSubject) {
    let b = Baas::new(s.0.clone(), Config::default());
    let p = people(&b);
    let mac = |n: u8| {
        let u = *super::fresh_uuid().as_bytes();
        MacAddress([0x52, 0x54, 0xe7, u[0], u[1], n])
    };
    assert_eq!(
        b.init_settings(&Actor::System)
            .expect("init")
            .unknown_machines,
        EnrollPolicy::Ignore
    );
    assert!(
        is_mos(&b.boot(mac(1), None).expect("boot")).is_none(),
        "ignored"
    );
    for who in [&p.alice, &p.moderator] {
        assert_eq!(
            b.admin_settings(who).expect_err("admins only").kind(),
            ErrorKind::Forbidden
        );
        assert_eq!(
            b.set_admin_settings(
                who,
                AdminSettingsPatch {
                    unknown_machines: Some(EnrollPolicy::Enroll)
                }
            )
            .expect_err("admins only")
            .kind(),
            ErrorKind::Forbidden
        );
    }
    assert_eq!(
        b.init_settings(&p.admin).expect_err("the server's").kind(),
        ErrorKind::Forbidden
    );
    let now = b
        .set_admin_settings(
            &p.admin,
            AdminSettingsPatch {
                unknown_machines: Some(EnrollPolicy::Enroll),
            },
        )
        .expect("set");
    assert_eq!(now.unknown_machines, EnrollPolicy::Enroll);
    assert!(
        is_mos(&b.boot(mac(2), None).expect("boot")).is_some(),
        "enrolls without a restart"
    );
    // Another server on the same store, started with the old flag: the
    // stored setting wins, and its boot decisions follow it too.
    let other = Baas::new(s.0.clone(), Config::default());
    assert_eq!(
        other
            .init_settings(&Actor::System)
            .expect("init")
            .unknown_machines,
        EnrollPolicy::Enroll
    );
    assert!(is_mos(&other.boot(mac(3), None).expect("boot")).is_some());
    assert_eq!(
        b.set_admin_settings(&p.admin, AdminSettingsPatch::default())
            .expect("no change")
            .unknown_machines,
        EnrollPolicy::Enroll
    );
    b.set_admin_settings(
        &p.admin,
        AdminSettingsPatch {
            unknown_machines: Some(EnrollPolicy::Ignore),
        },
    )
    .expect("set");
    assert!(is_mos(&other.boot(mac(4), None).expect("boot")).is_none());
    assert_eq!(
        b.admin_settings(&p.admin).expect("read").unknown_machines,
        EnrollPolicy::Ignore
    );
}

/// A placement for a window that opens later holds no machine until then
/// (the idle machine stays free for others), says so, and is bound by the
/// first pass after the window opens.
pub fn placements_hold_no_machine_before_their_window(s: &ServicesSubject) {
    let clock = Arc::new(HandClock(std::sync::atomic::AtomicI64::new(
        s.0.clock.now().millis(),
    )));
    let b = Baas::new(
        Ports {
            clock: clock.clone(),
            ..s.0.clone()
        },
        Config::default(),
    );
    let p = people(&b);
    let pool = format!("win-{}", super::suffix());
    let u = *super::fresh_uuid().as_bytes();
    let m = b
        .register_machine(
            &p.admin,
            NewMachine {
                mac: MacAddress([0x52, 0x54, 0xb4, u[0], u[1], u[2]]),
                name: Some(format!("win-{}", super::suffix())),
                arch: Arch::X86_64,
                pool: Some(pool.clone()),
            },
        )
        .expect("machine");
    let image = new_image(&b, &p.alice, 4096);
    let fit = Fit {
        pool: Some(pool),
        ..Fit::default()
    };
    let target = || JobTarget::Image {
        image: image.id,
        version: VersionRef::Number(0),
        disk: None,
        capture: false,
    };
    let opens = b.now().plus_millis(60_000);
    let (later, reason) = waiting_of(
        b.place_job(&p.alice, &fit, target(), None, Some(opens))
            .expect("accepted"),
        "its window has not opened",
    );
    assert!(reason.contains("window opens in 60 s"), "{reason}");
    assert!(b.bind_waiting(&Actor::System).expect("pass").is_empty());
    // Meanwhile the machine is free for a job due now.
    let now_job = job_of(
        b.place_job(&p.alice, &fit, target(), None, None)
            .expect("accepted"),
        "the machine is idle",
    );
    assert_eq!(now_job.machine, m.id);
    b.cancel_job(&p.alice, now_job.id).expect("cancel");
    clock.advance(60_000);
    let bound = b.bind_waiting(&Actor::System).expect("pass");
    assert_eq!(
        bound.iter().map(|j| (j.id, j.machine)).collect::<Vec<_>>(),
        vec![(later.id, m.id)],
        "bound once its window opened"
    );
    assert_eq!(
        b.get_job(&p.alice, later.id)
            .expect("job")
            .session
            .not_before,
        Some(opens)
    );
}
