//! Streaming downloads of a version: `Content-Length`, a strong `ETag` from
//! the version's root hash, `Accept-Ranges`, single `Range` requests (206,
//! 416), `If-None-Match` (304) and `If-Range`, so `curl -C -` resumes.
//!
//! The core's `VersionReader` is synchronous (it fetches, decompresses and
//! verifies chunks); it runs on a blocking thread that fills 1 MiB buffers
//! and feeds the response through a bounded channel. The thread starts only
//! when the body is first polled, so `HEAD` and `304` cost no reading. A
//! read error mid-stream ends the connection short of `Content-Length`
//! (the client sees a truncated transfer), never with error text appended
//! to the image.

use std::io::{self, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use baas_core::services::VersionReader;
use bytes::Bytes;
use rocket::http::{ContentType, Header, Status};
use rocket::request::{self, FromRequest, Request};
use rocket::response::{self, Responder, Response};
use rocket::tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use rocket::tokio::sync::mpsc;

use crate::error::ApiError;
use crate::telemetry::Metrics;

/// Bytes per buffer sent from the reading thread.
const BUF: usize = 1 << 20;
/// Buffers in flight.
const IN_FLIGHT: usize = 4;

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The whole body.
    Full,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// A range that does not overlap the body.
    Unsatisfiable,
}

/// Parses a `Range` header for a body of `len` bytes. Anything this server
/// does not serve (other units, several ranges, malformed specs) is ignored,
/// which RFC 9110 allows: the whole body is sent.
pub fn parse_range(header: Option<&str>, len: u64) -> Range {
    let Some(h) = header else {
        return Range::Full;
    };
    let Some((unit, spec)) = h.trim().split_once('=') else {
        return Range::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(n) => Range::Part(len - n.min(len), len - 1),
            None => Range::Full,
        },
        (false, true) => match num(a) {
            Some(first) if first >= len => Range::Unsatisfiable,
            Some(first) => Range::Part(first, len - 1),
            None => Range::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(first), Some(last)) if first <= last => {
                if first >= len {
                    Range::Unsatisfiable
                } else {
                    Range::Part(first, last.min(len - 1))
                }
            }
            _ => Range::Full,
        },
        (true, true) => Range::Full,
    }
}

/// Whether an `If-None-Match` header matches the strong `etag`
/// (weak comparison, as RFC 9110 asks for this header).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else {
        return false;
    };
    h.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
    })
}

/// The conditional and range headers of a download request.
#[derive(Debug, Default)]
pub struct Conditions {
    range: Option<String>,
    if_none_match: Option<String>,
    if_range: Option<String>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Conditions {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, Self::Error> {
        let h = req.headers();
        let get = |name: &str| h.get_one(name).map(str::to_string);
        request::Outcome::Success(Conditions {
            range: get("Range"),
            if_none_match: get("If-None-Match"),
            if_range: get("If-Range"),
        })
    }
}

/// Marks a request whose response body is streamed (the request log must
/// not count its `Content-Length` as sent: the stream counts what it sends).
#[derive(Debug, Default)]
struct Streamed(AtomicBool);

/// Whether this request's response is a streamed download.
pub fn is_streamed(req: &Request<'_>) -> bool {
    req.local_cache(Streamed::default).0.load(Ordering::Relaxed)
}

/// A version download, ready to respond.
#[derive(Debug)]
pub struct Download {
    reader: VersionReader,
    conditions: Conditions,
    filename: String,
}

impl Download {
    /// A download of `reader`'s version, named `filename`.
    pub fn new(reader: VersionReader, conditions: Conditions, filename: String) -> Download {
        Download {
            reader,
            conditions,
            filename,
        }
    }
}

impl<'r> Responder<'r, 'static> for Download {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let len = self.reader.len();
        let etag = format!("\"{}\"", self.reader.version().root.to_hex());
        let mut res = Response::build();
        res.header(Header::new("ETag", etag.clone()))
            .header(Header::new("Accept-Ranges", "bytes"))
            .header(Header::new("Cache-Control", "private, no-cache"));
        if none_match(self.conditions.if_none_match.as_deref(), &etag) {
            return Ok(res.status(Status::NotModified).finalize());
        }
        let mut range = parse_range(self.conditions.range.as_deref(), len);
        if let Some(ir) = &self.conditions.if_range {
            if ir.trim() != etag {
                range = Range::Full;
            }
        }
        let (status, first, count) = match range {
            Range::Full => (Status::Ok, 0, len),
            Range::Part(first, last) => {
                res.header(Header::new(
                    "Content-Range",
                    format!("bytes {first}-{last}/{len}"),
                ));
                (Status::PartialContent, first, last - first + 1)
            }
            Range::Unsatisfiable => {
                let err = ApiError::new(
                    Status::RangeNotSatisfiable,
                    "range_not_satisfiable",
                    format!("the range does not overlap the {len} bytes of this version"),
                );
                let mut r = err.respond_to(req)?;
                r.set_header(Header::new("Content-Range", format!("bytes */{len}")));
                r.set_header(Header::new("ETag", etag));
                r.set_header(Header::new("Accept-Ranges", "bytes"));
                return Ok(r);
            }
        };
        let size = usize::try_from(count).map_err(|_| Status::InternalServerError)?;
        req.local_cache(Streamed::default)
            .0
            .store(true, Ordering::Relaxed);
        let body = VersionStream {
            pending: Some((self.reader, first, count)),
            rx: None,
            current: Bytes::new(),
            metrics: req.rocket().state::<Arc<Metrics>>().cloned(),
        };
        Ok(res
            .status(status)
            .header(ContentType::Binary)
            .header(Header::new(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", self.filename),
            ))
            .sized_body(size, body)
            .max_chunk_size(BUF)
            .finalize())
    }
}

/// The response body: starts the reading thread on first poll.
struct VersionStream {
    pending: Option<(VersionReader, u64, u64)>,
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
    current: Bytes,
    metrics: Option<Arc<Metrics>>,
}

/// Reads `count` bytes from `first` into the channel, on a blocking thread.
fn read_into(
    mut reader: VersionReader,
    first: u64,
    count: u64,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    if let Err(e) = reader.seek(SeekFrom::Start(first)) {
        let _ = tx.blocking_send(Err(e));
        return;
    }
    let mut left = count;
    while left > 0 {
        let want = left.min(BUF as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the version ended early",
                    )));
                    return;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(
                        "reading version {} of image {} failed: {e:?}",
                        reader.version().number,
                        reader.version().image
                    );
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        left -= want as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
    }
}

impl AsyncRead for VersionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((reader, first, count)) = this.pending.take() {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            rocket::tokio::task::spawn_blocking(move || read_into(reader, first, count, tx));
            this.rx = Some(rx);
        }
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                if let Some(m) = &this.metrics {
                    m.add_out(n as u64);
                }
                return Poll::Ready(Ok(()));
            }
            let Some(rx) = this.rx.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(rx.poll_recv(cx)) {
                Some(Ok(b)) => this.current = b,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncSeek for VersionStream {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match position {
            SeekFrom::Current(0) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a download stream does not seek",
            )),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Range::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Part(0, 99));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Part(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=9-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 100), Full);
    }

    #[test]
    fn etags() {
        let e = "\"abc\"";
        assert!(none_match(Some("\"abc\""), e));
        assert!(none_match(Some("\"x\", W/\"abc\""), e));
        assert!(none_match(Some("*"), e));
        assert!(!none_match(Some("\"abd\""), e));
        assert!(!none_match(None, e));
    }
}
