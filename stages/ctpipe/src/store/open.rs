//! Opening published artifacts: read the manifest, check the files, optionally re-hash them.

use super::key::Key;
use super::manifest::{Manifest, MANIFEST_FORMAT};
use super::publish::hash_file;
use super::Store;
use crate::error::{bad_input, TagContext};
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// How much to check when opening an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Manifest valid, every file present with the recorded size (cheap; the default).
    Sizes,
    /// As `Sizes`, and every file's blake3 recomputed (`--verify`).
    Hashes,
}

/// A published artifact, opened and checked.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Artifact {
    pub fn key(&self) -> &Key {
        &self.manifest.key
    }

    pub fn stage(&self) -> &str {
        &self.manifest.stage
    }

    /// Path of one of the artifact's files (which must be listed in its manifest).
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        if !self.manifest.files.iter().any(|f| f.path == rel) {
            return Err(bad_input(format!(
                "{}: artifact {}/{} has no file `{rel}`",
                self.dir.display(),
                self.stage(),
                self.key().short()
            )));
        }
        Ok(self.dir.join(rel))
    }

    /// Whether the manifest lists this file.
    pub fn has_file(&self, rel: &str) -> bool {
        self.manifest.files.iter().any(|f| f.path == rel)
    }
}

impl Store {
    /// Open `stage/key`, checking it as `verify` says. Every failure is a bad-input error that
    /// names the file at fault.
    pub fn open(&self, stage: &str, key: &Key, verify: Verify) -> Result<Artifact> {
        let dir = self.artifact_dir(stage, key);
        if !dir.is_dir() {
            return Err(bad_input(format!("{}: no such artifact ({stage}/{key})", dir.display())));
        }
        let manifest = read_manifest(&dir)?;
        if manifest.key != *key || manifest.stage != stage {
            return Err(bad_input(format!(
                "{}: manifest names {}/{} but the directory is {stage}/{key}",
                dir.join("manifest.json").display(),
                manifest.stage,
                manifest.key
            )));
        }
        let art = Artifact { dir, manifest };
        check_files(&art, verify)?;
        Ok(art)
    }

    /// Every published artifact, as `(stage, key)`, sorted. Temporary directories are skipped.
    pub fn list(&self) -> Result<Vec<(String, Key)>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root()) else { return Ok(out) };
        for s in stages.flatten() {
            let stage = s.file_name().to_string_lossy().into_owned();
            if super::check_stage_name(&stage).is_err() || !s.path().is_dir() {
                continue;
            }
            for a in fs::read_dir(s.path())?.flatten() {
                if let Ok(key) = Key::parse(&a.file_name().to_string_lossy()) {
                    if self.contains(&stage, &key) {
                        out.push((stage.clone(), key));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolve what a user typed: `KEY`, a unique key prefix, `stage/KEY`, `stage/PREFIX`, or
    /// the path of a ref file.
    pub fn resolve(&self, spec: &str) -> Result<(String, Key)> {
        let path = Path::new(spec);
        if spec.ends_with(".ref") || (path.is_file() && path.extension().is_some_and(|e| e == "ref")) {
            return super::refs::read_ref_file(path)?
                .map(|e| (e.stage, e.key))
                .ok_or_else(|| bad_input(format!("{spec}: no such ref")));
        }
        let (stage, prefix) = match spec.split_once('/') {
            Some((s, p)) => (Some(s), p),
            None => (None, spec),
        };
        if prefix.len() < 4 {
            return Err(bad_input(format!("`{spec}`: give at least 4 digits of the key")));
        }
        let hits: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|(s, k)| stage.is_none_or(|st| st == s) && k.as_str().starts_with(prefix))
            .collect();
        match hits.len() {
            1 => Ok(hits.into_iter().next().expect("one hit")),
            0 => Err(bad_input(format!("`{spec}`: no artifact in {} matches", self.root().display()))),
            n => Err(bad_input(format!("`{spec}`: ambiguous, {n} artifacts match; give more digits"))),
        }
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).bad_input_ctx(|| format!("{}: cannot read manifest", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).bad_input_ctx(|| format!("{}: invalid manifest", path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        bail!(bad_input(format!(
            "{}: manifest format {} (this ctpipe reads format {MANIFEST_FORMAT})",
            path.display(),
            manifest.format
        )));
    }
    Ok(manifest)
}

fn check_files(art: &Artifact, verify: Verify) -> Result<()> {
    for f in &art.manifest.files {
        let path = art.dir.join(&f.path);
        let meta = fs::metadata(&path).bad_input_ctx(|| format!("{}: listed in the manifest but missing", path.display()))?;
        if meta.len() != f.size {
            return Err(bad_input(format!(
                "{}: size {} but the manifest records {} (corrupt or truncated)",
                path.display(),
                meta.len(),
                f.size
            )));
        }
        if verify == Verify::Hashes {
            let (_, hash) = hash_file(&path)?;
            if hash != f.blake3 {
                return Err(bad_input(format!(
                    "{}: blake3 {} but the manifest records {} (corrupt)",
                    path.display(),
                    &hash[..16],
                    &f.blake3[..f.blake3.len().min(16)]
                )));
            }
        }
    }
    Ok(())
}
