//! distill as a user runs it: from a teacher artifact or imported weights (a file, a Hub
//! cache), the artifact it writes, cached reruns, and one-line errors for bad teachers.

use candle_core::Device;
use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{release_bin, run, run_stage, Run, Sandbox};
use sha2::{Digest, Sha256};

const EXE: &str = env!("CARGO_BIN_EXE_distill");

const TOY: &[&str] = &["network=mlp-toy", "steps=40", "batch=32", "checkpoint_every=20", "grid=4", "log_every=1000"];

fn distill(sb: &Sandbox, inputs: &[(&str, &str)], extra: &[&str]) -> Run {
    let sets: Vec<&str> = TOY.iter().chain(extra).copied().collect();
    run_stage(sb, EXE, inputs, &sets)
}

/// A toy dataset and a short EDM teacher trained on it (train-ct's release binary).
fn data_and_teacher(sb: &Sandbox, network: &str) -> (String, String) {
    let data = ctpipe_e2e::publish_toy(sb, 1000).to_string();
    let net = format!("network={network}");
    let teacher = run_stage(sb, release_bin("train-ct"), &[("data", &data)], &["method=edm", &net, "steps=30", "batch=32", "checkpoint_every=30", "grid=4"]).expect_code(0).key();
    (data, teacher)
}

fn file(sb: &Sandbox, stage: &str, key: &str, name: &str) -> Vec<u8> {
    std::fs::read(sb.artifacts().join(stage).join(key).join(name)).unwrap()
}

#[test]
fn distils_a_teacher_artifact_into_a_consistency_model() {
    let sb = Sandbox::new();
    let (data, teacher) = data_and_teacher(&sb, "mlp-toy");
    let r = distill(&sb, &[("data", &data), ("teacher", &teacher)], &[]).expect_code(0);
    assert!(r.stderr.contains(&format!("teacher train-ct/{}", &teacher[..12])), "{}", r.stderr);
    let key = r.key();
    let art = Store::new(sb.artifacts()).open("distill", &Key::parse(&key).unwrap(), Verify::Hashes).unwrap();
    let files: Vec<&str> = art.manifest.files.iter().map(|f| f.path.as_str()).collect();
    for f in ["ema.safetensors", "net.safetensors", "model.json", "metrics.parquet", "loss.svg", "samples-1step.png", "samples-2step.png"] {
        assert!(files.contains(&f), "missing {f} in {files:?}");
    }
    assert_eq!(art.manifest.inputs["teacher"].key.as_str(), teacher);
    let spec: serde_json::Value = serde_json::from_slice(&file(&sb, "distill", &key, "model.json")).unwrap();
    assert_eq!((spec["method"].as_str(), spec["schedule"].as_str()), (Some("cd"), Some("cd")));
    assert_eq!((spec["precond"]["kind"].as_str(), spec["precond"]["sigma_min"].as_f64()), (Some("cm"), Some(0.002)));
    let again = distill(&sb, &[("data", &data), ("teacher", &teacher)], &[]).expect_code(0);
    assert_eq!(again.stdout.trim(), format!("cached distill {key}"));
}

/// With a vanishing learning rate the distilled weights are the teacher's: the student starts
/// from the teacher.
#[test]
fn the_student_starts_as_the_teacher() {
    let sb = Sandbox::new();
    let (data, teacher) = data_and_teacher(&sb, "mlp-toy");
    let key = distill(&sb, &[("data", &data), ("teacher", &teacher)], &["lr=1e-12", "steps=2", "checkpoint_every=2"]).expect_code(0).key();
    let dev = Device::Cpu;
    let t = ctpipe::model::load_tensors(&sb.artifacts().join("train-ct").join(&teacher).join("ema.safetensors"), &dev).unwrap();
    let s = ctpipe::model::load_tensors(&sb.artifacts().join("distill").join(&key).join("net.safetensors"), &dev).unwrap();
    assert_eq!(t.len(), s.len());
    for (name, a) in &t {
        let diff = (a - &s[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{name} moved by {diff}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The teacher's weights imported from a file, or from a Hub repo in the local cache, give
/// exactly the model the artifact teacher gives.
#[test]
fn imported_teacher_weights_equal_the_artifact_teacher() {
    let sb = Sandbox::new();
    let (data, teacher) = data_and_teacher(&sb, "mlp-toy");
    let from_artifact = distill(&sb, &[("data", &data), ("teacher", &teacher)], &[]).expect_code(0).key();
    let weights = file(&sb, "train-ct", &teacher, "ema.safetensors");
    let sha = sha256_hex(&weights);
    let path = sb.path().join("edm-teacher.safetensors");
    std::fs::write(&path, &weights).unwrap();
    let (w, s) = (format!("teacher_weights={}", path.display()), format!("teacher_sha256={sha}"));
    let from_file = distill(&sb, &[("data", &data)], &[&w, &s]).expect_code(0).key();
    assert_ne!(from_file, from_artifact);
    assert!(file(&sb, "distill", &from_file, "ema.safetensors") == file(&sb, "distill", &from_artifact, "ema.safetensors"));

    // The Hub's cache layout, offline: models--me--edm/{refs/main, snapshots/<commit>/file}.
    let commit = "b".repeat(40);
    let repo = sb.path().join("hf/hub/models--me--edm");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), &commit).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(&commit)).unwrap();
    std::fs::write(repo.join("snapshots").join(&commit).join("edm.safetensors"), &weights).unwrap();
    let mut c = sb.cmd(EXE);
    c.env("HF_HOME", sb.path().join("hf")).env("HF_HUB_OFFLINE", "1").args(["--input", &format!("data={data}")]);
    for set in TOY.iter().copied().chain(["teacher_repo=me/edm", "teacher_file=edm.safetensors", &s]) {
        c.args(["--set", set]);
    }
    let from_hub = run(&mut c).expect_code(0).key();
    assert!(file(&sb, "distill", &from_hub, "ema.safetensors") == file(&sb, "distill", &from_artifact, "ema.safetensors"));

    // A wrong hash is refused before any training.
    let wrong = format!("teacher_sha256={}", "0".repeat(64));
    let r = distill(&sb, &[("data", &data)], &[&w, &wrong]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.one_error_line().contains(&format!("sha256 {sha}, expected 0000")), "{}", r.stderr);
}

#[test]
fn bad_teachers_and_settings_are_one_line_errors() {
    let sb = Sandbox::new();
    let (data, teacher) = data_and_teacher(&sb, "mlp-toy");
    let (_, small_teacher) = data_and_teacher(&sb, "mlp-small");
    let ict = run_stage(&sb, release_bin("train-ct"), &[("data", &data)], &["method=ict", "network=mlp-toy", "steps=4", "batch=8", "grid=4"]).expect_code(0).key();
    let file = sb.path().join("w.safetensors");
    std::fs::write(&file, b"not weights").unwrap();
    let w = format!("teacher_weights={}", file.display());
    let sha = format!("teacher_sha256={}", sha256_hex(b"not weights"));
    let other = sb.artifacts().join("train-ct").join(&small_teacher).join("ema.safetensors");
    let other_w = format!("teacher_weights={}", other.display());
    let other_sha = format!("teacher_sha256={}", sha256_hex(&std::fs::read(&other).unwrap()));
    let with_teacher: &[(&str, &str)] = &[("data", &data), ("teacher", &teacher)];
    let data_only: &[(&str, &str)] = &[("data", &data)];
    let (ict_teacher, small, not_a_model): (&[(&str, &str)], &[(&str, &str)], &[(&str, &str)]) =
        (&[("data", &data), ("teacher", &ict)], &[("data", &data), ("teacher", &small_teacher)], &[("data", &data), ("teacher", &data)]);
    let cases: Vec<(&[(&str, &str)], Vec<&str>, i32, &str)> = vec![
        (data_only, vec![], 2, "distill needs a teacher"),
        (ict_teacher, vec![], 3, "is a ict model; distillation needs an EDM denoiser"),
        (small, vec![], 3, "has a different network"),
        (not_a_model, vec![], 3, "input `teacher` must be a train-ct artifact"),
        (with_teacher, vec![&w, &sha], 2, "two teachers"),
        (data_only, vec![&w], 2, "field `teacher_sha256`: expected 64 hex digits"),
        (data_only, vec![&w, &sha], 3, "not a readable safetensors file"),
        (data_only, vec![&other_w, &other_sha], 3, "teacher weights do not fit the network preset"),
        (data_only, vec!["teacher_sha256=abc"], 2, "need teacher_weights or teacher_repo"),
        (with_teacher, vec!["cd_levels=1"], 2, "field `cd_levels`"),
        (with_teacher, vec!["cd_solver=rk4"], 2, "field `cd_solver`"),
        (with_teacher, vec!["target_ema=1"], 2, "field `target_ema`"),
        (with_teacher, vec!["distance=l1"], 2, "field `distance`"),
        (with_teacher, vec!["method=ict"], 2, "unknown field `method`"),
    ];
    for (inputs, sets, code, needle) in &cases {
        let r = distill(&sb, inputs, sets);
        assert_eq!(r.code, *code, "{sets:?}: {}", r.stderr);
        let line = r.one_error_line();
        assert!(line.contains(needle), "{sets:?}: `{needle}` not in `{line}`");
    }
    assert!(!Store::new(sb.artifacts()).list().unwrap().iter().any(|(s, _)| s == "distill"), "no partial artifacts");
}

#[test]
fn help_documents_every_field() {
    let sb = Sandbox::new();
    let help = run(sb.cmd(EXE).arg("--help")).expect_code(0).stdout;
    use ctpipe::config::Describe;
    for f in ctpipe::train::distill::DistillConfig::fields() {
        assert!(help.contains(&format!("\n  {} = ", f.name)), "--help lacks {}", f.name);
        assert!(!f.doc.trim().is_empty(), "{} has no documentation", f.name);
    }
}
