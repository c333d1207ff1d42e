//! EDM's SongUNet in its DDPM++ configuration (positional noise embedding, standard encoder and
//! decoder, `[1, 1]` resampling filter), with EDM's module names (`enc.32x32_block0.conv0`, …).
//!
//! Structure, from NVlabs/edm `training/networks.py`: a mapping network turns the noise label
//! into an embedding; the encoder has, per resolution level, a 3×3 input conv (level 0) or a
//! downsampling block, then `num_blocks` blocks (attention at `attn_resolutions`); the decoder
//! mirrors it with `num_blocks + 1` blocks per level fed by the encoder's skips, two blocks at
//! the lowest resolution (the first always with attention), and a GroupNorm + 3×3 conv output.

use super::dropout::Dropout;
use super::elementwise::silu;
use super::layers::{positional_embedding, BlockSpec, Conv2d, GroupNorm, Linear, Resample, UNetBlock};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The U-Net's shape. Field names follow EDM's SongUNet arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    pub img_resolution: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub channel_mult_emb: usize,
    pub num_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    pub dropout: f64,
    /// Classes of a class-conditional model (EDM's `label_dim`; 0: unconditional).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub label_dim: usize,
}

enum EncItem {
    Conv(Conv2d),
    Block(UNetBlock),
}

enum DecItem {
    Block(UNetBlock),
    OutNorm(GroupNorm),
    OutConv(Conv2d),
}

/// The names of the buffers a resampling block's two convolutions register.
fn resample_buffers(block: &VarBuilder) -> [String; 2] {
    let p = block.prefix();
    [format!("{p}.conv0.resample_filter"), format!("{p}.skip.resample_filter")]
}

pub struct SongUnet {
    cfg: UnetConfig,
    map_label: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    enc: Vec<EncItem>,
    dec: Vec<DecItem>,
    /// Full names of EDM's `resample_filter` buffers (see [`SongUnet::edm_buffers`]).
    buffers: Vec<String>,
}

impl SongUnet {
    /// Build under `vb` (EDM's precond wraps the U-Net as `model`; callers pass `vb.pp("model")`).
    pub fn new(vb: VarBuilder, cfg: &UnetConfig) -> Result<SongUnet> {
        let mc = cfg.model_channels;
        let emb = mc * cfg.channel_mult_emb;
        let noise = mc;
        // EDM's map_label: Linear(label_dim, noise_channels), xavier-uniform (networks.py:270).
        let map_label = if cfg.label_dim > 0 { Some(Linear::new(vb.pp("map_label"), cfg.label_dim, noise, true, 1.0)?) } else { None };
        let map_layer0 = Linear::new(vb.pp("map_layer0"), noise, emb, true, 1.0)?;
        let map_layer1 = Linear::new(vb.pp("map_layer1"), emb, emb, true, 1.0)?;
        let block = |vb: VarBuilder, cin, cout, resample, attention| {
            UNetBlock::new(vb, &BlockSpec { cin, cout, emb, resample, attention, dropout: cfg.dropout })
        };

        let mut buffers = Vec::new();
        let venc = vb.pp("enc");
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        let mut cout = cfg.in_channels;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let res = cfg.img_resolution >> level;
            if level == 0 {
                let cin = cout;
                cout = mc;
                enc.push(EncItem::Conv(Conv2d::new(venc.pp(format!("{res}x{res}_conv")), cin, cout, 3, Resample::None, 1.0)?));
            } else {
                let vb = venc.pp(format!("{res}x{res}_down"));
                buffers.extend(resample_buffers(&vb));
                enc.push(EncItem::Block(block(vb, cout, cout, Resample::Down, false)?));
            }
            skips.push(cout);
            for idx in 0..cfg.num_blocks {
                let cin = cout;
                cout = mc * mult;
                let attn = cfg.attn_resolutions.contains(&res);
                enc.push(EncItem::Block(block(venc.pp(format!("{res}x{res}_block{idx}")), cin, cout, Resample::None, attn)?));
                skips.push(cout);
            }
        }

        let vdec = vb.pp("dec");
        let mut dec = Vec::new();
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let res = cfg.img_resolution >> level;
            if level == levels - 1 {
                dec.push(DecItem::Block(block(vdec.pp(format!("{res}x{res}_in0")), cout, cout, Resample::None, true)?));
                dec.push(DecItem::Block(block(vdec.pp(format!("{res}x{res}_in1")), cout, cout, Resample::None, false)?));
            } else {
                let vb = vdec.pp(format!("{res}x{res}_up"));
                buffers.extend(resample_buffers(&vb));
                dec.push(DecItem::Block(block(vb, cout, cout, Resample::Up, false)?));
            }
            for idx in 0..=cfg.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder output");
                cout = mc * mult;
                let attn = idx == cfg.num_blocks && cfg.attn_resolutions.contains(&res);
                dec.push(DecItem::Block(block(vdec.pp(format!("{res}x{res}_block{idx}")), cin, cout, Resample::None, attn)?));
            }
            if level == 0 {
                dec.push(DecItem::OutNorm(GroupNorm::new(vdec.pp(format!("{res}x{res}_aux_norm")), cout, 1e-6)?));
                dec.push(DecItem::OutConv(Conv2d::new(vdec.pp(format!("{res}x{res}_aux_conv")), cout, cfg.out_channels, 3, Resample::None, 1e-5)?));
            }
        }
        Ok(SongUnet { cfg: cfg.clone(), map_label, map_layer0, map_layer1, enc, dec, buffers })
    }

    /// EDM's constant buffers, by full name: every resampling `Conv2d` (a down or up block's
    /// `conv0` and `skip`) registers its filter, the outer product of [1, 1] with itself over
    /// its sum squared, shape (1, 1, 2, 2) (training/networks.py:64-66). They are not learned,
    /// but `load_state_dict(strict=True)` wants them, so weight files carry them.
    pub fn edm_buffers(&self, device: &candle_core::Device) -> Result<Vec<(String, Tensor)>> {
        let f = [1f32, 1.0];
        let norm = f.iter().sum::<f32>().powi(2);
        let outer: Vec<f32> = f.iter().flat_map(|a| f.iter().map(move |b| a * b / norm)).collect();
        let t = Tensor::from_vec(outer, (1, 1, 2, 2), device)?;
        Ok(self.buffers.iter().map(|n| (n.clone(), t.clone())).collect())
    }

    pub fn config(&self) -> &UnetConfig {
        &self.cfg
    }

    /// F(x, c_noise, labels): `x` is (N, C, H, W), `c_noise` is (N,), `labels` one-hot
    /// (N, label_dim) for a class-conditional network (none: all zeros, as EDM's precond
    /// passes when it gets no labels).
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor, labels: Option<&Tensor>, drop: &mut Dropout) -> Result<Tensor> {
        let emb = positional_embedding(c_noise, self.cfg.model_channels)?.to_dtype(x.dtype())?;
        let emb = super::add_label_embedding(emb, self.map_label.as_ref(), labels)?;
        let emb = silu(&self.map_layer0.forward(&emb)?)?;
        let emb = silu(&self.map_layer1.forward(&emb)?)?;

        let mut skips = Vec::with_capacity(self.enc.len());
        let mut x = x.clone();
        for item in &self.enc {
            x = match item {
                EncItem::Conv(c) => c.forward(&x)?,
                EncItem::Block(b) => b.forward(&x, &emb, drop)?,
            };
            skips.push(x.clone());
        }
        let mut out = None;
        for item in &self.dec {
            match item {
                DecItem::Block(b) => {
                    if x.dim(1)? != b.in_channels {
                        let s = skips.pop().expect("a skip for every widening block");
                        x = Tensor::cat(&[&x, &s], 1)?;
                    }
                    x = b.forward(&x, &emb, drop)?;
                }
                DecItem::OutNorm(n) => out = Some(n.forward_silu(&x)?),
                DecItem::OutConv(c) => out = Some(c.forward(out.as_ref().expect("norm before conv"))?),
            }
        }
        Ok(out.expect("level 0 ends with the output conv"))
    }
}
