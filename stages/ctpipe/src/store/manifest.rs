//! `manifest.json`: what an artifact is, where it came from, and what its files must hash to.

use super::key::Key;
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the manifest format itself.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The stage that produced the artifact (`fetch-data`, `train-ct`, …).
    pub stage: String,
    /// The stage's version: bumped when the same inputs would give different output.
    pub version: u32,
    /// The artifact key; equals the directory name.
    pub key: Key,
    /// Input artifacts by role (`data`, `init`, …).
    pub inputs: BTreeMap<String, InputRecord>,
    /// Fingerprints (blake3) of inputs from outside the store: source files, a Hub commit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external: BTreeMap<String, String>,
    /// The effective config the key was computed from.
    pub config: Value,
    /// Every data file of the artifact, sorted by path.
    pub files: Vec<FileRecord>,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// ctpipe version that wrote the artifact.
    pub tool_version: String,
    /// A summary of results (dataset statistics, final loss, FID…).
    pub metrics: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub stage: String,
    pub key: Key,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Path relative to the artifact directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// blake3 of the file's bytes, hex.
    pub blake3: String,
}

impl Manifest {
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        Key::parse(&s).map_err(serde::de::Error::custom)
    }
}
