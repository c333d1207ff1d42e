//! Feature statistics: mean and covariance in f64, accumulated batch by batch, saved as
//! safetensors (`mu` [D], `sigma` [D, D], `count` [1]).
//!
//! Covariances use N − 1, as `np.cov` does in pytorch-fid. Sums are taken around a shift (the
//! first batch's mean), so the one-pass formula keeps its precision for features far from 0.

use crate::error::{bad_input, TagContext};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use std::collections::HashMap;
use std::path::Path;

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub mean: Vec<f64>,
    /// Row-major D × D.
    pub cov: Vec<f64>,
    pub count: u64,
}

impl FeatureStats {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn cov_mat(&self) -> Mat<f64> {
        let d = self.dim();
        Mat::from_fn(d, d, |i, j| self.cov[i * d + j])
    }

    /// Save with an optional description (one metadata entry).
    pub fn save(&self, path: &Path, description: Option<&str>) -> Result<()> {
        let d = self.dim();
        let tensors = vec![
            ("mu".to_string(), Tensor::from_slice(&self.mean, d, &Device::Cpu)?),
            ("sigma".to_string(), Tensor::from_slice(&self.cov, (d, d), &Device::Cpu)?),
            ("count".to_string(), Tensor::from_slice(&[self.count as i64], 1, &Device::Cpu)?),
        ];
        let meta = description.map(|d| HashMap::from([("ctpipe".to_string(), d.to_string())]));
        // Statistics of non-finite features (a diverged encoder) are never written.
        if self.mean.iter().chain(&self.cov).any(|v| !v.is_finite()) {
            return Err(crate::error::diverged(format!("{}: the features hold NaN or inf (the encoder diverged: lower lr)", path.display())));
        }
        safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), meta, path).with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<FeatureStats> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).bad_input_ctx(|| format!("{}: not a statistics file", path.display()))?;
        let get = |k: &str| t.get(k).ok_or_else(|| bad_input(format!("{}: missing tensor `{k}`", path.display())));
        let mean: Vec<f64> = get("mu")?.to_dtype(DType::F64)?.to_vec1()?;
        let d = mean.len();
        let sigma = get("sigma")?;
        if sigma.dims() != [d, d] {
            return Err(bad_input(format!("{}: sigma is {:?}, expected [{d}, {d}]", path.display(), sigma.dims())));
        }
        let cov: Vec<f64> = sigma.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let count = get("count")?.to_dtype(DType::I64)?.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
        if mean.iter().chain(&cov).any(|v| !v.is_finite()) {
            return Err(bad_input(format!("{}: the statistics hold NaN or inf", path.display())));
        }
        Ok(FeatureStats { mean, cov, count })
    }
}

/// Streaming accumulator.
pub struct StatsAccumulator {
    dim: usize,
    shift: Option<Vec<f64>>,
    sum: Vec<f64>,
    outer: Mat<f64>,
    count: u64,
}

impl StatsAccumulator {
    pub fn new(dim: usize) -> Self {
        StatsAccumulator { dim, shift: None, sum: vec![0.0; dim], outer: Mat::zeros(dim, dim), count: 0 }
    }

    /// Add a batch (N × D tensor, any float dtype).
    pub fn add(&mut self, features: &Tensor) -> Result<()> {
        let (n, d) = features.dims2()?;
        anyhow::ensure!(d == self.dim, "features of dimension {d}, expected {}", self.dim);
        if n == 0 {
            return Ok(());
        }
        let v: Vec<f64> = features.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let shift = self.shift.get_or_insert_with(|| (0..d).map(|j| (0..n).map(|i| v[i * d + j]).sum::<f64>() / n as f64).collect());
        let x = Mat::from_fn(n, d, |i, j| v[i * d + j] - shift[j]);
        for j in 0..d {
            self.sum[j] += (0..n).map(|i| x[(i, j)]).sum::<f64>();
        }
        self.outer += x.transpose() * &x;
        self.count += n as u64;
        Ok(())
    }

    pub fn finish(&self) -> Result<FeatureStats> {
        anyhow::ensure!(self.count >= 2, "statistics need at least two samples, got {}", self.count);
        let (n, d) = (self.count as f64, self.dim);
        let shift = self.shift.clone().unwrap_or_else(|| vec![0.0; d]);
        let m: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = (self.outer[(i, j)] - n * m[i] * m[j]) / (n - 1.0);
            }
        }
        let mean = m.iter().zip(&shift).map(|(a, b)| a + b).collect();
        Ok(FeatureStats { mean, cov, count: self.count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_two_pass_statistics_across_batches() {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..60).map(|i| 1000.0 + ((i * 37 % 11) as f32) * 0.5 + (i % 3) as f32).collect();
        let t = Tensor::from_vec(x.clone(), (20, 3), &dev).unwrap();
        let mut acc = StatsAccumulator::new(3);
        acc.add(&t.narrow(0, 0, 7).unwrap()).unwrap();
        acc.add(&t.narrow(0, 7, 13).unwrap()).unwrap();
        let s = acc.finish().unwrap();
        let rows: Vec<Vec<f64>> = x.chunks(3).map(|r| r.iter().map(|&v| v as f64).collect()).collect();
        let mean: Vec<f64> = (0..3).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / 20.0).collect();
        for j in 0..3 {
            assert!((s.mean[j] - mean[j]).abs() < 1e-9);
            for k in 0..3 {
                let c = rows.iter().map(|r| (r[j] - mean[j]) * (r[k] - mean[k])).sum::<f64>() / 19.0;
                assert!((s.cov[j * 3 + k] - c).abs() < 1e-9, "{j} {k}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        s.save(&dir.path().join("s.safetensors"), Some("test")).unwrap();
        assert_eq!(FeatureStats::load(&dir.path().join("s.safetensors")).unwrap(), s);
    }
}
