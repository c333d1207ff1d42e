//! The in-domain encoder: a small CNN trained on the dataset's labels, whose penultimate layer
//! gives the features. For 28×28 grayscale data (Fashion-MNIST) Inception-v3 — trained on
//! 299×299 colour photographs — is a poor judge; the field's answer is an in-domain classifier,
//! and FD on its features ranks samples the same way while being cheap on a CPU.
//!
//! conv3×3(c→32) → ReLU → maxpool2 → conv3×3(32→64) → ReLU → maxpool2 → linear(→128) → ReLU
//! (features) → linear(→classes). Trained with Adam (learning rate decayed linearly to 0) on
//! cross-entropy, seeded data order and init.

use crate::data::schema::{SampleKind, Samples, Split};
use crate::error::usage;
use crate::nn::conv::conv2d_same;
use crate::nn::pool::relu_max_pool2;
use crate::nn::layers::Linear;
use crate::nn::params::ParamStore;
use crate::progress::Progress;
use crate::train::data::TrainData;
use crate::train::optim::{Kind, OptimConfig, Optimizer};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The classifier's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub input: SampleKind,
    pub classes: usize,
    pub channels: [usize; 2],
    pub features: usize,
}

impl ClassifierConfig {
    pub fn new(input: SampleKind, classes: usize, channels: [usize; 2]) -> Result<ClassifierConfig> {
        match input {
            SampleKind::Images { height, width, .. } if height >= 4 && width >= 4 => {}
            _ => return Err(usage("encoder `classifier`: needs an image dataset of at least 4×4 pixels (use `identity` for points)")),
        }
        if classes < 2 {
            return Err(usage(format!("encoder `classifier`: needs labels of at least two classes, the dataset has {classes}")));
        }
        Ok(ClassifierConfig { input, classes, channels, features: 128 })
    }

    fn dims(&self) -> (usize, usize, usize) {
        match self.input {
            SampleKind::Images { height, width, channels } => (channels as usize, height as usize, width as usize),
            SampleKind::Points { .. } => unreachable!("checked in new"),
        }
    }
}

/// The CNN.
pub struct Classifier {
    cfg: ClassifierConfig,
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    fc1: Linear,
    head: Linear,
    params: ParamStore,
}

impl Classifier {
    fn build(cfg: &ClassifierConfig, params: ParamStore, device: &Device) -> Result<Classifier> {
        let vb = params.var_builder(DType::F32, device);
        let (c, h, w) = cfg.dims();
        let [c1, c2] = cfg.channels;
        let conv = |vb: VarBuilder, cin: usize, cout: usize| -> Result<(Tensor, Tensor)> {
            // PyTorch's default conv init: U(±1/√fan_in) for weight and bias.
            let bound = 1.0 / ((cin * 9) as f64).sqrt();
            let init = candle_nn::Init::Uniform { lo: -bound, up: bound };
            Ok((vb.get_with_hints((cout, cin, 3, 3), "weight", init)?, vb.get_with_hints(cout, "bias", init)?))
        };
        let conv1 = conv(vb.pp("conv1"), c, c1)?;
        let conv2 = conv(vb.pp("conv2"), c1, c2)?;
        let flat = c2 * (h / 4) * (w / 4);
        let fc1 = Linear::torch_default(vb.pp("fc1"), flat, cfg.features)?;
        let head = Linear::torch_default(vb.pp("head"), cfg.features, cfg.classes)?;
        Ok(Classifier { cfg: cfg.clone(), conv1, conv2, fc1, head, params })
    }

    /// A freshly initialised classifier.
    pub fn init(cfg: &ClassifierConfig, seed: u64, device: &Device) -> Result<Classifier> {
        Classifier::build(cfg, ParamStore::seeded_in(seed, "classifier"), device)
    }

    pub fn from_tensors(cfg: &ClassifierConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Classifier> {
        let params = ParamStore::from_tensors(tensors);
        let c = Classifier::build(cfg, params.clone(), device)?;
        params.check_all_used()?;
        Ok(c)
    }

    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.params.tensors().into_iter().collect()
    }

    /// Penultimate features (after ReLU), N × 128.
    pub fn penultimate(&self, x: &Tensor) -> Result<Tensor> {
        // ReLU then max_pool2d(2), floor as PyTorch's (an odd last row/column dropped).
        let block = |x: &Tensor, (w, b): &(Tensor, Tensor)| -> Result<Tensor> { Ok(relu_max_pool2(&conv2d_same(x, w, b)?)?) };
        let y = block(&block(x, &self.conv1)?, &self.conv2)?;
        Ok(self.fc1.forward(&y.flatten_from(1)?)?.relu()?)
    }

    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.penultimate(x)?)?)
    }
}

impl super::Encoder for Classifier {
    fn dim(&self) -> usize {
        self.cfg.features
    }
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.penultimate(x)
    }
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub epochs: u64,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

/// Train on `data` (seeded order, no augmentation); returns the classifier and the mean loss of
/// each epoch.
pub fn train(cfg: &ClassifierConfig, data: &TrainData, s: &TrainSettings, device: &Device) -> Result<(Classifier, Vec<f64>)> {
    let model = Classifier::init(cfg, s.seed, device)?;
    let vars = model.params.vars();
    let mut opt = Optimizer::new(OptimConfig { kind: Kind::Adam, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, &vars)?;
    let steps_per_epoch = (data.rows() / s.batch).max(1) as u64;
    let total = steps_per_epoch * s.epochs;
    let mut progress = Progress::new("precompute-encoder: training the classifier", total);
    let mut epoch_loss = Vec::new();
    let mut sum = 0.0;
    for step in 0..total {
        let rows = data.batch_rows(s.seed, step, s.batch);
        let x = data.rows_tensor(&rows, None, device)?;
        let y = Tensor::new(data.labels_of(&rows), device)?;
        let loss = candle_nn::loss::cross_entropy(&model.logits(&x)?, &y)?;
        let grads = loss.backward()?;
        let grads: HashMap<String, Tensor> = vars.iter().filter_map(|(n, v)| grads.get(v).map(|g| (n.clone(), g.clone()))).collect();
        // Linear decay to 0: the last steps average out minibatch noise (≈ +1 point of accuracy).
        opt.step(&vars, &grads, s.lr * (1.0 - step as f64 / total as f64), None)?;
        sum += loss.to_scalar::<f32>()? as f64;
        if step % 20 == 0 {
            progress.set_message(format!("epoch {} loss {:.4}", step / steps_per_epoch + 1, sum / ((step % steps_per_epoch) + 1) as f64));
        }
        progress.set_position(step + 1);
        if (step + 1) % steps_per_epoch == 0 {
            epoch_loss.push(sum / steps_per_epoch as f64);
            sum = 0.0;
        }
    }
    progress.finish();
    Ok((model, epoch_loss))
}

/// Fraction of a split classified correctly.
pub fn accuracy(model: &Classifier, kind: SampleKind, split: &Split, device: &Device) -> Result<f64> {
    let Samples::Images(px) = &split.samples else { anyhow::bail!("classifier accuracy needs images") };
    let data = TrainData::new(kind, Split { samples: Samples::Images(px.clone()), labels: split.labels.clone() }, None)?;
    let n = data.rows();
    let mut correct = 0usize;
    for first in (0..n).step_by(500) {
        let rows: Vec<usize> = (first..(first + 500).min(n)).collect();
        let pred: Vec<u32> = model.logits(&data.rows_tensor(&rows, None, device)?)?.argmax(1)?.to_vec1()?;
        correct += pred.iter().zip(data.labels_of(&rows)).filter(|(p, l)| **p == *l).count();
    }
    Ok(correct as f64 / n.max(1) as f64)
}
