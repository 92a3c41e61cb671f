//! Sub-chunk deltas from the network (the agent's `deltas` answers) and
//! delta requests (the server's input): `decode_delta` returns bytes or an
//! error whatever the delta and the local content, and `apply_delta` only
//! ever returns bytes with the chunk's hash; deltas we encode decode to
//! their input over the content they were made against (unless a 4-byte
//! block hash collided, which the chunk hash then catches); a delta with a
//! flipped byte never applies to other bytes; request and answer streams
//! decode only from their canonical encoding.
#![no_main]

use arbitrary::Arbitrary;
use baas_core::content::{ChunkHash, MAX_CHUNK_SIZE};
use baas_core::delta::{
    apply_delta, decode_delta, decode_replies, decode_wants, encode_delta, encode_replies,
    encode_wants, BlockHashes, DELTA_BLOCK,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Arbitrary bytes, as a delta, a request or an answer.
    wire: Vec<u8>,
    answers: u8,
    /// Local content: `seed` repeated to `len` bytes.
    seed: Vec<u8>,
    len: u16,
    /// The new chunk: the local content with these bytes changed, then cut
    /// or grown to `new_len`.
    edits: Vec<(u16, u8)>,
    new_len: u16,
    level: i8,
    flip: u16,
}

fn cycled(seed: &[u8], len: usize) -> Vec<u8> {
    if seed.is_empty() {
        return vec![0; len];
    }
    seed.iter().copied().cycle().take(len).collect()
}

fuzz_target!(|input: Input| {
    let old = cycled(&input.seed, usize::from(input.len));
    let mut new = old.clone();
    new.resize(usize::from(input.new_len), 0x5a);
    for (at, b) in &input.edits {
        if !new.is_empty() {
            let i = usize::from(*at) % new.len();
            new[i] = *b;
        }
    }
    let hash = ChunkHash::of(&new);

    // Whatever arrives as a delta.
    if let Ok(bytes) = decode_delta(&input.wire, &old) {
        assert!(bytes.len() <= MAX_CHUNK_SIZE as usize);
    }
    if let Ok(bytes) = apply_delta(&input.wire, &old, &hash) {
        assert!(bytes == new);
    }

    // Our own deltas round-trip.
    let blocks = BlockHashes::of(&old);
    let level = i32::from(input.level).clamp(-5, 9);
    if let Some(delta) = encode_delta(&new, &blocks, level).expect("encode") {
        let collided = new.chunks(DELTA_BLOCK).enumerate().any(|(i, nb)| {
            let start = i * DELTA_BLOCK;
            let ob = old.get(start..start + nb.len());
            let same_hash = BlockHashes::of(nb).hashes().first().copied().or_else(|| {
                // `of` gives no hashes for a block of zeros.
                BlockHashes::default().hash_at(0, nb.len())
            }) == blocks.hash_at(i, nb.len());
            same_hash && ob != Some(nb)
        });
        if !collided {
            assert!(decode_delta(&delta, &old).expect("decode our delta") == new);
            assert!(apply_delta(&delta, &old, &hash).expect("apply our delta") == new);
        }
        let mut bad = delta.clone();
        let at = usize::from(input.flip) % bad.len();
        bad[at] ^= 1 | (input.flip >> 8) as u8;
        if let Ok(bytes) = apply_delta(&bad, &old, &hash) {
            assert!(bytes == new, "a corrupted delta applied to other bytes");
        }
    } else {
        // No delta only when every block differs.
        assert!(!new.is_empty());
    }

    // Request and answer streams: only canonical encodings decode.
    if let Ok(wants) = decode_wants(&input.wire) {
        assert!(encode_wants(&wants) == input.wire);
    }
    if let Ok(replies) = decode_replies(&input.wire, usize::from(input.answers)) {
        assert_eq!(replies.len(), usize::from(input.answers));
        assert!(encode_replies(&replies) == input.wire);
    }
});
