//! im2col and col2im for stride-1 "same" convolutions, as candle custom ops with CPU kernels.
//!
//! A convolution becomes `weight (cout, c·k·k) × cols (n, c·k·k, h·w)`: one batched matrix
//! product forward and two backward, with `col2im` (a scatter-add) as im2col's gradient. This
//! replaces candle's CPU `conv2d` backward, whose input gradient is a direct-loop transposed
//! convolution (a `tiny` U-Net step at batch 32 took 3.4 s that way; composing im2col from
//! candle's pads and slices was slower still, its backward allocating a padded copy per tap).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// (n, c, h, w) → (n, c·k·k, h·w), zero padding k/2; rows ordered (c, dy, dx).
pub struct Im2Col {
    pub k: usize,
}

/// The adjoint of [`Im2Col`]: (n, c·k·k, h·w) → (n, c, h, w), summing overlapping taps.
struct Col2Im {
    k: usize,
    c: usize,
    h: usize,
    w: usize,
}

fn contiguous<'a, T: WithDType>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("im2col/col2im need contiguous inputs"),
    }
}

/// Visit every (image index, column index) pair of im2col within one (image, channel) plane:
/// `f(i, j)` where plane element i (of h·w) lands at element j of the plane's k·k column rows
/// (of k·k·h·w). Out-of-image taps (the zero padding) are skipped.
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

// Planes are independent (each writes its own block of the output), so they run in parallel:
// the convolution's matrix products are multi-threaded, and a serial im2col/col2im left the
// other cores idle for a large share of a CPU training step.

fn im2col<T: WithDType>(x: &[T], n: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<T> {
    let (hw, block) = (h * w, k * k * h * w);
    let mut out = vec![T::zero(); n * c * block];
    out.par_chunks_mut(block).enumerate().for_each(|(plane, cols)| {
        let src = &x[plane * hw..(plane + 1) * hw];
        for_each_tap(h, w, k, |i, j| cols[j] = src[i]);
    });
    out
}

fn col2im<T: WithDType>(cols: &[T], n: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<T> {
    let (hw, block) = (h * w, k * k * h * w);
    let mut out = vec![T::zero(); n * c * hw];
    out.par_chunks_mut(hw).enumerate().for_each(|(plane, img)| {
        let src = &cols[plane * block..(plane + 1) * block];
        for_each_tap(h, w, k, |i, j| img[i] += src[j]);
    });
    out
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let k = self.k;
        let shape = Shape::from((n, c * k * k, h * w));
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(im2col(contiguous(v, l)?, n, c, h, w, k)),
            CpuStorage::F64(v) => CpuStorage::F64(im2col(contiguous(v, l)?, n, c, h, w, k)),
            _ => candle_core::bail!("im2col: f32 or f64 only"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im { k: self.k, c, h, w })?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, _, _) = l.shape().dims3()?;
        let (k, c, h, w) = (self.k, self.c, self.h, self.w);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(col2im(contiguous(v, l)?, n, c, h, w, k)),
            CpuStorage::F64(v) => CpuStorage::F64(col2im(contiguous(v, l)?, n, c, h, w, k)),
            _ => candle_core::bail!("col2im: f32 or f64 only"),
        };
        Ok((out, Shape::from((n, c, h, w))))
    }
}
