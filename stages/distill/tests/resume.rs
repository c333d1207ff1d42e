//! A distillation stopped by a signal and started again ends bit-identical to an uninterrupted
//! one, with a μ-EMA target network (checkpointed beside the student, its EMA and the
//! optimiser) and dropout.

use ctpipe_e2e::{interrupted_equals_uninterrupted, release_bin, run, Sandbox};

const EXE: &str = env!("CARGO_BIN_EXE_distill");

fn cmd(sb: &Sandbox) -> std::process::Command {
    let data = ctpipe_e2e::publish_toy(sb, 2000).to_string();
    let mut t = sb.cmd(release_bin("train-ct"));
    t.args(["--input", &format!("data={data}")]);
    for s in ["method=edm", "network=mlp-toy", "steps=30", "batch=32", "checkpoint_every=30", "grid=4"] {
        t.args(["--set", s]);
    }
    let teacher = run(&mut t).expect_code(0).key();
    let mut c = sb.cmd(EXE);
    c.args(["--input", &format!("data={data}"), "--input", &format!("teacher={teacher}")]);
    for s in ["network=mlp-toy", "steps=300", "batch=64", "checkpoint_every=25", "target_ema=0.9", "dropout=0.1", "ema_beta=0.95", "grid=4", "log_every=1000"] {
        c.args(["--set", s]);
    }
    c
}

#[test]
fn distill_with_an_ema_target_resumes_bit_identical_after_sigterm() {
    interrupted_equals_uninterrupted("distill", &["ema.safetensors", "net.safetensors", "samples-1step.png"], libc::SIGTERM, cmd);
}
