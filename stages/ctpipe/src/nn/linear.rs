//! The fully connected layer `x·Wᵀ + b` as one custom op with CPU kernels, forward and
//! backward. Composed from candle's ops (a transposed view, a matmul, a broadcast add) the MLP
//! toys' step paid for the bias: its gradient was candle's single-threaded, strided sum over
//! the batch (7 % of the `mlp-toy` step, docs/perf.md change 16), besides one op more each way
//! and the gradient additions between them. Here the backward pass is one op giving
//! [dx | dW | db]: two gemm products and the bias gradient summed row by row (in row order, so
//! its bits do not depend on the thread count). Other devices and dtypes use candle's ops.

use super::contiguous_slice;
use super::gemm::{matmul_into, Mat};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;

/// `x·weightᵀ + bias` over the last dimension of x: x (…, in), weight (out, in), bias (out).
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (out, fan_in) = weight.dims2()?;
    if x.dims().last() != Some(&fan_in) || bias.dims() != [out] {
        candle_core::bail!("linear: input {:?}, weight {:?} and bias {:?} do not fit", x.dims(), weight.dims(), bias.dims());
    }
    let same_dtype = x.dtype() == weight.dtype() && x.dtype() == bias.dtype();
    if !x.device().is_cpu() || !same_dtype || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return x.broadcast_matmul(&weight.t()?)?.broadcast_add(bias);
    }
    if x.rank() == 2 {
        return x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, Linear);
    }
    let mut shape = x.dims().to_vec();
    let rows = x.elem_count() / fan_in.max(1);
    let y = x.contiguous()?.reshape((rows, fan_in))?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, Linear)?;
    *shape.last_mut().expect("x has a last dimension") = out;
    y.reshape(shape)
}

struct Linear;

/// The gradients of [`Linear`] for (x, weight, dL/dy), as one flat [dx | dW | db], or
/// [dW | db] where the input needs no gradient.
struct LinearBwd {
    need_dx: bool,
}

/// gemm splits a product over the threads itself; one thread needs no pool.
fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

fn forward<T: WithDType>(x: &[T], weight: &[T], bias: &[T]) -> Vec<T> {
    let (out, fan_in) = (bias.len(), weight.len() / bias.len().max(1));
    let rows = x.len() / fan_in.max(1);
    let mut y = Vec::with_capacity(rows * out);
    let yv = matmul_into(&mut y.spare_capacity_mut()[..rows * out], Mat::row_major(x, rows, fan_in), Mat::row_major(weight, out, fan_in).t(), parallelism());
    for row in yv.chunks_mut(out.max(1)) {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
    }
    // SAFETY: matmul_into wrote all rows·out elements.
    unsafe { y.set_len(rows * out) };
    y
}

/// [dx | dW | db] for input x (rows, in), weight (out, in) and the output's gradient dy
/// (rows, out); [dW | db] without `need_dx`.
fn backward<T: WithDType>(x: &[T], weight: &[T], dy: &[T], out: usize, need_dx: bool) -> Vec<T> {
    let fan_in = weight.len() / out.max(1);
    let rows = dy.len() / out.max(1);
    let (dx_len, dw_len) = (if need_dx { rows * fan_in } else { 0 }, out * fan_in);
    let mut grads = Vec::with_capacity(dx_len + dw_len + out);
    let spare = &mut grads.spare_capacity_mut()[..dx_len + dw_len];
    let (dx, dw) = spare.split_at_mut(dx_len);
    // dx = dy · W, dW = dyᵀ · x.
    if need_dx {
        matmul_into(dx, Mat::row_major(dy, rows, out), Mat::row_major(weight, out, fan_in), parallelism());
    }
    matmul_into(dw, Mat::row_major(dy, rows, out).t(), Mat::row_major(x, rows, fan_in), parallelism());
    // SAFETY: the two products wrote all dx_len + dw_len elements.
    unsafe { grads.set_len(dx_len + dw_len) };
    // db = Σ over rows of dy, each column summed in row order.
    let mut db = vec![T::zero(); out];
    for row in dy.chunks(out.max(1)) {
        db.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
    }
    grads.extend_from_slice(&db);
    grads
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, _) = l1.shape().dims2()?;
        let (out, _) = l2.shape().dims2()?;
        let y = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => CpuStorage::F32(forward(contiguous_slice(x, l1, "linear", "input")?, contiguous_slice(w, l2, "linear", "weight")?, contiguous_slice(b, l3, "linear", "bias")?)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => CpuStorage::F64(forward(contiguous_slice(x, l1, "linear", "input")?, contiguous_slice(w, l2, "linear", "weight")?, contiguous_slice(b, l3, "linear", "bias")?)),
            _ => candle_core::bail!("linear: f32 or f64, the same for input, weight and bias"),
        };
        Ok((y, Shape::from((rows, out))))
    }

    fn bwd(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // candle asks for every input's gradient; one that reaches no variable is not computed.
        let need_dx = x.track_op();
        let flat = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &LinearBwd { need_dx })?;
        let (xn, wn) = (if need_dx { x.elem_count() } else { 0 }, weight.elem_count());
        let dx = if need_dx { Some(flat.narrow(0, 0, xn)?.reshape(x.shape())?) } else { None };
        let dw = flat.narrow(0, xn, wn)?.reshape(weight.shape())?;
        let db = flat.narrow(0, xn + wn, bias.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

impl CustomOp3 for LinearBwd {
    fn name(&self) -> &'static str {
        "linear-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, fan_in) = l1.shape().dims2()?;
        let (out, _) = l2.shape().dims2()?;
        let grads = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => CpuStorage::F32(backward(contiguous_slice(x, l1, "linear", "input")?, contiguous_slice(w, l2, "linear", "weight")?, contiguous_slice(g, l3, "linear", "gradient")?, out, self.need_dx)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => CpuStorage::F64(backward(contiguous_slice(x, l1, "linear", "input")?, contiguous_slice(w, l2, "linear", "weight")?, contiguous_slice(g, l3, "linear", "gradient")?, out, self.need_dx)),
            _ => candle_core::bail!("linear backward: f32 or f64, the same for input, weight and gradient"),
        };
        let dx_len = if self.need_dx { rows * fan_in } else { 0 };
        Ok((grads, Shape::from(dx_len + out * fan_in + out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::op_checks::{assert_matches_reference, assert_thread_independent, assert_untracked_input_skips_its_gradient};
    use candle_core::Var;

    fn normal(purpose: &str, shape: &[usize], dtype: DType) -> Var {
        super::super::op_checks::normal(11, purpose, shape, dtype)
    }

    /// The op against candle's composition (matmul with the transposed weight, broadcast add):
    /// values and the gradients of x, weight and bias, f64 to 1e-12 and f32 to 1e-5 of the
    /// largest value; a batch of rows, one row, leading dimensions (…, in), and a weight
    /// taken as a non-contiguous view.
    #[test]
    fn equals_candles_matmul_plus_bias() {
        for (i, (x_shape, out)) in [(vec![256, 257], 256), (vec![1, 5], 3), (vec![2, 3, 7], 4), (vec![64, 2], 1)].into_iter().enumerate() {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let fan_in = *x_shape.last().unwrap();
                let x = normal("x", &x_shape, dtype);
                let wt = normal("w", &[fan_in, out], dtype);
                let w = wt.as_tensor().t().unwrap();
                let b = normal("b", &[out], dtype);
                let ours = linear(&x, &w, &b).unwrap();
                let theirs = x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
                let r = normal("r", ours.dims(), dtype);
                assert_matches_reference(&ours, &theirs, &r, [&x, &wt, &b], tol, &format!("case {i} {dtype:?}"));
            }
        }
    }

    /// The bias gradient by hand: each column of dy summed (here dy = 1 for y's sum).
    #[test]
    fn bias_gradient_counts_every_row() {
        let x = normal("x", &[37, 4], DType::F64);
        let (w, b) = (normal("w", &[3, 4], DType::F64), normal("b", &[3], DType::F64));
        let g = linear(&x, &w, &b).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&b).unwrap().to_vec1::<f64>().unwrap(), vec![37.0; 3]);
    }

    /// An input that reaches no variable gets no gradient; the parameters' are the same bits.
    #[test]
    fn an_untracked_input_skips_its_gradient() {
        let x = normal("x", &[9, 5], DType::F32);
        let (w, b) = (normal("w", &[3, 5], DType::F32), normal("b", &[3], DType::F32));
        let r = normal("r", &[9, 3], DType::F32);
        assert_untracked_input_skips_its_gradient(|x| linear(x, &w, &b).unwrap(), &r, &x, [&w, &b], "linear");
    }

    /// Output and gradients are the same bits under 1, 3 and 8 threads.
    #[test]
    fn independent_of_the_thread_count() {
        let x = normal("x", &[200, 96], DType::F32);
        let (w, b) = (normal("w", &[80, 96], DType::F32), normal("b", &[80], DType::F32));
        let r = normal("r", &[200, 80], DType::F32);
        assert_thread_independent(|| linear(&x, &w, &b).unwrap(), &r, [&x, &w, &b]);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let x = normal("x", &[2, 4], DType::F32);
        for (w, b) in [(&[3, 5][..], 3), (&[3, 4][..], 2)] {
            let e = linear(&x, &normal("w", w, DType::F32), &normal("b", &[b], DType::F32)).unwrap_err().to_string();
            assert!(e.contains("do not fit"), "{e}");
        }
    }
}
