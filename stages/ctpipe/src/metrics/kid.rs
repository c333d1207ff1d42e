//! Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
//! squared MMD between two feature sets under the cubic polynomial kernel
//! k(x, y) = (x·y / d + 1)³, averaged over random subsets of equal size.
//!
//! The protocol of StyleGAN2-ADA's `metrics/kernel_inception_distance.py` (which clean-fid and
//! torch-fidelity follow): `subsets` draws of m = min(n₁, n₂, max_subset_size) rows from each
//! set without replacement; per subset
//!   (Σ_{i≠j} k(xᵢ, xⱼ) + Σ_{i≠j} k(yᵢ, yⱼ)) / (m (m − 1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m².
//! The mean over subsets is KID; the standard deviation over subsets (torch-fidelity reports
//! it) says how much the subsets disagree. Subsets are drawn from a seeded ChaCha stream.

use anyhow::{ensure, Result};
use faer::Mat;
use rand::seq::index::sample;

/// KID's protocol settings (StyleGAN2-ADA's defaults: 100 subsets of at most 1000).
#[derive(Debug, Clone, Copy)]
pub struct KidConfig {
    pub subsets: usize,
    pub max_subset_size: usize,
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        KidConfig { subsets: 100, max_subset_size: 1000, seed: 0 }
    }
}

/// KID's mean and standard deviation over subsets, and the subset size used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subset_size: usize,
}

/// KID between two feature sets, each row-major n × d.
pub fn kid(a: &[f32], b: &[f32], d: usize, cfg: KidConfig) -> Result<Kid> {
    ensure!(d > 0 && a.len() % d == 0 && b.len() % d == 0, "feature sets of {} and {} values are not rows of {d}", a.len(), b.len());
    let (na, nb) = (a.len() / d, b.len() / d);
    let m = na.min(nb).min(cfg.max_subset_size);
    ensure!(m >= 2, "KID needs at least 2 samples on each side (got {na} and {nb})");
    ensure!(cfg.subsets >= 1, "KID needs at least one subset");
    let mut rng = crate::rng::stream(cfg.seed, "kid-subsets", 0);
    let rows = |set: &[f32], idx: &[usize]| Mat::from_fn(idx.len(), d, |i, j| set[idx[i] * d + j] as f64);
    let mut values = Vec::with_capacity(cfg.subsets);
    for _ in 0..cfg.subsets {
        let ia = sample(&mut rng, na, m).into_vec();
        let ib = sample(&mut rng, nb, m).into_vec();
        let (x, y) = (rows(a, &ia), rows(b, &ib));
        values.push(unbiased_mmd2(&x, &y, d));
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt() } else { 0.0 };
    Ok(Kid { mean, std, subset_size: m })
}

/// The unbiased MMD² of two m × d samples under (x·y / d + 1)³.
fn unbiased_mmd2(x: &Mat<f64>, y: &Mat<f64>, d: usize) -> f64 {
    let m = x.nrows() as f64;
    let k = |g: Mat<f64>| -> Mat<f64> { Mat::from_fn(g.nrows(), g.ncols(), |i, j| (g[(i, j)] / d as f64 + 1.0).powi(3)) };
    let (kxx, kyy, kxy) = (k(x * x.transpose()), k(y * y.transpose()), k(x * y.transpose()));
    let off_diagonal = |g: &Mat<f64>| -> f64 { (0..g.nrows()).flat_map(|i| (0..g.ncols()).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| g[(i, j)]).sum() };
    let cross: f64 = (0..kxy.nrows()).flat_map(|i| (0..kxy.ncols()).map(move |j| (i, j))).map(|(i, j)| kxy[(i, j)]).sum();
    (off_diagonal(&kxx) + off_diagonal(&kyy)) / (m * (m - 1.0)) - 2.0 * cross / (m * m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand, d = 1: x = {0, 1}, y = {1, 2}, k(a, b) = (ab + 1)³. Off-diagonal sums: 2·k(0,1)
    /// = 2 and 2·k(1,2) = 54; cross sum k(0,1) + k(0,2) + k(1,1) + k(1,2) = 1 + 1 + 8 + 27 = 37.
    /// MMD² = (2 + 54)/2 − 2·37/4 = 9.5.
    #[test]
    fn two_points_by_hand() {
        let r = kid(&[0.0, 1.0], &[1.0, 2.0], 1, KidConfig { subsets: 3, max_subset_size: 1000, seed: 7 }).unwrap();
        assert_eq!(r.subset_size, 2);
        // Every subset is the whole set (in some order): the same value each time.
        assert!((r.mean - 9.5).abs() < 1e-12 && r.std < 1e-12, "{r:?}");
    }

    /// d = 2 with the 1/d scaling, by hand: x = {(1,0), (0,1)}, y = {(1,1), (0,0)}.
    /// x·x' = 0 → k = 1 (twice); y·y' = 0 → k = 1 (twice); cross: (1,0)·(1,1) = 1 → 1.5³,
    /// (1,0)·(0,0) = 0 → 1, (0,1)·(1,1) = 1 → 1.5³, (0,1)·(0,0) → 1; sum = 2 + 2·3.375 = 8.75.
    /// MMD² = (2 + 2)/2 − 2·8.75/4 = −2.375 (the unbiased estimate can be negative).
    #[test]
    fn scaling_by_dimension_by_hand() {
        let r = kid(&[1.0, 0.0, 0.0, 1.0], &[1.0, 1.0, 0.0, 0.0], 2, KidConfig { subsets: 1, ..Default::default() }).unwrap();
        assert!((r.mean + 2.375).abs() < 1e-12, "{r:?}");
    }

    /// Subsets: the size is capped, the draws are seeded (same seed, same value), and two
    /// samples of one distribution score near 0 while a shifted one does not.
    #[test]
    fn subsets_seeded_and_sensitive_to_a_shift() {
        let mut rng = crate::rng::stream(1, "test", 0);
        let d = 8;
        let a = crate::rng::normal_vec(&mut rng, 300 * d);
        let b = crate::rng::normal_vec(&mut rng, 300 * d);
        let shifted: Vec<f32> = crate::rng::normal_vec(&mut rng, 300 * d).into_iter().map(|v| v + 1.0).collect();
        let cfg = KidConfig { subsets: 20, max_subset_size: 100, seed: 3 };
        let same = kid(&a, &b, d, cfg).unwrap();
        assert_eq!(same.subset_size, 100);
        assert_eq!(same, kid(&a, &b, d, cfg).unwrap());
        assert_ne!(same.mean, kid(&a, &b, d, KidConfig { seed: 4, ..cfg }).unwrap().mean);
        let far = kid(&a, &shifted, d, cfg).unwrap();
        assert!(same.mean.abs() < 0.05 && far.mean > 10.0 * same.mean.abs().max(0.01), "{same:?} {far:?}");
    }
}
