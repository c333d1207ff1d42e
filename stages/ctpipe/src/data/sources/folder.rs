//! Images from a folder tree: the label is the name of the folder an image sits in.
//!
//! Two layouts: `<root>/train/<class>/*.png` + `<root>/test/<class>/*.png` (explicit splits), or
//! `<root>/<class>/*.png` (one pool, split by the caller). Class names are the sorted union of
//! the class folders. PNG and JPEG files are read; other files are ignored.

use super::images::ImageCollector;
use crate::error::{bad_input, TagContext};
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Image files by split: `(split or None for a single pool, class, path)`, sorted.
pub fn list_images(root: &Path) -> Result<Vec<(Option<&'static str>, String, PathBuf)>> {
    if !root.is_dir() {
        return Err(bad_input(format!("{}: no such folder", root.display())));
    }
    let explicit = root.join("train").is_dir() && root.join("test").is_dir();
    let mut out = Vec::new();
    if explicit {
        for split in ["train", "test"] {
            list_classes(&root.join(split), Some(split), &mut out)?;
        }
    } else {
        list_classes(root, None, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn list_classes(dir: &Path, split: Option<&'static str>, out: &mut Vec<(Option<&'static str>, String, PathBuf)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).bad_input_ctx(|| format!("{}: cannot list", dir.display()))?;
    for class_dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        let class = class_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&class_dir)?.flatten().map(|e| e.path()) {
            let ext = f.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if f.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
                out.push((split, class.clone(), f));
            }
        }
    }
    Ok(())
}

/// The sorted class names of a listing.
pub fn class_names(listing: &[(Option<&'static str>, String, PathBuf)]) -> Vec<String> {
    listing.iter().map(|(_, c, _)| c.clone()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Decode the listed images of one split (`None`: the single pool) into a collector.
pub fn decode(
    listing: &[(Option<&'static str>, String, PathBuf)],
    split: Option<&str>,
    classes: &[String],
    out: &mut ImageCollector,
) -> Result<()> {
    for (s, class, path) in listing.iter().filter(|(s, _, _)| *s == split) {
        let _ = s;
        let label = classes.iter().position(|c| c == class).expect("class listed") as i32;
        let bytes = std::fs::read(path).bad_input_ctx(|| format!("{}: cannot read", path.display()))?;
        out.push(&bytes, label, &path.display().to_string())?;
    }
    Ok(())
}
