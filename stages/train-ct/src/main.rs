//! train-ct: train a consistency model — iCT, ECT, SCT, GC or VCT — or an EDM denoiser, from a
//! dataset artifact (and optionally an init model), into a model artifact: `ema.safetensors`,
//! `net.safetensors`, `model.json`, `metrics.parquet`, `loss.svg`, sample grids.
//!
//! Usually run by make: `train-ct --profile default --node train-ct.ect`.
//! Directly: `train-ct --input data=<dataset key> --set method=ect --set network=mlp-toy`.
//! SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit 75; the next run resumes.

use std::process::ExitCode;

fn main() -> ExitCode {
    ctpipe::stage::main::<ctpipe::stage::TrainCt>()
}
