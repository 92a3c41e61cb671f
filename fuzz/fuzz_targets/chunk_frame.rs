//! Chunk frames from the network (the agent's downloads, capture records,
//! chunk-level uploads): `decode_frame` returns exactly the bytes that hash
//! to the expected hash, or an error, whatever the frame; frames we encode
//! (at any level, compacted or not) decode to their input; a frame with a
//! flipped byte never decodes to different bytes; the server's frame stream
//! splits back into its frames.
#![no_main]

use arbitrary::Arbitrary;
use baas_core::content::{compact_frame, decode_frame, encode_frame, frame_is_compact, ChunkHash};
use baas_server::api::agent::frame_stream;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    level: i8,
    flip: u16,
    frame: Vec<u8>,
    content: Vec<u8>,
}

fuzz_target!(|input: Input| {
    // Whatever arrives as a frame: it only ever decodes to bytes with the
    // hash it is checked against.
    let claimed = ChunkHash::of(&input.content);
    if let Ok(bytes) = decode_frame(&input.frame, &claimed) {
        assert!(bytes == input.content);
    }
    if let Some(payload) = input.frame.strip_prefix(&[0]) {
        let h = ChunkHash::of(payload);
        assert!(decode_frame(&input.frame, &h).expect("a raw frame decodes") == payload);
    }

    // Our own frames round-trip, and corruption is caught.
    let level = i32::from(input.level).clamp(-5, 9);
    let frame = encode_frame(&input.content, level).expect("encode");
    assert!(decode_frame(&frame, &claimed).expect("decode our frame") == input.content);
    if !frame.is_empty() {
        let mut bad = frame.clone();
        let at = usize::from(input.flip) % bad.len();
        bad[at] ^= 1 | (input.flip >> 8) as u8;
        if let Ok(bytes) = decode_frame(&bad, &claimed) {
            assert!(
                bytes == input.content,
                "a corrupted frame decoded to other bytes"
            );
        }
    }
    if let Some(small) = compact_frame(&input.content, level.max(1), frame.len()).expect("compact")
    {
        assert!(frame_is_compact(&small));
        assert!(small.len() < frame.len());
        assert!(decode_frame(&small, &claimed).expect("decode compacted") == input.content);
    }

    // The frame stream (length-prefixed frames) splits back exactly.
    let frames = vec![frame.clone(), input.frame.clone(), frame];
    let stream = frame_stream(&frames);
    let mut rest = &stream[..];
    let mut split = Vec::new();
    while !rest.is_empty() {
        let (len, r) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        split.push(r[..len].to_vec());
        rest = &r[len..];
    }
    assert_eq!(split, frames);
});
