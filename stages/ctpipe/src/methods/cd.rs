//! CD — consistency distillation (Song et al. 2023, "Consistency Models"; methods.md §3), as
//! its schedule: the fixed Karras grid of N levels (N = 18, ρ = 7 on CIFAR-10), an interval
//! index drawn uniformly, the pair (σ_{n+1}, σ_n) and the uniform weight λ = 1.
//!
//! The rest of CD is the consistency loss with `Target::Ode`: the target point is one teacher
//! ODE step (Heun by default, Euler as an option; `crate::ode`) from the student's point
//! x + σ_{n+1}·z down to σ_n, evaluated by the target network (the current weights without
//! gradient for μ = 0, or an EMA of them with rate μ) with the student's dropout masks. The
//! student starts from the teacher's weights (`train::distill`).

use super::consistency::{PairSchedule, Pairs};
use super::distance::Weighting;
use super::Progress;
use crate::schedule::karras_sigmas;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// CD's smallest noise level (CM's σ_min), unless `sigma_min` sets another.
pub const SIGMA_MIN: f64 = 0.002;

#[derive(Debug, Clone, PartialEq)]
pub struct CdSchedule {
    /// The grid, ascending: σ_min = σ_1 < … < σ_N = σ_max.
    pub sigmas: Vec<f64>,
    pub weighting: Weighting,
    pub sigma_data: f64,
}

impl CdSchedule {
    pub fn new(levels: usize, sigma_min: f64, sigma_max: f64, rho: f64, weighting: Weighting, sigma_data: f64) -> CdSchedule {
        CdSchedule { sigmas: karras_sigmas(levels, sigma_min, sigma_max, rho), weighting, sigma_data }
    }
}

impl PairSchedule for CdSchedule {
    fn draw(&self, n: usize, _progress: Progress, rng: &mut ChaCha8Rng) -> Pairs {
        let mut pairs = Pairs::with_capacity(n);
        for _ in 0..n {
            let i = rng.random_range(0..self.sigmas.len() - 1);
            let (lo, hi) = (self.sigmas[i], self.sigmas[i + 1]);
            pairs.push(hi, lo, self.weighting.weight(hi, lo, self.sigma_data));
        }
        pairs
    }

    fn kl_scale(&self, _progress: Progress) -> f64 {
        let n = self.sigmas.len();
        self.weighting.kl_scale(self.sigmas[n - 1], self.sigmas[n - 2])
    }

    fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }
}

#[cfg(test)]
mod tests;
