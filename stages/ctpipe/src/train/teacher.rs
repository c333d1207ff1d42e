//! The teacher of consistency distillation: an EDM denoiser, from a `train-ct` artifact
//! (method = "edm") or imported as safetensors weights of the same network preset (a local file
//! or a Hub model repo file, checked by sha256). Both give its EMA weights and its EDM
//! preconditioning; the student starts from the same weights.

use crate::error::{bad_input, TagContext};
use crate::features::weights::{WeightsRole, WeightsSource};
use crate::model::{self, Weights};
use crate::nn::NetworkConfig;
use crate::ode::{Denoiser, NetDenoiser};
use crate::precond::{Precond, PrecondKind};
use crate::store::Artifact;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// Where imported teacher weights come from, for messages.
pub const TEACHER: WeightsRole = WeightsRole {
    what: "teacher weights",
    field: "teacher",
    how_to_get: "give a `teacher` input (an EDM train-ct artifact), or teacher_weights = <safetensors file> (or teacher_repo + teacher_file) with teacher_sha256",
};

/// A teacher denoiser: weights and preconditioning.
pub struct Teacher {
    pub weights: Weights,
    pub precond: Precond,
    /// Where it came from, for logs.
    pub origin: String,
}

impl Denoiser for Teacher {
    fn denoise(&self, x: &Tensor, sigmas: &[f64]) -> candle_core::Result<Tensor> {
        self.denoise_labels(x, sigmas, None)
    }

    fn denoise_labels(&self, x: &Tensor, sigmas: &[f64], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        NetDenoiser { net: &self.weights.net, precond: self.precond, labels }.denoise(x, sigmas)
    }
}

/// The teacher from an EDM model artifact. `net_cfg` is the student's network: the teacher's
/// must be the same up to dropout, and have the same σ_data.
pub fn from_artifact(art: &Artifact, net_cfg: &NetworkConfig, sigma_data: f64, device: &Device) -> Result<Teacher> {
    let spec = model::read_spec(art)?;
    let origin = format!("{}/{}", art.stage(), art.key().short());
    if !spec.is_denoiser() {
        return Err(bad_input(format!("teacher {origin} is a {} model; distillation needs an EDM denoiser (train-ct method = \"edm\")", spec.method)));
    }
    if spec.network.with_dropout(0.0) != net_cfg.with_dropout(0.0) {
        return Err(bad_input(format!(
            "teacher {origin} has a different network ({}); distill with the teacher's preset and data",
            serde_json::to_string(&spec.network)?
        )));
    }
    if spec.precond.sigma_data != sigma_data {
        return Err(bad_input(format!("teacher {origin} was trained with sigma_data = {}, this run sets {sigma_data}", spec.precond.sigma_data)));
    }
    let tensors = model::load_tensors(&art.file("ema.safetensors")?, device)?;
    let weights = Weights::frozen(&spec.network, tensors, device)?;
    Ok(Teacher { weights, precond: spec.precond, origin })
}

/// Imported teacher weights (EDM's tensor names) for the network `net_cfg`, with EDM's
/// preconditioning at σ_data and σ_min.
pub fn from_weights(source: &WeightsSource, net_cfg: &NetworkConfig, sigma_data: f64, sigma_min: f64, sigma_max: f64, device: &Device) -> Result<Teacher> {
    let path = source.resolve(&TEACHER)?;
    let tensors = model::load_tensors(&path, device)?;
    let weights = Weights::frozen(net_cfg, tensors, device)
        .bad_input_ctx(|| format!("{}: teacher weights do not fit the network preset", path.display()))?;
    let precond = Precond { kind: PrecondKind::Edm, sigma_data, sigma_min, t_max: sigma_max, phases: None };
    Ok(Teacher { weights, precond, origin: path.display().to_string() })
}
