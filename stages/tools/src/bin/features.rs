//! features: checks of the feature encoders outside the pipeline.
//!
//! `features parity FILE` — compare ctpipe's FID Inception-v3 with pytorch-fid's on the weights,
//! images and features that `tests/parity/inception_parity.py` wrote (docs/fid.md). Exits 1 when
//! the relative error is 1e-4 or more.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ctpipe::features::inception::FidInception;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "features", version, about = "Feature-encoder checks (pytorch-fid parity)")]
struct Cli {
    /// Compute device: cpu, cuda, cuda:N or auto
    #[arg(long, default_value = "cpu", global = true)]
    device: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Features of the parity file's images from its weights, against pytorch-fid's
    Parity { file: PathBuf },
}

const TOLERANCE: f64 = 1e-4;

fn main() -> ExitCode {
    ctpipe::error::exit_code("features", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    let device = ctpipe::device::select(&cli.device)?;
    match cli.command {
        Cmd::Parity { file } => {
            let tensors = candle_core::safetensors::load(&file, &device).with_context(|| format!("{}: cannot read", file.display()))?;
            let net = FidInception::from_tensors(&tensors)?;
            let mut worst = 0f64;
            for set in ["gray", "rgb"] {
                let get = |k: &str| tensors.get(k).with_context(|| format!("{}: missing `{k}`", file.display()));
                let x = get(&format!("parity.images.{set}"))?;
                let want = get(&format!("parity.features.{set}"))?.to_dtype(candle_core::DType::F64)?;
                let got = net.pool3(x)?.to_dtype(candle_core::DType::F64)?;
                let diff = (&got - &want)?;
                let norm_rel = diff.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()? / want.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
                let max_rel = diff.abs()?.max_all()?.to_scalar::<f64>()? / want.abs()?.max_all()?.to_scalar::<f64>()?;
                println!("{set:<5} {:?}: ‖ours − pytorch-fid‖/‖pytorch-fid‖ = {norm_rel:.3e}; max |Δ| / max |pytorch-fid| = {max_rel:.3e}", x.dims());
                worst = worst.max(norm_rel).max(max_rel);
            }
            anyhow::ensure!(worst < TOLERANCE, "relative error {worst:.3e} is not below {TOLERANCE:e}");
            println!("parity: ok (relative error {worst:.3e} < {TOLERANCE:e})");
        }
    }
    Ok(())
}
