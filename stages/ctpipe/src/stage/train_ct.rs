//! `train-ct`: train a consistency model (iCT, ECT, SCT, GC, VCT) or an EDM denoiser.

use super::{Ctx, Stage};
use crate::train::{config::TrainConfig, train_ct, RunDirs};
use anyhow::Result;
use serde_json::Value;

pub struct TrainCt;

impl Stage for TrainCt {
    const NAME: &'static str = "train-ct";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    const VERSION: u32 = 3;
    const HANDLES_SIGNALS: bool = true;
    type Config = TrainConfig;

    fn validate(config: &TrainConfig) -> Result<()> {
        crate::train::validate(config)
    }

    fn smoke(config: &mut TrainConfig) {
        config.smoke_loop();
    }

    fn run(config: &TrainConfig, ctx: &mut Ctx) -> Result<Value> {
        let work = ctx.work_dir()?.to_path_buf();
        let dirs = RunDirs { out: ctx.out_dir(), work: &work };
        train_ct(config, ctx.input("data")?, ctx.optional_input("init"), dirs, &ctx.stop, &ctx.device)
    }
}
