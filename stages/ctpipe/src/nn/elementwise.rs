//! Element-wise ops of the U-Net that candle runs on one thread on the CPU (its `affine`, the
//! `x * scalar` of the blocks' skip scale, and its gradient), here as custom ops over chunks in
//! parallel. Same arithmetic in the same type (candle's affine is `x · mul + add`, and adding
//! +0 turns a −0 into +0), so the same bits as candle's; other devices and dtypes take
//! candle's ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

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

struct Scale(f64);
struct ScaledSum(f64);
struct AddPerPlane;
/// The sum of each (image, channel) plane, (n, c, h, w) → (n, c, 1, 1).
struct PlaneSums;

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    super::contiguous_slice(v, l, "element-wise op", "input")
}

fn map1<T: WithDType>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    out
}

fn map2<T: WithDType>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = f(a, b));
    });
    out
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
            let plane = x.len() / shift.len().max(1);
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_mut(plane).zip(x.par_chunks(plane)).zip(shift.par_iter()).for_each(|((o, x), &s)| {
                o.iter_mut().zip(x).for_each(|(o, &x)| *o = x + s);
            });
            out
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
