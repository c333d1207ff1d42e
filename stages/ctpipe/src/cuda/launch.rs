//! Launching kernels/fused.cu on candle's CUDA tensors. Every kernel runs on the tensors'
//! device stream with CT_BLOCK threads per block; the grids here are the ones the emulation
//! harness (kernels/emulation/harness.cpp) uses, so what the emulated tests check is what runs.

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use crate::train::optim::StepScalars;
use candle_core::{Layout, Result, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "ctpipe-fused";
use super::{grid_for, kernel_kind, BLOCK, NORM_BLOCKS};

fn cfg(blocks: u64) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks.max(1) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// A kernel of our module (loaded once per device). A macro: candle does not export the
/// function handle's type.
macro_rules! func {
    ($dev:expr, $name:literal) => {
        $dev.get_or_load_custom_func($name, MODULE, PTX)?
    };
}

/// The contiguous f32 elements of a CUDA storage as a device view.
pub fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

fn storage<'a>(s: &'a Storage, what: &str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => candle_core::bail!("{what} is not on a CUDA device"),
    }
}

/// y = [SiLU](GroupNorm(x)·γ + β); x is [n, c, h·w] contiguous.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd(x: &CudaView<f32>, gamma: &CudaView<f32>, beta: &CudaView<f32>, dev: &CudaDevice, n: usize, c: usize, groups: usize, hw: usize, eps: f64, silu: bool) -> Result<CudaStorage> {
    let y = unsafe { dev.alloc::<f32>(n * c * hw)? };
    let f = func!(dev, "ct_group_norm_silu_fwd");
    let mut b = f.builder();
    b.arg(x);
    b.arg(gamma);
    b.arg(beta);
    b.arg(&y);
    candle_core::builder_arg!(b, c as i32, groups as i32, hw as i32, eps, silu as i32);
    unsafe { b.launch(cfg((n * groups) as u64)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// [dx | dγ | dβ] of the op above, for affine = [γ | β] and the output's gradient.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd(x: &CudaView<f32>, affine: &CudaView<f32>, dout: &CudaView<f32>, dev: &CudaDevice, n: usize, c: usize, groups: usize, hw: usize, eps: f64, silu: bool) -> Result<CudaStorage> {
    let len = n * c * hw;
    let out = unsafe { dev.alloc::<f32>(len + 2 * c)? };
    let part = unsafe { dev.alloc::<f64>(2 * n * c)? };
    {
        let f = func!(dev, "ct_group_norm_silu_bwd");
        let mut b = f.builder();
        b.arg(x);
        b.arg(affine);
        b.arg(dout);
        b.arg(&out);
        b.arg(&part);
        candle_core::builder_arg!(b, c as i32, groups as i32, hw as i32, eps, silu as i32);
        unsafe { b.launch(cfg((n * groups) as u64)) }.w()?;
    }
    {
        let (dgamma, dbeta) = (out.slice(len..len + c), out.slice(len + c..len + 2 * c));
        let f = func!(dev, "ct_group_norm_affine_sum");
        let mut b = f.builder();
        b.arg(&part);
        b.arg(&dgamma);
        b.arg(&dbeta);
        candle_core::builder_arg!(b, n as i32, c as i32);
        unsafe { b.launch(cfg((c as u64).div_ceil(BLOCK as u64))) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Σ clean(g)² over every gradient (f64; one host read for the whole set).
pub fn clean_sumsq(grads: &[&Tensor]) -> Result<f64> {
    let Some(first) = grads.first() else { return Ok(0.0) };
    let dev = first.device().as_cuda_device()?.clone();
    let partial = dev.alloc_zeros::<f64>(grads.len() * NORM_BLOCKS)?;
    let f = func!(&dev, "ct_clean_sumsq");
    for (i, g) in grads.iter().enumerate() {
        let g = g.contiguous()?;
        let (s, l) = g.storage_and_layout();
        let gv = view(storage(&s, "a gradient")?, l, "a gradient")?;
        let slot = partial.slice(i * NORM_BLOCKS..(i + 1) * NORM_BLOCKS);
        let mut b = f.builder();
        b.arg(&gv);
        candle_core::builder_arg!(b, g.elem_count() as i64);
        b.arg(&slot);
        unsafe { b.launch(cfg(NORM_BLOCKS as u64)) }.w()?;
    }
    let total = dev.alloc_zeros::<f64>(1)?;
    let f = func!(&dev, "ct_sum_f64");
    let mut b = f.builder();
    b.arg(&partial);
    candle_core::builder_arg!(b, (grads.len() * NORM_BLOCKS) as i64);
    b.arg(&total);
    unsafe { b.launch(cfg(1)) }.w()?;
    Ok(dev.clone_dtoh(&total)?[0])
}

/// One optimiser step of one parameter, in place on θ, m and v (v unused by Lion: pass m).
///
/// The kernel writes through device pointers taken under candle's read locks: θ, m and v are
/// three tensors updated together, which candle's in-place ops (one destination) cannot
/// express. Nothing else uses them during the step: m and v are the optimiser's own, θ is a
/// Var whose graph from the last step is gone.
pub fn optimizer_step(theta: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, s: &StepScalars) -> Result<()> {
    let dev = theta.device().as_cuda_device()?.clone();
    let grad = grad.contiguous()?;
    let (ts, tl) = theta.storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let (ms, ml) = m.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let tv = view(storage(&ts, "a parameter")?, tl, "a parameter")?;
    let gv = view(storage(&gs, "a gradient")?, gl, "a gradient")?;
    let mv = view(storage(&ms, "a moment")?, ml, "a moment")?;
    let vv = view(storage(&vs, "a moment")?, vl, "a moment")?;
    let n = theta.elem_count();
    if grad.elem_count() != n || m.elem_count() != n || v.elem_count() != n {
        candle_core::bail!("optimizer_step: parameter, gradient and moments differ in size");
    }
    let f = func!(&dev, "ct_optimizer_step");
    let mut b = f.builder();
    b.arg(&tv);
    b.arg(&gv);
    b.arg(&mv);
    b.arg(&vv);
    let (kind, rect) = kernel_kind(s);
    candle_core::builder_arg!(b, n as i64, kind, s.b1, s.b2, s.eps, s.lr, s.wd, s.scale, s.adam_step, s.bc1, s.sbc2, rect);
    unsafe { b.launch(cfg(grid_for(n))) }.w()?;
    Ok(())
}

/// ema ← b·ema + a·online, in place (see [`optimizer_step`] on writing under a read lock).
pub fn ema(ema: &Tensor, online: &Tensor, b: f32, a: f32) -> Result<()> {
    let dev = ema.device().as_cuda_device()?.clone();
    let online = online.contiguous()?;
    let (es, el) = ema.storage_and_layout();
    let (os, ol) = online.storage_and_layout();
    let ev = view(storage(&es, "an EMA parameter")?, el, "an EMA parameter")?;
    let ov = view(storage(&os, "a parameter")?, ol, "a parameter")?;
    let n = ema.elem_count();
    let f = func!(&dev, "ct_ema");
    let mut bld = f.builder();
    bld.arg(&ev);
    bld.arg(&ov);
    candle_core::builder_arg!(bld, n as i64, b, a);
    unsafe { bld.launch(cfg(grid_for(n))) }.w()?;
    Ok(())
}
