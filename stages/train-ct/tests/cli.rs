//! train-ct as a user runs it: the artifact, --help, cached reruns, determinism, bad config.

use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{run, Run, Sandbox};

const EXE: &str = env!("CARGO_BIN_EXE_train-ct");

fn train(sb: &Sandbox, inputs: &[(&str, &str)], sets: &[&str]) -> Run {
    ctpipe_e2e::run_stage(sb, EXE, inputs, sets)
}

const TOY: &[&str] = &["network=mlp-toy", "steps=60", "batch=32", "checkpoint_every=30", "grid=4", "log_every=1000"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    TOY.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn artifact_holds_weights_pictures_and_metrics() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 1000).to_string();
    let r = train(&sb, &[("data", &data)], &with(&["method=ect", "keep_snapshots=true"])).expect_code(0);
    let key = r.key();
    assert!(r.stderr.contains("264,450 parameters"), "{}", r.stderr);
    let store = Store::new(sb.artifacts());
    let art = store.open("train-ct", &Key::parse(&key).unwrap(), Verify::Hashes).unwrap();
    let files: Vec<&str> = art.manifest.files.iter().map(|f| f.path.as_str()).collect();
    for f in [
        "ema.safetensors",
        "net.safetensors",
        "model.json",
        "metrics.parquet",
        "loss.svg",
        "samples-1step.png",
        "samples-2step.png",
        "grids/step-0000000030-1step.png",
        "grids/step-0000000060-2step.png",
        "snapshots/ema-step-0000000030.safetensors",
    ] {
        assert!(files.contains(&f), "missing {f} in {files:?}");
    }
    assert_eq!(art.manifest.inputs["data"].key.as_str(), data);
    assert_eq!(art.manifest.metrics["parameters"], 264_450);
    // The weights carry the model spec as their one metadata entry.
    let bytes = std::fs::read(art.dir.join("ema.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta.len(), 1);
    let spec: serde_json::Value = serde_json::from_str(&meta["ctpipe"]).unwrap();
    assert_eq!(spec["method"], "ect");
    assert_eq!(spec["precond"]["kind"], "ect");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().contains(&"model.hidden0.weight"));
    // One metrics row per step.
    let f = std::fs::File::open(art.dir.join("metrics.parquet")).unwrap();
    let rows = parquet::file::reader::SerializedFileReader::new(f).map(|r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows()).unwrap();
    assert_eq!(rows, 60);
    assert!(std::fs::read_to_string(art.dir.join("loss.svg")).unwrap().contains("<polyline"));
    // A second run is a cache hit.
    let again = train(&sb, &[("data", &data)], &with(&["method=ect", "keep_snapshots=true"])).expect_code(0);
    assert_eq!(again.stdout.trim(), format!("cached train-ct {key}"));
}

#[test]
fn same_seed_same_bytes() {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let (da, db) = (ctpipe_e2e::publish_toy(&a, 1000).to_string(), ctpipe_e2e::publish_toy(&b, 1000).to_string());
    let ka = train(&a, &[("data", &da)], &with(&["method=sct"])).expect_code(0).key();
    let kb = train(&b, &[("data", &db)], &with(&["method=sct"])).expect_code(0).key();
    assert_eq!(ka, kb);
    for f in ["ema.safetensors", "net.safetensors", "samples-1step.png"] {
        let x = std::fs::read(a.artifacts().join("train-ct").join(&ka).join(f)).unwrap();
        let y = std::fs::read(b.artifacts().join("train-ct").join(&kb).join(f)).unwrap();
        assert!(x == y, "{f} differs");
    }
    let kc = train(&a, &[("data", &da)], &with(&["method=sct", "seed=1"])).expect_code(0).key();
    assert_ne!(kc, ka);
}

#[test]
fn help_documents_every_field() {
    let sb = Sandbox::new();
    let help = run(sb.cmd(EXE).arg("--help")).expect_code(0).stdout;
    use ctpipe::config::Describe;
    for f in ctpipe::train::config::TrainConfig::fields() {
        assert!(help.contains(&format!("\n  {} = ", f.name)), "--help lacks {}", f.name);
        assert!(!f.doc.trim().is_empty(), "{} has no documentation", f.name);
    }
    assert!(help.contains("--input") && help.contains("--device"));
    // It opens with what the stage does and its input roles.
    assert!(help.starts_with("train-ct: train a consistency model"), "{help}");
    let roles = &help[..help.find("Usage:").expect("a usage line")];
    assert!(roles.contains("\n  data       one fetch-data artifact\n") && roles.contains("\n  init       optional, one train-ct artifact\n"), "{roles}");
}

#[test]
fn bad_config_values_are_one_line_errors() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["method=ddpm"], 2, "unknown method `ddpm`"),
        (&["method=ict", "schedule=ect"], 2, "`schedule` applies to gc and vct only"),
        (&["method=vct", "schedule=sct"], 2, "SCT's reference weights assume independent Gaussian noise"),
        (&["method=ict", "vct_kernel=li"], 2, "`vct_kernel` applies to vct only"),
        (&["network=unet-xxl"], 2, "unknown preset `unet-xxl`"),
        (&["network=tiny"], 2, "network `tiny` is a U-Net for images"),
        (&["lr=-1"], 2, "field `lr`"),
        (&["optimizer=sgd"], 2, "field `optimizer`: `sgd`"),
        (&["ema_beta=1.5"], 2, "field `ema_beta`"),
        (&["dropout=2"], 2, "field `dropout`"),
        (&["steps=0"], 2, "field `steps`: expected a value in [1, 1e12], got 0"),
        (&["learning_rate=1"], 2, "unknown field `learning_rate`"),
        (&["stpes=10"], 2, "unknown field `stpes` (did you mean `steps`?), expected one of"),
        (&["steps=many"], 2, "field `steps`"),
        (&["distance=l1"], 2, "field `distance`"),
        (&["ect_q=1", "method=ect"], 2, "field `ect_q`"),
        (&["sigma_min=100"], 2, "field `sigma_max`"),
    ];
    for (sets, code, needle) in cases {
        let mut all: Vec<&str> = vec!["network=mlp-toy"];
        all.extend_from_slice(sets);
        let r = train(&sb, &[("data", &data)], &all);
        assert_eq!(r.code, *code, "{sets:?}: {}", r.stderr);
        let line = r.one_error_line();
        assert!(line.contains(needle), "{sets:?}: `{needle}` not in `{line}`");
    }
    // Inputs: missing, of the wrong stage, an init of another architecture.
    let r = train(&sb, &[], &["network=mlp-toy"]);
    assert_eq!(r.code, 2);
    assert!(r.one_error_line().contains("input `data` is required"));
    let model = train(&sb, &[("data", &data)], &with(&["method=edm"])).expect_code(0).key();
    let r = train(&sb, &[("data", &model)], &with(&[]));
    assert_eq!(r.code, 3);
    assert!(r.one_error_line().contains("input `data` must be a fetch-data artifact"));
    let r = train(&sb, &[("data", &data), ("init", &model)], &with(&["method=ect", "network=mlp-small"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.one_error_line().contains("has a different network"), "{}", r.stderr);
    let r = train(&sb, &[("data", &data), ("init", &model)], &with(&["method=ect", "sigma_data=0.7"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.one_error_line().contains("trained with sigma_data = 0.5, this run sets 0.7"), "{}", r.stderr);
    assert!(Store::new(sb.artifacts()).list().unwrap().iter().filter(|(s, _)| s == "train-ct").count() == 1, "no partial artifacts");
}

/// ECT's recipe tunes at dropout 0.2 from an EDM model trained at another rate: dropout has no
/// parameters, so the init is accepted and the tuned network starts from the init's EMA weights.
#[test]
fn tuning_at_another_dropout_starts_from_the_init() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 1000).to_string();
    let edm = train(&sb, &[("data", &data)], &with(&["method=edm", "dropout=0.1"])).expect_code(0).key();
    let ect = train(&sb, &[("data", &data), ("init", &edm)], &with(&["method=ect", "dropout=0.2", "lr=1e-12", "steps=2", "checkpoint_every=2"]))
        .expect_code(0)
        .key();
    let dev = candle_core::Device::Cpu;
    let load = |key: &str, file: &str| ctpipe::model::load_tensors(&sb.artifacts().join("train-ct").join(key).join(file), &dev).unwrap();
    let (init, tuned) = (load(&edm, "ema.safetensors"), load(&ect, "net.safetensors"));
    assert_eq!(init.len(), tuned.len());
    for (name, a) in &init {
        let moved = (a - &tuned[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(moved < 1e-6, "{name} moved by {moved}");
    }
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(sb.artifacts().join("train-ct").join(&ect).join("model.json")).unwrap()).unwrap();
    assert_eq!((spec["network"]["arch"].as_str(), spec["network"]["dropout"].as_f64()), (Some("mlp"), Some(0.2)), "{spec}");
}

/// Imported init weights (a file and its sha256, as ECT starts from EDM's checkpoint) start the
/// run exactly where the same weights given as an `init` artifact do; a wrong hash, two inits,
/// or a hash without a file are one-line errors.
#[test]
fn imported_init_weights_start_where_the_init_artifact_does() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 1000).to_string();
    let edm = train(&sb, &[("data", &data)], &with(&["method=edm", "steps=30"])).expect_code(0).key();
    let file = sb.artifacts().join("train-ct").join(&edm).join("ema.safetensors");
    // Outside the store, as a downloaded checkpoint would be.
    let copy = sb.path().join("edm-ema.safetensors");
    std::fs::copy(&file, &copy).unwrap();
    let sha = ctpipe::features::weights::sha256_file(&copy).unwrap();
    let tune = ["method=ect", "steps=30"];
    let from_artifact = train(&sb, &[("data", &data), ("init", &edm)], &with(&tune)).expect_code(0).key();
    // `with` takes the static settings of these tests; leaked, these two live as long.
    let (w, h): (&'static str, &'static str) = (format!("init_weights={}", copy.display()).leak(), format!("init_sha256={sha}").leak());
    let from_file = train(&sb, &[("data", &data)], &with(&[tune[0], tune[1], w, h])).expect_code(0).key();
    assert_ne!(from_artifact, from_file, "the import is part of the key");
    let read = |key: &str| std::fs::read(sb.artifacts().join("train-ct").join(key).join("ema.safetensors")).unwrap();
    assert!(read(&from_artifact) == read(&from_file), "the imported weights trained to other weights than the same init artifact");

    let bad_sha: &'static str = format!("init_sha256={}", "0".repeat(64)).leak();
    let r = train(&sb, &[("data", &data)], &with(&[tune[0], w, bad_sha])).expect_code(3);
    assert!(r.one_error_line().contains("sha256") && r.one_error_line().contains("init weights"), "{}", r.stderr);
    let r = train(&sb, &[("data", &data), ("init", &edm)], &with(&[tune[0], w, h])).expect_code(2);
    assert!(r.one_error_line().contains("two inits"), "{}", r.stderr);
    let r = train(&sb, &[("data", &data)], &with(&[tune[0], h])).expect_code(2);
    assert!(r.one_error_line().contains("need init_weights or init_repo"), "{}", r.stderr);
}
