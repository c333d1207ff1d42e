//! `max_pool2d(relu(x), 2)`: ReLU, then 2×2 max pooling with stride 2, floor (an odd last row or
//! column is dropped), as PyTorch's `F.max_pool2d(F.relu(x), 2)`; the classifier's.
//!
//! Why not candle's `relu` and `max_pool2d`: candle 0.11.1's max-pooling gradient
//! (`backprop.rs`, `Op::MaxPool2D`) multiplies by the number of maxima in the window over four,
//! so a unique maximum receives a quarter of its gradient, and its composition (upsampling,
//! equality mask, average pooling, two products) is six single-threaded passes. Here the gradient
//! is PyTorch's: all of it to the window's first maximum in row-major order, a NaN winning
//! (`val > maxval || isnan(val)`, aten's `MaxPoolKernel.cpp`), and through the ReLU only where
//! that maximum is positive. One pass per (image, channel) plane, planes in parallel. Other
//! devices run candle's composition, with its gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// ReLU then 2×2 max pooling, stride 2: (n, c, h, w) → (n, c, h/2, w/2), h/2 and w/2 rounded down.
pub fn relu_max_pool2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("relu_max_pool2: a {h}×{w} map has no 2×2 window");
    }
    if x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return x.contiguous()?.apply_op1(ReluMaxPool2);
    }
    x.relu()?.narrow(2, 0, h / 2 * 2)?.narrow(3, 0, w / 2 * 2)?.max_pool2d(2)
}

struct ReluMaxPool2;

/// The gradient of [`ReluMaxPool2`] for (x, dL/dout).
struct ReluMaxPool2Bwd;

/// The input position (in its plane of width `w`) of output (i, j)'s window maximum, and that
/// maximum: the first in row-major order, unless a NaN comes later.
#[inline]
fn window_max<T: WithDType>(plane: &[T], w: usize, i: usize, j: usize) -> (usize, T) {
    let top = 2 * i * w + 2 * j;
    let mut best = (top, plane[top]);
    for at in [top + 1, top + w, top + w + 1] {
        let v = plane[at];
        #[allow(clippy::eq_op)]
        let is_nan = v != v;
        if v > best.1 || is_nan {
            best = (at, v);
        }
    }
    best
}

fn dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    let (_, _, h, w) = l.shape().dims4()?;
    Ok((h, w, h / 2, w / 2))
}

fn forward<T: WithDType>(x: &[T], l: &Layout) -> Result<(Vec<T>, Shape)> {
    let x = super::contiguous_slice(x, l, "relu_max_pool2", "input")?;
    let (n, c, _, _) = l.shape().dims4()?;
    let (h, w, oh, ow) = dims(l)?;
    let mut out = vec![T::zero(); n * c * oh * ow];
    out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(o, plane)| {
        for (i, row) in o.chunks_mut(ow).enumerate() {
            for (j, o) in row.iter_mut().enumerate() {
                let (_, m) = window_max(plane, w, i, j);
                // ReLU of the maximum: the maximum of the ReLUs; a NaN stays NaN.
                *o = if m < T::zero() { T::zero() } else { m };
            }
        }
    });
    Ok((out, Shape::from((n, c, oh, ow))))
}

fn backward<T: WithDType>(x: &[T], lx: &Layout, grad: &[T], lg: &Layout) -> Result<(Vec<T>, Shape)> {
    let x = super::contiguous_slice(x, lx, "relu_max_pool2", "input")?;
    let grad = super::contiguous_slice(grad, lg, "relu_max_pool2", "gradient")?;
    let (h, w, oh, ow) = dims(lx)?;
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).zip(grad.par_chunks(oh * ow)).for_each(|((d, plane), g)| {
        for (i, row) in g.chunks(ow).enumerate() {
            for (j, &g) in row.iter().enumerate() {
                let (at, m) = window_max(plane, w, i, j);
                // PyTorch's ReLU passes the gradient where its output is positive.
                if m > T::zero() {
                    d[at] = g;
                }
            }
        }
    });
    Ok((dx, lx.shape().clone()))
}

impl CustomOp1 for ReluMaxPool2 {
    fn name(&self) -> &'static str {
        "relu-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(x) => forward(x, l).map(|(v, s)| (CpuStorage::F32(v), s)),
            CpuStorage::F64(x) => forward(x, l).map(|(v, s)| (CpuStorage::F64(v), s)),
            _ => candle_core::bail!("relu_max_pool2: f32 or f64"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &ReluMaxPool2Bwd)?))
    }
}

impl CustomOp2 for ReluMaxPool2Bwd {
    fn name(&self) -> &'static str {
        "relu-max-pool2-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => backward(x, l1, g, l2).map(|(v, s)| (CpuStorage::F32(v), s)),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => backward(x, l1, g, l2).map(|(v, s)| (CpuStorage::F64(v), s)),
            _ => candle_core::bail!("relu_max_pool2 backward: f32 or f64, the same for input and gradient"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn grad_of(x: &[f64], shape: (usize, usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
        let v = Var::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
        let y = relu_max_pool2(v.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        (y.flatten_all().unwrap().to_vec1().unwrap(), g.get(&v).unwrap().flatten_all().unwrap().to_vec1().unwrap())
    }

    /// Worked by hand: the gradient goes whole to the window's maximum (candle's composition
    /// gives 0.25 here), ties to the first in row-major order, nothing where every value is
    /// negative, and an odd last row and column are dropped.
    #[test]
    fn by_hand() {
        let (y, g) = grad_of(&[1.0, 2.0, 3.0, 4.0], (1, 1, 2, 2));
        assert_eq!((y, g), (vec![4.0], vec![0.0, 0.0, 0.0, 1.0]));
        let (y, g) = grad_of(&[5.0, 5.0, 1.0, 5.0], (1, 1, 2, 2));
        assert_eq!((y, g), (vec![5.0], vec![1.0, 0.0, 0.0, 0.0]));
        let (y, g) = grad_of(&[-1.0, -2.0, -3.0, -0.5], (1, 1, 2, 2));
        assert_eq!((y, g), (vec![0.0], vec![0.0; 4]));
        // 3×5: one output row of two; the third row and the fifth column are dropped.
        #[rustfmt::skip]
        let x = [1.0, 7.0, 2.0, 0.0, 9.0,
                 3.0, 4.0, 8.0, 1.0, 9.0,
                 9.0, 9.0, 9.0, 9.0, 9.0];
        let (y, g) = grad_of(&x, (1, 1, 3, 5));
        assert_eq!(y, vec![7.0, 8.0]);
        #[rustfmt::skip]
        assert_eq!(g, vec![0.0, 1.0, 0.0, 0.0, 0.0,
                           0.0, 0.0, 1.0, 0.0, 0.0,
                           0.0, 0.0, 0.0, 0.0, 0.0]);
        let (y, _) = grad_of(&[1.0, f64::NAN, 3.0, 4.0], (1, 1, 2, 2));
        assert!(y[0].is_nan());
    }

    /// Values bit-identical to candle's relu → narrow → max_pool2d on random f32 input; the
    /// gradient against central differences in f64 (where candle's is a quarter of it).
    #[test]
    fn against_the_composition_and_finite_differences() {
        let dev = Device::Cpu;
        let x = crate::rng::normal(&mut crate::rng::stream(5, "x", 0), (2, 3, 7, 6), DType::F32, &dev).unwrap();
        let ours: Vec<f32> = relu_max_pool2(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let theirs: Vec<f32> = x.relu().unwrap().narrow(2, 0, 6).unwrap().max_pool2d(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ours, theirs);

        let x64: Vec<f64> = x.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let r: Vec<f64> = crate::rng::normal(&mut crate::rng::stream(5, "r", 0), 2 * 3 * 3 * 3, DType::F64, &dev).unwrap().to_vec1().unwrap();
        let objective = |x: &[f64]| -> f64 {
            let t = Tensor::from_vec(x.to_vec(), (2, 3, 7, 6), &dev).unwrap();
            let y: Vec<f64> = relu_max_pool2(&t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            y.iter().zip(&r).map(|(a, b)| a * b).sum()
        };
        let v = Var::from_vec(x64.clone(), (2, 3, 7, 6), &dev).unwrap();
        let rt = Tensor::from_vec(r.clone(), (2, 3, 3, 3), &dev).unwrap();
        let grads = relu_max_pool2(v.as_tensor()).unwrap().mul(&rt).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = grads.get(&v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-6;
        for j in 0..x64.len() {
            let (mut plus, mut minus) = (x64.clone(), x64.clone());
            plus[j] += eps;
            minus[j] -= eps;
            let fd = (objective(&plus) - objective(&minus)) / (2.0 * eps);
            assert!((fd - g[j]).abs() < 1e-6, "element {j}: backward {} against finite difference {fd}", g[j]);
        }
        assert!(g.iter().filter(|&&v| v != 0.0).count() > 20);
    }
}
