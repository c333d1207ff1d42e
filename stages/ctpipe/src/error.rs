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
}

impl Failure {
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::BadInput => 3,
            Failure::Interrupted => 75,
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

/// The process exit code for an error: the tag's code, or 1 for an internal failure.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    failure_of(err).map(Failure::exit_code).unwrap_or(1)
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
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
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
    }
}
