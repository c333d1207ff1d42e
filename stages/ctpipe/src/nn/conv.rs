//! The stride-1 "same" convolution with its bias, as one custom op with CPU kernels, forward
//! and backward.
//!
//! Per image, the convolution is one matrix product `weight (cout, c·k²) × cols (c·k², h·w)`
//! (im2col, `im2col.rs`). Composed from candle's ops (im2col, a broadcast matmul, a broadcast
//! add) it cost far more than its arithmetic on the CPU (docs/perf.md, issue 18 change 2): the
//! column tensor of the whole batch was stored for the backward pass; the weight gradient was
//! an (n, cout, c·k²) tensor summed over images, and the bias gradient a strided sum over
//! (n, h, w), both single-threaded; and each image's small product was split over the cores in
//! turn. Here images run in parallel, each with one single-threaded gemm and a per-thread
//! column scratch; the backward pass recomputes the columns instead of storing them and sums
//! the per-image weight and bias gradients in image order, so the result does not depend on
//! the thread count. Other devices use candle's `conv2d`.

use super::im2col::{col2im_plane, im2col_plane};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

/// `conv2d(x, w) + bias`: x (n, c, h, w), weight (cout, c, k, k) with k odd, bias (cout),
/// stride 1, zero padding k/2.
pub fn conv2d_same(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (cout, cin, k, k2) = weight.dims4()?;
    if cin != c || k != k2 || k % 2 == 0 || bias.dims() != [cout] {
        candle_core::bail!("conv2d_same: input {:?}, weight {:?} and bias {:?} do not fit", x.dims(), weight.dims(), bias.dims());
    }
    if !x.device().is_cpu() {
        return x.conv2d(weight, k / 2, 1, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, ConvSame)
}

struct ConvSame;

/// The gradients of [`ConvSame`] for (x, weight, dL/dout), as one flat [dx | dw | db].
struct ConvSameBwd;

/// The shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
}

impl Dims {
    fn of(x: &Shape, weight: &Shape) -> Result<Dims> {
        let (n, c, h, w) = x.dims4()?;
        let (cout, _, k, _) = weight.dims4()?;
        Ok(Dims { n, c, h, w, cout, k })
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Rows of an image's column matrix (the weight's row length).
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }

    fn x_len(&self) -> usize {
        self.c * self.hw()
    }

    fn y_len(&self) -> usize {
        self.cout * self.hw()
    }

    fn w_len(&self) -> usize {
        self.cout * self.ckk()
    }

    /// Images run in parallel, each product on one thread, unless there are fewer images than
    /// threads: then each product is split over them.
    fn gemm_parallelism(&self) -> Parallelism {
        let threads = rayon::current_num_threads();
        if self.n < threads { Parallelism::Rayon(threads) } else { Parallelism::None }
    }

    /// A zeroed column scratch (im2col leaves the padding taps untouched, so they stay zero).
    fn scratch<T: WithDType>(&self) -> Vec<T> {
        if self.k == 1 { Vec::new() } else { vec![T::zero(); self.ckk() * self.hw()] }
    }

    /// The column matrix (c·k², h·w) of one image: the image itself for a 1×1 kernel.
    fn columns<'a, T: WithDType>(&self, image: &'a [T], scratch: &'a mut [T]) -> &'a [T] {
        if self.k == 1 {
            return image;
        }
        let (hw, kk) = (self.hw(), self.k * self.k);
        for (plane, cols) in image.chunks(hw).zip(scratch.chunks_mut(kk * hw)) {
            im2col_plane(plane, cols, self.h, self.w, self.k);
        }
        scratch
    }
}

/// A matrix inside a slice: element (r, c) at `r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    fn row_major(data: &'a [T], rows: usize, cols: usize) -> Mat<'a, T> {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    fn t(self) -> Mat<'a, T> {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b`, dst row-major (a.rows × b.cols).
fn matmul_into<T: WithDType>(dst: &mut [T], a: Mat<T>, b: Mat<T>, par: Parallelism) {
    assert!(a.cols == b.rows && dst.len() == a.rows * b.cols && a.in_bounds() && b.in_bounds(), "conv: matrix shapes do not fit");
    // SAFETY: the assertion keeps every index gemm forms inside its slice; dst is exclusive.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

fn forward<T: WithDType>(x: &[T], weight: &[T], bias: &[T], d: Dims) -> Vec<T> {
    let (hw, ckk, par) = (d.hw(), d.ckk(), d.gemm_parallelism());
    let mut out = vec![T::zero(); d.n * d.y_len()];
    out.par_chunks_mut(d.y_len()).zip(x.par_chunks(d.x_len())).for_each_init(
        || d.scratch::<T>(),
        |scratch, (y, image)| {
            let cols = d.columns(image, scratch);
            matmul_into(y, Mat::row_major(weight, d.cout, ckk), Mat::row_major(cols, ckk, hw), par);
            for (row, &b) in y.chunks_mut(hw).zip(bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        },
    );
    out
}

/// [dx | dw | db] for input x, weight and the output's gradient dy.
fn backward<T: WithDType>(x: &[T], weight: &[T], dy: &[T], d: Dims) -> Vec<T> {
    let (hw, ckk, kk, par) = (d.hw(), d.ckk(), d.k * d.k, d.gemm_parallelism());
    let mut dx = vec![T::zero(); d.n * d.x_len()];
    // Per-image weight and bias gradients, summed over images in order below.
    let mut part_w = vec![T::zero(); d.n * d.w_len()];
    let mut part_b = vec![T::zero(); d.n * d.cout];
    dx.par_chunks_mut(d.x_len())
        .zip(part_w.par_chunks_mut(d.w_len()))
        .zip(part_b.par_chunks_mut(d.cout))
        .enumerate()
        .for_each_init(
            || (vec![T::zero(); if d.k == 1 { 0 } else { ckk * hw }], d.scratch::<T>()),
            |(dcols, scratch), (i, ((dxi, dwi), dbi))| {
                let dyi = &dy[i * d.y_len()..(i + 1) * d.y_len()];
                let image = &x[i * d.x_len()..(i + 1) * d.x_len()];
                // dx = col2im(Wᵀ · dy); for a 1×1 kernel the product is dx itself.
                let w_t = Mat::row_major(weight, d.cout, ckk).t();
                if d.k == 1 {
                    matmul_into(dxi, w_t, Mat::row_major(dyi, d.cout, hw), par);
                } else {
                    matmul_into(dcols, w_t, Mat::row_major(dyi, d.cout, hw), par);
                    for (plane, cols) in dxi.chunks_mut(hw).zip(dcols.chunks(kk * hw)) {
                        col2im_plane(cols, plane, d.h, d.w, d.k);
                    }
                }
                // dW = dy · colsᵀ, db = Σ over positions of dy.
                let cols = d.columns(image, scratch);
                matmul_into(dwi, Mat::row_major(dyi, d.cout, hw), Mat::row_major(cols, ckk, hw).t(), par);
                for (b, row) in dbi.iter_mut().zip(dyi.chunks(hw)) {
                    *b = row.iter().fold(T::zero(), |s, &v| s + v);
                }
            },
        );
    let sum_images = |parts: &[T], len: usize| -> Vec<T> {
        (0..len).into_par_iter().map(|j| (0..d.n).fold(T::zero(), |s, i| s + parts[i * len + j])).collect()
    };
    let (dw, db) = (sum_images(&part_w, d.w_len()), sum_images(&part_b, d.cout));
    drop(part_w);
    let mut out = dx;
    out.extend_from_slice(&dw);
    out.extend_from_slice(&db);
    out
}

fn slice<'a, T: WithDType>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("conv2d_same: {what} must be contiguous"),
    }
}

impl CustomOp3 for ConvSame {
    fn name(&self) -> &'static str {
        "conv2d-same"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape())?;
        let shape = Shape::from((d.n, d.cout, d.h, d.w));
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => CpuStorage::F32(forward(slice(x, l1, "input")?, slice(w, l2, "weight")?, slice(b, l3, "bias")?, d)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => CpuStorage::F64(forward(slice(x, l1, "input")?, slice(w, l2, "weight")?, slice(b, l3, "bias")?, d)),
            _ => candle_core::bail!("conv2d_same: f32 or f64, the same for input, weight and bias"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let flat = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &ConvSameBwd)?;
        let (xn, wn) = (x.elem_count(), weight.elem_count());
        let dx = flat.narrow(0, 0, xn)?.reshape(x.shape())?;
        let dw = flat.narrow(0, xn, wn)?.reshape(weight.shape())?;
        let db = flat.narrow(0, xn + wn, bias.elem_count())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for ConvSameBwd {
    fn name(&self) -> &'static str {
        "conv2d-same-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape())?;
        let len = d.n * d.x_len() + d.w_len() + d.cout;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => CpuStorage::F32(backward(slice(x, l1, "input")?, slice(w, l2, "weight")?, slice(g, l3, "gradient")?, d)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => CpuStorage::F64(backward(slice(x, l1, "input")?, slice(w, l2, "weight")?, slice(g, l3, "gradient")?, d)),
            _ => candle_core::bail!("conv2d_same backward: f32 or f64, the same for input, weight and gradient"),
        };
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn normal(purpose: &str, shape: &[usize], dtype: DType) -> Var {
        let t = crate::rng::normal(&mut crate::rng::stream(7, purpose, shape.iter().product::<usize>() as u64), shape, dtype, &Device::Cpu).unwrap();
        Var::from_tensor(&t).unwrap()
    }

    /// The op against candle's own `conv2d` + bias, values and the gradients of x, weight and
    /// bias: f64 to 1e-12 (the same products in another order), f32 to a few ulps of the
    /// largest value; odd sizes, 1×1, 3×3 and 5×5 kernels, one image (gemm split over the
    /// threads) and several (images in parallel).
    #[test]
    fn equals_candles_conv2d_plus_bias() {
        for (i, &(n, c, h, w, cout, k)) in [(2, 3, 5, 6, 4, 3), (1, 8, 7, 7, 16, 3), (5, 4, 4, 9, 3, 1), (3, 2, 6, 5, 2, 5), (4, 16, 8, 8, 8, 3)].iter().enumerate() {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let x = normal("x", &[n, c, h, w], dtype);
                let wt = normal("w", &[cout, c, k, k], dtype);
                let b = normal("b", &[cout], dtype);
                let ours = conv2d_same(&x, &wt, &b).unwrap();
                let theirs = x.conv2d(&wt, k / 2, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap()).unwrap();
                let r = normal("r", ours.dims(), dtype);
                let g1 = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let pairs = [(&ours, &theirs, "output"), (g1.get(&x).unwrap(), g2.get(&x).unwrap(), "dx"), (g1.get(&wt).unwrap(), g2.get(&wt).unwrap(), "dw"), (g1.get(&b).unwrap(), g2.get(&b).unwrap(), "db")];
                for (a, e, what) in pairs {
                    assert_eq!(a.dims(), e.dims(), "case {i} {dtype:?}: {what} shape");
                    let scale = e.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap().max(1e-30);
                    let diff = (a - e).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                    assert!(diff <= tol * scale, "case {i} {dtype:?}: {what} differs by {diff:.3e} of {scale:.3e}");
                }
            }
        }
    }

    /// The weight and bias gradients do not depend on how many threads computed them (the
    /// per-image parts are summed in image order), nor does the output.
    #[test]
    fn independent_of_the_thread_count() {
        let x = normal("x", &[6, 8, 9, 9], DType::F32);
        let wt = normal("w", &[16, 8, 3, 3], DType::F32);
        let b = normal("b", &[16], DType::F32);
        let r = normal("r", &[6, 16, 9, 9], DType::F32);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = conv2d_same(&x, &wt, &b).unwrap();
                let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                [y, g.get(&x).unwrap().clone(), g.get(&wt).unwrap().clone(), g.get(&b).unwrap().clone()].map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            })
        };
        let (one, three, eight) = (run(1), run(3), run(8));
        for (i, what) in ["output", "dx", "dw", "db"].iter().enumerate() {
            assert!(one[i] == three[i] && one[i] == eight[i], "{what} depends on the thread count");
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let x = normal("x", &[1, 3, 4, 4], DType::F32);
        for (w, b) in [(&[2, 4, 3, 3][..], 2), (&[2, 3, 2, 2][..], 2), (&[2, 3, 3, 3][..], 3)] {
            let e = conv2d_same(&x, &normal("w", w, DType::F32), &normal("b", &[b], DType::F32)).unwrap_err().to_string();
            assert!(e.contains("do not fit"), "{e}");
        }
    }
}
