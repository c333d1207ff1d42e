//! Faults: crashes during publish, kills at random moments, corrupted files, leftovers; and
//! (issue 15) bad settings, divergence, signals at any moment, unusable checkpoints.

#[path = "faults/corruption.rs"]
mod corruption;
#[path = "faults/corpus.rs"]
mod corpus;
#[path = "faults/inputs.rs"]
mod inputs;
#[path = "faults/settings.rs"]
mod settings;
#[path = "faults/slow.rs"]
mod slow;
#[path = "faults/store.rs"]
mod store;
#[path = "faults/training.rs"]
mod training;

use ctpipe::store::{Store, Verify};
use ctpipe_e2e::{release_bin, run, Sandbox};

fn fetch_cmd(sb: &Sandbox, n: u32) -> std::process::Command {
    let mut c = sb.cmd(release_bin("fetch-data"));
    c.args(["--set", "source=toy2d", "--set", &format!("n={n}"), "--write-ref"]).arg(sb.path().join("out.ref"));
    c
}

/// Every published artifact verifies completely; nothing half-published is visible.
fn assert_store_consistent(store: &Store) {
    for (stage, key) in store.list().unwrap() {
        store.open(&stage, &key, Verify::Hashes).unwrap_or_else(|e| panic!("{stage}/{key}: {e:#}"));
    }
}

#[test]
fn crash_at_each_publish_step_leaves_nothing_or_everything() {
    for (point, published) in [("publish:files-written", false), ("publish:before-rename", false), ("publish:after-rename", true)] {
        let sb = Sandbox::new();
        let store = Store::new(sb.artifacts());
        let r = run(fetch_cmd(&sb, 2000).env("CTPIPE_FAILPOINT", point));
        assert_ne!(r.code, 0, "{point}: the process must have crashed");
        assert!(r.stderr.contains(&format!("failpoint {point}")), "{}", r.stderr);
        assert_eq!(store.list().unwrap().len(), usize::from(published), "{point}");
        assert_store_consistent(&store);
        assert!(!sb.path().join("out.ref").exists(), "{point}: a ref was written before the artifact was complete");
        if !published {
            // The crash left its staging directory; gc removes it (its process is gone).
            let gc = run(sb.cmd(release_bin("artifacts")).args(["gc"])).expect_code(0);
            assert!(gc.stdout.contains("leftover"), "{point}: {}", gc.stdout);
            run(sb.cmd(release_bin("artifacts")).args(["gc", "--delete"])).expect_code(0);
            let left: Vec<_> = std::fs::read_dir(sb.artifacts().join("fetch-data")).unwrap().flatten().collect();
            assert!(left.is_empty(), "{point}: {left:?}");
        }
        // Running again completes (or finds the complete artifact) and writes the ref.
        let again = run(&mut fetch_cmd(&sb, 2000)).expect_code(0);
        assert!(again.stdout.starts_with(if published { "cached" } else { "done" }), "{point}: {}", again.stdout);
        assert!(sb.path().join("out.ref").exists());
        assert_store_consistent(&store);
    }
}

#[test]
fn killed_at_random_moments_the_store_stays_consistent() {
    let sb = Sandbox::new();
    let store = Store::new(sb.artifacts());
    // Deterministic spread of delays over a run that takes ~100 ms.
    for (i, delay_ms) in [0u64, 3, 7, 12, 18, 25, 33, 42, 52, 63, 75, 88, 102, 117, 133].iter().enumerate() {
        let mut child = fetch_cmd(&sb, 300_000 + i as u32)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(*delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        assert_store_consistent(&store);
    }
    // Whatever was left half-done is collectable, and the store is still usable.
    run(sb.cmd(release_bin("artifacts")).args(["gc", "--delete"])).expect_code(0);
    let left: Vec<_> = std::fs::read_dir(sb.artifacts().join("fetch-data"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".tmp")).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    run(&mut fetch_cmd(&sb, 1000)).expect_code(0);
}

#[test]
fn artifacts_verify_names_the_corrupt_file() {
    let sb = Sandbox::new();
    let key = run(&mut fetch_cmd(&sb, 3000)).expect_code(0).key();
    let arts = release_bin("artifacts");
    let ok = run(sb.cmd(&arts).args(["verify", "--all"])).expect_code(0);
    assert!(ok.stdout.contains(&format!("ok fetch-data/{key}")));
    // Flip one byte in the middle of the training split: same size, different content.
    let path = sb.artifacts().join("fetch-data").join(&key).join("train.parquet");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let bad = run(sb.cmd(&arts).args(["verify", &key[..10]])).expect_code(3);
    assert!(bad.stdout.contains("FAILED") && bad.stdout.contains("train.parquet"), "{}", bad.stdout);
    assert!(bad.one_error_line().contains("1 of 1 artifacts and refs failed verification"));
    // A stage reading it with --verify refuses it too (exercised by consumers of datasets).
    let show = run(sb.cmd(&arts).args(["show", &key[..10]])).expect_code(0);
    assert!(show.stdout.contains("\"stage\": \"fetch-data\""));
}

#[test]
fn two_processes_on_one_key_publish_once() {
    let sb = Sandbox::new();
    let spawn = || fetch_cmd(&sb, 400_000).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let outs = [String::from_utf8_lossy(&a.stdout).into_owned(), String::from_utf8_lossy(&b.stdout).into_owned()];
    assert_eq!(outs.iter().filter(|o| o.starts_with("done")).count(), 1, "{outs:?}");
    assert_eq!(outs.iter().filter(|o| o.starts_with("cached")).count(), 1, "{outs:?}");
    let store = Store::new(sb.artifacts());
    assert_eq!(store.list().unwrap().len(), 1);
    assert_store_consistent(&store);
}
