//! Checks shared by the tests of the (input, weight, bias) custom ops, `conv.rs` and
//! `linear.rs`: against candle's composition of the same function, under several thread
//! counts, and with an input that needs no gradient.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

/// A seeded standard normal variable.
pub fn normal(seed: u64, purpose: &str, shape: &[usize], dtype: DType) -> Var {
    let t = crate::rng::normal(&mut crate::rng::stream(seed, purpose, shape.iter().product::<usize>() as u64), shape, dtype, &Device::Cpu).unwrap();
    Var::from_tensor(&t).unwrap()
}

/// y and the gradients of x, weight and bias of Σ r·y.
fn output_and_grads(y: &Tensor, r: &Tensor, [x, w, b]: [&Var; 3]) -> [Tensor; 4] {
    let g = y.mul(r).unwrap().sum_all().unwrap().backward().unwrap();
    [y.clone(), g.get(x).unwrap().clone(), g.get(w).unwrap().clone(), g.get(b).unwrap().clone()]
}

const NAMES: [&str; 4] = ["output", "dx", "dw", "db"];

/// `ours` and `theirs`, the same function of `inputs` (x, weight, bias), agree: the value and
/// the gradient of each input of Σ r·y, each to `tol` of the reference's largest magnitude.
pub fn assert_matches_reference(ours: &Tensor, theirs: &Tensor, r: &Tensor, inputs: [&Var; 3], tol: f64, case: &str) {
    let pairs = output_and_grads(ours, r, inputs).into_iter().zip(output_and_grads(theirs, r, inputs)).zip(NAMES);
    for ((a, e), what) in pairs {
        assert_eq!(a.dims(), e.dims(), "{case}: {what} shape");
        let scale = e.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap().max(1e-30);
        let diff = (&a - &e).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        assert!(diff <= tol * scale, "{case}: {what} differs by {diff:.3e} of {scale:.3e}");
    }
}

/// `op` (of x, weight, bias; f32) gives the same bits of its value and of the three gradients
/// of Σ r·y under 1, 3 and 8 threads.
pub fn assert_thread_independent(op: impl Fn() -> Tensor + Sync, r: &Tensor, inputs: [&Var; 3]) {
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| output_and_grads(&op(), r, inputs).map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
    };
    let (one, three, eight) = (run(1), run(3), run(8));
    for (i, what) in NAMES.iter().enumerate() {
        assert!(one[i] == three[i] && one[i] == eight[i], "{what} depends on the thread count");
    }
}

/// `op` applied to x as a variable and to x detached (no variable behind it): the detached
/// input gets no gradient, and the parameters' gradients of Σ r·y are the same bits (f32).
pub fn assert_untracked_input_skips_its_gradient(op: impl Fn(&Tensor) -> Tensor, r: &Tensor, x: &Var, params: [&Var; 2], case: &str) {
    let grads = |x: &Tensor| op(x).mul(r).unwrap().sum_all().unwrap().backward().unwrap();
    let detached = x.as_tensor().detach();
    let (tracked, untracked) = (grads(x.as_tensor()), grads(&detached));
    assert!(tracked.get(x).is_some() && untracked.get(&detached).is_none(), "{case}: the untracked input got a gradient");
    for v in params {
        let bits = |g: &GradStore| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(bits(&tracked) == bits(&untracked), "{case}: a parameter's gradient changed");
    }
}
