//! `precompute-encoder`: choose (for `classifier`, train) a feature encoder for a dataset and
//! store reference statistics.

use super::scale::cap_opt;
use super::{Ctx, Stage};
use crate::evaluate::precompute::{precompute, PrecomputeConfig};
use crate::features::weights::INCEPTION;
use anyhow::Result;
use serde_json::Value;

pub struct PrecomputeEncoder;

impl Stage for PrecomputeEncoder {
    const NAME: &'static str = "precompute-encoder";
    // 2: the classifier's CPU convolution as one op (issue 18): same function, other rounding.
    // 3: gemm's AVX-512 kernels (issue 18 change 8): other rounding.
    // 4: 3×3 convolutions of few channels by the direct kernel (issue 18 change 19): other
    //    rounding.
    const VERSION: u32 = 4;
    type Config = PrecomputeConfig;

    fn validate(config: &PrecomputeConfig) -> Result<()> {
        config.validate()
    }

    /// Statistics of 16 images per split and of 16 noise images; the classifier trains one
    /// epoch on 256 rows.
    fn smoke(config: &mut PrecomputeConfig) {
        // Per-class statistics need rows of every class: 256 hold each of ten many times.
        cap_opt(&mut config.stats_limit, if config.per_class { 256 } else { 16 });
        config.noise_n = config.noise_n.min(16);
        config.epochs = config.epochs.min(1);
        cap_opt(&mut config.limit, 256);
    }

    fn preflight(config: &PrecomputeConfig) -> Result<()> {
        if config.encoder == "inception" {
            config.weights_source().check_present(&INCEPTION)?;
        }
        Ok(())
    }

    fn run(config: &PrecomputeConfig, ctx: &mut Ctx<'_>) -> Result<Value> {
        precompute(config, ctx.input("data")?, ctx.out_dir(), &ctx.device)
    }
}
