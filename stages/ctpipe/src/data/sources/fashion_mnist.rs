//! Fashion-MNIST from its IDX files: Debian's `dataset-fashion-mnist` package (installed, or
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the data directory; no
//! root needed), or any directory holding the four files.

use super::idx::read_idx;
use crate::data::schema::{Dataset, DatasetInfo, SampleKind, Samples, Split};
use crate::error::{bad_input, TagContext};
use anyhow::Result;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The four files, (images, labels) for train then test.
pub const FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
];

const PACKAGE: &str = "dataset-fashion-mnist";
/// What to do where Debian's package cannot be had: the same images from the Hub, or files at hand.
const NOT_DEBIAN: &str = "set from = \"hub\" (the same IDX files from the Hugging Face Hub, zalando-datasets/fashion_mnist) or from = \"<dir with the four IDX files>\"";
const INSTALLED: &str = "/usr/share/datasets/fashion-mnist";

fn has_files(dir: &Path) -> bool {
    FILES.iter().all(|(i, l)| dir.join(i).is_file() && dir.join(l).is_file())
}

/// The directory holding the IDX files: the installed package, an earlier unpack under
/// `data_dir`, or a fresh `apt-get download` + `dpkg-deb -x` into `data_dir/fashion-mnist`.
pub fn locate_debian(data_dir: &Path) -> Result<PathBuf> {
    let installed = PathBuf::from(INSTALLED);
    if has_files(&installed) {
        return Ok(installed);
    }
    let root = data_dir.join("fashion-mnist");
    let unpacked = root.join(INSTALLED.trim_start_matches('/'));
    if has_files(&unpacked) {
        match check_download(&root, &unpacked) {
            Ok(()) => return Ok(unpacked),
            Err(e) => {
                // A damaged earlier download must not be reused forever: fetch it afresh.
                eprintln!("fetch-data: {}: the earlier download is damaged ({}); downloading it again", root.display(), crate::error::one_line(&e));
                std::fs::remove_dir_all(&root).bad_input_ctx(|| format!("{}: cannot remove the damaged download", root.display()))?;
            }
        }
    }
    download(&root, &unpacked)?;
    check_download(&root, &unpacked)?;
    Ok(unpacked)
}

/// The record of a download that loaded cleanly: each IDX file's blake3, so a later run
/// checks a hash (milliseconds) instead of decoding the files.
const CHECKED: &str = "ctpipe-checked.json";

/// Check the unpacked files: their hashes against the record of an earlier check, else load
/// them (and write the record, if the data directory can take it: a read-only shared copy is
/// checked by loading it each time). An error means the files themselves are damaged.
fn check_download(root: &Path, unpacked: &Path) -> Result<()> {
    let files = files_in(unpacked)?;
    let hashes: std::collections::BTreeMap<String, String> = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).bad_input_ctx(|| format!("{}: cannot read", p.display()))?;
            Ok((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), blake3::hash(&bytes).to_hex().to_string()))
        })
        .collect::<Result<_>>()?;
    let record = root.join(CHECKED);
    let known = std::fs::read(&record).ok().and_then(|b| serde_json::from_slice::<std::collections::BTreeMap<String, String>>(&b).ok());
    if known.as_ref() == Some(&hashes) {
        return Ok(());
    }
    load(unpacked)?;
    let _ = crate::fsx::write_atomic(&record, &serde_json::to_vec_pretty(&hashes)?);
    Ok(())
}

/// `apt-get download` and `dpkg-deb -x` into `root`.
fn download(root: &Path, unpacked: &Path) -> Result<()> {
    std::fs::create_dir_all(root).bad_input_ctx(|| format!("{}: cannot create", root.display()))?;
    eprintln!("fetch-data: downloading Debian package {PACKAGE} into {}", root.display());
    // apt-get writes its progress to stdout, which is ours for results: send it to stderr.
    let to_stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = Command::new("apt-get")
        .args(["download", PACKAGE])
        .current_dir(root)
        .stdout(Stdio::from(to_stderr))
        .status()
        .bad_input_ctx(|| format!("cannot run apt-get (not a Debian machine?): {NOT_DEBIAN}"))?;
    if !status.success() {
        return Err(bad_input(format!("`apt-get download {PACKAGE}` failed ({status}): {NOT_DEBIAN}")));
    }
    let deb = std::fs::read_dir(root)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb") && p.to_string_lossy().contains(PACKAGE))
        .ok_or_else(|| bad_input(format!("{}: apt-get left no {PACKAGE} .deb", root.display())))?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root)
        .status()
        .bad_input_ctx(|| "cannot run dpkg-deb".into())?;
    if !status.success() || !has_files(unpacked) {
        return Err(bad_input(format!("{}: unpacking did not give the IDX files in {}", deb.display(), unpacked.display())));
    }
    Ok(())
}

/// The four IDX files of a directory, or an error naming the missing one.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, l) in FILES {
        for f in [i, l] {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(bad_input(format!("{}: missing (Fashion-MNIST needs {})", p.display(), FILES.map(|(a, b)| format!("{a}, {b}")).join(", "))));
            }
            out.push(p);
        }
    }
    Ok(out)
}

fn split(images: &Path, labels: &Path) -> Result<Split> {
    let img = read_idx(images)?;
    let lab = read_idx(labels)?;
    if img.dims.len() != 3 || img.dims[1] != 28 || img.dims[2] != 28 {
        return Err(bad_input(format!("{}: expected N×28×28 images, header says {:?}", images.display(), img.dims)));
    }
    if lab.dims.len() != 1 || lab.dims[0] != img.dims[0] {
        return Err(bad_input(format!(
            "{}: {:?} labels for {} images in {}",
            labels.display(),
            lab.dims,
            img.dims[0],
            images.display()
        )));
    }
    if let Some(bad) = lab.data.iter().find(|&&l| l as usize >= CLASS_NAMES.len()) {
        return Err(bad_input(format!("{}: label {bad} outside 0..10", labels.display())));
    }
    Ok(Split { samples: Samples::Images(img.data), labels: lab.data.iter().map(|&l| l as i32).collect() })
}

/// Load the dataset from a directory holding the four IDX files.
pub fn load(dir: &Path) -> Result<Dataset> {
    let files = files_in(dir)?;
    let info = DatasetInfo {
        name: "fashion-mnist".into(),
        kind: SampleKind::Images { height: 28, width: 28, channels: 1 },
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Dataset { train: split(&files[0], &files[1])?, test: split(&files[2], &files[3])?, info })
}
