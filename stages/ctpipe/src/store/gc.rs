//! Garbage collection: what no ref reaches can go.
//!
//! An artifact is live if a ref points to it or a live artifact lists it as an input. Also
//! collectable: `.tmp-*` directories whose publishing process is gone (crash leftovers) and
//! working directories of runs whose artifact is published (finished checkpoints). Working
//! directories of unpublished keys are kept: they are interrupted runs waiting to resume.

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

impl Store {
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
        Ok(plan)
    }

    /// Remove what the plan lists.
    pub fn gc_execute(&self, plan: &GcPlan) -> Result<()> {
        for (stage, key, _) in &plan.artifacts {
            let dir = self.artifact_dir(stage, key);
            fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
        }
        for (dir, _) in &plan.leftovers {
            fs::remove_dir_all(dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
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

    /// `.work/<stage>/<key>` directories whose artifact has been published.
    fn finished_work_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root().join(".work")) else { return Ok(out) };
        for s in stages.flatten().filter(|s| s.path().is_dir()) {
            let stage = s.file_name().to_string_lossy().into_owned();
            for w in fs::read_dir(s.path())?.flatten() {
                if let Ok(key) = Key::parse(&w.file_name().to_string_lossy()) {
                    if self.contains(&stage, &key) {
                        out.push(w.path());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
