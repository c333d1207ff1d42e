//! kernels/fused.cu run on the host under kernels/emulation/ (every CUDA thread an OS thread,
//! C++20, g++), against the CPU code each kernel mirrors. This checks the kernels' logic —
//! indexing, reductions, barriers, the f32 arithmetic — on machines without a GPU; the launch
//! glue in launch.rs is checked only on a GPU (tests/gpu_agreement.rs).

use super::{grid_for, kernel_kind, NORM_BLOCKS};
use crate::train::optim::{host_update, Kind, OptimConfig, StepScalars};
use candle_core::{DType, Device, Tensor, Var};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The harness, built once per test process.
fn harness() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emulation/harness.cpp");
        // One folder per version of the source, reused by later test runs (a folder per
        // process left one behind in the temp directory at every `make test`).
        let code = std::fs::read(&src).unwrap();
        let dir = std::env::temp_dir().join(format!("ctpipe-kernel-emulation-{}", &blake3::hash(&code).to_hex()[..16]));
        let exe = dir.join("harness");
        if exe.is_file() {
            return exe;
        }
        std::fs::create_dir_all(&dir).unwrap();
        // Built under a name of this process, then renamed: two test processes may build it.
        let tmp = dir.join(format!("harness.tmp-{}", std::process::id()));
        // -ffp-contract=off: no fused multiply-adds, as nvcc -fmad=false (build.rs).
        let out = Command::new("g++")
            .args(["-std=c++20", "-O2", "-pthread", "-ffp-contract=off", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("g++ (C++20) is needed to emulate the CUDA kernels");
        assert!(out.status.success(), "g++ failed on {}:\n{}", src.display(), String::from_utf8_lossy(&out.stderr));
        std::fs::rename(&tmp, &exe).unwrap();
        exe
    })
}

fn run(args: &[String], input: &[f32]) -> Vec<u8> {
    let mut child = Command::new(harness()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "harness {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn normal(seed: u64, purpose: &str, n: usize, scale: f32, shift: f32) -> Vec<f32> {
    let t = crate::rng::normal(&mut crate::rng::stream(seed, purpose, 0), &[n], DType::F32, &Device::Cpu).unwrap();
    t.to_vec1::<f32>().unwrap().into_iter().map(|v| v * scale + shift).collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// GroupNorm(+SiLU) forward and backward against the CPU op (src/nn/fused.rs), including a
/// block larger than the thread block (strided loops) and a group of one channel.
#[test]
fn group_norm_kernels_equal_the_cpu_op() {
    let dev = Device::Cpu;
    for (i, &(n, c, h, w, groups, silu)) in [(2, 8, 5, 3, 2, true), (3, 32, 4, 4, 8, false), (1, 64, 6, 6, 16, true), (2, 16, 20, 20, 4, true), (2, 6, 9, 31, 6, false)].iter().enumerate() {
        let len = n * c * h * w;
        let x = normal(i as u64, "x", len, 2.0, 0.7);
        let gamma = normal(i as u64, "g", c, 0.5, 1.0);
        let beta = normal(i as u64, "b", c, 0.3, 0.0);
        let dout = normal(i as u64, "dout", len, 1.0, 0.0);
        let (xv, gv, bv) = (
            Var::from_slice(&x, (n, c, h, w), &dev).unwrap(),
            Var::from_slice(&gamma, c, &dev).unwrap(),
            Var::from_slice(&beta, c, &dev).unwrap(),
        );
        let cpu = crate::nn::fused::group_norm_silu(&xv, &gv, &bv, groups, 1e-6, silu, || unreachable!("the CPU f32 path is fused")).unwrap();
        let grads = cpu.mul(&Tensor::from_slice(&dout, (n, c, h, w), &dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let dims = [n, c, groups, h * w].map(|v| v.to_string());
        let args = |op: &str| [vec![op.to_string()], dims.to_vec(), vec!["1e-6".into(), (silu as u8).to_string()]].concat();

        let y = f32s(&run(&args("gn-fwd"), &[x.as_slice(), &gamma, &beta].concat()));
        let e = max_rel(&y, &cpu.flatten_all().unwrap().to_vec1().unwrap());
        assert!(e < 1e-6, "case {i}: forward differs by {e:.2e}");

        let out = f32s(&run(&args("gn-bwd"), &[x.as_slice(), &gamma, &beta, &dout].concat()));
        let (dx, rest) = out.split_at(len);
        let (dg, db) = rest.split_at(c);
        for (got, v, what) in [(dx, &xv, "dx"), (dg, &gv, "dγ"), (db, &bv, "dβ")] {
            let want: Vec<f32> = grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let e = max_rel(got, &want);
            assert!(e < 1e-5, "case {i}: {what} differs by {e:.2e}");
        }
    }
}

/// The gradient norm's partial sums: NaN counts as 0, ±inf as ±1e5, as on the host.
#[test]
fn clean_sumsq_kernel_equals_the_host_sum() {
    for n in [1usize, 300, 40_000] {
        let mut g = normal(n as u64, "g", n, 3.0, 0.1);
        if n > 2 {
            g[0] = f32::NAN;
            g[1] = f32::INFINITY;
            g[2] = -3e7;
        }
        let want: f64 = g.iter().map(|&v| (if v.is_nan() { 0.0 } else { v.clamp(-1e5, 1e5) }) as f64).map(|v| v * v).sum();
        let got = run(&["sumsq".into(), n.to_string(), NORM_BLOCKS.to_string()], &g);
        let got = f64::from_le_bytes(got[..8].try_into().unwrap());
        assert!(((got - want) / want).abs() < 1e-12, "n = {n}: {got} vs {want}");
    }
}

/// The optimiser kernel equals the host update bit for bit: Adam, RAdam in both phases, Lion;
/// weight decay, clipping scale, and gradients with NaN and ±inf.
#[test]
fn optimizer_kernel_equals_the_host_update_bitwise() {
    let n = 3000;
    assert!(grid_for(n) > 1, "the case must span several blocks");
    for (case, (kind, rect)) in [(Kind::Adam, None), (Kind::RAdam, None), (Kind::RAdam, Some(0.37)), (Kind::Lion, None)].into_iter().enumerate() {
        let cfg = OptimConfig { kind, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
        let s = StepScalars::new(cfg, 1e-3, 0.8, 1.0 - 0.9f64.powi(3), 1.0 - 0.99f64.powi(3), rect);
        let seed = 10 + case as u64;
        let theta = normal(seed, "theta", n, 1.0, 0.0);
        let mut g = normal(seed, "g", n, 0.1, 0.0);
        g[5] = f32::NAN;
        g[6] = f32::INFINITY;
        g[7] = f32::NEG_INFINITY;
        let m0 = normal(seed, "m", n, 0.01, 0.0);
        let v0: Vec<f32> = normal(seed, "v", n, 1e-3, 0.0).into_iter().map(|v| v * v).collect();
        let (mut m, mut v) = (m0.clone(), v0.clone());
        let want = host_update(&s, &g, &theta, &mut m, if kind == Kind::Lion { &mut [] } else { &mut v });
        let (k, r) = kernel_kind(&s);
        let mut args = vec!["optim".to_string(), n.to_string(), k.to_string()];
        args.extend([s.b1, s.b2, s.eps, s.lr, s.wd, s.scale, s.adam_step, s.bc1, s.sbc2, r].map(|x| format!("{x:e}")));
        let out = f32s(&run(&args, &[theta.as_slice(), &g, &m0, &v0].concat()));
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out[..n]), bits(&want), "{kind:?} (rect {rect:?}): θ");
        assert_eq!(bits(&out[n..2 * n]), bits(&m), "{kind:?}: m");
        if kind != Kind::Lion {
            assert_eq!(bits(&out[2 * n..]), bits(&v), "{kind:?}: v");
        }
    }
}

/// The EMA kernel equals the host EMA (optim.rs `ema_update`) bit for bit.
#[test]
fn ema_kernel_equals_the_host_update_bitwise() {
    let n = 1000;
    let (e0, o) = (normal(1, "ema", n, 1.0, 0.0), normal(1, "online", n, 1.0, 0.0));
    let dev = Device::Cpu;
    let (ev, ov) = (Var::from_slice(&e0, n, &dev).unwrap(), Var::from_slice(&o, n, &dev).unwrap());
    let beta = 0.999_f64;
    crate::train::optim::ema_update(&[(ev.clone(), ov)], beta).unwrap();
    let want: Vec<f32> = ev.as_tensor().to_vec1().unwrap();
    let args = ["ema".to_string(), n.to_string(), format!("{:e}", beta as f32), format!("{:e}", (1.0 - beta) as f32)];
    let got = f32s(&run(&args, &[e0.as_slice(), &o].concat()));
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}
