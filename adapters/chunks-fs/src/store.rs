//! [`FsChunkStore`]: opening the directory, `put`, `touch`, `get`, `sync`
//! and `usage`. The sweep is in `sweep.rs`.

use std::fs::{self, File};
use std::io::{self, ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use baas_core::content::ChunkHash;
use baas_core::model::Timestamp;
use baas_core::ports::{ChunkStore, Clock, Put, SweepStats, Usage};
use baas_core::{Error, Result};

use crate::layout::{self, Layout};
use crate::time;

/// How often `touch` retries when the file under the chunk's name changed
/// while it was touching it (a sweep took it out and put it back, or a
/// `put` replaced it).
const TOUCH_ATTEMPTS: usize = 3;

/// A [`ChunkStore`] on a directory, safe to share between threads and
/// between processes (several servers on one volume).
///
/// See the crate documentation for the layout and why it is race-free.
pub struct FsChunkStore {
    pub(crate) layout: Layout,
    /// Where timestamps come from; `None` is the system clock.
    clock: Option<Arc<dyn Clock>>,
    /// Fan-out directories that received a rename since the last `sync`.
    dirty: Box<[AtomicBool]>,
    /// A fan-out directory was created since the last `sync`.
    root_dirty: AtomicBool,
    /// Chunks written to `tmp/` by `put` and not yet made durable and
    /// visible by `sync`.
    staged: Mutex<Vec<(PathBuf, ChunkHash)>>,
    /// Held for a whole `sync`: a `sync` that returns has seen every chunk
    /// staged before it was called installed, even those another thread's
    /// concurrent `sync` took.
    sync_lock: Mutex<()>,
    /// How long a file may sit in `tmp/` before a sweep deems it abandoned.
    pub(crate) stale_age: Duration,
    /// Test-only pauses inside the race-sensitive steps.
    #[cfg(test)]
    pub(crate) hooks: Hooks,
}

/// A test hook, given the path of the file at hand.
#[cfg(test)]
pub(crate) type Hook = Arc<dyn Fn(&Path) + Send + Sync>;

/// Points where unit tests run code in the middle of an operation, to
/// replay the interleavings a race could produce, deterministically.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Hooks {
    /// In `touch`, after opening the chunk file, before setting its mtime.
    pub(crate) touch_opened: std::sync::Mutex<Option<Hook>>,
    /// In the sweep, after renaming a chunk out, before re-reading its mtime.
    pub(crate) taken_out: std::sync::Mutex<Option<Hook>>,
}

#[cfg(test)]
impl Hooks {
    pub(crate) fn run(slot: &std::sync::Mutex<Option<Hook>>, path: &Path) {
        // Clone out of the lock: a hook may re-enter the store.
        let hook = slot.lock().map(|h| h.clone()).unwrap_or_default();
        if let Some(hook) = hook {
            hook(path);
        }
    }
}

/// Above this many staged chunks, `sync` writes them back with one
/// `syncfs` instead of one fsync each.
const SYNCFS_THRESHOLD: usize = 32;

/// Above this many dirty fan-out directories, `sync` makes them durable
/// with one `syncfs` instead of one fsync each.
const DIR_SYNCFS_THRESHOLD: usize = 8;

/// Default of [`FsChunkStore::with_stale_age`].
const DEFAULT_STALE_AGE: Duration = Duration::from_secs(60);

impl std::fmt::Debug for FsChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsChunkStore")
            .field("dir", &self.layout.root())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl FsChunkStore {
    /// Opens (creating if needed) the chunk store in `dir`, timestamping
    /// chunks with the system clock.
    ///
    /// Chunks a crashed sweep left taken out of place are put back.
    pub fn open(dir: impl AsRef<Path>) -> Result<FsChunkStore> {
        Self::open_inner(dir.as_ref(), None)
    }

    /// Like [`FsChunkStore::open`], with timestamps from `clock`: the same
    /// clock the core computes its sweep cutoffs with (tests use a fake
    /// one). File mtimes are set explicitly from it, so the filesystem's
    /// own clock (an NFS server's, say) never matters.
    pub fn open_with_clock(dir: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<FsChunkStore> {
        Self::open_inner(dir.as_ref(), Some(clock))
    }

    fn open_inner(dir: &Path, clock: Option<Arc<dyn Clock>>) -> Result<FsChunkStore> {
        let failed = |e: io::Error| {
            io_unavailable(
                format!("opening the chunk store at {} failed", dir.display()),
                e,
            )
        };
        let store = FsChunkStore {
            layout: Layout::new(dir.to_path_buf()),
            clock,
            dirty: (0..256).map(|_| AtomicBool::new(false)).collect(),
            root_dirty: AtomicBool::new(false),
            staged: Mutex::new(Vec::new()),
            sync_lock: Mutex::new(()),
            stale_age: DEFAULT_STALE_AGE,
            #[cfg(test)]
            hooks: Hooks::default(),
        };
        fs::create_dir_all(store.layout.tmp()).map_err(failed)?;
        if !fs::metadata(store.layout.root()).map_err(failed)?.is_dir() {
            return Err(Error::unavailable(format!(
                "opening the chunk store at {} failed: not a directory",
                dir.display()
            )));
        }
        fsync_dir(store.layout.root()).map_err(failed)?;
        store.restore_taken_out(None)?;
        Ok(store)
    }

    /// Sets how long (by the system clock, whatever the store's clock) a
    /// temp file must have sat unchanged before a sweep treats it as
    /// abandoned by a crash: a temp file of a `put` is deleted (if also
    /// older than the sweep's cutoff), a chunk a sweep took out is put back.
    /// A live `put` or sweep holds such a file for milliseconds; the default
    /// of one minute leaves room for stalls and clock skew between servers.
    pub fn with_stale_age(mut self, age: Duration) -> FsChunkStore {
        self.stale_age = age;
        self
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        self.layout.root()
    }

    /// Now, by this store's clock.
    pub(crate) fn now(&self) -> SystemTime {
        match &self.clock {
            Some(c) => time::to_system_time(c.now()),
            None => SystemTime::now(),
        }
    }

    pub(crate) fn mark_dirty(&self, byte: u8) {
        if let Some(flag) = self.dirty.get(usize::from(byte)) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Makes staged chunk files durable, then renames them into place. One
    /// `syncfs` writes a large batch back in one go (a journal commit per
    /// file would dominate an import); small batches fsync file by file.
    fn install_staged(&self, staged: &[(PathBuf, ChunkHash)]) -> Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        let flush_failed =
            |e: io::Error| io_unavailable("making staged chunks durable failed".to_string(), e);
        if staged.len() > SYNCFS_THRESHOLD {
            let root = File::open(self.layout.root()).map_err(flush_failed)?;
            rustix::fs::syncfs(&root).map_err(|e| flush_failed(e.into()))?;
        } else {
            for (temp, _) in staged {
                File::open(temp)
                    .and_then(|f| f.sync_all())
                    .map_err(flush_failed)?;
            }
        }
        for (temp, hash) in staged {
            self.install(temp, hash)
                .map_err(|e| io_unavailable(format!("storing chunk {hash} failed"), e))?;
        }
        Ok(())
    }

    /// Makes the renames and creations since the last call durable: the
    /// fan-out directories (and the root) marked dirty. A few are fsynced
    /// one by one; more get one `syncfs`, which writes every dirty
    /// directory back with a single device flush (an import dirties all
    /// 256 per batch, and 256 fsyncs cost far more than one flush).
    fn sync_dirs(&self) -> Result<()> {
        let root = self.root_dirty.swap(false, Ordering::AcqRel);
        // Clear before syncing: a rename that lands after the clear marks
        // the directory again, for the next sync.
        let dirs: Vec<u8> = (0..=u8::MAX)
            .zip(self.dirty.iter())
            .filter(|(_, flag)| flag.swap(false, Ordering::AcqRel))
            .map(|(byte, _)| byte)
            .collect();
        let restore = |from: usize| {
            if root {
                self.root_dirty.store(true, Ordering::Release);
            }
            for byte in &dirs[from..] {
                self.mark_dirty(*byte);
            }
        };
        if dirs.len() > DIR_SYNCFS_THRESHOLD {
            // Fan-out directories are plain subdirectories of the root, on
            // its filesystem: one syncfs covers them all, the root too.
            let synced = File::open(self.layout.root())
                .and_then(|f| rustix::fs::syncfs(&f).map_err(io::Error::from));
            if let Err(e) = synced {
                restore(0);
                return Err(io_unavailable(
                    "syncing the chunk store's directories failed".to_string(),
                    e,
                ));
            }
            return Ok(());
        }
        if root {
            if let Err(e) = fsync_dir(self.layout.root()) {
                restore(0);
                return Err(io_unavailable(
                    "syncing the chunk store directory failed".to_string(),
                    e,
                ));
            }
        }
        for (i, byte) in dirs.iter().enumerate() {
            if let Err(e) = fsync_dir(&self.layout.fanout_dir(*byte)) {
                restore(i);
                return Err(io_unavailable(
                    format!(
                        "syncing chunk directory {} failed",
                        layout::fanout_name(*byte)
                    ),
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Renames `from` into place as `hash`, creating the fan-out directory
    /// if it does not exist yet; marks the directory for the next `sync`.
    pub(crate) fn install(&self, from: &Path, hash: &ChunkHash) -> io::Result<()> {
        let to = self.layout.chunk_path(hash);
        match fs::rename(from, &to) {
            Err(e) if e.kind() == IoKind::NotFound && from.exists() => {
                self.create_fanout_dir(hash.0[0])?;
                fs::rename(from, &to)?;
            }
            r => r?,
        }
        self.mark_dirty(hash.0[0]);
        Ok(())
    }

    /// Creates the fan-out directory of `byte` unless it exists; a new one
    /// marks the root for the next `sync`.
    fn create_fanout_dir(&self, byte: u8) -> io::Result<()> {
        match fs::create_dir(self.layout.fanout_dir(byte)) {
            Ok(()) => {
                self.root_dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) if e.kind() == IoKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `frame` to a new temp file, stamped (not yet fsynced: `sync`
    /// does that for every staged chunk at once); returns its path. On
    /// failure nothing is left behind.
    fn write_temp(&self, hash: &ChunkHash, frame: &[u8]) -> io::Result<PathBuf> {
        let byte = hash.0[0];
        let (path, mut file) = loop {
            let path = self.layout.put_temp_path(byte);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                // Only possible if another process picked the same tag.
                Err(e) if e.kind() == IoKind::AlreadyExists => continue,
                // The chunk's fan-out directory does not exist yet.
                Err(e) if e.kind() == IoKind::NotFound => self.create_fanout_dir(byte)?,
                Err(e) => return Err(e),
            }
        };
        let written = (|| {
            file.write_all(frame)?;
            file.set_modified(self.now())
        })();
        drop(file);
        match written {
            Ok(()) => Ok(path),
            Err(e) => {
                // Best effort: a leftover is reclaimed by the next sweep.
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// One attempt at `touch`: `Some(present)` when settled, `None` when
    /// the file changed under us and another attempt is needed.
    fn touch_once(&self, path: &Path) -> io::Result<Option<bool>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(Some(false)),
            Err(e) => return Err(e),
        };
        #[cfg(test)]
        Hooks::run(&self.hooks.touch_opened, path);
        file.set_modified(self.now())?;
        // A sweep may have renamed the file out between our open and our
        // set_modified, looked at its (old) mtime and be unlinking it. It
        // renames before it looks, so: if the file we touched is still the
        // one under the chunk's name, the sweep will see our mtime (or has
        // already put it back); if not, report the chunk absent and the
        // importer writes it afresh. We hold the file open, so its inode
        // number cannot be reused in between.
        let touched = file.metadata()?;
        if !touched.is_file() {
            return Err(io::Error::new(IoKind::InvalidData, "not a regular file"));
        }
        match fs::symlink_metadata(path) {
            Ok(now) if now.dev() == touched.dev() && now.ino() == touched.ino() => Ok(Some(true)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == IoKind::NotFound => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    /// The fan-out directories present, by first byte.
    pub(crate) fn fanout_dirs(&self) -> io::Result<Vec<(u8, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.layout.root())? {
            let entry = entry?;
            let Some(byte) = entry
                .file_name()
                .to_str()
                .and_then(layout::parse_fanout_name)
            else {
                continue;
            };
            if entry.file_type()?.is_dir() {
                out.push((byte, entry.path()));
            }
        }
        out.sort_unstable_by_key(|(b, _)| *b);
        Ok(out)
    }

    /// Calls `f` on every chunk file of the fan-out directory `dir` (byte
    /// `byte`) with its hash and path. Files that are not named by a hash
    /// starting with `byte` are skipped.
    pub(crate) fn for_each_chunk(
        &self,
        byte: u8,
        dir: &Path,
        f: impl FnMut(ChunkHash, PathBuf) -> Result<()>,
    ) -> Result<()> {
        self.walk_fanout_dir(byte, dir, f, |_| Ok(()))
    }

    /// Like [`FsChunkStore::for_each_chunk`], and calls `temp` on every
    /// temp file of a `put` in the directory (live or left by a crash).
    pub(crate) fn walk_fanout_dir(
        &self,
        byte: u8,
        dir: &Path,
        mut f: impl FnMut(ChunkHash, PathBuf) -> Result<()>,
        mut temp: impl FnMut(PathBuf) -> Result<()>,
    ) -> Result<()> {
        let failed = |e| {
            io_unavailable(
                format!("listing chunk directory {} failed", dir.display()),
                e,
            )
        };
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(e)),
        };
        for entry in entries {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(layout::parse_chunk_name) else {
                if name.to_str().is_some_and(layout::is_put_temp_name) {
                    temp(entry.path())?;
                } else {
                    tracing::debug!(file = ?entry.path(), "skipping a file that is not a chunk");
                }
                continue;
            };
            if hash.0[0] != byte {
                tracing::debug!(file = ?entry.path(), "skipping a chunk in the wrong directory");
                continue;
            }
            f(hash, entry.path())?;
        }
        Ok(())
    }

    /// Runs `f` on every fan-out directory, on a few threads (walking a
    /// large store is I/O-bound and directories are independent).
    pub(crate) fn on_fanout_dirs<T: Send>(
        &self,
        f: &(dyn Fn(u8, &Path) -> Result<T> + Sync),
    ) -> Result<Vec<T>> {
        let dirs = self.fanout_dirs().map_err(|e| {
            io_unavailable(
                format!("listing the chunk store at {} failed", self.dir().display()),
                e,
            )
        })?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(dirs.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let results: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let Some((byte, dir)) = dirs.get(next.fetch_add(1, Ordering::Relaxed))
                            else {
                                break;
                            };
                            match f(*byte, dir) {
                                Ok(t) => out.push(t),
                                Err(e) => {
                                    stop.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(Error::internal("a chunk store walker panicked")))
                })
                .collect()
        });
        let mut all = Vec::with_capacity(dirs.len());
        for r in results {
            all.extend(r?);
        }
        Ok(all)
    }

    /// Puts back every chunk a sweep took out (`tmp/gc-*`) whose ctime (the
    /// time it was taken out, by the filesystem's clock) is at or before
    /// `older_than`, or every one when `None`. Always safe, even while
    /// another process sweeps: at worst that sweep finds its file gone and
    /// keeps the chunk. Returns how many were put back.
    pub(crate) fn restore_taken_out(&self, older_than: Option<SystemTime>) -> Result<u64> {
        let older_than = older_than.map(time::to_timestamp);
        let failed = |e: io::Error| {
            io_unavailable("restoring chunks a sweep took out failed".to_string(), e)
        };
        let mut restored = 0;
        for entry in fs::read_dir(self.layout.tmp()).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            let Some(hash) = entry.file_name().to_str().and_then(layout::parse_gc_name) else {
                continue;
            };
            if let Some(limit) = older_than {
                match entry.metadata() {
                    Ok(m) if time::ctime(&m) <= limit => {}
                    Ok(_) => continue,
                    Err(e) if e.kind() == IoKind::NotFound => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
            match self.install(&entry.path(), &hash) {
                Ok(()) => {
                    tracing::info!(chunk = %hash, "put back a chunk an interrupted sweep took out");
                    restored += 1;
                }
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(io_unavailable(format!("restoring chunk {hash} failed"), e)),
            }
        }
        if restored > 0 {
            self.sync()?;
        }
        Ok(restored)
    }
}

/// A chunk file's bytes as a frame, or the error that says why not.
fn read_result(hash: &ChunkHash, read: io::Result<Vec<u8>>) -> Result<Vec<u8>> {
    match read {
        Ok(frame) if frame.is_empty() => Err(Error::internal(format!(
            "chunk {hash} is corrupted: its file is empty"
        ))),
        Ok(frame) => Ok(frame),
        Err(e) if e.kind() == IoKind::NotFound => Err(Error::not_found(format!("chunk {hash}"))),
        Err(e) if transient(&e) => Err(io_unavailable(format!("reading chunk {hash} failed"), e)),
        Err(e) => Err(Error::internal(format!("reading chunk {hash} failed")).with_source(e)),
    }
}

impl ChunkStore for FsChunkStore {
    fn put(&self, hash: &ChunkHash, frame: &[u8]) -> Result<Put> {
        if self.touch(hash)? {
            return Ok(Put::Existing);
        }
        let failed = |e| io_unavailable(format!("storing chunk {hash} failed"), e);
        let temp = self.write_temp(hash, frame).map_err(failed)?;
        self.staged
            .lock()
            .map_err(|_| Error::internal("chunk store lock poisoned"))?
            .push((temp, *hash));
        Ok(Put::New(frame.len() as u64))
    }

    fn rewrite(&self, hash: &ChunkHash, frame: &[u8]) -> Result<bool> {
        if !self.contains(hash)? {
            return Ok(false);
        }
        let failed = |e| io_unavailable(format!("rewriting chunk {hash} failed"), e);
        let temp = self.write_temp(hash, frame).map_err(failed)?;
        let durable = File::open(&temp).and_then(|f| f.sync_all());
        if let Err(e) = durable.and_then(|()| self.install(&temp, hash)) {
            let _ = fs::remove_file(&temp);
            return Err(failed(e));
        }
        fsync_dir(&self.layout.fanout_dir(hash.0[0])).map_err(failed)?;
        Ok(true)
    }

    fn touch(&self, hash: &ChunkHash) -> Result<bool> {
        let path = self.layout.chunk_path(hash);
        for _ in 0..TOUCH_ATTEMPTS {
            match self.touch_once(&path) {
                Ok(Some(present)) => return Ok(present),
                Ok(None) => continue,
                Err(e) if e.kind() == IoKind::InvalidData => {
                    return Err(Error::internal(format!(
                        "chunk {hash} is corrupted: not a regular file"
                    ))
                    .with_source(e))
                }
                Err(e) => return Err(io_unavailable(format!("refreshing chunk {hash} failed"), e)),
            }
        }
        // Still changing under us: say absent, so the caller stores it.
        Ok(false)
    }

    fn contains(&self, hash: &ChunkHash) -> Result<bool> {
        match fs::symlink_metadata(self.layout.chunk_path(hash)) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == IoKind::NotFound => Ok(false),
            Err(e) => Err(io_unavailable(format!("looking up chunk {hash} failed"), e)),
        }
    }

    fn get(&self, hash: &ChunkHash) -> Result<Vec<u8>> {
        read_result(hash, fs::read(self.layout.chunk_path(hash)))
    }

    /// Opens every file first and asks the kernel to read each ahead
    /// (`POSIX_FADV_WILLNEED` starts the read without waiting), then reads
    /// them in order: on a cold disk the reads are in flight together
    /// instead of one after another.
    fn get_many(&self, hashes: &[ChunkHash]) -> Vec<Result<Vec<u8>>> {
        let opened: Vec<io::Result<File>> = hashes
            .iter()
            .map(|h| {
                let file = File::open(self.layout.chunk_path(h))?;
                // Only a hint: a failure changes nothing but speed.
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::WillNeed);
                Ok(file)
            })
            .collect();
        hashes
            .iter()
            .zip(opened)
            .map(|(hash, file)| {
                let read = file.and_then(|mut f| {
                    let mut frame = Vec::with_capacity(
                        f.metadata().map_or(0, |m| m.len() as usize).min(1 << 20) + 1,
                    );
                    f.read_to_end(&mut frame).map(|_| frame)
                });
                read_result(hash, read)
            })
            .collect()
    }

    fn sync(&self) -> Result<()> {
        let _one_at_a_time = self
            .sync_lock
            .lock()
            .map_err(|_| Error::internal("chunk store lock poisoned"))?;
        let staged = std::mem::take(
            &mut *self
                .staged
                .lock()
                .map_err(|_| Error::internal("chunk store lock poisoned"))?,
        );
        if let Err(e) = self.install_staged(&staged) {
            // Keep the temp files still there for the next sync.
            let left: Vec<_> = staged.into_iter().filter(|(p, _)| p.exists()).collect();
            if let Ok(mut s) = self.staged.lock() {
                s.extend(left);
            }
            return Err(e);
        }
        self.sync_dirs()
    }

    fn sweep(
        &self,
        keep: &(dyn Fn(&ChunkHash) -> bool + Sync),
        cutoff: Timestamp,
    ) -> Result<SweepStats> {
        crate::sweep::sweep(self, keep, cutoff)
    }

    fn scan_headers(&self, len: usize, each: &(dyn Fn(&ChunkHash, &[u8]) + Sync)) -> Result<()> {
        self.on_fanout_dirs(&|byte, dir| {
            let mut head = vec![0u8; len];
            self.for_each_chunk(byte, dir, |hash, path| {
                let n = match File::open(&path).and_then(|mut f| read_up_to(&mut f, &mut head)) {
                    Ok(n) => n,
                    // Swept meanwhile.
                    Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
                    Err(e) => {
                        return Err(io_unavailable(format!("reading chunk {hash} failed"), e))
                    }
                };
                each(&hash, &head[..n]);
                Ok(())
            })
        })?;
        Ok(())
    }

    fn usage(&self) -> Result<Usage> {
        let per_dir = self.on_fanout_dirs(&|byte, dir| {
            let mut usage = Usage::default();
            self.for_each_chunk(byte, dir, |hash, path| {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => {
                        usage.chunks += 1;
                        usage.bytes += m.len();
                    }
                    Ok(_) => {}
                    // Swept meanwhile.
                    Err(e) if e.kind() == IoKind::NotFound => {}
                    Err(e) => {
                        return Err(io_unavailable(format!("measuring chunk {hash} failed"), e))
                    }
                }
                Ok(())
            })?;
            Ok(usage)
        })?;
        Ok(per_dir.into_iter().fold(Usage::default(), |a, u| Usage {
            chunks: a.chunks + u.chunks,
            bytes: a.bytes + u.bytes,
        }))
    }
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// fsyncs a directory, making the renames and creations in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Errors that say the machine is short of something, not that a file is
/// damaged.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        IoKind::StorageFull
            | IoKind::QuotaExceeded
            | IoKind::OutOfMemory
            | IoKind::Interrupted
            | IoKind::WouldBlock
            | IoKind::TimedOut
            | IoKind::ResourceBusy
            | IoKind::PermissionDenied
            | IoKind::ReadOnlyFilesystem
    ) || matches!(e.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE
}

/// An `Unavailable` error saying what the call was doing; a full disk or
/// quota is named in the message, since that is what an operator must fix.
pub(crate) fn io_unavailable(doing: String, e: io::Error) -> Error {
    let hint = match e.kind() {
        IoKind::StorageFull => ": no space left on the chunk store's disk",
        IoKind::QuotaExceeded => ": the chunk store's disk quota is exceeded",
        IoKind::ReadOnlyFilesystem => ": the chunk store's filesystem is read-only",
        IoKind::PermissionDenied => ": permission denied",
        _ => "",
    };
    Error::unavailable(format!("{doing}{hint}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baas_core::ErrorKind;

    #[test]
    fn a_full_disk_is_a_clear_retryable_error() {
        let e = io_unavailable(
            "storing chunk abc failed".to_string(),
            io::Error::from(IoKind::StorageFull),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.retryable());
        assert_eq!(
            e.message(),
            "storing chunk abc failed: no space left on the chunk store's disk"
        );
        let e = io_unavailable("x".to_string(), io::Error::from_raw_os_error(5));
        assert_eq!(e.message(), "x");
        assert!(
            e.detailed().contains("Input/output error"),
            "{}",
            e.detailed()
        );
    }
}
