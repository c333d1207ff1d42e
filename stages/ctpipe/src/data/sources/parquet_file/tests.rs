//! Hub-style Parquet files written here with arrow-rs, one per schema variant and codec. The
//! same variants written by pyarrow are read in `tests/interop.rs`.

use super::*;
use crate::data::sources::images::encode_png;
use arrow_array::builder::{BinaryBuilder, StringBuilder, StringDictionaryBuilder};
use arrow_array::{ArrayRef, BinaryArray, Int64Array, StringArray, StructArray};
use arrow_schema::{Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

/// Two-by-two grey images whose first pixel is the row number.
fn pngs(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| encode_png(&[i as u8, 1, 2, 3], 2, 2, 1).unwrap()).collect()
}

fn struct_images(images: &[Vec<u8>]) -> ArrayRef {
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    for (i, b) in images.iter().enumerate() {
        bytes.append_value(b);
        paths.append_value(format!("{i}.png"));
    }
    let fields = Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)]);
    Arc::new(StructArray::new(fields, vec![Arc::new(bytes.finish()) as ArrayRef, Arc::new(paths.finish())], None))
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>, compression: Compression) {
    let schema = Arc::new(Schema::new(columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>()));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let props = WriterProperties::builder().set_compression(compression).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn import(paths: &[&Path], cols: &Columns) -> Result<(ImageCollector, Vec<String>)> {
    let mut c = ImageCollector::new(None);
    let mut labels = Labels::default();
    for p in paths {
        import_file(p, cols, &mut c, &mut labels)?;
    }
    let names = labels.finish(&mut [&mut c]);
    Ok((c, names))
}

#[test]
fn every_codec_reads_back_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4,
        Compression::LZ4_RAW,
        Compression::BROTLI(BrotliLevel::default()),
        Compression::ZSTD(ZstdLevel::default()),
    ];
    for codec in codecs {
        let p = dir.path().join(format!("{codec:?}.parquet"));
        write(&p, vec![("img", struct_images(&pngs(5))), ("label", Arc::new(Int64Array::from(vec![4, 3, 2, 1, 0])))], codec);
        let (c, names) = import(&[&p], &Columns::default()).unwrap_or_else(|e| panic!("{codec:?}: {e:#}"));
        assert_eq!(c.labels, [4, 3, 2, 1, 0], "{codec:?}");
        let first: Vec<u8> = c.pixels.chunks(4).map(|px| px[0]).collect();
        assert_eq!(first, [0, 1, 2, 3, 4], "{codec:?}");
        assert!(names.is_empty());
    }
}

/// String labels number by sorted name over every file, whichever file or row comes first;
/// dictionary-encoded strings (pandas categoricals) read the same.
#[test]
fn string_labels_number_by_sorted_name_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write(&a, vec![("image", Arc::new(BinaryArray::from_iter_values(pngs(3)))), ("label", Arc::new(StringArray::from(vec!["dog", "cat", "dog"])))], Compression::SNAPPY);
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for s in ["bird", "cat"] {
        dict.append_value(s);
    }
    write(&b, vec![("image", Arc::new(BinaryArray::from_iter_values(pngs(2)))), ("label", Arc::new(dict.finish()))], Compression::SNAPPY);
    // pandas 3 writes categoricals as a dictionary of large strings with int8 keys.
    let c = dir.path().join("c.parquet");
    let large = arrow_array::DictionaryArray::<Int8Type>::try_new(
        arrow_array::Int8Array::from(vec![1, 0]),
        Arc::new(arrow_array::LargeStringArray::from(vec!["ant", "dog"])),
    )
    .unwrap();
    write(&c, vec![("image", Arc::new(BinaryArray::from_iter_values(pngs(2)))), ("label", Arc::new(large))], Compression::SNAPPY);
    let (got, names) = import(&[&a, &b, &c], &Columns::default()).unwrap();
    assert_eq!(names, ["ant", "bird", "cat", "dog"]);
    assert_eq!(got.labels, [3, 2, 3, 1, 2, 3, 0]);
}

#[test]
fn class_names_come_from_the_hub_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train-00000-of-00001.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("image", DataType::Binary, true), Field::new("label", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(BinaryArray::from_iter_values(pngs(2))), Arc::new(Int64Array::from(vec![0, 1]))]).unwrap();
    let meta = r#"{"info": {"features": {"image": {"_type": "Image"}, "label": {"names": ["zero", "one"], "_type": "ClassLabel"}}}}"#;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new("huggingface".into(), meta.to_string())]))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let (_, names) = import(&[&p], &Columns::default()).unwrap();
    assert_eq!(names, ["zero", "one"]);
}

#[test]
fn unusable_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let err = |paths: &[&Path], cols: &Columns| {
        let e = import(paths, cols).err().expect("an error");
        assert!(!format!("{e:#}").contains('\n'), "not one line: {e:#}");
        crate::error::one_line(&e)
    };
    let images = || Arc::new(BinaryArray::from_iter_values(pngs(2))) as ArrayRef;

    write(&p("float.parquet"), vec![("image", images()), ("label", Arc::new(arrow_array::Float32Array::from(vec![0.0, 1.0])))], Compression::SNAPPY);
    assert!(err(&[&p("float.parquet")], &Columns::default()).ends_with("float.parquet: column `label` must hold integers or strings, found Float32"));

    write(&p("neg.parquet"), vec![("image", images()), ("label", Arc::new(Int64Array::from(vec![0, -1])))], Compression::SNAPPY);
    assert!(err(&[&p("neg.parquet")], &Columns::default()).contains("column `label`: label -1 is not a class index"));

    write(&p("noimg.parquet"), vec![("pixels", Arc::new(Int64Array::from(vec![1, 2]))), ("label", Arc::new(Int64Array::from(vec![0, 1])))], Compression::SNAPPY);
    let e = err(&[&p("noimg.parquet")], &Columns::default());
    assert!(e.contains("noimg.parquet: no image column") && e.contains("pixels (Int64)"), "{e}");
    let e = err(&[&p("noimg.parquet")], &Columns { image: Some("pixels".into()), label: None });
    assert!(e.contains("column `pixels` holds Int64, expected encoded images"), "{e}");

    write(&p("strs.parquet"), vec![("image", images()), ("label", Arc::new(StringArray::from(vec!["a", "b"])))], Compression::SNAPPY);
    write(&p("ints.parquet"), vec![("image", images()), ("label", Arc::new(Int64Array::from(vec![0, 1])))], Compression::SNAPPY);
    let e = err(&[&p("strs.parquet"), &p("ints.parquet")], &Columns::default());
    assert!(e.contains("labels are integers here but strings in an earlier file"), "{e}");

    // A Hub image cell with a path but no bytes (a dataset saved without embedding its files).
    let fields = Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)]);
    let cells = StructArray::new(
        fields,
        vec![Arc::new(BinaryArray::from_opt_vec(vec![Some(&pngs(1)[0][..]), None])) as ArrayRef, Arc::new(StringArray::from(vec!["a.png", "/x/b.png"]))],
        None,
    );
    write(&p("paths.parquet"), vec![("img", Arc::new(cells)), ("label", Arc::new(Int64Array::from(vec![0, 1])))], Compression::SNAPPY);
    let e = err(&[&p("paths.parquet")], &Columns::default());
    assert!(e.contains("paths.parquet row 1: image has no bytes, only a path (`/x/b.png`)"), "{e}");

    std::fs::write(p("junk.parquet"), b"not parquet").unwrap();
    assert!(err(&[&p("junk.parquet")], &Columns::default()).contains("junk.parquet: not a Parquet file"));
}
