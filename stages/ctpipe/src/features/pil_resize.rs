//! PIL's bicubic resize of a float image (`Image.fromarray(x, mode='F').resize(size, BICUBIC)`),
//! which is how clean-fid's "clean" mode brings every image to 299×299, one channel at a time,
//! before clipping to [0, 255] and the Inception network (GaParmar/clean-fid at 353c13e,
//! cleanfid/resize.py:11-13 and 49-53; the clip is `evaluate::fid_files`'s).
//!
//! Pillow's algorithm (src/libImaging/Resample.c), reproduced so that the result is PIL's to the
//! bit: separable, one pass per axis through a float32 image (horizontal first, mostly); each output pixel a
//! weighted sum over the source pixels under the filter, accumulated in f64 with weights
//! normalised to sum 1 and stored as f32. The cubic kernel has a = −0.5 and support 2, widened by
//! the scale when shrinking (antialiasing), which is what distinguishes it from PyTorch's and
//! OpenCV's bicubic. `tests/interop.rs` checks it against Pillow itself.

/// Pillow's bicubic kernel (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index, the first source index and the normalised weights of the source
/// pixels from there (Pillow's `precompute_coeffs` over the whole image).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    // Pillow multiplies by the reciprocal; dividing would round differently when shrinking.
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow rounds with a C cast (toward zero) of value + 0.5; a negative start is
            // clamped to 0 either way.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Resize one channel, row-major `height × width`, to `out_height × out_width`.
pub fn bicubic_f32(src: &[f32], height: usize, width: usize, out_height: usize, out_width: usize) -> Vec<f32> {
    assert_eq!(src.len(), height * width, "pil_resize: {} values for {height}×{width}", src.len());
    let horizontal = (out_width != width).then(|| coefficients(width, out_width));
    let vertical = (out_height != height).then(|| coefficients(height, out_height));
    // Pillow 13.0.0 (its sdist's src/libImaging/Resample.c:863-867) runs the vertical pass
    // first when the height loses more than twice as many pixels as the width does; earlier
    // versions always went horizontal first. The order changes the float32 intermediate, so the last bit.
    let vertical_first = height > out_height && height - out_height > 2 * width.saturating_sub(out_width);
    if vertical_first {
        let columns = vertical_pass(src, width, &vertical);
        horizontal_pass(&columns, width, &horizontal)
    } else {
        let rows = horizontal_pass(src, width, &horizontal);
        vertical_pass(&rows, out_width, &vertical)
    }
}

/// Each row of `src` (rows of `width`) resampled by `coefficients`; the identity when they are
/// None (Pillow skips a pass whose size does not change).
fn horizontal_pass(src: &[f32], width: usize, coefficients: &Option<Vec<(usize, Vec<f64>)>>) -> Vec<f32> {
    let Some(coefficients) = coefficients else { return src.to_vec() };
    let mut out = Vec::with_capacity(src.len() / width * coefficients.len());
    for row in src.chunks_exact(width) {
        for (xmin, w) in coefficients {
            let s: f64 = w.iter().zip(&row[*xmin..]).map(|(k, &p)| p as f64 * k).sum();
            out.push(s as f32);
        }
    }
    out
}

/// Each column of `src` (rows of `width`) resampled by `coefficients`, or the identity.
fn vertical_pass(src: &[f32], width: usize, coefficients: &Option<Vec<(usize, Vec<f64>)>>) -> Vec<f32> {
    let Some(coefficients) = coefficients else { return src.to_vec() };
    let mut out = Vec::with_capacity(coefficients.len() * width);
    for (ymin, w) in coefficients {
        for x in 0..width {
            let s: f64 = w.iter().enumerate().map(|(j, k)| src[(ymin + j) * width + x] as f64 * k).sum();
            out.push(s as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_weights() {
        // Keys' cubic with a = −0.5: 1 at 0, 0 at the integers, 0.5625 and −0.0625 at ±½, ±1½.
        for (x, want) in [(0.0, 1.0), (1.0, 0.0), (2.0, 0.0), (0.5, 0.5625), (1.5, -0.0625), (-0.5, 0.5625), (2.5, 0.0)] {
            assert!((bicubic(x) - want).abs() < 1e-15, "k({x}) = {} want {want}", bicubic(x));
        }
        for (n, m) in [(28, 299), (512, 299), (7, 3)] {
            for (xmin, w) in coefficients(n, m) {
                assert!(xmin + w.len() <= n);
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn constants_stay_and_doubling_interpolates() {
        let flat = bicubic_f32(&[42.5; 35], 5, 7, 13, 3);
        assert!(flat.iter().all(|&v| (v - 42.5).abs() < 1e-5), "{flat:?}");
        // Doubling a ramp 0, 1, 2, 3 along a row: interior outputs sit at source positions
        // (i + ½)/2 − ½ and a cubic with a = −0.5 reproduces linear functions there.
        let up = bicubic_f32(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 1, 6, 1, 12);
        for (i, v) in up.iter().enumerate().skip(3).take(6) {
            let want = (i as f32 + 0.5) / 2.0 - 0.5;
            assert!((v - want).abs() < 1e-6, "{i}: {v} want {want}");
        }
    }
}
