//! The papers' own measurements, on the 2-D mixture toys, in evaluate-fid's report:
//!
//! - **Transport cost** (GC, Issenhuth et al. 2025: generator-induced trajectories pair noise
//!   with nearer data): a consistency model induces the coupling (x̂, z) with
//!   x̂ = f_θ(x + σz, σ); its cost E‖x̂ − z‖² per noise level σ, beside the independent
//!   coupling's E‖x − z‖² and the exact consistency function's (the closed-form denoiser's
//!   probability-flow ODE solved from σ to 0), with E‖x̂ − x̂*‖² (the distance to the exact
//!   endpoints) and the endpoints' marginal (share near a mode, smallest mode's share), so that a
//!   generator collapsed onto one mode cannot look good.
//! - **VCT's learned coupling**: the encoder's posterior q(z | x) per mode (mean and scale of
//!   each coordinate) and the aggregate posterior's moments against N(0, I).
//! - **SCT's target**: the squared error of the target's clean estimate around E[x | x_t] per t,
//!   ECT's (the sample's own image) against SCT's (the batch-weighted mean, `methods/sct.rs`).
//!   Both target points are x_t − (t − r)/t·(x_t − x̂₀), so their errors around the Euler step
//!   taken with the exact denoiser are (1 − r/t)² times these, whatever r.
//!
//! Everything is computed on the toy's test split with noise from its own seeded streams; the
//! mixture (centres, mode weights, common std) is fitted to that split.

use crate::analytic::GaussianMixture;
use crate::coupling::vc::posterior;
use crate::methods::sct::reference_mean;
use crate::model::LoadedModel;
use crate::nn::dropout::Dropout;
use crate::nn::ops::to_f64_vec;
use crate::ode::{self, Solver};
use crate::precond::Phase;
use crate::methods::spec::KernelSpec;
use crate::metrics::toy::mode_coverage;
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;

/// The noise levels measured (those above a model's σ_max are skipped for it).
pub const LEVELS: &[f64] = &[0.05, 0.2, 0.5, 1.0, 2.0, 5.0];
/// Points per level.
pub const POINTS: usize = 2000;
/// SCT's reference set in the measurement: a batch of the toy recipe's size.
pub const SCT_BATCH: usize = 256;
/// Heun levels of the exact consistency function, from σ down to σ_min (then to 0).
const EXACT_LEVELS: usize = 256;

#[derive(Debug, Clone, Serialize)]
pub struct ModelTransport {
    pub model: String,
    /// E‖x̂ − z‖².
    pub cost: f64,
    /// E‖x̂ − x̂*‖².
    pub to_exact: f64,
    pub near: f64,
    pub min_mode: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransportRow {
    pub sigma: f64,
    pub independent: f64,
    pub exact: f64,
    pub exact_near: f64,
    pub models: Vec<ModelTransport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PosteriorRow {
    pub model: String,
    /// The mode's name, or "aggregate".
    pub mode: String,
    pub points: usize,
    pub mean: [f64; 2],
    /// Per mode: the mean posterior scale; aggregate: the standard deviation of the aggregate
    /// posterior (√(E[s²] + Var μ)).
    pub scale: [f64; 2],
    /// Aggregate only: KL(N(mean, diag scale²) ‖ N(0, I)) of its moment-matched Gaussian.
    pub kl: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub t: f64,
    /// E‖x − E[x | x_t]‖²: ECT's clean estimate is the sample itself.
    pub ect: f64,
    /// E‖x̂₀ − E[x | x_t]‖² with the batch as SCT's references.
    pub sct: f64,
    /// The same with larger pools (`SCT_POOLS`, the batch included): (size, error).
    pub pools: Vec<(usize, f64)>,
}

/// SCT's reference pools measured beside the batch.
pub const SCT_POOLS: &[usize] = &[1024, 4096];

/// What a model's training logged, from its manifest (means over the second half of training).
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRow {
    pub model: String,
    /// sony/vct's grad_variance (`log_grad_variance = true`).
    pub grad_variance: Option<f64>,
    /// GC: (‖x̂ − z‖², ‖x − z‖²) of the generated samples per σ_lo bin [0, 0.2), [0.2, 1), [1, ∞).
    pub transport: [Option<(f64, f64)>; 3],
    /// OT: the batch's mean ‖x − σ_max·z‖² after and before the assignment.
    pub ot: Option<(f64, f64)>,
}

impl TrainingRow {
    pub fn from_manifest(model: &str, metrics: &serde_json::Value) -> Option<TrainingRow> {
        let get = |k: &str| metrics.get(k).and_then(serde_json::Value::as_f64);
        let pair = |a: &str, b: &str| get(a).zip(get(b));
        let row = TrainingRow {
            model: model.to_string(),
            grad_variance: get("grad_variance"),
            transport: [
                pair("transport_gc_lo", "transport_ic_lo"),
                pair("transport_gc_mid", "transport_ic_mid"),
                pair("transport_gc_hi", "transport_ic_hi"),
            ],
            ot: pair("ot_cost", "ot_cost_independent"),
        };
        (row.grad_variance.is_some() || row.transport.iter().any(Option::is_some) || row.ot.is_some()).then_some(row)
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ToyMeasures {
    pub transport: Vec<TransportRow>,
    pub posteriors: Vec<PosteriorRow>,
    pub target: Vec<TargetRow>,
    pub training: Vec<TrainingRow>,
}

/// The mixture behind the test split: the toy's centres, the share of points nearest each, and
/// the common std pooled over coordinates.
pub fn fit_mixture(points: &[[f64; 2]], centres: &[[f64; 2]]) -> GaussianMixture {
    let mut counts = vec![0usize; centres.len()];
    let mut ss = 0.0;
    for p in points {
        let k = nearest(p, centres);
        counts[k] += 1;
        ss += (p[0] - centres[k][0]).powi(2) + (p[1] - centres[k][1]).powi(2);
    }
    let n = points.len().max(1) as f64;
    GaussianMixture {
        means: centres.iter().map(|c| c.to_vec()).collect(),
        weights: counts.iter().map(|&c| (c as f64 / n).max(1e-12)).collect(),
        std: (ss / (2.0 * n)).sqrt(),
    }
}

fn nearest(p: &[f64; 2], centres: &[[f64; 2]]) -> usize {
    let d = |c: &[f64; 2]| (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2);
    (0..centres.len()).min_by(|&a, &b| d(&centres[a]).total_cmp(&d(&centres[b]))).unwrap_or(0)
}

fn tensor(points: &[[f64; 2]], device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = points.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
    Ok(Tensor::from_vec(v, (points.len(), 2), device)?)
}

fn points(t: &Tensor) -> Result<Vec<[f64; 2]>> {
    Ok(to_f64_vec(t)?.chunks(2).map(|c| [c[0], c[1]]).collect())
}

fn mean_sq(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// The exact consistency function at σ: Heun on the closed-form denoiser from σ to 0.
pub fn exact_endpoints(mixture: &GaussianMixture, x_sigma: &Tensor, sigma: f64) -> Result<Tensor> {
    let grid = ode::sampling_grid(0.002f64.min(sigma / 2.0), sigma, EXACT_LEVELS);
    let n = x_sigma.dim(0)?;
    let mut x = x_sigma.to_dtype(candle_core::DType::F64)?;
    for w in grid.windows(2) {
        x = ode::step(mixture, Solver::Heun, &x, &vec![w[0]; n], &vec![w[1]; n])?;
    }
    Ok(x)
}

/// The transport-cost table for the consistency models among `models` (label, model).
pub fn transport(test: &[[f64; 2]], centres: &[[f64; 2]], models: &[(String, &LoadedModel)], seed: u64, device: &Device) -> Result<Vec<TransportRow>> {
    let mixture = fit_mixture(test, centres);
    let x: Vec<[f64; 2]> = test.iter().take(POINTS).copied().collect();
    let n = x.len();
    let x_t = tensor(&x, device)?;
    let mut rows = Vec::new();
    for (li, &sigma) in LEVELS.iter().enumerate() {
        let z_t = crate::rng::per_sample_normal(seed, &format!("transport-{li}"), 0, n, &[2], device)?;
        let z = points(&z_t)?;
        let x_sigma = x_t.add(&(&z_t * sigma)?)?;
        let exact = points(&exact_endpoints(&mixture, &x_sigma, sigma)?)?;
        let mut row = TransportRow {
            sigma,
            independent: mean_sq(&x, &z),
            exact: mean_sq(&exact, &z),
            exact_near: mode_coverage(&exact, centres, 0.1).near,
            models: Vec::new(),
        };
        for (label, m) in models {
            // The VE kernel's coupling; LI-kernel models pair noise differently and are left out.
            if m.spec.is_denoiser() || sigma > m.spec.sigma_max || m.spec.kernel != KernelSpec::Ve {
                continue;
            }
            let xhat = m.spec.precond.apply(&m.net.net, &x_sigma, &vec![sigma; n], Phase::Eval, &mut Dropout::off())?.detach();
            let xhat = points(&xhat)?;
            let cover = mode_coverage(&xhat, centres, 0.1);
            row.models.push(ModelTransport {
                model: label.clone(),
                cost: mean_sq(&xhat, &z),
                to_exact: mean_sq(&xhat, &exact),
                near: cover.near,
                min_mode: cover.per_mode.iter().copied().fold(f64::INFINITY, f64::min),
            });
        }
        rows.push(row);
    }
    Ok(rows)
}

/// VCT's encoder posterior per mode and in aggregate, on the test split.
pub fn posteriors(test: &[[f64; 2]], centres: &[[f64; 2]], mode_names: &[String], label: &str, m: &LoadedModel, device: &Device) -> Result<Vec<PosteriorRow>> {
    let Some(enc) = &m.encoder else { return Ok(Vec::new()) };
    let x: Vec<[f64; 2]> = test.iter().take(POINTS).copied().collect();
    let (mean, scale) = posterior(&enc.net, &tensor(&x, device)?, m.spec.precond.sigma_data, &mut Dropout::off())?;
    let (mean, scale) = (points(&mean)?, points(&scale)?);
    let mut rows = Vec::new();
    let avg = |idx: &[usize], v: &[[f64; 2]], f: &dyn Fn(f64) -> f64| -> [f64; 2] {
        let n = idx.len().max(1) as f64;
        [idx.iter().map(|&i| f(v[i][0])).sum::<f64>() / n, idx.iter().map(|&i| f(v[i][1])).sum::<f64>() / n]
    };
    for (k, _) in centres.iter().enumerate() {
        let idx: Vec<usize> = (0..x.len()).filter(|&i| nearest(&x[i], centres) == k).collect();
        rows.push(PosteriorRow {
            model: label.to_string(),
            mode: mode_names.get(k).cloned().unwrap_or_else(|| format!("mode {k}")),
            points: idx.len(),
            mean: avg(&idx, &mean, &|v| v),
            scale: avg(&idx, &scale, &|v| v),
            kl: None,
        });
    }
    let all: Vec<usize> = (0..x.len()).collect();
    let m1 = avg(&all, &mean, &|v| v);
    let m2 = avg(&all, &mean, &|v| v * v);
    let s2 = avg(&all, &scale, &|v| v * v);
    let var = [s2[0] + m2[0] - m1[0] * m1[0], s2[1] + m2[1] - m1[1] * m1[1]];
    let kl = (0..2).map(|j| 0.5 * (var[j] + m1[j] * m1[j] - 1.0 - var[j].ln())).sum();
    rows.push(PosteriorRow { model: label.to_string(), mode: "aggregate".into(), points: x.len(), mean: m1, scale: [var[0].sqrt(), var[1].sqrt()], kl: Some(kl) });
    Ok(rows)
}

/// SCT's clean estimate against ECT's, per t: batches of `SCT_BATCH` test points, one noise
/// draw each, the error of each estimate around the exact posterior mean; SCT with the batch
/// as references, and with each pool of `SCT_POOLS` (the batch and other test points, drawn per
/// batch from the stream (seed, "target-pool-<size>", batch)).
pub fn target_variance(test: &[[f64; 2]], centres: &[[f64; 2]], seed: u64, device: &Device) -> Result<Vec<TargetRow>> {
    let mixture = fit_mixture(test, centres);
    let batches = (test.len().min(POINTS) / SCT_BATCH).max(1);
    let pools: Vec<usize> = SCT_POOLS.iter().copied().filter(|&p| p <= test.len()).collect();
    let mut rows = Vec::new();
    for (li, &t) in LEVELS.iter().enumerate() {
        let (mut ect, mut sct, mut count) = (0.0, 0.0, 0usize);
        let mut pooled = vec![0.0; pools.len()];
        for b in 0..batches {
            let first = b * SCT_BATCH;
            let x: Vec<[f64; 2]> = test.iter().skip(first).take(SCT_BATCH).copied().collect();
            let n = x.len();
            let x_t = tensor(&x, device)?;
            let eps = crate::rng::per_sample_normal(seed, &format!("target-{li}"), first as u64, n, &[2], device)?;
            let noisy = points(&x_t.add(&(&eps * t)?)?)?;
            let exact: Vec<[f64; 2]> = noisy.iter().map(|p| {
                let d = mixture.denoise_point(p, t);
                [d[0], d[1]]
            }).collect();
            let flat = |p: &[[f64; 2]]| p.iter().flat_map(|q| *q).collect::<Vec<f64>>();
            let as_points = |v: Vec<f64>| v.chunks(2).map(|c| [c[0], c[1]]).collect::<Vec<_>>();
            let ts = vec![t; n];
            let x0_hat = as_points(reference_mean(&flat(&noisy), &ts, &flat(&x), 2, None));
            ect += mean_sq(&x, &exact) * n as f64;
            sct += mean_sq(&x0_hat, &exact) * n as f64;
            let others: Vec<usize> = (0..test.len()).filter(|i| !(first..first + n).contains(i)).collect();
            for (k, &size) in pools.iter().enumerate() {
                let extra = rand::seq::index::sample(&mut crate::rng::stream(seed, &format!("target-pool-{size}"), b as u64), others.len(), size.saturating_sub(n).min(others.len()));
                let mut refs = x.clone();
                refs.extend(extra.iter().map(|i| test[others[i]]));
                let est = as_points(reference_mean(&flat(&noisy), &ts, &flat(&refs), 2, None));
                pooled[k] += mean_sq(&est, &exact) * n as f64;
            }
            count += n;
        }
        let pools = pools.iter().zip(&pooled).map(|(&p, e)| (p, e / count as f64)).collect();
        rows.push(TargetRow { t, ect: ect / count as f64, sct: sct / count as f64, pools });
    }
    Ok(rows)
}

/// The models of the transport table, in order of first appearance.
fn transport_labels(t: &ToyMeasures) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for m in t.transport.iter().flat_map(|r| &r.models) {
        if !labels.contains(&m.model) {
            labels.push(m.model.clone());
        }
    }
    labels
}

fn g(x: f64) -> String {
    if x == 0.0 || (1e-2..1e4).contains(&x.abs()) { format!("{x:.4}") } else { format!("{x:.2e}") }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// A table with one row per noise level: the leading cells, then one cell per model ("–" where
/// the model was not measured at that level).
fn per_model_table(s: &mut String, head: &[&str], labels: &[String], model_align: &str, t: &ToyMeasures, lead: impl Fn(&TransportRow) -> Vec<String>, cell: impl Fn(&ModelTransport) -> String) {
    use std::fmt::Write as _;
    let header: Vec<String> = head.iter().map(|h| h.to_string()).chain(labels.iter().cloned()).collect();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}{}", "---:|".repeat(head.len()), format!("{model_align}|").repeat(labels.len()));
    for r in &t.transport {
        let models = labels.iter().map(|l| r.models.iter().find(|m| &m.model == l).map_or_else(|| "–".to_string(), &cell));
        let cells: Vec<String> = lead(r).into_iter().chain(models).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
}

/// The Markdown section.
pub fn markdown(t: &ToyMeasures) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if !t.transport.is_empty() {
        let labels = transport_labels(t);
        let _ = writeln!(s, "\n#### Noise–data transport cost E‖x̂ − z‖², x̂ = f(x + σz, σ)\n");
        let _ = writeln!(s, "The coupling each consistency model induces, against the independent coupling (x, z) and the exact consistency function's (the closed-form denoiser's ODE from σ to 0); {POINTS} test points per level. GC's claim: its endpoints sit nearer the exact curve than the independent line. Models on VCT's LI kernel pair noise and data differently and are left out.\n");
        per_model_table(&mut s, &["σ", "independent", "exact"], &labels, "---:", t, |r| vec![r.sigma.to_string(), g(r.independent), g(r.exact)], |m| g(m.cost));
        let _ = writeln!(s, "\nEndpoints x̂: E‖x̂ − x̂*‖² to the exact endpoints / share within 0.1 of a mode / smallest mode's share (exact: its share near a mode):\n");
        per_model_table(&mut s, &["σ", "exact"], &labels, "---", t, |r| vec![r.sigma.to_string(), pct(r.exact_near)], |m| format!("{} / {} / {}", g(m.to_exact), pct(m.near), pct(m.min_mode)));
    }
    if !t.training.is_empty() {
        let _ = writeln!(s, "\n#### Measured while training (mean over the second half)\n");
        let _ = writeln!(s, "grad variance: sony/vct's `grad_variance`, the variance over all entries of the network's raw gradient (VC against IC: lower is the paper's claim). GC: ‖x̂ − z‖² of the generated endpoints against ‖x − z‖² for the same samples and noise, per σ_lo bin. OT: the batch's mean ‖x − σ_max·z‖² after / before the assignment.\n");
        let _ = writeln!(s, "| model | grad variance | GC σ < 0.2 | GC 0.2–1 | GC ≥ 1 | OT cost |\n|---|---:|---:|---:|---:|---:|");
        for r in &t.training {
            let tr = |b: &Option<(f64, f64)>| b.map(|(a, c)| format!("{} vs {}", g(a), g(c))).unwrap_or_else(|| "–".into());
            let gv = r.grad_variance.map(g).unwrap_or_else(|| "–".into());
            let _ = writeln!(s, "| {} | {} | {} | {} | {} | {} |", r.model, gv, tr(&r.transport[0]), tr(&r.transport[1]), tr(&r.transport[2]), tr(&r.ot));
        }
    }
    if !t.posteriors.is_empty() {
        let _ = writeln!(s, "\n#### VCT: the encoder's posterior q(z | x)\n");
        let _ = writeln!(s, "Per mode: the mean of the posterior means and scales over the mode's test points; aggregate: the moments of the mixture of posteriors, and the KL of their Gaussian to N(0, I). The modes should get opposite-signed means along the axis that separates them.\n");
        let _ = writeln!(s, "| model | mode | points | mean | scale | KL to N(0, I) |\n|---|---|---:|---|---|---:|");
        for r in &t.posteriors {
            let kl = r.kl.map(g).unwrap_or_else(|| "–".into());
            let _ = writeln!(s, "| {} | {} | {} | ({}, {}) | ({}, {}) | {} |", r.model, r.mode, r.points, g(r.mean[0]), g(r.mean[1]), g(r.scale[0]), g(r.scale[1]), kl);
        }
    }
    if !t.target.is_empty() {
        let _ = writeln!(s, "\n#### SCT: the target's variance\n");
        let _ = writeln!(s, "E‖x̂₀ − E[x | x_t]‖² per t: ECT's clean estimate is the sample itself, SCT's the softmax-weighted mean of its references (its own image included): a batch of {SCT_BATCH}, or a larger pool (the batch and other test points). The target point's squared error around the Euler step taken with the exact denoiser is (1 − r/t)² times this, for any of them.\n");
        let sizes: Vec<usize> = t.target[0].pools.iter().map(|p| p.0).collect();
        let head: String = sizes.iter().map(|p| format!(" SCT, pool {p} |")).collect();
        let _ = writeln!(s, "| t | ECT | SCT, batch {SCT_BATCH} |{head} SCT batch / ECT |\n|---:|---:|---:|{}---:|", "---:|".repeat(sizes.len()));
        for r in &t.target {
            let pools: String = r.pools.iter().map(|p| format!(" {} |", g(p.1))).collect();
            let _ = writeln!(s, "| {} | {} | {} |{pools} {} |", r.t, g(r.ect), g(r.sct), g(r.sct / r.ect));
        }
    }
    s
}

/// The transport cost against log₁₀ σ: the independent line, the exact curve, each model.
pub fn transport_svg(t: &ToyMeasures, dataset: &str) -> anyhow::Result<String> {
    use crate::report::plot::{line_plot_svg, Series};
    const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let at = |f: &dyn Fn(&TransportRow) -> Option<f64>| -> Vec<(f64, f64)> { t.transport.iter().filter_map(|r| f(r).map(|v| (r.sigma.log10(), v))).collect() };
    let mut series = vec![
        Series { name: "independent (x, z)".into(), points: at(&|r| Some(r.independent)), color: "#7f7f7f" },
        Series { name: "exact consistency function".into(), points: at(&|r| Some(r.exact)), color: "#000000" },
    ];
    for (i, l) in transport_labels(t).iter().enumerate() {
        series.push(Series { name: l.clone(), points: at(&|r| r.models.iter().find(|m| &m.model == l).map(|m| m.cost)), color: COLORS[i % COLORS.len()] });
    }
    line_plot_svg(&format!("Noise–data transport cost on {dataset}"), "log₁₀ σ", "E‖x̂ − z‖²", &series, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_points(n: usize) -> Vec<[f64; 2]> {
        let d = crate::data::sources::toy2d::generate("two-gaussians", 1, n, 0.01, 3).unwrap();
        let crate::data::schema::Samples::Points(p) = &d.test.samples else { unreachable!() };
        p.chunks(2).map(|c| [c[0] as f64, c[1] as f64]).collect()
    }

    #[test]
    fn the_mixture_is_fitted_to_the_split() {
        let g = fit_mixture(&toy_points(4000), &[[0.0, 0.5], [0.0, -0.5]]);
        assert!((g.std - 0.01).abs() < 5e-4, "{}", g.std);
        assert!((g.weights[0] - 0.5).abs() < 0.03, "{:?}", g.weights);
    }

    /// For one Gaussian N(μ, s²I) the consistency function is affine:
    /// f*(x_σ, σ) = μ + s/√(s² + σ²)·(x_σ − μ).
    #[test]
    fn exact_endpoints_of_one_gaussian() {
        let (mu, s) = ([0.3, -0.2], 0.4);
        let g = GaussianMixture { means: vec![mu.to_vec()], weights: vec![1.0], std: s };
        for sigma in [0.05, 1.0, 5.0] {
            let x = Tensor::new(&[[1.5f64, 0.7], [-2.0, 0.1]], &Device::Cpu).unwrap();
            let got: Vec<Vec<f64>> = exact_endpoints(&g, &x, sigma).unwrap().to_vec2().unwrap();
            let k = s / (s * s + sigma * sigma).sqrt();
            for (row, want) in got.iter().zip([[1.5, 0.7], [-2.0, 0.1]]) {
                for j in 0..2 {
                    let w = mu[j] + k * (want[j] - mu[j]);
                    assert!((row[j] - w).abs() < 1e-4 * w.abs().max(1.0), "σ {sigma}: {} vs {w}", row[j]);
                }
            }
        }
    }

    /// ECT's clean estimate errs by Var[x | x_t]: ≈ 0 where x_t tells the mode (small t), ≈ 0.25
    /// where it cannot (t = 5: the modes at ±0.5 are equally likely); SCT's batch average
    /// removes most of the latter.
    #[test]
    fn sct_target_varies_less_where_the_mode_is_ambiguous() {
        let rows = target_variance(&toy_points(2048), &[[0.0, 0.5], [0.0, -0.5]], 0, &Device::Cpu).unwrap();
        let first = &rows[0];
        assert!(first.ect < 1e-3 && first.sct < 1e-3, "{first:?}");
        let last = rows.last().unwrap();
        assert_eq!(last.t, 5.0);
        assert!((0.2..0.27).contains(&last.ect), "{last:?}");
        assert!(last.sct < 0.1 * last.ect, "{last:?}");
        // A larger pool estimates E[x | x_t] better where many references carry weight.
        assert_eq!(last.pools.iter().map(|p| p.0).collect::<Vec<_>>(), [1024]);
        assert!(last.pools[0].1 < 0.5 * last.sct, "{last:?}");
    }
}

