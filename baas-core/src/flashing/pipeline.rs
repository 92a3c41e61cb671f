//! The machinery the flash and capture pipelines share: the chunk layout of
//! a device region, an ordered parallel scan over chunks, retries with
//! backoff, throttled progress, and the first-failure slot that stops every
//! stage of a pipeline.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::FlashOptions;
use crate::model::Progress;
use crate::ports::BlockDevice;
use crate::{Error, Result};

/// Bytes a scan worker reads at once: large enough for sequential reads,
/// small enough that the scan window stays a few MiB.
const STRIPE_BYTES: u64 = 1 << 20;

/// Longest wait between two retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Fixed-size chunks over the first `size` bytes of a device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub size: u64,
    pub chunk_size: u64,
}

impl Layout {
    pub fn count(&self) -> usize {
        self.size.div_ceil(self.chunk_size) as usize
    }

    pub fn offset(&self, index: usize) -> u64 {
        index as u64 * self.chunk_size
    }

    /// Byte offset just past chunk `index`.
    pub fn end(&self, index: usize) -> u64 {
        (self.offset(index) + self.chunk_size).min(self.size)
    }

    pub fn len(&self, index: usize) -> usize {
        (self.end(index) - self.offset(index)) as usize
    }

    /// Bytes covered by chunks `range`.
    pub fn bytes(&self, range: &Range<usize>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        self.end(range.end - 1) - self.offset(range.start)
    }

    /// Chunks per stripe (at least one).
    pub fn per_stripe(&self) -> usize {
        (STRIPE_BYTES / self.chunk_size).max(1) as usize
    }

    /// `ranges` (sorted, disjoint chunk ranges) cut into stripes.
    pub fn stripes(
        &self,
        ranges: impl Iterator<Item = Range<usize>>,
    ) -> impl Iterator<Item = Range<usize>> {
        let per = self.per_stripe();
        ranges.flat_map(move |r| {
            let end = r.end;
            r.step_by(per).map(move |s| s..(s + per).min(end))
        })
    }
}

/// Sorted chunk indices grouped into maximal contiguous ranges.
pub(crate) fn runs(sorted: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &i in sorted {
        match out.last_mut() {
            Some(r) if r.end == i => r.end += 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The first failure of a pipeline, and the flag that tells every stage to
/// stop.
#[derive(Debug, Default)]
pub(crate) struct Fault {
    abort: AtomicBool,
    first: Mutex<Option<(&'static str, Error)>>,
}

impl Fault {
    /// Records `error` (if it is the first) and stops the pipeline.
    pub fn set(&self, phase: &'static str, error: Error) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some((phase, error));
        }
        self.abort.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    pub fn take(&self) -> Option<(&'static str, Error)> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub fn flag(&self) -> &AtomicBool {
        &self.abort
    }
}

/// Calls `call` until it succeeds, fails for good, or has been retried
/// `opts.retries` times after retryable errors, sleeping with exponential
/// backoff in between. Counts retries in `retries`.
pub(crate) fn retry<T>(
    opts: &FlashOptions,
    retries: &AtomicU64,
    what: &str,
    mut call: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    loop {
        match call() {
            Err(e) if e.retryable() && attempt < opts.retries => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(e) if e.retryable() => {
                return Err(Error::unavailable(format!(
                    "{what}: {} (gave up after {attempt} retries)",
                    e.message()
                ))
                .with_source(e))
            }
            other => return other,
        }
    }
}

/// Throttled progress reports of one phase at a time.
pub(crate) struct Meter<'a> {
    sink: &'a mut dyn FnMut(&Progress),
    interval: Duration,
    phase: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl std::fmt::Debug for Meter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("phase", &self.phase)
            .field("done", &self.done)
            .field("total", &self.total)
            .finish()
    }
}

impl<'a> Meter<'a> {
    pub fn new(sink: &'a mut dyn FnMut(&Progress), interval: Duration) -> Meter<'a> {
        let now = Instant::now();
        Meter {
            sink,
            interval,
            phase: "",
            total: 0,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// Starts `phase` of `total` bytes and reports it at zero.
    pub fn start(&mut self, phase: &'static str, total: u64) {
        self.phase = phase;
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.emit();
    }

    /// Sets the bytes done; reports if the interval has passed.
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        if self.last.elapsed() >= self.interval {
            self.emit();
        }
    }

    /// Sets the bytes done and reports now (the end of a phase).
    pub fn finish(&mut self, done: u64) {
        self.done = done.min(self.total);
        self.emit();
    }

    fn emit(&mut self) {
        self.last = Instant::now();
        let ms = self.started.elapsed().as_millis().max(1);
        let rate = u128::from(self.done) * 1000 / ms;
        (self.sink)(&Progress {
            phase: self.phase.to_string(),
            bytes_done: self.done,
            bytes_total: self.total,
            rate: u64::try_from(rate).unwrap_or(u64::MAX),
        });
    }
}

/// How a [`scan`] runs: its threads, the flag that stops it, and how often
/// it hands control back while waiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crew<'a> {
    pub workers: usize,
    pub abort: &'a AtomicBool,
    pub tick: Duration,
}

/// One stripe's results, in chunk order.
pub(crate) type Stripe<T> = (Range<usize>, Vec<T>);

/// Reads the chunks of `stripes` from `device` on `workers` threads and
/// applies a per-thread function to each chunk's bytes; hands the results
/// to `on_result` on the calling thread, stripe by stripe in the order
/// given. At most a few stripes per worker are in flight, so memory is
/// bounded. `on_result(None)` is called whenever nothing arrived for
/// `tick`, so the caller can report progress while waiting. Stops early
/// (with an error) when `abort` is set or anything fails.
pub(crate) fn scan<T, W, F>(
    device: &dyn BlockDevice,
    layout: Layout,
    stripes: impl Iterator<Item = Range<usize>>,
    crew: Crew<'_>,
    new_worker: &F,
    on_result: &mut dyn FnMut(Option<Stripe<T>>) -> Result<()>,
) -> Result<()>
where
    T: Send,
    F: Fn() -> Result<W> + Sync,
    W: FnMut(usize, &[u8]) -> Result<T>,
{
    let Crew {
        workers,
        abort,
        tick,
    } = crew;
    let workers = workers.max(1);
    let window = workers * 4;
    std::thread::scope(|s| {
        let (work_tx, work_rx) = sync_channel::<(usize, Range<usize>)>(window);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (res_tx, res_rx) = sync_channel::<(usize, Result<Stripe<T>>)>(window);
        for _ in 0..workers {
            let work_rx = Arc::clone(&work_rx);
            let res_tx = res_tx.clone();
            s.spawn(move || {
                let mut work = match new_worker() {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = res_tx.send((usize::MAX, Err(e)));
                        return;
                    }
                };
                let mut buf = Vec::new();
                // One chunk of zeros, handed out for every chunk of a stripe
                // the device knows to be a hole: an empty disk is neither
                // read nor zero-filled, and this stays in the cache.
                let mut zeros = Vec::new();
                loop {
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((no, range)) = next else { return };
                    let (offset, len) = (layout.offset(range.start), layout.bytes(&range));
                    let result = if device.reads_as_zeros(offset, len) {
                        zeros.resize(layout.chunk_size as usize, 0);
                        range
                            .clone()
                            .map(|i| work(i, &zeros[..layout.len(i)]))
                            .collect::<Result<Vec<T>>>()
                            .map(|out| (range, out))
                    } else {
                        read_stripe(device, layout, &range, &mut buf).and_then(|()| {
                            let out = range
                                .clone()
                                .map(|i| {
                                    let at = (layout.offset(i) - offset) as usize;
                                    work(i, &buf[at..at + layout.len(i)])
                                })
                                .collect::<Result<Vec<T>>>()?;
                            Ok((range, out))
                        })
                    };
                    if res_tx.send((no, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(res_tx);
        drop(work_rx);

        let mut stripes = stripes.enumerate();
        let mut exhausted = false;
        let (mut sent, mut next) = (0usize, 0usize);
        let mut pending: BTreeMap<usize, Stripe<T>> = BTreeMap::new();
        loop {
            if abort.load(Ordering::SeqCst) {
                return Err(Error::internal("stopped by a failure elsewhere"));
            }
            while !exhausted && sent < next + window {
                match stripes.next() {
                    Some(job) => {
                        work_tx
                            .send(job)
                            .map_err(|_| Error::internal("the scan workers stopped"))?;
                        sent += 1;
                    }
                    None => exhausted = true,
                }
            }
            if next == sent && exhausted {
                return Ok(());
            }
            match res_rx.recv_timeout(tick) {
                Ok((_, Err(e))) => return Err(e),
                Ok((no, Ok(stripe))) => {
                    pending.insert(no, stripe);
                    while let Some(stripe) = pending.remove(&next) {
                        on_result(Some(stripe))?;
                        next += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => on_result(None)?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::internal("the scan workers stopped"))
                }
            }
        }
    })
}

fn read_stripe(
    device: &dyn BlockDevice,
    layout: Layout,
    range: &Range<usize>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let len = layout.bytes(range) as usize;
    buf.resize(len, 0);
    device.read_at(layout.offset(range.start), &mut buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_a_partial_last_chunk() {
        let l = Layout {
            size: 3 * 65536 + 100,
            chunk_size: 65536,
        };
        assert_eq!(l.count(), 4);
        assert_eq!(l.len(3), 100);
        assert_eq!(l.bytes(&(2..4)), 65536 + 100);
        assert_eq!(l.bytes(&(2..2)), 0);
        assert_eq!(l.per_stripe(), 16);
        let big = Layout {
            size: 100 << 20,
            chunk_size: 4 << 20,
        };
        assert_eq!(big.per_stripe(), 1);
    }

    #[test]
    fn stripes_split_ranges_and_runs_group_indices() {
        let l = Layout {
            size: 1 << 30,
            chunk_size: 65536,
        };
        let s: Vec<_> = l.stripes([0..40, 50..51].into_iter()).collect();
        assert_eq!(s, vec![0..16, 16..32, 32..40, 50..51]);
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![1..4, 7..8, 9..11]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn retry_retries_only_retryable_errors_and_gives_up() {
        let opts = FlashOptions {
            retries: 3,
            retry_delay: Duration::from_millis(1),
            ..FlashOptions::default()
        };
        let count = AtomicU64::new(0);
        let mut calls = 0;
        let r = retry(&opts, &count, "x", || {
            calls += 1;
            if calls < 3 {
                Err(Error::unavailable("down"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.ok(), Some(3));
        assert_eq!(count.load(Ordering::Relaxed), 2);
        let mut calls = 0;
        let r: Result<()> = retry(&opts, &count, "fetching", || {
            calls += 1;
            Err(Error::unavailable("down"))
        });
        let e = r.expect_err("gives up");
        assert!(e.retryable());
        assert!(e.message().contains("gave up after 3 retries"), "{e}");
        assert_eq!(calls, 4);
        let mut calls = 0;
        let r: Result<()> = retry(&opts, &count, "x", || {
            calls += 1;
            Err(Error::internal("broken"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1, "fatal errors are not retried");
    }

    #[test]
    fn meter_throttles_but_reports_phase_edges() {
        let mut seen = Vec::new();
        let mut sink = |p: &Progress| seen.push(p.clone());
        {
            let mut m = Meter::new(&mut sink, Duration::from_secs(3600));
            m.start("flash", 100);
            for i in 0..50 {
                m.set(i);
            }
            m.finish(200);
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].bytes_done, 0);
        assert_eq!(seen[1].bytes_done, 100, "clamped to the total");
        assert_eq!(seen[1].phase, "flash");
    }
}
