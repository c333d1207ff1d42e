//! The CPU kernels' vector code: loops compiled for the widest vector instructions the CPU has,
//! and an `exp` those loops can vectorise.
//!
//! The crate is built for the x86-64 baseline (SSE2), so a plain loop runs 4 lanes wide even on
//! an AVX-512 machine, and `f32::exp` is a libm call per element that no loop vectorises through.
//! [`dispatch`] runs a kernel compiled for AVX-512 or AVX2 when the CPU has them (pulp's
//! run-time dispatch, gemm's own), and [`exp`] is a polynomial of plain multiplies and adds.
//!
//! Neither changes results with the instruction set: without fast-math the compiler neither
//! reorders floating-point sums nor fuses a multiply and an add, so every lane width computes the
//! same operations in the same order (tested: the fused norm bit for bit with and without it).

pub use pulp::WithSimd;

/// Runs `kernel` compiled for AVX-512 or AVX2 + FMA where the CPU has them, the baseline
/// otherwise. Only code inlined into the kernel's `with_simd` is compiled for them: it and what
/// it calls are `#[inline(always)]`, and it is a type rather than a closure because a closure's
/// body is inlined or not at the compiler's discretion (a large one is not: the fused norm's ran
/// at the baseline that way).
#[inline(always)]
pub fn dispatch<K: WithSimd>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(kernel)
}

/// Σ f(v) over `values` in f64, in eight interleaved partial sums (element i in lane i mod 8,
/// so that the compiler can keep them in one vector register), added at the end, then the
/// remainder's: a fixed order, so the same bits every run and at every vector width.
#[inline(always)]
pub fn sum8(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// Σ f(aᵢ, bᵢ) in f64, in [`sum8`]'s order.
#[inline(always)]
pub fn sum8_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f64 = a8.remainder().iter().zip(b8.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (ca, cb) in a8.zip(b8) {
        for (acc, (&x, &y)) in acc.iter_mut().zip(ca.iter().zip(cb)) {
            *acc += f(x, y);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// e^x in f32, within 2 ulp of the exact value on [-87, 88] (tested against f64's `exp`).
/// Outside that range the argument is clamped: e^88 ≈ 1.7e38 is the largest result, e^-87 the
/// smallest, which is all the logistic function needs.
///
/// Cody–Waite reduction x = n·ln 2 + r with |r| ≤ ln 2 / 2 and n rounded to nearest by adding
/// 1.5·2²³ (no float-to-int conversion), a degree-6 polynomial for e^r (the minimax
/// coefficients of Cephes' `expf`), and 2ⁿ assembled in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding it rounds to an integer (to nearest, ties to even) held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // n in [-126, 127]: t's bits hold n + 0x4B40_0000; 2ⁿ has exponent bits n + 127.
    let two_n = f32::from_bits((t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127)) << 23);
    er * two_n
}

/// The logistic function 1 / (1 + e^-v), within 3 ulp for v ≥ -87 (below, [`exp`]'s clamp
/// keeps it at 6e-39).
#[inline(always)]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, exact: f64) -> f64 {
        let e = exact as f32;
        // One ulp at the exact value's magnitude.
        let ulp = (f32::from_bits(e.to_bits() + 1) - e) as f64;
        (a as f64 - exact).abs() / ulp
    }

    /// Against f64's exp (correctly rounded to far beyond f32) on a dense grid of [-87, 88] and
    /// at the points the reduction is most delicate: n changing (x = (k + ½)·ln 2) and x = 0.
    #[test]
    fn exp_within_two_ulp() {
        let mut worst = (0.0, 0.0f32);
        let grid = (0..=1_750_000).map(|i| -87.0 + i as f32 * 1e-4);
        let edges = (-125..127).flat_map(|k| {
            let x = (k as f64 + 0.5) * std::f64::consts::LN_2;
            [x as f32, f32::from_bits((x as f32).to_bits() + 1), f32::from_bits((x as f32).to_bits() - 1)]
        });
        for x in grid.chain(edges).chain([0.0, -0.0, 1e-30, -1e-30]).filter(|x| (-87.0..=88.0).contains(x)) {
            let u = ulps(exp(x), (x as f64).exp());
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(exp(0.0), 1.0);
    }

    /// Clamped outside [-87, 88]; NaN stays NaN.
    #[test]
    fn exp_clamps_and_keeps_nan() {
        assert_eq!(exp(1000.0), exp(88.0));
        assert_eq!(exp(f32::INFINITY), exp(88.0));
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(88.0).is_finite() && exp(-87.0) > 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// Within 3 ulp on [-87, 87]; below -88 it is e^-88 ≈ 6e-39 (the clamp) where the exact
    /// value is smaller still: SiLU's output there is under 1e-36 either way.
    #[test]
    fn sigmoid_against_f64() {
        for i in -1740..=1740 {
            let v = i as f32 * 0.05;
            let exact = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!(ulps(sigmoid(v), exact) <= 3.0, "sigmoid({v}) = {} against {exact}", sigmoid(v));
        }
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(sigmoid(-200.0) < 1e-38 && sigmoid(-200.0) >= 0.0);
    }
}
