//! The 2-D convolution with its bias (any kernel kh×kw, stride, zero padding), as one custom
//! op with CPU kernels, forward and backward: the U-Net's stride-1 "same" convolutions, the
//! classifier's, and Inception-v3's (strided, 1×7 and 7×1 kernels).
//!
//! Per image, the convolution is one matrix product `weight (cout, c·kh·kw) × cols (c·kh·kw, oh·ow)`
//! (im2col, `im2col.rs`). Composed from candle's ops (im2col, a broadcast matmul, a broadcast
//! add) it cost far more than its arithmetic on the CPU (docs/perf.md, issue 18 change 2): the
//! column tensor of the whole batch was stored for the backward pass; the weight gradient was
//! an (n, cout, c·k²) tensor summed over images, and the bias gradient a strided sum over
//! (n, h, w), both single-threaded; and each image's small product was split over the cores in
//! turn (candle's own CPU `conv2d`, which Inception used, builds its columns element by element
//! in a scattered order: a third of Inception's time). Here images run in parallel, each with
//! one single-threaded gemm and a per-thread column scratch; the backward pass recomputes the
//! columns instead of storing them and sums the per-image weight and bias gradients in image
//! order, so the result does not depend on the thread count. The U-Net's 3×3 convolutions of
//! few channels skip the columns altogether: `direct_conv.rs` computes them from a padded copy
//! of each image, forward and backward. Other devices use candle's `conv2d`.

use super::contiguous_slice;
use super::direct_conv::{self, Elem, Plan};
use super::gemm::{as_uninit, matmul_into, Mat};
use super::im2col::{col2im_plane, im2col_plane, Geometry};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

/// `conv2d(x, w) + bias`: x (n, c, h, w), weight (cout, c, k, k) with k odd, bias (cout),
/// stride 1, zero padding k/2 (the output has the input's size).
pub fn conv2d_same(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, _, k, k2) = weight.dims4()?;
    if k != k2 || k % 2 == 0 {
        candle_core::bail!("conv2d_same: input {:?}, weight {:?} and bias {:?} do not fit (an odd square kernel)", x.dims(), weight.dims(), bias.dims());
    }
    conv2d(x, weight, bias, 1, (k / 2, k / 2))
}

/// `conv2d(x, w) + bias`: x (n, c, h, w), weight (cout, c, kh, kw), bias (cout), `stride` in
/// both directions, `pad` zeros above and below, left and right.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, pad: (usize, usize)) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (cout, cin, kh, kw) = weight.dims4()?;
    let g = Geometry { h, w, kh, kw, stride, pad };
    if cin != c || bias.dims() != [cout] || stride == 0 || g.out_h().is_none() || g.out_w().is_none() {
        candle_core::bail!("conv2d: input {:?}, weight {:?}, bias {:?}, stride {stride} and padding {pad:?} do not fit", x.dims(), weight.dims(), bias.dims());
    }
    if !x.device().is_cpu() {
        let x = if pad != (0, 0) { x.pad_with_zeros(2, pad.0, pad.0)?.pad_with_zeros(3, pad.1, pad.1)? } else { x.clone() };
        return x.conv2d(weight, 0, stride, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, Conv { stride, pad })
}

#[derive(Clone, Copy)]
struct Conv {
    stride: usize,
    pad: (usize, usize),
}

/// The gradients of a [`Conv`] for (x, weight, dL/dout), as one flat [dx | dw | db], or
/// [dw | db] where the input needs no gradient.
struct ConvBwd {
    conv: Conv,
    need_dx: bool,
}

/// The shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    cout: usize,
    g: Geometry,
}

impl Dims {
    fn of(x: &Shape, weight: &Shape, stride: usize, pad: (usize, usize)) -> Result<Dims> {
        let (n, c, h, w) = x.dims4()?;
        let (cout, _, kh, kw) = weight.dims4()?;
        Ok(Dims { n, c, cout, g: Geometry { h, w, kh, kw, stride, pad } })
    }

    /// The direct kernel's plan where it applies (`direct_conv.rs`: odd square kernels above
    /// 1×1 at stride 1 with "same" padding).
    fn direct(&self) -> Option<Plan> {
        let g = &self.g;
        Plan::applies(g.kh, g.kw, g.stride, g.pad).then(|| Plan::new(self.c, self.cout, g.h, g.w, g.kh)).filter(Plan::pays)
    }

    /// Output positions of one plane (oh·ow).
    fn hw(&self) -> usize {
        self.g.out_len()
    }

    /// Rows of an image's column matrix (the weight's row length).
    fn ckk(&self) -> usize {
        self.c * self.g.kh * self.g.kw
    }

    fn x_len(&self) -> usize {
        self.c * self.g.h * self.g.w
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

    /// Images per parallel job: one contiguous run per thread, so that each thread builds its
    /// scratch once (rayon's `for_each_init` builds one per split, several per thread).
    fn run_len(&self) -> usize {
        self.n.div_ceil(rayon::current_num_threads()).max(1)
    }

    /// A zeroed column scratch (im2col leaves the padding taps untouched, so they stay zero).
    fn scratch<T: WithDType>(&self) -> Vec<T> {
        if self.g.is_identity() { Vec::new() } else { vec![T::zero(); self.ckk() * self.hw()] }
    }

    /// The column matrix (c·kh·kw, oh·ow) of one image: the image itself for a 1×1 kernel at
    /// stride 1 without padding.
    fn columns<'a, T: WithDType>(&self, image: &'a [T], scratch: &'a mut [T]) -> &'a [T] {
        if self.g.is_identity() {
            return image;
        }
        for (plane, cols) in image.chunks(self.g.h * self.g.w).zip(scratch.chunks_mut(self.g.cols_len())) {
            im2col_plane(plane, cols, &self.g);
        }
        scratch
    }
}

fn forward<T: Elem>(x: &[T], weight: &[T], bias: &[T], d: Dims) -> Vec<T> {
    if let Some(plan) = d.direct() {
        return direct_conv::forward(x, weight, bias, d.n, &plan);
    }
    let (hw, ckk, par, run) = (d.hw(), d.ckk(), d.gemm_parallelism(), d.run_len());
    let len = d.n * d.y_len();
    let mut out: Vec<T> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(run * d.y_len()).zip(x.par_chunks(run * d.x_len())).for_each(|(ys, images)| {
        let mut scratch = d.scratch::<T>();
        for (y, image) in ys.chunks_mut(d.y_len()).zip(images.chunks(d.x_len())) {
            let cols = d.columns(image, &mut scratch);
            let y = matmul_into(y, Mat::row_major(weight, d.cout, ckk), Mat::row_major(cols, ckk, hw), par);
            for (row, &b) in y.chunks_mut(hw).zip(bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
    });
    // SAFETY: the chunks cover all `len` elements, and matmul_into wrote each.
    unsafe { out.set_len(len) };
    out
}

/// [dx | dw | db] for input x, weight and the output's gradient dy; [dw | db] without
/// `need_dx` (an input no gradient flows to, such as the data entering the first layer).
fn backward<T: Elem>(x: &[T], weight: &[T], dy: &[T], d: Dims, need_dx: bool) -> Vec<T> {
    if let Some(plan) = d.direct() {
        return direct_conv::backward(x, weight, dy, d.n, &plan, need_dx);
    }
    let run = d.run_len();
    let dx_len = if need_dx { d.n * d.x_len() } else { 0 };
    // The result at its full size at once; dx zeroed (col2im adds into it). The images are
    // split into one run per thread.
    let mut out = Vec::with_capacity(dx_len + d.w_len() + d.cout);
    out.resize(dx_len, T::zero());
    let mut dx_runs: Vec<Option<&mut [T]>> = if need_dx { out.chunks_mut(run * d.x_len()).map(Some).collect() } else { (0..d.n.div_ceil(run)).map(|_| None).collect() };
    // Per-image weight and bias gradients, summed over images in order below.
    let mut part_w = vec![T::zero(); d.n * d.w_len()];
    let mut part_b = vec![T::zero(); d.n * d.cout];
    backward_by_columns(x, weight, dy, d, &mut dx_runs, &mut part_w, &mut part_b);
    out.extend_from_slice(&sum_parts(&part_w, d.w_len()));
    out.extend_from_slice(&sum_parts(&part_b, d.cout));
    out
}

/// Σ over the rows of `parts` (rows of `len`: per image or group of images), in row order.
pub(super) fn sum_parts<T: WithDType>(parts: &[T], len: usize) -> Vec<T> {
    let rows = parts.len().checked_div(len).unwrap_or(0);
    (0..len).into_par_iter().map(|j| (0..rows).fold(T::zero(), |s, i| s + parts[i * len + j])).collect()
}

/// The bias gradient of one image: Σ over positions of dy, per channel, in 16 interleaved
/// partial sums (position i in sum i mod 16, which the compiler keeps in vector registers; one
/// running sum was a chain of dependent adds, a tenth of the U-Net's backward convolutions),
/// added in order at the end, then the remainder: a fixed order at every vector width.
pub(super) fn bias_gradient<T: WithDType>(dy: &[T], db: &mut [T]) {
    let hw = dy.len() / db.len();
    for (b, row) in db.iter_mut().zip(dy.chunks(hw)) {
        let mut acc = [T::zero(); 16];
        let chunks = row.chunks_exact(16);
        let rest = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
        for c in chunks {
            acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
        }
        *b = acc.iter().fold(T::zero(), |s, &v| s + v) + rest;
    }
}

/// Per image: dx (into each run of `dx_runs` where given) through im2col and gemm, its
/// weight and bias gradients into `part_w` and `part_b`.
fn backward_by_columns<T: WithDType>(x: &[T], weight: &[T], dy: &[T], d: Dims, dx_runs: &mut [Option<&mut [T]>], part_w: &mut [T], part_b: &mut [T]) {
    let (hw, ckk, par, run) = (d.hw(), d.ckk(), d.gemm_parallelism(), d.run_len());
    dx_runs
        .par_iter_mut()
        .zip(part_w.par_chunks_mut(run * d.w_len()))
        .zip(part_b.par_chunks_mut(run * d.cout))
        .zip(x.par_chunks(run * d.x_len()).zip(dy.par_chunks(run * d.y_len())))
        .for_each(|(((dxs, dws), dbs), (images, dys))| {
            let mut dcols = if dxs.is_some() { d.scratch::<T>() } else { Vec::new() };
            let mut scratch = d.scratch::<T>();
            let mut dx_images = dxs.as_deref_mut().map(|dxs| dxs.chunks_mut(d.x_len()));
            let per_image = dws.chunks_mut(d.w_len()).zip(dbs.chunks_mut(d.cout)).zip(images.chunks(d.x_len()).zip(dys.chunks(d.y_len())));
            for ((dwi, dbi), (image, dyi)) in per_image {
                if let Some(dxi) = dx_images.as_mut().and_then(|it| it.next()) {
                    // dx = col2im(Wᵀ · dy); where the columns are the image, the product is dx.
                    let w_t = Mat::row_major(weight, d.cout, ckk).t();
                    if d.g.is_identity() {
                        matmul_into(as_uninit(dxi), w_t, Mat::row_major(dyi, d.cout, hw), par);
                    } else {
                        let dcols = matmul_into(as_uninit(&mut dcols), w_t, Mat::row_major(dyi, d.cout, hw), par);
                        for (plane, cols) in dxi.chunks_mut(d.g.h * d.g.w).zip(dcols.chunks(d.g.cols_len())) {
                            col2im_plane(cols, plane, &d.g);
                        }
                    }
                }
                // dW = dy · colsᵀ, db = Σ over positions of dy.
                let cols = d.columns(image, &mut scratch);
                matmul_into(as_uninit(dwi), Mat::row_major(dyi, d.cout, hw), Mat::row_major(cols, ckk, hw).t(), par);
                bias_gradient(dyi, dbi);
            }
        });
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape(), self.stride, self.pad)?;
        let shape = Shape::from((d.n, d.cout, d.g.out_h().unwrap_or(0), d.g.out_w().unwrap_or(0)));
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => CpuStorage::F32(forward(contiguous_slice(x, l1, "conv2d", "input")?, contiguous_slice(w, l2, "conv2d", "weight")?, contiguous_slice(b, l3, "conv2d", "bias")?, d)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => CpuStorage::F64(forward(contiguous_slice(x, l1, "conv2d", "input")?, contiguous_slice(w, l2, "conv2d", "weight")?, contiguous_slice(b, l3, "conv2d", "bias")?, d)),
            _ => candle_core::bail!("conv2d: f32 or f64, the same for input, weight and bias"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // candle asks for every input's gradient; one that reaches no variable is not computed.
        let need_dx = x.track_op();
        let flat = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &ConvBwd { conv: *self, need_dx })?;
        let (xn, wn) = (if need_dx { x.elem_count() } else { 0 }, weight.elem_count());
        let dx = if need_dx { Some(flat.narrow(0, 0, xn)?.reshape(x.shape())?) } else { None };
        let dw = flat.narrow(0, xn, wn)?.reshape(weight.shape())?;
        let db = flat.narrow(0, xn + wn, bias.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

impl CustomOp3 for ConvBwd {
    fn name(&self) -> &'static str {
        "conv2d-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape(), self.conv.stride, self.conv.pad)?;
        let len = if self.need_dx { d.n * d.x_len() } else { 0 } + d.w_len() + d.cout;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => CpuStorage::F32(backward(contiguous_slice(x, l1, "conv2d", "input")?, contiguous_slice(w, l2, "conv2d", "weight")?, contiguous_slice(g, l3, "conv2d", "gradient")?, d, self.need_dx)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => CpuStorage::F64(backward(contiguous_slice(x, l1, "conv2d", "input")?, contiguous_slice(w, l2, "conv2d", "weight")?, contiguous_slice(g, l3, "conv2d", "gradient")?, d, self.need_dx)),
            _ => candle_core::bail!("conv2d backward: f32 or f64, the same for input, weight and gradient"),
        };
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::op_checks::{assert_matches_reference, assert_thread_independent, assert_untracked_input_skips_its_gradient};
    use candle_core::{DType, Var};

    fn normal(purpose: &str, shape: &[usize], dtype: DType) -> Var {
        super::super::op_checks::normal(7, purpose, shape, dtype)
    }

    /// The op against candle's own `conv2d` (after candle's zero padding) + bias, values and
    /// the gradients of x, weight and bias: f64 to 1e-12 (the same products in another order),
    /// f32 to a few ulps of the largest value. The U-Net's "same" convolutions (1×1, 3×3, 5×5),
    /// and Inception's: stride 2 without padding, 1×7 and 7×1 with one-sided padding, 1×1
    /// with stride; one image (gemm split over the threads) and several (images in parallel);
    /// the last three through the direct kernel (checked: the cases before it go through
    /// columns, so that both paths stay covered).
    #[test]
    fn equals_candles_conv2d_plus_bias() {
        let same = |k: usize| (k, k, 1, (k / 2, k / 2));
        let cases = [
            (2, 3, 5, 6, 4, same(3)),
            (1, 8, 7, 7, 16, same(3)),
            (5, 4, 4, 9, 3, same(1)),
            (2, 3, 5, 4, 6, same(1)),
            (3, 2, 6, 5, 2, same(5)),
            (4, 16, 8, 8, 8, same(3)),
            (2, 3, 11, 9, 5, (3, 3, 2, (0, 0))),
            (3, 4, 7, 8, 3, (1, 7, 1, (0, 3))),
            (2, 4, 8, 7, 3, (7, 1, 1, (3, 0))),
            (2, 5, 9, 9, 4, (1, 1, 2, (0, 0))),
            (1, 3, 11, 9, 2, (3, 3, 2, (1, 1))),
            // The direct kernel's (`direct_conv.rs`): one image, and a group of 4 plus 1.
            (1, 3, 14, 14, 8, same(3)),
            (5, 6, 16, 15, 10, same(3)),
            (2, 4, 20, 18, 3, same(5)),
        ];
        for (i, &(n, c, h, w, cout, (kh, kw, stride, pad))) in cases.iter().enumerate() {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let direct = Dims::of(&Shape::from((n, c, h, w)), &Shape::from((cout, c, kh, kw)), stride, pad).unwrap().direct().is_some();
                assert_eq!(direct, i >= 11, "case {i}: which path");
                let x = normal("x", &[n, c, h, w], dtype);
                let wt = normal("w", &[cout, c, kh, kw], dtype);
                let b = normal("b", &[cout], dtype);
                let ours = if stride == 1 && kh == kw && pad == (kh / 2, kh / 2) { conv2d_same(&x, &wt, &b).unwrap() } else { conv2d(&x, &wt, &b, stride, pad).unwrap() };
                let padded = x.pad_with_zeros(2, pad.0, pad.0).unwrap().pad_with_zeros(3, pad.1, pad.1).unwrap();
                let theirs = padded.conv2d(&wt, 0, stride, 1, 1).unwrap().broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap()).unwrap();
                let r = normal("r", ours.dims(), dtype);
                assert_matches_reference(&ours, &theirs, &r, [&x, &wt, &b], tol, &format!("case {i} {dtype:?}"));
            }
        }
    }

    /// A stride that leaves input rows unused (candle's backward pass gets the input
    /// gradient's shape wrong there, so values only; the backward pass is col2im, tested as
    /// im2col's adjoint for such geometries in `im2col.rs`).
    #[test]
    fn strides_that_leave_rows_unused() {
        let x = normal("x", &[2, 3, 10, 9], DType::F64);
        let (wt, b) = (normal("w", &[4, 3, 3, 3], DType::F64), normal("b", &[4], DType::F64));
        let ours = conv2d(&x, &wt, &b, 2, (1, 1)).unwrap();
        let theirs = x.pad_with_zeros(2, 1, 1).unwrap().pad_with_zeros(3, 1, 1).unwrap().conv2d(&wt, 0, 2, 1, 1).unwrap().broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        assert_eq!(ours.dims(), [2, 4, 5, 5]);
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{diff}");
        let g = ours.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().dims(), x.dims());
    }

    /// An input that reaches no variable (the data entering the first layer) gets no
    /// gradient, and the weight's and bias's are the same bits as when it does; through
    /// columns (7×13) and the direct kernel (14×20).
    #[test]
    fn an_untracked_input_skips_its_gradient() {
        for (c, cout, h) in [(1, 16, 7), (8, 4, 7), (1, 16, 14)] {
            let x = normal("x", &[3, c, h, 6 + h], DType::F32);
            let (wt, b) = (normal("w", &[cout, c, 3, 3], DType::F32), normal("b", &[cout], DType::F32));
            let r = normal("r", &[3, cout, h, 6 + h], DType::F32);
            assert_untracked_input_skips_its_gradient(|x| conv2d_same(x, &wt, &b).unwrap(), &r, &x, [&wt, &b], &format!("{c} → {cout}"));
        }
    }

    /// The weight and bias gradients do not depend on how many threads computed them (the
    /// per-image parts, or the direct kernel's per-group parts, are summed in order), nor does
    /// the output; through columns (9×9) and the direct kernel (14×14).
    #[test]
    fn independent_of_the_thread_count() {
        for side in [9, 14] {
            let x = normal("x", &[6, 8, side, side], DType::F32);
            let wt = normal("w", &[16, 8, 3, 3], DType::F32);
            let b = normal("b", &[16], DType::F32);
            let r = normal("r", &[6, 16, side, side], DType::F32);
            assert_thread_independent(|| conv2d_same(&x, &wt, &b).unwrap(), &r, [&x, &wt, &b]);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let x = normal("x", &[1, 3, 4, 4], DType::F32);
        for (w, b) in [(&[2, 4, 3, 3][..], 2), (&[2, 3, 2, 2][..], 2), (&[2, 3, 3, 3][..], 3)] {
            let e = conv2d_same(&x, &normal("w", w, DType::F32), &normal("b", &[b], DType::F32)).unwrap_err().to_string();
            assert!(e.contains("do not fit"), "{e}");
        }
        let (w, b) = (normal("w", &[2, 3, 5, 5], DType::F32), normal("b", &[2], DType::F32));
        for (stride, pad) in [(1, (0, 0)), (0, (2, 2))] {
            let e = conv2d(&x, &w, &b, stride, pad).unwrap_err().to_string();
            assert!(e.contains("do not fit"), "{e}");
        }
    }
}
