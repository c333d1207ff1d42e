//! im2col and col2im for one (image, channel) plane of a 2-D convolution (kernel kh×kw,
//! stride, zero padding). `conv.rs` builds the convolution from them: the columns of an image
//! are its planes' kh·kw rows each, so that the convolution is one matrix product
//! `weight (cout, c·kh·kw) × cols (c·kh·kw, oh·ow)`, and col2im (a scatter-add) is im2col's
//! adjoint, the input gradient's last step.

/// The shape of one plane's convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Zero padding above and below, left and right.
    pub pad: (usize, usize),
}

impl Geometry {
    /// Output height; `None` when the kernel does not fit the padded input.
    pub fn out_h(&self) -> Option<usize> {
        (self.h + 2 * self.pad.0).checked_sub(self.kh).map(|v| v / self.stride + 1)
    }

    pub fn out_w(&self) -> Option<usize> {
        (self.w + 2 * self.pad.1).checked_sub(self.kw).map(|v| v / self.stride + 1)
    }

    /// Rows of one plane's column block (kh·kw) times its row length (oh·ow).
    pub fn cols_len(&self) -> usize {
        self.kh * self.kw * self.out_len()
    }

    pub fn out_len(&self) -> usize {
        self.out_h().unwrap_or(0) * self.out_w().unwrap_or(0)
    }

    /// Whether the plane itself is its column block (a 1×1 kernel, stride 1, no padding).
    pub fn is_identity(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == (0, 0)
    }

    /// Visit every run of im2col within one plane: `f(src, dst, len)` where plane elements
    /// `src, src + stride, …` (len of them, of h·w) land at elements `dst..dst + len` of the
    /// plane's kh·kw column rows. A run is one output row of one tap; at stride 1 it is
    /// contiguous on both sides and is copied or added as a slice. Out-of-image taps (the zero
    /// padding) are skipped, so a buffer zeroed once keeps its padding zero however many
    /// planes are written into it.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (Some(oh), Some(ow)) = (self.out_h(), self.out_w()) else { return };
        let (s, ohw) = (self.stride as isize, oh * ow);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let row = ky * self.kw + kx;
                // Input column of output column ox: ox·s + kx − pw; the output columns whose
                // input is inside the plane are x0..x1.
                let off = kx as isize - self.pad.1 as isize;
                let x0 = if off >= 0 { 0 } else { (-off + s - 1) / s };
                let x1 = ((self.w as isize - off + s - 1) / s).clamp(0, ow as isize);
                if x0 >= x1 {
                    continue;
                }
                for oy in 0..oh {
                    let iy = (oy * self.stride + ky) as isize - self.pad.0 as isize;
                    if iy < 0 || iy >= self.h as isize {
                        continue;
                    }
                    let src = iy as usize * self.w + (x0 * s + off) as usize;
                    f(src, row * ohw + oy * ow + x0 as usize, (x1 - x0) as usize);
                }
            }
        }
    }
}

/// Write the kh·kw column rows of `plane` (h·w) into `cols`; padding taps untouched.
pub fn im2col_plane<T: Copy>(plane: &[T], cols: &mut [T], g: &Geometry) {
    let s = g.stride;
    g.for_each_run(|src, dst, n| {
        let out = &mut cols[dst..dst + n];
        if s == 1 {
            out.copy_from_slice(&plane[src..src + n]);
        } else {
            out.iter_mut().enumerate().for_each(|(i, o)| *o = plane[src + i * s]);
        }
    });
}

/// Add the kh·kw column rows `cols` back onto `plane` (h·w), summing overlapping taps in tap
/// order.
pub fn col2im_plane<T: Copy + std::ops::AddAssign>(cols: &[T], plane: &mut [T], g: &Geometry) {
    let s = g.stride;
    g.for_each_run(|src, dst, n| {
        let from = &cols[dst..dst + n];
        if s == 1 {
            plane[src..src + n].iter_mut().zip(from).for_each(|(a, &b)| *a += b);
        } else {
            from.iter().enumerate().for_each(|(i, &b)| plane[src + i * s] += b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against im2col written from its definition: column row (ky, kx), output position
    /// (oy, ox) holds plane[oy·s + ky − ph][ox·s + kx − pw], or 0 outside; col2im is its
    /// adjoint (⟨im2col(a), b⟩ = ⟨a, col2im(b)⟩). Square and rectangular kernels, strides 1 to
    /// 3, kernels wider than the plane, asymmetric padding.
    #[test]
    fn im2col_is_its_definition_and_col2im_its_adjoint() {
        let cases = [(5, 6, 3, 3, 1, (1, 1)), (1, 1, 3, 3, 1, (1, 1)), (4, 2, 5, 5, 1, (2, 2)), (3, 7, 1, 1, 1, (0, 0)), (2, 3, 7, 7, 1, (3, 3)), (9, 8, 3, 3, 2, (0, 0)), (7, 7, 1, 7, 1, (0, 3)), (7, 6, 7, 1, 1, (3, 0)), (11, 10, 3, 3, 2, (1, 1)), (10, 9, 5, 3, 3, (2, 1)), (4, 4, 3, 3, 2, (0, 0))];
        for (h, w, kh, kw, stride, pad) in cases {
            let g = Geometry { h, w, kh, kw, stride, pad };
            let (oh, ow) = (g.out_h().unwrap(), g.out_w().unwrap());
            let plane: Vec<f64> = (0..h * w).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut cols = vec![0.0; g.cols_len()];
            im2col_plane(&plane, &mut cols, &g);
            for ky in 0..kh {
                for kx in 0..kw {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (iy, ix) = ((oy * stride + ky) as isize - pad.0 as isize, (ox * stride + kx) as isize - pad.1 as isize);
                            let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                            let want = if inside { plane[iy as usize * w + ix as usize] } else { 0.0 };
                            assert_eq!(cols[(ky * kw + kx) * oh * ow + oy * ow + ox], want, "{g:?}: tap ({ky}, {kx}) at ({oy}, {ox})");
                        }
                    }
                }
            }
            let b: Vec<f64> = (0..g.cols_len()).map(|i| (i as f64 * 0.91).cos()).collect();
            let mut back = vec![0.0; h * w];
            col2im_plane(&b, &mut back, &g);
            let lhs: f64 = cols.iter().zip(&b).map(|(a, b)| a * b).sum();
            let rhs: f64 = plane.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{g:?}: adjoint {lhs} vs {rhs}");
        }
        let too_big = Geometry { h: 2, w: 2, kh: 5, kw: 5, stride: 1, pad: (0, 0) };
        assert_eq!((too_big.out_h(), too_big.cols_len()), (None, 0));
    }
}
