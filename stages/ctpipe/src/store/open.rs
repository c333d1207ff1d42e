//! Opening published artifacts: read the manifest, check the files, optionally re-hash them.

use super::key::Key;
use super::manifest::{Manifest, MANIFEST_FORMAT};
use super::publish::hash_file;
use super::verified;
use super::Store;
use crate::error::{bad_input, TagContext};
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// How much to check when opening an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Manifest valid, every file present with the recorded size (listings, gc).
    Sizes,
    /// As `Sizes`, and every file's content: hashed unless it is unchanged since it was last
    /// verified (`verified.rs`). What every stage does with its inputs and cache hits.
    Content,
    /// As `Sizes`, and every file's blake3 recomputed (`--verify`, `artifacts verify`).
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
        // The manifest must be the one its key was computed from (an edited config, input or
        // version would otherwise pass for this artifact).
        let inputs = manifest.inputs.iter().map(|(role, i)| (role.clone(), i.key.clone())).collect();
        let recomputed = super::artifact_key(&manifest.stage, manifest.version, &manifest.config, &inputs, &manifest.external)?;
        if recomputed != *key {
            return Err(bad_input(format!(
                "{}: its stage, version, config and inputs hash to {}, not to its key (the manifest was altered)",
                dir.join("manifest.json").display(),
                recomputed.short()
            )));
        }
        let art = Artifact { dir, manifest };
        self.check_files(&art, verify)?;
        Ok(art)
    }

    /// Every published artifact, as `(stage, key)`, sorted. Temporary directories are skipped.
    pub fn list(&self) -> Result<Vec<(String, Key)>> {
        Ok(self.key_entries()?.into_iter().filter(|(stage, key, _)| self.contains(stage, key)).map(|(s, k, _)| (s, k)).collect())
    }

    /// Directories named like artifacts that have no `manifest.json` (deleted by hand, or
    /// damaged): never a publish in progress, which happens under `.tmp-*` and appears whole.
    /// `verify` reports them, `gc` removes them, and a rerun of their producer replaces them.
    pub fn list_damaged(&self) -> Result<Vec<(String, Key)>> {
        Ok(self.key_entries()?.into_iter().filter(|(stage, key, path)| path.is_dir() && !self.contains(stage, key)).map(|(s, k, _)| (s, k)).collect())
    }

    /// Every entry `<stage>/<key>` under the root named like an artifact, sorted.
    fn key_entries(&self) -> Result<Vec<(String, Key, PathBuf)>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root()) else { return Ok(out) };
        for s in stages.flatten() {
            let stage = s.file_name().to_string_lossy().into_owned();
            if super::check_stage_name(&stage).is_err() || !s.path().is_dir() {
                continue;
            }
            for a in fs::read_dir(s.path())?.flatten() {
                if let Ok(key) = Key::parse(&a.file_name().to_string_lossy()) {
                    out.push((stage.clone(), key, a.path()));
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
            0 => {
                let damaged = self.list_damaged()?.into_iter().find(|(s, k)| stage.is_none_or(|st| st == s) && k.as_str().starts_with(prefix));
                match damaged {
                    Some((s, k)) => Err(bad_input(format!(
                        "{}: no manifest.json (a damaged artifact: rerun the stage that made it, or remove it with `artifacts gc --delete`)",
                        self.artifact_dir(&s, &k).display()
                    ))),
                    None => Err(bad_input(format!("`{spec}`: no artifact in {} matches", self.root().display()))),
                }
            }
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

impl Store {
    fn check_files(&self, art: &Artifact, verify: Verify) -> Result<()> {
        let mut record = match verify {
            Verify::Sizes => verified::Record::new(),
            _ => verified::load(self, art.stage(), art.key()),
        };
        let mut learned = false;
        // The manifest is not listed in itself: the record keeps its hash (from the publish,
        // or from the first read here), so an edit to its metrics or its file list is found.
        if verify != Verify::Sizes {
            let path = art.dir.join("manifest.json");
            let meta = fs::metadata(&path).bad_input_ctx(|| format!("{}: cannot read", path.display()))?;
            let known = record.get("manifest.json").map(|v| v.blake3.clone());
            let unchanged = verify == Verify::Content && known.as_ref().is_some_and(|h| verified::still_verified(&record, "manifest.json", h, &meta));
            if !unchanged {
                let (_, hash) = hash_file(&path)?;
                if known.as_ref().is_some_and(|h| *h != hash) {
                    return Err(bad_input(format!("{}: changed since the artifact was published (blake3 {})", path.display(), &hash[..16])));
                }
                verified::stamp(&mut record, "manifest.json", &hash, &meta);
                learned = true;
            }
        }
        for f in &art.manifest.files {
            let path = art.dir.join(&f.path);
            let meta = check_file_size(&path, f)?;
            let rehash = match verify {
                Verify::Sizes => false,
                Verify::Content => !verified::still_verified(&record, &f.path, &f.blake3, &meta),
                Verify::Hashes => true,
            };

            if rehash {
                check_file_hash(&path, f)?;
                verified::stamp(&mut record, &f.path, &f.blake3, &meta);
                learned = true;
            }
        }
        if learned {
            verified::save(self, art.stage(), art.key(), &record);
        }
        Ok(())
    }
}

fn check_file_size(path: &Path, f: &super::FileRecord) -> Result<fs::Metadata> {
    let meta = fs::metadata(path).bad_input_ctx(|| format!("{}: listed in the manifest but missing", path.display()))?;
    if meta.len() != f.size {
        return Err(bad_input(format!("{}: size {} but the manifest records {} (corrupt or truncated)", path.display(), meta.len(), f.size)));
    }
    Ok(meta)
}

fn check_file_hash(path: &Path, f: &super::FileRecord) -> Result<()> {
    let (_, hash) = hash_file(path)?;
    if hash != f.blake3 {
        return Err(bad_input(format!(
            "{}: blake3 {} but the manifest records {} (corrupt)",
            path.display(),
            &hash[..16],
            &f.blake3[..f.blake3.len().min(16)]
        )));
    }
    Ok(())
}

