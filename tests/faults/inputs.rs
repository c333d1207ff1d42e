//! Inputs that are corrupt or disagree with themselves: found on every read, without a flag,
//! and refused with exit 3 naming the file; never used, never built upon.

use ctpipe_e2e::{release_bin, run, run_stage, Sandbox};

fn fetch(sb: &Sandbox) -> String {
    run(sb.cmd(release_bin("fetch-data")).args(["--set", "n=3000", "--set", "n_test=500"])).expect_code(0).key()
}

fn train(sb: &Sandbox, data: &str, extra: &[&str]) -> ctpipe_e2e::Run {
    let sets: Vec<&str> = ["network=mlp-toy", "steps=2", "batch=8", "grid=1"].iter().chain(extra).copied().collect();
    run_stage(sb, release_bin("train-ct"), &[("data", data)], &sets)
}

/// Flip one byte in the middle of a file: same size, other content.
fn flip(path: &std::path::Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_same_size_change_to_any_file_of_an_input_is_refused_without_a_flag() {
    let sb = Sandbox::new();
    let data = fetch(&sb);
    let model = train(&sb, &data, &[]).expect_code(0).key();
    let mut tried = 0;
    for (stage, key, file) in [
        ("fetch-data", &data, "train.parquet"),
        ("fetch-data", &data, "dataset.json"),
        ("train-ct", &model, "ema.safetensors"),
        ("train-ct", &model, "model.json"),
    ] {
        let path = sb.artifacts().join(stage).join(key).join(file);
        let good = std::fs::read(&path).unwrap();
        flip(&path);
        let r = match stage {
            "fetch-data" => train(&sb, &data, &["seed=5"]),
            _ => run_stage(&sb, release_bin("evaluate-fid"), &[("data", &data), ("models", &model)], &["n=100", "seeds=[0]", "steps=[1]"]),
        };
        let r = r.expect_code(3);
        let line = r.one_error_line();
        assert!(line.contains(file) && line.contains("blake3"), "{file}: {line}");
        // Its own stage, asked again, does not hand it out as cached.
        let again = match stage {
            "fetch-data" => run(sb.cmd(release_bin("fetch-data")).args(["--set", "n=3000", "--set", "n_test=500"])),
            _ => train(&sb, &data, &[]),
        };
        let again = again.expect_code(3);
        assert!(again.one_error_line().contains("is damaged (remove it to produce it again)"), "{}", again.stderr);
        std::fs::write(&path, good).unwrap();
        tried += 1;
    }
    assert_eq!(tried, 4);
    // Restored, everything is usable again.
    train(&sb, &data, &["seed=5"]).expect_code(0);
}

#[test]
fn a_model_whose_weights_hold_nan_is_refused_by_name() {
    use ctpipe::store::Manifest;
    let sb = Sandbox::new();
    let data = fetch(&sb);
    let model = train(&sb, &data, &[]).expect_code(0).key();
    // Rewrite ema.safetensors with a NaN in one tensor, and its manifest record to match: an
    // artifact consistent with itself, whose weights are broken.
    let dir = sb.artifacts().join("train-ct").join(&model);
    let path = dir.join("ema.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (n, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let (name, info) = header.tensors().into_iter().min_by(|a, b| a.0.cmp(&b.0)).unwrap();
    let mut bytes = bytes.clone();
    let at = 8 + n + info.data_offsets.0;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: Manifest = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    let rec = m.files.iter_mut().find(|f| f.path == "ema.safetensors").unwrap();
    rec.blake3 = blake3::hash(&bytes).to_hex().to_string();
    std::fs::write(&mpath, m.to_json().unwrap()).unwrap();
    let evaluate = || run_stage(&sb, release_bin("evaluate-fid"), &[("data", &data), ("models", &model)], &["n=100", "seeds=[0]", "steps=[1]"]).expect_code(3);
    // Edited here, the manifest no longer matches the hash recorded when it was published.
    assert!(evaluate().one_error_line().contains("manifest.json: changed since the artifact was published"));
    // From another machine's store (no record) it is trusted, and its weights are checked.
    std::fs::remove_file(sb.artifacts().join(".verified/train-ct").join(format!("{model}.json"))).unwrap();
    let r = evaluate();
    let line = r.one_error_line();
    assert!(line.contains("ema.safetensors") && line.contains(&format!("tensor `{name}` holds NaN or inf")), "{line}");
    // As an init model too.
    let r = run_stage(&sb, release_bin("train-ct"), &[("data", &data), ("init", &model)], &["network=mlp-toy", "steps=2", "batch=8", "grid=1", "method=ect"]).expect_code(3);
    assert!(r.one_error_line().contains("holds NaN or inf"), "{}", r.stderr);
}
