//! The sources `fetch-data` imports from, behind one config and one `fetch` call.

pub mod fashion_mnist;
pub mod folder;
pub mod hub;
pub mod idx;
pub mod images;
pub mod parquet_file;
pub mod toy2d;

use super::schema::{Dataset, DatasetInfo, SampleKind, Samples, Split};
use crate::error::{bad_input, usage, TagContext};
use anyhow::Result;
use images::ImageCollector;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

crate::config_struct! {
    /// `fetch-data` settings. Fields that do not apply to the chosen source must stay unset.
    pub struct FetchConfig {
        /// Where the data comes from: `toy2d`, `fashion-mnist`, `hub:<owner>/<name>` (or
        /// `hub:<owner>/<name>/<config>`), `folder:<path>` or `parquet:<path>` (a file, or a
        /// folder of train*/test* (validation*) files).
        pub source: String = "toy2d".into(),
        /// toy2d: the shape: two-gaussians (default), eight-gaussians, checkerboard, moons, swiss-roll.
        pub dataset: Option<String> = None,
        /// toy2d: training rows (default 20000).
        #[range = "[2, 1e8]"]
        pub n: Option<u64> = None,
        /// toy2d: test rows (default 5000).
        #[range = "[2, 1e8]"]
        pub n_test: Option<u64> = None,
        /// toy2d: std of the Gaussian noise added to each point (default: the shape's own).
        #[range = "[0, inf)"]
        pub noise: Option<f64> = None,
        /// Seed of every random draw: toy2d samples, the train/test split of a single pool.
        #[range = "[0, inf)"]
        pub seed: u64 = 0,
        /// fashion-mnist: `debian` (default: the installed package, or apt-get download into
        /// the data directory), `hub` (zalando-datasets/fashion_mnist), or a folder holding the
        /// four IDX files.
        pub from: Option<String> = None,
        /// hub: revision (branch, tag or commit; default main). Offline use: HF_HUB_OFFLINE=1.
        pub revision: Option<String> = None,
        /// hub, parquet: the image column (default: the first binary or {bytes, path} column).
        pub image_column: Option<String> = None,
        /// hub, parquet: the label column (default: label, labels, fine_label or class).
        pub label_column: Option<String> = None,
        /// hub, folder, parquet: channels to store, 1 or 3 (default: the first image's).
        #[range = "[1, 3]"]
        pub channels: Option<u32> = None,
        /// hub, folder, parquet without a test (or validation) split: fraction held out as
        /// test (default 0.1).
        #[range = "(0, 1)"]
        pub test_fraction: Option<f64> = None,
    }
}

/// A parsed `source` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Toy2d,
    FashionMnist,
    Hub(String),
    Folder(PathBuf),
    Parquet(PathBuf),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source> {
        let bad = || {
            usage(format!(
                "unknown source `{s}` (expected toy2d, fashion-mnist, hub:<owner>/<name>, folder:<path> or parquet:<path>)"
            ))
        };
        Ok(match s.split_once(':') {
            None if s == "toy2d" => Source::Toy2d,
            None if s == "fashion-mnist" => Source::FashionMnist,
            Some(("hub", id)) if !id.is_empty() => Source::Hub(id.to_string()),
            Some(("folder", p)) if !p.is_empty() => Source::Folder(PathBuf::from(p)),
            Some(("parquet", p)) if !p.is_empty() => Source::Parquet(PathBuf::from(p)),
            _ => return Err(bad()),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Source::Toy2d => "toy2d",
            Source::FashionMnist => "fashion-mnist",
            Source::Hub(_) => "hub",
            Source::Folder(_) => "folder",
            Source::Parquet(_) => "parquet",
        }
    }
}

const FASHION_MNIST_HUB: &str = "zalando-datasets/fashion_mnist";

impl FetchConfig {
    /// Check the source and that only its own fields are set.
    pub fn validate(&self) -> Result<Source> {
        let source = Source::parse(&self.source)?;
        let set: [(&str, bool, &[&str]); 10] = [
            ("dataset", self.dataset.is_some(), &["toy2d"]),
            ("n", self.n.is_some(), &["toy2d"]),
            ("n_test", self.n_test.is_some(), &["toy2d"]),
            ("noise", self.noise.is_some(), &["toy2d"]),
            ("from", self.from.is_some(), &["fashion-mnist"]),
            ("revision", self.revision.is_some(), &["hub"]),
            ("image_column", self.image_column.is_some(), &["hub", "parquet"]),
            ("label_column", self.label_column.is_some(), &["hub", "parquet"]),
            ("channels", self.channels.is_some(), &["hub", "folder", "parquet"]),
            ("test_fraction", self.test_fraction.is_some(), &["hub", "folder", "parquet"]),
        ];
        for (field, is_set, sources) in set {
            if is_set && !sources.contains(&source.name()) {
                return Err(usage(format!("field `{field}` applies to source {} only, not {}", sources.join("/"), self.source)));
            }
        }
        if let Some(d) = &self.dataset {
            toy2d::default_noise(d)?;
        }
        if self.n == Some(0) || self.n_test == Some(0) {
            return Err(bad_input("empty split: toy2d needs n > 0 and n_test > 0"));
        }
        if self.noise.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
            return Err(usage("field `noise`: expected a finite value ≥ 0"));
        }
        if self.channels.is_some_and(|c| c != 1 && c != 3) {
            return Err(usage(format!("field `channels`: expected 1 or 3, got {}", self.channels.unwrap_or(0))));
        }
        if self.test_fraction.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
            return Err(usage("field `test_fraction`: expected a value strictly between 0 and 1"));
        }
        if let Source::Hub(id) = &source {
            hub::HubId::parse(id)?;
        }
        if let Some(from) = &self.from {
            if from.is_empty() {
                return Err(usage("field `from`: expected debian, hub or a folder path"));
            }
        }
        Ok(source)
    }

    /// Fingerprints of the source's files (nothing for toy2d).
    pub fn external_inputs(&self, data_dir: &Path) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        match self.validate()? {
            Source::Toy2d => {}
            Source::FashionMnist => match self.fashion_mnist_dir(data_dir)? {
                Some(dir) => {
                    out.insert("fashion-mnist".into(), hash_files(&dir, &fashion_mnist::files_in(&dir)?)?);
                }
                None => {
                    let snap = hub::snapshot(FASHION_MNIST_HUB, "main", hub::offline_from_env())?;
                    out.insert("hub".into(), format!("{}@{}", snap.repo_id, snap.commit));
                }
            },
            Source::Hub(id) => {
                let snap = hub::snapshot(&id, self.revision.as_deref().unwrap_or("main"), hub::offline_from_env())?;
                out.insert("hub".into(), format!("{}@{}", snap.repo_id, snap.commit));
            }
            Source::Folder(root) => {
                let files: Vec<PathBuf> = folder::list_images(&root)?.into_iter().map(|(_, _, p)| p).collect();
                out.insert("folder".into(), hash_files(&root, &files)?);
            }
            Source::Parquet(path) => {
                let files: Vec<PathBuf> = parquet_files(&path)?.into_iter().map(|(_, p)| p).collect();
                let root = if path.is_dir() { path.clone() } else { path.parent().unwrap_or(Path::new("")).to_path_buf() };
                out.insert("parquet".into(), hash_files(&root, &files)?);
            }
        }
        Ok(out)
    }

    /// `Some(dir)` for IDX files (debian or a path), `None` for the Hub copy.
    fn fashion_mnist_dir(&self, data_dir: &Path) -> Result<Option<PathBuf>> {
        match self.from.as_deref().unwrap_or("debian") {
            "debian" => Ok(Some(fashion_mnist::locate_debian(data_dir)?)),
            "hub" => Ok(None),
            dir => Ok(Some(PathBuf::from(dir))),
        }
    }

    /// Import the dataset.
    pub fn fetch(&self, data_dir: &Path) -> Result<Dataset> {
        let dataset = match self.validate()? {
            Source::Toy2d => {
                let name = self.dataset.as_deref().unwrap_or("two-gaussians");
                let noise = match self.noise {
                    Some(v) => v,
                    None => toy2d::default_noise(name)?,
                };
                toy2d::generate(name, self.n.unwrap_or(20_000) as usize, self.n_test.unwrap_or(5_000) as usize, noise, self.seed)?
            }
            Source::FashionMnist => match self.fashion_mnist_dir(data_dir)? {
                Some(dir) => fashion_mnist::load(&dir)?,
                None => {
                    let mut d = self.fetch_hub(FASHION_MNIST_HUB)?;
                    d.info.name = format!("fashion-mnist ({})", d.info.name);
                    d
                }
            },
            Source::Hub(id) => self.fetch_hub(&id)?,
            Source::Folder(root) => {
                let listing = folder::list_images(&root)?;
                let classes = folder::class_names(&listing);
                let name = format!("folder:{}", root.display());
                if listing.iter().any(|(s, _, _)| s.is_some()) {
                    let mut splits = Vec::new();
                    for split in ["train", "test"] {
                        let mut c = ImageCollector::new(self.channels);
                        folder::decode(&listing, Some(split), &classes, &mut c)?;
                        splits.push(c);
                    }
                    self.two_splits(name, classes, splits)?
                } else {
                    let mut c = ImageCollector::new(self.channels);
                    folder::decode(&listing, None, &classes, &mut c)?;
                    self.one_pool(name, classes, c)?
                }
            }
            Source::Parquet(path) => {
                let files = parquet_files(&path)?;
                self.import_parquet(format!("parquet:{}", path.display()), &files)?
            }
        };
        check_not_empty(&dataset, &self.source)?;
        Ok(dataset)
    }

    fn fetch_hub(&self, repo_id: &str) -> Result<Dataset> {
        let revision = self.revision.as_deref().unwrap_or("main");
        let snap = hub::snapshot(repo_id, revision, hub::offline_from_env())?;
        let files: Vec<(Option<&'static str>, PathBuf)> = snap.files.iter().map(|(rel, p)| (hub::split_of(rel), p.clone())).collect();
        self.import_parquet(format!("hub:{repo_id}@{}", snap.commit), &files)
    }

    fn import_parquet(&self, name: String, files: &[(Option<&'static str>, PathBuf)]) -> Result<Dataset> {
        let cols = parquet_file::Columns { image: self.image_column.clone(), label: self.label_column.clone() };
        let mut labels = parquet_file::Labels::default();
        let mut read = |files: &[&PathBuf]| -> Result<ImageCollector> {
            let mut c = ImageCollector::new(self.channels);
            for p in files {
                parquet_file::import_file(p, &cols, &mut c, &mut labels)?;
            }
            Ok(c)
        };
        let of = |split: &str| files.iter().filter(|(s, _)| *s == Some(split)).map(|(_, p)| p).collect::<Vec<_>>();
        let (train, test, validation) = (of("train"), of("test"), of("validation"));
        let held_out = if test.is_empty() { &validation } else { &test };
        if !train.is_empty() && !held_out.is_empty() {
            if test.is_empty() {
                eprintln!("fetch-data: {name} has no test split; its validation split serves as test");
            }
            let (mut tr, mut te) = (read(&train)?, read(held_out)?);
            let classes = class_names_for(labels.finish(&mut [&mut tr, &mut te]), tr.labels.iter().chain(&te.labels));
            self.two_splits(name, classes, vec![tr, te])
        } else {
            // One pool, split by a seeded shuffle: the train files if any are named so, else all.
            if train.is_empty() && !held_out.is_empty() {
                eprintln!("fetch-data: {name} has no train split; every file, its held-out splits included, is pooled and split by test_fraction");
            }
            let pool: Vec<&PathBuf> = if train.is_empty() { files.iter().map(|(_, p)| p).collect() } else { train };
            let mut c = read(&pool)?;
            let classes = class_names_for(labels.finish(&mut [&mut c]), c.labels.iter());
            self.one_pool(name, classes, c)
        }
    }

    fn two_splits(&self, name: String, class_names: Vec<String>, mut splits: Vec<ImageCollector>) -> Result<Dataset> {
        let test = splits.pop().expect("two");
        let train = splits.pop().expect("two");
        if train.is_empty() || test.is_empty() {
            return Err(bad_input(format!(
                "empty split: {} gave {} train and {} test images",
                self.source,
                train.len(),
                test.len()
            )));
        }
        let (h, w, c) = train.shape().expect("not empty");
        if test.shape() != train.shape() {
            let (th, tw, tc) = test.shape().expect("not empty");
            return Err(bad_input(format!("mixed image sizes: train images are {h}×{w}×{c}, test images {th}×{tw}×{tc}")));
        }
        let info = DatasetInfo { name, kind: SampleKind::Images { height: h, width: w, channels: c }, class_names };
        Ok(Dataset {
            info,
            train: Split { samples: Samples::Images(train.pixels), labels: train.labels },
            test: Split { samples: Samples::Images(test.pixels), labels: test.labels },
        })
    }

    /// Split one pool of images into train and test by a seeded shuffle.
    fn one_pool(&self, name: String, class_names: Vec<String>, pool: ImageCollector) -> Result<Dataset> {
        let n = pool.len();
        let n_test = (self.test_fraction.unwrap_or(0.1) * n as f64).round() as usize;
        if n == 0 || n_test == 0 || n_test == n {
            return Err(bad_input(format!(
                "empty split: {} has {n} images, too few to hold out a test fraction of {}",
                self.source,
                self.test_fraction.unwrap_or(0.1)
            )));
        }
        let (h, w, c) = pool.shape().expect("not empty");
        let len = (h * w * c) as usize;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let mut is_test = vec![false; n];
        for &i in &order[..n_test] {
            is_test[i] = true;
        }
        let take = |want: bool| {
            let mut px = Vec::new();
            let mut labels = Vec::new();
            for i in (0..n).filter(|&i| is_test[i] == want) {
                px.extend_from_slice(&pool.pixels[i * len..(i + 1) * len]);
                labels.push(pool.labels[i]);
            }
            Split { samples: Samples::Images(px), labels }
        };
        let info = DatasetInfo { name, kind: SampleKind::Images { height: h, width: w, channels: c }, class_names };
        Ok(Dataset { train: take(false), test: take(true), info })
    }
}

/// Class names from metadata if they cover every label, else the label numbers.
fn class_names_for<'a>(names: Vec<String>, labels: impl Iterator<Item = &'a i32>) -> Vec<String> {
    let max = labels.copied().max().unwrap_or(-1);
    if !names.is_empty() && (max as usize) < names.len() {
        names
    } else {
        (0..=max.max(0)).map(|l| l.to_string()).collect()
    }
}

fn check_not_empty(d: &Dataset, source: &str) -> Result<()> {
    for (name, s) in [("train", &d.train), ("test", &d.test)] {
        if s.rows() == 0 {
            return Err(bad_input(format!("empty split: {source} gave no {name} rows")));
        }
        s.check(&d.info, &format!("{source} {name}")).map_err(|e| bad_input(e.to_string()))?;
    }
    Ok(())
}

/// The Parquet files of a `parquet:` source with their split (by file name), sorted.
pub fn parquet_files(path: &Path) -> Result<Vec<(Option<&'static str>, PathBuf)>> {
    if path.is_file() {
        return Ok(vec![(None, path.to_path_buf())]);
    }
    if !path.is_dir() {
        return Err(bad_input(format!("{}: no such file or folder", path.display())));
    }
    let files: Vec<(Option<&'static str>, PathBuf)> = hub::list_parquet(path)?.into_iter().map(|(rel, p)| (hub::split_of(&rel), p)).collect();
    if files.is_empty() {
        return Err(bad_input(format!("{}: no .parquet files", path.display())));
    }
    Ok(files)
}

/// blake3 over the files' paths (relative to `root`) and contents, in the order given.
fn hash_files(root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut h = blake3::Hasher::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(f).to_string_lossy().replace('\\', "/");
        h.update(rel.as_bytes());
        h.update(&[0]);
        let file = std::fs::File::open(f).bad_input_ctx(|| format!("{}: cannot open", f.display()))?;
        h.update_reader(file).bad_input_ctx(|| format!("{}: read failed", f.display()))?;
    }
    Ok(h.finalize().to_hex().to_string())
}
