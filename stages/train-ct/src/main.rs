//! train-ct: train a consistency model — iCT, ECT, SCT, GC or VCT — or an EDM denoiser, from a
//! dataset artifact (and optionally an init model), into a model artifact: `ema.safetensors`,
//! `net.safetensors`, `model.json`, `metrics.parquet`, `loss.svg`, sample grids.
//!
//! Usually run by make: `train-ct --profile default --node train-ct.ect`.
//! Directly: `train-ct --input data=<dataset key> --set method=ect --set network=mlp-toy`.
//! SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit 75; the next run resumes.

use anyhow::Result;
use ctpipe::stage::{self, Ctx, Stage};
use ctpipe::train::{config::TrainConfig, train_ct, RunDirs};
use serde_json::Value;
use std::process::ExitCode;

struct TrainCt;

impl Stage for TrainCt {
    const NAME: &'static str = "train-ct";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    const VERSION: u32 = 2;
    const HANDLES_SIGNALS: bool = true;
    type Config = TrainConfig;

    fn validate(config: &TrainConfig) -> Result<()> {
        ctpipe::train::validate(config)
    }

    fn run(config: &TrainConfig, ctx: &mut Ctx) -> Result<Value> {
        let work = ctx.work_dir()?.to_path_buf();
        let dirs = RunDirs { out: ctx.out_dir(), work: &work };
        train_ct(config, ctx.input("data")?, ctx.optional_input("init"), dirs, &ctx.stop, &ctx.device)
    }
}

fn main() -> ExitCode {
    stage::main::<TrainCt>()
}
