//! Metrics for the 2-D toys.

/// How samples sit on a mixture's modes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModeCoverage {
    /// Fraction of samples within `radius` of their nearest mode.
    pub near: f64,
    /// Fraction of all samples whose nearest mode is each mode.
    pub per_mode: Vec<f64>,
    pub radius: f64,
}

/// Mode coverage of `samples` for mixture `centres`.
pub fn mode_coverage(samples: &[[f64; 2]], centres: &[[f64; 2]], radius: f64) -> ModeCoverage {
    let mut counts = vec![0usize; centres.len()];
    let mut near = 0usize;
    for p in samples {
        let (k, d2) = centres
            .iter()
            .enumerate()
            .map(|(k, c)| (k, (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)))
            .fold((0, f64::INFINITY), |best, x| if x.1 < best.1 { x } else { best });
        counts[k] += 1;
        if d2 <= radius * radius {
            near += 1;
        }
    }
    let n = samples.len().max(1) as f64;
    ModeCoverage { near: near as f64 / n, per_mode: counts.iter().map(|&c| c as f64 / n).collect(), radius }
}

/// Sliced Wasserstein-2 distance between two equal-size 2-D samples: the root mean over
/// `projections` random directions (seeded) of the mean squared difference between the sorted
/// projections.
pub fn sliced_wasserstein(a: &[[f64; 2]], b: &[[f64; 2]], projections: usize, seed: u64) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    let mut rng = crate::rng::stream(seed, "swd", 0);
    let mut total = 0.0;
    for _ in 0..projections {
        let angle = rand::Rng::random::<f64>(&mut rng) * std::f64::consts::PI;
        let (c, s) = (angle.cos(), angle.sin());
        let mut pa: Vec<f64> = a[..n].iter().map(|p| p[0] * c + p[1] * s).collect();
        let mut pb: Vec<f64> = b[..n].iter().map(|p| p[0] * c + p[1] * s).collect();
        pa.sort_by(f64::total_cmp);
        pb.sort_by(f64::total_cmp);
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / n as f64;
    }
    (total / projections as f64).sqrt()
}

/// Unbiased MMD² with a Gaussian (RBF) kernel k(x, y) = exp(−‖x − y‖² / (2h²)), summed over the
/// bandwidths `h`.
pub fn mmd_rbf(a: &[[f64; 2]], b: &[[f64; 2]], bandwidths: &[f64]) -> f64 {
    let k = |x: &[f64; 2], y: &[f64; 2]| -> f64 {
        let d2 = (x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2);
        bandwidths.iter().map(|h| (-d2 / (2.0 * h * h)).exp()).sum()
    };
    let within = |s: &[[f64; 2]]| -> f64 {
        let n = s.len() as f64;
        let mut t = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if i != j {
                    t += k(&s[i], &s[j]);
                }
            }
        }
        t / (n * (n - 1.0))
    };
    let cross: f64 = a.iter().map(|x| b.iter().map(|y| k(x, y)).sum::<f64>()).sum::<f64>() / (a.len() * b.len()) as f64;
    within(a) + within(b) - 2.0 * cross
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swd_and_mmd_behave() {
        let a: Vec<[f64; 2]> = (0..400).map(|i| [(i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()]).collect();
        // A shift by (0.3, 0.4) has Wasserstein-2 distance 0.5 in every direction's average…
        let b: Vec<[f64; 2]> = a.iter().map(|p| [p[0] + 0.3, p[1] + 0.4]).collect();
        assert!(sliced_wasserstein(&a, &a, 64, 0) < 1e-12);
        // …and the sliced version averages the squared projected shift: (0.3cosθ + 0.4sinθ)²
        // over θ uniform in [0, π) is (0.09 + 0.16)/2.
        let sw = sliced_wasserstein(&a, &b, 2000, 0);
        assert!((sw - (0.25f64 / 2.0).sqrt()).abs() < 0.01, "{sw}");
        // Two point masses a distance d apart: MMD² = 2 Σ_h (1 − exp(−d²/2h²)) exactly.
        let (p, q) = (vec![[0.0, 0.0]; 5], vec![[0.3, 0.4]; 7]);
        let want: f64 = [0.1f64, 0.5].iter().map(|h| 2.0 * (1.0 - (-0.25 / (2.0 * h * h)).exp())).sum();
        assert!((mmd_rbf(&p, &q, &[0.1, 0.5]) - want).abs() < 1e-12);
        // Two independent samples of one distribution are close; a shifted one is far.
        let mut rng = crate::rng::stream(7, "test", 0);
        let mut uniform = |n: usize| -> Vec<[f64; 2]> { (0..n).map(|_| [rand::Rng::random::<f64>(&mut rng), rand::Rng::random::<f64>(&mut rng)]).collect() };
        let (odd, even) = (uniform(300), uniform(300));
        let shifted: Vec<[f64; 2]> = even.iter().map(|p| [p[0] + 0.3, p[1] + 0.4]).collect();
        let (same, far) = (mmd_rbf(&odd, &even, &[0.1, 0.5]), mmd_rbf(&odd, &shifted, &[0.1, 0.5]));
        assert!(same.abs() < 0.01 && far > 10.0 * same.abs(), "{same} {far}");
    }

    #[test]
    fn coverage_counts() {
        let c = [[0.0, 0.5], [0.0, -0.5]];
        let s = [[0.0, 0.45], [0.05, 0.5], [0.0, -0.5], [0.0, 0.0], [3.0, -0.4]];
        let m = mode_coverage(&s, &c, 0.1);
        assert_eq!(m.near, 3.0 / 5.0);
        // [0, 0] is equidistant: the first mode wins ties.
        assert_eq!(m.per_mode, vec![3.0 / 5.0, 2.0 / 5.0]);
    }
}
