//! ctpipe's own CUDA kernels (kernels/fused.cu): fused GroupNorm(+SiLU) forward and backward,
//! and the optimiser and EMA updates as one kernel per parameter instead of a dozen tensor ops.
//!
//! Whether the GPU path uses them is a process-wide switch, [`kernels`]: `CTPIPE_CUDA_KERNELS`
//! = `fused` or `composed` (candle's ops, as before the kernels existed). The default is
//! `composed` until the kernels have passed `tests/gpu_agreement.rs` on a GPU: so far they are
//! checked only under host emulation ([`emulated`], against the CPU code they mirror).
//! The CPU path does not depend on the switch.

#[cfg(feature = "cuda")]
pub mod launch;

#[cfg(test)]
mod emulated;

use crate::train::optim::{Kind, StepScalars};
use std::sync::atomic::{AtomicU8, Ordering};

/// Threads per block (CT_BLOCK in the kernels).
pub const BLOCK: u32 = 256;
/// Blocks per parameter of the gradient-norm partial sums: a constant, so that the sum's
/// order, and with it the result, depends on nothing but the parameter's size.
pub const NORM_BLOCKS: usize = 64;
/// At most this many blocks for the element-wise kernels (grid-stride loops).
pub const MAX_BLOCKS: u64 = 1024;

/// Blocks for a grid-stride kernel over n elements.
pub fn grid_for(n: usize) -> u64 {
    (n as u64).div_ceil(BLOCK as u64).clamp(1, MAX_BLOCKS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// candle's tensor ops.
    Composed,
    /// kernels/fused.cu.
    Fused,
}

const UNSET: u8 = 0;
static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

fn code(k: Kernels) -> u8 {
    match k {
        Kernels::Composed => 1,
        Kernels::Fused => 2,
    }
}

/// The kernel's `kind` and `rect` arguments (rect < 0: unrectified).
pub fn kernel_kind(s: &StepScalars) -> (i32, f32) {
    let kind = match s.kind {
        Kind::Adam => 0,
        Kind::RAdam => 1,
        Kind::Lion => 2,
    };
    (kind, s.rect.unwrap_or(-1.0))
}

/// `CTPIPE_CUDA_KERNELS`: fused, composed, or unset (composed).
fn from_env() -> anyhow::Result<Kernels> {
    match std::env::var("CTPIPE_CUDA_KERNELS").as_deref() {
        Ok("fused") => Ok(Kernels::Fused),
        Ok("composed") | Err(std::env::VarError::NotPresent) => Ok(Kernels::Composed),
        Ok(v) => Err(crate::error::usage(format!("CTPIPE_CUDA_KERNELS={v}: expected fused or composed"))),
        Err(_) => Err(crate::error::usage("CTPIPE_CUDA_KERNELS: not valid UTF-8 (expected fused or composed)".to_string())),
    }
}

/// Refuse a misspelt `CTPIPE_CUDA_KERNELS` (checked when a CUDA device is chosen).
pub fn check_env() -> anyhow::Result<()> {
    from_env().map(|_| ())
}

/// The GPU path's kernels: [`set_kernels`] if called, else `CTPIPE_CUDA_KERNELS`, else composed.
pub fn kernels() -> Kernels {
    match CHOICE.load(Ordering::Relaxed) {
        1 => Kernels::Composed,
        2 => Kernels::Fused,
        _ => {
            // A bad value was refused when the device was chosen.
            let k = from_env().unwrap_or(Kernels::Composed);
            CHOICE.store(code(k), Ordering::Relaxed);
            k
        }
    }
}

/// Choose the GPU path's kernels for this process (the benchmark measures both in one run).
pub fn set_kernels(k: Kernels) {
    CHOICE.store(code(k), Ordering::Relaxed);
}

/// Whether a tensor goes through our CUDA kernels: an f32 tensor on a CUDA device of a build
/// with them, when they are switched on.
pub fn fused_applies(t: &candle_core::Tensor) -> bool {
    cfg!(feature = "cuda") && t.device().is_cuda() && t.dtype() == candle_core::DType::F32 && kernels() == Kernels::Fused
}
