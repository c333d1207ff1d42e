//! Training methods: each turns a clean batch into one loss value per sample.
//!
//! A method is the combination of three independent axes (aesthetics.md §7.2):
//! - a **schedule** that draws noise-level pairs (σ_hi, σ_lo) and their weights — iCT's
//!   discrete curriculum ([`ict`]) or ECT's continuous mapping r(t) ([`ect`]);
//! - a **coupling** that pairs each clean sample with its noise — independent, generator-induced
//!   ([`crate::coupling::gc`]) or learned variational ([`crate::coupling::vc`]);
//! - a **target**: the standard one, SCT's variance-reduced one ([`sct`]), or a teacher's ODE
//!   step on CD's fixed grid ([`cd`]).
//!
//! [`consistency`] composes them; [`edm`] is plain denoising (pre-training, teachers). The
//! training loop only sees the [`Method`] trait. Every random draw comes from a stream keyed by
//! (seed, purpose, step), passed in through [`StepCtx`].

pub mod cd;
pub mod consistency;
pub mod distance;
pub mod ect;
pub mod edm;
pub mod ict;
pub mod sct;
pub mod spec;

use crate::nn::Network;
use crate::parallel::Shard;
use crate::ode::Denoiser;
use crate::precond::Precond;
use candle_core::{Result, Tensor};

/// Where training stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
}

/// Everything a method may use for one step besides the clean batch.
pub struct StepCtx<'a> {
    pub seed: u64,
    pub progress: Progress,
    /// The network being trained (student and, without gradient, teacher).
    pub net: &'a Network,
    /// Its EMA (GC's generator).
    pub ema: &'a Network,
    /// VCT's encoder (trained jointly) and its EMA (for sampling).
    pub encoder: Option<&'a Network>,
    /// The network that computes the target, without gradient: an EMA of `net` with rate μ
    /// (`target_ema`); `None`: `net` itself (μ = 0, iCT and CD on CIFAR-10).
    pub target: Option<&'a Network>,
    /// CD's teacher, whose ODE step gives the target point.
    pub teacher: Option<&'a dyn Denoiser>,
    /// The batch's class labels.
    pub labels: Option<&'a [u32]>,
    /// The same one-hot (N, classes), for a class-conditional network (None: unconditional).
    pub class_labels: Option<&'a Tensor>,
    /// SCT's extra references for this step (`Method::reference_pool`).
    pub pool: Option<&'a sct::Pool>,
    /// In a data-parallel run, which rows of the step's batch this process computes (`x0`,
    /// `labels` and `class_labels` hold those rows only); `None`: the whole batch. Every draw
    /// goes through [`StepCtx::draw_rows`] and friends, so sample i gets the same draws
    /// whatever the number of processes.
    pub shard: Option<Shard<'a>>,
}

impl StepCtx<'_> {
    /// The size of the whole batch, given this process's `n` rows.
    pub fn batch_size(&self, n: usize) -> usize {
        self.shard.map_or(n, |s| s.full)
    }

    /// Draw per-sample values for the whole batch (`draw(batch size)`), keep this process's.
    pub fn draw_rows<T: Clone>(&self, n: usize, draw: impl FnOnce(usize) -> Vec<T>) -> Vec<T> {
        let all = draw(self.batch_size(n));
        match self.shard {
            Some(s) => s.rows(&all),
            None => all,
        }
    }

    /// A dropout recorder for this step's `purpose` stream, drawing the whole batch's masks.
    pub fn dropout(&self, purpose: &str) -> crate::nn::dropout::Dropout {
        let rng = crate::rng::stream(self.seed, purpose, self.progress.step);
        match self.shard {
            Some(s) => crate::nn::dropout::Dropout::record_rows(rng, s.offset, s.full),
            None => crate::nn::dropout::Dropout::record(rng),
        }
    }

    /// Every process's rows of `mine` (the whole batch's), for what needs the whole batch.
    pub fn gather_rows(&self, mine: &Tensor) -> Result<Tensor> {
        match self.shard {
            Some(s) => s.gather(mine),
            None => Ok(mine.clone()),
        }
    }

    /// The whole batch's labels (this process's `labels` when not sharded).
    pub fn batch_labels(&self) -> Option<&[u32]> {
        match self.shard {
            Some(s) => s.batch_labels,
            None => self.labels,
        }
    }
}

/// A method's result for one batch.
pub struct LossOutput {
    /// One loss value per sample; the loop averages them.
    pub per_sample: Tensor,
    /// Scalars for the metrics table (N(k), stage, KL, …).
    pub logs: Vec<(&'static str, f64)>,
}

pub trait Method: Send + Sync {
    /// The loss for a batch of clean samples `x0` (values in [-1, 1]).
    fn loss(&self, ctx: &StepCtx, x0: &Tensor) -> Result<LossOutput>;
    /// The preconditioning the trained network is evaluated with (sampling).
    fn precond(&self) -> Precond;
    /// How many training images besides the batch the loop draws per step as SCT's reference
    /// pool (`StepCtx::pool`).
    fn reference_pool(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod recompute;
