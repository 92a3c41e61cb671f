//! The sweep: removes old unreferenced chunks without racing `touch`, and
//! cleans up what crashed `put`s left in the fan-out directories and
//! crashed sweeps left in `tmp/`.

use std::fs;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use baas_core::content::ChunkHash;
use baas_core::model::Timestamp;
use baas_core::ports::SweepStats;
use baas_core::{Error, Result};

use crate::layout::{self, GC_PREFIX};
use crate::store::{fsync_dir, io_unavailable, FsChunkStore};
use crate::time;

/// What became of one chunk the sweep tried to remove.
enum Fate {
    /// Unlinked; it had this many bytes.
    Removed(u64),
    /// Touched meanwhile: back in place.
    PutBack,
    /// Gone before we got to it, or put back by someone else.
    Elsewhere,
}

pub(crate) fn sweep(
    store: &FsChunkStore,
    keep: &(dyn Fn(&ChunkHash) -> bool + Sync),
    cutoff: Timestamp,
) -> Result<SweepStats> {
    let abandoned_before = SystemTime::now()
        .checked_sub(store.stale_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // First what crashes left behind, so that a chunk put back is then
    // judged like any other.
    store.restore_taken_out(Some(abandoned_before))?;
    let abandoned = Abandoned {
        cutoff,
        before: time::to_timestamp(abandoned_before),
    };
    let mut temps_removed = clean_old_tmp_dir(store, &abandoned)?;

    let per_dir =
        store.on_fanout_dirs(&|byte, dir| sweep_dir(store, keep, &abandoned, byte, dir))?;
    let mut total = SweepStats::default();
    for (s, temps) in per_dir {
        total.scanned += s.scanned;
        total.removed += s.removed;
        total.freed_bytes += s.freed_bytes;
        total.kept_recent += s.kept_recent;
        temps_removed += temps;
    }
    if temps_removed > 0 {
        tracing::info!(
            removed = temps_removed,
            "removed temp files of interrupted chunk writes"
        );
    }
    if total.removed > 0 {
        fsync_dir(store.layout.tmp()).map_err(|e| {
            io_unavailable(
                "syncing the chunk store's tmp directory failed".to_string(),
                e,
            )
        })?;
    }
    Ok(total)
}

/// When a temp file of a `put` counts as abandoned by a crash.
struct Abandoned {
    /// Older than the sweep's cutoff by its timestamp (the store's clock)...
    cutoff: Timestamp,
    /// ...and unchanged since this time by the filesystem's clock.
    before: Timestamp,
}

impl Abandoned {
    /// Deletes `path` if it is a temp file abandoned by a crash; whether it
    /// did.
    fn remove(&self, path: &Path) -> std::io::Result<bool> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if !meta.is_file() || time::mtime(&meta) >= self.cutoff || time::ctime(&meta) > self.before
        {
            return Ok(false);
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == IoKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Sweeps one fan-out directory; its stats and how many abandoned temp
/// files it deleted.
fn sweep_dir(
    store: &FsChunkStore,
    keep: &(dyn Fn(&ChunkHash) -> bool + Sync),
    abandoned: &Abandoned,
    byte: u8,
    dir: &Path,
) -> Result<(SweepStats, u64)> {
    let cutoff = abandoned.cutoff;
    let mut stats = SweepStats::default();
    let mut changed = false;
    let mut temps = 0;
    let on_temp = |path: PathBuf| match abandoned.remove(&path) {
        Ok(removed) => {
            temps += u64::from(removed);
            Ok(())
        }
        Err(e) => Err(io_unavailable(
            format!("removing the stale temp file {} failed", path.display()),
            e,
        )),
    };
    let walked = store.walk_fanout_dir(
        byte,
        dir,
        |hash, path| {
            stats.scanned += 1;
            if keep(&hash) {
                return Ok(());
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
                Err(e) => return Err(io_unavailable(format!("inspecting chunk {hash} failed"), e)),
            };
            if time::mtime(&meta) >= cutoff {
                stats.kept_recent += 1;
                return Ok(());
            }
            match remove(store, &hash, &path, cutoff)? {
                Fate::Removed(len) => {
                    stats.removed += 1;
                    stats.freed_bytes += len;
                    changed = true;
                }
                Fate::PutBack => {
                    stats.kept_recent += 1;
                    changed = true;
                }
                Fate::Elsewhere => {}
            }
            Ok(())
        },
        on_temp,
    );
    // Make what was done durable even if the walk stopped on an error.
    if changed {
        fsync_dir(dir).map_err(|e| {
            io_unavailable(
                format!("syncing chunk directory {} failed", dir.display()),
                e,
            )
        })?;
    }
    walked?;
    Ok((stats, temps))
}

/// Removes one old, unreferenced chunk unless a concurrent `touch` saves
/// it. The chunk is renamed out of place *first*: from then on a `touch`
/// finds nothing (and the importer stores the chunk afresh), so the mtime
/// read afterwards is final unless a touch got in before the rename, in
/// which case the chunk goes back.
fn remove(store: &FsChunkStore, hash: &ChunkHash, path: &Path, cutoff: Timestamp) -> Result<Fate> {
    let out = store.layout.gc_path(hash);
    match fs::rename(path, &out) {
        Ok(()) => {}
        Err(e) if e.kind() == IoKind::NotFound => return Ok(Fate::Elsewhere),
        Err(e) => {
            return Err(io_unavailable(
                format!("taking out chunk {hash} for removal failed"),
                e,
            ))
        }
    }
    #[cfg(test)]
    crate::store::Hooks::run(&store.hooks.taken_out, &out);
    let put_back = |why: Option<std::io::Error>| -> Result<Fate> {
        match fs::rename(&out, path) {
            Ok(()) => {}
            // Another process's open() or sweep put it back already.
            Err(e) if e.kind() == IoKind::NotFound => {}
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "putting back chunk {hash} failed; it waits in {} and is put back when the store is next opened",
                    out.display()
                ))
                .with_source(e))
            }
        }
        match why {
            None => Ok(Fate::PutBack),
            Some(e) => Err(io_unavailable(format!("inspecting chunk {hash} failed"), e)),
        }
    };
    let meta = match fs::symlink_metadata(&out) {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(Fate::Elsewhere),
        Err(e) => return put_back(Some(e)),
    };
    if time::mtime(&meta) >= cutoff {
        return put_back(None);
    }
    match fs::remove_file(&out) {
        Ok(()) => Ok(Fate::Removed(meta.len())),
        Err(e) if e.kind() == IoKind::NotFound => Ok(Fate::Elsewhere),
        Err(e) => put_back(Some(e)),
    }
}

/// Deletes temp files of `put`s that died in `tmp/`, where versions before
/// the temp files moved into the fan-out directories wrote them. Chunks a
/// sweep took out (`gc-*`) are left to `restore_taken_out`.
fn clean_old_tmp_dir(store: &FsChunkStore, abandoned: &Abandoned) -> Result<u64> {
    let failed = |e| {
        io_unavailable(
            "cleaning the chunk store's tmp directory failed".to_string(),
            e,
        )
    };
    let mut removed = 0;
    for entry in fs::read_dir(store.layout.tmp()).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(GC_PREFIX) && layout::parse_gc_name(n).is_some())
        {
            continue;
        }
        removed += u64::from(abandoned.remove(&entry.path()).map_err(failed)?);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    //! The interleavings of `touch` and the sweep, replayed one by one.

    use std::fs::File;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use baas_core::content::ChunkHash;
    use baas_core::model::Timestamp;
    use baas_core::ports::ChunkStore;

    use crate::time::to_timestamp;
    use crate::FsChunkStore;

    fn old_chunk(store: &FsChunkStore, seed: u8) -> ChunkHash {
        let h = ChunkHash::of(&[seed; 100]);
        store.put(&h, &[0, seed]).expect("put");
        store.sync().expect("sync");
        let path = store.layout.chunk_path(&h);
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::open(path)
            .and_then(|f| f.set_modified(old))
            .expect("age");
        h
    }

    fn now() -> Timestamp {
        to_timestamp(SystemTime::now())
    }

    fn tmp_is_empty(store: &FsChunkStore) -> bool {
        std::fs::read_dir(store.layout.tmp())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    }

    /// A touch that opened the file before the sweep renamed it out sets
    /// the mtime after: the sweep sees it and puts the chunk back.
    #[test]
    fn a_touch_landing_after_the_take_out_puts_the_chunk_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FsChunkStore::open(dir.path()).expect("open");
        let h = old_chunk(&store, 1);
        *store.hooks.taken_out.lock().expect("hook") = Some(Arc::new(|out| {
            File::open(out)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .expect("late touch");
        }));
        let stats = store.sweep(&|_| false, now()).expect("sweep");
        assert_eq!((stats.removed, stats.kept_recent), (0, 1));
        assert!(store.contains(&h).expect("contains"));
        assert!(tmp_is_empty(&store));
    }

    /// A touch that opened the file, then lost it to a whole sweep before
    /// setting the mtime, must say the chunk is absent.
    #[test]
    fn a_touch_whose_file_was_swept_meanwhile_reports_absent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(FsChunkStore::open(dir.path()).expect("open"));
        let h = old_chunk(&store, 2);
        let inner = Arc::downgrade(&store);
        *store.hooks.touch_opened.lock().expect("hook") = Some(Arc::new(move |_| {
            if let Some(store) = inner.upgrade() {
                let stats = store.sweep(&|_| false, now()).expect("sweep");
                assert_eq!(stats.removed, 1);
            }
        }));
        assert!(!store.touch(&h).expect("touch"));
        assert!(!store.contains(&h).expect("contains"));
    }

    /// A touch that opened the file while a sweep takes it out and puts it
    /// back (someone else touched it) finds it again and says present.
    #[test]
    fn a_touch_spanning_a_put_back_reports_present() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(FsChunkStore::open(dir.path()).expect("open"));
        let h = old_chunk(&store, 3);
        *store.hooks.taken_out.lock().expect("hook") = Some(Arc::new(|out| {
            File::open(out)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .expect("other touch");
        }));
        let inner = Arc::downgrade(&store);
        *store.hooks.touch_opened.lock().expect("hook") = Some(Arc::new(move |_| {
            if let Some(store) = inner.upgrade() {
                // Only the first attempt races the sweep.
                store.hooks.touch_opened.lock().expect("hook").take();
                let stats = store.sweep(&|_| false, now()).expect("sweep");
                assert_eq!(stats.kept_recent, 1);
            }
        }));
        assert!(store.touch(&h).expect("touch"));
        assert!(store.contains(&h).expect("contains"));
        // And it is now recent: a sweep with the same cutoff keeps it.
        *store.hooks.taken_out.lock().expect("hook") = None;
        let cutoff = now().plus_millis(-60_000);
        assert_eq!(store.sweep(&|_| false, cutoff).expect("sweep").removed, 0);
    }
}
