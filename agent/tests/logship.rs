//! What the agent sends from background threads. Log shipping: logging
//! never waits for the server; a full queue drops lines and says how many;
//! lines go to the job that was current when they were logged; a server
//! that refuses them costs nothing but the lines. Progress: reports never
//! wait for the server, are throttled, and the last one is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baas_agent::logship;
use baas_agent::reporter::Reporting;
use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::*;
use baas_core::ports::AgentLink;
use baas_core::{Error, Result};
use tracing_subscriber::layer::SubscriberExt;

/// A link that records `log` calls (or refuses them) and nothing else.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<(Option<JobId>, Vec<String>)>>,
    progress: Mutex<Vec<(JobId, u64)>>,
    refuse: bool,
}

fn no<T>() -> Result<T> {
    Err(Error::internal("not used"))
}

impl AgentLink for Recorder {
    fn report_inventory(&self, _: &Inventory) -> Result<Machine> {
        no()
    }
    fn next_job(&self, _: u64) -> Result<Option<Job>> {
        no()
    }
    fn manifest(&self, _: JobId, _: usize) -> Result<Manifest> {
        no()
    }
    fn chunks(&self, _: JobId, _: usize, _: &[ChunkHash]) -> Result<Vec<Vec<u8>>> {
        no()
    }
    fn begin_capture(
        &self,
        _: JobId,
        _: usize,
        _: &Manifest,
    ) -> Result<(UploadId, Vec<ChunkHash>)> {
        no()
    }
    fn upload_chunks(&self, _: UploadId, _: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        no()
    }
    fn commit_capture(&self, _: UploadId) -> Result<Version> {
        no()
    }
    fn progress(&self, job: JobId, p: &Progress) -> Result<()> {
        self.progress
            .lock()
            .expect("lock")
            .push((job, p.bytes_done));
        Ok(())
    }
    fn advance(&self, _: JobId, _: JobState, _: &str) -> Result<Job> {
        no()
    }
    fn fail(&self, _: JobId, _: &str, _: &str) -> Result<Job> {
        no()
    }
    fn log(&self, job: Option<JobId>, lines: &[String]) -> Result<()> {
        if self.refuse {
            return Err(Error::unavailable("server down"));
        }
        self.calls.lock().expect("lock").push((job, lines.to_vec()));
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_lines_goes_to_the_right_job() {
    let (layer, shipper) = logship::channel(tracing::Level::INFO);
    let subscriber = tracing_subscriber::registry().with(layer);
    let job = JobId(
        "0192d4e0-0000-7000-8000-000000000001"
            .parse()
            .expect("uuid"),
    );
    let current = shipper.current();
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("below the level: not shipped");
        tracing::info!(phase = "boot", "before any job");
        current.set(Some(job));
        // Nobody ships yet: the queue fills, and logging goes on.
        for i in 0..5000 {
            tracing::info!("line {i}");
        }
        current.set(None);
    });
    let queued = logship::QUEUE as u64;
    assert_eq!(shipper.dropped(), 5001 - queued);

    let link = Arc::new(Recorder::default());
    shipper.start(link.clone());
    shipper.flush(Duration::from_secs(10));
    let calls = link.calls.lock().expect("lock").clone();
    let lines: Vec<(Option<JobId>, String)> = calls
        .iter()
        .flat_map(|(j, ls)| ls.iter().map(move |l| (*j, l.clone())))
        .collect();
    assert_eq!(
        lines[0],
        (None, "INFO before any job phase=boot".to_string())
    );
    assert_eq!(lines[1], (Some(job), "INFO line 0".to_string()));
    assert!(!lines.iter().any(|(_, l)| l.contains("below the level")));
    let warning = format!("{} log lines were dropped", 5001 - queued);
    assert_eq!(
        lines.iter().filter(|(_, l)| l.contains(&warning)).count(),
        1,
        "the drop is reported once"
    );
    assert_eq!(lines.len() as u64, queued + 1);
    assert!(calls.iter().all(|(_, ls)| ls.len() <= 500), "batched");
}

#[test]
fn a_server_that_refuses_logs_costs_only_the_lines() {
    let (layer, shipper) = logship::channel(tracing::Level::INFO);
    let link = Arc::new(Recorder {
        refuse: true,
        ..Recorder::default()
    });
    shipper.start(link);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10 {
            tracing::warn!("line {i}");
        }
    });
    shipper.flush(Duration::from_secs(10));
    assert!(shipper.dropped() >= 10, "{}", shipper.dropped());
}

#[test]
fn progress_reports_are_throttled_and_the_last_one_is_sent() {
    let link = Arc::new(Recorder::default());
    let reporting = Reporting::new(link.clone(), Duration::from_secs(30));
    let job = JobId(
        "0192d4e0-0000-7000-8000-000000000002"
            .parse()
            .expect("uuid"),
    );
    for done in 1..=100 {
        reporting
            .progress(
                job,
                &Progress {
                    phase: "flash".into(),
                    bytes_done: done,
                    bytes_total: 100,
                    rate: 0,
                },
            )
            .expect("never fails");
    }
    reporting.close();
    let t = std::time::Instant::now();
    loop {
        let sent = link.progress.lock().expect("lock").clone();
        if sent.last() == Some(&(job, 100)) {
            assert!(sent.len() <= 2, "throttled: {sent:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{sent:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
