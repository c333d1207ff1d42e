//! What Hugging Face `datasets` needs to read a split with its own types: image cells stored
//! as its `Image` feature stores them (a struct of the encoded file's `bytes` and a `path`),
//! and the `huggingface` schema metadata naming each column's feature, the labels as a
//! `ClassLabel` with the dataset's class names. `datasets.Dataset.from_parquet` (and
//! `load_dataset("parquet", ...)`) then gives PIL images and named classes (tests/interop.rs
//! reads every fetched split with the former).
//!
//! Cells are PNG: lossless, so the pixels read back are the pixels written, and the format every
//! image tool opens.

use super::schema::{DatasetInfo, SampleKind};
use crate::error::bad_input;
use anyhow::Result;
use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_schema::{DataType, Field, Fields};
use image::ColorType;
use serde_json::json;

/// The schema-metadata key `datasets` reads its features from.
pub const META_KEY: &str = "huggingface";

/// The Arrow type of `datasets.Image()`: struct<bytes: binary, path: string>.
pub fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)]))
}

/// The `huggingface` metadata of a split: `{"info": {"features": {...}}}` as `datasets` writes it.
pub fn metadata(info: &DatasetInfo) -> String {
    let sample = match info.kind {
        SampleKind::Images { .. } => ("image", json!({ "_type": "Image" })),
        // "Sequence" rather than datasets 4's "List": both read it, older versions only that.
        SampleKind::Points { dim } => ("x", json!({ "feature": { "dtype": "float32", "_type": "Value" }, "length": dim, "_type": "Sequence" })),
    };
    let features = json!({ sample.0: sample.1, "label": { "names": info.class_names, "_type": "ClassLabel" } });
    json!({ "info": { "features": features } }).to_string()
}

pub fn is_image_type(t: &DataType) -> bool {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes" && is_image_type(f.data_type())),
        _ => false,
    }
}

/// The encoded image of row `i`. A Hub image cell whose `bytes` is null points at a file by
/// `path` only, which a Parquet file on its own cannot resolve.
pub fn image_bytes(col: &dyn Array, i: usize) -> std::result::Result<&[u8], String> {
    if col.is_null(i) {
        return Err("empty image cell".into());
    }
    match col.data_type() {
        DataType::Binary => Ok(col.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Ok(col.as_binary::<i64>().value(i)),
        DataType::BinaryView => Ok(col.as_binary_view().value(i)),
        DataType::Struct(_) => {
            let s = col.as_struct();
            let bytes = s.column_by_name("bytes").expect("checked by is_image_type");
            if bytes.is_null(i) {
                let path = s.column_by_name("path").filter(|p| p.is_valid(i)).and_then(|p| string_at(p.as_ref(), i));
                return Err(match path {
                    Some(p) => format!("image has no bytes, only a path (`{p}`); re-export the dataset with embedded images"),
                    None => "empty image cell".into(),
                });
            }
            image_bytes(bytes.as_ref(), i)
        }
        other => Err(format!("unexpected image type {other}")),
    }
}

/// Row `i` of a string column of any of Arrow's string types.
fn string_at(c: &dyn Array, i: usize) -> Option<String> {
    match c.data_type() {
        DataType::Utf8 => Some(c.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(c.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(c.as_string_view().value(i).to_string()),
        _ => None,
    }
}

fn color(channels: u32) -> Option<ColorType> {
    match channels {
        1 => Some(ColorType::L8),
        3 => Some(ColorType::Rgb8),
        4 => Some(ColorType::Rgba8),
        _ => None,
    }
}

/// One image, uint8 HWC, as a PNG cell.
pub fn encode(pixels: &[u8], height: u32, width: u32, channels: u32) -> Result<Vec<u8>> {
    super::sources::images::encode_png(pixels, height, width, channels)
}

/// Decode a PNG cell into `out` (height × width × channels bytes), which it must fill exactly:
/// the size and channels the dataset's description gives. `what` names the file and row in errors.
pub fn decode_into(bytes: &[u8], height: u32, width: u32, channels: u32, out: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).map_err(|e| bad_input(format!("{}: not a readable PNG ({e})", what())))?;
    let expected = color(channels);
    if (img.height(), img.width()) != (height, width) || Some(img.color()) != expected || img.as_bytes().len() != out.len() {
        return Err(bad_input(format!(
            "{}: a {}×{} {:?} image, the metadata says {height}×{width} with {channels} channel(s)",
            what(),
            img.height(),
            img.width(),
            img.color()
        )));
    }
    out.copy_from_slice(img.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_round_trip_and_mismatches_are_named() {
        for channels in [1u32, 3, 4] {
            let px: Vec<u8> = (0..5 * 7 * channels).map(|i| (i * 37 % 256) as u8).collect();
            let cell = encode(&px, 5, 7, channels).unwrap();
            assert_eq!(&cell[..8], b"\x89PNG\r\n\x1a\n");
            let mut back = vec![0; px.len()];
            decode_into(&cell, 5, 7, channels, &mut back, &|| "f row 0".into()).unwrap();
            assert_eq!(back, px, "{channels} channels");
        }
        let cell = encode(&[9; 35], 5, 7, 1).unwrap();
        let e = decode_into(&cell, 7, 5, 1, &mut [0; 35], &|| "train.parquet row 3".into()).unwrap_err().to_string();
        assert!(e.starts_with("train.parquet row 3: a 5×7 L8 image, the metadata says 7×5"), "{e}");
        let e = decode_into(&cell, 5, 7, 3, &mut [0; 105], &|| "r".into()).unwrap_err().to_string();
        assert!(e.contains("with 3 channel(s)"), "{e}");
        let e = decode_into(b"\x89PNG\r\n\x1a\nbroken", 5, 7, 1, &mut [0; 35], &|| "r".into()).unwrap_err().to_string();
        assert!(e.starts_with("r: not a readable PNG"), "{e}");
    }

    #[test]
    fn metadata_is_what_datasets_writes() {
        let info = DatasetInfo { name: "t".into(), kind: SampleKind::Images { height: 2, width: 2, channels: 1 }, class_names: vec!["a".into(), "b".into()] };
        // datasets 5.2's own `Dataset.to_parquet` for Image() and ClassLabel(names=["a", "b"]),
        // keys in its order (serde_json sorts them; the JSON is the same).
        let theirs: serde_json::Value = serde_json::from_str(r#"{"info": {"features": {"image": {"_type": "Image"}, "label": {"names": ["a", "b"], "_type": "ClassLabel"}}}}"#).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&metadata(&info)).unwrap(), theirs);
    }
}
