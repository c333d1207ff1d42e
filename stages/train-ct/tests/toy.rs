//! Every method, trained on CPU on the two-Gaussians toy (means (0, ±0.5), std 0.01), puts its
//! 1-step samples on the modes: ≥ 95 % within 0.1 of a mode, each mode ≥ 40 %. EDM, a denoiser,
//! is sampled with its Heun solver (18 levels); ECT and SCT tune from it.
//!
//! The recipe (measured on this toy, docs/methods.md "The toy recipe"): the 64-wide MLP,
//! σ_max = 5 (the GC toy's), Lion with lr 1e-3 and inverse-√ decay, 15k steps of batch 256,
//! EMA 0.995 (for iCT, GC and VCT with ema-pytorch's warm-up, as the default profile), iCT grid
//! up to 321 levels. Two runs at a time, one thread each (faster than two
//! threads for a model this small).

use ctpipe::metrics::toy::{mode_coverage, ModeCoverage};
use ctpipe::model::{load_model, Which};
use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{run, Sandbox};

const EXE: &str = env!("CARGO_BIN_EXE_train-ct");

fn cmd(sb: &Sandbox, inputs: &[(&str, &str)], sets: &[String]) -> std::process::Command {
    let mut c = sb.cmd(EXE);
    c.env("CANDLE_NUM_THREADS", "1").env("RAYON_NUM_THREADS", "1");
    for (role, key) in inputs {
        c.args(["--input", &format!("{role}={key}")]);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    c
}

/// Run training jobs two at a time; their keys, in order.
fn train_all(jobs: Vec<std::process::Command>) -> Vec<String> {
    let mut keys = Vec::new();
    let mut jobs = jobs.into_iter();
    loop {
        let batch: Vec<std::process::Command> = jobs.by_ref().take(2).collect();
        if batch.is_empty() {
            return keys;
        }
        let handles: Vec<_> = batch.into_iter().map(|mut c| std::thread::spawn(move || run(&mut c).expect_code(0).key())).collect();
        keys.extend(handles.into_iter().map(|h| h.join().expect("training thread")));
    }
}

fn coverage(sb: &Sandbox, key: &str, steps: usize) -> ModeCoverage {
    let store = Store::new(sb.artifacts());
    let art = store.open("train-ct", &Key::parse(key).unwrap(), Verify::Sizes).unwrap();
    let dev = candle_core::Device::Cpu;
    let m = load_model(&art, Which::Ema, &dev).unwrap();
    let x = ctpipe::train::generate(&m.spec, &m.net.net, m.encoder.as_ref().map(|e| &e.net), steps, &[0.821], 99, 2000, &dev).unwrap();
    let pts: Vec<[f64; 2]> = x.to_vec2::<f32>().unwrap().iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    mode_coverage(&pts, &[[0.0, 0.5], [0.0, -0.5]], 0.1)
}

fn recipe(method: &str) -> Vec<String> {
    let mut s: Vec<String> = vec![
        format!("method={method}"),
        "network=mlp-small".into(),
        "sigma_max=5".into(),
        "batch=256".into(),
        "ema_beta=0.995".into(),
        "lr=1e-3".into(),
        "lr_decay=1000".into(),
        "grid=16".into(),
        "log_every=5000".into(),
    ];
    if method == "edm" {
        s.extend(["optimizer=adam".into(), "steps=3000".into(), "checkpoint_every=3000".into()]);
    } else {
        s.extend(["optimizer=lion".into(), "beta2=0.99".into(), "steps=15000".into(), "checkpoint_every=15000".into()]);
    }
    if matches!(method, "ict" | "gc" | "vct") {
        // The default profile's coupling comparison: one EMA for all, ema-pytorch's warm-up at
        // every step (GC's generator is never the random init).
        s.extend(["ict_s1=320".into(), "ema_update_after=0".into(), "ema_update_every=1".into()]);
    }
    if matches!(method, "ect" | "sct") {
        s.push("ect_stages=8".into());
    }
    s
}

fn assert_on_modes(name: &str, c: &ModeCoverage) {
    eprintln!("{name}: {:.2}% within 0.1 of a mode, per mode {:?}", 100.0 * c.near, c.per_mode);
    assert!(c.near >= 0.95, "{name}: only {:.2}% of samples within 0.1 of a mode", 100.0 * c.near);
    assert!(c.per_mode.iter().all(|&f| f >= 0.40), "{name}: modes unbalanced {:?}", c.per_mode);
}

#[test]
fn every_method_lands_on_the_modes() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 20_000).to_string();
    let d = data.as_str();
    let edm = train_all(vec![cmd(&sb, &[("data", d)], &recipe("edm"))]).remove(0);
    assert_on_modes("edm (Heun, 18 levels)", &coverage(&sb, &edm, 18));
    let methods = ["ict", "ect", "sct", "gc", "vct"];
    let jobs = methods
        .iter()
        .map(|m| {
            let mut inputs = vec![("data", d)];
            if matches!(*m, "ect" | "sct") {
                inputs.push(("init", edm.as_str()));
            }
            cmd(&sb, &inputs, &recipe(m))
        })
        .collect();
    let keys = train_all(jobs);
    for (m, key) in methods.iter().zip(&keys) {
        assert_on_modes(&format!("{m} (1 step)"), &coverage(&sb, key, 1));
    }
    papers_measurements(&sb, &keys[0], &keys[3], &keys[4]);
}

/// The papers' own measurements (evaluate/toy_measures.rs) on the trained models. GC: where the
/// noise decides the mode (σ ≥ 1), the coupling the trained GC model induces costs nearer the
/// exact consistency function's than the independent coupling's, and its endpoints cover both
/// modes. How near GC's endpoints come to the exact ones against iCT's is printed, not asserted:
/// with the same EMA the two are close (docs/methods.md). VCT: the two modes' posteriors have
/// opposite-signed means along y, the axis that separates them.
fn papers_measurements(sb: &Sandbox, ict: &str, gc: &str, vct: &str) {
    use ctpipe::evaluate::toy_measures::{posteriors, transport};
    let d = ctpipe::data::sources::toy2d::generate("two-gaussians", 1, 2000, 0.01, 7).unwrap();
    let ctpipe::data::schema::Samples::Points(p) = &d.test.samples else { unreachable!() };
    let truth: Vec<[f64; 2]> = p.chunks(2).map(|c| [c[0] as f64, c[1] as f64]).collect();
    let centres = [[0.0, 0.5], [0.0, -0.5]];
    let store = Store::new(sb.artifacts());
    let dev = candle_core::Device::Cpu;
    let load = |key: &str| load_model(&store.open("train-ct", &Key::parse(key).unwrap(), Verify::Sizes).unwrap(), Which::Ema, &dev).unwrap();
    let (ict, gc, vct) = (load(ict), load(gc), load(vct));
    let rows = transport(&truth, &centres, &[("ict".into(), &ict), ("gc".into(), &gc)], 0, &dev).unwrap();
    for r in &rows {
        eprintln!("σ {}: independent {:.4} exact {:.4} | {}", r.sigma, r.independent, r.exact, r.models.iter().map(|m| format!("{} {:.4} (to exact {:.2e}, near {:.3}, smallest mode {:.3})", m.model, m.cost, m.to_exact, m.near, m.min_mode)).collect::<Vec<_>>().join(" | "));
        let g = r.models.iter().find(|m| m.model == "gc").expect("gc measured");
        if r.sigma >= 1.0 {
            assert!((g.cost - r.exact).abs() < (g.cost - r.independent).abs(), "σ {}: gc's cost {} is nearer the independent {} than the exact {}", r.sigma, g.cost, r.independent, r.exact);
            assert!(g.min_mode >= 0.4, "σ {}: gc's endpoints collapse: smallest mode {}", r.sigma, g.min_mode);
        }
    }
    let post = posteriors(&truth, &centres, &["upper".into(), "lower".into()], "vct", &vct, &dev).unwrap();
    for r in &post {
        eprintln!("vct posterior {}: {} points, mean ({:.4}, {:.4}), scale ({:.4}, {:.4}), KL {:?}", r.mode, r.points, r.mean[0], r.mean[1], r.scale[0], r.scale[1], r.kl);
    }
    assert!(post[0].mean[1] > 0.0 && post[1].mean[1] < 0.0, "vct: the upper mode's posterior mean along y should be positive, the lower's negative: {:?} {:?}", post[0].mean, post[1].mean);
}
