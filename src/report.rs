//! User-facing progress output. One `Reporter` per command decides how events look:
//! spinners on a terminal (`auto` on a TTY), one plain line per event otherwise (CI logs),
//! nothing but results with `quiet`. Debug logging goes through `tracing`, not here.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// Spinners on a terminal, plain lines otherwise.
    Auto,
    /// One line per event, never redrawn (for CI logs).
    Plain,
    /// Only errors and final results.
    Quiet,
}

pub struct Reporter {
    mode: Progress,
    tty: bool,
}

/// A running task: a spinner on a TTY, a start line in plain mode.
pub struct Task {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    label: String,
    plain: bool,
}

impl Reporter {
    pub fn new(mode: Progress) -> Reporter {
        Reporter {
            mode,
            tty: std::io::stderr().is_terminal(),
        }
    }
    pub fn is_quiet(&self) -> bool {
        self.mode == Progress::Quiet
    }
    fn fancy(&self) -> bool {
        self.mode == Progress::Auto && self.tty
    }
    /// Whether progress is drawn with spinners (auto mode on a terminal).
    pub fn is_fancy(&self) -> bool {
        self.fancy()
    }

    /// A one-off status line (stderr).
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.is_quiet() {
            let _ = writeln!(std::io::stderr(), "{}", msg.as_ref());
        }
    }

    /// Starts a task that ends with `Task::done`.
    pub fn task(&self, label: impl Into<String>) -> Task {
        let label = label.into();
        let bar = if self.fancy() {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("valid template"),
            );
            b.set_message(label.clone());
            b.enable_steady_tick(Duration::from_millis(100));
            Some(b)
        } else {
            None
        };
        let plain = !self.fancy() && !self.is_quiet();
        if plain {
            let _ = writeln!(std::io::stderr(), "{label} ...");
        }
        Task {
            bar,
            started: Instant::now(),
            label,
            plain,
        }
    }
}

impl Task {
    /// Ends the task with a summary (e.g. the digest written).
    pub fn done(self, summary: impl AsRef<str>) {
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!("{}: {} ({secs:.2}s)", self.label, summary.as_ref());
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            let _ = writeln!(std::io::stderr(), "{line}");
        } else if self.plain {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
