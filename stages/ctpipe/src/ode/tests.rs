//! The solver against independent solutions of the same ODE: the closed form for one Gaussian,
//! and a fine-step RK4 reference (in ln σ, host f64) for the mixtures, whose denoiser is exact.

use super::*;
use crate::analytic::GaussianMixture;
use candle_core::{DType, Device};

/// One Gaussian N(μ, s²): x(σ) = μ + (x(σ₀) − μ)·√((s² + σ²)/(s² + σ₀²)) exactly.
fn closed_form(mu: f64, s: f64, x: f64, hi: f64, lo: f64) -> f64 {
    mu + (x - mu) * ((s * s + lo * lo) / (s * s + hi * hi)).sqrt()
}

/// RK4 on dx/du = x − D(x, eᵘ), u = ln σ (smooth where σ is small), `m` steps from hi to lo.
fn reference(g: &GaussianMixture, x: &[f64], hi: f64, lo: f64, m: usize) -> Vec<f64> {
    let f = |y: &[f64], u: f64| -> Vec<f64> {
        let d = g.denoise_point(y, u.exp());
        y.iter().zip(&d).map(|(a, b)| a - b).collect()
    };
    let axpy = |y: &[f64], k: &[f64], h: f64| -> Vec<f64> { y.iter().zip(k).map(|(a, b)| a + h * b).collect() };
    let (u0, u1) = (hi.ln(), lo.ln());
    let h = (u1 - u0) / m as f64;
    let mut y = x.to_vec();
    for i in 0..m {
        let u = u0 + i as f64 * h;
        let k1 = f(&y, u);
        let k2 = f(&axpy(&y, &k1, h / 2.0), u + h / 2.0);
        let k3 = f(&axpy(&y, &k2, h / 2.0), u + h / 2.0);
        let k4 = f(&axpy(&y, &k3, h), u + h);
        y = (0..y.len()).map(|j| y[j] + h / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j])).collect();
    }
    y
}

/// Starting points x0 + σ·z for data-like x0 (one per mixture component, cycling), as rows.
fn starts(g: &GaussianMixture, sigma: f64, n: usize) -> Vec<Vec<f64>> {
    let dim = g.means[0].len();
    let z: Vec<f64> = crate::rng::normal_vec(&mut crate::rng::stream(5, "ode-test", 0), n * dim).into_iter().map(f64::from).collect();
    (0..n).map(|i| (0..dim).map(|j| g.means[i % g.means.len()][j] + g.std * 0.5 + sigma * z[i * dim + j]).collect()).collect()
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let dim = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), dim), &Device::Cpu).unwrap()
}

/// One step of our solver in f64, row by row.
fn our_step(g: &GaussianMixture, solver: Solver, rows: &[Vec<f64>], hi: f64, lo: f64) -> Vec<Vec<f64>> {
    let n = rows.len();
    step(g, solver, &tensor(rows), &vec![hi; n], &vec![lo; n]).unwrap().to_vec2::<f64>().unwrap()
}

/// `k` Heun steps from hi to lo, equal in ln σ.
fn our_substeps(g: &GaussianMixture, rows: &[Vec<f64>], hi: f64, lo: f64, k: usize) -> Vec<Vec<f64>> {
    let level = |i: usize| (hi.ln() + (lo.ln() - hi.ln()) * i as f64 / k as f64).exp();
    (0..k).fold(rows.to_vec(), |x, i| our_step(g, Solver::Heun, &x, level(i), if i + 1 == k { lo } else { level(i + 1) }))
}

fn max_err(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn grid18() -> Vec<f64> {
    sampling_grid(0.002, 80.0, 18)
}

fn one_d_mixture() -> GaussianMixture {
    GaussianMixture { means: vec![vec![-0.6], vec![0.4]], weights: vec![0.3, 0.7], std: 0.1 }
}

#[test]
fn the_reference_solver_matches_the_closed_form() {
    let g = GaussianMixture { means: vec![vec![0.3]], weights: vec![1.0], std: 0.2 };
    for (hi, lo) in [(80.0, 57.6), (2.0, 1.2), (0.05, 0.02)] {
        for x in [-3.0, 0.1, 40.0] {
            let r = reference(&g, &[x], hi, lo, 400)[0];
            let exact = closed_form(0.3, 0.2, x, hi, lo);
            assert!((r - exact).abs() <= 1e-10 * (1.0 + exact.abs()), "σ {hi}→{lo}, x {x}: {r} vs {exact}");
        }
    }
}

/// One Heun step between adjacent levels of EDM's 18-level grid, against the closed form of a
/// single Gaussian: its error is the step's local truncation error, small at every level.
#[test]
fn one_heun_step_against_the_closed_form() {
    let (mu, s) = (0.3, 0.2);
    let g = GaussianMixture { means: vec![vec![mu]], weights: vec![1.0], std: s };
    let grid = grid18();
    let mut worst: f64 = 0.0;
    for w in grid.windows(2).filter(|w| w[1] > 0.0) {
        let rows = starts(&g, w[0], 64);
        let heun = our_step(&g, Solver::Heun, &rows, w[0], w[1]);
        let exact: Vec<Vec<f64>> = rows.iter().map(|r| vec![closed_form(mu, s, r[0], w[0], w[1])]).collect();
        let euler = our_step(&g, Solver::Euler, &rows, w[0], w[1]);
        // Relative to how far the step moves the points.
        let moved = max_err(&rows, &exact);
        let (e_heun, e_euler) = (max_err(&heun, &exact) / moved, max_err(&euler, &exact) / moved);
        eprintln!("σ {:>9.4} → {:>9.4}: Heun {e_heun:.2e}, Euler {e_euler:.2e} of the move", w[0], w[1]);
        assert!(e_heun < e_euler, "Heun should beat Euler at σ {}", w[0]);
        worst = worst.max(e_heun);
        // Converges to the exact solution at second order: 64 substeps, ≈ 64² = 4096× closer.
        let fine = max_err(&our_substeps(&g, &rows, w[0], w[1], 64), &exact) / moved;
        assert!(fine < e_heun / 1000.0 + 1e-9, "σ {} → {}: 64 Heun substeps {fine:.2e} vs one {e_heun:.2e}", w[0], w[1]);
    }
    // The coarsest point of EDM's grid is where σ passes the data's scale (≈ 6 % of the move).
    assert!(worst < 0.1, "worst relative Heun error {worst}");
}

/// The same on the mixtures (two Gaussians in 2-D, an unbalanced pair in 1-D) against the
/// fine-step reference, and Heun's third-order local error: halving the step divides the error
/// by about 8.
#[test]
fn one_heun_step_against_a_fine_reference_on_mixtures() {
    for (name, g) in [("two gaussians", GaussianMixture::two_gaussians()), ("1-D mixture", one_d_mixture())] {
        let grid = grid18();
        let mut worst: f64 = 0.0;
        for w in grid.windows(2).filter(|w| w[1] > 0.0) {
            let rows = starts(&g, w[0], 32);
            let heun = our_step(&g, Solver::Heun, &rows, w[0], w[1]);
            let exact: Vec<Vec<f64>> = rows.iter().map(|r| reference(&g, r, w[0], w[1], 2000)).collect();
            let rel = max_err(&heun, &exact) / max_err(&rows, &exact);
            eprintln!("{name}: σ {:>9.4} → {:>9.4}: Heun error {rel:.2e} of the move", w[0], w[1]);
            worst = worst.max(rel);
            let fine = max_err(&our_substeps(&g, &rows, w[0], w[1], 64), &exact) / max_err(&rows, &exact);
            // Asymptotically 64² = 4096× closer; ≈ 580× where the two Gaussians' posterior
            // switches sharply (σ ≈ 0.1), not yet in the asymptotic regime at this step size.
            assert!(fine < rel / 300.0 + 1e-9, "{name}: σ {} → {}: 64 Heun substeps {fine:.2e} vs one {rel:.2e}", w[0], w[1]);
        }
        // Largest where trajectories choose their mode (σ ≈ 0.3 for the two Gaussians: ≈ 18 %).
        assert!(worst < 0.25, "{name}: worst relative Heun error {worst}");

        // Order: from σ = 2, steps of Δ and Δ/2 (ln-σ sizes 0.2 and 0.1).
        let hi = 2.0;
        let rows = starts(&g, hi, 32);
        let err = |lo: f64| {
            let exact: Vec<Vec<f64>> = rows.iter().map(|r| reference(&g, r, hi, lo, 4000)).collect();
            max_err(&our_step(&g, Solver::Heun, &rows, hi, lo), &exact)
        };
        let ratio = err(hi * (-0.2f64).exp()) / err(hi * (-0.1f64).exp());
        eprintln!("{name}: halving the step divides Heun's error by {ratio:.2}");
        assert!((6.0..11.0).contains(&ratio), "{name}: error ratio {ratio}, expected ≈ 8 (third-order local error)");
    }
}

/// Per-sample levels give, row by row, what a uniform step gives; f32 agrees with f64 to
/// rounding; a step to 0 is Euler's.
#[test]
fn per_sample_levels_and_the_step_to_zero() {
    let g = GaussianMixture::two_gaussians();
    let grid = grid18();
    let rows: Vec<Vec<f64>> = (0..17).flat_map(|i| starts(&g, grid[i], 1)).collect();
    let (hi, lo): (Vec<f64>, Vec<f64>) = (0..17).map(|i| (grid[i], grid[i + 1])).unzip();
    let mixed = step(&g, Solver::Heun, &tensor(&rows), &hi, &lo).unwrap().to_vec2::<f64>().unwrap();
    for i in 0..17 {
        let one = our_step(&g, Solver::Heun, &rows[i..i + 1], hi[i], lo[i]);
        assert!(max_err(&mixed[i..i + 1], &one) < 1e-12, "row {i}");
    }
    let x32 = tensor(&rows).to_dtype(DType::F32).unwrap();
    let f32_rows = step(&g, Solver::Heun, &x32, &hi, &lo).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let scale = mixed.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
    assert!(max_err(&f32_rows, &mixed) / scale < 1e-6);

    let at = starts(&g, 0.002, 8);
    let to_zero = our_step(&g, Solver::Heun, &at, 0.002, 0.0);
    let euler = our_step(&g, Solver::Euler, &at, 0.002, 0.0);
    assert_eq!(to_zero, euler);
    assert!(step(&g, Solver::Heun, &tensor(&at[..2]), &[0.002, 0.002], &[0.001, 0.0]).is_err());
}
