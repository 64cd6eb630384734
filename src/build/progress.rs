//! What a build shows while it runs. Plain mode (CI logs) prints every event as a
//! `#N ...` line and every line of RUN output in full; on a terminal each step is a
//! spinner that keeps the last lines of its output underneath and collapses into one
//! summary line when the step ends. Either way the full output of every step is in the
//! step logs of that build: `<root>/logs/builds/<build id>/` (`step-N.log` per RUN, and
//! `build.log`, the whole plain transcript whatever the display mode). Concurrent builds
//! each write their own directory; `<root>/logs/last-build` is a symlink to the one
//! started last, and `keel build --log-file FILE` copies the transcript to FILE too.
use crate::sys::hostfs;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Build log directories kept (the oldest go when a build starts)...
const KEEP_BUILD_LOGS: usize = 20;
/// ...once this many more have piled up: the oldest go ten at a time, so most builds
/// delete nothing (a deleted directory's blocks are discarded synchronously on a disk
/// mounted with `discard`, milliseconds each on the project VM).
const PRUNE_SLACK: usize = 10;

/// Where the log directory of build `build_id` is (made by [`new_build_log`]).
pub fn build_log_dir(root: &Path, build_id: &str) -> PathBuf {
    root.join("logs").join("builds").join(build_id)
}

/// Makes this build's log directory `<root>/logs/builds/<id>`, points
/// `<root>/logs/last-build` at it (atomically: a symlink renamed over the old one) and
/// drops the oldest directories beyond [`KEEP_BUILD_LOGS`] once [`PRUNE_SLACK`] more
/// have piled up.
pub fn new_build_log(root: &Path, build_id: &str) -> PathBuf {
    let logs = root.join("logs");
    let builds = logs.join("builds");
    let dir = build_log_dir(root, build_id);
    let _ = hostfs::create_dir_all(&dir);
    let last = logs.join("last-build");
    // An older keel kept a plain directory there.
    if std::fs::symlink_metadata(&last).is_ok_and(|m| m.is_dir()) {
        let _ = hostfs::remove_dir_all(&last);
    }
    let tmp = logs.join(format!(".last-build-{build_id}"));
    let _ = hostfs::remove_file(&tmp);
    if hostfs::symlink(Path::new("builds").join(build_id), &tmp).is_ok() {
        let _ = hostfs::rename(&tmp, &last);
    }
    prune_build_logs(&builds, build_id);
    tracing::debug!(dir = %dir.display(), "build log directory");
    dir
}

fn prune_build_logs(builds: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(builds) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name() != keep)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if dirs.len() < KEEP_BUILD_LOGS + PRUNE_SLACK {
        return;
    }
    dirs.sort();
    let excess = (dirs.len() + 1).saturating_sub(KEEP_BUILD_LOGS);
    for (_, d) in dirs.into_iter().take(excess) {
        let _ = hostfs::remove_dir_all(d);
    }
}

/// Lines of RUN output kept under a step's spinner.
const TAIL: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    Quiet,
    Plain,
    Terminal,
}

struct StepLine {
    n: usize,
    header: String,
    note: String,
    tail: VecDeque<String>,
    bar: indicatif::ProgressBar,
}

impl StepLine {
    fn redraw(&self, width: usize) {
        let mut msg = format!("#{} {}", self.n, self.header);
        if !self.note.is_empty() {
            msg.push_str(&format!(" ({})", self.note));
        }
        msg = clip(&msg, width.saturating_sub(12));
        for l in &self.tail {
            msg.push_str("\n    ");
            msg.push_str(&clip(l, width.saturating_sub(5)));
        }
        self.bar.set_message(msg);
    }
}

/// Shortens `s` to `width` characters (terminal lines must not wrap under a spinner).
fn clip(s: &str, width: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The build's progress display.
pub struct BuildView {
    mode: ViewMode,
    width: usize,
    step: Mutex<Option<StepLine>>,
    /// Plain transcripts (the build's `build.log`, `--log-file`), whatever the mode.
    transcripts: Mutex<Vec<File>>,
    /// A transcript kept in memory until its file exists (`hold_transcript`).
    held: Mutex<Option<Vec<u8>>>,
}

impl BuildView {
    pub fn new(mode: ViewMode) -> BuildView {
        let width = crate::sys::tty::columns(std::os::fd::AsFd::as_fd(&crate::report::stderr()))
            .map_or(100, usize::from);
        BuildView {
            mode,
            width,
            step: Mutex::new(None),
            transcripts: Mutex::new(Vec::new()),
            held: Mutex::new(None),
        }
    }

    /// Also writes every event, as plain mode prints it, to `file`.
    pub fn add_transcript(&self, file: File) {
        self.transcripts.lock().expect("view lock").push(file);
    }

    /// Keeps a transcript in memory from now on, for a file that may never be made (a
    /// build whose every step hits the cache keeps no log directory).
    pub fn hold_transcript(&self) {
        *self.held.lock().expect("view lock") = Some(Vec::new());
    }

    /// Writes the held transcript to `file`, which then gets every later event too.
    pub fn release_transcript(&self, mut file: File) {
        if let Some(held) = self.held.lock().expect("view lock").take() {
            let _ = file.write_all(&held);
        }
        self.add_transcript(file);
    }

    fn record(&self, line: &str) {
        if let Some(held) = self.held.lock().expect("view lock").as_mut() {
            held.extend_from_slice(line.as_bytes());
            held.push(b'\n');
        }
        for f in self.transcripts.lock().expect("view lock").iter_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    fn print(&self, line: &str) {
        let _ = writeln!(crate::report::stderr(), "{line}");
    }

    /// A line outside any step (stage headers, the summary).
    pub fn line(&self, text: &str) {
        self.record(text);
        match self.mode {
            ViewMode::Quiet => {}
            ViewMode::Plain => self.print(text),
            ViewMode::Terminal => match &*self.step.lock().expect("view lock") {
                Some(s) => s.bar.suspend(|| self.print(text)),
                None => self.print(text),
            },
        }
    }

    /// Step `n` starts.
    pub fn step_start(&self, n: usize, header: &str) {
        self.record(&format!("#{n} {header}"));
        match self.mode {
            ViewMode::Quiet => {}
            ViewMode::Plain => self.print(&format!("#{n} {header}")),
            ViewMode::Terminal => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("a valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                let s = StepLine {
                    n,
                    header: header.to_string(),
                    note: String::new(),
                    tail: VecDeque::new(),
                    bar,
                };
                s.redraw(self.width);
                *self.step.lock().expect("view lock") = Some(s);
            }
        }
    }

    /// Why step `n` runs (a cache miss explained).
    pub fn step_note(&self, n: usize, note: &str) {
        self.record(&format!("#{n} {note}"));
        match self.mode {
            ViewMode::Quiet => {}
            ViewMode::Plain => self.print(&format!("#{n} {note}")),
            ViewMode::Terminal => {
                if let Some(s) = &mut *self.step.lock().expect("view lock") {
                    s.note = note.to_string();
                    s.redraw(self.width);
                }
            }
        }
    }

    /// One line of step `n`'s output.
    pub fn step_output(&self, n: usize, line: &str) {
        self.record(&format!("#{n} {line}"));
        match self.mode {
            ViewMode::Quiet => {}
            ViewMode::Plain => self.print(&format!("#{n} {line}")),
            ViewMode::Terminal => {
                if let Some(s) = &mut *self.step.lock().expect("view lock") {
                    if s.tail.len() == TAIL {
                        s.tail.pop_front();
                    }
                    s.tail.push_back(line.to_string());
                    s.redraw(self.width);
                }
            }
        }
    }

    /// Step `n` ended: `CACHED`, `DONE 1.20s`, or nothing for a metadata step.
    pub fn step_end(&self, n: usize, result: Option<&str>) {
        if let Some(r) = result {
            self.record(&format!("#{n} {r}"));
        }
        match self.mode {
            ViewMode::Quiet => {}
            ViewMode::Plain => {
                if let Some(r) = result {
                    self.print(&format!("#{n} {r}"));
                }
            }
            ViewMode::Terminal => {
                if let Some(s) = self.step.lock().expect("view lock").take() {
                    s.bar.finish_and_clear();
                    let line = format!("#{n} {}", s.header);
                    match result {
                        Some(r) => self.print(&format!(
                            "{} {r}",
                            clip(&line, self.width.saturating_sub(r.len() + 1))
                        )),
                        None => self.print(&clip(&line, self.width)),
                    }
                }
            }
        }
    }

    /// The step in progress failed: on a terminal its spinner goes, its output stays.
    pub fn step_failed(&self) {
        self.record("ERROR");
        if let Some(s) = self.step.lock().expect("view lock").take() {
            s.bar.finish_and_clear();
            self.print(&format!("#{} {} ERROR", s.n, s.header));
            for l in &s.tail {
                self.print(&format!("    {l}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_clipped_to_the_terminal_without_control_characters() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789abc", 8), "0123456…");
        assert_eq!(clip("a\tb\rc", 10), "a b c");
    }

    #[test]
    fn each_build_gets_its_own_log_and_last_build_points_at_the_newest() {
        let d = tempfile::tempdir().unwrap();
        // A directory left by an older keel is replaced by the link.
        std::fs::create_dir_all(d.path().join("logs/last-build")).unwrap();
        let a = new_build_log(d.path(), "aaa");
        let b = new_build_log(d.path(), "bbb");
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        let last = std::fs::canonicalize(d.path().join("logs/last-build")).unwrap();
        assert_eq!(last, std::fs::canonicalize(&b).unwrap());
        let count = || {
            std::fs::read_dir(d.path().join("logs/builds"))
                .unwrap()
                .count()
        };
        for i in 0..KEEP_BUILD_LOGS + PRUNE_SLACK - 2 {
            new_build_log(d.path(), &format!("x{i:03}"));
        }
        assert_eq!(
            count(),
            KEEP_BUILD_LOGS + PRUNE_SLACK,
            "pruned within the slack"
        );
        let newest = new_build_log(d.path(), "newest");
        assert_eq!(count(), KEEP_BUILD_LOGS, "the oldest go at once");
        assert!(newest.is_dir() && b.parent().unwrap().join("x027").is_dir());
        let view = BuildView::new(ViewMode::Quiet);
        let path = d.path().join("t.log");
        view.add_transcript(File::create(&path).unwrap());
        view.step_start(1, "RUN x");
        view.step_output(1, "out");
        view.step_end(1, Some("DONE 0.10s"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#1 RUN x\n#1 out\n#1 DONE 0.10s\n"
        );
    }
}
