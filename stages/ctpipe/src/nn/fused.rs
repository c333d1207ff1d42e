//! GroupNorm followed by SiLU (or alone) as one custom op with CPU kernels, forward and
//! backward. Composed from candle's ops, a GroupNorm + SiLU is about a dozen passes over the
//! activations (mean, centre, square, mean, add, sqrt, divide, scale, shift, sigmoid, multiply)
//! each way, single-threaded for the unary ones; here it is one pass to gather the statistics
//! and one to write, per (image, group), in parallel. On a GPU the same op runs
//! kernels/fused.cu when [`crate::cuda::kernels`] says so; other devices and dtypes use the
//! composition ([`group_norm_silu`] decides), which is also what the tests compare against.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use crate::simd::{WithSimd, dispatch, sigmoid, sum8, sum8_pairs};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// GroupNorm over `groups` channel groups with per-channel affine `weight`, `bias`, then SiLU
/// when `silu` is set. f32 on the CPU, or on a GPU with our kernels on: the fused op;
/// otherwise `composed`.
pub fn group_norm_silu(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool, composed: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let fused = (x.device().is_cpu() && x.dtype() == candle_core::DType::F32) || crate::cuda::fused_applies(x);
    if !fused || x.rank() != 4 {
        return composed();
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, GroupNormSilu { groups, eps, silu })
}

struct GroupNormSilu {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// The layout of one call: n images, c channels in `groups` groups of `cg`, `hw` positions.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    cg: usize,
    hw: usize,
}

impl Dims {
    fn of(shape: &Shape, groups: usize) -> Result<Dims> {
        let (n, c, h, w) = shape.dims4()?;
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("group_norm_silu: {c} channels do not split into {groups} groups");
        }
        Ok(Dims { n, c, cg: c / groups, hw: h * w })
    }

    /// Elements of one (image, group) block, contiguous in NCHW.
    fn block(&self) -> usize {
        self.cg * self.hw
    }
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("group_norm_silu: {what} must be f32") };
    super::contiguous_slice(v, l, "group_norm_silu", what)
}

/// Mean and 1/√(var + ε) of a block (f64 accumulation; the variance is the biased one, as
/// GroupNorm's).
#[inline(always)]
fn stats(block: &[f32], eps: f64) -> (f64, f64) {
    let len = block.len() as f64;
    let mean = sum8(block, |v| v as f64) / len;
    let var = sum8(block, |v| (v as f64 - mean) * (v as f64 - mean)) / len;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One (image, group) block of the forward pass: `gamma`, `beta` are the group's channels.
struct Forward<'a, const SILU: bool> {
    out: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    hw: usize,
    eps: f64,
}

impl<const SILU: bool> Forward<'_, SILU> {
    #[inline(always)]
    fn run(self) {
        let (mean, rstd) = stats(self.x, self.eps);
        // Per channel, y = x·scale + shift, the normalisation and the affine folded.
        let channels = self.out.chunks_mut(self.hw).zip(self.x.chunks(self.hw)).zip(self.gamma.iter().zip(self.beta));
        for ((oc, xc), (&g, &b)) in channels {
            let (scale, shift) = ((rstd * g as f64) as f32, (b as f64 - mean * rstd * g as f64) as f32);
            for (o, &x) in oc.iter_mut().zip(xc) {
                let y = x * scale + shift;
                o.write(if SILU { y * sigmoid(y) } else { y });
            }
        }
    }
}

impl<const SILU: bool> WithSimd for Forward<'_, SILU> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.run()
    }
}

/// One (image, group) block of the backward pass: dx into `dx`, this image's dγ and dβ of the
/// group's channels into `dg`, `db`. Element-wise work in f32 as plain maps, sums in f64 by
/// [`sum8`]: both vectorise.
struct Backward<'a, const SILU: bool> {
    /// Written whole by the first pass, then read and rewritten by the second.
    dx: &'a mut [MaybeUninit<f32>],
    dg: &'a mut [f64],
    db: &'a mut [f64],
    x: &'a [f32],
    dout: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    hw: usize,
    eps: f64,
}

impl<const SILU: bool> Backward<'_, SILU> {
    #[inline(always)]
    fn run(self) {
        let (mean, rstd) = stats(self.x, self.eps);
        let (mean32, rstd32) = (mean as f32, rstd as f32);
        let x_hat = |x: f32| (x - mean32) * rstd32;
        // Per channel, dy = dL/d(γ·x̂ + β) (kept in dx for now), dβ = Σ dy and dγ = Σ dy·x̂; the
        // normalisation's gradient needs Σ dL/dx̂ = Σ_c γ_c·dβ_c and Σ dL/dx̂·x̂ = Σ_c γ_c·dγ_c.
        let (mut sum_dxh, mut sum_dxh_xh) = (0.0, 0.0);
        let channels = self.dx.chunks_mut(self.hw).zip(self.x.chunks(self.hw)).zip(self.dout.chunks(self.hw));
        for (ch, ((dyc, xc), gc)) in channels.enumerate() {
            let (g, bt) = (self.gamma[ch], self.beta[ch]);
            for ((dy, &x), &gy) in dyc.iter_mut().zip(xc).zip(gc) {
                dy.write(if SILU {
                    let y = x_hat(x) * g + bt;
                    let s = sigmoid(y);
                    gy * s * (1.0 + y * (1.0 - s))
                } else {
                    gy
                });
            }
            // SAFETY: the loop above wrote every element of this channel.
            let dyc = unsafe { &*(dyc as *const [MaybeUninit<f32>] as *const [f32]) };
            let (dg, db) = (sum8_pairs(dyc, xc, |dy, x| (dy * x_hat(x)) as f64), sum8(dyc, |v| v as f64));
            (self.dg[ch], self.db[ch]) = (dg, db);
            sum_dxh += g as f64 * db;
            sum_dxh_xh += g as f64 * dg;
        }
        let len = self.x.len() as f64;
        let (m1, m2) = ((sum_dxh / len) as f32, (sum_dxh_xh / len) as f32);
        // SAFETY: the first pass wrote every element of dx.
        let dx = unsafe { &mut *(self.dx as *mut [MaybeUninit<f32>] as *mut [f32]) };
        for ((dxc, xc), &g) in dx.chunks_mut(self.hw).zip(self.x.chunks(self.hw)).zip(self.gamma) {
            for (dx, &x) in dxc.iter_mut().zip(xc) {
                *dx = rstd32 * (*dx * g - m1 - x_hat(x) * m2);
            }
        }
    }
}

impl<const SILU: bool> WithSimd for Backward<'_, SILU> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.run()
    }
}

impl CustomOp3 for GroupNormSilu {
    fn name(&self) -> &'static str {
        "group-norm-silu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), self.groups)?;
        let (x, gamma, beta) = (f32s(s1, l1, "input")?, f32s(s2, l2, "weight")?, f32s(s3, l3, "bias")?);
        // SAFETY: the blocks cover the output, and Forward writes every element of its block.
        let out = unsafe {
            super::written(x.len(), |out| {
                out.par_chunks_mut(d.block()).zip(x.par_chunks(d.block())).enumerate().for_each(|(b, (o, xb))| {
                    let c = (b % self.groups) * d.cg..(b % self.groups + 1) * d.cg;
                    let (gamma, beta, hw, eps) = (&gamma[c.clone()], &beta[c], d.hw, self.eps);
                    match self.silu {
                        true => dispatch(Forward::<true> { out: o, x: xb, gamma, beta, hw, eps }),
                        false => dispatch(Forward::<false> { out: o, x: xb, gamma, beta, hw, eps }),
                    }
                })
            })
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &candle_core::CudaStorage, l1: &Layout, s2: &candle_core::CudaStorage, l2: &Layout, s3: &candle_core::CudaStorage, l3: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::launch::{group_norm_fwd, view};
        let d = Dims::of(l1.shape(), self.groups)?;
        let (x, gamma, beta) = (view(s1, l1, "input")?, view(s2, l2, "weight")?, view(s3, l3, "bias")?);
        let y = group_norm_fwd(&x, &gamma, &beta, &s1.device, d.n, d.c, self.groups, d.hw, self.eps, self.silu)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.dim(0)?;
        let affine = Tensor::cat(&[weight, bias], 0)?;
        let bwd = GroupNormSiluBwd { groups: self.groups, eps: self.eps, silu: self.silu };
        // One flat result: [dx (x's size) | dγ (c) | dβ (c)].
        let flat = x.contiguous()?.apply_op3_no_bwd(&affine, &grad.contiguous()?, &bwd)?;
        let len = x.elem_count();
        let dx = flat.narrow(0, 0, len)?.reshape(x.shape())?;
        let dw = flat.narrow(0, len, c)?;
        let db = flat.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gradients of [`GroupNormSilu`] for (x, [γ | β], dL/dout).
struct GroupNormSiluBwd {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormSiluBwd {
    fn name(&self) -> &'static str {
        "group-norm-silu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), self.groups)?;
        let (x, affine, dout) = (f32s(s1, l1, "input")?, f32s(s2, l2, "weight/bias")?, f32s(s3, l3, "gradient")?);
        let (gamma, beta) = affine.split_at(d.c);
        // Per-image partial sums of dγ and dβ, [n][c], reduced over images in a fixed order
        // below so that the result does not depend on the thread schedule.
        let mut part_g = vec![0f64; d.n * d.c];
        let mut part_b = vec![0f64; d.n * d.c];
        // SAFETY: the blocks cover dx, and Backward writes every element of its block.
        let dx = unsafe {
            super::written(x.len(), |dx| {
                dx.par_chunks_mut(d.block())
                    .zip(part_g.par_chunks_mut(d.cg))
                    .zip(part_b.par_chunks_mut(d.cg))
                    .enumerate()
                    .for_each(|(b, ((dxb, pg), pb))| {
                        let block = b * d.block()..(b + 1) * d.block();
                        let (xb, gb) = (&x[block.clone()], &dout[block]);
                        let c = (b % self.groups) * d.cg..(b % self.groups + 1) * d.cg;
                        let (gamma, beta, hw, eps) = (&gamma[c.clone()], &beta[c], d.hw, self.eps);
                        match self.silu {
                            true => dispatch(Backward::<true> { dx: dxb, dg: pg, db: pb, x: xb, dout: gb, gamma, beta, hw, eps }),
                            false => dispatch(Backward::<false> { dx: dxb, dg: pg, db: pb, x: xb, dout: gb, gamma, beta, hw, eps }),
                        }
                    })
            })
        };
        let mut out = dx;
        out.reserve(2 * d.c);
        for part in [&part_g, &part_b] {
            out.extend((0..d.c).map(|ch| (0..d.n).map(|i| part[i * d.c + ch]).sum::<f64>() as f32));
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * d.c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &candle_core::CudaStorage, l1: &Layout, s2: &candle_core::CudaStorage, l2: &Layout, s3: &candle_core::CudaStorage, l3: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::launch::{group_norm_bwd, view};
        let d = Dims::of(l1.shape(), self.groups)?;
        let (x, affine, dout) = (view(s1, l1, "input")?, view(s2, l2, "weight/bias")?, view(s3, l3, "gradient")?);
        let out = group_norm_bwd(&x, &affine, &dout, &s1.device, d.n, d.c, self.groups, d.hw, self.eps, self.silu)?;
        Ok((out, Shape::from(d.n * d.c * d.hw + 2 * d.c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::layers::GroupNorm;
    use candle_core::{DType, Device, Var};

    /// The kernels compiled for this CPU's widest vectors (AVX-512 here and on CI) give the
    /// baseline build's bits: nothing is reordered or fused with the lane width. A block whose
    /// channels (37 positions) leave a remainder after the eight lanes.
    #[test]
    fn vector_width_does_not_change_the_bits() {
        let (cg, hw) = (3, 37);
        let v = |purpose: &str, len: usize, scale: f32, shift: f32| -> Vec<f32> {
            let t = crate::rng::normal(&mut crate::rng::stream(7, purpose, 0), len, DType::F32, &Device::Cpu).unwrap();
            t.to_vec1::<f32>().unwrap().into_iter().map(|v| v * scale + shift).collect()
        };
        let (x, dout, gamma, beta) = (v("x", cg * hw, 3.0, 0.4), v("dout", cg * hw, 1.0, 0.0), v("g", cg, 0.5, 1.0), v("b", cg, 0.3, 0.0));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let bits64 = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for silu in [true, false] {
            let run = |wide: bool| {
                let (mut y, mut dx, mut dg, mut db) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0f64; cg], vec![0f64; cg]);
                let (gamma, beta, dout, hw, eps) = (&gamma[..], &beta[..], &dout[..], hw, 1e-5);
                let fwd = |out: &mut [f32], silu: bool| match (silu, wide) {
                    (true, true) => dispatch(Forward::<true> { out: super::super::gemm::as_uninit(out), x: &x, gamma, beta, hw, eps }),
                    (true, false) => Forward::<true> { out: super::super::gemm::as_uninit(out), x: &x, gamma, beta, hw, eps }.run(),
                    (false, true) => dispatch(Forward::<false> { out: super::super::gemm::as_uninit(out), x: &x, gamma, beta, hw, eps }),
                    (false, false) => Forward::<false> { out: super::super::gemm::as_uninit(out), x: &x, gamma, beta, hw, eps }.run(),
                };
                fwd(&mut y, silu);
                let (dxu, dg, db) = (super::super::gemm::as_uninit(&mut dx[..]), &mut dg[..], &mut db[..]);
                match (silu, wide) {
                    (true, true) => dispatch(Backward::<true> { dx: dxu, dg, db, x: &x, dout, gamma, beta, hw, eps }),
                    (true, false) => Backward::<true> { dx: dxu, dg, db, x: &x, dout, gamma, beta, hw, eps }.run(),
                    (false, true) => dispatch(Backward::<false> { dx: dxu, dg, db, x: &x, dout, gamma, beta, hw, eps }),
                    (false, false) => Backward::<false> { dx: dxu, dg, db, x: &x, dout, gamma, beta, hw, eps }.run(),
                }
                (bits(&y), bits(&dx), bits64(dg), bits64(db))
            };
            assert!(run(false) == run(true), "silu {silu}: the vectorised kernels' bits differ from the baseline's");
        }
    }

    /// The fused op against the composition it replaces: values and the gradients of x, γ, β,
    /// with and without SiLU, for several group sizes.
    #[test]
    fn fused_equals_the_composition() {
        let dev = Device::Cpu;
        for (i, &(n, c, h, w, groups, silu)) in [(2, 8, 5, 3, 2, true), (3, 32, 4, 4, 8, false), (1, 64, 6, 6, 16, true), (2, 4, 7, 7, 1, true)].iter().enumerate() {
            let r = |purpose: &str, shape: &[usize], scale: f64, shift: f64| {
                let t = crate::rng::normal(&mut crate::rng::stream(i as u64, purpose, 0), shape, DType::F32, &dev).unwrap();
                Var::from_tensor(&((t * scale).unwrap() + shift).unwrap()).unwrap()
            };
            let x = r("x", &[n, c, h, w], 2.0, 0.7);
            let g = r("g", &[c], 0.5, 1.0);
            let b = r("b", &[c], 0.3, 0.0);
            let dout = crate::rng::normal(&mut crate::rng::stream(i as u64, "dout", 0), (n, c, h, w), DType::F32, &dev).unwrap();
            let composed = || -> Result<Tensor> {
                let y = GroupNorm::compose(&x, &g, &b, groups, 1e-6)?;
                if silu { y.silu() } else { Ok(y) }
            };
            let fused = group_norm_silu(&x, &g, &b, groups, 1e-6, silu, || unreachable!("the CPU f32 path is fused")).unwrap();
            let reference = composed().unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff / scale < 2e-5, "case {i}: {what} differs by {:.2e} of {scale}", diff / scale);
            };
            close(&fused, &reference, "output");
            let ga = fused.mul(&dout).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = reference.mul(&dout).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, what) in [(&x, "dx"), (&g, "dγ"), (&b, "dβ")] {
                close(ga.get(v).unwrap(), gb.get(v).unwrap(), what);
            }
        }
    }
}
