//! `evaluate-fid`'s work: sample each model (1-step, 2-step, …; Heun for EDM teachers) for
//! several seeds, measure the samples, and write the metrics, a report and pictures.
//!
//! Images: the Fréchet distance between encoder features of N samples and the reference
//! statistics, per seed, reported as min and mean over seeds (EDM's protocol).
//! Points (the 2-D toys): FD on the coordinates, sliced Wasserstein-2 and RBF-MMD against the
//! held-out test split, and mode coverage for the mixture toys.

use crate::data::schema::{SampleKind, Samples};
use crate::error::{bad_input, usage};
use crate::features::{self, Encoder};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::stats::FeatureStats;
use crate::metrics::toy;
use crate::model::{self, LoadedModel, ModelSpec, Which};
use crate::nn::Network;
use crate::report::plot::{line_plot_svg, Series};
use crate::store::Artifact;
use super::toy_measures::{self, ToyMeasures};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

crate::config_struct! {
    /// Settings of `evaluate-fid`.
    pub struct EvalConfig {
        /// Samples per seed (FID convention: 50000 for CIFAR-10; 10000 is common for quick runs).
        #[range = "[2, 1e8]"]
        pub n: u64 = 10000,
        /// Seeds of the sampling noise; each gives one FD, reported as min and mean.
        #[range = "[0, inf)"]
        pub seeds: Vec<u64> = vec![0, 1, 2],
        /// Step counts for consistency models (1 = one network evaluation).
        #[range = "[1, 1000]"]
        pub steps: Vec<u64> = vec![1, 2],
        /// Intermediate noise levels for multistep sampling, highest first (default: the
        /// model's σ_mid for 2 steps; more steps need this list).
        #[range = "(0, inf)"]
        pub sigmas: Vec<f64> = vec![],
        /// Heun levels for denoisers (EDM teachers): 2·N − 1 evaluations.
        #[range = "[2, 1000]"]
        pub heun_steps: u64 = 18,
        /// Samples per network batch.
        #[range = "[1, 65536]"]
        pub batch: u64 = 250,
        /// Weights to evaluate: ema or online.
        pub weights: String = "ema".into(),
        /// Also evaluate every training snapshot a model artifact holds (train-ct
        /// keep_snapshots), 1-step with the first seed: FD over training.
        pub snapshots: bool = false,
        /// Samples per picture.
        #[range = "[1, 4096]"]
        pub grid: u64 = 64,
        /// Toy data: MMD uses at most this many samples (it is quadratic).
        #[range = "[2, 1e5]"]
        pub mmd_n: u64 = 2000,
        /// Guidance strengths w to sweep with the `guide` model (Karras et al. 2024: f_w =
        /// f_guide + w·(f − f_guide); w = 1 is the model itself), with every sampler of every
        /// consistency model.
        #[range = "(-inf, inf)"]
        pub guidance: Vec<f64> = vec![],
        /// The guide's EMA snapshot at this training step (its `keep_snapshots`; SCT guides
        /// with snapshots at 25–75 % of training) instead of its final weights.
        #[range = "[0, inf)"]
        pub guide_step: Option<u64> = None,
        /// Class-conditional models: samples per class for the per-class FD (first seed),
        /// against the reference's per-class statistics (precompute-encoder `per_class`; the
        /// test split's points of the class for toys).
        #[range = "[2, 1e7]"]
        pub class_n: u64 = 1000,
        /// Also write the first seed's n samples of every model and sampler (unguided) as
        /// `samples-<model>-<sampler>.npz`: `arr_0`, uint8 N × H × W × C, the format of EDM's,
        /// ECT's and openai/consistency_models' samplers, which pytorch-fid, clean-fid and the
        /// `fid` tool read. Images only.
        pub export_samples: bool = false,
    }
}

impl EvalConfig {
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() || self.steps.is_empty() {
            return Err(usage("fields `seeds` and `steps` need at least one value"));
        }
        let most = *self.steps.iter().max().unwrap_or(&1) as usize;
        if most > 2 && self.sigmas.len() < most - 1 {
            return Err(usage(format!("field `sigmas`: {most}-step sampling needs {} intermediate levels", most - 1)));
        }
        if self.sigmas.windows(2).any(|w| w[1] >= w[0]) {
            return Err(usage("field `sigmas`: expected levels in decreasing order"));
        }
        if self.guide_step.is_some() && self.guidance.is_empty() {
            return Err(usage("field `guide_step` applies with `guidance` (and the `guide` input)"));
        }
        if !matches!(self.weights.as_str(), "ema" | "online") {
            return Err(usage(format!("field `weights`: `{}` (expected ema or online)", self.weights)));
        }
        Ok(())
    }
}

/// One model × sampler measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub method: String,
    pub stage: String,
    pub key: String,
    pub sampler: String,
    pub nfe: u64,
    /// Guidance strength w with the `guide` model (None: unguided).
    pub guidance: Option<f64>,
    /// Class-conditional models: the class of a per-class row (None: every class in turn).
    pub class: Option<u32>,
    /// Training step of a snapshot (None: the final model).
    pub train_step: Option<u64>,
    /// Samples per seed.
    pub n: usize,
    pub fd: Vec<f64>,
    pub fd_min: f64,
    pub fd_mean: f64,
    /// Sample standard deviation over seeds (None with one seed).
    pub fd_std: Option<f64>,
    pub swd: Option<f64>,
    pub mmd: Option<f64>,
    pub near: Option<f64>,
    pub min_mode: Option<f64>,
}

impl Row {
    /// A model × sampler row with nothing measured yet.
    fn empty(label: &str, m: &LoadedModel, art: &Artifact, s: &Sampler) -> Row {
        Row {
            method: m.spec.method.clone(),
            stage: art.stage().to_string(),
            key: art.key().to_string(),
            sampler: s.name.clone(),
            nfe: s.nfe,
            ..Row::baseline(label, 0)
        }
    }

    /// A baseline row (the held-out data, pure noise): no model, no sampler.
    fn baseline(name: &str, n: usize) -> Row {
        Row {
            model: name.to_string(),
            method: "baseline".into(),
            stage: String::new(),
            key: String::new(),
            sampler: "–".into(),
            nfe: 0,
            guidance: None,
            class: None,
            train_step: None,
            n,
            fd: Vec::new(),
            fd_min: f64::NAN,
            fd_mean: f64::NAN,
            fd_std: None,
            swd: None,
            mmd: None,
            near: None,
            min_mode: None,
        }
    }

    /// Min, mean and standard deviation of the per-seed FDs.
    fn summarise(&mut self) {
        let k = self.fd.len() as f64;
        self.fd_min = self.fd.iter().copied().fold(f64::INFINITY, f64::min);
        self.fd_mean = self.fd.iter().sum::<f64>() / k;
        self.fd_std = (self.fd.len() > 1).then(|| (self.fd.iter().map(|v| (v - self.fd_mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt());
    }
}

/// What a sampler run is.
struct Sampler {
    name: String,
    steps: usize,
    mids: Vec<f64>,
    nfe: u64,
}

fn samplers(cfg: &EvalConfig, spec: &ModelSpec) -> Vec<Sampler> {
    if spec.is_denoiser() {
        let n = cfg.heun_steps as usize;
        return vec![Sampler { name: format!("heun-{n}"), steps: n, mids: vec![], nfe: 2 * n as u64 - 1 }];
    }
    if let Some(m) = spec.precond.phases {
        // One evaluation per phase whatever `steps` asks for.
        return vec![Sampler { name: format!("{m}-phase"), steps: m as usize, mids: vec![], nfe: m as u64 }];
    }
    cfg.steps
        .iter()
        .map(|&k| {
            let mids = if cfg.sigmas.is_empty() { vec![spec.sigma_mid] } else { cfg.sigmas.clone() };
            let mids = mids[..(k as usize - 1).min(mids.len())].to_vec();
            Sampler { name: format!("{k}-step"), steps: k as usize, mids, nfe: k }
        })
        .collect()
}

/// The reference a model's samples are compared with.
enum Reference {
    Images { encoder: Box<dyn Encoder>, stats: FeatureStats, per_class: Vec<FeatureStats> },
    Points { stats: FeatureStats, truth: Vec<[f64; 2]>, centres: Vec<[f64; 2]>, per_class: Vec<FeatureStats> },
}

impl Reference {
    /// The per-class statistics (empty where the reference has none).
    fn per_class(&self) -> &[FeatureStats] {
        match self {
            Reference::Images { per_class, .. } | Reference::Points { per_class, .. } => per_class,
        }
    }

    fn encoder(&self) -> &dyn Encoder {
        match self {
            Reference::Images { encoder, .. } => &**encoder,
            Reference::Points { .. } => &features::Identity(2),
        }
    }
}

fn points_of(x: &Tensor) -> Result<Vec<[f64; 2]>> {
    let v: Vec<Vec<f32>> = x.to_vec2()?;
    Ok(v.iter().map(|p| [p[0] as f64, p.get(1).copied().unwrap_or(0.0) as f64]).collect())
}

/// Everything `evaluate-fid` writes.
pub struct Evaluation {
    pub rows: Vec<Row>,
    /// The held-out data and pure noise, measured as the models are (same n, same seeds).
    pub baselines: Vec<Row>,
    pub dataset: String,
    pub encoder: String,
    /// The mixture toys: transport cost, VCT's posteriors, SCT's target, training logs.
    pub toy: Option<ToyMeasures>,
}

pub fn evaluate(cfg: &EvalConfig, data: &Artifact, reference: Option<&Artifact>, models: &[Artifact], guide: Option<&Artifact>, out: &Path, device: &Device) -> Result<Value> {
    if models.is_empty() {
        return Err(usage("input `models`: at least one model artifact to evaluate"));
    }
    match (guide.is_some(), cfg.guidance.is_empty()) {
        (true, true) => return Err(usage("input `guide` needs field `guidance`: the strengths w to sweep")),
        (false, false) => return Err(usage("field `guidance` needs input `guide`: the weaker model to guide with")),
        _ => {}
    }
    // Images need only the description; the toys' splits are the reference itself.
    let info = crate::data::io::read_info(&data.dir.join("train.parquet"))?;
    let (reference_kind, encoder_name, held_out) = match (info.kind, reference) {
        (SampleKind::Points { .. }, _) => {
            let (_, train) = crate::data::read_dataset_split(&data.dir, "train")?;
            let (_, test) = crate::data::read_dataset_split(&data.dir, "test")?;
            let Samples::Points(tv) = &test.samples else { unreachable!("points dataset") };
            let truth: Vec<[f64; 2]> = tv.chunks(2).map(|p| [p[0] as f64, p[1] as f64]).collect();
            let train_x = super::precompute::split_tensor(info.kind, &train, None, device)?;
            let stats = features::statistics_of(&features::Identity(2), &train_x, 4096)?;
            let name = info.name.strip_prefix("toy2d:").unwrap_or(&info.name);
            // Per class: the test split's points of each class.
            let per_class = (0..info.class_names.len())
                .map(|c| {
                    let pts: Vec<f32> = tv.chunks(2).zip(&test.labels).filter(|(_, l)| **l as usize == c).flat_map(|(p, _)| p.to_vec()).collect();
                    let n = pts.len() / 2;
                    features::statistics_of(&features::Identity(2), &Tensor::from_vec(pts, (n, 2), device)?, 4096)
                })
                .collect::<Result<Vec<_>>>()?;
            (Reference::Points { stats, truth, centres: crate::data::sources::toy2d::mode_centres(name), per_class }, "identity".to_string(), ("test".to_string(), test))
        }
        (SampleKind::Images { .. }, None) => {
            return Err(usage("input `reference`: image models need a precompute-encoder artifact (reference statistics)"));
        }
        (SampleKind::Images { .. }, Some(r)) => {
            let (spec, encoder) = features::open(r, device)?;
            let stats = FeatureStats::load(&r.file("stats.safetensors")?)?;
            // The split the reference statistics were not computed from.
            let other = r.manifest.metrics.get("fd_data_split").and_then(Value::as_str).unwrap_or("test").to_string();
            let (_, held_out) = crate::data::read_dataset_split(&data.dir, &other)?;
            let per_class = (0..info.class_names.len())
                .map_while(|c| r.file(&format!("stats-class-{c}.safetensors")).ok())
                .map(|p| FeatureStats::load(&p))
                .collect::<Result<Vec<_>>>()?;
            (Reference::Images { encoder, stats, per_class }, spec.name().to_string(), (other, held_out))
        }
    };
    let baselines = baseline_rows(cfg, info.kind, (&held_out.0, &held_out.1), &reference_kind, device)?;
    if matches!(info.kind, SampleKind::Images { .. }) {
        // The held-out images as a grid of the same size, to set the models' grids against
        // (the toys' scatter plots draw the held-out points under the samples already).
        let data = crate::train::data::TrainData::new(info.kind, held_out.1.clone(), None)?;
        let k = (cfg.grid as usize).min(data.rows());
        let x = data.rows_tensor(&(0..k).collect::<Vec<_>>(), None, device)?;
        let cols = (k as f64).sqrt().ceil() as usize;
        crate::fsx::write(&out.join("samples-data.png"), crate::report::grid::image_grid_png(&x, cols, &format!("{}: held-out data", info.name))?)?;
    }
    let which = if cfg.weights == "ema" { Which::Ema } else { Which::Online };
    let guide = guide.map(|g| load_guide(g, cfg.guide_step, device)).transpose()?;
    let mut rows = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    // The toys' models, kept for their measurements after the loop (they are small).
    let mut kept: Vec<(String, Value, LoadedModel)> = Vec::new();
    for art in models {
        let m = model::load_model(art, which, device)?;
        if m.spec.data != info.kind {
            return Err(bad_input(format!("model {}/{} generates {:?}, the data is {:?}", art.stage(), art.key().short(), m.spec.data, info.kind)));
        }
        let mut label = model_label(&m.spec, art);
        if labels.contains(&label) {
            label = format!("{label} {}", art.key().short());
        }
        labels.push(label.clone());
        let strengths: Vec<Option<f64>> = std::iter::once(None).chain(cfg.guidance.iter().map(|&w| Some(w))).collect();
        for s in samplers(cfg, &m.spec) {
            for &w in &strengths {
                let g = match (w, &guide) {
                    (Some(w), Some((spec, weights, origin))) if !m.spec.is_denoiser() => {
                        check_guide(&m.spec, spec, origin, &label)?;
                        Some(crate::sample::Guide { spec, net: &weights.net, w })
                    }
                    (Some(_), _) => continue,
                    (None, _) => None,
                };
                let mut export = (cfg.export_samples && g.is_none() && matches!(info.kind, SampleKind::Images { .. })).then(Vec::new);
                let row = measure(cfg, &m, &m.net.net, g.as_ref(), &s, &cfg.seeds, &reference_kind, device, &label, art, None, export.as_mut())?;
                if let (Some(pixels), SampleKind::Images { height, width, channels }) = (export, info.kind) {
                    let x = Tensor::from_vec(pixels, (cfg.n as usize, height as usize, width as usize, channels as usize), &Device::Cpu)?;
                    let file = out.join(format!("samples-{}-{}.npz", label.replace(' ', "-"), s.name));
                    Tensor::write_npz(&[("arr_0", &x)], &file).with_context(|| format!("{}: cannot write", file.display()))?;
                }
                let how = w.map(|w| format!(" guided w = {w}")).unwrap_or_default();
                eprintln!("evaluate-fid: {label} {}{how}: FD min {:.4} mean {:.4}", s.name, row.fd_min, row.fd_mean);
                rows.push(row);
                let x = crate::train::generate_guided(&m.spec, &m.net.net, m.encoder.as_ref().map(|e| &e.net), g.as_ref(), s.steps, &s.mids, cfg.seeds[0], cfg.grid as usize, device)?;
                let x = finite_samples(x, &label, &s.name, art)?;
                let w_part = w.map(|w| format!("-w{w}")).unwrap_or_default();
                let file = format!("samples-{}-{}{w_part}.png", label.replace(' ', "-"), s.name);
                let how = w.map(|w| format!(", guided w = {w}")).unwrap_or_default();
                let title = format!("{label} on {}: {}{how}", info.name, s.name);
                crate::fsx::write(&out.join(file), picture(&m.spec, &x, &reference_kind, &title)?)?;
            }
        }
        let classes = m.spec.network.label_dim();
        if classes > 0 {
            let per_class = reference_kind.per_class();
            if per_class.len() != classes {
                return Err(usage(format!(
                    "input `reference`: model {label} is conditioned on {classes} classes, the reference has per-class statistics for {} (set per_class = true on its precompute-encoder node)",
                    per_class.len()
                )));
            }
            for s in samplers(cfg, &m.spec) {
                for (c, stats) in per_class.iter().enumerate() {
                    let row = measure_class(cfg, &m, &s, c as u32, stats, reference_kind.encoder(), &label, art, device)?;
                    eprintln!("evaluate-fid: {label} {} class {c}: FD {:.4}", s.name, row.fd_min);
                    rows.push(row);
                }
            }
        }
        if cfg.snapshots {
            for (step, path) in snapshots(art)? {
                let tensors = model::load_tensors(&path, device)?;
                let w = model::Weights::frozen(&m.spec.network, tensors, device)?;
                let s = &samplers(cfg, &m.spec)[0];
                let row = measure(cfg, &m, &w.net, None, s, &cfg.seeds[..1], &reference_kind, device, &label, art, Some(step), None)?;
                eprintln!("evaluate-fid: {label} at step {step} ({}): FD {:.4}", s.name, row.fd_min);
                rows.push(row);
            }
        }
        if matches!(reference_kind, Reference::Points { .. }) {
            kept.push((label.clone(), art.manifest.metrics.clone(), m));
        }
    }
    let toy = match &reference_kind {
        Reference::Points { truth, centres, .. } if !centres.is_empty() => Some(measure_toy(truth, centres, &info.class_names, &kept, cfg.seeds[0], device)?),
        _ => None,
    };
    let ev = Evaluation { rows, baselines, dataset: info.name.clone(), encoder: encoder_name, toy };
    write_outputs(&ev, cfg, out)?;
    Ok(json!({
        "dataset": ev.dataset,
        "encoder": ev.encoder,
        "baselines": ev.baselines,
        "rows": ev.rows,
    }))
}

/// A row's model name: the method, plus what sets the model apart from the method's defaults —
/// a coupling or distance chosen against them (ict+ot, ict+pseudo-huber-per-value), SCT's
/// reference set or boundary (sct+pool, sct+clean), phases (sct+2phases), class conditioning
/// (+cond).
fn model_label(spec: &ModelSpec, art: &Artifact) -> String {
    let mut label = spec.method.clone();
    let setting = |field: &str| art.manifest.config.get(field).and_then(Value::as_str);
    if art.stage() == "train-ct" {
        for field in ["coupling", "distance"] {
            if let Some(v) = setting(field).filter(|c| *c != "independent") {
                label = format!("{label}+{v}");
            }
        }
        if spec.method == "sct" {
            if let Some(r) = setting("sct_references").filter(|r| *r != "batch") {
                label = format!("{label}+{r}");
            }
            if setting("sct_boundary") == Some("clean") {
                label = format!("{label}+clean");
            }
        }
    }
    if let Some(m) = spec.precond.phases {
        label = format!("{label}+{m}phases");
    }
    if spec.network.label_dim() > 0 {
        label = format!("{label}+cond");
    }
    label
}

/// The papers' measurements on a mixture toy (evaluate/toy_measures.rs) for the models kept.
fn measure_toy(truth: &[[f64; 2]], centres: &[[f64; 2]], mode_names: &[String], kept: &[(String, Value, LoadedModel)], seed: u64, device: &Device) -> Result<ToyMeasures> {
    let models: Vec<(String, &LoadedModel)> = kept.iter().map(|(l, _, m)| (l.clone(), m)).collect();
    let mut t = ToyMeasures { transport: toy_measures::transport(truth, centres, &models, seed, device)?, ..Default::default() };
    for (label, metrics, m) in kept {
        t.posteriors.extend(toy_measures::posteriors(truth, centres, mode_names, label, m, device)?);
        t.training.extend(toy_measures::TrainingRow::from_manifest(label, metrics));
    }
    if kept.iter().any(|(_, _, m)| m.spec.schedule == "ect") {
        t.target = toy_measures::target_variance(truth, centres, seed, device)?;
    }
    Ok(t)
}

/// The guide: a model artifact's EMA weights, or its snapshot at `step`; with its spec and a
/// name for messages.
fn load_guide(art: &Artifact, step: Option<u64>, device: &Device) -> Result<(ModelSpec, model::Weights, String)> {
    let spec = model::read_spec(art)?;
    let origin = format!("{}/{}", art.stage(), art.key().short());
    let path = match step {
        None => art.file("ema.safetensors")?,
        Some(step) => {
            let snaps = snapshots(art)?;
            match snaps.iter().find(|(s, _)| *s == step) {
                Some((_, p)) => p.clone(),
                None => {
                    let have: Vec<String> = snaps.iter().map(|(s, _)| s.to_string()).collect();
                    return Err(usage(format!("field `guide_step`: the guide {origin} has no snapshot at step {step} (it has: {})", if have.is_empty() { "none; train it with keep_snapshots = true".into() } else { have.join(", ") })));
                }
            }
        }
    };
    let weights = model::Weights::frozen(&spec.network, model::load_tensors(&path, device)?, device)?;
    let origin = match step {
        Some(s) => format!("{origin} @ step {s}"),
        None => origin,
    };
    Ok((spec, weights, origin))
}

/// A guide must be a consistency model of the same data and parameterisation (phases and
/// noise range), so that both evaluations estimate the same quantity at the same points.
fn check_guide(model: &ModelSpec, guide: &ModelSpec, origin: &str, label: &str) -> Result<()> {
    if guide.is_denoiser() {
        return Err(usage(format!("input `guide`: {origin} is a denoiser (EDM); guidance needs a consistency model")));
    }
    if guide.data != model.data || guide.precond.phases != model.precond.phases || guide.sigma_max != model.sigma_max || guide.kernel != model.kernel {
        return Err(usage(format!(
            "input `guide`: {origin} does not match model {label} (data, phases, sigma_max and kernel must agree: {:?}/{:?}/{}/{:?} against {:?}/{:?}/{}/{:?})",
            guide.data, guide.precond.phases, guide.sigma_max, guide.kernel, model.data, model.precond.phases, model.sigma_max, model.kernel
        )));
    }
    Ok(())
}

/// The snapshots of a model artifact, by training step.
fn snapshots(art: &Artifact) -> Result<Vec<(u64, std::path::PathBuf)>> {
    let mut out: Vec<(u64, std::path::PathBuf)> = art
        .manifest
        .files
        .iter()
        .filter_map(|f| {
            let step = f.path.strip_prefix("snapshots/ema-step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, art.dir.join(&f.path)))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    cfg: &EvalConfig,
    m: &LoadedModel,
    net: &Network,
    guide: Option<&crate::sample::Guide>,
    s: &Sampler,
    seeds: &[u64],
    reference: &Reference,
    device: &Device,
    label: &str,
    art: &Artifact,
    train_step: Option<u64>,
    mut export: Option<&mut Vec<u8>>,
) -> Result<Row> {
    let enc = m.encoder.as_ref().map(|e| &e.net);
    let n = cfg.n as usize;
    let batch = cfg.batch as usize;
    let mut row = Row { guidance: guide.map(|g| g.w), train_step, n, ..Row::empty(label, m, art, s) };
    let what = match train_step {
        Some(step) => format!("evaluate-fid: {label} @ step {step} {}", s.name),
        None => format!("evaluate-fid: {label} {}{}", s.name, guide.map(|g| format!(" w = {}", g.w)).unwrap_or_default()),
    };
    let mut progress = crate::progress::Progress::new(&what, (n * seeds.len()) as u64);
    for (i, &seed) in seeds.iter().enumerate() {
        let mut next = batches(n, batch, |first, k| {
            let x = crate::sample::model_samples(&m.spec, net, enc, guide, s.steps, &s.mids, seed, first as u64, k, None, device)?;
            progress.set_position((i * n + first + k) as u64);
            let x = finite_samples(x, label, &s.name, art)?;
            if let (0, Some(pixels)) = (i, export.as_deref_mut()) {
                pixels.extend(uint8_nhwc(&x)?);
            }
            Ok(x)
        });
        score(&mut next, reference, cfg, i == 0, seed, &mut row)?;
    }
    progress.finish();
    row.summarise();
    Ok(row)
}

/// Score one seed's samples (`next` gives them batch by batch) against the reference, as
/// every row is scored: the FD, and on the first seed the toys' SWD, MMD and mode coverage.
fn score(next: &mut dyn FnMut() -> Result<Option<Tensor>>, reference: &Reference, cfg: &EvalConfig, first_seed: bool, seed: u64, row: &mut Row) -> Result<()> {
    match reference {
        Reference::Images { encoder, stats, .. } => {
            let st = features::statistics(&**encoder, next)?;
            row.fd.push(frechet_distance(&st, stats)?);
        }
        Reference::Points { stats, truth, centres, .. } => {
            let mut parts = Vec::new();
            while let Some(x) = next()? {
                parts.push(x);
            }
            let x = Tensor::cat(&parts, 0)?;
            let st = features::statistics_of(&features::Identity(2), &x, 4096)?;
            row.fd.push(frechet_distance(&st, stats)?);
            if first_seed {
                let pts = points_of(&x)?;
                row.swd = Some(toy::sliced_wasserstein(&pts, truth, 256, seed));
                let k = (cfg.mmd_n as usize).min(pts.len()).min(truth.len());
                row.mmd = Some(toy::mmd_rbf(&pts[..k], &truth[..k], &[0.02, 0.1, 0.5]));
                if !centres.is_empty() {
                    let c = toy::mode_coverage(&pts, centres, 0.1);
                    row.near = Some(c.near);
                    row.min_mode = c.per_mode.iter().copied().reduce(f64::min);
                }
            }
        }
    }
    Ok(())
}

/// The held-out split and pure noise measured exactly as the models are: `n` samples per seed
/// (all the split's rows where it has fewer), the same seeds, the same reference. FD is biased
/// upwards at small n (real images at n = 200 score far above their n = 10,000 value), so a
/// model's FD reads only against baselines at its own n.
fn baseline_rows(cfg: &EvalConfig, kind: SampleKind, held_out: (&str, &crate::data::schema::Split), reference: &Reference, device: &Device) -> Result<Vec<Row>> {
    let (n, batch) = (cfg.n as usize, cfg.batch as usize);
    let data = crate::train::data::TrainData::new(kind, held_out.1.clone(), None)?;
    let take = n.min(data.rows());
    let name = if take < n { format!("data ({} split, all {take} rows)", held_out.0) } else { format!("data ({} split)", held_out.0) };
    let mut rows = vec![Row::baseline(&name, take), Row::baseline("pure noise", n)];
    let mut progress = crate::progress::Progress::new("evaluate-fid: baselines", ((take + n) * cfg.seeds.len()) as u64);
    for (i, &seed) in cfg.seeds.iter().enumerate() {
        // A seeded draw without replacement.
        let picks = rand::seq::index::sample(&mut crate::rng::stream(seed, "baseline-data", 0), data.rows(), take).into_vec();
        let mut next = batches(take, batch, |first, k| {
            progress.inc(k as u64);
            data.rows_tensor(&picks[first..first + k], None, device)
        });
        score(&mut next, reference, cfg, i == 0, seed, &mut rows[0])?;
        drop(next);
        // The toys' SWD and MMD compare with the held-out points themselves: zero by
        // construction for the data row, so not shown.
        (rows[0].swd, rows[0].mmd) = (None, None);
        let mut next = batches(n, batch, |first, k| {
            progress.inc(k as u64);
            super::precompute::noise(kind, k, seed, first as u64, device)
        });
        score(&mut next, reference, cfg, i == 0, seed, &mut rows[1])?;
    }
    progress.finish();
    for r in &mut rows {
        r.summarise();
        eprintln!("evaluate-fid: baseline {} (n = {}): FD min {:.4} mean {:.4}", r.model, r.n, r.fd_min, r.fd_mean);
    }
    Ok(rows)
}

/// `total` rows in batches of at most `batch`, each made by `make(first, k)`, as
/// `features::statistics` and `score` read them (None when all are given).
fn batches(total: usize, batch: usize, mut make: impl FnMut(usize, usize) -> Result<Tensor>) -> impl FnMut() -> Result<Option<Tensor>> {
    let mut first = 0usize;
    move || {
        if first >= total {
            return Ok(None);
        }
        let k = (total - first).min(batch);
        let x = make(first, k)?;
        first += k;
        Ok(Some(x))
    }
}

/// Images in [−1, 1] (N × C × H × W) as bytes N × H × W × C: the levels `features::quantize`
/// measures.
fn uint8_nhwc(x: &Tensor) -> Result<Vec<u8>> {
    Ok(features::levels(x)?.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as u8).collect())
}

/// The samples, if every value is finite; else an error naming the model and the sampler (a
/// FD of NaN samples would be NaN, and an FD table with a NaN row looks like a bug of ours).
fn finite_samples(x: Tensor, label: &str, sampler: &str, art: &Artifact) -> Result<Tensor> {
    if crate::nn::ops::all_finite(&x)? {
        return Ok(x);
    }
    Err(bad_input(format!("model {label} ({}/{}): its {sampler} samples hold NaN or inf; the model is broken (retrain it)", art.stage(), art.key().short())))
}

/// The FD of `class_n` samples of one class (first seed) against that class's statistics.
#[allow(clippy::too_many_arguments)]
fn measure_class(cfg: &EvalConfig, m: &LoadedModel, s: &Sampler, class: u32, stats: &FeatureStats, encoder: &dyn Encoder, label: &str, art: &Artifact, device: &Device) -> Result<Row> {
    let (n, batch, seed) = (cfg.class_n as usize, cfg.batch as usize, cfg.seeds[0]);
    let enc = m.encoder.as_ref().map(|e| &e.net);
    let st = features::statistics(
        encoder,
        batches(n, batch, |first, k| {
            let x = crate::sample::model_samples(&m.spec, &m.net.net, enc, None, s.steps, &s.mids, seed, first as u64, k, Some(class), device)?;
            finite_samples(x, label, &s.name, art)
        }),
    )?;
    let fd = frechet_distance(&st, stats)?;
    Ok(Row { class: Some(class), n, fd: vec![fd], fd_min: fd, fd_mean: fd, ..Row::empty(label, m, art, s) })
}

fn picture(spec: &ModelSpec, x: &Tensor, reference: &Reference, title: &str) -> Result<Vec<u8>> {
    match (spec.data, reference) {
        (SampleKind::Points { .. }, Reference::Points { truth, .. }) => {
            let pts: Vec<[f32; 2]> = points_of(x)?.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
            let refs: Vec<[f32; 2]> = truth.iter().take(1000).map(|p| [p[0] as f32, p[1] as f32]).collect();
            crate::report::grid::scatter_png(&pts, &refs, 1.2, 512, title)
        }
        _ => {
            let cols = (x.dim(0)? as f64).sqrt().ceil() as usize;
            crate::report::grid::image_grid_png(x, cols, title)
        }
    }
}

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];

fn write_outputs(ev: &Evaluation, cfg: &EvalConfig, out: &Path) -> Result<()> {
    crate::fsx::write(&out.join("report.md"), super::report::markdown(ev, cfg))?;
    let finals: Vec<&Row> = ev.rows.iter().filter(|r| r.train_step.is_none() && r.guidance.is_none() && r.class.is_none()).collect();
    let mut models: Vec<&str> = finals.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let mut series: Vec<Series> = models
        .iter()
        .enumerate()
        .map(|(i, m)| Series {
            name: m.to_string(),
            points: finals.iter().filter(|r| r.model == *m).map(|r| (r.nfe as f64, r.fd_min)).collect(),
            color: COLORS[i % COLORS.len()],
        })
        .collect();
    // The baselines as level lines across the NFE range, to read the models against.
    let nfe = finals.iter().map(|r| r.nfe as f64);
    let (lo, hi) = (nfe.clone().fold(f64::INFINITY, f64::min), nfe.fold(0.0, f64::max));
    if lo.is_finite() {
        for (b, color) in ev.baselines.iter().zip(["#555555", "#aaaaaa"]) {
            series.push(Series { name: format!("{} (baseline)", b.model), points: vec![(lo, b.fd_min), (hi.max(lo + 1.0), b.fd_min)], color });
        }
    }
    let title = format!("FD ({} features) on {}", ev.encoder, ev.dataset);
    // NFE spans 1 to 2N − 1 of a Heun teacher: a log axis keeps 1 and 2 apart; each point is
    // one measurement, so each gets a marker.
    let axes = crate::report::plot::Axes { log_x: true, log_y: true, markers: true };
    crate::fsx::write(&out.join("fd.svg"), crate::report::plot::plot_svg(&title, "network evaluations (NFE)", "FD (min over seeds)", &series, axes)?)?;
    let snaps: Vec<&Row> = ev.rows.iter().filter(|r| r.train_step.is_some()).collect();
    if !snaps.is_empty() {
        let series: Vec<Series> = models
            .iter()
            .enumerate()
            .map(|(i, m)| Series {
                name: m.to_string(),
                points: snaps.iter().filter(|r| r.model == *m).map(|r| (r.train_step.unwrap_or(0) as f64, r.fd_min)).collect(),
                color: COLORS[i % COLORS.len()],
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        crate::fsx::write(&out.join("fd-training.svg"), line_plot_svg(&format!("FD over training on {}", ev.dataset), "training step", "FD", &series, true)?)?;
    }
    let guided: Vec<&Row> = ev.rows.iter().filter(|r| r.guidance.is_some()).collect();
    if !guided.is_empty() {
        let mut curves: Vec<(String, String)> = guided.iter().map(|r| (r.model.clone(), r.sampler.clone())).collect();
        curves.dedup();
        let series: Vec<Series> = curves
            .iter()
            .enumerate()
            .map(|(i, (m, smp))| Series {
                name: format!("{m} {smp}"),
                points: guided.iter().filter(|r| &r.model == m && &r.sampler == smp).map(|r| (r.guidance.unwrap_or(1.0), r.fd_min)).collect(),
                color: COLORS[i % COLORS.len()],
            })
            .collect();
        crate::fsx::write(&out.join("guidance.svg"), line_plot_svg(&format!("FD against guidance strength on {}", ev.dataset), "guidance w (1 = unguided)", "FD (min over seeds)", &series, true)?)?;
    }
    if let Some(t) = ev.toy.as_ref().filter(|t| !t.transport.is_empty()) {
        crate::fsx::write(&out.join("transport.svg"), toy_measures::transport_svg(t, &ev.dataset)?)?;
    }
    let metrics = json!({"dataset": ev.dataset, "encoder": ev.encoder, "baselines": ev.baselines, "rows": ev.rows, "toy": ev.toy});
    crate::fsx::write(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics).context("metrics")? + "\n")?;
    Ok(())
}
