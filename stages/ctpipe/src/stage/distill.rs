//! `distill`: consistency distillation of an EDM teacher (a `train-ct` artifact or imported
//! weights) into a consistency model.

use super::{Ctx, Stage};
use crate::train::distill::{distill, validate, DistillConfig};
use crate::train::teacher::TEACHER;
use crate::train::RunDirs;
use anyhow::Result;
use serde_json::Value;

pub struct Distill;

impl Stage for Distill {
    const NAME: &'static str = "distill";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    // 3: weight files carry EDM's resample_filter buffers (strict loading in EDM).
    // 4: pictures drawn with plotters in the embedded font: titled grids, loss.svg restyled.
    // 5: the CPU convolution (with its bias) as one op, images in parallel (issue 18): same
    //    function, other rounding of the gradients.
    // 6: gemm's AVX-512 kernels (issue 18 change 8): other rounding.
    // 7: 3×3 convolutions of few channels by the direct kernel (issue 18 change 19): other
    //    rounding.
    const VERSION: u32 = 7;
    const HANDLES_SIGNALS: bool = true;
    const DATA_PARALLEL: bool = true;
    const KEY_EXCLUDES: &'static [&'static str] = &["max_skipped_steps"];
    type Config = DistillConfig;

    fn validate(config: &DistillConfig) -> Result<()> {
        validate(config)
    }

    fn smoke(config: &mut DistillConfig) {
        config.smoke_loop();
    }

    fn preflight(config: &DistillConfig) -> Result<()> {
        match config.teacher_source()? {
            Some(source) => source.check_present(&TEACHER),
            None => Ok(()),
        }
    }

    fn run(config: &DistillConfig, ctx: &mut Ctx<'_>) -> Result<Value> {
        let work = ctx.work_dir()?.to_path_buf();
        let dirs = RunDirs { out: ctx.out_dir(), work: &work, run: ctx.key.as_str(), world: ctx.world };
        distill(config, ctx.input("data")?, ctx.optional_input("teacher"), dirs, &ctx.stop, &ctx.device)
    }
}
