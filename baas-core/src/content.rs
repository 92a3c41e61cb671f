//! Content addressing: the chunk layout, chunk hashes, manifests and the
//! compressed chunk frame. Shared by the server (import, export, garbage
//! collection) and the agent (delta flash, capture), so both sides agree on
//! every byte.
//!
//! An image is cut at fixed offsets into chunks of [`CHUNK_SIZE`] bytes (the
//! last one may be shorter). Each chunk is named by the blake3 hash of its
//! bytes. All-zero chunks are never stored: the manifest records them as
//! holes. Fixed, disk-aligned offsets (rather than content-defined chunking)
//! are what let the agent compare a disk in place, block for block, and
//! write only the chunks that differ. See ARCHITECTURE.md for why 64 KiB.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::{Error, Result};

/// The chunk size of every new version: 64 KiB (see ARCHITECTURE.md,
/// "Choosing the chunk size").
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size a manifest may declare.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size a manifest may declare.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// A blake3 hash: of a chunk's bytes, or a manifest's root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[(b >> 4) as usize]));
            s.push(char::from(HEX[(b & 15) as usize]));
        }
        s
    }

    /// The hash of `len` zero bytes (cached for the usual lengths).
    pub fn of_zeros(len: usize) -> ChunkHash {
        static FULL: OnceLock<ChunkHash> = OnceLock::new();
        if len == CHUNK_SIZE as usize {
            return *FULL.get_or_init(|| ChunkHash::of(&vec![0u8; CHUNK_SIZE as usize]));
        }
        ChunkHash::of(&vec![0u8; len])
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", &self.to_hex()[..16])
    }
}

impl FromStr for ChunkHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || Error::invalid("hash", format!("{s:?} is not 64 hex digits"));
        // All 64 must be hex digits: `from_str_radix` alone also takes a
        // sign, so "+3" passed for "03" (found by fuzz/agent_messages).
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(ChunkHash(out))
    }
}

/// Whether every byte of `data` is zero. Word-at-a-time: zero detection
/// runs on every byte of every import and capture.
pub fn is_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        let acc = block.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().expect("chunks_exact(8)"))
        });
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|b| *b == 0)
}

/// The ordered chunk list of one version.
///
/// Held as maximal runs of holes and of stored chunks, so its memory grows
/// with the stored chunks and the number of runs, never with the image's
/// declared size: the blank version 0 of a 16 TiB image is one run, not
/// 256 Mi entries (a dense list would be 8.8 GB).
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    size: u64,
    chunk_size: u32,
    /// Number of chunk positions (`chunk_count(size, chunk_size)`).
    count: u64,
    /// Maximal runs in order, holes and stored chunks alternating.
    runs: Vec<Run>,
    /// Every stored chunk's hash, in order.
    hashes: Vec<ChunkHash>,
}

/// One run of a [`Manifest`]: positions `start..` up to the next run's
/// start; `hashes_at` indexes the manifest's `hashes` for a run of stored
/// chunks, and is `HOLE` for a run of holes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Run {
    start: u64,
    hashes_at: u64,
}

const HOLE: u64 = u64::MAX;

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.count)
            .field("data_chunks", &self.data_chunks())
            .finish()
    }
}

fn check_chunk_size(chunk_size: u32) -> Result<()> {
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::invalid(
            "chunk_size",
            format!("{chunk_size} must be a power of two from 4 KiB to 16 MiB"),
        ));
    }
    Ok(())
}

/// Number of chunks an image of `size` bytes has.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

/// Builds a [`Manifest`] one position at a time, in order, in memory that
/// grows with the stored chunks only (a capture of a large, mostly empty
/// disk pushes millions of holes).
#[derive(Debug)]
pub struct ManifestBuilder {
    size: u64,
    chunk_size: u32,
    count: u64,
    pushed: u64,
    runs: Vec<Run>,
    hashes: Vec<ChunkHash>,
}

impl ManifestBuilder {
    /// A builder for an image of `size` bytes in chunks of `chunk_size`.
    pub fn new(size: u64, chunk_size: u32) -> Result<ManifestBuilder> {
        check_chunk_size(chunk_size)?;
        Ok(ManifestBuilder {
            size,
            chunk_size,
            count: chunk_count(size, chunk_size),
            pushed: 0,
            runs: Vec::new(),
            hashes: Vec::new(),
        })
    }

    /// Appends `n` holes.
    pub fn holes(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.runs.last().is_none_or(|r| r.hashes_at != HOLE) {
            self.runs.push(Run {
                start: self.pushed,
                hashes_at: HOLE,
            });
        }
        self.pushed += n;
    }

    /// Appends one stored chunk.
    pub fn chunk(&mut self, hash: ChunkHash) {
        if self.runs.last().is_none_or(|r| r.hashes_at == HOLE) {
            self.runs.push(Run {
                start: self.pushed,
                hashes_at: self.hashes.len() as u64,
            });
        }
        self.hashes.push(hash);
        self.pushed += 1;
    }

    /// Appends one position: a stored chunk or a hole.
    pub fn push(&mut self, entry: Option<ChunkHash>) {
        match entry {
            Some(h) => self.chunk(h),
            None => self.holes(1),
        }
    }

    /// Positions pushed so far.
    pub fn len(&self) -> u64 {
        self.pushed
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The manifest; fails unless exactly every position was pushed.
    pub fn finish(self) -> Result<Manifest> {
        if self.pushed != self.count {
            return Err(Error::invalid(
                "manifest",
                format!(
                    "{} chunks do not cover {} bytes in chunks of {}",
                    self.pushed, self.size, self.chunk_size
                ),
            ));
        }
        Ok(Manifest {
            size: self.size,
            chunk_size: self.chunk_size,
            count: self.count,
            runs: self.runs,
            hashes: self.hashes,
        })
    }
}

/// The positions of a [`Manifest`] in order: `Some(hash)` for a stored
/// chunk, `None` for a hole.
#[derive(Clone, Debug)]
pub struct Chunks<'m> {
    manifest: &'m Manifest,
    run: usize,
    pos: u64,
}

impl Iterator for Chunks<'_> {
    type Item = Option<ChunkHash>;

    fn next(&mut self) -> Option<Option<ChunkHash>> {
        let m = self.manifest;
        if self.pos >= m.count {
            return None;
        }
        while self.run + 1 < m.runs.len() && m.runs[self.run + 1].start <= self.pos {
            self.run += 1;
        }
        let r = m.runs[self.run];
        let entry =
            (r.hashes_at != HOLE).then(|| m.hashes[(r.hashes_at + self.pos - r.start) as usize]);
        self.pos += 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.manifest.count - self.pos) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Chunks<'_> {}

impl Manifest {
    /// A manifest from its parts; checks that the chunk count fits the size.
    pub fn new(size: u64, chunk_size: u32, chunks: Vec<Option<ChunkHash>>) -> Result<Manifest> {
        let mut b = ManifestBuilder::new(size, chunk_size)?;
        for c in chunks {
            b.push(c);
        }
        b.finish()
    }

    /// All zeros: the blank version 0 of an image of `size` bytes.
    pub fn blank(size: u64) -> Manifest {
        let mut b = ManifestBuilder {
            size,
            chunk_size: CHUNK_SIZE,
            count: chunk_count(size, CHUNK_SIZE),
            pushed: 0,
            runs: Vec::new(),
            hashes: Vec::new(),
        };
        b.holes(b.count);
        Manifest {
            size,
            chunk_size: CHUNK_SIZE,
            count: b.count,
            runs: b.runs,
            hashes: b.hashes,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunk positions, holes included.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the image has no chunk at all (size 0).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every position in order; `None` is a hole.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            manifest: self,
            run: 0,
            pos: 0,
        }
    }

    /// The stored chunks with their positions, in order (holes skipped
    /// without visiting them).
    pub fn stored(&self) -> impl Iterator<Item = (usize, ChunkHash)> + '_ {
        self.runs.iter().enumerate().flat_map(move |(k, r)| {
            let end = self.runs.get(k + 1).map_or(self.count, |n| n.start);
            let first = if r.hashes_at == HOLE { 0 } else { r.hashes_at };
            let len = if r.hashes_at == HOLE {
                0
            } else {
                end - r.start
            };
            self.hashes[first as usize..(first + len) as usize]
                .iter()
                .enumerate()
                .map(move |(i, h)| ((r.start + i as u64) as usize, *h))
        })
    }

    /// The entry at position `index`: `Some(hash)` if stored, `None` for a
    /// hole. Panics past the end, as indexing does.
    pub fn chunk(&self, index: usize) -> Option<ChunkHash> {
        let i = index as u64;
        assert!(i < self.count, "chunk {index} of {}", self.count);
        let k = self.runs.partition_point(|r| r.start <= i) - 1;
        let r = self.runs[k];
        (r.hashes_at != HOLE).then(|| self.hashes[(r.hashes_at + i - r.start) as usize])
    }

    /// Whether some position holds `hash`.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.hashes.contains(hash)
    }

    /// Number of chunks that are stored (not holes).
    pub fn data_chunks(&self) -> usize {
        self.hashes.len()
    }

    /// Byte length of chunk `index`.
    pub fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * u64::from(self.chunk_size);
        (self.size - start).min(u64::from(self.chunk_size)) as usize
    }

    /// The hash of chunk `index` as its bytes hash, holes included.
    pub fn chunk_hash(&self, index: usize) -> ChunkHash {
        match self.chunk(index) {
            Some(h) => h,
            None => ChunkHash::of_zeros(self.chunk_len(index)),
        }
    }

    /// The root hash: blake3 (in derive-key mode) over the size, the chunk
    /// size and every chunk's hash in order, holes as the hash of their
    /// zeros. Anyone holding the bytes can recompute it (the agent does,
    /// after writing a disk), whatever was or was not stored.
    pub fn root(&self) -> ChunkHash {
        let mut h = blake3::Hasher::new_derive_key("baas 2026 manifest root v1");
        h.update(&self.size.to_le_bytes());
        h.update(&self.chunk_size.to_le_bytes());
        let full_zero = ChunkHash::of_zeros(self.chunk_size as usize);
        for (i, c) in self.chunks().enumerate() {
            let hash = match c {
                Some(h) => h,
                None if self.chunk_len(i) == self.chunk_size as usize => full_zero,
                None => ChunkHash::of_zeros(self.chunk_len(i)),
            };
            h.update(&hash.0);
        }
        ChunkHash(*h.finalize().as_bytes())
    }

    /// The distinct stored chunks.
    pub fn distinct_chunks(&self) -> std::collections::BTreeSet<ChunkHash> {
        self.hashes.iter().copied().collect()
    }

    /// The canonical binary encoding (stored in the database and sent to
    /// the agent): magic, chunk size, size, then maximal runs of holes and
    /// hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.data_chunks() * 32 + 5 * self.runs.len());
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        for (k, r) in self.runs.iter().enumerate() {
            let end = self.runs.get(k + 1).map_or(self.count, |n| n.start);
            let mut at = r.start;
            // A run longer than a u32 is written as several.
            while at < end {
                let n = (end - at).min(u64::from(u32::MAX));
                if r.hashes_at == HOLE {
                    out.push(0);
                    out.extend_from_slice(&(n as u32).to_le_bytes());
                } else {
                    out.push(1);
                    out.extend_from_slice(&(n as u32).to_le_bytes());
                    let first = (r.hashes_at + at - r.start) as usize;
                    for c in &self.hashes[first..first + n as usize] {
                        out.extend_from_slice(&c.0);
                    }
                }
                at += n;
            }
        }
        out
    }

    /// Decodes [`Manifest::encode`]'s output. Rejects anything that is not
    /// exactly a canonical encoding, so `encode(decode(b)) == b`. Memory
    /// grows with the input, not with the size it declares.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let bad = |why: &str| Error::invalid("manifest", why.to_string());
        let rest = bytes
            .strip_prefix(MANIFEST_MAGIC)
            .ok_or_else(|| bad("bad magic"))?;
        let (cs, rest) = split_array::<4>(rest).ok_or_else(|| bad("truncated header"))?;
        let (size, mut rest) = split_array::<8>(rest).ok_or_else(|| bad("truncated header"))?;
        let chunk_size = u32::from_le_bytes(cs);
        let size = u64::from_le_bytes(size);
        check_chunk_size(chunk_size)?;
        if size > crate::model::MAX_IMAGE_SIZE {
            return Err(bad("size over 16 TiB"));
        }
        let mut b = ManifestBuilder::new(size, chunk_size)?;
        let count = b.count;
        let (mut last_tag, mut last_len) = (None, 0u32);
        while !rest.is_empty() {
            let (&tag, r) = rest.split_first().ok_or_else(|| bad("truncated run"))?;
            let (n, r) = split_array::<4>(r).ok_or_else(|| bad("truncated run"))?;
            let n = u32::from_le_bytes(n);
            if n == 0 || last_tag == Some(tag) && last_len != u32::MAX {
                return Err(bad("non-canonical runs"));
            }
            if b.len() + u64::from(n) > count {
                return Err(bad("more chunks than the size needs"));
            }
            rest = r;
            match tag {
                0 => b.holes(u64::from(n)),
                1 => {
                    let need = (n as usize)
                        .checked_mul(32)
                        .ok_or_else(|| bad("run too long"))?;
                    if rest.len() < need {
                        return Err(bad("truncated hashes"));
                    }
                    let (hashes, r) = rest.split_at(need);
                    for h in hashes.chunks_exact(32) {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(h);
                        b.chunk(ChunkHash(a));
                    }
                    rest = r;
                }
                _ => return Err(bad("unknown run tag")),
            }
            last_tag = Some(tag);
            last_len = n;
        }
        if b.len() != count {
            return Err(bad("fewer chunks than the size needs"));
        }
        b.finish()
    }
}

const MANIFEST_MAGIC: &[u8; 8] = b"BAASMF1\0";

fn split_array<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
    if b.len() < N {
        return None;
    }
    let (a, rest) = b.split_at(N);
    let mut out = [0u8; N];
    out.copy_from_slice(a);
    Some((out, rest))
}

/// Frame tag: the payload is the chunk's bytes as they are.
const FRAME_RAW: u8 = 0;
/// Frame tag: the payload is one zstd frame.
const FRAME_ZSTD: u8 = 1;
/// Frame tag: one zstd frame, recompressed by compaction (decoded like
/// `FRAME_ZSTD`).
const FRAME_ZSTD_COMPACT: u8 = 2;
/// Frame tag: the 32-byte hash of a zstd dictionary, then one zstd frame
/// made with that dictionary (compaction). The dictionary is stored in the
/// chunk store like a chunk, under that hash.
const FRAME_ZSTD_DICT: u8 = 3;

/// Bytes at the start of a frame that say everything about its encoding,
/// the dictionary it needs included (see [`frame_dictionary`]).
pub const FRAME_HEADER_LEN: usize = 33;

/// Largest dictionary compaction trains (zstd's default size).
pub const MAX_DICTIONARY_SIZE: usize = 112_640;

/// The dictionary `frame` needs to decode, if any. Reads only the first
/// [`FRAME_HEADER_LEN`] bytes, so a frame's header is enough.
pub fn frame_dictionary(frame: &[u8]) -> Option<ChunkHash> {
    match frame.split_first() {
        Some((&FRAME_ZSTD_DICT, rest)) if rest.len() >= 32 => {
            let mut h = [0u8; 32];
            h.copy_from_slice(&rest[..32]);
            Some(ChunkHash(h))
        }
        _ => None,
    }
}

/// A zstd dictionary: its bytes, named by their hash, ready for decoding.
/// Stored in the chunk store as an ordinary frame of those bytes
/// ([`Dictionary::frame`]), so it travels and is verified like a chunk.
pub struct Dictionary {
    hash: ChunkHash,
    bytes: Vec<u8>,
    decoder: zstd::dict::DecoderDictionary<'static>,
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary")
            .field("hash", &self.hash)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Dictionary {
    /// The dictionary made of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Dictionary {
        Dictionary {
            hash: ChunkHash::of(&bytes),
            decoder: zstd::dict::DecoderDictionary::copy(&bytes),
            bytes,
        }
    }

    /// Decodes a dictionary's stored frame and checks it against `hash`.
    pub fn from_frame(frame: &[u8], hash: &ChunkHash) -> Result<Dictionary> {
        if frame_dictionary(frame).is_some() {
            return Err(Error::internal(format!(
                "dictionary {hash} is itself stored with a dictionary"
            )));
        }
        Ok(Dictionary::new(decode_frame(frame, hash)?))
    }

    /// Trains a dictionary of at most `max_size` bytes on `samples` (zstd's
    /// dictionary builder). Fails when the samples are too few or too
    /// uniform to learn from.
    pub fn train(samples: &[&[u8]], max_size: usize) -> Result<Dictionary> {
        let bytes = zstd::dict::from_samples(samples, max_size).map_err(|e| {
            Error::internal("training a compression dictionary failed").with_source(e)
        })?;
        Ok(Dictionary::new(bytes))
    }

    /// The hash its bytes hash to: its name in the chunk store.
    pub fn hash(&self) -> ChunkHash {
        self.hash
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame it is stored as (never itself with a dictionary).
    pub fn frame(&self) -> Result<Vec<u8>> {
        encode_frame(&self.bytes, 19)
    }
}

/// Compresses chunks with a dictionary, as compaction does (one per
/// thread: it holds a zstd context with the dictionary loaded).
pub struct DictEncoder {
    dictionary: ChunkHash,
    compressor: zstd::bulk::Compressor<'static>,
}

impl fmt::Debug for DictEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictEncoder({:?})", self.dictionary)
    }
}

impl DictEncoder {
    /// An encoder at zstd `level` with `dictionary`.
    pub fn new(dictionary: &Dictionary, level: i32) -> Result<DictEncoder> {
        let compressor = zstd::bulk::Compressor::with_dictionary(level, dictionary.bytes())
            .map_err(|e| Error::internal("creating a zstd context failed").with_source(e))?;
        Ok(DictEncoder {
            dictionary: dictionary.hash(),
            compressor,
        })
    }

    /// The dictionary frame of `data`; `None` when it would not save at
    /// least 1/64 of `old_len` (the size of the frame it would replace).
    pub fn encode(&mut self, data: &[u8], old_len: usize) -> Result<Option<Vec<u8>>> {
        let z = self
            .compressor
            .compress(data)
            .map_err(|e| Error::internal("compressing a chunk failed").with_source(e))?;
        if FRAME_HEADER_LEN + z.len() + old_len / 64 >= old_len {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + z.len());
        out.push(FRAME_ZSTD_DICT);
        out.extend_from_slice(&self.dictionary.0);
        out.extend_from_slice(&z);
        Ok(Some(out))
    }
}

/// Encodes a chunk for storage and transfer: zstd at `level`, or raw when
/// compression would not save at least 1/32 of the bytes. For many chunks,
/// [`FrameEncoder`] reuses its compression context.
pub fn encode_frame(data: &[u8], level: i32) -> Result<Vec<u8>> {
    FrameEncoder::new(level)?.encode(data)
}

/// Whether `frame` was already recompressed by compaction (or is stored
/// raw because it does not compress).
pub fn frame_is_compact(frame: &[u8]) -> bool {
    matches!(
        frame.first(),
        Some(&FRAME_ZSTD_COMPACT) | Some(&FRAME_ZSTD_DICT) | Some(&FRAME_RAW)
    )
}

/// Whether `frame` is stored raw (it did not compress).
pub fn frame_is_raw(frame: &[u8]) -> bool {
    frame.first() == Some(&FRAME_RAW)
}

/// Recompresses the decoded bytes of a chunk at `level` as a compacted
/// frame; `None` when that would not save at least 1/64 of `old_len`.
pub fn compact_frame(data: &[u8], level: i32, old_len: usize) -> Result<Option<Vec<u8>>> {
    let z = zstd::bulk::compress(data, level)
        .map_err(|e| Error::internal("compressing a chunk failed").with_source(e))?;
    if z.len() + 1 + old_len / 64 >= old_len {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(z.len() + 1);
    out.push(FRAME_ZSTD_COMPACT);
    out.extend_from_slice(&z);
    Ok(Some(out))
}

/// Encodes chunk frames with one reusable zstd context (one per thread).
pub struct FrameEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameEncoder")
    }
}

impl FrameEncoder {
    /// An encoder at zstd `level`.
    pub fn new(level: i32) -> Result<FrameEncoder> {
        let compressor = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::internal("creating a zstd context failed").with_source(e))?;
        Ok(FrameEncoder {
            compressor,
            scratch: Vec::new(),
        })
    }

    /// The frame for `data` (see [`encode_frame`]). Chunks whose first 4 KiB
    /// do not compress (already compressed or encrypted data) are stored
    /// raw without compressing the rest: most of an import's CPU otherwise
    /// goes into compressing what will not shrink. Unless another 4 KiB
    /// block of the chunk is all zeros: a few new blocks written into free
    /// space (a scattered write, a small file) would otherwise be stored,
    /// and sent to every agent, as 64 KiB. Looking costs little: a block
    /// of data ends the zero check at its first bytes.
    pub fn encode(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        const SAMPLE: usize = 4096;
        if data.len() >= 4 * SAMPLE && !data.chunks_exact(SAMPLE).skip(1).any(is_zero) {
            self.scratch.clear();
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(SAMPLE));
            let n = self
                .compressor
                .compress_to_buffer(&data[..SAMPLE], &mut self.scratch)
                .map_err(|e| Error::internal("compressing a chunk failed").with_source(e))?;
            if n + SAMPLE / 32 >= SAMPLE {
                let mut out = Vec::with_capacity(1 + data.len());
                out.push(FRAME_RAW);
                out.extend_from_slice(data);
                return Ok(out);
            }
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        let n = self
            .compressor
            .compress_to_buffer(data, &mut self.scratch)
            .map_err(|e| Error::internal("compressing a chunk failed").with_source(e))?;
        let mut out = Vec::with_capacity(1 + n.min(data.len()));
        if n + data.len() / 32 < data.len() {
            out.push(FRAME_ZSTD);
            out.extend_from_slice(&self.scratch[..n]);
        } else {
            out.push(FRAME_RAW);
            out.extend_from_slice(data);
        }
        Ok(out)
    }
}

/// Decodes a frame and checks it against `hash`. A mismatch is an error,
/// never silent corruption; so is a frame that expands past
/// [`MAX_CHUNK_SIZE`], and a frame that needs a dictionary (use
/// [`decode_frame_with`] or a [`FrameDecoder`]).
pub fn decode_frame(frame: &[u8], hash: &ChunkHash) -> Result<Vec<u8>> {
    decode_frame_with(frame, hash, None)
}

/// Room to decompress a zstd frame into: its declared content size when
/// that is sane, else the largest chunk.
fn decompressed_capacity(payload: &[u8]) -> usize {
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n <= u64::from(MAX_CHUNK_SIZE) => n as usize,
        _ => MAX_CHUNK_SIZE as usize,
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused for every plain
    /// frame: creating one per chunk (`zstd::bulk::decompress`) allocates
    /// and clears ~100 KiB each time, a tenth of a flash's CPU.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd payload without a dictionary, on this thread's
/// reused context.
fn decompress_plain(payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let capacity = decompressed_capacity(payload);
    DECOMPRESSOR.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            match slot.as_mut() {
                Some(d) => d.decompress(payload, capacity),
                None => zstd::bulk::decompress(payload, capacity),
            }
        }
        // Re-entered on this thread (never in practice): a fresh context.
        Err(_) => zstd::bulk::decompress(payload, capacity),
    })
}

/// [`decode_frame`], with the dictionary the frame needs, if it needs one
/// ([`frame_dictionary`]).
pub fn decode_frame_with(
    frame: &[u8],
    hash: &ChunkHash,
    dictionary: Option<&Dictionary>,
) -> Result<Vec<u8>> {
    let undecodable =
        |e| Error::internal(format!("chunk {hash} does not decompress")).with_source(e);
    let data = match frame.split_first() {
        Some((&FRAME_RAW, payload)) if payload.len() <= MAX_CHUNK_SIZE as usize => payload.to_vec(),
        Some((&(FRAME_ZSTD | FRAME_ZSTD_COMPACT), payload)) => {
            decompress_plain(payload).map_err(undecodable)?
        }
        Some((&FRAME_ZSTD_DICT, rest)) if rest.len() > 32 => {
            let want = frame_dictionary(frame).expect("a dictionary frame names one");
            let dict = match dictionary {
                Some(d) if d.hash() == want => d,
                _ => {
                    return Err(Error::internal(format!(
                        "chunk {hash} needs dictionary {want}, which was not given"
                    )))
                }
            };
            let payload = &rest[32..];
            zstd::bulk::Decompressor::with_prepared_dictionary(&dict.decoder)
                .and_then(|mut d| d.decompress(payload, decompressed_capacity(payload)))
                .map_err(undecodable)?
        }
        _ => {
            return Err(Error::internal(format!(
                "chunk {hash} has a malformed frame"
            )))
        }
    };
    let got = ChunkHash::of(&data);
    if got != *hash {
        return Err(Error::internal(format!(
            "chunk {hash} is corrupted: its bytes hash to {got}"
        )));
    }
    Ok(data)
}

/// Most dictionaries a [`FrameDecoder`] keeps (one per image, usually).
const DECODER_DICTIONARIES: usize = 8;

/// Decodes frames, loading the dictionaries they need once and keeping
/// them. Shared by the threads of one reader (an export, a flash).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    dictionaries: std::sync::Mutex<Vec<std::sync::Arc<Dictionary>>>,
    /// Held while loading, so threads that need the same new dictionary
    /// at once load it once.
    loading: std::sync::Mutex<()>,
}

impl FrameDecoder {
    /// A decoder that knows no dictionary yet.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// The dictionary named `hash`, if already loaded.
    pub fn dictionary(&self, hash: &ChunkHash) -> Option<std::sync::Arc<Dictionary>> {
        self.dictionaries
            .lock()
            .ok()?
            .iter()
            .find(|d| d.hash() == *hash)
            .cloned()
    }

    /// Keeps `dictionary` for later frames.
    pub fn add(&self, dictionary: Dictionary) -> std::sync::Arc<Dictionary> {
        let d = std::sync::Arc::new(dictionary);
        if let Ok(mut all) = self.dictionaries.lock() {
            if !all.iter().any(|x| x.hash() == d.hash()) {
                if all.len() >= DECODER_DICTIONARIES {
                    all.remove(0);
                }
                all.push(d.clone());
            }
        }
        d
    }

    /// [`FrameDecoder::decode`], borrowing a raw frame's bytes instead of
    /// copying them (after checking them against `hash` all the same).
    pub fn decode_borrowed<'f>(
        &self,
        frame: &'f [u8],
        hash: &ChunkHash,
        load: impl FnOnce(&ChunkHash) -> Result<Vec<u8>>,
    ) -> Result<std::borrow::Cow<'f, [u8]>> {
        match frame.split_first() {
            Some((&FRAME_RAW, payload)) if payload.len() <= MAX_CHUNK_SIZE as usize => {
                let got = ChunkHash::of(payload);
                if got != *hash {
                    return Err(Error::internal(format!(
                        "chunk {hash} is corrupted: its bytes hash to {got}"
                    )));
                }
                Ok(std::borrow::Cow::Borrowed(payload))
            }
            _ => self.decode(frame, hash, load).map(std::borrow::Cow::Owned),
        }
    }

    /// Decodes `frame` (see [`decode_frame`]). When it needs a dictionary
    /// not loaded yet, `load` gets that dictionary's stored frame, which is
    /// verified against the dictionary's hash before use.
    pub fn decode(
        &self,
        frame: &[u8],
        hash: &ChunkHash,
        load: impl FnOnce(&ChunkHash) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let Some(want) = frame_dictionary(frame) else {
            return decode_frame(frame, hash);
        };
        let dict = match self.dictionary(&want) {
            Some(d) => d,
            None => {
                let _one = self.loading.lock();
                match self.dictionary(&want) {
                    Some(d) => d,
                    None => self.add(Dictionary::from_frame(&load(&want)?, &want)?),
                }
            }
        };
        decode_frame_with(frame, hash, Some(&dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 100_003]));
        for pos in [0, 7, 8, 63, 64, 100_002] {
            let mut v = vec![0u8; 100_003];
            v[pos] = 1;
            assert!(!is_zero(&v), "{pos}");
        }
    }

    #[test]
    fn frames_round_trip_and_detect_corruption() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let h = ChunkHash::of(&data);
        let f = encode_frame(&data, 1).expect("compress");
        assert_eq!(f[0], FRAME_ZSTD);
        assert_eq!(decode_frame(&f, &h).expect("decode"), data);
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(decode_frame(&bad, &h).is_err());
        assert!(decode_frame(&[], &h).is_err());
        assert!(decode_frame(&[9, 1, 2], &h).is_err());
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let f = encode_frame(&random, 1).expect("compress");
        assert_eq!(
            decode_frame(&f, &ChunkHash::of(&random)).expect("decode"),
            random
        );
    }

    /// Incompressible bytes, from blake3's output stream.
    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn a_chunk_of_noise_is_raw_but_one_with_a_zero_block_is_compressed() {
        let mut enc = FrameEncoder::new(3).expect("encoder");
        let all = noise(1, 65_536);
        let f = enc.encode(&all).expect("encode");
        assert!(frame_is_raw(&f), "noise is stored raw");
        // One block of noise first, then free space: the sample of the
        // first 4 KiB does not compress, the chunk does.
        let mut sparse = vec![0u8; 65_536];
        sparse[..4096].copy_from_slice(&all[..4096]);
        let f = enc.encode(&sparse).expect("encode");
        assert!(!frame_is_raw(&f));
        assert!(f.len() < 4096 + 256, "{} bytes", f.len());
        assert_eq!(
            decode_frame(&f, &ChunkHash::of(&sparse)).expect("decode"),
            sparse
        );
        // Noise everywhere but one block still compresses by that block.
        let mut mostly = all.clone();
        mostly[61_440..].fill(0);
        let f = enc.encode(&mostly).expect("encode");
        assert!(!frame_is_raw(&f));
        assert!(f.len() < 61_440 + 256, "{} bytes", f.len());
    }

    #[test]
    fn compaction_keeps_the_bytes_and_marks_the_frame() {
        let data: Vec<u8> = (0..65_536u32)
            .map(|i| ((i / 7) % 13) as u8 ^ (i % 5) as u8)
            .collect();
        let h = ChunkHash::of(&data);
        let fast = encode_frame(&data, 1).expect("encode");
        assert!(!frame_is_compact(&fast));
        let small = compact_frame(&data, 19, fast.len())
            .expect("compact")
            .expect("saves space");
        assert!(small.len() < fast.len());
        assert!(frame_is_compact(&small));
        assert_eq!(decode_frame(&small, &h).expect("decode"), data);
        assert_eq!(
            compact_frame(&data, 19, small.len()).expect("compact"),
            None
        );
    }

    /// Chunks drawn from one vocabulary of pseudo-random words: each alone
    /// compresses poorly, together they share a lot (what a dictionary is
    /// for).
    fn vocabulary_chunks(count: usize, len: usize) -> Vec<Vec<u8>> {
        let word =
            |i: u64| -> [u8; 8] { (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 3).to_le_bytes() };
        let mut x = 12345u64;
        (0..count)
            .map(|_| {
                let mut c = Vec::with_capacity(len);
                while c.len() < len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.extend_from_slice(&word(x % 4096));
                }
                c.truncate(len);
                c
            })
            .collect()
    }

    #[test]
    fn dictionary_frames_round_trip_and_need_their_dictionary() {
        let chunks = vocabulary_chunks(64, 16 * 1024);
        let samples: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let dict = Dictionary::train(&samples, 16 * 1024).expect("train");
        assert!(!dict.bytes().is_empty() && dict.bytes().len() <= 16 * 1024);
        let data = &chunks[3];
        let h = ChunkHash::of(data);
        let plain = encode_frame(data, 19).expect("plain");
        let mut enc = DictEncoder::new(&dict, 19).expect("encoder");
        let framed = enc
            .encode(data, plain.len())
            .expect("encode")
            .expect("the dictionary helps");
        assert!(
            framed.len() < plain.len(),
            "{} vs {}",
            framed.len(),
            plain.len()
        );
        assert!(frame_is_compact(&framed));
        assert_eq!(frame_dictionary(&framed), Some(dict.hash()));
        assert_eq!(
            frame_dictionary(&framed[..FRAME_HEADER_LEN]),
            Some(dict.hash())
        );
        assert_eq!(frame_dictionary(&plain), None);
        let err = decode_frame(&framed, &h).expect_err("needs its dictionary");
        assert!(
            err.message().contains("needs dictionary"),
            "{}",
            err.message()
        );
        assert_eq!(
            decode_frame_with(&framed, &h, Some(&dict)).expect("decode"),
            *data
        );
        let other = Dictionary::train(&samples[..32], 8 * 1024).expect("train");
        assert_ne!(other.hash(), dict.hash());
        assert!(decode_frame_with(&framed, &h, Some(&other)).is_err());
        let mut bad = framed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert!(decode_frame_with(&bad, &h, Some(&dict)).is_err());
        assert!(decode_frame_with(&framed[..FRAME_HEADER_LEN], &h, Some(&dict)).is_err());
        // Stored as an ordinary frame, verified against its hash.
        let stored = dict.frame().expect("frame");
        assert_eq!(frame_dictionary(&stored), None);
        let back = Dictionary::from_frame(&stored, &dict.hash()).expect("load");
        assert_eq!(back.bytes(), dict.bytes());
        assert!(Dictionary::from_frame(&stored, &h).is_err());
        assert!(Dictionary::from_frame(&framed, &h).is_err());
    }

    #[test]
    fn frame_decoder_loads_each_dictionary_once() {
        let chunks = vocabulary_chunks(64, 16 * 1024);
        let samples: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let dict = Dictionary::train(&samples, 16 * 1024).expect("train");
        let stored = dict.frame().expect("frame");
        let mut enc = DictEncoder::new(&dict, 3).expect("encoder");
        let decoder = FrameDecoder::new();
        let loads = std::cell::Cell::new(0);
        for c in &chunks[..8] {
            let f = enc.encode(c, c.len()).expect("encode").expect("smaller");
            let got = decoder
                .decode(&f, &ChunkHash::of(c), |want| {
                    assert_eq!(*want, dict.hash());
                    loads.set(loads.get() + 1);
                    Ok(stored.clone())
                })
                .expect("decode");
            assert_eq!(got, *c);
        }
        assert_eq!(loads.get(), 1);
        let raw = encode_frame(&[7u8; 100], 3).expect("frame");
        let borrowed = decoder
            .decode_borrowed(&raw, &ChunkHash::of(&[7u8; 100]), |_| unreachable!())
            .expect("decode");
        assert_eq!(&*borrowed, &[7u8; 100][..]);
        assert!(decoder
            .decode_borrowed(&raw, &dict.hash(), |_| unreachable!())
            .is_err());
        let plain = encode_frame(&chunks[9], 3).expect("plain");
        let got = decoder
            .decode(&plain, &ChunkHash::of(&chunks[9]), |_| {
                panic!("a plain frame needs no dictionary")
            })
            .expect("decode");
        assert_eq!(got, chunks[9]);
        // A corrupted dictionary is refused, never used.
        let fresh = FrameDecoder::new();
        let f = enc
            .encode(&chunks[1], chunks[1].len())
            .expect("encode")
            .expect("smaller");
        let mut bad = stored.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(fresh
            .decode(&f, &ChunkHash::of(&chunks[1]), |_| Ok(bad))
            .is_err());
        assert!(fresh.dictionary(&dict.hash()).is_none());
    }

    #[test]
    fn the_largest_blank_manifest_is_one_run_and_round_trips() {
        // 16 TiB: 256 Mi positions; a dense list would take 8.8 GB.
        let m = Manifest::blank(crate::model::MAX_IMAGE_SIZE);
        assert_eq!(m.runs.len(), 1);
        assert_eq!(m.len(), 1 << 28);
        let bytes = m.encode();
        assert_eq!(bytes.len(), 8 + 4 + 8 + 5);
        assert_eq!(Manifest::decode(&bytes).expect("decodes"), m);
        assert_eq!(m.chunk(m.len() - 1), None);
        assert_eq!(m.stored().count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn the_sparse_manifest_holds_exactly_the_dense_list(
            entries in proptest::collection::vec(proptest::option::of(0u8..4), 1..200),
            tail in 1u64..=u64::from(MIN_CHUNK_SIZE),
        ) {
            let cs = MIN_CHUNK_SIZE;
            let dense: Vec<Option<ChunkHash>> =
                entries.iter().map(|e| e.map(|b| ChunkHash::of(&[b]))).collect();
            let size = (dense.len() as u64 - 1) * u64::from(cs) + tail;
            let m = Manifest::new(size, cs, dense.clone()).expect("valid");
            proptest::prop_assert_eq!(m.chunks().len(), dense.len());
            proptest::prop_assert_eq!(m.chunks().collect::<Vec<_>>(), dense.clone());
            for (i, e) in dense.iter().enumerate() {
                proptest::prop_assert_eq!(m.chunk(i), *e);
            }
            let stored: Vec<(usize, ChunkHash)> =
                dense.iter().enumerate().filter_map(|(i, e)| e.map(|h| (i, h))).collect();
            proptest::prop_assert_eq!(m.stored().collect::<Vec<_>>(), stored.clone());
            proptest::prop_assert_eq!(m.data_chunks(), stored.len());
            // Runs are maximal, so equal lists make equal manifests.
            for w in m.runs.windows(2) {
                proptest::prop_assert!((w[0].hashes_at == HOLE) != (w[1].hashes_at == HOLE));
            }
            let bytes = m.encode();
            let back = Manifest::decode(&bytes).expect("decodes");
            proptest::prop_assert_eq!(&back, &m);
            proptest::prop_assert_eq!(back.encode(), bytes);
        }
    }

    #[test]
    fn blank_manifest_root_equals_root_of_explicit_zero_hashes() {
        let size = 3 * u64::from(CHUNK_SIZE) + 100;
        let blank = Manifest::blank(size);
        let explicit: Vec<_> = (0..4)
            .map(|i| Some(ChunkHash::of_zeros(blank.chunk_len(i))))
            .collect();
        let explicit = Manifest::new(size, CHUNK_SIZE, explicit).expect("valid");
        assert_eq!(blank.root(), explicit.root());
        assert_ne!(blank.root(), Manifest::blank(size + 1).root());
    }

    #[test]
    fn manifest_rejects_bad_encodings() {
        let m = Manifest::blank(10 * u64::from(CHUNK_SIZE));
        let e = m.encode();
        assert!(Manifest::decode(&e[..e.len() - 1]).is_err());
        let mut extra = e.clone();
        extra.push(0);
        assert!(Manifest::decode(&extra).is_err());
        // Two adjacent hole runs are not canonical.
        let mut split = e[..20].to_vec();
        split.extend_from_slice(&[0, 4, 0, 0, 0, 0, 6, 0, 0, 0]);
        assert!(Manifest::decode(&split).is_err());
        assert!(Manifest::new(100, 1000, vec![None]).is_err());
        // 16 TiB of 4 KiB holes in 25 bytes: refused before any allocation.
        let mut huge = MANIFEST_MAGIC.to_vec();
        huge.extend_from_slice(&MIN_CHUNK_SIZE.to_le_bytes());
        huge.extend_from_slice(&crate::model::MAX_IMAGE_SIZE.to_le_bytes());
        huge.push(0);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Manifest::decode(&huge).is_err());
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            1u64..40 * u64::from(MIN_CHUNK_SIZE),
            prop::sample::select(vec![MIN_CHUNK_SIZE, 8192, CHUNK_SIZE]),
        )
            .prop_flat_map(|(size, cs)| {
                let n = chunk_count(size, cs) as usize;
                (
                    Just(size),
                    Just(cs),
                    prop::collection::vec(prop::option::of(any::<[u8; 32]>()), n),
                )
            })
            .prop_map(|(size, cs, c)| {
                Manifest::new(size, cs, c.into_iter().map(|o| o.map(ChunkHash)).collect())
                    .expect("valid by construction")
            })
    }

    proptest! {
        #[test]
        fn manifest_encoding_round_trips(m in arb_manifest()) {
            let e = m.encode();
            let d = Manifest::decode(&e).expect("decodes");
            prop_assert_eq!(&d, &m);
            prop_assert_eq!(d.encode(), e);
        }

        #[test]
        fn manifest_decode_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut b = MANIFEST_MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            if let Ok(m) = Manifest::decode(&b) {
                prop_assert_eq!(m.encode(), b);
            }
        }

        #[test]
        fn hex_round_trips(h in any::<[u8; 32]>()) {
            let h = ChunkHash(h);
            prop_assert_eq!(h.to_hex().parse::<ChunkHash>().ok(), Some(h));
            let mut signed = h.to_hex();
            signed.replace_range(2..3, "+");
            prop_assert!(signed.parse::<ChunkHash>().is_err());
        }
    }
}
