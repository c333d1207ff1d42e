//! `evaluate-fid`: sample models and measure them (FD against reference statistics; toy
//! metrics), with a report and pictures.

use super::{Ctx, Stage};
use crate::evaluate::fid::{evaluate, EvalConfig};
use anyhow::Result;
use serde_json::Value;

pub struct EvaluateFid;

impl Stage for EvaluateFid {
    const NAME: &'static str = "evaluate-fid";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    // 3: VCT's LI kernel samples with sony/vct's evaluation c_out (unshifted c_in).
    // 5: rows carry `guidance` and `class`; phased models sample one evaluation per phase;
    //    class-conditional models are measured per class too.
    // 6: the baselines (held-out data, pure noise) measured at the models' n and seeds; rows
    //    carry `n` and `fd_std`.
    // 7: `samples-data.png` (the held-out images), fd.svg on a log NFE axis with markers,
    //    `export_samples`.
    // 8: pictures drawn with plotters in the embedded font: titled grids and scatter plots
    //    with axes, the SVG plots restyled with legends.
    // 9: the CPU convolution (with its bias) as one op, images in parallel (issue 18): same
    //    function, other rounding.
    // 10: gemm's AVX-512 kernels (issue 18 change 8): other rounding.
    // 11: 3×3 convolutions of few channels by the direct kernel (issue 18 change 19): other
    //     rounding of the samples and of Inception's 3×3 convolutions of 32 → 64 channels.
    const VERSION: u32 = 11;
    type Config = EvalConfig;

    fn validate(config: &EvalConfig) -> Result<()> {
        config.validate()
    }

    /// Four samples per model and sampler, one seed (the first), EDM's Heun sampler on two
    /// levels (3 evaluations), small pictures, the guide's final weights.
    fn smoke(config: &mut EvalConfig) {
        config.n = config.n.min(4);
        config.seeds.truncate(1);
        config.heun_steps = config.heun_steps.min(2);
        config.grid = config.grid.min(4);
        config.mmd_n = config.mmd_n.min(64);
        config.class_n = config.class_n.min(4);
        // The smoke guide has one snapshot (its last step): guide with its final weights.
        config.guide_step = None;
    }

    fn run(config: &EvalConfig, ctx: &mut Ctx<'_>) -> Result<Value> {
        evaluate(config, ctx.input("data")?, ctx.optional_input("reference"), ctx.inputs("models"), ctx.optional_input("guide"), ctx.out_dir(), &ctx.device)
    }
}
