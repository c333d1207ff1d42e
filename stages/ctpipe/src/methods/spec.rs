//! From the flat `train-ct` config to a method: which schedule, coupling and target, their
//! paper defaults, and the checks that they compose (a usage error naming the field otherwise).

use super::cd::CdSchedule;
use super::consistency::{ConsistencyLoss, Kernel, PairSchedule, Target};
use super::distance::Distance;
use super::ect::EctSchedule;
use super::edm::EdmLoss;
use super::sct::{References, Stable};
use super::ict::IctSchedule;
use super::Method;
use crate::coupling::{gc::Gc, independent::Independent, ot::Ot, vc::Vc, Coupling};
use crate::error::usage;
use crate::precond::{Precond, PrecondKind};
use crate::schedule::pseudo_huber_c;
use crate::train::config::TrainConfig;
use crate::train::distill::DistillConfig;
use crate::train::ema::EmaSchedule;
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
    /// How the evaluated EMA follows the weights, after method defaults.
    pub ema: EmaSchedule,
}

/// Steps per ECT stage. ECT advances the stage every `--double` ticks of `--tick` kimg, a
/// fixed number of images whatever the run's length (locuslab/ect ct_train.py:69, :88;
/// ct_training_loop.py:241, :383-386; run_ecm.sh:5: 250 × 12.8 kimg = 3200 kimg, 25k iterations
/// at batch 128); sony/vct divides its run into 8 stages instead (ecm.py:70, ecm.yaml:23).
///
/// The length is a real number of steps and the stage is ⌊step / length⌋, as VCT computes it.
/// ECT itself counts ticks of 12.8 kimg, its first tick a single iteration, so its boundaries
/// fall up to one tick later than ⌊images / 3.2 Mimg⌋ where the batch does not divide 12.8k.
pub fn ect_stage_steps(cfg: &TrainConfig, method: &str) -> Result<f64> {
    const ECT_STAGE_KIMG: f64 = 250.0 * 12.8;
    const VCT_STAGES: u64 = 8;
    let of_kimg = |kimg: f64| kimg * 1000.0 / cfg.batch as f64;
    match (cfg.ect_stage_kimg, cfg.ect_stages) {
        (Some(_), Some(_)) => Err(usage("fields `ect_stage_kimg` and `ect_stages`: set one (a stage length in images, or a number of stages over the run)")),
        (Some(kimg), None) => check_positive("ect_stage_kimg", kimg).map(|_| of_kimg(kimg)),
        (None, Some(0)) => Err(usage("field `ect_stages`: at least 1")),
        (None, Some(stages)) => Ok(cfg.steps as f64 / stages as f64),
        (None, None) if method == "vct" => Ok(cfg.steps as f64 / VCT_STAGES as f64),
        (None, None) => Ok(of_kimg(ECT_STAGE_KIMG)),
    }
}

/// The EMA's schedule: EDM's half-life when `ema_halflife_kimg` is set, ema-pytorch's warm-up
/// when `ema_update_after` is (GC's default: after 0, every 5; train/ema.rs), else a constant β.
pub fn ema_schedule(cfg: &TrainConfig, method: &str) -> Result<EmaSchedule> {
    let gc = method == "gc";
    if cfg.ema_update_every == Some(0) {
        return Err(usage("field `ema_update_every`: at least 1"));
    }
    let beta = cfg.ema_beta.unwrap_or(0.9999);
    match cfg.ema_halflife_kimg {
        Some(kimg) => {
            if cfg.ema_update_after.is_some() || cfg.ema_update_every.is_some() {
                return Err(usage("fields `ema_update_after`/`ema_update_every` and `ema_halflife_kimg`: choose ema-pytorch's warm-up or EDM's half-life"));
            }
            check_positive("ema_halflife_kimg", kimg)?;
            Ok(EmaSchedule::HalfLife { kimg, rampup: cfg.ema_rampup, batch: cfg.batch })
        }
        None => {
            let every = cfg.ema_update_every.unwrap_or(if gc { 5 } else { 1 });
            Ok(match cfg.ema_update_after.or(gc.then_some(0)) {
                Some(after) => EmaSchedule::Warmup { beta, after, every },
                None => EmaSchedule::Constant { beta, every },
            })
        }
    }
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
    if coupled && !matches!(schedule_name, "ict" | "ect" | "sct") {
        return Err(usage(format!("field `schedule`: `{schedule_name}` (expected ict, ect or sct)")));
    }
    if method == "vct" && schedule_name == "sct" {
        return Err(usage("vct with schedule = \"sct\": SCT's reference weights assume independent Gaussian noise, which VC replaces"));
    }
    if method == "edm" && cfg.coupling.is_some() {
        return Err(usage("field `coupling` applies to ict and ect, not edm"));
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
        (_, "ict", KernelSpec::Li { .. }) => PrecondKind::LiCm,
        (_, _, KernelSpec::Li { .. }) => PrecondKind::Li,
        (_, "ict", _) => PrecondKind::Cm,
        _ => PrecondKind::Ect,
    };
    if let Some(m) = cfg.phases {
        if !matches!(method, "ect" | "sct") {
            return Err(usage(format!("field `phases` applies to ect and sct, not {method}")));
        }
        if m == 0 {
            return Err(usage("field `phases`: at least 1"));
        }
    }
    // A phased model maps EDM's denoiser to its phase's lower edge (precond.rs), in training
    // and sampling alike.
    let precond_kind = if cfg.phases.is_some() { PrecondKind::Edm } else { precond_kind };
    let precond = Precond { kind: precond_kind, sigma_data: cfg.sigma_data, sigma_min, t_max: cfg.sigma_max, phases: cfg.phases };
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
            ema: ema_schedule(cfg, method)?,
        });
    }

    let schedule: Box<dyn PairSchedule> = if ect_like {
        if cfg.ect_q <= 1.0 {
            return Err(usage(format!("field `ect_q`: {} must exceed 1", cfg.ect_q)));
        }
        let stage_steps = ect_stage_steps(cfg, method)?;
        Box::new(EctSchedule {
            p_mean,
            p_std,
            q: cfg.ect_q,
            k: cfg.ect_k,
            b: cfg.ect_b,
            mapping: cfg.ect_mapping,
            stage_steps,
            weighting: cfg.weighting,
            sigma_data: cfg.sigma_data,
            sigma_min,
            sigma_max: cfg.sigma_max,
            // The LI kernel is defined up to t = T: sony/vct clamps t there (ecm.py:113-114).
            t_cap: matches!(kernel, KernelSpec::Li { .. }).then_some(cfg.sigma_max),
            edges: precond.edges(),
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
    let distance = consistency_distance(cfg, method, ect_like, values_per_sample)?;
    if !(0.0..=1.0).contains(&cfg.gc_keep) || cfg.gc_keep_end.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
        return Err(usage("fields `gc_keep`/`gc_keep_end`: probabilities in [0, 1]"));
    }
    let coupling: Box<dyn Coupling> = match (method, cfg.coupling.as_deref()) {
        ("gc" | "vct" | "sct", Some(c)) => {
            let why = if method == "sct" { "SCT's reference weights assume independent Gaussian noise" } else { "it brings its own coupling" };
            return Err(usage(format!("field `coupling` = `{c}` applies to ict and ect, not {method} ({why})")));
        }
        ("gc", None) => Box::new(Gc { keep: cfg.gc_keep, keep_end: cfg.gc_keep_end }),
        ("vct", None) => Box::new(Vc { sigma_data: cfg.sigma_data }),
        (_, None | Some("independent")) => Box::new(Independent),
        (_, Some("ot")) => Box::new(Ot { sigma_max: cfg.sigma_max }),
        (_, Some(c)) => return Err(usage(format!("field `coupling`: `{c}` (expected independent or ot)"))),
    };
    let target = if schedule_name == "sct" { Target::Stable(stable_target(cfg)?) } else { Target::Standard };
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
        ema: ema_schedule(cfg, method)?,
    })
}

/// SCT's target from the config: the pool's extra references (sct_pool − batch) and the
/// boundary.
fn stable_target(cfg: &TrainConfig) -> Result<Stable> {
    let pool_extra = match cfg.sct_references {
        References::Pool if cfg.sct_pool <= cfg.batch => {
            return Err(usage(format!("field `sct_pool`: {} must exceed the batch ({}); the pool holds the batch and more images", cfg.sct_pool, cfg.batch)));
        }
        References::Pool => (cfg.sct_pool - cfg.batch) as usize,
        _ => 0,
    };
    Ok(Stable { references: cfg.sct_references, pool_extra, boundary: cfg.sct_boundary, by_class: cfg.class_conditional })
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
    let precond = Precond { kind: PrecondKind::Cm, sigma_data: cfg.sigma_data, sigma_min, t_max: cfg.sigma_max, phases: None };
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
        ema: ema_schedule(&cfg.train_config()?, "cd")?,
    })
}

/// The distance of a consistency method: the `distance` field, or the method's own —
/// per value for VCT on the iCT schedule (sony/vct models/ict.py:29-30, summed at :142), over
/// the whole sample otherwise (iCT; GC utils.py:92-97; ECT loss.py:82-92) — with c = 0.00054·√D
/// on the iCT schedule and 0 on ECT's unless `huber_c` says otherwise.
pub fn consistency_distance(cfg: &TrainConfig, method: &str, ect_like: bool, values_per_sample: usize) -> Result<Distance> {
    let default = if method == "vct" && !ect_like { "pseudo-huber-per-value" } else { "pseudo-huber" };
    parse_distance(cfg.distance.as_deref().unwrap_or(default), cfg.huber_c, if ect_like { 0.0 } else { pseudo_huber_c(values_per_sample) })
}

/// The `distance` field (with `huber_c`; `default_c` where it is unset).
fn parse_distance(name: &str, huber_c: Option<f64>, default_c: f64) -> Result<Distance> {
    match name {
        "pseudo-huber" | "pseudo-huber-per-value" => {
            let c = huber_c.unwrap_or(default_c);
            if c < 0.0 {
                return Err(usage(format!("field `huber_c`: {c} must be ≥ 0")));
            }
            Ok(if name == "pseudo-huber" { Distance::PseudoHuber { c } } else { Distance::PseudoHuberPerValue { c } })
        }
        "l2-squared" => {
            if huber_c.is_some() {
                return Err(usage("field `huber_c` applies to the pseudo-huber distances only"));
            }
            Ok(Distance::L2Squared)
        }
        d => Err(usage(format!("field `distance`: `{d}` (expected pseudo-huber, pseudo-huber-per-value or l2-squared)"))),
    }
}

fn check_positive(field: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(usage(format!("field `{field}`: expected a positive number, got {v}")));
    }
    Ok(())
}
