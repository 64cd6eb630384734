//! What a build shows while it runs. Plain mode (CI logs) prints every event as a
//! `#N ...` line and every line of RUN output in full; on a terminal each step is a
//! spinner that keeps the last lines of its output underneath and collapses into one
//! summary line when the step ends. Either way the full output of every step is in the
//! step logs under `<root>/logs/last-build`.
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

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
}

impl BuildView {
    pub fn new(mode: ViewMode) -> BuildView {
        let width = crate::sys::tty::columns(std::os::fd::AsFd::as_fd(&std::io::stderr()))
            .map_or(100, usize::from);
        BuildView {
            mode,
            width,
            step: Mutex::new(None),
        }
    }

    fn print(&self, line: &str) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// A line outside any step (stage headers, the summary).
    pub fn line(&self, text: &str) {
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
}
