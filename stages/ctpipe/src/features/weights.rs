//! Where pretrained weights come from (the FID encoder, an imported distillation teacher): a
//! local safetensors file or a file of a Hub model repo (through hf-hub's cache), always
//! checked against an expected sha256 — features or targets from the wrong weights would give
//! plausible-looking but incomparable numbers.

use crate::error::{bad_input, usage, TagContext};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How to obtain the FID Inception weights (docs/fid.md explains the conversion).
pub const HOW_TO_GET: &str = "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with tests/parity/convert_fid_inception.py (see docs/fid.md) and set inception_weights = <file> (or inception_repo + inception_file) and inception_sha256";

/// What a weights file is for, for error messages: its config fields are `<field>_weights`,
/// `<field>_repo`, `<field>_file`, `<field>_sha256`.
#[derive(Debug, Clone, Copy)]
pub struct WeightsRole {
    pub what: &'static str,
    pub field: &'static str,
    pub how_to_get: &'static str,
}

/// The FID Inception-v3 weights.
pub const INCEPTION: WeightsRole = WeightsRole { what: "inception weights", field: "inception", how_to_get: HOW_TO_GET };

/// A weights file: a path, or (repo, file, revision) on the Hub; with its expected sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsSource {
    pub path: Option<PathBuf>,
    pub repo: Option<String>,
    pub file: Option<String>,
    pub revision: String,
    pub sha256: String,
}

impl WeightsSource {
    /// An import a config may name with its `<field>_weights`, `_repo`, `_file`, `_revision`
    /// and `_sha256` fields (distill's teacher, train-ct's init): None when it names neither a
    /// file nor a repo, and then a sha256 or a file alone is refused; else checked complete.
    pub fn optional(role: &WeightsRole, path: Option<&PathBuf>, repo: Option<&String>, file: Option<&String>, revision: &str, sha256: Option<&String>) -> Result<Option<WeightsSource>> {
        let f = role.field;
        if path.is_none() && repo.is_none() {
            if sha256.is_some() || file.is_some() {
                return Err(usage(format!("fields `{f}_sha256`/`{f}_file` need {f}_weights or {f}_repo")));
            }
            return Ok(None);
        }
        let source = WeightsSource { path: path.cloned(), repo: repo.cloned(), file: file.cloned(), revision: revision.to_string(), sha256: sha256.cloned().unwrap_or_default() };
        source.check(role)?;
        Ok(Some(source))
    }

    /// Check the description is complete (before any work).
    pub fn check(&self, role: &WeightsRole) -> Result<()> {
        let WeightsRole { what, field, how_to_get } = role;
        match (&self.path, &self.repo) {
            (None, None) => return Err(usage(format!("{what} needed: {how_to_get}"))),
            (Some(_), Some(_)) => return Err(usage(format!("set either {field}_weights or {field}_repo, not both"))),
            (None, Some(_)) if self.file.is_none() => return Err(usage(format!("field `{field}_file`: required with {field}_repo"))),
            _ => {}
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(usage(format!("field `{field}_sha256`: expected 64 hex digits, got `{}` ({how_to_get})", self.sha256)));
        }
        Ok(())
    }

    /// Before any work (`plan check`): the description is complete and the file is there — a
    /// local file, or offline a file of the Hub cache (online it is downloaded when the node
    /// runs). Its sha256 is checked when it is used.
    pub fn check_present(&self, role: &WeightsRole) -> Result<()> {
        self.check(role)?;
        match (&self.path, &self.repo, &self.file) {
            (Some(p), _, _) if !p.is_file() => Err(bad_input(format!("{}: {} not found ({})", p.display(), role.what, role.how_to_get))),
            (None, Some(repo), Some(file)) if crate::data::sources::hub::offline_from_env() => cached_hub_file(repo, file, &self.revision).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The local, verified file.
    pub fn resolve(&self, role: &WeightsRole) -> Result<PathBuf> {
        self.check_present(role)?;
        let path = match (&self.path, &self.repo, &self.file) {
            (Some(p), _, _) => p.clone(),
            (None, Some(repo), Some(file)) => hub_file(repo, file, &self.revision)?,
            _ => unreachable!("checked above"),
        };
        let got = sha256_file(&path)?;
        if !got.eq_ignore_ascii_case(&self.sha256) {
            return Err(bad_input(format!("{}: sha256 {got}, expected {} (wrong or corrupted {})", path.display(), self.sha256, role.what)));
        }
        Ok(path)
    }
}

/// A model-repo file from the local Hub cache (offline) or downloaded into it.
fn hub_file(repo_id: &str, file: &str, revision: &str) -> Result<PathBuf> {
    if crate::data::sources::hub::offline_from_env() {
        return cached_hub_file(repo_id, file, revision);
    }
    let repo = hf_hub::Repo::with_revision(repo_id.to_string(), hf_hub::RepoType::Model, revision.to_string());
    let api = crate::data::sources::hub::api().map_err(|e| e.context(format!("hub:{repo_id}")))?;
    api.repo(repo).get(file).map_err(|e| bad_input(format!("hub:{repo_id}: downloading {file} failed: {e}")))
}

/// A model-repo file from the local Hub cache (a branch, tag or commit), without any network
/// call.
fn cached_hub_file(repo_id: &str, file: &str, revision: &str) -> Result<PathBuf> {
    let (_, snapshot) = crate::data::sources::hub::cached_revision(repo_id, hf_hub::RepoType::Model, revision)?;
    let path = snapshot.join(file);
    if !path.is_file() {
        return Err(bad_input(format!("hub:{repo_id}/{file} is not in the local cache (offline mode; looked for {})", path.display())));
    }
    Ok(path)
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).bad_input_ctx(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: Option<PathBuf>, sha: &str) -> WeightsSource {
        WeightsSource { path, repo: None, file: None, revision: "main".into(), sha256: sha.into() }
    }

    #[test]
    fn sha256_is_checked_and_errors_name_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, b"abc").unwrap();
        // sha256("abc"), computed independently (FIPS 180-2 example).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(src(Some(p.clone()), abc).resolve(&INCEPTION).unwrap(), p);
        let wrong = src(Some(p), &"0".repeat(64)).resolve(&INCEPTION).unwrap_err().to_string();
        assert!(wrong.contains("sha256 ba7816bf") && wrong.contains("expected 0000"), "{wrong}");
        let none = src(None, abc).check(&INCEPTION).unwrap_err().to_string();
        assert!(none.contains("convert_fid_inception.py"), "{none}");
        let short = src(Some(dir.path().join("x")), "12").check(&INCEPTION).unwrap_err().to_string();
        assert!(short.contains("inception_sha256"), "{short}");
    }

    #[test]
    fn offline_hub_file_comes_from_the_cache_layout() {
        let home = tempfile::tempdir().unwrap();
        let commit = "a".repeat(40);
        let repo_dir = home.path().join("hub/models--me--fid");
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), &commit).unwrap();
        let snap = repo_dir.join("snapshots").join(&commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("inception.safetensors"), b"abc").unwrap();
        // SAFETY: this test is the only one in the crate that reads these variables.
        unsafe {
            std::env::set_var("HF_HOME", home.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let s = WeightsSource {
            path: None,
            repo: Some("me/fid".into()),
            file: Some("inception.safetensors".into()),
            revision: "main".into(),
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        };
        assert_eq!(s.resolve(&INCEPTION).unwrap(), snap.join("inception.safetensors"));
        let missing = WeightsSource { file: Some("other.safetensors".into()), ..s };
        assert!(missing.resolve(&INCEPTION).unwrap_err().to_string().contains("not in the local cache"));
    }
}
