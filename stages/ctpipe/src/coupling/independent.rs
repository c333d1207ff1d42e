//! The independent coupling of consistency training: endpoint = the data sample, z ~ N(0, I).

use super::{step_noise, Coupled, Coupling};
use crate::methods::consistency::{Kernel, Pairs};
use crate::methods::StepCtx;
use crate::precond::Precond;
use candle_core::{Result, Tensor};

pub struct Independent;

impl Coupling for Independent {
    fn couple(&self, ctx: &StepCtx, x0: &Tensor, _pairs: &Pairs, _precond: &Precond, _kernel: &Kernel) -> Result<Coupled> {
        Ok(Coupled { endpoint: x0.clone(), noise: step_noise(ctx, x0)?, kl: None, logs: Vec::new() })
    }
}
