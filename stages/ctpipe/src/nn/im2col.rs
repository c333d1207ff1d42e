//! im2col and col2im for one (image, channel) plane of a stride-1 "same" convolution with an
//! odd k×k kernel and zero padding k/2. `conv.rs` builds the convolution from them: the
//! columns of an image are its planes' k·k rows each, so that the convolution is one matrix
//! product `weight (cout, c·k·k) × cols (c·k·k, h·w)`, and col2im (a scatter-add) is
//! im2col's adjoint, the input gradient's last step.

/// Visit every (image index, column index) pair of im2col within one plane: `f(i, j)` where
/// plane element i (of h·w) lands at element j of the plane's k·k column rows (of k·k·h·w).
/// Out-of-image taps (the zero padding) are skipped, so a buffer zeroed once keeps its
/// padding zero however many planes are written into it.
fn for_each_tap(h: usize, w: usize, k: usize, mut f: impl FnMut(usize, usize)) {
    let p = k as isize / 2;
    let hw = h * w;
    for dy in 0..k {
        for dx in 0..k {
            let row = dy * k + dx;
            let (oy, ox) = (dy as isize - p, dx as isize - p);
            for y in 0..h {
                let sy = y as isize + oy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                let (x0, x1) = ((-ox).max(0) as usize, (w as isize - ox).min(w as isize) as usize);
                let src = sy as usize * w;
                for xx in x0..x1 {
                    f(src + (xx as isize + ox) as usize, row * hw + y * w + xx);
                }
            }
        }
    }
}

/// Write the k·k column rows of `plane` (h·w) into `cols` (k·k·h·w); padding taps untouched.
pub fn im2col_plane<T: Copy>(plane: &[T], cols: &mut [T], h: usize, w: usize, k: usize) {
    for_each_tap(h, w, k, |i, j| cols[j] = plane[i]);
}

/// Add the k·k column rows `cols` (k·k·h·w) back onto `plane` (h·w), summing overlapping taps.
pub fn col2im_plane<T: Copy + std::ops::AddAssign>(cols: &[T], plane: &mut [T], h: usize, w: usize, k: usize) {
    for_each_tap(h, w, k, |i, j| plane[i] += cols[j]);
}
