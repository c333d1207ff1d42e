//! With the `cuda` feature, compile kernels/fused.cu to PTX for src/cuda/launch.rs.
//! `-fmad=false`: no contracted multiply-adds, so element-wise f32 results round as the CPU
//! code's do (the optimiser's GPU update equals the CPU one bit for bit).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/fused.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fused.ptx");
    // The same variable candle-kernels reads, so both PTX modules target the same GPUs.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", &format!("-arch=compute_{cap}"), "-fmad=false", "-O3", "kernels/fused.cu", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed to compile kernels/fused.cu ({s})"),
        Err(e) => panic!("cannot run {nvcc} for kernels/fused.cu: {e} (run `make cuda`, which provides it)"),
    }
}
