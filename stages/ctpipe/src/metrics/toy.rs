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

#[cfg(test)]
mod tests {
    use super::*;

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
