//! precompute-encoder: choose a feature encoder for a dataset (training the in-domain
//! classifier when asked) and store reference statistics: `encoder.json`,
//! `encoder.safetensors` (classifier), `stats.safetensors` (the reference split),
//! `stats-train.safetensors`, `stats-test.safetensors`.
//!
//! Usually run by make: `precompute-encoder --profile default --node precompute-encoder.fmnist`.
//! Directly: `precompute-encoder --input data=<dataset key> --set encoder=classifier`.

use anyhow::Result;
use ctpipe::evaluate::precompute::{precompute, PrecomputeConfig};
use ctpipe::stage::{self, Ctx, Stage};
use serde_json::Value;
use std::process::ExitCode;

struct PrecomputeEncoder;

impl Stage for PrecomputeEncoder {
    const NAME: &'static str = "precompute-encoder";
    const VERSION: u32 = 1;
    type Config = PrecomputeConfig;

    fn validate(config: &PrecomputeConfig) -> Result<()> {
        config.validate()
    }

    fn run(config: &PrecomputeConfig, ctx: &mut Ctx) -> Result<Value> {
        precompute(config, ctx.input("data")?, ctx.out_dir(), &ctx.device)
    }
}

fn main() -> ExitCode {
    stage::main::<PrecomputeEncoder>()
}
