//! Decoding encoded images (PNG, JPEG) into uint8 HWC rows of one common shape.

use crate::error::bad_input;
use anyhow::Result;
use image::{ColorType, DynamicImage};

/// Collects decoded images, insisting on one height × width and one channel count.
///
/// The channel count is `channels` if given (1 or 3), else that of the first image; other
/// images are converted to it (grey replicated to RGB, RGB to luma). Alpha is dropped.
pub struct ImageCollector {
    channels: Option<u32>,
    shape: Option<(u32, u32, String)>,
    pub pixels: Vec<u8>,
    pub labels: Vec<i32>,
}

impl ImageCollector {
    pub fn new(channels: Option<u32>) -> Self {
        ImageCollector { channels, shape: None, pixels: Vec::new(), labels: Vec::new() }
    }

    /// Decode `bytes` (`what` names it in errors: a file path, or file and row) and append.
    pub fn push(&mut self, bytes: &[u8], label: i32, what: &str) -> Result<()> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| bad_input(format!("{what}: cannot decode image ({e})")))?;
        let channels = *self.channels.get_or_insert_with(|| natural_channels(&img));
        let (w, h) = (img.width(), img.height());
        match &self.shape {
            None => self.shape = Some((h, w, what.to_string())),
            Some((h0, w0, first)) if (*h0, *w0) != (h, w) => {
                return Err(bad_input(format!(
                    "mixed image sizes: {what} is {h}×{w} (height×width) but {first} is {h0}×{w0}"
                )));
            }
            Some(_) => {}
        }
        match channels {
            1 => self.pixels.extend_from_slice(img.to_luma8().as_raw()),
            _ => self.pixels.extend_from_slice(img.to_rgb8().as_raw()),
        }
        self.labels.push(label);
        Ok(())
    }

    /// (height, width, channels) of the collected images, if any.
    pub fn shape(&self) -> Option<(u32, u32, u32)> {
        self.shape.as_ref().map(|(h, w, _)| (*h, *w, self.channels.unwrap_or(3)))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn natural_channels(img: &DynamicImage) -> u32 {
    match img.color() {
        ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16 => 1,
        _ => 3,
    }
}

/// Encode HWC uint8 pixels (grey, RGB or RGBA) as PNG: dataset cells, report pictures, test
/// images. Fast deflate with adaptive filters: the cells are compressed again by Parquet's zstd.
pub fn encode_png(pixels: &[u8], height: u32, width: u32, channels: u32) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let color = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        4 => image::ExtendedColorType::Rgba8,
        c => anyhow::bail!("cannot write a PNG with {c} channels"),
    };
    let mut out = Vec::with_capacity(pixels.len() / 2 + 64);
    image::ImageEncoder::write_image(PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive), pixels, width, height, color)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_converts_and_rejects() {
        let grey = encode_png(&[0, 128, 255, 7], 2, 2, 1).unwrap();
        let rgb = encode_png(&[10; 12], 2, 2, 3).unwrap();
        let mut c = ImageCollector::new(None);
        c.push(&grey, 0, "a.png").unwrap();
        c.push(&rgb, 1, "b.png").unwrap();
        assert_eq!(c.shape(), Some((2, 2, 1)));
        assert_eq!(&c.pixels[..4], &[0, 128, 255, 7]);
        assert_eq!(c.len(), 2);
        let big = encode_png(&[0; 9], 3, 3, 1).unwrap();
        let e = crate::error::one_line(&c.push(&big, 0, "c.png").unwrap_err());
        assert_eq!(e, "mixed image sizes: c.png is 3×3 (height×width) but a.png is 2×2");
        let e = crate::error::one_line(&c.push(b"\x89PNG\r\n\x1a\nbroken", 0, "d.png").unwrap_err());
        assert!(e.starts_with("d.png: cannot decode image"), "{e}");
        let mut c3 = ImageCollector::new(Some(3));
        c3.push(&grey, 0, "a.png").unwrap();
        assert_eq!(&c3.pixels[..6], &[0, 0, 0, 128, 128, 128]);
    }
}
