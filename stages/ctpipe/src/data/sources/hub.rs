//! Image datasets from the Hugging Face Hub, stored as Parquet (`uoft-cs/cifar10`, …).
//!
//! Online: ask the Hub for the revision's commit and file list, download the Parquet files into
//! the local cache (`HF_HUB_CACHE` or `$HF_HOME/hub`; `HF_ENDPOINT` honoured). Offline
//! (`HF_HUB_OFFLINE=1`): read the same cache layout and make no network call — the path every
//! machine of ours takes, since none reaches the Hub. Either way the commit hash is the
//! fingerprint that enters the artifact key.
//!
//! A repo with several configs keeps each in its own top folder (`cifar10/`, `cifar100/`);
//! `hub:<owner>/<name>/<config>` picks one, and without it such a repo is refused before any
//! download. The split of a file comes from its name and the folders below the config.

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

/// A dataset source id: `<owner>/<name>` or `<owner>/<name>/<config>`.
#[derive(Debug, Clone, PartialEq)]
pub struct HubId {
    pub repo_id: String,
    pub config: Option<String>,
}

impl HubId {
    pub fn parse(id: &str) -> Result<HubId> {
        let parts: Vec<&str> = id.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(usage(format!("source hub:{id}: expected hub:<owner>/<name> or hub:<owner>/<name>/<config>")));
        }
        Ok(HubId { repo_id: format!("{}/{}", parts[0], parts[1]), config: parts.get(2).map(|c| c.to_string()) })
    }
}

/// Locate (offline) or download (online) the Parquet files of `id` at `revision`.
pub fn snapshot(id: &str, revision: &str, offline: bool) -> Result<HubSnapshot> {
    let id = HubId::parse(id)?;
    if offline {
        let (commit, dir) = cached_revision(&id.repo_id, RepoType::Dataset, revision)?;
        let files = select(&id, &commit, list_parquet(&dir)?)?;
        return Ok(HubSnapshot { repo_id: id.repo_id, commit, files });
    }
    let repo = Repo::with_revision(id.repo_id.clone(), RepoType::Dataset, revision.to_string());
    let api_repo = api().map_err(|e| e.context(format!("hub:{}", id.repo_id)))?.repo(repo);
    let info = api_repo.info().map_err(|e| {
        bad_input(format!("hub:{}: cannot reach the Hub ({e}); set HF_HUB_OFFLINE=1 with a filled HF_HUB_CACHE (or HF_HOME) cache", id.repo_id))
    })?;
    let listed = info.siblings.into_iter().map(|s| s.rfilename).filter(|n| n.ends_with(".parquet")).map(|n| (n, ()));
    // Choose the files before downloading any: a multi-config repo is refused without a byte.
    let names = select(&id, &info.sha, listed.collect())?;
    let mut files = Vec::new();
    for (name, ()) in names {
        let local = api_repo.get(&name).map_err(|e| bad_input(format!("hub:{}: downloading {name} failed: {e}", id.repo_id)))?;
        files.push((name, local));
    }
    Ok(HubSnapshot { repo_id: id.repo_id, commit: info.sha, files })
}

/// The files of the chosen config (or of the repo's only one), sorted by repo path.
fn select<T>(id: &HubId, commit: &str, mut files: Vec<(String, T)>) -> Result<Vec<(String, T)>> {
    let repo_id = &id.repo_id;
    match &id.config {
        Some(config) => {
            files.retain(|(rel, _)| rel.split('/').next() == Some(config.as_str()));
            if files.is_empty() {
                return Err(bad_input(format!("hub:{repo_id}@{commit}: no .parquet files under config folder `{config}/`")));
            }
        }
        None => {
            if files.is_empty() {
                return Err(bad_input(format!("hub:{repo_id}@{commit}: the repo has no .parquet files")));
            }
            let configs = config_folders(files.iter().map(|(rel, _)| rel.as_str()));
            if configs.len() > 1 {
                return Err(usage(format!(
                    "hub:{repo_id} holds several configs ({}): choose one with source = \"hub:{repo_id}/<config>\"",
                    configs.join(", ")
                )));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The commit a revision (branch, tag or commit hash) of a repo names in the local cache, and
/// its snapshot folder; no network call.
pub fn cached_revision(repo_id: &str, kind: RepoType, revision: &str) -> Result<(String, PathBuf)> {
    let repo = Repo::with_revision(repo_id.to_string(), kind, revision.to_string());
    let repo_dir = cache_from_env().path().join(repo.folder_name());
    let commit = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        std::fs::read_to_string(&ref_path)
            .bad_input_ctx(|| format!("hub:{repo_id} is not in the local cache (offline mode; looked for {})", ref_path.display()))?
            .trim()
            .to_string()
    };
    let dir = repo_dir.join("snapshots").join(&commit);
    Ok((commit, dir))
}

/// Every `.parquet` file under `root`, as (path relative to `root` with `/`, path).
pub fn list_parquet(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).bad_input_ctx(|| format!("{}: cannot list", dir.display()))?.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let rel = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The split names a whole path component may be, and the prefixes a file name may start with.
const SPLITS: [(&str, &[&str]); 3] = [("train", &["train"]), ("test", &["test"]), ("validation", &["validation", "valid", "val"])];

fn split_named(part: &str, exact: bool) -> Option<&'static str> {
    let stem = part.strip_suffix(".parquet").unwrap_or(part);
    SPLITS.iter().find_map(|(split, names)| {
        names.iter().any(|n| stem == *n || (!exact && (stem.starts_with(&format!("{n}-")) || stem.starts_with(&format!("{n}_"))))).then_some(*split)
    })
}

/// Which split a repo file belongs to, by the Hub's naming: its file name
/// (`train-00000-of-00001.parquet`, `test_0.parquet`) or a folder below the config
/// (`<config>/test/0000.parquet`); a top folder counts only when it is exactly a split's name
/// (`train/0000.parquet`), since elsewhere it is a config (`val2017/…` is not a split).
pub fn split_of(repo_path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = repo_path.split('/').collect();
    let (top, below) = parts.split_first()?;
    below.iter().rev().find_map(|p| split_named(p, false)).or_else(|| split_named(top, !below.is_empty()))
}

/// Top folders that hold split files: one per config in a multi-config repo. `data/`, files at
/// the root and split folders at the top are the single default config.
fn config_folders<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = paths
        .filter(|rel| split_of(rel).is_some())
        .filter_map(|rel| rel.split_once('/').map(|(top, _)| top))
        .filter(|top| split_named(top, true).is_none())
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
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
        assert_eq!(split_of("train/0000.parquet"), Some("train"));
        assert_eq!(split_of("train.parquet"), Some("train"));
        assert_eq!(split_of("test_0.parquet"), Some("test"));
        assert_eq!(split_of("data/trainer.parquet"), None);
        assert_eq!(split_of("data/extra-00000.parquet"), None);
        // A config named like a split names no split: its files' own names do.
        assert_eq!(split_of("test_v2/0000.parquet"), None);
        assert_eq!(split_of("test_v2/train-00000.parquet"), Some("train"));
        assert_eq!(split_of("val2017/test/0000.parquet"), Some("test"));
    }

    #[test]
    fn configs_are_the_top_folders_of_split_files() {
        let c = |names: &[&str]| config_folders(names.iter().copied());
        assert_eq!(c(&["plain_text/train-00000-of-00001.parquet", "plain_text/test-00000-of-00001.parquet"]), ["plain_text"]);
        assert_eq!(c(&["train.parquet", "test.parquet"]), Vec::<String>::new());
        assert_eq!(c(&["train/0000.parquet", "test/0000.parquet"]), Vec::<String>::new(), "split folders at the top are no configs");
        assert_eq!(c(&["cifar10/train/0000.parquet", "cifar100/train/0000.parquet", "README/x.parquet"]), ["cifar10", "cifar100"]);
    }

    #[test]
    fn ids_name_a_repo_and_maybe_a_config() {
        assert_eq!(HubId::parse("uoft-cs/cifar10").unwrap(), HubId { repo_id: "uoft-cs/cifar10".into(), config: None });
        assert_eq!(HubId::parse("a/b/c").unwrap().config.as_deref(), Some("c"));
        for bad in ["cifar10", "a/", "/b", "a/b/c/d", "a//c"] {
            let e = crate::error::one_line(&HubId::parse(bad).unwrap_err());
            assert!(e.contains("expected hub:<owner>/<name>"), "{bad}: {e}");
        }
    }
}
