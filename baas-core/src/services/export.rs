//! Reading a version back as bytes: a `Read + Seek` stream (for downloads,
//! with ranges) that fetches, decodes and verifies each chunk, and produces
//! holes as zeros without touching the store.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::{Actor, Baas};
use crate::content::{ChunkHash, FrameDecoder, Manifest};
use crate::model::*;
use crate::ports::ChunkStore;
use crate::Result;

/// A readable, seekable view of one version's bytes. Every chunk is checked
/// against its hash as it is read: corruption is an `io::Error` wrapping a
/// BAAS `Internal` error, never wrong bytes.
#[derive(Debug)]
pub struct VersionReader {
    chunks: Arc<dyn ChunkStore>,
    manifest: Manifest,
    version: Version,
    pos: u64,
    /// The decoded chunk under `pos`, by index.
    current: Option<(usize, Vec<u8>)>,
    /// Keeps the dictionaries compacted frames need.
    decoder: FrameDecoder,
    /// Stored frames of the next data chunks, read ahead while the reader
    /// moves forward chunk by chunk (by index, in order).
    ahead: VecDeque<(usize, Result<Vec<u8>>)>,
}

/// Data chunks read ahead at once when reading forward: one
/// [`ChunkStore::get_many`] for the next this many, so a cold store's disk
/// serves them together. At most about 2 MiB of frames.
const READ_AHEAD: usize = 32;
/// How far past a hole the read-ahead looks for data chunks.
const READ_AHEAD_SPAN: usize = 1024;

impl VersionReader {
    /// The version being read.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.manifest.size()
    }

    /// Whether the version is empty.
    pub fn is_empty(&self) -> bool {
        self.manifest.size() == 0
    }

    fn load(&mut self, index: usize) -> io::Result<()> {
        if matches!(&self.current, Some((i, _)) if *i == index) {
            return Ok(());
        }
        let data = match self.manifest.chunk(index) {
            None => Vec::new(),
            Some(hash) => {
                let frame = self.frame(index, &hash);
                frame
                    .and_then(|f| decode(&*self.chunks, &self.decoder, &hash, &f))
                    .map_err(io::Error::other)?
            }
        };
        if !data.is_empty() && data.len() != self.manifest.chunk_len(index) {
            return Err(io::Error::other(crate::Error::internal(format!(
                "chunk {index} of version {} of image {} has the wrong length",
                self.version.number, self.version.image
            ))));
        }
        self.current = Some((index, data));
        Ok(())
    }
}

impl VersionReader {
    /// The stored frame of data chunk `index` (hash `hash`): read ahead
    /// with the next data chunks when the reader moves forward from the
    /// chunk before, else alone (a range request far away).
    fn frame(&mut self, index: usize, hash: &ChunkHash) -> Result<Vec<u8>> {
        while self.ahead.front().is_some_and(|(i, _)| *i < index) {
            self.ahead.pop_front();
        }
        if let Some((_, frame)) = self.ahead.pop_front().filter(|(i, _)| *i == index) {
            return frame.map_err(missing(format!("chunk {hash}")));
        }
        self.ahead.clear();
        let forward =
            matches!(&self.current, Some((i, _)) if *i < index && index <= *i + READ_AHEAD_SPAN);
        if !forward {
            return self
                .chunks
                .get(hash)
                .map_err(missing(format!("chunk {hash}")));
        }
        let end = (index + READ_AHEAD_SPAN).min(self.manifest.len());
        let wanted: Vec<(usize, ChunkHash)> = (index..end)
            .filter_map(|i| self.manifest.chunk(i).map(|h| (i, h)))
            .take(READ_AHEAD)
            .collect();
        let hashes: Vec<ChunkHash> = wanted.iter().map(|(_, h)| *h).collect();
        let frames = self.chunks.get_many(&hashes);
        self.ahead = wanted.into_iter().map(|(i, _)| i).zip(frames).collect();
        match self.ahead.pop_front() {
            Some((_, frame)) => frame.map_err(missing(format!("chunk {hash}"))),
            None => self
                .chunks
                .get(hash)
                .map_err(missing(format!("chunk {hash}"))),
        }
    }
}

/// `NotFound` for something a committed version needs is the store's fault.
fn missing(what: String) -> impl Fn(crate::Error) -> crate::Error {
    move |e| match e.kind() {
        crate::ErrorKind::NotFound => crate::Error::internal(format!(
            "{what} of a committed version is missing from the store"
        )),
        _ => e,
    }
}

fn decode(
    store: &dyn ChunkStore,
    decoder: &FrameDecoder,
    hash: &ChunkHash,
    frame: &[u8],
) -> Result<Vec<u8>> {
    decoder.decode(frame, hash, |d| {
        store
            .get(d)
            .map_err(missing(format!("dictionary {d} of chunk {hash}")))
    })
}

impl Read for VersionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.manifest.size();
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let cs = u64::from(self.manifest.chunk_size());
        let index = (self.pos / cs) as usize;
        let offset = (self.pos % cs) as usize;
        let len = self.manifest.chunk_len(index);
        let n = (len - offset).min(buf.len());
        if self.manifest.chunk(index).is_none() {
            buf[..n].fill(0);
        } else {
            self.load(index)?;
            let data = &self.current.as_ref().map_or(&[][..], |(_, d)| d.as_slice());
            buf[..n].copy_from_slice(&data[offset..offset + n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for VersionReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.manifest.size() as i128;
        let target = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => size + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = target.min(u64::MAX as i128) as u64;
        Ok(self.pos)
    }
}

impl Baas {
    /// Opens `version` of an image the caller may read.
    pub fn open_version(
        &self,
        actor: &Actor,
        image: ImageId,
        version: VersionRef,
    ) -> Result<VersionReader> {
        let (version, manifest) = self.get_manifest(actor, image, version)?;
        Ok(VersionReader {
            chunks: self.chunks.clone(),
            manifest,
            version,
            pos: 0,
            current: None,
            decoder: FrameDecoder::new(),
            ahead: VecDeque::new(),
        })
    }

    /// One stored chunk frame, for clients that fetch chunk by chunk (the
    /// agent). The caller must be able to read some version that uses it;
    /// the frame is returned as stored, and the client verifies it.
    pub fn chunk_frame(
        &self,
        actor: &Actor,
        image: ImageId,
        version: VersionRef,
        hash: &ChunkHash,
    ) -> Result<Vec<u8>> {
        let (_, manifest) = self.get_manifest(actor, image, version)?;
        if !manifest.contains(hash) {
            return Err(crate::Error::not_found(format!(
                "chunk {hash} in that version"
            )));
        }
        self.chunks.get(hash)
    }
}
