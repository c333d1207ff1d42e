//! End to end: `make` on a tiny profile in a temporary directory, as a user drives it.

use ctpipe_e2e::{release_bin_dir, run, workspace_root, Run, Sandbox};
use std::process::Command;
use std::time::Instant;

/// `make -f <repo>/Makefile` with the sandbox's pipeline, store and data, the release binaries
/// as they are (BUILD=0), and profile `tiny`.
fn make(sb: &Sandbox, args: &[&str]) -> Run {
    let mut c = Command::new("make");
    c.current_dir(sb.path())
        .arg("-f")
        .arg(workspace_root().join("Makefile"))
        .arg("--no-print-directory")
        .arg("BUILD=0")
        .arg(format!("BIN={}", release_bin_dir().display()))
        .arg(format!("PIPELINE={}", sb.path().join("pipeline.toml").display()))
        .arg(format!("ARTIFACTS={}", sb.artifacts().display()))
        .arg(format!("DATA={}", sb.path().join("data").display()))
        .arg("PROFILE=tiny")
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    run(&mut c)
}

fn tiny() -> Sandbox {
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(workspace_root().join("tests/profiles/tiny.toml")).unwrap();
    sb.write("pipeline.toml", &text);
    sb
}

/// The nodes whose stage binary ran in this make invocation (the recipe lines make echoes).
fn ran(r: &Run) -> Vec<String> {
    let mut v: Vec<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.split("--node ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn all_twice_second_does_no_stage_work() {
    let sb = tiny();
    let first = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&first), ["fetch-data.a", "fetch-data.b"]);
    assert_eq!(first.stdout.lines().filter(|l| l.starts_with("done fetch-data ")).count(), 2, "{}", first.stdout);
    for node in ["fetch-data.a", "fetch-data.b"] {
        let r = std::fs::read_to_string(sb.artifacts().join(format!("refs/tiny/{node}.ref"))).unwrap();
        assert!(r.starts_with("fetch-data/"), "{r}");
        assert!(sb.artifacts().join(format!("logs/tiny/{node}.log")).is_file());
    }
    let t = Instant::now();
    let second = make(&sb, &["all"]).expect_code(0);
    let secs = t.elapsed().as_secs_f64();
    assert!(ran(&second).is_empty(), "second run ran {:?}", ran(&second));
    assert!(second.stdout.contains("all 2 nodes of profile tiny are up to date"), "{}", second.stdout);
    assert_eq!(second.stdout.matches(" ok ").count(), 2, "{}", second.stdout);
    eprintln!("second `make all`: {secs:.3} s");
}

#[test]
fn dry_run_shows_the_plan_and_runs_nothing() {
    let sb = tiny();
    let r = make(&sb, &["-n", "all"]).expect_code(0);
    assert_eq!(ran(&r), ["fetch-data.a", "fetch-data.b"]);
    assert!(!sb.artifacts().join("refs").exists(), "make -n ran a stage");
    assert!(ctpipe::store::Store::new(sb.artifacts()).list().unwrap().is_empty());
}

#[test]
fn editing_one_node_reruns_only_that_node() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    let text = std::fs::read_to_string(sb.path().join("pipeline.toml")).unwrap();
    // Cosmetic edits (a comment, key order) change no node's settings: nothing runs.
    let reordered = text.replace("dataset = \"moons\"\nn = 500", "n = 500\ndataset = \"moons\"") + "\n# a comment\n";
    assert_ne!(reordered, text);
    sb.write("pipeline.toml", &reordered);
    assert!(ran(&make(&sb, &["all"]).expect_code(0)).is_empty());
    // A real change to node a reruns a alone, with a new key.
    let before = std::fs::read_to_string(sb.artifacts().join("refs/tiny/fetch-data.a.ref")).unwrap();
    sb.write("pipeline.toml", &reordered.replacen("n = 500", "n = 600", 1));
    let r = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&r), ["fetch-data.a"]);
    let after = std::fs::read_to_string(sb.artifacts().join("refs/tiny/fetch-data.a.ref")).unwrap();
    assert_ne!(before, after);
    assert!(ran(&make(&sb, &["all"]).expect_code(0)).is_empty());
}

#[test]
fn parallel_make_and_stage_targets() {
    let sb = tiny();
    let mut text = std::fs::read_to_string(sb.path().join("pipeline.toml")).unwrap();
    for (name, shape) in [("c", "checkerboard"), ("d", "swiss-roll"), ("e", "eight-gaussians")] {
        text.push_str(&format!("\n[tiny.fetch-data.{name}]\nsource = \"toy2d\"\ndataset = \"{shape}\"\nn = 3000\n"));
    }
    sb.write("pipeline.toml", &text);
    let r = make(&sb, &["-j2", "all"]).expect_code(0);
    assert_eq!(ran(&r).len(), 5);
    let store = ctpipe::store::Store::new(sb.artifacts());
    assert_eq!(store.list().unwrap().len(), 5);
    for (stage, key) in store.list().unwrap() {
        store.open(&stage, &key, ctpipe::store::Verify::Hashes).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(sb.artifacts().join("fetch-data")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty());

    // One node, then a stage narrowed by its group field.
    let sb = tiny();
    assert_eq!(ran(&make(&sb, &["fetch-data.b"]).expect_code(0)), ["fetch-data.b"]);
    assert_eq!(ran(&make(&sb, &["fetch-data", "SOURCE=toy2d"]).expect_code(0)), ["fetch-data.a"]);
    let r = make(&sb, &["fetch-data", "SOURCE=hub"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no fetch-data node has source = hub"), "{}", r.stderr);
}

#[test]
fn bad_pipeline_file_is_one_line() {
    let sb = tiny();
    sb.write("pipeline.toml", "[tiny]\n[tiny.fetch-data.a]\nsource = \"toy2d\"\n[tiny.train-c]\n");
    let r = make(&sb, &["all"]);
    assert_ne!(r.code, 0);
    let line = r.stderr.lines().find(|l| l.starts_with("error: plan:")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("unknown key `train-c`"), "{line}");
    sb.write("pipeline.toml", "[tiny]\n[tiny.fetch-data.a]\nsource = \"toy2d\"\nn = \"many\"\n");
    let r = make(&sb, &["all"]);
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("error: fetch-data: ") || r.stderr.contains("error: fetch-data: "), "{}{}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("[tiny.fetch-data.a]: field `n`"));
}

#[test]
fn clean_never_touches_artifacts() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    // CARGO=true: the cargo clean of the real workspace is not this test's business.
    make(&sb, &["clean", "CARGO=true"]).expect_code(0);
    let store = ctpipe::store::Store::new(sb.artifacts());
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(!sb.artifacts().join("plans").exists());
    assert!(sb.artifacts().join("refs/tiny/fetch-data.a.ref").is_file());
}
