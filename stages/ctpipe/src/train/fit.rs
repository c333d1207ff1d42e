//! The training loop. It knows the `Method` trait and nothing of any particular method:
//! draw batch → loss → backward → clean and clip gradients → optimiser step → EMA → log,
//! checkpoint, check for a stop request. Every random draw is keyed by the step, so the state
//! to resume is the weights, the EMA, the optimiser moments and the step.

use super::checkpoint;
use super::config::TrainConfig;
use super::ema::EmaSchedule;
use super::data::TrainData;
use super::metrics::{MetricsLog, Row};
use super::optim::{self, OptimConfig, Optimizer};
use super::signals::StopFlag;
use crate::error::{bad_input, diverged, interrupted};
use crate::methods::{Method, Progress, StepCtx};
use crate::model::Weights;
use crate::ode::Denoiser;
use crate::parallel::{self, Collective, Shard};
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// What is trained: the network, its EMA, VCT's encoder with its EMA, the μ-EMA target
/// network when `target_ema` > 0, and CD's teacher (fixed, so never checkpointed).
pub struct TrainState {
    pub net: Weights,
    pub ema: Weights,
    pub encoder: Option<(Weights, Weights)>,
    pub target: Option<TargetNet>,
    pub teacher: Option<Box<dyn Denoiser>>,
}

/// The network the target is computed with, an EMA of the trained one with rate μ.
pub struct TargetNet {
    pub weights: Weights,
    pub rate: f64,
}

impl TrainState {
    /// Trainable parameters, named `net:<name>` / `encoder:<name>`.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self.net.params.vars().into_iter().map(|(n, var)| (format!("net:{n}"), var)).collect();
        if let Some((enc, _)) = &self.encoder {
            v.extend(enc.params.vars().into_iter().map(|(n, var)| (format!("encoder:{n}"), var)));
        }
        v
    }

    /// (EMA, online) parameter pairs.
    fn ema_pairs(&self) -> Vec<(Var, Var)> {
        let mut pairs = averaged_pairs(&self.ema, &self.net);
        if let Some((enc, enc_ema)) = &self.encoder {
            pairs.extend(averaged_pairs(enc_ema, enc));
        }
        pairs
    }

    /// Every tensor of the state, for a checkpoint.
    fn tensors(&self, opt: &Optimizer) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let mut add = |prefix: &str, w: &Weights| out.extend(w.params.tensors().into_iter().map(|(n, t)| (format!("{prefix}/{n}"), t)));
        add("net", &self.net);
        add("ema", &self.ema);
        if let Some((e, ee)) = &self.encoder {
            add("encoder", e);
            add("encoder_ema", ee);
        }
        if let Some(t) = &self.target {
            add("target", &t.weights);
        }
        out.extend(opt.state()?.into_iter().map(|(n, t)| (format!("opt/{n}"), t)));
        Ok(out)
    }

    fn restore(&self, opt: &mut Optimizer, ckpt: &checkpoint::Checkpoint) -> Result<()> {
        let part = |prefix: &str| -> HashMap<String, Tensor> {
            let p = format!("{prefix}/");
            ckpt.tensors.iter().filter_map(|(k, t)| k.strip_prefix(&p).map(|n| (n.to_string(), t.clone()))).collect()
        };
        self.net.params.assign_from(&part("net"))?;
        self.ema.params.assign_from(&part("ema"))?;
        if let Some((e, ee)) = &self.encoder {
            e.params.assign_from(&part("encoder"))?;
            ee.params.assign_from(&part("encoder_ema"))?;
        }
        if let Some(t) = &self.target {
            t.weights.params.assign_from(&part("target"))?;
        }
        opt.load_state(ckpt.meta.optimizer_t, &part("opt"))
    }
}

/// (averaged, online) pairs of two copies of one network.
fn averaged_pairs(averaged: &Weights, online: &Weights) -> Vec<(Var, Var)> {
    averaged.params.vars().into_iter().zip(online.params.vars()).map(|((_, a), (_, o))| (a, o)).collect()
}

/// Everything the loop needs besides the state.
pub struct Fit<'a> {
    pub cfg: &'a TrainConfig,
    pub method: &'a dyn Method,
    pub data: &'a TrainData,
    pub grad_clip: Option<f64>,
    pub ema: EmaSchedule,
    pub device: Device,
    pub work_dir: &'a Path,
    /// The run's key: checkpoints carry it, and one of another run is never resumed from.
    pub run: &'a str,
    pub stop: &'a StopFlag,
    /// Label for progress lines.
    pub label: String,
    /// The processes training together (`parallel`); rank 0 alone writes checkpoints, the
    /// metrics log and side files.
    pub world: &'a dyn Collective,
}

impl Fit<'_> {
    fn writes(&self) -> bool {
        self.world.rank() == 0
    }
}

/// The variance over all entries of the gradients of `vars` (those without a gradient skipped):
/// sony/vct's `grad_variance`, one number for the whole network.
fn entry_variance<'g>(grads: impl IntoIterator<Item = Option<&'g Tensor>>) -> Result<f64> {
    let (mut sum, mut sumsq, mut count) = (0.0f64, 0.0f64, 0usize);
    for g in grads {
        if let Some(g) = g {
            for v in crate::nn::ops::to_f64_vec(g)? {
                sum += v;
                sumsq += v * v;
            }
            count += g.elem_count();
        }
    }
    let n = count.max(1) as f64;
    Ok(sumsq / n - (sum / n).powi(2))
}

/// Learning rate at a step: linear warm-up, then constant or inverse-square-root decay.
pub fn lr_at(cfg: &TrainConfig, step: u64) -> f64 {
    let mut lr = cfg.lr;
    if cfg.lr_warmup > 0 {
        lr *= ((step + 1) as f64 / cfg.lr_warmup as f64).min(1.0);
    }
    if let Some(decay) = cfg.lr_decay {
        lr /= (step as f64 / decay.max(1) as f64).max(1.0).sqrt();
    }
    lr
}

/// A divergence error naming the first of `tensors` that holds NaN or inf, if any: such
/// weights are never checkpointed or published.
fn refuse_non_finite<'a>(f: &Fit, step: u64, tensors: impl Iterator<Item = (&'a String, &'a Tensor)>) -> Result<()> {
    for (name, t) in tensors {
        if !crate::nn::ops::all_finite(t)? {
            return Err(diverged(format!(
                "{}: `{name}` holds NaN or inf at step {step} of {}; nothing checkpointed or published (lower lr, or clip gradients with grad_clip)",
                f.label, f.cfg.steps
            )));
        }
    }
    Ok(())
}

/// Restore the newest usable checkpoint of this run; the step to go on from (0: none). An
/// unusable one (unreadable, corrupt, another run's, not fitting the state) is moved aside and
/// the next older one tried, which gives the same result as an uninterrupted run. When some
/// were found and none is usable, stop and say so rather than silently start over.
fn resume(f: &Fit, state: &TrainState, opt: &mut Optimizer, dir: &Path) -> Result<u64> {
    let mut rejected = Vec::new();
    for (step, path) in checkpoint::list(dir)?.into_iter().rev() {
        let restored = checkpoint::load(&path, f.run, &f.device)
            .and_then(|c| state.restore(opt, &c).map_err(|e| bad_input(format!("{}: does not fit this run ({e})", path.display()))));
        match restored {
            Ok(()) => {
                eprintln!("{}: resuming from {} (step {step})", f.label, path.display());
                return Ok(step);
            }
            // Reading or device failures are not the checkpoint's fault: stop, keep the file.
            Err(e) if crate::error::failure_of(&e) != Some(crate::error::Failure::BadInput) => return Err(e),
            Err(e) => {
                let moved = checkpoint::reject(&path)?;
                eprintln!("{}: not resuming from it: {}; moved to {}", f.label, crate::error::one_line(&e), moved.display());
                rejected.push(path.display().to_string());
            }
        }
    }
    if rejected.is_empty() {
        return Ok(0);
    }
    Err(bad_input(format!(
        "no usable checkpoint in {} ({} rejected and moved aside: {}); run again to start from step 0",
        dir.display(),
        rejected.len(),
        rejected.join(", ")
    )))
}

/// Start every rank from rank 0's state, resumed or fresh: the weights, the EMA, the optimiser
/// and the step. Rank 0 resumes ([`resume`]) and opens the metrics log; the others receive the
/// state and read the log's rows (for the same decisions on skipped steps).
fn start(f: &Fit, state: &TrainState, opt: &mut Optimizer, ckpt_dir: &Path) -> Result<(u64, MetricsLog)> {
    if f.world.size() == 1 {
        let step = resume(f, state, opt, ckpt_dir)?;
        return Ok((step, MetricsLog::resume(f.work_dir, step)?));
    }
    if f.writes() {
        let step = resume(f, state, opt, ckpt_dir)?;
        let metrics = MetricsLog::resume(f.work_dir, step)?;
        f.world.broadcast(&mut checkpoint::encode(f.run, step, opt.t, &state.tensors(opt)?)?)?;
        return Ok((step, metrics));
    }
    let mut bytes = Vec::new();
    f.world.broadcast(&mut bytes)?;
    let received = checkpoint::decode(&bytes, &f.device)?;
    state.restore(opt, &received)?;
    let step = received.meta.step;
    Ok((step, MetricsLog::read_only(f.work_dir, step)))
}

/// Whether any rank asks to stop: every rank stops at the same step.
fn stop_requested(f: &Fit) -> Result<bool> {
    let mut flag = [if f.stop.requested() { 1.0 } else { 0.0 }];
    f.world.sum_f64(&mut flag)?;
    Ok(flag[0] > 0.0)
}

/// Run (or resume) training to `cfg.steps`. `on_checkpoint` runs after each regular
/// checkpoint (every `checkpoint_every` steps and at the end), never after a stop checkpoint,
/// so an interrupted run and an uninterrupted one produce the same side files. In a
/// data-parallel run it runs on rank 0 only.
pub fn fit(f: &Fit, state: &TrainState, on_checkpoint: &mut dyn FnMut(u64, &TrainState) -> Result<()>) -> Result<MetricsLog> {
    let cfg = f.cfg;
    let params = state.trainable();
    let opt_cfg = OptimConfig::parse(&cfg.optimizer, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)?;
    let mut opt = Optimizer::new(opt_cfg, &params)?;
    let batch = cfg.batch as usize;
    let shard = Shard::of(f.world, batch)?;
    let ckpt_dir = f.work_dir.join("checkpoints");
    let (mut step, mut metrics) = start(f, state, &mut opt, &ckpt_dir)?;
    // A crash between a regular checkpoint and its side files: redo them (they are idempotent).
    if f.writes() && step > 0 && (step % cfg.checkpoint_every.max(1) == 0 || step == cfg.steps) {
        on_checkpoint(step, state)?;
    }
    let ema_pairs = state.ema_pairs();
    let target_pairs = state.target.as_ref().map(|t| (averaged_pairs(&t.weights, &state.net), t.rate));
    let encoder = state.encoder.as_ref().map(|(e, _)| &e.net);
    let mut progress = if f.writes() { crate::progress::Progress::new(&f.label, cfg.steps) } else { crate::progress::Progress::quiet(&f.label, cfg.steps) };
    progress.set_position(step);
    // Every checkpoint, the stop's and the last included, passes through here: non-finite
    // weights are never checkpointed, resumed from or published. Every rank checks its weights
    // (they are the same, so every rank takes the same decision) and that they are the same.
    let save = |step: u64, opt: &Optimizer, metrics: &mut MetricsLog| -> Result<()> {
        metrics.sync()?;
        let tensors = state.tensors(opt)?;
        refuse_non_finite(f, step, tensors.iter().map(|(n, t)| (n, t)))?;
        if f.world.size() > 1 {
            let digest = checkpoint::digest(tensors.iter().map(|(n, t)| (n, t)))?;
            parallel::check_agree(f.world, &format!("the training state at step {step}"), digest.as_bytes())?;
        }
        if f.writes() {
            checkpoint::save(&ckpt_dir, f.run, step, opt.t, &tensors)?;
        }
        Ok(())
    };

    while step < cfg.steps {
        if stop_requested(f)? {
            save(step, &opt, &mut metrics)?;
            // No rank leaves before the checkpoint is on disk.
            f.world.barrier()?;
            progress.finish();
            return Err(interrupted(format!("stopped by a signal at step {step} of {}; checkpoint written, run again to resume", cfg.steps)));
        }
        let started = Instant::now();
        let (x_all, labels_all) = f.data.labelled_batch(cfg.seed, step, batch, cfg.x_flip, &f.device)?;
        // One process computes the whole batch (and draws exactly as before data parallelism);
        // several keep their rows of the same draws.
        let (x0, labels, shard) = if f.world.size() == 1 {
            (x_all, labels_all.clone(), None)
        } else {
            (shard.narrow(&x_all)?, shard.rows(&labels_all), Some(Shard { batch_labels: Some(&labels_all), ..shard }))
        };
        let classes = state.net.net.label_dim();
        let one_hot = if classes > 0 { Some(crate::nn::one_hot(&labels, classes, &f.device)?) } else { None };
        let pool = match f.method.reference_pool() {
            0 => None,
            k => {
                let (x, labels) = f.data.pool(cfg.seed, step, k, cfg.x_flip, &f.device)?;
                Some(crate::methods::sct::Pool { x, labels })
            }
        };
        let ctx = StepCtx {
            seed: cfg.seed,
            progress: Progress { step, total: cfg.steps },
            net: &state.net.net,
            ema: &state.ema.net,
            encoder,
            target: state.target.as_ref().map(|t| &t.weights.net),
            teacher: state.teacher.as_deref(),
            labels: Some(&labels),
            class_labels: one_hot.as_ref(),
            pool: pool.as_ref(),
            shard,
        };
        let out = f.method.loss(&ctx, &x0)?;
        let loss = out.per_sample.mean_all()?;
        let mut loss_v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if crate::failpoint::any() && crate::failpoint::active(&format!("fit:nan-loss@{step}")) {
            loss_v = f64::NAN;
        }
        if f.world.size() > 1 {
            // The batch's loss; NaN on one rank makes it NaN on all, so all skip together.
            let mut v = [loss_v];
            f.world.sum_f64(&mut v)?;
            loss_v = v[0] / f.world.size() as f64;
        }
        let lr = lr_at(cfg, step);
        if loss_v.is_finite() {
            let grads = loss.backward()?;
            let mut g: HashMap<String, Tensor> = params.iter().filter_map(|(name, var)| grads.get(var).map(|t| (name.clone(), t.clone()))).collect();
            drop(grads);
            parallel::average_gradients(f.world, &params, &mut g)?;
            let grad_variance = if cfg.log_grad_variance {
                Some(entry_variance(state.net.params.vars().iter().map(|(n, _)| g.get(&format!("net:{n}"))))?)
            } else {
                None
            };
            let grad_norm = opt.step(&params, &g, lr, f.grad_clip)?;
            if let Some(decay) = f.ema.decay_after(step) {
                optim::ema_update(&ema_pairs, decay)?;
            }
            if let Some((pairs, rate)) = &target_pairs {
                optim::ema_update(pairs, *rate)?;
            }
            step += 1;

            let mut values = BTreeMap::from([
                ("loss".to_string(), loss_v),
                ("grad_norm".to_string(), grad_norm),
                ("lr".to_string(), lr),
                ("images_per_s".to_string(), batch as f64 / started.elapsed().as_secs_f64().max(1e-9)),
            ]);
            if let Some(v) = grad_variance {
                values.insert("grad_variance".to_string(), v);
            }
            for (k, v) in parallel::average_logs(f.world, &out.logs)? {
                values.insert(k.to_string(), v);
            }
            metrics.push(Row { step, values })?;
            progress.set_position(step);
            if step % cfg.log_every.max(1) == 0 || step == cfg.steps {
                let recent = metrics.tail_mean("loss", (cfg.log_every as f64 / step as f64).min(1.0)).unwrap_or(loss_v);
                progress.set_message(format!("loss {recent:.5} grad {grad_norm:.3} lr {lr:.2e}"));
                progress.log_now();
            }
        } else {
            // A non-finite loss changes nothing: no update, no EMA. The step still counts (its
            // draws are keyed by it, so retrying would repeat it) and is logged as skipped; the
            // count in a row is read back from the log, so it survives a resume.
            step += 1;
            metrics.push(Row { step, values: BTreeMap::from([("skipped".to_string(), 1.0), ("lr".to_string(), lr)]) })?;
            progress.set_position(step);
            let (_, in_a_row) = metrics.count("skipped");
            // Weights already broken will not mend: say so now, not max_skipped_steps later.
            if in_a_row == 1 {
                if let Err(e) = refuse_non_finite(f, step, params.iter().map(|(n, v)| (n, v.as_tensor()))) {
                    progress.finish();
                    return Err(e);
                }
            }
            if in_a_row as u64 > cfg.max_skipped_steps {
                progress.finish();
                return Err(diverged(format!(
                    "{}: the loss was {loss_v} at {in_a_row} steps in a row (up to step {step}; max_skipped_steps = {}); nothing published (lower lr, or clip gradients with grad_clip)",
                    f.label, cfg.max_skipped_steps
                )));
            }
            progress.println(&format!("{}: step {step}/{}: loss {loss_v}, step skipped ({in_a_row} in a row)", f.label, cfg.steps));
        }
        if step % cfg.checkpoint_every.max(1) == 0 || step == cfg.steps {
            save(step, &opt, &mut metrics)?;
            if f.writes() {
                on_checkpoint(step, state)?;
                if crate::failpoint::any() {
                    crate::failpoint::hit(&format!("fit:checkpoint@{step}"));
                }
            }
        }
    }
    progress.finish();
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::lr_at;
    use crate::train::config::from_toml;

    /// sony/vct's grad_variance: the population variance over every gradient entry of the
    /// network, here of d(Σ a·w)/dw = a over two tensors: entries 1, 2, 3 and 6 → var 3.5.
    #[test]
    fn gradient_entry_variance() {
        let dev = candle_core::Device::Cpu;
        let (w1, w2) = (candle_core::Var::new(&[0f32, 0.0, 0.0], &dev).unwrap(), candle_core::Var::new(&[0f32], &dev).unwrap());
        let a = candle_core::Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let loss = (w1.as_tensor() * &a).unwrap().sum_all().unwrap().add(&(w2.as_tensor() * 6.0).unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let v = super::entry_variance([grads.get(&w1), grads.get(&w2)]).unwrap();
        assert!((v - 3.5).abs() < 1e-12, "{v}");
    }

    /// Warm-up reaches the full rate at its last step ((step + 1)/warm-up: the first step is
    /// not spent at 0, unlike EDM's cur_nimg/ramp-up); the decay divides by √(step/decay) once
    /// past it (EDM2's learning_rate_schedule with ref_batches = lr_decay).
    #[test]
    fn learning_rate_schedules() {
        let close = |got: f64, want: f64| assert!((got - want).abs() <= 1e-15 * want, "{got} vs {want}");
        let c = from_toml("lr = 0.001\nlr_warmup = 100");
        for (step, want) in [(0, 1e-5), (49, 5e-4), (99, 1e-3), (5000, 1e-3)] {
            close(lr_at(&c, step), want);
        }
        let c = from_toml("lr = 0.001\nlr_decay = 1000");
        for (step, want) in [(0, 1e-3), (999, 1e-3), (1000, 1e-3), (4000, 5e-4), (16_000, 2.5e-4)] {
            close(lr_at(&c, step), want);
        }
        let c = from_toml("lr = 0.001\nlr_warmup = 10\nlr_decay = 4");
        close(lr_at(&c, 4), 5e-4); // warm-up and decay multiply: 0.5 × 1/√1
        close(lr_at(&c, 16), 5e-4); // 1/√4 once warm
        close(lr_at(&from_toml("lr = 0.001"), 123_456), 1e-3); // constant without either
    }
}
