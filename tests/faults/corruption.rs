//! Every file of every artifact kind, flipped (same size), truncated or deleted: the next stage
//! that reads the artifact refuses it with exit 3 and a line naming that file, without a flag.

use ctpipe::store::{Key, Store, Verify};
use ctpipe_e2e::{release_bin, run, run_stage, Run, Sandbox};

#[test]
fn every_file_of_every_artifact_kind_damaged_is_refused_by_name() {
    let sb = Sandbox::new();
    let data = run(sb.cmd(release_bin("fetch-data")).args(["--set", "n=2000", "--set", "n_test=500"])).expect_code(0).key();
    let model = run_stage(&sb, release_bin("train-ct"), &[("data", &data)], &["network=mlp-toy", "method=ect", "steps=4", "batch=8", "checkpoint_every=2", "grid=1", "keep_snapshots=true"]).expect_code(0).key();
    let stats = run_stage(&sb, release_bin("precompute-encoder"), &[("data", &data)], &["noise_n=200"]).expect_code(0).key();
    let eval = |sb: &Sandbox| run_stage(sb, release_bin("evaluate-fid"), &[("data", &data), ("reference", &stats), ("models", &model)], &["n=200", "seeds=[0]", "steps=[1]", "grid=1"]);
    type Consumer<'a> = Box<dyn Fn(&Sandbox) -> Run + 'a>;
    let consumers: [(&str, &str, Consumer); 3] = [
        ("fetch-data", &data, Box::new(|sb: &Sandbox| run_stage(sb, release_bin("train-ct"), &[("data", &data)], &["network=mlp-toy", "steps=2", "batch=4", "grid=1", "seed=9"]))),
        ("train-ct", &model, Box::new(eval)),
        ("precompute-encoder", &stats, Box::new(eval)),
    ];
    let store = Store::new(sb.artifacts());
    let mut tried = 0;
    for (stage, key, consumer) in &consumers {
        let art = store.open(stage, &Key::parse(key).unwrap(), Verify::Hashes).unwrap();
        let mut files: Vec<String> = art.manifest.files.iter().map(|f| f.path.clone()).collect();
        files.push("manifest.json".into());
        for file in &files {
            let path = art.dir.join(file);
            let good = std::fs::read(&path).unwrap();
            for damage in ["flip", "truncate", "delete"] {
                match damage {
                    "flip" => {
                        let mut b = good.clone();
                        let i = b.len() / 2;
                        b[i] ^= 0x04;
                        std::fs::write(&path, b).unwrap();
                    }
                    "truncate" => std::fs::write(&path, &good[..good.len() - 1]).unwrap(),
                    _ => std::fs::remove_file(&path).unwrap(),
                }
                let r = consumer(&sb);
                assert_eq!(r.code, 3, "{stage} {file} {damage}: exit {}\n{}", r.code, r.stderr);
                let line = r.one_error_line();
                // A deleted manifest makes the directory no artifact: the line names the directory.
                let named = if file == "manifest.json" && damage == "delete" { art.dir.display().to_string() } else { file.clone() };
                assert!(line.contains(&named), "{stage} {file} {damage}: {line}");
                std::fs::write(&path, &good).unwrap();
                tried += 1;
            }
        }
    }
    // Restored, everything is usable again.
    eval(&sb).expect_code(0);
    eprintln!("artifact corruptions tried: {tried}, every one refused naming its file");
}
