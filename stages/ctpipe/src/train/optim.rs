//! Optimisers with state we own and save: Adam (decoupled weight decay), RAdam and Lion.
//!
//! candle-nn's AdamW keeps its moments private, so an interrupted run could not resume exactly;
//! here every moment is a named tensor that goes into checkpoints. Updates follow PyTorch's
//! `torch.optim.Adam`/`RAdam` and the Lion paper (Chen et al. 2023), elementwise per parameter.

use crate::error::usage;
use crate::simd::{WithSimd, dispatch, sum8};
use candle_core::{Result, Tensor, Var};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Adam,
    RAdam,
    Lion,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    pub kind: Kind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl OptimConfig {
    pub fn parse(name: &str, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> anyhow::Result<OptimConfig> {
        let kind = match name {
            "adam" => Kind::Adam,
            "radam" => Kind::RAdam,
            "lion" => Kind::Lion,
            o => return Err(usage(format!("field `optimizer`: `{o}` (expected adam, radam or lion)"))),
        };
        for (f, v) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(usage(format!("field `{f}`: {v} must be in [0, 1)")));
            }
        }
        Ok(OptimConfig { kind, beta1, beta2, eps, weight_decay })
    }
}

/// Gradients are cleaned before use: NaN → 0, ±inf (and anything beyond) → ±1e5, as ECT does.
pub const GRAD_LIMIT: f32 = 1e5;

/// Moments live where the parameters do: host vectors for CPU parameters (one fused loop per
/// parameter: clean, clip, update — a few hundred fewer tensor ops per step, which dominate
/// small models), tensors on an accelerator.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Option<Tensor> },
}

/// An optimiser over named parameters.
pub struct Optimizer {
    cfg: OptimConfig,
    /// Steps taken (t of the bias corrections).
    pub t: u64,
    moments: BTreeMap<String, Moments>,
}

/// Read a tensor's f32 values without copying when it is a contiguous CPU tensor.
pub fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage {
            if layout.is_contiguous() {
                let start = layout.start_offset();
                return Ok(f(&v[start..start + layout.shape().elem_count()]));
            }
        }
    }
    let v: Vec<f32> = t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    Ok(f(&v))
}

#[inline(always)]
fn clean(g: f32) -> f32 {
    if g.is_nan() { 0.0 } else { g.clamp(-GRAD_LIMIT, GRAD_LIMIT) }
}

impl Optimizer {
    pub fn new(cfg: OptimConfig, params: &[(String, Var)]) -> Result<Optimizer> {
        let mut moments = BTreeMap::new();
        for (name, var) in params {
            let m = if var.device().is_cpu() && var.dtype() == candle_core::DType::F32 {
                let n = var.elem_count();
                Moments::Host { m: vec![0.0; n], v: if cfg.kind == Kind::Lion { Vec::new() } else { vec![0.0; n] } }
            } else {
                Moments::Device { m: var.zeros_like()?, v: if cfg.kind == Kind::Lion { None } else { Some(var.zeros_like()?) } }
            };
            moments.insert(name.clone(), m);
        }
        Ok(Optimizer { cfg, t: 0, moments })
    }

    /// Clean the gradients, clip their global norm to `clip`, and update. Returns the global
    /// norm of the cleaned gradients before clipping. A parameter without a gradient (unused
    /// this step) is left alone, its moments too.
    pub fn step(&mut self, params: &[(String, Var)], grads: &HashMap<String, Tensor>, lr: f64, clip: Option<f64>) -> Result<f64> {
        // Pass 1: the global norm of the cleaned gradients.
        let mut sq = 0f64;
        let mut on_our_kernels = Vec::new();
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            sq += match self.moments.get(name) {
                Some(Moments::Host { .. }) => with_host_f32(g, host_sumsq)?,
                _ if crate::cuda::fused_applies(var.as_tensor()) => {
                    on_our_kernels.push(g);
                    0.0
                }
                _ => clean_tensor(g)?.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
            };
        }
        if !on_our_kernels.is_empty() {
            sq += kernel_sumsq(&on_our_kernels)?;
        }
        let norm = sq.sqrt();
        let scale = match clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        // Pass 2: the update.
        self.t += 1;
        let t = self.t as i32;
        let c = self.cfg;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let rho_inf = 2.0 / (1.0 - c.beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t as f64 * c.beta2.powi(t) / bc2;
        let rect = if rho_t > 5.0 {
            Some(((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).sqrt())
        } else {
            None
        };
        let scalars = StepScalars::new(c, lr, scale, bc1, bc2, rect);
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            match self.moments.get_mut(name).expect("moments for every parameter") {
                Moments::Host { m, v } => {
                    let new = with_host_f32(g, |gs| with_host_f32(var.as_tensor(), |th| host_update(&scalars, gs, th, m, v)))??;
                    var.set(&Tensor::from_vec(new, var.shape(), var.device())?)?;
                }
                Moments::Device { m, v } if crate::cuda::fused_applies(var.as_tensor()) => {
                    kernel_update(var.as_tensor(), g, m, v.as_ref().unwrap_or(m), &scalars)?;
                }
                Moments::Device { m, v } => {
                    let g = (clean_tensor(g)? * scale)?;
                    device_update(c, lr, bc1, bc2, rect, &g, var, m, v)?;
                }
            }
        }
        Ok(norm)
    }

    /// The state as named tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (k, mo) in &self.moments {
            match mo {
                Moments::Host { m, v } => {
                    out.push((format!("m.{k}"), Tensor::from_slice(m, m.len(), &candle_core::Device::Cpu)?));
                    if !v.is_empty() {
                        out.push((format!("v.{k}"), Tensor::from_slice(v, v.len(), &candle_core::Device::Cpu)?));
                    }
                }
                Moments::Device { m, v } => {
                    out.push((format!("m.{k}"), m.flatten_all()?));
                    if let Some(v) = v {
                        out.push((format!("v.{k}"), v.flatten_all()?));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Restore moments saved by [`Optimizer::state`] and the step count.
    pub fn load_state(&mut self, t: u64, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        let get = |key: &str, len: usize| -> anyhow::Result<Tensor> {
            let saved = tensors.get(key).ok_or_else(|| anyhow::anyhow!("checkpoint lacks optimiser state `{key}`"))?;
            if saved.elem_count() != len {
                anyhow::bail!("optimiser state `{key}` has {} values, expected {len}", saved.elem_count());
            }
            Ok(saved.flatten_all()?)
        };
        for (name, mo) in self.moments.iter_mut() {
            match mo {
                Moments::Host { m, v } => {
                    *m = get(&format!("m.{name}"), m.len())?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
                    if !v.is_empty() {
                        *v = get(&format!("v.{name}"), v.len())?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
                    }
                }
                Moments::Device { m, v } => {
                    *m = get(&format!("m.{name}"), m.elem_count())?.reshape(m.shape())?.to_dtype(m.dtype())?.to_device(m.device())?;
                    if let Some(v) = v {
                        *v = get(&format!("v.{name}"), v.elem_count())?.reshape(v.shape())?.to_dtype(v.dtype())?.to_device(v.device())?;
                    }
                }
            }
        }
        self.t = t;
        Ok(())
    }
}

/// The per-step scalars of the update in f32, computed once per step for every parameter,
/// on the host and in the GPU kernel alike (kernels/fused.cu `ct_optimizer_step`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    pub kind: Kind,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    pub lr: f32,
    pub wd: f32,
    /// The gradient clipping factor.
    pub scale: f32,
    /// Adam's lr / (1 − β1ᵗ).
    pub adam_step: f32,
    /// 1 − β1ᵗ.
    pub bc1: f32,
    /// √(1 − β2ᵗ).
    pub sbc2: f32,
    /// RAdam's rectification; None in its unrectified first steps.
    pub rect: Option<f32>,
}

impl StepScalars {
    pub fn new(c: OptimConfig, lr: f64, scale: f64, bc1: f64, bc2: f64, rect: Option<f64>) -> StepScalars {
        StepScalars {
            kind: c.kind,
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            eps: c.eps as f32,
            lr: lr as f32,
            wd: c.weight_decay as f32,
            scale: scale as f32,
            adam_step: (lr / bc1) as f32,
            bc1: bc1 as f32,
            sbc2: bc2.sqrt() as f32,
            rect: rect.map(|r| r as f32),
        }
    }
}

/// Parameters per parallel job of the host optimiser and EMA: a fixed size, so that the
/// gradient norm's partial sums, and so its bits, do not depend on the thread count.
const CHUNK: usize = 1 << 14;

/// Σ clean(g)² in f64: per chunk of [`CHUNK`] by `simd::sum8`, chunks in parallel, their sums
/// added in order.
fn host_sumsq(g: &[f32]) -> f64 {
    let parts: Vec<f64> = g.par_chunks(CHUNK).map(|c| dispatch(SumSq(c))).collect();
    parts.iter().sum()
}

struct SumSq<'a>(&'a [f32]);

impl WithSimd for SumSq<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> f64 {
        sum8(self.0, |x| (clean(x) as f64) * (clean(x) as f64))
    }
}

/// One parameter's update on the host; returns the new values. Follows PyTorch's Adam/RAdam
/// (the bias corrections and RAdam's rectification are computed once per step by the caller)
/// and Lion (Chen et al. 2023), with decoupled weight decay. Element-wise, so the chunks in
/// parallel and the vector width change nothing in the result.
pub(crate) fn host_update(s: &StepScalars, g: &[f32], theta: &[f32], m: &mut [f32], v: &mut [f32]) -> Vec<f32> {
    let mut out = vec![0f32; theta.len()];
    let chunks = out.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(theta.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK));
    if s.kind == Kind::Lion {
        chunks.for_each(|(((out, g), theta), m)| dispatch(Update { s, g, theta, m, v: &mut [], out }));
    } else {
        chunks.zip(v.par_chunks_mut(CHUNK)).for_each(|((((out, g), theta), m), v)| dispatch(Update { s, g, theta, m, v, out }));
    }
    out
}

/// One chunk of [`host_update`]; `v` is empty for Lion.
struct Update<'a> {
    s: &'a StepScalars,
    g: &'a [f32],
    theta: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    out: &'a mut [f32],
}

impl WithSimd for Update<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Update { s, g, theta, m, v, out } = self;
        let (b1, b2, eps, wd, lr32, scale) = (s.b1, s.b2, s.eps, s.wd, s.lr, s.scale);
        let (g, theta, m, out) = (&g[..out.len()], &theta[..out.len()], &mut m[..out.len()], out);
        match s.kind {
            Kind::Lion => {
                for (((o, &g), &th), m) in out.iter_mut().zip(g).zip(theta).zip(m.iter_mut()) {
                    let gi = clean(g) * scale;
                    let c = b1 * *m + (1.0 - b1) * gi;
                    let update = if c == 0.0 { 0.0 } else { c.signum() };
                    *o = th * (1.0 - lr32 * wd) - lr32 * update;
                    *m = b2 * *m + (1.0 - b2) * gi;
                }
            }
            Kind::Adam => {
                let (step, sbc2) = (s.adam_step, s.sbc2);
                for ((((o, &g), &th), m), v) in out.iter_mut().zip(g).zip(theta).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let gi = clean(g) * scale;
                    *m = b1 * *m + (1.0 - b1) * gi;
                    *v = b2 * *v + (1.0 - b2) * gi * gi;
                    *o = th * (1.0 - lr32 * wd) - step * *m / (v.sqrt() / sbc2 + eps);
                }
            }
            Kind::RAdam => {
                let (sbc2, bc1) = (s.sbc2, s.bc1);
                for ((((o, &g), &th), m), v) in out.iter_mut().zip(g).zip(theta).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let gi = clean(g) * scale;
                    *m = b1 * *m + (1.0 - b1) * gi;
                    *v = b2 * *v + (1.0 - b2) * gi * gi;
                    let mhat = *m / bc1;
                    let delta = match s.rect {
                        Some(r) => lr32 * mhat * r * sbc2 / (v.sqrt() + eps),
                        None => lr32 * mhat,
                    };
                    *o = th * (1.0 - lr32 * wd) - delta;
                }
            }
        }
    }
}

/// Σ clean(g)² of gradients on the GPU through our kernel.
fn kernel_sumsq(grads: &[&Tensor]) -> Result<f64> {
    #[cfg(feature = "cuda")]
    return crate::cuda::launch::clean_sumsq(grads);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = grads;
        candle_core::bail!("this build has no CUDA kernels")
    }
}

/// The update of one GPU parameter in place through our kernel (`v` is `m` for Lion).
fn kernel_update(theta: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &StepScalars) -> Result<()> {
    #[cfg(feature = "cuda")]
    return crate::cuda::launch::optimizer_step(theta, g, m, v, s);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (theta, g, m, v, s);
        candle_core::bail!("this build has no CUDA kernels")
    }
}

fn clean_tensor(g: &Tensor) -> Result<Tensor> {
    crate::nn::ops::nan_to_num(g)?.clamp(-GRAD_LIMIT, GRAD_LIMIT)
}

/// The same update with tensor operations (parameters on an accelerator).
#[allow(clippy::too_many_arguments)]
fn device_update(c: OptimConfig, lr: f64, bc1: f64, bc2: f64, rect: Option<f64>, g: &Tensor, var: &Var, m: &mut Tensor, v: &mut Option<Tensor>) -> Result<()> {
    let theta = var.as_tensor();
    let decayed = if c.weight_decay > 0.0 { (theta * (1.0 - lr * c.weight_decay))? } else { theta.clone() };
    let new = match c.kind {
        Kind::Lion => {
            let update = ((&*m * c.beta1)? + (g * (1.0 - c.beta1))?)?.sign()?;
            *m = ((&*m * c.beta2)? + (g * (1.0 - c.beta2))?)?;
            (decayed - (update * lr)?)?
        }
        Kind::Adam | Kind::RAdam => {
            *m = ((&*m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let vv = v.as_ref().expect("second moment");
            let nv = ((vv * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let out = match (c.kind, rect) {
                (Kind::Adam, _) => (decayed - ((&*m / ((nv.sqrt()? / bc2.sqrt())? + c.eps)?)? * (lr / bc1))?)?,
                (_, Some(r)) => (decayed - ((&*m * (nv.sqrt()? + c.eps)?.recip()?)? * (lr * r * bc2.sqrt() / bc1))?)?,
                (_, None) => (decayed - (&*m * (lr / bc1))?)?,
            };
            *v = Some(nv);
            out
        }
    };
    var.set(&new)
}

/// β·ema + α·online, chunks in parallel, each compiled for the CPU's vector width.
fn ema_host(ema: &[f32], online: &[f32], b: f32, a: f32) -> Vec<f32> {
    struct Ema<'a>(&'a mut [f32], &'a [f32], &'a [f32], f32, f32);
    impl WithSimd for Ema<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Ema(out, e, o, b, a) = self;
            for ((out, &x), &y) in out.iter_mut().zip(e).zip(o) {
                *out = b * x + a * y;
            }
        }
    }
    let mut out = vec![0f32; ema.len()];
    out.par_chunks_mut(CHUNK).zip(ema.par_chunks(CHUNK)).zip(online.par_chunks(CHUNK)).for_each(|((out, e), o)| dispatch(Ema(out, e, o, b, a)));
    out
}

/// EMA update ema ← β·ema + (1 − β)·online for each (ema, online) pair.
pub fn ema_update(pairs: &[(Var, Var)], beta: f64) -> Result<()> {
    let (b, a) = (beta as f32, (1.0 - beta) as f32);
    for (e, o) in pairs {
        if e.device().is_cpu() && e.dtype() == candle_core::DType::F32 {
            let new = with_host_f32(e.as_tensor(), |ev| with_host_f32(o.as_tensor(), |ov| ema_host(ev, ov, b, a)))??;
            e.set(&Tensor::from_vec(new, e.shape(), e.device())?)?;
        } else if crate::cuda::fused_applies(e.as_tensor()) {
            #[cfg(feature = "cuda")]
            crate::cuda::launch::ema(e.as_tensor(), o.as_tensor(), b, a)?;
        } else {
            e.set(&((e.as_tensor() * beta)? + (o.as_tensor() * (1.0 - beta))?)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on one scalar against hand-computed updates (PyTorch's formulas).
    #[test]
    fn updates_match_reference_formulas() {
        let dev = Device::Cpu;
        let run = |kind: Kind, beta2: f64| -> Vec<f64> {
            let var = Var::new(&[1.0f64], &dev).unwrap();
            let params = vec![("w".to_string(), var.clone())];
            let cfg = OptimConfig { kind, beta1: 0.9, beta2, eps: 1e-8, weight_decay: 0.0 };
            let mut opt = Optimizer::new(cfg, &params).unwrap();
            let mut out = Vec::new();
            for g in [0.5f64, -0.25] {
                let grads = HashMap::from([("w".to_string(), Tensor::new(&[g], &dev).unwrap())]);
                opt.step(&params, &grads, 0.1, None).unwrap();
                out.push(var.to_vec1::<f64>().unwrap()[0]);
            }
            out
        };
        // Adam, step 1: m̂ = g, v̂ = g² → w −= lr·g/(|g| + ε) ≈ 1 − 0.1.
        let adam = run(Kind::Adam, 0.999);
        let m2 = 0.9 * 0.05 + 0.1 * -0.25;
        let v2 = 0.999 * 0.001 * 0.25 + 0.001 * 0.0625;
        let step2 = 0.1 * (m2 / (1.0 - 0.81)) / ((v2 / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        assert!((adam[0] - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
        assert!((adam[1] - (adam[0] - step2)).abs() < 1e-12);
        // RAdam: ρ_t ≤ 5 for the first steps (β2 = 0.999) → plain momentum SGD with bias correction.
        let radam = run(Kind::RAdam, 0.999);
        assert!((radam[0] - (1.0 - 0.1 * 0.5)).abs() < 1e-12);
        assert!((radam[1] - (radam[0] - 0.1 * m2 / (1.0 - 0.81))).abs() < 1e-12);
        // Lion: w −= lr·sign(β1·m + (1 − β1)·g).
        let lion = run(Kind::Lion, 0.99);
        assert!((lion[0] - 0.9).abs() < 1e-12);
        // m after step 1 = 0.01·0.5 = 0.005; c = 0.9·0.005 + 0.1·(−0.25) < 0 → w += 0.1.
        assert!((lion[1] - 1.0).abs() < 1e-12);
    }

    /// The fused host update (f32 CPU parameters) and the tensor update (here f64, as on an
    /// accelerator) agree, with gradient cleaning and clipping, for every optimiser.
    #[test]
    fn host_and_tensor_paths_agree() {
        let dev = Device::Cpu;
        for kind in [Kind::Adam, Kind::RAdam, Kind::Lion] {
            let cfg = OptimConfig { kind, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
            let init: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
            let host = Var::from_tensor(&Tensor::new(init.as_slice(), &dev).unwrap()).unwrap();
            let dev64 = Var::from_tensor(&Tensor::new(init.as_slice(), &dev).unwrap().to_dtype(candle_core::DType::F64).unwrap()).unwrap();
            let ph = vec![("w".to_string(), host.clone())];
            let pd = vec![("w".to_string(), dev64.clone())];
            let (mut oh, mut od) = (Optimizer::new(cfg, &ph).unwrap(), Optimizer::new(cfg, &pd).unwrap());
            for step in 0..12u64 {
                let mut g: Vec<f32> = (0..50).map(|i| ((i as u64 * 7 + step * 13) % 17) as f32 - 8.0).collect();
                g[3] = f32::NAN;
                g[4] = f32::INFINITY;
                let gh = HashMap::from([("w".to_string(), Tensor::new(g.as_slice(), &dev).unwrap())]);
                let gd = HashMap::from([("w".to_string(), Tensor::new(g.as_slice(), &dev).unwrap().to_dtype(candle_core::DType::F64).unwrap())]);
                let nh = oh.step(&ph, &gh, 1e-2, Some(50.0)).unwrap();
                let nd = od.step(&pd, &gd, 1e-2, Some(50.0)).unwrap();
                assert!((nh - nd).abs() < 1e-9 * nd, "{kind:?} norm {nh} vs {nd}");
                assert!(nh > 1e5, "the infinity is clamped to 1e5, not dropped");
            }
            let a: Vec<f32> = host.to_vec1().unwrap();
            let b: Vec<f64> = dev64.to_vec1().unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!((*x as f64 - y).abs() < 1e-5, "{kind:?}: {x} vs {y}");
            }
            // Checkpointed state round-trips.
            let state: HashMap<String, Tensor> = oh.state().unwrap().into_iter().collect();
            let mut restored = Optimizer::new(cfg, &ph).unwrap();
            restored.load_state(oh.t, &state).unwrap();
            let again: HashMap<String, Tensor> = restored.state().unwrap().into_iter().collect();
            for (k, t) in &state {
                assert_eq!(t.to_vec1::<f32>().unwrap(), again[k].to_vec1::<f32>().unwrap());
            }
        }
    }

    /// Over two and a half chunks: the parallel, vectorised update equals the same update
    /// applied one parameter at a time, bit for bit, and it and the gradient norm are the same
    /// bits under 1 and 3 threads.
    #[test]
    fn chunked_host_update_is_elementwise_and_thread_independent() {
        let n = 2 * CHUNK + CHUNK / 2 + 3;
        let wave = |k: f32| (0..n).map(move |i| (i as f32 * k).sin()).collect::<Vec<f32>>();
        let (mut g, theta, m0, v0) = (wave(0.37), wave(0.11), wave(0.05), wave(0.03).into_iter().map(|v| v * v).collect::<Vec<_>>());
        (g[5], g[CHUNK + 1]) = (f32::NAN, f32::INFINITY);
        for kind in [Kind::Adam, Kind::RAdam, Kind::Lion] {
            let cfg = OptimConfig { kind, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
            let s = StepScalars::new(cfg, 1e-3, 0.5, 0.19, 0.0199, Some(0.3));
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let (mut m, mut v) = (m0.clone(), if kind == Kind::Lion { vec![] } else { v0.clone() });
                let out = pool.install(|| host_update(&s, &g, &theta, &mut m, &mut v));
                (out, m, v, pool.install(|| host_sumsq(&g)).to_bits())
            };
            let one = run(1);
            assert!(one == run(3), "{kind:?}: differs with the thread count");
            let (mut m, mut v) = (m0.clone(), v0.clone());
            for i in 0..n {
                let vi = if kind == Kind::Lion { &mut [][..] } else { &mut v[i..i + 1] };
                let out = host_update(&s, &g[i..i + 1], &theta[i..i + 1], &mut m[i..i + 1], vi);
                assert_eq!(out[0].to_bits(), one.0[i].to_bits(), "{kind:?}: parameter {i}");
            }
            assert_eq!(m, one.1, "{kind:?}: first moments");
        }
    }

    #[test]
    fn ema_host_and_tensor_paths_agree() {
        let dev = Device::Cpu;
        let e = Var::new(&[1f32, 2.0], &dev).unwrap();
        let o = Var::new(&[3f32, -2.0], &dev).unwrap();
        ema_update(&[(e.clone(), o.clone())], 0.75).unwrap();
        assert_eq!(e.to_vec1::<f32>().unwrap(), [1.5, 1.0]);
        let e64 = Var::new(&[1f64, 2.0], &dev).unwrap();
        let o64 = Var::new(&[3f64, -2.0], &dev).unwrap();
        ema_update(&[(e64.clone(), o64)], 0.75).unwrap();
        assert_eq!(e64.to_vec1::<f64>().unwrap(), [1.5, 1.0]);
    }

    #[test]
    fn radam_rectified_phase() {
        // With β2 = 0.9, ρ∞ = 19 and ρ_t > 5 from t = 6: the rectified update must kick in.
        let dev = Device::Cpu;
        let var = Var::new(&[0.0f64], &dev).unwrap();
        let params = vec![("w".to_string(), var.clone())];
        let cfg = OptimConfig { kind: Kind::RAdam, beta1: 0.9, beta2: 0.9, eps: 0.0, weight_decay: 0.0 };
        let mut opt = Optimizer::new(cfg, &params).unwrap();
        let grads = HashMap::from([("w".to_string(), Tensor::new(&[1.0f64], &dev).unwrap())]);
        let mut prev = 0.0;
        for t in 1..=6 {
            opt.step(&params, &grads, 1.0, None).unwrap();
            let w = var.to_vec1::<f64>().unwrap()[0];
            if t == 6 {
                // Constant gradient 1: m̂ = 1, √v / √bc2 = 1 → step = rect.
                let rho_inf = 19.0;
                let rho_t = rho_inf - 2.0 * 6.0 * 0.9f64.powi(6) / (1.0 - 0.9f64.powi(6));
                let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).sqrt();
                assert!(rho_t > 5.0);
                assert!(((prev - w) - rect).abs() < 1e-12, "{} vs {rect}", prev - w);
            } else {
                assert!(((prev - w) - 1.0).abs() < 1e-12, "t {t}");
            }
            prev = w;
        }
    }
}
