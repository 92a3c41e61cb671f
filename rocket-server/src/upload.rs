//! Streaming upload bodies into the core's `import_version(&mut dyn Read)`.
//!
//! The request body belongs to the request's future (Rocket's `Data<'r>`),
//! while the import runs on a blocking thread. A pump in the handler's
//! future reads the body (raw, or the first file part of a multipart body
//! through `multer`) straight into whole-chunk buffers and sends them, 16
//! at a time, over a bounded channel; the blocking side takes the buffers
//! over as the core's [`ChunkSource`], so the body's bytes are copied once
//! after the socket. Memory per upload is bounded by the channel (about
//! 4 MiB); nothing is buffered whole or spooled to disk.
//!
//! Every way the body can end early is an error on the reading side, never a
//! short EOF: over the limit (`too_large`), a broken connection or malformed
//! multipart (`invalid_input`), or the pump simply going away (the channel
//! closes without the end marker). The core then leaves no version.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use baas_core::content::CHUNK_SIZE;
use baas_core::model::{ImageId, Version};
use baas_core::services::{ChunkSource, ImportOptions};
use baas_core::Error;
use bytes::BufMut;
use rocket::data::{Data, DataStream, ToByteUnit};
use rocket::http::ContentType;
use rocket::request::{self, FromRequest, Request};
use rocket::tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use rocket::tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::telemetry::Metrics;
use crate::Settings;

/// Size of the body's reads from a multipart stream.
const PIECE: usize = 256 * 1024;
/// Whole chunks per message to the importing thread.
const GROUP: usize = 16;
/// Messages in flight between the pump and the importing thread.
const IN_FLIGHT: usize = 4;
/// Spare chunk buffers kept for the pump.
const SPARE: usize = 2 * GROUP * IN_FLIGHT;
/// Room for multipart framing and small fields on top of the file limit.
const MULTIPART_SLACK: u64 = 1 << 20;
/// How much of a body is still read (and discarded) after the answer is
/// known (over the limit, or the import failed), so that the client, still
/// sending, gets to read the answer instead of a reset connection. Bodies
/// even larger than this are cut off.
pub const DRAIN: u64 = 8 << 20;
/// Largest text field (`note`) read from a multipart body.
const MAX_TEXT_FIELD: usize = 4096;

/// What travels from the pump to the importing thread.
#[derive(Debug)]
enum Piece {
    /// Whole chunks of the body, in order; only the body's last chunk may
    /// be short.
    Data(Vec<Vec<u8>>),
    End,
    Fail(Error),
}

/// The importing side: the channel as the core's [`ChunkSource`], read on a
/// blocking thread. The pump's buffers are handed over, not copied.
#[derive(Debug)]
pub struct PieceSource {
    rx: mpsc::Receiver<Piece>,
    group: std::vec::IntoIter<Vec<u8>>,
    done: bool,
    /// Buffers the import is done with, back to the pump: a fresh 64 KiB
    /// allocation per chunk costs page faults and zeroing in the kernel.
    spare: mpsc::Sender<Vec<u8>>,
}

impl ChunkSource for PieceSource {
    fn next_chunk(&mut self, buf: &mut Vec<u8>) -> baas_core::Result<usize> {
        loop {
            if let Some(chunk) = self.group.next() {
                let done_with = std::mem::replace(buf, chunk);
                if done_with.capacity() == CHUNK_SIZE as usize {
                    let _ = self.spare.try_send(done_with);
                }
                return Ok(buf.len());
            }
            if self.done {
                buf.clear();
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(group)) => self.group = group.into_iter(),
                Some(Piece::End) => self.done = true,
                Some(Piece::Fail(e)) => return Err(e),
                None => {
                    return Err(Error::invalid(
                        "body",
                        "the upload ended before the body was complete",
                    ))
                }
            }
        }
    }
}

/// Longest a client may send nothing while a body is being read: then the
/// read fails (the upload is answered 400 and the connection closed), so a
/// client that stops half-way does not hold an upload open for ever.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts the raw body bytes read, for the limit and the metrics, and fails
/// the read after [`BODY_IDLE_TIMEOUT`] without a byte.
struct Counting<'r> {
    inner: DataStream<'r>,
    count: Arc<AtomicU64>,
    idle: Pin<Box<rocket::tokio::time::Sleep>>,
}

impl AsyncRead for Counting<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data for {} s", BODY_IDLE_TIMEOUT.as_secs()),
                )));
            }
        };
        let n = (buf.filled().len() - before) as u64;
        self.count.fetch_add(n, Ordering::Relaxed);
        let next = rocket::tokio::time::Instant::now() + BODY_IDLE_TIMEOUT;
        self.idle.as_mut().reset(next);
        Poll::Ready(r)
    }
}

enum Source<'r> {
    Raw(Counting<'r>),
    Multipart {
        // Kept for draining what follows the file part.
        multipart: multer::Multipart<'r>,
        field: multer::Field<'r>,
    },
}

/// An upload body, opened and ready to pump.
pub struct Upload<'r> {
    source: Source<'r>,
    limit: u64,
    cap: u64,
    raw_count: Arc<AtomicU64>,
    metrics: Option<Arc<Metrics>>,
    /// A `note` text field that preceded the file in a multipart body.
    pub note: Option<String>,
}

impl std::fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("limit", &self.limit)
            .field("note", &self.note)
            .finish_non_exhaustive()
    }
}

fn too_large(limit: u64) -> Error {
    Error::too_large(format!(
        "the upload is larger than the limit of {limit} bytes (--max-upload-bytes)"
    ))
}

fn multipart_error(e: multer::Error) -> Error {
    Error::invalid("body", format!("malformed multipart body: {e}"))
}

/// What the upload handlers need from the request's headers and state.
#[derive(Debug)]
pub struct BodyInfo {
    content_type: Option<ContentType>,
    declared: Option<u64>,
    limit: u64,
    metrics: Option<Arc<Metrics>>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for BodyInfo {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, Self::Error> {
        let limit = req
            .rocket()
            .state::<Settings>()
            .map_or(u64::MAX, |s| s.max_upload_bytes);
        request::Outcome::Success(BodyInfo {
            content_type: req.content_type().cloned(),
            declared: req
                .headers()
                .get_one("Content-Length")
                .and_then(|v| v.trim().parse::<u64>().ok()),
            limit,
            metrics: req.rocket().state::<Arc<Metrics>>().cloned(),
        })
    }
}

impl BodyInfo {
    /// The metrics to count body bytes in.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }
}

/// Opens an upload body of at most `limit` bytes of content: the raw body,
/// or the first part (any field name; the original took the first part) of
/// a `multipart/form-data` body, except a `note` text part before it, which
/// becomes the version's note.
pub async fn open<'r>(info: BodyInfo, data: Data<'r>) -> Result<Upload<'r>, ApiError> {
    let limit = info.limit;
    let boundary = match &info.content_type {
        Some(ct) if ct.is_form_data() => {
            Some(ct.param("boundary").map(str::to_string).ok_or_else(|| {
                ApiError::from(Error::invalid(
                    "content-type",
                    "multipart/form-data needs a boundary parameter",
                ))
            })?)
        }
        _ => None,
    };
    let cap = limit.saturating_add(MULTIPART_SLACK).saturating_add(DRAIN);
    if info.declared.is_some_and(|n| n > cap) {
        return Err(too_large(limit).into());
    }
    let raw_count = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: data.open(cap.bytes()),
        count: raw_count.clone(),
        idle: Box::pin(rocket::tokio::time::sleep(BODY_IDLE_TIMEOUT)),
    };
    let metrics = info.metrics;
    let Some(boundary) = boundary else {
        return Ok(Upload {
            source: Source::Raw(counting),
            limit,
            cap,
            raw_count,
            metrics,
            note: None,
        });
    };
    let stream = ReaderStream::with_capacity(counting, PIECE);
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut note = None;
    loop {
        let next = multipart.next_field().await.map_err(|e| {
            if raw_count.load(Ordering::Relaxed) >= cap {
                ApiError::from(too_large(limit))
            } else {
                ApiError::from(multipart_error(e))
            }
        })?;
        let Some(mut field) = next else {
            return Err(Error::invalid(
                "body",
                "the multipart body has no file part (send it as -F file=@PATH)",
            )
            .into());
        };
        // The image is the first part that is not the `note` text field,
        // whatever its name (the original took the first part).
        let is_note = field.name() == Some("note") && field.file_name().is_none();
        if !is_note {
            return Ok(Upload {
                source: Source::Multipart { multipart, field },
                limit,
                cap,
                raw_count,
                metrics,
                note,
            });
        }
        let mut text = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| ApiError::from(multipart_error(e)))?
        {
            if text.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err(Error::invalid(
                    "note",
                    format!("may be at most {MAX_TEXT_FIELD} bytes"),
                )
                .into());
            }
            text.extend_from_slice(&chunk);
        }
        note = Some(
            String::from_utf8(text)
                .map_err(|_| ApiError::from(Error::invalid("note", "must be UTF-8 text")))?,
        );
    }
}

impl Upload<'_> {
    /// A channel pair: the sender for [`Upload::pump`] and the import's
    /// chunk source.
    pub fn channel() -> (UploadSender, PieceSource) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let (spare, spare_rx) = mpsc::channel(SPARE);
        let source = PieceSource {
            rx,
            group: Vec::new().into_iter(),
            done: false,
            spare,
        };
        (UploadSender(tx, spare_rx), source)
    }

    /// Reads the body into `tx` until it ends, fails, passes the limit, or
    /// the importing side stops listening; then reads (and drops) what the
    /// client still sends, up to [`DRAIN`] bytes.
    pub async fn pump(self, tx: UploadSender) {
        let UploadSender(tx, mut spare) = tx;
        let limit = self.limit;
        let cs = CHUNK_SIZE as usize;
        let mut taken = 0u64;
        let mut chunk: Vec<u8> = chunk_buffer(&mut spare);
        let mut group: Vec<Vec<u8>> = Vec::with_capacity(GROUP);
        let mut source = self.source;
        let mut broken = false;
        let outcome: Result<(), Error> = loop {
            let got = match &mut source {
                Source::Raw(r) => {
                    // Straight into the chunk's spare room, never past it.
                    let room = cs - chunk.len();
                    match r.read_buf(&mut (&mut chunk).limit(room)).await {
                        Ok(0) => None,
                        Ok(n) => Some(n),
                        Err(e) => {
                            broken = true;
                            break Err(Error::invalid(
                                "body",
                                format!("the upload was interrupted: {e}"),
                            ));
                        }
                    }
                }
                Source::Multipart { field, .. } => match field.chunk().await {
                    Ok(Some(mut bytes)) => {
                        let n = bytes.len();
                        while !bytes.is_empty() {
                            let k = (cs - chunk.len()).min(bytes.len());
                            chunk.extend_from_slice(&bytes.split_to(k));
                            if chunk.len() == cs {
                                let next = chunk_buffer(&mut spare);
                                group.push(std::mem::replace(&mut chunk, next));
                            }
                        }
                        Some(n)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        broken = true;
                        break Err(if self.raw_count.load(Ordering::Relaxed) >= self.cap {
                            too_large(limit)
                        } else {
                            multipart_error(e)
                        });
                    }
                },
            };
            if let Some(n) = got {
                taken += n as u64;
            }
            if taken > limit {
                break Err(too_large(limit));
            }
            if chunk.len() == cs {
                let next = chunk_buffer(&mut spare);
                group.push(std::mem::replace(&mut chunk, next));
            }
            let last = got.is_none();
            if last && taken == 0 {
                break Err(Error::invalid(
                    "body",
                    "the upload is empty; send the image as the body or as a multipart file part",
                ));
            }
            if last && !chunk.is_empty() {
                group.push(std::mem::take(&mut chunk));
            }
            if group.len() >= GROUP || (last && !group.is_empty()) {
                let full = std::mem::replace(&mut group, Vec::with_capacity(GROUP));
                if tx.send(Piece::Data(full)).await.is_err() {
                    // The import stopped (failed or finished); it has its
                    // answer already.
                    break Ok(());
                }
            }
            if last {
                let _ = tx.send(Piece::End).await;
                break Ok(());
            }
        };
        if let Err(e) = outcome {
            let _ = tx.send(Piece::Fail(e)).await;
        }
        drop(tx);
        if !broken {
            drain(source).await;
        }
        if let Some(m) = &self.metrics {
            m.add_in(self.raw_count.load(Ordering::Relaxed));
        }
    }
}

/// Reads and drops the rest of a body (the stream itself is capped).
async fn drain(source: Source<'_>) {
    match source {
        Source::Raw(mut r) => {
            let mut scratch = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        }
        Source::Multipart {
            mut multipart,
            mut field,
        } => {
            while let Ok(Some(_)) = field.chunk().await {}
            while let Ok(Some(mut f)) = multipart.next_field().await {
                while let Ok(Some(_)) = f.chunk().await {}
            }
        }
    }
}

/// The pump's end of the channel, and the buffers coming back.
#[derive(Debug)]
pub struct UploadSender(mpsc::Sender<Piece>, mpsc::Receiver<Vec<u8>>);

/// A chunk buffer: one the import is done with, else a new one.
fn chunk_buffer(spare: &mut mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    match spare.try_recv() {
        Ok(mut b) => {
            b.clear();
            b
        }
        Err(_) => Vec::with_capacity(CHUNK_SIZE as usize),
    }
}

/// Imports an upload body as the next version of `image`: opens it, runs
/// the import on a blocking thread and pumps the body into it.
pub async fn import(
    caller: &Caller,
    image: ImageId,
    info: BodyInfo,
    data: Data<'_>,
    note: Option<String>,
) -> Result<Version, ApiError> {
    let metrics = info.metrics.clone();
    let upload = open(info, data).await?;
    let note = note.or_else(|| upload.note.clone());
    let _running = metrics.as_ref().map(|m| m.upload_started());
    let (tx, mut source) = Upload::channel();
    let import =
        caller.run_long(move |b, a| b.import_chunks(a, image, &mut source, ImportOptions { note }));
    let (version, ()) = rocket::tokio::join!(import, upload.pump(tx));
    version
}
