//! Trained models as artifacts, and weights in and out of safetensors.
//!
//! A `train-ct` (or `distill`) artifact holds `model.json` ([`ModelSpec`]: everything needed to
//! rebuild the network and sample from it), `ema.safetensors` and `net.safetensors` (the EMA and
//! online weights, with EDM's tensor names such as `model.enc.32x32_conv.weight`), and for VCT
//! `encoder_ema.safetensors` / `encoder.safetensors`. Each safetensors file carries the spec as
//! its only metadata entry (`ctpipe`), so Python's `safetensors.safe_open` reads both.

use crate::data::schema::SampleKind;
use crate::error::{bad_input, TagContext};
use crate::methods::spec::KernelSpec;
use crate::nn::params::ParamStore;
use crate::nn::{Network, NetworkConfig};
use crate::precond::Precond;
use crate::store::Artifact;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const MODEL_FORMAT: u32 = 1;

/// What a model is and how to sample from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub format: u32,
    /// edm, ict, ect, sct, gc, vct, cd.
    pub method: String,
    /// edm, ict or ect: the schedule family it was trained on.
    pub schedule: String,
    pub network: NetworkConfig,
    /// VCT's encoder.
    pub encoder: Option<NetworkConfig>,
    /// Preconditioning; sampling uses its evaluation phase.
    pub precond: Precond,
    pub kernel: KernelSpec,
    pub sigma_max: f64,
    /// Default intermediate noise level for 2-step sampling.
    pub sigma_mid: f64,
    /// The data the model generates.
    pub data: SampleKind,
    /// The dataset's name, for reports.
    pub dataset: String,
    pub parameters: usize,
    pub steps: u64,
}

impl ModelSpec {
    /// Whether this is a denoiser sampled with an ODE solver (EDM) rather than a consistency model.
    pub fn is_denoiser(&self) -> bool {
        self.method == "edm"
    }

    /// Shape of one sample as the network sees it.
    pub fn sample_shape(&self) -> Vec<usize> {
        Self::sample_shape_of(self.data)
    }

    /// Shape of one sample of `kind` as a network sees it: (C, H, W) or (dim).
    pub fn sample_shape_of(kind: SampleKind) -> Vec<usize> {
        match kind {
            SampleKind::Images { height, width, channels } => vec![channels as usize, height as usize, width as usize],
            SampleKind::Points { dim } => vec![dim as usize],
        }
    }
}

/// A network with its parameters.
pub struct Weights {
    pub params: ParamStore,
    pub net: Network,
}

impl Weights {
    /// Fresh weights, initialised from `seed`.
    pub fn init(cfg: &NetworkConfig, seed: u64, device: &Device) -> Result<Weights> {
        let params = ParamStore::seeded(seed);
        let net = Network::new(params.var_builder(DType::F32, device), cfg)?;
        Ok(Weights { params, net })
    }

    /// Fresh weights whose initial values come from streams salted with `namespace`, so two
    /// networks of one run (VCT's encoder beside the main network) do not share them.
    pub fn init_in(cfg: &NetworkConfig, seed: u64, namespace: &str, device: &Device) -> Result<Weights> {
        let params = ParamStore::seeded_in(seed, namespace);
        let net = Network::new(params.var_builder(DType::F32, device), cfg)?;
        Ok(Weights { params, net })
    }

    /// Weights from named tensors, which must match the architecture exactly. EDM's constant
    /// buffers may be among them (our weight files carry them); each must be one the network
    /// has, holding the filter it uses.
    pub fn from_tensors(cfg: &NetworkConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Weights> {
        Weights::load(cfg, tensors, false, device)
    }

    /// Like [`Weights::from_tensors`] for a network that is only evaluated: no graph is
    /// recorded through it (see [`ParamStore::frozen`]); its values cannot be trained.
    pub fn frozen(cfg: &NetworkConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Weights> {
        Weights::load(cfg, tensors, true, device)
    }

    fn load(cfg: &NetworkConfig, tensors: HashMap<String, Tensor>, frozen: bool, device: &Device) -> Result<Weights> {
        let (buffers, tensors): (HashMap<String, Tensor>, HashMap<String, Tensor>) = tensors.into_iter().partition(|(n, _)| n.ends_with(".resample_filter"));
        let params = if frozen { ParamStore::frozen(tensors) } else { ParamStore::from_tensors(tensors) };
        let net = Network::new(params.var_builder(DType::F32, device), cfg)?;
        params.check_all_used()?;
        let expected: HashMap<String, Tensor> = net.edm_buffers(device)?.into_iter().collect();
        for (name, t) in buffers {
            let Some(want) = expected.get(&name) else {
                return Err(bad_input(format!("tensor `{name}`: this network has no such buffer (it does not resample there)")));
            };
            let same = t.dims() == want.dims() && t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? == want.flatten_all()?.to_vec1::<f32>()?;
            if !same {
                return Err(bad_input(format!("tensor `{name}`: expected EDM's [1, 1] resampling filter (1, 1, 2, 2) of 0.25, as DDPM++ uses; ctpipe's U-Net implements no other")));
            }
        }
        Ok(Weights { params, net })
    }

    /// An independent copy (the EMA starts as one).
    pub fn duplicate(&self, cfg: &NetworkConfig, device: &Device) -> Result<Weights> {
        let tensors = self.params.tensors().into_iter().map(|(k, t)| Ok((k, t.copy()?))).collect::<Result<HashMap<_, _>>>()?;
        Weights::from_tensors(cfg, tensors, device)
    }
}

/// Write weights to safetensors with the spec as metadata, EDM's constant buffers included (so
/// that `EDMPrecond.load_state_dict(strict=True)` takes the file). Tensor order is fixed
/// (sorted) and the metadata has one key, so the same weights give the same bytes.
pub fn save_weights(path: &Path, weights: &Weights, spec: &ModelSpec) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = weights.params.tensors().into_iter().collect();
    tensors.extend(weights.net.edm_buffers(&Device::Cpu)?);
    save_tensors(path, &tensors, Some(spec))
}

/// Write named tensors to safetensors (sorted by name; optional spec metadata).
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)], spec: Option<&ModelSpec>) -> Result<()> {
    let mut items: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = match spec {
        Some(s) => Some(HashMap::from([("ctpipe".to_string(), serde_json::to_string(s)?)])),
        None => None,
    };
    safetensors::serialize_to_file(items.iter().map(|(k, t)| (k.as_str(), t)), meta, path)
        .with_context(|| format!("{}: cannot write safetensors", path.display()))
}

/// Read every tensor of a safetensors file; weights holding NaN or inf are refused (a model
/// trained by another tool, or a corrupted file, must not be sampled or trained from).
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, device).bad_input_ctx(|| format!("{}: not a readable safetensors file", path.display()))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if !crate::nn::ops::all_finite(&tensors[name])? {
            return Err(bad_input(format!("{}: tensor `{name}` holds NaN or inf", path.display())));
        }
    }
    Ok(tensors)
}

/// A trained model opened for sampling.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub net: Weights,
    pub encoder: Option<Weights>,
}

/// Which weights of a model artifact to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Ema,
    Online,
}

/// Read a model artifact's spec.
pub fn read_spec(art: &Artifact) -> Result<ModelSpec> {
    let path = art.file("model.json")?;
    let text = std::fs::read_to_string(&path).bad_input_ctx(|| format!("{}: cannot read", path.display()))?;
    let spec: ModelSpec = serde_json::from_str(&text).bad_input_ctx(|| format!("{}: not a model spec", path.display()))?;
    if spec.format != MODEL_FORMAT {
        return Err(bad_input(format!("{}: model format {} (this ctpipe reads {MODEL_FORMAT})", path.display(), spec.format)));
    }
    Ok(spec)
}

/// Open a model artifact (EMA or online weights).
pub fn load_model(art: &Artifact, which: Which, device: &Device) -> Result<LoadedModel> {
    let spec = read_spec(art)?;
    let (net_file, enc_file) = match which {
        Which::Ema => ("ema.safetensors", "encoder_ema.safetensors"),
        Which::Online => ("net.safetensors", "encoder.safetensors"),
    };
    let net = Weights::frozen(&spec.network, load_tensors(&art.file(net_file)?, device)?, device)
        .bad_input_ctx(|| format!("{}: weights do not fit model.json", art.dir.join(net_file).display()))?;
    let encoder = match &spec.encoder {
        Some(cfg) => Some(
            Weights::frozen(cfg, load_tensors(&art.file(enc_file)?, device)?, device)
                .bad_input_ctx(|| format!("{}: weights do not fit model.json", art.dir.join(enc_file).display()))?,
        ),
        None => None,
    };
    Ok(LoadedModel { spec, net, encoder })
}
