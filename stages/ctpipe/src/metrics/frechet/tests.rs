use super::*;
use candle_core::{DType, Device};

fn stats(mean: Vec<f64>, cov: Vec<f64>) -> FeatureStats {
    FeatureStats { mean, cov, count: 100 }
}

fn diag(v: &[f64]) -> Vec<f64> {
    let d = v.len();
    let mut c = vec![0.0; d * d];
    for (i, x) in v.iter().enumerate() {
        c[i * d + i] = *x;
    }
    c
}

#[test]
fn identical_statistics_give_zero() {
    let cov = vec![2.0, 0.5, 0.1, 0.5, 1.0, 0.2, 0.1, 0.2, 0.7];
    let a = stats(vec![1.0, -2.0, 3.0], cov);
    let fd = frechet_distance(&a, &a).unwrap();
    assert!(fd.abs() < 1e-10, "{fd}");
}

#[test]
fn diagonal_covariances_match_the_closed_form() {
    // For diagonal Σ: FD = ‖Δμ‖² + Σᵢ (√aᵢ − √bᵢ)².
    let (va, vb) = ([4.0, 1.0, 0.25, 9.0], [1.0, 1.0, 1.0, 0.01]);
    let a = stats(vec![0.0, 1.0, 2.0, 3.0], diag(&va));
    let b = stats(vec![1.0, 1.0, 0.0, 3.0], diag(&vb));
    let want = 1.0 + 4.0 + va.iter().zip(&vb).map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let got = frechet_distance(&a, &b).unwrap();
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
}

#[test]
fn commuting_covariances_match_the_closed_form() {
    // Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute; tr √(Σ1Σ2) = Σ √(aᵢ bᵢ).
    let s = std::f64::consts::FRAC_1_SQRT_2;
    let q = [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]];
    let rot = |v: [f64; 3]| -> Vec<f64> {
        let mut c = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                c[i * 3 + j] = (0..3).map(|k| q[i][k] * v[k] * q[j][k]).sum();
            }
        }
        c
    };
    let (va, vb) = ([3.0, 0.5, 2.0], [1.0, 2.0, 0.1]);
    let a = stats(vec![0.0; 3], rot(va));
    let b = stats(vec![0.0, 0.0, 2.0], rot(vb));
    let want = 4.0 + va.iter().zip(&vb).map(|(x, y): (&f64, &f64)| x + y - 2.0 * (x * y).sqrt()).sum::<f64>();
    let got = frechet_distance(&a, &b).unwrap();
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
}

#[test]
fn dimension_mismatch_is_an_error() {
    let a = stats(vec![0.0; 2], diag(&[1.0, 1.0]));
    let b = stats(vec![0.0; 3], diag(&[1.0, 1.0, 1.0]));
    assert!(frechet_distance(&a, &b).is_err());
}

/// Random statistics whose distances pytorch-fid (scipy's sqrtm) computed once; see
/// `tests/fixtures/make_frechet.py`. The rank-deficient case (30 samples in 64 dimensions) is
/// where scipy's sqrtm is least accurate, so its tolerance is looser.
#[test]
fn random_cases_match_pytorch_fid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frechet.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(meta.metadata().as_ref().unwrap().get("expected").unwrap()).unwrap();
    let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let load = |name: &str, side: &str| {
        let mean: Vec<f64> = t[&format!("{name}.{side}.mu")].to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        let cov: Vec<f64> = t[&format!("{name}.{side}.sigma")].flatten_all().unwrap().to_vec1().unwrap();
        stats(mean, cov)
    };
    assert_eq!(expected.len(), 3);
    for (name, want) in &expected {
        let want = want.as_f64().unwrap();
        let got = frechet_distance(&load(name, "a"), &load(name, "b")).unwrap();
        let tol = if name.contains("rankdef") { 1e-6 } else { 1e-9 };
        assert!(((got - want) / want).abs() < tol, "{name}: {got} vs scipy {want}");
    }
}
