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
    Record(ChaCha8Rng),
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
        Dropout { mode: Mode::Record(rng), masks: Vec::new() }
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
            Mode::Record(rng) => {
                let u = crate::rng::uniform_vec(rng, x.elem_count());
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
