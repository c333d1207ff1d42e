//! fetch-data as a user runs it: every source on small data written here, every bad input,
//! the cache, determinism, and the real Fashion-MNIST.

use arrow_array::{Array, ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use ctpipe::data::sources::idx::encode_idx;
use ctpipe::data::sources::images::encode_png;
use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{run, Run, Sandbox};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

const EXE: &str = env!("CARGO_BIN_EXE_fetch-data");

fn fetch(sb: &Sandbox, sets: &[&str]) -> Run {
    let mut c = sb.cmd(EXE);
    for s in sets {
        c.args(["--set", s]);
    }
    run(&mut c)
}

fn manifest(sb: &Sandbox, key: &str) -> ctpipe::store::Manifest {
    let store = Store::new(sb.artifacts());
    store.open("fetch-data", &Key::parse(key).unwrap(), Verify::Hashes).unwrap().manifest
}

/// Bad input: exit `code`, one error line containing `needle`, and nothing published or left.
fn assert_rejected(sb: &Sandbox, r: Run, code: i32, needle: &str) {
    let r = r.expect_code(code);
    let line = r.one_error_line();
    assert!(line.contains(needle), "`{needle}` not in: {line}");
    let store = Store::new(sb.artifacts());
    assert!(store.list().unwrap().is_empty(), "an artifact was published");
    let stage_dir = sb.artifacts().join("fetch-data");
    let leftovers: Vec<_> = std::fs::read_dir(&stage_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
}

#[test]
fn toy2d_publishes_caches_and_is_deterministic() {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let sets = ["source=toy2d", "dataset=eight-gaussians", "n=3000", "n_test=500", "seed=5"];
    let first = fetch(&a, &sets).expect_code(0);
    let key = first.key();
    let m = manifest(&a, &key);
    assert_eq!(m.metrics["splits"]["train"]["rows"], 3000);
    assert_eq!(m.metrics["splits"]["test"]["rows"], 500);
    let files: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["dataset.json", "test.parquet", "train.parquet"]);
    // A second run is a cache hit; the same settings elsewhere give the same key and bytes.
    let second = fetch(&a, &sets).expect_code(0);
    assert_eq!(second.stdout.trim(), format!("cached fetch-data {key}"));
    let other = fetch(&b, &["seed=5", "n_test=500", "n=3000", "dataset=eight-gaussians", "source=toy2d"]).expect_code(0);
    assert_eq!(other.key(), key, "field order does not matter");
    let mb = manifest(&b, &key);
    let hashes = |m: &ctpipe::store::Manifest| m.files.iter().filter(|f| f.path.ends_with(".parquet")).map(|f| f.blake3.clone()).collect::<Vec<_>>();
    assert_eq!(hashes(&m), hashes(&mb), "same seed, bit-identical Parquet files");
    // Any value change is a new key.
    assert_ne!(fetch(&a, &["source=toy2d", "dataset=eight-gaussians", "n=3000", "n_test=500", "seed=6"]).expect_code(0).key(), key);
}

#[test]
fn help_documents_every_field_and_dry_run_publishes_nothing() {
    let sb = Sandbox::new();
    let help = run(sb.cmd(EXE).arg("--help")).expect_code(0).stdout;
    for field in ["source", "dataset", "n =", "n_test", "noise", "seed", "from", "revision", "image_column", "label_column", "channels", "test_fraction"] {
        assert!(help.contains(&format!("\n  {field}")), "--help lacks {field}:\n{help}");
    }
    for flag in ["--profile", "--node", "--set", "--input", "--artifacts", "--dry-run", "--verify", "--write-ref"] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let r = run(sb.cmd(EXE).args(["--dry-run", "--set", "dataset=moons"])).expect_code(0);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["config"]["dataset"], "moons");
    assert_eq!(doc["cached"], false);
    // The settings nobody wrote are listed as the defaults in effect.
    let defaults: Vec<&str> = doc["defaults"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(defaults.contains(&"seed") && defaults.contains(&"source") && !defaults.contains(&"dataset"), "{defaults:?}");
    assert!(Store::new(sb.artifacts()).list().unwrap().is_empty());
    // A reader that leaves early (`| grep -q`, `| head`, here at once) is not an error: the
    // dry run exits 0 without a panic, so a pipeline under pipefail (submit.sh) is not failed.
    let r = run(sb.cmd("bash").args(["-c", &format!("set -o pipefail; '{EXE}' --dry-run | true")]));
    assert!(r.code == 0 && !r.stderr.contains("panicked"), "exit {}\n{}", r.code, r.stderr);
}

#[test]
fn usage_errors() {
    let sb = Sandbox::new();
    assert_rejected(&sb, fetch(&sb, &["source=imagenet"]), 2, "unknown source `imagenet`");
    assert_rejected(&sb, fetch(&sb, &["source=fashion-mnist", "dataset=moons"]), 2, "field `dataset` applies to source toy2d only");
    assert_rejected(&sb, fetch(&sb, &["dataset=spiral"]), 2, "unknown toy2d dataset `spiral`");
    assert_rejected(&sb, fetch(&sb, &["n=lots"]), 2, "field `n`");
    assert_rejected(&sb, fetch(&sb, &["nn=3"]), 2, "unknown field `nn`");
    assert_rejected(&sb, fetch(&sb, &["n=0"]), 2, "field `n`: expected a value in [2, 1e8], got 0");
    let r = run(sb.cmd(EXE).args(["--node", "fetch-data.x"]));
    assert_rejected(&sb, r, 2, "pipeline.toml");
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Four small Fashion-MNIST-format files: `n_train` and `n_test` images, labels cycling 0..10.
fn write_idx_set(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for ((img, lab), n) in ctpipe::data::sources::fashion_mnist::FILES.iter().zip([n_train, n_test]) {
        let px: Vec<u8> = (0..n * 784).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(dir.join(img), gz(&encode_idx(&[n, 28, 28], &px))).unwrap();
        std::fs::write(dir.join(lab), gz(&encode_idx(&[n], &labels))).unwrap();
    }
}

#[test]
fn fashion_mnist_from_a_folder_of_idx_files() {
    let sb = Sandbox::new();
    let dir = sb.path().join("idx");
    write_idx_set(&dir, 40, 20);
    let from = format!("from={}", toml_str(&dir));
    let r = fetch(&sb, &["source=fashion-mnist", &from]).expect_code(0);
    let m = manifest(&sb, &r.key());
    assert_eq!(m.metrics["splits"]["train"]["rows"], 40);
    assert_eq!(m.metrics["splits"]["train"]["per_class"]["Ankle boot"], 4);
    assert_eq!(m.metrics["kind"]["height"], 28);
    assert!(m.external.contains_key("fashion-mnist"));
    // Changing a source file changes the key: the fingerprint is in it.
    write_idx_set(&dir, 40, 21);
    assert_ne!(fetch(&sb, &["source=fashion-mnist", &from]).expect_code(0).key(), r.key());

    // Our splits are Hub-style Parquet (Image cells of PNG, ClassLabel names in the
    // `huggingface` metadata): the Hub importer reads an artifact back to the same rows,
    // pixels, labels and class names.
    let art = sb.artifacts().join("fetch-data").join(r.key());
    let again = fetch(&sb, &[&format!("source=parquet:{}", art.display())]).expect_code(0).key();
    for split in ["train", "test"] {
        let read = |key: &str| ctpipe::data::io::read_split(&sb.artifacts().join("fetch-data").join(key).join(format!("{split}.parquet"))).unwrap();
        let ((info, rows), (info2, rows2)) = (read(&r.key()), read(&again));
        assert_eq!((info.kind, &info.class_names, rows), (info2.kind, &info2.class_names, rows2), "{split}");
    }
}

#[test]
fn truncated_idx_is_rejected() {
    let sb = Sandbox::new();
    let dir = sb.path().join("idx");
    write_idx_set(&dir, 10, 10);
    let path = dir.join("train-images-idx3-ubyte.gz");
    let raw = encode_idx(&[10, 28, 28], &vec![7u8; 10 * 784]);
    std::fs::write(&path, gz(&raw[..raw.len() - 100])).unwrap();
    let from = format!("from={}", toml_str(&dir));
    assert_rejected(&sb, fetch(&sb, &["source=fashion-mnist", &from]), 3, "truncated IDX file: header says 10×28×28 = 7840 bytes of data, found 7740");
    // A cut gzip stream is named too.
    let whole = gz(&raw);
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert_rejected(&sb, fetch(&sb, &["source=fashion-mnist", &from]), 3, "train-images-idx3-ubyte.gz: corrupt or truncated gzip stream");
}

fn toml_str(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

fn png(value: u8, h: u32, w: u32, c: u32) -> Vec<u8> {
    encode_png(&vec![value; (h * w * c) as usize], h, w, c).unwrap()
}

#[test]
fn folder_source_with_and_without_split_folders() {
    let sb = Sandbox::new();
    let root = sb.path().join("imgs");
    for (split, n) in [("train", 3), ("test", 2)] {
        for class in ["cat", "dog"] {
            for i in 0..n {
                let p = root.join(split).join(class).join(format!("{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, png(i as u8 * 10, 4, 5, 3)).unwrap();
            }
        }
    }
    std::fs::write(root.join("train/cat/notes.txt"), "ignored").unwrap();
    let src = format!("source=folder:{}", root.display());
    let m = manifest(&sb, &fetch(&sb, &[&src]).expect_code(0).key());
    assert_eq!(m.metrics["kind"], serde_json::json!({"kind": "images", "height": 4, "width": 5, "channels": 3}));
    assert_eq!(m.metrics["splits"]["train"]["per_class"], serde_json::json!({"cat": 3, "dog": 3}));
    assert_eq!(m.metrics["splits"]["test"]["rows"], 4);

    // One pool: split by test_fraction with the seed.
    let pool = sb.path().join("pool");
    for i in 0..10 {
        let class = if i % 2 == 0 { "a" } else { "b" };
        std::fs::create_dir_all(pool.join(class)).unwrap();
        std::fs::write(pool.join(class).join(format!("{i}.png")), png(i, 2, 2, 1)).unwrap();
    }
    let src = format!("source=folder:{}", pool.display());
    let m = manifest(&sb, &fetch(&sb, &[&src, "test_fraction=0.3"]).expect_code(0).key());
    assert_eq!((m.metrics["splits"]["train"]["rows"].as_u64(), m.metrics["splits"]["test"]["rows"].as_u64()), (Some(7), Some(3)));
}

#[test]
fn folder_bad_inputs() {
    let sb = Sandbox::new();
    let root = sb.path().join("bad");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    for i in 0..5 {
        std::fs::write(root.join("a").join(format!("{i}.png")), png(1, 8, 8, 1)).unwrap();
    }
    std::fs::write(root.join("b/odd.png"), png(1, 8, 9, 1)).unwrap();
    let src = format!("source=folder:{}", root.display());
    assert_rejected(&sb, fetch(&sb, &[&src]), 3, "mixed image sizes");
    std::fs::write(root.join("b/odd.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    assert_rejected(&sb, fetch(&sb, &[&src]), 3, "odd.png: cannot decode image");
    std::fs::remove_file(root.join("b/odd.png")).unwrap();
    // 5 images and a test fraction that rounds to no test image.
    assert_rejected(&sb, fetch(&sb, &[&src, "test_fraction=0.05"]), 3, "empty split");
    let empty = sb.path().join("empty");
    std::fs::create_dir_all(empty.join("train/x")).unwrap();
    std::fs::create_dir_all(empty.join("test/x")).unwrap();
    std::fs::write(empty.join("train/x/0.png"), png(1, 2, 2, 1)).unwrap();
    assert_rejected(&sb, fetch(&sb, &[&format!("source=folder:{}", empty.display())]), 3, "empty split");
    assert_rejected(&sb, fetch(&sb, &["source=folder:/no/such/dir"]), 3, "no such folder");
}

/// A Parquet file in the Hub's image layout: `img` struct {bytes, path}, `label` int64, and the
/// `huggingface` metadata naming the classes.
fn write_hub_parquet(path: &Path, n: usize, h: u32, with_label: bool) {
    let bytes: Vec<Vec<u8>> = (0..n).map(|i| png((i * 20) as u8, h, 3, 3)).collect();
    let bytes_arr: ArrayRef = Arc::new(BinaryArray::from_iter_values(bytes.iter()));
    let paths: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{i}.png"))));
    let img = StructArray::from(vec![
        (Arc::new(Field::new("bytes", DataType::Binary, true)), bytes_arr),
        (Arc::new(Field::new("path", DataType::Utf8, true)), paths),
    ]);
    let mut fields = vec![Field::new("img", img.data_type().clone(), true)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(img)];
    if with_label {
        fields.push(Field::new("label", DataType::Int64, true));
        cols.push(Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 3))));
    }
    let schema = Arc::new(Schema::new(fields));
    let meta = r#"{"info":{"features":{"img":{"_type":"Image"},"label":{"names":["plane","car","bird"],"_type":"ClassLabel"}}}}"#;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new("huggingface".into(), meta.to_string())]))
        .build();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_source_in_hub_layout() {
    let sb = Sandbox::new();
    let dir = sb.path().join("pq");
    write_hub_parquet(&dir.join("plain_text/train-00000-of-00001.parquet"), 9, 4, true);
    write_hub_parquet(&dir.join("plain_text/test-00000-of-00001.parquet"), 6, 4, true);
    let m = manifest(&sb, &fetch(&sb, &[&format!("source=parquet:{}", dir.display())]).expect_code(0).key());
    assert_eq!(m.metrics["splits"]["train"]["per_class"], serde_json::json!({"plane": 3, "car": 3, "bird": 3}));
    assert_eq!(m.metrics["splits"]["test"]["rows"], 6);

    // A single file is split by test_fraction.
    let one = sb.path().join("one.parquet");
    write_hub_parquet(&one, 10, 4, true);
    let m = manifest(&sb, &fetch(&sb, &[&format!("source=parquet:{}", one.display()), "test_fraction=0.2"]).expect_code(0).key());
    assert_eq!(m.metrics["splits"]["test"]["rows"], 2);

    // Bad inputs, each in a store that must stay empty.
    let bad = Sandbox::new();
    let nolabel = bad.path().join("nolabel.parquet");
    write_hub_parquet(&nolabel, 10, 4, false);
    assert_rejected(&bad, fetch(&bad, &[&format!("source=parquet:{}", nolabel.display())]), 3, "no label column");
    assert_rejected(&bad, fetch(&bad, &[&format!("source=parquet:{}", one.display()), "label_column=\"fine\""]), 3, "missing column `fine`");
    let mixed = bad.path().join("mixed");
    write_hub_parquet(&mixed.join("train-0.parquet"), 4, 4, true);
    write_hub_parquet(&mixed.join("test-0.parquet"), 4, 5, true);
    assert_rejected(&bad, fetch(&bad, &[&format!("source=parquet:{}", mixed.display())]), 3, "mixed image sizes");
}

/// Lay out a Hub cache as huggingface_hub does: refs/main → commit, snapshots/<commit>/… as
/// links into blobs/.
fn fill_hub_cache(hf_home: &Path, repo: &str, commit: &str) {
    let repo_dir = hf_home.join("hub").join(format!("datasets--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    for (split, n) in [("train", 6), ("test", 3)] {
        let blob = repo_dir.join("blobs").join(format!("blob-{split}"));
        write_hub_parquet(&blob, n, 4, true);
        let link = repo_dir.join("snapshots").join(commit).join(format!("plain_text/{split}-00000-of-00001.parquet"));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&blob, &link).unwrap();
    }
}

#[test]
fn hub_offline_reads_the_local_cache() {
    let sb = Sandbox::new();
    let hf_home = sb.path().join("hf");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fill_hub_cache(&hf_home, "test-org/tiny-images", commit);
    let r = run(sb.cmd(EXE).env("HF_HOME", &hf_home).env("HF_HUB_OFFLINE", "1").args(["--set", "source=hub:test-org/tiny-images"])).expect_code(0);
    let m = manifest(&sb, &r.key());
    assert_eq!(m.metrics["dataset"], format!("hub:test-org/tiny-images@{commit}"));
    assert_eq!(m.external["hub"], format!("test-org/tiny-images@{commit}"));
    assert_eq!(m.metrics["splits"]["train"]["rows"], 6);
    let r = run(sb.cmd(EXE).env("HF_HOME", &hf_home).env("HF_HUB_OFFLINE", "1").args(["--set", "source=hub:test-org/absent"]));
    assert_eq!(r.code, 3);
    assert!(r.one_error_line().contains("not in the local cache"));
}

/// A minimal stand-in for the Hub's HTTP API, enough for hf-hub's sync client: repo info,
/// and file downloads with the headers it reads (etag, x-repo-commit, content-range).
fn serve_fake_hub(files: Vec<(String, Vec<u8>)>, commit: &'static str) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range_start = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    range_start = r.trim().split('-').next().and_then(|s| s.parse::<usize>().ok());
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut out = stream;
            let (status, headers, body): (&str, String, Vec<u8>) = if path.starts_with("/api/datasets/") {
                let siblings: Vec<_> = files.iter().map(|(n, _)| serde_json::json!({"rfilename": n})).collect();
                let body = serde_json::json!({"sha": commit, "siblings": siblings}).to_string().into_bytes();
                ("200 OK", "content-type: application/json\r\n".into(), body)
            } else if let Some((name, data)) = files.iter().find(|(n, _)| path.ends_with(&format!("/resolve/main/{n}"))) {
                let start = range_start.unwrap_or(0);
                let body = if path.is_empty() { vec![] } else { data[start..].to_vec() };
                let end = data.len() - 1;
                let h = format!(
                    "etag: \"etag-{}\"\r\nx-repo-commit: {commit}\r\ncontent-range: bytes {start}-{end}/{}\r\n",
                    name.replace('/', "-"),
                    data.len()
                );
                ("206 Partial Content", h, body)
            } else {
                ("404 Not Found", String::new(), b"not found".to_vec())
            };
            let _ = write!(out, "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = out.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn hub_online_downloads_through_hf_hub_into_the_cache() {
    let sb = Sandbox::new();
    let tmp = sb.path().join("src");
    write_hub_parquet(&tmp.join("train.parquet"), 5, 4, true);
    write_hub_parquet(&tmp.join("test.parquet"), 4, 4, true);
    let files = vec![
        ("plain_text/train-00000-of-00001.parquet".to_string(), std::fs::read(tmp.join("train.parquet")).unwrap()),
        ("plain_text/test-00000-of-00001.parquet".to_string(), std::fs::read(tmp.join("test.parquet")).unwrap()),
        ("README.md".to_string(), b"# tiny".to_vec()),
    ];
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let endpoint = serve_fake_hub(files, commit);
    let hf_home = sb.path().join("hf");
    let r = run(sb
        .cmd(EXE)
        .env("HF_HOME", &hf_home)
        .env("HF_ENDPOINT", &endpoint)
        .env_remove("HF_HUB_OFFLINE")
        .args(["--set", "source=hub:test-org/online"]))
    .expect_code(0);
    let m = manifest(&sb, &r.key());
    assert_eq!(m.metrics["splits"]["train"]["rows"], 5);
    assert_eq!(m.external["hub"], format!("test-org/online@{commit}"));
    // The files landed in the standard cache layout, so offline mode now finds them.
    let cached = hf_home.join("hub/datasets--test-org--online/snapshots").join(commit).join("plain_text/test-00000-of-00001.parquet");
    assert!(cached.exists(), "{} missing", cached.display());
    let sb2 = Sandbox::new();
    let r2 = run(sb2.cmd(EXE).env("HF_HOME", &hf_home).env("HF_HUB_OFFLINE", "1").args(["--set", "source=hub:test-org/online"])).expect_code(0);
    assert_eq!(r2.key(), r.key(), "offline and online give the same artifact");
}

/// The real dataset, from Debian's package (downloaded into the workspace's data/ once).
#[test]
fn real_fashion_mnist_counts() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::workspace_root().join("data");
    let r = run(sb.cmd(EXE).env("CTPIPE_DATA", &data).args(["--set", "source=fashion-mnist"])).expect_code(0);
    let m = manifest(&sb, &r.key());
    let splits = &m.metrics["splits"];
    assert_eq!(splits["train"]["rows"], 60000);
    assert_eq!(splits["test"]["rows"], 10000);
    for class in ctpipe::data::sources::fashion_mnist::CLASS_NAMES {
        assert_eq!(splits["train"]["per_class"][class], 6000, "{class}");
        assert_eq!(splits["test"]["per_class"][class], 1000, "{class}");
    }
    let mean = splits["train"]["channel_mean"][0].as_f64().unwrap();
    assert!((mean - 0.2860).abs() < 1e-4, "train mean {mean}");
}

/// Off Debian (no apt-get on the PATH) and without the files at hand, the error says what to
/// use instead: the Hub's copy of the same images, or a folder of the IDX files.
#[test]
fn fashion_mnist_off_debian_says_where_else_to_get_it() {
    let sb = Sandbox::new();
    let empty = sb.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let r = run(sb.cmd(EXE).env("PATH", &empty).args(["--set", "source=fashion-mnist"]));
    assert_rejected(&sb, r, 3, "not a Debian machine?): set from = \"hub\"");
}
