//! Preconditioning: D(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)).
//!
//! - `Edm` (Karras et al. 2022, NVlabs/edm `EDMPrecond`): c_skip = σd²/(σ² + σd²),
//!   c_out = σ·σd/√(σ² + σd²), c_in = 1/√(σ² + σd²), c_noise = ln(σ)/4. The denoiser of
//!   pre-training and the teacher of distillation.
//! - `Cm` (consistency models, iCT, GC): σ − σ_min replaces σ in c_skip and c_out, in training
//!   and evaluation, so that f(x, σ_min) = x holds exactly by construction.
//! - `Ect` (ECT, VCT-ECM: locuslab/ect `ECMPrecond`): EDM's coefficients while training, the
//!   σ_min-shifted ones for evaluation — ECT enforces the boundary in its loss instead.
//! - `Li` (VCT's linear-interpolation kernel, x_t = (1 − t/T)·x + t·z; sony/vct
//!   kernels/conditional_ot.py): with a = 1 − t/T, c_in = 1/√(σd²a² + t²),
//!   c_skip = σd²a/(t² + σd²a²), c_out = t·σd·c_in (:24-28) while training on ECT's schedule;
//!   the shifted set (:15-20) for evaluation: t − σ_min for t and 1 − (t − σ_min)/(T − σ_min)
//!   for a in c_skip, c_out = (t − σ_min)·σd·c_in with the *unshifted* c_in.
//! - `LiCm`: the same kernel on the iCT schedule, shifted in training too (sony/vct
//!   models/cm_base.py:75), as `Cm` is for the VE kernel.
//!
//! - Phased (`phases = M`; Phased Consistency Models, Wang et al. 2024, and SCT's phased
//!   tuning): edges s₀ = σ_min < s₁ < … < s_M = σ_max ([`crate::schedule::phase_edges`]); for σ in
//!   (s_m, s_{m+1}] the model maps to its phase's lower edge, f(x, σ) = x̂₀ + (s_m/σ)(x − x̂₀),
//!   with x̂₀ the denoiser of the kind's coefficients (EDM's for ECT/SCT). With g = s_m/σ that is
//!   c_skip = g + (1 − g)·c_skip(D), c_out = (1 − g)·c_out(D); at σ = s_m, g = 1 and f = x.
//!
//! The coefficients are computed per sample on the host in f64 and uploaded.

use crate::nn::dropout::Dropout;
use crate::nn::Network;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecondKind {
    Edm,
    Cm,
    Ect,
    Li,
    LiCm,
}

/// Training or evaluation: the coefficients of `Ect` and `Li` differ between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train,
    Eval,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precond {
    pub kind: PrecondKind,
    pub sigma_data: f64,
    pub sigma_min: f64,
    /// T of the linear-interpolation kernel (σ_max); unused by the others.
    pub t_max: f64,
    /// Phased models: the number of phases M between σ_min and t_max (σ_max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl Precond {
    /// The phase edges s₀ … s_M of a phased model.
    pub fn edges(&self) -> Option<Vec<f64>> {
        self.phases.map(|m| crate::schedule::phase_edges(m as usize, self.sigma_min, self.t_max))
    }

    /// Whether σ is a phase's lower edge s_m (m < M), where f(x, s_m) = x.
    pub fn is_edge(&self, sigma: f64) -> bool {
        self.edges().is_some_and(|e| e[..e.len() - 1].contains(&sigma))
    }

    pub fn coefficients(&self, sigma: f64, phase: Phase) -> Coefficients {
        match self.edges() {
            Some(edges) => self.coefficients_in_phase(sigma, crate::schedule::phase_of(&edges, sigma), phase),
            None => self.coefficients_unphased(sigma, phase),
        }
    }

    /// A phased model's coefficients at σ as phase `m` maps them (to s_m): g = min(s_m/σ, 1)
    /// (below σ_min the model is the identity, as f(x, σ_min) = x).
    pub fn coefficients_in_phase(&self, sigma: f64, m: usize, phase: Phase) -> Coefficients {
        let d = self.coefficients_unphased(sigma, phase);
        let Some(edges) = self.edges() else { return d };
        let g = (edges[m] / sigma).min(1.0);
        Coefficients { c_skip: g + (1.0 - g) * d.c_skip, c_out: (1.0 - g) * d.c_out, ..d }
    }

    fn coefficients_unphased(&self, sigma: f64, phase: Phase) -> Coefficients {
        let sd = self.sigma_data;
        let c_noise = sigma.ln() / 4.0;
        let shifted = match self.kind {
            PrecondKind::Edm => false,
            PrecondKind::Cm | PrecondKind::LiCm => true,
            PrecondKind::Ect | PrecondKind::Li => phase == Phase::Eval,
        };
        if matches!(self.kind, PrecondKind::Li | PrecondKind::LiCm) {
            let a = 1.0 - sigma / self.t_max;
            let c_in = 1.0 / (sd * sd * a * a + sigma * sigma).sqrt();
            let (t, a) = if shifted {
                (sigma - self.sigma_min, 1.0 - (sigma - self.sigma_min) / (self.t_max - self.sigma_min))
            } else {
                (sigma, a)
            };
            let c_skip = sd * sd * a / (t * t + sd * sd * a * a);
            let c_out = t * sd * c_in;
            return Coefficients { c_skip, c_out, c_in, c_noise };
        }
        let s = if shifted { sigma - self.sigma_min } else { sigma };
        Coefficients {
            c_skip: sd * sd / (s * s + sd * sd),
            c_out: s * sd / (sigma * sigma + sd * sd).sqrt(),
            c_in: 1.0 / (sigma * sigma + sd * sd).sqrt(),
            c_noise,
        }
    }

    /// D(x, σ) (or f(x, σ)) for a batch with one σ per sample.
    pub fn apply(&self, net: &Network, x: &Tensor, sigmas: &[f64], phase: Phase, drop: &mut Dropout) -> Result<Tensor> {
        self.apply_cond(net, x, sigmas, None, phase, drop)
    }

    /// The same for a class-conditional network, with one-hot `labels` (N, classes).
    pub fn apply_cond(&self, net: &Network, x: &Tensor, sigmas: &[f64], labels: Option<&Tensor>, phase: Phase, drop: &mut Dropout) -> Result<Tensor> {
        let coeffs: Vec<Coefficients> = sigmas.iter().map(|&s| self.coefficients(s, phase)).collect();
        let col = |f: fn(&Coefficients) -> f64| per_sample(&coeffs.iter().map(f).collect::<Vec<_>>(), x);
        let c_in = col(|c| c.c_in)?;
        let c_skip = col(|c| c.c_skip)?;
        let c_out = col(|c| c.c_out)?;
        let c_noise = Tensor::from_vec(coeffs.iter().map(|c| c.c_noise as f32).collect::<Vec<_>>(), sigmas.len(), x.device())?.to_dtype(x.dtype())?;
        let f = net.forward(&x.broadcast_mul(&c_in)?, &c_noise, labels, drop)?;
        x.broadcast_mul(&c_skip)?.add(&f.broadcast_mul(&c_out)?)
    }
}

/// Values, one per sample, shaped to broadcast against `like` (N, 1, 1, …).
pub fn per_sample(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, like.rank() - 1));
    // Built in f64 and cast once: f64 batches keep full precision, f32 ones round as before.
    Tensor::from_vec(values.to_vec(), shape, like.device())?.to_dtype(like.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use crate::nn::{preset, Network};
    use crate::data::schema::SampleKind;
    use candle_core::{DType, Device};

    fn pc(kind: PrecondKind) -> Precond {
        Precond { kind, sigma_data: 0.5, sigma_min: 0.002, t_max: 80.0, phases: None }
    }

    #[test]
    fn edm_coefficients_closed_form() {
        // At σ = σd: c_skip = 1/2, c_out = σd/√2, c_in = 1/(σd√2), c_noise = ln(0.5)/4.
        let c = pc(PrecondKind::Edm).coefficients(0.5, Phase::Train);
        assert!((c.c_skip - 0.5).abs() < 1e-15);
        assert!((c.c_out - 0.5 / 2f64.sqrt()).abs() < 1e-15);
        assert!((c.c_in - 1.0 / (0.5 * 2f64.sqrt())).abs() < 1e-15);
        assert!((c.c_noise - 0.5f64.ln() / 4.0).abs() < 1e-15);
        // ECT trains with EDM's coefficients and evaluates with the shifted ones.
        assert_eq!(pc(PrecondKind::Ect).coefficients(1.3, Phase::Train), pc(PrecondKind::Edm).coefficients(1.3, Phase::Train));
        assert_eq!(pc(PrecondKind::Ect).coefficients(1.3, Phase::Eval), pc(PrecondKind::Cm).coefficients(1.3, Phase::Train));
    }

    #[test]
    fn boundary_coefficients() {
        for kind in [PrecondKind::Cm, PrecondKind::Ect, PrecondKind::Li, PrecondKind::LiCm] {
            let c = pc(kind).coefficients(0.002, Phase::Eval);
            assert_eq!((c.c_skip, c.c_out), (1.0, 0.0), "{kind:?}");
        }
        // Unshifted EDM is not a consistency parameterisation: c_out(σ_min) > 0.
        assert!(pc(PrecondKind::Edm).coefficients(0.002, Phase::Eval).c_out > 0.0);
    }

    #[test]
    fn linear_interpolation_coefficients() {
        // t = 40, T = 80: a = 0.5, c_in = 1/√(0.25·0.25 + 1600), c_skip = 0.25·0.5/(1600 + 0.0625).
        let c = pc(PrecondKind::Li).coefficients(40.0, Phase::Train);
        assert!((c.c_in - 1.0 / (0.0625f64 + 1600.0).sqrt()).abs() < 1e-15);
        assert!((c.c_skip - 0.125 / 1600.0625).abs() < 1e-15);
        assert!((c.c_out - 40.0 * 0.5 / 1600.0625f64.sqrt()).abs() < 1e-12);
    }

    /// The evaluation (boundary-shifted) set of sony/vct kernels/conditional_ot.py:15-20,
    /// recomputed: a_bc = 1 − (t − σ_min)/(T − σ_min), c_skip = σd²a_bc/((t − σ_min)² + σd²a_bc²),
    /// c_out = (t − σ_min)·σd·c_in with the unshifted c_in = 1/√(σd²(1 − t/T)² + t²). iCT with
    /// the LI kernel (`LiCm`) trains with that set too (cm_base.py:75); ECT's (`Li`) with the
    /// unshifted one (ecm.py:93-96).
    #[test]
    fn linear_interpolation_shifted_coefficients() {
        let (t, tt, smin, sd) = (1.5f64, 80.0f64, 0.002f64, 0.5f64);
        let a = 1.0 - t / tt;
        let c_in = 1.0 / (sd * sd * a * a + t * t).sqrt();
        let a_bc = 1.0 - (t - smin) / (tt - smin);
        let want_skip = sd * sd * a_bc / ((t - smin).powi(2) + sd * sd * a_bc * a_bc);
        let want_out = (t - smin) * sd * c_in;
        for (kind, phase) in [(PrecondKind::Li, Phase::Eval), (PrecondKind::LiCm, Phase::Eval), (PrecondKind::LiCm, Phase::Train)] {
            let c = pc(kind).coefficients(t, phase);
            assert!((c.c_in - c_in).abs() < 1e-15, "{kind:?} {phase:?}");
            assert!((c.c_skip - want_skip).abs() < 1e-15, "{kind:?} {phase:?}");
            assert!((c.c_out - want_out).abs() < 1e-15, "{kind:?} {phase:?}: {} vs {want_out}", c.c_out);
        }
        let train = pc(PrecondKind::Li).coefficients(t, Phase::Train);
        assert!((train.c_out - t * sd * c_in).abs() < 1e-15 && (train.c_skip - sd * sd * a / (t * t + sd * sd * a * a)).abs() < 1e-15);
    }

    /// f(x, σ_min) = x, bit for bit, with a randomly initialised network.
    #[test]
    fn consistency_boundary_is_exact() {
        let dev = Device::Cpu;
        for (name, kind, shape) in [
            ("tiny", SampleKind::Images { height: 8, width: 8, channels: 1 }, vec![3, 1, 8, 8]),
            ("mlp-toy", SampleKind::Points { dim: 2 }, vec![3, 2]),
        ] {
            let store = ParamStore::seeded(9);
            let net = Network::new(store.var_builder(DType::F32, &dev), &preset(name, kind, 1, None).unwrap()).unwrap();
            let x = crate::rng::normal(&mut crate::rng::stream(1, "x", 0), shape, DType::F32, &dev).unwrap();
            for k in [PrecondKind::Cm, PrecondKind::Ect, PrecondKind::Li, PrecondKind::LiCm] {
                let p = Precond { kind: k, sigma_data: 0.5, sigma_min: 0.003, t_max: 80.0, phases: None };
                let f = p.apply(&net, &x, &[0.003; 3], Phase::Eval, &mut Dropout::off()).unwrap();
                let (a, b): (Vec<f32>, Vec<f32>) = (f.flatten_all().unwrap().to_vec1().unwrap(), x.flatten_all().unwrap().to_vec1().unwrap());
                assert_eq!(a, b, "{name} {k:?}");
            }
        }
    }

    /// Phased models: at σ in (s_m, s_{m+1}] the output is D + (s_m/σ)(x − D) with D EDM's
    /// denoiser (recomputed here from EDM's coefficients); f(x, s_m) = x exactly when σ = s_m is
    /// taken as phase m's lower edge; and f(x, σ_min) = x bit for bit with a random network.
    #[test]
    fn phased_parameterisation() {
        let p = Precond { kind: PrecondKind::Edm, sigma_data: 0.5, sigma_min: 0.002, t_max: 80.0, phases: Some(4) };
        let e = p.edges().unwrap();
        assert_eq!(e.len(), 5);
        let edm = pc(PrecondKind::Edm);
        for m in 0..4 {
            // Inside the phase: c_skip = g + (1 − g)·cs, c_out = (1 − g)·co with g = s_m/σ.
            let sigma = (e[m] * e[m + 1]).sqrt();
            let (c, d) = (p.coefficients(sigma, Phase::Eval), edm.coefficients(sigma, Phase::Eval));
            let g = e[m] / sigma;
            assert!((c.c_skip - (g + (1.0 - g) * d.c_skip)).abs() < 1e-15 && (c.c_out - (1.0 - g) * d.c_out).abs() < 1e-15);
            assert_eq!((c.c_in, c.c_noise), (d.c_in, d.c_noise));
            // Its lower edge, as the phase's own: the identity.
            let b = p.coefficients_in_phase(e[m], m, Phase::Train);
            assert_eq!((b.c_skip, b.c_out), (1.0, 0.0), "phase {m}");
            assert!(p.is_edge(e[m]) && !p.is_edge(sigma));
        }
        assert!(!p.is_edge(80.0));
        // The upper edge belongs to the phase below it: s_{m+1} maps to s_m.
        let c = p.coefficients(e[2], Phase::Eval);
        let g = e[1] / e[2];
        assert!((c.c_skip - (g + (1.0 - g) * edm.coefficients(e[2], Phase::Eval).c_skip)).abs() < 1e-15);
        let dev = Device::Cpu;
        let store = ParamStore::seeded(9);
        let net = Network::new(store.var_builder(DType::F32, &dev), &preset("mlp-toy", SampleKind::Points { dim: 2 }, 1, None).unwrap()).unwrap();
        let x = crate::rng::normal(&mut crate::rng::stream(1, "x", 0), (3, 2), DType::F32, &dev).unwrap();
        let f = p.apply(&net, &x, &[0.002; 3], Phase::Eval, &mut Dropout::off()).unwrap();
        assert_eq!(f.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
    }
}
