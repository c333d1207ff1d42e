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
//! (the mixing draws come from their own stream). The generated endpoints' transport cost
//! ‖x̂ − z‖² is logged beside the independent one's, per σ_lo bin (the paper's measurement).

use super::{step_noise, Coupled, Coupling};
use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::nn::dropout::Dropout;
use crate::nn::ops::{per_sample_sum, select_rows, to_f64_vec};
use crate::precond::{Phase, Precond};
use candle_core::{Result, Tensor};
use rand::Rng;

/// The σ_lo bins of the training-time transport cost — [0, 0.2), [0.2, 1), [1, ∞) — with their
/// metric names.
const BINS: &[(f64, &str, &str)] = &[
    (0.2, "transport_gc_lo", "transport_ic_lo"),
    (1.0, "transport_gc_mid", "transport_ic_mid"),
    (f64::INFINITY, "transport_gc_hi", "transport_ic_hi"),
];

/// GC's claim, logged as it trains: over the samples whose endpoint was generated, binned by
/// σ_lo, the mean of ‖x̂ − z‖² (the generator-induced coupling's transport cost) beside ‖x − z‖²
/// (the independent coupling's, for the same samples and noise). Empty bins are not logged.
fn transport_logs(use_gc: &[bool], lo: &[f64], x0: &Tensor, generated: &Tensor, noise: &Tensor) -> Result<Vec<(&'static str, f64)>> {
    let per = |a: &Tensor| -> Result<Vec<f64>> { to_f64_vec(&per_sample_sum(&a.sub(noise)?.sqr()?)?) };
    let (gc_cost, ic_cost) = (per(generated)?, per(x0)?);
    let mut logs = Vec::new();
    let mut floor = 0.0;
    for &(top, gc_name, ic_name) in BINS {
        let idx: Vec<usize> = (0..use_gc.len()).filter(|&i| use_gc[i] && lo[i] >= floor && lo[i] < top).collect();
        floor = top;
        if idx.is_empty() {
            continue;
        }
        let mean = |v: &[f64]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
        logs.push((gc_name, mean(&gc_cost)));
        logs.push((ic_name, mean(&ic_cost)));
    }
    Ok(logs)
}

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
        let use_gc: Vec<bool> = ctx.draw_rows(pairs.len(), |all| (0..all).map(|_| rng.random::<f64>() > keep).collect());
        let n_gc = use_gc.iter().filter(|&&g| g).count();
        let logs = vec![("gc_fraction", n_gc as f64 / pairs.len().max(1) as f64)];
        if n_gc == 0 {
            return Ok(Coupled { endpoint: x0.clone(), noise, kl: None, logs });
        }
        // The generator's input sits at σ_lo; below σ_min (ECT's r = 0) the consistency
        // function is the identity, which evaluating at σ_min gives exactly.
        let sig: Vec<f64> = pairs.lo.iter().map(|&s| s.max(precond.sigma_min)).collect();
        let x_lo = kernel.noisy(x0, &noise, &pairs.lo)?;
        let generated = precond.apply_cond(ctx.ema, &x_lo, &sig, ctx.class_labels, Phase::Eval, &mut Dropout::off())?.detach();
        let endpoint = select_rows(&use_gc, &generated, x0)?;
        let mut logs = logs;
        logs.extend(transport_logs(&use_gc, &pairs.lo, x0, &generated, &noise)?);
        Ok(Coupled { endpoint, noise, kl: None, logs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Means over the generated samples of each bin, by hand; unused samples and empty bins
    /// leave no trace.
    #[test]
    fn transport_is_logged_per_bin_for_generated_samples() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0f32, 0.5], [0.0, -0.5], [0.0, 0.5], [1.0, 1.0]], &dev).unwrap();
        let generated_pts = Tensor::new(&[[0f32, 1.0], [0.0, -1.0], [3.0, 0.0], [9.0, 9.0]], &dev).unwrap();
        let z = Tensor::new(&[[0f32, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], &dev).unwrap();
        let logs = transport_logs(&[true, true, true, false], &[0.1, 0.1, 0.5, 0.1], &x0, &generated_pts, &z).unwrap();
        // Bin [0, 0.2): samples 0 and 1: ‖x̂ − z‖² = 0 and 1, ‖x − z‖² = 0.25 and 0.25.
        // Bin [0.2, 1): sample 2: 4 and 1.25. Sample 3 is not generated; [1, ∞) is empty.
        assert_eq!(logs, vec![("transport_gc_lo", 0.5), ("transport_ic_lo", 0.25), ("transport_gc_mid", 4.0), ("transport_ic_mid", 1.25)]);
    }
}
