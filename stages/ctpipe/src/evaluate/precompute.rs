//! `precompute-encoder`'s work: pick (and for `classifier`, train) a feature encoder for a
//! dataset, and store the reference statistics of its splits.
//!
//! Besides the statistics the artifact records two baselines that frame every FD it will be
//! used for: the test split against the reference split (what a perfect generator would score
//! with this many samples) and pure noise against it (what a useless one scores).

use crate::data::schema::{SampleKind, Split};
use crate::error::usage;
use crate::features::classifier::{self, ClassifierConfig, TrainSettings};
use crate::features::weights::{WeightsSource, INCEPTION};
use crate::features::{self, Encoder, EncoderSpec};
use crate::metrics::frechet::frechet_distance;
use crate::metrics::stats::FeatureStats;
use crate::store::Artifact;
use crate::train::data::TrainData;
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

crate::config_struct! {
    /// Settings of `precompute-encoder`.
    pub struct PrecomputeConfig {
        /// Encoder: auto (identity for points, classifier for images), identity, classifier,
        /// or inception (pytorch-fid's FID Inception-v3; needs its weights, see docs/fid.md).
        pub encoder: String = "auto".into(),
        /// Split whose statistics are the reference: train or test.
        pub split: String = "train".into(),
        /// Use the first N rows of each split for statistics (default: all).
        #[range = "[2, inf)"]
        pub stats_limit: Option<u64> = None,
        /// Samples of pure noise for the noise baseline.
        #[range = "[2, 1e8]"]
        pub noise_n: u64 = 2000,
        /// Images per feature batch.
        #[range = "[1, 65536]"]
        pub feature_batch: u64 = 250,
        /// classifier: channels of its two convolutions.
        #[range = "[1, 4096]"]
        pub channels: Vec<u64> = vec![32, 64],
        /// classifier: training epochs over the train split.
        #[range = "[1, 1e4]"]
        pub epochs: u64 = 3,
        /// classifier: batch size.
        #[range = "[1, 65536]"]
        pub batch: u64 = 128,
        /// classifier: Adam learning rate.
        #[range = "(0, inf)"]
        pub lr: f64 = 1e-3,
        /// classifier: train on the first N rows only (default: all).
        #[range = "[1, inf)"]
        pub limit: Option<u64> = None,
        /// Seed of the classifier's init and data order, and of the noise baseline.
        #[range = "[0, inf)"]
        pub seed: u64 = 0,
        /// inception: local safetensors file of pytorch-fid's weights.
        pub inception_weights: Option<String> = None,
        /// inception: Hub model repo holding the weights (instead of a local file).
        pub inception_repo: Option<String> = None,
        /// inception: file in that repo.
        pub inception_file: Option<String> = None,
        /// inception: revision of that repo.
        pub inception_revision: String = "main".into(),
        /// inception: expected sha256 of the weights file.
        pub inception_sha256: String = "".into(),
        /// Also the reference split's statistics per class (`stats-class-<c>.safetensors`), for
        /// the per-class FD of class-conditional models (one more pass over the split).
        pub per_class: bool = false,
    }
}

impl PrecomputeConfig {
    pub fn weights_source(&self) -> WeightsSource {
        WeightsSource {
            path: self.inception_weights.as_ref().map(PathBuf::from),
            repo: self.inception_repo.clone(),
            file: self.inception_file.clone(),
            revision: self.inception_revision.clone(),
            sha256: self.inception_sha256.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self.encoder.as_str() {
            "auto" | "identity" | "classifier" => {}
            "inception" => self.weights_source().check(&INCEPTION)?,
            o => return Err(usage(format!("field `encoder`: `{o}` (expected auto, identity, classifier or inception)"))),
        }
        if !matches!(self.split.as_str(), "train" | "test") {
            return Err(usage(format!("field `split`: `{}` (expected train or test)", self.split)));
        }
        if self.channels.len() != 2 {
            return Err(usage(format!("field `channels`: expected two channel counts, got {:?}", self.channels)));
        }
        Ok(())
    }
}

/// The samples of a split as a tensor in the models' layout and range ([−1, 1], N×C×H×W; N×D).
pub fn split_tensor(kind: SampleKind, split: &Split, limit: Option<u64>, device: &Device) -> Result<Tensor> {
    let data = TrainData::new(kind, split.clone(), limit)?;
    let rows: Vec<usize> = (0..data.rows()).collect();
    data.rows_tensor(&rows, None, device)
}

/// Pure noise shaped like the data: N(0, 1) clamped to the data range for images (then
/// quantized like any sample), N(0, 1) for points. `offset` keys a batch of a longer draw.
pub(super) fn noise(kind: SampleKind, n: usize, seed: u64, offset: u64, device: &Device) -> Result<Tensor> {
    let mut shape = vec![n];
    match kind {
        SampleKind::Images { height, width, channels } => shape.extend([channels as usize, height as usize, width as usize]),
        SampleKind::Points { dim } => shape.push(dim as usize),
    }
    let mut rng = crate::rng::stream(seed, "noise-baseline", offset);
    Ok(crate::rng::normal(&mut rng, shape, candle_core::DType::F32, device)?)
}

/// Build the encoder (training the classifier if asked) and write `encoder.json` (and weights).
fn make_encoder(cfg: &PrecomputeConfig, kind: SampleKind, train: &Split, test: &Split, classes: usize, out: &Path, device: &Device) -> Result<(EncoderSpec, Box<dyn Encoder>)> {
    let name = match (cfg.encoder.as_str(), kind) {
        ("auto", SampleKind::Points { .. }) => "identity",
        ("auto", SampleKind::Images { .. }) => "classifier",
        (n, _) => n,
    };
    let (spec, enc): (EncoderSpec, Box<dyn Encoder>) = match name {
        "identity" => {
            let SampleKind::Points { dim } = kind else { return Err(usage("encoder `identity` is for point data; use classifier or inception for images")) };
            (EncoderSpec::Identity { dim: dim as usize }, Box::new(features::Identity(dim as usize)))
        }
        "classifier" => {
            let ccfg = ClassifierConfig::new(kind, classes, [cfg.channels[0] as usize, cfg.channels[1] as usize])?;
            let train_data = TrainData::new(kind, train.clone(), cfg.limit)?;
            let settings = TrainSettings { epochs: cfg.epochs, batch: cfg.batch as usize, lr: cfg.lr, seed: cfg.seed };
            let (model, losses) = classifier::train(&ccfg, &train_data, &settings, device)?;
            let acc = classifier::accuracy(&model, kind, test, device)?;
            eprintln!("precompute-encoder: classifier test accuracy {:.2} % (epoch losses {losses:.3?})", 100.0 * acc);
            for (name, t) in model.tensors() {
                if !crate::nn::ops::all_finite(&t)? {
                    return Err(crate::error::diverged(format!("precompute-encoder: the classifier's `{name}` holds NaN or inf after training (lower lr)")));
                }
            }
            crate::model::save_tensors(&out.join("encoder.safetensors"), &model.tensors(), None)?;
            (EncoderSpec::Classifier { config: ccfg, test_accuracy: acc }, Box::new(model))
        }
        "inception" => {
            let src = cfg.weights_source();
            let enc = features::inception::FidInception::load(&src.resolve(&INCEPTION)?, device)?;
            (EncoderSpec::Inception { weights: src }, Box::new(enc))
        }
        o => return Err(usage(format!("field `encoder`: `{o}`"))),
    };
    crate::fsx::write(&out.join("encoder.json"), serde_json::to_string_pretty(&spec)? + "\n")?;
    Ok((spec, enc))
}

/// Reference statistics for a dataset artifact.
pub fn precompute(cfg: &PrecomputeConfig, data: &Artifact, out: &Path, device: &Device) -> Result<Value> {
    let (info, train) = crate::data::read_dataset_split(&data.dir, "train")?;
    let (_, test) = crate::data::read_dataset_split(&data.dir, "test")?;
    let (spec, enc) = make_encoder(cfg, info.kind, &train, &test, info.class_names.len(), out, device)?;
    let batch = cfg.feature_batch as usize;
    let mut stats = Vec::new();
    for (split, s) in [("train", &train), ("test", &test)] {
        let x = split_tensor(info.kind, s, cfg.stats_limit, device)?;
        let st = features::statistics_of(&*enc, &x, batch)?;
        st.save(&out.join(format!("stats-{split}.safetensors")), Some(&format!("{} features of {} {split}", spec.name(), info.name)))?;
        stats.push((split, st));
    }
    let (reference, other) = if cfg.split == "train" { (&stats[0].1, &stats[1].1) } else { (&stats[1].1, &stats[0].1) };
    let other_name = if cfg.split == "train" { "test" } else { "train" };
    reference.save(&out.join("stats.safetensors"), Some(&format!("reference: {} features of {} {}", spec.name(), info.name, cfg.split)))?;
    let mut class_counts = Vec::new();
    if cfg.per_class {
        let split = if cfg.split == "train" { &train } else { &test };
        let x = split_tensor(info.kind, split, cfg.stats_limit, device)?;
        let labels = &split.labels[..x.dim(0)?];
        for (c, name) in info.class_names.iter().enumerate() {
            let rows: Vec<u32> = labels.iter().enumerate().filter(|(_, l)| **l as usize == c).map(|(i, _)| i as u32).collect();
            if rows.len() < 2 {
                return Err(crate::error::bad_input(format!("field `per_class`: class {c} ({name}) of {} has {} rows in the {} split; per-class statistics need 2", info.name, rows.len(), cfg.split)));
            }
            let xc = x.index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
            let st = features::statistics_of(&*enc, &xc, batch)?;
            st.save(&out.join(format!("stats-class-{c}.safetensors")), Some(&format!("{} features of {} {}, class {c} ({name})", spec.name(), info.name, cfg.split)))?;
            class_counts.push(rows.len());
        }
    }
    let noise_stats: FeatureStats = features::statistics_of(&*enc, &noise(info.kind, cfg.noise_n as usize, cfg.seed, 0, device)?, batch)?;
    let fd_data = frechet_distance(other, reference)?;
    let fd_noise = frechet_distance(&noise_stats, reference)?;
    eprintln!(
        "precompute-encoder: {} on {}: FD({other_name} split vs {} statistics) = {fd_data:.4}; FD(pure noise vs {}) = {fd_noise:.4}",
        spec.name(),
        info.name,
        cfg.split,
        cfg.split
    );
    let accuracy = match &spec {
        EncoderSpec::Classifier { test_accuracy, .. } => json!(test_accuracy),
        _ => Value::Null,
    };
    Ok(json!({
        "encoder": spec.name(),
        "dim": enc.dim(),
        "dataset": info.name,
        "reference_split": cfg.split,
        "reference_count": reference.count,
        "test_accuracy": accuracy,
        "fd_data": fd_data,
        "fd_data_split": other_name,
        "fd_noise": fd_noise,
        "class_counts": class_counts,
    }))
}
