//! `train-ct` settings: one flat table (a pipeline node, or `--set`), paper defaults where a
//! method has one. Fields marked "default: by method" are resolved in `methods/spec.rs`.
//!
//! The fields every training stage shares (network, noise range, the loop: steps, optimiser,
//! EMA, checkpoints, pictures) are declared once, in [`training_config!`]; `train-ct`'s
//! [`TrainConfig`] and `distill`'s config add their own fields to them.

use crate::methods::distance::Weighting;
use crate::methods::sct::{Boundary, References};
use crate::schedule::EctMapping;

/// Declare a training stage's config: its own fields, then the shared ones below (network,
/// noise range, loop, EMA, checkpoints, pictures). Used like [`crate::config_struct!`].
#[macro_export]
macro_rules! training_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $crate::config_struct! {
            $(#[$meta])*
            pub struct $name {
                $($own)*
                /// Network preset: mlp-toy, mlp-small, tiny, fmnist, cifar-ddpmpp, cifar-gc.
                pub network: String = "tiny".into(),
                /// Dropout probability (default: the preset's: 0 for tiny and mlp-toy, 0.3 fmnist,
                /// 0.13 cifar-ddpmpp, 0 cifar-gc).
                #[range = "[0, 1)"]
                pub dropout: Option<f64> = None,
                /// Optimiser steps.
                #[range = "[1, 1e12]"]
                pub steps: u64 = 1000,
                /// Batch size.
                #[range = "[1, 65536]"]
                pub batch: u64 = 128,
                /// Seed of every random draw: initial weights, data order, noise, dropout, sampling.
                #[range = "[0, inf)"]
                pub seed: u64 = 0,
                /// Train on the first N rows of the training split only (default: all).
                #[range = "[1, inf)"]
                pub limit: Option<u64> = None,
                /// Random horizontal flips of training images.
                pub x_flip: bool = false,
                /// Smallest noise level (default: 0.002 for edm, cd and the iCT schedule; 0.003 for ECT/SCT).
                #[range = "(0, inf)"]
                pub sigma_min: Option<f64> = None,
                /// Largest noise level; 1-step sampling starts here.
                #[range = "(0, inf)"]
                pub sigma_max: f64 = 80.0,
                /// Standard deviation of the data (σd; 0.5 for data in [-1, 1]).
                #[range = "(0, inf)"]
                pub sigma_data: f64 = 0.5,
                /// ρ of the Karras grid.
                #[range = "(0, inf)"]
                pub rho: f64 = 7.0,
                /// Optimiser: adam, radam or lion.
                pub optimizer: String = "radam".into(),
                /// Learning rate.
                #[range = "(0, inf)"]
                pub lr: f64 = 1e-4,
                /// β1 of adam/radam/lion.
                #[range = "[0, 1)"]
                pub beta1: f64 = 0.9,
                /// β2 of adam/radam (0.999) and lion (use 0.99).
                #[range = "[0, 1)"]
                pub beta2: f64 = 0.999,
                /// ε of adam/radam.
                #[range = "(0, 1]"]
                pub eps: f64 = 1e-8,
                /// Decoupled weight decay.
                #[range = "[0, inf)"]
                pub weight_decay: f64 = 0.0,
                /// Linear learning-rate warm-up over this many steps.
                #[range = "[0, inf)"]
                pub lr_warmup: u64 = 0,
                /// Inverse-square-root decay: lr / √max(step / lr_decay, 1) (EDM2/ECT ImageNet);
                /// unset: constant.
                #[range = "[1, inf)"]
                pub lr_decay: Option<u64> = None,
                /// Clip the gradient's global norm (default: 200 for vct, none otherwise).
                #[range = "(0, inf)"]
                pub grad_clip: Option<f64> = None,
                /// EMA decay per step (default 0.9999 unless ema_halflife_kimg is set).
                #[range = "[0, 1)"]
                pub ema_beta: Option<f64> = None,
                /// EMA half-life in thousands of images (EDM: 500).
                #[range = "(0, inf)"]
                pub ema_halflife_kimg: Option<f64> = None,
                /// EDM's EMA ramp-up: half-life at most this fraction of the images seen (EDM: 0.05).
                #[range = "(0, inf)"]
                pub ema_rampup: Option<f64> = None,
                /// Update the EMA every this many steps (ema-pytorch's update_every; default: 5
                /// for gc, as GC's training code, else 1).
                #[range = "[1, inf)"]
                pub ema_update_every: Option<u64> = None,
                /// Warm the EMA up as ema-pytorch 0.2.3 does (GC's EMA; train/ema.rs): copy the
                /// weights at every update up to step N and at the first one after it, then
                /// decay min(ema_beta, 1 − (1 + n − N)^(−2/3)) after the n-th step (n from 0;
                /// default: N = 0 for gc; unset otherwise: a constant ema_beta).
                #[range = "[0, inf)"]
                pub ema_update_after: Option<u64> = None,
                /// Divergence: a step whose loss is NaN or ±inf changes nothing (no update, no
                /// EMA) and is counted (`skipped_steps`); more than this many in a row stop the
                /// run (exit 4, no artifact), as do non-finite weights. Not part of the key:
                /// raising it resumes the same run.
                #[range = "[0, inf)"]
                pub max_skipped_steps: u64 = 10,
                /// Write a checkpoint every this many steps (and at the end).
                #[range = "[1, inf)"]
                pub checkpoint_every: u64 = 1000,
                /// Keep the EMA weights of every checkpoint in the artifact (snapshots/).
                pub keep_snapshots: bool = false,
                /// Log a plain progress line every this many steps.
                #[range = "[1, inf)"]
                pub log_every: u64 = 100,
                /// Samples in the sample grids.
                #[range = "[1, 4096]"]
                pub grid: u64 = 64,
                /// Intermediate noise level of 2-step sampling.
                #[range = "(0, inf)"]
                pub sigma_mid: f64 = 0.821,
            }
        }

        impl $name {
            /// The smoke scale's cuts of the loop (`stage::scale`): two steps of at most two
            /// samples from the first 64 rows, one checkpoint (at the end), one-sample pictures.
            pub fn smoke_loop(&mut self) {
                self.steps = self.steps.min(2);
                self.batch = self.batch.min(2);
                $crate::stage::scale::cap_opt(&mut self.limit, 64);
                self.checkpoint_every = self.checkpoint_every.min(self.steps);
                self.log_every = 1;
                self.grid = self.grid.min(1);
            }
        }
    };
}

crate::training_config! {
    /// Settings of `train-ct`.
    pub struct TrainConfig {
        /// Method: edm (denoising pre-training), ict, ect, sct, gc (generator-induced coupling),
        /// vct (variational noise coupling).
        pub method: String = "ict".into(),
        /// gc, vct: the schedule the coupling runs on: ict (default), ect, or sct (gc only).
        pub schedule: Option<String> = None,
        /// Mean of ln σ (default: −1.2 edm, −1.1 consistency methods).
        #[range = "(-inf, inf)"]
        pub p_mean: Option<f64> = None,
        /// Std of ln σ (default: 1.2 edm, 2.0 consistency methods).
        #[range = "(0, inf)"]
        pub p_std: Option<f64> = None,
        /// iCT curriculum: grid size at the start (s0).
        #[range = "[1, 1e6]"]
        pub ict_s0: u64 = 10,
        /// iCT curriculum: grid size at the end (s1).
        #[range = "[1, 1e6]"]
        pub ict_s1: u64 = 1280,
        /// ECT mapping: q (the gap shrinks by q each stage; 256 = the 1-hour recipe).
        #[range = "(1, inf)"]
        pub ect_q: f64 = 2.0,
        /// ECT mapping: k of the sigmoid factor.
        #[range = "[0, inf)"]
        pub ect_k: f64 = 8.0,
        /// ECT mapping: b of the sigmoid factor.
        #[range = "(-inf, inf)"]
        pub ect_b: f64 = 1.0,
        /// ECT mapping function: sigmoid or const.
        pub ect_mapping: EctMapping = EctMapping::Sigmoid,
        /// ECT: the stage advances every this many thousand images (ECT's `--double` ticks ×
        /// `--tick` kimg: 3200 on CIFAR-10, 25k iterations at batch 128; the default for ect, sct
        /// and gc on ECT's schedule).
        #[range = "(0, inf)"]
        pub ect_stage_kimg: Option<f64> = None,
        /// ECT: instead, this many stages over the run, advancing every steps / ect_stages
        /// (sony/vct's rule: the default, 8, for vct on ECT's schedule).
        #[range = "[1, inf)"]
        pub ect_stages: Option<u64> = None,
        /// Distance: pseudo-huber (√(‖·‖² + c²) − c over the sample), pseudo-huber-per-value
        /// (Σ √((·)² + c²) − c, sony/vct's iCT loss) or l2-squared (default: pseudo-huber;
        /// pseudo-huber-per-value for vct on the iCT schedule).
        pub distance: Option<String> = None,
        /// Pseudo-Huber c (default: 0.00054·√D on the iCT schedule, 0 — the unsquared L2 of
        /// ECT on CIFAR — on the ECT schedule).
        #[range = "[0, inf)"]
        pub huber_c: Option<f64> = None,
        /// Loss weighting: inverse-gap (1/Δσ, 1/(t − r)), karras (1/σd² + 1/t²) or uniform.
        pub weighting: Weighting = Weighting::InverseGap,
        /// ict, ect: how noise is paired with data: independent (default) or ot (the batch's
        /// noise reassigned by exact minibatch optimal transport on ‖x − σ_max·z‖², sony/vct's
        /// baseline). gc and vct bring their own couplings.
        pub coupling: Option<String> = None,
        /// GC: probability that a sample keeps the independent coupling (μ; the paper uses 0.5).
        #[range = "[0, 1]"]
        pub gc_keep: f64 = 0.5,
        /// GC: μ at the end of training, annealed linearly (default: gc_keep throughout).
        #[range = "[0, 1]"]
        pub gc_keep_end: Option<f64> = None,
        /// VCT: KL weight β before its rescaling (default: 30 on the iCT schedule, 10 on ECT).
        #[range = "[0, inf)"]
        pub vct_beta: Option<f64> = None,
        /// VCT: noise kernel, ve (x + σz) or li (linear interpolation, T = sigma_max).
        pub vct_kernel: String = "ve".into(),
        /// VCT: encoder size, small (1 block) or big (2 blocks).
        pub vct_encoder: String = "small".into(),
        /// SCT: reference set of the variance-reduced target: batch, pool (the batch and more
        /// training images drawn per step, `sct_pool` in all), or own (= ECT).
        pub sct_references: References = References::Batch,
        /// SCT, sct_references = "pool": the reference set's size, the batch included (STF's
        /// reference batch: 1024); at most the batch plus the training set.
        #[range = "[1, 1e7]"]
        pub sct_pool: u64 = 1024,
        /// SCT: the target where r = 0: mean (the reference-weighted mean x̂₀, the
        /// construction's) or clean (the clean image, as ECT).
        pub sct_boundary: Boundary = Boundary::Mean,
        /// Class-conditional model: the network takes the dataset's class labels (EDM's
        /// label_dim: a class embedding added to the noise embedding), training uses each
        /// sample's label, samplers draw every class in turn (or one), and SCT's references
        /// are restricted to the sample's class. An init model must be class-conditional too.
        pub class_conditional: bool = false,
        /// ect, sct: phased (multistep) consistency tuning with this many phases: the model maps
        /// each noise level to its phase's lower edge and samples in one evaluation per phase.
        #[range = "[1, 1000]"]
        pub phases: Option<u32> = None,
        /// Log `grad_variance` every step: the variance over all entries of the network's raw
        /// gradient (before cleaning and clipping), sony/vct's `evaluate_grad_var` measurement
        /// (lightning_cm.py:89-115), for comparing couplings. Costs a pass over the gradients.
        pub log_grad_variance: bool = false,
        /// Start from imported weights instead of an `init` artifact (ECT starts from EDM's
        /// published checkpoint): a safetensors file with EDM's tensor names for this
        /// network preset (a converted EDM checkpoint, or another tool's copy of ours) ...
        pub init_weights: Option<std::path::PathBuf> = None,
        /// ... or a file of this Hub model repo (with init_file).
        pub init_repo: Option<String> = None,
        /// The file in init_repo.
        pub init_file: Option<String> = None,
        /// Revision of init_repo.
        pub init_revision: String = "main".into(),
        /// sha256 of the imported init weights (required with init_weights/init_repo).
        pub init_sha256: Option<String> = None,
    }
}

impl TrainConfig {
    /// Imported init weights, if the config names any (checked complete).
    pub fn init_source(&self) -> anyhow::Result<Option<crate::features::weights::WeightsSource>> {
        crate::features::weights::WeightsSource::optional(&super::INIT, self.init_weights.as_ref(), self.init_repo.as_ref(), self.init_file.as_ref(), &self.init_revision, self.init_sha256.as_ref())
    }
}

/// A `TrainConfig` from TOML settings, for tests.
#[cfg(test)]
pub fn from_toml(sets: &str) -> TrainConfig {
    crate::config::from_table(toml::from_str(sets).expect("TOML"), "test").expect("a valid config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Describe;

    /// `--help` names every preset `network` accepts (it once missed mlp-small).
    #[test]
    fn the_network_doc_lists_every_preset() {
        for fields in [TrainConfig::fields(), crate::train::distill::DistillConfig::fields()] {
            let doc = fields.iter().find(|f| f.name == "network").expect("a network field").doc;
            let listed: Vec<&str> = doc.trim().trim_start_matches("Network preset:").trim_end_matches('.').split(',').map(str::trim).collect();
            let presets: Vec<&str> = crate::nn::PRESETS.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, presets, "{doc}");
        }
    }
}
