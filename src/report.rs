//! All user-facing output. Command results (data lines on stdout) go through `out_line` /
//! `outln!`, messages for the user (stderr) through `err_line` / `errln!`, and progress
//! through one `Reporter` per command, which decides how events look: spinners on a
//! terminal (`auto` on a TTY), one plain line per event otherwise (CI logs), nothing but
//! results with `quiet`. Debug logging goes through `tracing`, not here.
//!
//! A closed stdout is normal: `keel images | head -1` closes the pipe after one line. Rust
//! ignores SIGPIPE, so the next write fails with EPIPE; `out_line` returns that error for
//! the caller to pass up (`?`), and `cli::main` exits 0 quietly on it (STYLE: "a broken
//! pipe exits 0"). `install_broken_pipe_hook` does the same for a `println!` that slips in
//! anyway (whose EPIPE is a panic), e.g. from a dependency.
//!
//! Guard rail: Cargo.toml's `[lints.clippy]` warns on `print!`/`println!`/`eprint!`/
//! `eprintln!` everywhere (`scripts/test` makes warnings errors), so user-facing output has
//! this one home; test code is exempt.
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// Writes one line of command output (data, not messages) to stdout. The error, a
/// `BrokenPipe` when the reader went away, is meant to be passed up with `?`.
pub fn out_line(line: impl fmt::Display) -> io::Result<()> {
    let mut out = stdout().lock();
    writeln!(out, "{line}")?;
    // Flushed per line so a pipe reader sees results as they come and a closed pipe shows
    // up at the line that hit it, not at exit (where the error would have nowhere to go).
    out.flush()
}

/// Writes command output as it is (no newline added), e.g. a JSON document or a tar.
pub fn out_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut out = stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// keel's stdout for what is not a line of text: an archive (`keel save`), a container's
/// relayed terminal, a generated file (`std::io::stdout` is refused elsewhere by clippy.toml).
#[allow(
    clippy::disallowed_methods,
    reason = "report.rs is the one home of keel's output"
)]
pub fn stdout() -> io::Stdout {
    io::stdout()
}

/// keel's stderr, for the progress display and the log subscriber (`std::io::stderr` is
/// refused elsewhere by clippy.toml).
#[allow(
    clippy::disallowed_methods,
    reason = "report.rs is the one home of keel's output"
)]
pub fn stderr() -> io::Stderr {
    io::stderr()
}

/// Writes one message line for the user to stderr. A stderr that cannot be written is
/// dropped silently: there is nowhere left to report it.
pub fn err_line(line: impl fmt::Display) {
    let _ = writeln!(stderr().lock(), "{line}");
}

/// `outln!("{x} {y}")?`: `println!` for command output, returning the write's error.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::report::out_line(format_args!($($arg)*))
    };
}

/// `errln!("warning: {x}")`: `eprintln!` for messages, never failing.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::report::err_line(format_args!($($arg)*))
    };
}

/// True when `e` or any error below it is a closed pipe (EPIPE): the reader of our output
/// went away, which ends a command successfully.
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Makes the panic of `println!`/`print!` on a closed stdout exit 0 without a message;
/// every other panic is reported as before. A backstop: keel's own code prints through
/// `out_line` (the `print_stdout` lint), but a dependency might not.
pub fn install_broken_pipe_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload_as_str()
            .is_some_and(is_stdout_broken_pipe_panic)
        {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// The message std's print macros panic with when stdout is a closed pipe.
fn is_stdout_broken_pipe_panic(msg: &str) -> bool {
    msg.starts_with("failed printing to stdout")
        && (msg.contains("Broken pipe") || msg.contains("os error 32"))
}

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
            tty: stderr().is_terminal(),
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
            let _ = writeln!(stderr(), "{}", msg.as_ref());
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
            let _ = writeln!(stderr(), "{label} ...");
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
            let _ = writeln!(stderr(), "{line}");
        } else if self.plain {
            let _ = writeln!(stderr(), "{line}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_panics_are_recognised() {
        for (msg, want) in [
            ("failed printing to stdout: Broken pipe (os error 32)", true),
            (
                "failed printing to stdout: No space left on device (os error 28)",
                false,
            ),
            (
                "failed printing to stderr: Broken pipe (os error 32)",
                false,
            ),
            ("index out of bounds", false),
        ] {
            assert_eq!(is_stdout_broken_pipe_panic(msg), want, "{msg}");
        }
    }

    #[test]
    fn broken_pipe_is_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing the image list")]
        struct Outer(#[source] io::Error);
        let pipe = Outer(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&pipe));
        let other = Outer(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }
}
