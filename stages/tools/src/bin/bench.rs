//! bench: ctpipe's benchmarks. Each row times our code beside a reference in the same run and
//! prints the ratio (reference time / ours: above 1 means ours is faster). Nothing here is a
//! test; timings are medians of a few repetitions on whatever machine runs `make bench`.
//!
//! Rows so far (foundation):
//! - loading a Fashion-MNIST-shaped split: our Parquet artifact vs the gzip IDX it came from;
//! - `artifacts verify` hashing (blake3) vs `sha256sum` on the same file;
//! - a stage run that hits the cache vs the same stage doing the work;
//! - checking an input artifact's content (stamps recorded when it was last hashed) vs
//!   re-hashing it on every read, and vs the size-only check that let same-size corruption by;
//! - the Fréchet distance of 2048-d statistics: ours (faer, symmetric form) vs pytorch-fid's
//!   (scipy `sqrtm`), and feature throughput of our FID Inception-v3 vs pytorch-fid's on the CPU
//!   (`bench/fid_reference.py`, run with `$CTPIPE_PYTHON` or `python3`; rows say n/a without it);
//!   `bench inception [DEVICE] [BATCH]` runs the Inception row alone, on a GPU too;
//! - feature throughput of the in-domain classifier (no reference: images/s);
//! - the ECT training step of a U-Net preset: ctpipe's `train-ct` loop against a PyTorch
//!   reference of the same network and loss (`bench/ddpmpp_reference.py`), on the CPU here;
//!   `bench train-step PRESET BATCH STEPS [DEVICE] [MODES]` runs that row alone, on a GPU too
//!   (docs/perf.md);
//! - 1-step sampling throughput of the model that row trained against the reference's forward
//!   pass (both in eval mode, no gradients).
//!
//! `bench ddpmpp-io PRESET OUT` writes a preset's seeded weights, an input and ctpipe's output
//! to OUT, for `bench/ddpmpp_reference.py check PRESET OUT` (the reference is our network).

use anyhow::{Context, Result};
use ctpipe::data::io::{read_split, write_split};
use ctpipe::data::schema::{DatasetInfo, SampleKind, Samples, Split};
use ctpipe::data::sources::idx::{encode_idx, read_idx};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn median_secs(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[reps / 2])
}

const HELP: &str = "\
bench: ctpipe's benchmarks, each row ours beside a reference in the same run, with the ratio
(reference time / ours: above 1 means ours is faster). Timings are medians of a few repetitions.

Usage:
  bench                                  every row (the PyTorch and pytorch-fid rows run
                                         bench/*.py with $CTPIPE_PYTHON or python3; n/a without)
  bench train-step PRESET BATCH STEPS [DEVICE] [MODES]
                                         the ECT training step and 1-step sampling of a U-Net
                                         or MLP preset (tiny, fmnist, cifar-ddpmpp, mlp-toy,
                                         mlp-small) against PyTorch (MODES e.g. fp32,tf32,bf16)
  bench inception [DEVICE] [BATCH]       FID Inception-v3 features against pytorch-fid
  bench input-checks                     checking an input artifact: stamps vs re-hashing
  bench classifier                       the in-domain classifier's features and training step
                                         against the same network in PyTorch
  bench split-loading                    reading a Fashion-MNIST-sized split against gzip IDX
  bench ddpmpp-io PRESET OUT             a preset's weights, input and output for
                                         bench/ddpmpp_reference.py check PRESET OUT

DEVICE is cpu, cuda, cuda:N or auto. docs/perf.md holds the measured tables.
";

struct Row {
    what: String,
    ours: (String, f64),
    reference: (String, f64),
    /// Peak resident memory of each side's process over the row's work, MiB (see [`peak`]).
    peak_mib: Option<(f64, f64)>,
}

/// Peak resident memory, measured the same way on both sides (bench/peak_rss.py is the
/// reference's half): `reset` returns freed heap to the system (stages keep it, see
/// `stage::tune_allocator`, which would otherwise count one row's memory in the next) and sets
/// the high-water mark VmHWM to the current resident size; `mib` reads the mark.
mod peak {
    pub fn reset() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    pub fn mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn main() -> Result<()> {
    // What every stage binary does first (stage::main): measure the settings users run with.
    ctpipe::stage::pin_thread_count();
    ctpipe::stage::tune_candle_pool();
    ctpipe::stage::tune_allocator();
    ctpipe::stage::join_compute_pool();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            return Ok(());
        }
        Some("ddpmpp-io") => return ddpmpp_io(args.get(1).context("usage: bench ddpmpp-io PRESET OUT")?, Path::new(args.get(2).context("usage: bench ddpmpp-io PRESET OUT")?)),
        Some("train-step") => {
            let usage = "usage: bench train-step PRESET BATCH STEPS [DEVICE] [MODES, e.g. fp32,tf32,bf16]";
            let preset = args.get(1).context(usage)?;
            let batch: u64 = args.get(2).context(usage)?.parse().context(usage)?;
            let steps: u64 = args.get(3).context(usage)?.parse().context(usage)?;
            let device = args.get(4).map(String::as_str).unwrap_or("auto");
            let modes = args.get(5).map(String::as_str).unwrap_or("fp32");
            let rows = bench_train_step(preset, batch, steps, device, modes)?;
            print_table(rows);
            return Ok(());
        }
        Some("inception") => {
            let usage = "usage: bench inception [DEVICE] [BATCH]";
            let device = args.get(1).map(String::as_str).unwrap_or("auto");
            let n: usize = args.get(2).map(|v| v.parse()).transpose().context(usage)?.unwrap_or(16);
            print_table(vec![bench_inception(device, n)?]);
            return Ok(());
        }
        Some("input-checks") => {
            let dir = tempfile::tempdir()?;
            print_table(bench_input_checks(dir.path())?);
            return Ok(());
        }
        Some("classifier") => {
            print_table(bench_classifier()?);
            return Ok(());
        }
        Some("split-loading") => {
            let dir = tempfile::tempdir()?;
            print_table(vec![bench_split_loading(dir.path())?]);
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown benchmark `{other}` (expected: ddpmpp-io, train-step, inception, classifier, input-checks, split-loading, or nothing for every row)"),
        None => {}
    }
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    rows.push(bench_split_loading(dir.path())?);
    rows.push(bench_hashing(dir.path())?);
    rows.push(bench_cache_hit(dir.path())?);
    rows.extend(bench_input_checks(dir.path())?);
    rows.push(bench_frechet(dir.path())?);
    rows.push(bench_inception("cpu", 16)?);
    rows.extend(bench_classifier()?);
    rows.extend(bench_train_step("tiny", 32, 5, "cpu", "fp32")?);
    rows.extend(bench_train_step("fmnist", 8, 3, "cpu", "fp32")?);
    rows.extend(bench_train_step("mlp-toy", 256, 50, "cpu", "fp32")?);
    rows.extend(bench_train_step("cifar-ddpmpp", 4, 2, "cpu", "fp32")?);
    print_table(rows);
    Ok(())
}

fn print_table(rows: Vec<Row>) {
    println!("{:<44} {:<34} {:>10}   {:<30} {:>10}   {:>7}   {:>21}", "benchmark", "ours", "time", "reference", "time", "ratio", "peak MiB ours / ref");
    for r in rows {
        let peak = r.peak_mib.map_or(String::new(), |(a, b)| format!("{a:>9.0} / {b:<9.0}"));
        println!(
            "{:<44} {:<34} {:>9.1}ms   {:<30} {:>9.1}ms   {:>6.2}x   {peak:>21}",
            r.what,
            r.ours.0,
            r.ours.1 * 1e3,
            r.reference.0,
            r.reference.1 * 1e3,
            r.reference.1 / r.ours.1
        );
    }
    for line in notes() {
        println!("{line}");
    }
}

/// 60000 images of 28×28 with image-like structure (smooth blobs plus texture), so that gzip and
/// zstd see realistic redundancy.
fn fmnist_like() -> Split {
    let n = 60_000;
    let mut px = Vec::with_capacity(n * 784);
    let mut state = 0x9e3779b97f4a7c15u64;
    for i in 0..n {
        let (cx, cy) = (10.0 + (i % 7) as f32, 10.0 + (i % 5) as f32);
        for y in 0..28 {
            for x in 0..28 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let v = if d < 9.0 { 200.0 - 10.0 * d + (state % 24) as f32 } else { 0.0 };
                px.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    Split { samples: Samples::Images(px), labels: (0..n as i32).map(|i| i % 10).collect() }
}

fn bench_split_loading(dir: &Path) -> Result<Row> {
    let split = fmnist_like();
    let info = DatasetInfo {
        name: "bench".into(),
        kind: SampleKind::Images { height: 28, width: 28, channels: 1 },
        class_names: (0..10).map(|c| c.to_string()).collect(),
    };
    let pq = dir.join("train.parquet");
    write_split(&pq, &info, "train", &split)?;
    let Samples::Images(px) = &split.samples else { unreachable!() };
    let idx = dir.join("train-images-idx3-ubyte.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&idx)?, flate2::Compression::default());
    gz.write_all(&encode_idx(&[60_000, 28, 28], px))?;
    gz.finish()?;
    let ours = median_secs(3, || read_split(&pq).map(|_| ()))?;
    let reference = median_secs(3, || read_idx(&idx).map(|_| ()))?;
    Ok(Row {
        what: "load 60000×28×28 split".into(),
        ours: (format!("Parquet, PNG cells ({:.1} MiB)", mib(&pq)), ours),
        reference: (format!("gzip IDX ({:.1} MiB)", mib(&idx)), reference),
        peak_mib: None,
    })
}

fn mib(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(0.0)
}

fn bench_hashing(dir: &Path) -> Result<Row> {
    let path = dir.join("blob.bin");
    let data: Vec<u8> = (0..256u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&path, &data)?;
    drop(data);
    let ours = median_secs(3, || {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&path)?)?;
        Ok(())
    })?;
    let reference = median_secs(3, || {
        let st = Command::new("sha256sum").arg(&path).output().context("running sha256sum")?;
        anyhow::ensure!(st.status.success(), "sha256sum failed");
        Ok(())
    })?;
    Ok(Row { what: "hash a 256 MiB artifact file".into(), ours: ("blake3 (artifacts verify)".into(), ours), reference: ("sha256sum".into(), reference), peak_mib: None })
}

fn bench_cache_hit(dir: &Path) -> Result<Row> {
    let exe = std::env::current_exe()?.with_file_name("fetch-data");
    anyhow::ensure!(exe.is_file(), "{} not built (make bench builds it)", exe.display());
    let store = dir.join("store");
    let run = || -> Result<()> {
        let st = Command::new(&exe)
            .args(["--set", "source=toy2d", "--set", "n=400000", "--artifacts"])
            .arg(&store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "fetch-data failed");
        Ok(())
    };
    let work = median_secs(1, || {
        let _ = std::fs::remove_dir_all(&store);
        run()
    })?;
    let cached = median_secs(5, run)?;
    Ok(Row {
        what: "fetch-data toy2d n=400000".into(),
        ours: ("second run (cache hit)".into(), cached),
        reference: ("first run (does the work)".into(), work),
        peak_mib: None,
    })
}

/// What every stage pays to check an input artifact's content (docs/reliability.md): a stat
/// per file against the recorded stamps, beside re-hashing every file on every read and beside
/// the size-only check this replaced.
fn bench_input_checks(dir: &Path) -> Result<Vec<Row>> {
    use ctpipe::store::{artifact_key, Draft, Store, Verify};
    let store = Store::new(dir.join("checks"));
    let config = serde_json::json!({ "bench": "input checks" });
    let key = artifact_key("fetch-data", 1, &config, &Default::default(), &Default::default())?;
    let staging = store.begin("fetch-data", &key)?;
    let data: Vec<u8> = (0..128u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(staging.path().join("train.parquet"), &data)?;
    std::fs::write(staging.path().join("test.parquet"), &data[..16 << 20])?;
    drop(data);
    let draft = Draft { stage: "fetch-data".into(), version: 1, key: key.clone(), inputs: Default::default(), external: Default::default(), config, metrics: serde_json::json!({}) };
    staging.commit(draft)?;
    let time = |v: Verify| median_secs(5, || store.open("fetch-data", &key, v).map(|_| ()));
    let (content, hashes, sizes) = (time(Verify::Content)?, time(Verify::Hashes)?, time(Verify::Sizes)?);
    let what = "open a 144 MiB input artifact";
    Ok(vec![
        Row { what: what.into(), ours: ("content check (stamps)".into(), content), reference: ("re-hash every read".into(), hashes), peak_mib: None },
        Row { what: what.into(), ours: ("content check (stamps)".into(), content), reference: ("sizes only (before)".into(), sizes), peak_mib: None },
    ])
}

fn python() -> String {
    std::env::var("CTPIPE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run a script of `bench/` (fid_reference.py, ddpmpp_reference.py); its JSON line, or None
/// when Python or a package is missing (the row then says NaN).
fn reference(script: &str, args: &[&str]) -> Option<serde_json::Value> {
    let script = ctpipe_root().join("bench").join(script);
    let out = Command::new(python()).arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("bench: reference {args:?} unavailable: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
        return None;
    }
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last()?).ok()
}

/// The checkout whose `bench/` scripts to run: the current directory when it is one (a binary
/// carried to another machine runs from the repository root there), else this build's.
fn ctpipe_root() -> std::path::PathBuf {
    if Path::new("bench/ddpmpp_reference.py").is_file() {
        return ".".into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn notes() -> Vec<String> {
    NOTES.lock().map(|n| n.clone()).unwrap_or_default()
}

fn random_stats(d: usize, n: usize, seed: u64) -> Result<ctpipe::metrics::stats::FeatureStats> {
    let mut rng = ctpipe::rng::stream(seed, "bench-stats", 0);
    let x = ctpipe::rng::normal(&mut rng, (n, d), candle_core::DType::F32, &candle_core::Device::Cpu)?;
    // Correlated features, like a network's: mix with a random matrix.
    let m = (ctpipe::rng::normal(&mut rng, (d, d), candle_core::DType::F32, &candle_core::Device::Cpu)? * (1.0 / (d as f64).sqrt()))?;
    let mut acc = ctpipe::metrics::stats::StatsAccumulator::new(d);
    acc.add(&x.matmul(&m)?)?;
    acc.finish()
}

fn bench_frechet(dir: &Path) -> Result<Row> {
    use ctpipe::metrics::frechet::frechet_distance;
    let d = 2048;
    let (a, b) = (random_stats(d, 4096, 1)?, random_stats(d, 4096, 2)?);
    let mut ours_v = 0.0;
    let ours = median_secs(3, || {
        ours_v = frechet_distance(&a, &b)?;
        Ok(())
    })?;
    let path = dir.join("stats.safetensors");
    let dev = candle_core::Device::Cpu;
    let t = |v: &[f64], shape: &[usize]| candle_core::Tensor::from_slice(v, shape, &dev);
    let tensors = [("mu1", t(&a.mean, &[d])?), ("sigma1", t(&a.cov, &[d, d])?), ("mu2", t(&b.mean, &[d])?), ("sigma2", t(&b.cov, &[d, d])?)];
    candle_core::safetensors::save(&tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), &path)?;
    let reference = reference("fid_reference.py", &["fd", path.to_str().context("path")?]);
    let (ref_name, ref_time) = match &reference {
        Some(r) => {
            let v = r["fd"].as_f64().unwrap_or(f64::NAN);
            NOTES.lock().expect("notes").push(format!("  FD 2048-d: ours {ours_v:.6}, pytorch-fid {v:.6} (relative difference {:.1e})", ((ours_v - v) / v).abs()));
            ("pytorch-fid (scipy sqrtm)".to_string(), r["seconds"].as_f64().unwrap_or(f64::NAN))
        }
        None => ("pytorch-fid: n/a (no Python/scipy)".to_string(), f64::NAN),
    };
    Ok(Row { what: "Fréchet distance, 2048-d statistics".into(), ours: ("faer f64, symmetric eigen".into(), ours), reference: (ref_name, ref_time), peak_mib: None })
}

/// Throughput as "seconds per image" so the table's ratio column reads as a speed ratio.
fn bench_inception(device: &str, n: usize) -> Result<Row> {
    use ctpipe::features::inception::FidInception;
    let dev = ctpipe::device::select(device)?;
    let where_ = if dev.is_cpu() { "CPU" } else { "CUDA" };
    let net = FidInception::from_tensors(&FidInception::random_tensors(0, &dev)?)?;
    let x = ((ctpipe::rng::uniform(&mut ctpipe::rng::stream(0, "bench", 0), (n, 3, 32, 32), candle_core::DType::F32, &dev)? * 2.0)? - 1.0)?;
    // to_vec: waits for the device.
    let features = |x: &candle_core::Tensor| -> Result<()> {
        net.pool3(x)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    };
    peak::reset();
    features(&x.narrow(0, 0, 2.min(n))?)?;
    let ours = median_secs(if dev.is_cpu() { 1 } else { 3 }, || features(&x))? / n as f64;
    let ours_peak = peak::mib();
    let reference = reference("fid_reference.py", &["inception", &n.to_string(), if dev.is_cpu() { "cpu" } else { "cuda" }]);
    let ref_time = reference.as_ref().and_then(|r| r["images_per_s"].as_f64()).map(|v| 1.0 / v).unwrap_or(f64::NAN);
    let ref_peak = reference.as_ref().and_then(|r| r["peak_rss_mib"].as_f64()).unwrap_or(f64::NAN);
    NOTES.lock().expect("notes").push(format!(
        "  Inception-v3 features ({where_}, 32×32 → 299×299, batch {n}): ours {:.1} images/s, pytorch-fid {:.1} images/s",
        1.0 / ours,
        1.0 / ref_time
    ));
    Ok(Row { what: format!("FID Inception-v3, one image ({where_})"), ours: ("ctpipe conv op, BN folded".into(), ours), reference: (format!("pytorch-fid (torch {where_})"), ref_time), peak_mib: dev.is_cpu().then_some((ours_peak, ref_peak)) })
}

/// The in-domain classifier: its features (inference) and its training step (cross-entropy,
/// Adam), against the same network in PyTorch (bench/classifier_reference.py).
fn bench_classifier() -> Result<Vec<Row>> {
    use ctpipe::data::schema::{SampleKind, Samples, Split};
    use ctpipe::features::classifier::{self, Classifier, ClassifierConfig, TrainSettings};
    let dev = candle_core::Device::Cpu;
    let kind = SampleKind::Images { height: 28, width: 28, channels: 1 };
    let cfg = ClassifierConfig::new(kind, 10, [32, 64])?;
    peak::reset();
    let net = Classifier::init(&cfg, 0, &dev)?;
    let x = ((ctpipe::rng::uniform(&mut ctpipe::rng::stream(0, "bench", 1), (250, 1, 28, 28), candle_core::DType::F32, &dev)? * 2.0)? - 1.0)?;
    let per_batch = median_secs(3, || net.penultimate(&x).map(|_| ()))?;
    let features_peak = peak::mib();
    NOTES.lock().expect("notes").push(format!("  classifier features (CPU, 28×28): {:.0} images/s", 250.0 / per_batch));
    let reference_features = reference("classifier_reference.py", &["features", "250", "5"]);
    let (reference_features, reference_features_peak) = timing_and_peak(reference_features.as_ref(), "ms_per_batch");

    // The training step as precompute-encoder runs it (batch 128), over 20 steps of one epoch.
    let (batch, steps) = (128usize, 20usize);
    let split = Split { samples: Samples::Images((0..batch * steps * 784).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()), labels: (0..(batch * steps) as i32).map(|i| i % 10).collect() };
    let data = ctpipe::train::data::TrainData::new(kind, split, None)?;
    let settings = TrainSettings { epochs: 1, batch, lr: 1e-3, seed: 0 };
    peak::reset();
    let per_step = median_secs(3, || classifier::train(&cfg, &data, &settings, &dev).map(|_| ()))? / steps as f64;
    let step_peak = peak::mib();
    let reference_step = reference("classifier_reference.py", &["step", &batch.to_string(), &steps.to_string()]);
    let (reference_step, reference_step_peak) = timing_and_peak(reference_step.as_ref(), "ms_per_step");
    Ok(vec![
        Row { what: "classifier features, batch of 250 (cpu)".into(), ours: ("ctpipe f32".into(), per_batch), reference: ("PyTorch eager fp32".into(), reference_features), peak_mib: Some((features_peak, reference_features_peak)) },
        Row { what: format!("classifier train step, batch {batch} (cpu)"), ours: ("ctpipe f32".into(), per_step), reference: ("PyTorch eager fp32".into(), reference_step), peak_mib: Some((step_peak, reference_step_peak)) },
    ])
}

/// A reference's time (seconds, from `field` in ms) and peak resident memory (MiB); NaN where
/// it did not run.
fn timing_and_peak(r: Option<&serde_json::Value>, field: &str) -> (f64, f64) {
    let get = |k: &str| r.and_then(|r| r[k].as_f64());
    (get(field).map_or(f64::NAN, |ms| ms / 1e3), get("peak_rss_mib").unwrap_or(f64::NAN))
}

/// The sample shape a U-Net preset is benchmarked on: CIFAR-10's or Fashion-MNIST's.
fn preset_kind(preset: &str) -> ctpipe::data::schema::SampleKind {
    use ctpipe::data::schema::SampleKind;
    match preset {
        "mlp-toy" | "mlp-small" => SampleKind::Points { dim: 2 },
        "cifar-ddpmpp" | "cifar-gc" => SampleKind::Images { height: 32, width: 32, channels: 3 },
        _ => SampleKind::Images { height: 28, width: 28, channels: 1 },
    }
}

/// A preset's seeded weights, a random input, noise labels and our output, in one file.
fn ddpmpp_io(preset: &str, out: &Path) -> Result<()> {
    use candle_core::{DType, Device};
    let dev = Device::Cpu;
    let cfg = ctpipe::nn::preset(preset, preset_kind(preset), 1, Some(0.0))?;
    let w = ctpipe::model::Weights::init(&cfg, 0, &dev)?;
    let shape = ctpipe::model::ModelSpec::sample_shape_of(preset_kind(preset));
    let mut dims = vec![2];
    dims.extend(shape);
    let x = ctpipe::rng::normal(&mut ctpipe::rng::stream(0, "bench-io", 0), dims, DType::F32, &dev)?;
    let c_noise = ((ctpipe::rng::uniform(&mut ctpipe::rng::stream(0, "bench-io", 1), 2, DType::F32, &dev)? * 4.0)? - 2.0)?;
    let y = w.net.forward(&x, &c_noise, None, &mut ctpipe::nn::dropout::Dropout::off())?;
    let mut items: Vec<(String, candle_core::Tensor)> = w.params.tensors().into_iter().collect();
    items.extend([("x".to_string(), x), ("c_noise".to_string(), c_noise), ("out".to_string(), y)]);
    ctpipe::model::save_tensors(out, &items, None)?;
    println!("{}: {} parameters of {preset}, input, noise labels and output", out.display(), w.params.num_params());
    Ok(())
}

/// ctpipe's ECT training step (the real `train-ct` loop on random images) beside the PyTorch
/// reference's, per mode. Ours runs in f32 only; the other modes are the reference's.
fn bench_train_step(preset: &str, batch: u64, steps: u64, device: &str, modes: &str) -> Result<Vec<Row>> {
    use ctpipe::cuda::Kernels;
    use ctpipe::data::schema::{Dataset, DatasetInfo, SampleKind, Samples, Split};
    let dev = ctpipe::device::select(device)?;
    let kind = preset_kind(preset);
    let n = (batch as usize * 4).max(64);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples = match kind {
        SampleKind::Images { .. } => Samples::Images((0..n * kind.sample_len()).map(|_| next() as u8).collect()),
        // Points in the toys' box [−1, 1]².
        SampleKind::Points { .. } => Samples::Points((0..n * kind.sample_len()).map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()),
    };
    let height = match kind {
        SampleKind::Images { height, .. } => height,
        SampleKind::Points { dim } => dim,
    };
    let split = Split { samples, labels: vec![0; n] };
    let ds = Dataset { info: DatasetInfo { name: "bench:random".into(), kind, class_names: vec!["noise".into()] }, train: split.clone(), test: split };
    let dir = tempfile::tempdir()?;
    let store = ctpipe::store::Store::new(dir.path().join("artifacts"));
    let key = ctpipe::data::publish_as_fetched(&store, &serde_json::json!({ "source": "bench:random", "height": height }), || ds)?;
    let data = store.open("fetch-data", &key, ctpipe::store::Verify::Sizes)?;
    let cfg = ctpipe::train::config::TrainConfig {
        method: "ect".into(),
        network: preset.into(),
        steps: steps + 2,
        batch,
        checkpoint_every: 1_000_000,
        log_every: 1_000_000,
        grid: 1,
        ..Default::default()
    };
    // One ctpipe timing per (kernels, TF32) setting, measured once and shared by the rows.
    let mut timings: Vec<((Kernels, bool), (f64, f64))> = Vec::new();
    let trained = dir.path().join("trained");
    // (seconds per step, peak resident MiB of the whole run).
    let mut ctpipe_step = |kernels: Kernels, tf32: bool| -> Result<(f64, f64)> {
        if let Some((_, t)) = timings.iter().find(|(k, _)| *k == (kernels, tf32)) {
            return Ok(*t);
        }
        ctpipe::cuda::set_kernels(kernels);
        candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        let run = tempfile::tempdir_in(dir.path())?;
        // The first run's model is kept for the sampling rows.
        let out = if timings.is_empty() { trained.clone() } else { run.path().join("out") };
        let work = run.path().join("work");
        std::fs::create_dir_all(&out)?;
        let started = Instant::now();
        peak::reset();
        let summary = ctpipe::train::train_ct(&cfg, &data, None, ctpipe::train::RunDirs { out: &out, work: &work, run: "bench", world: &ctpipe::parallel::Single }, &Default::default(), &dev)?;
        let rate = summary["images_per_s"].as_f64().context("images_per_s in the summary")?;
        let ours = batch as f64 / rate;
        eprintln!("bench: ctpipe {preset} ECT step, batch {batch}, {kernels:?} kernels, TF32 {tf32}: {:.1} ms ({:.1} s in all)", ours * 1e3, started.elapsed().as_secs_f64());
        let measured = (ours, peak::mib());
        timings.push(((kernels, tf32), measured));
        Ok(measured)
    };
    let where_ = if dev.is_cpu() { "cpu" } else { "cuda" };
    // ctpipe's side of each mode. On the CPU there is one path; on a GPU, strict fp32 is
    // measured with candle's ops and with our kernels, TF32 with our kernels, and bf16 (which
    // ctpipe does not run in yet) is ctpipe's fastest f32 path against it.
    let variants = |mode: &str| -> Vec<(&'static str, Kernels, bool)> {
        match (where_, mode) {
            ("cpu", _) => vec![("ctpipe f32", Kernels::Composed, false)],
            (_, "tf32") => vec![("ctpipe TF32, our kernels", Kernels::Fused, true)],
            (_, "bf16") => vec![("ctpipe TF32, our kernels (no bf16 yet)", Kernels::Fused, true)],
            _ => vec![("ctpipe f32, candle ops", Kernels::Composed, false), ("ctpipe f32, our kernels", Kernels::Fused, false)],
        }
    };
    let mut rows = Vec::new();
    for mode in modes.split(',') {
        let reference = reference("ddpmpp_reference.py", &["step", preset, &batch.to_string(), &steps.to_string(), mode, where_]);
        let (ref_time, ref_peak) = timing_and_peak(reference.as_ref(), "ms_per_step");
        if let Some(r) = &reference {
            NOTES.lock().expect("notes").push(format!("  {preset} ECT step, batch {batch}, {where_}: PyTorch {mode}: {r}"));
        }
        for (label, kernels, tf32) in variants(mode) {
            let (ours, ours_peak) = ctpipe_step(kernels, tf32)?;
            rows.push(Row {
                what: format!("ECT train step, {preset}, batch {batch} ({where_})"),
                ours: (label.into(), ours),
                reference: (format!("PyTorch eager {mode}"), ref_time),
                peak_mib: dev.is_cpu().then_some((ours_peak, ref_peak)),
            });
        }
    }
    // 1-step sampling throughput of the model just trained: one network evaluation per image
    // (ctpipe's sampler, as evaluate-fid runs it) against the reference's forward pass.
    let spec: ctpipe::model::ModelSpec = serde_json::from_str(&std::fs::read_to_string(trained.join("model.json"))?)?;
    let w = ctpipe::model::Weights::frozen(&spec.network, ctpipe::model::load_tensors(&trained.join("ema.safetensors"), &dev)?, &dev)?;
    let n = batch as usize;
    let generate = || -> Result<()> {
        let x = ctpipe::sample::consistency_samples(&spec, &w.net, None, None, &[], 0, 0, n, None, &dev)?;
        x.sum_all()?.to_scalar::<f32>()?; // waits for the device
        Ok(())
    };
    for mode in modes.split(',') {
        let reference = reference("ddpmpp_reference.py", &["sample", preset, &batch.to_string(), "5", mode, where_]);
        let (ref_time, ref_peak) = timing_and_peak(reference.as_ref(), "ms_per_batch");
        for (label, kernels, tf32) in variants(mode) {
            ctpipe::cuda::set_kernels(kernels);
            candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
            peak::reset();
            generate()?;
            let ours = median_secs(5, generate)?;
            let ours_peak = peak::mib();
            NOTES.lock().expect("notes").push(format!("  {preset} 1-step sampling, batch {batch}, {where_}, {label}: {:.1} images/s", n as f64 / ours));
            rows.push(Row {
                what: format!("1-step sampling, {preset}, batch {batch} ({where_})"),
                ours: (label.into(), ours),
                reference: (format!("PyTorch eager {mode}"), ref_time),
                peak_mib: dev.is_cpu().then_some((ours_peak, ref_peak)),
            });
        }
    }
    Ok(rows)
}
