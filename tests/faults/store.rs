//! The store's loose ends: directories without a manifest, refs to nothing, lock files, and a
//! store on a full or read-only file system.

use ctpipe::store::{Key, Store};
use ctpipe_e2e::{release_bin, run, Sandbox};
use std::process::Command;

fn fetch(sb: &Sandbox, n: u32) -> ctpipe_e2e::Run {
    run(sb.cmd(release_bin("fetch-data")).args(["--set", &format!("n={n}"), "--set", "n_test=100"]))
}

fn artifacts(sb: &Sandbox, args: &[&str]) -> ctpipe_e2e::Run {
    run(sb.cmd(release_bin("artifacts")).args(args))
}

#[test]
fn a_directory_without_its_manifest_is_reported_collected_and_replaced() {
    let sb = Sandbox::new();
    let key = fetch(&sb, 1000).expect_code(0).key();
    let dir = sb.artifacts().join("fetch-data").join(&key);
    std::fs::remove_file(dir.join("manifest.json")).unwrap();

    assert!(artifacts(&sb, &["ls"]).expect_code(0).stdout.contains("(damaged)"));
    let v = artifacts(&sb, &["verify", "--all"]).expect_code(3);
    assert!(v.stdout.contains(&format!("FAILED fetch-data/{key}")) && v.stdout.contains("no manifest.json"), "{}", v.stdout);
    // Its producer, run again, replaces it.
    let again = fetch(&sb, 1000).expect_code(0);
    assert!(again.stdout.starts_with("done") && again.stderr.contains("replacing it (it has no manifest.json)"), "{}", again.stderr);
    artifacts(&sb, &["verify", "--all"]).expect_code(0);
    // gc collects one.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    assert!(artifacts(&sb, &["gc"]).expect_code(0).stdout.contains(&format!("leftover {}", dir.display())));
    artifacts(&sb, &["gc", "--delete"]).expect_code(0);
    assert!(!dir.exists());
}

#[test]
fn verify_all_checks_refs_and_gc_removes_the_locks_of_finished_runs() {
    let sb = Sandbox::new();
    let key = fetch(&sb, 1000).expect_code(0).key();
    let store = Store::new(sb.artifacts());
    let key = Key::parse(&key).unwrap();
    store.write_ref("p", "fetch-data.good", "fetch-data", &key).unwrap();
    let gone = ctpipe::store::artifact_key("fetch-data", 1, &serde_json::json!({"gone": true}), &Default::default(), &Default::default()).unwrap();
    store.write_ref("p", "fetch-data.gone", "fetch-data", &gone).unwrap();
    let v = artifacts(&sb, &["verify", "--all"]).expect_code(3);
    assert!(v.stdout.contains("ok ref p/fetch-data.good") && v.stdout.contains("FAILED ref p/fetch-data.gone"), "{}", v.stdout);
    assert!(v.one_error_line().contains("1 of 3 artifacts and refs failed"), "{}", v.stderr);

    let lock = sb.artifacts().join(".work/fetch-data").join(format!("{key}.lock"));
    let pending = sb.artifacts().join(".work/fetch-data").join(format!("{gone}.lock"));
    std::fs::write(&pending, b"").unwrap();
    assert!(lock.is_file());
    assert!(artifacts(&sb, &["gc"]).expect_code(0).stdout.contains(&format!("leftover {}", lock.display())));
    artifacts(&sb, &["gc", "--delete"]).expect_code(0);
    assert!(!lock.exists(), "the finished run's lock is removed");
    assert!(pending.exists(), "an unpublished key's lock is kept: a run may be about to take it");
}

/// A small file system mounted over the store (tmpfs; root only): `None`, with a message,
/// where it cannot be mounted.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(at: &std::path::Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs at {} (needs root); the full-disk and read-only cases were not run", at.display());
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }

    fn read_only(&self) {
        assert!(Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().unwrap().success());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_store_exits_3_naming_the_file_and_leaves_nothing() {
    let sb = Sandbox::new();
    let Some(mount) = Mounted::tmpfs(&sb.artifacts(), "1m") else { return };
    // 200,000 points do not fit in 1 MiB.
    let r = fetch(&sb, 200_000).expect_code(3);
    let line = r.one_error_line();
    assert!(line.contains(&sb.artifacts().display().to_string()) && line.contains("No space left on device"), "{line}");
    let store = Store::new(sb.artifacts());
    assert!(store.list().unwrap().is_empty());
    let staging: Vec<_> = std::fs::read_dir(sb.artifacts().join("fetch-data")).unwrap().flatten().collect();
    assert!(staging.is_empty(), "the staging directory is removed: {staging:?}");

    // Read-only: inputs are read (content checked; nothing to remember), new work refused.
    let key = fetch(&sb, 2000).expect_code(0).key();
    mount.read_only();
    assert!(fetch(&sb, 2000).expect_code(0).stdout.starts_with("cached"));
    let r = ctpipe_e2e::run_stage(&sb, release_bin("train-ct"), &[("data", &key)], &["network=mlp-toy", "steps=2", "batch=4", "grid=1"]).expect_code(3);
    let line = r.one_error_line();
    assert!(line.contains("Read-only file system") && line.contains(&sb.artifacts().display().to_string()), "{line}");
}
