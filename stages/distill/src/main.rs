//! distill: consistency distillation (Song et al. 2023) of an EDM teacher into a consistency
//! model: a model artifact like train-ct's (`ema.safetensors`, `net.safetensors`, `model.json`,
//! `metrics.parquet`, `loss.svg`, sample grids) that samples in 1 or 2 steps.
//!
//! Usually run by make: `distill --profile default --node distill.toy-cd`.
//! Directly: `distill --input data=<dataset key> --input teacher=<EDM train-ct key>`, or with
//! imported weights: `--set teacher_weights=edm.safetensors --set teacher_sha256=<hex>`.
//! SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit 75; the next run resumes.

use anyhow::Result;
use ctpipe::stage::{self, Ctx, Stage};
use ctpipe::train::distill::{distill, validate, DistillConfig};
use ctpipe::train::RunDirs;
use serde_json::Value;
use std::process::ExitCode;

struct Distill;

impl Stage for Distill {
    const NAME: &'static str = "distill";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    const VERSION: u32 = 2;
    const HANDLES_SIGNALS: bool = true;
    type Config = DistillConfig;

    fn validate(config: &DistillConfig) -> Result<()> {
        validate(config)
    }

    fn run(config: &DistillConfig, ctx: &mut Ctx) -> Result<Value> {
        let work = ctx.work_dir()?.to_path_buf();
        let dirs = RunDirs { out: ctx.out_dir(), work: &work };
        distill(config, ctx.input("data")?, ctx.optional_input("teacher"), dirs, &ctx.stop, &ctx.device)
    }
}

fn main() -> ExitCode {
    stage::main::<Distill>()
}
