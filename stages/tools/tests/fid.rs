//! The `fid` tool as a user runs it: every kind of source gives the same FID for the same
//! images, statistics written by --save-stats read back, and bad input is one line.
//!
//! The agreement with pytorch-fid itself needs PyTorch (tests/parity/fid_folders.py, recorded
//! in docs/fid.md); here the Inception weights are random (FidInception::random_tensors) and
//! the folders tiny, so the suite stays fast on CPU.

use candle_core::{Device, Tensor};
use ctpipe_e2e::{run, Sandbox};
use std::path::Path;

const EXE: &str = env!("CARGO_BIN_EXE_fid");

fn fid_value(stdout: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with("FID:  ")).unwrap_or_else(|| panic!("no FID line in:\n{stdout}"));
    line["FID:  ".len()..].trim().parse().unwrap()
}

/// Gray 12×12 images from a seeded pattern, as PNGs; their pixels as N × H × W × 1.
fn folder(dir: &Path, n: usize, seed: u32) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let mut all = Vec::new();
    for i in 0..n {
        let px: Vec<u8> = (0..144u32).map(|j| ((j * 37 + i as u32 * 101 + seed * 53) % 251) as u8).collect();
        image::GrayImage::from_raw(12, 12, px.clone()).unwrap().save(dir.join(format!("{i:03}.png"))).unwrap();
        all.extend(px);
    }
    all
}

#[test]
fn every_source_gives_the_same_fid_and_errors_are_one_line() {
    let sb = Sandbox::new();
    let weights = sb.path().join("inception.safetensors");
    let tensors = ctpipe::features::inception::FidInception::random_tensors(0, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let (a, b) = (sb.path().join("a"), sb.path().join("b"));
    let pixels = folder(&a, 5, 1);
    folder(&b, 5, 2);
    let w = weights.to_str().unwrap();

    let direct = run(sb.cmd(EXE).arg(&a).arg(&b).args(["--inception", w, "--kid", "--kid-subsets", "3"])).expect_code(0);
    let fid = fid_value(&direct.stdout);
    assert!(fid > 0.0, "{}", direct.stdout);
    assert!(direct.stdout.contains("KID:  ") && direct.stdout.contains("(3 subsets of 5)"), "{}", direct.stdout);

    // The same images as the samplers' arr_0 (one channel: the tool repeats it, as RGB PNGs are).
    let npz = sb.path().join("a-samples.npz");
    Tensor::write_npz(&[("arr_0", &Tensor::from_vec(pixels, (5, 12, 12, 1), &Device::Cpu).unwrap())], &npz).unwrap();
    let from_npz = fid_value(&run(sb.cmd(EXE).arg(&npz).arg(&b).args(["--inception", w])).expect_code(0).stdout);
    // Statistics written by --save-stats, then compared without any encoder.
    let (sa, sbs) = (sb.path().join("a.npz"), sb.path().join("b.npz"));
    for (src, out) in [(&a, &sa), (&b, &sbs)] {
        run(sb.cmd(EXE).arg("--save-stats").arg(src).arg(out).args(["--inception", w])).expect_code(0);
    }
    let from_stats = fid_value(&run(sb.cmd(EXE).arg(&sa).arg(&sbs)).expect_code(0).stdout);
    for (what, v) in [("arr_0 samples", from_npz), ("saved statistics", from_stats)] {
        assert!((v - fid).abs() <= 1e-6 * fid.abs().max(1.0), "{what}: {v} against {fid} from the folders");
    }

    // clean-fid's resize: the same images from a folder or an npz agree with each other, and
    // differ from pytorch-fid's bilinear resize (tests/interop.rs checks the resize itself
    // against Pillow).
    let clean = |src: &Path| fid_value(&run(sb.cmd(EXE).arg(src).arg(&b).args(["--inception", w, "--resize", "clean"])).expect_code(0).stdout);
    let (clean_folder, clean_npz) = (clean(&a), clean(&npz));
    assert!((clean_folder - clean_npz).abs() <= 1e-6 * clean_folder, "clean resize: folder {clean_folder}, npz {clean_npz}");
    assert!((clean_folder - fid).abs() > 1e-3 * fid, "clean resize {clean_folder} against pytorch-fid's {fid}: the option changed nothing");

    // Bad input: one line naming what is wrong, exit 2 or 3, no panic.
    for (args, code, says) in [
        (vec![a.to_str().unwrap(), b.to_str().unwrap()], 2, "--inception FILE"),
        (vec![sa.to_str().unwrap(), "missing-folder"], 3, "missing-folder: no such file or folder"),
        (vec![sa.to_str().unwrap(), sbs.to_str().unwrap(), "--kid"], 2, "--kid needs images on both sides"),
        (vec![a.to_str().unwrap(), b.to_str().unwrap(), "--encoder", "0abc", "--resize", "clean"], 2, "--resize clean brings images"),
        (vec![a.to_str().unwrap(), sbs.to_str().unwrap(), "--inception", w, "--resize", "clean"], 2, "--resize clean needs images on both sides"),
        (vec![a.to_str().unwrap(), sbs.to_str().unwrap(), "--inception", w, "--inception-sha256", &"0".repeat(64)], 3, "sha256"),
    ] {
        let r = run(sb.cmd(EXE).args(&args));
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.one_error_line().contains(says), "{args:?}: {}", r.stderr);
    }
}
