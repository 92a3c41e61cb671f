//! An in-memory block device: the fake the agent's algorithms are tested
//! on. It keeps what a real disk would have after a power cut (the bytes as
//! of the last flush) apart from what reads see now, and counts every call,
//! so tests can check both "nothing was written" and "a crash loses only
//! unflushed writes".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use baas_core::ports::BlockDevice;
use baas_core::{Error, Result};

/// What a [`MemoryBlockDevice`] was asked to do, summed over every handle
/// of the same storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// `read_at` calls.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// `write_at` calls.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// `zero_range` calls.
    pub zero_calls: u64,
    /// Bytes zeroed.
    pub bytes_zeroed: u64,
    /// `flush` calls.
    pub flushes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    bytes_read: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
    zero_calls: AtomicU64,
    bytes_zeroed: AtomicU64,
    flushes: AtomicU64,
}

#[derive(Debug)]
struct Storage {
    /// What reads see.
    live: RwLock<Vec<u8>>,
    /// What survives a crash: the bytes as of the last flush.
    durable: Mutex<Vec<u8>>,
    block_size: u32,
    counters: Counters,
}

/// A block device in memory. Clones and [`reopen`](Self::reopen) share the
/// storage, as two opens of one disk do.
#[derive(Clone)]
pub struct MemoryBlockDevice {
    storage: Arc<Storage>,
    size: u64,
}

impl std::fmt::Debug for MemoryBlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBlockDevice")
            .field("size", &self.size)
            .field("block_size", &self.storage.block_size)
            .finish()
    }
}

fn poisoned<T>(_: PoisonError<T>) -> Error {
    Error::internal("memory block device lock poisoned")
}

impl MemoryBlockDevice {
    /// A device of `size` zero bytes with 512-byte blocks.
    pub fn new(size: u64) -> Result<MemoryBlockDevice> {
        let len = usize::try_from(size)
            .map_err(|_| Error::invalid("size", "too large for this address space"))?;
        Ok(Self::from_bytes(vec![0; len]))
    }

    /// A device holding `bytes` (already flushed), with 512-byte blocks.
    pub fn from_bytes(bytes: Vec<u8>) -> MemoryBlockDevice {
        Self::with_block_size(bytes, 512)
    }

    /// A device holding `bytes` (already flushed), with `block_size`-byte
    /// logical blocks.
    pub fn with_block_size(bytes: Vec<u8>, block_size: u32) -> MemoryBlockDevice {
        MemoryBlockDevice {
            size: bytes.len() as u64,
            storage: Arc::new(Storage {
                durable: Mutex::new(bytes.clone()),
                live: RwLock::new(bytes),
                block_size,
                counters: Counters::default(),
            }),
        }
    }

    /// Another handle on the same storage.
    pub fn reopen(&self) -> MemoryBlockDevice {
        self.clone()
    }

    /// A new device holding what this one would hold after a power cut now:
    /// every flushed write, none of the later ones.
    pub fn crashed(&self) -> Result<MemoryBlockDevice> {
        let durable = self.durable()?.clone();
        Ok(Self::with_block_size(durable, self.storage.block_size))
    }

    /// The bytes reads see now.
    pub fn contents(&self) -> Result<Vec<u8>> {
        Ok(self.storage.live.read().map_err(poisoned)?.clone())
    }

    /// The calls made so far, over every handle of this storage.
    pub fn stats(&self) -> BlockStats {
        let c = &self.storage.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BlockStats {
            reads: get(&c.reads),
            bytes_read: get(&c.bytes_read),
            writes: get(&c.writes),
            bytes_written: get(&c.bytes_written),
            zero_calls: get(&c.zero_calls),
            bytes_zeroed: get(&c.bytes_zeroed),
            flushes: get(&c.flushes),
        }
    }

    fn durable(&self) -> Result<MutexGuard<'_, Vec<u8>>> {
        self.storage.durable.lock().map_err(poisoned)
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(offset as usize..end as usize),
            _ => Err(Error::invalid(
                "range",
                format!(
                    "{len} bytes at offset {offset} do not fit a device of {} bytes",
                    self.size
                ),
            )),
        }
    }
}

impl BlockDevice for MemoryBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.storage.block_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.storage.live.read().map_err(poisoned)?[r]);
        let c = &self.storage.counters;
        c.reads.fetch_add(1, Ordering::Relaxed);
        c.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let r = self.range(offset, data.len() as u64)?;
        self.storage.live.write().map_err(poisoned)?[r].copy_from_slice(data);
        let c = &self.storage.counters;
        c.writes.fetch_add(1, Ordering::Relaxed);
        c.bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        let r = self.range(offset, len)?;
        self.storage.live.write().map_err(poisoned)?[r].fill(0);
        let c = &self.storage.counters;
        c.zero_calls.fetch_add(1, Ordering::Relaxed);
        c.bytes_zeroed.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let live = self.storage.live.read().map_err(poisoned)?;
        self.durable()?.copy_from_slice(&live);
        self.storage
            .counters
            .flushes
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_flushed_writes() {
        let d = MemoryBlockDevice::new(4096).expect("device");
        d.write_at(0, &[1; 100]).expect("write");
        d.flush().expect("flush");
        d.write_at(100, &[2; 100]).expect("write");
        let after = d.crashed().expect("crash");
        assert_eq!(after.stats(), BlockStats::default(), "a new device");
        let mut buf = [0u8; 200];
        after.read_at(0, &mut buf).expect("read");
        assert_eq!(&buf[..100], &[1; 100][..]);
        assert_eq!(&buf[100..], &[0; 100][..]);
        assert_eq!(d.stats().writes, 2);
        assert_eq!(d.stats().flushes, 1);
    }
}
