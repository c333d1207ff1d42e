//! Garbage collection: what no ref reaches can go.
//!
//! An artifact is live if a ref points to it or a live artifact lists it as an input. Also
//! collectable: `.tmp-*` directories whose publishing process is gone (crash leftovers) and
//! working directories and lock files of runs whose artifact is published (finished
//! checkpoints), and artifact directories without a manifest (damaged). Working directories
//! of unpublished keys are kept: they are interrupted runs waiting to resume.

use super::key::Key;
use super::Store;
use crate::fsx;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// What `gc` would remove, with sizes in bytes.
#[derive(Debug, Default)]
pub struct GcPlan {
    pub artifacts: Vec<(String, Key, u64)>,
    pub leftovers: Vec<(PathBuf, u64)>,
}

impl GcPlan {
    pub fn total_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.2).sum::<u64>() + self.leftovers.iter().map(|l| l.1).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty() && self.leftovers.is_empty()
    }
}

/// A lock on the store's `.gc.lock`: every stage holds it shared for its whole run, `gc
/// --delete` exclusively, so a collection never runs while a stage is between finding (or
/// publishing) an artifact and writing the ref that keeps it alive. Released on drop or exit.
pub struct GcLock {
    _file: Option<fs::File>,
}

impl Store {
    /// Hold the store shared for a stage's run. A store that cannot hold the lock file (read
    /// only) cannot be collected either, so the run goes on without it.
    pub fn stage_guard(&self) -> GcLock {
        let file = self.gc_lock_file().ok().or_else(|| fs::File::open(self.root().join(".gc.lock")).ok());
        let file = file.filter(|f| {
            flock(f, libc::LOCK_SH | libc::LOCK_NB) || {
                eprintln!("waiting for `gc --delete` on {} to end", self.root().display());
                flock(f, libc::LOCK_SH)
            }
        });
        GcLock { _file: file }
    }

    /// Hold the store exclusively for a collection, waiting for running stages to end.
    pub fn gc_guard(&self) -> Result<GcLock> {
        let f = self.gc_lock_file()?;
        if !flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            eprintln!("gc: waiting for the stages running on {} to end", self.root().display());
            if !flock(&f, libc::LOCK_EX) {
                return Err(std::io::Error::last_os_error()).context("gc: cannot lock the store");
            }
        }
        Ok(GcLock { _file: Some(f) })
    }

    fn gc_lock_file(&self) -> Result<fs::File> {
        fs::create_dir_all(self.root()).with_context(|| format!("{}: cannot create", self.root().display()))?;
        let path = self.root().join(".gc.lock");
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("{}: cannot open", path.display()))
    }

    /// Work out what is unreachable; removes nothing.
    pub fn gc_plan(&self) -> Result<GcPlan> {
        let mut live = BTreeSet::new();
        let mut todo: Vec<(String, Key)> = self.list_refs()?.into_iter().map(|r| (r.stage, r.key)).collect();
        while let Some((stage, key)) = todo.pop() {
            if !live.insert((stage.clone(), key.clone())) {
                continue;
            }
            let manifest_path = self.artifact_dir(&stage, &key).join("manifest.json");
            // A missing or unreadable manifest stops the walk there; `verify` reports it.
            if let Ok(text) = fs::read_to_string(&manifest_path) {
                if let Ok(m) = serde_json::from_str::<super::Manifest>(&text) {
                    todo.extend(m.inputs.into_values().map(|i| (i.stage, i.key)));
                }
            }
        }
        let mut plan = GcPlan::default();
        for (stage, key) in self.list()? {
            if !live.contains(&(stage.clone(), key.clone())) {
                let size = fsx::tree_size(&self.artifact_dir(&stage, &key));
                plan.artifacts.push((stage, key, size));
            }
        }
        for dir in self.stale_temporaries()? {
            let size = fsx::tree_size(&dir);
            plan.leftovers.push((dir, size));
        }
        for dir in self.finished_work_dirs()? {
            let size = fsx::tree_size(&dir);
            plan.leftovers.push((dir, size));
        }
        for (stage, key) in self.list_damaged()? {
            let dir = self.artifact_dir(&stage, &key);
            let size = fsx::tree_size(&dir);
            plan.leftovers.push((dir, size));
        }
        for lock in self.finished_locks()? {
            plan.leftovers.push((lock, 0));
        }
        Ok(plan)
    }

    /// Remove what the plan lists.
    pub fn gc_execute(&self, plan: &GcPlan) -> Result<()> {
        for (stage, key, _) in &plan.artifacts {
            let dir = self.artifact_dir(stage, key);
            fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
            super::verified::forget(self, stage, key);
        }
        for (path, _) in &plan.leftovers {
            let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
            removed.with_context(|| format!("{}: cannot remove", path.display()))?;
        }
        Ok(())
    }

    /// `.tmp-*` staging directories whose writer process no longer runs.
    fn stale_temporaries(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root()) else { return Ok(out) };
        for s in stages.flatten().filter(|s| s.path().is_dir()) {
            for t in fs::read_dir(s.path())?.flatten() {
                let name = t.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(".tmp-") {
                    // `.tmp-<short key>-<pid>-<nanos>`
                    let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                    if pid.is_none_or(|p| !fsx::process_alive(p)) {
                        out.push(t.path());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// `.work/<stage>/<key>.lock` files of published keys. Only those: a process that opened
    /// the lock of an unpublished key and is about to take it would, after a removal, hold a
    /// lock on a file nobody else sees; for a published key it finds the artifact and stops.
    fn finished_locks(&self) -> Result<Vec<PathBuf>> {
        self.finished_work_entries(|name| name.strip_suffix(".lock"))
    }

    /// `.work/<stage>/<key>` directories whose artifact has been published.
    fn finished_work_dirs(&self) -> Result<Vec<PathBuf>> {
        self.finished_work_entries(|name: &str| Some(name))
    }

    /// Entries of `.work/<stage>/` whose name, through `key_of`, is the key of a published
    /// artifact of that stage; sorted.
    fn finished_work_entries(&self, key_of: impl for<'n> Fn(&'n str) -> Option<&'n str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root().join(".work")) else { return Ok(out) };
        for s in stages.flatten().filter(|s| s.path().is_dir()) {
            let stage = s.file_name().to_string_lossy().into_owned();
            for w in fs::read_dir(s.path())?.flatten() {
                let name = w.file_name().to_string_lossy().into_owned();
                if key_of(&name).and_then(|k| Key::parse(k).ok()).is_some_and(|key| self.contains(&stage, &key)) {
                    out.push(w.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn flock(f: &fs::File, op: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}
