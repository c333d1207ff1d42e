//! Identities between methods, checked bit for bit on a random network and batch.

use super::consistency::{ConsistencyLoss, Kernel, PairSchedule, Pairs, Target};
use super::distance::{Distance, Weighting};
use super::ect::EctSchedule;
use super::ict::IctSchedule;
use super::sct::{Boundary, References, Stable};
use super::{Method, Progress, StepCtx};
use crate::coupling::{gc::Gc, independent::Independent, Coupling};
use crate::data::schema::SampleKind;
use crate::model::Weights;
use crate::precond::{Precond, PrecondKind};
use candle_core::{DType, Device, Tensor};

fn net(dropout: f64) -> Weights {
    let cfg = crate::nn::preset("mlp-toy", SampleKind::Points { dim: 2 }, 1, Some(dropout)).unwrap();
    Weights::init(&cfg, 7, &Device::Cpu).unwrap()
}

fn batch() -> Tensor {
    (crate::rng::normal(&mut crate::rng::stream(1, "batch", 0), (64, 2), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap()
}

fn losses(m: &dyn Method, w: &Weights, ema: &Weights, step: u64) -> Vec<f32> {
    let ctx = StepCtx { seed: 3, progress: Progress { step, total: 1000 }, net: &w.net, ema: &ema.net, encoder: None, target: None, teacher: None, labels: None, class_labels: None, pool: None, shard: None };
    m.loss(&ctx, &batch()).unwrap().per_sample.to_vec1().unwrap()
}

fn pc(kind: PrecondKind, sigma_min: f64) -> Precond {
    Precond { kind, sigma_data: 0.5, sigma_min, t_max: 80.0, phases: None }
}

fn loss_with(schedule: Box<dyn PairSchedule>, coupling: Box<dyn Coupling>, target: Target, distance: Distance, precond: Precond) -> ConsistencyLoss {
    ConsistencyLoss { schedule, coupling, target, distance, kernel: Kernel::Ve, precond, kl_beta: 0.0 }
}

fn ect(refs: Option<References>) -> ConsistencyLoss {
    let target = refs.map(|references| Target::Stable(Stable { references, pool_extra: 0, boundary: Boundary::Mean, by_class: false })).unwrap_or(Target::Standard);
    let sched = EctSchedule { stage_steps: 200.0, ..EctSchedule::default() };
    loss_with(Box::new(sched), Box::new(Independent), target, Distance::PseudoHuber { c: 0.0 }, pc(PrecondKind::Ect, 0.003))
}

#[test]
fn sct_with_only_the_own_image_is_ect() {
    let (w, ema) = (net(0.1), net(0.0));
    for step in [0, 350, 999] {
        let e = losses(&ect(None), &w, &ema, step);
        let s = losses(&ect(Some(References::Own)), &w, &ema, step);
        assert_eq!(e, s, "step {step}");
        // With the batch as references the target moves where t is large.
        let b = losses(&ect(Some(References::Batch)), &w, &ema, step);
        assert_ne!(e, b, "step {step}");
    }
}

fn ict(coupling: Box<dyn Coupling>) -> ConsistencyLoss {
    loss_with(Box::new(IctSchedule::default()), coupling, Target::Standard, Distance::PseudoHuber { c: 0.00054 * 2f64.sqrt() }, pc(PrecondKind::Cm, 0.002))
}

#[test]
fn gc_keeping_every_sample_independent_is_ict() {
    let (w, ema) = (net(0.2), net(0.0));
    for step in [0, 500, 999] {
        let i = losses(&ict(Box::new(Independent)), &w, &ema, step);
        let g = losses(&ict(Box::new(Gc { keep: 1.0, keep_end: None })), &w, &ema, step);
        assert_eq!(i, g, "step {step}");
        let all_gc = losses(&ict(Box::new(Gc { keep: 0.0, keep_end: None })), &w, &ema, step);
        assert_ne!(i, all_gc, "step {step}");
    }
    // μ anneals linearly.
    assert_eq!(Gc { keep: 0.5, keep_end: Some(0.1) }.keep_at(500, 1000), 0.3);
}

/// A schedule whose pairs have σ_hi = σ_lo: with one noise draw and one dropout mask shared by
/// student and teacher, both passes compute the same function of the same input.
struct SameLevel;

impl PairSchedule for SameLevel {
    fn draw(&self, n: usize, _: Progress, _: &mut rand_chacha::ChaCha8Rng) -> Pairs {
        let mut p = Pairs::with_capacity(n);
        for i in 0..n {
            let s = 0.1 + i as f64 * 0.05;
            p.push(s, s, 1.0);
        }
        p
    }
    fn kl_scale(&self, _: Progress) -> f64 {
        1.0
    }
    fn sigma_min(&self) -> f64 {
        0.002
    }
}

#[test]
fn student_and_teacher_share_noise_and_dropout() {
    let (w, ema) = (net(0.5), net(0.0));
    let m = loss_with(Box::new(SameLevel), Box::new(Independent), Target::Standard, Distance::L2Squared, pc(PrecondKind::Cm, 0.002));
    let l = losses(&m, &w, &ema, 5);
    assert!(l.iter().all(|&v| v == 0.0), "{l:?}");
}

#[test]
fn ect_boundary_replaces_the_teacher_by_the_clean_sample() {
    // Stage 0 (steps < stage_steps) and every t below ≈ 1.95 gives r = 0: the target is x.
    let (w, ema) = (net(0.0), net(0.0));
    let m = ect(None);
    let ctx = StepCtx { seed: 3, progress: Progress { step: 0, total: 1000 }, net: &w.net, ema: &ema.net, encoder: None, target: None, teacher: None, labels: None, class_labels: None, pool: None, shard: None };
    let x0 = batch();
    let mut rng = crate::rng::stream(3, "sigma", 0);
    let pairs = m.schedule.draw(64, ctx.progress, &mut rng);
    let boundary: Vec<usize> = (0..64).filter(|&i| pairs.lo[i] == 0.0).collect();
    assert!(boundary.len() > 40, "most t are small in stage 0");
    let got = m.loss(&ctx, &x0).unwrap().per_sample.to_vec1::<f32>().unwrap();
    // Recompute those samples' loss against x directly.
    let z = crate::coupling::step_noise(&ctx, &x0).unwrap();
    let x_hi = Kernel::Ve.noisy(&x0, &z, &pairs.hi).unwrap();
    let mut drop = crate::nn::dropout::Dropout::record(crate::rng::stream(3, "dropout", 0));
    let student = m.precond.apply(&w.net, &x_hi, &pairs.hi, crate::precond::Phase::Train, &mut drop).unwrap();
    let d = Distance::PseudoHuber { c: 0.0 }.per_sample(&student, &x0).unwrap().to_vec1::<f32>().unwrap();
    for i in boundary {
        let want = d[i] * (1.0 / (pairs.hi[i] - pairs.lo[i])) as f32;
        assert_eq!(got[i], want, "sample {i}");
    }
}

/// VCT's rescaled KL weight: β / (σ_N − σ_{N−1}) on the iCT schedule, β / (t − r(t)) at t = 80
/// on ECT's (methods.md §8): 30 → ≈ 0.87 at N = 11; 10 → 0.25, 0.5, …, 32 over 8 stages.
#[test]
fn vct_beta_rescaling() {
    let ict = IctSchedule::default();
    let b0 = 30.0 * ict.kl_scale(Progress { step: 0, total: 400_000 });
    assert!((b0 - 30.0 / (80.0 - 45.3137340752)).abs() < 1e-9 && (b0 - 0.865).abs() < 1e-3, "{b0}");
    let b_end = 30.0 * ict.kl_scale(Progress { step: 399_999, total: 400_000 });
    assert!((b_end - 88.0).abs() < 1.0, "{b_end}");
    let ect = EctSchedule { stage_steps: 50_000.0, ..EctSchedule::default() };
    for s in 0..8u64 {
        let b = 10.0 * ect.kl_scale(Progress { step: s * 50_000, total: 400_000 });
        let want = 0.25 * 2f64.powi(s as i32);
        assert!((b - want).abs() < 1e-6 * want, "stage {s}: {b} vs {want}");
    }
    assert_eq!(Weighting::Karras.weight(80.0, 40.0, 0.5), 4.0 + 1.0 / 6400.0);
    // With the karras weighting β is used as it is (ecm.py:160), not times the weight ≈ 4.0002.
    let karras = EctSchedule { stage_steps: 50_000.0, weighting: Weighting::Karras, ..EctSchedule::default() };
    assert_eq!(10.0 * karras.kl_scale(Progress { step: 0, total: 400_000 }), 10.0);
}

/// ECT's stage length is a number of images (run_ecm.sh: 250 ticks × 12.8 kimg = 3.2 Mimg, 25k
/// iterations at batch 128), whatever the run's length; VCT's is a fraction of the run (8
/// stages, sony/vct ecm.py:70); either can be set.
#[test]
fn ect_stage_length_follows_ect_and_vct() {
    use crate::methods::spec::ect_stage_steps;
    use crate::train::config::from_toml as cfg;
    assert_eq!(ect_stage_steps(&cfg("steps = 200000\nbatch = 128"), "ect").unwrap(), 25_000.0);
    assert_eq!(ect_stage_steps(&cfg("steps = 400000\nbatch = 128"), "ect").unwrap(), 25_000.0, "a longer run keeps ECT's stage length");
    assert_eq!(ect_stage_steps(&cfg("steps = 200000\nbatch = 256"), "sct").unwrap(), 12_500.0);
    assert_eq!(ect_stage_steps(&cfg("steps = 400000\nbatch = 128"), "vct").unwrap(), 50_000.0);
    assert_eq!(ect_stage_steps(&cfg("steps = 150\nect_stages = 8"), "ect").unwrap(), 18.75);
    assert_eq!(ect_stage_steps(&cfg("batch = 100\nect_stage_kimg = 1.0"), "vct").unwrap(), 10.0);
    assert!(ect_stage_steps(&cfg("ect_stages = 8\nect_stage_kimg = 1.0"), "ect").is_err());
    assert!(ect_stage_steps(&cfg("ect_stages = 0"), "ect").is_err());
}

/// With the LI kernel the ECT schedule's t stops at T (sony/vct ecm.py:113-114), so 1 − t/T
/// never turns negative.
#[test]
fn li_kernel_caps_t_at_t_max() {
    let sched = EctSchedule { p_mean: 4.0, p_std: 1.0, t_cap: Some(80.0), ..EctSchedule::default() };
    let mut rng = crate::rng::stream(0, "t", 0);
    let pairs = sched.draw(2000, Progress { step: 0, total: 1 }, &mut rng);
    assert!(pairs.hi.iter().all(|&t| t <= 80.0));
    assert!(pairs.hi.iter().filter(|&&t| t == 80.0).count() > 500, "ln t ~ N(4, 1) passes 80 = e^4.38 a third of the time");
    let uncapped = EctSchedule { t_cap: None, ..sched };
    assert!(uncapped.draw(2000, Progress { step: 0, total: 1 }, &mut crate::rng::stream(0, "t", 0)).hi.iter().any(|&t| t > 80.0));
}

/// VCT on the iCT schedule compares per value, as sony/vct's ict.py; iCT, GC and ECT-schedule
/// VCT over the whole sample; a setting wins.
#[test]
fn vct_ict_distance_is_per_value() {
    use crate::methods::spec::consistency_distance;
    use crate::train::config::from_toml as cfg;
    let c = 0.00054 * 3072f64.sqrt();
    assert_eq!(consistency_distance(&cfg(""), "vct", false, 3072).unwrap(), Distance::PseudoHuberPerValue { c });
    assert_eq!(consistency_distance(&cfg(""), "ict", false, 3072).unwrap(), Distance::PseudoHuber { c });
    assert_eq!(consistency_distance(&cfg(""), "gc", false, 3072).unwrap(), Distance::PseudoHuber { c });
    assert_eq!(consistency_distance(&cfg(""), "vct", true, 3072).unwrap(), Distance::PseudoHuber { c: 0.0 });
    assert_eq!(consistency_distance(&cfg("distance = \"pseudo-huber\""), "vct", false, 3072).unwrap(), Distance::PseudoHuber { c });
}

/// GC and VCT run on iCT's, ECT's or SCT's schedule; EDM's is a denoiser's, not a pairing of
/// levels, and is refused instead of running silently.
#[test]
fn coupled_methods_refuse_the_edm_schedule() {
    use crate::train::config::from_toml as cfg;
    for method in ["gc", "vct"] {
        let e = crate::methods::spec::resolve(&cfg(&format!("method = \"{method}\"\nschedule = \"edm\"")), 2).err().expect("refused");
        assert_eq!(crate::error::one_line(&e), "field `schedule`: `edm` (expected ict, ect or sct)");
        assert!(crate::methods::spec::resolve(&cfg(&format!("method = \"{method}\"\nschedule = \"ect\"")), 2).is_ok());
    }
}

/// The OT coupling is iCT's and ECT's option; the methods with their own coupling, and SCT,
/// whose reference weights assume independent noise, refuse it by name.
#[test]
fn ot_coupling_applies_to_ict_and_ect() {
    use crate::train::config::from_toml as cfg;
    for method in ["ict", "ect"] {
        for c in ["independent", "ot"] {
            assert!(crate::methods::spec::resolve(&cfg(&format!("method = \"{method}\"\ncoupling = \"{c}\"")), 2).is_ok(), "{method} {c}");
        }
    }
    for method in ["sct", "gc", "vct", "edm"] {
        let e = crate::methods::spec::resolve(&cfg(&format!("method = \"{method}\"\ncoupling = \"ot\"")), 2).err().expect("refused");
        assert!(crate::error::one_line(&e).starts_with("field `coupling`"), "{}", crate::error::one_line(&e));
    }
    let e = crate::methods::spec::resolve(&cfg("method = \"ict\"\ncoupling = \"sinkhorn\""), 2).err().expect("refused");
    assert_eq!(crate::error::one_line(&e), "field `coupling`: `sinkhorn` (expected independent or ot)");
    // OT pairs the same draws differently: the loss moves, iCT's schedule and dropout stay.
    let (w, ema) = (net(0.0), net(0.0));
    let ot = ConsistencyLoss { coupling: Box::new(crate::coupling::ot::Ot { sigma_max: 80.0 }), ..ict(Box::new(Independent)) };
    assert_ne!(losses(&ict(Box::new(Independent)), &w, &ema, 10), losses(&ot, &w, &ema, 10));
}

/// Phases are ECT's and SCT's (their schedules clamp r to the phase's edge); a pool must hold
/// more than the batch. Each refusal names its field.
#[test]
fn phases_and_pool_are_checked_by_name() {
    use crate::train::config::from_toml as cfg;
    let line = |sets: &str| crate::error::one_line(&crate::methods::spec::resolve(&cfg(sets), 2).err().expect("refused"));
    for method in ["ict", "gc", "vct", "edm"] {
        assert_eq!(line(&format!("method = \"{method}\"\nphases = 2")), format!("field `phases` applies to ect and sct, not {method}"));
    }
    assert_eq!(line("method = \"sct\"\nphases = 0"), "field `phases`: at least 1");
    assert_eq!(line("method = \"sct\"\nsct_references = \"pool\"\nsct_pool = 128\nbatch = 128"), "field `sct_pool`: 128 must exceed the batch (128); the pool holds the batch and more images");
    let r = crate::methods::spec::resolve(&cfg("method = \"sct\"\nsct_references = \"pool\"\nsct_pool = 1000\nbatch = 128\nphases = 4"), 2).unwrap();
    assert_eq!((r.method.reference_pool(), r.method.precond().phases), (872, Some(4)));
    assert_eq!(crate::methods::spec::resolve(&cfg("method = \"sct\""), 2).unwrap().method.reference_pool(), 0);
}

/// SCT by class: references of another class get no weight. A pool of class-1 images moved far
/// away changes the loss of class-1 samples (where t is large enough to weigh them) and leaves
/// every class-0 sample's loss bit for bit.
#[test]
fn sct_by_class_ignores_other_classes() {
    let stable = Stable { references: References::Pool, pool_extra: 16, boundary: Boundary::Mean, by_class: true };
    let sched = EctSchedule { stage_steps: 200.0, ..EctSchedule::default() };
    let loss = loss_with(Box::new(sched), Box::new(Independent), Target::Stable(stable), Distance::PseudoHuber { c: 0.0 }, pc(PrecondKind::Ect, 0.003));
    check_class_restriction(&loss);
}

/// `class_conditional = true` on SCT restricts its references by class.
#[test]
fn spec_sets_by_class() {
    use crate::train::config::from_toml as cfg;
    let r = crate::methods::spec::resolve(&cfg("method = \"sct\"\nclass_conditional = true\nsct_references = \"pool\"\nsct_pool = 80\nbatch = 64\nect_stages = 5\nsteps = 1000"), 2).unwrap();
    check_class_restriction(&*r.method);
}

fn check_class_restriction(loss: &dyn Method) {
    let (w, ema) = (net(0.0), net(0.0));
    let labels: Vec<u32> = (0..64).map(|i| i % 2).collect();
    let near = (crate::rng::normal(&mut crate::rng::stream(2, "pool", 0), (16, 2), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
    let run = |pool_x: &Tensor| -> Vec<f32> {
        let pool = super::sct::Pool { x: pool_x.clone(), labels: vec![1; 16] };
        let ctx = StepCtx { seed: 3, progress: Progress { step: 700, total: 1000 }, net: &w.net, ema: &ema.net, encoder: None, target: None, teacher: None, labels: Some(&labels), class_labels: None, pool: Some(&pool), shard: None };
        loss.loss(&ctx, &batch()).unwrap().per_sample.to_vec1().unwrap()
    };
    let (a, b) = (run(&near), run(&(&near + 3.0).unwrap()));
    for i in (0..64).step_by(2) {
        assert_eq!(a[i], b[i], "class-0 sample {i}");
    }
    assert!((1..64).step_by(2).any(|i| a[i] != b[i]), "class-1 samples see the pool");
}
