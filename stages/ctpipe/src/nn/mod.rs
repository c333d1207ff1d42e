//! Networks: EDM's DDPM++ U-Net for images, a small MLP for the 2-D toys, the presets that
//! size them, and the seeded parameter store they are built on. A network here is the raw
//! F(x, c_noise) of EDM; preconditioning (c_skip, c_out, c_in, c_noise) lives in `precond.rs`.

pub mod conv;
mod direct_conv;
pub mod dropout;
mod elementwise;
pub(crate) mod fused;
mod gemm;
mod im2col;
pub mod layers;
mod linear;
pub mod mlp;
#[cfg(test)]
mod op_checks;
pub mod ops;
pub mod params;
pub mod pool;
mod resample;
pub mod unet;

use crate::data::schema::SampleKind;
use crate::error::usage;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use dropout::Dropout;
use mlp::{Mlp, MlpConfig};
use serde::{Deserialize, Serialize};
use unet::{SongUnet, UnetConfig};

/// The elements a custom op's CPU kernel reads: those of `v` that layout `l` covers, which
/// must be contiguous. `op` and `what` name the op and the operand in the error.
pub(crate) fn contiguous_slice<'a, T>(v: &'a [T], l: &candle_core::Layout, op: &str, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

/// A vector of `len` elements written by `fill`, which gets them uninitialised: the outputs of
/// the element-wise and fused ops, which write every element, skip `vec![0; len]`'s zeroing
/// (about 3 % of the `tiny` U-Net's training step, in `memset`).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn written<T>(len: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `fill` wrote all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// A network's architecture and size, as stored in a model artifact's `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum NetworkConfig {
    Unet(UnetConfig),
    Mlp(MlpConfig),
}

impl NetworkConfig {
    /// The same architecture with another dropout probability (same parameters, so weights
    /// move between the two: a teacher trained with dropout, its student without).
    /// Classes of a class-conditional network (0: unconditional).
    pub fn label_dim(&self) -> usize {
        match self {
            NetworkConfig::Unet(u) => u.label_dim,
            NetworkConfig::Mlp(m) => m.label_dim,
        }
    }

    /// The same architecture conditioned on `classes` classes (0: unconditional).
    pub fn with_labels(&self, classes: usize) -> NetworkConfig {
        let mut c = self.clone();
        match &mut c {
            NetworkConfig::Unet(u) => u.label_dim = classes,
            NetworkConfig::Mlp(m) => m.label_dim = classes,
        }
        c
    }

    pub fn with_dropout(&self, p: f64) -> NetworkConfig {
        let mut c = self.clone();
        match &mut c {
            NetworkConfig::Unet(u) => u.dropout = p,
            NetworkConfig::Mlp(m) => m.dropout = p,
        }
        c
    }
}

/// A built network.
pub enum Network {
    Unet(SongUnet),
    Mlp(Mlp),
}

impl Network {
    /// Build under `vb.pp("model")`, EDM's name for the network inside its preconditioner.
    pub fn new(vb: VarBuilder, cfg: &NetworkConfig) -> Result<Network> {
        let vb = vb.pp("model");
        Ok(match cfg {
            NetworkConfig::Unet(c) => Network::Unet(SongUnet::new(vb, c)?),
            NetworkConfig::Mlp(c) => Network::Mlp(Mlp::new(vb, c)?),
        })
    }

    /// EDM's constant buffers by full name (the U-Net's resampling filters; none for MLPs),
    /// written beside the parameters so that EDM loads our files strictly.
    pub fn edm_buffers(&self, device: &candle_core::Device) -> Result<Vec<(String, Tensor)>> {
        match self {
            Network::Unet(n) => n.edm_buffers(device),
            Network::Mlp(_) => Ok(Vec::new()),
        }
    }

    /// Classes it is conditioned on (0: unconditional).
    pub fn label_dim(&self) -> usize {
        match self {
            Network::Unet(n) => n.config().label_dim,
            Network::Mlp(n) => n.config().label_dim,
        }
    }

    /// F(x, c_noise, labels): `labels` one-hot (N, classes) for a class-conditional network,
    /// ignored by an unconditional one.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor, labels: Option<&Tensor>, drop: &mut Dropout) -> Result<Tensor> {
        match self {
            Network::Unet(n) => n.forward(x, c_noise, labels, drop),
            Network::Mlp(n) => n.forward(x, c_noise, labels, drop),
        }
    }
}

pub(crate) fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// EDM's class conditioning (SongUNet.forward, networks.py:324-328): the noise embedding plus
/// map_label(one-hot · √label_dim); without labels a conditional network sees zeros (EDM's
/// precond, :498), i.e. the embedding of no class.
fn add_label_embedding(emb: Tensor, map_label: Option<&layers::Linear>, labels: Option<&Tensor>) -> Result<Tensor> {
    match (map_label, labels) {
        (Some(m), Some(l)) => {
            let scale = (l.dim(1)? as f64).sqrt();
            emb.add(&m.forward(&(l.to_dtype(emb.dtype())? * scale)?)?)
        }
        (Some(m), None) => {
            let zeros = Tensor::zeros((emb.dim(0)?, m.fan_in()), emb.dtype(), emb.device())?;
            emb.add(&m.forward(&zeros)?)
        }
        (None, _) => Ok(emb),
    }
}

/// One-hot rows (N, classes) for class labels, the conditioning a conditional network takes.
pub fn one_hot(labels: &[u32], classes: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        if (l as usize) < classes {
            v[i * classes + l as usize] = 1.0;
        }
    }
    Tensor::from_vec(v, (labels.len(), classes), device)
}

/// The names `network = "..."` accepts.
pub const PRESETS: &[(&str, &str)] = &[
    ("mlp-toy", "2-D toys: MLP, width 256 (264,450 parameters)"),
    ("mlp-small", "2-D toys on a CPU budget: the same MLP at width 64 (16,962 parameters)"),
    ("tiny", "CPU runs and tests: U-Net, 16 channels, [1, 2], 1 block (180,193 on 28×28×1)"),
    ("fmnist", "VCT's Fashion-MNIST U-Net: 64 channels, [2, 2, 2], 4 blocks (≈ 13.6 M)"),
    ("cifar-ddpmpp", "EDM's DDPM++ for CIFAR-10: 128 channels, [2, 2, 2], 4 blocks, attention at 16 (55,732,739)"),
    ("cifar-gc", "GC's CIFAR-10 U-Net: 128 channels, [1, 2, 2], 3 blocks (≈ 34.7 M)"),
];

/// Size a preset for data of this kind. `out_mult` = 2 for the VCT encoder (mean and scale).
/// `dropout` overrides the preset's.
pub fn preset(name: &str, kind: SampleKind, out_mult: usize, dropout: Option<f64>) -> anyhow::Result<NetworkConfig> {
    let unet = |mc: usize, mult: &[usize], blocks: usize, attn: &[usize], default_dropout: f64| -> anyhow::Result<NetworkConfig> {
        let SampleKind::Images { height, width, channels } = kind else {
            return Err(usage(format!("network `{name}` is a U-Net for images; the dataset holds points (use mlp-toy)")));
        };
        if height != width {
            return Err(usage(format!("network `{name}` needs square images, the dataset's are {height}×{width}")));
        }
        let levels = mult.len();
        if (height as usize) % (1 << (levels - 1)) != 0 {
            return Err(usage(format!("network `{name}` halves the resolution {} times; {height} is not divisible by {}", levels - 1, 1 << (levels - 1))));
        }
        Ok(NetworkConfig::Unet(UnetConfig {
            img_resolution: height as usize,
            in_channels: channels as usize,
            out_channels: channels as usize * out_mult,
            model_channels: mc,
            channel_mult: mult.to_vec(),
            channel_mult_emb: 4,
            num_blocks: blocks,
            attn_resolutions: attn.to_vec(),
            dropout: dropout.unwrap_or(default_dropout),
            label_dim: 0,
        }))
    };
    match name {
        "mlp-toy" | "mlp-small" => {
            let SampleKind::Points { dim } = kind else {
                return Err(usage(format!("network `{name}` is for 2-D points; the dataset holds images")));
            };
            let width = if name == "mlp-toy" { 256 } else { 64 };
            Ok(NetworkConfig::Mlp(MlpConfig { dim_in: dim as usize, dim_out: dim as usize * out_mult, width, dropout: dropout.unwrap_or(0.0), label_dim: 0 }))
        }
        "tiny" => unet(16, &[1, 2], 1, &[], 0.0),
        "fmnist" => unet(64, &[2, 2, 2], 4, &[16], 0.3),
        "cifar-ddpmpp" => unet(128, &[2, 2, 2], 4, &[16], 0.13),
        "cifar-gc" => unet(128, &[1, 2, 2], 3, &[], 0.0),
        _ => {
            let names = PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ");
            Err(usage(format!("unknown network `{name}` (presets: {names})")))
        }
    }
}

/// The VCT encoder for a main network: the same backbone at 32 channels with 1 ("small") or 2
/// ("big") blocks per level and twice the output channels; an MLP of the same width for toys.
pub fn vct_encoder(main: &NetworkConfig, size: &str) -> anyhow::Result<NetworkConfig> {
    let blocks = match size {
        "small" => 1,
        "big" => 2,
        _ => return Err(usage(format!("vct_encoder `{size}`: expected small or big"))),
    };
    Ok(match main {
        NetworkConfig::Unet(c) => NetworkConfig::Unet(UnetConfig {
            model_channels: 32,
            num_blocks: blocks,
            out_channels: 2 * c.in_channels,
            label_dim: 0,
            ..c.clone()
        }),
        NetworkConfig::Mlp(c) => NetworkConfig::Mlp(MlpConfig { dim_out: 2 * c.dim_in, label_dim: 0, ..c.clone() }),
    })
}

#[cfg(test)]
mod tests;
