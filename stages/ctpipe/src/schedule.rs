//! Noise-level schedules: the Karras grid, iCT's discretisation curriculum and discrete
//! lognormal index sampling, and ECT's mapping r(t). Free functions of the training progress,
//! never state hidden in a loss.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The Karras et al. grid, ascending: σ_i = (σ_min^{1/ρ} + i/(n−1)·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ.
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    assert!(n >= 2, "a grid needs two points");
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    let mut s: Vec<f64> = (0..n).map(|i| (lo + i as f64 / (n - 1) as f64 * (hi - lo)).powf(rho)).collect();
    // Pin the ends: the powers above round.
    s[0] = sigma_min;
    s[n - 1] = sigma_max;
    s
}

/// iCT's discretisation curriculum (Song & Dhariwal 2023): N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 with
/// K' = ⌊K / (log2⌊s1/s0⌋ + 1)⌋. For K = 400k, s0 = 10, s1 = 1280: 11, 21, …, 1281, doubling
/// every 50k steps.
pub fn ict_num_steps(step: u64, total: u64, s0: u64, s1: u64) -> usize {
    let doublings = ((s1 / s0) as f64).log2().floor() as u64 + 1;
    let k_prime = (total / doublings).max(1);
    let exp = (step / k_prime).min(63) as u32;
    let n = s0.saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX)).min(s1);
    n as usize + 1
}

/// iCT's discrete lognormal distribution over grid intervals i = 0 … n−2 (ascending grid):
/// p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std)).
pub fn lognormal_index_probs(sigmas: &[f64], p_mean: f64, p_std: f64) -> Vec<f64> {
    let cdf = |s: f64| libm::erf((s.ln() - p_mean) / (std::f64::consts::SQRT_2 * p_std));
    let raw: Vec<f64> = sigmas.windows(2).map(|w| cdf(w[1]) - cdf(w[0])).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|p| p / total).collect()
}

/// Draw an index from a categorical distribution.
pub fn sample_index(probs: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.len() - 1
}

/// ECT's mapping function variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EctMapping {
    /// r/t = 1 − q^{−(s+1)}·(1 + k·sigmoid(−b·t)) (ECT's default)
    Sigmoid,
    /// r/t = 1 − q^{−(s+1)}
    Const,
}

/// ECT's r/t at stage `stage`, clamped at 0 (Geng et al., locuslab/ect `ECMLoss.t_to_r_*`).
pub fn ect_ratio(t: f64, stage: u32, q: f64, k: f64, b: f64, mapping: EctMapping) -> f64 {
    let decay = q.powi(-(stage as i32 + 1));
    let adj = match mapping {
        EctMapping::Sigmoid => 1.0 + k / (1.0 + (b * t).exp()),
        EctMapping::Const => 1.0,
    };
    (1.0 - decay * adj).max(0.0)
}

/// ECT's stage at a step: ⌊step / stage_steps⌋, the length a real number of steps (sony/vct
/// ecm.py:70 divides as reals: `step // (total / n_stages)`).
pub fn ect_stage(step: u64, stage_steps: f64) -> u32 {
    (step as f64 / stage_steps.max(1e-9)).floor().min(u32::MAX as f64) as u32
}

/// iCT's pseudo-Huber constant: c = 0.00054·√D for D values per sample.
pub fn pseudo_huber_c(values_per_sample: usize) -> f64 {
    0.00054 * (values_per_sample as f64).sqrt()
}

/// ρ of the phase edges: EDM's sampling grid.
pub const PHASE_RHO: f64 = 7.0;

/// The edges s₀ = σ_min < s₁ < … < s_M = σ_max of M phases: M + 1 points of the Karras grid
/// (ρ = 7), i.e. evenly spaced in the index of EDM's sampling grid, as Phased Consistency Models
/// space them evenly in the index of the DDIM grid (G-U-N/Phased-Consistency-Model
/// train_pcm_lora_sd15.py:321-326, `linspace(0, 50, multiphase)` over 50 DDIM steps).
pub fn phase_edges(phases: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    karras_sigmas(phases.max(1) + 1, sigma_min, sigma_max, PHASE_RHO)
}

/// The phase m of a noise level: s_m < σ ≤ s_{m+1}; 0 at or below s₀ and M − 1 above s_M.
pub fn phase_of(edges: &[f64], sigma: f64) -> usize {
    let last = edges.len() - 2;
    (0..=last).find(|&m| sigma <= edges[m + 1]).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed independently with Python's math module:
    //   karras: [(0.002**(1/7) + i/10*(80**(1/7) - 0.002**(1/7)))**7 for i in range(11)]
    const KARRAS_11: [f64; 11] = [
        0.002, 0.016720753235, 0.0850872026894, 0.318283288839, 0.965416926332, 2.51521897615, 5.83894763101,
        12.3815761385, 24.4083417866, 45.3137340752, 80.0,
    ];
    //   p = [erf((log(s[i+1]) + 1.1)/(sqrt(2)*2)) - erf((log(s[i]) + 1.1)/(sqrt(2)*2)) for i in range(10)]
    //   normalised by sum(p)
    const PROBS_11: [f64; 10] = [
        0.0626329925063, 0.181736979711, 0.245501421967, 0.213494447023, 0.142446058024, 0.0806046216768,
        0.0410799062224, 0.0195800922413, 0.00894386841377, 0.00397961221431,
    ];

    #[test]
    fn karras_grid_matches_reference() {
        let s = karras_sigmas(11, 0.002, 80.0, 7.0);
        for (a, b) in s.iter().zip(KARRAS_11) {
            assert!((a - b).abs() <= 1e-10 * b, "{a} vs {b}");
        }
    }

    #[test]
    fn ict_curriculum_for_400k() {
        let k = 400_000;
        let got: Vec<usize> = (0..8).map(|i| ict_num_steps(i * 50_000, k, 10, 1280)).collect();
        assert_eq!(got, [11, 21, 41, 81, 161, 321, 641, 1281]);
        assert_eq!(ict_num_steps(49_999, k, 10, 1280), 11);
        assert_eq!(ict_num_steps(399_999, k, 10, 1280), 1281);
        assert_eq!(ict_num_steps(10_000_000, k, 10, 1280), 1281, "capped at s1 + 1");
    }

    #[test]
    fn lognormal_probabilities_match_erf_formula() {
        let p = lognormal_index_probs(&KARRAS_11, -1.1, 2.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for (a, b) in p.iter().zip(PROBS_11) {
            assert!((a - b).abs() < 1e-11, "{a} vs {b}");
        }
        // Large grids too.
        let s = karras_sigmas(1281, 0.002, 80.0, 7.0);
        assert!((lognormal_index_probs(&s, -1.1, 2.0).iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn categorical_sampling_follows_probabilities() {
        let mut rng = crate::rng::stream(0, "t", 0);
        let mut counts = [0usize; 10];
        for _ in 0..200_000 {
            counts[sample_index(&PROBS_11, &mut rng)] += 1;
        }
        for (c, p) in counts.iter().zip(PROBS_11) {
            assert!((*c as f64 / 200_000.0 - p).abs() < 0.004);
        }
    }

    /// The r/t table of the spec (methods.md §5, q = 2, k = 8, b = 1), to its three decimals.
    /// Exact values (Python: max(0, 1 - 2**-(s+1)*(1 + 8/(1 + exp(t))))) differ from three of the
    /// spec's roundings by up to 5.4e-4 (stage 2 t = 0.5 is 0.49746, printed 0.498; stage 7
    /// t = 0.002 is 0.98048, printed 0.981; stage 2 t = 0.002 is 0.3755, printed 0.376).
    #[test]
    fn ect_ratio_table() {
        let ts = [0.002, 0.1, 0.5, 1.0, 2.0, 5.0, 80.0];
        let table: [(u32, [f64; 7]); 5] = [
            (0, [0.0, 0.0, 0.0, 0.0, 0.023, 0.473, 0.500]),
            (1, [0.0, 0.0, 0.0, 0.212, 0.512, 0.737, 0.750]),
            (2, [0.376, 0.400, 0.498, 0.606, 0.756, 0.868, 0.875]),
            (4, [0.844, 0.850, 0.874, 0.902, 0.939, 0.967, 0.969]),
            (7, [0.981, 0.981, 0.984, 0.988, 0.992, 0.996, 0.996]),
        ];
        for (stage, row) in table {
            for (t, want) in ts.iter().zip(row) {
                let got = ect_ratio(*t, stage, 2.0, 8.0, 1.0, EctMapping::Sigmoid);
                assert!((got - want).abs() <= 1e-3, "stage {stage} t {t}: {got} vs {want}");
            }
        }
        // Exact spot values.
        assert!((ect_ratio(0.5, 2, 2.0, 8.0, 1.0, EctMapping::Sigmoid) - 0.4974593312018546).abs() < 1e-14);
        // Stage 0 gives r = 0 (denoising) below t ≈ ln 7.
        assert_eq!(ect_ratio(1.94, 0, 2.0, 8.0, 1.0, EctMapping::Sigmoid), 0.0);
        assert!(ect_ratio(1.96, 0, 2.0, 8.0, 1.0, EctMapping::Sigmoid) > 0.0);
        assert_eq!(ect_ratio(3.0, 3, 2.0, 8.0, 1.0, EctMapping::Const), 1.0 - 1.0 / 16.0);
        assert_eq!(ect_stage(74_999, 25_000.0), 2);
        // 150 steps in 8 stages: 18.75 steps each; stage 4 starts at step 75, not 76.
        assert_eq!((ect_stage(74, 18.75), ect_stage(75, 18.75)), (3, 4));
    }

    #[test]
    fn pseudo_huber_constant() {
        assert!((pseudo_huber_c(3072) - 0.0299298379547902).abs() < 1e-15);
        assert!((pseudo_huber_c(64 * 64 * 3) - 0.0598596759095804).abs() < 1e-15);
    }

    /// Two phases on [0.002, 80] split at ((0.002^(1/7) + 80^(1/7))/2)^7; a level belongs to
    /// the phase whose upper edge it does not exceed.
    #[test]
    fn phase_edges_and_membership() {
        let e = phase_edges(2, 0.002, 80.0);
        let mid = ((0.002f64.powf(1.0 / 7.0) + 80f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert_eq!(e.len(), 3);
        assert!((e[1] - mid).abs() < 1e-12 && e[0] == 0.002 && e[2] == 80.0, "{e:?}");
        assert_eq!([phase_of(&e, 0.001), phase_of(&e, 0.002), phase_of(&e, 0.0021), phase_of(&e, e[1]), phase_of(&e, e[1] * 1.0001), phase_of(&e, 80.0), phase_of(&e, 500.0)], [0, 0, 0, 0, 1, 1, 1]);
    }
}
