//! Progress for long work: a bar on a terminal, plain log lines elsewhere (CI, SLURM logs).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often plain progress lines are written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    label: String,
    total: u64,
    pos: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
    log_every: Duration,
    /// The position the last plain line showed (finish does not repeat it).
    logged: Option<u64>,
    message: String,
    /// Shows nothing (a data-parallel run's ranks other than 0: rank 0 speaks for all).
    quiet: bool,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        Self::with(label, total, bar, false)
    }

    /// Progress that shows nothing, bar, lines or `println`.
    pub fn quiet(label: &str, total: u64) -> Progress {
        Self::with(label, total, None, true)
    }

    fn with(label: &str, total: u64, bar: Option<ProgressBar>, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress { label: label.to_string(), total, pos: 0, bar, started: now, last_log: now, log_every: LOG_EVERY, logged: None, message: String::new(), quiet }
    }

    pub fn set_message(&mut self, msg: impl Into<String>) {
        self.message = msg.into();
        if let Some(b) = &self.bar {
            b.set_message(self.message.clone());
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.set_position(self.pos + n);
    }

    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        match &self.bar {
            Some(b) => b.set_position(pos),
            None if !self.quiet && self.last_log.elapsed() >= self.log_every => {
                self.last_log = Instant::now();
                self.log_line();
            }
            None => {}
        }
    }

    fn log_line(&mut self) {
        self.logged = Some(self.pos);
        let pct = if self.total > 0 { 100.0 * self.pos as f64 / self.total as f64 } else { 100.0 };
        eprintln!(
            "{}: {}/{} ({pct:.0}%) {:.1}s {}",
            self.label,
            self.pos,
            self.total,
            self.started.elapsed().as_secs_f64(),
            self.message
        );
    }

    /// Write a plain line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if self.quiet => {}
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(mut self) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None if !self.quiet && self.needs_final_line() => self.log_line(),
            None => {}
        }
    }

    /// Whether the plain log has not shown the current position yet.
    fn needs_final_line(&self) -> bool {
        self.logged != Some(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log line written at the last position is not written again by `finish`.
    #[test]
    fn the_last_line_is_written_once() {
        let mut p = Progress::new("test", 4);
        p.bar = None;
        p.log_every = Duration::ZERO;
        p.set_position(3);
        assert!(!p.needs_final_line());
        p.log_every = Duration::from_secs(3600);
        p.set_position(4);
        assert!(p.needs_final_line(), "position 4 was not logged yet");
        p.log_every = Duration::ZERO;
        p.set_position(4);
        assert!(!p.needs_final_line(), "position 4 was logged: finish must not repeat it");
    }
}
