//! End to end: `make` on a tiny profile in a temporary directory, as a user drives it.

use ctpipe_e2e::{release_bin_dir, run, workspace_root, Run, Sandbox};
use std::process::Command;
use std::time::Instant;

/// `make` on the sandbox with profile `tiny`.
fn make(sb: &Sandbox, args: &[&str]) -> Run {
    run(sb.make().arg("PROFILE=tiny").args(args))
}

fn tiny() -> Sandbox {
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(workspace_root().join("tests/profiles/tiny.toml")).unwrap();
    sb.write("pipeline.toml", &text);
    sb
}

const ALL: [&str; 5] = ["fetch-data.a", "fetch-data.b", "train-ct.ect", "train-ct.edm", "train-ct.ict"];

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
    assert_eq!(ran(&first), ALL);
    assert_eq!(first.stdout.lines().filter(|l| l.starts_with("done ")).count(), ALL.len(), "{}", first.stdout);
    for node in ALL {
        let r = std::fs::read_to_string(sb.artifacts().join(format!("refs/tiny/{node}.ref"))).unwrap();
        assert!(r.starts_with(&format!("{}/", node.split('.').next().unwrap())), "{r}");
        assert!(sb.artifacts().join(format!("logs/tiny/{node}.log")).is_file());
    }
    let t = Instant::now();
    let second = make(&sb, &["all"]).expect_code(0);
    let secs = t.elapsed().as_secs_f64();
    assert!(ran(&second).is_empty(), "second run ran {:?}", ran(&second));
    assert!(second.stdout.contains(&format!("all {} nodes of profile tiny are up to date", ALL.len())), "{}", second.stdout);
    assert_eq!(second.stdout.matches(" up to date ").count(), ALL.len(), "{}", second.stdout);
    eprintln!("second `make all`: {secs:.3} s");
}

/// A ref pointing at an artifact that is gone (removed by hand, or its manifest deleted) is
/// out of date: `make all` runs its node again (the others are cache hits), instead of
/// calling the profile up to date.
#[test]
fn a_ref_whose_artifact_is_gone_is_rebuilt() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    let artifact_of = |node: &str| {
        let r = std::fs::read_to_string(sb.artifacts().join(format!("refs/tiny/{node}.ref"))).unwrap();
        sb.artifacts().join(r.trim())
    };
    std::fs::remove_dir_all(artifact_of("fetch-data.b")).unwrap();
    std::fs::remove_file(artifact_of("train-ct.edm").join("manifest.json")).unwrap();
    let again = make(&sb, &["all"]).expect_code(0);
    let done: Vec<&str> = again.stdout.lines().filter(|l| l.starts_with("done ")).collect();
    assert_eq!(done.len(), 2, "the two lost artifacts are rebuilt, nothing else:\n{}", again.stdout);
    assert!(ran(&again).contains(&"fetch-data.b".to_string()) && ran(&again).contains(&"train-ct.edm".to_string()), "{:?}", ran(&again));
    assert!(artifact_of("train-ct.edm").join("manifest.json").is_file() && artifact_of("fetch-data.b").join("manifest.json").is_file());
    let third = make(&sb, &["all"]).expect_code(0);
    assert!(ran(&third).is_empty(), "{:?}", ran(&third));
}

/// `make status` says per node what `make all` would do and why, and make then does exactly
/// that; a `--set` on a node leaves its ref alone unless forced, and a forced ref is flagged.
#[test]
fn status_says_what_make_would_do_and_why() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    let status = |sb: &Sandbox| -> std::collections::BTreeMap<String, String> {
        let r = make(sb, &["status"]).expect_code(0);
        let lines = r.stdout.lines().filter_map(|l| l.trim().split_once(' ')).filter(|(id, _)| ALL.contains(id));
        let m: std::collections::BTreeMap<String, String> = lines.map(|(id, rest)| (id.to_string(), rest.trim().to_string())).collect();
        assert_eq!(m.len(), ALL.len(), "{}", r.stdout);
        m
    };
    let computes = |m: &std::collections::BTreeMap<String, String>| m.iter().filter(|(_, s)| s.starts_with("would compute")).map(|(id, _)| id.clone()).collect::<Vec<_>>();
    let s = status(&sb);
    assert!(s.values().all(|v| v.starts_with("up to date ")), "{s:#?}");
    // Read in part (`| head -1`): it ends quietly when the reader goes away.
    let plan = release_bin_dir().join("plan");
    let script = format!("'{}' --pipeline pipeline.toml --profile tiny --artifacts artifacts status --data-dir data | head -n 1", plan.display());
    let r = run(sb.cmd("sh").args(["-c", &script])).expect_code(0);
    assert!(r.stdout.starts_with("profile tiny") && r.stderr.is_empty(), "{}\n{}", r.stdout, r.stderr);

    // A setting of EDM: EDM says which, ECT (tuned from it) waits for it, the rest stay.
    let text = std::fs::read_to_string(sb.path().join("pipeline.toml")).unwrap();
    let edited = text.replacen("method = \"edm\"\nnetwork = \"mlp-small\"\nsteps = 20", "method = \"edm\"\nnetwork = \"mlp-small\"\nsteps = 25", 1);
    assert_ne!(edited, text);
    sb.write("pipeline.toml", &edited);
    let s = status(&sb);
    assert_eq!(s["train-ct.edm"], "would compute  setting steps: 20 → 25", "{s:#?}");
    assert_eq!(s["train-ct.ect"], "would compute  after train-ct.edm", "{s:#?}");
    assert_eq!(computes(&s), ["train-ct.ect", "train-ct.edm"]);
    assert_eq!(ran(&make(&sb, &["all"]).expect_code(0)), computes(&s), "make did not do what status said");

    // An artifact removed by hand; what reads it waits for it.
    let ref_of = |node: &str| std::fs::read_to_string(sb.artifacts().join(format!("refs/tiny/{node}.ref"))).unwrap();
    std::fs::remove_dir_all(sb.artifacts().join(ref_of("fetch-data.b").trim())).unwrap();
    let s = status(&sb);
    assert!(s["fetch-data.b"].contains("which is gone from the store"), "{s:#?}");
    assert_eq!(s["train-ct.ict"], "would compute  after fetch-data.b");
    assert_eq!(computes(&s), ["fetch-data.b", "train-ct.ict"]);
    let r = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&r), computes(&s));

    // --set on a node computes a variant but keeps the node's ref; --force repoints it, and
    // status flags the node until make puts it back.
    let ict = ref_of("train-ct.ict");
    let variant = |force: bool| {
        let mut c = sb.cmd(release_bin_dir().join("train-ct"));
        c.args(["--profile", "tiny", "--node", "train-ct.ict", "--set", "lr=0.0002"]);
        if force {
            c.arg("--force");
        }
        run(&mut c).expect_code(0)
    };
    let r = variant(false);
    assert!(r.stderr.contains("ran with --set: its ref") && r.stderr.contains("--force repoints"), "{}", r.stderr);
    assert_eq!(ref_of("train-ct.ict"), ict, "--set repointed the node's ref");
    assert!(status(&sb).values().all(|v| v.starts_with("up to date ")));
    variant(true);
    assert_ne!(ref_of("train-ct.ict"), ict);
    let s = status(&sb);
    assert!(s["train-ct.ict"].starts_with("would compute  setting lr: 0.0002 → 0.0001"), "{s:#?}");
    assert_eq!(computes(&s), ["train-ct.ict"]);
    let r = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&r), ["train-ct.ict"]);
    assert_eq!(ref_of("train-ct.ict"), ict, "make all restores the pipeline's artifact (a cache hit)");
}

#[test]
fn dry_run_shows_the_plan_and_runs_nothing() {
    let sb = tiny();
    let r = make(&sb, &["-n", "all"]).expect_code(0);
    assert_eq!(ran(&r), ALL);
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
    // A hyper-parameter of one method reruns that method and what reads it: EDM's step count
    // reruns EDM and the ECT tuned from it, not iCT, not the datasets.
    let ref_of = |node: &str| std::fs::read_to_string(sb.artifacts().join(format!("refs/tiny/{node}.ref"))).unwrap();
    let (edm0, ect0, ict0) = (ref_of("train-ct.edm"), ref_of("train-ct.ect"), ref_of("train-ct.ict"));
    let edited = reordered.replacen("method = \"edm\"\nnetwork = \"mlp-small\"\nsteps = 20", "method = \"edm\"\nnetwork = \"mlp-small\"\nsteps = 25", 1);
    assert_ne!(edited, reordered);
    sb.write("pipeline.toml", &edited);
    let r = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&r), ["train-ct.ect", "train-ct.edm"]);
    assert_ne!(ref_of("train-ct.edm"), edm0);
    assert_ne!(ref_of("train-ct.ect"), ect0, "a new init gives ECT a new key");
    assert_eq!(ref_of("train-ct.ict"), ict0);
    // A change to a dataset reruns it and the iCT trained on it.
    sb.write("pipeline.toml", &edited.replacen("dataset = \"moons\"\nn = 500", "dataset = \"moons\"\nn = 600", 1).replacen("n = 500\ndataset = \"moons\"", "n = 600\ndataset = \"moons\"", 1));
    let r = make(&sb, &["all"]).expect_code(0);
    assert_eq!(ran(&r), ["fetch-data.b", "train-ct.ict"]);
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
    assert_eq!(ran(&r).len(), ALL.len() + 3);
    let store = ctpipe::store::Store::new(sb.artifacts());
    assert_eq!(store.list().unwrap().len(), ALL.len() + 3);
    for (stage, key) in store.list().unwrap() {
        store.open(&stage, &key, ctpipe::store::Verify::Hashes).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(sb.artifacts().join("fetch-data")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty());

    // One node, then a stage narrowed by its group field.
    let sb = tiny();
    assert_eq!(ran(&make(&sb, &["fetch-data.b"]).expect_code(0)), ["fetch-data.b"]);
    assert_eq!(ran(&make(&sb, &["fetch-data", "SOURCE=toy2d"]).expect_code(0)), ["fetch-data.a"]);
    // make train-ct METHOD=ect: that method's node and, first, what it needs.
    assert_eq!(ran(&make(&sb, &["train-ct", "METHOD=ect"]).expect_code(0)), ["train-ct.ect", "train-ct.edm"]);
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
    // A bad setting is found by `plan check` before any node runs, with file, node and field.
    let text = std::fs::read_to_string(workspace_root().join("tests/profiles/tiny.toml")).unwrap();
    sb.write("pipeline.toml", &text.replacen("n = 500\nn_test = 100", "n = \"many\"\nn_test = 100", 1));
    let r = make(&sb, &["all"]);
    assert_ne!(r.code, 0);
    let line = r.stderr.lines().find(|l| l.starts_with("error: plan:")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("[tiny.fetch-data.a]: field `n`"), "{line}");
    assert!(ran(&r).is_empty() && !sb.artifacts().join("refs").exists(), "a node ran before the check:\n{}", r.stdout);
}

/// `make all` checks every node first: an ECT node whose init is another network stops the
/// whole profile before anything runs (also the nodes that could have run), and `plan sbatch`
/// writes no scripts for it.
#[test]
fn a_profile_that_cannot_run_stops_before_any_node() {
    let sb = tiny();
    let text = std::fs::read_to_string(workspace_root().join("tests/profiles/tiny.toml")).unwrap();
    let bad = text + "\n[tiny.train-ct.bad]\ndata = \"fetch-data.a\"\ninit = \"train-ct.edm\"\nmethod = \"ect\"\nnetwork = \"mlp-toy\"\n";
    sb.write("pipeline.toml", &bad);
    let r = make(&sb, &["all"]);
    assert_ne!(r.code, 0);
    let line = r.stderr.lines().find(|l| l.starts_with("error: plan:")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("[tiny.train-ct.bad]: init `train-ct.edm` has network = \"mlp-small\", this node \"mlp-toy\""), "{line}");
    assert!(ran(&r).is_empty(), "{}", r.stdout);
    let r = run(sb.cmd(release_bin_dir().join("plan")).args(["--profile", "tiny", "sbatch", "--out", "slurm"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.one_error_line().contains("[tiny.train-ct.bad]"));
    assert!(!sb.path().join("slurm").exists());
}

/// SCALE=smoke runs every node with its counts cut, under `tiny@smoke`: the full run's refs
/// stay as they were, the cut nodes get their own keys (the datasets, which smoke does not
/// cut, are the same artifacts), and a second smoke run does no work.
#[test]
fn smoke_scale_is_keyed_apart_from_the_full_run() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    let refs = |ns: &str| -> Vec<(String, String)> {
        ALL.iter().map(|n| (n.to_string(), std::fs::read_to_string(sb.artifacts().join(format!("refs/{ns}/{n}.ref"))).unwrap())).collect()
    };
    let full = refs("tiny");
    let smoke = make(&sb, &["all", "SCALE=smoke"]).expect_code(0);
    assert_eq!(ran(&smoke), ALL);
    assert!(smoke.stdout.contains("--scale smoke"), "{}", smoke.stdout);
    assert!(smoke.stdout.contains(&format!("all {} nodes of profile tiny@smoke are up to date", ALL.len())), "{}", smoke.stdout);
    assert_eq!(refs("tiny"), full, "the full run's refs moved");
    for ((node, a), (_, b)) in full.iter().zip(refs("tiny@smoke")) {
        if node.starts_with("fetch-data") {
            assert_eq!(*a, b, "{node}: the same dataset");
        } else {
            assert_ne!(*a, b, "{node}: a smoke model is keyed apart");
        }
    }
    let store = ctpipe::store::Store::new(sb.artifacts());
    let r = store.read_ref("tiny@smoke", "train-ct.ect").unwrap().unwrap();
    let m = store.open(&r.stage, &r.key, ctpipe::store::Verify::Hashes).unwrap().manifest;
    assert_eq!((m.config["steps"].as_u64(), m.config["batch"].as_u64()), (Some(2), Some(2)));
    assert!(sb.artifacts().join("reports/tiny@smoke.md").is_file());
    assert!(sb.artifacts().join("logs/tiny@smoke/train-ct.ect.log").is_file());
    assert!(ran(&make(&sb, &["all", "SCALE=smoke"]).expect_code(0)).is_empty());
}

#[test]
fn clean_never_touches_artifacts() {
    let sb = tiny();
    make(&sb, &["all"]).expect_code(0);
    // CARGO=true: the cargo clean of the real workspace is not this test's business.
    make(&sb, &["clean", "CARGO=true"]).expect_code(0);
    let store = ctpipe::store::Store::new(sb.artifacts());
    assert_eq!(store.list().unwrap().len(), ALL.len());
    assert!(!sb.artifacts().join("plans").exists());
    assert!(sb.artifacts().join("refs/tiny/fetch-data.a.ref").is_file());
}

/// `plan sbatch`: scripts that bash accepts, submitted in dependency order; a job signalled
/// before its time limit (USR1) checkpoints, requeues itself, and the requeued run resumes; a
/// job stopped by TERM (scancel, preemption) checkpoints and does not requeue itself. With fake
/// `sbatch`/`scontrol`; `tests/hpc.rs` runs the same scripts on a real SLURM cluster.
#[test]
fn slurm_scripts_chain_jobs_and_requeue_on_signal() {
    let sb = tiny();
    let mut text = std::fs::read_to_string(sb.path().join("pipeline.toml")).unwrap();
    text = text.replace("[tiny]\n", "[tiny]\nslurm = { time = \"01:00:00\", cpus-per-task = 2 }\n");
    // A longer ECT run, so that the signal lands mid-training.
    text = text.replace(
        "method = \"ect\"\nnetwork = \"mlp-small\"\nsteps = 20",
        "method = \"ect\"\nnetwork = \"mlp-small\"\nsteps = 4000\nslurm = { gres = \"gpu:1\" }",
    );
    sb.write("pipeline.toml", &text);
    let plan = ctpipe_e2e::release_bin("plan");
    run(sb.cmd(&plan).args(["--profile", "tiny", "sbatch", "--out"]).arg(sb.path().join("slurm")).arg("--bin").arg(release_bin_dir()).arg("--gpu-bin").arg(release_bin_dir())).expect_code(0);
    let dir = sb.path().join("slurm/tiny");
    let ect = std::fs::read_to_string(dir.join("train-ct.ect.sbatch")).unwrap();
    for line in ["#SBATCH --signal=B:USR1@360", "#SBATCH --requeue", "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --time=01:00:00", "#SBATCH --cpus-per-task=2", "#SBATCH --gres=gpu:1", "--node 'train-ct.ect'"] {
        assert!(ect.contains(line), "missing `{line}` in\n{ect}");
    }
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        run(Command::new("bash").arg("-n").arg(f.path())).expect_code(0);
    }
    // Fake sbatch/scontrol: record calls, hand out job ids.
    let fake = sb.path().join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let log = sb.path().join("calls.log");
    let sbatch = format!("#!/bin/bash\n[[ \"$*\" == *--test-only* ]] && exit 0\necho \"sbatch $*\" >> {0}\nn=$(wc -l < {0})\necho $((1000 + n))\n", log.display());
    let scontrol = format!("#!/bin/bash\necho \"scontrol $*\" >> {}\n", log.display());
    for (name, body) in [("sbatch", sbatch), ("scontrol", scontrol)] {
        std::fs::write(fake.join(name), body).unwrap();
        run(Command::new("chmod").arg("+x").arg(fake.join(name))).expect_code(0);
    }
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    run(Command::new(dir.join("submit.sh")).env("PATH", &path)).expect_code(0);
    let calls = std::fs::read_to_string(&log).unwrap();
    let line_of = |node: &str| calls.lines().position(|l| l.ends_with(&format!("{node}.sbatch"))).unwrap_or_else(|| panic!("{node} not submitted:\n{calls}"));
    assert!(line_of("fetch-data.a") < line_of("train-ct.edm") && line_of("train-ct.edm") < line_of("train-ct.ect"));
    let ect_call = calls.lines().find(|l| l.ends_with("train-ct.ect.sbatch")).unwrap();
    let (a, edm) = (1001 + line_of("fetch-data.a"), 1001 + line_of("train-ct.edm"));
    assert!(ect_call.contains(&format!("--dependency=afterok:{a}:{edm}")) || ect_call.contains(&format!("--dependency=afterok:{edm}:{a}")), "{ect_call}");

    // Run the EDM job's script to completion, then the ECT job's, signalled mid-way.
    for node in ["fetch-data.a", "train-ct.edm"] {
        run(Command::new("bash").arg(dir.join(format!("{node}.sbatch"))).env("PATH", &path).env("SLURM_JOB_ID", "7")).expect_code(0);
    }
    let work = sb.artifacts().join(".work/train-ct");
    let spawn_ect = |job_id: &str| {
        Command::new("bash")
            .arg(dir.join("train-ct.ect.sbatch"))
            .env("PATH", &path)
            .env("SLURM_JOB_ID", job_id)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut job = spawn_ect("42");
    let t = Instant::now();
    let started = || std::fs::read_dir(&work).map(|d| d.flatten().any(|e| e.path().join("metrics.jsonl").exists())).unwrap_or(false);
    while !started() {
        assert!(t.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(job.id() as i32, libc::SIGUSR1) };
    let status = job.wait().unwrap();
    assert_eq!(status.code(), Some(75));
    assert!(std::fs::read_to_string(&log).unwrap().contains("scontrol requeue 42"));

    // TERM (a user's scancel): checkpoint and stop, no requeue.
    let mut job = spawn_ect("43");
    // Long enough for bash to set its traps; the stage stops at its first step at the latest.
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    assert_eq!(job.wait().unwrap().code(), Some(75));
    assert!(!std::fs::read_to_string(&log).unwrap().contains("scontrol requeue 43"), "a TERM must not requeue");
    let again = run(Command::new("bash").arg(dir.join("train-ct.ect.sbatch")).env("PATH", &path).env("SLURM_JOB_ID", "42")).expect_code(0);
    assert!(again.stderr.contains("resuming from"), "{}", again.stderr);
    assert!(again.stdout.contains("done train-ct "), "{}", again.stdout);
    assert!(sb.artifacts().join("refs/tiny/train-ct.ect.ref").is_file());
}

/// `artifacts path` finds a node's artifact, `pin` keeps a hand-made one from `gc` (and
/// `unpin` lets it go), `ls` says what each artifact is and which refs hold it.
#[test]
fn artifacts_path_pin_and_ls() {
    let sb = tiny();
    let arts = release_bin_dir().join("artifacts");
    let fetch = release_bin_dir().join("fetch-data");
    let node_key = run(sb.cmd(&fetch).args(["--profile", "tiny", "--node", "fetch-data.a"])).expect_code(0).key();
    let path = run(sb.cmd(&arts).args(["path", "fetch-data.a", "--profile", "tiny"])).expect_code(0);
    assert_eq!(path.stdout.trim(), sb.artifacts().join("fetch-data").join(&node_key).display().to_string());
    let by_key = run(sb.cmd(&arts).args(["path", &node_key[..12]])).expect_code(0);
    assert_eq!(by_key.stdout, path.stdout);
    let missing = run(sb.cmd(&arts).args(["path", "train-ct.ect", "--profile", "tiny"])).expect_code(3);
    assert!(missing.one_error_line().contains("no node of that name has run in profile tiny"), "{}", missing.stderr);

    // A variant made by hand: nothing refers to it, so gc would take it, until it is pinned.
    let mine = run(sb.cmd(&fetch).args(["--set", "source=toy2d", "--set", "dataset=moons", "--set", "n=300"])).expect_code(0).key();
    let unreferenced = format!("unreferenced fetch-data/{mine}");
    let gc = |sb: &Sandbox| run(sb.cmd(&arts).arg("gc")).expect_code(0).stdout;
    assert!(gc(&sb).contains(&unreferenced));
    run(sb.cmd(&arts).args(["pin", &mine[..12], "moons-300"])).expect_code(0);
    assert!(!gc(&sb).contains(&unreferenced), "gc would remove a pinned artifact");
    let ls = run(sb.cmd(&arts).arg("ls")).expect_code(0).stdout;
    let line = |key: &str| ls.lines().find(|l| l.contains(&key[..12])).unwrap_or_else(|| panic!("{key} not listed:\n{ls}")).to_string();
    assert!(line(&mine).contains("toy2d:moons") && line(&mine).contains("@pinned/moons-300"), "{ls}");
    assert!(line(&node_key).contains("toy2d:two-gaussians") && line(&node_key).contains("tiny/fetch-data.a"), "{ls}");
    run(sb.cmd(&arts).args(["unpin", "moons-300"])).expect_code(0);
    assert!(gc(&sb).contains(&unreferenced));
    let bad = run(sb.cmd(&arts).args(["pin", &mine[..12], "../escape"])).expect_code(2);
    assert!(bad.one_error_line().contains("pin name `../escape`"), "{}", bad.stderr);
}
