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

    /// Shows `p`: a new bar when the phase changes, else moves it.
    pub fn progress(&self, p: &Progress) {
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        let same = slot.as_ref().is_some_and(|(phase, _)| *phase == p.phase);
        if !same {
            if let Some((_, old)) = slot.take() {
                old.finish();
            }
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
    }

    /// Ends the current bar.
    pub fn done(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some((_, bar)) = slot.take() {
                bar.finish();
            }
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
