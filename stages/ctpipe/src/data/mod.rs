//! Datasets: the canonical schema, its Parquet files, statistics, and the import sources.

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
    std::fs::write(dir.join("dataset.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(json!({ "dataset": dataset.info.name, "kind": dataset.info.kind, "splits": stats }))
}

/// Read one split of a dataset artifact directory.
pub fn read_dataset_split(dir: &Path, split: &str) -> Result<(DatasetInfo, schema::Split)> {
    io::read_split(&dir.join(format!("{split}.parquet")))
}
