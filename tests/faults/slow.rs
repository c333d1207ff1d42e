//! The fault suite's slow part (`make test-faults`; ignored by `make test`): kill -9 and
//! SIGTERM at seeded random moments in every stage, and `make -j2` racing `gc --delete`.

use ctpipe::store::{Store, Verify};
use ctpipe_e2e::{release_bin, run, workspace_root, Sandbox};
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stage runs of a toy pipeline through every stage, each as (stage, command builder, the
/// files compared with an uninterrupted run). Inputs are named by `--input` with the keys the
/// earlier commands print, so each sandbox builds its own chain.
struct Chain {
    keys: std::collections::BTreeMap<&'static str, String>,
}

impl Chain {
    fn cmd(&self, sb: &Sandbox, step: &str) -> Command {
        let (bin, inputs, sets): (&str, Vec<(&str, &str)>, &[&str]) = match step {
            "fetch-data" => ("fetch-data", vec![], &["n=400000", "n_test=2000"]),
            "precompute-encoder" => ("precompute-encoder", vec![("data", "fetch-data")], &["noise_n=5000"]),
            "train-ct" => ("train-ct", vec![("data", "fetch-data")], &["method=edm", "network=mlp-toy", "steps=400", "batch=64", "checkpoint_every=40", "grid=1", "log_every=1000"]),
            "distill" => ("distill", vec![("data", "fetch-data"), ("teacher", "train-ct")], &["network=mlp-toy", "steps=300", "batch=64", "checkpoint_every=30", "grid=1", "log_every=1000"]),
            "evaluate-fid" => ("evaluate-fid", vec![("data", "fetch-data"), ("reference", "precompute-encoder"), ("models", "distill")], &["n=20000", "seeds=[0, 1]", "steps=[1, 2]", "grid=4"]),
            s => panic!("{s}"),
        };
        let mut c = sb.cmd(release_bin(bin));
        for (role, from) in inputs {
            c.args(["--input", &format!("{role}={}", self.keys[from])]);
        }
        for s in sets {
            c.args(["--set", s]);
        }
        c
    }
}

const STAGES: [(&str, &[&str]); 5] = [
    ("fetch-data", &["train.parquet", "test.parquet"]),
    ("precompute-encoder", &["stats.safetensors"]),
    ("train-ct", &["ema.safetensors", "net.safetensors"]),
    ("distill", &["ema.safetensors", "net.safetensors"]),
    ("evaluate-fid", &["fd.svg", "metrics.json"]),
];

fn consistent(store: &Store) {
    for (stage, key) in store.list().unwrap() {
        store.open(&stage, &key, Verify::Hashes).unwrap_or_else(|e| panic!("{stage}/{key}: {e:#}"));
    }
    assert!(store.list_damaged().unwrap().is_empty());
}

#[test]
#[ignore = "slow: make test-faults"]
fn kill_9_and_sigterm_at_seeded_moments_in_every_stage_then_the_same_artifacts() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let reference = Sandbox::new();
    let mut chain = Chain { keys: Default::default() };
    let mut durations = Vec::new();
    for (stage, _) in STAGES {
        let t = Instant::now();
        let key = run(&mut chain.cmd(&reference, stage)).expect_code(0).key();
        durations.push(t.elapsed());
        chain.keys.insert(stage, key);
    }
    let sb = Sandbox::new();
    let store = Store::new(sb.artifacts());
    let (mut kills, mut terms) = (0, 0);
    for ((stage, files), duration) in STAGES.iter().zip(&durations) {
        for round in 0..10 {
            let signal = if round % 2 == 1 && matches!(*stage, "train-ct" | "distill") { libc::SIGTERM } else { libc::SIGKILL };
            let delay = Duration::from_micros(rng.random_range(0..duration.as_micros() as u64 + 1));
            let child = chain.cmd(&sb, stage).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            std::thread::sleep(delay);
            unsafe { libc::kill(child.id() as i32, signal) };
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            match signal {
                libc::SIGTERM => {
                    terms += 1;
                    assert!(matches!(out.status.code(), Some(0 | 75)), "{stage} SIGTERM after {delay:?}: {:?}\n{stderr}", out.status);
                }
                _ => kills += 1,
            }
            assert!(!stderr.contains("panicked"), "{stderr}");
            consistent(&store);
        }
        // Finished now (resuming where a training stage checkpointed), it equals the reference.
        let key = run(&mut chain.cmd(&sb, stage)).expect_code(0).key();
        assert_eq!(key, chain.keys[stage], "{stage}: the same inputs give the same key");
        for f in *files {
            let a = std::fs::read(reference.artifacts().join(stage).join(&key).join(f)).unwrap();
            let b = std::fs::read(sb.artifacts().join(stage).join(&key).join(f)).unwrap();
            assert!(a == b, "{stage}: {f} differs from the uninterrupted run's");
        }
    }
    eprintln!("kill -9 points tried: {kills}, SIGTERM points tried: {terms}; every one survived, every result bit-identical");
}

#[test]
#[ignore = "slow: make test-faults"]
fn make_j2_racing_gc_delete_loses_nothing() {
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(workspace_root().join("tests/profiles/tiny.toml")).unwrap();
    sb.write("pipeline.toml", &text);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut collections = 0;
    std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                run(sb.cmd(release_bin("artifacts")).args(["gc", "--delete"])).expect_code(0);
                n += 1;
            }
            n
        });
        let r = run(sb.make().args(["PROFILE=tiny", "-j2", "all"]));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        collections = gc.join().unwrap();
        r.expect_code(0);
    });
    run(sb.cmd(release_bin("artifacts")).args(["verify", "--all"])).expect_code(0);
    let again = run(sb.make().args(["PROFILE=tiny", "all"])).expect_code(0);
    assert!(again.stdout.contains("are up to date") && !again.stdout.contains("--node"), "{}", again.stdout);
    eprintln!("gc --delete runs during make -j2: {collections}");
}
