//! iPXE's boot request query (`?mac=${net0/mac}&...`, percent-encoded and
//! in whatever order and case iPXE sends): parsed as Rocket parses a query
//! into a form, its MAC through the core's parser. Invariants: the form
//! parser never panics; a MAC it yields parses to the same address as its
//! percent-decoded value; `%3A` and `:` spellings agree.
#![no_main]

use baas_core::model::MacAddress;
use libfuzzer_sys::fuzz_target;
use rocket::form::{Form, FromForm};

#[derive(Debug, FromForm)]
struct BootQuery<'r> {
    mac: Option<&'r str>,
    #[field(name = "buildarch")]
    arch: Option<&'r str>,
    platform: Option<&'r str>,
    serial: Option<&'r str>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = Form::<BootQuery<'_>>::parse(s) {
        let _ = (q.arch, q.platform, q.serial);
        if let Some(raw) = q.mac {
            if let Ok(mac) = raw.parse::<MacAddress>() {
                let encoded = mac.to_string().replace(':', "%3A");
                let form = format!("mac={encoded}");
                let q2 = Form::<BootQuery<'_>>::parse(&form).expect("canonical query parses");
                assert_eq!(
                    q2.mac.map(|m| m.parse::<MacAddress>().ok()),
                    Some(Some(mac))
                );
            }
        }
    }
    // The MAC as it may reach a route still percent-encoded.
    if let Ok(mac) = s.parse::<MacAddress>() {
        let decoded = s.replace("%3A", ":").replace("%3a", ":");
        assert_eq!(decoded.parse::<MacAddress>().ok(), Some(mac));
    }
});
