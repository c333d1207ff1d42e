//! A run stopped by a signal mid-way and started again ends bit-identical to a run that was
//! never interrupted (CPU). GC (its EMA feeds the loss) and VCT (encoder, its EMA, and their
//! optimiser state) exercise every part of the training state.

use ctpipe_e2e::{run, Sandbox};
use std::path::Path;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_train-ct");

fn sets(method: &str) -> Vec<String> {
    [
        format!("method={method}"),
        "network=mlp-toy".into(),
        "steps=400".into(),
        "batch=64".into(),
        "checkpoint_every=50".into(),
        "ema_beta=0.95".into(),
        "grid=4".into(),
        "log_every=1000".into(),
        "optimizer=radam".into(),
        "dropout=0.1".into(),
    ]
    .into()
}

fn cmd(sb: &Sandbox, data: &str, method: &str) -> std::process::Command {
    let mut c = sb.cmd(EXE);
    c.args(["--input", &format!("data={data}")]);
    for s in sets(method) {
        c.args(["--set", &s]);
    }
    c
}

fn files(sb: &Sandbox, key: &str) -> Vec<(String, Vec<u8>)> {
    let dir = sb.artifacts().join("train-ct").join(key);
    ["ema.safetensors", "net.safetensors", "encoder.safetensors", "encoder_ema.safetensors", "samples-1step.png"]
        .iter()
        .filter(|f| dir.join(f).exists())
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

fn checkpoints(work: &Path) -> usize {
    std::fs::read_dir(work.join("checkpoints")).map(|d| d.count()).unwrap_or(0)
}

fn interrupted_equals_uninterrupted(method: &str, signal: i32) {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let data_a = ctpipe_e2e::publish_toy(&a, 3000).to_string();
    let data_b = ctpipe_e2e::publish_toy(&b, 3000).to_string();
    assert_eq!(data_a, data_b);

    let key = run(&mut cmd(&a, &data_a, method)).expect_code(0).key();
    let reference = files(&a, &key);

    // Stop the second run once it has written a checkpoint, then start it again.
    let work = b.artifacts().join(".work/train-ct").join(&key);
    let child = cmd(&b, &data_b, method).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while checkpoints(&work) == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("checkpoint written, run again to resume"), "{stderr}");
    assert!(!b.artifacts().join("train-ct").join(&key).exists(), "no artifact after a stop");
    let resumed = run(&mut cmd(&b, &data_b, method)).expect_code(0);
    assert!(resumed.stderr.contains("resuming from"), "{}", resumed.stderr);
    assert_eq!(resumed.key(), key);
    let got = files(&b, &key);
    assert_eq!(got.len(), reference.len());
    for ((name, x), (_, y)) in reference.iter().zip(&got) {
        assert!(x == y, "{method}: {name} differs after resume");
    }
    assert!(!work.exists(), "the finished run's working directory is removed");
}

#[test]
fn gc_resumes_bit_identical_after_sigterm() {
    interrupted_equals_uninterrupted("gc", libc::SIGTERM);
}

#[test]
fn vct_resumes_bit_identical_after_sigusr1() {
    interrupted_equals_uninterrupted("vct", libc::SIGUSR1);
}
