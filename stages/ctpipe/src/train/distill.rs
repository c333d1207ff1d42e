//! `distill`'s work: consistency distillation (methods.md §3) from an EDM teacher. The student
//! starts from the teacher's weights and trains through the same loop, checkpoints and
//! artifact files as `train-ct`; only the method (CD's grid, the teacher's ODE step as the
//! target point, an optional μ-EMA target network) and the teacher differ.

use super::fit::{TargetNet, TrainState};
use super::teacher::{self, TEACHER};
use super::{config::TrainConfig, data::TrainData, Job, RunDirs};
use crate::error::usage;
use crate::features::weights::WeightsSource;
use crate::methods::distance::Weighting;
use crate::methods::spec;
use crate::model::Weights;
use crate::nn;
use crate::ode::{Denoiser, Solver};
use crate::store::Artifact;
use crate::train::signals::StopFlag;
use anyhow::Result;
use candle_core::Device;
use serde_json::Value;
use std::path::PathBuf;

crate::training_config! {
    /// Settings of `distill`.
    pub struct DistillConfig {
        /// Levels N of the Karras grid the teacher steps along (σ_min … σ_max, ρ): 18 on
        /// CIFAR-10, 40 on ImageNet-64.
        #[range = "[2, 1e5]"]
        pub cd_levels: u64 = 18,
        /// The teacher's ODE solver for each training pair: heun (2 evaluations) or euler.
        pub cd_solver: Solver = Solver::Heun,
        /// EMA rate μ of the target network (0: the current weights without gradient, CD on
        /// CIFAR-10; 0.95 on ImageNet-64).
        #[range = "[0, 1)"]
        pub target_ema: f64 = 0.0,
        /// Distance: l2-squared (CD's l2) or pseudo-huber (√(‖·‖² + c²) − c).
        pub distance: String = "l2-squared".into(),
        /// Pseudo-Huber c (default: 0.00054·√D).
        #[range = "[0, inf)"]
        pub huber_c: Option<f64> = None,
        /// Loss weighting: uniform (CD), inverse-gap (1/Δσ) or karras (1/σd² + 1/σ²).
        pub weighting: Weighting = Weighting::Uniform,
        /// Import the teacher from this safetensors file (EDM tensor names, the `network`
        /// preset) instead of a `teacher` input.
        pub teacher_weights: Option<PathBuf> = None,
        /// ... or from this Hub model repo (with teacher_file).
        pub teacher_repo: Option<String> = None,
        /// The file in teacher_repo.
        pub teacher_file: Option<String> = None,
        /// Revision of teacher_repo.
        pub teacher_revision: String = "main".into(),
        /// sha256 of the imported teacher weights (required with teacher_weights/teacher_repo).
        pub teacher_sha256: Option<String> = None,
    }
}

impl DistillConfig {
    /// The settings the shared training loop reads (its fields of the same names).
    pub fn train_config(&self) -> Result<TrainConfig> {
        use crate::config::Describe;
        let mut all = serde_json::to_value(self)?;
        let map = all.as_object_mut().expect("a config serialises to an object");
        let known: Vec<&str> = TrainConfig::fields().iter().map(|f| f.name).collect();
        map.retain(|k, _| known.contains(&k.as_str()));
        map.insert("method".into(), Value::from("cd"));
        Ok(serde_json::from_value(all)?)
    }

    /// Imported teacher weights, if the config names any (checked complete).
    pub fn teacher_source(&self) -> Result<Option<WeightsSource>> {
        WeightsSource::optional(&TEACHER, self.teacher_weights.as_ref(), self.teacher_repo.as_ref(), self.teacher_file.as_ref(), &self.teacher_revision, self.teacher_sha256.as_ref())
    }
}

/// Check the config without touching data (stage validation).
pub fn validate(cfg: &DistillConfig) -> Result<()> {
    super::validate_loop(&cfg.train_config()?)?;
    spec::resolve_cd(cfg, 2)?;
    cfg.teacher_source()?;
    Ok(())
}

/// Distil a consistency model from a teacher artifact or imported teacher weights (exactly one).
pub fn distill(cfg: &DistillConfig, data: &Artifact, teacher_art: Option<&Artifact>, dirs: RunDirs, stop: &StopFlag, device: &Device) -> Result<Value> {
    let imported = cfg.teacher_source()?;
    match (teacher_art, &imported) {
        (Some(_), Some(_)) => return Err(usage("two teachers: a `teacher` input and teacher_weights/teacher_repo; give one")),
        (None, None) => return Err(usage(format!("distill needs a teacher: {}", TEACHER.how_to_get))),
        _ => {}
    }
    let train_cfg = cfg.train_config()?;
    let (info, data_set) = super::load_data(data, cfg.limit)?;
    // A class-conditional teacher makes a class-conditional student of the same classes.
    let classes = teacher_art.map(|a| crate::model::read_spec(a).map(|s| s.network.label_dim())).transpose()?.unwrap_or(0);
    let net_cfg = nn::preset(&cfg.network, info.kind, 1, cfg.dropout)?.with_labels(classes);
    let teacher = match (teacher_art, imported) {
        (Some(art), _) => teacher::from_artifact(art, &net_cfg, cfg.sigma_data, device)?,
        (None, Some(src)) => teacher::from_weights(&src, &net_cfg, cfg.sigma_data, cfg.sigma_min.unwrap_or(crate::methods::cd::SIGMA_MIN), cfg.sigma_max, device)?,
        (None, None) => unreachable!("checked above"),
    };
    eprintln!("distill: teacher {} ({} levels, {:?} steps)", teacher.origin, cfg.cd_levels, cfg.cd_solver);
    // The student starts as the teacher (CD's `finetune`), with its own dropout.
    let net = teacher.weights.duplicate(&net_cfg, device)?;
    distill_from(cfg, &train_cfg, Box::new(teacher), net, net_cfg, &info, &data_set, dirs, stop, device)
}

/// The distillation run itself, for any teacher (tests use the closed-form denoiser of a
/// Gaussian mixture) and any initial student `net` of network `net_cfg`.
#[allow(clippy::too_many_arguments)]
pub fn distill_from(
    cfg: &DistillConfig,
    train_cfg: &TrainConfig,
    teacher: Box<dyn Denoiser>,
    net: Weights,
    net_cfg: crate::nn::NetworkConfig,
    info: &crate::data::schema::DatasetInfo,
    data: &TrainData,
    dirs: RunDirs,
    stop: &StopFlag,
    device: &Device,
) -> Result<Value> {
    let resolved = spec::resolve_cd(cfg, info.kind.sample_len())?;
    let ema = net.duplicate(&net_cfg, device)?;
    let target = if cfg.target_ema > 0.0 { Some(TargetNet { weights: net.duplicate(&net_cfg, device)?, rate: cfg.target_ema }) } else { None };
    let state = TrainState { net, ema, encoder: None, target, teacher: Some(teacher) };
    super::run(
        Job { stage: "distill", cfg: train_cfg, resolved, data, info, net_cfg, enc_cfg: None, state },
        dirs,
        stop,
        device,
    )
}
