//! Crash points for fault-injection tests.
//!
//! `CTPIPE_FAILPOINT=<name>` makes the process abort (as a crash would: no destructors, no
//! cleanup) when it reaches the point of that name. The crash tests use it to prove that a
//! publish interrupted at any of its steps leaves either no artifact or a complete one.
//! Points: `publish:files-written`, `publish:before-rename`, `publish:after-rename`.

/// Abort the process here if `CTPIPE_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var("CTPIPE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
