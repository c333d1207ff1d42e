//! Durable file-system steps: fsync of files and directories, atomic whole-file writes.
//!
//! A crash at any moment must leave either the old file or the new one, never a torn mix, so
//! every write goes to a temporary name in the same directory, is fsynced, and is renamed.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// fsync a directory, so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).with_context(|| format!("{}: cannot open directory", dir.display()))?;
    f.sync_all().with_context(|| format!("{}: fsync failed", dir.display()))
}

/// fsync a regular file.
pub fn fsync_file(path: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    f.sync_all().with_context(|| format!("{}: fsync failed", path.display()))
}

/// A process-unique temporary sibling name for `path` (`.name.tmp-<pid>-<n>`).
pub fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// `std::fs::write` whose error names the file (a full disk or a read-only store says where).
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// `std::fs::copy` whose error names both files.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map(|_| ()).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

/// `std::fs::create_dir_all` whose error names the directory.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))
}

/// Write `bytes` to `path` atomically: temporary sibling, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let tmp = temp_sibling(path);
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("{}: write failed", tmp.display()))?;
        f.sync_all().with_context(|| format!("{}: fsync failed", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("{}: rename failed", path.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The process's file-creation mask, from /proc/self/status (reading it with `umask(2)` would
/// set it for a moment under other threads' feet); 022 where that is not available.
#[cfg(unix)]
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022)
}

/// Give `path` the permissions a plain `create` would (0644 under the usual umask 022). Files
/// written through a temporary file (safetensors, `tempfile`) are created 0600, readable by
/// their owner alone, which breaks a store shared by a group or read by another user's job.
#[cfg(unix)]
pub fn default_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666 & !umask())).with_context(|| format!("{}: cannot set permissions", path.display()))
}

#[cfg(not(unix))]
pub fn default_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

/// Size in bytes of a directory tree (files only; links not followed).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Whether a process with this pid is alive (on Unix; elsewhere assume it is).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // kill(pid, 0) checks existence without sending anything; EPERM still means it exists.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Current UTC time as RFC 3339 with second precision (`2026-11-24T09:15:00Z`).
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339_from_unix(secs)
}

fn rfc3339_from_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        // date -u -d @1795000000 +%FT%TZ
        assert_eq!(rfc3339_from_unix(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1);
    }
}
