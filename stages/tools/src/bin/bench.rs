//! bench: ctpipe's benchmarks. Each row times our code beside a reference in the same run and
//! prints the ratio (reference time / ours: above 1 means ours is faster). Nothing here is a
//! test; timings are medians of a few repetitions on whatever machine runs `make bench`.
//!
//! Rows so far (foundation):
//! - loading a Fashion-MNIST-shaped split: our Parquet artifact vs the gzip IDX it came from;
//! - `artifacts verify` hashing (blake3) vs `sha256sum` on the same file;
//! - a stage run that hits the cache vs the same stage doing the work.

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

struct Row {
    what: &'static str,
    ours: (String, f64),
    reference: (String, f64),
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    rows.push(bench_split_loading(dir.path())?);
    rows.push(bench_hashing(dir.path())?);
    rows.push(bench_cache_hit(dir.path())?);

    println!("{:<44} {:<34} {:>10}   {:<30} {:>10}   {:>7}", "benchmark", "ours", "time", "reference", "time", "ratio");
    for r in rows {
        println!(
            "{:<44} {:<34} {:>9.1}ms   {:<30} {:>9.1}ms   {:>6.2}x",
            r.what,
            r.ours.0,
            r.ours.1 * 1e3,
            r.reference.0,
            r.reference.1 * 1e3,
            r.reference.1 / r.ours.1
        );
    }
    Ok(())
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
        what: "load 60000×28×28 split",
        ours: (format!("Parquet+zstd ({:.1} MiB)", mib(&pq)), ours),
        reference: (format!("gzip IDX ({:.1} MiB)", mib(&idx)), reference),
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
    Ok(Row { what: "hash a 256 MiB artifact file", ours: ("blake3 (artifacts verify)".into(), ours), reference: ("sha256sum".into(), reference) })
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
        what: "fetch-data toy2d n=400000",
        ours: ("second run (cache hit)".into(), cached),
        reference: ("first run (does the work)".into(), work),
    })
}
