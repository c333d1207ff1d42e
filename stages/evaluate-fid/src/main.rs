//! evaluate-fid: sample model artifacts (1-step, 2-step, …; Heun for EDM teachers) for several
//! seeds and measure them: FD against reference statistics (min and mean over seeds), and for
//! the 2-D toys sliced Wasserstein, MMD and mode coverage. Writes `metrics.json`, `report.md`,
//! `fd.svg` (and `fd-training.svg` with snapshots) and sample pictures.
//!
//! Usually run by make: `evaluate-fid --profile default --node evaluate-fid.fmnist`.
//! Directly: `evaluate-fid --input data=<dataset> --input reference=<stats> --input models=<model>`.

use anyhow::Result;
use ctpipe::evaluate::fid::{evaluate, EvalConfig};
use ctpipe::stage::{self, Ctx, Stage};
use serde_json::Value;
use std::process::ExitCode;

struct EvaluateFid;

impl Stage for EvaluateFid {
    const NAME: &'static str = "evaluate-fid";
    // 2: the CPU U-Net runs GroupNorm(+SiLU) as one fused op (same function, other rounding).
    const VERSION: u32 = 2;
    type Config = EvalConfig;

    fn validate(config: &EvalConfig) -> Result<()> {
        config.validate()
    }

    fn run(config: &EvalConfig, ctx: &mut Ctx) -> Result<Value> {
        evaluate(config, ctx.input("data")?, ctx.optional_input("reference"), ctx.inputs("models"), ctx.out_dir(), &ctx.device)
    }
}

fn main() -> ExitCode {
    stage::main::<EvaluateFid>()
}
