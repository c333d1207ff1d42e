//! precompute-encoder and evaluate-fid end to end, on data the tests make: 8×8 two-class
//! images (classifier features) and the two-Gaussians toy (coordinates, SWD, MMD, coverage).

use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{blob_images, publish_dataset, publish_toy, release_bin, run, Sandbox};
use serde_json::Value;

fn stage(sb: &Sandbox, name: &str, inputs: &[(&str, &str)], sets: &[&str]) -> std::process::Command {
    let mut c = sb.cmd(release_bin(name));
    c.env("RAYON_NUM_THREADS", "1");
    for (role, key) in inputs {
        c.args(["--input", &format!("{role}={key}")]);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    c
}

fn metrics(sb: &Sandbox, stage: &str, key: &str) -> (std::path::PathBuf, Value) {
    let art = Store::new(sb.artifacts()).open(stage, &Key::parse(key).unwrap(), Verify::Hashes).unwrap();
    (art.dir.clone(), art.manifest.metrics.clone())
}

/// The classifier learns the two classes; the held-out split scores a small FD against the
/// training statistics and pure noise a large one; a model trained on the data is evaluated
/// (1- and 2-step, three seeds) with a report, and its FD lies between those baselines' scale.
#[test]
fn images_classifier_reference_and_model_fd() {
    let sb = Sandbox::new();
    let data = publish_dataset(&sb, "blobs", &blob_images(1024, 256, 1)).to_string();
    let r = run(&mut stage(&sb, "precompute-encoder", &[("data", &data)], &["epochs=3", "batch=32", "noise_n=256", "channels=[8, 16]"])).expect_code(0);
    let reference = r.key();
    let (dir, m) = metrics(&sb, "precompute-encoder", &reference);
    let acc = m["test_accuracy"].as_f64().unwrap();
    let (fd_data, fd_noise) = (m["fd_data"].as_f64().unwrap(), m["fd_noise"].as_f64().unwrap());
    eprintln!("classifier accuracy {acc}; FD(test vs train) {fd_data}; FD(noise vs train) {fd_noise}");
    assert!(acc >= 0.98, "accuracy {acc}");
    assert!(fd_noise > 20.0 * fd_data, "FD data {fd_data} vs noise {fd_noise}");
    for f in ["encoder.json", "encoder.safetensors", "stats.safetensors", "stats-train.safetensors", "stats-test.safetensors"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Statistics are readable by Python's safetensors layout: mu [D], sigma [D, D] in f64.
    let st = ctpipe::metrics::stats::FeatureStats::load(&dir.join("stats.safetensors")).unwrap();
    assert_eq!((st.dim(), st.count), (128, 1024));

    let model = run(&mut stage(&sb, "train-ct", &[("data", &data)], &["method=ect", "network=tiny", "steps=20", "batch=8", "checkpoint_every=20", "grid=4"])).expect_code(0).key();
    let ev = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("reference", &reference), ("models", &model)], &["n=64", "batch=32", "grid=4"])).expect_code(0);
    let (edir, em) = metrics(&sb, "evaluate-fid", &ev.key());
    let rows = em["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, sampler) in rows.iter().zip(["1-step", "2-step"]) {
        assert_eq!(row["sampler"], sampler);
        let fd: Vec<f64> = row["fd"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(fd.len(), 3);
        let min = fd.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(row["fd_min"].as_f64().unwrap(), min);
        assert!((row["fd_mean"].as_f64().unwrap() - fd.iter().sum::<f64>() / 3.0).abs() < 1e-9);
        // An untrained-for-long model is far from the data.
        assert!(min > fd_data, "{row}");
    }
    // The baselines are measured as the models are: n = 64, three seeds. FD is biased upwards
    // at small n: the held-out data at n = 64 scores above its value on all 256 rows.
    let base = em["baselines"].as_array().unwrap();
    let (data_row, noise_row) = (&base[0], &base[1]);
    assert_eq!((data_row["model"].as_str(), noise_row["model"].as_str()), (Some("data (test split)"), Some("pure noise")), "{base:?}");
    for b in base {
        assert_eq!((b["n"].as_u64(), b["fd"].as_array().unwrap().len()), (Some(64), 3), "{b}");
        assert!(b["fd_std"].as_f64().unwrap() > 0.0, "{b}");
    }
    let data_fd = data_row["fd_min"].as_f64().unwrap();
    assert!(data_fd > 1.5 * fd_data, "data at n = 64 ({data_fd}) against all 256 rows ({fd_data})");
    assert!(noise_row["fd_min"].as_f64().unwrap() > 20.0 * data_fd, "{base:?}");
    for row in rows {
        assert!(row["fd_min"].as_f64().unwrap() > data_fd, "a model beat the data itself: {row}");
    }
    let report = std::fs::read_to_string(edir.join("report.md")).unwrap();
    assert!(report.contains("| ect | 1-step | 1 |") && report.contains("| *pure noise* | – | – |") && report.contains(" ± "), "{report}");
    assert!(report.contains("- **NFE**") && report.contains("Not comparable to published FID (classifier features"), "{report}");
    // At n = the whole held-out split and one seed, the data baseline is precompute-encoder's
    // FD of that split: the same rows in another order (two code paths, one number).
    let ev_all = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("reference", &reference), ("models", &model)], &["n=256", "seeds=[5]", "steps=[1]", "batch=32", "grid=4"])).expect_code(0);
    let (_, em_all) = metrics(&sb, "evaluate-fid", &ev_all.key());
    let all = em_all["baselines"][0]["fd_min"].as_f64().unwrap();
    // Within 1e-3: f32 features of other batches, and FD a small difference of large traces
    // (3.6e-5 relative measured); a subsample or the wrong split is off by far more.
    assert!((all - fd_data).abs() <= 1e-3 * fd_data, "data baseline on all 256 rows {all} against precompute's {fd_data}");
    assert!(em_all["baselines"][0]["fd_std"].is_null());
    assert!(edir.join("fd.svg").is_file() && edir.join("samples-ect-1-step.png").is_file() && edir.join("samples-data.png").is_file());

    // Exported samples (arr_0, uint8 N×H×W×C) are the ones measured: the `fid` tool, given
    // them, the reference statistics and the same encoder, gives the evaluation's FD.
    let ev_x = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("reference", &reference), ("models", &model)], &["n=64", "seeds=[3]", "steps=[1]", "batch=32", "grid=4", "export_samples=true"])).expect_code(0);
    let (xdir, xm) = metrics(&sb, "evaluate-fid", &ev_x.key());
    let npz = xdir.join("samples-ect-1-step.npz");
    let arrays = candle_core::Tensor::read_npz(&npz).unwrap();
    assert_eq!((arrays[0].0.as_str(), arrays[0].1.dims(), arrays[0].1.dtype()), ("arr_0", &[64usize, 8, 8, 1][..], candle_core::DType::U8));
    // The reference given as the precompute-encoder artifact itself: its statistics.
    let tool = run(sb.cmd(release_bin("fid")).arg(&npz).arg(&reference[..12]).args(["--encoder", &reference])).expect_code(0);
    let line = tool.stdout.lines().find(|l| l.starts_with("FID:  ")).unwrap_or_else(|| panic!("{}", tool.stdout));
    let (got, want) = (line[6..].trim().parse::<f64>().unwrap(), xm["rows"][0]["fd"][0].as_f64().unwrap());
    assert!((got - want).abs() <= 1e-4 * want, "fid tool on the exported samples {got}, evaluate-fid {want}");
    // The evaluate-fid artifact itself as the source: its one exported set, or the set named.
    let x_key = ev_x.key();
    for src in [x_key.clone(), format!("{}:ect-1-step", &x_key[..10])] {
        let tool = run(sb.cmd(release_bin("fid")).arg(&src).arg(&reference[..12]).args(["--encoder", &reference])).expect_code(0);
        let line = tool.stdout.lines().find(|l| l.starts_with("FID:  ")).unwrap_or_else(|| panic!("{}", tool.stdout));
        assert_eq!(line[6..].trim().parse::<f64>().unwrap(), got, "{src}");
    }
    for (src, says) in [(format!("{x_key}:ect-2-step"), "no sample set `ect-2-step`; it has ect-1-step"), (ev_all.key(), "exported no samples (rerun it with export_samples = true)")] {
        let bad = run(sb.cmd(release_bin("fid")).arg(&src).arg(&reference[..12]).args(["--encoder", &reference])).expect_code(3);
        assert!(bad.one_error_line().contains(says), "{src}: {}", bad.stderr);
    }

    // A class-conditional model needs per-class statistics; `per_class` writes them: each
    // class's rows of the reference split (512 of each here), and each class's statistics
    // far from the other's. Each class of the conditional model is then measured.
    let cond = run(&mut stage(&sb, "train-ct", &[("data", &data)], &["method=ect", "network=tiny", "steps=4", "batch=8", "checkpoint_every=4", "grid=4", "class_conditional=true"])).expect_code(0).key();
    let bad = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("reference", &reference), ("models", &cond)], &["n=64", "batch=32", "grid=4"])).expect_code(2);
    assert!(bad.one_error_line().contains("set per_class = true"), "{}", bad.stderr);
    let per_class = run(&mut stage(&sb, "precompute-encoder", &[("data", &data)], &["epochs=3", "batch=32", "noise_n=256", "channels=[8, 16]", "per_class=true"])).expect_code(0).key();
    let (pdir, pm) = metrics(&sb, "precompute-encoder", &per_class);
    assert_eq!(pm["class_counts"], serde_json::json!([512, 512]));
    let load = |c: u32| ctpipe::metrics::stats::FeatureStats::load(&pdir.join(format!("stats-class-{c}.safetensors"))).unwrap();
    let (c0, c1) = (load(0), load(1));
    assert_eq!((c0.count, c1.count), (512, 512));
    let between = ctpipe::metrics::frechet::frechet_distance(&c0, &c1).unwrap();
    assert!(between > 20.0 * fd_data, "class statistics apart: FD {between} vs data {fd_data}");
    let ev = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("reference", &per_class), ("models", &cond)], &["n=64", "batch=32", "grid=4", "class_n=32", "steps=[1]"])).expect_code(0);
    let (_, em) = metrics(&sb, "evaluate-fid", &ev.key());
    let classes: Vec<u64> = em["rows"].as_array().unwrap().iter().filter_map(|r| r["class"].as_u64()).collect();
    assert_eq!(classes, [0, 1]);

    // Images without reference statistics: one line naming the input.
    let bad = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("models", &model)], &["n=64"])).expect_code(2);
    assert!(bad.one_error_line().contains("input `reference`"), "{}", bad.stderr);
    // The inception encoder without weights: how to get them.
    let bad = run(&mut stage(&sb, "precompute-encoder", &[("data", &data)], &["encoder=inception"])).expect_code(2);
    assert!(bad.one_error_line().contains("convert_fid_inception.py"), "{}", bad.stderr);
}

/// FD falls as a run goes on: an EDM denoiser on the toy, evaluated at its snapshots (steps
/// 100 and 1500) with its Heun sampler; and the toy metrics are there.
#[test]
fn toy_fd_decreases_over_training_snapshots() {
    let sb = Sandbox::new();
    let data = publish_toy(&sb, 4000).to_string();
    let sets = ["method=edm", "network=mlp-small", "sigma_max=5", "optimizer=adam", "lr=1e-3", "batch=256", "steps=1500", "checkpoint_every=100", "keep_snapshots=true", "grid=16", "ema_beta=0.99"];
    let model = run(&mut stage(&sb, "train-ct", &[("data", &data)], &sets)).expect_code(0).key();
    let ev = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("models", &model)], &["n=2000", "snapshots=true", "heun_steps=10", "mmd_n=500"])).expect_code(0);
    let (dir, m) = metrics(&sb, "evaluate-fid", &ev.key());
    let rows = m["rows"].as_array().unwrap();
    let snaps: Vec<(u64, f64)> = rows.iter().filter(|r| !r["train_step"].is_null()).map(|r| (r["train_step"].as_u64().unwrap(), r["fd_min"].as_f64().unwrap())).collect();
    eprintln!("FD over training: {snaps:?}");
    assert_eq!(snaps.len(), 15);
    let (first, last) = (snaps[0], snaps[snaps.len() - 1]);
    assert_eq!((first.0, last.0), (100, 1500));
    assert!(last.1 < 0.5 * first.1, "FD did not fall: {snaps:?}");
    let fin = rows.iter().find(|r| r["train_step"].is_null()).unwrap();
    assert_eq!((fin["sampler"].as_str().unwrap(), fin["nfe"].as_u64().unwrap()), ("heun-10", 19));
    for k in ["swd", "mmd", "near", "min_mode"] {
        assert!(fin[k].as_f64().is_some(), "{k}: {fin}");
    }
    assert!(fin["near"].as_f64().unwrap() > 0.9, "{fin}");
    assert!(dir.join("fd-training.svg").is_file());
    // The toy's baselines carry the toy measures too: the held-out points sit on the modes,
    // noise does not, and the data's FD and SWD are the smaller.
    let base = m["baselines"].as_array().unwrap();
    let (data_row, noise_row) = (&base[0], &base[1]);
    assert!(data_row["model"].as_str().unwrap().starts_with("data (test split") && noise_row["model"] == "pure noise", "{base:?}");
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    // The test split has 1000 rows, fewer than n = 2000: every seed takes all of them (and the
    // row says so), so it is not at the models' n.
    assert_eq!((data_row["model"].as_str(), data_row["n"].as_u64()), (Some("data (test split, all 1000 rows)"), Some(1000)));
    assert!(f(data_row, "near") > 0.9 && f(noise_row, "near") < 0.5, "{base:?}");
    assert!(f(data_row, "fd_min") < f(noise_row, "fd_min") && f(noise_row, "swd") > 0.1, "{base:?}");
    assert!(data_row["swd"].is_null() && data_row["mmd"].is_null(), "SWD of the held-out points against themselves: {base:?}");
}

/// SCT's parts end to end on the toy: a phased (2-phase) SCT model trained with a reference
/// pool keeps EMA snapshots; evaluate-fid samples it with one evaluation per phase and sweeps
/// guidance by its own earlier snapshot. w = 1 reproduces the unguided row and w = 0 the
/// snapshot's own row, to the last bit; the report and plot show the sweep.
#[test]
fn phased_sct_with_a_pool_guided_by_its_snapshot() {
    let sb = Sandbox::new();
    let data = publish_toy(&sb, 4000).to_string();
    let sets = ["method=sct", "phases=2", "sct_references=pool", "sct_pool=512", "network=mlp-small", "sigma_max=5", "optimizer=adam", "lr=1e-3", "batch=128", "steps=300", "checkpoint_every=150", "keep_snapshots=true", "grid=16", "ema_beta=0.99", "ect_stages=4"];
    let model = run(&mut stage(&sb, "train-ct", &[("data", &data)], &sets)).expect_code(0).key();
    let (mdir, _) = metrics(&sb, "train-ct", &model);
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(mdir.join("model.json")).unwrap()).unwrap();
    assert_eq!(spec["precond"]["phases"], 2, "{spec}");
    assert!(mdir.join("samples-2phase.png").is_file());

    let inputs = [("data", data.as_str()), ("models", model.as_str()), ("guide", model.as_str())];
    let ev = run(&mut stage(&sb, "evaluate-fid", &inputs, &["n=500", "seeds=[0]", "guidance=[0.0, 1.0, 1.5]", "guide_step=150", "snapshots=true", "mmd_n=200"])).expect_code(0);
    let (dir, m) = metrics(&sb, "evaluate-fid", &ev.key());
    let rows = m["rows"].as_array().unwrap();
    let find = |w: Option<f64>, step: Option<u64>| rows.iter().find(|r| r["guidance"].as_f64() == w && r["train_step"].as_u64() == step).unwrap_or_else(|| panic!("row w {w:?} step {step:?}: {rows:?}"));
    let plain = find(None, None);
    assert_eq!((plain["sampler"].as_str().unwrap(), plain["nfe"].as_u64().unwrap()), ("2-phase", 2));
    assert_eq!(find(Some(1.0), None)["fd"], plain["fd"]);
    assert_eq!(find(Some(0.0), None)["fd"], find(None, Some(150))["fd"]);
    assert_ne!(find(Some(1.5), None)["fd"], plain["fd"]);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("Guidance by a weaker model") && report.contains("| sct+pool+2phases | 2-phase | 1.5 |"), "{report}");
    assert!(dir.join("guidance.svg").is_file() && dir.join("samples-sct+pool+2phases-2-phase-w1.5.png").is_file());

    // Guidance needs both its input and its strengths; a snapshot that does not exist is named.
    let bad = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("models", &model)], &["guidance=[2.0]"])).expect_code(2);
    assert!(bad.one_error_line().contains("input `guide`"), "{}", bad.stderr);
    let bad = run(&mut stage(&sb, "evaluate-fid", &inputs, &["guidance=[2.0]", "guide_step=7"])).expect_code(2);
    assert!(bad.one_error_line().contains("no snapshot at step 7 (it has: 150, 300)"), "{}", bad.stderr);
}

/// Class-conditional models end to end on the two-Gaussians toy (class 0 the upper mode, 1 the
/// lower): an EDM denoiser conditioned on the labels, SCT tuned from it with class-restricted
/// pool references, and CD distilled from it (the student inherits the teacher's classes).
/// Each model's samples of one class land on that class's mode; evaluate-fid measures every
/// class against the test split's points of that class, and says what a reference lacks.
#[test]
fn class_conditional_models_sample_the_class_they_are_given() {
    let sb = Sandbox::new();
    let data = publish_toy(&sb, 4000).to_string();
    let common = ["network=mlp-small", "sigma_max=5", "optimizer=adam", "lr=1e-3", "batch=256", "grid=16", "ema_beta=0.99", "class_conditional=true"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { common.iter().copied().chain(extra.iter().copied()).collect() };
    let edm = run(&mut stage(&sb, "train-ct", &[("data", &data)], &with(&["method=edm", "steps=1500", "checkpoint_every=1500"]))).expect_code(0).key();
    let sct = run(&mut stage(&sb, "train-ct", &[("data", &data), ("init", &edm)], &with(&["method=sct", "sct_references=pool", "sct_pool=1024", "steps=300", "checkpoint_every=300", "ect_stages=4"]))).expect_code(0).key();
    let cd_sets = ["network=mlp-small", "sigma_max=5", "optimizer=adam", "lr=1e-4", "batch=256", "grid=16", "ema_beta=0.99", "steps=300", "checkpoint_every=300", "weighting=inverse-gap"];
    let cd = run(&mut stage(&sb, "distill", &[("data", &data), ("teacher", &edm)], &cd_sets)).expect_code(0).key();

    let store = Store::new(sb.artifacts());
    let dev = candle_core::Device::Cpu;
    for (stage_name, key, steps) in [("train-ct", &edm, 10), ("train-ct", &sct, 1), ("distill", &cd, 1)] {
        let art = store.open(stage_name, &Key::parse(key).unwrap(), Verify::Hashes).unwrap();
        let m = ctpipe::model::load_model(&art, ctpipe::model::Which::Ema, &dev).unwrap();
        assert_eq!(m.spec.network.label_dim(), 2, "{stage_name} {}", m.spec.method);
        for (class, centre) in [(0u32, 0.5f32), (1, -0.5)] {
            let x = ctpipe::sample::model_samples(&m.spec, &m.net.net, None, None, steps, &[], 7, 0, 500, Some(class), &dev).unwrap();
            let pts: Vec<Vec<f32>> = x.to_vec2().unwrap();
            let right = pts.iter().filter(|p| (p[1] - centre).abs() < 0.25).count();
            assert!(right >= 450, "{} class {class}: {right} of 500 near y = {centre}", m.spec.method);
        }
    }

    let ev = run(&mut stage(&sb, "evaluate-fid", &[("data", &data), ("models", &edm), ("models", &sct), ("models", &cd)], &["n=500", "seeds=[0]", "heun_steps=10", "class_n=300", "steps=[1]", "mmd_n=200"])).expect_code(0);
    let (dir, m) = metrics(&sb, "evaluate-fid", &ev.key());
    let rows = m["rows"].as_array().unwrap();
    let per_class: Vec<&Value> = rows.iter().filter(|r| !r["class"].is_null()).collect();
    assert_eq!(per_class.len(), 6, "two classes of three models: {rows:?}");
    for r in &per_class {
        assert!(r["fd_min"].as_f64().unwrap() < 0.05, "{r}");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("per class") && report.contains("| sct+pool+cond | 1-step | 1 |") && report.contains("| edm+cond | heun-10 | 19 |"), "{report}");

    // An unconditional init for a conditional run is refused by name.
    let plain = run(&mut stage(&sb, "train-ct", &[("data", &data)], &["method=edm", "network=mlp-small", "sigma_max=5", "steps=2", "batch=8", "checkpoint_every=2", "grid=1"])).expect_code(0).key();
    let bad = run(&mut stage(&sb, "train-ct", &[("data", &data), ("init", &plain)], &with(&["method=sct", "steps=2"]))).expect_code(3);
    assert!(bad.one_error_line().contains("is conditioned on 0 classes, this run on 2"), "{}", bad.stderr);
}
