//! `train-ct`: train a consistency model (iCT, ECT, SCT, GC, VCT) or an EDM denoiser.

use super::{Ctx, Stage};
use crate::train::{config::TrainConfig, train_ct, RunDirs};
use anyhow::Result;
use serde_json::Value;

pub struct TrainCt;

impl Stage for TrainCt {
    const NAME: &'static str = "train-ct";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    // 3: issue 13's conformance fixes.
    // 4: SCT's target where r = 0 is the reference mean x̂₀ (`sct_boundary`), its weights
    //    streamed in f64 over any reference set; phased models; the pool.
    // 5: weight files carry EDM's resample_filter buffers (strict loading in EDM); loss.svg
    //    with round ticks, long logs decimated.
    // 6: pictures drawn with plotters in the embedded font: titled grids and scatter plots
    //    with axes, loss.svg restyled.
    // 7: the CPU convolution (with its bias) as one op, images in parallel (issue 18): same
    //    function, other rounding of the gradients.
    // 8: gemm's AVX-512 kernels (issue 18 change 8): other rounding.
    // 9: 3×3 convolutions of few channels by the direct kernel (issue 18 change 19): other
    //    rounding.
    const VERSION: u32 = 9;
    const HANDLES_SIGNALS: bool = true;
    const DATA_PARALLEL: bool = true;
    const KEY_EXCLUDES: &'static [&'static str] = &["max_skipped_steps"];
    type Config = TrainConfig;

    fn validate(config: &TrainConfig) -> Result<()> {
        crate::train::validate(config)
    }

    fn smoke(config: &mut TrainConfig) {
        config.smoke_loop();
    }

    fn preflight(config: &TrainConfig) -> Result<()> {
        match config.init_source()? {
            Some(source) => source.check_present(&crate::train::INIT),
            None => Ok(()),
        }
    }

    fn run(config: &TrainConfig, ctx: &mut Ctx<'_>) -> Result<Value> {
        let work = ctx.work_dir()?.to_path_buf();
        let dirs = RunDirs { out: ctx.out_dir(), work: &work, run: ctx.key.as_str(), world: ctx.world };
        train_ct(config, ctx.input("data")?, ctx.optional_input("init"), dirs, &ctx.stop, &ctx.device)
    }
}
