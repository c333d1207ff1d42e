//! precompute-encoder: choose a feature encoder for a dataset (training the in-domain
//! classifier when asked) and store reference statistics: `encoder.json`,
//! `encoder.safetensors` (classifier), `stats.safetensors` (the reference split),
//! `stats-train.safetensors`, `stats-test.safetensors`.
//!
//! Usually run by make: `precompute-encoder --profile default --node precompute-encoder.fmnist`.
//! Directly: `precompute-encoder --input data=<dataset key> --set encoder=classifier`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ctpipe::stage::main::<ctpipe::stage::PrecomputeEncoder>()
}
