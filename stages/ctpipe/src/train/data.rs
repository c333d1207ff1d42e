//! The training split in memory, served in seeded batches.
//!
//! The order is a fresh permutation per epoch from the stream (seed, "shuffle", epoch); batch k
//! holds global positions k·B … k·B + B − 1. The data cursor is therefore a function of the
//! step alone, and a resumed run reads exactly the batches an uninterrupted one would.
//! Images stay uint8 (HWC) until batched, then become f32 (N, C, H, W) in [−1, 1].

use crate::data::schema::{SampleKind, Samples, Split};
use crate::error::usage;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Mutex;

pub struct TrainData {
    pub kind: SampleKind,
    rows: usize,
    samples: Samples,
    labels: Vec<i32>,
    /// (epoch, permutation) of the last epoch used.
    perm: Mutex<Option<(u64, Vec<u32>)>>,
}

impl TrainData {
    /// Keep the first `limit` rows (all if `None`).
    pub fn new(kind: SampleKind, split: Split, limit: Option<u64>) -> Result<TrainData> {
        let len = kind.sample_len();
        let rows = limit.map(|l| (l as usize).min(split.rows())).unwrap_or(split.rows());
        if rows == 0 {
            return Err(usage("field `limit`: the training set would be empty"));
        }
        let labels = split.labels[..rows].to_vec();
        let samples = match split.samples {
            Samples::Images(mut v) => {
                v.truncate(rows * len);
                Samples::Images(v)
            }
            Samples::Points(mut v) => {
                v.truncate(rows * len);
                Samples::Points(v)
            }
        };
        Ok(TrainData { kind, rows, samples, labels, perm: Mutex::new(None) })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The shape of one sample as the network sees it: (C, H, W) or (d,).
    pub fn sample_shape(&self) -> Vec<usize> {
        match self.kind {
            SampleKind::Images { height, width, channels } => vec![channels as usize, height as usize, width as usize],
            SampleKind::Points { dim } => vec![dim as usize],
        }
    }

    fn index(&self, seed: u64, position: u64) -> usize {
        let epoch = position / self.rows as u64;
        let mut guard = self.perm.lock().expect("perm lock");
        if guard.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut p: Vec<u32> = (0..self.rows as u32).collect();
            p.shuffle(&mut crate::rng::stream(seed, "shuffle", epoch));
            *guard = Some((epoch, p));
        }
        guard.as_ref().expect("set above").1[(position % self.rows as u64) as usize] as usize
    }

    /// The first `n` points (2-D toys), for scatter plots; empty for images.
    pub fn first_points(&self, n: usize) -> Vec<[f32; 2]> {
        match (&self.samples, self.kind) {
            (Samples::Points(v), SampleKind::Points { dim }) if dim >= 2 => {
                let d = dim as usize;
                v.chunks(d).take(n).map(|p| [p[0], p[1]]).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The rows of batch `step` of size `batch`.
    pub fn batch_rows(&self, seed: u64, step: u64, batch: usize) -> Vec<usize> {
        let first = step * batch as u64;
        (0..batch as u64).map(|i| self.index(seed, first + i)).collect()
    }

    /// The labels of some rows.
    pub fn labels_of(&self, rows: &[usize]) -> Vec<u32> {
        rows.iter().map(|&i| self.labels[i] as u32).collect()
    }

    /// Batch `step` of size `batch`.
    pub fn batch(&self, seed: u64, step: u64, batch: usize, x_flip: bool, device: &Device) -> Result<Tensor> {
        Ok(self.labelled_batch(seed, step, batch, x_flip, device)?.0)
    }

    /// Batch `step` of size `batch` with its rows' labels.
    pub fn labelled_batch(&self, seed: u64, step: u64, batch: usize, x_flip: bool, device: &Device) -> Result<(Tensor, Vec<u32>)> {
        let idx = self.batch_rows(seed, step, batch);
        let x = self.rows_tensor(&idx, x_flip.then(|| crate::rng::stream(seed, "flip", step)), device)?;
        Ok((x, self.labels_of(&idx)))
    }

    /// SCT's reference pool for step `step`: `k` distinct rows (at most all of them) drawn
    /// from their own stream (seed, "sct-pool", step), flipped from (seed, "sct-pool-flip",
    /// step) when the batch is; with their labels. The batch's draws are untouched.
    pub fn pool(&self, seed: u64, step: u64, k: usize, x_flip: bool, device: &Device) -> Result<(Tensor, Vec<u32>)> {
        let k = k.min(self.rows);
        let idx = rand::seq::index::sample(&mut crate::rng::stream(seed, "sct-pool", step), self.rows, k).into_vec();
        let x = self.rows_tensor(&idx, x_flip.then(|| crate::rng::stream(seed, "sct-pool-flip", step)), device)?;
        Ok((x, self.labels_of(&idx)))
    }

    /// Rows `idx` as a tensor, flipping images at random per sample with draws from `flip`.
    pub fn rows_tensor(&self, idx: &[usize], flip: Option<rand_chacha::ChaCha8Rng>, device: &Device) -> Result<Tensor> {
        let batch = idx.len();
        let len = self.kind.sample_len();
        let mut shape = vec![batch];
        shape.extend(self.sample_shape());
        match (&self.samples, self.kind) {
            (Samples::Points(v), _) => {
                let mut out = Vec::with_capacity(batch * len);
                for &i in idx {
                    out.extend_from_slice(&v[i * len..(i + 1) * len]);
                }
                Ok(Tensor::from_vec(out, shape, device)?)
            }
            (Samples::Images(px), SampleKind::Images { height, width, channels }) => {
                let (h, w, c) = (height as usize, width as usize, channels as usize);
                let mut flips = flip;
                let mut out = vec![0f32; batch * len];
                for (b, &i) in idx.iter().enumerate() {
                    let flip = flips.as_mut().is_some_and(|r| r.random_bool(0.5));
                    let src = &px[i * len..(i + 1) * len];
                    let dst = &mut out[b * len..(b + 1) * len];
                    for y in 0..h {
                        for x in 0..w {
                            let sx = if flip { w - 1 - x } else { x };
                            for ch in 0..c {
                                dst[ch * h * w + y * w + x] = src[(y * w + sx) * c + ch] as f32 / 127.5 - 1.0;
                            }
                        }
                    }
                }
                Ok(Tensor::from_vec(out, shape, device)?)
            }
            _ => unreachable!("split checked against its kind"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(rows: usize) -> TrainData {
        let split = Split { samples: Samples::Points((0..rows * 2).map(|v| v as f32).collect()), labels: vec![0; rows] };
        TrainData::new(SampleKind::Points { dim: 2 }, split, None).unwrap()
    }

    #[test]
    fn every_epoch_visits_every_row_once() {
        let d = toy(10);
        let dev = Device::Cpu;
        let mut seen = Vec::new();
        for step in 0..5 {
            let b: Vec<Vec<f32>> = d.batch(3, step, 2, false, &dev).unwrap().to_vec2().unwrap();
            seen.extend(b.into_iter().map(|r| r[0] as usize / 2));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        // Any step can be read without reading the ones before it (resume).
        let fresh = toy(10);
        assert_eq!(fresh.batch(3, 4, 2, false, &dev).unwrap().to_vec2::<f32>().unwrap(), d.batch(3, 4, 2, false, &dev).unwrap().to_vec2::<f32>().unwrap());
    }

    #[test]
    fn images_become_nchw_in_unit_range_and_flip() {
        let split = Split { samples: Samples::Images(vec![0, 255, 10, 20, 30, 40]), labels: vec![0] };
        let kind = SampleKind::Images { height: 1, width: 3, channels: 2 };
        let d = TrainData::new(kind, split, None).unwrap();
        let b = d.batch(0, 0, 1, false, &Device::Cpu).unwrap();
        assert_eq!(b.dims(), [1, 2, 1, 3]);
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let f = |p: u8| p as f32 / 127.5 - 1.0;
        assert_eq!(v, [f(0), f(10), f(30), f(255), f(20), f(40)]);
        // Flipping reverses the width axis for the samples it picks (seeded per step).
        let flipped = (0..20).map(|s| d.batch(0, s, 1, true, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(flipped.clone().any(|v| v == [f(30), f(10), f(0), f(40), f(20), f(255)]));
        assert!(flipped.into_iter().any(|v| v == [f(0), f(10), f(30), f(255), f(20), f(40)]));
    }
}
