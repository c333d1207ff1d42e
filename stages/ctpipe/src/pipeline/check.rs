//! `plan check`: every node of a profile checked before anything runs, so that a profile which
//! cannot run fails in milliseconds, naming the node and the reason, instead of hours into a
//! cluster run.
//!
//! Per node: its settings as its stage's typed config (unknown fields, types, ranges, method
//! combinations) at the scale being run, and the outside files it names (imported weights).
//! Between nodes: an `init` or a `teacher` fits its student (same network preset and σ_data;
//! a teacher is an EDM denoiser), and image evaluations have reference statistics. Input
//! roles and their stages are checked when the pipeline file is loaded (`mod.rs`).

use super::{Node, Pipeline, Profile};
use crate::error::usage;
use crate::stage::scale::Scale;
use crate::stage::{self, Stage};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the check found worth saying that is not an error.
#[derive(Debug, Default)]
pub struct Report {
    pub notes: Vec<String>,
}

/// Check every node of `profile` at `scale`; the first problem is the error. The outside files
/// a node names are checked for the nodes in `goals` and what they read (every node when
/// `goals` is empty): a node that is not going to run need not have its weights yet.
pub fn check_profile(pipeline: &Pipeline, profile: &Profile, scale: Scale, goals: &[String]) -> Result<Report> {
    let origin = |node: &Node| format!("{} [{}.{}]", pipeline.path.display(), profile.name, node.id);
    let needed = upstream(profile, goals)?;
    let mut configs: BTreeMap<&str, Value> = BTreeMap::new();
    for node in profile.topo_order() {
        let files = needed.as_ref().is_none_or(|n| n.contains(node.id.as_str()));
        configs.insert(&node.id, stage_config(node, &origin(node), scale, files)?);
    }
    let mut report = Report::default();
    for node in profile.topo_order() {
        let cfg = &configs[node.id.as_str()];
        let input = |role: &str| node.inputs.get(role).and_then(|ids| ids.first()).map(String::as_str);
        match node.stage.name {
            "train-ct" | "distill" => {
                let role = if node.stage.name == "train-ct" { "init" } else { "teacher" };
                if let Some(from) = input(role) {
                    let from_node = profile.node(from)?;
                    fits(node, cfg, role, from_node, &configs[from], &mut report).with_context(|| origin(node))?;
                }
            }
            "evaluate-fid" => {
                let data = input("data").expect("a required role");
                let images = configs[data]["source"].as_str() != Some("toy2d");
                if images && input("reference").is_none() {
                    return Err(usage(format!(
                        "{}: `{data}` holds images, whose evaluation needs reference statistics: add reference = \"<a precompute-encoder node>\"",
                        origin(node)
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// The nodes `goals` read, directly or not, and the goals themselves; `None` for all.
fn upstream<'a>(profile: &'a Profile, goals: &[String]) -> Result<Option<BTreeSet<&'a str>>> {
    if goals.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeSet::new();
    let mut todo: Vec<&Node> = goals.iter().map(|g| profile.node(g)).collect::<Result<_>>()?;
    while let Some(node) = todo.pop() {
        if out.insert(node.id.as_str()) {
            todo.extend(node.dependencies().into_iter().map(|d| &profile.nodes[d]));
        }
    }
    Ok(Some(out))
}

/// The node's settings as its stage's config, as JSON (checked, cut to `scale`), and with
/// `files` its outside files.
fn stage_config(node: &Node, origin: &str, scale: Scale, files: bool) -> Result<Value> {
    match node.stage.name {
        "fetch-data" => node_config::<stage::FetchData>(node, origin, scale, files),
        "train-ct" => node_config::<stage::TrainCt>(node, origin, scale, files),
        "distill" => node_config::<stage::Distill>(node, origin, scale, files),
        "precompute-encoder" => node_config::<stage::PrecomputeEncoder>(node, origin, scale, files),
        "evaluate-fid" => node_config::<stage::EvaluateFid>(node, origin, scale, files),
        other => Err(usage(format!("{origin}: stage {other} has no check (pipeline/check.rs)"))),
    }
}

/// One stage's typed config of a node.
fn node_config<S: Stage>(node: &Node, origin: &str, scale: Scale, files: bool) -> Result<Value> {
    let config = stage::typed_config::<S>(node.settings.clone(), origin, true, scale)?;
    if files {
        S::preflight(&config).with_context(|| origin.to_string())?;
    }
    Ok(serde_json::to_value(&config)?)
}

/// An `init` or `teacher` node fits the student: the same network preset (dropout may differ:
/// it has no parameters) and σ_data; a teacher is an EDM denoiser. Both read the same dataset,
/// or the shapes are compared when the student runs.
fn fits(student: &Node, cfg: &Value, role: &str, from: &Node, from_cfg: &Value, report: &mut Report) -> Result<()> {
    if role == "teacher" && from_cfg["method"] != "edm" {
        return Err(usage(format!("teacher `{}` trains method {}; distillation needs an EDM denoiser (method = \"edm\")", from.id, from_cfg["method"])));
    }
    for field in ["network", "sigma_data"] {
        if cfg[field] != from_cfg[field] {
            return Err(usage(format!("{role} `{}` has {field} = {}, this node {}: the {role} must be the same network", from.id, from_cfg[field], cfg[field])));
        }
    }
    let data = |n: &Node| n.inputs.get("data").and_then(|v| v.first()).cloned();
    if data(student) != data(from) {
        report.notes.push(format!("{}: reads other data than its {role} `{}`; their shapes are compared when it runs", student.id, from.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
