//! pytorch-fid's FID Inception-v3 (the network behind every published FID), pool3 features.
//!
//! Faithful to pytorch-fid's `fid_inception_v3` rather than torchvision's Inception3, which
//! differ in three pooling details that change the numbers:
//! - FIDInceptionA, FIDInceptionC and FIDInceptionE_1 average-pool their pool branch with
//!   `count_include_pad=False` (border windows divide by the pixels they cover);
//! - FIDInceptionE_2 (Mixed_7c) max-pools its pool branch (3×3, stride 1, padding 1);
//! - input is resized to 299×299 by bilinear interpolation with `align_corners=False`, and is
//!   expected in [−1, 1] (pytorch-fid maps [0, 1] images there after resizing; the two commute).
//!
//! Every BasicConv2d is conv (no bias) → BatchNorm(ε = 0.001, running statistics) → ReLU; the
//! BatchNorm is folded into the convolution at load: w' = w·γ/√(var+ε), b' = β − mean·γ/√(var+ε).
//! Weights use pytorch-fid's state-dict names (`Mixed_5b.branch1x1.conv.weight`, `….bn.running_var`).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

const BN_EPS: f64 = 1e-3;
pub const FEATURES: usize = 2048;
pub const SIZE: usize = 299;

/// A convolution with folded BatchNorm, followed by ReLU.
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::nn::conv::conv2d(x, &self.w, &self.b, self.stride, self.pad)?.relu()?)
    }
}

/// Where the weights come from: a name and shape in, a tensor out.
type Getter<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor> + 'a;

fn conv(get: &mut Getter, name: &str, cin: usize, cout: usize, k: (usize, usize), stride: usize, pad: (usize, usize)) -> Result<Conv> {
    let w = get(&format!("{name}.conv.weight"), &[cout, cin, k.0, k.1])?;
    let gamma = get(&format!("{name}.bn.weight"), &[cout])?;
    let beta = get(&format!("{name}.bn.bias"), &[cout])?;
    let mean = get(&format!("{name}.bn.running_mean"), &[cout])?;
    let var = get(&format!("{name}.bn.running_var"), &[cout])?;
    let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
    let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
    let b = (beta - mean.mul(&scale)?)?;
    Ok(Conv { w, b, stride, pad })
}

fn c1(get: &mut Getter, name: &str, cin: usize, cout: usize) -> Result<Conv> {
    conv(get, name, cin, cout, (1, 1), 1, (0, 0))
}

/// 3×3 average pooling, stride 1, padding 1, `count_include_pad=False`.
fn avg_pool_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sums = (x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)? * 9.0)?;
    let count = |i: usize, n: usize| (3 - usize::from(i == 0) - usize::from(i + 1 == n)) as f32;
    let counts: Vec<f32> = (0..h).flat_map(|i| (0..w).map(move |j| count(i, h) * count(j, w))).collect();
    let counts = Tensor::from_vec(counts, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(sums.broadcast_div(&counts)?)
}

/// 3×3 max pooling, stride 1, padding 1. Zero padding stands in for −∞: the input is a
/// concatenation of ReLU outputs, so no window's maximum is below 0.
fn max_pool_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 1)?)
}

fn max_pool_3s2(x: &Tensor) -> Result<Tensor> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

enum Block {
    A { b1: Conv, b5: [Conv; 2], b3: [Conv; 3], pool: Conv },
    B { b3: Conv, bd: [Conv; 3] },
    C { b1: Conv, b7: [Conv; 3], b7d: [Conv; 5], pool: Conv },
    D { b3: [Conv; 2], b7: [Conv; 4] },
    E { b1: Conv, b3: Conv, b3a: Conv, b3b: Conv, bd: [Conv; 2], bda: Conv, bdb: Conv, pool: Conv, max_pool: bool },
}

fn chain(convs: &[Conv], x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

impl Block {
    fn a(get: &mut Getter, n: &str, cin: usize, pool: usize) -> Result<Block> {
        Ok(Block::A {
            b1: c1(get, &format!("{n}.branch1x1"), cin, 64)?,
            b5: [c1(get, &format!("{n}.branch5x5_1"), cin, 48)?, conv(get, &format!("{n}.branch5x5_2"), 48, 64, (5, 5), 1, (2, 2))?],
            b3: [
                c1(get, &format!("{n}.branch3x3dbl_1"), cin, 64)?,
                conv(get, &format!("{n}.branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                conv(get, &format!("{n}.branch3x3dbl_3"), 96, 96, (3, 3), 1, (1, 1))?,
            ],
            pool: c1(get, &format!("{n}.branch_pool"), cin, pool)?,
        })
    }

    fn b(get: &mut Getter, n: &str, cin: usize) -> Result<Block> {
        Ok(Block::B {
            b3: conv(get, &format!("{n}.branch3x3"), cin, 384, (3, 3), 2, (0, 0))?,
            bd: [
                c1(get, &format!("{n}.branch3x3dbl_1"), cin, 64)?,
                conv(get, &format!("{n}.branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                conv(get, &format!("{n}.branch3x3dbl_3"), 96, 96, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn c(get: &mut Getter, n: &str, cin: usize, c7: usize) -> Result<Block> {
        let (row, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        let mut k = |name: &str, i: usize, o: usize, (ks, p): ((usize, usize), (usize, usize))| conv(get, &format!("{n}.{name}"), i, o, ks, 1, p);
        let b7 = [
            k("branch7x7_1", cin, c7, ((1, 1), (0, 0)))?,
            k("branch7x7_2", c7, c7, row)?,
            k("branch7x7_3", c7, 192, col)?,
        ];
        let b7d = [
            k("branch7x7dbl_1", cin, c7, ((1, 1), (0, 0)))?,
            k("branch7x7dbl_2", c7, c7, col)?,
            k("branch7x7dbl_3", c7, c7, row)?,
            k("branch7x7dbl_4", c7, c7, col)?,
            k("branch7x7dbl_5", c7, 192, row)?,
        ];
        Ok(Block::C { b1: c1(get, &format!("{n}.branch1x1"), cin, 192)?, b7, b7d, pool: c1(get, &format!("{n}.branch_pool"), cin, 192)? })
    }

    fn d(get: &mut Getter, n: &str, cin: usize) -> Result<Block> {
        Ok(Block::D {
            b3: [c1(get, &format!("{n}.branch3x3_1"), cin, 192)?, conv(get, &format!("{n}.branch3x3_2"), 192, 320, (3, 3), 2, (0, 0))?],
            b7: [
                c1(get, &format!("{n}.branch7x7x3_1"), cin, 192)?,
                conv(get, &format!("{n}.branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3))?,
                conv(get, &format!("{n}.branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0))?,
                conv(get, &format!("{n}.branch7x7x3_4"), 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn e(get: &mut Getter, n: &str, cin: usize, max_pool: bool) -> Result<Block> {
        Ok(Block::E {
            b1: c1(get, &format!("{n}.branch1x1"), cin, 320)?,
            b3: c1(get, &format!("{n}.branch3x3_1"), cin, 384)?,
            b3a: conv(get, &format!("{n}.branch3x3_2a"), 384, 384, (1, 3), 1, (0, 1))?,
            b3b: conv(get, &format!("{n}.branch3x3_2b"), 384, 384, (3, 1), 1, (1, 0))?,
            bd: [c1(get, &format!("{n}.branch3x3dbl_1"), cin, 448)?, conv(get, &format!("{n}.branch3x3dbl_2"), 448, 384, (3, 3), 1, (1, 1))?],
            bda: conv(get, &format!("{n}.branch3x3dbl_3a"), 384, 384, (1, 3), 1, (0, 1))?,
            bdb: conv(get, &format!("{n}.branch3x3dbl_3b"), 384, 384, (3, 1), 1, (1, 0))?,
            pool: c1(get, &format!("{n}.branch_pool"), cin, 192)?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = match self {
            Block::A { b1, b5, b3, pool } => vec![b1.forward(x)?, chain(b5, x)?, chain(b3, x)?, pool.forward(&avg_pool_exclude_pad(x)?)?],
            Block::B { b3, bd } => vec![b3.forward(x)?, chain(bd, x)?, max_pool_3s2(x)?],
            Block::C { b1, b7, b7d, pool } => vec![b1.forward(x)?, chain(b7, x)?, chain(b7d, x)?, pool.forward(&avg_pool_exclude_pad(x)?)?],
            Block::D { b3, b7 } => vec![chain(b3, x)?, chain(b7, x)?, max_pool_3s2(x)?],
            Block::E { b1, b3, b3a, b3b, bd, bda, bdb, pool, max_pool } => {
                let t = b3.forward(x)?;
                let d = chain(bd, x)?;
                let pooled = if *max_pool { max_pool_same(x)? } else { avg_pool_exclude_pad(x)? };
                vec![
                    b1.forward(x)?,
                    Tensor::cat(&[b3a.forward(&t)?, b3b.forward(&t)?], 1)?,
                    Tensor::cat(&[bda.forward(&d)?, bdb.forward(&d)?], 1)?,
                    pool.forward(&pooled)?,
                ]
            }
        };
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// The FID Inception-v3 up to pool3.
pub struct FidInception {
    stem: Vec<Conv>,
    stem2: Vec<Conv>,
    blocks: Vec<Block>,
}

impl FidInception {
    fn build(get: &mut Getter) -> Result<FidInception> {
        let stem = vec![
            conv(get, "Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0))?,
            conv(get, "Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0))?,
            conv(get, "Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1))?,
        ];
        let stem2 = vec![c1(get, "Conv2d_3b_1x1", 64, 80)?, conv(get, "Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))?];
        let blocks = vec![
            Block::a(get, "Mixed_5b", 192, 32)?,
            Block::a(get, "Mixed_5c", 256, 64)?,
            Block::a(get, "Mixed_5d", 288, 64)?,
            Block::b(get, "Mixed_6a", 288)?,
            Block::c(get, "Mixed_6b", 768, 128)?,
            Block::c(get, "Mixed_6c", 768, 160)?,
            Block::c(get, "Mixed_6d", 768, 160)?,
            Block::c(get, "Mixed_6e", 768, 192)?,
            Block::d(get, "Mixed_7a", 768)?,
            Block::e(get, "Mixed_7b", 1280, false)?,
            Block::e(get, "Mixed_7c", 2048, true)?,
        ];
        Ok(FidInception { stem, stem2, blocks })
    }

    /// Load pytorch-fid's weights (safetensors with its state-dict names; extra tensors such as
    /// `fc.weight` are ignored).
    pub fn load(path: &Path, device: &Device) -> Result<FidInception> {
        let tensors = crate::model::load_tensors(path, device)?;
        FidInception::from_tensors(&tensors).map_err(|e| crate::error::bad_input(format!("{}: {e}", path.display())))
    }

    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Result<FidInception> {
        FidInception::build(&mut |name: &str, shape: &[usize]| {
            let t = tensors.get(name).ok_or_else(|| anyhow::anyhow!("missing tensor `{name}` (expected pytorch-fid's FID Inception names)"))?;
            if t.dims() != shape {
                bail!("tensor `{name}` is {:?}, expected {shape:?}", t.dims());
            }
            Ok(t.to_dtype(DType::F32)?)
        })
    }

    /// Every tensor name and shape the network reads, in build order.
    pub fn tensor_layout() -> Result<Vec<(String, Vec<usize>)>> {
        let mut out = Vec::new();
        FidInception::build(&mut |name: &str, shape: &[usize]| {
            out.push((name.to_string(), shape.to_vec()));
            let n = shape.iter().product::<usize>();
            Ok(Tensor::ones(n, DType::F32, &Device::Cpu)?.reshape(shape)?)
        })?;
        Ok(out)
    }

    /// Random weights of the right layout (He-scaled convolutions, BatchNorm statistics near
    /// identity), for tests and throughput benchmarks that need no real weights.
    pub fn random_tensors(seed: u64, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut rng = crate::rng::stream(seed, "inception-random", 0);
        let mut out = HashMap::new();
        for (name, shape) in FidInception::tensor_layout()? {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with("conv.weight") {
                let fan_in: usize = shape[1..].iter().product();
                let s = (2.0 / fan_in as f32).sqrt();
                crate::rng::normal_vec(&mut rng, n).iter().map(|x| x * s).collect()
            } else {
                let u = crate::rng::uniform_vec(&mut rng, n);
                match name.rsplit('.').next() {
                    Some("weight") | Some("running_var") => u.iter().map(|x| 0.5 + x).collect(),
                    _ => u.iter().map(|x| 0.2 * (x - 0.5)).collect(),
                }
            };
            out.insert(name, Tensor::from_vec(v, shape.as_slice(), device)?);
        }
        Ok(out)
    }

    /// pool3 features of images N×C×H×W in [−1, 1] (C = 1 is repeated to RGB).
    pub fn pool3(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let x = match x.dim(1)? {
            3 => x,
            1 => x.repeat((1, 3, 1, 1))?,
            c => bail!("inception: images with {c} channels (expected 1 or 3)"),
        };
        let x = resize_299(&x)?;
        let mut y = max_pool_3s2(&chain(&self.stem, &x)?)?;
        y = max_pool_3s2(&chain(&self.stem2, &y)?)?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        Ok(y.mean(3)?.mean(2)?)
    }
}

/// Bilinear resize to 299×299, `align_corners=False` (PyTorch's `F.interpolate`).
pub fn resize_299(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (SIZE, SIZE) {
        return Ok(x.clone());
    }
    Ok(x.upsample_bilinear2d(SIZE, SIZE, false)?)
}

impl super::Encoder for FidInception {
    fn dim(&self) -> usize {
        FEATURES
    }
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.pool3(x)
    }
}

#[cfg(test)]
mod tests;
