//! Building blocks of EDM's networks (NVlabs/edm `training/networks.py`): Linear, Conv2d with
//! 2× resampling, GroupNorm, the positional noise embedding, and the U-Net block. Parameter
//! names and initialisation follow EDM, so weights move between ctpipe and EDM checkpoints.

use super::dropout::Dropout;
use super::elementwise::{add_per_plane, scale, scaled_sum};
use super::resample::{downsample2x, upsample2x};
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// EDM's `xavier_uniform` scaled by `scale` (EDM's `init_weight`).
pub fn xavier_uniform(fan_in: usize, fan_out: usize, scale: f64) -> Init {
    let b = scale * (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// Fully connected layer, `weight: [out, in]`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: VarBuilder, fan_in: usize, fan_out: usize, bias: bool, scale: f64) -> Result<Linear> {
        let weight = vb.get_with_hints((fan_out, fan_in), "weight", xavier_uniform(fan_in, fan_out, scale))?;
        let bias = if bias { Some(vb.get_with_hints(fan_out, "bias", Init::Const(0.0))?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// PyTorch's default `nn.Linear` initialisation: weight and bias uniform in ±1/√fan_in.
    /// Input features.
    pub fn fan_in(&self) -> usize {
        self.weight.dim(1).unwrap_or(0)
    }

    pub fn torch_default(vb: VarBuilder, fan_in: usize, fan_out: usize) -> Result<Linear> {
        let b = 1.0 / (fan_in as f64).sqrt();
        let weight = vb.get_with_hints((fan_out, fan_in), "weight", Init::Uniform { lo: -b, up: b })?;
        let bias = Some(vb.get_with_hints(fan_out, "bias", Init::Uniform { lo: -b, up: b })?);
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => super::linear::linear(x, &self.weight, b),
            None => x.matmul(&self.weight.t()?),
        }
    }
}

/// 2× resampling with EDM's `[1, 1]` filter: a 2×2 box average down, nearest-neighbour up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    None,
    Up,
    Down,
}

/// Convolution with optional 2× resampling before it (EDM's Conv2d, non-fused path).
/// `kernel = 0` gives a resampling-only layer without parameters.
pub struct Conv2d {
    /// Weight and bias; none for a resampling-only layer.
    params: Option<(Tensor, Tensor)>,
    resample: Resample,
}

impl Conv2d {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, kernel: usize, resample: Resample, scale: f64) -> Result<Conv2d> {
        let params = if kernel > 0 {
            let init = xavier_uniform(cin * kernel * kernel, cout * kernel * kernel, scale);
            let w = vb.get_with_hints((cout, cin, kernel, kernel), "weight", init)?;
            let b = vb.get_with_hints(cout, "bias", Init::Const(0.0))?;
            Some((w, b))
        } else {
            None
        };
        Ok(Conv2d { params, resample })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = match self.resample {
            Resample::None => x.clone(),
            Resample::Up => upsample2x(x)?,
            Resample::Down => downsample2x(x)?,
        };
        match &self.params {
            Some((w, b)) => super::conv::conv2d_same(&x, w, b),
            None => Ok(x),
        }
    }
}

/// Group normalisation with EDM's group rule: min(32, channels / 4) groups.
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(vb: VarBuilder, channels: usize, eps: f64) -> Result<GroupNorm> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(GroupNorm { weight, bias, groups: 32.min(channels / 4).max(1), eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let compose = || Self::compose(x, &self.weight, &self.bias, self.groups, self.eps);
        super::fused::group_norm_silu(x, &self.weight, &self.bias, self.groups, self.eps, false, compose)
    }

    /// SiLU(GroupNorm(x)), the U-Net's usual pair, in one pass where the fused op applies.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        let compose = || Self::compose(x, &self.weight, &self.bias, self.groups, self.eps)?.silu();
        super::fused::group_norm_silu(x, &self.weight, &self.bias, self.groups, self.eps, true, compose)
    }

    /// GroupNorm from candle's ops (other devices and dtypes; the fused op's reference).
    pub fn compose(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let g = x.reshape((n, groups, (c / groups) * h * w))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?.reshape((n, c, h, w))?;
        normed.broadcast_mul(&weight.reshape((1, c, 1, 1))?)?.broadcast_add(&bias.reshape((1, c, 1, 1))?)
    }
}

/// EDM's positional embedding (`endpoint = True`) of the noise label, in the order the U-Net
/// uses after its swap: `[sin(c·f_i), cos(c·f_i)]`, f_i = (1/10000)^(i / (C/2 − 1)).
pub fn positional_embedding(c_noise: &Tensor, channels: usize) -> Result<Tensor> {
    let half = channels / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (1.0f64 / 10_000.0).powf(i as f64 / (half.max(2) - 1) as f64) as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), c_noise.device())?.to_dtype(c_noise.dtype())?;
    let arg = c_noise.reshape((c_noise.elem_count(), 1))?.broadcast_mul(&freqs)?;
    Tensor::cat(&[arg.sin()?, arg.cos()?], 1)
}

/// Single-head self-attention over the spatial positions (EDM's UNetBlock attention).
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
}

/// EDM's UNetBlock in its DDPM++ configuration: no adaptive scale, one attention head,
/// skip scale √½, 1×1 resampling projection on the skip path.
pub struct UNetBlock {
    pub in_channels: usize,
    pub out_channels: usize,
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    attn: Option<Attention>,
    dropout: f64,
}

pub struct BlockSpec {
    pub cin: usize,
    pub cout: usize,
    pub emb: usize,
    pub resample: Resample,
    pub attention: bool,
    pub dropout: f64,
}

const BLOCK_EPS: f64 = 1e-6;
const INIT_ZERO: f64 = 1e-5;

impl UNetBlock {
    pub fn new(vb: VarBuilder, s: &BlockSpec) -> Result<UNetBlock> {
        let (cin, cout) = (s.cin, s.cout);
        let skip = if cout != cin || s.resample != Resample::None {
            Some(Conv2d::new(vb.pp("skip"), cin, cout, 1, s.resample, 1.0)?)
        } else {
            None
        };
        let attn = if s.attention {
            Some(Attention {
                norm: GroupNorm::new(vb.pp("norm2"), cout, BLOCK_EPS)?,
                qkv: Conv2d::new(vb.pp("qkv"), cout, 3 * cout, 1, Resample::None, 0.2f64.sqrt())?,
                proj: Conv2d::new(vb.pp("proj"), cout, cout, 1, Resample::None, INIT_ZERO)?,
            })
        } else {
            None
        };
        Ok(UNetBlock {
            in_channels: cin,
            out_channels: cout,
            norm0: GroupNorm::new(vb.pp("norm0"), cin, BLOCK_EPS)?,
            conv0: Conv2d::new(vb.pp("conv0"), cin, cout, 3, s.resample, 1.0)?,
            affine: Linear::new(vb.pp("affine"), s.emb, cout, true, 1.0)?,
            norm1: GroupNorm::new(vb.pp("norm1"), cout, BLOCK_EPS)?,
            conv1: Conv2d::new(vb.pp("conv1"), cout, cout, 3, Resample::None, INIT_ZERO)?,
            skip,
            attn,
            dropout: s.dropout,
        })
    }

    pub fn forward(&self, x: &Tensor, emb: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let skip_scale = 0.5f64.sqrt();
        let h = self.conv0.forward(&self.norm0.forward_silu(x)?)?;
        let params = self.affine.forward(emb)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = self.norm1.forward_silu(&add_per_plane(&h, &params)?)?;
        let h = self.conv1.forward(&drop.apply(&h, self.dropout)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let mut h = scaled_sum(&h, &skip, skip_scale)?;
        if let Some(a) = &self.attn {
            let (n, c, hh, ww) = h.dims4()?;
            // qkv channels are laid out [c][3] (EDM reshapes to (n, c, 3, hw) and unbinds dim 2).
            let qkv = a.qkv.forward(&a.norm.forward(&h)?)?.reshape((n, c, 3, hh * ww))?;
            let q = qkv.narrow(2, 0, 1)?.squeeze(2)?;
            let k = qkv.narrow(2, 1, 1)?.squeeze(2)?;
            let v = qkv.narrow(2, 2, 1)?.squeeze(2)?;
            let w = scale(&q.transpose(1, 2)?.matmul(&k)?, 1.0 / (c as f64).sqrt())?;
            let w = candle_nn::ops::softmax(&w, D::Minus1)?;
            let out = v.matmul(&w.transpose(1, 2)?)?.reshape((n, c, hh, ww))?;
            h = scaled_sum(&a.proj.forward(&out)?, &h, skip_scale)?;
        }
        Ok(h)
    }
}
