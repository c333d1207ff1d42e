//! Dropout with masks drawn from a seeded stream and replayable.
//!
//! Consistency training evaluates the same network twice per step (student at the larger
//! noise level, teacher at the smaller) and every reference implementation gives both passes
//! the same dropout masks (by restoring the CUDA generator state). Here the student pass
//! records its masks and the teacher pass replays them, layer by layer, in the same order.

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

enum Mode {
    Off,
    /// Draw masks; `rows`: this process computes rows `offset..` of a batch of `full` (a
    /// data-parallel shard), so each mask is drawn for the whole batch and its rows kept.
    Record { rng: ChaCha8Rng, rows: Option<(usize, usize)> },
    Replay(usize),
}

pub struct Dropout {
    mode: Mode,
    masks: Vec<Tensor>,
}

impl Dropout {
    /// No dropout (evaluation, generator passes).
    pub fn off() -> Dropout {
        Dropout { mode: Mode::Off, masks: Vec::new() }
    }

    /// Draw masks from `rng` and remember them.
    pub fn record(rng: ChaCha8Rng) -> Dropout {
        Dropout { mode: Mode::Record { rng, rows: None }, masks: Vec::new() }
    }

    /// Like [`Dropout::record`] for rows `offset..offset + n` of a batch of `full`: the masks
    /// are those the same rows get when one process computes the whole batch.
    pub fn record_rows(rng: ChaCha8Rng, offset: usize, full: usize) -> Dropout {
        Dropout { mode: Mode::Record { rng, rows: Some((offset, full)) }, masks: Vec::new() }
    }

    /// From now on, hand out the recorded masks again, from the first.
    pub fn replay(&mut self) {
        self.mode = Mode::Replay(0);
    }

    /// Apply dropout with probability `p` (inverted scaling: kept units are divided by 1 − p).
    pub fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        match &mut self.mode {
            Mode::Off => Ok(x.clone()),
            Mode::Record { rng, rows } => {
                let u = match *rows {
                    None => crate::rng::uniform_vec(rng, x.elem_count()),
                    Some((offset, full)) => {
                        let per_row = x.elem_count() / x.dim(0)?.max(1);
                        let all = crate::rng::uniform_vec(rng, per_row * full);
                        all[offset * per_row..(offset + x.dim(0)?) * per_row].to_vec()
                    }
                };
                let keep = (1.0 / (1.0 - p)) as f32;
                let m: Vec<f32> = u.into_iter().map(|v| if (v as f64) >= p { keep } else { 0.0 }).collect();
                let mask = Tensor::from_vec(m, x.shape(), x.device())?.to_dtype(x.dtype())?;
                let y = x.mul(&mask)?;
                self.masks.push(mask);
                Ok(y)
            }
            Mode::Replay(i) => {
                let mask = self.masks.get(*i).ok_or_else(|| candle_core::Error::Msg("dropout replay ran past the recorded masks".into()))?;
                if mask.shape() != x.shape() {
                    candle_core::bail!("dropout replay: mask {:?} for activation {:?}", mask.shape(), x.shape());
                }
                *i += 1;
                x.mul(mask)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Two processes each computing half a batch through two dropout layers get exactly the
    /// masks one process computing the whole batch gets, row for row.
    #[test]
    fn shard_masks_are_the_whole_batch_masks_rows() {
        let dev = Device::Cpu;
        let stream = || crate::rng::stream(7, "dropout", 3);
        let layers = |d: &mut Dropout, rows: usize| -> Vec<Vec<f32>> {
            [(rows, 5), (rows, 3)]
                .iter()
                .map(|&shape| d.apply(&Tensor::ones(shape, DType::F32, &dev).unwrap(), 0.4).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        let whole = layers(&mut Dropout::record(stream()), 6);
        let first = layers(&mut Dropout::record_rows(stream(), 0, 6), 3);
        let second = layers(&mut Dropout::record_rows(stream(), 3, 6), 3);
        for l in 0..2 {
            assert_eq!([first[l].clone(), second[l].clone()].concat(), whole[l], "layer {l}");
            assert!(whole[l].contains(&0.0) && whole[l].iter().any(|&v| v > 1.0), "layer {l} drops and keeps");
        }
    }
}
