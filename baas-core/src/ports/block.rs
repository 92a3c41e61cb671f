//! A block device (a disk, a partition or a file standing in for one), as
//! the agent writes it.

use crate::Result;

/// Random-access reads and writes on a device of fixed size.
///
/// Contract, checked by `baas_core::conformance::block_device`: writes are
/// visible to reads at once and durable after `flush`; `zero_range` leaves
/// zeros (by discard, BLKZEROOUT or hole punching where the device can,
/// by writing zeros otherwise); access past `size()` is `Invalid`.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Logical block size in bytes.
    fn block_size(&self) -> u32;

    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;

    /// Makes `len` bytes at `offset` read as zeros.
    fn zero_range(&self, offset: u64, len: u64) -> Result<()>;

    /// Makes every write durable.
    fn flush(&self) -> Result<()>;

    /// Whether `len` bytes at `offset` are known to read as zeros without
    /// reading them (a hole of a sparse file). `false` when the device
    /// cannot tell cheaply: the default. A `true` lets a scan skip reading
    /// (and zero-filling) an empty disk.
    fn reads_as_zeros(&self, offset: u64, len: u64) -> bool {
        let _ = (offset, len);
        false
    }
}
