use super::*;

/// The layout's names and sizes against pytorch-fid's own model: its state dict (built with
/// pytorch-fid 0.3 and torch 2.x, fc and `num_batches_tracked` left out) holds 470 tensors and
/// 21,785,568 learned values in convolutions and BatchNorm affine terms.
#[test]
fn layout_has_pytorch_fid_names_and_parameter_count() {
    let layout = FidInception::tensor_layout().unwrap();
    let names: Vec<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var", "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.bias"] {
        assert!(names.contains(&want), "{want}");
    }
    // 94 BasicConv2d layers, 5 tensors each.
    assert_eq!(layout.len(), 94 * 5);
    let learned: usize = layout.iter().filter(|(n, _)| !n.contains("running")).map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(learned, 21_785_568);
}

/// PyTorch's bilinear, align_corners=False, computed independently for one output pixel:
/// src = (dst + 0.5)·in/out − 0.5, clamped at 0, interpolating between floor and floor+1.
#[test]
fn resize_matches_pytorch_bilinear_formula() {
    let (h, w) = (28usize, 28usize);
    let v: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let x = Tensor::from_vec(v.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    let y: Vec<f32> = resize_299(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let coord = |d: usize, n: usize| -> (usize, usize, f32) {
        let s = ((d as f32 + 0.5) * n as f32 / SIZE as f32 - 0.5).max(0.0);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(n - 1), s - i0 as f32)
    };
    for &(oy, ox) in &[(0usize, 0usize), (150, 77), (298, 298), (5, 290)] {
        let (y0, y1, ly) = coord(oy, h);
        let (x0, x1, lx) = coord(ox, w);
        let p = |yy: usize, xx: usize| v[yy * w + xx];
        let want = (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1)) + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1));
        let got = y[oy * SIZE + ox];
        assert!((got - want).abs() < 1e-5, "({oy},{ox}): {got} vs {want}");
    }
}

#[test]
fn avg_pool_excludes_padding() {
    let x = Tensor::ones((1, 1, 4, 5), DType::F32, &Device::Cpu).unwrap();
    let y: Vec<f32> = avg_pool_exclude_pad(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(y.iter().all(|v| (v - 1.0).abs() < 1e-6), "{y:?}");
    let x = Tensor::arange(0f32, 9.0, &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
    let y: Vec<f32> = avg_pool_exclude_pad(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    // Corner (0,0) averages 0,1,3,4; the centre averages all nine.
    assert!((y[0] - 2.0).abs() < 1e-6 && (y[4] - 4.0).abs() < 1e-6, "{y:?}");
}

#[test]
fn folded_batchnorm_equals_conv_then_bn() {
    let dev = Device::Cpu;
    let mut rng = crate::rng::stream(3, "t", 0);
    let t = |rng: &mut _, shape: &[usize], lo: f32| Tensor::from_vec(crate::rng::uniform_vec(rng, shape.iter().product()).iter().map(|u| lo + u).collect::<Vec<f32>>(), shape, &dev).unwrap();
    let tensors: HashMap<String, Tensor> = HashMap::from([
        ("c.conv.weight".to_string(), t(&mut rng, &[4, 2, 3, 3], -0.5)),
        ("c.bn.weight".to_string(), t(&mut rng, &[4], 0.5)),
        ("c.bn.bias".to_string(), t(&mut rng, &[4], -0.5)),
        ("c.bn.running_mean".to_string(), t(&mut rng, &[4], -0.5)),
        ("c.bn.running_var".to_string(), t(&mut rng, &[4], 0.2)),
    ]);
    let mut get = |n: &str, _s: &[usize]| Ok(tensors[n].clone());
    let c = conv(&mut get, "c", 2, 4, (3, 3), 1, (1, 1)).unwrap();
    let x = t(&mut rng, &[1, 2, 5, 5], -0.5);
    let got = c.forward(&x).unwrap();
    let r = |n: &str| tensors[n].reshape((1, 4, 1, 1)).unwrap();
    let y = x.conv2d(&tensors["c.conv.weight"], 1, 1, 1, 1).unwrap();
    let bn = y.broadcast_sub(&r("c.bn.running_mean")).unwrap()
        .broadcast_div(&(r("c.bn.running_var") + BN_EPS).unwrap().sqrt().unwrap()).unwrap()
        .broadcast_mul(&r("c.bn.weight")).unwrap()
        .broadcast_add(&r("c.bn.bias")).unwrap()
        .relu().unwrap();
    let diff = (got - bn).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "{diff}");
}

/// The whole network runs on random weights: 2048 finite features per image, grayscale equals
/// its RGB repetition, and a wrong tensor is named in the error.
#[test]
fn random_weights_give_pool3_features() {
    let dev = Device::Cpu;
    let tensors = FidInception::random_tensors(0, &dev).unwrap();
    let net = FidInception::from_tensors(&tensors).unwrap();
    let mut rng = crate::rng::stream(1, "img", 0);
    let img = Tensor::from_vec(crate::rng::uniform_vec(&mut rng, 2 * 28 * 28).iter().map(|u| 2.0 * u - 1.0).collect::<Vec<f32>>(), (2, 1, 28, 28), &dev).unwrap();
    let f = net.pool3(&img).unwrap();
    assert_eq!(f.dims(), &[2, FEATURES]);
    let v: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0) && v.iter().any(|x| *x > 0.0));
    let rgb = net.pool3(&img.repeat((1, 3, 1, 1)).unwrap()).unwrap();
    assert_eq!((f - rgb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let mut bad = tensors.clone();
    bad.remove("Mixed_6c.branch7x7_2.conv.weight");
    let err = FidInception::from_tensors(&bad).err().unwrap().to_string();
    assert!(err.contains("Mixed_6c.branch7x7_2.conv.weight"), "{err}");
}
