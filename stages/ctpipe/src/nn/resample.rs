//! EDM's 2× resampling with its `[1, 1]` filter: nearest-neighbour up, 2×2 box average down.
//!
//! Written with broadcasts and means (the other devices' path, and the tests' reference), each
//! gradient is a candle reduction over a strided view: single-threaded on the CPU, where it
//! showed in the training step's profile. On the CPU both directions are custom ops here, one
//! pass per (image, channel) plane, planes in parallel, forward and backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Nearest-neighbour 2× upsampling (n, c, h, w) → (n, c, 2h, 2w).
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if on_cpu(x) {
        return x.contiguous()?.apply_op1(Op::Up);
    }
    // Broadcasts rather than candle's `upsample_nearest2d`, whose backward overwrites rather
    // than accumulates the gradient of its input, and whose CUDA path is a naive transposed
    // convolution.
    x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?.reshape((n, c, 2 * h, 2 * w))
}

/// 2×2 box average with stride 2, (n, c, h, w) → (n, c, h/2, w/2).
pub fn downsample2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("cannot halve a {h}×{w} feature map: every resolution level must be even");
    }
    if on_cpu(x) {
        return x.contiguous()?.apply_op1(Op::Down);
    }
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.mean(5)?.mean(3)
}

fn on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// The four CPU kernels: the two resamplings and their gradients.
#[derive(Clone, Copy)]
enum Op {
    Up,
    /// The box average.
    Down,
    /// The gradient of `Up`: each 2×2 block summed.
    BlockSum,
    /// The gradient of `Down`: each value spread over its block times ¼.
    Spread,
}

/// Each small plane (h, w) and its 2× plane (2h, 2w): `f(small, big)` for every pair, planes
/// in parallel, the output zero-initialised and `out_small` saying which side it is.
fn planes<T: WithDType>(src: &[T], l: &Layout, out_small: bool, f: impl Fn(&mut [T], &[T], usize) + Sync) -> Result<(Vec<T>, Shape)> {
    let src = super::contiguous_slice(src, l, "resample", "input")?;
    let (n, c, h, w) = l.shape().dims4()?;
    let (oh, ow) = if out_small { (h / 2, w / 2) } else { (2 * h, 2 * w) };
    let mut out = vec![T::zero(); n * c * oh * ow];
    // `f(dst_plane, src_plane, small_width)`.
    let small_w = if out_small { ow } else { w };
    out.par_chunks_mut(oh * ow).zip(src.par_chunks(h * w)).for_each(|(dst, s)| f(dst, s, small_w));
    Ok((out, Shape::from((n, c, oh, ow))))
}

/// Run `$f::<T>` on an f32 or f64 storage, wrapping the result back.
macro_rules! dispatch {
    ($s:expr, $l:expr, $small:expr, $f:ident) => {
        match $s {
            CpuStorage::F32(v) => planes(v, $l, $small, $f::<f32>).map(|(o, sh)| (CpuStorage::F32(o), sh)),
            CpuStorage::F64(v) => planes(v, $l, $small, $f::<f64>).map(|(o, sh)| (CpuStorage::F64(o), sh)),
            _ => candle_core::bail!("resample: f32 or f64 only"),
        }
    };
}

/// big[2y + a][2x + b] = small[y][x].
fn up_plane<T: WithDType>(big: &mut [T], small: &[T], sw: usize) {
    for (y, row) in small.chunks(sw).enumerate() {
        for a in 0..2 {
            let dst = &mut big[(2 * y + a) * 2 * sw..][..2 * sw];
            for (x, &v) in row.iter().enumerate() {
                dst[2 * x] = v;
                dst[2 * x + 1] = v;
            }
        }
    }
}

/// small[y][x] = the sum of big's 2×2 block at (2y, 2x), scaled.
fn block_sum<T: WithDType>(small: &mut [T], big: &[T], sw: usize, scale: T) {
    for (y, out) in small.chunks_mut(sw).enumerate() {
        let (r0, r1) = (&big[2 * y * 2 * sw..][..2 * sw], &big[(2 * y + 1) * 2 * sw..][..2 * sw]);
        for (x, o) in out.iter_mut().enumerate() {
            *o = ((r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1])) * scale;
        }
    }
}

fn down_plane<T: WithDType>(small: &mut [T], big: &[T], sw: usize) {
    block_sum(small, big, sw, T::from_f64(0.25));
}

fn sum_plane<T: WithDType>(small: &mut [T], big: &[T], sw: usize) {
    block_sum(small, big, sw, T::one());
}

fn spread_plane<T: WithDType>(big: &mut [T], small: &[T], sw: usize) {
    up_plane(big, small, sw);
    let quarter = T::from_f64(0.25);
    big.iter_mut().for_each(|v| *v *= quarter);
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Up => "upsample2x",
            Op::Down => "downsample2x",
            Op::BlockSum => "upsample2x-bwd",
            Op::Spread => "downsample2x-bwd",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match self {
            Op::Up => dispatch!(s, l, false, up_plane),
            Op::Down => dispatch!(s, l, true, down_plane),
            Op::BlockSum => dispatch!(s, l, true, sum_plane),
            Op::Spread => dispatch!(s, l, false, spread_plane),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gradient = match self {
            Op::Up => Op::BlockSum,
            Op::Down => Op::Spread,
            // Applied without a backward pass (apply_op1_no_bwd); as candle's default says.
            Op::BlockSum | Op::Spread => return Err(candle_core::Error::BackwardNotSupported { op: self.name() }),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&gradient)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Both ops against the broadcast/mean composition the other devices run, values and
    /// input gradients, f64 and f32; and against values written out by hand.
    #[test]
    fn equal_the_composition() {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            for (i, shape) in [[2, 3, 4, 6], [1, 1, 2, 2], [3, 5, 8, 2]].into_iter().enumerate() {
                let x = Var::from_tensor(&crate::rng::normal(&mut crate::rng::stream(3, "x", i as u64), &shape[..], dtype, &dev).unwrap()).unwrap();
                let (n, c, h, w) = x.dims4().unwrap();
                let up_ref = x.reshape((n, c, h, 1, w, 1)).unwrap().broadcast_as((n, c, h, 2, w, 2)).unwrap().reshape((n, c, 2 * h, 2 * w)).unwrap();
                let down_ref = x.reshape((n, c, h / 2, 2, w / 2, 2)).unwrap().mean(5).unwrap().mean(3).unwrap();
                for (ours, theirs, what) in [(upsample2x(&x).unwrap(), up_ref, "up"), (downsample2x(&x).unwrap(), down_ref, "down")] {
                    let r = crate::rng::normal(&mut crate::rng::stream(3, what, i as u64), ours.dims(), dtype, &dev).unwrap();
                    let ga = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                    let gb = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                    for (a, b, part) in [(&ours, &theirs, "value"), (ga.get(&x).unwrap(), gb.get(&x).unwrap(), "gradient")] {
                        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                        let tol = if dtype == DType::F64 { 1e-15 } else { 1e-6 };
                        assert!(d <= tol, "{what} {dtype:?} case {i}: {part} differs by {d:e}");
                    }
                }
            }
        }
        let x = Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &dev).unwrap();
        assert_eq!(upsample2x(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(downsample2x(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [2.5]);
        assert!(downsample2x(&Tensor::zeros((1, 1, 3, 4), DType::F32, &dev).unwrap()).unwrap_err().to_string().contains("3×4"));
    }
}
