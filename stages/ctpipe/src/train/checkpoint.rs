//! Checkpoints: every tensor of the training state in one safetensors file, written
//! atomically, with the step, the run's key and a digest of the tensors in its metadata. The
//! newest usable file in the directory is the one to resume from; older ones beyond the last
//! two are removed.
//!
//! A checkpoint is usable when its metadata parses, it belongs to this run (its key: the same
//! stage, version, config and inputs), and its tensors hash to the digest written with them.
//! A file that fails is moved aside (`rejected-<name>`) with a message saying why, and the
//! next older one is tried (`fit.rs`).

use crate::error::bad_input;
use crate::fsx;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Format 2 added the run's key and the digest.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Steps completed.
    pub step: u64,
    /// The optimiser's own step count.
    pub optimizer_t: u64,
    /// The key of the run that wrote it.
    #[serde(default)]
    pub run: String,
    /// blake3 over every tensor's name, dtype, shape and values, in name order ([`digest`]).
    #[serde(default)]
    pub tensors_blake3: String,
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

fn name(step: u64) -> String {
    format!("ckpt-{step:010}.safetensors")
}

/// The digest of named tensors: what a checkpoint promises to hold, independent of the file's
/// layout, so a flipped byte anywhere in the tensors' data is found.
pub fn digest<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<String> {
    let mut items: Vec<(&String, &Tensor)> = tensors.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    for (name, t) in items {
        h.update(format!("{name}\0{:?}\0{:?}\0", t.dtype(), t.dims()).as_bytes());
        // f32 exactly; other dtypes through f64, which holds each of them exactly. One update
        // per tensor: blake3 is fast on long inputs, slow on 4-byte ones.
        let bytes: Vec<u8> = match t.dtype() {
            DType::F32 => t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        h.update(&bytes);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The tensors on the CPU in name order, and the safetensors metadata naming their run, step
/// and digest: what a checkpoint file and an [`encode`]d state hold.
fn prepare(run: &str, step: u64, optimizer_t: u64, tensors: &[(String, Tensor)]) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let mut cpu: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = CheckpointMeta { format: FORMAT, step, optimizer_t, run: run.to_string(), tensors_blake3: digest(cpu.iter().map(|(k, t)| (k, t)))? };
    Ok((cpu, HashMap::from([("ctpipe-checkpoint".to_string(), serde_json::to_string(&meta)?)])))
}

/// Write a checkpoint of `run` (temporary file, fsync, rename), then prune to the newest two.
pub fn save(dir: &Path, run: &str, step: u64, optimizer_t: u64, tensors: &[(String, Tensor)]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = dir.join(name(step));
    let tmp = fsx::temp_sibling(&path);
    let result = (|| -> Result<()> {
        let (cpu, metadata) = prepare(run, step, optimizer_t, tensors)?;
        safetensors::serialize_to_file(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata), &tmp)?;
        crate::failpoint::hit("checkpoint:before-rename");
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

/// A training state as bytes in the checkpoint format, for handing from rank 0 to the other
/// ranks of a data-parallel run ([`decode`]).
pub fn encode(run: &str, step: u64, optimizer_t: u64, tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let (cpu, metadata) = prepare(run, step, optimizer_t, tensors)?;
    Ok(safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))?)
}

/// The state [`encode`] wrote, its digest checked.
pub fn decode(bytes: &[u8], device: &Device) -> Result<Checkpoint> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)?;
    let meta_text = header.metadata().as_ref().and_then(|m| m.get("ctpipe-checkpoint").cloned()).context("no checkpoint metadata")?;
    let meta: CheckpointMeta = serde_json::from_str(&meta_text)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    if digest(tensors.iter())? != meta.tensors_blake3 {
        anyhow::bail!("the state received does not match its digest");
    }
    let tensors = tensors.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect::<Result<_>>()?;
    Ok(Checkpoint { meta, tensors })
}

/// Checkpoints in `dir` by their names, oldest first.
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

/// Load a checkpoint file of `run`, checked: its metadata, its run, its step (the file's
/// name) and its digest. What is wrong with the content is a bad-input error naming the file;
/// a failure to read it (I/O, permissions) or to place it on the device is not about the
/// checkpoint, and is returned untagged, so that the caller does not set a good file aside.
pub fn load(path: &Path, run: &str, device: &Device) -> Result<Checkpoint> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{shown}: cannot read"))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad_input(format!("{shown}: not a safetensors file ({e})")))?;
    let meta_text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("ctpipe-checkpoint").cloned())
        .ok_or_else(|| bad_input(format!("{shown}: no checkpoint metadata")))?;
    let meta: CheckpointMeta = serde_json::from_str(&meta_text).map_err(|e| bad_input(format!("{shown}: checkpoint metadata: {e}")))?;
    if meta.format == 1 {
        // Written by the ctpipe before checkpoints carried an identity: found in this run's
        // working directory (named by its key), so this run's; nothing more to check.
        eprintln!("{shown}: an older checkpoint without a digest; resuming from it unchecked");
        let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad_input(format!("{shown}: unreadable tensors ({e})")))?;
        return Ok(Checkpoint { meta, tensors });
    }
    if meta.format != FORMAT {
        return Err(bad_input(format!("{shown}: checkpoint format {} (this ctpipe writes {FORMAT})", meta.format)));
    }
    if meta.run != run {
        return Err(bad_input(format!("{shown}: written by run {} (another config, method or input), not this run {run}", short(&meta.run))));
    }
    let from_name = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("ckpt-")).and_then(|n| n.strip_suffix(".safetensors")).and_then(|s| s.parse::<u64>().ok());
    if from_name != Some(meta.step) {
        return Err(bad_input(format!("{shown}: holds step {}, its name says otherwise", meta.step)));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad_input(format!("{shown}: unreadable tensors ({e})")))?;
    let found = digest(tensors.iter())?;
    if found != meta.tensors_blake3 {
        return Err(bad_input(format!("{shown}: its tensors do not match their digest (the file is corrupt)")));
    }
    let tensors = tensors.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect::<Result<_>>().with_context(|| format!("{shown}: cannot place on the device"))?;
    Ok(Checkpoint { meta, tensors })
}

/// Move an unusable checkpoint aside (`rejected-<name>` beside it), so it is neither resumed
/// from nor pruned, and stays for a look; the new path.
pub fn reject(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let to = path.with_file_name(format!("rejected-{name}"));
    std::fs::rename(path, &to).with_context(|| format!("{}: cannot move aside", path.display()))?;
    Ok(to)
}

fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(if key.is_empty() { "(none)" } else { key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(v: f32) -> Vec<(String, Tensor)> {
        let d = Device::Cpu;
        vec![
            ("net/w".to_string(), Tensor::new(&[[v, 2.0], [3.0, 4.0]], &d).unwrap()),
            ("opt/m.w".to_string(), Tensor::new(&[0.5f32, -0.5], &d).unwrap()),
        ]
    }

    /// A checkpoint round-trips; another run's, a corrupted one, a truncated one and one
    /// renamed to another step are refused with a message that says which and why.
    #[test]
    fn checkpoints_carry_their_run_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = save(dir.path(), "run-a", 5, 5, &state(1.0)).unwrap();
        let c = load(&p, "run-a", &Device::Cpu).unwrap();
        assert_eq!((c.meta.step, c.meta.optimizer_t, c.meta.run.as_str()), (5, 5, "run-a"));
        assert_eq!(c.tensors["net/w"].to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);

        let msg = |e: anyhow::Error| crate::error::one_line(&e);
        assert!(msg(load(&p, "run-b", &Device::Cpu).err().unwrap()).contains("not this run run-b"));

        // A byte of the last tensor's data flipped (the data region ends the file).
        let bytes = std::fs::read(&p).unwrap();
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        std::fs::write(&p, &flipped).unwrap();
        let e = load(&p, "run-a", &Device::Cpu).err().unwrap();
        assert_eq!(crate::error::failure_of(&e), Some(crate::error::Failure::BadInput));
        assert!(msg(e).contains("do not match their digest"));

        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let m = msg(load(&p, "run-a", &Device::Cpu).err().unwrap());
        assert!(m.contains("not a safetensors file"), "{m}");

        std::fs::write(&p, &bytes).unwrap();
        let renamed = dir.path().join(name(9));
        std::fs::rename(&p, &renamed).unwrap();
        assert!(msg(load(&renamed, "run-a", &Device::Cpu).err().unwrap()).contains("holds step 5"));

        let moved = reject(&renamed).unwrap();
        assert!(moved.ends_with("rejected-ckpt-0000000009.safetensors") && moved.exists());
        assert!(list(dir.path()).unwrap().is_empty());
    }

    /// The digest sees every value, the shapes and the names.
    #[test]
    fn digest_changes_with_any_value_shape_or_name() {
        let base = digest(state(1.0).iter().map(|(k, t)| (k, t))).unwrap();
        assert_eq!(base, digest(state(1.0).iter().rev().map(|(k, t)| (k, t))).unwrap(), "order of the list does not matter");
        assert_ne!(base, digest(state(1.0000001).iter().map(|(k, t)| (k, t))).unwrap());
        let mut s = state(1.0);
        s[1].0 = "opt/v.w".into();
        assert_ne!(base, digest(s.iter().map(|(k, t)| (k, t))).unwrap());
        let mut s = state(1.0);
        s[0].1 = s[0].1.reshape(4).unwrap();
        assert_ne!(base, digest(s.iter().map(|(k, t)| (k, t))).unwrap());
    }
}
