//! Conversions between file times and the core's [`Timestamp`]
//! (milliseconds since the Unix epoch).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baas_core::model::Timestamp;

/// `t` in whole milliseconds since the epoch, rounded down (also before
/// the epoch), so that `millis(t) < cutoff` exactly when `t < cutoff`.
pub(crate) fn to_timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        Err(e) => {
            let d = e.duration();
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let partial = d.as_nanos() % 1_000_000 != 0;
            Timestamp(-ms - i64::from(partial))
        }
    }
}

/// The instant `ts` stands for.
pub(crate) fn to_system_time(ts: Timestamp) -> SystemTime {
    let abs = Duration::from_millis(ts.0.unsigned_abs());
    if ts.0 >= 0 {
        UNIX_EPOCH + abs
    } else {
        UNIX_EPOCH - abs
    }
}

/// A file's mtime as a timestamp.
pub(crate) fn mtime(m: &Metadata) -> Timestamp {
    floor_millis(m.mtime(), m.mtime_nsec())
}

/// A file's ctime (last change of its inode, e.g. a rename) as a timestamp.
pub(crate) fn ctime(m: &Metadata) -> Timestamp {
    floor_millis(m.ctime(), m.ctime_nsec())
}

fn floor_millis(secs: i64, nsec: i64) -> Timestamp {
    Timestamp(
        secs.saturating_mul(1000)
            .saturating_add(nsec.div_euclid(1_000_000)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rounds_down() {
        for ms in [0i64, 1, 999, 1_700_000_000_123, -1, -1500] {
            assert_eq!(to_timestamp(to_system_time(Timestamp(ms))), Timestamp(ms));
        }
        assert_eq!(
            to_timestamp(UNIX_EPOCH + Duration::from_micros(1999)),
            Timestamp(1)
        );
        assert_eq!(
            to_timestamp(UNIX_EPOCH - Duration::from_micros(1)),
            Timestamp(-1)
        );
        assert_eq!(floor_millis(-1, 999_999_999), Timestamp(-1));
        assert_eq!(floor_millis(2, 1_000_000), Timestamp(2001));
    }
}
