//! Small tensor helpers the losses share.

use candle_core::{DType, Result, Tensor};

/// Replace NaN by 0 and clamp infinities to ±3e38 (torch.nan_to_num for f32).
pub fn nan_to_num(t: &Tensor) -> Result<Tensor> {
    let is_nan = t.ne(t)?;
    let zeros = t.zeros_like()?;
    is_nan.where_cond(&zeros, t)?.clamp(-3e38f64, 3e38f64)
}

/// softplus(x) = ln(1 + eˣ), computed as max(x, 0) + ln(1 + e^{−|x|}) to stay finite.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()?.add(&(x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

/// Σ over all but the first dimension: one value per sample.
pub fn per_sample_sum(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)?;
    x.reshape((n, x.elem_count() / n.max(1)))?.sum(1)
}

/// A tensor's values as f64 on the host.
pub fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()
}

/// Select rows: `mask[i]` true takes row i of `a`, false of `b`.
pub fn select_rows(mask: &[bool], a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let m: Vec<u8> = mask.iter().map(|&v| v as u8).collect();
    let mut shape = vec![mask.len()];
    shape.extend(std::iter::repeat_n(1, a.rank() - 1));
    let m = Tensor::from_vec(m, shape, a.device())?.broadcast_as(a.shape())?;
    m.where_cond(a, b)
}

/// Whether every value of `t` is finite: x·0 is 0 for finite x and NaN for NaN and ±inf, so
/// one reduction on the tensor's device answers it.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let s = t.to_dtype(candle_core::DType::F32)?.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(s == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn helpers() {
        let d = Device::Cpu;
        let t = Tensor::new(&[f32::NAN, f32::INFINITY, -f32::INFINITY, 2.0], &d).unwrap();
        assert_eq!(nan_to_num(&t).unwrap().to_vec1::<f32>().unwrap(), [0.0, 3e38, -3e38, 2.0]);
        let x = Tensor::new(&[-100f32, 0.0, 3.0, 100.0], &d).unwrap();
        let sp = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        let want = [(-100f64).exp().ln_1p(), 2f64.ln(), 3f64.exp().ln_1p(), 100.0];
        for (a, b) in sp.iter().zip(want) {
            assert!((*a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-30) + 1e-40, "{a} vs {b}");
        }
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &d).unwrap();
        assert_eq!(per_sample_sum(&x).unwrap().to_vec1::<f32>().unwrap(), [3.0, 7.0]);
        let y = Tensor::new(&[[9f32, 9.0], [8.0, 8.0]], &d).unwrap();
        assert_eq!(select_rows(&[true, false], &x, &y).unwrap().to_vec2::<f32>().unwrap(), [[1.0, 2.0], [8.0, 8.0]]);
    }
}
