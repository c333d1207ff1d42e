//! OT — the minibatch optimal-transport coupling, a baseline between the independent coupling
//! and VC (sony/vct `coupling: 'ot'`, models/cm_base.py:44-45, :57-60;
//! utils/optimal_transport.py:47-48, :78-87, :116-121).
//!
//! Within each batch the step's noise draws are reassigned to the clean samples by the exact
//! assignment that minimises Σ_i ‖x_i − σ_max·z_π(i)‖². sony/vct solves it with POT's `emd` on
//! uniform marginals; for two batches of equal size its plan is a permutation, from which it
//! draws the pairs without replacement — every pair of the permutation once, in a shuffled
//! order. Here the data keep their order and the noise is permuted: the same set of pairs.
//! The assignment is scipy's `linear_sum_assignment` (Crouse's shortest augmenting path) as the
//! `lsap` crate ports it, on the f64 costs: about 20 ms for a batch of 256 on one CPU core.

use super::{Coupled, Coupling};
use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::nn::ops::to_f64_vec;
use crate::precond::Precond;
use candle_core::{Result, Tensor};

pub struct Ot {
    /// The noise scale the cost compares the data with (σ_max, as sony/vct).
    pub sigma_max: f64,
}

/// The cost matrix C_ij = ‖x_i − scale·z_j‖², row-major, on the host in f64.
pub fn cost_matrix(x: &Tensor, z: &Tensor, scale: f64) -> Result<Vec<f64>> {
    let n = x.dim(0)?;
    let d = x.elem_count() / n.max(1);
    let (xv, zv) = (to_f64_vec(x)?, to_f64_vec(z)?);
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        let a = &xv[i * d..(i + 1) * d];
        for j in 0..n {
            let b = &zv[j * d..(j + 1) * d];
            c[i * n + j] = a.iter().zip(b).map(|(p, q)| (p - scale * q).powi(2)).sum();
        }
    }
    Ok(c)
}

/// The permutation π minimising Σ_i C[i][π(i)] for a square cost matrix (n × n, row-major).
pub fn assignment(cost: &[f64], n: usize) -> Result<Vec<usize>> {
    // lsap answers rows in order 0..n with their columns; it fails only on non-finite costs.
    let (_, cols) = lsap::solve(n, n, &cost.to_vec(), false).map_err(|e| candle_core::Error::Msg(format!("OT coupling: no assignment ({e}); are the batch's values finite?")))?;
    Ok(cols)
}

impl Coupling for Ot {
    fn couple(&self, ctx: &StepCtx, x0: &Tensor, _pairs: &Pairs, _precond: &Precond, _kernel: &Kernel) -> Result<Coupled> {
        // The assignment pairs the whole batch: a data-parallel process gathers it, solves the
        // same problem as one process would, and keeps its rows.
        let x0 = &ctx.gather_rows(x0)?;
        let z = super::batch_noise(ctx, x0.dims(), x0)?;
        let n = x0.dim(0)?;
        let cost = cost_matrix(x0, &z, self.sigma_max)?;
        let perm = assignment(&cost, n)?;
        let before: f64 = (0..n).map(|i| cost[i * n + i]).sum::<f64>() / n as f64;
        let after: f64 = (0..n).map(|i| cost[i * n + perm[i]]).sum::<f64>() / n as f64;
        let idx = Tensor::from_vec(perm.iter().map(|&j| j as u32).collect::<Vec<_>>(), n, x0.device())?;
        let noise = z.index_select(&idx, 0)?;
        let logs = vec![("ot_cost_independent", before), ("ot_cost", after)];
        let (endpoint, noise) = match ctx.shard {
            Some(s) => (s.narrow(x0)?, s.narrow(&noise)?),
            None => (x0.clone(), noise),
        };
        Ok(Coupled { endpoint, noise, kl: None, logs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against every permutation of a small batch: the assignment reaches the least total cost.
    #[test]
    fn assignment_is_optimal_by_enumeration() {
        let dev = Device::Cpu;
        for seed in 0..20u64 {
            let n = 6;
            let x = crate::rng::normal(&mut crate::rng::stream(seed, "x", 0), (n, 3), candle_core::DType::F32, &dev).unwrap();
            let z = crate::rng::normal(&mut crate::rng::stream(seed, "z", 0), (n, 3), candle_core::DType::F32, &dev).unwrap();
            let c = cost_matrix(&x, &z, 2.0).unwrap();
            let perm = assignment(&c, n).unwrap();
            let total = |p: &[usize]| -> f64 { (0..n).map(|i| c[i * n + p[i]]).sum() };
            let mut best = f64::INFINITY;
            let mut p: Vec<usize> = (0..n).collect();
            permutations(&mut p, 0, &mut |q| best = best.min(total(q)));
            let mut sorted = perm.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            assert!((total(&perm) - best).abs() <= 1e-9 * best, "seed {seed}: {} vs best {best}", total(&perm));
        }
    }

    fn permutations(p: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == p.len() {
            f(p);
            return;
        }
        for i in k..p.len() {
            p.swap(k, i);
            permutations(p, k + 1, f);
            p.swap(k, i);
        }
    }

    /// The coupling only reorders the step's noise, and lowers the batch's transport cost.
    #[test]
    fn the_noise_is_the_steps_noise_reordered() {
        let cfg = crate::nn::preset("mlp-small", crate::data::schema::SampleKind::Points { dim: 2 }, 1, None).unwrap();
        let w = crate::model::Weights::init(&cfg, 1, &Device::Cpu).unwrap();
        let ctx = StepCtx { seed: 4, progress: crate::methods::Progress { step: 3, total: 10 }, net: &w.net, ema: &w.net, encoder: None, target: None, teacher: None, labels: None, class_labels: None, pool: None, shard: None };
        let x0 = crate::rng::normal(&mut crate::rng::stream(0, "x", 0), (32, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let out = Ot { sigma_max: 5.0 }.couple(&ctx, &x0, &Pairs::default(), &Precond { kind: crate::precond::PrecondKind::Cm, sigma_data: 0.5, sigma_min: 0.002, t_max: 5.0, phases: None }, &Kernel::Ve).unwrap();
        let z: Vec<Vec<f32>> = crate::coupling::step_noise(&ctx, &x0).unwrap().to_vec2().unwrap();
        let mut got: Vec<Vec<f32>> = out.noise.to_vec2().unwrap();
        assert_ne!(got, z, "reordered");
        let key = |v: &Vec<f32>| (v[0].to_bits(), v[1].to_bits());
        let mut want = z.clone();
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want, "the same draws");
        let log = |k: &str| out.logs.iter().find(|(n, _)| *n == k).unwrap().1;
        assert!(log("ot_cost") < log("ot_cost_independent"));
    }
}
