//! Progress for long work: a bar on a terminal, plain log lines elsewhere (CI, SLURM logs).
//!
//! Every line, plain or above the bar, has one format:
//! `[node] label: 40/400 (10%) 12.3s, 3.25/s, eta 1m51s, message`: the pipeline node the
//! process runs (when it runs one, see [`set_node`]), so that lines gathered from many jobs
//! say where they come from, then position, elapsed time, rate and time left.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often plain progress lines are written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

static NODE: OnceLock<String> = OnceLock::new();

/// The pipeline node this process runs (`--node`): it opens every progress line.
pub fn set_node(id: &str) {
    let _ = NODE.set(id.to_string());
}

pub struct Progress {
    label: String,
    total: u64,
    pos: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    /// The first position set and when: the rate counts from there (a resumed run starts
    /// part-way).
    first: Option<(u64, Instant)>,
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
        Progress { label: label.to_string(), total, pos: 0, bar, started: now, first: None, last_log: now, log_every: LOG_EVERY, logged: None, message: String::new(), quiet }
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
        self.first.get_or_insert((pos, Instant::now()));
        match &self.bar {
            Some(b) => b.set_position(pos),
            None if !self.quiet && self.last_log.elapsed() >= self.log_every => self.log_line(),
            None => {}
        }
    }

    /// Write the progress line now (above the bar on a terminal), e.g. every `log_every` steps.
    pub fn log_now(&mut self) {
        match &self.bar {
            Some(b) => b.println(self.line()),
            None if self.quiet => {}
            None => self.log_line(),
        }
    }

    fn log_line(&mut self) {
        self.last_log = Instant::now();
        self.logged = Some(self.pos);
        eprintln!("{}", self.line());
    }

    /// `[node] label: pos/total (pct%) elapsed, rate, eta, message`.
    fn line(&self) -> String {
        let pct = if self.total > 0 { 100.0 * self.pos as f64 / self.total as f64 } else { 100.0 };
        let mut out = format!("{}{}: {}/{} ({pct:.0}%) {}", node_prefix(), self.label, self.pos, self.total, duration(self.started.elapsed().as_secs_f64()));
        if let Some((from, at)) = self.first {
            let secs = at.elapsed().as_secs_f64();
            if self.pos > from && secs > 0.0 {
                let rate = (self.pos - from) as f64 / secs;
                out.push_str(&format!(", {}/s", rate_text(rate)));
                if self.pos < self.total {
                    out.push_str(&format!(", eta {}", duration((self.total - self.pos) as f64 / rate)));
                }
            }
        }
        if !self.message.is_empty() {
            out.push_str(", ");
            out.push_str(&self.message);
        }
        out
    }

    /// Write a plain line without breaking the bar.
    pub fn println(&self, line: &str) {
        let line = format!("{}{line}", node_prefix());
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

fn node_prefix() -> String {
    NODE.get().map(|n| format!("[{n}] ")).unwrap_or_default()
}

/// 12.3s, 4m05s, 2h07m.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

/// Three significant digits: 0.0123, 3.25, 412, 12345.
fn rate_text(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
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

    /// Position, elapsed time, the rate since the first position (a resume starts part-way)
    /// and the time left.
    #[test]
    fn a_line_has_rate_and_eta() {
        let mut p = Progress::new("train-ct ect", 400);
        p.bar = None;
        p.log_every = Duration::from_secs(3600);
        p.set_position(100);
        assert_eq!(p.line(), "train-ct ect: 100/400 (25%) 0.0s");
        p.first = Some((100, Instant::now() - Duration::from_secs(10)));
        p.set_position(140);
        p.set_message("loss 0.7800");
        let line = p.line();
        // 40 steps in 10 s: 4/s, 260 left: 65 s.
        assert!(line.starts_with("train-ct ect: 140/400 (35%) ") && line.ends_with(", 4.00/s, eta 1m05s, loss 0.7800"), "{line}");
        assert_eq!((duration(59.94), duration(245.0), duration(7620.0)), ("59.9s".to_string(), "4m05s".to_string(), "2h07m".to_string()));
    }
}
