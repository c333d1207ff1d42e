//! FID between files that travel, outside the pipeline (the `fid` tool): folders of images,
//! `.npz` sample files and statistics in the formats of the tools these users already have.
//!
//! - A folder of images, read as pytorch-fid's `fid_score.py` reads one: the files with its
//!   extensions, in sorted path order, converted to RGB (gray repeated), in [0, 1] then
//!   [−1, 1] as its `normalize_input` does. PNG and JPEG are decoded here; other extensions
//!   pytorch-fid accepts are refused by name.
//! - A samples `.npz` as the EDM/ECT/consistency-models samplers write them: `arr_0`, uint8,
//!   N × H × W × C (C = 1 or 3).
//! - Statistics: pytorch-fid's `.npz` (`mu`, `sigma`; `--save-stats` writes it compressed) or
//!   ctpipe's statistics safetensors (the `stats*.safetensors` of a precompute-encoder artifact).
//!
//! Statistics are written back as pytorch-fid's `.npz` (`mu` [D] and `sigma` [D, D], f64).

use crate::error::{bad_input, TagContext};
use crate::features::Encoder;
use crate::metrics::stats::{FeatureStats, StatsAccumulator};
use crate::store::Artifact;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

/// pytorch-fid's `IMAGE_EXTENSIONS` (fid_score.py).
const IMAGE_EXTENSIONS: [&str; 9] = ["bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"];
/// The ones decoded here.
const DECODED: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images as uint8 N × H × W × C.
pub struct Images {
    pub pixels: Vec<u8>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// How images are brought to the network's 299×299 and scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resize {
    /// pytorch-fid's: x/255 · 2 − 1 (ToTensor, then normalize_input), then the network's
    /// bilinear resize with align_corners=False.
    PytorchFid,
    /// clean-fid's "clean" mode: each channel resized to 299×299 by PIL's bicubic in float
    /// (antialiased when shrinking), clipped to [0, 255] (GaParmar/clean-fid at 353c13e,
    /// cleanfid/resize.py:11-13, 49-53), then (x − 128)/128 as its InceptionV3W does
    /// (cleanfid/inception_torchscript.py:48-50).
    Clean,
}

impl Images {
    /// Batch `first..first + k` as N × C × H × W network input, prepared as `resize` says.
    pub fn batch(&self, first: usize, k: usize, resize: Resize, device: &Device) -> Result<Tensor> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let per = h * w * c;
        let pixels = &self.pixels[first * per..(first + k) * per];
        match resize {
            Resize::PytorchFid => {
                let v: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
                let x = Tensor::from_vec(v, (k, h, w, c), device)?.permute((0, 3, 1, 2))?.contiguous()?;
                Ok(((x * 2.0)? - 1.0)?)
            }
            Resize::Clean => {
                let side = crate::features::inception::SIZE;
                let mut v = Vec::with_capacity(k * c * side * side);
                for image in pixels.chunks_exact(per) {
                    for ch in 0..c {
                        let plane: Vec<f32> = image.iter().skip(ch).step_by(c).map(|&p| p as f32).collect();
                        let resized = crate::features::pil_resize::bicubic_f32(&plane, h, w, side, side);
                        v.extend(resized.into_iter().map(|p| (p.clamp(0.0, 255.0) - 128.0) / 128.0));
                    }
                }
                Ok(Tensor::from_vec(v, (k, c, side, side), device)?)
            }
        }
    }
}

/// One side of a comparison.
pub enum Source {
    Images(Images),
    Stats(FeatureStats),
}

impl Source {
    /// Open `path`: a folder of images, a samples `.npz`, or statistics (`.npz` or safetensors).
    pub fn open(path: &Path) -> Result<Source> {
        if path.is_dir() {
            return Ok(Source::Images(read_folder(path)?));
        }
        if !path.is_file() {
            return Err(bad_input(format!("{}: no such file or folder (expected a folder of images, a .npz or a statistics .safetensors)", path.display())));
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("npz") => read_npz(path),
            Some("safetensors") => Ok(Source::Stats(FeatureStats::load(path)?)),
            _ => Err(bad_input(format!("{}: expected a folder of images, a .npz (arr_0 samples, or mu and sigma) or a statistics .safetensors", path.display()))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Images(im) => format!("{} images {}×{}×{}", im.n, im.height, im.width, im.channels),
            Source::Stats(s) => format!("statistics of {} features ({})", s.dim(), if s.count > 0 { format!("n = {}", s.count) } else { "n unknown".into() }),
        }
    }
}

/// The image files of a folder as pytorch-fid lists them: its extensions, sorted paths.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).bad_input_ctx(|| format!("{}: cannot read folder", dir.display()))? {
        let path = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?.path();
        // pytorch-fid globs `*.ext` for its lowercase extensions: `.PNG` is not listed there either.
        if path.is_file() && path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every image of a folder, as RGB (PIL's `convert('RGB')`); all must share one size.
pub fn read_folder(dir: &Path) -> Result<Images> {
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(bad_input(format!("{}: no images ({})", dir.display(), IMAGE_EXTENSIONS.join(", "))));
    }
    let mut pixels = Vec::new();
    let mut size = None;
    for f in &files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !DECODED.contains(&ext) {
            return Err(bad_input(format!("{}: .{ext} images are not decoded here (PNG and JPEG are); convert the folder to PNG", f.display())));
        }
        let img = image::open(f).bad_input_ctx(|| format!("{}: not a readable image", f.display()))?.to_rgb8();
        let dims = (img.height() as usize, img.width() as usize);
        match size {
            None => size = Some(dims),
            Some(s) if s != dims => {
                return Err(bad_input(format!("{}: {}×{} pixels, the folder's first image is {}×{} (pytorch-fid batches need one size)", f.display(), dims.1, dims.0, s.1, s.0)));
            }
            _ => {}
        }
        pixels.extend_from_slice(img.as_raw());
    }
    let (height, width) = size.unwrap_or_default();
    Ok(Images { pixels, n: files.len(), height, width, channels: 3 })
}

/// A `.npz`: samples (`arr_0`) or pytorch-fid statistics (`mu`, `sigma`).
fn read_npz(path: &Path) -> Result<Source> {
    let arrays = Tensor::read_npz(path).bad_input_ctx(|| format!("{}: not a readable .npz", path.display()))?;
    let get = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    if let (Some(mu), Some(sigma)) = (get("mu"), get("sigma")) {
        let mean: Vec<f64> = mu.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let d = mean.len();
        if sigma.dims() != [d, d] {
            return Err(bad_input(format!("{}: sigma is {:?}, expected [{d}, {d}] for mu of {d}", path.display(), sigma.dims())));
        }
        let cov: Vec<f64> = sigma.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        if mean.iter().chain(&cov).any(|v| !v.is_finite()) {
            return Err(bad_input(format!("{}: the statistics hold NaN or inf", path.display())));
        }
        return Ok(Source::Stats(FeatureStats { mean, cov, count: 0 }));
    }
    let Some(x) = get("arr_0") else {
        let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        return Err(bad_input(format!("{}: holds {names:?}; expected arr_0 (samples) or mu and sigma (statistics)", path.display())));
    };
    let dims = x.dims().to_vec();
    if x.dtype() != DType::U8 || dims.len() != 4 || !matches!(dims[3], 1 | 3) || dims[..3].contains(&0) {
        return Err(bad_input(format!("{}: arr_0 is {:?} {:?}, expected uint8 N × H × W × C with N, H, W ≥ 1 and C = 1 or 3 (the samplers' format)", path.display(), x.dtype(), dims)));
    }
    let pixels = x.flatten_all()?.to_vec1::<u8>()?;
    Ok(Source::Images(Images { pixels, n: dims[0], height: dims[1], width: dims[2], channels: dims[3] }))
}

/// The samples file of an evaluate-fid artifact (`samples-MODEL-SAMPLER.npz`, written when
/// `export_samples = true`): the only one, or the one `pick` (`MODEL-SAMPLER`) names.
pub fn exported_samples(art: &Artifact, pick: Option<&str>) -> Result<String> {
    // MODEL-SAMPLER of each `samples-MODEL-SAMPLER.npz` the manifest lists.
    let sets: Vec<&str> = art.manifest.files.iter().filter_map(|f| f.path.strip_prefix("samples-")?.strip_suffix(".npz")).collect();
    let what = format!("evaluate-fid artifact {}", art.key().short());
    let chosen = match (pick, sets.as_slice()) {
        (_, []) => return Err(bad_input(format!("{what}: exported no samples (rerun it with export_samples = true)"))),
        (None, [one]) => Some(*one),
        (None, _) => None,
        (Some(p), all) => all.iter().copied().find(|s| *s == p),
    };
    chosen.map(|s| format!("samples-{s}.npz")).ok_or_else(|| match pick {
        None => bad_input(format!("{what}: exported {} sample sets; pick one as ARTIFACT:NAME, NAME one of {}", sets.len(), sets.join(", "))),
        Some(p) => bad_input(format!("{what}: no sample set `{p}`; it has {}", sets.join(", "))),
    })
}

/// Features of every image, in batches, row-major n × dim.
pub fn features(encoder: &dyn Encoder, images: &Images, resize: Resize, batch: usize, device: &Device, mut progress: impl FnMut(usize)) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(images.n * encoder.dim());
    let mut first = 0;
    while first < images.n {
        let k = (images.n - first).min(batch.max(1));
        let f = encoder.features(&images.batch(first, k, resize, device)?)?;
        out.extend(f.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        first += k;
        progress(first);
    }
    Ok(out)
}

/// Mean and covariance (N − 1) of row-major features.
pub fn stats_of(features: &[f32], dim: usize) -> Result<FeatureStats> {
    let mut acc = StatsAccumulator::new(dim);
    acc.add(&Tensor::from_slice(features, (features.len() / dim, dim), &Device::Cpu)?)?;
    acc.finish()
}

/// Write statistics as pytorch-fid's `.npz` (`mu`, `sigma`, f64), atomically.
pub fn save_stats_npz(stats: &FeatureStats, path: &Path) -> Result<()> {
    let d = stats.dim();
    let mu = Tensor::from_slice(&stats.mean, d, &Device::Cpu)?;
    let sigma = Tensor::from_slice(&stats.cov, (d, d), &Device::Cpu)?;
    let tmp = crate::fsx::temp_sibling(path);
    let written = (|| -> Result<()> {
        Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], &tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
        crate::fsx::fsync_file(&tmp)?;
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
        crate::fsx::default_permissions(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics survive the round trip through pytorch-fid's format exactly (f64).
    #[test]
    fn stats_npz_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = FeatureStats { mean: vec![0.5, -1.25, 3.0], cov: vec![2.0, 0.1, 0.0, 0.1, 1.0, -0.3, 0.0, -0.3, 4.0], count: 0 };
        let p = dir.path().join("s.npz");
        save_stats_npz(&s, &p).unwrap();
        let Source::Stats(back) = Source::open(&p).unwrap() else { panic!("not statistics") };
        assert_eq!(back, s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left");
    }

    /// The folder order is pytorch-fid's (sorted paths, its extensions only), gray becomes RGB,
    /// and mixed sizes or undecoded formats are refused by file.
    #[test]
    fn folders_read_as_pytorch_fid_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let gray = |v: u8| image::GrayImage::from_pixel(2, 3, image::Luma([v]));
        gray(10).save(dir.path().join("b.png")).unwrap();
        gray(20).save(dir.path().join("a.png")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let im = read_folder(dir.path()).unwrap();
        assert_eq!((im.n, im.height, im.width, im.channels), (2, 3, 2, 3));
        assert_eq!(&im.pixels[..3], &[20, 20, 20]);
        assert_eq!(im.pixels[18], 10);
        let x = im.batch(0, 2, Resize::PytorchFid, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [2, 3, 3, 2]);
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert!((v[0] - (20.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-7);
        // clean-fid's: 299×299, a constant image (b.png, 10) stays (10 − 128)/128 everywhere.
        let x = im.batch(1, 1, Resize::Clean, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [1, 3, 299, 299]);
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&p| (p - (10.0 - 128.0) / 128.0).abs() < 1e-6), "{:?}", &v[..4]);

        image::GrayImage::from_pixel(4, 4, image::Luma([0])).save(dir.path().join("c.png")).unwrap();
        let e = read_folder(dir.path()).err().unwrap().to_string();
        assert!(e.contains("c.png") && e.contains("4×4"), "{e}");
        std::fs::remove_file(dir.path().join("c.png")).unwrap();
        std::fs::write(dir.path().join("d.webp"), b"RIFF").unwrap();
        let e = read_folder(dir.path()).err().unwrap().to_string();
        assert!(e.contains("d.webp") && e.contains("not decoded"), "{e}");
    }

    /// clean-fid's preparation of an RGB batch: image i's channel c is the Pillow-exact resize
    /// of that plane of the HWC pixels (not another image's, channel's or a transposed one),
    /// clipped to [0, 255] where the bicubic overshoots, then (x − 128)/128.
    #[test]
    fn clean_batches_resize_each_plane_and_clip() {
        let (n, h, w) = (2, 5, 7);
        // Every plane different; sharp 0/255 edges make the bicubic overshoot.
        let pixels: Vec<u8> = (0..n * h * w * 3).map(|i| if (i / 3 + i % 3 + i / (h * w * 3)) % 4 < 2 { 0 } else { 255 }).collect();
        let im = Images { pixels: pixels.clone(), n, height: h, width: w, channels: 3 };
        let x: Vec<f32> = im.batch(0, n, Resize::Clean, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let side = crate::features::inception::SIZE;
        let mut overshoot = false;
        for i in 0..n {
            for c in 0..3 {
                let plane: Vec<f32> = (0..h * w).map(|p| pixels[(i * h * w + p) * 3 + c] as f32).collect();
                let want = crate::features::pil_resize::bicubic_f32(&plane, h, w, side, side);
                overshoot |= want.iter().any(|&v| !(0.0..=255.0).contains(&v));
                let got = &x[(i * 3 + c) * side * side..(i * 3 + c + 1) * side * side];
                for (g, v) in got.iter().zip(&want) {
                    assert_eq!(*g, (v.clamp(0.0, 255.0) - 128.0) / 128.0, "image {i} channel {c}");
                }
            }
        }
        assert!(overshoot, "the test images should make the bicubic overshoot");
    }

    /// Samples in the samplers' `arr_0` format; anything else is refused with what it holds.
    #[test]
    fn samples_npz() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("samples.npz");
        let x = Tensor::from_vec((0u8..24).collect::<Vec<_>>(), (2, 2, 2, 3), &Device::Cpu).unwrap();
        Tensor::write_npz(&[("arr_0", &x)], &p).unwrap();
        let Source::Images(im) = Source::open(&p).unwrap() else { panic!("not images") };
        assert_eq!((im.n, im.height, im.width, im.channels), (2, 2, 2, 3));
        assert_eq!(im.pixels, (0u8..24).collect::<Vec<_>>());
        let f = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        Tensor::write_npz(&[("images", &f)], &p).unwrap();
        let e = Source::open(&p).err().unwrap().to_string();
        assert!(e.contains("\"images\"") && e.contains("arr_0"), "{e}");
    }
}
