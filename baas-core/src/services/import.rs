//! Importing bytes as a new version: from a stream (one pass, chunked,
//! hashed, compressed and stored as it arrives) or chunk by chunk (the
//! resumable protocol: the client sends a manifest, then only the chunks the
//! store lacks, then commits).
//!
//! Either way a version becomes visible only in `commit_version`, after
//! every chunk it references is durable. An import that fails at any point
//! leaves no version: only unreferenced chunks, which garbage collection
//! reclaims.

use std::collections::HashSet;
use std::io::{ErrorKind as IoKind, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

use super::policy::{check_user, check_write_image};
use super::{Actor, Baas};
use crate::content::{decode_frame, is_zero, ChunkHash, FrameEncoder, Manifest, CHUNK_SIZE};
use crate::model::*;
use crate::ports::{Put, UploadSession};
use crate::{Error, ErrorKind, Result};

/// An import makes its chunks durable and visible every this many chunks
/// (64 MiB of input), and once more before committing.
const SYNC_EVERY: usize = 1024;

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// A note stored with the version.
    pub note: Option<String>,
}

/// Turns a reader's I/O error into a BAAS error. Shells wrap their own
/// errors (a body over the limit, say) in `io::Error::other(Error)`; those
/// come back out unchanged.
fn read_error(e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::internal("reading the upload failed");
    }
    Error::invalid("body", format!("reading the upload failed: {e}")).with_source(e)
}

/// Fills `buf` from `r` until full or end of stream; returns the count.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        }
    }
    Ok(n)
}

/// An import's bytes, a whole chunk at a time: the shape a shell that
/// already holds the bytes in owned buffers can hand over without copying
/// them again (the server's upload pump does).
pub trait ChunkSource {
    /// Puts the next [`CHUNK_SIZE`] bytes of the stream in `buf`, replacing
    /// what it holds (an implementation may swap in a buffer of its own),
    /// and returns how many: fewer only for the stream's last chunk, 0 at
    /// its end.
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<usize>;
}

/// A [`ChunkSource`] over a reader.
struct ReadChunks<'a>(&'a mut dyn Read);

impl ChunkSource for ReadChunks<'_> {
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        buf.resize(CHUNK_SIZE as usize, 0);
        let n = read_full(self.0, buf)?;
        buf.truncate(n);
        Ok(n)
    }
}

impl Baas {
    fn owner_quota_check(&self, image: &Image, adding: u64) -> Result<()> {
        let Some(quota) = self.config.user_quota_bytes else {
            return Ok(());
        };
        if let Some(owner) = self.meta.user(image.owner)? {
            if owner.role == Role::Admin {
                return Ok(());
            }
        }
        let used = self.meta.bytes_added_by_owner(image.owner)?;
        if used.saturating_add(adding) > quota {
            return Err(Error::too_large(format!(
                "quota exceeded: the owner stores {used} bytes, this version adds {adding}, the quota is {quota}"
            )));
        }
        Ok(())
    }

    fn open_session(
        &self,
        actor: &Actor,
        image: &Image,
        manifest: Option<Manifest>,
        source: VersionSource,
    ) -> Result<UploadSession> {
        let created_by = match actor {
            Actor::System => image.owner,
            _ => check_user(actor)?,
        };
        let now = self.clock.now();
        let session = UploadSession {
            id: UploadId(self.entropy.uuid()),
            image: image.id,
            created_by,
            manifest,
            source,
            started_at: now,
            last_active: now,
            added_bytes: 0,
        };
        self.meta.insert_upload(&session)?;
        Ok(session)
    }

    /// Stores one chunk's bytes unless they are zeros or already stored;
    /// returns its manifest entry and the bytes newly stored.
    fn store_chunk(
        &self,
        data: &[u8],
        seen: &Mutex<HashSet<ChunkHash>>,
        encoder: &mut FrameEncoder,
    ) -> Result<(Option<ChunkHash>, u64)> {
        if is_zero(data) {
            return Ok((None, 0));
        }
        let hash = ChunkHash::of(data);
        let first = seen
            .lock()
            .map_err(|_| Error::internal("import worker panicked"))?
            .insert(hash);
        if !first || self.chunks.touch(&hash)? {
            return Ok((Some(hash), 0));
        }
        let frame = encoder.encode(data)?;
        match self.chunks.put(&hash, &frame)? {
            Put::New(n) => Ok((Some(hash), n)),
            Put::Existing => Ok((Some(hash), 0)),
        }
    }

    /// Reads `reader` to its end, storing chunks on worker threads while
    /// the next ones are read. Memory is bounded by about three chunks per
    /// worker.
    fn store_stream(
        &self,
        source: &mut dyn ChunkSource,
        session: &UploadSession,
    ) -> Result<(Manifest, u64)> {
        let cs = CHUNK_SIZE as usize;
        let workers = self.config.import_workers.max(1);
        let limit = self.config.max_version_size;
        let seen = Mutex::new(HashSet::new());
        let failed = AtomicBool::new(false);
        let (work_tx, work_rx) = sync_channel::<(usize, Vec<u8>)>(workers * 2);
        let work_rx = Mutex::new(work_rx);
        type Done = Result<(usize, Option<ChunkHash>, u64, Vec<u8>)>;
        let (done_tx, done_rx) = channel::<Done>();

        // Periodic syncs run on their own thread, so that reading and
        // storing go on while a batch is flushed. A request made while one
        // is pending is folded into it.
        // Its failure travels like a worker's, so the reader, which waits
        // for every sender to go, always sees it.
        let (sync_tx, sync_rx) = sync_channel::<()>(1);

        std::thread::scope(|s| {
            {
                let (done_tx, failed) = (done_tx.clone(), &failed);
                s.spawn(move || {
                    for () in sync_rx.iter() {
                        if let Err(e) = self.chunks.sync() {
                            let _ = done_tx.send(Err(e));
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                });
            }
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (work_rx, seen, failed) = (&work_rx, &seen, &failed);
                let level = self.config.compression_level;
                s.spawn(move || {
                    let mut encoder = match FrameEncoder::new(level) {
                        Ok(e) => e,
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            let _ = done_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let next = match work_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((index, buf)) = next else { return };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        let r = self
                            .store_chunk(&buf, seen, &mut encoder)
                            .map(|(h, added)| (index, h, added, buf));
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if done_tx.send(r).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);

            let mut entries: Vec<Option<ChunkHash>> = Vec::new();
            let mut added = 0u64;
            let mut first_error: Option<Error> = None;
            let mut pool: Vec<Vec<u8>> = Vec::new();
            let mut take = |r: Done,
                            entries: &mut Vec<Option<ChunkHash>>,
                            pool: &mut Vec<Vec<u8>>,
                            first_error: &mut Option<Error>| match r {
                Ok((i, h, a, buf)) => {
                    if entries.len() <= i {
                        entries.resize(i + 1, None);
                    }
                    entries[i] = h;
                    added += a;
                    pool.push(buf);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            };
            let mut total = 0u64;
            let mut index = 0usize;
            let mut last_touch = self.clock.now();
            let read_result: Result<()> = (|| loop {
                while let Ok(r) = done_rx.try_recv() {
                    take(r, &mut entries, &mut pool, &mut first_error);
                }
                if first_error.is_some() {
                    return Ok(());
                }
                let mut buf = pool.pop().unwrap_or_default();
                let n = source.next_chunk(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if n > cs || buf.len() != n {
                    return Err(Error::internal(format!(
                        "an import source gave a chunk of {} bytes, said {n}",
                        buf.len()
                    )));
                }
                total += n as u64;
                if total > limit {
                    return Err(Error::too_large(format!(
                        "the version is larger than the limit of {limit} bytes"
                    )));
                }
                if is_zero(&buf) {
                    // A hole (most of a typical image): checked here, as
                    // fast as handing it to a worker, and the manifest
                    // entry stays `None`.
                    pool.push(buf);
                } else if work_tx.send((index, buf)).is_err() {
                    return Err(Error::internal("import workers stopped"));
                }
                index += 1;
                if index % SYNC_EVERY == 0 {
                    // Bound what the chunk store holds staged, and let
                    // concurrent imports see these chunks. (The sync
                    // before the commit is `finish_session`'s.)
                    let _ = sync_tx.try_send(());
                }
                if index % 1024 == 0 {
                    let now = self.clock.now();
                    if now.millis() - last_touch.millis() > 30_000 {
                        self.meta.touch_upload(session.id, now, 0)?;
                        last_touch = now;
                    }
                }
                if n < cs {
                    return Ok(());
                }
            })();
            if read_result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            drop(sync_tx);
            drop(work_tx);
            for r in done_rx.iter() {
                take(r, &mut entries, &mut pool, &mut first_error);
            }
            read_result?;
            if let Some(e) = first_error {
                return Err(e);
            }

            entries.resize(index, None);
            let manifest = Manifest::new(total, CHUNK_SIZE, entries)?;
            Ok((manifest, added))
        })
    }

    /// Checks that a session is still alive (garbage collection protects
    /// its chunks only while it is) and commits its version.
    fn finish_session(
        &self,
        session: &UploadSession,
        manifest: Manifest,
        added: u64,
        note: Option<String>,
    ) -> Result<Version> {
        let now = self.clock.now();
        let alive_since = now.plus_millis(-self.config.upload_idle_timeout_ms);
        match self.meta.upload(session.id)? {
            Some(s) if s.last_active >= alive_since => {}
            _ => {
                return Err(Error::unavailable(
                    "the upload session expired before it was committed; upload again",
                ))
            }
        }
        self.chunks.sync()?;
        let image = self
            .meta
            .image(session.image)?
            .ok_or_else(|| Error::not_found(format!("image {}", session.image)))?;
        self.owner_quota_check(&image, added)?;
        let version = self.meta.commit_version(&NewVersion {
            image: session.image,
            manifest,
            added_bytes: added,
            created_by: session.created_by,
            created_at: self.clock.now(),
            source: session.source.clone(),
            note,
        })?;
        Ok(version)
    }

    /// Imports `reader` as the next version of `image` (owner or admin).
    /// The stream is read once; chunks already stored cost no space.
    pub fn import_version(
        &self,
        actor: &Actor,
        image: ImageId,
        reader: &mut dyn Read,
        opts: ImportOptions,
    ) -> Result<Version> {
        self.import_chunks(actor, image, &mut ReadChunks(reader), opts)
    }

    /// [`Baas::import_version`] from a [`ChunkSource`].
    pub fn import_chunks(
        &self,
        actor: &Actor,
        image: ImageId,
        source: &mut dyn ChunkSource,
        opts: ImportOptions,
    ) -> Result<Version> {
        let img = self.get_image(actor, image)?;
        check_write_image(actor, &img)?;
        check_note(&opts.note)?;
        self.owner_quota_check(&img, 0)?;
        let session = self.open_session(actor, &img, None, VersionSource::Upload)?;
        let result = self
            .store_stream(source, &session)
            .and_then(|(manifest, added)| {
                self.finish_session(&session, manifest, added, opts.note)
            });
        let ended = self.meta.delete_upload(session.id);
        let version = result?;
        ended?;
        Ok(version)
    }

    // --- the chunk-level (resumable) protocol

    fn session_for(&self, actor: &Actor, id: UploadId) -> Result<UploadSession> {
        let session = self
            .meta
            .upload(id)?
            .ok_or_else(|| Error::not_found(format!("upload {id}")))?;
        let mine = match actor {
            Actor::System => true,
            Actor::User { id, role, .. } => *id == session.created_by || *role == Role::Admin,
            Actor::Agent { .. } => self.agent_owns_capture(actor, &session)?,
        };
        if !mine {
            return Err(Error::not_found(format!("upload {id}")));
        }
        Ok(session)
    }

    pub(crate) fn missing_of(&self, manifest: &Manifest) -> Result<Vec<ChunkHash>> {
        let mut missing = Vec::new();
        for h in manifest.distinct_chunks() {
            if !self.chunks.touch(&h)? {
                missing.push(h);
            }
        }
        Ok(missing)
    }

    /// Starts a chunk-level upload of `manifest` as the next version of
    /// `image`; returns the session and the chunks the store lacks (in
    /// manifest order of first use).
    pub fn begin_upload(
        &self,
        actor: &Actor,
        image: ImageId,
        manifest: Manifest,
    ) -> Result<(UploadSession, Vec<ChunkHash>)> {
        let img = self.get_image(actor, image)?;
        check_write_image(actor, &img)?;
        if manifest.size() > self.config.max_version_size {
            return Err(Error::too_large(format!(
                "the version is larger than the limit of {} bytes",
                self.config.max_version_size
            )));
        }
        if manifest.chunk_size() != CHUNK_SIZE {
            return Err(Error::invalid(
                "manifest",
                format!("chunk size must be {CHUNK_SIZE}"),
            ));
        }
        self.owner_quota_check(&img, 0)?;
        let session =
            self.open_session(actor, &img, Some(manifest.clone()), VersionSource::Upload)?;
        let missing = self.missing_of(&manifest)?;
        Ok((session, missing))
    }

    /// The chunks an upload still lacks (to resume after a break).
    pub fn upload_missing(&self, actor: &Actor, id: UploadId) -> Result<Vec<ChunkHash>> {
        let session = self.session_for(actor, id)?;
        self.meta.touch_upload(id, self.clock.now(), 0)?;
        match &session.manifest {
            Some(m) => self.missing_of(m),
            None => Err(Error::invalid(
                "upload",
                "this upload is a stream, not chunk-level",
            )),
        }
    }

    /// Receives one chunk frame of an upload. The frame is decoded and
    /// checked against `hash` before anything is stored.
    pub fn upload_chunk(
        &self,
        actor: &Actor,
        id: UploadId,
        hash: ChunkHash,
        frame: &[u8],
    ) -> Result<Put> {
        let session = self.session_for(actor, id)?;
        let manifest = session
            .manifest
            .as_ref()
            .ok_or_else(|| Error::invalid("upload", "this upload is a stream, not chunk-level"))?;
        if !manifest.contains(&hash) {
            return Err(Error::invalid(
                "hash",
                format!("chunk {hash} is not in this upload's manifest"),
            ));
        }
        let data = decode_frame(frame, &hash).map_err(|e| match e.kind() {
            ErrorKind::Internal => Error::invalid("chunk", e.message().to_string()),
            _ => e,
        })?;
        if data.len() > manifest.chunk_size() as usize {
            return Err(Error::invalid(
                "chunk",
                "longer than the manifest's chunk size",
            ));
        }
        let put = self.chunks.put(&hash, frame)?;
        self.chunks.sync()?;
        let added = match put {
            Put::New(n) => n,
            Put::Existing => 0,
        };
        self.meta.touch_upload(id, self.clock.now(), added)?;
        Ok(put)
    }

    /// Receives several chunk frames of an upload at once, the batched
    /// form of [`Baas::upload_chunk`]: every frame is decoded and checked
    /// against its hash before anything is stored, then the batch is made
    /// durable with one sync and the session touched once.
    pub fn upload_chunks(
        &self,
        actor: &Actor,
        id: UploadId,
        frames: &[(ChunkHash, Vec<u8>)],
    ) -> Result<Vec<Put>> {
        let session = self.session_for(actor, id)?;
        let manifest = session
            .manifest
            .as_ref()
            .ok_or_else(|| Error::invalid("upload", "this upload is a stream, not chunk-level"))?;
        let wanted: HashSet<ChunkHash> = manifest.chunks().flatten().collect();
        for (hash, frame) in frames {
            if !wanted.contains(hash) {
                return Err(Error::invalid(
                    "hash",
                    format!("chunk {hash} is not in this upload's manifest"),
                ));
            }
            let data = decode_frame(frame, hash).map_err(|e| match e.kind() {
                ErrorKind::Internal => Error::invalid("chunk", e.message().to_string()),
                _ => e,
            })?;
            if data.len() > manifest.chunk_size() as usize {
                return Err(Error::invalid(
                    "chunk",
                    "longer than the manifest's chunk size",
                ));
            }
        }
        let mut puts = Vec::with_capacity(frames.len());
        let mut added = 0;
        for (hash, frame) in frames {
            let put = self.chunks.put(hash, frame)?;
            if let Put::New(n) = put {
                added += n;
            }
            puts.push(put);
        }
        self.chunks.sync()?;
        self.meta.touch_upload(id, self.clock.now(), added)?;
        Ok(puts)
    }

    /// Commits a chunk-level upload once every chunk is stored.
    pub fn commit_upload(
        &self,
        actor: &Actor,
        id: UploadId,
        opts: ImportOptions,
    ) -> Result<Version> {
        let session = self.session_for(actor, id)?;
        check_note(&opts.note)?;
        let manifest = session
            .manifest
            .clone()
            .ok_or_else(|| Error::invalid("upload", "this upload is a stream, not chunk-level"))?;
        let missing = self.missing_of(&manifest)?;
        if !missing.is_empty() {
            return Err(Error::conflict(format!(
                "{} chunks of this upload are still missing (first: {})",
                missing.len(),
                missing[0]
            )));
        }
        let added = session.added_bytes;
        let version = self.finish_session(&session, manifest, added, opts.note)?;
        self.meta.delete_upload(id)?;
        Ok(version)
    }

    /// Abandons an upload; its chunks are reclaimed by garbage collection.
    pub fn abort_upload(&self, actor: &Actor, id: UploadId) -> Result<()> {
        self.session_for(actor, id)?;
        self.meta.delete_upload(id)
    }
}
