use super::*;
use std::collections::BTreeSet;
use std::path::Path;

fn check(text: &str) -> Result<Report> {
    let pipe = Pipeline::parse(text, Path::new("p.toml")).unwrap();
    check_profile(&pipe, pipe.profile("p").unwrap(), Scale::Full, &[])
}

fn error(text: &str) -> String {
    crate::error::one_line(&check(text).expect_err("the check should fail"))
}

const BASE: &str = r#"
[p]
[p.fetch-data.toy]
source = "toy2d"
[p.train-ct.edm]
data = "fetch-data.toy"
method = "edm"
network = "mlp-toy"
"#;

/// The profiles users run, as shipped: `default` and `fmnist` pass at both scales; `cifar10`
/// names pytorch-fid's weights, which a fresh clone does not have, and says so before any
/// work.
#[test]
fn shipped_profiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipeline.toml");
    let pipe = Pipeline::load(&path).unwrap();
    for name in ["default", "fmnist"] {
        for scale in [Scale::Full, Scale::Smoke] {
            check_profile(&pipe, pipe.profile(name).unwrap(), scale, &[]).unwrap_or_else(|e| panic!("{name} {scale:?}: {e:#}"));
        }
    }
    let cifar = pipe.profile("cifar10").unwrap();
    let e = crate::error::one_line(&check_profile(&pipe, cifar, Scale::Full, &[]).unwrap_err());
    assert!(e.contains("[cifar10.precompute-encoder.inception]: data/fid_inception.safetensors: inception weights not found"), "{e}");
    // Fetching the data (or training) does not need the weights yet; evaluating does.
    for goal in ["fetch-data.cifar10", "train-ct.ect"] {
        check_profile(&pipe, cifar, Scale::Full, &[goal.to_string()]).unwrap_or_else(|e| panic!("{goal}: {e:#}"));
    }
    assert!(check_profile(&pipe, cifar, Scale::Full, &["evaluate-fid.all".to_string()]).is_err());
    assert!(check_profile(&pipe, cifar, Scale::Full, &["train-ct.nope".to_string()]).is_err());
}

#[test]
fn a_bad_setting_names_file_profile_node_and_field() {
    let e = error(&format!("{BASE}lr = -1\n"));
    assert_eq!(e, "p.toml [p.train-ct.edm]: field `lr`: expected a value in (0, inf), got -1.0");
    let e = error(&format!("{BASE}stepz = 3\n"));
    assert!(e.starts_with("p.toml [p.train-ct.edm]: field `stepz`: unknown field `stepz`"), "{e}");
    let e = error(&format!("{BASE}vct_kernel = \"li\"\n"));
    assert!(e.starts_with("p.toml [p.train-ct.edm]: ") && e.contains("`vct_kernel` applies to vct only"), "{e}");
}

#[test]
fn init_and_teacher_must_fit_their_student() {
    let student = |table: &str, extra: &str| {
        let network = if extra.contains("network") { "" } else { "network = \"mlp-toy\"\n" };
        format!("{BASE}\n[p.{table}]\ndata = \"fetch-data.toy\"\n{network}{extra}")
    };
    // Tuning at another dropout is ECT's recipe: accepted.
    check(&student("train-ct.ect", "init = \"train-ct.edm\"\nmethod = \"ect\"\ndropout = 0.2\n")).unwrap();
    check(&student("distill.cd", "teacher = \"train-ct.edm\"\n")).unwrap();

    let e = error(&student("train-ct.ect", "init = \"train-ct.edm\"\nmethod = \"ect\"\nnetwork = \"mlp-small\"\n"));
    assert!(e.starts_with("p.toml [p.train-ct.ect]: init `train-ct.edm` has network = \"mlp-toy\", this node \"mlp-small\""), "{e}");
    let e = error(&student("train-ct.ect", "init = \"train-ct.edm\"\nmethod = \"ect\"\nsigma_data = 0.7\n"));
    assert!(e.contains("init `train-ct.edm` has sigma_data = 0.5, this node 0.7"), "{e}");
    let e = error(&format!(
        "{BASE}\n[p.train-ct.ict]\ndata = \"fetch-data.toy\"\nnetwork = \"mlp-toy\"\n[p.distill.cd]\ndata = \"fetch-data.toy\"\nnetwork = \"mlp-toy\"\nteacher = \"train-ct.ict\"\n"
    ));
    assert!(e.contains("[p.distill.cd]: teacher `train-ct.ict` trains method \"ict\"; distillation needs an EDM denoiser"), "{e}");

    // Another dataset than the init's: allowed, noted.
    let text = format!("{BASE}\n[p.fetch-data.other]\nsource = \"toy2d\"\nseed = 1\n[p.train-ct.ect]\ndata = \"fetch-data.other\"\ninit = \"train-ct.edm\"\nnetwork = \"mlp-toy\"\nmethod = \"ect\"\n");
    let r = check(&text).unwrap();
    assert_eq!(r.notes, ["train-ct.ect: reads other data than its init `train-ct.edm`; their shapes are compared when it runs"]);
}

#[test]
fn image_evaluation_needs_reference_statistics() {
    let text = "[p]\n[p.fetch-data.f]\nsource = \"fashion-mnist\"\n[p.train-ct.m]\ndata = \"fetch-data.f\"\n[p.evaluate-fid.e]\ndata = \"fetch-data.f\"\nmodels = [\"train-ct.m\"]\n";
    let e = error(text);
    assert!(e.contains("[p.evaluate-fid.e]: `fetch-data.f` holds images, whose evaluation needs reference statistics"), "{e}");
}

#[test]
fn missing_imported_weights_are_found_before_anything_runs() {
    let text = format!("{BASE}\n[p.distill.cd]\ndata = \"fetch-data.toy\"\nnetwork = \"mlp-toy\"\nteacher_weights = \"/nonexistent/edm.safetensors\"\nteacher_sha256 = \"{}\"\n", "ab".repeat(32));
    let e = error(&text);
    assert!(e.starts_with("p.toml [p.distill.cd]: /nonexistent/edm.safetensors: teacher weights not found"), "{e}");
}

/// The smoke scale cuts counts and nothing else, and its cuts are checked like the settings.
#[test]
fn smoke_scale_cuts_counts_only() {
    let pipe = Pipeline::parse(&format!("{BASE}steps = 5000\nbatch = 512\nlr = 3e-4\n"), Path::new("p.toml")).unwrap();
    let node = pipe.profile("p").unwrap().node("train-ct.edm").unwrap();
    let full = node_config::<stage::TrainCt>(node, "o", Scale::Full, true).unwrap();
    let smoke = node_config::<stage::TrainCt>(node, "o", Scale::Smoke, true).unwrap();
    assert_eq!(changed(&full, &smoke), ["batch", "checkpoint_every", "grid", "limit", "log_every", "steps"]);
    assert_eq!((smoke["steps"].as_u64(), smoke["batch"].as_u64(), smoke["limit"].as_u64()), (Some(2), Some(2), Some(64)));
    assert_eq!(smoke["lr"], 3e-4);
}

fn changed(full: &Value, smoke: &Value) -> Vec<String> {
    full.as_object().unwrap().keys().filter(|k| full[k.as_str()] != smoke[k.as_str()]).cloned().collect()
}

/// Every stage's cuts touch counts only: each stage against the list of fields it may cut, on
/// the shipped profiles' nodes (defaults large enough to be cut).
#[test]
fn every_stage_cuts_only_its_counts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipeline.toml");
    let pipe = Pipeline::load(&path).unwrap();
    let allowed = |stage: &str| -> &[&str] {
        match stage {
            "fetch-data" => &[],
            "train-ct" | "distill" => &["batch", "checkpoint_every", "grid", "limit", "log_every", "steps"],
            "precompute-encoder" => &["epochs", "limit", "noise_n", "stats_limit"],
            // guide_step: a smoke guide trained 2 steps has no snapshot but its last.
            "evaluate-fid" => &["class_n", "grid", "guide_step", "heun_steps", "mmd_n", "n", "seeds"],
            other => panic!("no list for {other}"),
        }
    };
    let mut seen = BTreeSet::new();
    for name in ["default", "fmnist"] {
        for node in pipe.profile(name).unwrap().nodes.values() {
            let both = |scale| stage_config(node, "o", scale, false);
            let c = changed(&both(Scale::Full).unwrap(), &both(Scale::Smoke).unwrap());
            let ok = allowed(node.stage.name);
            assert!(c.iter().all(|f| ok.contains(&f.as_str())), "{name} {}: cut {c:?}", node.id);
            if !c.is_empty() {
                seen.insert(node.stage.name);
            }
        }
    }
    assert_eq!(seen, BTreeSet::from(["distill", "evaluate-fid", "precompute-encoder", "train-ct"]), "every stage with counts cut them");
}
