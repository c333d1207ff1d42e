//! Each consistency method's loss for one batch, recomputed on the host in f64 from the official
//! code's formulas, without `consistency.rs`, the couplings or `precond.rs`: the MLP, the
//! preconditioning, the noisy points, GC's generator, VC's posterior, SCT's target, the
//! distances and weights are written out again here, each with the official line it follows
//! (docs/methods.md has the citations).
//!
//! Inputs are fixed and shared with the code under test: the weights (an EMA that differs from
//! the online network, and a VC encoder), the clean batch, and the step's random draws, taken
//! from the same keyed streams (`rng.rs`) in the documented order: the schedule's levels, the
//! noise, GC's mixing draws and the dropout masks; the levels are drawn here from the "sigma"
//! stream with iCT's grid and discrete lognormal and ECT's r(t) recomputed. A test fails where
//! the code and the recomputation disagree by more than f32 rounding; docs/methods.md lists the
//! mutations of the code (GC's generator on the online network, at σ_hi, with training
//! coefficients, one point rebuilt; VC's encoder learning through the teacher, a wrong β; SCT's
//! (1 − r/t); ECT's r = 0 target; EDM's λ) and which test caught each.

use super::{Progress, StepCtx};
use crate::data::schema::SampleKind;
use crate::model::Weights;
use crate::train::config::from_toml;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use std::collections::HashMap;

const SEED: u64 = 11;
const N: usize = 48;
const D: usize = 2;
const SIGMA_DATA: f64 = 0.5;
const DROPOUT: f64 = 0.2;

/// The toy MLP (`nn/mlp.rs`) in f64, from the network's own tensors.
#[derive(Clone)]
struct HostMlp {
    p: HashMap<String, Vec<f64>>,
    width: usize,
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// PyTorch's softplus (β = 1; above 20 it is the identity).
fn softplus(v: f64) -> f64 {
    if v > 20.0 {
        v
    } else {
        v.max(0.0) + (-v.abs()).exp().ln_1p()
    }
}

impl HostMlp {
    fn of(w: &Weights) -> HostMlp {
        let p: HashMap<String, Vec<f64>> = w
            .params
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()))
            .collect();
        let width = p["model.map_noise.bias"].len();
        HostMlp { p, width }
    }

    /// y = W x + b, W stored (out, in) row-major as PyTorch's nn.Linear.
    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let w = &self.p[&format!("model.{name}.weight")];
        let b = &self.p[&format!("model.{name}.bias")];
        b.iter().enumerate().map(|(o, bo)| bo + x.iter().enumerate().map(|(i, xi)| w[o * x.len() + i] * xi).sum::<f64>()).collect()
    }

    /// F(x, c_noise) with the given dropout masks (already scaled by 1/(1 − p)).
    fn forward(&self, x: &[f64], c_noise: f64, masks: Option<&[Vec<f64>; 2]>) -> Vec<f64> {
        // EDM's PositionalEmbedding (endpoint=False is not used by the toy: frequencies span
        // 1 … 1/10000 inclusive), sin half first.
        let half = self.width / 2;
        let freqs: Vec<f64> = (0..half).map(|i| (1e-4f64).powf(i as f64 / (half - 1) as f64)).collect();
        let emb: Vec<f64> = freqs.iter().map(|f| (c_noise * f).sin()).chain(freqs.iter().map(|f| (c_noise * f).cos())).collect();
        let emb: Vec<f64> = self.linear("map_noise", &emb).into_iter().map(silu).collect();
        let mut xin = x.to_vec();
        xin.push(c_noise);
        let h: Vec<f64> = self.linear("input", &xin).into_iter().map(silu).collect();
        let cat: Vec<f64> = h.into_iter().chain(emb).collect();
        let mut h: Vec<f64> = self.linear("hidden0", &cat).into_iter().map(silu).collect();
        if let Some(m) = masks {
            h.iter_mut().zip(&m[0]).for_each(|(v, k)| *v *= k);
        }
        let mut h: Vec<f64> = self.linear("hidden1", &h).into_iter().map(silu).collect();
        if let Some(m) = masks {
            h.iter_mut().zip(&m[1]).for_each(|(v, k)| *v *= k);
        }
        self.linear("output", &h)
    }
}

/// Which coefficients: consistency models' σ_min-shifted c_skip/c_out (iCT, GC; ECT's
/// evaluation), or EDM's (ECT while training).
#[derive(Clone, Copy, PartialEq)]
enum Coeffs {
    Shifted(f64),
    Edm,
}

/// f(x, σ) = c_skip·x + c_out·F(c_in·x, ln(σ)/4) (consistency_models karras_diffusion.py
/// get_scalings_for_boundary_condition; EDM's EDMPrecond; ECT's ECMPrecond).
fn precond(net: &HostMlp, x: &[f64], sigma: f64, c: Coeffs, masks: Option<&[Vec<f64>; 2]>) -> Vec<f64> {
    let sd = SIGMA_DATA;
    let s = match c {
        Coeffs::Shifted(sigma_min) => sigma - sigma_min,
        Coeffs::Edm => sigma,
    };
    let c_skip = sd * sd / (s * s + sd * sd);
    let c_out = s * sd / (sigma * sigma + sd * sd).sqrt();
    let c_in = 1.0 / (sigma * sigma + sd * sd).sqrt();
    let xin: Vec<f64> = x.iter().map(|v| v * c_in).collect();
    let f = net.forward(&xin, sigma.ln() / 4.0, masks);
    x.iter().zip(f).map(|(xi, fi)| c_skip * xi + c_out * fi).collect()
}

fn add_scaled(x: &[f64], s: f64, z: &[f64]) -> Vec<f64> {
    x.iter().zip(z).map(|(a, b)| a + s * b).collect()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// iCT's and GC's pseudo-Huber over the whole sample (ECT: c = 0).
fn pseudo_huber(a: &[f64], b: &[f64], c: f64) -> f64 {
    (sq_dist(a, b) + c * c).sqrt() - c
}

/// sony/vct ict.py:29-30 per value, summed over the sample at :142.
fn pseudo_huber_per_value(a: &[f64], b: &[f64], c: f64) -> f64 {
    a.iter().zip(b).map(|(p, q)| ((p - q) * (p - q) + c * c).sqrt() - c).sum()
}

/// Rows of a (n, d) tensor.
fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

/// The step's draws in the order the documented streams give them.
struct Draws {
    hi: Vec<f64>,
    lo: Vec<f64>,
    noise: Vec<Vec<f64>>,
    /// Dropout masks per sample, for the two dropout layers.
    masks: Vec<[Vec<f64>; 2]>,
}

fn draws(step: u64, levels: (Vec<f64>, Vec<f64>), x0: &Tensor, width: usize) -> Draws {
    let (hi, lo) = levels;
    let noise = crate::rng::normal_vec(&mut crate::rng::stream(SEED, "noise", step), N * D);
    let noise: Vec<Vec<f64>> = noise.chunks(D).map(|c| c.iter().map(|&v| v as f64).collect()).collect();
    assert_eq!(x0.dims(), [N, D]);
    Draws { hi, lo, noise, masks: dropout_masks("dropout", step, width) }
}

/// The two dropout layers' masks per sample from a step's stream, as nn/dropout.rs draws them:
/// one uniform per unit, layer after layer, kept where u ≥ p, scaled 1/(1 − p).
fn dropout_masks(purpose: &str, step: u64, width: usize) -> Vec<[Vec<f64>; 2]> {
    let mut rng = crate::rng::stream(SEED, purpose, step);
    let mut layer = || -> Vec<Vec<f64>> {
        crate::rng::uniform_vec(&mut rng, N * width).chunks(width).map(|c| c.iter().map(|&u| if u as f64 >= DROPOUT { 1.0 / (1.0 - DROPOUT) } else { 0.0 }).collect()).collect()
    };
    let (m0, m1) = (layer(), layer());
    m0.into_iter().zip(m1).map(|(a, b)| [a, b]).collect()
}

fn network(seed: u64) -> Weights {
    let cfg = crate::nn::preset("mlp-small", SampleKind::Points { dim: D as u32 }, 1, Some(DROPOUT)).unwrap();
    Weights::init(&cfg, seed, &Device::Cpu).unwrap()
}

fn encoder() -> Weights {
    let main = crate::nn::preset("mlp-small", SampleKind::Points { dim: D as u32 }, 1, Some(DROPOUT)).unwrap();
    Weights::init_in(&crate::nn::vct_encoder(&main, "small").unwrap(), SEED, "encoder", &Device::Cpu).unwrap()
}

/// Two tight clusters, as the toy's.
fn batch() -> Tensor {
    let mut rng = crate::rng::stream(5, "batch", 0);
    let v: Vec<f32> = (0..N).flat_map(|i| {
        let y = if i % 2 == 0 { 0.5 } else { -0.5 };
        let e: f32 = rng.random::<f32>() - 0.5;
        [0.02 * e, y + 0.01 * e]
    }).collect();
    Tensor::from_vec(v, (N, D), &Device::Cpu).unwrap()
}

struct Nets {
    online: Weights,
    ema: Weights,
    encoder: Option<Weights>,
}

fn nets(with_encoder: bool) -> Nets {
    Nets { online: network(1), ema: network(2), encoder: with_encoder.then(encoder) }
}

fn step_ctx(nets: &Nets, step: u64, total: u64) -> StepCtx<'_> {
    StepCtx {
        seed: SEED,
        progress: Progress { step, total },
        net: &nets.online.net,
        ema: &nets.ema.net,
        encoder: nets.encoder.as_ref().map(|e| &e.net),
        target: None,
        teacher: None,
        labels: None,
        class_labels: None,
        pool: None,
        shard: None,
    }
}

/// The code's per-sample losses for a `train-ct` config.
fn code_losses(cfg: &str, nets: &Nets, step: u64, total: u64) -> Vec<f64> {
    let resolved = super::spec::resolve(&from_toml(cfg), D).unwrap();
    let out = resolved.method.loss(&step_ctx(nets, step, total), &batch()).unwrap();
    out.per_sample.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

fn assert_close(code: &[f64], reference: &[f64], what: &str) {
    assert_eq!(code.len(), reference.len());
    for (i, (c, r)) in code.iter().zip(reference).enumerate() {
        assert!((c - r).abs() <= 2e-4 * r.abs().max(1e-3), "{what}: sample {i}: code {c}, recomputed {r}");
    }
}

/// The Karras grid of iCT's curriculum at a step, recomputed (improved CT §3.3; GC utils.py).
fn ict_grid(step: u64, total: u64) -> Vec<f64> {
    let (s0, s1, rho, smin, smax) = (10u64, 1280u64, 7.0f64, 0.002f64, 80.0f64);
    let k_prime = (total as f64 / ((s1 as f64 / s0 as f64).log2().floor() + 1.0)).floor();
    let n = (s0 as f64 * 2f64.powf((step as f64 / k_prime).floor())).min(s1 as f64) as usize + 1;
    (0..n).map(|i| (smin.powf(1.0 / rho) + i as f64 / (n - 1) as f64 * (smax.powf(1.0 / rho) - smin.powf(1.0 / rho))).powf(rho)).collect()
}

/// iCT's levels for the batch: an interval index per sample from the discrete lognormal over
/// the grid, p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std))
/// (improved CT §3.5), by inverse CDF of one uniform from the step's "sigma" stream.
fn ict_levels(step: u64, total: u64) -> (Vec<f64>, Vec<f64>) {
    let grid = ict_grid(step, total);
    let cdf = |s: f64| libm::erf((s.ln() + 1.1) / (2f64.sqrt() * 2.0));
    let p: Vec<f64> = grid.windows(2).map(|w| cdf(w[1]) - cdf(w[0])).collect();
    let total_p: f64 = p.iter().sum();
    let mut rng = crate::rng::stream(SEED, "sigma", step);
    (0..N)
        .map(|_| {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let i = p.iter().position(|pi| {
                acc += pi / total_p;
                u < acc
            });
            let i = i.unwrap_or(p.len() - 1);
            (grid[i + 1], grid[i])
        })
        .unzip()
}

/// ECT's levels: ln t ~ N(−1.1, 2.0) from the step's "sigma" stream, t capped at `t_cap` (the
/// LI kernel's T; ∞ otherwise), r = r(t) at the stage.
fn ect_levels(step: u64, stage: u32, t_cap: f64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = crate::rng::stream(SEED, "sigma", step);
    (0..N)
        .map(|_| {
            let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
            let t = (-1.1 + 2.0 * z).exp().min(t_cap);
            (t, ect_r(t, stage))
        })
        .unzip()
}

/// ECT's r(t) recomputed (locuslab/ect loss.py:45-50): r/t = 1 − q^−(s+1)·(1 + k·sigmoid(−b·t)),
/// clamped at 0; the stage ⌊step / stage length⌋.
fn ect_r(t: f64, stage: u32) -> f64 {
    let (q, k, b) = (2.0f64, 8.0, 1.0);
    let sig = 1.0 / (1.0 + (b * t).exp());
    t * (1.0 - q.powi(-(stage as i32 + 1)) * (1.0 + k * sig)).max(0.0)
}

/// iCT: both points from one z, the same masks, the current network as teacher, pseudo-Huber
/// c = 0.00054·√D, weight 1/Δσ (improved CT; GC train_consistency.py:207-217).
#[test]
fn ict_loss_recomputed() {
    let nets = nets(false);
    let (step, total) = (500, 1000);
    let code = code_losses("method = \"ict\"\nsteps = 1000", &nets, step, total);
    let d = draws(step, ict_levels(step, total), &batch(), 64);
    let f = HostMlp::of(&nets.online);
    let c = 0.00054 * (D as f64).sqrt();
    let reference: Vec<f64> = rows(&batch())
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let s = precond(&f, &add_scaled(x, d.hi[i], &d.noise[i]), d.hi[i], Coeffs::Shifted(0.002), Some(&d.masks[i]));
            let t = precond(&f, &add_scaled(x, d.lo[i], &d.noise[i]), d.lo[i], Coeffs::Shifted(0.002), Some(&d.masks[i]));
            pseudo_huber(&s, &t, c) / (d.hi[i] - d.lo[i])
        })
        .collect();
    assert_close(&code, &reference, "ict");
}

/// Which of ECT's relatives `ect_like` recomputes.
#[derive(Clone, Copy, Default)]
struct EctVariant {
    /// SCT's target (else ECT's).
    stable: bool,
    /// SCT: ECT's clean image where r = 0 (`sct_boundary = "clean"`), else x̂₀.
    clean_boundary: bool,
    /// SCT: a pool of this many extra references after the batch.
    pool: usize,
    /// Phased tuning with this many phases.
    phases: Option<u32>,
}

/// ECT (locuslab/ect loss.py:52-92): t and r(t); y_t = y + t·n and y_r = y + r·n; both through
/// EDM's training coefficients with the same dropout; where r = 0 the target is y itself; the
/// unsquared L2 norm weighted by 1/(t − r). SCT: the target point x_r = x_t − (t − r)/t·(x_t − x̂₀)
/// with x̂₀ the softmax(−‖x_t − x_j‖²/(2t²))-weighted mean of the batch (and a pool), x̂₀ itself
/// where r = 0 (the construction's limit) unless the clean image is asked for. Phased (Phased
/// Consistency Models): edges on the Karras grid of M + 1 points, f = D + (s_m/σ)(x − D) with D
/// EDM's denoiser and s_m the lower edge of σ's phase, r raised to s_m, and x_r itself as the
/// target where r lands on the edge.
fn ect_like(v: EctVariant) {
    let nets = nets(false);
    // 4 stages of 250 steps; at step 300 (stage 1) r = 0 below t ≈ 0.51 and r > 0 above.
    let (step, total) = (300, 1000);
    let method = if v.stable { "sct" } else { "ect" };
    let mut cfg = format!("method = \"{method}\"\nsteps = 1000\nect_stages = 4\nbatch = {N}\n");
    if v.clean_boundary {
        cfg += "sct_boundary = \"clean\"\n";
    }
    if v.pool > 0 {
        cfg += &format!("sct_references = \"pool\"\nsct_pool = {}\n", N + v.pool);
    }
    if let Some(m) = v.phases {
        cfg += &format!("phases = {m}\n");
    }
    // The pool: points away from both clusters, so that they move x̂₀ where t is large.
    let pool_rows: Vec<Vec<f64>> = (0..v.pool).map(|j| vec![0.3 * (j as f64 - 1.0), 0.1 * j as f64]).collect();
    let pool = crate::methods::sct::Pool {
        x: Tensor::from_vec(pool_rows.iter().flatten().map(|&p| p as f32).collect::<Vec<_>>(), (v.pool, D), &Device::Cpu).unwrap(),
        labels: vec![0; v.pool],
    };
    let code = {
        let resolved = super::spec::resolve(&from_toml(&cfg), D).unwrap();
        assert_eq!(resolved.method.reference_pool(), v.pool);
        let ctx = StepCtx { pool: (v.pool > 0).then_some(&pool), ..step_ctx(&nets, step, total) };
        let out = resolved.method.loss(&ctx, &batch()).unwrap();
        out.per_sample.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    };
    let d = draws(step, ect_levels(step, 1, f64::INFINITY), &batch(), 64);
    let (n_zero, n_pos) = (d.lo.iter().filter(|&&r| r == 0.0).count(), d.lo.iter().filter(|&&r| r > 0.0).count());
    assert!(n_zero >= 5 && n_pos >= 5, "the batch holds both kinds of pair: {n_zero} at r = 0, {n_pos} above");
    let f = HostMlp::of(&nets.online);
    let x = rows(&batch());
    let refs: Vec<Vec<f64>> = x.iter().cloned().chain(pool_rows.iter().cloned()).collect();
    let edges: Option<Vec<f64>> = v.phases.map(|m| {
        let (lo, hi) = (0.003f64.powf(1.0 / 7.0), 80f64.powf(1.0 / 7.0));
        (0..=m).map(|k| (lo + k as f64 / m as f64 * (hi - lo)).powf(7.0)).collect()
    });
    let lower_edge = |s: f64| edges.as_ref().map(|e| e[(0..e.len() - 1).find(|&k| s <= e[k + 1]).unwrap_or(e.len() - 2)]);
    // The model: EDM's denoiser for phased models mapped to the phase's lower edge.
    let model = |y: &[f64], s: f64, mask: &[Vec<f64>; 2]| -> Vec<f64> {
        match lower_edge(s) {
            None => precond(&f, y, s, Coeffs::Edm, Some(mask)),
            Some(edge) => {
                let den = precond(&f, y, s, Coeffs::Edm, Some(mask));
                let g = (edge / s).min(1.0);
                (0..D).map(|k| den[k] + g * (y[k] - den[k])).collect()
            }
        }
    };
    let reference: Vec<f64> = (0..N)
        .map(|i| {
            let t = d.hi[i];
            let mut rr = d.lo[i];
            let edge = lower_edge(t).filter(|&e| t > e);
            if let Some(e) = edge {
                rr = rr.max(e);
            }
            let xt = add_scaled(&x[i], t, &d.noise[i]);
            let student = model(&xt, t, &d.masks[i]);
            let x0_hat: Vec<f64> = if v.stable {
                let logits: Vec<f64> = refs.iter().map(|xj| -sq_dist(&xt, xj) / (2.0 * t * t)).collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = w.iter().sum();
                (0..D).map(|k| refs.iter().zip(&w).map(|(xj, wj)| wj / total * xj[k]).sum()).collect()
            } else {
                x[i].clone()
            };
            let xr: Vec<f64> = if v.stable {
                (0..D).map(|k| xt[k] - (t - rr) / t * (xt[k] - x0_hat[k])).collect()
            } else {
                add_scaled(&x[i], rr, &d.noise[i])
            };
            let target = if rr == 0.0 {
                if v.clean_boundary || !v.stable { x[i].clone() } else { x0_hat }
            } else if edge == Some(rr) {
                xr
            } else {
                model(&xr, rr, &d.masks[i])
            };
            pseudo_huber(&student, &target, 0.0) / (t - rr)
        })
        .collect();
    if let Some(e) = &edges {
        let on_edge = (0..N).filter(|&i| d.hi[i] > e[0] && d.lo[i] <= lower_edge(d.hi[i]).unwrap()).count();
        assert!(on_edge >= 3 && on_edge < N - 3, "pairs both on and off the edges: {on_edge} of {N} on one");
    }
    let what = format!("{method}{}{}{}", if v.clean_boundary { " clean boundary" } else { "" }, if v.pool > 0 { " pool" } else { "" }, v.phases.map(|m| format!(" {m} phases")).unwrap_or_default());
    assert_close(&code, &reference, &what);
}

#[test]
fn ect_loss_recomputed() {
    ect_like(EctVariant::default());
}

#[test]
fn sct_loss_recomputed() {
    ect_like(EctVariant { stable: true, ..Default::default() });
    ect_like(EctVariant { stable: true, clean_boundary: true, ..Default::default() });
    ect_like(EctVariant { stable: true, pool: 6, ..Default::default() });
}

/// Phased ECT and SCT with 2 and 4 phases: some pairs land on an edge (their target is x_r).
#[test]
fn phased_loss_recomputed() {
    for phases in [2, 4] {
        ect_like(EctVariant { phases: Some(phases), ..Default::default() });
        ect_like(EctVariant { stable: true, phases: Some(phases), ..Default::default() });
    }
}

/// GC (thibautissenhuth/consistency_GC train_consistency.py:184-217): x_lo = x + σ_lo·z; the
/// EMA's consistency function there, evaluation coefficients, no dropout, no gradient; each
/// sample takes it where its uniform draw exceeds μ (:198, :206); both points rebuilt from the
/// mixed endpoint with the same z (:207, :209); then iCT's loss. On ECT's schedule (our
/// extension) the generator runs at max(r, σ_min) with ECT's evaluation (shifted)
/// coefficients, and the rest is ECT's loss.
fn gc(schedule: &str) {
    let nets = nets(false);
    let ect = schedule == "ect";
    let (step, total) = if ect { (300, 1000) } else { (500, 1000) };
    let cfg = format!("method = \"gc\"\nschedule = \"{schedule}\"\nsteps = 1000\nect_stages = 4\ngc_keep = 0.4");
    let cfg = if ect { cfg } else { cfg.replace("ect_stages = 4\n", "") };
    let code = code_losses(&cfg, &nets, step, total);
    let levels = if ect { ect_levels(step, 1, f64::INFINITY) } else { ict_levels(step, total) };
    let d = draws(step, levels, &batch(), 64);
    let mut mix = crate::rng::stream(SEED, "mix", step);
    let use_gen: Vec<bool> = (0..N).map(|_| mix.random::<f64>() > 0.4).collect();
    assert!(use_gen.iter().filter(|&&g| g).count() >= 10 && use_gen.iter().filter(|&&g| !g).count() >= 10);
    let (f, g) = (HostMlp::of(&nets.online), HostMlp::of(&nets.ema));
    let sigma_min = if ect { 0.003 } else { 0.002 };
    let train = if ect { Coeffs::Edm } else { Coeffs::Shifted(sigma_min) };
    let c = if ect { 0.0 } else { 0.00054 * (D as f64).sqrt() };
    let x = rows(&batch());
    let reference: Vec<f64> = (0..N)
        .map(|i| {
            let (hi, lo) = (d.hi[i], d.lo[i]);
            let endpoint = if use_gen[i] {
                precond(&g, &add_scaled(&x[i], lo, &d.noise[i]), lo.max(sigma_min), Coeffs::Shifted(sigma_min), None)
            } else {
                x[i].clone()
            };
            let s = precond(&f, &add_scaled(&endpoint, hi, &d.noise[i]), hi, train, Some(&d.masks[i]));
            let t = if lo == 0.0 { endpoint.clone() } else { precond(&f, &add_scaled(&endpoint, lo, &d.noise[i]), lo, train, Some(&d.masks[i])) };
            pseudo_huber(&s, &t, c) / (hi - lo)
        })
        .collect();
    assert_close(&code, &reference, &format!("gc on {schedule}"));
}

#[test]
fn gc_loss_recomputed_on_ict() {
    gc("ict");
}

#[test]
fn gc_loss_recomputed_on_ect() {
    gc("ect");
}

/// VCT on iCT's schedule (sony/vct models/ict.py:120-148, cm_base.py): the encoder reads x/σd
/// with noise label 0 (its own dropout stream), μ and softplus(s) + 1e-8 from its two halves;
/// z = μ + s·ε for both points, the teacher's copy detached; pseudo-Huber per value summed;
/// weight 1/Δσ; + β/(σ_N − σ_{N−1})·KL, KL = Σ ½(μ² + s² − 1) − ln s.
///
/// `enc_teacher` is the encoder the teacher's z comes from (no gradient): the same weights, but
/// held fixed when the test differentiates by the student's.
fn vct_reference(f: &HostMlp, enc: &HostMlp, enc_teacher: &HostMlp, d: &Draws, eps: &[Vec<f64>], enc_masks: &[[Vec<f64>; 2]], beta_eff: f64) -> Vec<f64> {
    let c = 0.00054 * (D as f64).sqrt();
    let x = rows(&batch());
    (0..N)
        .map(|i| {
            let (mu, s) = host_posterior(enc, &x[i], &enc_masks[i]);
            let z: Vec<f64> = (0..D).map(|k| mu[k] + s[k] * eps[i][k]).collect();
            let (mu_t, s_t) = host_posterior(enc_teacher, &x[i], &enc_masks[i]);
            let z_t: Vec<f64> = (0..D).map(|k| mu_t[k] + s_t[k] * eps[i][k]).collect();
            let student = precond(f, &add_scaled(&x[i], d.hi[i], &z), d.hi[i], Coeffs::Shifted(0.002), Some(&d.masks[i]));
            let teacher = precond(f, &add_scaled(&x[i], d.lo[i], &z_t), d.lo[i], Coeffs::Shifted(0.002), Some(&d.masks[i]));
            pseudo_huber_per_value(&student, &teacher, c) / (d.hi[i] - d.lo[i]) + beta_eff * host_kl(&mu, &s)
        })
        .collect()
}

/// VC's posterior on the host: the encoder reads x/σd with noise label 0; μ and
/// softplus(s) + 1e-8 are its two halves.
fn host_posterior(enc: &HostMlp, x: &[f64], masks: &[Vec<f64>; 2]) -> (Vec<f64>, Vec<f64>) {
    let xin: Vec<f64> = x.iter().map(|v| v / SIGMA_DATA).collect();
    let out = enc.forward(&xin, 0.0, Some(masks));
    (out[..D].to_vec(), out[D..].iter().map(|&v| softplus(v) + 1e-8).collect())
}

/// KL(N(μ, s²) ‖ N(0, I)) = Σ ½(μ² + s² − 1) − ln s.
fn host_kl(mu: &[f64], s: &[f64]) -> f64 {
    mu.iter().zip(s).map(|(m, s)| 0.5 * (m * m + s * s - 1.0) - s.ln()).sum()
}

struct VctCase {
    nets: Nets,
    d: Draws,
    eps: Vec<Vec<f64>>,
    enc_masks: Vec<[Vec<f64>; 2]>,
    beta_eff: f64,
}

fn vct_case(step: u64, total: u64) -> (VctCase, super::spec::Resolved) {
    let nets = nets(true);
    let resolved = super::spec::resolve(&from_toml("method = \"vct\"\nsteps = 1000"), D).unwrap();
    let d = draws(step, ict_levels(step, total), &batch(), 64);
    let grid = ict_grid(step, total);
    // The noise stream gives ε; the encoder's dropout has its own stream.
    let eps = d.noise.clone();
    let enc_masks = dropout_masks("encoder-dropout", step, 64);
    let n = grid.len();
    let beta_eff = 30.0 / (grid[n - 1] - grid[n - 2]);
    (VctCase { nets, d, eps, enc_masks, beta_eff }, resolved)
}

#[test]
fn vct_loss_recomputed() {
    let (step, total) = (500, 1000);
    let (case, resolved) = vct_case(step, total);
    let code: Vec<f64> = resolved.method.loss(&step_ctx(&case.nets, step, total), &batch()).unwrap().per_sample.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let (f, e) = (HostMlp::of(&case.nets.online), HostMlp::of(case.nets.encoder.as_ref().unwrap()));
    let reference = vct_reference(&f, &e, &e, &case.d, &case.eps, &case.enc_masks, case.beta_eff);
    assert_close(&code, &reference, "vct");
}

/// The encoder's gradient: the code's backward pass against central differences of the
/// recomputed loss in which only the student's z moves with the encoder (the teacher's is
/// detached, ict.py:136-139), for entries of every encoder layer.
#[test]
fn vct_encoder_gradient_recomputed() {
    let (step, total) = (500, 1000);
    let (case, resolved) = vct_case(step, total);
    let loss = resolved.method.loss(&step_ctx(&case.nets, step, total), &batch()).unwrap().per_sample.mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let f = HostMlp::of(&case.nets.online);
    let e = HostMlp::of(case.nets.encoder.as_ref().unwrap());
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let mut checked = 0;
    for (name, var) in case.nets.encoder.as_ref().unwrap().params.vars() {
        let g: Vec<f64> = grads.get(&var).unwrap().flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        // The four largest gradients of each tensor (small ones would pass under the floor).
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &idx in order.iter().take(4) {
            let h = 1e-4;
            let (mut plus, mut minus) = (e.clone(), e.clone());
            plus.p.get_mut(&name).unwrap()[idx] += h;
            minus.p.get_mut(&name).unwrap()[idx] -= h;
            let lp = mean(vct_reference(&f, &plus, &e, &case.d, &case.eps, &case.enc_masks, case.beta_eff));
            let lm = mean(vct_reference(&f, &minus, &e, &case.d, &case.eps, &case.enc_masks, case.beta_eff));
            let fd = (lp - lm) / (2.0 * h);
            assert!((g[idx] - fd).abs() <= 2e-3 * fd.abs().max(1e-2), "{name}[{idx}]: backward {}, central difference {fd}", g[idx]);
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked}");
}

/// EDM (NVlabs/edm training/loss.py:66-80): ln σ ~ N(−1.2, 1.2²), y + σn through EDM's
/// coefficients, λ(σ) = (σ² + σd²)/(σ·σd)² times the squared error summed over the sample.
#[test]
fn edm_loss_recomputed() {
    let nets = nets(false);
    let code = code_losses("method = \"edm\"", &nets, 7, 100);
    let mut rng = crate::rng::stream(SEED, "sigma", 7);
    let sigma: Vec<f64> = (0..N).map(|_| (-1.2 + 1.2 * rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng)).exp()).collect();
    let d = draws(7, (sigma.clone(), sigma.clone()), &batch(), 64);
    let f = HostMlp::of(&nets.online);
    let x = rows(&batch());
    let reference: Vec<f64> = (0..N)
        .map(|i| {
            let s = sigma[i];
            let lambda = (s * s + SIGMA_DATA * SIGMA_DATA) / (s * SIGMA_DATA).powi(2);
            lambda * sq_dist(&precond(&f, &add_scaled(&x[i], s, &d.noise[i]), s, Coeffs::Edm, Some(&d.masks[i])), &x[i])
        })
        .collect();
    assert_close(&code, &reference, "edm");
}

/// VCT on ECT's schedule with the linear-interpolation kernel (sony/vct models/ecm.py with
/// kernels/conditional_ot.py): t = min(e^(−1.1 + 2z), T) (ecm.py:113-114), r = r(t) with 8
/// stages over the run (ecm.py:70); x_t = (1 − t/T)·x + t·z; training coefficients with
/// a = 1 − t/T: c_in = 1/√(σd²a² + t²), c_skip = σd²a/(t² + σd²a²), c_out = t·σd·c_in
/// (conditional_ot.py:24-28); where r = 0 the target is x; the whole-sample L2 norm weighted by
/// 1/(t − r); + β/(T − r(T))·KL with β = 10 (ecm.py:154-158).
#[test]
fn vct_on_ect_with_the_li_kernel_recomputed() {
    let (step, total, t_max) = (150, 1000, 80.0);
    let nets = nets(true);
    let code = code_losses("method = \"vct\"\nschedule = \"ect\"\nvct_kernel = \"li\"\nsteps = 1000", &nets, step, total);
    // Stage ⌊150 / 125⌋ = 1.
    let d = draws(step, ect_levels(step, 1, t_max), &batch(), 64);
    assert!(d.lo.contains(&0.0) && d.lo.iter().any(|&r| r > 0.0));
    let enc_masks = dropout_masks("encoder-dropout", step, 64);
    let (f, e) = (HostMlp::of(&nets.online), HostMlp::of(nets.encoder.as_ref().unwrap()));
    let li = |x: &[f64], t: f64, masks: &[Vec<f64>; 2]| -> Vec<f64> {
        let sd = SIGMA_DATA;
        let a = 1.0 - t / t_max;
        let c_in = 1.0 / (sd * sd * a * a + t * t).sqrt();
        let (c_skip, c_out) = (sd * sd * a / (t * t + sd * sd * a * a), t * sd * c_in);
        let out = f.forward(&x.iter().map(|v| v * c_in).collect::<Vec<_>>(), t.ln() / 4.0, Some(masks));
        x.iter().zip(out).map(|(xi, fi)| c_skip * xi + c_out * fi).collect()
    };
    let beta_eff = 10.0 / (t_max - ect_r(t_max, 1));
    let x = rows(&batch());
    let reference: Vec<f64> = (0..N)
        .map(|i| {
            let (mu, s) = host_posterior(&e, &x[i], &enc_masks[i]);
            let z: Vec<f64> = (0..D).map(|k| mu[k] + s[k] * d.noise[i][k]).collect();
            let (t, r) = (d.hi[i], d.lo[i]);
            let point = |level: f64| -> Vec<f64> { (0..D).map(|k| (1.0 - level / t_max) * x[i][k] + level * z[k]).collect() };
            let student = li(&point(t), t, &d.masks[i]);
            let target = if r == 0.0 { x[i].clone() } else { li(&point(r), r, &d.masks[i]) };
            pseudo_huber(&student, &target, 0.0) / (t - r) + beta_eff * host_kl(&mu, &s)
        })
        .collect();
    assert_close(&code, &reference, "vct on ect with li");
}
