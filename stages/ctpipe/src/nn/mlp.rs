//! The small MLP of the 2-D toys (as in the GC and VCT toy experiments: width 256, ≈ 0.26 M
//! parameters). The noise label's W-wide positional embedding passes through Linear + SiLU (as
//! EDM's mapping network does) and is concatenated with Linear(x ⊕ c_noise) + SiLU; then
//! Linear(2W, W) → SiLU → Linear(W, W) → SiLU → Linear(W, d_out). PyTorch's default layer
//! initialisation (see docs/networks.md for why not EDM's).

use super::dropout::Dropout;
use super::elementwise::silu;
use super::layers::{positional_embedding, Linear};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub dim_in: usize,
    pub dim_out: usize,
    pub width: usize,
    pub dropout: f64,
    /// Classes of a class-conditional model (0: unconditional).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub label_dim: usize,
}

pub struct Mlp {
    cfg: MlpConfig,
    map_label: Option<Linear>,
    map_noise: Linear,
    input: Linear,
    hidden0: Linear,
    hidden1: Linear,
    output: Linear,
}

impl Mlp {
    pub fn new(vb: VarBuilder, cfg: &MlpConfig) -> Result<Mlp> {
        let w = cfg.width;
        Ok(Mlp {
            cfg: cfg.clone(),
            map_label: if cfg.label_dim > 0 { Some(Linear::torch_default(vb.pp("map_label"), cfg.label_dim, w)?) } else { None },
            map_noise: Linear::torch_default(vb.pp("map_noise"), w, w)?,
            input: Linear::torch_default(vb.pp("input"), cfg.dim_in + 1, w)?,
            hidden0: Linear::torch_default(vb.pp("hidden0"), 2 * w, w)?,
            hidden1: Linear::torch_default(vb.pp("hidden1"), w, w)?,
            output: Linear::torch_default(vb.pp("output"), w, cfg.dim_out)?,
        })
    }

    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// F(x, c_noise, labels): `x` is (N, d), `c_noise` is (N,), `labels` one-hot (N, label_dim)
    /// for a class-conditional network: its embedding joins the noise's, as in EDM's U-Net.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor, labels: Option<&Tensor>, drop: &mut Dropout) -> Result<Tensor> {
        let emb = positional_embedding(c_noise, self.cfg.width)?.to_dtype(x.dtype())?;
        let emb = super::add_label_embedding(emb, self.map_label.as_ref(), labels)?;
        let emb = silu(&self.map_noise.forward(&emb)?)?;
        let cn = c_noise.reshape((c_noise.elem_count(), 1))?.to_dtype(x.dtype())?;
        let h = silu(&self.input.forward(&Tensor::cat(&[x, &cn], 1)?)?)?;
        let h = silu(&self.hidden0.forward(&Tensor::cat(&[&h, &emb], 1)?)?)?;
        let h = drop.apply(&h, self.cfg.dropout)?;
        let h = silu(&self.hidden1.forward(&h)?)?;
        let h = drop.apply(&h, self.cfg.dropout)?;
        self.output.forward(&h)
    }
}
