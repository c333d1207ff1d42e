//! im2col and col2im for one (image, channel) plane of a stride-1 "same" convolution with an
//! odd k×k kernel and zero padding k/2. `conv.rs` builds the convolution from them: the
//! columns of an image are its planes' k·k rows each, so that the convolution is one matrix
//! product `weight (cout, c·k·k) × cols (c·k·k, h·w)`, and col2im (a scatter-add) is
//! im2col's adjoint, the input gradient's last step.

/// Visit every run of im2col within one plane: `f(src, dst, len)` where plane elements
/// `src..src + len` (of h·w) land at elements `dst..dst + len` of the plane's k·k column rows
/// (of k·k·h·w). A run is one output row of one tap, contiguous on both sides, so it is copied
/// or added as a slice. Out-of-image taps (the zero padding) are skipped, so a buffer zeroed
/// once keeps its padding zero however many planes are written into it.
fn for_each_run(h: usize, w: usize, k: usize, mut f: impl FnMut(usize, usize, usize)) {
    let p = k as isize / 2;
    let hw = h * w;
    for dy in 0..k {
        for dx in 0..k {
            let row = dy * k + dx;
            let (oy, ox) = (dy as isize - p, dx as isize - p);
            let (x0, x1) = ((-ox).max(0) as usize, (w as isize - ox).min(w as isize).max(0) as usize);
            if x0 >= x1 {
                continue;
            }
            for y in 0..h {
                let sy = y as isize + oy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                f(sy as usize * w + (x0 as isize + ox) as usize, row * hw + y * w + x0, x1 - x0);
            }
        }
    }
}

/// Write the k·k column rows of `plane` (h·w) into `cols` (k·k·h·w); padding taps untouched.
pub fn im2col_plane<T: Copy>(plane: &[T], cols: &mut [T], h: usize, w: usize, k: usize) {
    for_each_run(h, w, k, |s, d, n| cols[d..d + n].copy_from_slice(&plane[s..s + n]));
}

/// Add the k·k column rows `cols` (k·k·h·w) back onto `plane` (h·w), summing overlapping taps
/// in tap order.
pub fn col2im_plane<T: Copy + std::ops::AddAssign>(cols: &[T], plane: &mut [T], h: usize, w: usize, k: usize) {
    for_each_run(h, w, k, |s, d, n| plane[s..s + n].iter_mut().zip(&cols[d..d + n]).for_each(|(a, &b)| *a += b));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against im2col written from its definition: column row (c, dy, dx), position (y, x)
    /// holds plane[y + dy − p][x + dx − p], or 0 outside; col2im is its adjoint
    /// (⟨im2col(a), b⟩ = ⟨a, col2im(b)⟩), for kernels up to wider than the plane.
    #[test]
    fn im2col_is_its_definition_and_col2im_its_adjoint() {
        for (h, w, k) in [(5, 6, 3), (1, 1, 3), (4, 2, 5), (3, 7, 1), (2, 3, 7)] {
            let plane: Vec<f64> = (0..h * w).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut cols = vec![0.0; k * k * h * w];
            im2col_plane(&plane, &mut cols, h, w, k);
            let p = (k / 2) as isize;
            for dy in 0..k {
                for dx in 0..k {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) = (y as isize + dy as isize - p, x as isize + dx as isize - p);
                            let want = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize { 0.0 } else { plane[sy as usize * w + sx as usize] };
                            assert_eq!(cols[(dy * k + dx) * h * w + y * w + x], want, "{h}×{w} k {k}: tap ({dy}, {dx}) at ({y}, {x})");
                        }
                    }
                }
            }
            let b: Vec<f64> = (0..k * k * h * w).map(|i| (i as f64 * 0.91).cos()).collect();
            let mut back = vec![0.0; h * w];
            col2im_plane(&b, &mut back, h, w, k);
            let lhs: f64 = cols.iter().zip(&b).map(|(a, b)| a * b).sum();
            let rhs: f64 = plane.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{h}×{w} k {k}: adjoint {lhs} vs {rhs}");
        }
    }
}
