//! Failure kinds of the stage contract and the exit codes they map to.
//!
//! Library code returns `anyhow::Result`; an error that is the user's to fix (a bad flag, a bad
//! input file) carries a [`Failure`] tag somewhere in its chain. `stage::main` and the tool
//! binaries look for the tag to choose the exit code and print the chain on one line.

use std::fmt;

/// Why a run ended without producing its artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Bad flag, bad `pipeline.toml` entry, bad config value (exit 2).
    Usage,
    /// Bad input: a data file, an input artifact, a corrupt file (exit 3).
    BadInput,
    /// Stopped by a signal after writing a checkpoint; run again to resume (exit 75).
    Interrupted,
    /// Training diverged (non-finite losses or weights); no artifact, and rerunning the same
    /// settings would diverge again (exit 4).
    Diverged,
}

impl Failure {
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::BadInput => 3,
            Failure::Interrupted => 75,
            Failure::Diverged => 4,
        }
    }
}

/// An error message tagged with its [`Failure`] kind.
#[derive(Debug)]
pub struct Tagged {
    pub kind: Failure,
    pub message: String,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Tagged {}

/// A usage error (exit 2) with this message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Tagged { kind: Failure::Usage, message: message.into() })
}

/// A bad-input error (exit 3) with this message.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Tagged { kind: Failure::BadInput, message: message.into() })
}

/// The run was interrupted after a checkpoint (exit 75).
pub fn interrupted(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Tagged { kind: Failure::Interrupted, message: message.into() })
}

/// Training diverged (exit 4).
pub fn diverged(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Tagged { kind: Failure::Diverged, message: message.into() })
}

/// Tag an existing error (an I/O or parse error, say) with a kind and a leading message.
pub trait TagContext<T> {
    fn usage_ctx<F: FnOnce() -> String>(self, f: F) -> anyhow::Result<T>;
    fn bad_input_ctx<F: FnOnce() -> String>(self, f: F) -> anyhow::Result<T>;
}

impl<T, E> TagContext<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn usage_ctx<F: FnOnce() -> String>(self, f: F) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Tagged { kind: Failure::Usage, message: f() }))
    }
    fn bad_input_ctx<F: FnOnce() -> String>(self, f: F) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Tagged { kind: Failure::BadInput, message: f() }))
    }
}

/// The failure kind of an error, if any part of its chain is tagged.
pub fn failure_of(err: &anyhow::Error) -> Option<Failure> {
    // anyhow's downcast looks through every context layer, including context objects.
    err.downcast_ref::<Tagged>().map(|t| t.kind)
}

/// The process exit code for an error: the tag's code; 3 for what the machine refuses (no
/// permission, a read-only file system, a full disk or quota: the user's to fix, like a bad
/// input); else 1, an internal failure.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    if let Some(f) = failure_of(err) {
        return f.exit_code();
    }
    if err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(refused_by_the_machine)) {
        return Failure::BadInput.exit_code();
    }
    1
}

fn refused_by_the_machine(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), PermissionDenied | ReadOnlyFilesystem | StorageFull | QuotaExceeded | FileTooLarge)
}

/// End a binary: success, or `error: <tool>: <one line>` on stderr and the failure's exit code.
pub fn exit_code(tool: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {tool}: {}", one_line(&e));
            std::process::ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The whole chain on one line, outermost first (`a: b: c`), with no line breaks inside.
/// " (did you mean `steps`?)" when one of `known` is a likely misspelling of `word`: at most a
/// third of its letters off (one at least), a swap of two neighbours counting as one.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (word.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

thread_local! {
    /// Set while a [`guard_decoder`] call runs on this thread: its panics are errors to report,
    /// not bugs to print with a backtrace.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// For commands whose output is a listing (`plan status`, `artifacts ls`): end quietly when
/// the reader goes away (`plan status | head`), as Unix tools do, instead of panicking in
/// `println!` on the broken pipe (Rust ignores SIGPIPE by default).
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Write a whole document to stdout in one write. A reader that has gone away (`| grep -q`,
/// `| head`) is not an error: what it wanted it has read. The stages' `--dry-run` prints this
/// way; `println!` would panic on the closed pipe.
pub fn print_document(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(format!("{text}\n").as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Install the process's panic hook: panics inside [`guard_decoder`] are kept quiet (their
/// message becomes part of the one-line error); any other panic prints as usual. Called first
/// thing by every binary's `main`.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if GUARDED.with(|g| g.get()) {
            let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
            PANIC_MESSAGE.with(|m| *m.borrow_mut() = msg);
        } else {
            default(info);
        }
    }));
}

/// Run a third-party decoder over untrusted bytes (parquet-rs panics on some corrupt files:
/// `fuzz_tests.rs`): a panic becomes a bad-input error naming `what`. Wrap the decoder's calls
/// only, never our own code, whose panics are bugs to see.
pub fn guard_decoder<T>(what: &std::path::Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let was = GUARDED.with(|g| g.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    r.unwrap_or_else(|_| {
        let msg = PANIC_MESSAGE.with(|m| std::mem::take(&mut *m.borrow_mut()));
        let msg = if msg.is_empty() { "it panicked".to_string() } else { msg };
        Err(bad_input(format!("{}: corrupt file (the decoder failed: {msg})", what.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn tag_survives_context_and_sets_exit_code() {
        let e: Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
        let e = e.bad_input_ctx(|| "data/x.idx".to_string()).context("reading dataset").unwrap_err();
        assert_eq!(failure_of(&e), Some(Failure::BadInput));
        assert_eq!(exit_code_of(&e), 3);
        assert_eq!(one_line(&e), "reading dataset: data/x.idx: disk on fire");
        assert_eq!(exit_code_of(&anyhow::anyhow!("bug")), 1);
        assert_eq!(exit_code_of(&usage("bad flag")), 2);
        assert_eq!(exit_code_of(&interrupted("sigterm")), 75);
        assert_eq!(exit_code_of(&diverged("nan")), 4);
        // The machine's refusals, however deep in the chain: the user's to fix.
        for errno in [libc::ENOSPC, libc::EROFS, libc::EACCES, libc::EDQUOT] {
            let e: Result<(), std::io::Error> = Err(std::io::Error::from_raw_os_error(errno));
            assert_eq!(exit_code_of(&e.context("x.safetensors: cannot write").context("publishing").unwrap_err()), 3, "errno {errno}");
        }
        assert_eq!(exit_code_of(&anyhow::Error::new(std::io::Error::other("bug"))), 1);
    }
}
