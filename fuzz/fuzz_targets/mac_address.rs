//! MAC addresses as they arrive in paths, JSON bodies and iPXE's query
//! strings: whatever `MacAddress::from_str` accepts prints in canonical
//! form, and every spelling of that form (colons, hyphens, Cisco dots, bare
//! hex, upper case, iPXE's `%3A`) parses back to the same address; a
//! machine key (id or MAC) parses the same way the API's paths do.
#![no_main]

use baas_core::model::MacAddress;
use baas_server::api::MachineKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let key = MachineKey::parse(s);
    match s.parse::<MacAddress>() {
        Ok(mac) => {
            assert!(matches!(key, Ok(MachineKey::Mac(m)) if m == mac));
            let canon = mac.to_string();
            assert_eq!(canon.len(), 17);
            assert_eq!(canon, canon.to_ascii_lowercase());
            assert!(mac.0[0] & 1 == 0 && mac.0 != [0; 6]);
            let bare = canon.replace(':', "");
            let dotted = format!("{}.{}.{}", &bare[..4], &bare[4..8], &bare[8..]);
            for spelling in [
                canon.clone(),
                canon.to_ascii_uppercase(),
                mac.hyphenated(),
                canon.replace(':', "%3A"),
                canon.replace(':', "%3a"),
                bare,
                dotted,
                format!("  {canon}\t"),
            ] {
                assert_eq!(
                    spelling.parse::<MacAddress>().ok(),
                    Some(mac),
                    "{spelling:?}"
                );
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), baas_core::ErrorKind::Invalid);
            if let Ok(MachineKey::Mac(_)) = key {
                panic!("the API took {s:?} as a MAC the core rejects");
            }
        }
    }
});
