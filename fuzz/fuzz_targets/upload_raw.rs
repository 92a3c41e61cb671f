//! A raw upload body (`Content-Type: application/octet-stream`), imported
//! the way the server does (`Baas::import_version` over the body's bytes):
//! the version's root hash is the one computed from the bytes, the version
//! reads back byte for byte, and a rejected body leaves no version.
#![no_main]

use baas_fuzz::{check_import, Lab};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Long runs of zeros (holes) and of repeated bytes (shared chunks) are
    // the interesting shapes; the first byte can ask for them.
    let body: Vec<u8> = match data.split_first() {
        Some((&n, rest)) if n >= 0xf0 && !rest.is_empty() => {
            let repeat = (usize::from(n & 0x0f) + 1) * 48 * 1024 / rest.len().max(1) + 1;
            rest.iter()
                .copied()
                .cycle()
                .take(rest.len() * repeat)
                .collect()
        }
        Some((&0xef, rest)) => {
            let mut v = vec![0u8; 200 * 1024];
            v.extend_from_slice(rest);
            v
        }
        _ => data.to_vec(),
    };
    let lab = Lab::new();
    check_import(&lab, &body, None);
    // The same bytes again: a second version, identical content.
    check_import(&lab, &body, Some("again".into()));
});
