//! The content-addressed artifact store.
//!
//! Layout under the store root (`artifacts/` by default):
//! - `<stage>/<key>/` — a published artifact: its data files and `manifest.json`;
//! - `<stage>/.tmp-*` — a publish in progress, or the leftover of a crashed one (ignored, and
//!   removed by `gc` once its process is gone);
//! - `.work/<stage>/<key>/` — a stage's private working directory (training checkpoints), so a
//!   restarted run with the same key resumes;
//! - `refs/<profile>/<node>.ref` — named pointers for Make (`<stage>/<key>`);
//! - `.verified/<stage>/<key>.json` — which files were verified, and their stamps then
//!   (`verified.rs`: content checks at the cost of a `stat`);
//! - `plans/`, `logs/` — written by the plan command and the Makefile.
//!
//! This module knows nothing of tensors or Parquet: it moves, hashes and names files.

pub mod canonical;
mod gc;
pub mod key;
pub mod manifest;
mod open;
mod publish;
mod refs;
pub mod verified;

pub use gc::{GcLock, GcPlan};
pub use key::{artifact_key, Key};
pub use manifest::{FileRecord, InputRecord, Manifest};
pub use open::{Artifact, Verify};
pub use publish::{Draft, Staging};
pub use refs::{read_ref_file, write_ref_file, RefEntry};

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Directory names under the root that are not stages.
const RESERVED: &[&str] = &["refs", "plans", "logs"];

/// A store rooted at a directory (created on first publish).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the artifact `stage/key` lives once published.
    pub fn artifact_dir(&self, stage: &str, key: &Key) -> PathBuf {
        self.root.join(stage).join(key.as_str())
    }

    /// The private working directory of a run producing `stage/key`.
    pub fn work_dir(&self, stage: &str, key: &Key) -> PathBuf {
        self.root.join(".work").join(stage).join(key.as_str())
    }

    /// Whether `stage/key` is published (its manifest exists; it is not verified here).
    pub fn contains(&self, stage: &str, key: &Key) -> bool {
        self.artifact_dir(stage, key).join("manifest.json").is_file()
    }
}

/// Check that a stage name is a plain lowercase word (it becomes a directory name).
pub fn check_stage_name(stage: &str) -> Result<()> {
    let ok = !stage.is_empty()
        && stage.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !RESERVED.contains(&stage);
    if !ok {
        bail!("`{stage}` is not a valid stage name (lowercase letters, digits and '-')");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
