//! Importing images from Parquet files laid out as the Hugging Face Hub stores image datasets:
//! an image column (a struct `{bytes, path}` of PNG/JPEG bytes, or plain binary) and a label
//! column of integers (class names from the `huggingface` schema metadata when it is there) or
//! of strings (class names: the distinct strings, sorted). Every codec pyarrow writes is read
//! (snappy, its default; gzip, LZ4, Brotli, zstd, none).

use super::images::ImageCollector;
use crate::data::hf_features::{image_bytes, is_image_type};
use crate::error::{bad_input, TagContext};
use anyhow::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::Path;

/// Which columns to read; `None` means "detect".
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub image: Option<String>,
    pub label: Option<String>,
}

/// The labels of every file of one import. Integer labels are used as they are; string labels
/// get provisional ids in order of appearance, renumbered by sorted name in [`Labels::finish`]
/// so that the numbering does not depend on which file or row came first.
#[derive(Debug, Default)]
pub struct Labels {
    kind: Option<LabelKind>,
    /// Class names from the first file's `huggingface` metadata (integer labels).
    metadata_names: Vec<String>,
    /// String label → provisional id.
    provisional: BTreeMap<String, i32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LabelKind {
    Integers,
    Strings,
}

impl Labels {
    fn set_kind(&mut self, kind: LabelKind, what: &str) -> Result<()> {
        match self.kind {
            Some(k) if k != kind => Err(bad_input(format!(
                "{what}: labels are {} here but {} in an earlier file; every file must use one kind",
                kind.name(),
                k.name()
            ))),
            _ => {
                self.kind = Some(kind);
                Ok(())
            }
        }
    }

    fn string_id(&mut self, s: &str) -> i32 {
        let next = self.provisional.len() as i32;
        *self.provisional.entry(s.to_string()).or_insert(next)
    }

    /// Renumber string labels by sorted name in every collector of this import; return the
    /// class names (empty when integer labels came without names).
    pub fn finish(self, collectors: &mut [&mut ImageCollector]) -> Vec<String> {
        match self.kind {
            Some(LabelKind::Strings) => {
                // BTreeMap iterates in sorted order: the final id of a name is its rank.
                let mut rank = vec![0i32; self.provisional.len()];
                for (final_id, provisional) in self.provisional.values().enumerate() {
                    rank[*provisional as usize] = final_id as i32;
                }
                for c in collectors.iter_mut() {
                    for l in c.labels.iter_mut() {
                        *l = rank[*l as usize];
                    }
                }
                self.provisional.into_keys().collect()
            }
            _ => self.metadata_names,
        }
    }
}

impl LabelKind {
    fn name(self) -> &'static str {
        match self {
            LabelKind::Integers => "integers",
            LabelKind::Strings => "strings",
        }
    }
}

/// Read one Parquet file's images and labels into `out`, its labels through `labels`.
pub fn import_file(path: &Path, cols: &Columns, out: &mut ImageCollector, labels: &mut Labels) -> Result<()> {
    let file = std::fs::File::open(path).bad_input_ctx(|| format!("{}: cannot open", path.display()))?;
    // parquet-rs panics on some damaged files: its calls run guarded (a panic is a bad-input
    // error naming the file); ours do not.
    let builder = crate::error::guard_decoder(path, || {
        ParquetRecordBatchReaderBuilder::try_new(file).bad_input_ctx(|| format!("{}: not a Parquet file", path.display()))
    })?;
    let schema = builder.schema().clone();
    let columns = || schema.fields().iter().map(|f| format!("{} ({})", f.name(), f.data_type())).collect::<Vec<_>>().join(", ");
    let image_col = match &cols.image {
        Some(c) => c.clone(),
        None => schema.fields().iter().find(|f| is_image_type(f.data_type())).map(|f| f.name().clone()).ok_or_else(|| {
            bad_input(format!(
                "{}: no image column (binary, or a struct with a `bytes` field) among {}; set image_column",
                path.display(),
                columns()
            ))
        })?,
    };
    let label_col = match &cols.label {
        Some(c) => c.clone(),
        None => ["label", "labels", "fine_label", "class"]
            .iter()
            .find(|n| schema.field_with_name(n).is_ok())
            .map(|s| s.to_string())
            .ok_or_else(|| bad_input(format!("{}: no label column (label, labels, fine_label, class) among {}; set label_column", path.display(), columns())))?,
    };
    for name in [&image_col, &label_col] {
        if schema.field_with_name(name).is_err() {
            return Err(bad_input(format!("{}: missing column `{name}` (columns: {})", path.display(), columns())));
        }
    }
    let image_type = schema.field_with_name(&image_col).expect("checked").data_type().clone();
    if !is_image_type(&image_type) {
        return Err(bad_input(format!(
            "{}: column `{image_col}` holds {image_type}, expected encoded images (binary, or a struct with a `bytes` field)",
            path.display()
        )));
    }
    if labels.metadata_names.is_empty() {
        labels.metadata_names = hf_class_names(builder.metadata().file_metadata().key_value_metadata(), &label_col);
    }
    let mut row = 0usize;
    let mut reader = crate::error::guard_decoder(path, || builder.build().bad_input_ctx(|| format!("{}: cannot read its row groups", path.display())))?;
    while let Some(rb) = crate::error::guard_decoder(path, || Ok(reader.next()))? {
        let rb = rb.bad_input_ctx(|| format!("{}: unreadable row group", path.display()))?;
        let batch_labels = label_values(&rb, &label_col, labels).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        let col = rb.column_by_name(&image_col).expect("checked");
        for (i, label) in batch_labels.into_iter().enumerate() {
            let what = format!("{} row {}", path.display(), row + i);
            let bytes = image_bytes(col.as_ref(), i).map_err(|e| bad_input(format!("{what}: {e}")))?;
            out.push(bytes, label, &what)?;
        }
        row += rb.num_rows();
    }
    Ok(())
}

/// The labels of one record batch as ids: integers as they are, strings through `labels`.
fn label_values(rb: &RecordBatch, name: &str, labels: &mut Labels) -> std::result::Result<Vec<i32>, String> {
    let c = rb.column_by_name(name).ok_or_else(|| format!("missing column `{name}`"))?;
    if c.null_count() > 0 {
        return Err(format!("column `{name}` has missing labels"));
    }
    if let DataType::Dictionary(_, values) = c.data_type() {
        // pandas writes categoricals as dictionaries (pandas 3: of large strings).
        let d = c.as_any_dictionary();
        let names = strings(d.values().as_ref()).ok_or_else(|| format!("column `{name}` must hold integers or strings, found a dictionary of {values}"))?;
        labels.set_kind(LabelKind::Strings, &format!("column `{name}`")).map_err(|e| e.to_string())?;
        return Ok(d.normalized_keys().into_iter().map(|k| labels.string_id(names[k])).collect());
    }
    if let Some(strings) = strings(c.as_ref()) {
        labels.set_kind(LabelKind::Strings, &format!("column `{name}`")).map_err(|e| e.to_string())?;
        return Ok(strings.into_iter().map(|s| labels.string_id(s)).collect());
    }
    let ints: Vec<i64> = {
        macro_rules! ints {
            ($($t:ty),*) => {
                'found: {
                    $(if let Some(a) = c.as_primitive_opt::<$t>() { break 'found a.values().iter().map(|&v| v as i64).collect(); })*
                    return Err(format!("column `{name}` must hold integers or strings, found {}", c.data_type()));
                }
            };
        }
        ints!(Int64Type, Int32Type, Int16Type, Int8Type, UInt64Type, UInt32Type, UInt16Type, UInt8Type)
    };
    labels.set_kind(LabelKind::Integers, &format!("column `{name}`")).map_err(|e| e.to_string())?;
    ints.into_iter()
        .map(|v| i32::try_from(v).ok().filter(|v| *v >= 0).ok_or_else(|| format!("column `{name}`: label {v} is not a class index (expected 0 ≤ label < 2³¹)")))
        .collect()
}

/// The values of a string column (of any of Arrow's three string layouts).
fn strings(c: &dyn Array) -> Option<Vec<&str>> {
    Some(match c.data_type() {
        DataType::Utf8 => c.as_string::<i32>().iter().map(Option::unwrap_or_default).collect(),
        DataType::LargeUtf8 => c.as_string::<i64>().iter().map(Option::unwrap_or_default).collect(),
        DataType::Utf8View => c.as_string_view().iter().map(Option::unwrap_or_default).collect(),
        _ => return None,
    })
}

/// Class names of a `ClassLabel` feature, from the `huggingface` metadata the Hub writes.
fn hf_class_names(kv: Option<&Vec<parquet::file::metadata::KeyValue>>, label_col: &str) -> Vec<String> {
    let Some(kv) = kv else { return Vec::new() };
    let Some(text) = kv.iter().find(|e| e.key == crate::data::hf_features::META_KEY).and_then(|e| e.value.as_deref()) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return Vec::new() };
    v.pointer(&format!("/info/features/{label_col}/names"))
        .and_then(|n| n.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
