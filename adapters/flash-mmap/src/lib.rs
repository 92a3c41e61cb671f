//! `MmapBlockDevice`: the BAAS block-device port on a memory-mapped disk,
//! partition or regular file (a file stands in for a disk in tests and
//! benches). This is the only crate of the workspace with `unsafe` code:
//! mapping a device and copying through raw pointers. Every `unsafe` block
//! says why it is sound.
//!
//! Reads (compare, capture) copy out of the mapping; writes use `pwrite`,
//! which replaces whole pages without faulting them in first (see
//! `write_at`). The page cache keeps both views coherent.
//!
//! Zeroing uses what the device offers: hole punching on regular files,
//! `BLKZEROOUT` on block devices (the kernel may then use write-zeroes or
//! discard), plain zero writes as the fallback, so a disk region the image
//! holds as zeros never costs a transfer and rarely costs a write.

#![allow(
    unsafe_code,
    reason = "memory-mapped I/O needs raw pointers; see the SAFETY comments"
)]

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use baas_core::ports::BlockDevice;
use baas_core::{Error, Result};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::FallocateFlags;

/// `_IO(0x12, 127)`: zero out a byte range of a block device.
const BLKZEROOUT: u32 = 0x127f;

/// Bytes written between two starts of writeback: written data goes to the
/// disk while the flash goes on, so the final flush has little left.
const WRITEBACK_STEP: u64 = 32 << 20;

/// A disk, partition or file, mapped into memory.
pub struct MmapBlockDevice {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    size: u64,
    block_size: u32,
    is_block_device: bool,
    /// Readers share, writers exclude: our own copies never race, so the
    /// mapping is only ever accessed as plain bytes.
    lock: RwLock<()>,
    /// Bytes written since writeback was last started.
    unstarted: AtomicU64,
}

impl std::fmt::Debug for MmapBlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapBlockDevice")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("is_block_device", &self.is_block_device)
            .finish()
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::unavailable(what).with_source(e)
}

impl MmapBlockDevice {
    /// Opens and maps `path` for reading and writing. The caller must have
    /// the device to itself (the agent does: it runs in the management OS,
    /// and nothing mounts the disks it writes).
    pub fn open(path: impl AsRef<Path>) -> Result<MmapBlockDevice> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(format!(
                "cannot open {} for writing",
                path.display()
            )))?;
        let meta = file
            .metadata()
            .map_err(io_err(format!("cannot stat {}", path.display())))?;
        let is_block_device = meta.file_type().is_block_device();
        let size = if is_block_device {
            file.seek(SeekFrom::End(0))
                .map_err(io_err(format!("cannot size {}", path.display())))?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(Error::invalid(
                "device",
                format!(
                    "{} is neither a block device nor a regular file",
                    path.display()
                ),
            ));
        };
        if size == 0 {
            return Err(Error::invalid(
                "device",
                format!("{} is empty", path.display()),
            ));
        }
        let block_size = if is_block_device {
            rustix::fs::ioctl_blksszget(&file).unwrap_or(512)
        } else {
            4096
        };
        // SAFETY-relevant: the mapping is shared with the file; see `copy_in`
        // and `copy_out` for why accesses through it are sound.
        let map = MmapOptions::new()
            .len(
                usize::try_from(size)
                    .map_err(|_| Error::invalid("device", "too large for this address space"))?,
            )
            .map_raw(&file)
            .map_err(io_err(format!("cannot map {}", path.display())))?;
        Ok(MmapBlockDevice {
            path,
            file,
            map,
            size,
            block_size,
            is_block_device,
            lock: RwLock::new(()),
            unstarted: AtomicU64::new(0),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(offset as usize),
            _ => Err(Error::invalid(
                "range",
                format!(
                    "{len} bytes at offset {offset} do not fit {} ({} bytes)",
                    self.path.display(),
                    self.size
                ),
            )),
        }
    }

    fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        const STEP: usize = 1 << 20;
        let zeros = vec![0u8; STEP.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(STEP as u64) as usize;
            self.write_at(offset + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Counts `len` bytes written; every [`WRITEBACK_STEP`] starts
    /// writeback of every dirty page of the device without waiting for it
    /// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE` only: pages already
    /// on their way are skipped, nothing is waited for). Only a hint:
    /// `flush` still makes everything durable.
    fn note_written(&self, len: u64) {
        let before = self.unstarted.fetch_add(len, Ordering::Relaxed);
        if before + len < WRITEBACK_STEP {
            return;
        }
        self.unstarted.store(0, Ordering::Relaxed);
        // SAFETY: sync_file_range takes a file descriptor and plain
        // integers; the descriptor is ours and open for the call.
        let _ = unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                0,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }

    /// Whether `[offset, offset+len)` of a regular file is a hole (reads as
    /// zeros, holds no data, dirty pages included: `SEEK_DATA` sees delayed
    /// allocations). False when unsure, and always for block devices.
    fn is_hole(&self, offset: u64, len: u64) -> bool {
        if self.is_block_device || len == 0 {
            return false;
        }
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(next) => next >= offset + len,
            // No data at or after `offset`.
            Err(rustix::io::Errno::NXIO) => true,
            Err(_) => false,
        }
    }

    /// Zeroes `[offset, offset+len)` with the device's own command; false if
    /// the device cannot. The range must be block-aligned for block devices.
    /// Called with the write lock held.
    fn zero_natively(&self, offset: u64, len: u64) -> Result<bool> {
        // Write back our pages of the range first, so no dirty page can later
        // overwrite the zeros the device writes.
        self.map
            .flush_range(offset as usize, len as usize)
            .map_err(io_err(format!("msync of {} failed", self.path.display())))?;
        if self.is_block_device {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads a `[u64; 2]` (start, length) from the
            // pointer `Setter` passes, which points at `range`, alive for the
            // call; the fd is open.
            let ok = unsafe {
                rustix::ioctl::ioctl(
                    &self.file,
                    rustix::ioctl::Setter::<{ BLKZEROOUT }, [u64; 2]>::new(range),
                )
            };
            Ok(ok.is_ok())
        } else {
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            Ok(rustix::fs::fallocate(&self.file, flags, offset, len).is_ok())
        }
    }
}

impl BlockDevice for MmapBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.check(offset, buf.len() as u64)?;
        if self.is_hole(offset, buf.len() as u64) {
            // Reading a hole through the mapping would fill the page cache
            // with zero pages (a first flash compares a whole empty disk).
            buf.fill(0);
            return Ok(());
        }
        let _shared = self
            .lock
            .read()
            .map_err(|_| Error::internal("device lock poisoned"))?;
        // SAFETY: `check` proved `at + buf.len() <= size`, the mapping's
        // length, so the source range is inside the mapping; `buf` is a
        // distinct, valid destination. No writer of ours runs concurrently
        // (the lock), and the caller owns the device (see `open`), so the
        // bytes are not changed under us.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(at), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        let exclusive = self
            .lock
            .write()
            .map_err(|_| Error::internal("device lock poisoned"))?;
        // Writes go through `pwrite`, not the mapping: a store into a mapped
        // page that is not resident faults it in first (one fault per 4 KiB
        // page, ~276k on a 4 GiB flash, and on a real disk a read of the old
        // sector before it is overwritten), while `pwrite` of whole pages
        // replaces them in the page cache directly. Linux keeps the two
        // coherent (one page cache per file or block device), so reads
        // through the mapping see these writes at once.
        self.file
            .write_all_at(data, offset)
            .map_err(io_err(format!(
                "write of {} bytes at {offset} to {} failed",
                data.len(),
                self.path.display()
            )))?;
        drop(exclusive);
        self.note_written(data.len() as u64);
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len)?;
        // Block devices zero whole logical blocks natively; the unaligned
        // head and tail get plain zero writes.
        let (start, end) = if self.is_block_device {
            let bs = u64::from(self.block_size);
            (offset.div_ceil(bs) * bs, (offset + len) / bs * bs)
        } else {
            (offset, offset + len)
        };
        if end <= start {
            return self.write_zeros(offset, len);
        }
        self.write_zeros(offset, start - offset)?;
        self.write_zeros(end, offset + len - end)?;
        let native = {
            let _exclusive = self
                .lock
                .write()
                .map_err(|_| Error::internal("device lock poisoned"))?;
            self.zero_natively(start, end - start)?
        };
        if !native {
            self.write_zeros(start, end - start)?;
        }
        Ok(())
    }

    fn reads_as_zeros(&self, offset: u64, len: u64) -> bool {
        self.check(offset, len).is_ok() && self.is_hole(offset, len)
    }

    fn flush(&self) -> Result<()> {
        self.map
            .flush()
            .map_err(io_err(format!("msync of {} failed", self.path.display())))?;
        self.file
            .sync_all()
            .map_err(io_err(format!("fsync of {} failed", self.path.display())))
    }
}
