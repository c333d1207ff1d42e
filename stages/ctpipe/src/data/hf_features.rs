//! What Hugging Face `datasets` needs to read a split with its own types: image cells stored
//! as its `Image` feature stores them (a struct of the encoded file's `bytes` and a `path`),
//! and the `huggingface` schema metadata naming each column's feature, the labels as a
//! `ClassLabel` with the dataset's class names. `datasets.load_dataset("parquet", ...)` then
//! gives PIL images and named classes (tests/interop.rs reads a split that way).
//!
//! Cells are PNG: lossless, so the pixels read back are the pixels written, and the format every
//! image tool opens.

use super::schema::{DatasetInfo, SampleKind};
use crate::error::bad_input;
use anyhow::Result;
use arrow_schema::{DataType, Field, Fields};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ColorType, ExtendedColorType, ImageEncoder};
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

fn color(channels: u32) -> Option<(ExtendedColorType, ColorType)> {
    match channels {
        1 => Some((ExtendedColorType::L8, ColorType::L8)),
        3 => Some((ExtendedColorType::Rgb8, ColorType::Rgb8)),
        4 => Some((ExtendedColorType::Rgba8, ColorType::Rgba8)),
        _ => None,
    }
}

/// One image, uint8 HWC, as a PNG cell. Fast deflate: Parquet's zstd compresses the column again.
pub fn encode(pixels: &[u8], height: u32, width: u32, channels: u32) -> Result<Vec<u8>> {
    let (ext, _) = color(channels).ok_or_else(|| anyhow::anyhow!("cannot store images of {channels} channels as PNG"))?;
    let mut out = Vec::with_capacity(pixels.len() / 2 + 64);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive).write_image(pixels, width, height, ext)?;
    Ok(out)
}

/// Decode a PNG cell into `out` (height × width × channels bytes), which it must fill exactly:
/// the size and channels the dataset's description gives. `what` names the file and row in errors.
pub fn decode_into(bytes: &[u8], height: u32, width: u32, channels: u32, out: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).map_err(|e| bad_input(format!("{}: not a readable PNG ({e})", what())))?;
    let expected = color(channels).map(|c| c.1);
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
