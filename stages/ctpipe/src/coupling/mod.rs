//! Couplings: which noise each clean sample is paired with.
//!
//! Consistency training builds both points of a pair from one endpoint and one noise draw,
//! x_hi = kernel(endpoint, σ_hi, z) and x_lo = kernel(endpoint, σ_lo, z). A coupling chooses
//! (endpoint, z): the independent coupling takes the data sample and z ~ N(0, I); GC replaces
//! the endpoint by the model's own one-step estimate for some samples; VC draws z from a learned
//! encoder q(z | x) and adds its KL term; OT reassigns the batch's noise draws by minibatch optimal
//! transport (sony/vct's baseline). Couplings compose with either schedule.

pub mod gc;
pub mod independent;
pub mod ot;
pub mod vc;

use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::precond::Precond;
use candle_core::{Result, Tensor};

/// A coupling's choice for one batch.
pub struct Coupled {
    /// The clean end of each pair (the data sample, or GC's generated one).
    pub endpoint: Tensor,
    /// The noise direction; for VC it carries the encoder's gradient (student branch only).
    pub noise: Tensor,
    /// VC's KL(q(z | x) ‖ N(0, I)) per sample.
    pub kl: Option<Tensor>,
    pub logs: Vec<(&'static str, f64)>,
}

pub trait Coupling: Send + Sync {
    fn couple(&self, ctx: &StepCtx, x0: &Tensor, pairs: &Pairs, precond: &Precond, kernel: &Kernel) -> Result<Coupled>;
}

/// Standard normal noise for a training step, from the step's "noise" stream, shaped as `like`
/// (this process's rows of the whole batch's draw in a data-parallel run). Every coupling draws
/// its noise here, so they differ only where they mean to.
pub fn step_noise(ctx: &StepCtx, like: &Tensor) -> Result<Tensor> {
    let mut dims = like.dims().to_vec();
    dims[0] = ctx.batch_size(like.dim(0)?);
    let all = batch_noise(ctx, &dims, like)?;
    match ctx.shard {
        Some(s) => s.narrow(&all),
        None => Ok(all),
    }
}

/// The whole batch's noise (`dims`), typed and placed as `like`.
fn batch_noise(ctx: &StepCtx, dims: &[usize], like: &Tensor) -> Result<Tensor> {
    let mut rng = crate::rng::stream(ctx.seed, "noise", ctx.progress.step);
    crate::rng::normal(&mut rng, dims, like.dtype(), like.device())
}
