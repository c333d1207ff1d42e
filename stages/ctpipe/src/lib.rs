//! ctpipe: consistency-model training as composable, content-addressed pipeline stages.
//!
//! Module map (one responsibility each):
//! - [`analytic`] — the closed-form denoiser of a Gaussian mixture (an exact teacher for tests)
//! - [`store`]    — artifact keys, canonical JSON, manifests, atomic publish, refs, gc
//! - [`pipeline`] — `pipeline.toml` profiles and nodes, the DAG, the make plan
//! - [`stage`]    — the stage contract every binary runs through (flags, key, cache, publish)
//! - [`config`]   — typed configs with documented defaults; overrides; `--help` tables
//! - [`data`]     — the dataset schema, Parquet I/O, and the sources `fetch-data` imports
//! - [`nn`]       — networks (EDM's DDPM++ U-Net, the toy MLP), presets, seeded parameters
//! - [`rng`]      — seeded random streams: every random draw comes from one
//! - [`precond`]  — c_skip, c_out, c_in, c_noise: EDM, consistency (σ_min-shifted), ECT, linear interpolation
//! - [`schedule`] — Karras grid, iCT curriculum and lognormal index sampling, ECT's mapping r(t)
//! - [`methods`]  — the losses: EDM, and consistency training as schedule × coupling × target
//! - [`coupling`] — independent, generator-induced (GC) and variational (VC) noise couplings
//! - [`train`]    — the training loop, optimisers with saved state, EMA, checkpoints, signals
//! - [`metrics`]  — measuring samples: feature statistics, Fréchet distance, toy metrics
//! - [`features`] — feature encoders: FID Inception-v3, an in-domain classifier, identity
//! - [`evaluate`] — reference statistics, FD and toy metrics of models, reports
//! - [`model`]    — model artifacts: spec, weights in safetensors
//! - [`ode`]      — the probability-flow ODE of a denoiser: Euler/Heun steps, EDM's sampler
//! - [`sample`]   — 1-step, 2-step, multistep consistency sampling; Heun for denoisers
//! - [`report`]   — sample grids, scatter plots, loss curves
//! - [`device`]   — choosing CPU or CUDA
//! - [`cuda`]     — our own CUDA kernels (fused GroupNorm+SiLU, optimiser, EMA) and their switch
//! - [`simd`]     — CPU kernels compiled for the CPU's vector width (run-time dispatch), a vector `exp`
//! - [`error`]    — failure kinds and exit codes; one-line messages
//! - [`progress`] — progress bars on a terminal, plain lines in logs
//! - [`parallel`] — data-parallel training: shards, gradient averaging, MPI
//! - [`fsx`]      — fsync and atomic file writes
//! - [`failpoint`] — crash points for the fault-injection tests

pub mod analytic;
pub mod config;
pub mod coupling;
pub mod cuda;
pub mod data;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod failpoint;
pub mod features;
pub mod fsx;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod ode;
pub mod parallel;
pub mod pipeline;
pub mod precond;
pub mod progress;
pub mod report;
pub mod rng;
pub mod sample;
pub mod schedule;
pub mod simd;
pub mod stage;
pub mod store;
pub mod train;

#[cfg(test)]
mod fuzz_tests;
