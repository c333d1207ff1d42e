//! A run stopped by a signal mid-way and started again ends bit-identical to a run that was
//! never interrupted (CPU). GC (its EMA feeds the loss) and VCT (encoder, its EMA, and their
//! optimiser state) exercise every part of the training state.

use ctpipe_e2e::{interrupted_equals_uninterrupted, Sandbox};

const EXE: &str = env!("CARGO_BIN_EXE_train-ct");

const FILES: &[&str] = &["ema.safetensors", "net.safetensors", "encoder.safetensors", "encoder_ema.safetensors", "samples-1step.png"];

fn cmd(sb: &Sandbox, method: &str) -> std::process::Command {
    let data = ctpipe_e2e::publish_toy(sb, 3000).to_string();
    let mut c = sb.cmd(EXE);
    c.args(["--input", &format!("data={data}")]);
    let sets = [
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
    ];
    for s in sets {
        c.args(["--set", &s]);
    }
    c
}

#[test]
fn gc_resumes_bit_identical_after_sigterm() {
    interrupted_equals_uninterrupted("train-ct", FILES, libc::SIGTERM, |sb| cmd(sb, "gc"));
}

#[test]
fn vct_resumes_bit_identical_after_sigusr1() {
    interrupted_equals_uninterrupted("train-ct", FILES, libc::SIGUSR1, |sb| cmd(sb, "vct"));
}
