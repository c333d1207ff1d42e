//! The Fréchet distance between two Gaussians, as FID computes it:
//! ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2·tr √(Σ1Σ2).
//!
//! tr √(Σ1Σ2) is computed in the symmetric form Σᵢ √λᵢ(A Σ2 A) with A = Σ1^½ (two symmetric
//! eigendecompositions with faer, f64). It equals scipy's `sqrtm(Σ1 @ Σ2)` trace for covariance
//! matrices without its complex arithmetic. pytorch-fid's fallback is kept: if the result is not
//! finite, ε·I (ε = 1e-6) is added to both covariances and the computation repeated.

use super::stats::FeatureStats;
use anyhow::{bail, Result};
use faer::{Mat, Side};

const EPS_RETRY: f64 = 1e-6;

/// The square root of a symmetric positive semi-definite matrix (negative eigenvalues, which
/// only rounding produces, clamped to 0).
fn sqrt_psd(a: &Mat<f64>) -> Result<Mat<f64>> {
    let evd = a.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow::anyhow!("eigendecomposition failed: {e:?}"))?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let n = a.nrows();
    let scaled = Mat::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    Ok(&scaled * u.transpose())
}

fn trace(a: &Mat<f64>) -> f64 {
    (0..a.nrows()).map(|i| a[(i, i)]).sum()
}

/// tr √(Σ1Σ2) in the symmetric form.
pub fn trace_sqrt_product(s1: &Mat<f64>, s2: &Mat<f64>) -> Result<f64> {
    let a = sqrt_psd(s1)?;
    let m = &a * s2 * &a;
    let n = m.nrows();
    let sym = Mat::from_fn(n, n, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let ev = sym.self_adjoint_eigenvalues(Side::Lower).map_err(|e| anyhow::anyhow!("eigendecomposition failed: {e:?}"))?;
    Ok(ev.iter().map(|l| l.max(0.0).sqrt()).sum())
}

/// The Fréchet distance between two feature statistics.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        bail!("statistics of dimension {} and {} cannot be compared", a.dim(), b.dim());
    }
    let diff: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let (s1, s2) = (a.cov_mat(), b.cov_mat());
    let fd = |s1: &Mat<f64>, s2: &Mat<f64>| -> Result<f64> { Ok(diff + trace(s1) + trace(s2) - 2.0 * trace_sqrt_product(s1, s2)?) };
    match fd(&s1, &s2) {
        Ok(v) if v.is_finite() => Ok(v),
        _ => {
            eprintln!("frechet: non-finite result; adding {EPS_RETRY} to the covariance diagonals (as pytorch-fid does)");
            let n = s1.nrows();
            let eye = Mat::<f64>::from_fn(n, n, |i, j| if i == j { EPS_RETRY } else { 0.0 });
            let v = fd(&(&s1 + &eye), &(&s2 + &eye))?;
            if !v.is_finite() {
                bail!("Fréchet distance is not finite even after the ε retry");
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests;
