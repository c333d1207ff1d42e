//! `train-ct`'s work: load the dataset, build the method and the networks (fresh or from an
//! init model), run the loop with checkpoints, and write the model artifact's files.
//! `distill` ([`distill`]) prepares its method, teacher and student differently and then runs
//! the same [`run`].

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod distill;
pub mod ema;
pub mod fit;
pub mod metrics;
pub mod optim;
pub mod signals;
pub mod teacher;

use crate::data::schema::{DatasetInfo, SampleKind};
use crate::error::{bad_input, usage};
use crate::methods::spec::{self, Resolved};
use crate::model::{self, ModelSpec, Weights, MODEL_FORMAT};
use crate::nn::{self, NetworkConfig};
use crate::report::grid::{image_grid_png, scatter_png};
use crate::store::Artifact;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use config::TrainConfig;
use fit::{Fit, TrainState};
use serde_json::{json, Value};
use signals::StopFlag;
use std::path::Path;

/// Where a run reads and writes.
pub struct RunDirs<'a> {
    pub out: &'a Path,
    pub work: &'a Path,
    /// The run's key, which its checkpoints carry.
    pub run: &'a str,
    /// The processes training together; rank 0 alone writes.
    pub world: &'a dyn crate::parallel::Collective,
}

/// Check the config without touching data (stage validation).
pub fn validate(cfg: &TrainConfig) -> Result<()> {
    validate_loop(cfg)?;
    cfg.init_source()?;
    // Resolve with a nominal size: catches method/schedule/coupling combinations early.
    spec::resolve(cfg, 2).map(|_| ())
}

/// Checks of the fields every training stage shares, beyond each field's declared range
/// (checked with the config, `config::check_ranges`).
pub fn validate_loop(cfg: &TrainConfig) -> Result<()> {
    if cfg.sigma_mid >= cfg.sigma_max {
        return Err(usage(format!("field `sigma_mid`: {} must be below sigma_max {}", cfg.sigma_mid, cfg.sigma_max)));
    }
    if !nn::PRESETS.iter().any(|(n, _)| *n == cfg.network) {
        let names = nn::PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ");
        return Err(usage(format!("field `network`: unknown preset `{}` (presets: {names})", cfg.network)));
    }
    optim::OptimConfig::parse(&cfg.optimizer, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)?;
    Ok(())
}

/// The training split of a dataset artifact.
fn load_data(data: &Artifact, limit: Option<u64>) -> Result<(DatasetInfo, data::TrainData)> {
    let (info, split) = crate::data::read_dataset_split(&data.dir, "train")?;
    let set = data::TrainData::new(info.kind, split, limit)?;
    Ok((info, set))
}

/// A training run of either stage, once the method, the networks and the data are settled.
pub struct Job<'a> {
    /// The stage, for logs.
    pub stage: &'static str,
    pub cfg: &'a TrainConfig,
    pub resolved: Resolved,
    pub data: &'a data::TrainData,
    pub info: &'a DatasetInfo,
    pub net_cfg: NetworkConfig,
    pub enc_cfg: Option<NetworkConfig>,
    pub state: TrainState,
}

/// Train a consistency model (or an EDM denoiser) and write the model artifact's files.
pub fn train_ct(cfg: &TrainConfig, data: &Artifact, init: Option<&Artifact>, dirs: RunDirs, stop: &StopFlag, device: &Device) -> Result<Value> {
    let (info, data_set) = load_data(data, cfg.limit)?;
    let resolved = spec::resolve(cfg, info.kind.sample_len())?;
    let classes = if cfg.class_conditional {
        if info.class_names.len() < 2 {
            return Err(usage(format!("field `class_conditional`: dataset {} has {} classes; a class-conditional model needs labels of at least two", info.name, info.class_names.len())));
        }
        info.class_names.len()
    } else {
        0
    };
    let net_cfg = nn::preset(&cfg.network, info.kind, 1, cfg.dropout)?.with_labels(classes);
    let enc_cfg = resolved.encoder.as_deref().map(|size| nn::vct_encoder(&net_cfg, size)).transpose()?;

    let net = match (init, cfg.init_source()?) {
        (Some(_), Some(_)) => return Err(usage("two inits: an `init` input and init_weights/init_repo; give one")),
        (Some(art), None) => init_from(art, &net_cfg, cfg.sigma_data, device)?,
        (None, Some(src)) => {
            let path = src.resolve(&INIT)?;
            Weights::from_tensors(&net_cfg, model::load_tensors(&path, device)?, device)
                .map_err(|e| bad_input(format!("{}: init weights do not fit network {} on this data: {}", path.display(), cfg.network, crate::error::one_line(&e))))?
        }
        (None, None) => Weights::init(&net_cfg, cfg.seed, device)?,
    };
    let ema = net.duplicate(&net_cfg, device)?;
    let encoder_state = match &enc_cfg {
        Some(c) => {
            let e = Weights::init_in(c, cfg.seed, "encoder", device)?;
            let ee = e.duplicate(c, device)?;
            Some((e, ee))
        }
        None => None,
    };
    let state = TrainState { net, ema, encoder: encoder_state, target: None, teacher: None };
    let job = Job { stage: "train-ct", cfg, resolved, data: &data_set, info: &info, net_cfg, enc_cfg, state };
    run(job, dirs, stop, device)
}

/// Run the loop with checkpoints and pictures, then write the model artifact's files; the
/// metrics summary.
pub fn run(job: Job, dirs: RunDirs, stop: &StopFlag, device: &Device) -> Result<Value> {
    let Job { stage, cfg, resolved, data: data_set, info, net_cfg, enc_cfg, state } = job;
    let Resolved { method, kernel, schedule, grad_clip, ema, .. } = resolved;
    let spec = ModelSpec {
        format: MODEL_FORMAT,
        method: cfg.method.clone(),
        schedule: schedule.to_string(),
        network: net_cfg.clone(),
        encoder: enc_cfg.clone(),
        precond: method.precond(),
        kernel,
        sigma_max: cfg.sigma_max,
        sigma_mid: cfg.sigma_mid,
        data: info.kind,
        dataset: info.name.clone(),
        parameters: state.net.params.num_params(),
        steps: cfg.steps,
    };
    let label = format!("{stage} {}", cfg.method);
    let world = dirs.world;
    if world.size() > 1 {
        eprintln!("{label}: rank {} of {} ({}), {} rows of each batch of {}", world.rank(), world.size(), world.name(), cfg.batch as usize / world.size(), cfg.batch);
    }
    eprintln!(
        "{label}: network {} ({} parameters{}), {} training rows of {}, {} steps of batch {}",
        cfg.network,
        fmt_count(spec.parameters),
        enc_cfg.as_ref().map(|_| format!(", encoder {}", fmt_count(state.encoder.as_ref().map(|e| e.0.params.num_params()).unwrap_or(0)))).unwrap_or_default(),
        data_set.rows(),
        info.name,
        cfg.steps,
        cfg.batch
    );

    let reference = data_set.first_points(1000);
    let grids = dirs.work.join("grids");
    let snapshots = dirs.work.join("snapshots");
    let fit = Fit { cfg, method: &*method, data: data_set, grad_clip, ema, device: device.clone(), work_dir: dirs.work, run: dirs.run, stop, label, world: dirs.world };
    let mut on_checkpoint = |step: u64, st: &TrainState| -> Result<()> {
        crate::fsx::create_dir_all(&grids)?;
        for (name, png) in sample_pictures(&spec, cfg, st, step, &reference, device)? {
            crate::fsx::write(&grids.join(format!("step-{step:010}-{name}")), png)?;
        }
        if cfg.keep_snapshots {
            crate::fsx::create_dir_all(&snapshots)?;
            model::save_weights(&snapshots.join(format!("ema-step-{step:010}.safetensors")), &st.ema, &spec)?;
        }
        Ok(())
    };
    let metrics = fit::fit(&fit, &state, &mut on_checkpoint)?;
    if dirs.world.rank() == 0 {
        write_outputs(dirs.out, &spec, cfg, &state, &metrics, &grids, &snapshots)?;
    }
    let mut out = json!({
        "method": cfg.method,
        "network": cfg.network,
        "parameters": spec.parameters,
        "steps": cfg.steps,
        "final_loss": metrics.tail_mean("loss", 0.1),
        "skipped_steps": metrics.count("skipped").0,
        "images_per_s": metrics.tail_mean("images_per_s", 0.5),
    });
    // Measurements the report compares across runs: over the second half of training.
    for name in ["grad_variance", "transport_gc_lo", "transport_ic_lo", "transport_gc_mid", "transport_ic_mid", "transport_gc_hi", "transport_ic_hi", "ot_cost", "ot_cost_independent"] {
        if let Some(v) = metrics.tail_mean(name, 0.5) {
            out[name] = json!(v);
        }
    }
    Ok(out)
}

fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Where imported init weights come from, for messages.
pub const INIT: crate::features::weights::WeightsRole = crate::features::weights::WeightsRole {
    what: "init weights",
    field: "init",
    how_to_get: "give an `init` input (a train-ct artifact), or init_weights = <safetensors file> (or init_repo + init_file) with init_sha256",
};

/// Tune from another model's EMA weights (ECT/SCT from an EDM pre-training): same network.
/// The init model's EMA weights. Its network must be the student's up to dropout: dropout has
/// no parameters, and tuning at another rate than pre-training is the papers' recipe (ECT tunes
/// CIFAR-10 at 0.2 from EDM trained at 0.13).
fn init_from(art: &Artifact, net_cfg: &NetworkConfig, sigma_data: f64, device: &Device) -> Result<Weights> {
    let spec = model::read_spec(art)?;
    let origin = format!("{}/{}", art.stage(), art.key().short());
    if spec.network.label_dim() != net_cfg.label_dim() {
        return Err(bad_input(format!(
            "init model {origin} is conditioned on {} classes, this run on {} (class_conditional must agree)",
            spec.network.label_dim(),
            net_cfg.label_dim()
        )));
    }
    if spec.network.with_dropout(0.0) != net_cfg.with_dropout(0.0) {
        return Err(bad_input(format!(
            "init model {origin} has a different network ({}); train it with the same preset and data",
            serde_json::to_string(&spec.network)?
        )));
    }
    if spec.precond.sigma_data != sigma_data {
        return Err(bad_input(format!("init model {origin} was trained with sigma_data = {}, this run sets {sigma_data}", spec.precond.sigma_data)));
    }
    let tensors = model::load_tensors(&art.file("ema.safetensors")?, device)?;
    Weights::from_tensors(net_cfg, tensors, device)
}

/// The sample pictures of a model state at `step`: 1-step and 2-step grids (Heun for EDM);
/// scatter plots over the data box for points. Each is titled with the method, the dataset,
/// the sampler and the step.
fn sample_pictures(spec: &ModelSpec, cfg: &TrainConfig, st: &TrainState, step: u64, reference: &[[f32; 2]], device: &Device) -> Result<Vec<(String, Vec<u8>)>> {
    let enc = st.encoder.as_ref().map(|(_, e)| &e.net);
    let runs: Vec<(String, usize, Vec<f64>, String)> = if spec.is_denoiser() {
        vec![("heun18.png".into(), 18, vec![], "Heun, 18 steps (35 NFE)".into())]
    } else if let Some(m) = spec.precond.phases {
        vec![(format!("{m}phase.png"), m as usize, vec![], format!("{m} phases"))]
    } else {
        vec![("1step.png".into(), 1, vec![], "1 step".into()), ("2step.png".into(), 2, vec![cfg.sigma_mid], format!("2 steps (σ_mid = {})", cfg.sigma_mid))]
    };
    let n = match spec.data {
        SampleKind::Points { .. } => (cfg.grid as usize).max(1000),
        SampleKind::Images { .. } => cfg.grid as usize,
    };
    let mut out = Vec::new();
    for (name, steps, mids, how) in runs {
        let x = generate(spec, &st.ema.net, enc, steps, &mids, cfg.seed, n, device)?;
        let title = format!("{} on {}: {how}, step {step}", cfg.method, spec.dataset);
        out.push((name, picture(spec, &x, reference, &title)?));
    }
    Ok(out)
}

/// `n` samples in batches of 256.
pub fn generate(spec: &ModelSpec, net: &crate::nn::Network, enc: Option<&crate::nn::Network>, steps: usize, mids: &[f64], seed: u64, n: usize, device: &Device) -> Result<Tensor> {
    generate_guided(spec, net, enc, None, steps, mids, seed, n, device)
}

/// `n` samples in batches of 256, guided by a weaker model when `guide` is given.
#[allow(clippy::too_many_arguments)]
pub fn generate_guided(spec: &ModelSpec, net: &crate::nn::Network, enc: Option<&crate::nn::Network>, guide: Option<&crate::sample::Guide>, steps: usize, mids: &[f64], seed: u64, n: usize, device: &Device) -> Result<Tensor> {
    let mut parts = Vec::new();
    let mut first = 0;
    while first < n {
        let k = (n - first).min(256);
        parts.push(crate::sample::model_samples(spec, net, enc, guide, steps, mids, seed, first as u64, k, None, device)?);
        first += k;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn picture(spec: &ModelSpec, x: &Tensor, reference: &[[f32; 2]], title: &str) -> Result<Vec<u8>> {
    match spec.data {
        SampleKind::Points { .. } => {
            let v: Vec<Vec<f32>> = x.to_vec2()?;
            let pts: Vec<[f32; 2]> = v.iter().map(|p| [p[0], p.get(1).copied().unwrap_or(0.0)]).collect();
            scatter_png(&pts, reference, 1.2, 512, title)
        }
        SampleKind::Images { .. } => {
            let cols = (x.dim(0)? as f64).sqrt().ceil() as usize;
            image_grid_png(x, cols, title)
        }
    }
}

fn write_outputs(
    out: &Path,
    spec: &ModelSpec,
    cfg: &TrainConfig,
    st: &TrainState,
    metrics: &metrics::MetricsLog,
    grids: &Path,
    snapshots: &Path,
) -> Result<()> {
    model::save_weights(&out.join("ema.safetensors"), &st.ema, spec)?;
    model::save_weights(&out.join("net.safetensors"), &st.net, spec)?;
    if let Some((e, ee)) = &st.encoder {
        model::save_weights(&out.join("encoder.safetensors"), e, spec)?;
        model::save_weights(&out.join("encoder_ema.safetensors"), ee, spec)?;
    }
    crate::fsx::write(&out.join("model.json"), serde_json::to_string_pretty(spec)? + "\n")?;
    metrics.write_parquet(&out.join("metrics.parquet"))?;
    crate::fsx::write(&out.join("loss.svg"), metrics.loss_svg(&format!("{} on {} ({} steps)", cfg.method, spec.dataset, cfg.steps))?)?;
    // The final checkpoint drew the final pictures already (same EMA weights, same noise).
    let last = format!("step-{:010}-", cfg.steps);
    for entry in std::fs::read_dir(grids)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&last) {
            crate::fsx::copy(&entry.path(), &out.join(format!("samples-{rest}")))?;
        }
    }
    for (from, to) in [(grids, "grids"), (snapshots, "snapshots")] {
        if from.is_dir() {
            crate::fsx::create_dir_all(&out.join(to))?;
            let mut entries: Vec<_> = std::fs::read_dir(from)?.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let dst = out.join(to).join(p.file_name().context("file name")?);
                std::fs::copy(&p, &dst).with_context(|| format!("copying {}", p.display()))?;
            }
        }
    }
    Ok(())
}
