//! CD's loss against independent computations: the target point is the teacher's Heun step,
//! recomputed on the host in f64 from the closed-form denoiser; with the Euler solver and the
//! clean data as the "denoiser", CD is consistency training.

use super::*;
use crate::analytic::GaussianMixture;
use crate::methods::consistency::{ConsistencyLoss, Kernel, Target};
use crate::methods::distance::Distance;
use crate::methods::spec;
use crate::methods::{Method, StepCtx};
use crate::model::Weights;
use crate::nn::dropout::Dropout;
use crate::ode::{Denoiser, Solver};
use crate::precond::{Phase, Precond, PrecondKind};
use crate::train::distill::DistillConfig;
use candle_core::{DType, Device, Tensor};

fn net(seed: u64) -> Weights {
    let cfg = crate::nn::preset("mlp-toy", crate::data::schema::SampleKind::Points { dim: 2 }, 1, Some(0.0)).unwrap();
    Weights::init(&cfg, seed, &Device::Cpu).unwrap()
}

/// Two-Gaussian-like points.
fn batch(n: usize) -> Tensor {
    let z = crate::rng::normal_vec(&mut crate::rng::stream(2, "cd-batch", 0), 2 * n);
    let v: Vec<f32> = (0..n).flat_map(|i| [0.01 * z[2 * i], if i % 2 == 0 { 0.5 } else { -0.5 } + 0.01 * z[2 * i + 1]]).collect();
    Tensor::from_vec(v, (n, 2), &Device::Cpu).unwrap()
}

fn cd_loss(solver: Solver) -> ConsistencyLoss {
    ConsistencyLoss {
        schedule: Box::new(CdSchedule::new(18, 0.002, 80.0, 7.0, Weighting::Uniform, 0.5)),
        coupling: Box::new(crate::coupling::independent::Independent),
        target: Target::Ode(solver),
        distance: Distance::L2Squared,
        kernel: Kernel::Ve,
        precond: Precond { kind: PrecondKind::Cm, sigma_data: 0.5, sigma_min: 0.002, t_max: 80.0, phases: None },
        kl_beta: 0.0,
    }
}

fn ctx<'a>(w: &'a Weights, teacher: &'a dyn Denoiser, step: u64) -> StepCtx<'a> {
    StepCtx { seed: 11, progress: Progress { step, total: 100 }, net: &w.net, ema: &w.net, encoder: None, target: None, teacher: Some(teacher), labels: None, class_labels: None, pool: None, shard: None }
}

/// Heun from hi to lo on the host, in f64, straight from the closed form.
fn host_heun(g: &GaussianMixture, x: &[f64], hi: f64, lo: f64) -> Vec<f64> {
    let d1 = g.denoise_point(x, hi);
    let s1: Vec<f64> = x.iter().zip(&d1).map(|(a, b)| (a - b) / hi).collect();
    let e: Vec<f64> = x.iter().zip(&s1).map(|(a, s)| a + (lo - hi) * s).collect();
    let d2 = g.denoise_point(&e, lo);
    let s2: Vec<f64> = e.iter().zip(&d2).map(|(a, b)| (a - b) / lo).collect();
    (0..x.len()).map(|j| x[j] + (lo - hi) * 0.5 * (s1[j] + s2[j])).collect()
}

#[test]
fn the_cd_target_is_the_teachers_heun_step() {
    let g = GaussianMixture::two_gaussians();
    let w = net(4);
    let m = cd_loss(Solver::Heun);
    let x0 = batch(256);
    for step in [0, 7] {
        let c = ctx(&w, &g, step);
        // The loss's own draws: levels, then noise.
        let pairs = m.schedule.draw(256, c.progress, &mut crate::rng::stream(11, "sigma", step));
        let z = crate::coupling::step_noise(&c, &x0).unwrap();
        let x_hi = Kernel::Ve.noisy(&x0, &z, &pairs.hi).unwrap();
        let got = m.target_point(&c, &x_hi, &x0, &z, &pairs).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let rows = x_hi.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let want: Vec<Vec<f64>> = rows.iter().zip(pairs.hi.iter().zip(&pairs.lo)).map(|(r, (&h, &l))| host_heun(&g, r, h, l)).collect();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 2e-6 * (1.0 + v.abs() + rows[i][0].abs().max(rows[i][1].abs())), "sample {i} (σ {} → {}): {u} vs {v}", pairs.hi[i], pairs.lo[i]);
            }
        }

        // The loss is ‖f_θ(x_hi, σ_hi) − f_θ(x_lo, σ_lo)‖² with that target point.
        let loss = m.loss(&c, &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
        let x_lo = Tensor::from_vec(want.concat().iter().map(|&v| v as f32).collect::<Vec<_>>(), (256, 2), &Device::Cpu).unwrap();
        let f = |x: &Tensor, s: &[f64]| m.precond.apply(&w.net, x, s, Phase::Train, &mut Dropout::off()).unwrap();
        let d = Distance::L2Squared.per_sample(&f(&x_hi, &pairs.hi), &f(&x_lo, &pairs.lo)).unwrap().to_vec1::<f32>().unwrap();
        for (i, (a, b)) in loss.iter().zip(&d).enumerate() {
            assert!((a - b).abs() <= 1e-4 * b.max(1e-3), "sample {i}: loss {a} vs {b}");
        }
    }
}

#[test]
fn cd_with_euler_and_the_clean_data_as_denoiser_is_consistency_training() {
    let w = net(5);
    let x0 = batch(128);
    let oracle = |_: &Tensor, _: &[f64]| Ok(x0.clone());
    let cd = cd_loss(Solver::Euler);
    let ct = ConsistencyLoss { target: Target::Standard, ..cd_loss(Solver::Euler) };
    for step in [0, 3] {
        let a = cd.loss(&ctx(&w, &oracle, step), &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
        let b = ct.loss(&ctx(&w, &oracle, step), &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
        for (i, (u, v)) in a.iter().zip(&b).enumerate() {
            assert!((u - v).abs() <= 1e-4 * v.max(1e-3), "step {step}, sample {i}: {u} vs {v}");
        }
    }
}

#[test]
fn the_target_network_replaces_the_online_one() {
    let g = GaussianMixture::two_gaussians();
    let (w, other) = (net(6), net(7));
    let copy = w.duplicate(&crate::nn::preset("mlp-toy", crate::data::schema::SampleKind::Points { dim: 2 }, 1, Some(0.0)).unwrap(), &Device::Cpu).unwrap();
    let m = cd_loss(Solver::Heun);
    let x0 = batch(64);
    let with = |t: Option<&Weights>| {
        let c = StepCtx { target: t.map(|t| &t.net), ..ctx(&w, &g, 0) };
        m.loss(&c, &x0).unwrap().per_sample.to_vec1::<f32>().unwrap()
    };
    assert_eq!(with(None), with(Some(&copy)), "μ = 0 is the current weights");
    assert_ne!(with(None), with(Some(&other)));
}

#[test]
fn the_schedule_draws_adjacent_levels_uniformly() {
    let s = CdSchedule::new(18, 0.002, 80.0, 7.0, Weighting::Uniform, 0.5);
    assert_eq!((s.sigmas.len(), s.sigmas[0], s.sigmas[17]), (18, 0.002, 80.0));
    let p = s.draw(17_000, Progress { step: 0, total: 1 }, &mut crate::rng::stream(0, "sigma", 0));
    let mut counts = [0usize; 17];
    for (h, l) in p.hi.iter().zip(&p.lo) {
        let i = s.sigmas.iter().position(|v| v == l).expect("lo on the grid");
        assert_eq!(*h, s.sigmas[i + 1], "hi is the next level up");
        counts[i] += 1;
    }
    assert!(p.weight.iter().all(|&w| w == 1.0));
    // 1000 expected per interval; ±5 standard deviations (√(1000·16/17) ≈ 31).
    assert!(counts.iter().all(|&c| (845..=1155).contains(&c)), "{counts:?}");
}

/// `distill`'s defaults resolve to exactly this loss: CD's grid, Heun, l2, uniform weights,
/// the σ_min-shifted consistency preconditioning.
#[test]
fn the_default_config_resolves_to_cd() {
    let g = GaussianMixture::two_gaussians();
    let w = net(8);
    let r = spec::resolve_cd(&DistillConfig::default(), 2).unwrap();
    assert_eq!((r.schedule, r.method.precond()), ("cd", cd_loss(Solver::Heun).precond));
    let x0 = batch(64);
    let a = r.method.loss(&ctx(&w, &g, 2), &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
    let b = cd_loss(Solver::Heun).loss(&ctx(&w, &g, 2), &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
    for bad in [DistillConfig { cd_levels: 1, ..Default::default() }, DistillConfig { target_ema: 1.0, ..Default::default() }] {
        let e = spec::resolve_cd(&bad, 2).err().expect("rejected").to_string();
        assert!(e.contains("cd_levels") || e.contains("target_ema"), "{e}");
    }
}
