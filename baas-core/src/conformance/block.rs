//! The block device contract (see [`crate::ports::BlockDevice`]).

use std::sync::Arc;

use crate::ports::BlockDevice;
use crate::ErrorKind;

/// A block device under test, at least 8 MiB, and a way to open the same
/// device again (to check that flushed writes persist).
#[allow(missing_debug_implementations, reason = "holds opaque guards")]
pub struct BlockSubject {
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    /// Opens the same device afresh.
    pub reopen: Box<dyn Fn() -> Arc<dyn BlockDevice>>,
    /// Dropped after the test.
    pub guard: Box<dyn std::any::Any>,
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn read(d: &dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    d.read_at(offset, &mut buf).expect("read");
    buf
}

/// Size and block size are sane.
pub fn geometry(s: &BlockSubject) {
    let d = &*s.device;
    assert!(d.size() >= 8 << 20);
    let bs = d.block_size();
    assert!(
        bs.is_power_of_two() && (512..=65536).contains(&bs),
        "block size {bs}"
    );
}

/// Writes read back, at aligned and odd offsets, and nothing else changes.
pub fn write_then_read(s: &BlockSubject) {
    let d = &*s.device;
    let before = read(d, 0, 3 << 20);
    for (off, len, seed) in [
        (0u64, 4096usize, 1u8),
        (65536, 65536, 2),
        (1_000_001, 77_777, 3),
    ] {
        let data = pattern(seed, len);
        d.write_at(off, &data).expect("write");
        assert_eq!(read(d, off, len), data);
    }
    let after = read(d, 0, 3 << 20);
    let untouched = [
        (4096usize..65536usize),
        (131_072..1_000_001),
        (1_077_778..(3 << 20)),
    ];
    for r in untouched {
        assert_eq!(after[r.clone()], before[r.clone()], "bytes {r:?} changed");
    }
    let end = d.size() - 10;
    d.write_at(end, &[7u8; 10]).expect("write the last bytes");
    assert_eq!(read(d, end, 10), vec![7u8; 10]);
}

/// Access past the end is `Invalid` and changes nothing.
pub fn out_of_range_is_invalid(s: &BlockSubject) {
    let d = &*s.device;
    let size = d.size();
    assert_eq!(
        d.write_at(size - 1, &[1, 2]).expect_err("past end").kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        d.write_at(u64::MAX - 1, &[1, 2])
            .expect_err("overflow")
            .kind(),
        ErrorKind::Invalid
    );
    let mut buf = [0u8; 2];
    assert_eq!(
        d.read_at(size - 1, &mut buf).expect_err("past end").kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        d.zero_range(size - 4096, 8192)
            .expect_err("past end")
            .kind(),
        ErrorKind::Invalid
    );
}

/// `zero_range` leaves zeros exactly in the range, aligned or not.
pub fn zero_range_zeroes_exactly(s: &BlockSubject) {
    let d = &*s.device;
    let base = 4u64 << 20;
    let data = pattern(9, 1 << 20);
    d.write_at(base, &data).expect("write");
    d.flush().expect("flush");
    d.zero_range(base + 65536, 262_144).expect("zero aligned");
    d.zero_range(base + 500_000, 10_001)
        .expect("zero unaligned");
    let got = read(d, base, 1 << 20);
    for (i, (g, w)) in got.iter().zip(&data).enumerate() {
        let zeroed = (65536..65536 + 262_144).contains(&i) || (500_000..510_001).contains(&i);
        assert_eq!(*g, if zeroed { 0 } else { *w }, "byte {i}");
    }
}

/// Flushed writes are there when the device is opened again.
pub fn flushed_writes_persist(s: &BlockSubject) {
    let data = pattern(5, 200_000);
    s.device.write_at(2 << 20, &data).expect("write");
    s.device.zero_range(3 << 20, 65536).expect("zero");
    s.device.flush().expect("flush");
    let again = (s.reopen)();
    assert_eq!(read(&*again, 2 << 20, data.len()), data);
    assert_eq!(read(&*again, 3 << 20, 65536), vec![0u8; 65536]);
}

/// Threads writing disjoint regions at once all land.
pub fn concurrent_disjoint_writes(s: &BlockSubject) {
    let d = &*s.device;
    std::thread::scope(|sc| {
        for t in 0..8u8 {
            sc.spawn(move || {
                let data = pattern(t, 65536);
                d.write_at(u64::from(t) * 65536, &data).expect("write");
            });
        }
    });
    for t in 0..8u8 {
        assert_eq!(read(d, u64::from(t) * 65536, 65536), pattern(t, 65536));
    }
}

/// `reads_as_zeros` never claims a range that holds data (written or
/// still dirty), and is true only where reads give zeros.
pub fn reads_as_zeros_is_never_wrong(s: &BlockSubject) {
    let d = &*s.device;
    let base = 5u64 << 20;
    d.write_at(base + 65536, &pattern(7, 4096)).expect("write");
    for (off, len) in [
        (base, 65536u64),
        (base, 2 * 65536),
        (base + 65536, 4096),
        (base + 69_632, 65536),
        (base + 3 * 65536, 65536),
        (d.size() - 65536, 65536),
    ] {
        let claims = d.reads_as_zeros(off, len);
        let zeros = read(d, off, len as usize).iter().all(|&b| b == 0);
        assert!(
            !claims || zeros,
            "claims zeros at {off}+{len} but reads data"
        );
    }
    assert!(!d.reads_as_zeros(base + 65536, 4096));
    assert!(!d.reads_as_zeros(d.size(), 65536), "past the end");
    d.flush().expect("flush");
    assert!(!d.reads_as_zeros(base, 2 * 65536));
}

/// Runs the block device suite: `block_device_conformance!(expr)` where
/// `expr` builds a fresh [`BlockSubject`].
#[macro_export]
macro_rules! block_device_conformance {
    ($make:expr) => {
        $crate::__conformance_cases!($make, block:
            geometry, write_then_read, out_of_range_is_invalid, zero_range_zeroes_exactly,
            flushed_writes_persist, concurrent_disjoint_writes, reads_as_zeros_is_never_wrong);
    };
}
