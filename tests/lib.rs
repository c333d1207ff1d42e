//! Helpers shared by ctpipe's binary-level tests: a sandbox directory with its own artifact
//! store, and a way to run the built stage binaries in it.
//!
//! Stage crates use it as a dev-dependency for their `tests/cli.rs`; the end-to-end tests of
//! this crate (`e2e.rs`, `faults.rs`) drive `make` on tiny profiles.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory holding an artifact store, a data directory and a pipeline file.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn artifacts(&self) -> PathBuf {
        self.path().join("artifacts")
    }

    /// A command for a binary, run inside the sandbox with its store and data directory.
    pub fn cmd(&self, exe: impl AsRef<Path>) -> Command {
        let mut c = Command::new(exe.as_ref());
        c.current_dir(self.path())
            .env("CTPIPE_ARTIFACTS", self.artifacts())
            .env("CTPIPE_DATA", self.path().join("data"))
            .env("CTPIPE_PIPELINE", self.path().join("pipeline.toml"))
            .env_remove("CTPIPE_PROFILE")
            .env_remove("CTPIPE_FAILPOINT");
        c
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Run and capture; the result's text for assertions.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("spawn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Panic with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// The key printed on a `done <stage> <key>` or `cached <stage> <key>` line.
    pub fn key(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("done" | "cached"), Some(_), Some(k)) => Some(k.to_string()),
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("no done/cached line in:\n{}", self.stdout))
    }

    /// The error line, which must be exactly one line.
    pub fn one_error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "want one error line, stderr:\n{}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "panic in:\n{}", self.stderr);
        errors[0]
    }
}

/// Run a stage binary in the sandbox with `--input ROLE=KEY` and `--set FIELD=VALUE` flags.
pub fn run_stage(sb: &Sandbox, exe: impl AsRef<Path>, inputs: &[(&str, &str)], sets: &[&str]) -> Run {
    let mut c = sb.cmd(exe);
    for (role, key) in inputs {
        c.args(["--input", &format!("{role}={key}")]);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    run(&mut c)
}

/// A training stage stopped by `signal` once it has written a checkpoint, then started again,
/// ends bit-identical to a run that was never interrupted: `files` of the two artifacts are
/// compared. `prepare` publishes the inputs into a fresh sandbox and returns the stage command
/// (it runs once per sandbox; the two must give the same key).
pub fn interrupted_equals_uninterrupted(stage: &str, files: &[&str], signal: i32, prepare: impl Fn(&Sandbox) -> Command) {
    use std::time::{Duration, Instant};
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let key = run(&mut prepare(&a)).expect_code(0).key();
    let read = |sb: &Sandbox| -> Vec<(String, Vec<u8>)> {
        let dir = sb.artifacts().join(stage).join(&key);
        files.iter().filter(|f| dir.join(f).exists()).map(|f| (f.to_string(), std::fs::read(dir.join(f)).expect("read"))).collect()
    };
    let reference = read(&a);

    let work = b.artifacts().join(".work").join(stage).join(&key);
    let checkpoints = || std::fs::read_dir(work.join("checkpoints")).map(|d| d.count()).unwrap_or(0);
    let mut cmd = prepare(&b);
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let t = Instant::now();
    while checkpoints() == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("checkpoint written, run again to resume"), "{stderr}");
    assert!(!b.artifacts().join(stage).join(&key).exists(), "no artifact after a stop");
    let resumed = run(&mut prepare(&b)).expect_code(0);
    assert!(resumed.stderr.contains("resuming from"), "{}", resumed.stderr);
    assert_eq!(resumed.key(), key);
    let got = read(&b);
    assert_eq!(got.len(), reference.len());
    for ((name, x), (_, y)) in reference.iter().zip(&got) {
        assert!(x == y, "{stage}: {name} differs after resume");
    }
    assert!(!work.exists(), "the finished run's working directory is removed");
}

/// Where the workspace's release binaries are (`CTPIPE_BIN`, else `<workspace>/target/release`).
pub fn release_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CTPIPE_BIN") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target").join("release")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A release binary of the workspace, which `make test` builds before running the tests.
pub fn release_bin(name: &str) -> PathBuf {
    let p = release_bin_dir().join(name);
    assert!(p.is_file(), "{} is missing: run `make test`, which builds the release binaries first", p.display());
    p
}

/// Publish a two-Gaussians toy dataset into the sandbox's store, as `fetch-data` would, and
/// return its key (same `n` → same key, in any sandbox).
pub fn publish_toy(sb: &Sandbox, n: u64) -> ctpipe::store::Key {
    use ctpipe::data::sources::FetchConfig;
    let cfg = FetchConfig { dataset: Some("two-gaussians".into()), n: Some(n), n_test: Some(1000), ..FetchConfig::default() };
    let config = serde_json::to_value(&cfg).expect("config json");
    publish_fetched(sb, config, || cfg.fetch(sb.path()).expect("toy data"))
}

/// Publish any dataset into the sandbox's store under a config naming `label` (as if fetched),
/// and return its key.
pub fn publish_dataset(sb: &Sandbox, label: &str, dataset: &ctpipe::data::schema::Dataset) -> ctpipe::store::Key {
    publish_fetched(sb, serde_json::json!({ "source": format!("test:{label}") }), || dataset.clone())
}

/// Publish `make()`'s dataset as a fetch-data artifact with `config` (unless that key exists).
fn publish_fetched(sb: &Sandbox, config: serde_json::Value, make: impl FnOnce() -> ctpipe::data::schema::Dataset) -> ctpipe::store::Key {
    ctpipe::data::publish_as_fetched(&ctpipe::store::Store::new(sb.artifacts()), &config, make).expect("publish")
}

/// Two classes of 8×8 grayscale images: a bright 3×3 square near the top-left corner or near
/// the bottom-right one (jittered by a pixel), on a dark background with a little noise.
pub fn blob_images(n_train: usize, n_test: usize, seed: u64) -> ctpipe::data::schema::Dataset {
    use ctpipe::data::schema::{DatasetInfo, SampleKind, Samples, Split};
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut split = |n: usize| {
        let mut px = Vec::with_capacity(n * 64);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 2) as i32;
            let (oy, ox) = if label == 0 { (1, 1) } else { (4, 4) };
            let (jy, jx) = ((next() % 2) as usize, (next() % 2) as usize);
            for y in 0..8 {
                for x in 0..8 {
                    let inside = (oy + jy..oy + jy + 3).contains(&y) && (ox + jx..ox + jx + 3).contains(&x);
                    px.push(if inside { 220 + (next() % 30) as u8 } else { (next() % 20) as u8 });
                }
            }
            labels.push(label);
        }
        Split { samples: Samples::Images(px), labels }
    };
    let train = split(n_train);
    let test = split(n_test);
    ctpipe::data::schema::Dataset {
        info: DatasetInfo { name: "test:blobs".into(), kind: SampleKind::Images { height: 8, width: 8, channels: 1 }, class_names: vec!["top-left".into(), "bottom-right".into()] },
        train,
        test,
    }
}
