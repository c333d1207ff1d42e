//! The profiles users run to reach the papers' results, rehearsed end to end at smoke scale
//! (`make all PROFILE=<p> SCALE=smoke`): every node of the shipped pipeline.toml, with its real
//! methods, presets and settings, to the profile's report. A profile that cannot run fails
//! here with the node and the reason.
//!
//! - `fmnist` reads the real Fashion-MNIST from Debian's package, as the profile says
//!   (downloaded once into target/test-data).
//! - `cifar10` reads `uoft-cs/cifar10` from a Hugging Face cache that pyarrow wrote with its
//!   defaults (offline, no network), and FID Inception weights generated here (random weights
//!   of pytorch-fid's layout) with their real sha256 filled into the profile.

use ctpipe_e2e::{python_env, pytools, run, workspace_root, Run, Sandbox};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

/// `make all PROFILE=<profile> SCALE=smoke` in the sandbox; fails with the output's tail.
fn rehearse(sb: &Sandbox, profile: &str, data: &Path, env: &[(&str, &OsStr)]) -> Run {
    let t = Instant::now();
    let mut c = sb.make();
    c.args(["all", &format!("PROFILE={profile}"), "SCALE=smoke", &format!("DATA={}", data.display())]);
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run(&mut c);
    let tail = |s: &str| s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert_eq!(r.code, 0, "profile {profile} at smoke scale failed:\n{}\n--- stderr\n{}", tail(&r.stdout), tail(&r.stderr));
    eprintln!("rehearsal of {profile}: {:.0} s", t.elapsed().as_secs_f64());
    r
}

/// Every node of the profile ran at smoke scale, under `<profile>@smoke` and nowhere else, and
/// the evaluation measured every model it names.
fn assert_complete(sb: &Sandbox, profile: &str, r: &Run) {
    let pipeline = ctpipe::pipeline::Pipeline::load(&sb.path().join("pipeline.toml")).unwrap();
    let p = pipeline.profile(profile).unwrap();
    let ns = format!("{profile}@smoke");
    for node in p.nodes.keys() {
        assert!(sb.artifacts().join("refs").join(&ns).join(format!("{node}.ref")).is_file(), "{node} has no ref under {ns}");
    }
    assert!(!sb.artifacts().join("refs").join(profile).exists(), "a smoke run wrote refs of the full profile");
    assert!(r.stdout.contains(&format!("all {} nodes of profile {ns} are up to date", p.nodes.len())), "{}", r.stdout);
    assert_eq!(r.stdout.matches(" up to date ").count(), p.nodes.len(), "{}", r.stdout);

    let report = std::fs::read_to_string(sb.artifacts().join("reports").join(format!("{ns}.md"))).unwrap();
    assert!(report.contains("Smoke scale"), "{report}");
    let store = ctpipe::store::Store::new(sb.artifacts());
    for node in p.nodes.values().filter(|n| n.stage.name == "evaluate-fid") {
        let r = store.read_ref(&ns, &node.id).unwrap().unwrap();
        let art = store.open(&r.stage, &r.key, ctpipe::store::Verify::Hashes).unwrap();
        let metrics: Value = serde_json::from_slice(&std::fs::read(art.file("metrics.json").unwrap()).unwrap()).unwrap();
        let rows = metrics["rows"].as_array().unwrap();
        for model in &node.inputs["models"] {
            let model_ref = store.read_ref(&ns, model).unwrap().unwrap();
            let measured: Vec<&Value> = rows.iter().filter(|row| row["key"] == model_ref.key.as_str() && row["train_step"].is_null()).collect();
            assert!(!measured.is_empty(), "{}: no measurement of {model}", node.id);
            // The profile report names the model's rows by its node (by the first of the
            // evaluation's input nodes holding that artifact: at smoke scale two nodes may
            // cut down to one artifact).
            let named = node.inputs.values().flatten().find(|id| store.read_ref(&ns, id).unwrap().is_some_and(|r| r.key == model_ref.key)).unwrap();
            assert!(report.contains(&format!("\n| {named} | {} |", measured[0]["sampler"].as_str().unwrap())), "{}: no row named {named} in the report:\n{report}", node.id);
            for row in measured {
                assert!(row["fd_min"].as_f64().is_some_and(f64::is_finite), "{}: {model}: {row}", node.id);
            }
        }
        // The smoke cuts, as the evaluation ran them: one seed, four samples.
        assert_eq!((art.manifest.config["n"].as_u64(), art.manifest.config["seeds"].as_array().map(Vec::len)), (Some(4), Some(1)));
    }
}

/// The U-Net weights of every model node whose preset mirrors EDM's DDPM++ load with Python's
/// safetensors, with exactly the names and shapes of EDM's SongUNet (tests/interop/fixtures).
fn assert_edm_names(sb: &Sandbox, profile: &str, python: &Path) {
    let pipeline = ctpipe::pipeline::Pipeline::load(&sb.path().join("pipeline.toml")).unwrap();
    let store = ctpipe::store::Store::new(sb.artifacts());
    let mut checked = 0;
    for node in pipeline.profile(profile).unwrap().nodes.values() {
        let Some(preset @ ("fmnist" | "cifar-ddpmpp")) = node.setting_str("network") else { continue };
        let r = store.read_ref(&format!("{profile}@smoke"), &node.id).unwrap().unwrap();
        let dir = store.open(&r.stage, &r.key, ctpipe::store::Verify::Sizes).unwrap().dir;
        let read = pytools(python, &["read-safetensors".as_ref(), dir.join("ema.safetensors").as_os_str()]);
        let mut want = ctpipe_e2e::edm_songunet(preset);
        if node.settings.get("class_conditional").and_then(|v| v.as_bool()) == Some(true) {
            // EDM's SongUNet with label_dim = 10: map_label = Linear(label_dim, noise_channels)
            // with its bias (NVlabs/edm training/networks.py:270); noise_channels = model_channels.
            let noise = want.iter().find(|(n, _)| n == "model.map_layer0.weight").expect("map_layer0").1[1];
            want.extend([("model.map_label.bias".to_string(), vec![noise]), ("model.map_label.weight".to_string(), vec![noise, 10])]);
            want.sort();
        }
        assert_eq!(ctpipe_e2e::tensor_shapes(&read), want, "{}: not EDM's SongUNet names", node.id);
        checked += 1;
    }
    assert!(checked > 0, "no DDPM++ model in profile {profile}");
}

/// The shipped pipeline file, with edits for this machine.
fn shipped_pipeline(sb: &Sandbox, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(workspace_root().join("pipeline.toml")).unwrap();
    sb.write("pipeline.toml", &edit(text));
}

#[test]
fn fmnist_profile_at_smoke_scale_reaches_its_report() {
    let sb = Sandbox::new();
    shipped_pipeline(&sb, |t| t);
    // Debian's dataset-fashion-mnist, fetched once per machine.
    let data = workspace_root().join("target").join("test-data");
    std::fs::create_dir_all(&data).unwrap();
    let r = rehearse(&sb, "fmnist", &data, &[]);
    assert_complete(&sb, "fmnist", &r);
    if let Some(python) = python_env() {
        assert_edm_names(&sb, "fmnist", &python);
    }
}

#[test]
fn cifar10_profile_at_smoke_scale_reaches_its_report() {
    let Some(python) = python_env() else { return };
    let sb = Sandbox::new();
    // uoft-cs/cifar10 as the Hub holds it: a config folder, one shard per split, an `img`
    // struct of PNG bytes and path, int64 labels with ClassLabel names; pyarrow's defaults.
    let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    let file = |path: &str, rows: u64, seed: u64| {
        json!({ "path": path, "split": if path.contains("/train") { "train" } else { "test" }, "rows": rows, "height": 32, "width": 32, "channels": 3, "format": "png", "image": "struct",
                "image_column": "img", "labels": "int", "codec": "default", "seed": seed, "class_names": names })
    };
    let hf_home = sb.path().join("hf");
    let spec = json!({ "repo": "uoft-cs/cifar10", "files": [file("plain_text/train-00000-of-00001.parquet", 96, 1), file("plain_text/test-00000-of-00001.parquet", 40, 2)] });
    let truth = pytools(&python, &["write-hub".as_ref(), hf_home.as_os_str(), spec.to_string().as_ref()]);

    // FID Inception-v3 weights of pytorch-fid's layout (random, seeded), where the profile
    // expects them, with their sha256 in the profile instead of its placeholder.
    let weights = sb.path().join("data").join("fid_inception.safetensors");
    std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
    let tensors = ctpipe::features::inception::FidInception::random_tensors(7, &candle_core::Device::Cpu).unwrap();
    ctpipe::model::save_tensors(&weights, &tensors.into_iter().collect::<Vec<_>>(), None).unwrap();
    let sha = ctpipe::features::weights::sha256_file(&weights).unwrap();
    shipped_pipeline(&sb, |t| {
        let placeholder = format!("inception_sha256 = \"{}\"", "0".repeat(64));
        assert!(t.contains(&placeholder), "the cifar10 profile's inception_sha256 line moved");
        t.replace(&placeholder, &format!("inception_sha256 = \"{sha}\""))
    });

    // Offline, and any network call would fail (a closed port): the cache alone is read.
    let env = [("HF_HOME", hf_home.as_os_str()), ("HF_HUB_OFFLINE", "1".as_ref()), ("HF_ENDPOINT", "http://127.0.0.1:9".as_ref())];
    let r = rehearse(&sb, "cifar10", &sb.path().join("data"), &env);
    assert_complete(&sb, "cifar10", &r);
    assert_edm_names(&sb, "cifar10", &python);

    // The dataset is the one pyarrow wrote.
    let store = ctpipe::store::Store::new(sb.artifacts());
    let data_ref = store.read_ref("cifar10@smoke", "fetch-data.cifar10").unwrap().unwrap();
    let ours = pytools(&python, &["read-dataset".as_ref(), store.open(&data_ref.stage, &data_ref.key, ctpipe::store::Verify::Sizes).unwrap().dir.as_os_str()]);
    for split in ["train", "test"] {
        for field in ["rows", "labels", "class_names", "pixel_sum", "shape"] {
            assert_eq!(ours[split][field], truth[split][field], "{split} {field}");
        }
    }
}
