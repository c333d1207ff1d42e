//! iCT — improved consistency training (Song & Dhariwal 2023, "Improved Techniques for
//! Training Consistency Models"), as its schedule: Karras grid with ρ = 7 over
//! [σ_min, σ_max] with N(k) points (the discretisation curriculum), an interval index drawn
//! from the discrete lognormal (P_mean −1.1, P_std 2.0), the pair (σ_{i+1}, σ_i) and the
//! weight 1/(σ_{i+1} − σ_i). The rest of iCT — pseudo-Huber with c = 0.00054·√D, the current
//! network as teacher without gradient, one noise draw and one dropout mask for both passes —
//! is in `consistency.rs`; GC and VCT run on this same schedule.

use super::consistency::{PairSchedule, Pairs};
use super::distance::Weighting;
use super::Progress;
use crate::schedule::{ict_num_steps, karras_sigmas, lognormal_index_probs, sample_index};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct IctSchedule {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// Grid size at the start of the curriculum (s0 = 10).
    pub s0: u64,
    /// Grid size at the end (s1 = 1280).
    pub s1: u64,
    pub p_mean: f64,
    pub p_std: f64,
    pub weighting: Weighting,
    pub sigma_data: f64,
}

impl Default for IctSchedule {
    fn default() -> Self {
        IctSchedule {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s0: 10,
            s1: 1280,
            p_mean: -1.1,
            p_std: 2.0,
            weighting: Weighting::InverseGap,
            sigma_data: 0.5,
        }
    }
}

impl IctSchedule {
    /// The grid at this point of training.
    pub fn grid(&self, progress: Progress) -> Vec<f64> {
        let n = ict_num_steps(progress.step, progress.total, self.s0, self.s1);
        karras_sigmas(n, self.sigma_min, self.sigma_max, self.rho)
    }
}

impl PairSchedule for IctSchedule {
    fn draw(&self, n: usize, progress: Progress, rng: &mut ChaCha8Rng) -> Pairs {
        let sigmas = self.grid(progress);
        let probs = lognormal_index_probs(&sigmas, self.p_mean, self.p_std);
        let mut pairs = Pairs::with_capacity(n);
        for _ in 0..n {
            let i = sample_index(&probs, rng);
            let (lo, hi) = (sigmas[i], sigmas[i + 1]);
            pairs.push(hi, lo, self.weighting.weight(hi, lo, self.sigma_data));
        }
        pairs.logs.push(("n_k", sigmas.len() as f64));
        pairs
    }

    /// β/(σ_N − σ_{N−1}) whatever the weighting (sony/vct ict.py:148; its iCT has only 1/Δσ).
    fn kl_scale(&self, progress: Progress) -> f64 {
        let s = self.grid(progress);
        let n = s.len();
        Weighting::InverseGap.kl_scale(s[n - 1], s[n - 2])
    }

    fn sigma_min(&self) -> f64 {
        self.sigma_min
    }
}
