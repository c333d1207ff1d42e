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

/// The local Hub cache where huggingface_hub puts it: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (hf-hub 0.5 itself reads only `HF_HOME`).
pub fn cache_from_env() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

/// A Hub client on that cache (`HF_ENDPOINT` and the cache's token honoured).
pub fn api() -> Result<hf_hub::api::sync::Api> {
    hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache_from_env().path().clone())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| bad_input(format!("cannot set up the Hub client: {e}")))
}

/// Whether the environment asks for offline mode (`HF_HUB_OFFLINE=1`, as huggingface_hub).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

/// Locate (offline) or download (online) the Parquet files of `id` at `revision`: the whole
/// repo (`<owner>/<name>`), or one config of it (`<owner>/<name>/<config>`: the files under the
/// folder `<config>/`, as the Hub lays out datasets with several configs).
pub fn snapshot(id: &str, revision: &str, offline: bool) -> Result<HubSnapshot> {
    let parts: Vec<&str> = id.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(usage(format!("source hub:{id}: expected hub:<owner>/<name> or hub:<owner>/<name>/<config>")));
    }
    let repo_id = format!("{}/{}", parts[0], parts[1]);
    let repo = Repo::with_revision(repo_id.clone(), RepoType::Dataset, revision.to_string());
    let mut snap = if offline { cached_snapshot(&cache_from_env(), &repo_id, &repo, revision)? } else { download_snapshot(&repo_id, repo, parts.get(2).copied())? };
    match parts.get(2) {
        Some(config) => {
            snap.files.retain(|(rel, _)| rel.split('/').next() == Some(*config));
            if snap.files.is_empty() {
                return Err(bad_input(format!("hub:{repo_id}@{}: no .parquet files under config folder `{config}/`", snap.commit)));
            }
        }
        None => {
            let configs = config_folders(&snap.files);
            if configs.len() > 1 {
                return Err(usage(format!(
                    "hub:{repo_id} holds several configs ({}): choose one with source = \"hub:{repo_id}/<config>\"",
                    configs.join(", ")
                )));
            }
        }
    }
    Ok(snap)
}

/// Top-level folders holding split files: one per config in a multi-config repo. `data/` and
/// files at the root are the single default config.
fn config_folders(files: &[(String, PathBuf)]) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .filter(|(rel, _)| split_of(rel).is_some())
        .filter_map(|(rel, _)| rel.split_once('/').map(|(top, _)| top.to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
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

fn download_snapshot(repo_id: &str, repo: Repo, config: Option<&str>) -> Result<HubSnapshot> {
    let api_repo = api().map_err(|e| e.context(format!("hub:{repo_id}")))?.repo(repo);
    let info = api_repo.info().map_err(|e| {
        bad_input(format!("hub:{repo_id}: cannot reach the Hub ({e}); use offline = true with a filled HF_HOME cache"))
    })?;
    let mut names: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|n| n.ends_with(".parquet") && config.is_none_or(|c| n.split('/').next() == Some(c)))
        .collect();
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
/// `<config>/test/0000.parquet`, `data/train-*.parquet`): train, test or validation.
pub fn split_of(repo_path: &str) -> Option<&'static str> {
    for part in repo_path.split('/').rev() {
        let stem = part.strip_suffix(".parquet").unwrap_or(part);
        for (split, names) in [("train", &["train"][..]), ("test", &["test"][..]), ("validation", &["validation", "valid", "val"][..])] {
            for name in names {
                if stem == *name || stem.starts_with(&format!("{name}-")) || stem.starts_with(&format!("{name}_")) {
                    return Some(split);
                }
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
        assert_eq!(split_of("data/validation-00000.parquet"), Some("validation"));
        assert_eq!(split_of("default/val/0000.parquet"), Some("validation"));
        assert_eq!(split_of("data/trainer.parquet"), None);
        assert_eq!(split_of("data/extra-00000.parquet"), None);
    }

    #[test]
    fn configs_are_the_top_folders_of_split_files() {
        let f = |names: &[&str]| names.iter().map(|n| (n.to_string(), PathBuf::from(n))).collect::<Vec<_>>();
        assert_eq!(config_folders(&f(&["plain_text/train-00000-of-00001.parquet", "plain_text/test-00000-of-00001.parquet"])), ["plain_text"]);
        assert_eq!(config_folders(&f(&["train.parquet", "test.parquet"])), Vec::<String>::new());
        assert_eq!(config_folders(&f(&["cifar10/train/0000.parquet", "cifar100/train/0000.parquet", "README/x.parquet"])), ["cifar10", "cifar100"]);
    }
}
