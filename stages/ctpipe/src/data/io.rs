//! Reading and writing dataset splits as Parquet.
//!
//! Columns: `image` (Hugging Face's Image struct: PNG `bytes`, null `path`; [`hf_features`]) or
//! `x` (FixedSizeList<Float32, dim>), and `label` (Int64). zstd level 3; dictionary encoding
//! and statistics are off for the sample column (encoded images gain nothing from them); row
//! groups of about 4 MiB of pixels so a reader can stream a split one group at a time. The
//! key-value metadata `ctpipe.dataset` holds [`DatasetInfo`] as JSON, `ctpipe.split` the split
//! name and `huggingface` the features `datasets` reads (the label a `ClassLabel`).

use super::hf_features;
use super::schema::{DatasetInfo, SampleKind, Samples, Split};
use crate::error::{bad_input, TagContext};
use anyhow::{Context, Result};
use arrow_array::{Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const META_DATASET: &str = "ctpipe.dataset";
const META_SPLIT: &str = "ctpipe.split";
const ROW_GROUP_BYTES: usize = 4 << 20;

/// Every field nullable, labels Int64 and the points' items named `item`: `datasets` applies the
/// features of the `huggingface` metadata only to fields exactly equal to the Arrow fields of
/// those features (`Features.from_arrow_schema`), and those are so. No value is ever null.
fn arrow_schema(kind: SampleKind) -> Arc<Schema> {
    let sample = match kind {
        SampleKind::Images { .. } => Field::new("image", hf_features::image_type(), true),
        SampleKind::Points { dim } => Field::new("x", DataType::FixedSizeList(point_item(), dim as i32), true),
    };
    Arc::new(Schema::new(vec![sample, Field::new("label", DataType::Int64, true)]))
}

fn point_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, true))
}

fn sample_column(kind: SampleKind) -> &'static str {
    match kind {
        SampleKind::Images { .. } => "image",
        SampleKind::Points { .. } => "x",
    }
}

/// Rows per row group: about 4 MiB of samples, at least 256 rows.
pub fn rows_per_group(kind: SampleKind) -> usize {
    let row_bytes = kind.sample_len() * if matches!(kind, SampleKind::Points { .. }) { 4 } else { 1 };
    (ROW_GROUP_BYTES / row_bytes.max(1)).clamp(256, 1 << 16)
}

/// Writes one split, batch by batch.
pub struct SplitWriter {
    path: PathBuf,
    info: DatasetInfo,
    writer: ArrowWriter<File>,
    schema: Arc<Schema>,
    rows: usize,
}

impl SplitWriter {
    pub fn create(path: &Path, info: &DatasetInfo, split: &str) -> Result<SplitWriter> {
        let meta = [
            (META_DATASET.to_string(), serde_json::to_string(info)?),
            (META_SPLIT.to_string(), split.to_string()),
            (hf_features::META_KEY.to_string(), hf_features::metadata(info)),
        ];
        // In the file's key-value metadata (what parquet-rs and `pq.read_metadata` show) and in
        // the Arrow schema's (what `pq.read_schema`, `pq.read_table(...).schema` and pandas'
        // users see: pyarrow takes a file's schema metadata from its embedded Arrow schema).
        let schema = Arc::new(arrow_schema(info.kind).as_ref().clone().with_metadata(meta.iter().cloned().collect::<std::collections::HashMap<_, _>>()));
        let col = ColumnPath::from(sample_column(info.kind));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(rows_per_group(info.kind)))
            .set_column_dictionary_enabled(col.clone(), false)
            .set_column_statistics_enabled(col, EnabledStatistics::None)
            .set_created_by(format!("ctpipe {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(meta.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()))
            .build();
        let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).with_context(|| format!("{}: write failed", path.display()))?;
        Ok(SplitWriter { path: path.to_path_buf(), info: info.clone(), writer, schema, rows: 0 })
    }

    /// Append rows (samples must match the dataset kind).
    pub fn write(&mut self, batch: &Split) -> Result<()> {
        batch.check(&self.info, &self.path.display().to_string())?;
        if batch.rows() == 0 {
            return Ok(());
        }
        let labels: ArrayRef = Arc::new(Int64Array::from_iter_values(batch.labels.iter().map(|&l| l as i64)));
        let samples: ArrayRef = match (&batch.samples, self.info.kind) {
            (Samples::Images(px), SampleKind::Images { height, width, channels }) => {
                let cells = px.par_chunks_exact(self.info.kind.sample_len()).map(|image| hf_features::encode(image, height, width, channels)).collect::<Result<Vec<_>>>()?;
                let DataType::Struct(fields) = hf_features::image_type() else { unreachable!("a struct") };
                let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values(&cells));
                let paths: ArrayRef = Arc::new(StringArray::new_null(cells.len()));
                Arc::new(StructArray::try_new(fields, vec![bytes, paths], None)?)
            }
            (Samples::Points(xs), SampleKind::Points { dim }) => Arc::new(FixedSizeListArray::try_new(
                point_item(),
                dim as i32,
                Arc::new(Float32Array::from(xs.clone())),
                None,
            )?),
            _ => unreachable!("checked above"),
        };
        let rb = RecordBatch::try_new(self.schema.clone(), vec![samples, labels])?;
        self.writer.write(&rb).with_context(|| format!("{}: write failed", self.path.display()))?;
        self.rows += batch.rows();
        Ok(())
    }

    /// Close the file; returns the number of rows written.
    pub fn finish(self) -> Result<usize> {
        self.writer.close().with_context(|| format!("{}: cannot finish Parquet file", self.path.display()))?;
        Ok(self.rows)
    }
}

/// Write a whole split in one call.
pub fn write_split(path: &Path, info: &DatasetInfo, split_name: &str, split: &Split) -> Result<usize> {
    let mut w = SplitWriter::create(path, info, split_name)?;
    let per_group = rows_per_group(info.kind);
    let len = info.kind.sample_len();
    for start in (0..split.rows()).step_by(per_group) {
        let end = (start + per_group).min(split.rows());
        let samples = match &split.samples {
            Samples::Images(px) => Samples::Images(px[start * len..end * len].to_vec()),
            Samples::Points(xs) => Samples::Points(xs[start * len..end * len].to_vec()),
        };
        w.write(&Split { samples, labels: split.labels[start..end].to_vec() })?;
    }
    w.finish()
}

/// The Parquet reader of a file. parquet-rs panics on some damaged files (`fuzz_tests.rs`), so
/// its calls run under `guard_decoder` (a panic there is a bad-input error naming the file);
/// ours do not, so that a bug of ours still shows as one.
fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).bad_input_ctx(|| format!("{}: cannot open", path.display()))?;
    crate::error::guard_decoder(path, || ParquetRecordBatchReaderBuilder::try_new(file).bad_input_ctx(|| format!("{}: not a Parquet file", path.display())))
}

/// The dataset description stored in a split file.
pub fn read_info(path: &Path) -> Result<DatasetInfo> {
    let builder = open_parquet(path)?;
    info_from_metadata(path, builder.metadata().file_metadata().key_value_metadata())
}

fn info_from_metadata(path: &Path, kv: Option<&Vec<KeyValue>>) -> Result<DatasetInfo> {
    let text = kv
        .and_then(|kv| kv.iter().find(|e| e.key == META_DATASET))
        .and_then(|e| e.value.clone())
        .ok_or_else(|| bad_input(format!("{}: no `{META_DATASET}` metadata (not a ctpipe dataset split)", path.display())))?;
    let info: DatasetInfo = serde_json::from_str(&text).bad_input_ctx(|| format!("{}: bad `{META_DATASET}` metadata", path.display()))?;
    info.check(&format!("{}: `{META_DATASET}` metadata", path.display())).map_err(|e| bad_input(e.to_string()))?;
    Ok(info)
}

/// Read a whole split into memory, checking it against its own description.
pub fn read_split(path: &Path) -> Result<(DatasetInfo, Split)> {
    let builder = open_parquet(path)?;
    let info = info_from_metadata(path, builder.metadata().file_metadata().key_value_metadata())?;
    // The row count of the footer sizes the buffers only, and only up to 1 GiB of samples: a
    // corrupt footer must not allocate (or overflow) before the rows themselves are checked.
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let len = info.kind.sample_len();
    let reserve = rows.min((1usize << 30) / len.max(1));
    let mut reader = crate::error::guard_decoder(path, || Ok(builder.with_batch_size(rows_per_group(info.kind)).build()?))?;
    let mut labels = Vec::with_capacity(reserve);
    let mut samples = match info.kind {
        SampleKind::Images { .. } => Samples::Images(Vec::with_capacity(reserve * len)),
        SampleKind::Points { .. } => Samples::Points(Vec::with_capacity(reserve * len)),
    };
    let where_ = |what: &str| bad_input(format!("{}: {what}", path.display()));
    while let Some(rb) = crate::error::guard_decoder(path, || Ok(reader.next()))? {
        let rb = rb.bad_input_ctx(|| format!("{}: unreadable row group", path.display()))?;
        let first_row = labels.len();
        let at = |row: usize| format!("{}: row {}", path.display(), first_row + row);
        let first_null = |c: &dyn Array, rows: std::ops::Range<usize>| (c.null_count() > 0).then(|| rows.clone().find(|&i| c.is_null(i))).flatten();
        let label_col = rb
            .column_by_name("label")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| where_("missing Int64 column `label`"))?;
        if let Some(row) = first_null(label_col, 0..label_col.len()) {
            return Err(bad_input(format!("{}: no label", at(row))));
        }
        for (row, &l) in label_col.values().iter().enumerate() {
            // Within i32 here; Split::check below names a label outside the class names.
            labels.push(i32::try_from(l).map_err(|_| bad_input(format!("{}: label {l} outside the class names", at(row))))?);
        }
        match &mut samples {
            Samples::Images(px) => {
                let SampleKind::Images { height, width, channels } = info.kind else { unreachable!("images") };
                let cells = rb
                    .column_by_name("image")
                    .filter(|c| hf_features::is_image_type(c.data_type()))
                    .ok_or_else(|| where_("missing column `image` of {bytes: binary, path: string}"))?;
                // Decoded in parallel, each row into its own place (the order is the file's);
                // the error reported is the first row's, whatever order the threads ran in.
                let start = px.len();
                px.resize(start + cells.len() * len, 0);
                let decoded: Vec<Result<()>> = px[start..]
                    .par_chunks_mut(len)
                    .enumerate()
                    .map(|(row, out)| {
                        let bytes = hf_features::image_bytes(cells.as_ref(), row).map_err(|e| bad_input(format!("{}: {e}", at(row))))?;
                        hf_features::decode_into(bytes, height, width, channels, out, &|| at(row))
                    })
                    .collect();
                decoded.into_iter().collect::<Result<()>>()?;
            }
            Samples::Points(xs) => {
                let col = rb
                    .column_by_name("x")
                    .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                    .ok_or_else(|| where_("missing FixedSizeList column `x`"))?;
                let values = col
                    .values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(|| where_("column `x` must hold Float32"))?;
                if col.value_length() as usize != len {
                    return Err(where_(&format!("points of dimension {}, the metadata says {len}", col.value_length())));
                }
                let start = col.offset() * len;
                if values.len() < start + col.len() * len {
                    return Err(where_("column `x` is shorter than its rows"));
                }
                // A null point, or a null coordinate inside one, would read as whatever its
                // buffer holds.
                let null_coordinate = first_null(values, start..start + col.len() * len).map(|i| (i - start) / len);
                if let Some(row) = first_null(col, 0..col.len()).into_iter().chain(null_coordinate).min() {
                    return Err(bad_input(format!("{}: a null point or coordinate", at(row))));
                }
                xs.extend_from_slice(&values.values()[start..start + col.len() * len]);
            }
        }
    }
    let split = Split { samples, labels };
    split.check(&info, &path.display().to_string()).map_err(|e| bad_input(e.to_string()))?;
    Ok((info, split))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_points_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let info = DatasetInfo {
            name: "t".into(),
            kind: SampleKind::Images { height: 2, width: 3, channels: 1 },
            class_names: vec!["a".into(), "b".into()],
        };
        let split = Split { samples: Samples::Images((0..600).map(|i| (i % 251) as u8).collect()), labels: (0..100).map(|i| i % 2).collect() };
        let p = dir.path().join("train.parquet");
        assert_eq!(write_split(&p, &info, "train", &split).unwrap(), 100);
        assert_eq!(read_split(&p).unwrap(), (info.clone(), split));
        assert_eq!(read_info(&p).unwrap(), info);

        let info = DatasetInfo { name: "p".into(), kind: SampleKind::Points { dim: 2 }, class_names: vec!["m".into()] };
        let split = Split { samples: Samples::Points((0..2000).map(|i| i as f32 * 0.5).collect()), labels: vec![0; 1000] };
        let p = dir.path().join("test.parquet");
        write_split(&p, &info, "test", &split).unwrap();
        assert_eq!(read_split(&p).unwrap().1, split);
    }

    /// Points, and images (whose PNG cells are encoded in parallel), twice: the same bytes.
    #[test]
    fn same_content_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let info = DatasetInfo { name: "p".into(), kind: SampleKind::Points { dim: 2 }, class_names: vec!["m".into()] };
        let split = Split { samples: Samples::Points(vec![0.25; 20]), labels: vec![0; 10] };
        let images = DatasetInfo { name: "i".into(), kind: SampleKind::Images { height: 5, width: 7, channels: 3 }, class_names: vec!["a".into()] };
        let pictures = Split { samples: Samples::Images((0..3000 * 105).map(|i| (i * 7919 % 251) as u8).collect()), labels: vec![0; 3000] };
        for (info, split) in [(&info, &split), (&images, &pictures)] {
            let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
            write_split(&a, info, "train", split).unwrap();
            write_split(&b, info, "train", split).unwrap();
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{}", info.name);
        }
    }

    /// A description that disagrees with the rows, or rows that break it, is a bad-input error
    /// naming the file: never a panic, never used.
    #[test]
    fn splits_that_disagree_with_their_metadata_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.parquet");
        let points = |dim: u32| DatasetInfo { name: "p".into(), kind: SampleKind::Points { dim }, class_names: vec!["m".into()] };
        let split = Split { samples: Samples::Points((0..20).map(|i| i as f32).collect()), labels: vec![0; 10] };
        let refused = |p: &Path, what: &str| {
            let e = read_split(p).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&e), 3, "{what}");
            let msg = crate::error::one_line(&e);
            assert!(msg.contains("train.parquet") && msg.contains(what), "{msg}");
        };
        // The rows' dimension (2) is not the metadata's (3): the writer checks it, so rewrite the
        // metadata of a good file the way a corrupting tool would, keeping the rows.
        write_split(&p, &points(2), "train", &split).unwrap();
        let good = std::fs::read(&p).unwrap();
        let swap = |from: &str, to: &str| {
            let (from, to) = (from.as_bytes(), to.as_bytes());
            assert_eq!(from.len(), to.len());
            let mut bytes = good.clone();
            let mut n = 0;
            for i in 0..bytes.len() - from.len() {
                if &bytes[i..i + from.len()] == from {
                    bytes[i..i + from.len()].copy_from_slice(to);
                    n += 1;
                }
            }
            assert!(n > 0, "{}", String::from_utf8_lossy(from));
            std::fs::write(&p, bytes).unwrap();
        };
        swap("\"dim\":2", "\"dim\":3");
        refused(&p, "points of dimension 2, the metadata says 3");
        swap("\"dim\":2", "\"dim\":0");
        refused(&p, "points of dimension 0");

        // NaN points: the writer refuses them, so write the record batch past its check.
        let mut xs: Vec<f32> = (0..20).map(|i| i as f32).collect();
        xs[7] = f32::NAN;
        let nan = Split { samples: Samples::Points(xs.clone()), labels: vec![0; 10] };
        assert!(SplitWriter::create(&p, &points(2), "train").unwrap().write(&nan).is_err());
        let mut w = SplitWriter::create(&p, &points(2), "train").unwrap();
        let x = FixedSizeListArray::try_new(point_item(), 2, Arc::new(Float32Array::from(xs)), None).unwrap();
        let rb = RecordBatch::try_new(w.schema.clone(), vec![Arc::new(x), Arc::new(Int64Array::from(vec![0; 10]))]).unwrap();
        w.writer.write(&rb).unwrap();
        w.finish().unwrap();
        refused(&p, "row 3 holds NaN");

        // Nulls the writer never writes, written past it: a null coordinate, a null label, an
        // image cell without bytes; the first bad row is the one named, however the parallel
        // decoding ran.
        let mut w = SplitWriter::create(&p, &points(2), "train").unwrap();
        let xs: Vec<Option<f32>> = (0..20).map(|i| (i != 13).then_some(i as f32)).collect();
        let x = FixedSizeListArray::try_new(point_item(), 2, Arc::new(Float32Array::from(xs)), None).unwrap();
        w.writer.write(&RecordBatch::try_new(w.schema.clone(), vec![Arc::new(x), Arc::new(Int64Array::from(vec![0; 10]))]).unwrap()).unwrap();
        w.finish().unwrap();
        refused(&p, "row 6: a null point or coordinate");
        let images = DatasetInfo { name: "i".into(), kind: SampleKind::Images { height: 2, width: 2, channels: 1 }, class_names: vec!["a".into()] };
        let cell = hf_features::encode(&[1, 2, 3, 4], 2, 2, 1).unwrap();
        let write_images = |cells: Vec<Option<Vec<u8>>>, labels: Vec<Option<i64>>| {
            let mut w = SplitWriter::create(&p, &images, "train").unwrap();
            let DataType::Struct(fields) = hf_features::image_type() else { unreachable!() };
            let n = cells.len();
            let bytes: ArrayRef = Arc::new(BinaryArray::from_iter(cells));
            let st = StructArray::try_new(fields, vec![bytes, Arc::new(StringArray::new_null(n))], None).unwrap();
            w.writer.write(&RecordBatch::try_new(w.schema.clone(), vec![Arc::new(st), Arc::new(Int64Array::from(labels))]).unwrap()).unwrap();
            w.finish().unwrap();
        };
        let mut cells: Vec<Option<Vec<u8>>> = vec![Some(cell.clone()); 600];
        cells[300] = None;
        cells[450] = Some(b"\x89PNG\r\n\x1a\nbroken".to_vec());
        write_images(cells.clone(), vec![Some(0); 600]);
        refused(&p, "row 300: empty image cell");
        cells[300] = Some(cell.clone());
        write_images(cells, vec![Some(0); 600]);
        refused(&p, "row 450: not a readable PNG");
        let mut labels = vec![Some(0); 600];
        labels[17] = None;
        write_images(vec![Some(cell.clone()); 600], labels);
        refused(&p, "row 17: no label");
        let mut labels = vec![Some(0); 600];
        labels[5] = Some(1 << 40);
        write_images(vec![Some(cell); 600], labels);
        refused(&p, "row 5: label 1099511627776 outside the class names");

        let huge = DatasetInfo { name: "i".into(), kind: SampleKind::Images { height: 1 << 20, width: 1 << 20, channels: 3 }, class_names: vec!["a".into()] };
        assert!(huge.check("x").unwrap_err().to_string().contains("values per sample"));
    }

    #[test]
    fn non_dataset_parquet_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"PAR1 not really").unwrap();
        let e = read_split(&p).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), 3);
        assert!(crate::error::one_line(&e).contains("x.parquet"));
    }
}
