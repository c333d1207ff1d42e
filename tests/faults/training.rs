//! Training under faults: divergence, skipped steps, signals before the handler and during a
//! lock wait, and checkpoints that are corrupt, truncated, another run's or all unusable.

use ctpipe_e2e::{release_bin, run, Run, Sandbox};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TOY: [&str; 6] = ["network=mlp-toy", "method=ict", "steps=6", "batch=16", "checkpoint_every=2", "grid=1"];

fn train_cmd(sb: &Sandbox, data: &str, extra: &[&str]) -> Command {
    let mut c = sb.cmd(release_bin("train-ct"));
    c.args(["--input", &format!("data={data}")]);
    for s in TOY.iter().chain(extra) {
        c.args(["--set", s]);
    }
    c
}

fn train(sb: &Sandbox, data: &str, extra: &[&str]) -> Run {
    run(&mut train_cmd(sb, data, extra))
}

fn nothing_published(sb: &Sandbox) {
    let left: Vec<_> = std::fs::read_dir(sb.artifacts().join("train-ct")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.iter().all(|n| n.to_string_lossy().starts_with('.')), "published: {left:?}");
}

fn manifest(sb: &Sandbox, key: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(sb.artifacts().join("train-ct").join(key).join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_diverging_run_exits_4_and_publishes_nothing() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    // The first update breaks the weights; the first non-finite loss finds them broken and
    // stops at once (no max_skipped_steps wait for weights that will not mend).
    let r = train(&sb, &data, &["lr=1e300", "steps=40", "checkpoint_every=1000"]).expect_code(4);
    assert!(r.one_error_line().contains("holds NaN or inf at step 2 of 40"), "{}", r.stderr);
    nothing_published(&sb);
    // A checkpoint first: its weights are non-finite, and nothing is checkpointed.
    let r = train(&sb, &data, &["lr=1e300", "steps=40", "checkpoint_every=1"]).expect_code(4);
    assert!(r.one_error_line().contains("holds NaN or inf at step 1 of 40"), "{}", r.stderr);
    nothing_published(&sb);
}

#[test]
fn non_finite_steps_are_skipped_counted_and_limited_across_a_resume() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    let nan = |steps: &[u32]| steps.iter().map(|s| format!("fit:nan-loss@{s}")).collect::<Vec<_>>().join(",");

    let ok = run(train_cmd(&sb, &data, &[]).env("CTPIPE_FAILPOINT", nan(&[2]))).expect_code(0);
    assert_eq!(manifest(&sb, &ok.key())["metrics"]["skipped_steps"], 1);
    let clean = train(&sb, &data, &["seed=1"]).expect_code(0);
    assert_eq!(manifest(&sb, &clean.key())["metrics"]["skipped_steps"], 0);

    let r = run(train_cmd(&sb, &data, &["max_skipped_steps=2", "seed=2"]).env("CTPIPE_FAILPOINT", nan(&[1, 2, 3]))).expect_code(4);
    assert!(r.one_error_line().contains("at 3 steps in a row"), "{}", r.stderr);
    let r = run(train_cmd(&sb, &data, &["max_skipped_steps=3", "seed=2"]).env("CTPIPE_FAILPOINT", nan(&[1, 2, 3]))).expect_code(0);
    assert_eq!(manifest(&sb, &r.key())["metrics"]["skipped_steps"], 3);

    // Steps 3-6 skipped, the run killed after the checkpoint of step 4 (two skipped so far):
    // the resumed run still counts four in a row.
    let points = format!("{},fit:checkpoint@4", nan(&[2, 3, 4, 5]));
    let crashed = run(train_cmd(&sb, &data, &["max_skipped_steps=3", "seed=3"]).env("CTPIPE_FAILPOINT", &points));
    assert!(crashed.stderr.contains("failpoint fit:checkpoint@4"), "{}", crashed.stderr);
    let r = run(train_cmd(&sb, &data, &["max_skipped_steps=3", "seed=3"]).env("CTPIPE_FAILPOINT", nan(&[2, 3, 4, 5]))).expect_code(4);
    assert!(r.stderr.contains("resuming from") && r.one_error_line().contains("at 4 steps in a row"), "{}", r.stderr);
    // The limit is not part of the key: raised, the same run resumes and finishes.
    let key = |extra: &str| {
        let dry = run(train_cmd(&sb, &data, &["seed=3", extra]).arg("--dry-run")).expect_code(0);
        serde_json::from_str::<serde_json::Value>(&dry.stdout).unwrap()["key"].as_str().unwrap().to_string()
    };
    assert_eq!(key("max_skipped_steps=3"), key("max_skipped_steps=10"));
    let r = run(train_cmd(&sb, &data, &["max_skipped_steps=10", "seed=3"]).env("CTPIPE_FAILPOINT", nan(&[2, 3, 4, 5]))).expect_code(0);
    assert!(r.stderr.contains("resuming from"), "{}", r.stderr);
    assert_eq!(manifest(&sb, &r.key())["metrics"]["skipped_steps"], 4);
}

/// Spawn with SIGTERM, SIGUSR1 and SIGINT blocked, as a launcher may leave them: a signal sent
/// at once stays pending until the stage unblocks it, after installing its handlers; the
/// deterministic form of "a signal in the first milliseconds".
fn spawn_with_signals_blocked(cmd: &mut Command) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGINT] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn a_signal_before_the_handler_is_installed_ends_in_exit_75() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    for sig in [libc::SIGTERM, libc::SIGUSR1] {
        for stage in ["fetch-data", "train-ct"] {
            let mut cmd = match stage {
                "train-ct" => train_cmd(&sb, &data, &["steps=2000"]),
                _ => {
                    let mut c = sb.cmd(release_bin("fetch-data"));
                    c.args(["--set", "n=2000000"]);
                    c
                }
            };
            let child = spawn_with_signals_blocked(&mut cmd);
            unsafe { libc::kill(child.id() as i32, sig) };
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(75), "{stage} signal {sig}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    nothing_published(&sb);
}

#[test]
fn a_signal_during_the_wait_on_another_runs_lock_ends_in_exit_75() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    let dry = run(train_cmd(&sb, &data, &[]).arg("--dry-run")).expect_code(0);
    let key = serde_json::from_str::<serde_json::Value>(&dry.stdout).unwrap()["key"].as_str().unwrap().to_string();
    // Hold the run's lock as the overlapping predecessor would.
    let dir = sb.artifacts().join(".work").join("train-ct");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(format!("{key}.lock"))).unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let mut child = train_cmd(&sb, &data, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting for another process") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the stage ended without waiting");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(75), "{rest}");
    assert!(rest.contains("stopped by a signal while waiting for another process"), "{rest}");
    drop(lock);
    train(&sb, &data, &[]).expect_code(0);
}

/// The weights of a finished run, to compare runs (its metrics hold timings).
fn outputs(sb: &Sandbox, key: &str) -> Vec<Vec<u8>> {
    let dir = sb.artifacts().join("train-ct").join(key);
    ["ema.safetensors", "net.safetensors"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

/// A run killed after its last checkpoint (steps 4 and 6 on disk); the checkpoint directory.
fn killed_after_last_checkpoint(sb: &Sandbox, data: &str, extra: &[&str]) -> std::path::PathBuf {
    let r = run(train_cmd(sb, data, extra).env("CTPIPE_FAILPOINT", "fit:checkpoint@6"));
    assert!(r.stderr.contains("failpoint fit:checkpoint@6"), "{}", r.stderr);
    let dry = run(train_cmd(sb, data, extra).arg("--dry-run")).expect_code(0);
    let key = serde_json::from_str::<serde_json::Value>(&dry.stdout).unwrap()["key"].as_str().unwrap().to_string();
    let dir = sb.artifacts().join(".work").join("train-ct").join(key).join("checkpoints");
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"ckpt-0000000006.safetensors".into()) && names.contains(&"ckpt-0000000004.safetensors".into()), "{names:?}");
    dir
}

#[test]
fn an_unusable_newest_checkpoint_is_set_aside_and_the_older_one_resumed() {
    let reference = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&reference, 500).to_string();
    let key = train(&reference, &data, &[]).expect_code(0).key();
    let want = outputs(&reference, &key);

    for damage in ["flip", "truncate", "another run's", "renamed", "delete"] {
        let sb = Sandbox::new();
        assert_eq!(ctpipe_e2e::publish_toy(&sb, 500).to_string(), data);
        let dir = killed_after_last_checkpoint(&sb, &data, &[]);
        let newest = dir.join("ckpt-0000000006.safetensors");
        let bytes = std::fs::read(&newest).unwrap();
        match damage {
            "flip" => {
                let mut b = bytes.clone();
                let i = b.len() - 100;
                b[i] ^= 0x10;
                std::fs::write(&newest, b).unwrap();
            }
            "truncate" => std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap(),
            "another run's" => {
                let other = killed_after_last_checkpoint(&sb, &data, &["seed=9"]);
                std::fs::copy(other.join("ckpt-0000000006.safetensors"), &newest).unwrap();
            }
            "renamed" => std::fs::copy(dir.join("ckpt-0000000004.safetensors"), &newest).map(|_| ()).unwrap(),
            _ => std::fs::remove_file(&newest).unwrap(),
        }
        let r = train(&sb, &data, &[]).expect_code(0);
        let set_aside = damage != "delete";
        assert!(r.stderr.contains("not resuming from it") == set_aside && r.stderr.contains("(step 4)"), "{damage}: {}", r.stderr);
        assert!(outputs(&sb, &key) == want, "{damage}: the resumed run differs from the uninterrupted one");
    }
}

#[test]
fn when_no_checkpoint_is_usable_the_run_says_so_then_starts_over() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    let dir = killed_after_last_checkpoint(&sb, &data, &[]);
    for name in ["ckpt-0000000004.safetensors", "ckpt-0000000006.safetensors"] {
        std::fs::write(dir.join(name), b"not a checkpoint").unwrap();
    }
    let r = train(&sb, &data, &[]).expect_code(3);
    let line = r.one_error_line();
    assert!(line.contains("no usable checkpoint") && line.contains("2 rejected") && line.contains("run again to start from step 0"), "{line}");
    let again = train(&sb, &data, &[]).expect_code(0);
    assert!(!again.stderr.contains("resuming"), "{}", again.stderr);
    let fresh = Sandbox::new();
    ctpipe_e2e::publish_toy(&fresh, 500);
    let key = train(&fresh, &data, &[]).expect_code(0).key();
    assert!(outputs(&sb, &again.key()) == outputs(&fresh, &key));

    // A crash while a checkpoint is written leaves its temporary file, never a checkpoint.
    let sb = Sandbox::new();
    ctpipe_e2e::publish_toy(&sb, 500);
    let r = run(train_cmd(&sb, &data, &["seed=4"]).env("CTPIPE_FAILPOINT", "checkpoint:before-rename"));
    assert!(r.stderr.contains("failpoint checkpoint:before-rename"), "{}", r.stderr);
    train(&sb, &data, &["seed=4"]).expect_code(0);
}
