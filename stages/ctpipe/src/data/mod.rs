//! Datasets: the canonical schema, its Parquet files, statistics, and the import sources.

pub mod hf_features;
pub mod io;
pub mod schema;
pub mod sources;
pub mod stats;

use anyhow::Result;
use schema::{Dataset, DatasetInfo, SPLITS};
use serde_json::{json, Value};
use std::path::Path;

/// Write a dataset artifact's files into `dir`: `train.parquet`, `test.parquet`, and
/// `dataset.json` (description and statistics). Returns the statistics for the manifest.
pub fn write_dataset(dir: &Path, dataset: &Dataset) -> Result<Value> {
    let mut stats = serde_json::Map::new();
    for (name, split) in SPLITS.iter().zip([&dataset.train, &dataset.test]) {
        io::write_split(&dir.join(format!("{name}.parquet")), &dataset.info, name, split)?;
        let mut acc = stats::StatsAccumulator::new(&dataset.info);
        acc.add(split);
        stats.insert(name.to_string(), serde_json::to_value(acc.finish(&dataset.info))?);
    }
    let doc = json!({ "info": dataset.info, "stats": stats });
    crate::fsx::write(&dir.join("dataset.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(json!({ "dataset": dataset.info.name, "kind": dataset.info.kind, "splits": stats }))
}

/// Publish `make()`'s dataset as a `fetch-data` artifact keyed by `config` (the key a
/// `fetch-data` run with that config would have), unless it exists (then `make` is not
/// called): for tests and benchmarks that need a dataset without running the stage.
pub fn publish_as_fetched(store: &crate::store::Store, config: &Value, make: impl FnOnce() -> Dataset) -> Result<crate::store::Key> {
    use std::collections::BTreeMap;
    let key = crate::store::artifact_key("fetch-data", 1, config, &BTreeMap::new(), &BTreeMap::new())?;
    if store.contains("fetch-data", &key) {
        return Ok(key);
    }
    let staging = store.begin("fetch-data", &key)?;
    let metrics = write_dataset(staging.path(), &make())?;
    let draft = crate::store::Draft {
        stage: "fetch-data".into(),
        version: 1,
        key: key.clone(),
        inputs: BTreeMap::new(),
        external: BTreeMap::new(),
        config: config.clone(),
        metrics,
    };
    staging.commit(draft)?;
    Ok(key)
}

/// Read one split of a dataset artifact directory.
pub fn read_dataset_split(dir: &Path, split: &str) -> Result<(DatasetInfo, schema::Split)> {
    io::read_split(&dir.join(format!("{split}.parquet")))
}
