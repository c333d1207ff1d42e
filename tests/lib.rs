//! Helpers shared by ctpipe's binary-level tests: a sandbox directory with its own artifact
//! store, and a way to run the built stage binaries in it.
//!
//! Stage crates use it as a dev-dependency for their `tests/cli.rs`; the end-to-end tests of
//! this crate drive `make` on tiny profiles (`e2e.rs`, `faults.rs`) and on the shipped ones at
//! smoke scale (`rehearsal.rs`), and put the Python tools users have in the loop
//! (`interop.rs`, with the environment of [`python_env`]).

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
            .env_remove("CTPIPE_SCALE")
            .env_remove("CTPIPE_FAILPOINT");
        c
    }

    /// `make -f <repo>/Makefile` in the sandbox with its pipeline file, store and data
    /// directory, and the release binaries as they are (BUILD=0).
    pub fn make(&self) -> Command {
        let mut c = Command::new("make");
        c.current_dir(self.path())
            .arg("-f")
            .arg(workspace_root().join("Makefile"))
            .arg("--no-print-directory")
            .arg("BUILD=0")
            .arg(format!("BIN={}", release_bin_dir().display()))
            .arg(format!("PIPELINE={}", self.path().join("pipeline.toml").display()))
            .arg(format!("ARTIFACTS={}", self.artifacts().display()))
            .arg(format!("DATA={}", self.path().join("data").display()))
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("CTPIPE_SCALE");
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

/// The Python of the interop virtual environment: the tools users have, pinned in
/// `tests/interop/requirements.txt` (pyarrow, pandas, safetensors, Pillow, numpy). Created on
/// first use under `target/interop-venv/<hash of the requirements>` and shared by every test
/// binary (a file lock serialises the creation). `None`, after saying why, only when the
/// package registry cannot be reached; any other failure to build it fails the test.
pub fn python_env() -> Option<PathBuf> {
    let req_path = workspace_root().join("tests/interop/requirements.txt");
    let req = std::fs::read(&req_path).expect("tests/interop/requirements.txt");
    // FNV-1a: a stable name for this set of pins.
    let hash = req.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3));
    let root = workspace_root().join("target").join("interop-venv");
    let dir = root.join(format!("{hash:016x}"));
    let python = dir.join("bin").join("python");
    let complete = dir.join(".complete");
    if complete.is_file() {
        return Some(python);
    }
    std::fs::create_dir_all(&root).expect("create target/interop-venv");
    let lock = std::fs::File::create(root.join(".lock")).expect("lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if complete.is_file() {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let base = std::env::var("CTPIPE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let venv = run(Command::new(&base).args(["-m", "venv"]).arg(&dir));
    assert_eq!(venv.code, 0, "`{base} -m venv` failed (the tests need Python 3 with its venv module):\n{}", venv.stderr);
    let pip = run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&req_path));
    if pip.code != 0 {
        let index = std::env::var("PIP_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple/".into());
        let probe = format!("import urllib.request; urllib.request.urlopen('{}/pyarrow/', timeout=20)", index.trim_end_matches('/'));
        if run(Command::new(&base).args(["-c", &probe])).code != 0 {
            eprintln!("SKIPPED: the package registry ({index}) cannot be reached, so the Python interop environment cannot be built");
            return None;
        }
        panic!("pip install -r {} failed although the registry answers:\n{}\n{}", req_path.display(), pip.stdout, pip.stderr);
    }
    std::fs::write(&complete, b"").expect("mark the environment complete");
    Some(python)
}

/// Run `tests/interop/pytools.py` with the interop environment's Python; its JSON answer.
pub fn pytools<S: AsRef<std::ffi::OsStr>>(python: &Path, args: &[S]) -> serde_json::Value {
    let script = workspace_root().join("tests/interop/pytools.py");
    let r = run(Command::new(python).arg(&script).args(args));
    let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().chars().take(200).collect()).collect();
    assert_eq!(r.code, 0, "pytools.py {shown:?} failed:\n{}", r.stderr);
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("pytools.py {shown:?}: not JSON ({e}):\n{}", r.stdout))
}

/// The state_dict of NVlabs/edm's `SongUNet` in a preset's configuration (its learned
/// parameters and its constant resampling-filter buffers: what `load_state_dict(strict=True)`
/// wants), names prefixed `model.` as `EDMPrecond` holds them, sorted, with their shapes:
/// dumped with PyTorch from EDM's own code (tests/interop/fixtures/README.md).
pub fn edm_songunet(preset: &str) -> Vec<(String, Vec<u64>)> {
    let path = workspace_root().join(format!("tests/interop/fixtures/edm-songunet-{preset}.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("fixture JSON");
    let entries = |key: &str| -> Vec<(String, Vec<u64>)> {
        v[key].as_array().expect("a list").iter().map(|t| (t[0].as_str().expect("name").to_string(), t[1].as_array().expect("shape").iter().map(|x| x.as_u64().expect("dim")).collect())).collect()
    };
    let mut out: Vec<(String, Vec<u64>)> = entries("tensors").into_iter().map(|(n, s)| (format!("model.{n}"), s)).collect();
    out.sort();
    out
}

/// Names and shapes of a safetensors file as pytools.py read-safetensors reports them, sorted.
pub fn tensor_shapes(read: &serde_json::Value) -> Vec<(String, Vec<u64>)> {
    let t = read["tensors"].as_object().expect("tensors");
    t.iter().map(|(k, d)| (k.clone(), d["shape"].as_array().expect("shape").iter().map(|x| x.as_u64().expect("dim")).collect())).collect()
}
