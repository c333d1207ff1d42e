//! Checkpoints: every tensor of the training state in one safetensors file, written
//! atomically, with the step in its metadata. The newest file in the directory is the one to
//! resume from; older ones beyond the last two are removed.

use crate::fsx;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Steps completed.
    pub step: u64,
    /// The optimiser's own step count.
    pub optimizer_t: u64,
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

fn name(step: u64) -> String {
    format!("ckpt-{step:010}.safetensors")
}

/// Write a checkpoint (temporary file, fsync, rename), then prune to the newest two.
pub fn save(dir: &Path, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = dir.join(name(meta.step));
    let tmp = fsx::temp_sibling(&path);
    let mut items: Vec<(String, Tensor)> = tensors.to_vec();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let meta_text = serde_json::to_string(meta)?;
    let result = (|| -> Result<()> {
        let cpu: Vec<(String, Tensor)> = items.iter().map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
        safetensors::serialize_to_file(
            cpu.iter().map(|(k, t)| (k.as_str(), t)),
            Some(HashMap::from([("ctpipe-checkpoint".to_string(), meta_text)])),
            &tmp,
        )?;
        fsx::fsync_file(&tmp)?;
        std::fs::rename(&tmp, &path)?;
        fsx::fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write checkpoint", path.display()))?;
    let mut all = list(dir)?;
    all.reverse();
    for (_, old) in all.into_iter().skip(2) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(out) };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = n.strip_prefix("ckpt-").and_then(|s| s.strip_suffix(".safetensors")).and_then(|s| s.parse().ok()) {
            out.push((step, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Load a checkpoint file.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let meta_text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("ctpipe-checkpoint").cloned())
        .with_context(|| format!("{}: no checkpoint metadata", path.display()))?;
    let meta: CheckpointMeta = serde_json::from_str(&meta_text)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    Ok(Checkpoint { meta, tensors })
}
