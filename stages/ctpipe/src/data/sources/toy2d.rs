//! Procedural 2-D datasets: the toys on which every method is checked exactly.
//!
//! All live inside [-1, 1]², the range images are scaled to, so σ_data = 0.5 is a sensible
//! scale for them too. `two-gaussians` is the GC/VCT toy of the spec (means (0, ±0.5), std
//! 0.01); the others are the usual density-estimation shapes rescaled to that box. Train and
//! test come from two streams of one seeded ChaCha generator, so they never share a sample and
//! each is the same for a given seed whatever the other's size.

use crate::data::schema::{Dataset, DatasetInfo, SampleKind, Samples, Split};
use crate::error::usage;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;

/// The toy shapes, with the noise std each uses by default.
pub const TOYS: &[(&str, f64)] =
    &[("two-gaussians", 0.01), ("eight-gaussians", 0.02), ("checkerboard", 0.0), ("moons", 0.02), ("swiss-roll", 0.01)];

/// Default noise std of a toy, or a usage error listing the toys.
pub fn default_noise(name: &str) -> Result<f64> {
    TOYS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).ok_or_else(|| {
        let names = TOYS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        usage(format!("unknown toy2d dataset `{name}` (expected one of: {names})"))
    })
}

fn class_names(name: &str) -> Vec<String> {
    match name {
        "two-gaussians" => vec!["upper".into(), "lower".into()],
        "eight-gaussians" => (0..8).map(|k| format!("mode{k}")).collect(),
        "checkerboard" => (0..8).map(|k| format!("cell{k}")).collect(),
        "moons" => vec!["outer".into(), "inner".into()],
        _ => vec!["roll".into()],
    }
}

/// Centres of the mixture toys (their labels index this list).
pub fn mode_centres(name: &str) -> Vec<[f64; 2]> {
    match name {
        "two-gaussians" => vec![[0.0, 0.5], [0.0, -0.5]],
        "eight-gaussians" => (0..8).map(|k| {
            let a = k as f64 * PI / 4.0;
            [0.75 * a.cos(), 0.75 * a.sin()]
        }).collect(),
        _ => Vec::new(),
    }
}

fn sample(name: &str, noise: f64, rng: &mut ChaCha8Rng) -> ([f64; 2], i32) {
    let (p, label) = match name {
        "two-gaussians" | "eight-gaussians" => {
            let centres = mode_centres(name);
            let k = rng.random_range(0..centres.len());
            (centres[k], k as i32)
        }
        "checkerboard" => {
            // 4×4 cells of side 0.5 over [-1, 1]²; the 8 cells with (i + j) even are filled.
            let k = rng.random_range(0..8usize);
            let (row, col) = (k / 2, (k % 2) * 2 + (k / 2) % 2);
            let x = -1.0 + 0.5 * col as f64 + 0.5 * rng.random::<f64>();
            let y = -1.0 + 0.5 * row as f64 + 0.5 * rng.random::<f64>();
            ([x, y], k as i32)
        }
        "moons" => {
            let t = PI * rng.random::<f64>();
            let inner = rng.random_bool(0.5);
            let (x, y) = if inner { (1.0 - t.cos(), 0.5 - t.sin()) } else { (t.cos(), t.sin()) };
            // sklearn's moons span x ∈ [-1, 2], y ∈ [-0.5, 1]: centre and halve.
            ([(x - 0.5) * 0.6, (y - 0.25) * 0.6], inner as i32)
        }
        _ => {
            let t = 1.5 * PI + 3.0 * PI * rng.random::<f64>();
            let r = t / (4.5 * PI);
            ([0.9 * r * t.cos(), 0.9 * r * t.sin()], 0)
        }
    };
    let nx: f64 = StandardNormal.sample(&mut *rng);
    let ny: f64 = StandardNormal.sample(&mut *rng);
    ([p[0] + noise * nx, p[1] + noise * ny], label)
}

fn split(name: &str, n: usize, noise: f64, seed: u64, stream: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut xs = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let (p, l) = sample(name, noise, &mut rng);
        xs.extend([p[0] as f32, p[1] as f32]);
        labels.push(l);
    }
    Split { samples: Samples::Points(xs), labels }
}

/// Generate a toy dataset.
pub fn generate(name: &str, n_train: usize, n_test: usize, noise: f64, seed: u64) -> Result<Dataset> {
    default_noise(name)?;
    let info = DatasetInfo {
        name: format!("toy2d:{name}"),
        kind: SampleKind::Points { dim: 2 },
        class_names: class_names(name),
    };
    Ok(Dataset { train: split(name, n_train, noise, seed, 0), test: split(name, n_test, noise, seed, 1), info })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(s: &Split) -> &[f32] {
        match &s.samples {
            Samples::Points(p) => p,
            _ => unreachable!(),
        }
    }

    #[test]
    fn two_gaussians_matches_the_spec() {
        let d = generate("two-gaussians", 20_000, 10, 0.01, 7).unwrap();
        let p = points(&d.train);
        for (k, centre) in [[0.0, 0.5], [0.0, -0.5]].iter().enumerate() {
            let idx: Vec<usize> = (0..d.train.rows()).filter(|&i| d.train.labels[i] == k as i32).collect();
            let frac = idx.len() as f64 / d.train.rows() as f64;
            assert!((frac - 0.5).abs() < 0.02, "mode {k} has {frac}");
            for dim in 0..2 {
                let v: Vec<f64> = idx.iter().map(|&i| p[2 * i + dim] as f64).collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
                assert!((mean - centre[dim]).abs() < 1e-3, "mean {mean}");
                assert!((std - 0.01).abs() < 5e-4, "std {std}");
            }
        }
    }

    #[test]
    fn seeded_and_train_test_differ() {
        let a = generate("moons", 100, 50, 0.02, 1).unwrap();
        let b = generate("moons", 100, 80, 0.02, 1).unwrap();
        assert_eq!(a.train, b.train, "train does not depend on the test size");
        assert_ne!(points(&a.train)[..100], points(&a.test)[..100]);
        assert_ne!(a.train, generate("moons", 100, 50, 0.02, 2).unwrap().train);
    }

    #[test]
    fn every_toy_stays_in_the_box_and_labels_are_valid() {
        for (name, noise) in TOYS {
            let d = generate(name, 2000, 10, *noise, 0).unwrap();
            d.train.check(&d.info, name).unwrap();
            assert!(points(&d.train).iter().all(|v| v.abs() <= 1.05), "{name} leaves [-1, 1]");
            let used: std::collections::BTreeSet<_> = d.train.labels.iter().collect();
            assert_eq!(used.len(), d.info.class_names.len(), "{name} uses every class");
        }
        assert!(generate("spiral", 1, 1, 0.0, 0).is_err());
    }

    #[test]
    fn checkerboard_fills_only_even_cells() {
        let d = generate("checkerboard", 5000, 1, 0.0, 3).unwrap();
        for xy in points(&d.train).chunks(2) {
            let col = ((xy[0] + 1.0) / 0.5).floor() as i32;
            let row = ((xy[1] + 1.0) / 0.5).floor() as i32;
            assert_eq!((row + col) % 2, 0, "point {xy:?} in an empty cell");
        }
    }
}
