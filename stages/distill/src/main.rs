//! distill: consistency distillation (Song et al. 2023) of an EDM teacher into a consistency
//! model: a model artifact like train-ct's (`ema.safetensors`, `net.safetensors`, `model.json`,
//! `metrics.parquet`, `loss.svg`, sample grids) that samples in 1 or 2 steps.
//!
//! Usually run by make: `distill --profile default --node distill.toy-cd`.
//! Directly: `distill --input data=<dataset key> --input teacher=<EDM train-ct key>`, or with
//! imported weights: `--set teacher_weights=edm.safetensors --set teacher_sha256=<hex>`.
//! SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit 75; the next run resumes.

use std::process::ExitCode;

fn main() -> ExitCode {
    ctpipe::stage::main::<ctpipe::stage::Distill>()
}
