//! GC — generator-induced coupling (Issenhuth et al., "Improving Consistency Models with
//! Generator-Augmented Flows", ICML 2025; thibautissenhuth/consistency_GC
//! `train_consistency.py`).
//!
//! Per step: draw z, form x_lo = x + σ_lo·z, and with no gradient evaluate the EMA network's
//! consistency function x̂ = f_EMA(x_lo, σ_lo) (evaluation preconditioning, no dropout). Each
//! sample keeps the independent coupling with probability μ (`keep`, the code's
//! `mix_gen_induced_traj`: its mask is u > μ), otherwise its endpoint becomes x̂. Both points of
//! the pair are rebuilt from the endpoint with the same z. μ may move linearly to `keep_end`
//! over training. With μ = 1 every sample keeps the independent coupling and GC is iCT exactly
//! (the mixing draws come from their own stream).

use super::{step_noise, Coupled, Coupling};
use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::nn::dropout::Dropout;
use crate::nn::ops::select_rows;
use crate::precond::{Phase, Precond};
use candle_core::{Result, Tensor};
use rand::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Gc {
    /// μ: probability that a sample keeps the independent coupling (0.5 in the paper).
    pub keep: f64,
    /// μ at the end of training (linear in between); `keep` when unset.
    pub keep_end: Option<f64>,
}

impl Gc {
    pub fn keep_at(&self, step: u64, total: u64) -> f64 {
        let end = self.keep_end.unwrap_or(self.keep);
        self.keep + (end - self.keep) * step as f64 / total.max(1) as f64
    }
}

impl Coupling for Gc {
    fn couple(&self, ctx: &StepCtx, x0: &Tensor, pairs: &Pairs, precond: &Precond, kernel: &Kernel) -> Result<Coupled> {
        let noise = step_noise(ctx, x0)?;
        let keep = self.keep_at(ctx.progress.step, ctx.progress.total);
        let mut rng = crate::rng::stream(ctx.seed, "mix", ctx.progress.step);
        let use_gc: Vec<bool> = (0..pairs.len()).map(|_| rng.random::<f64>() > keep).collect();
        let n_gc = use_gc.iter().filter(|&&g| g).count();
        let logs = vec![("gc_fraction", n_gc as f64 / pairs.len().max(1) as f64)];
        if n_gc == 0 {
            return Ok(Coupled { endpoint: x0.clone(), noise, kl: None, logs });
        }
        // The generator's input sits at σ_lo; below σ_min (ECT's r = 0) the consistency
        // function is the identity, which evaluating at σ_min gives exactly.
        let sig: Vec<f64> = pairs.lo.iter().map(|&s| s.max(precond.sigma_min)).collect();
        let x_lo = kernel.noisy(x0, &noise, &pairs.lo)?;
        let generated = precond.apply(ctx.ema, &x_lo, &sig, Phase::Eval, &mut Dropout::off())?.detach();
        let endpoint = select_rows(&use_gc, &generated, x0)?;
        Ok(Coupled { endpoint, noise, kl: None, logs })
    }
}
