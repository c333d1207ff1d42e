//! What `make all` would do to each node of a profile, and why (`plan status`), as
//! `dvc status` and `snakemake -n` say it.
//!
//! A node's ref names the artifact it last produced. The node is up to date when that is the
//! artifact its stage would produce now: the key a `--dry-run` of the node computes from
//! pipeline.toml, its inputs' refs and its outside files. Otherwise the reasons are read off the
//! difference between the ref's manifest and the dry run: settings, inputs, stage version,
//! outside files. `make` itself goes by the refs' times, so it is this view, not make's, that
//! catches a ref pointed elsewhere by hand or by `--force`.

use super::{Node, Profile};
use crate::error::one_line;
use crate::store::{InputRecord, Key, Manifest, Store, Verify};
use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// What a node's `--dry-run` prints: the artifact it would produce now.
#[derive(Debug, Clone, Deserialize)]
pub struct DryRun {
    pub version: u32,
    pub key: Key,
    pub cached: bool,
    pub config: Value,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputRecord>,
    #[serde(default)]
    pub external: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    /// The ref names the artifact the node would produce now, and it is intact.
    UpToDate { key: Key, created: String },
    /// `make all` would run the node (a cache hit when `cached`).
    Compute { reasons: Vec<String>, cached: bool },
    /// The ref names the right artifact but its files are damaged.
    Damaged { key: Key, error: String },
    /// An upstream node would run first; this one is decided after it.
    Waits { on: Vec<String> },
    /// The node's dry run failed (a bad setting, a missing outside file).
    Fails { error: String },
}

impl NodeState {
    pub fn up_to_date(&self) -> bool {
        matches!(self, NodeState::UpToDate { .. })
    }

    /// One line for `plan status`.
    pub fn describe(&self) -> String {
        match self {
            NodeState::UpToDate { key, created } => format!("up to date     {}  created {created}", key.short()),
            NodeState::Compute { reasons, cached } => {
                format!("would compute  {}{}", reasons.join("; "), if *cached { " (a cache hit: its artifact is in the store)" } else { "" })
            }
            NodeState::Damaged { key, error } => format!("DAMAGED        {}  {error}", key.short()),
            NodeState::Waits { on } => format!("would compute  after {}", on.join(", ")),
            NodeState::Fails { error } => format!("CANNOT RUN     {error}"),
        }
    }
}

/// Every node of `profile` in dependency order with its state; `dry_run` gives a node's.
pub fn node_states(store: &Store, profile: &Profile, namespace: &str, mut dry_run: impl FnMut(&Node) -> Result<DryRun>) -> Result<Vec<(String, NodeState)>> {
    let mut out: Vec<(String, NodeState)> = Vec::new();
    let mut fresh = std::collections::BTreeSet::new();
    for node in profile.topo_order() {
        let pending: Vec<String> = node.dependencies().into_iter().filter(|d| !fresh.contains(*d)).map(str::to_string).collect();
        let state = if !pending.is_empty() {
            NodeState::Waits { on: pending }
        } else {
            match dry_run(node) {
                Err(e) => NodeState::Fails { error: one_line(&e) },
                Ok(now) => state_of(store, namespace, node, &now)?,
            }
        };
        if state.up_to_date() {
            fresh.insert(node.id.clone());
        }
        out.push((node.id.clone(), state));
    }
    Ok(out)
}

fn state_of(store: &Store, namespace: &str, node: &Node, now: &DryRun) -> Result<NodeState> {
    let stage = node.stage.name;
    let Some(r) = store.read_ref(namespace, &node.id)? else {
        return Ok(NodeState::Compute { reasons: vec!["never run".into()], cached: now.cached });
    };
    if !store.contains(&r.stage, &r.key) {
        return Ok(NodeState::Compute { reasons: vec![format!("its ref names {}/{}, which is gone from the store", r.stage, r.key.short())], cached: now.cached });
    }
    if r.stage == stage && r.key == now.key {
        return Ok(match store.open(stage, &now.key, Verify::Sizes) {
            Ok(a) => NodeState::UpToDate { key: now.key.clone(), created: a.manifest.created.clone() },
            Err(e) => NodeState::Damaged { key: now.key.clone(), error: one_line(&e) },
        });
    }
    let reasons = match read_manifest(store, &r.stage, &r.key) {
        Ok(old) => {
            let mut d = differences(&old, now);
            if d.is_empty() {
                d.push(format!("its ref names {}/{}, not the key computed now ({})", r.stage, r.key.short(), now.key.short()));
            }
            d
        }
        Err(e) => vec![format!("its ref names {}/{}, whose manifest is unreadable: {}", r.stage, r.key.short(), one_line(&e))],
    };
    Ok(NodeState::Compute { reasons, cached: now.cached })
}

fn read_manifest(store: &Store, stage: &str, key: &Key) -> Result<Manifest> {
    let path = store.artifact_dir(stage, key).join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

/// Why the artifact `old` is not what the node would produce now, one reason per difference,
/// each as "what: the ref's → now".
pub fn differences(old: &Manifest, now: &DryRun) -> Vec<String> {
    let mut out = Vec::new();
    if old.version != now.version {
        out.push(format!("stage version: {} → {}", old.version, now.version));
    }
    let mut settings = Vec::new();
    diff_values("", Some(&old.config), Some(&now.config), &mut settings);
    out.extend(settings.into_iter().map(|s| format!("setting {s}")));
    for role in old.inputs.keys().chain(now.inputs.keys()).collect::<std::collections::BTreeSet<_>>() {
        let show = |r: Option<&InputRecord>| r.map(|r| format!("{}/{}", r.stage, r.key.short())).unwrap_or_else(|| "none".into());
        let (a, b) = (old.inputs.get(role), now.inputs.get(role));
        if a != b {
            out.push(format!("input {role}: {} → {}", show(a), show(b)));
        }
    }
    for name in old.external.keys().chain(now.external.keys()).collect::<std::collections::BTreeSet<_>>() {
        if old.external.get(name) != now.external.get(name) {
            out.push(format!("outside file {name} changed"));
        }
    }
    out
}

/// `path: a → b` for every leaf where two JSON values differ ("unset" where one has none);
/// objects are walked by key.
fn diff_values(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for k in x.keys().chain(y.keys()).collect::<std::collections::BTreeSet<_>>() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_values(&p, x.get(k), y.get(k), out);
            }
        }
        _ if a != b => {
            let show = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "unset".into());
            out.push(format!("{path}: {} → {}", show(a), show(b)));
        }
        _ => {}
    }
}

/// Runs a node's stage binary with `--dry-run`, as `make` would run the node.
pub struct BinaryDryRun {
    pub bin: PathBuf,
    pub pipeline: PathBuf,
    pub profile: String,
    pub scale: String,
    pub artifacts: PathBuf,
    pub data_dir: PathBuf,
}

impl BinaryDryRun {
    pub fn run(&self, node: &Node) -> Result<DryRun> {
        let exe = self.bin.join(node.stage.name);
        let out = Command::new(&exe)
            .arg("--pipeline")
            .arg(&self.pipeline)
            .args(["--profile", &self.profile, "--scale", &self.scale, "--node", &node.id, "--dry-run"])
            .arg("--artifacts")
            .arg(&self.artifacts)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .with_context(|| format!("{}: cannot run it (build it with `make build`)", exe.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            anyhow::bail!("{}", line.trim_start_matches("error: "));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("{} --dry-run printed no JSON", exe.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(c: char) -> Key {
        Key::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn input(stage: &str, c: char) -> InputRecord {
        InputRecord { stage: stage.into(), key: key(c) }
    }

    /// Every kind of difference, each named once, nested settings by their dotted path.
    #[test]
    fn differences_name_each_change() {
        let old = Manifest {
            format: 1,
            stage: "train-ct".into(),
            version: 3,
            key: key('a'),
            inputs: BTreeMap::from([("data".into(), input("fetch-data", 'b')), ("init".into(), input("train-ct", 'c'))]),
            external: BTreeMap::from([("weights".into(), "h1".into())]),
            config: json!({"lr": 1e-4, "method": "ect", "slurm": {"time": "1:00:00"}, "same": [1, 2]}),
            files: vec![],
            created: String::new(),
            tool_version: String::new(),
            metrics: json!({}),
        };
        let mut now = DryRun {
            version: 3,
            key: key('a'),
            cached: false,
            config: old.config.clone(),
            inputs: old.inputs.clone(),
            external: old.external.clone(),
        };
        assert!(differences(&old, &now).is_empty());
        now.version = 4;
        now.config = json!({"lr": 2e-4, "method": "ect", "slurm": {"time": "2:00:00"}, "same": [1, 2], "dropout": 0.1});
        now.inputs.insert("data".into(), input("fetch-data", 'd'));
        now.inputs.remove("init");
        now.external.insert("weights".into(), "h2".into());
        assert_eq!(
            differences(&old, &now),
            [
                "stage version: 3 → 4",
                "setting dropout: unset → 0.1",
                "setting lr: 0.0001 → 0.0002",
                "setting slurm.time: \"1:00:00\" → \"2:00:00\"",
                &format!("input data: fetch-data/{} → fetch-data/{}", key('b').short(), key('d').short()),
                &format!("input init: train-ct/{} → none", key('c').short()),
                "outside file weights changed",
            ]
        );
    }
}
