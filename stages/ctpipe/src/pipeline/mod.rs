//! `pipeline.toml`: profiles, their nodes, and the DAG between them.
//!
//! ```toml
//! [default]                          # a profile
//! about = "what it is for"
//!
//! [default.fetch-data.toy]           # node `fetch-data.toy`: stage fetch-data, name toy
//! source = "toy2d"                   # settings of the stage's config
//!
//! [default.train-ct.ect]             # node `train-ct.ect`
//! data = "fetch-data.toy"            # an input role (see `stages.rs`): a node id
//! method = "ect"
//! ```
//!
//! A node's id is `<stage>.<name>`; its table holds its stage's config fields plus its input
//! roles. Everything here is checked when the file is loaded: unknown stages, bad names,
//! dangling or mistyped inputs, cycles — each a one-line error naming file and node.

pub mod check;
pub mod plan;
pub mod slurm;
pub mod stages;
pub mod status;

use crate::error::{usage, TagContext};
use anyhow::Result;
use stages::{Arity, StageSpec, STAGES};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A loaded, checked pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub about: String,
    /// `#SBATCH` options for every node (`[<profile>.slurm]`).
    pub slurm: toml::Table,
    /// Nodes by id.
    pub nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// `<stage>.<name>`
    pub id: String,
    pub stage: &'static StageSpec,
    /// The node's table without its input roles: the stage's config settings.
    pub settings: toml::Table,
    /// Input role → node ids, in the order written.
    pub inputs: BTreeMap<String, Vec<String>>,
    /// `#SBATCH` options of this node (its `slurm` table); not a setting, not in any key.
    pub slurm: toml::Table,
}

impl Node {
    /// All node ids this node reads, de-duplicated, sorted.
    pub fn dependencies(&self) -> BTreeSet<&str> {
        self.inputs.values().flatten().map(String::as_str).collect()
    }

    /// The settings value of `field` as a string (for grouping), if it is one.
    pub fn setting_str(&self, field: &str) -> Option<&str> {
        self.settings.get(field).and_then(|v| v.as_str())
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Pipeline {
    /// Read and check a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).usage_ctx(|| format!("{}: cannot read pipeline file", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Pipeline> {
        Self::parse_with(text, path, STAGES)
    }

    /// Parse against a given stage registry (tests use a made-up one).
    pub fn parse_with(text: &str, path: &Path, registry: &'static [StageSpec]) -> Result<Pipeline> {
        let file = path.display().to_string();
        let doc: toml::Table = toml::from_str(text).map_err(|e| {
            usage(format!("{file}: {}", e.to_string().trim().replace('\n', " ")))
        })?;
        let mut profiles = BTreeMap::new();
        for (pname, pval) in doc {
            let ptable = pval
                .as_table()
                .ok_or_else(|| usage(format!("{file}: `{pname}` must be a profile table ([{pname}])")))?;
            if !valid_name(&pname) {
                return Err(usage(format!("{file}: profile name `{pname}` must use letters, digits, '-' or '_'")));
            }
            let profile = parse_profile(&file, &pname, ptable, registry)?;
            profiles.insert(pname, profile);
        }
        Ok(Pipeline { path: path.to_path_buf(), profiles })
    }

    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            let known = self.profiles.keys().cloned().collect::<Vec<_>>().join(", ");
            let hint = crate::error::did_you_mean(name, self.profiles.keys().map(String::as_str));
            usage(format!("{}: no profile `{name}`{hint} (profiles: {known})", self.path.display()))
        })
    }
}

impl Profile {
    pub fn node(&self, id: &str) -> Result<&Node> {
        self.nodes.get(id).ok_or_else(|| {
            let known = self.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
            let hint = crate::error::did_you_mean(id, self.nodes.keys().map(String::as_str));
            usage(format!("profile `{}` has no node `{id}`{hint} (nodes: {known})", self.name))
        })
    }

    /// Nodes in an order where every node comes after its inputs (ties by id).
    pub fn topo_order(&self) -> Vec<&Node> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < self.nodes.len() {
            let before = out.len();
            for n in self.nodes.values() {
                if !done.contains(n.id.as_str()) && n.dependencies().iter().all(|d| done.contains(d)) {
                    done.insert(&n.id);
                    out.push(n);
                }
            }
            assert!(out.len() > before, "cycles are rejected at load");
        }
        out
    }

    /// The node and everything downstream of it.
    pub fn downstream(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([id.to_string()]);
        loop {
            let more: Vec<String> = self
                .nodes
                .values()
                .filter(|n| !out.contains(&n.id) && n.dependencies().iter().any(|d| out.contains(*d)))
                .map(|n| n.id.clone())
                .collect();
            if more.is_empty() {
                return out;
            }
            out.extend(more);
        }
    }
}

fn parse_profile(file: &str, pname: &str, ptable: &toml::Table, registry: &'static [StageSpec]) -> Result<Profile> {
    let mut about = String::new();
    let mut slurm = toml::Table::new();
    let mut nodes = BTreeMap::new();
    for (key, val) in ptable {
        if key == "slurm" {
            slurm = val.as_table().cloned().ok_or_else(|| usage(format!("{file}: [{pname}.slurm] must be a table of #SBATCH options")))?;
            continue;
        }
        if key == "about" {
            about = val
                .as_str()
                .ok_or_else(|| usage(format!("{file}: [{pname}] about must be a string")))?
                .to_string();
            continue;
        }
        let spec = registry.iter().find(|s| s.name == key).ok_or_else(|| {
            let names = registry.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
            usage(format!("{file}: [{pname}] unknown key `{key}` (expected `about` or a stage: {names})"))
        })?;
        let per_stage = val
            .as_table()
            .ok_or_else(|| usage(format!("{file}: [{pname}.{key}] must hold node tables ([{pname}.{key}.<name>])")))?;
        for (name, node_val) in per_stage {
            let where_ = format!("{file}: [{pname}.{key}.{name}]");
            let table = node_val.as_table().ok_or_else(|| {
                usage(format!("{where_}: expected a node table; settings go inside [{pname}.{key}.<name>]"))
            })?;
            if !valid_name(name) {
                return Err(usage(format!("{where_}: node name must use letters, digits, '-' or '_'")));
            }
            let node = parse_node(&where_, spec, name, table)?;
            nodes.insert(node.id.clone(), node);
        }
    }
    let profile = Profile { name: pname.to_string(), about, slurm, nodes };
    check_edges(file, &profile)?;
    Ok(profile)
}

fn parse_node(where_: &str, spec: &'static StageSpec, name: &str, table: &toml::Table) -> Result<Node> {
    let mut settings = table.clone();
    let slurm = match settings.remove("slurm") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(usage(format!("{where_}: `slurm` must be a table of #SBATCH options"))),
    };
    let mut inputs = BTreeMap::new();
    for role in spec.inputs {
        let Some(v) = settings.remove(role.name) else {
            if role.arity == Arity::One {
                return Err(usage(format!("{where_}: missing input `{}` (a node id)", role.name)));
            }
            continue;
        };
        let ids: Vec<String> = match (&v, role.arity) {
            (toml::Value::String(s), _) => vec![s.clone()],
            (toml::Value::Array(items), Arity::Many) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| usage(format!("{where_}: input `{}` must be a list of node ids", role.name)))?,
            _ => return Err(usage(format!("{where_}: input `{}` must be a node id string", role.name))),
        };
        inputs.insert(role.name.to_string(), ids);
    }
    Ok(Node { id: format!("{}.{name}", spec.name), stage: spec, settings, inputs, slurm })
}

fn check_edges(file: &str, profile: &Profile) -> Result<()> {
    for node in profile.nodes.values() {
        for (role_name, ids) in &node.inputs {
            let role = node.stage.inputs.iter().find(|r| r.name == role_name).expect("parsed from the spec");
            for id in ids {
                let target = profile.nodes.get(id).ok_or_else(|| {
                    usage(format!("{file}: [{}.{}] input `{role_name}` names `{id}`, which is not a node of this profile", profile.name, node.id))
                })?;
                if !role.from.contains(&target.stage.name) {
                    return Err(usage(format!(
                        "{file}: [{}.{}] input `{role_name}` must come from {}; `{id}` is a {} node",
                        profile.name,
                        node.id,
                        role.from.join(" or "),
                        target.stage.name
                    )));
                }
            }
        }
    }
    // A cycle: some node never becomes ready.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = profile
            .nodes
            .values()
            .filter(|n| !done.contains(n.id.as_str()) && n.dependencies().iter().all(|d| done.contains(d)))
            .map(|n| n.id.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        done.extend(ready);
    }
    if done.len() < profile.nodes.len() {
        let stuck: Vec<&str> = profile.nodes.keys().map(String::as_str).filter(|id| !done.contains(id)).collect();
        return Err(usage(format!("{file}: [{}] inputs form a cycle among {}", profile.name, stuck.join(", "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
