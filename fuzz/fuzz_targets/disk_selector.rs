//! Disk selectors from image, setup and job bodies: whatever
//! `DiskSelector::from_str` accepts prints to a form that parses back to
//! the same selector (`parse(display(parse(s))) == parse(s)`), never names
//! a path outside `/dev/` (no `..`, no empty segment), and keeps partition
//! numbers from 1.
#![no_main]

use baas_core::model::{DiskMatch, DiskSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<DiskSelector>() {
        Ok(sel) => {
            let shown = sel.to_string();
            let again: DiskSelector = shown.parse().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            assert_eq!(again, sel);
            assert_eq!(again.to_string(), shown);
            if let Some(p) = sel.partition {
                assert!(p >= 1);
            }
            if let DiskMatch::Path(p) = &sel.disk {
                let name = p.strip_prefix("/dev/").expect("under /dev/");
                assert!(!name
                    .split('/')
                    .any(|seg| seg.is_empty() || seg == "." || seg == ".."));
            }
        }
        Err(e) => assert_eq!(e.kind(), baas_core::ErrorKind::Invalid),
    }
});
