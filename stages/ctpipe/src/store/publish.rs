//! Atomic publish: a temporary directory on the same file system, fsync, rename.
//!
//! A stage writes its files into [`Staging::path`]. [`Staging::commit`] hashes them, writes the
//! manifest, fsyncs every file and directory, and renames the directory into place. The rename
//! is the commit point: a crash before it leaves only a `.tmp-*` directory (ignored by readers,
//! removed by `gc`), a crash after it leaves a complete artifact. A staging directory dropped
//! without a commit (an error in the stage) is removed.

use super::key::Key;
use super::manifest::{FileRecord, InputRecord, Manifest, MANIFEST_FORMAT};
use super::open::{Artifact, Verify};
use super::{check_stage_name, Store};
use crate::{failpoint, fsx};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Everything of a manifest that the stage decides; files and times are filled in at commit.
#[derive(Debug, Clone)]
pub struct Draft {
    pub stage: String,
    pub version: u32,
    pub key: Key,
    pub inputs: BTreeMap<String, InputRecord>,
    pub external: BTreeMap<String, String>,
    pub config: Value,
    pub metrics: Value,
}

/// An artifact being written. Dropping it without [`Staging::commit`] removes its directory.
pub struct Staging {
    store: Store,
    dir: PathBuf,
    stage: String,
    key: Key,
    committed: bool,
}

impl Store {
    /// Start publishing `stage/key`: a fresh temporary directory beside its final place.
    pub fn begin(&self, stage: &str, key: &Key) -> Result<Staging> {
        check_stage_name(stage)?;
        let parent = self.root().join(stage);
        fs::create_dir_all(&parent).with_context(|| format!("{}: cannot create", parent.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(".tmp-{}-{}-{nanos:09}", key.short(), std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        Ok(Staging { store: self.clone(), dir, stage: stage.to_string(), key: key.clone(), committed: false })
    }
}

impl Staging {
    /// The directory the stage writes its files into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Hash, fsync, write the manifest, rename into place. Returns the published artifact.
    ///
    /// If the same key was published meanwhile by another process, that artifact wins (it has
    /// the same content by construction) and this staging directory is removed.
    pub fn commit(mut self, draft: Draft) -> Result<Artifact> {
        assert_eq!((draft.stage.as_str(), &draft.key), (self.stage.as_str(), &self.key), "draft does not match staging");
        let files = hash_and_sync_files(&self.dir)?;
        failpoint::hit("publish:files-written");
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            stage: draft.stage,
            version: draft.version,
            key: draft.key,
            inputs: draft.inputs,
            external: draft.external,
            config: draft.config,
            files,
            created: fsx::utc_now_rfc3339(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            metrics: draft.metrics,
        };
        let manifest_path = self.dir.join("manifest.json");
        fs::write(&manifest_path, manifest.to_json()?).with_context(|| format!("{}: write failed", manifest_path.display()))?;
        fsx::fsync_file(&manifest_path)?;
        sync_dirs(&self.dir)?;
        failpoint::hit("publish:before-rename");

        let final_dir = self.store.artifact_dir(&self.stage, &self.key);
        let parent = final_dir.parent().expect("artifact dir has a parent").to_path_buf();
        if final_dir.is_dir() && !self.store.contains(&self.stage, &self.key) {
            // A damaged artifact (its manifest deleted) in the way: it is not an artifact.
            eprintln!("{}: replacing it (it has no manifest.json)", final_dir.display());
            fs::remove_dir_all(&final_dir).with_context(|| format!("{}: cannot remove the damaged artifact", final_dir.display()))?;
        }
        match fs::rename(&self.dir, &final_dir) {
            Ok(()) => {
                self.committed = true;
                fsx::fsync_dir(&parent)?;
            }
            Err(_) if self.store.contains(&self.stage, &self.key) => {
                // Lost a race with an identical publish: keep the winner, drop ours (Drop).
            }
            Err(e) => return Err(e).with_context(|| format!("{}: cannot rename into place", final_dir.display())),
        }
        failpoint::hit("publish:after-rename");
        let art = self.store.open(&self.stage, &self.key, Verify::Sizes)?;
        // What was just hashed here needs no hashing when the next stage reads it (once its
        // stamps are old enough: verified.rs). The winner of a race records its own.
        if self.committed {
            super::verified::save(&self.store, &self.stage, &self.key, &super::verified::record_of(&art.dir, &art.manifest.files));
        }
        Ok(art)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every regular file under `dir` (except `manifest.json`), sorted, with size and blake3,
/// each fsynced. Symbolic links are refused: an artifact must be self-contained.
fn hash_and_sync_files(dir: &Path) -> Result<Vec<FileRecord>> {
    let mut paths = Vec::new();
    collect_files(dir, dir, &mut paths)?;
    paths.sort();
    paths.retain(|p| p != "manifest.json");
    paths
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            fsx::default_permissions(&path)?;
            fsx::fsync_file(&path)?;
            let (size, blake3) = hash_file(&path)?;
            Ok(FileRecord { path: rel, size, blake3 })
        })
        .collect()
}

pub(super) fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            collect_files(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root).expect("under root");
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push(rel);
        } else {
            anyhow::bail!("{}: artifacts may hold only regular files and directories", path.display());
        }
    }
    Ok(())
}

/// Size and blake3 (hex) of a file.
pub(super) fn hash_file(path: &Path) -> Result<(u64, String)> {
    let f = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f).with_context(|| format!("{}: read failed", path.display()))?;
    let size = fs::metadata(path)?.len();
    Ok((size, h.finalize().to_hex().to_string()))
}

fn sync_dirs(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    fsx::fsync_dir(dir)
}
