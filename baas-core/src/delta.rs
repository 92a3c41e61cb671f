//! Sub-chunk deltas: a chunk the agent must replace, sent as only the 4 KiB
//! blocks that differ from what the disk already holds at its place.
//!
//! Chunks are 64 KiB, so a change to one 4 KiB block (a scattered write in
//! a filesystem) makes the whole chunk differ. The agent sends the short
//! hashes of the 4 KiB blocks the disk holds at the chunk's place
//! ([`BlockHashes`], 4 bytes a block: 64 bytes for a 64 KiB chunk, none
//! when they are all zeros), and the server answers with a delta ([`encode_delta`]): a bitmap of the blocks
//! that differ and those blocks, compressed with zstd against the blocks
//! both sides share. When a delta would not be smaller than the stored
//! frame (contiguous new data: every block differs), the server answers
//! with the frame instead ([`choose`]).
//!
//! Matching is positional (block `i` of the new chunk against block `i` of
//! the local content at the same disk offset), as the chunk layout is. A
//! 4-byte hash can collide; it does not need to be stronger because the
//! result is always checked against the chunk's blake3 hash
//! ([`apply_delta`]), and a mismatch means fetching the whole frame.
//!
//! Delta format (`decode_delta`):
//! ```text
//! [kind: u8]  0 = the differing blocks raw, 1 = one zstd frame of them,
//!             compressed with the prefix described below
//! [len: u32 LE]  the new chunk's length (at most MAX_CHUNK_SIZE)
//! [bitmap: ceil(blocks / 8) bytes]  bit i (LSB first) set = block i is sent;
//!             clear = block i equals the local block i; unused bits are 0
//! [payload]   the sent blocks in order (raw), or a zstd frame of them
//! ```
//! The zstd prefix is the new chunk with every sent block zeroed: what the
//! agent has after copying its kept blocks into place, and what the server
//! has after zeroing the blocks it sends. So a sent block compresses
//! against its unchanged neighbours.
//!
//! Wire formats of the agent's `deltas` call ([`encode_wants`],
//! [`encode_replies`]): a request is, per chunk, its 32-byte hash, the
//! number of block hashes (u16 LE), then the hashes; a reply is, per
//! requested chunk in order, a kind byte (0 = stored frame, 1 = delta), a
//! length (u32 LE) and the bytes.

use crate::content::{ChunkHash, MAX_CHUNK_SIZE};
use crate::ports::MAX_CHUNKS_PER_CALL;
use crate::{Error, Result};

/// The block size deltas compare in: a filesystem's usual block.
pub const DELTA_BLOCK: usize = 4096;
/// Bytes of one block's short hash.
pub const BLOCK_HASH_LEN: usize = 4;
/// Most blocks one chunk has (the largest chunk in 4 KiB blocks).
pub const MAX_BLOCKS: usize = MAX_CHUNK_SIZE as usize / DELTA_BLOCK;
/// Least bytes a delta must save against the stored frame to be sent
/// instead of it (its header alone is a few bytes; a tie goes to the frame,
/// which needs no local read).
pub const MIN_SAVING: usize = 64;

/// Delta kind: the sent blocks follow raw.
const DELTA_RAW: u8 = 0;
/// Delta kind: one zstd frame of the sent blocks, with the prefix.
const DELTA_ZSTD: u8 = 1;

/// Reply kind: a stored chunk frame (`content::decode_frame`).
const REPLY_FRAME: u8 = 0;
/// Reply kind: a delta ([`decode_delta`]).
const REPLY_DELTA: u8 = 1;

/// Number of [`DELTA_BLOCK`] blocks in `len` bytes (the last may be short).
pub fn blocks_of(len: usize) -> usize {
    len.div_ceil(DELTA_BLOCK)
}

fn block_range(i: usize, len: usize) -> std::ops::Range<usize> {
    let start = i * DELTA_BLOCK;
    start..(start + DELTA_BLOCK).min(len)
}

fn block_hash(block: &[u8]) -> [u8; BLOCK_HASH_LEN] {
    let h = blake3::hash(block);
    let mut out = [0u8; BLOCK_HASH_LEN];
    out.copy_from_slice(&h.as_bytes()[..BLOCK_HASH_LEN]);
    out
}

fn zero_block_hash(len: usize) -> [u8; BLOCK_HASH_LEN] {
    static FULL: std::sync::OnceLock<[u8; BLOCK_HASH_LEN]> = std::sync::OnceLock::new();
    if len == DELTA_BLOCK {
        return *FULL.get_or_init(|| block_hash(&[0; DELTA_BLOCK]));
    }
    block_hash(&vec![0; len])
}

/// The short hashes of the 4 KiB blocks of some content, in order; none
/// at all for content that is all zeros (a blank disk, a hole), which then
/// costs 34 bytes on the wire instead of 34 and 4 a block.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct BlockHashes(Vec<[u8; BLOCK_HASH_LEN]>);

impl BlockHashes {
    /// The hashes of `data`'s blocks (none when it is all zeros).
    pub fn of(data: &[u8]) -> BlockHashes {
        if crate::content::is_zero(data) {
            return BlockHashes(Vec::new());
        }
        BlockHashes(data.chunks(DELTA_BLOCK).map(block_hash).collect())
    }

    /// The hash of block `i` of the local content when that block is `len`
    /// bytes long: the one given, or for all-zero content the hash of
    /// `len` zeros. `None` past the blocks given.
    pub fn hash_at(&self, i: usize, len: usize) -> Option<[u8; BLOCK_HASH_LEN]> {
        if self.0.is_empty() {
            return Some(zero_block_hash(len));
        }
        self.0.get(i).copied()
    }

    /// Whether these stand for all-zero content.
    pub fn all_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// Hashes as they came over the wire (at most [`MAX_BLOCKS`]).
    pub fn from_hashes(hashes: Vec<[u8; BLOCK_HASH_LEN]>) -> Result<BlockHashes> {
        if hashes.len() > MAX_BLOCKS {
            return Err(Error::invalid(
                "blocks",
                format!("at most {MAX_BLOCKS} block hashes per chunk"),
            ));
        }
        Ok(BlockHashes(hashes))
    }

    /// The hashes.
    pub fn hashes(&self) -> &[[u8; BLOCK_HASH_LEN]] {
        &self.0
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn zstd_error(what: &str, code: usize) -> Error {
    Error::internal(format!("{what}: {}", zstd::zstd_safe::get_error_name(code)))
}

/// The delta that turns local content whose blocks hash to `old` into
/// `new`, compressing at zstd `level`. `None` when every block differs
/// (nothing to gain over the stored frame).
pub fn encode_delta(new: &[u8], old: &BlockHashes, level: i32) -> Result<Option<Vec<u8>>> {
    if new.len() > MAX_CHUNK_SIZE as usize {
        return Err(Error::invalid(
            "chunk",
            format!("a chunk is at most {MAX_CHUNK_SIZE} bytes"),
        ));
    }
    let n = blocks_of(new.len());
    let sent: Vec<bool> = (0..n)
        .map(|i| {
            let block = &new[block_range(i, new.len())];
            if old.all_zero() {
                // Exact, and no hashing: over zeros only data is sent.
                return !crate::content::is_zero(block);
            }
            old.hash_at(i, block.len()) != Some(block_hash(block))
        })
        .collect();
    if n > 0 && sent.iter().all(|s| *s) {
        return Ok(None);
    }
    let mut literals = Vec::new();
    let mut prefix = new.to_vec();
    for (i, _) in sent.iter().enumerate().filter(|(_, s)| **s) {
        let r = block_range(i, new.len());
        literals.extend_from_slice(&new[r.clone()]);
        prefix[r].fill(0);
    }
    let mut out = Vec::with_capacity(5 + n.div_ceil(8) + literals.len());
    out.push(DELTA_RAW);
    out.extend_from_slice(&(new.len() as u32).to_le_bytes());
    let mut bitmap = vec![0u8; n.div_ceil(8)];
    for (i, _) in sent.iter().enumerate().filter(|(_, s)| **s) {
        bitmap[i / 8] |= 1 << (i % 8);
    }
    out.extend_from_slice(&bitmap);
    if literals.is_empty() {
        return Ok(Some(out));
    }
    if !worth_compressing(&literals) {
        out.extend_from_slice(&literals);
        return Ok(Some(out));
    }
    let z = compress_with_prefix(&literals, &prefix, level)?;
    if z.len() + literals.len() / 32 < literals.len() {
        out[0] = DELTA_ZSTD;
        out.extend_from_slice(&z);
    } else {
        out.extend_from_slice(&literals);
    }
    Ok(Some(out))
}

/// Whether the sent blocks are worth a zstd pass with the prefix: not when
/// their first block alone does not compress at all (random or already
/// compressed data, the usual scattered change), which a cheap level-1
/// pass over 4 KiB tells, saving the prefix's setup on every chunk.
fn worth_compressing(literals: &[u8]) -> bool {
    let sample = &literals[..literals.len().min(DELTA_BLOCK)];
    match zstd::bulk::compress(sample, 1) {
        Ok(z) => z.len() + sample.len() / 32 < sample.len(),
        Err(_) => true,
    }
}

fn compress_with_prefix(data: &[u8], prefix: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cctx = CCtx::try_create().ok_or_else(|| Error::internal("no zstd context"))?;
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(|c| zstd_error("setting the delta's compression level", c))?;
    // The decoder knows the length; the frame need not repeat it.
    cctx.set_parameter(CParameter::ContentSizeFlag(false))
        .map_err(|c| zstd_error("setting up the delta's compression", c))?;
    cctx.ref_prefix(prefix)
        .map_err(|c| zstd_error("loading the delta's prefix", c))?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data)
        .map_err(|c| zstd_error("compressing a delta", c))?;
    Ok(out)
}

/// Applies `delta` to `old` (the local content at the chunk's place) and
/// returns the new chunk, unverified: see [`apply_delta`]. Malformed deltas
/// (truncated, too long, a kept block `old` does not have, a payload that
/// does not decompress to exactly the sent blocks) are errors, never
/// panics.
pub fn decode_delta(delta: &[u8], old: &[u8]) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::internal(format!("malformed delta: {why}"));
    let (&kind, rest) = delta.split_first().ok_or_else(|| bad("empty"))?;
    let (len, rest) = rest
        .split_at_checked(4)
        .ok_or_else(|| bad("truncated length"))?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_CHUNK_SIZE as usize {
        return Err(bad("longer than the largest chunk"));
    }
    let n = blocks_of(len);
    let (bitmap, payload) = rest
        .split_at_checked(n.div_ceil(8))
        .ok_or_else(|| bad("truncated bitmap"))?;
    if n % 8 != 0 && bitmap.last().is_some_and(|b| b >> (n % 8) != 0) {
        return Err(bad("bits set past the last block"));
    }
    let is_sent = |i: usize| bitmap[i / 8] & (1 << (i % 8)) != 0;
    let mut out = vec![0u8; len];
    let mut sent_len = 0usize;
    for i in 0..n {
        let r = block_range(i, len);
        if is_sent(i) {
            sent_len += r.len();
        } else {
            let have = old
                .get(r.clone())
                .ok_or_else(|| bad("keeps a block the local content does not have"))?;
            out[r].copy_from_slice(have);
        }
    }
    let literals: std::borrow::Cow<'_, [u8]> = match kind {
        DELTA_RAW if payload.len() == sent_len => payload.into(),
        DELTA_RAW => return Err(bad("payload length differs from the sent blocks")),
        DELTA_ZSTD if sent_len > 0 => decompress_with_prefix(payload, &out, sent_len)?.into(),
        DELTA_ZSTD => return Err(bad("a compressed payload with no block sent")),
        _ => return Err(bad("unknown kind")),
    };
    let mut at = 0;
    for i in (0..n).filter(|i| is_sent(*i)) {
        let r = block_range(i, len);
        let l = r.len();
        out[r].copy_from_slice(&literals[at..at + l]);
        at += l;
    }
    Ok(out)
}

fn decompress_with_prefix(payload: &[u8], prefix: &[u8], expect: usize) -> Result<Vec<u8>> {
    use zstd::zstd_safe::DCtx;
    let bad = |why: &str| Error::internal(format!("malformed delta: {why}"));
    let mut dctx = DCtx::try_create().ok_or_else(|| Error::internal("no zstd context"))?;
    dctx.ref_prefix(prefix)
        .map_err(|c| zstd_error("loading the delta's prefix", c))?;
    // One more byte of room than expected, so a payload that decompresses
    // to more is seen as such rather than as "destination too small".
    let mut out = Vec::with_capacity(expect + 1);
    let got = dctx
        .decompress(&mut out, payload)
        .map_err(|c| bad(zstd::zstd_safe::get_error_name(c)))?;
    if got != expect {
        return Err(bad("the payload does not decompress to the sent blocks"));
    }
    Ok(out)
}

/// [`decode_delta`], checked against the chunk's `hash`: the only way a
/// delta's result may be written.
pub fn apply_delta(delta: &[u8], old: &[u8], hash: &ChunkHash) -> Result<Vec<u8>> {
    let new = decode_delta(delta, old)?;
    let got = ChunkHash::of(&new);
    if got != *hash {
        return Err(Error::internal(format!(
            "chunk {hash} rebuilt from a delta hashes to {got}"
        )));
    }
    Ok(new)
}

/// One chunk the agent asks for as a delta: its hash, and the block hashes
/// of the local content where it goes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DeltaWant {
    /// The chunk wanted (in the job entry's manifest).
    pub hash: ChunkHash,
    /// The local content's block hashes.
    pub blocks: BlockHashes,
}

/// The server's answer for one [`DeltaWant`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DeltaReply {
    /// The chunk's stored frame (`content::decode_frame`), when a delta
    /// would not be smaller.
    Frame(Vec<u8>),
    /// A delta ([`apply_delta`]).
    Delta(Vec<u8>),
}

impl DeltaReply {
    /// Bytes it carries.
    pub fn len(&self) -> usize {
        match self {
            DeltaReply::Frame(b) | DeltaReply::Delta(b) => b.len(),
        }
    }

    /// Whether it carries no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The server's decision rule: the delta when it saves at least
/// [`MIN_SAVING`] bytes against the stored frame, else the frame.
pub fn choose(frame: Vec<u8>, delta: Option<Vec<u8>>) -> DeltaReply {
    match delta {
        Some(d) if d.len() + MIN_SAVING <= frame.len() => DeltaReply::Delta(d),
        _ => DeltaReply::Frame(frame),
    }
}

/// Encodes the body of a `deltas` request (see the module docs).
pub fn encode_wants(wants: &[DeltaWant]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wants.iter().map(|w| 34 + 4 * w.blocks.len()).sum());
    for w in wants {
        out.extend_from_slice(&w.hash.0);
        out.extend_from_slice(&(w.blocks.len() as u16).to_le_bytes());
        for h in &w.blocks.0 {
            out.extend_from_slice(h);
        }
    }
    out
}

/// Largest `deltas` request body: [`MAX_CHUNKS_PER_CALL`] chunks of
/// [`MAX_BLOCKS`] blocks.
pub const MAX_WANTS_BYTES: usize = MAX_CHUNKS_PER_CALL * (34 + BLOCK_HASH_LEN * MAX_BLOCKS);

/// Decodes the body of a `deltas` request: `Invalid` when malformed,
/// `TooLarge` past [`MAX_CHUNKS_PER_CALL`] chunks.
pub fn decode_wants(mut body: &[u8]) -> Result<Vec<DeltaWant>> {
    let bad = |why: &str| Error::invalid("body", format!("delta request: {why}"));
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() == MAX_CHUNKS_PER_CALL {
            return Err(Error::too_large(format!(
                "at most {MAX_CHUNKS_PER_CALL} chunks per call"
            )));
        }
        let (head, rest) = body
            .split_at_checked(34)
            .ok_or_else(|| bad("truncated chunk header"))?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[..32]);
        let n = u16::from_le_bytes([head[32], head[33]]) as usize;
        if n > MAX_BLOCKS {
            return Err(bad("more block hashes than the largest chunk has blocks"));
        }
        let (hashes, rest) = rest
            .split_at_checked(n * BLOCK_HASH_LEN)
            .ok_or_else(|| bad("truncated block hashes"))?;
        let blocks = hashes
            .chunks_exact(BLOCK_HASH_LEN)
            .map(|h| [h[0], h[1], h[2], h[3]])
            .collect();
        out.push(DeltaWant {
            hash: ChunkHash(hash),
            blocks: BlockHashes(blocks),
        });
        body = rest;
    }
    Ok(out)
}

/// Encodes the answer of a `deltas` call (see the module docs).
pub fn encode_replies(replies: &[DeltaReply]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replies.iter().map(|r| 5 + r.len()).sum());
    for r in replies {
        let (kind, bytes) = match r {
            DeltaReply::Frame(b) => (REPLY_FRAME, b),
            DeltaReply::Delta(b) => (REPLY_DELTA, b),
        };
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Decodes the answer of a `deltas` call for `n` wanted chunks; anything
/// else (truncated, an unknown kind, another count) is an error.
pub fn decode_replies(mut body: &[u8], n: usize) -> Result<Vec<DeltaReply>> {
    let bad = |why: &str| Error::internal(format!("malformed delta answer: {why}"));
    let mut out = Vec::with_capacity(n.min(MAX_CHUNKS_PER_CALL));
    while !body.is_empty() {
        if out.len() == n {
            return Err(bad("more answers than chunks asked for"));
        }
        let (head, rest) = body
            .split_at_checked(5)
            .ok_or_else(|| bad("truncated header"))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (bytes, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| bad("truncated answer"))?;
        out.push(match head[0] {
            REPLY_FRAME => DeltaReply::Frame(bytes.to_vec()),
            REPLY_DELTA => DeltaReply::Delta(bytes.to_vec()),
            _ => return Err(bad("unknown kind")),
        });
        body = rest;
    }
    if out.len() != n {
        return Err(bad(&format!("{} answers for {n} chunks", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn one_changed_block_costs_about_one_block() {
        let old = noise(1, 64 * 1024);
        let mut new = old.clone();
        new[5 * DELTA_BLOCK..6 * DELTA_BLOCK].copy_from_slice(&noise(2, DELTA_BLOCK));
        let d = encode_delta(&new, &BlockHashes::of(&old), 3)
            .expect("encode")
            .expect("a delta");
        assert!(d.len() < DELTA_BLOCK + 16, "{}", d.len());
        assert_eq!(
            apply_delta(&d, &old, &ChunkHash::of(&new)).expect("apply"),
            new
        );
    }

    #[test]
    fn sent_blocks_compress_against_their_neighbours() {
        // A block that repeats its neighbours' text costs a few bytes.
        let old = noise(3, 64 * 1024);
        let mut new = old.clone();
        let t = text(DELTA_BLOCK * 2);
        new[..2 * DELTA_BLOCK].copy_from_slice(&t);
        let mut old2 = new.clone();
        old2[DELTA_BLOCK..2 * DELTA_BLOCK].copy_from_slice(&noise(4, DELTA_BLOCK));
        let d = encode_delta(&new, &BlockHashes::of(&old2), 3)
            .expect("encode")
            .expect("a delta");
        assert!(d.len() < 100, "{}", d.len());
        assert_eq!(decode_delta(&d, &old2).expect("decode"), new);
    }

    #[test]
    fn all_blocks_changed_is_no_delta_and_the_frame_wins() {
        let old = noise(5, 64 * 1024);
        let new = noise(6, 64 * 1024);
        assert_eq!(
            encode_delta(&new, &BlockHashes::of(&old), 3).expect("encode"),
            None
        );
        assert_eq!(choose(vec![1; 10], None), DeltaReply::Frame(vec![1; 10]));
        assert_eq!(
            choose(vec![1; 10], Some(vec![2; 5])),
            DeltaReply::Frame(vec![1; 10]),
            "saving less than MIN_SAVING keeps the frame"
        );
        assert_eq!(
            choose(vec![1; 1000], Some(vec![2; 5])),
            DeltaReply::Delta(vec![2; 5])
        );
    }

    #[test]
    fn a_wrong_local_block_fails_the_hash_check() {
        let old = noise(7, 64 * 1024);
        let mut new = old.clone();
        new[0] ^= 1;
        let d = encode_delta(&new, &BlockHashes::of(&old), 3)
            .expect("encode")
            .expect("a delta");
        let mut other = old.clone();
        other[DELTA_BLOCK * 3] ^= 1;
        assert!(apply_delta(&d, &other, &ChunkHash::of(&new)).is_err());
        assert!(BlockHashes::of(&[0; 100]).all_zero());
        assert!(!BlockHashes::of(&old).all_zero());
    }

    #[test]
    fn over_zeros_only_the_data_blocks_cross() {
        // A raw-stored chunk (its first block does not compress) over a
        // hole: the delta carries that block alone.
        let mut new = vec![0u8; 64 * 1024];
        new[..DELTA_BLOCK].copy_from_slice(&noise(11, DELTA_BLOCK));
        let zeros = BlockHashes::of(&[0u8; 64 * 1024]);
        assert!(zeros.is_empty());
        let d = encode_delta(&new, &zeros, 3)
            .expect("encode")
            .expect("a delta");
        assert!(d.len() < DELTA_BLOCK + 16, "{}", d.len());
        assert_eq!(
            apply_delta(&d, &[0u8; 64 * 1024], &ChunkHash::of(&new)).expect("apply"),
            new
        );
    }

    #[test]
    fn malformed_deltas_are_errors() {
        let old = noise(8, 3 * DELTA_BLOCK);
        for d in [
            &[][..],
            &[0, 1, 0][..],
            &[9, 0, 0, 0, 0][..],
            &[0, 0, 0, 0, 2][..],
            // 3 blocks, bit 3 set.
            &[0, 0, 48, 0, 0, 0b1000][..],
            // keeps all three, but a payload.
            &[0, 0, 48, 0, 0, 0, 1][..],
            // zstd with nothing sent.
            &[1, 0, 48, 0, 0, 0][..],
            // sends block 0 raw, payload short.
            &[0, 0, 48, 0, 0, 1, 1, 2][..],
            // sends block 0 compressed, garbage payload.
            &[1, 0, 48, 0, 0, 1, 1, 2, 3][..],
        ] {
            assert!(decode_delta(d, &old).is_err(), "{d:?}");
        }
        // Keeps a block the local content lacks.
        assert!(decode_delta(&[0, 0, 48, 0, 0, 0], &old[..DELTA_BLOCK]).is_err());
        assert_eq!(
            decode_delta(&[0, 0, 48, 0, 0, 0], &old).expect("all kept"),
            old
        );
    }

    #[test]
    fn wire_formats_round_trip_and_reject_garbage() {
        let wants = vec![
            DeltaWant {
                hash: ChunkHash::of(b"a"),
                blocks: BlockHashes::of(&noise(9, 64 * 1024)),
            },
            DeltaWant {
                hash: ChunkHash::of(b"b"),
                blocks: BlockHashes::default(),
            },
        ];
        let body = encode_wants(&wants);
        assert_eq!(body.len(), 34 + 64 + 34);
        assert_eq!(decode_wants(&body).expect("decode"), wants);
        assert!(decode_wants(&body[..body.len() - 1]).is_err());
        assert!(decode_wants(&body[..40]).is_err());
        let mut huge = vec![0u8; 32];
        huge.extend_from_slice(&u16::MAX.to_le_bytes());
        assert!(decode_wants(&huge).is_err());
        let many = encode_wants(&vec![wants[1].clone(); MAX_CHUNKS_PER_CALL + 1]);
        assert_eq!(
            decode_wants(&many).map_err(|e| e.kind()),
            Err(crate::ErrorKind::TooLarge)
        );

        let replies = vec![DeltaReply::Frame(vec![1, 2]), DeltaReply::Delta(vec![3])];
        let body = encode_replies(&replies);
        assert_eq!(decode_replies(&body, 2).expect("decode"), replies);
        assert!(decode_replies(&body, 1).is_err());
        assert!(decode_replies(&body, 3).is_err());
        assert!(decode_replies(&body[..body.len() - 1], 2).is_err());
        let mut unknown = body.clone();
        unknown[0] = 7;
        assert!(decode_replies(&unknown, 2).is_err());
    }

    /// Content made of a few distinct 4 KiB-ish pieces, so old and new
    /// share blocks often.
    fn content() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((0u8..4, 1usize..DELTA_BLOCK + 300), 0..12).prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(k, len)| noise(u32::from(k), len))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn decode_of_encode_is_the_new_content(
            old in content(),
            new in content(),
            keep in prop::collection::vec(any::<bool>(), 0..40),
            level in 1i32..6,
        ) {
            // Also: new made of old's blocks where `keep` says so.
            let mut mixed = new.clone();
            for (i, k) in keep.iter().enumerate() {
                let r = block_range(i, mixed.len().min(old.len()));
                if *k && !r.is_empty() && r.end <= mixed.len() {
                    mixed[r.clone()].copy_from_slice(&old[r]);
                }
            }
            for n in [&new, &mixed] {
                match encode_delta(n, &BlockHashes::of(&old), level).expect("encode") {
                    Some(d) => prop_assert_eq!(&decode_delta(&d, &old).expect("decode"), n),
                    None => prop_assert!(blocks_of(n.len()) > 0),
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            delta in prop::collection::vec(any::<u8>(), 0..200),
            old in prop::collection::vec(any::<u8>(), 0..9000),
        ) {
            let _ = decode_delta(&delta, &old);
            let _ = decode_wants(&delta);
            let _ = decode_replies(&delta, 2);
        }
    }
}
