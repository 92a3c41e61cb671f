//! Byte sizes as people write them: `536870912`, `512MiB`, `6G`, `1.5 TiB`.
//! Binary multiples throughout (`K`, `KB` and `KiB` are all 1024), as disk
//! sizes are meant.

use baas_core::Error;

/// Parses a byte size for `field`.
pub fn parse_size(field: &str, s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(Error::invalid(
                field,
                format!("{other:?} is not a size unit (B, KiB, MiB, GiB, TiB)"),
            ))
        }
    };
    let bad = || Error::invalid(field, format!("{s:?} is not a size like 512MiB"));
    if num.is_empty() {
        return Err(bad());
    }
    let value = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| bad())?;
        let bytes = f * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        bytes as u64
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift).ok_or_else(bad)?
    };
    Ok(value)
}

/// For clap: a size argument.
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size("size", s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("s", "1024").ok(), Some(1024));
        assert_eq!(parse_size("s", "512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("s", "6G").ok(), Some(6 << 30));
        assert_eq!(parse_size("s", "1.5 TiB").ok(), Some(3 << 39));
        assert_eq!(parse_size("s", " 4 kb ").ok(), Some(4096));
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "1.2.3G",
            "99999999999999999999T",
            "-1",
        ] {
            assert!(parse_size("s", bad).is_err(), "{bad}");
        }
    }
}
