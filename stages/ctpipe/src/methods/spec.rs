//! From the flat `train-ct` config to a method: which schedule, coupling and target, their
//! paper defaults, and the checks that they compose (a usage error naming the field otherwise).

use super::cd::CdSchedule;
use super::consistency::{ConsistencyLoss, Kernel, PairSchedule, Target};
use super::distance::Distance;
use super::ect::EctSchedule;
use super::edm::EdmLoss;
use super::ict::IctSchedule;
use super::Method;
use crate::coupling::{gc::Gc, independent::Independent, vc::Vc, Coupling};
use crate::error::usage;
use crate::precond::{Precond, PrecondKind};
use crate::schedule::pseudo_huber_c;
use crate::train::config::TrainConfig;
use crate::train::distill::DistillConfig;
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub const METHODS: &[&str] = &["edm", "ict", "ect", "sct", "gc", "vct"];

/// The noise kernel, as stored with a model (sampling needs it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KernelSpec {
    Ve,
    Li { t_max: f64 },
}

impl KernelSpec {
    pub fn kernel(self) -> Kernel {
        match self {
            KernelSpec::Ve => Kernel::Ve,
            KernelSpec::Li { t_max } => Kernel::Li { t_max },
        }
    }
}

/// A method resolved from the config.
pub struct Resolved {
    pub method: Box<dyn Method>,
    /// "small"/"big" when the method trains a VCT encoder.
    pub encoder: Option<String>,
    pub kernel: KernelSpec,
    /// The schedule family: "edm", "ict", "ect" or "cd".
    pub schedule: &'static str,
    /// Gradient-norm clip after method defaults.
    pub grad_clip: Option<f64>,
}

/// Resolve and check. `values_per_sample` is D (pixels × channels, or coordinates).
pub fn resolve(cfg: &TrainConfig, values_per_sample: usize) -> Result<Resolved> {
    let method = cfg.method.as_str();
    if !METHODS.contains(&method) {
        return Err(usage(format!("field `method`: unknown method `{method}` (expected one of: {})", METHODS.join(", "))));
    }
    let coupled = matches!(method, "gc" | "vct");
    let schedule_name = match (&cfg.schedule, coupled) {
        (Some(s), true) => s.as_str(),
        (None, true) => "ict",
        (Some(_), false) => return Err(usage(format!("field `schedule` applies to gc and vct only, not {method}"))),
        (None, false) => method,
    };
    if !matches!(schedule_name, "ict" | "ect" | "sct" | "edm") {
        return Err(usage(format!("field `schedule`: `{schedule_name}` (expected ict, ect or sct)")));
    }
    if method == "vct" && schedule_name == "sct" {
        return Err(usage("vct with schedule = \"sct\": SCT's reference weights assume independent Gaussian noise, which VC replaces"));
    }
    if cfg.vct_kernel != "ve" && method != "vct" {
        return Err(usage(format!("field `vct_kernel` applies to vct only, not {method}")));
    }
    let kernel = match cfg.vct_kernel.as_str() {
        "ve" => KernelSpec::Ve,
        "li" => KernelSpec::Li { t_max: cfg.sigma_max },
        k => return Err(usage(format!("field `vct_kernel`: `{k}` (expected ve or li)"))),
    };
    let ect_like = matches!(schedule_name, "ect" | "sct");
    let sigma_min = cfg.sigma_min.unwrap_or(if ect_like { 0.003 } else { 0.002 });
    check_positive("sigma_min", sigma_min)?;
    check_positive("sigma_data", cfg.sigma_data)?;
    if cfg.sigma_max <= sigma_min {
        return Err(usage(format!("field `sigma_max`: {} must exceed sigma_min {sigma_min}", cfg.sigma_max)));
    }
    let precond_kind = match (method, schedule_name, kernel) {
        ("edm", _, _) => PrecondKind::Edm,
        (_, _, KernelSpec::Li { .. }) => PrecondKind::Li,
        (_, "ict", _) => PrecondKind::Cm,
        _ => PrecondKind::Ect,
    };
    let precond = Precond { kind: precond_kind, sigma_data: cfg.sigma_data, sigma_min, t_max: cfg.sigma_max };
    let p_mean = cfg.p_mean.unwrap_or(if method == "edm" { -1.2 } else { -1.1 });
    let p_std = cfg.p_std.unwrap_or(if method == "edm" { 1.2 } else { 2.0 });
    check_positive("p_std", p_std)?;

    if method == "edm" {
        return Ok(Resolved {
            method: Box::new(EdmLoss { p_mean, p_std, precond }),
            encoder: None,
            kernel,
            schedule: "edm",
            grad_clip: cfg.grad_clip,
        });
    }

    let schedule: Box<dyn PairSchedule> = if ect_like {
        if cfg.ect_q <= 1.0 {
            return Err(usage(format!("field `ect_q`: {} must exceed 1", cfg.ect_q)));
        }
        let stages = cfg.ect_stages.max(1);
        Box::new(EctSchedule {
            p_mean,
            p_std,
            q: cfg.ect_q,
            k: cfg.ect_k,
            b: cfg.ect_b,
            mapping: cfg.ect_mapping,
            stage_steps: cfg.steps.div_ceil(stages).max(1),
            weighting: cfg.weighting,
            sigma_data: cfg.sigma_data,
            sigma_min,
            sigma_max: cfg.sigma_max,
        })
    } else {
        if cfg.ict_s0 < 1 || cfg.ict_s1 < cfg.ict_s0 {
            return Err(usage(format!("fields `ict_s0`/`ict_s1`: need 1 ≤ s0 ≤ s1, got {} and {}", cfg.ict_s0, cfg.ict_s1)));
        }
        Box::new(IctSchedule {
            sigma_min,
            sigma_max: cfg.sigma_max,
            rho: cfg.rho,
            s0: cfg.ict_s0,
            s1: cfg.ict_s1,
            p_mean,
            p_std,
            weighting: cfg.weighting,
            sigma_data: cfg.sigma_data,
        })
    };
    let distance = parse_distance(&cfg.distance, cfg.huber_c, if ect_like { 0.0 } else { pseudo_huber_c(values_per_sample) })?;
    if !(0.0..=1.0).contains(&cfg.gc_keep) || cfg.gc_keep_end.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
        return Err(usage("fields `gc_keep`/`gc_keep_end`: probabilities in [0, 1]"));
    }
    let coupling: Box<dyn Coupling> = match method {
        "gc" => Box::new(Gc { keep: cfg.gc_keep, keep_end: cfg.gc_keep_end }),
        "vct" => Box::new(Vc { sigma_data: cfg.sigma_data }),
        _ => Box::new(Independent),
    };
    let target = if schedule_name == "sct" { Target::Stable(cfg.sct_references) } else { Target::Standard };
    let kl_beta = if method == "vct" { cfg.vct_beta.unwrap_or(if ect_like { 10.0 } else { 30.0 }) } else { 0.0 };
    let encoder = if method == "vct" {
        if !matches!(cfg.vct_encoder.as_str(), "small" | "big") {
            return Err(usage(format!("field `vct_encoder`: `{}` (expected small or big)", cfg.vct_encoder)));
        }
        Some(cfg.vct_encoder.clone())
    } else {
        None
    };
    let grad_clip = cfg.grad_clip.or(if method == "vct" { Some(200.0) } else { None });
    Ok(Resolved {
        method: Box::new(ConsistencyLoss { schedule, coupling, target, distance, kernel: kernel.kernel(), precond, kl_beta }),
        encoder,
        kernel,
        schedule: if ect_like { "ect" } else { "ict" },
        grad_clip,
    })
}

/// Consistency distillation (methods.md §3): CD's fixed Karras grid, the teacher's ODE step as
/// the target point, the consistency preconditioning with σ_min = 0.002.
pub fn resolve_cd(cfg: &DistillConfig, values_per_sample: usize) -> Result<Resolved> {
    if cfg.cd_levels < 2 {
        return Err(usage(format!("field `cd_levels`: {} (expected at least 2 levels)", cfg.cd_levels)));
    }
    if !(0.0..1.0).contains(&cfg.target_ema) {
        return Err(usage(format!("field `target_ema`: {} (expected μ in [0, 1))", cfg.target_ema)));
    }
    let sigma_min = cfg.sigma_min.unwrap_or(super::cd::SIGMA_MIN);
    check_positive("sigma_min", sigma_min)?;
    check_positive("sigma_data", cfg.sigma_data)?;
    if cfg.sigma_max <= sigma_min {
        return Err(usage(format!("field `sigma_max`: {} must exceed sigma_min {sigma_min}", cfg.sigma_max)));
    }
    let precond = Precond { kind: PrecondKind::Cm, sigma_data: cfg.sigma_data, sigma_min, t_max: cfg.sigma_max };
    let schedule = CdSchedule::new(cfg.cd_levels as usize, sigma_min, cfg.sigma_max, cfg.rho, cfg.weighting, cfg.sigma_data);
    let distance = parse_distance(&cfg.distance, cfg.huber_c, pseudo_huber_c(values_per_sample))?;
    Ok(Resolved {
        method: Box::new(ConsistencyLoss {
            schedule: Box::new(schedule),
            coupling: Box::new(Independent),
            target: Target::Ode(cfg.cd_solver),
            distance,
            kernel: Kernel::Ve,
            precond,
            kl_beta: 0.0,
        }),
        encoder: None,
        kernel: KernelSpec::Ve,
        schedule: "cd",
        grad_clip: cfg.grad_clip,
    })
}

/// The `distance` field (with `huber_c`; `default_c` where it is unset).
fn parse_distance(name: &str, huber_c: Option<f64>, default_c: f64) -> Result<Distance> {
    match name {
        "pseudo-huber" => {
            let c = huber_c.unwrap_or(default_c);
            if c < 0.0 {
                return Err(usage(format!("field `huber_c`: {c} must be ≥ 0")));
            }
            Ok(Distance::PseudoHuber { c })
        }
        "l2-squared" => {
            if huber_c.is_some() {
                return Err(usage("field `huber_c` applies to distance = \"pseudo-huber\" only"));
            }
            Ok(Distance::L2Squared)
        }
        d => Err(usage(format!("field `distance`: `{d}` (expected pseudo-huber or l2-squared)"))),
    }
}

fn check_positive(field: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(usage(format!("field `{field}`: expected a positive number, got {v}")));
    }
    Ok(())
}
