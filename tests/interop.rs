//! ctpipe's files against the tools users already have (tests/interop/pytools.py, in the pinned
//! virtual environment of tests/interop/requirements.txt): a Hugging Face cache written by
//! pyarrow with its defaults is fetched offline, and every Parquet and safetensors file ctpipe
//! writes is read back by pandas, pyarrow and Python's safetensors.

use ctpipe_e2e::{python_env, pytools, release_bin, run, Run, Sandbox};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A file of a Hub dataset repo, for pytools.py write-hub; its split as the Hub's naming means
/// it (said here, not derived).
fn file(path: &str, rows: u64, format: &str, image: &str, labels: &str, codec: &str, seed: u64) -> Value {
    let split = ["train", "test", "validation"].into_iter().find(|s| path.contains(&format!("/{s}"))).expect("a split in the path");
    json!({
        "path": path, "split": split, "rows": rows, "height": 28, "width": 28, "channels": 1, "format": format,
        "image": image, "image_column": if image == "struct" { "image" } else { "img_bytes" },
        "labels": labels, "codec": codec, "seed": seed,
        "class_names": ["ankle", "bag", "coat", "dress"],
    })
}

struct Hub {
    python: PathBuf,
    sb: Sandbox,
}

impl Hub {
    fn new() -> Option<Hub> {
        Some(Hub { python: python_env()?, sb: Sandbox::new() })
    }

    fn hf_home(&self) -> PathBuf {
        self.sb.path().join("hf")
    }

    /// Write a repo into the cache with pyarrow; what a reader must find.
    fn write(&self, repo: &str, files: Vec<Value>) -> Value {
        let spec = json!({ "repo": repo, "files": files });
        pytools(&self.python, &["write-hub".as_ref(), self.hf_home().as_os_str(), spec.to_string().as_ref()])
    }

    /// fetch-data offline from the cache; no network call can succeed (HF_ENDPOINT is a closed
    /// port), so a pass proves the cache alone was read.
    fn fetch(&self, source: &str) -> Run {
        let mut c = self.sb.cmd(release_bin("fetch-data"));
        c.env("HF_HOME", self.hf_home())
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env_remove("HF_HUB_CACHE")
            .args(["--set", &format!("source=hub:{source}")]);
        run(&mut c)
    }

    /// The same with the cache named by HF_HUB_CACHE alone (huggingface_hub's variable, which
    /// hf-hub 0.5 does not read) and HF_HOME pointing elsewhere.
    fn fetch_via_hub_cache(&self, source: &str) -> Run {
        let mut c = self.sb.cmd(release_bin("fetch-data"));
        c.env("HF_HUB_CACHE", self.hf_home().join("hub"))
            .env("HF_HOME", self.sb.path().join("empty-hf-home"))
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .args(["--set", &format!("source=hub:{source}")]);
        run(&mut c)
    }

    fn artifact(&self, key: &str) -> PathBuf {
        self.sb.artifacts().join("fetch-data").join(key)
    }

    fn truth(&self, repo: &str) -> PathBuf {
        self.hf_home().join("truth").join(format!("{}.npz", repo.replace('/', "--")))
    }
}

/// What pandas reads from our artifact equals what pyarrow and PIL wrote: rows, labels, class
/// names, and the pixels (exactly for PNG; within JPEG decoders' rounding otherwise).
fn assert_imported(hub: &Hub, repo: &str, truth: &Value, lossless: bool) -> Value {
    let key = hub.fetch(repo).expect_code(0).key();
    let test_truth = if truth.get("test").is_some() { "test" } else { "validation" };
    let ours = pytools(&hub.python, &["read-dataset".as_ref(), hub.artifact(&key).as_os_str(), hub.truth(repo).as_os_str(), test_truth.as_ref()]);
    let truth = &json!({ "train": truth["train"], "test": truth[test_truth] });
    for split in ["train", "test"] {
        let (want, got) = (&truth[split], &ours[split]);
        assert_eq!(got["rows"], want["rows"], "{repo} {split} rows");
        assert_eq!(got["labels"], want["labels"], "{repo} {split} labels");
        assert_eq!(got["class_names"], want["class_names"], "{repo} {split} class names");
        assert_eq!(got["shape"], want["shape"], "{repo} {split} image shape");
        if lossless {
            assert_eq!(got["pixel_sum"], want["pixel_sum"], "{repo} {split} pixel sum");
            assert_eq!(got["max_abs_diff"], 0, "{repo} {split}: pixels differ from what was written");
        } else {
            // Two JPEG decoders (PIL's libjpeg-turbo, image-rs's zune-jpeg) may round the
            // inverse DCT differently by a level or two, never more on these smooth images.
            let (max, mean) = (got["max_abs_diff"].as_u64().unwrap(), got["mean_abs_diff"].as_f64().unwrap());
            assert!(max <= 4 && mean < 0.5, "{repo} {split}: JPEG pixels differ by max {max}, mean {mean}");
        }
        // Sensible dtypes for a pandas user: labels as integers, images as (bytes, path) cells.
        assert_eq!(got["dtypes"]["label"], "int64", "{repo} {split}: {}", got["dtypes"]);
        assert_eq!(got["dtypes"]["image"], "object", "{repo} {split}: {}", got["dtypes"]);
        // Hugging Face datasets sees images and named classes, with the same pixels.
        let hf = &got["hf"];
        assert_eq!(hf["features"], json!({ "image": "Image", "label": "ClassLabel" }), "{repo} {split}: {hf}");
        assert_eq!((&hf["rows"], &hf["labels"], &hf["class_names"]), (&want["rows"], &want["labels"], &want["class_names"]), "{repo} {split}: {hf}");
        assert_eq!(hf["max_abs_diff"], got["max_abs_diff"], "{repo} {split}: datasets decodes other pixels than PIL on the cells");
        let mode = if want["shape"][2] == 1 { "L" } else { "RGB" };
        assert_eq!(hf["pil_modes"], json!([mode]), "{repo} {split}: {hf}");
    }
    ours
}

/// The layout `uoft-cs/cifar10` has (a config folder, one shard per split, an `image` struct of
/// PNG bytes and path, int64 labels with ClassLabel names), written with pyarrow's defaults
/// (snappy): fetched offline, rows, labels, names and pixels as written.
#[test]
fn hub_cache_written_by_pyarrow_imports_offline() {
    let Some(hub) = Hub::new() else { return };
    let repo = "uoft-cs/fashion-like";
    let truth = hub.write(
        repo,
        vec![
            file("plain_text/train-00000-of-00001.parquet", 40, "png", "struct", "int", "default", 1),
            file("plain_text/test-00000-of-00001.parquet", 12, "png", "struct", "int", "default", 2),
        ],
    );
    assert_imported(&hub, repo, &truth, true);
    // The commit of refs/main is the dataset's fingerprint.
    let key = hub.fetch(repo).expect_code(0).key();
    let m: Value = serde_json::from_slice(&std::fs::read(hub.artifact(&key).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["external"]["hub"], format!("{repo}@{}", truth["commit"].as_str().unwrap()));
    assert_eq!(hub.fetch_via_hub_cache(repo).expect_code(0).key(), key, "HF_HUB_CACHE finds the same cache");
    let r = hub.fetch("uoft-cs/not-cached").expect_code(3);
    assert!(r.one_error_line().contains("hub:uoft-cs/not-cached is not in the local cache (offline mode"), "{}", r.stderr);
}

/// Every codec pyarrow writes (snappy, gzip, LZ4, Brotli, zstd, none) in one repo of `data/`
/// shards, several per split, plain binary JPEG cells and string labels.
#[test]
fn every_codec_and_shards_with_string_labels_and_jpeg() {
    let Some(hub) = Hub::new() else { return };
    let repo = "someone/codecs";
    let codecs = ["snappy", "gzip", "lz4", "brotli", "zstd", "none"];
    let mut files: Vec<Value> = codecs
        .iter()
        .enumerate()
        .map(|(i, c)| file(&format!("data/train-{i:05}-of-00006-{c}.parquet"), 7, "jpeg", "bytes", "string", c, 10 + i as u64))
        .collect();
    files.push(file("data/test-00000-of-00001.parquet", 9, "jpeg", "bytes", "string", "default", 20));
    let truth = hub.write(repo, files);
    assert_eq!(truth["train"]["rows"], 42);
    assert_imported(&hub, repo, &truth, false);
}

/// The Hub's auto-converted layout (`<config>/<split>/0000.parquet`), pandas categorical labels
/// (dictionary-encoded strings), a validation split standing in for a missing test split.
#[test]
fn converted_layout_categorical_labels_and_validation_split() {
    let Some(hub) = Hub::new() else { return };
    let repo = "someone/converted";
    let truth = hub.write(
        repo,
        vec![
            file("default/train/0000.parquet", 10, "png", "struct", "category", "gzip", 30),
            file("default/train/0001.parquet", 6, "png", "struct", "category", "gzip", 31),
            file("default/validation/0000.parquet", 5, "png", "struct", "category", "gzip", 32),
        ],
    );
    assert!(truth.get("test").is_none());
    assert_imported(&hub, repo, &truth, true);
}

/// Several configs in one repo: a one-line error naming them, and `hub:<owner>/<name>/<config>`
/// picks one. Labels pyarrow wrote as floats: a one-line error naming file and column.
#[test]
fn configs_and_unusable_columns_are_one_line_errors() {
    let Some(hub) = Hub::new() else { return };
    let repo = "someone/two-configs";
    let truth = hub.write(
        repo,
        vec![
            file("small/train-00000-of-00001.parquet", 8, "png", "struct", "int", "default", 40),
            file("small/test-00000-of-00001.parquet", 4, "png", "struct", "int", "default", 41),
            file("large/train-00000-of-00001.parquet", 16, "png", "struct", "int", "default", 42),
            file("large/test-00000-of-00001.parquet", 4, "png", "struct", "int", "default", 43),
        ],
    );
    let r = hub.fetch(repo).expect_code(2);
    assert!(r.one_error_line().contains("holds several configs (large, small): choose one with source = \"hub:someone/two-configs/<config>\""), "{}", r.stderr);
    let key = hub.fetch(&format!("{repo}/large")).expect_code(0).key();
    let ours = pytools(&hub.python, &["read-dataset".as_ref(), hub.artifact(&key).as_os_str()]);
    assert_eq!(ours["train"]["rows"], 16);
    assert_eq!(truth["train"]["rows"], 24, "both configs' train files were written");

    // pandas writes a float column when labels have gaps filled with NaN: not class indices.
    let dir = hub.sb.path().join("floats");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "import io, pyarrow as pa, pyarrow.parquet as pq\nfrom PIL import Image\nb = io.BytesIO(); Image.new('L', (4, 4)).save(b, format='PNG')\n\
         t = pa.table({{'image': pa.array([b.getvalue()] * 3, pa.binary()), 'label': pa.array([0.0, 1.0, 2.0])}})\n\
         pq.write_table(t, '{0}/train.parquet'); pq.write_table(t, '{0}/test.parquet')\n",
        dir.display()
    );
    assert_eq!(run(std::process::Command::new(&hub.python).args(["-c", &script])).code, 0);
    let mut c = hub.sb.cmd(release_bin("fetch-data"));
    let r = run(c.args(["--set", &format!("source=parquet:{}", dir.display())]));
    let r = r.expect_code(3);
    assert!(r.one_error_line().ends_with("train.parquet: column `label` must hold integers or strings, found Float64"), "{}", r.stderr);
}

/// Every Parquet file ctpipe writes (the dataset splits of images and of points, a training
/// run's metrics) reads with pandas into sensible dtypes, and every safetensors file (weights
/// of the U-Net and the MLP, the VCT encoder, the classifier encoder, feature statistics,
/// snapshots) loads with Python's safetensors, finite, with the names of the module it mirrors.
#[test]
fn pandas_and_safetensors_read_everything_ctpipe_writes() {
    let Some(hub) = Hub::new() else { return };
    let repo = "someone/images";
    hub.write(
        repo,
        vec![file("data/train-00000-of-00001.parquet", 24, "png", "struct", "int", "default", 50), file("data/test-00000-of-00001.parquet", 8, "png", "struct", "int", "default", 51)],
    );
    let images = hub.fetch(repo).expect_code(0).key();
    let points = ctpipe_e2e::publish_toy(&hub.sb, 500).to_string();
    let sb = &hub.sb;
    let stage = |exe: &str, inputs: &[(&str, &str)], sets: &[&str]| ctpipe_e2e::run_stage(sb, release_bin(exe), inputs, sets).expect_code(0).key();
    let loop_ = ["steps=2", "batch=4", "checkpoint_every=1", "grid=2", "keep_snapshots=true"];
    let with = |extra: &[&'static str]| -> Vec<&str> { loop_.iter().copied().chain(extra.iter().copied()).collect() };
    let unet = stage("train-ct", &[("data", &images)], &with(&["method=ect", "network=tiny"]));
    let vct = stage("train-ct", &[("data", &images)], &with(&["method=vct", "network=tiny"]));
    let mlp = stage("train-ct", &[("data", &points)], &with(&["method=ict", "network=mlp-toy"]));
    let classifier = stage("precompute-encoder", &[("data", &images)], &["encoder=classifier", "epochs=1", "noise_n=8"]);

    // Parquet, through pandas.
    let art = |stage: &str, key: &str, file: &str| sb.artifacts().join(stage).join(key).join(file);
    let points_split = pytools(&hub.python, &["read-parquet".as_ref(), art("fetch-data", &points, "train.parquet").as_os_str()]);
    assert_eq!(points_split["dtypes"], json!({ "x": "object", "label": "int64" }), "{points_split}");
    let hf = pytools(&hub.python, &["read-hf".as_ref(), art("fetch-data", &points, "train.parquet").as_os_str()]);
    assert_eq!(hf["features"], json!({ "x": "List", "label": "ClassLabel" }), "{hf}");
    assert_eq!((&hf["x_feature"], hf["rows"].as_u64(), hf["class_names"].as_array().map(Vec::len)), (&json!({ "dtype": "float32", "length": 2 }), Some(500), Some(2)), "{hf}");
    for key in [&unet, &vct, &mlp] {
        let m = pytools(&hub.python, &["read-parquet".as_ref(), art("train-ct", key, "metrics.parquet").as_os_str()]);
        assert_eq!(m["rows"], 2);
        let dtypes = m["dtypes"].as_object().unwrap();
        assert_eq!(dtypes["step"], "uint64", "{m}");
        assert!(dtypes.iter().filter(|(k, _)| *k != "step").all(|(_, t)| t == "float64"), "{m}");
        assert!(m["finite"]["loss"].as_bool().unwrap(), "{m}");
    }

    // safetensors, through Python's safetensors (numpy).
    let load = |path: PathBuf| -> Value {
        let v = pytools(&hub.python, &["read-safetensors".as_ref(), path.as_os_str()]);
        assert!(v["all_finite"].as_bool().unwrap(), "{}: {v}", path.display());
        v
    };
    let edm = ctpipe_e2e::edm_songunet("tiny");
    for key in [&unet, &vct] {
        for file in ["ema.safetensors", "net.safetensors", "snapshots/ema-step-0000000002.safetensors"] {
            let v = load(art("train-ct", key, file));
            assert_eq!(v["metadata_keys"], json!(["ctpipe"]));
            assert!(v["tensors"].as_object().unwrap().values().all(|d| d["dtype"] == "float32"));
            assert_eq!(ctpipe_e2e::tensor_shapes(&v), edm, "{file}: the U-Net's tensors are EDM's SongUNet state_dict (tests/interop/fixtures)");
            // networks.py:64-66: the [1, 1] filter's outer product over its sum squared.
            let filters = v["resample_filters"].as_object().unwrap();
            assert_eq!(filters.len(), 4, "{file}: {v}");
            assert!(filters.values().all(|f| *f == json!([0.25, 0.25, 0.25, 0.25])), "{file}: {v}");
        }
    }
    for file in ["encoder.safetensors", "encoder_ema.safetensors"] {
        let v = load(art("train-ct", &vct, file));
        assert!(!v["tensors"].as_object().unwrap().is_empty());
    }
    let v = load(art("train-ct", &mlp, "ema.safetensors"));
    assert!(v["tensors"].as_object().unwrap().contains_key("model.hidden0.weight"), "{v}");
    let v = load(art("precompute-encoder", &classifier, "encoder.safetensors"));
    assert!(!v["tensors"].as_object().unwrap().is_empty());
    for file in ["stats.safetensors", "stats-train.safetensors", "stats-test.safetensors"] {
        let v = load(art("precompute-encoder", &classifier, file));
        // pytorch-fid's names for the statistics (mu, sigma), in f64, and the sample count.
        let t = &v["tensors"];
        let d = t["mu"]["shape"][0].as_u64().expect("mu");
        assert_eq!(t["mu"], json!({ "dtype": "float64", "shape": [d] }), "{file}: {v}");
        assert_eq!(t["sigma"], json!({ "dtype": "float64", "shape": [d, d] }), "{file}: {v}");
        assert_eq!(t["count"], json!({ "dtype": "int64", "shape": [1] }), "{file}: {v}");
    }
}

/// clean-fid's resize (`fid --resize clean`): PIL's bicubic in float mode, bit for bit against
/// Pillow itself, enlarging (28 → 299 as Fashion-MNIST, 32 → 299 as CIFAR-10), shrinking
/// (antialiased: the kernel widens) and both at once, in either order of the passes (Pillow 13
/// goes vertical first when the height loses more than twice the width's pixels: 70 against
/// 2 × 35 is horizontal first, 71 vertical).
#[test]
fn pil_bicubic_resize_is_pillows_to_the_bit() {
    let Some(python) = python_env() else { return };
    let sb = Sandbox::new();
    let cases = json!([[28, 28, 299, 299, 1], [32, 32, 299, 299, 2], [512, 384, 299, 299, 3], [300, 301, 299, 299, 4], [7, 40, 13, 3, 5], [100, 60, 30, 30, 6], [64, 48, 30, 30, 7], [100, 65, 30, 30, 8], [101, 65, 30, 30, 9]]);
    let written = pytools(&python, &["pil-resize".as_ref(), sb.path().as_os_str(), cases.to_string().as_ref()]);
    for (case, paths) in cases.as_array().unwrap().iter().zip(written.as_array().unwrap()) {
        let dims: Vec<usize> = case.as_array().unwrap()[..4].iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let read = |i: usize| -> Vec<f32> {
            candle_core::Tensor::read_npy(paths[i].as_str().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        let (src, pil) = (read(0), read(1));
        let ours = ctpipe::features::pil_resize::bicubic_f32(&src, dims[0], dims[1], dims[2], dims[3]);
        let differ = ours.iter().zip(&pil).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let worst = ours.iter().zip(&pil).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert_eq!((ours.len(), differ), (pil.len(), 0), "{case}: {differ} of {} values differ from Pillow's, by up to {worst}", pil.len());
    }
}
