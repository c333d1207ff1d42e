//! Element-wise ops of the networks that candle runs on one thread on the CPU (its `affine`, the
//! `x * scalar` of the blocks' skip scale, and its gradient), here as custom ops over chunks in
//! parallel. Same arithmetic in the same type (candle's affine is `x · mul + add`, and adding
//! +0 turns a −0 into +0), so the same bits as candle's; other devices and dtypes take
//! candle's ops. SiLU is here too, with its own logistic function (not candle's bits).

use crate::simd::{WithSimd, dispatch, sigmoid};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use super::written;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: large enough that scheduling costs little, small enough that
/// a few U-Net activations still spread over every core.
const CHUNK: usize = 1 << 14;

fn parallel_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// x · s.
pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    if !parallel_cpu(x) {
        return x * s;
    }
    x.contiguous()?.apply_op1(Scale(s))
}

/// (a + b) · s, the U-Net block's scaled residual sum.
pub fn scaled_sum(a: &Tensor, b: &Tensor, s: f64) -> Result<Tensor> {
    if !parallel_cpu(a) || a.shape() != b.shape() || a.dtype() != b.dtype() {
        return (a + b)? * s;
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, ScaledSum(s))
}

/// x + shift for x (n, c, h, w) and one value per (image, channel), shift (n, c, 1, 1): the
/// U-Net block's noise-embedding term. Through candle, its gradient is a strided sum over
/// (h, w) on one thread; here one parallel pass over the planes.
pub fn add_per_plane(x: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    if !parallel_cpu(x) || shift.dims() != [n, c, 1, 1] || shift.dtype() != x.dtype() {
        return x.broadcast_add(shift);
    }
    x.contiguous()?.apply_op2(&shift.contiguous()?, AddPerPlane)
}

/// SiLU, x·σ(x). In f32 on the CPU, one parallel pass each way with the vectorised logistic
/// function (`simd::sigmoid`, within 3 ulp); candle's is a libm `expf` per element forward and
/// five passes backward (σ, 1 − σ, x·(1 − σ) + 1, two products), on its own pool.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == candle_core::DType::F32) {
        return x.silu();
    }
    x.contiguous()?.apply_op1(Silu)
}

struct Silu;
/// The gradient of [`Silu`] for (x, dL/dout): dL/dout · σ(x)·(1 + x·(1 − σ(x))).
struct SiluBwd;

/// One chunk of SiLU (`grad` empty) or of its gradient, compiled for the CPU's vector width.
/// (An x with no elements has no chunk, so an empty `grad` only ever means the forward pass.)
struct SiluChunk<'a> {
    out: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    grad: &'a [f32],
}

impl WithSimd for SiluChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        if self.grad.is_empty() {
            for (o, &x) in self.out.iter_mut().zip(self.x) {
                o.write(x * sigmoid(x));
            }
        } else {
            for ((o, &x), &g) in self.out.iter_mut().zip(self.x).zip(self.grad) {
                let s = sigmoid(x);
                o.write(g * s * (1.0 + x * (1.0 - s)));
            }
        }
    }
}

/// SiLU of x, or with `grad` its gradient.
fn silu_cpu(x: &[f32], grad: Option<&[f32]>) -> Vec<f32> {
    // SAFETY: the chunks cover the output, and SiluChunk writes each element of its chunk
    // (x and grad have the output's length: checked by the backward op).
    unsafe {
        written(x.len(), |out| {
            let chunks = out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK));
            match grad {
                None => chunks.for_each(|(out, x)| dispatch(SiluChunk { out, x, grad: &[] })),
                Some(g) => chunks.zip(g.par_chunks(CHUNK)).for_each(|((out, x), grad)| dispatch(SiluChunk { out, x, grad })),
            }
        })
    }
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else { candle_core::bail!("silu: f32 only") };
        Ok((CpuStorage::F32(silu_cpu(contiguous(x, l)?, None)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &SiluBwd)?))
    }
}

impl CustomOp2 for SiluBwd {
    fn name(&self) -> &'static str {
        "silu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(g)) = (s1, s2) else { candle_core::bail!("silu backward: f32 only") };
        let (x, g) = (contiguous(x, l1)?, contiguous(g, l2)?);
        if x.len() != g.len() {
            candle_core::bail!("silu backward: {} inputs, {} gradients", x.len(), g.len());
        }
        Ok((CpuStorage::F32(silu_cpu(x, Some(g))), l1.shape().clone()))
    }
}

struct Scale(f64);
struct ScaledSum(f64);
struct AddPerPlane;
/// The sum of each (image, channel) plane, (n, c, h, w) → (n, c, 1, 1).
struct PlaneSums;

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    super::contiguous_slice(v, l, "element-wise op", "input")
}

fn map1<T: WithDType>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    // SAFETY: the chunks cover the output, and each of its elements is written.
    unsafe {
        written(x.len(), |out| {
            out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
                o.iter_mut().zip(x).for_each(|(o, &x)| {
                    o.write(f(x));
                })
            })
        })
    }
}

fn map2<T: WithDType>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    // The zip stops at the shorter side, so every element is written only if they match.
    assert_eq!(a.len(), b.len(), "element-wise op: operand lengths");
    // SAFETY: as in `map1`, a and b being of the same length.
    unsafe {
        written(a.len(), |out| {
            out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
                o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| {
                    o.write(f(a, b));
                });
            })
        })
    }
}

impl CustomOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let k = self.0 as f32;
                CpuStorage::F32(map1(contiguous(v, l)?, |x| x * k + 0.0))
            }
            CpuStorage::F64(v) => CpuStorage::F64(map1(contiguous(v, l)?, |x| x * self.0 + 0.0)),
            _ => candle_core::bail!("scale: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(scale(grad, self.0)?))
    }
}

impl CustomOp2 for ScaledSum {
    fn name(&self) -> &'static str {
        "scaled-sum"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let k = self.0 as f32;
                CpuStorage::F32(map2(contiguous(a, l1)?, contiguous(b, l2)?, |a, b| (a + b) * k + 0.0))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(map2(contiguous(a, l1)?, contiguous(b, l2)?, |a, b| (a + b) * self.0 + 0.0)),
            _ => candle_core::bail!("scaled_sum: f32 or f64 only, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = scale(grad, self.0)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl CustomOp2 for AddPerPlane {
    fn name(&self) -> &'static str {
        "add-per-plane"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn add<T: WithDType>(x: &[T], shift: &[T]) -> Vec<T> {
            // Every element is written only if the shifts cover whole planes.
            assert!(!shift.is_empty() && x.len().is_multiple_of(shift.len()), "add_per_plane: {} values, {} shifts", x.len(), shift.len());
            let plane = x.len() / shift.len();
            // SAFETY: the planes cover the output, and each element is written.
            unsafe {
                written(x.len(), |out| {
                    out.par_chunks_mut(plane).zip(x.par_chunks(plane)).zip(shift.par_iter()).for_each(|((o, x), &s)| {
                        o.iter_mut().zip(x).for_each(|(o, &x)| {
                            o.write(x + s);
                        });
                    })
                })
            }
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(s)) => CpuStorage::F32(add(contiguous(x, l1)?, contiguous(s, l2)?)),
            (CpuStorage::F64(x), CpuStorage::F64(s)) => CpuStorage::F64(add(contiguous(x, l1)?, contiguous(s, l2)?)),
            _ => candle_core::bail!("add_per_plane: f32 or f64 only, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _shift: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.contiguous()?.apply_op1_no_bwd(&PlaneSums)?)))
    }
}

impl CustomOp1 for PlaneSums {
    fn name(&self) -> &'static str {
        "plane-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn sums<T: WithDType>(x: &[T], plane: usize) -> Vec<T> {
            x.par_chunks(plane.max(1)).map(|p| p.iter().fold(T::zero(), |a, &v| a + v)).collect()
        }
        let (n, c, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(sums(contiguous(v, l)?, h * w)),
            CpuStorage::F64(v) => CpuStorage::F64(sums(contiguous(v, l)?, h * w)),
            _ => candle_core::bail!("plane sums: f32 or f64 only"),
        };
        Ok((out, Shape::from((n, c, 1, 1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Bit-identical to candle's ops, values and gradients, on a size that spans several
    /// chunks and one that does not fill one, f32 and f64.
    #[test]
    fn equal_candles_ops_to_the_bit() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for len in [3 * CHUNK + 5, 7] {
                let v = |p: &str| Var::from_tensor(&crate::rng::normal(&mut crate::rng::stream(5, p, len as u64), (len,), dtype, &dev).unwrap()).unwrap();
                let (a, b, r) = (v("a"), v("b"), v("r"));
                let s = 0.5f64.sqrt();
                let ours = scaled_sum(&a, &b, s).unwrap();
                let theirs = ((a.as_tensor() + b.as_tensor()).unwrap() * s).unwrap();
                let ga = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ours), bits(&theirs), "{dtype:?} {len}: values");
                for x in [&a, &b] {
                    assert_eq!(bits(ga.get(x).unwrap()), bits(gb.get(x).unwrap()), "{dtype:?} {len}: gradients");
                }
                assert_eq!(bits(&scale(&a, -3.25).unwrap()), bits(&(a.as_tensor() * -3.25).unwrap()), "{dtype:?} {len}: scale");
            }
        }
    }

    /// SiLU, values and input gradients, over several chunks and a part of one, against the
    /// closed forms x·σ(x) and g·σ(x)·(1 + x·(1 − σ(x))) in f64, within 1e-6 relative (absolute
    /// below 1); f64 input is candle's own.
    #[test]
    fn silu_equals_the_closed_form() {
        let dev = Device::Cpu;
        for len in [2 * CHUNK + 9, 5] {
            let x = Var::from_tensor(&(crate::rng::normal(&mut crate::rng::stream(8, "x", len as u64), (len,), DType::F32, &dev).unwrap() * 4.0).unwrap()).unwrap();
            let r = crate::rng::normal(&mut crate::rng::stream(8, "r", len as u64), (len,), DType::F32, &dev).unwrap();
            let ours = silu(&x).unwrap();
            let grads = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let (xs, rs): (Vec<f32>, Vec<f32>) = (x.to_vec1().unwrap(), r.to_vec1().unwrap());
            let (ys, gs): (Vec<f32>, Vec<f32>) = (ours.to_vec1().unwrap(), grads.get(&x).unwrap().to_vec1().unwrap());
            for (i, (&x, &g)) in xs.iter().zip(&rs).enumerate() {
                let (x, g) = (x as f64, g as f64);
                let s = 1.0 / (1.0 + (-x).exp());
                let (y, dx) = (x * s, g * s * (1.0 + x * (1.0 - s)));
                assert!((ys[i] as f64 - y).abs() <= 1e-6 * y.abs().max(1.0), "{len}: silu({x}) = {} against {y}", ys[i]);
                assert!((gs[i] as f64 - dx).abs() <= 1e-6 * dx.abs().max(1.0), "{len}: gradient at {x} = {} against {dx}", gs[i]);
            }
        }
        let x64 = Tensor::new(&[-1.5f64, 0.0, 2.0], &dev).unwrap();
        assert_eq!(silu(&x64).unwrap().to_vec1::<f64>().unwrap(), x64.silu().unwrap().to_vec1::<f64>().unwrap());
    }

    /// The per-plane shift against candle's broadcast add: values to the bit, the shift's
    /// gradient (a sum in another order) to rounding, in f64 and f32.
    #[test]
    fn add_per_plane_equals_the_broadcast_add() {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-5)] {
            let v = |p: &str, shape: &[usize]| Var::from_tensor(&crate::rng::normal(&mut crate::rng::stream(6, p, 0), shape, dtype, &dev).unwrap()).unwrap();
            let (x, s, r) = (v("x", &[3, 5, 7, 6]), v("s", &[3, 5, 1, 1]), v("r", &[3, 5, 7, 6]));
            let ours = add_per_plane(&x, &s).unwrap();
            let theirs = x.broadcast_add(&s).unwrap();
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ours), bits(&theirs), "{dtype:?}: values");
            let ga = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(bits(ga.get(&x).unwrap()), bits(gb.get(&x).unwrap()), "{dtype:?}: dx");
            let (a, b) = (ga.get(&s).unwrap(), gb.get(&s).unwrap());
            assert_eq!(a.dims(), b.dims());
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(d <= tol * 10.0, "{dtype:?}: dshift differs by {d:e}");
        }
    }
}
