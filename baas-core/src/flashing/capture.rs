//! Delta capture: hash a device in the store's chunk layout, ask the server
//! which chunks it lacks, compress and upload only those, commit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::pipeline::{retry, runs, scan, Crew, Layout, Meter};
use super::{CaptureReport, FlashOptions};
use crate::content::{is_zero, ChunkHash, FrameEncoder, Manifest, CHUNK_SIZE};
use crate::model::{JobId, Progress};
use crate::ports::{AgentLink, BlockDevice};
use crate::{Error, Result};

/// Captures the first `size` bytes of `device` as a new version of the
/// image of entry `entry` of `job` (which must be capturing). Uploads only
/// the chunks the server lacks, in batches of [`FlashOptions::fetch_batch`],
/// compressed at [`FlashOptions::compression_level`]; all-zero chunks become
/// holes. Progress goes to `progress` in the phases `capture` (hashing) and
/// `upload`.
///
/// The disk must not change while it is captured: a chunk whose bytes
/// changed between hashing and uploading fails the capture (`Conflict`).
pub fn capture(
    device: &dyn BlockDevice,
    size: u64,
    link: &dyn AgentLink,
    job: JobId,
    entry: usize,
    opts: &FlashOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<CaptureReport> {
    if size > device.size() {
        return Err(Error::invalid(
            "size",
            format!(
                "cannot capture {size} bytes from a disk of {} bytes",
                device.size()
            ),
        ));
    }
    let layout = Layout {
        size,
        chunk_size: u64::from(CHUNK_SIZE),
    };
    let retries = AtomicU64::new(0);
    let never = AtomicBool::new(false);
    let mut meter = Meter::new(progress, opts.progress_interval);
    let crew = Crew {
        workers: opts.threads(),
        abort: &never,
        tick: opts.progress_interval,
    };

    meter.start("capture", size);
    let mut chunks: Vec<Option<ChunkHash>> = Vec::with_capacity(layout.count());
    let hasher =
        || Ok(|_: usize, bytes: &[u8]| Ok((!is_zero(bytes)).then(|| ChunkHash::of(bytes))));
    let mut hashed = 0u64;
    scan(
        device,
        layout,
        layout.stripes(std::iter::once(0..layout.count())),
        crew,
        &hasher,
        &mut |stripe| {
            if let Some((range, got)) = stripe {
                hashed += layout.bytes(&range);
                chunks.extend(got);
            }
            meter.set(hashed);
            Ok(())
        },
    )?;
    meter.finish(hashed);
    let manifest = Manifest::new(size, CHUNK_SIZE, chunks)?;

    let (upload, missing) = retry(opts, &retries, "starting the capture", || {
        link.begin_capture(job, entry, &manifest)
    })?;
    // The first position of each missing chunk: that is what gets read.
    let mut wanted: HashSet<ChunkHash> = missing.into_iter().collect();
    let mut positions = Vec::with_capacity(wanted.len());
    for (i, c) in manifest.chunks().enumerate() {
        if let Some(h) = c {
            if wanted.remove(&h) {
                positions.push(i);
            }
        }
    }
    if let Some(h) = wanted.iter().next() {
        return Err(Error::internal(format!(
            "the server asked for chunk {h}, which this capture does not hold"
        )));
    }
    let ranges = runs(&positions);
    let total: u64 = ranges.iter().map(|r| layout.bytes(r)).sum();
    meter.start("upload", total);

    let level = opts.compression_level;
    let chunk_list = &manifest;
    let encoder = || {
        let mut enc = FrameEncoder::new(level)?;
        Ok(move |i: usize, bytes: &[u8]| {
            let hash = ChunkHash::of(bytes);
            if chunk_list.chunk(i) != Some(hash) {
                return Err(Error::conflict(format!(
                    "the disk changed while it was captured (chunk {i} at byte {})",
                    layout.offset(i)
                )));
            }
            Ok((hash, enc.encode(bytes)?, bytes.len() as u64))
        })
    };
    let batch_size = opts.batch();
    let mut batch: Vec<(ChunkHash, Vec<u8>)> = Vec::with_capacity(batch_size);
    let (mut uploaded, mut uploaded_bytes, mut done, mut batch_raw) = (0u64, 0u64, 0u64, 0u64);
    let mut send = |batch: &mut Vec<(ChunkHash, Vec<u8>)>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        retry(opts, &retries, "uploading chunks", || {
            link.upload_chunks(upload, batch)
        })?;
        uploaded += batch.len() as u64;
        uploaded_bytes += batch.iter().map(|(_, f)| f.len() as u64).sum::<u64>();
        batch.clear();
        Ok(())
    };
    scan(
        device,
        layout,
        layout.stripes(ranges.into_iter()),
        crew,
        &encoder,
        &mut |stripe| {
            if let Some((_, frames)) = stripe {
                for (hash, frame, raw) in frames {
                    batch.push((hash, frame));
                    batch_raw += raw;
                    if batch.len() >= batch_size {
                        send(&mut batch)?;
                        done += std::mem::take(&mut batch_raw);
                    }
                }
            }
            meter.set(done);
            Ok(())
        },
    )?;
    send(&mut batch)?;
    done += batch_raw;
    meter.finish(done);

    let version = retry(opts, &retries, "committing the capture", || {
        link.commit_capture(upload)
    })?;
    Ok(CaptureReport {
        version,
        chunks: layout.count() as u64,
        uploaded,
        uploaded_bytes,
        retries: retries.load(Ordering::Relaxed),
    })
}
