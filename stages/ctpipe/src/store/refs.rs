//! Named refs: `refs/<profile>/<node>.ref` holds `<stage>/<key>` of a node's latest artifact.
//!
//! Refs are Make's targets. A stage rewrites its ref after every successful run, cached or
//! not, so the ref's mtime says "this node was brought up to date" and its content says with
//! what. Refs are written atomically, after the artifact is published.

use super::key::Key;
use super::Store;
use crate::error::{bad_input, TagContext};
use crate::fsx;
use anyhow::Result;
use std::fs;
use std::path::{Path, PathBuf};

/// One ref: which profile and node it names, and the artifact it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEntry {
    pub profile: String,
    pub node: String,
    pub stage: String,
    pub key: Key,
}

impl Store {
    pub fn ref_path(&self, profile: &str, node: &str) -> PathBuf {
        self.root().join("refs").join(profile).join(format!("{node}.ref"))
    }

    /// Point `profile/node` at `stage/key`.
    pub fn write_ref(&self, profile: &str, node: &str, stage: &str, key: &Key) -> Result<()> {
        write_ref_file(&self.ref_path(profile, node), stage, key)
    }

    /// Point `profile/node` at an artifact pipeline.toml does not describe (`--force`): the
    /// ref is dated 1970, so that `make` (which compares times) runs the node again and puts
    /// back what pipeline.toml describes, and so that the report can say so meanwhile.
    pub fn write_forced_ref(&self, profile: &str, node: &str, stage: &str, key: &Key) -> Result<()> {
        self.write_ref(profile, node, stage, key)?;
        let path = self.ref_path(profile, node);
        fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::UNIX_EPOCH)).map_err(|e| anyhow::anyhow!("{}: cannot date the forced ref: {e}", path.display()))
    }

    /// Whether `profile/node` was last written by [`Store::write_forced_ref`].
    pub fn ref_is_forced(&self, profile: &str, node: &str) -> bool {
        fs::metadata(self.ref_path(profile, node)).and_then(|m| m.modified()).is_ok_and(|t| t == std::time::UNIX_EPOCH)
    }

    /// The artifact `profile/node` points to, if the ref exists.
    pub fn read_ref(&self, profile: &str, node: &str) -> Result<Option<RefEntry>> {
        Ok(read_ref_file(&self.ref_path(profile, node))?.map(|r| RefEntry {
            profile: profile.to_string(),
            node: node.to_string(),
            ..r
        }))
    }

    /// Every ref in the store.
    pub fn list_refs(&self) -> Result<Vec<RefEntry>> {
        let mut out = Vec::new();
        let Ok(profiles) = fs::read_dir(self.root().join("refs")) else { return Ok(out) };
        for p in profiles.flatten().filter(|p| p.path().is_dir()) {
            for r in fs::read_dir(p.path())?.flatten() {
                let path = r.path();
                if path.extension().is_some_and(|e| e == "ref") {
                    if let Some(mut e) = read_ref_file(&path)? {
                        e.profile = p.file_name().to_string_lossy().into_owned();
                        e.node = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                        out.push(e);
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.profile, &a.node).cmp(&(&b.profile, &b.node)));
        Ok(out)
    }
}

/// Write a ref file at any path (used for `--ref PATH` outside a profile too).
pub fn write_ref_file(path: &Path, stage: &str, key: &Key) -> Result<()> {
    fsx::write_atomic(path, format!("{stage}/{key}\n").as_bytes())
}

/// Read a ref file; `None` if it does not exist. Profile and node are left empty.
pub fn read_ref_file(path: &Path) -> Result<Option<RefEntry>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).bad_input_ctx(|| format!("{}: cannot read ref", path.display())),
    };
    let line = text.trim();
    let (stage, key) = line
        .split_once('/')
        .ok_or_else(|| bad_input(format!("{}: expected `<stage>/<key>`, found `{line}`", path.display())))?;
    let key = Key::parse(key).bad_input_ctx(|| format!("{}: bad ref", path.display()))?;
    Ok(Some(RefEntry { profile: String::new(), node: String::new(), stage: stage.to_string(), key }))
}
