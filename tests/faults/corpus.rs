//! The corpus of malformed inputs (tests/corpus): each file, given to the stage that reads its
//! kind, must give the exit code and the one-line message that tests/corpus/cases.toml says.

use ctpipe_e2e::{release_bin, run, workspace_root, Sandbox};

#[derive(serde::Deserialize)]
struct Case {
    kind: String,
    path: String,
    exit: i32,
    names: Option<String>,
    says: Option<String>,
}

#[derive(serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[test]
fn every_malformed_input_of_the_corpus_gives_its_exit_code_and_message() {
    let root = workspace_root().join("tests/corpus");
    let cases: Cases = toml::from_str(&std::fs::read_to_string(root.join("cases.toml")).unwrap()).unwrap();
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 200).to_string();
    let mut listed = std::collections::BTreeSet::new();
    for c in &cases.case {
        let path = root.join("files").join(&c.path);
        assert!(path.exists(), "{}: not in the corpus (run tests/corpus/make_corpus.py)", c.path);
        listed.insert(c.path.clone());
        let p = path.display().to_string();
        let mut cmd = match c.kind.as_str() {
            "idx" => {
                let mut cmd = sb.cmd(release_bin("fetch-data"));
                cmd.args(["--set", "source=fashion-mnist", "--set", &format!("from={p}")]);
                cmd
            }
            "folder" | "parquet" => {
                let mut cmd = sb.cmd(release_bin("fetch-data"));
                cmd.args(["--set", &format!("source={}:{p}", c.kind)]);
                cmd
            }
            "safetensors" => {
                use sha2::Digest;
                let sha: String = sha2::Sha256::digest(std::fs::read(&path).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
                let mut cmd = sb.cmd(release_bin("distill"));
                cmd.args(["--input", &format!("data={data}")]);
                for s in ["network=mlp-toy", "steps=2", "batch=4", "grid=1", &format!("teacher_weights={p}"), &format!("teacher_sha256={sha}")] {
                    cmd.args(["--set", s]);
                }
                cmd
            }
            "toml" => {
                let mut cmd = sb.cmd(release_bin("plan"));
                cmd.args(["--pipeline", &p, "--profile", "p", "check"]);
                cmd
            }
            k => panic!("{}: unknown kind `{k}`", c.path),
        };
        let r = run(&mut cmd);
        assert_eq!(r.code, c.exit, "{}: exit {}\n{}", c.path, r.code, r.stderr);
        if c.exit == 0 {
            continue;
        }
        let line = r.one_error_line();
        for want in [&c.names, &c.says].into_iter().flatten() {
            assert!(line.contains(want.as_str()), "{}: `{want}` not in `{line}`", c.path);
        }
    }
    // Every file of the corpus has its case.
    for kind in std::fs::read_dir(root.join("files")).unwrap().flatten() {
        for entry in std::fs::read_dir(kind.path()).unwrap().flatten() {
            let rel = format!("{}/{}", kind.file_name().to_string_lossy(), entry.file_name().to_string_lossy());
            assert!(listed.contains(&rel), "{rel}: no case in cases.toml");
        }
    }
    eprintln!("corpus cases tried: {}", cases.case.len());
}
