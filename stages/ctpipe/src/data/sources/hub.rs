//! Image datasets from the Hugging Face Hub, stored as Parquet (`uoft-cs/cifar10`, …).
//!
//! Online: ask the Hub for the revision's commit and file list, download the Parquet files into
//! the local cache (`HF_HOME`, `HF_ENDPOINT` honoured by hf-hub). Offline (`offline = true` or
//! `HF_HUB_OFFLINE=1`): read the same cache layout and make no network call — the path every
//! machine of ours takes, since none reaches the Hub. Either way the commit hash is the
//! fingerprint that enters the artifact key.

use crate::error::{bad_input, usage, TagContext};
use anyhow::Result;
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// The Parquet files of one revision of a dataset repo, in the local cache.
#[derive(Debug, Clone)]
pub struct HubSnapshot {
    pub repo_id: String,
    pub commit: String,
    /// (path in the repo, local path), sorted by repo path.
    pub files: Vec<(String, PathBuf)>,
}

/// Whether the environment asks for offline mode (`HF_HUB_OFFLINE=1`, as huggingface_hub).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

/// Locate (offline) or download (online) the Parquet files of `repo_id` at `revision`.
pub fn snapshot(repo_id: &str, revision: &str, offline: bool) -> Result<HubSnapshot> {
    if !repo_id.contains('/') || repo_id.starts_with('/') || repo_id.ends_with('/') {
        return Err(usage(format!("source hub:{repo_id}: expected hub:<owner>/<name>")));
    }
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Dataset, revision.to_string());
    if offline {
        cached_snapshot(&Cache::from_env(), repo_id, &repo, revision)
    } else {
        download_snapshot(repo_id, repo)
    }
}

fn cached_snapshot(cache: &Cache, repo_id: &str, repo: &Repo, revision: &str) -> Result<HubSnapshot> {
    let repo_dir = cache.path().join(repo.folder_name());
    let commit = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        std::fs::read_to_string(&ref_path)
            .bad_input_ctx(|| {
                format!(
                    "hub:{repo_id} is not in the local cache (offline mode; looked for {})",
                    ref_path.display()
                )
            })?
            .trim()
            .to_string()
    };
    let snap = repo_dir.join("snapshots").join(&commit);
    let mut files = Vec::new();
    collect_parquet(&snap, &snap, &mut files)?;
    if files.is_empty() {
        return Err(bad_input(format!("{}: no .parquet files in the cached snapshot of hub:{repo_id}", snap.display())));
    }
    files.sort();
    Ok(HubSnapshot { repo_id: repo_id.to_string(), commit, files })
}

fn collect_parquet(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).bad_input_ctx(|| format!("{}: cannot list", dir.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            collect_parquet(root, &path, out)?;
        } else if path.extension().is_some_and(|x| x == "parquet") {
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

fn download_snapshot(repo_id: &str, repo: Repo) -> Result<HubSnapshot> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| bad_input(format!("hub:{repo_id}: cannot set up the Hub client: {e}")))?;
    let api_repo = api.repo(repo);
    let info = api_repo.info().map_err(|e| {
        bad_input(format!("hub:{repo_id}: cannot reach the Hub ({e}); use offline = true with a filled HF_HOME cache"))
    })?;
    let mut names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).filter(|n| n.ends_with(".parquet")).collect();
    names.sort();
    if names.is_empty() {
        return Err(bad_input(format!("hub:{repo_id}@{}: the repo has no .parquet files", info.sha)));
    }
    let mut files = Vec::new();
    for name in names {
        let local = api_repo.get(&name).map_err(|e| bad_input(format!("hub:{repo_id}: downloading {name} failed: {e}")))?;
        files.push((name, local));
    }
    Ok(HubSnapshot { repo_id: repo_id.to_string(), commit: info.sha, files })
}

/// Which split a repo file belongs to, by the Hub's naming (`<config>/train-00000-of-00001.parquet`,
/// `<config>/test/0000.parquet`, `data/train-*.parquet`).
pub fn split_of(repo_path: &str) -> Option<&'static str> {
    for part in repo_path.split('/').rev() {
        let stem = part.strip_suffix(".parquet").unwrap_or(part);
        for split in ["train", "test"] {
            if stem == split || stem.starts_with(&format!("{split}-")) || stem.starts_with(&format!("{split}_")) {
                return Some(split);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_follow_hub_conventions() {
        assert_eq!(split_of("plain_text/train-00000-of-00001.parquet"), Some("train"));
        assert_eq!(split_of("mnist/test-00000-of-00001.parquet"), Some("test"));
        assert_eq!(split_of("plain_text/test/0000.parquet"), Some("test"));
        assert_eq!(split_of("data/validation-00000.parquet"), None);
        assert_eq!(split_of("data/trainer.parquet"), None);
    }
}
