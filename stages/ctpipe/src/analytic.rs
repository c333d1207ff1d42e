//! The ideal denoiser of a Gaussian mixture, in closed form: an exact teacher for tests.
//!
//! For data x ~ Σ_k π_k N(μ_k, s²I) and y = x + σn, p(y | k) = N(μ_k, (s² + σ²)I), so
//! D(y, σ) = E[x | y] = Σ_k w_k(y)·(μ_k + s²/(s² + σ²)·(y − μ_k)) with posterior weights
//! w_k ∝ π_k·exp(−‖y − μ_k‖² / (2(s² + σ²))). Computed on the host in f64.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    pub means: Vec<Vec<f64>>,
    pub weights: Vec<f64>,
    /// The components' common standard deviation s.
    pub std: f64,
}

impl GaussianMixture {
    /// The two-Gaussians toy: means (0, ±0.5), std 0.01, equal weights.
    pub fn two_gaussians() -> GaussianMixture {
        GaussianMixture { means: vec![vec![0.0, 0.5], vec![0.0, -0.5]], weights: vec![0.5, 0.5], std: 0.01 }
    }

    /// D(y, σ) for one point.
    pub fn denoise_point(&self, y: &[f64], sigma: f64) -> Vec<f64> {
        let v = self.std * self.std + sigma * sigma;
        let logits: Vec<f64> = self
            .means
            .iter()
            .zip(&self.weights)
            .map(|(m, w)| w.ln() - m.iter().zip(y).map(|(a, b)| (b - a) * (b - a)).sum::<f64>() / (2.0 * v))
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = e.iter().sum();
        let shrink = self.std * self.std / v;
        let mut out = vec![0.0; y.len()];
        for (m, ek) in self.means.iter().zip(&e) {
            for (o, (yi, mi)) in out.iter_mut().zip(y.iter().zip(m)) {
                *o += ek / total * (mi + shrink * (yi - mi));
            }
        }
        out
    }

    /// D(y, σ) for a batch (N, d) with one σ per row.
    pub fn denoise(&self, y: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        let rows: Vec<Vec<f64>> = y.to_dtype(candle_core::DType::F64)?.to_vec2()?;
        let out: Vec<f64> = rows.iter().zip(sigmas).flat_map(|(r, &s)| self.denoise_point(r, s)).collect();
        Tensor::from_vec(out, y.shape(), y.device())?.to_dtype(y.dtype())
    }
}

impl crate::ode::Denoiser for GaussianMixture {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        GaussianMixture::denoise(self, x, sigmas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let g = GaussianMixture::two_gaussians();
        // σ → 0: the identity (y itself is the clean sample).
        let d = g.denoise_point(&[0.003, 0.49], 1e-6);
        assert!((d[0] - 0.003).abs() < 1e-8 && (d[1] - 0.49).abs() < 1e-8);
        // σ → ∞: the data mean (0, 0).
        let d = g.denoise_point(&[3.0, 7.0], 1e6);
        assert!(d[0].abs() < 1e-9 && d[1].abs() < 1e-6);
        // Symmetric point: equal weights, mean of the two shrunk estimates.
        let d = g.denoise_point(&[0.0, 0.0], 0.1);
        assert!(d[1].abs() < 1e-12);
    }
}
