//! What has been verified already: so that every read of an artifact checks its content (a
//! same-size byte flip is found) at the cost of a `stat` per file.
//!
//! `.verified/<stage>/<key>.json` maps each file of the artifact (and its `manifest.json`,
//! which lists no hash of itself) to its blake3 as last verified
//! together with the file's stamp then: size, inode, device, mtime and ctime in nanoseconds.
//! Writing a file changes its ctime (which no user call can set back), and replacing it changes
//! its inode, so a file whose stamp is unchanged holds the bytes that were verified; any other
//! file is hashed again before use. What a stamp cannot see (bits rotting on the disk under the
//! file system) is what `artifacts verify --all` is for.
//!
//! A stamp taken within [`RACY_NS`] of the file's last change is not trusted (git's "racily
//! clean" rule): file times come from a coarse clock, so a same-size rewrite in the same tick
//! as the stamp would keep every field. Such a file is hashed again on its next read, until a
//! stamp is taken long enough after its last change.
//!
//! The records are a cache: a missing, unreadable or unwritable one (a read-only store) only
//! means hashing again. The publishing process writes the record of what it just hashed.

use super::key::Key;
use super::Store;
use crate::fsx;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A file's identity and state as the file system reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    size: u64,
    ino: u64,
    dev: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
            Stamp { size: meta.len(), ino: meta.ino(), dev: meta.dev(), mtime_ns: ns(meta.mtime(), meta.mtime_nsec()), ctime_ns: ns(meta.ctime(), meta.ctime_nsec()) }
        }
        #[cfg(not(unix))]
        {
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i128).unwrap_or(-1);
            Stamp { size: meta.len(), ino: 0, dev: 0, mtime_ns: mtime, ctime_ns: mtime }
        }
    }
}

/// How long after a file's last change (its ctime) a stamp must be taken to be trusted: far
/// above any file system's timestamp tick (ext4/xfs: the kernel's jiffy, a few ms; ext3 and
/// FAT: 1–2 s).
pub const RACY_NS: i128 = 3_000_000_000;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verified {
    pub blake3: String,
    pub stamp: Stamp,
    /// When the stamp was taken (ns since the epoch).
    pub at_ns: i128,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Verified files of one artifact, by path.
pub type Record = BTreeMap<String, Verified>;

fn record_path(store: &Store, stage: &str, key: &Key) -> PathBuf {
    store.root().join(".verified").join(stage).join(format!("{key}.json"))
}

/// The record of `stage/key` (empty when there is none, or it is unreadable).
pub fn load(store: &Store, stage: &str, key: &Key) -> Record {
    fs::read(record_path(store, stage, key)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Replace the record of `stage/key` (atomically; failures ignored: it is a cache).
pub fn save(store: &Store, stage: &str, key: &Key, record: &Record) {
    let path = record_path(store, stage, key);
    let Some(dir) = path.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(text) = serde_json::to_vec(record) else { return };
    let tmp = fsx::temp_sibling(&path);
    if fs::write(&tmp, text).is_err() || fs::rename(&tmp, &path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Remove the record of `stage/key` (gc, once the artifact is gone).
pub fn forget(store: &Store, stage: &str, key: &Key) {
    let _ = fs::remove_file(record_path(store, stage, key));
}

/// Whether `path`, as it is now, is the file verified with this blake3: the same stamp, taken
/// long enough after the file's last change.
pub fn still_verified(record: &Record, rel: &str, blake3: &str, meta: &fs::Metadata) -> bool {
    record.get(rel).is_some_and(|v| v.blake3 == blake3 && v.stamp == Stamp::of(meta) && v.at_ns - v.stamp.ctime_ns >= RACY_NS)
}

/// Stamp `rel` as verified with `blake3`, with its metadata taken *before* it was hashed (a
/// change during the hashing then shows as a changed stamp next time).
pub fn stamp(record: &mut Record, rel: &str, blake3: &str, meta: &fs::Metadata) {
    record.insert(rel.to_string(), Verified { blake3: blake3.to_string(), stamp: Stamp::of(meta), at_ns: now_ns() });
}

/// The record of files just hashed under `dir` (a publish), stamped as they are now, with
/// the manifest's own hash.
pub fn record_of(dir: &Path, files: &[super::FileRecord]) -> Record {
    let mut record = Record::new();
    let manifest = dir.join("manifest.json");
    if let (Ok(meta), Ok(bytes)) = (fs::metadata(&manifest), fs::read(&manifest)) {
        stamp(&mut record, "manifest.json", &blake3::hash(&bytes).to_hex(), &meta);
    }
    for f in files {
        if let Ok(meta) = fs::metadata(dir.join(&f.path)) {
            stamp(&mut record, &f.path, &f.blake3, &meta);
        }
    }
    record
}
