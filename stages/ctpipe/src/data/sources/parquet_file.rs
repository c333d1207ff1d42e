//! Importing images from Parquet files laid out as the Hugging Face Hub stores image datasets:
//! an image column (a struct `{bytes, path}` of PNG/JPEG bytes, or plain binary) and an integer
//! label column. Class names come from the `huggingface` schema metadata when it is there.

use super::images::ImageCollector;
use crate::error::{bad_input, TagContext};
use anyhow::Result;
use arrow_array::{Array, BinaryArray, LargeBinaryArray, RecordBatch, StructArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Which columns to read; `None` means "detect".
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub image: Option<String>,
    pub label: Option<String>,
}

/// Read one Parquet file's images and labels into `out`; returns the class names found in
/// its metadata (empty if none).
pub fn import_file(path: &Path, cols: &Columns, out: &mut ImageCollector) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).bad_input_ctx(|| format!("{}: cannot open", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .bad_input_ctx(|| format!("{}: not a Parquet file", path.display()))?;
    let schema = builder.schema().clone();
    let image_col = match &cols.image {
        Some(c) => c.clone(),
        None => schema
            .fields()
            .iter()
            .find(|f| is_image_type(f.data_type()))
            .map(|f| f.name().clone())
            .ok_or_else(|| bad_input(format!("{}: no image column (a binary or {{bytes, path}} struct column); set image_column", path.display())))?,
    };
    let label_col = match &cols.label {
        Some(c) => c.clone(),
        None => ["label", "labels", "fine_label", "class"]
            .iter()
            .find(|n| schema.field_with_name(n).is_ok())
            .map(|s| s.to_string())
            .ok_or_else(|| bad_input(format!("{}: no label column (label, labels, fine_label, class); set label_column", path.display())))?,
    };
    for name in [&image_col, &label_col] {
        if schema.field_with_name(name).is_err() {
            let have = schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
            return Err(bad_input(format!("{}: missing column `{name}` (columns: {have})", path.display())));
        }
    }
    let class_names = hf_class_names(builder.metadata().file_metadata().key_value_metadata(), &label_col);
    let mut row = 0usize;
    for rb in builder.build()? {
        let rb = rb.bad_input_ctx(|| format!("{}: unreadable row group", path.display()))?;
        let labels = label_values(&rb, &label_col).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
        let col = rb.column_by_name(&image_col).expect("checked");
        for (i, label) in labels.into_iter().enumerate() {
            let what = format!("{} row {}", path.display(), row + i);
            let bytes = image_bytes(col.as_ref(), i).ok_or_else(|| bad_input(format!("{what}: empty image cell")))?;
            let label = i32::try_from(label).map_err(|_| bad_input(format!("{what}: label {label} out of range")))?;
            if label < 0 {
                return Err(bad_input(format!("{what}: negative label {label}")));
            }
            out.push(bytes, label, &what)?;
        }
        row += rb.num_rows();
    }
    Ok(class_names)
}

fn is_image_type(t: &DataType) -> bool {
    match t {
        DataType::Binary | DataType::LargeBinary => true,
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes"),
        _ => false,
    }
}

fn image_bytes(col: &dyn Array, i: usize) -> Option<&[u8]> {
    if col.is_null(i) {
        return None;
    }
    if let Some(b) = col.as_any().downcast_ref::<BinaryArray>() {
        return Some(b.value(i));
    }
    if let Some(b) = col.as_any().downcast_ref::<LargeBinaryArray>() {
        return Some(b.value(i));
    }
    let s = col.as_any().downcast_ref::<StructArray>()?;
    image_bytes(s.column_by_name("bytes")?.as_ref(), i)
}

fn label_values(rb: &RecordBatch, name: &str) -> std::result::Result<Vec<i64>, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let c = rb.column_by_name(name).ok_or_else(|| format!("missing column `{name}`"))?;
    if c.null_count() > 0 {
        return Err(format!("column `{name}` has missing labels"));
    }
    macro_rules! ints {
        ($($t:ty),*) => {
            $(if let Some(a) = c.as_primitive_opt::<$t>() { return Ok(a.values().iter().map(|&v| v as i64).collect()); })*
        };
    }
    ints!(Int64Type, Int32Type, Int16Type, Int8Type, UInt64Type, UInt32Type, UInt16Type, UInt8Type);
    Err(format!("column `{name}` must hold integers, found {}", c.data_type()))
}

/// Class names of a `ClassLabel` feature, from the `huggingface` metadata the Hub writes.
fn hf_class_names(kv: Option<&Vec<parquet::file::metadata::KeyValue>>, label_col: &str) -> Vec<String> {
    let Some(kv) = kv else { return Vec::new() };
    let Some(text) = kv.iter().find(|e| e.key == "huggingface").and_then(|e| e.value.as_deref()) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return Vec::new() };
    v.pointer(&format!("/info/features/{label_col}/names"))
        .and_then(|n| n.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}
