//! The console: a progress bar for the current phase (indicatif; drawn only
//! on a terminal) and log lines that print above it instead of through it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use baas_core::model::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// The bar shown while a phase runs, if any.
#[derive(Debug, Clone, Default)]
pub struct Console {
    bar: Arc<Mutex<Option<(String, ProgressBar)>>>,
}

impl Console {
    /// A console with no bar yet.
    pub fn new() -> Console {
        Console::default()
    }

    /// Shows `p`: a new bar when the phase changes, else moves it. The
    /// phase that ended is logged after the bar's lock is let go (logging
    /// prints through [`Console::print`], which takes it).
    pub fn progress(&self, p: &Progress) {
        let ended_phase = {
            let Ok(mut slot) = self.bar.lock() else {
                return;
            };
            let same = slot.as_ref().is_some_and(|(phase, _)| *phase == p.phase);
            let mut ended_phase = None;
            if !same {
                ended_phase = slot.take().map(finish);
                let bar = ProgressBar::with_draw_target(
                    Some(p.bytes_total),
                    ProgressDrawTarget::stderr_with_hz(4),
                );
                let style = ProgressStyle::with_template(
                    "{msg:>8} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(p.phase.clone());
                *slot = Some((p.phase.clone(), bar));
            }
            if let Some((_, bar)) = slot.as_ref() {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
            }
            ended_phase
        };
        if let Some(e) = ended_phase {
            e.log();
        }
    }

    /// Ends the current bar.
    pub fn done(&self) {
        let ended_phase = match self.bar.lock() {
            Ok(mut slot) => slot.take().map(finish),
            Err(_) => None,
        };
        if let Some(e) = ended_phase {
            e.log();
        }
    }

    fn print(&self, bytes: &[u8]) {
        let bar = self
            .bar
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(_, b)| b.clone()));
        let write = || {
            let _ = std::io::stderr().write_all(bytes);
        };
        match bar {
            Some(b) => b.suspend(write),
            None => write(),
        }
    }
}

/// A phase whose bar was finished, to log once the bar's lock is free.
struct Ended {
    phase: String,
    bytes: u64,
    seconds: f64,
}

impl Ended {
    /// Logs how long the phase took: the log (also shipped to the server)
    /// then shows where a flash spent its time.
    fn log(&self) {
        tracing::info!(
            phase = self.phase,
            bytes = self.bytes,
            seconds = format!("{:.3}", self.seconds),
            "phase ended"
        );
    }
}

fn finish((phase, bar): (String, ProgressBar)) -> Ended {
    // Read first: `finish` moves the bar to its end.
    let ended = Ended {
        phase,
        bytes: bar.position(),
        seconds: bar.elapsed().as_secs_f64(),
    };
    bar.finish();
    ended
}

/// One log line on its way to the console.
#[derive(Debug)]
pub struct LineWriter {
    console: Console,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.console.print(&self.buf);
            self.buf.clear();
        }
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            console: self.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines go through the console (as in the agent) and into `seen`.
    #[derive(Clone)]
    struct Tee {
        console: Console,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    struct TeeWriter {
        line: LineWriter,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for TeeWriter {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend_from_slice(data);
            }
            self.line.write(data)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.line.flush()
        }
    }

    impl<'a> MakeWriter<'a> for Tee {
        type Writer = TeeWriter;

        fn make_writer(&'a self) -> TeeWriter {
            TeeWriter {
                line: self.console.make_writer(),
                seen: Arc::clone(&self.seen),
            }
        }
    }

    fn at(phase: &str, done: u64) -> Progress {
        Progress {
            phase: phase.into(),
            bytes_done: done,
            bytes_total: 100,
            rate: 0,
        }
    }

    #[test]
    fn each_phase_that_ends_is_logged_with_its_bytes_and_seconds() {
        let console = Console::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Tee {
                console: console.clone(),
                seen: Arc::clone(&seen),
            })
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Logging while the bar's lock is held would deadlock here.
            console.progress(&at("compare", 0));
            console.progress(&at("compare", 100));
            console.progress(&at("flash", 40));
            console.progress(&at("verify", 7));
            console.done();
            console.done();
        });
        let text = String::from_utf8(seen.lock().expect("lock").clone()).expect("utf-8");
        let ended: Vec<&str> = text.lines().filter(|l| l.contains("phase ended")).collect();
        assert_eq!(ended.len(), 3, "one line per phase: {text}");
        for (line, (phase, bytes)) in
            ended
                .iter()
                .zip([("compare", 100), ("flash", 40), ("verify", 7)])
        {
            assert!(
                line.contains(&format!("phase=\"{phase}\""))
                    && line.contains(&format!("bytes={bytes}")),
                "{line}"
            );
            assert!(line.contains("seconds=\""), "{line}");
        }
    }
}
