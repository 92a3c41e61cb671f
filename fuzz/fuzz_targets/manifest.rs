//! Manifests from the network (chunk-level upload `begin`, the agent's
//! capture, the manifest the agent downloads): `Manifest::decode` accepts
//! only canonical encodings, so `encode(decode(b)) == b`; a decoded manifest
//! re-validates through `Manifest::new`, and its root hash does not depend
//! on how it was obtained. Built manifests round-trip the other way.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use baas_core::content::{chunk_count, ChunkHash, Manifest, MIN_CHUNK_SIZE};
use libfuzzer_sys::fuzz_target;

fn check(m: &Manifest) {
    let enc = m.encode();
    let back = Manifest::decode(&enc).expect("an encoding decodes");
    assert_eq!(&back, m);
    assert_eq!(back.root(), m.root());
    assert_eq!(
        m.chunks().len() as u64,
        chunk_count(m.size(), m.chunk_size())
    );
    let again =
        Manifest::new(m.size(), m.chunk_size(), m.chunks().collect()).expect("re-validates");
    assert_eq!(again.encode(), enc);
}

/// The entry count a manifest's header declares (0 if it has none).
fn declared_entries(b: &[u8]) -> u64 {
    if b.len() < 20 {
        return 0;
    }
    let cs = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    let size = u64::from_le_bytes(b[12..20].try_into().expect("8 bytes"));
    if cs == 0 {
        return 0;
    }
    chunk_count(size, cs)
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => {
            // Build one from parts: a small size, a legal chunk size, hashes
            // or holes, and check the round trip from the other side.
            let mut u = Unstructured::new(rest);
            let Ok(shift) = u.int_in_range(0u32..=3) else {
                return;
            };
            let cs = MIN_CHUNK_SIZE << shift;
            let Ok(size) = u.int_in_range(0u64..=64 * u64::from(cs)) else {
                return;
            };
            let n = chunk_count(size, cs) as usize;
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                let Ok(c) = Option::<[u8; 32]>::arbitrary(&mut u) else {
                    return;
                };
                chunks.push(c.map(ChunkHash));
            }
            check(&Manifest::new(size, cs, chunks).expect("valid by construction"));
        }
        _ => {
            let mut bytes = b"BAASMF1\0".to_vec();
            bytes.extend_from_slice(data.get(1..).unwrap_or_default());
            for b in [&bytes[..], data] {
                // Decoding costs memory for the stored hashes only, whatever
                // the header declares (holes are runs), so every header is
                // decoded. The full check walks every position (a dense
                // copy, the root over each): only for up to 2^20 of them.
                if let Ok(m) = Manifest::decode(b) {
                    assert!(m.encode() == b, "decode accepted a non-canonical encoding");
                    if declared_entries(b) <= 1 << 20 {
                        check(&m);
                    }
                }
            }
        }
    }
});
