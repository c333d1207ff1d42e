//! The CUDA build computes what the CPU build computes: the ECT loss and every parameter's
//! gradient on the same inputs (weights, batch, noise and dropout masks are drawn on the host
//! from the same seeded streams), for the `tiny` and `cifar-ddpmpp` U-Nets, in f32; relative
//! error below 1e-4 of each tensor's largest magnitude; once with candle's ops on the GPU and
//! once with our kernels (kernels/fused.cu: GroupNorm+SiLU). The optimiser and EMA kernels
//! equal the CPU updates bit for bit (both round the same f32 expressions, no FMA).
//!
//! Compiled only with `--features cuda` and run on a GPU machine (docs/perf.md: build with
//! `make cuda`, carry `target/cuda/release/deps/gpu_agreement-*`); without a GPU there is nothing
//! to compare, so the CPU build has no such test rather than a skipped one.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use ctpipe::data::schema::SampleKind;
use ctpipe::methods::{spec, Progress, StepCtx};
use ctpipe::model::Weights;
use ctpipe::train::config::TrainConfig;
use ctpipe::cuda::{set_kernels, Kernels};
use ctpipe::train::optim::{ema_update, Kind, OptimConfig, Optimizer};
use std::collections::HashMap;
use std::sync::Mutex;

/// The kernel switch is process-wide: one test at a time.
static SWITCH: Mutex<()> = Mutex::new(());

fn loss_and_gradients(preset: &str, kind: SampleKind, device: &Device) -> (f64, HashMap<String, Tensor>) {
    let cfg = TrainConfig { method: "ect".into(), network: preset.into(), dropout: Some(0.1), ..Default::default() };
    let resolved = spec::resolve(&cfg, kind.sample_len()).unwrap();
    let net_cfg = ctpipe::nn::preset(preset, kind, 1, cfg.dropout).unwrap();
    // Initialise on the CPU and move: the same values on both devices by construction.
    let cpu = Weights::init(&net_cfg, 0, &Device::Cpu).unwrap();
    let tensors = cpu.params.tensors().into_iter().map(|(k, t)| (k, t.to_device(device).unwrap())).collect();
    let w = Weights::from_tensors(&net_cfg, tensors, device).unwrap();
    let SampleKind::Images { height, width, channels } = kind else { unreachable!() };
    let x0 = ((ctpipe::rng::uniform(&mut ctpipe::rng::stream(0, "gpu-agreement", 0), (8, channels as usize, height as usize, width as usize), DType::F32, device).unwrap() * 2.0).unwrap() - 1.0).unwrap();
    let ctx = StepCtx { seed: 0, progress: Progress { step: 100, total: 1000 }, net: &w.net, ema: &w.net, encoder: None, target: None, teacher: None, labels: None, class_labels: None, pool: None, shard: None };
    let loss = resolved.method.loss(&ctx, &x0).unwrap().per_sample.mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = w.params.vars().into_iter().map(|(name, var)| (name, grads.get(&var).expect("a gradient for every parameter").to_device(&Device::Cpu).unwrap())).collect();
    (loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), g)
}

fn agree(preset: &str, kind: SampleKind, kernels: Kernels) {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    set_kernels(kernels);
    let gpu = Device::new_cuda(0).expect("a CUDA device (this test runs on a GPU machine)");
    let (l_cpu, g_cpu) = loss_and_gradients(preset, kind, &Device::Cpu);
    let (l_gpu, g_gpu) = loss_and_gradients(preset, kind, &gpu);
    let rel = (l_gpu - l_cpu).abs() / l_cpu.abs();
    println!("{preset} ({kernels:?}): loss cpu {l_cpu:.8} cuda {l_gpu:.8}, relative error {rel:.2e}");
    assert!(rel < 1e-4, "{preset}: loss differs by {rel:.2e}");
    let mut worst = (0.0f64, String::new());
    for (name, a) in &g_cpu {
        let b = &g_gpu[name];
        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let e = if scale > 0.0 { diff / scale } else { diff };
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    println!("{preset} ({kernels:?}): {} gradients, worst relative error {:.2e} ({})", g_cpu.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-4, "{preset}: gradient {} differs by {:.2e}", worst.1, worst.0);
}

const TINY: SampleKind = SampleKind::Images { height: 28, width: 28, channels: 1 };
const CIFAR: SampleKind = SampleKind::Images { height: 32, width: 32, channels: 3 };

#[test]
fn tiny_unet_loss_and_gradients_agree() {
    agree("tiny", TINY, Kernels::Composed);
}

#[test]
fn cifar_ddpmpp_loss_and_gradients_agree() {
    agree("cifar-ddpmpp", CIFAR, Kernels::Composed);
}

#[test]
fn tiny_unet_loss_and_gradients_agree_with_our_kernels() {
    agree("tiny", TINY, Kernels::Fused);
}

#[test]
fn cifar_ddpmpp_loss_and_gradients_agree_with_our_kernels() {
    agree("cifar-ddpmpp", CIFAR, Kernels::Fused);
}

/// Three clipped optimiser steps and an EMA update of the same parameters on the CPU (host
/// loops) and on the GPU (our kernels): identical bits, every optimiser.
#[test]
fn optimizer_and_ema_kernels_equal_the_cpu_bitwise() {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    set_kernels(Kernels::Fused);
    let gpu = Device::new_cuda(0).expect("a CUDA device (this test runs on a GPU machine)");
    let shapes: [&[usize]; 3] = [&[256, 128, 3, 3], &[4097], &[7]];
    for kind in [Kind::Adam, Kind::RAdam, Kind::Lion] {
        let cfg = OptimConfig { kind, beta1: 0.9, beta2: if kind == Kind::Lion { 0.99 } else { 0.999 }, eps: 1e-8, weight_decay: 0.01 };
        let run = |dev: &Device| -> (Vec<Vec<u32>>, Vec<f64>) {
            let normal = |purpose: &str, i: usize, shape: &[usize]| ctpipe::rng::normal(&mut ctpipe::rng::stream(i as u64, purpose, 0), shape, DType::F32, &Device::Cpu).unwrap().to_device(dev).unwrap();
            let params: Vec<(String, candle_core::Var)> = shapes.iter().enumerate().map(|(i, s)| (format!("p{i}"), candle_core::Var::from_tensor(&normal("theta", i, s)).unwrap())).collect();
            let ema: Vec<(candle_core::Var, candle_core::Var)> = params.iter().map(|(_, v)| (candle_core::Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(), v.clone())).collect();
            let mut opt = Optimizer::new(cfg, &params).unwrap();
            let mut norms = Vec::new();
            for step in 0..3 {
                let grads: HashMap<String, Tensor> = shapes.iter().enumerate().map(|(i, s)| (format!("p{i}"), (normal(&format!("grad{step}"), i, s) * 0.3).unwrap())).collect();
                norms.push(opt.step(&params, &grads, 1e-3, Some(10.0)).unwrap());
                ema_update(&ema, 0.99).unwrap();
            }
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<u32>>();
            (params.iter().map(|(_, v)| bits(v.as_tensor())).chain(ema.iter().map(|(e, _)| bits(e.as_tensor()))).collect(), norms)
        };
        let (cpu, n_cpu) = run(&Device::Cpu);
        let (cuda, n_gpu) = run(&gpu);
        for (a, b) in n_cpu.iter().zip(&n_gpu) {
            assert!((a - b).abs() / a < 1e-12, "{kind:?}: gradient norm {a} on the CPU, {b} on the GPU");
        }
        for (i, (a, b)) in cpu.iter().zip(&cuda).enumerate() {
            let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(differing, 0, "{kind:?}: tensor {i} differs in {differing} of {} values", a.len());
        }
        println!("{kind:?}: 3 steps + EMA, {} parameters: bit-identical on CPU and GPU; norms {n_gpu:?}", shapes.len());
    }
}
