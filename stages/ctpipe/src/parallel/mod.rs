//! Data-parallel training: W processes, one per device, each computing the loss of its shard of
//! every batch, with gradients averaged across them before each optimiser step.
//!
//! The rules that make a W-process run equal the one-process run up to summation order:
//! - every rank draws the *whole* batch — data rows, flips, σ pairs, noise, dropout masks, GC's
//!   mixing — from the same (seed, purpose, step) streams and keeps the rows of its shard
//!   ([`Shard`]), so sample i gets the same draws whatever W is;
//! - each rank's loss is the mean over its shard; the gradients are summed over ranks and
//!   divided by W ([`average_gradients`], bucketed), which is the full batch's mean gradient;
//! - every rank starts from rank 0's state (fresh or resumed, broadcast) and applies the same
//!   update to the same weights, so the weights stay identical; a digest of them is compared at
//!   every checkpoint;
//! - what needs the whole batch gathers it ([`Collective::gather_all`]): SCT's references;
//! - decisions are collective: a stop request on any rank stops all at the same step, a
//!   non-finite loss on any rank skips the step on all.
//!
//! The transport is MPI (`mpi` feature: rank discovery under `mpirun` or `srun`, CPU
//! collectives); [`Single`] is the one-process world every other build and run uses.

#[cfg(feature = "mpi")]
mod mpi_world;

use crate::error::usage;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// What a data-parallel run needs from its transport. Every call is collective: all ranks make
/// the same calls in the same order.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sum over ranks, in place; every rank gets the same result.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Rank 0's bytes on every rank (the length is rank 0's).
    fn broadcast(&self, buf: &mut Vec<u8>) -> Result<()>;
    /// Every rank's bytes, in rank order.
    fn gather_all(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    fn barrier(&self) -> Result<()>;
    /// End every rank with `code`: an error on one rank would otherwise leave the others
    /// waiting in a collective forever.
    fn abort(&self, code: i32) -> !;
    /// The transport, for logs.
    fn name(&self) -> &'static str;
}

/// The one-process world: every collective is the identity.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn gather_all(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn name(&self) -> &'static str {
        "single process"
    }
}

/// The world this process belongs to: MPI's when a launcher (`mpirun`, `srun`) started it as
/// one of several ranks and the binary was built with the `mpi` feature, else [`Single`].
/// Several ranks without the feature is an error: each would train the whole run alone.
pub fn world_from_env() -> Result<Box<dyn Collective>> {
    let launched = launched_size();
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        return Ok(Box::new(mpi_world::MpiWorld::init()?));
    }
    if let Some((var, n)) = launched {
        return Err(usage(format!(
            "started as one of {n} processes ({var}={n}), but this binary was built without data-parallel support; build it with `make mpi` (cargo feature `mpi`), or run one process"
        )));
    }
    Ok(Box::new(Single))
}

/// The number of processes a launcher started, when more than one: Open MPI and MPICH's
/// `mpirun`, PMIx, and `srun` (which sets SLURM_STEP_NUM_TASKS in every task of a step).
fn launched_size() -> Option<(&'static str, usize)> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 1).map(|n| (var, n)))
}

/// The rows of the batch this rank computes: `len` rows from `offset` of a batch of `full`.
/// Shards are contiguous and in rank order, so gathering them in rank order is the batch.
#[derive(Clone, Copy)]
pub struct Shard<'a> {
    pub offset: usize,
    pub len: usize,
    pub full: usize,
    pub world: &'a dyn Collective,
    /// The whole batch's class labels (SCT's references by class).
    pub batch_labels: Option<&'a [u32]>,
}

impl<'a> Shard<'a> {
    /// Rank `world.rank()`'s equal part of a batch of `full`.
    pub fn of(world: &'a dyn Collective, full: usize) -> Result<Shard<'a>> {
        let w = world.size();
        if full % w != 0 {
            return Err(usage(format!("field `batch`: {full} does not split evenly over {w} processes; use a multiple of {w}")));
        }
        let len = full / w;
        Ok(Shard { offset: world.rank() * len, len, full, world, batch_labels: None })
    }

    /// This shard's entries of a per-sample vector drawn for the whole batch.
    pub fn rows<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all[self.offset..self.offset + self.len].to_vec()
    }

    /// This shard's rows (dimension 0) of a tensor holding the whole batch.
    pub fn narrow(&self, all: &Tensor) -> candle_core::Result<Tensor> {
        if self.len == all.dim(0)? {
            return Ok(all.clone());
        }
        all.narrow(0, self.offset, self.len)
    }

    /// Every rank's rows of `mine`, in rank order: the whole batch's.
    pub fn gather(&self, mine: &Tensor) -> candle_core::Result<Tensor> {
        if self.world.size() == 1 {
            return Ok(mine.clone());
        }
        let dtype = mine.dtype();
        let v: Vec<f32> = mine.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let parts = self.world.gather_all(&bytes).map_err(|e| candle_core::Error::Msg(format!("gathering the batch: {e}")))?;
        let all: Vec<f32> = parts.concat().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut dims = mine.dims().to_vec();
        dims[0] = self.full;
        Tensor::from_vec(all, dims, mine.device())?.to_dtype(dtype)
    }
}

/// Gradients are summed in buckets of this many f32 values (16 MiB), as DDP does: a few large
/// collectives instead of one per tensor, and a bounded staging buffer.
pub const BUCKET: usize = 4 << 20;

/// Replace each rank's gradients by their mean over ranks. `params` gives the order (the same
/// on every rank); a parameter without a gradient on every rank stays without one. A value per
/// parameter says whether the rank has its gradient; the ranks must agree.
pub fn average_gradients(world: &dyn Collective, params: &[(String, Var)], grads: &mut HashMap<String, Tensor>) -> Result<()> {
    let w = world.size();
    if w == 1 {
        return Ok(());
    }
    let mut present: Vec<f32> = params.iter().map(|(n, _)| if grads.contains_key(n) { 1.0 } else { 0.0 }).collect();
    world.sum_f32(&mut present)?;
    for ((name, _), &p) in params.iter().zip(&present) {
        if p != 0.0 && p as usize != w {
            bail!("ranks disagree on whether `{name}` has a gradient ({p} of {w})");
        }
    }
    let names: Vec<&String> = params.iter().map(|(n, _)| n).filter(|n| grads.contains_key(*n)).collect();
    let scale = 1.0 / w as f32;
    let mut i = 0;
    while i < names.len() {
        // One bucket: whole tensors up to BUCKET values (a larger tensor is a bucket alone).
        let mut j = i;
        let mut len = 0;
        while j < names.len() && (j == i || len + grads[names[j]].elem_count() <= BUCKET) {
            len += grads[names[j]].elem_count();
            j += 1;
        }
        let mut buf = Vec::with_capacity(len);
        for n in &names[i..j] {
            buf.extend(grads[*n].flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        world.sum_f32(&mut buf)?;
        let mut at = 0;
        for n in &names[i..j] {
            let g = &grads[*n];
            let k = g.elem_count();
            let mean: Vec<f32> = buf[at..at + k].iter().map(|v| v * scale).collect();
            let t = Tensor::from_vec(mean, g.shape(), g.device())?.to_dtype(g.dtype())?;
            grads.insert((*n).clone(), t);
            at += k;
        }
        i = j;
    }
    Ok(())
}

/// The mean over ranks of each rank's scalar logs. A name some ranks lack is averaged over the
/// ranks that have it (a bin no sample of a shard fell in).
pub fn average_logs(world: &dyn Collective, logs: &[(&'static str, f64)]) -> Result<Vec<(&'static str, f64)>> {
    if world.size() == 1 {
        return Ok(logs.to_vec());
    }
    let mine = serde_json::to_vec(&logs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>())?;
    let mut sums: Vec<(&'static str, f64, usize)> = logs.iter().map(|&(k, _)| (k, 0.0, 0)).collect();
    for part in world.gather_all(&mine)? {
        let theirs: Vec<(String, f64)> = serde_json::from_slice(&part)?;
        for (k, v) in theirs {
            if let Some(s) = sums.iter_mut().find(|s| s.0 == k) {
                s.1 += v;
                s.2 += 1;
            }
        }
    }
    Ok(sums.into_iter().map(|(k, s, n)| (k, s / n.max(1) as f64)).collect())
}

/// Check that every rank holds the same bytes (a key, a weights digest); `what` names them.
pub fn check_agree(world: &dyn Collective, what: &str, mine: &[u8]) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let all = world.gather_all(mine)?;
    if let Some((r, _)) = all.iter().enumerate().find(|(_, b)| b.as_slice() != all[0].as_slice()) {
        bail!(
            "ranks disagree on {what}: rank 0 has {}, rank {r} has {}",
            String::from_utf8_lossy(&all[0]),
            String::from_utf8_lossy(&all[r])
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::sync::{Arc, Barrier, Mutex};

    /// W ranks as threads of one process, for testing the reductions without MPI: each call
    /// deposits its part and waits for the others.
    struct Threads {
        rank: usize,
        size: usize,
        board: Arc<(Mutex<Vec<Vec<u8>>>, Barrier)>,
    }

    impl Threads {
        fn exchange(&self, mine: &[u8]) -> Vec<Vec<u8>> {
            let (board, barrier) = &*self.board;
            board.lock().unwrap()[self.rank] = mine.to_vec();
            barrier.wait();
            let all = board.lock().unwrap().clone();
            barrier.wait();
            all
        }
    }

    impl Collective for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn sum_f32(&self, buf: &mut [f32]) -> Result<()> {
            let all = self.exchange(&buf.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
            for (i, v) in buf.iter_mut().enumerate() {
                *v = all.iter().map(|b| f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())).sum();
            }
            Ok(())
        }
        fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
            let all = self.exchange(&buf.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
            for (i, v) in buf.iter_mut().enumerate() {
                *v = all.iter().map(|b| f64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap())).sum();
            }
            Ok(())
        }
        fn broadcast(&self, buf: &mut Vec<u8>) -> Result<()> {
            *buf = self.exchange(buf)[0].clone();
            Ok(())
        }
        fn gather_all(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(self.exchange(mine))
        }
        fn barrier(&self) -> Result<()> {
            self.board.1.wait();
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            panic!("abort {code}")
        }
        fn name(&self) -> &'static str {
            "threads"
        }
    }

    fn run_ranks<T: Send + 'static>(size: usize, f: impl Fn(&dyn Collective) -> T + Send + Sync + 'static) -> Vec<T> {
        let board = Arc::new((Mutex::new(vec![Vec::new(); size]), Barrier::new(size)));
        let f = Arc::new(f);
        let handles: Vec<_> = (0..size)
            .map(|rank| {
                let (board, f) = (board.clone(), f.clone());
                std::thread::spawn(move || f(&Threads { rank, size, board }))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Three ranks' gradients, by hand: the mean of 1, 2 and 6 is 3 in every entry of every
    /// tensor, across bucket boundaries (a tensor larger than a bucket included); a tensor no
    /// rank has a gradient for stays without one.
    #[test]
    fn gradients_are_averaged_over_ranks_in_buckets() {
        let results = run_ranks(3, |world| {
            let dev = Device::Cpu;
            let shapes = [("a", vec![3usize]), ("big", vec![BUCKET + 5]), ("c", vec![2, 2]), ("none", vec![1])];
            let params: Vec<(String, Var)> = shapes.iter().map(|(n, s)| (n.to_string(), Var::zeros(s.as_slice(), DType::F32, &dev).unwrap())).collect();
            let v = [1f32, 2.0, 6.0][world.rank()];
            let mut grads: HashMap<String, Tensor> =
                shapes.iter().filter(|(n, _)| *n != "none").map(|(n, s)| (n.to_string(), Tensor::full(v, s.as_slice(), &dev).unwrap())).collect();
            average_gradients(world, &params, &mut grads).unwrap();
            let mut out: Vec<(String, f32, f32)> = grads
                .iter()
                .map(|(n, t)| {
                    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                    (n.clone(), v.iter().cloned().fold(f32::INFINITY, f32::min), v.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        });
        for r in results {
            assert_eq!(r.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["a", "big", "c"]);
            for (name, lo, hi) in r {
                assert_eq!((lo, hi), (3.0, 3.0), "{name}");
            }
        }
    }

    /// Ranks that disagree on which parameters have gradients are an error, not a silent
    /// average of mismatched tensors.
    #[test]
    fn ranks_disagreeing_on_gradients_is_an_error() {
        let results = run_ranks(2, |world| {
            let dev = Device::Cpu;
            let params = vec![("a".to_string(), Var::zeros(2, DType::F32, &dev).unwrap())];
            let mut grads = HashMap::new();
            if world.rank() == 0 {
                grads.insert("a".to_string(), Tensor::ones(2, DType::F32, &dev).unwrap());
            }
            average_gradients(world, &params, &mut grads).map_err(|e| e.to_string())
        });
        for r in results {
            assert!(r.unwrap_err().contains("disagree on whether `a`"));
        }
    }

    /// Shards are contiguous, in rank order, and gathering them gives the batch back; a batch
    /// that does not split evenly is refused naming the field.
    #[test]
    fn shards_split_and_gather_the_batch() {
        let results = run_ranks(2, |world| {
            let dev = Device::Cpu;
            let all = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((6, 2)).unwrap();
            let shard = Shard::of(world, 6).unwrap();
            let mine = shard.narrow(&all).unwrap();
            let back: Vec<f32> = shard.gather(&mine).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let err = Shard::of(world, 5).err().map(|e| e.to_string());
            (shard.offset, shard.rows(&[0, 1, 2, 3, 4, 5]), back, err)
        });
        assert_eq!(results[0].0, 0);
        assert_eq!(results[1].0, 3);
        assert_eq!(results[1].1, vec![3, 4, 5]);
        for (_, _, back, err) in &results {
            assert_eq!(back, &(0..12).map(|v| v as f32).collect::<Vec<_>>());
            assert!(err.as_deref().unwrap().contains("field `batch`: 5 does not split evenly over 2"));
        }
    }

    /// Logs are averaged over the ranks that have them.
    #[test]
    fn logs_are_averaged_over_ranks() {
        let results = run_ranks(2, |world| {
            let mut logs = vec![("x", [1.0, 3.0][world.rank()])];
            if world.rank() == 1 {
                logs.push(("only_one", 5.0));
            }
            average_logs(world, &logs).unwrap()
        });
        assert_eq!(results[0], vec![("x", 2.0)]);
        assert_eq!(results[1], vec![("x", 2.0), ("only_one", 5.0)]);
    }

    #[test]
    fn disagreement_names_both_values() {
        let results = run_ranks(2, |world| check_agree(world, "the key", if world.rank() == 0 { b"abc" } else { b"abd" }).map_err(|e| e.to_string()));
        for r in results {
            assert_eq!(r.unwrap_err(), "ranks disagree on the key: rank 0 has abc, rank 1 has abd");
        }
    }
}
