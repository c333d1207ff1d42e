//! Sample grids (images) and scatter plots (2-D points) as PNG, each with its title: what was
//! sampled, how, and when. Text and axes are drawn by plotters in the embedded font.

use super::font;
use crate::data::sources::images::encode_png;
use anyhow::Result;
use candle_core::Tensor;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Height of the title band above a grid, in pixels.
const TITLE_BAND: usize = 24;
/// Grids narrower than this are enlarged by a whole factor (nearest neighbour: every sample
/// pixel stays one colour) so that 8×8 or 28×28 samples can be seen.
const MIN_WIDTH: usize = 256;
const TITLE_SIZE: u32 = 14;

/// A grid of images (N, C, H, W) with values in [−1, 1] (clipped), `cols` per row, 2-pixel
/// gaps, under `title` (the canvas widens to fit it, the grid centred); grey for 1 channel, RGB
/// for 3.
pub fn image_grid_png(images: &Tensor, cols: usize, title: &str) -> Result<Vec<u8>> {
    font::ensure();
    let (n, c, h, w) = images.dims4()?;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let zoom = MIN_WIDTH.div_ceil(gw).max(1);
    let title_width = (font::FAMILY, TITLE_SIZE).into_font().box_size(title)?.0 as usize + 16;
    let (width, height) = ((gw * zoom).max(title_width), TITLE_BAND + gh * zoom);
    let left = (width - gw * zoom) / 2;
    let v: Vec<f32> = images.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let mut rgb = title_band(width, height, title)?;
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let (gx, gy) = (left + (gap + col * (w + gap)) * zoom + x, TITLE_BAND + (gap + r * (h + gap)) * zoom + y);
                for k in 0..3 {
                    let val = v[((i * c + k.min(c - 1)) * h + y / zoom) * w + x / zoom];
                    rgb[(gy * width + gx) * 3 + k] = ((val.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                }
            }
        }
    }
    if c == 1 {
        // Black text on white and grey samples: every pixel has R = G = B.
        let grey: Vec<u8> = rgb.chunks_exact(3).map(|p| p[0]).collect();
        return encode_png(&grey, height as u32, width as u32, 1);
    }
    encode_png(&rgb, height as u32, width as u32, 3)
}

/// A white RGB canvas with `title` centred in its top band.
fn title_band(width: usize, height: usize, title: &str) -> Result<Vec<u8>> {
    let mut rgb = vec![255u8; width * height * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width as u32, height as u32)).into_drawing_area();
        let centre = Pos::new(HPos::Center, VPos::Center);
        let style = TextStyle::from((font::FAMILY, TITLE_SIZE).into_font()).color(&BLACK).pos(centre);
        root.draw_text(title, &style, (width as i32 / 2, TITLE_BAND as i32 / 2))?;
        root.present()?;
    }
    Ok(rgb)
}

/// A scatter plot of `points` (blue) over `reference` points (grey), in the box [−lim, lim]²,
/// with axes, ticks and `title`.
pub fn scatter_png(points: &[[f32; 2]], reference: &[[f32; 2]], lim: f32, size: usize, title: &str) -> Result<Vec<u8>> {
    font::ensure();
    let mut rgb = vec![255u8; size * size * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (size as u32, size as u32)).into_drawing_area();
        let lim = lim as f64;
        let outside = points.iter().filter(|p| p.iter().any(|v| !(v.abs() as f64 <= lim))).count();
        let caption = if outside > 0 { format!("{title} ({outside} of {} outside the box)", points.len()) } else { title.to_string() };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (font::FAMILY, 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(-lim..lim, -lim..lim)?;
        chart.configure_mesh().light_line_style(TRANSPARENT).bold_line_style(RGBColor(235, 235, 235)).label_style((font::FAMILY, 12)).draw()?;
        // plotters would draw a point outside the box on its frame: such points (a diverged
        // model's) are left out and counted in the caption instead.
        let inside = |p: &&[f32; 2]| p.iter().all(|v| v.abs() as f64 <= lim);
        let at = |p: &[f32; 2]| (p[0] as f64, p[1] as f64);
        chart.draw_series(reference.iter().filter(inside).map(|p| Circle::new(at(p), 1, RGBColor(200, 200, 200).filled())))?;
        chart.draw_series(points.iter().filter(inside).map(|p| Circle::new(at(p), 2, RGBColor(31, 119, 180).filled())))?;
        root.present()?;
    }
    encode_png(&rgb, size as u32, size as u32, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Whether any pixel of rows `rows` is dark (text).
    fn has_text(img: &image::RgbImage, rows: std::ops::Range<u32>) -> bool {
        rows.flat_map(|y| (0..img.width()).map(move |x| (x, y))).any(|(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 100))
    }

    #[test]
    fn grid_layout_values_and_title() {
        let imgs = Tensor::new(&[-1f32, 1.0, 0.0, 2.0], &Device::Cpu).unwrap().reshape((4, 1, 1, 1)).unwrap();
        let png = image_grid_png(&imgs, 2, "ect, 1 step").unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(img.color(), image::ColorType::L8);
        let img = img.to_luma8();
        // 2 × 3 + 2 = 8 pixels wide, enlarged 32 times to reach 256; the title band on top.
        let zoom = 32;
        assert_eq!((img.width(), img.height()), (8 * zoom, TITLE_BAND as u32 + 8 * zoom));
        let at = |x: u32, y: u32| img.get_pixel(x * zoom + zoom / 2, TITLE_BAND as u32 + y * zoom + zoom / 2)[0];
        assert_eq!(at(2, 2), 0);
        assert_eq!(at(5, 2), 255);
        assert_eq!(at(2, 5), 128);
        assert_eq!(at(5, 5), 255, "clipped");
        assert_eq!(at(0, 0), 255, "gap");
        assert!(has_text(&image::DynamicImage::ImageLuma8(img.clone()).to_rgb8(), 0..TITLE_BAND as u32), "no title drawn");

        // RGB samples stay RGB; a 242-pixel grid (8 × 28-pixel samples) is doubled; a grid
        // already 256 wide is not enlarged; a long title widens the canvas, the grid centred.
        let rgb = Tensor::zeros((64, 3, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
        let img = image::load_from_memory(&image_grid_png(&rgb, 8, "data").unwrap()).unwrap();
        assert_eq!((img.color(), img.width(), img.height()), (image::ColorType::Rgb8, 2 * 242, TITLE_BAND as u32 + 2 * 242));
        let wide = Tensor::zeros((1, 1, 252, 252), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(image::load_from_memory(&image_grid_png(&wide, 1, "x").unwrap()).unwrap().width(), 256);
        let long = "ect on fashion-mnist: 2 steps (σ_mid = 0.821), step 100000, a long title";
        let img = image::load_from_memory(&image_grid_png(&imgs, 2, long).unwrap()).unwrap().to_luma8();
        assert!(img.width() > 8 * zoom, "the canvas did not widen for the title: {}", img.width());
        let left = (img.width() - 8 * zoom) / 2;
        assert_eq!(img.get_pixel(left + 2 * zoom + zoom / 2, TITLE_BAND as u32 + 2 * zoom + zoom / 2)[0], 0, "grid not centred");
    }

    #[test]
    fn scatter_has_title_axes_and_both_sets() {
        let sc = scatter_png(&[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [7.0, 0.0], [f32::NAN, 0.0]], &[[-0.5, -0.5]; 4], 1.0, 301, "ict on moons").unwrap();
        let img = image::load_from_memory(&sc).unwrap().to_rgb8();
        assert!(has_text(&img, 0..24), "no title");
        let find = |c: [u8; 3]| -> Vec<(u32, u32)> { img.enumerate_pixels().filter(|p| p.2.0 == c).map(|p| (p.0, p.1)).collect() };
        let (blue, grey) = (find([31, 119, 180]), find([200, 200, 200]));
        assert!(!blue.is_empty() && !grey.is_empty());
        // The samples up and right of the reference points, as their coordinates are.
        let mean = |v: &[(u32, u32)]| (v.iter().map(|p| p.0 as f64).sum::<f64>() / v.len() as f64, v.iter().map(|p| p.1 as f64).sum::<f64>() / v.len() as f64);
        let (b, g) = (mean(&blue), mean(&grey));
        assert!(b.0 > g.0 + 50.0 && b.1 < g.1 - 50.0, "samples at {b:?}, reference at {g:?}");
        // The two samples outside the box are not drawn on its frame: no blue right of the
        // samples' own dot.
        assert!(blue.iter().all(|p| (p.0 as f64 - b.0).abs() < 5.0), "a sample outside the box was drawn");
    }
}
