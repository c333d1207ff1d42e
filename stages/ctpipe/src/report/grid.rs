//! Sample grids (images) and scatter plots (2-D points) as PNG.

use crate::data::sources::images::encode_png;
use anyhow::Result;
use candle_core::Tensor;

/// A grid of images (N, C, H, W) with values in [−1, 1] (clipped), `cols` per row, 2-pixel
/// gaps; grey for 1 channel, RGB for 3.
pub fn image_grid_png(images: &Tensor, cols: usize) -> Result<Vec<u8>> {
    let (n, c, h, w) = images.dims4()?;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let v: Vec<f32> = images.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let mut px = vec![255u8; gw * gh * c];
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let val = v[((i * c + ch) * h + y) * w + x];
                    let byte = ((val.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                    let (gx, gy) = (gap + col * (w + gap) + x, gap + r * (h + gap) + y);
                    px[(gy * gw + gx) * c + ch] = byte;
                }
            }
        }
    }
    encode_png(&px, gh as u32, gw as u32, c as u32)
}

/// A scatter plot of `points` (blue) over `reference` points (grey), in the box [−lim, lim]².
pub fn scatter_png(points: &[[f32; 2]], reference: &[[f32; 2]], lim: f32, size: usize) -> Result<Vec<u8>> {
    let mut px = vec![255u8; size * size * 3];
    let mut dot = |p: &[f32; 2], color: [u8; 3], radius: i64| {
        let to = |v: f32| ((v / lim + 1.0) * 0.5 * (size as f32 - 1.0)).round() as i64;
        let (cx, cy) = (to(p[0]), size as i64 - 1 - to(p[1]));
        for dy in -radius..=radius {
            for dx in -radius..=radius {
                let (x, y) = (cx + dx, cy + dy);
                if x >= 0 && y >= 0 && (x as usize) < size && (y as usize) < size {
                    let o = (y as usize * size + x as usize) * 3;
                    px[o..o + 3].copy_from_slice(&color);
                }
            }
        }
    };
    for p in reference {
        dot(p, [200, 200, 200], 1);
    }
    for p in points {
        dot(p, [31, 119, 180], 1);
    }
    // Axes through the origin.
    let mid = size / 2;
    for i in 0..size {
        for o in [(mid * size + i) * 3, (i * size + mid) * 3] {
            if px[o..o + 3] == [255, 255, 255] {
                px[o..o + 3].copy_from_slice(&[230, 230, 230]);
            }
        }
    }
    encode_png(&px, size as u32, size as u32, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn grid_layout_and_values() {
        let imgs = Tensor::new(&[-1f32, 1.0, 0.0, 2.0], &Device::Cpu).unwrap().reshape((4, 1, 1, 1)).unwrap();
        let png = image_grid_png(&imgs, 2).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!((img.width(), img.height()), (2 * 3 + 2, 2 * 3 + 2));
        assert_eq!(img.get_pixel(2, 2)[0], 0);
        assert_eq!(img.get_pixel(5, 2)[0], 255);
        assert_eq!(img.get_pixel(2, 5)[0], 128);
        assert_eq!(img.get_pixel(5, 5)[0], 255, "clipped");
        assert_eq!(img.get_pixel(0, 0)[0], 255, "gap");
        let sc = scatter_png(&[[0.5, 0.5]], &[[-0.5, -0.5]], 1.0, 101).unwrap();
        let img = image::load_from_memory(&sc).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(75, 25).0, [31, 119, 180]);
        assert_eq!(img.get_pixel(25, 75).0, [200, 200, 200]);
    }
}
