//! Every JSON request body of the clean API, parsed as the server parses it
//! (`json::parse_strict`, and `parse_lax` as the original's routes do) and
//! converted to the core's request (`into_core`). Invariants: a rejected
//! body is a 4xx with a message, never a 5xx; what the strict parser takes
//! the lax one takes identically (its keys are already lower case); the
//! bodies that serialise back (setup entries, version references) survive
//! a serialise/parse round trip with the same core value.
#![no_main]

use baas_core::ErrorKind;
use baas_server::dto::*;
use baas_server::error::ApiError;
use baas_server::json::{parse_lax, parse_strict};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn client_error(e: &ApiError) {
    let code = e.status().code;
    assert!((400..500).contains(&code), "status {code} for {e:?}");
    assert!(!e.message().is_empty());
}

fn core_error(e: &baas_core::Error) {
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
}

/// Parses `bytes` as `T` both ways; returns the strict result. The lax
/// parser lower-cases every key, free-form maps' keys too (the original's
/// bodies have none), so bodies with a map are only compared when `maps`
/// is false.
fn both<T: DeserializeOwned + Debug>(bytes: &[u8]) -> Option<T> {
    both_maybe_maps(bytes, false)
}

fn both_maybe_maps<T: DeserializeOwned + Debug>(bytes: &[u8], maps: bool) -> Option<T> {
    let lax = parse_lax::<T>(bytes);
    match parse_strict::<T>(bytes) {
        Ok(v) => {
            let lax = lax.unwrap_or_else(|e| panic!("strict took it, lax did not: {e:?}"));
            if !maps {
                assert_eq!(format!("{v:?}"), format!("{lax:?}"));
            }
            Some(v)
        }
        Err(e) => {
            client_error(&e);
            if let Err(e) = lax {
                client_error(&e);
            }
            None
        }
    }
}

fn check<T, C, F>(bytes: &[u8], into: F)
where
    T: DeserializeOwned + Debug,
    F: FnOnce(T) -> baas_core::Result<C>,
{
    check_maps(bytes, false, into)
}

fn check_maps<T, C, F>(bytes: &[u8], maps: bool, into: F)
where
    T: DeserializeOwned + Debug,
    F: FnOnce(T) -> baas_core::Result<C>,
{
    if let Some(v) = both_maybe_maps::<T>(bytes, maps) {
        if let Err(e) = into(v) {
            core_error(&e);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (which, bytes) = match data.split_first() {
        Some((w, b)) => (*w, b),
        None => return,
    };
    match which % 12 {
        0 => check(bytes, NewUserBody::into_core),
        1 => check(bytes, UserPatchBody::into_core),
        2 => check(bytes, |b: NewTokenBody| b.ttl_ms()),
        3 => check_maps(bytes, true, NewImageBody::into_core),
        4 => check_maps(bytes, true, ImagePatchBody::into_core),
        5 => check(bytes, |b: CommitBody| Ok(b.note)),
        6 => check(bytes, SetupBody::into_core),
        7 => check(bytes, NewMachineBody::into_core),
        8 => check(bytes, MachinePatchBody::into_core),
        9 => check(bytes, NewJobBody::into_target),
        10 => {
            // A version reference: core value -> DTO -> JSON -> DTO -> core.
            if let Some(v) = both::<VersionRefDto>(bytes) {
                if let Ok(core) = v.into_core() {
                    let json = serde_json::to_vec(&VersionRefDto::from(core)).expect("serialise");
                    let again = parse_strict::<VersionRefDto>(&json)
                        .expect("re-parse")
                        .into_core()
                        .expect("re-convert");
                    assert_eq!(core, again);
                }
            }
        }
        _ => {
            // A setup: entries survive core -> DTO -> JSON -> DTO -> core.
            if let Some(b) = both::<SetupBody>(bytes) {
                if let Ok(setup) = b.into_core() {
                    let entries: Vec<SetupEntryDto> =
                        setup.entries.iter().map(SetupEntryDto::from).collect();
                    let json = serde_json::json!({"name": setup.name, "entries": entries});
                    let again = parse_strict::<SetupBody>(json.to_string().as_bytes())
                        .expect("re-parse")
                        .into_core()
                        .expect("re-convert");
                    assert_eq!(setup.entries, again.entries);
                    assert_eq!(setup.name, again.name);
                }
            }
        }
    }
});
