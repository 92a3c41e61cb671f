//! Log lines to the server, batched and never in the way: a tracing layer
//! puts each line into a bounded queue without blocking (a full queue drops
//! the line and counts it), and one background thread ships batches through
//! the link, to the current job's timeline or, with no job, to the server's
//! log. A server that is down slows nothing but that thread (the original
//! made one blocking POST per log line).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baas_core::model::JobId;
use baas_core::ports::AgentLink;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines waiting to be shipped; more are dropped (and counted).
pub const QUEUE: usize = 2048;
/// Most lines per shipment.
const BATCH: usize = 500;
/// Longest a line waits for its batch.
const LINGER: Duration = Duration::from_millis(500);

enum Msg {
    /// A line, and the job that was current when it was logged.
    Line(Option<JobId>, String),
    Flush(SyncSender<()>),
}

thread_local! {
    /// Set on the shipping thread: its own events (the link's retry
    /// warnings) are not shipped, or a down server would feed itself.
    static SHIPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The job the lines belong to now, shared between the agent's loop and
/// the shipper.
#[derive(Debug, Clone, Default)]
pub struct CurrentJob(Arc<Mutex<Option<JobId>>>);

impl CurrentJob {
    /// Lines from now on go to `job`'s timeline (or the server log).
    pub fn set(&self, job: Option<JobId>) {
        if let Ok(mut j) = self.0.lock() {
            *j = job;
        }
    }

    fn get(&self) -> Option<JobId> {
        self.0.lock().ok().and_then(|j| *j)
    }
}

/// The tracing side: formats events and queues them.
#[derive(Debug, Clone)]
pub struct ShipLayer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    level: Level,
    current: CurrentJob,
}

/// The shipping side, started with [`LogShipper::start`] once the link
/// exists; lines queued before are kept (up to the queue's size).
#[derive(Debug)]
pub struct LogShipper {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    rx: Mutex<Option<Receiver<Msg>>>,
    current: CurrentJob,
}

/// Both halves of a shipping channel: lines at `level` and above.
pub fn channel(level: Level) -> (ShipLayer, LogShipper) {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let current = CurrentJob::default();
    (
        ShipLayer {
            tx: tx.clone(),
            dropped: dropped.clone(),
            level,
            current: current.clone(),
        },
        LogShipper {
            tx,
            dropped,
            rx: Mutex::new(Some(rx)),
            current,
        },
    )
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.level || SHIPPING.with(|s| s.get()) {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let text = format!(
            "{} {}{}",
            event.metadata().level(),
            line.message,
            line.fields
        );
        match self.tx.try_send(Msg::Line(self.current.get(), text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl LogShipper {
    /// Where the agent says which job it works on.
    pub fn current(&self) -> CurrentJob {
        self.current.clone()
    }

    /// Lines dropped so far (queue full, or shipping failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts the shipping thread over `link` (once; later calls do
    /// nothing).
    pub fn start(&self, link: Arc<dyn AgentLink>) {
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let dropped = self.dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("log-shipper".into())
            .spawn(move || {
                SHIPPING.with(|s| s.set(true));
                ship(rx, &*link, &dropped);
            });
        if spawned.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ships what is queued, waiting at most `timeout` (before a reboot or
    /// an exit).
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack);
        // The queue may be full: keep offering until the deadline.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

fn ship(rx: Receiver<Msg>, link: &dyn AgentLink, dropped: &AtomicU64) {
    let mut reported_drops = 0;
    loop {
        let mut batch: Vec<(Option<JobId>, String)> = Vec::new();
        let mut flush = None;
        match rx.recv() {
            Ok(Msg::Line(j, l)) => batch.push((j, l)),
            Ok(Msg::Flush(ack)) => flush = Some(ack),
            Err(_) => return,
        }
        let deadline = Instant::now() + LINGER;
        while flush.is_none() && batch.len() < BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Msg::Line(j, l)) => batch.push((j, l)),
                Ok(Msg::Flush(ack)) => flush = Some(ack),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let d = dropped.load(Ordering::Relaxed);
        if d > reported_drops {
            let job = batch.last().and_then(|(j, _)| *j);
            batch.push((
                job,
                format!(
                    "WARN {} log lines were dropped (queue full or server unreachable)",
                    d - reported_drops
                ),
            ));
            reported_drops = d;
        }
        // One call per run of lines of the same job, in order.
        let mut rest = &batch[..];
        while let Some((job, _)) = rest.first() {
            let n = rest.iter().take_while(|(j, _)| j == job).count();
            let lines: Vec<String> = rest[..n].iter().map(|(_, l)| l.clone()).collect();
            if link.log(*job, &lines).is_err() {
                dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
            rest = &rest[n..];
        }
        if let Some(ack) = flush {
            let _ = ack.send(());
        }
    }
}
