//! The CUDA build computes what the CPU build computes: the ECT loss and every parameter's
//! gradient on the same inputs (weights, batch, noise and dropout masks are drawn on the host
//! from the same seeded streams), for the `tiny` and `cifar-ddpmpp` U-Nets, in f32; relative
//! error below 1e-4 of each tensor's largest magnitude.
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
use std::collections::HashMap;

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
    let ctx = StepCtx { seed: 0, progress: Progress { step: 100, total: 1000 }, net: &w.net, ema: &w.net, encoder: None, target: None, teacher: None };
    let loss = resolved.method.loss(&ctx, &x0).unwrap().per_sample.mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = w.params.vars().into_iter().map(|(name, var)| (name, grads.get(&var).expect("a gradient for every parameter").to_device(&Device::Cpu).unwrap())).collect();
    (loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), g)
}

fn agree(preset: &str, kind: SampleKind) {
    let gpu = Device::new_cuda(0).expect("a CUDA device (this test runs on a GPU machine)");
    let (l_cpu, g_cpu) = loss_and_gradients(preset, kind, &Device::Cpu);
    let (l_gpu, g_gpu) = loss_and_gradients(preset, kind, &gpu);
    let rel = (l_gpu - l_cpu).abs() / l_cpu.abs();
    println!("{preset}: loss cpu {l_cpu:.8} cuda {l_gpu:.8}, relative error {rel:.2e}");
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
    println!("{preset}: {} gradients, worst relative error {:.2e} ({})", g_cpu.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-4, "{preset}: gradient {} differs by {:.2e}", worst.1, worst.0);
}

#[test]
fn tiny_unet_loss_and_gradients_agree() {
    agree("tiny", SampleKind::Images { height: 28, width: 28, channels: 1 });
}

#[test]
fn cifar_ddpmpp_loss_and_gradients_agree() {
    agree("cifar-ddpmpp", SampleKind::Images { height: 32, width: 32, channels: 3 });
}
