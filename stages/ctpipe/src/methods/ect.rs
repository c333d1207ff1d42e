//! ECT — easy consistency tuning (Geng et al., "Consistency Models Made Easy", ICLR 2025;
//! locuslab/ect `ECMLoss`), as its schedule: t with ln t ~ N(P_mean, P_std), r = t·(r/t)(stage)
//! from the mapping function (sigmoid or const, q, k, b), the stage advancing every
//! `stage_steps` steps (ECT: a fixed number of images, `spec::ect_stage_steps`), and the weight
//! 1/(t − r). Where r = 0 the teacher is replaced by the
//! clean sample (the boundary condition; `consistency.rs`). ECT trains with EDM's
//! preconditioning and evaluates with the σ_min-shifted one (`Precond::Ect`); its distance is
//! the unsquared L2 norm on CIFAR (pseudo-Huber with c = 0).

use super::consistency::{PairSchedule, Pairs};
use super::distance::Weighting;
use super::Progress;
use crate::schedule::{ect_ratio, ect_stage, EctMapping};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Debug, Clone, PartialEq)]
pub struct EctSchedule {
    pub p_mean: f64,
    pub p_std: f64,
    pub q: f64,
    pub k: f64,
    pub b: f64,
    pub mapping: EctMapping,
    /// Steps per stage, a real number (CIFAR: 25k iterations at batch 128, 8 stages over 200k).
    pub stage_steps: f64,
    pub weighting: Weighting,
    pub sigma_data: f64,
    pub sigma_min: f64,
    /// Where VCT measures the top weight (t_w = 80).
    pub sigma_max: f64,
    /// The largest t drawn (the LI kernel's T); unbounded for VE.
    pub t_cap: Option<f64>,
    /// Phased tuning: the phase edges; r is clamped up to the lower edge of t's phase, so that
    /// the pair stays inside one phase (where r lands on the edge the target is x_r itself).
    pub edges: Option<Vec<f64>>,
}

impl Default for EctSchedule {
    fn default() -> Self {
        EctSchedule {
            p_mean: -1.1,
            p_std: 2.0,
            q: 2.0,
            k: 8.0,
            b: 1.0,
            mapping: EctMapping::Sigmoid,
            stage_steps: 25_000.0,
            weighting: Weighting::InverseGap,
            sigma_data: 0.5,
            sigma_min: 0.003,
            sigma_max: 80.0,
            t_cap: None,
            edges: None,
        }
    }
}

impl EctSchedule {
    pub fn stage(&self, progress: Progress) -> u32 {
        ect_stage(progress.step, self.stage_steps)
    }

    /// r for a given t at this point of training.
    pub fn r_of_t(&self, t: f64, progress: Progress) -> f64 {
        t * ect_ratio(t, self.stage(progress), self.q, self.k, self.b, self.mapping)
    }
}

impl PairSchedule for EctSchedule {
    fn draw(&self, n: usize, progress: Progress, rng: &mut ChaCha8Rng) -> Pairs {
        let mut pairs = Pairs::with_capacity(n);
        for _ in 0..n {
            let z: f64 = StandardNormal.sample(rng);
            let t = (self.p_mean + self.p_std * z).exp();
            let t = self.t_cap.map_or(t, |cap| t.min(cap));
            let mut r = self.r_of_t(t, progress);
            if let Some(edges) = &self.edges {
                // Below s₀ = σ_min the model is the identity; ECT's r stands there.
                let lower = edges[crate::schedule::phase_of(edges, t)];
                if t > lower {
                    r = r.max(lower);
                }
            }
            pairs.push(t, r, self.weighting.weight(t, r, self.sigma_data));
        }
        pairs.logs.push(("stage", self.stage(progress) as f64));
        pairs
    }

    fn kl_scale(&self, progress: Progress) -> f64 {
        let t = self.sigma_max;
        self.weighting.kl_scale(t, self.r_of_t(t, progress))
    }

    fn sigma_min(&self) -> f64 {
        self.sigma_min
    }
}
