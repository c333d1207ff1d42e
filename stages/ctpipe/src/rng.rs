//! Seeded random streams. Every random draw in ctpipe comes from here.
//!
//! A stream is a ChaCha8 generator keyed by (run seed, purpose, index): the noise of training
//! step 1234 is `stream(seed, "noise", 1234)`, the initial value of parameter `w` is
//! `stream(seed, "init:w", 0)`. Streams are independent of one another and of the order in which
//! they are used, so a resumed run needs no generator state beyond the step number, and a method
//! that draws extra numbers (GC's mixing) leaves every other draw unchanged. candle's CPU
//! `randn` cannot be seeded; noise is drawn here and uploaded.

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The generator for one purpose at one index.
pub fn stream(seed: u64, purpose: &str, index: u64) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"ctpipe rng v1\0");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(&index.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// `n` standard normal draws.
pub fn normal_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// `n` uniform draws in [0, 1).
pub fn uniform_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random::<f32>()).collect()
}

/// A tensor of standard normal draws.
pub fn normal(rng: &mut ChaCha8Rng, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    Tensor::from_vec(normal_vec(rng, shape.elem_count()), shape, device)?.to_dtype(dtype)
}

/// A tensor of uniform draws in [0, 1).
pub fn uniform(rng: &mut ChaCha8Rng, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    Tensor::from_vec(uniform_vec(rng, shape.elem_count()), shape, device)?.to_dtype(dtype)
}

/// Standard normal noise for samples `first..first + n`, one stream per sample, so sample `i`
/// is the same whatever the batch it is drawn in (as EDM's generate.py does with seeds).
pub fn per_sample_normal(seed: u64, purpose: &str, first: u64, n: usize, sample_shape: &[usize], device: &Device) -> Result<Tensor> {
    let len: usize = sample_shape.iter().product();
    let mut v = Vec::with_capacity(n * len);
    for i in 0..n as u64 {
        v.extend(normal_vec(&mut stream(seed, purpose, first + i), len));
    }
    let mut shape = vec![n];
    shape.extend_from_slice(sample_shape);
    Tensor::from_vec(v, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed_and_repeatable() {
        let a = normal_vec(&mut stream(1, "noise", 5), 4);
        assert_eq!(a, normal_vec(&mut stream(1, "noise", 5), 4));
        assert_ne!(a, normal_vec(&mut stream(1, "noise", 6), 4));
        assert_ne!(a, normal_vec(&mut stream(2, "noise", 5), 4));
        assert_ne!(a, normal_vec(&mut stream(1, "sigma", 5), 4));
    }

    #[test]
    fn per_sample_noise_does_not_depend_on_batching() {
        let dev = Device::Cpu;
        let all = per_sample_normal(3, "sample", 0, 6, &[2, 2], &dev).unwrap();
        let tail = per_sample_normal(3, "sample", 4, 2, &[2, 2], &dev).unwrap();
        let a: Vec<f32> = all.narrow(0, 4, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = tail.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn normal_moments() {
        let v = normal_vec(&mut stream(0, "t", 0), 200_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{mean} {var}");
    }
}
