//! SCT — stable consistency tuning (Wang, Geng, Li 2024, arXiv 2410.18958): ECT with a
//! variance-reduced target. The spec (methods.md §6; no public code) reads the paper's target
//! through the score identity: replace the one clean sample x in ECT's Euler step
//! x_r = x_t + (r − t)·(x_t − x)/t by the self-normalised estimate
//! x̂₀ = Σ_j w_j·x^(j), w_j = softmax_j(−‖x_t − x^(j)‖² / (2t²)) over a reference set that holds
//! the sample's own clean image.
//!
//! With x̂₀ = x + δ, the teacher point is x_r = x + r·ε + (1 − r/t)·δ: ECT's point plus a
//! correction. Written this way, a reference set of the sample's own image alone gives δ = 0
//! exactly and SCT reduces to ECT bit for bit.
//!
//! The reference set is the batch (`batch`), or the batch plus images drawn per step from their
//! own stream (`pool`, [`Pool`], drawn by the training loop), or the own image alone (`own`).
//! Class-conditional models restrict it to the sample's class: the identity holds for p(x | c).
//!
//! The weights are computed on the host in f64 from direct differences: at small t the softmax
//! is very sharp, and the usual expansion ‖a‖² + ‖b‖² − 2a·b in f32 would be off by more than
//! the logits' scale. They are accumulated over chunks of references with a running maximum
//! (the streaming softmax), so memory is O(batch × chunk) whatever the pool's size.

use crate::nn::ops::to_f64_vec;
use candle_core::{Result, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which clean samples serve as references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum References {
    /// Every clean sample of the batch (the paper's "batch-based" stable target).
    Batch,
    /// The batch and `sct_pool − batch` more training images drawn for the step (the paper's
    /// larger set; `Pool`).
    Pool,
    /// Only the sample's own image: the target is ECT's (for ablations and the identity test).
    Own,
}

/// The target where r = 0 (ECT's boundary, f(x, 0) = x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    /// The construction's: x_r at r = 0 is x̂₀, the reference-weighted mean.
    Mean,
    /// ECT's code: the clean image itself (locuslab/ect training/loss.py).
    Clean,
}

/// SCT's target: which references, how many, what at r = 0, and whether by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stable {
    pub references: References,
    /// `Pool`: references drawn per step besides the batch (sct_pool − batch).
    pub pool_extra: usize,
    pub boundary: Boundary,
    /// Restrict the references to the sample's class (class-conditional models).
    pub by_class: bool,
}

/// Extra references for one step: training images (and their labels) drawn by the loop from
/// the stream (seed, "sct-pool", step).
pub struct Pool {
    pub x: Tensor,
    pub labels: Vec<u32>,
}

/// References per chunk of the streaming softmax.
pub const CHUNK: usize = 256;

/// x̂₀ for each sample i: Σ_j w_ij·ref_j with w_ij = softmax_j(−‖x_t,i − ref_j‖²/(2t_i²)) over the
/// references j (only those with `ref_labels[j] == labels[i]` when both are given), in f64.
/// `xt` holds n samples of `d` values, `refs` n_ref. A sample with no reference of its class
/// gets NaN (callers always include the sample's own image).
pub fn reference_mean(xt: &[f64], t: &[f64], refs: &[f64], d: usize, labels: Option<(&[u32], &[u32])>) -> Vec<f64> {
    let n = t.len();
    let n_ref = refs.len() / d;
    let mut out = vec![0f64; n * d];
    out.par_chunks_mut(d).enumerate().for_each(|(i, acc)| {
        let a = &xt[i * d..(i + 1) * d];
        let scale = -1.0 / (2.0 * t[i] * t[i]);
        let (mut max, mut total) = (f64::NEG_INFINITY, 0.0f64);
        let mut logits = Vec::with_capacity(CHUNK);
        for start in (0..n_ref).step_by(CHUNK) {
            let end = (start + CHUNK).min(n_ref);
            logits.clear();
            for j in start..end {
                let keep = labels.is_none_or(|(own, of_ref)| own[i] == of_ref[j]);
                let b = &refs[j * d..(j + 1) * d];
                let sq: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
                logits.push(if keep { sq * scale } else { f64::NEG_INFINITY });
            }
            let chunk_max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if chunk_max == f64::NEG_INFINITY {
                continue;
            }
            // Rescale what was accumulated to the new maximum, then add this chunk.
            if chunk_max > max {
                let r = (max - chunk_max).exp();
                total *= r;
                acc.iter_mut().for_each(|v| *v *= r);
                max = chunk_max;
            }
            for (k, &l) in logits.iter().enumerate() {
                let w = (l - max).exp();
                if w == 0.0 {
                    continue;
                }
                total += w;
                let b = &refs[(start + k) * d..(start + k + 1) * d];
                acc.iter_mut().zip(b).for_each(|(v, q)| *v += w * q);
            }
        }
        acc.iter_mut().for_each(|v| *v /= total);
    });
    out
}

/// δ_i = x̂₀,i − x_i for each sample i, where x_t = `noisy`, x = `clean` (the endpoints, which
/// are always references), t = `t[i]`, plus `pool`'s images for `References::Pool`. `labels`
/// (the batch's) restricts the references to each sample's class when `stable.by_class`.
/// `batch`: in a data-parallel run, where `clean` and `labels` are this process's rows, the
/// whole batch's endpoints and labels, which are the references.
pub fn correction(noisy: &Tensor, clean: &Tensor, t: &[f64], stable: &Stable, pool: Option<&Pool>, labels: Option<&[u32]>, batch: Option<(&Tensor, Option<&[u32]>)>) -> Result<Tensor> {
    if stable.references == References::Own {
        return clean.zeros_like();
    }
    let n = clean.dim(0)?;
    let d = clean.elem_count() / n;
    let xt = to_f64_vec(noisy)?;
    let x = to_f64_vec(clean)?;
    let (mut refs, batch_labels) = match batch {
        Some((all, all_labels)) => (to_f64_vec(all)?, all_labels),
        None => (x.clone(), labels),
    };
    let mut ref_labels: Vec<u32> = batch_labels.map(|l| l.to_vec()).unwrap_or_default();
    if stable.references == References::Pool {
        let pool = pool.ok_or_else(|| candle_core::Error::Msg("SCT with sct_references = \"pool\" needs the step's pool of references".into()))?;
        refs.extend(to_f64_vec(&pool.x)?);
        ref_labels.extend_from_slice(&pool.labels);
    }
    let by_class = match (stable.by_class, labels) {
        (false, _) => None,
        (true, Some(l)) => Some((l, ref_labels.as_slice())),
        (true, None) => return Err(candle_core::Error::Msg("SCT by class needs the batch's labels".into())),
    };
    let mean = reference_mean(&xt, t, &refs, d, by_class);
    let delta: Vec<f32> = mean.iter().zip(&x).map(|(m, v)| (m - v) as f32).collect();
    Tensor::from_vec(delta, clean.shape(), clean.device())?.to_dtype(clean.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn stable(references: References) -> Stable {
        Stable { references, pool_extra: 0, boundary: Boundary::Mean, by_class: false }
    }

    #[test]
    fn weights_follow_the_gaussian_kernel() {
        let dev = Device::Cpu;
        // Two 1-D references at 0 and 1; x_t = 0.25 with t = 0.5 for sample 0.
        let clean = Tensor::new(&[[0f32], [1.0]], &dev).unwrap();
        let noisy = Tensor::new(&[[0.25f32], [5.0]], &dev).unwrap();
        let delta = correction(&noisy, &clean, &[0.5, 1e-3], &stable(References::Batch), None, None, None).unwrap().to_vec2::<f32>().unwrap();
        // w ∝ exp(−d²/(2t²)): d² = 0.0625 and 0.5625 → w₁ = 1/(1 + e^{(0.5625−0.0625)/0.5}) = 1/(1 + e).
        let w1 = 1.0 / (1.0 + 1f64.exp());
        assert!((delta[0][0] as f64 - w1).abs() < 1e-6, "{}", delta[0][0]);
        // Tiny t: all weight on the nearest reference (sample 1's own image): δ = 0 exactly.
        assert_eq!(delta[1][0], 0.0);
        let own = correction(&noisy, &clean, &[0.5, 1e-3], &stable(References::Own), None, None, None).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(own, [[0.0], [0.0]]);
    }

    /// The direct computation, one softmax over all references at once in f64, without
    /// chunks: what the streaming version must reproduce for a pool many chunks long.
    fn direct(xt: &[f64], t: f64, refs: &[Vec<f64>], keep: impl Fn(usize) -> bool) -> Vec<f64> {
        let logits: Vec<f64> = refs.iter().enumerate().map(|(j, r)| {
            if !keep(j) {
                return f64::NEG_INFINITY;
            }
            -r.iter().zip(xt).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (2.0 * t * t)
        }).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        (0..xt.len()).map(|k| refs.iter().zip(&w).map(|(r, w)| w * r[k]).sum::<f64>() / total).collect()
    }

    /// A pool of 1,000 references (four chunks) and three labels: the streaming, chunked
    /// weights and x̂₀ against the direct f64 softmax; with labels, references of another
    /// class get zero weight (x̂₀ moves to the class's own mean at large t).
    #[test]
    fn pool_weights_match_the_direct_softmax_and_respect_classes() {
        let mut rng = crate::rng::stream(5, "test", 0);
        let d = 3;
        let refs: Vec<Vec<f64>> = (0..1000).map(|_| crate::rng::normal_vec(&mut rng, d).iter().map(|&v| v as f64).collect()).collect();
        let ref_labels: Vec<u32> = (0..1000).map(|j| (j % 3) as u32).collect();
        let flat: Vec<f64> = refs.concat();
        let xt: Vec<Vec<f64>> = (0..4).map(|_| crate::rng::normal_vec(&mut rng, d).iter().map(|&v| 2.0 * v as f64).collect()).collect();
        let ts = [0.05, 0.4, 1.5, 40.0];
        let labels = [0u32, 1, 2, 1];
        let got = reference_mean(&xt.concat(), &ts, &flat, d, None);
        let by_class = reference_mean(&xt.concat(), &ts, &flat, d, Some((&labels, &ref_labels)));
        for i in 0..4 {
            let want = direct(&xt[i], ts[i], &refs, |_| true);
            let want_class = direct(&xt[i], ts[i], &refs, |j| ref_labels[j] == labels[i]);
            for k in 0..d {
                assert!((got[i * d + k] - want[k]).abs() < 1e-12, "sample {i} value {k}: {} vs {}", got[i * d + k], want[k]);
                assert!((by_class[i * d + k] - want_class[k]).abs() < 1e-12, "sample {i} value {k} by class");
            }
        }
        // At t = 40 the weights are nearly uniform: x̂₀ is the mean of the class's references,
        // not of all of them.
        let class1: Vec<&Vec<f64>> = refs.iter().zip(&ref_labels).filter(|(_, l)| **l == 1).map(|(r, _)| r).collect();
        let mean1: f64 = class1.iter().map(|r| r[0]).sum::<f64>() / class1.len() as f64;
        assert!((by_class[3 * d] - mean1).abs() < 2e-3, "{} vs {mean1}", by_class[3 * d]);
        // A single reference of another class moved by a lot changes nothing for class 0.
        let mut moved = flat.clone();
        moved[d] += 100.0; // reference 1 has label 1
        let again = reference_mean(&xt.concat(), &ts, &moved, d, Some((&labels, &ref_labels)));
        assert_eq!(again[..d], by_class[..d]);
    }

    /// `correction` with a pool: the batch's own images come first, the pool's after them, and
    /// the result is the direct x̂₀ minus the clean image.
    #[test]
    fn correction_over_the_batch_and_pool() {
        let dev = Device::Cpu;
        let clean = Tensor::new(&[[0f32, 0.0], [1.0, 1.0]], &dev).unwrap();
        let noisy = Tensor::new(&[[0.4f32, 0.2], [0.9, 1.3]], &dev).unwrap();
        let pool = Pool { x: Tensor::new(&[[0.5f32, -0.5], [2.0, 0.0]], &dev).unwrap(), labels: vec![1, 0] };
        let s = Stable { references: References::Pool, pool_extra: 2, boundary: Boundary::Mean, by_class: true };
        let delta = correction(&noisy, &clean, &[0.7, 0.7], &s, Some(&pool), Some(&[0, 0]), None).unwrap().to_vec2::<f32>().unwrap();
        let refs = vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![0.5, -0.5], vec![2.0, 0.0]];
        let labels = [0, 0, 1, 0];
        for (i, (x, xt)) in [([0.0, 0.0], [0.4, 0.2]), ([1.0, 1.0], [0.9, 1.3])].iter().enumerate() {
            let m = direct(xt, 0.7, &refs, |j| labels[j] == 0);
            for k in 0..2 {
                assert!((delta[i][k] as f64 - (m[k] - x[k])).abs() < 1e-6);
            }
        }
        let err = correction(&noisy, &clean, &[0.7, 0.7], &s, None, Some(&[0, 0]), None).unwrap_err();
        assert!(err.to_string().contains("pool"), "{err}");
    }
}
