//! The "same" convolution (odd k×k kernel, stride 1, padding k/2) computed directly from a
//! zero-padded copy of each image, without im2col, forward and backward: `conv.rs` uses it
//! for 3×3 convolutions of few channels (the `tiny` U-Net's and the classifier's; see
//! [`Plan::pays`]).
//!
//! Why: through im2col an image's column matrix is k² times the image (450 KB for 16 channels
//! of 28×28), written, packed by gemm and read again for a product of depth c·k² that is too
//! small to hide those passes (docs/perf.md, issue 18 change 19). Here each tap is a shifted
//! view of the padded planes: with the output computed on the padded grid (row length w + k − 1,
//! the last k − 1 outputs of each row discarded), output position q of tap (ky, kx) reads
//! padded element q + ky·(w + k − 1) + kx, so a run of positions is a contiguous load.
//! - Forward: a block of MR vectors of positions × NR output channels stays in registers and
//!   gets, channel by channel and tap by tap, one fused multiply-add of the shifted input
//!   with each weight (what gemm's micro-kernel does, fed from the padded image instead of
//!   packed columns).
//! - Input gradient: the same kernel on the padded output gradient, weights transposed and
//!   flipped.
//! - Weight gradient: dy times the shifted input, summed over positions in vector lanes
//!   (4 output × 4 input channels at a time, over a fixed group of images), then across them.
//!
//! Every sum runs in one order whatever the thread count or the batch (the weight gradient's
//! groups of images are fixed), so results are the same bits on one machine. Across machines
//! they are not: the lane count sets the weight gradient's partial sums, and the baseline
//! x86-64 build, without fused multiply-add, rounds each product.

use crate::simd::{WithSimd, dispatch};
use candle_core::WithDType;
use pulp::{Simd, bytemuck};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The padded grid's positions are rounded up to a multiple of this, which every kernel's
/// block of MR vectors divides (3·16, 2·8, 2·4, 4·1 positions), so no block runs past them.
const BLOCK: usize = 48;

/// The shapes of one image's convolution on the padded grid.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Input and output channels.
    pub c: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    /// Output channels rounded up to whole register blocks (the weights and output are laid
    /// out with this many; the extra channels have zero weights and are discarded).
    cout_pad: usize,
    /// Padded row length w + k − 1.
    wp: usize,
    /// Output positions computed per channel: h·wp rounded up to [`BLOCK`].
    qr: usize,
    /// Elements per padded input plane: every position any tap of any block reads, rounded up
    /// to [`ALIGN`].
    ps: usize,
    /// Zeros before each plane's padded image, so that the output gradient's grid (which the
    /// weight gradient reads from the plane's element `lead` + (k/2)·(wp + 1) on) starts on a
    /// cache line: its loads are then aligned (split across two cache lines they cost the
    /// weight gradient a quarter of its time, docs/perf.md change 21).
    lead: usize,
    /// Planes of the padded input: c rounded up to [`WG_CHANNELS`], so that the weight
    /// gradient's blocks of channels never run past them (the extra planes stay zero).
    c_pad: usize,
}

/// Elements per cache line of f32 (64 bytes; two lines of f64): planes start on one.
const ALIGN: usize = 16;

/// Input and output channels per register block of the weight gradient.
const WG_CHANNELS: usize = 4;

/// Output channels per register block.
const NR_MAX: usize = 8;

impl Plan {
    pub fn new(c: usize, cout: usize, h: usize, w: usize, k: usize) -> Plan {
        let wp = w + k - 1;
        let qr = (h * wp).next_multiple_of(BLOCK);
        let lead = (ALIGN - (k / 2) * (wp + 1) % ALIGN) % ALIGN;
        let ps = (lead + qr + (k - 1) * (wp + 1)).next_multiple_of(ALIGN);
        Plan { c, cout, h, w, k, cout_pad: cout.next_multiple_of(NR_MAX), wp, qr, ps, lead, c_pad: c.next_multiple_of(WG_CHANNELS) }
    }

    /// Whether a convolution of this shape runs here: odd k > 1 (1×1 needs no columns), stride
    /// 1, padding k/2.
    pub fn applies(kh: usize, kw: usize, stride: usize, pad: (usize, usize)) -> bool {
        kh == kw && kh % 2 == 1 && kh > 1 && stride == 1 && pad == (kh / 2, kh / 2)
    }

    /// Whether the direct kernel is the faster way for these channels and this plane size
    /// (measured against im2col + gemm, docs/perf.md change 19): it streams every weight once
    /// per block of outputs, so beyond about 2 048 channel pairs (64 → 32) gemm's cache
    /// blocking wins; and on planes so small that the padded grid's rounding up to whole
    /// blocks adds more than a third (7×7: 96 positions for 49), the wasted work does.
    pub fn pays(&self) -> bool {
        self.c * self.cout <= 2048 && 3 * self.qr <= 4 * self.h * self.w
    }

    /// Length of the padded copy of one image.
    pub fn padded_len(&self) -> usize {
        self.c_pad * self.ps
    }

    /// Length of one image's output on the padded grid.
    pub fn grid_len(&self) -> usize {
        self.cout_pad * self.qr
    }

    /// Length of the weights as the kernel reads them.
    pub fn weights_len(&self) -> usize {
        self.c * self.k * self.k * self.cout_pad
    }

    /// Copy `image` (c, h, w) into `padded`, which was zeroed once: only the interior is
    /// written, so the border and the slack stay zero however many images pass through it.
    pub fn pad<T: Copy>(&self, image: &[T], padded: &mut [T]) {
        let (p, hw) = (self.k / 2, self.h * self.w);
        for (plane, dst) in image.chunks_exact(hw).zip(padded.chunks_exact_mut(self.ps)) {
            for (row, src) in plane.chunks_exact(self.w).enumerate() {
                let at = self.lead + (row + p) * self.wp + p;
                dst[at..at + self.w].copy_from_slice(src);
            }
        }
    }

    /// The (cout, h, w) output from the padded grid's first `cout` channels, written into
    /// memory that may be uninitialised (every element of `out` is written).
    pub fn unpad<T: Copy>(&self, grid: &[T], out: &mut [MaybeUninit<T>]) {
        assert_eq!(out.len(), self.cout * self.h * self.w);
        for (plane, src) in out.chunks_exact_mut(self.h * self.w).zip(grid.chunks_exact(self.qr)) {
            for (row, dst) in plane.chunks_exact_mut(self.w).enumerate() {
                dst.write_copy_of_slice(&src[row * self.wp..row * self.wp + self.w]);
            }
        }
    }

    /// The kernel's weights of a forward convolution: weight (cout, c, k, k) as
    /// [channel][tap][output channel], output channels padded with zeros.
    pub fn forward_weights<T: WithDType>(&self, weight: &[T]) -> Vec<T> {
        let kk = self.k * self.k;
        let mut wt = vec![T::zero(); self.weights_len()];
        for (o, filters) in weight.chunks_exact(self.c * kk).enumerate() {
            for (i, &v) in filters.iter().enumerate() {
                wt[i * self.cout_pad + o] = v;
            }
        }
        wt
    }

    /// The plan of the input gradient, a convolution of the output's gradient (cout channels)
    /// into c channels.
    pub fn transposed(&self) -> Plan {
        Plan::new(self.cout, self.c, self.h, self.w, self.k)
    }

    /// The kernel's weights of the input gradient of a forward convolution with `weight`
    /// (cout, c, k, k), this being the [`transposed`](Self::transposed) plan (its input
    /// channels are the forward's outputs): the gradient at a position gathers each tap's
    /// weight from the opposite side, so wt[forward output o][tap t][forward input i] =
    /// weight[o][i][k² − 1 − t].
    pub fn input_gradient_weights<T: WithDType>(&self, weight: &[T]) -> Vec<T> {
        let kk = self.k * self.k;
        let mut wt = vec![T::zero(); self.weights_len()];
        for (o, filters) in weight.chunks_exact(self.cout * kk).enumerate() {
            for (i, taps) in filters.chunks_exact(kk).enumerate() {
                for (t, &v) in taps.iter().enumerate() {
                    wt[(o * kk + kk - 1 - t) * self.cout_pad + i] = v;
                }
            }
        }
        wt
    }

    /// The weight gradient (cout, c, k, k) of a group of images, this being the forward plan
    /// (the discarded grid positions, where dy is zero, multiply real inputs: an infinite
    /// input there makes its taps NaN, where a convolution without them stays finite; it
    /// takes a run that has already diverged):
    /// dW[o][i][t] = Σ over images, then output positions q, of dy[o][q]·x[i][q + offset of
    /// tap t], from the images padded back to back and their output gradients padded by the
    /// [`transposed`](Self::transposed) plan (whose border puts zeros at the padded grid's
    /// discarded positions). Each element is summed in vector lanes (image by image, position
    /// by position), then across the lanes: one sum across lanes per group, not per image.
    pub fn weight_gradient<T: Elem>(&self, padded: &[T], padded_dy: &[T], dw: &mut [T]) {
        let t = self.transposed();
        let images = padded.len() / self.padded_len();
        assert!(padded.len() == images * self.padded_len() && padded_dy.len() == images * t.padded_len() && (self.ps, self.lead) == (t.ps, t.lead));
        assert!(dw.len() == self.cout * self.c * self.k * self.k);
        dispatch(WeightGradient { plan: self, x: padded, dy: padded_dy, images, dw, offsets: &self.offsets(), dy_shift: (self.k / 2) * (self.wp + 1) });
    }

    /// Where each tap reads, relative to the output position, in the padded input.
    fn offsets(&self) -> Vec<usize> {
        (0..self.k * self.k).map(|t| (t / self.k) * self.wp + t % self.k).collect()
    }

    /// The padded-grid bias, zero past `cout` (or everywhere without one).
    pub fn bias<T: WithDType>(&self, bias: Option<&[T]>) -> Vec<T> {
        let mut b = vec![T::zero(); self.cout_pad];
        if let Some(bias) = bias {
            b[..self.cout].copy_from_slice(bias);
        }
        b
    }

    /// The output grid of one padded image for the output channels of register blocks
    /// `first..first + grid.len() / (NR_MAX·qr)` (NR_MAX channels each, qr positions per
    /// channel).
    pub fn run<T: Elem>(&self, padded: &[T], wt: &[T], bias: &[T], grid: &mut [T], first: usize) {
        let channels = grid.len() / self.qr;
        assert!(padded.len() >= self.c * self.ps && wt.len() == self.weights_len() && bias.len() == self.cout_pad);
        assert!(grid.len().is_multiple_of(NR_MAX * self.qr) && first * NR_MAX + channels <= self.cout_pad);
        dispatch(Kernel { plan: self, padded, wt, bias, grid, first: first * NR_MAX, offsets: &self.offsets() });
    }
}

struct Kernel<'a, T> {
    plan: &'a Plan,
    padded: &'a [T],
    wt: &'a [T],
    bias: &'a [T],
    /// Output rows of `grid`: channels first.. .
    grid: &'a mut [T],
    first: usize,
    offsets: &'a [usize],
}

impl<T: Elem> WithSimd for Kernel<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Registers: MR·NR accumulators, MR inputs and a weight; 32 vector registers with
        // AVX-512, 16 below it.
        match (T::lanes::<S>(), T::wide::<S>()) {
            (16, _) => self.blocks::<S, 3, 8>(simd),
            (8, true) => self.blocks::<S, 2, 8>(simd),
            (8 | 4, _) => self.blocks::<S, 2, 4>(simd),
            _ => self.blocks::<S, 4, 4>(simd),
        }
    }
}

impl<T: Elem> Kernel<'_, T> {
    // Index loops over the register block: the accumulators' shape reads as the arithmetic.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn blocks<S: Simd, const MR: usize, const NR: usize>(self, simd: S) {
        let lanes = T::lanes::<S>();
        let p = self.plan;
        let step = MR * lanes;
        debug_assert!(BLOCK.is_multiple_of(step) && NR_MAX.is_multiple_of(NR));
        let channels = self.grid.len() / p.qr;
        for co0 in (self.first..self.first + channels).step_by(NR) {
            for q0 in (0..p.qr).step_by(step) {
                let mut acc = [[T::splat(simd, T::zero()); NR]; MR];
                for o in 0..NR {
                    let b = T::splat(simd, self.bias[co0 + o]);
                    for a in acc.iter_mut() {
                        a[o] = b;
                    }
                }
                // SAFETY: `run` asserted c padded planes (each read from `lead` on, at most the
                // largest tap offset, ps − lead − qr or less, past the last block), c·k² rows
                // of weights of cout_pad ≥ co0 + NR, and the output rows this block writes.
                for ch in 0..p.c {
                    let plane = unsafe { self.padded.as_ptr().add(ch * p.ps + p.lead + q0) };
                    let wts = unsafe { self.wt.as_ptr().add(ch * self.offsets.len() * p.cout_pad + co0) };
                    for (t, &off) in self.offsets.iter().enumerate() {
                        let x: [T::V<S>; MR] = std::array::from_fn(|j| unsafe { T::load_ptr::<S>(plane.add(off + j * lanes)) });
                        let w = unsafe { wts.add(t * p.cout_pad) };
                        for o in 0..NR {
                            let wv = T::splat(simd, unsafe { *w.add(o) });
                            for j in 0..MR {
                                acc[j][o] = T::fma(simd, x[j], wv, acc[j][o]);
                            }
                        }
                    }
                }
                for o in 0..NR {
                    let row = &mut self.grid[(co0 - self.first + o) * p.qr + q0..];
                    for j in 0..MR {
                        row[j * lanes..(j + 1) * lanes].copy_from_slice(bytemuck::cast_slice::<T::V<S>, T>(std::slice::from_ref(&acc[j][o])));
                    }
                }
            }
        }
    }
}

struct WeightGradient<'a, T> {
    plan: &'a Plan,
    x: &'a [T],
    dy: &'a [T],
    images: usize,
    dw: &'a mut [T],
    offsets: &'a [usize],
    /// Where output position 0 of the gradient lies in its padded planes.
    dy_shift: usize,
}

impl<T: Elem> WithSimd for WeightGradient<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // R·4 accumulators, 4 inputs and a gradient vector.
        if T::wide::<S>() { self.blocks::<S, 4>(simd) } else { self.blocks::<S, 2>(simd) }
    }
}

impl<T: Elem> WeightGradient<'_, T> {
    #[inline(always)]
    fn blocks<S: Simd, const R: usize>(self, simd: S) {
        const C: usize = WG_CHANNELS;
        let (p, lanes) = (self.plan, T::lanes::<S>());
        let (kk, ps) = (self.offsets.len(), p.ps);
        let (x_stride, dy_stride) = (p.c_pad * ps, p.transposed().c_pad * ps);
        debug_assert!(p.qr.is_multiple_of(lanes) && WG_CHANNELS.is_multiple_of(R));
        // Per block of channels, each image's planes (8 of them, tens of kilobytes) stay in L1
        // while every tap sweeps them, the taps' accumulators parked in `per_tap` between
        // images; with the taps outermost, every sweep streamed the group's planes from L2.
        let mut per_tap = vec![[[T::splat(simd, T::zero()); C]; R]; kk];
        for o0 in (0..p.cout).step_by(R) {
            for i0 in (0..p.c).step_by(C) {
                per_tap.iter_mut().for_each(|a| *a = [[T::splat(simd, T::zero()); C]; R]);
                for image in 0..self.images {
                    // SAFETY: `weight_gradient` asserted `images` padded images, each of
                    // c_pad ≥ i0 + C planes of x and as many of dy as its plan pads (cout
                    // rounded up to a multiple of C, so o0 + R fits); a plane is read from
                    // lead + an offset ≤ ps − lead − qr, up to qr further.
                    let xs: [*const T; C] = std::array::from_fn(|c| unsafe { self.x.as_ptr().add(image * x_stride + (i0 + c) * ps + p.lead) });
                    let ds: [*const T; R] = std::array::from_fn(|r| unsafe { self.dy.as_ptr().add(image * dy_stride + (o0 + r) * ps + p.lead + self.dy_shift) });
                    for (acc, &off) in per_tap.iter_mut().zip(self.offsets) {
                        let mut a = *acc;
                        let xs: [*const T; C] = std::array::from_fn(|c| unsafe { xs[c].add(off) });
                        for q in (0..p.qr).step_by(lanes) {
                            let x: [T::V<S>; C] = std::array::from_fn(|c| unsafe { T::load_ptr::<S>(xs[c].add(q)) });
                            for (r, a) in a.iter_mut().enumerate() {
                                let d = unsafe { T::load_ptr::<S>(ds[r].add(q)) };
                                for c in 0..C {
                                    a[c] = T::fma(simd, d, x[c], a[c]);
                                }
                            }
                        }
                        *acc = a;
                    }
                }
                for (t, acc) in per_tap.iter().enumerate() {
                    for (r, acc) in acc.iter().enumerate().take(p.cout - o0) {
                        for (c, &v) in acc.iter().enumerate().take(p.c - i0) {
                            self.dw[((o0 + r) * p.c + i0 + c) * kk + t] = T::reduce_sum(simd, v);
                        }
                    }
                }
            }
        }
    }
}

/// An element type the kernel runs on, with its vector of pulp's instruction set `S`.
pub(super) trait Elem: WithDType + bytemuck::Pod {
    type V<S: Simd>: Copy + bytemuck::Pod;

    #[inline(always)]
    fn lanes<S: Simd>() -> usize {
        std::mem::size_of::<Self::V<S>>() / std::mem::size_of::<Self>()
    }

    /// Whether `S` has 32 vector registers (AVX-512), not 16.
    #[inline(always)]
    fn wide<S: Simd>() -> bool {
        std::mem::size_of::<Self::V<S>>() >= 64
    }

    fn splat<S: Simd>(simd: S, v: Self) -> Self::V<S>;

    fn reduce_sum<S: Simd>(simd: S, v: Self::V<S>) -> Self;

    /// a·b + c, fused where the CPU can.
    fn fma<S: Simd>(simd: S, a: Self::V<S>, b: Self::V<S>, c: Self::V<S>) -> Self::V<S>;

    /// The vector of the elements from `p` on, at any alignment.
    ///
    /// # Safety
    /// A whole vector of elements from `p` on must be readable.
    #[inline(always)]
    unsafe fn load_ptr<S: Simd>(p: *const Self) -> Self::V<S> {
        unsafe { (p as *const Self::V<S>).read_unaligned() }
    }
}

impl Elem for f32 {
    type V<S: Simd> = S::f32s;

    #[inline(always)]
    fn splat<S: Simd>(simd: S, v: f32) -> S::f32s {
        simd.splat_f32s(v)
    }

    #[inline(always)]
    fn fma<S: Simd>(simd: S, a: S::f32s, b: S::f32s, c: S::f32s) -> S::f32s {
        simd.mul_add_e_f32s(a, b, c)
    }

    #[inline(always)]
    fn reduce_sum<S: Simd>(simd: S, v: S::f32s) -> f32 {
        simd.reduce_sum_f32s(v)
    }
}

impl Elem for f64 {
    type V<S: Simd> = S::f64s;

    #[inline(always)]
    fn splat<S: Simd>(simd: S, v: f64) -> S::f64s {
        simd.splat_f64s(v)
    }

    #[inline(always)]
    fn fma<S: Simd>(simd: S, a: S::f64s, b: S::f64s, c: S::f64s) -> S::f64s {
        simd.mul_add_e_f64s(a, b, c)
    }

    #[inline(always)]
    fn reduce_sum<S: Simd>(simd: S, v: S::f64s) -> f64 {
        simd.reduce_sum_f64s(v)
    }
}

/// `conv2d(x, weight) + bias` of n images (x (n, c, h, w), weight (cout, c, k, k)): images in
/// parallel, or with fewer images than threads each image's output channel blocks.
pub(super) fn forward<T: Elem>(x: &[T], weight: &[T], bias: &[T], n: usize, plan: &Plan) -> Vec<T> {
    let (wt, bias) = (plan.forward_weights(weight), plan.bias(Some(bias)));
    let (wt, bias) = (&wt[..], &bias[..]);
    let (x_len, y_len) = (plan.c * plan.h * plan.w, plan.cout * plan.h * plan.w);
    // The zips below stop at the shorter side: every output element is written only if x
    // holds all n images.
    assert_eq!(x.len(), n * x_len, "direct convolution: input length");
    let threads = rayon::current_num_threads();
    // SAFETY: the chunks cover all n·y_len elements, and `unpad` writes each of its image.
    unsafe {
        super::written(n * y_len, |out| {
            if n >= threads {
                let run = n.div_ceil(threads);
                out.par_chunks_mut(run * y_len).zip(x.par_chunks(run * x_len)).for_each(|(ys, xs)| {
                    let mut padded = vec![T::zero(); plan.padded_len()];
                    let mut grid = vec![T::zero(); plan.grid_len()];
                    for (y, image) in ys.chunks_exact_mut(y_len).zip(xs.chunks_exact(x_len)) {
                        plan.pad(image, &mut padded);
                        plan.run(&padded, wt, bias, &mut grid, 0);
                        plan.unpad(&grid, y);
                    }
                });
            } else {
                let (mut padded, mut grid) = (vec![T::zero(); plan.padded_len()], vec![T::zero(); plan.grid_len()]);
                for (y, image) in out.chunks_exact_mut(y_len).zip(x.chunks_exact(x_len)) {
                    plan.pad(image, &mut padded);
                    grid.par_chunks_mut(NR_MAX * plan.qr).enumerate().for_each(|(b, g)| plan.run(&padded, wt, bias, g, b));
                    plan.unpad(&grid, y);
                }
            }
        })
    }
}

/// A zeroed buffer of `len` elements starting on a cache line (a `Vec`'s start is only as
/// aligned as the allocator makes it: 16 bytes with glibc), so that the planes of a padded
/// image, each a multiple of [`ALIGN`] long, all start on one.
struct Aligned<T> {
    buf: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: WithDType> Aligned<T> {
    fn zeros(len: usize) -> Aligned<T> {
        let buf = vec![T::zero(); len + ALIGN];
        let at = buf.as_ptr().align_offset(64).min(ALIGN);
        Aligned { buf, at, len }
    }

    fn get(&self) -> &[T] {
        &self.buf[self.at..self.at + self.len]
    }

    fn get_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// Images whose weight gradient is summed in one pass (`Plan::weight_gradient`): fixed, so
/// that the sums do not depend on the thread count.
const GROUP: usize = 4;

/// [dx | dw | db] of n images' convolution for x, weight and the output's gradient dy (dx
/// only with `need_dx`). Groups of [`GROUP`] images run in parallel, each group's weight and
/// bias gradients summed in group order after.
pub(super) fn backward<T: Elem>(x: &[T], weight: &[T], dy: &[T], n: usize, plan: &Plan, need_dx: bool) -> Vec<T> {
    let t = plan.transposed();
    let wt = if need_dx { t.input_gradient_weights(weight) } else { Vec::new() };
    let zero = t.bias::<T>(None);
    let (x_len, y_len, w_len) = (plan.c * plan.h * plan.w, plan.cout * plan.h * plan.w, plan.cout * plan.c * plan.k * plan.k);
    // As in `forward`: dx is written whole only if x and dy hold all n images.
    assert!(x.len() == n * x_len && dy.len() == n * y_len && weight.len() == w_len, "direct convolution backward: operand lengths");
    let groups = n.div_ceil(GROUP);
    let dx_len = if need_dx { n * x_len } else { 0 };
    let mut part_w = vec![T::zero(); groups * w_len];
    let mut part_b = vec![T::zero(); groups * plan.cout];
    // One contiguous run of groups per thread, so that each thread zeroes its buffers once.
    let run = groups.div_ceil(rayon::current_num_threads()).max(1);
    // SAFETY: with need_dx the chunks cover all dx_len elements, and `unpad` writes each of
    // its image; without, dx is empty.
    let mut out = unsafe {
        super::written(dx_len, |dx| {
            let mut dx_runs: Vec<Option<&mut [MaybeUninit<T>]>> = if need_dx { dx.chunks_mut(run * GROUP * x_len).map(Some).collect() } else { (0..groups.div_ceil(run)).map(|_| None).collect() };
            dx_runs
                .par_iter_mut()
                .zip(part_w.par_chunks_mut(run * w_len).zip(part_b.par_chunks_mut(run * plan.cout)))
                .zip(x.par_chunks(run * GROUP * x_len).zip(dy.par_chunks(run * GROUP * y_len)))
                .for_each(|((dxs, (dws, dbs)), (xs, dys))| {
                    let (mut padded, mut padded_dy) = (Aligned::<T>::zeros(GROUP * plan.padded_len()), Aligned::<T>::zeros(GROUP * t.padded_len()));
                    let mut grid = if dxs.is_some() { vec![T::zero(); t.grid_len()] } else { Vec::new() };
                    let mut db = vec![T::zero(); plan.cout];
                    let mut dx_groups = dxs.as_deref_mut().map(|dxs| dxs.chunks_mut(GROUP * x_len));
                    let per_group = dws.chunks_exact_mut(w_len).zip(dbs.chunks_exact_mut(plan.cout)).zip(xs.chunks(GROUP * x_len).zip(dys.chunks(GROUP * y_len)));
                    for ((dw, dbg), (images, dyg)) in per_group {
                        let g = images.len() / x_len;
                        let mut dx_images = dx_groups.as_mut().and_then(|it| it.next()).map(|d| d.chunks_exact_mut(x_len));
                        for (i, (image, dyi)) in images.chunks_exact(x_len).zip(dyg.chunks_exact(y_len)).enumerate() {
                            let pdy = &mut padded_dy.get_mut()[i * t.padded_len()..(i + 1) * t.padded_len()];
                            t.pad(dyi, pdy);
                            if let Some(dxi) = dx_images.as_mut().and_then(|it| it.next()) {
                                t.run(pdy, &wt, &zero, &mut grid, 0);
                                t.unpad(&grid, dxi);
                            }
                            plan.pad(image, &mut padded.get_mut()[i * plan.padded_len()..(i + 1) * plan.padded_len()]);
                            super::conv::bias_gradient(dyi, &mut db);
                            dbg.iter_mut().zip(&db).for_each(|(s, &v)| *s += v);
                        }
                        plan.weight_gradient(&padded.get()[..g * plan.padded_len()], &padded_dy.get()[..g * t.padded_len()], dw);
                    }
                })
        })
    };
    out.reserve(w_len + plan.cout);
    out.extend_from_slice(&super::conv::sum_parts(&part_w, w_len));
    out.extend_from_slice(&super::conv::sum_parts(&part_b, plan.cout));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Tensor};

    fn normal(purpose: &str, shape: &[usize], dtype: DType) -> Tensor {
        super::super::op_checks::normal(11, purpose, shape, dtype).as_tensor().clone()
    }

    fn values<T: WithDType>(t: &Tensor) -> Vec<T> {
        t.flatten_all().unwrap().to_dtype(T::DTYPE).unwrap().to_vec1::<T>().unwrap()
    }

    /// Largest |a − e| over the largest |e|.
    fn relative_error<T: WithDType>(a: &[T], e: &[T]) -> f64 {
        assert_eq!(a.len(), e.len());
        let scale = e.iter().map(|v| v.to_f64().abs()).fold(1e-30, f64::max);
        a.iter().zip(e).map(|(a, e)| (a.to_f64() - e.to_f64()).abs()).fold(0.0, f64::max) / scale
    }

    /// The kernel's convolution and its three gradients (of Σ r·y) against candle's own
    /// `conv2d` after its zero padding, plus the bias, differentiated by candle: shapes the
    /// blocks do not divide (channels 1, 3, 9, 17; planes 1×1, 5×4, 13×6; kernels 3, 5 and 7,
    /// one wider than the plane), batches of 1 to 9 (groups of 4 with a remainder), f64 to
    /// 1e-12 (the same products in another order) and f32 to 2e-6. Without the input
    /// gradient, the weight and bias gradients are the same bits.
    #[test]
    fn equals_candles_conv2d_with_its_gradients() {
        let cases = [(1, 1, 1, 1, 1, 3), (3, 2, 5, 5, 4, 3), (5, 9, 17, 13, 6, 3), (4, 3, 2, 7, 7, 5), (2, 5, 3, 3, 3, 7), (9, 16, 16, 14, 14, 3), (1, 4, 8, 28, 28, 3), (6, 1, 16, 10, 12, 3)];
        for (n, c, cout, h, w, k) in cases {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
                let case = format!("n {n}, {c} → {cout}, {h}×{w}, k {k}, {dtype:?}");
                let x = candle_core::Var::from_tensor(&normal("x", &[n, c, h, w], dtype)).unwrap();
                let wt = candle_core::Var::from_tensor(&normal("w", &[cout, c, k, k], dtype)).unwrap();
                let b = candle_core::Var::from_tensor(&normal("b", &[cout], dtype)).unwrap();
                let r = normal("r", &[n, cout, h, w], dtype);
                let p = k / 2;
                let y = x.pad_with_zeros(2, p, p).unwrap().pad_with_zeros(3, p, p).unwrap().conv2d(&wt, 0, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap()).unwrap();
                let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let expected = [values(&y), values(g.get(&x).unwrap()), values(g.get(&wt).unwrap()), values(g.get(&b).unwrap())];
                let plan = Plan::new(c, cout, h, w, k);
                if dtype == DType::F64 {
                    check::<f64>(&plan, n, [&x, &wt, &b], &r, &expected, tol, &case);
                } else {
                    check::<f32>(&plan, n, [&x, &wt, &b], &r, &expected, tol, &case);
                }
            }
        }
    }

    fn check<T: Elem>(plan: &Plan, n: usize, [x, w, b]: [&Tensor; 3], r: &Tensor, expected: &[Vec<f64>; 4], tol: f64, case: &str) {
        let (x, w, b, r) = (values::<T>(x), values::<T>(w), values::<T>(b), values::<T>(r));
        let expected: Vec<Vec<T>> = expected.iter().map(|v| v.iter().map(|&e| T::from_f64(e)).collect()).collect();
        let y = forward(&x, &w, &b, n, plan);
        let grads = backward(&x, &w, &r, n, plan, true);
        let (dx, rest) = grads.split_at(x.len());
        let (dw, db) = rest.split_at(w.len());
        for (what, ours, theirs) in [("output", &y[..], &expected[0]), ("dx", dx, &expected[1]), ("dw", dw, &expected[2]), ("db", db, &expected[3])] {
            let e = relative_error(ours, theirs);
            assert!(e <= tol, "{case}: {what} differs by {e:.2e}");
        }
        assert!(backward(&x, &w, &r, n, plan, false) == rest, "{case}: the weight and bias gradients changed without dx");
    }

    /// An image's output and input gradient are the same bits whatever batch it is in (each
    /// output is summed in one order; with one image, output channel blocks run in parallel).
    #[test]
    fn an_image_does_not_depend_on_its_batch() {
        let (n, c, cout, h, w) = (5, 6, 20, 14, 15);
        let x = values::<f32>(&normal("x", &[n, c, h, w], DType::F32));
        let wt = values::<f32>(&normal("w", &[cout, c, 3, 3], DType::F32));
        let b = values::<f32>(&normal("b", &[cout], DType::F32));
        let r = values::<f32>(&normal("r", &[n, cout, h, w], DType::F32));
        let plan = Plan::new(c, cout, h, w, 3);
        let (x_len, y_len) = (c * h * w, cout * h * w);
        let (y, dx) = (forward(&x, &wt, &b, n, &plan), backward(&x, &wt, &r, n, &plan, true));
        for i in 0..n {
            let image = &x[i * x_len..(i + 1) * x_len];
            assert!(forward(image, &wt, &b, 1, &plan) == y[i * y_len..(i + 1) * y_len], "output of image {i}");
            let alone = backward(image, &wt, &r[i * y_len..(i + 1) * y_len], 1, &plan, true);
            assert!(alone[..x_len] == dx[i * x_len..(i + 1) * x_len], "input gradient of image {i}");
        }
    }

    /// Where the direct kernel is used: small channel counts on planes the padded grid does
    /// not inflate by more than a third.
    #[test]
    fn pays_on_small_channels_and_planes_that_fill_the_grid() {
        let pays = |c, cout, h, w, k| Plan::new(c, cout, h, w, k).pays();
        assert!(pays(16, 16, 28, 28, 3) && pays(64, 32, 14, 14, 3) && pays(1, 128, 28, 28, 3));
        assert!(!pays(128, 128, 28, 28, 3) && !pays(64, 64, 14, 14, 3));
        assert!(!pays(32, 32, 7, 7, 3) && !pays(16, 16, 8, 8, 3));
        assert!(Plan::applies(3, 3, 1, (1, 1)) && Plan::applies(5, 5, 1, (2, 2)));
        assert!(!Plan::applies(1, 1, 1, (0, 0)) && !Plan::applies(3, 3, 2, (1, 1)) && !Plan::applies(1, 7, 1, (0, 3)) && !Plan::applies(3, 3, 1, (0, 0)));
    }
}
