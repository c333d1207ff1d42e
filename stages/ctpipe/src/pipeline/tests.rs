use super::stages::{Arity, InputRole, StageSpec};
use super::*;
use crate::error::{failure_of, one_line, Failure};

static FAKE: &[StageSpec] = &[
    StageSpec { name: "fetch-data", about: "", inputs: &[], group_by: Some("source") },
    StageSpec {
        name: "train-ct",
        about: "",
        inputs: &[
            InputRole { name: "data", arity: Arity::One, from: &["fetch-data"] },
            InputRole { name: "init", arity: Arity::Optional, from: &["train-ct"] },
        ],
        group_by: Some("method"),
    },
    StageSpec {
        name: "evaluate-fid",
        about: "",
        inputs: &[InputRole { name: "models", arity: Arity::Many, from: &["train-ct"] }],
        group_by: None,
    },
];

fn parse(text: &str) -> Result<Pipeline> {
    Pipeline::parse_with(text, Path::new("p.toml"), FAKE)
}

fn err(text: &str) -> String {
    let e = parse(text).unwrap_err();
    assert_eq!(failure_of(&e), Some(Failure::Usage));
    one_line(&e)
}

const GOOD: &str = r#"
[default]
about = "demo"
[default.fetch-data.toy]
source = "toy2d"
[default.train-ct.edm]
data = "fetch-data.toy"
method = "edm"
[default.train-ct.ect]
data = "fetch-data.toy"
init = "train-ct.edm"
method = "ect"
[default.train-ct.ict]
data = "fetch-data.toy"
method = "ict"
[default.evaluate-fid.report]
models = ["train-ct.ect", "train-ct.ict"]
"#;

#[test]
fn parses_nodes_inputs_and_order() {
    let p = parse(GOOD).unwrap();
    let prof = p.profile("default").unwrap();
    assert_eq!(prof.about, "demo");
    let ect = prof.node("train-ct.ect").unwrap();
    assert_eq!(ect.inputs["init"], vec!["train-ct.edm"]);
    assert!(!ect.settings.contains_key("data"), "input roles are not settings");
    assert_eq!(ect.setting_str("method"), Some("ect"));
    let order: Vec<&str> = prof.topo_order().iter().map(|n| n.id.as_str()).collect();
    let pos = |id: &str| order.iter().position(|o| *o == id).unwrap();
    assert!(pos("fetch-data.toy") < pos("train-ct.edm"));
    assert!(pos("train-ct.edm") < pos("train-ct.ect"));
    assert!(pos("train-ct.ect") < pos("evaluate-fid.report"));
    assert_eq!(
        prof.downstream("train-ct.edm").into_iter().collect::<Vec<_>>(),
        vec!["evaluate-fid.report", "train-ct.ect", "train-ct.edm"]
    );
}

#[test]
fn rejects_bad_files_with_one_line_errors() {
    assert!(err("[default]\nfoo = 1").contains("unknown key `foo`"));
    assert!(err("[default.fetch-data.toy]\nsource=").contains("p.toml"));
    assert!(err("[default.train-ct.x]\nmethod='ict'").contains("missing input `data`"));
    assert!(err("[default.fetch-data.t]\n[default.train-ct.x]\ndata='fetch-data.nope'").contains("not a node of this profile"));
    assert!(err("[default.fetch-data.t]\n[default.train-ct.x]\ndata='fetch-data.t'\ninit='fetch-data.t'")
        .contains("must come from train-ct"));
    let cyc = "[default.fetch-data.t]\n[default.train-ct.a]\ndata='fetch-data.t'\ninit='train-ct.b'\n[default.train-ct.b]\ndata='fetch-data.t'\ninit='train-ct.a'";
    assert!(err(cyc).contains("cycle among train-ct.a, train-ct.b"));
    assert!(err("[default.fetch-data]\nsource='x'").contains("expected a node table"));
    assert!(parse(GOOD).unwrap().profile("nope").is_err());
}
