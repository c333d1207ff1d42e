//! Fault injection for the fault tests (`tests/faults.rs`).
//!
//! `CTPIPE_FAILPOINT=<name>[,<name>...]` names the points that fire. A crash point ([`hit`])
//! aborts the process as a crash would (no destructors, no cleanup); the crash tests use it to
//! prove that a publish or a checkpoint interrupted at any of its steps leaves either nothing
//! or a complete file. A condition point ([`active`]) makes the code take a rare path on
//! purpose. Points:
//! - crash: `publish:files-written`, `publish:before-rename`, `publish:after-rename`,
//!   `checkpoint:before-rename`, `fit:checkpoint@<step>` (after the checkpoint of that step);
//! - condition: `fit:nan-loss@<step>` (the loss of the step that starts at `<step>` is NaN).

use std::sync::OnceLock;

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| std::env::var("CTPIPE_FAILPOINT").map(|v| v.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default())
}

/// Whether `CTPIPE_FAILPOINT` names any point (a check cheap enough for every step).
pub fn any() -> bool {
    !points().is_empty()
}

/// Whether `CTPIPE_FAILPOINT` names this point.
pub fn active(name: &str) -> bool {
    let p = points();
    !p.is_empty() && p.iter().any(|q| q == name)
}

/// Abort the process here if `CTPIPE_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if active(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
