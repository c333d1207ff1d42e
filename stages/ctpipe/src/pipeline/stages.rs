//! The registry of stages: their names and the input roles a node of each may name.
//!
//! `plan` reads it to turn a profile into a DAG without loading any stage binary, and each stage
//! binary reads its own entry to know which fields of its node table are inputs (node ids whose
//! artifact keys enter its key) rather than settings. A stage appears here once it exists.

/// How many artifacts an input role takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    One,
    Optional,
    Many,
}

/// One input role of a stage, e.g. `train-ct`'s `data`.
#[derive(Debug, Clone, Copy)]
pub struct InputRole {
    pub name: &'static str,
    pub arity: Arity,
    /// The stages whose artifacts this role accepts.
    pub from: &'static [&'static str],
}

/// A stage as the pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec {
    pub name: &'static str,
    pub about: &'static str,
    pub inputs: &'static [InputRole],
    /// A config field whose value groups nodes for `make <stage> <FIELD>=<value>`
    /// (e.g. `method` for `make train-ct METHOD=sct`).
    pub group_by: Option<&'static str>,
}

pub const STAGES: &[StageSpec] = &[
    StageSpec {
        name: "fetch-data",
        about: "import a dataset (toy 2-D, Fashion-MNIST, Hub, folder, Parquet) as a Parquet artifact",
        inputs: &[],
        group_by: Some("source"),
    },
    StageSpec {
        name: "train-ct",
        about: "train a consistency model (iCT, ECT, SCT, GC, VCT) or an EDM denoiser",
        inputs: &[
            InputRole { name: "data", arity: Arity::One, from: &["fetch-data"] },
            InputRole { name: "init", arity: Arity::Optional, from: &["train-ct"] },
        ],
        group_by: Some("method"),
    },
    StageSpec {
        name: "distill",
        about: "distil a consistency model from an EDM teacher (consistency distillation, Heun or Euler teacher steps)",
        inputs: &[
            InputRole { name: "data", arity: Arity::One, from: &["fetch-data"] },
            InputRole { name: "teacher", arity: Arity::Optional, from: &["train-ct"] },
        ],
        group_by: None,
    },
    StageSpec {
        name: "precompute-encoder",
        about: "feature encoder (FID Inception-v3, in-domain classifier, identity) and reference statistics of a dataset",
        inputs: &[InputRole { name: "data", arity: Arity::One, from: &["fetch-data"] }],
        group_by: Some("encoder"),
    },
    StageSpec {
        name: "evaluate-fid",
        about: "sample models and measure them: FD against reference statistics, toy metrics, report",
        inputs: &[
            InputRole { name: "data", arity: Arity::One, from: &["fetch-data"] },
            InputRole { name: "reference", arity: Arity::Optional, from: &["precompute-encoder"] },
            InputRole { name: "models", arity: Arity::Many, from: &["train-ct", "distill"] },
            InputRole { name: "guide", arity: Arity::Optional, from: &["train-ct", "distill"] },
        ],
        group_by: None,
    },
];

/// The registry entry of a stage.
pub fn stage_spec(name: &str) -> Option<&'static StageSpec> {
    STAGES.iter().find(|s| s.name == name)
}

impl StageSpec {
    /// What `--help` opens with: what the stage does, then its input roles.
    pub fn long_about(&self) -> String {
        let mut out = format!("{}: {}\n", self.name, self.about);
        if self.inputs.is_empty() {
            out.push_str("\nNo inputs: it reads outside sources only.\n");
        } else {
            out.push_str("\nInput roles (a node's table names them by node id; --input ROLE=ARTIFACT by key, key prefix, stage/key or ref file):\n");
            for role in self.inputs {
                let how_many = match role.arity {
                    Arity::One => "one",
                    Arity::Optional => "optional, one",
                    Arity::Many => "one or more",
                };
                out.push_str(&format!("  {:<10} {how_many} {} artifact{}\n", role.name, role.from.join(" or "), if role.arity == Arity::Many { "s" } else { "" }));
            }
        }
        out
    }
}

/// The names of all stages, for error messages.
pub fn stage_names() -> String {
    STAGES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}
