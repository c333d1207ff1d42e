//! The consistency-training loss, composed from a schedule, a coupling and a target.
//!
//! Per step (iCT/ECT/GC/VCT reference code, methods.md §4–§8, §14):
//! 1. the schedule draws (σ_hi, σ_lo, weight) per sample;
//! 2. the coupling picks the endpoint x̃ and noise z (one draw, shared by both points);
//! 3. student f_θ(x̃ ⊕ σ_hi z, σ_hi) with recorded dropout masks; teacher f_θ⁻(x_lo, σ_lo) with
//!    the same masks, no gradient, NaN and ±inf cleaned, where θ⁻ is θ or its μ-EMA and x_lo is
//!    x̃ ⊕ σ_lo z (consistency training), that plus SCT's variance-reduction correction, or CD's
//!    teacher ODE step from the student's point; where σ_lo = 0 (ECT's boundary) the teacher is
//!    x̃ itself;
//! 4. loss = weight·d(student, teacher) (+ β_eff·KL for VC), one value per sample.

use super::distance::Distance;
use super::sct::{self, Boundary, Stable};
use super::{LossOutput, Method, Progress, StepCtx};
use crate::coupling::Coupling;
use crate::ode::{self, Solver};
use crate::nn::ops::{nan_to_num, select_rows};
use crate::precond::{per_sample, Phase, Precond};
use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

/// Noise-level pairs for a batch.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    pub hi: Vec<f64>,
    pub lo: Vec<f64>,
    pub weight: Vec<f64>,
    pub logs: Vec<(&'static str, f64)>,
}

impl Pairs {
    pub fn with_capacity(n: usize) -> Pairs {
        Pairs { hi: Vec::with_capacity(n), lo: Vec::with_capacity(n), weight: Vec::with_capacity(n), logs: Vec::new() }
    }

    pub fn push(&mut self, hi: f64, lo: f64, weight: f64) {
        self.hi.push(hi);
        self.lo.push(lo);
        self.weight.push(weight);
    }

    pub fn len(&self) -> usize {
        self.hi.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hi.is_empty()
    }

    /// Pairs `offset..offset + len` (a data-parallel shard's); the logs, of the whole draw, kept.
    pub fn rows(self, offset: usize, len: usize) -> Pairs {
        let r = offset..offset + len;
        Pairs { hi: self.hi[r.clone()].to_vec(), lo: self.lo[r.clone()].to_vec(), weight: self.weight[r].to_vec(), logs: self.logs }
    }
}

/// Draws the noise-level pairs of a step.
pub trait PairSchedule: Send + Sync {
    fn draw(&self, n: usize, progress: Progress, rng: &mut ChaCha8Rng) -> Pairs;
    /// VCT's scale of β now: on ECT's schedule the inverse-gap weight at the top of the noise
    /// range with the inverse-gap weighting, 1 with any other (sony/vct ecm.py:154-163); on
    /// iCT's the top gap's always (ict.py:148).
    fn kl_scale(&self, progress: Progress) -> f64;
    fn sigma_min(&self) -> f64;
}

/// How a noisy point is formed from an endpoint x, a level σ and noise z.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kernel {
    /// Variance exploding: x + σ·z.
    Ve,
    /// VCT's linear interpolation: (1 − σ/T)·x + σ·z.
    Li { t_max: f64 },
}

impl Kernel {
    pub fn noisy(&self, x: &Tensor, z: &Tensor, sigmas: &[f64]) -> Result<Tensor> {
        let s = per_sample(sigmas, x)?;
        match *self {
            Kernel::Ve => x.add(&z.broadcast_mul(&s)?),
            Kernel::Li { t_max } => {
                let a = per_sample(&sigmas.iter().map(|v| 1.0 - v / t_max).collect::<Vec<_>>(), x)?;
                x.broadcast_mul(&a)?.add(&z.broadcast_mul(&s)?)
            }
        }
    }
}

/// The teacher's target point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Standard,
    /// SCT's variance-reduced target.
    Stable(Stable),
    /// CD: one ODE step of the teacher (`StepCtx::teacher`) from the student's point.
    Ode(Solver),
}

pub struct ConsistencyLoss {
    pub schedule: Box<dyn PairSchedule>,
    pub coupling: Box<dyn Coupling>,
    pub target: Target,
    pub distance: Distance,
    pub kernel: Kernel,
    pub precond: Precond,
    /// VCT's β (0 without VC); multiplied by the schedule's top weight.
    pub kl_beta: f64,
}

impl ConsistencyLoss {
    /// The point the target network is evaluated at (no gradient), σ_lo per sample.
    pub fn target_point(&self, ctx: &StepCtx, x_hi: &Tensor, endpoint: &Tensor, noise: &Tensor, pairs: &Pairs) -> Result<Tensor> {
        let stable = match self.target {
            Target::Ode(solver) => {
                let teacher = ctx.teacher.ok_or_else(|| candle_core::Error::Msg("consistency distillation needs a teacher".into()))?;
                let teacher = ode::Labelled { inner: teacher, labels: ctx.class_labels };
                return ode::step(&teacher, solver, &x_hi.detach(), &pairs.hi, &pairs.lo);
            }
            Target::Stable(s) => Some(s),
            Target::Standard => None,
        };
        let mut x_lo = self.kernel.noisy(&endpoint.detach(), &noise.detach(), &pairs.lo)?;
        if let Some(s) = stable {
            let batch = match ctx.shard {
                Some(_) if s.references != sct::References::Own => Some((ctx.gather_rows(&endpoint.detach())?, ctx.batch_labels())),
                _ => None,
            };
            let delta = sct::correction(&x_hi.detach(), &endpoint.detach(), &pairs.hi, &s, ctx.pool, ctx.labels, batch.as_ref().map(|(t, l)| (t, *l)))?;
            let gain: Vec<f64> = pairs.hi.iter().zip(&pairs.lo).map(|(t, r)| 1.0 - r / t).collect();
            x_lo = x_lo.add(&delta.broadcast_mul(&per_sample(&gain, &delta)?)?)?;
        }
        Ok(x_lo)
    }
}

impl Method for ConsistencyLoss {
    fn loss(&self, ctx: &StepCtx, x0: &Tensor) -> Result<LossOutput> {
        let n = x0.dim(0)?;
        let mut rng = crate::rng::stream(ctx.seed, "sigma", ctx.progress.step);
        let pairs = match ctx.shard {
            Some(s) => self.schedule.draw(s.full, ctx.progress, &mut rng).rows(s.offset, s.len),
            None => self.schedule.draw(n, ctx.progress, &mut rng),
        };
        let coupled = self.coupling.couple(ctx, x0, &pairs, &self.precond, &self.kernel)?;
        let endpoint = &coupled.endpoint;

        // Student, recording dropout masks.
        let x_hi = self.kernel.noisy(endpoint, &coupled.noise, &pairs.hi)?;
        let mut drop = ctx.dropout("dropout");
        let student = self.precond.apply_cond(ctx.net, &x_hi, &pairs.hi, ctx.class_labels, Phase::Train, &mut drop)?;

        // Teacher: same noise (detached), same masks, no gradient. Where σ_lo is a boundary
        // (ECT's r = 0, a phase's lower edge) f(x_lo, σ_lo) = x_lo, so the target is the point
        // itself: the endpoint where r = 0 (SCT's reference mean x̂₀ unless `sct_boundary =
        // "clean"` keeps ECT's clean image), x_r itself at a phase edge.
        let at_boundary: Vec<bool> = pairs.lo.iter().map(|&s| s <= 0.0 || self.precond.is_edge(s)).collect();
        let x_lo = self.target_point(ctx, &x_hi, endpoint, &coupled.noise, &pairs)?.detach();
        let boundary_target = match self.target {
            Target::Stable(Stable { boundary: Boundary::Clean, .. }) => {
                let zero: Vec<bool> = pairs.lo.iter().map(|&s| s <= 0.0).collect();
                select_rows(&zero, &endpoint.detach(), &x_lo)?
            }
            _ => x_lo.clone(),
        };
        let teacher = if at_boundary.iter().all(|&b| b) {
            boundary_target
        } else {
            // σ = 0 would give ln 0 in c_noise; those samples take the boundary target below.
            let lo: Vec<f64> = pairs.lo.iter().map(|&s| if s > 0.0 { s } else { self.schedule.sigma_min() }).collect();
            drop.replay();
            let target_net = ctx.target.unwrap_or(ctx.net);
            let t = nan_to_num(&self.precond.apply_cond(target_net, &x_lo, &lo, ctx.class_labels, Phase::Train, &mut drop)?.detach())?;
            if at_boundary.iter().any(|&b| b) {
                select_rows(&at_boundary, &boundary_target, &t)?
            } else {
                t
            }
        };

        let d = self.distance.per_sample(&student, &teacher)?;
        let w = Tensor::from_vec(pairs.weight.iter().map(|&v| v as f32).collect::<Vec<_>>(), n, x0.device())?.to_dtype(d.dtype())?;
        let mut per_sample_loss = d.mul(&w)?;
        let mut logs = pairs.logs.clone();
        logs.extend(coupled.logs.iter().cloned());
        if let Some(kl) = &coupled.kl {
            let beta = self.kl_beta * self.schedule.kl_scale(ctx.progress);
            per_sample_loss = per_sample_loss.add(&(kl * beta)?)?;
            logs.push(("kl_beta", beta));
        }
        Ok(LossOutput { per_sample: per_sample_loss, logs })
    }

    fn precond(&self) -> Precond {
        self.precond
    }

    fn reference_pool(&self) -> usize {
        match self.target {
            Target::Stable(s) if s.references == sct::References::Pool => s.pool_extra,
            _ => 0,
        }
    }
}
