//! What a machine's agent sends: the JSON bodies of `/api/v1/agent/...`
//! (inventory, logs, chunk requests, progress, state changes, failures,
//! credential requests) and the binary capture record stream. Invariants:
//! a rejected body is a 4xx; an accepted inventory's NICs carry MACs that
//! print and re-parse to themselves; an accepted record stream re-encodes to
//! exactly the input, within the per-call limits.
#![no_main]

use baas_core::content::{ChunkHash, CHUNK_SIZE};
use baas_core::model::MacAddress;
use baas_core::ports::MAX_CHUNKS_PER_CALL;
use baas_server::api::agent::*;
use baas_server::json::parse_strict;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Parses `bytes` as `T`; an accepted body serialises and re-parses to the
/// same value.
fn json<T: DeserializeOwned + Serialize + Debug>(bytes: &[u8]) -> Option<T> {
    match parse_strict::<T>(bytes) {
        Ok(v) => {
            let again: T =
                parse_strict(&serde_json::to_vec(&v).expect("serialise")).expect("re-parse");
            assert_eq!(format!("{v:?}"), format!("{again:?}"));
            Some(v)
        }
        Err(e) => {
            let code = e.status().code;
            assert!((400..500).contains(&code), "status {code} for {e:?}");
            None
        }
    }
}

fn records(body: &[u8]) {
    match parse_records(body) {
        Ok(recs) => {
            assert!(recs.len() <= MAX_CHUNKS_PER_CALL);
            let mut out = Vec::new();
            for (h, f) in &recs {
                assert!(!f.is_empty() && f.len() <= CHUNK_SIZE as usize + 1);
                out.extend_from_slice(&h.0);
                out.extend_from_slice(&(f.len() as u32).to_le_bytes());
                out.extend_from_slice(f);
            }
            assert!(out == body, "records do not re-encode to the body");
            let _: Vec<ChunkHash> = recs.iter().map(|r| r.0).collect();
        }
        Err(e) => assert!(matches!(
            e.kind(),
            baas_core::ErrorKind::Invalid | baas_core::ErrorKind::TooLarge
        )),
    }
}

fuzz_target!(|data: &[u8]| {
    let (which, bytes) = match data.split_first() {
        Some((w, b)) => (*w, b),
        None => return,
    };
    match which % 8 {
        0 => {
            if let Some(inv) = json::<baas_server::dto::InventoryDto>(bytes) {
                if let Ok(core) = inv.into_core() {
                    for nic in &core.nics {
                        let again: MacAddress = nic.mac.to_string().parse().expect("MAC re-parses");
                        assert_eq!(again, nic.mac);
                    }
                }
            }
        }
        1 => {
            json::<LogBody>(bytes);
        }
        2 => {
            if let Some(c) = json::<ChunksBody>(bytes) {
                for h in &c.hashes {
                    if let Ok(hash) = h.parse::<ChunkHash>() {
                        assert_eq!(hash.to_hex(), h.trim().to_ascii_lowercase());
                    }
                }
            }
        }
        3 => {
            json::<ProgressBody>(bytes);
        }
        4 => {
            if let Some(a) = json::<AdvanceBody>(bytes) {
                let _ = a.state.parse::<baas_core::model::JobState>();
            }
        }
        5 => {
            json::<FailBody>(bytes);
        }
        6 => {
            if let Ok(b) = parse_strict::<AgentTokenBody>(bytes) {
                let _ = b.ttl_seconds;
            }
        }
        _ => records(bytes),
    }
});
