//! The stage contract, in one place (see `shared/design/architecture.md`):
//!
//! 1. parse the common flags; resolve the config as *defaults < node table < `--set`*, then
//!    the smoke scale's cuts when `--scale smoke` (`scale.rs`);
//! 2. resolve input artifacts (from the node's input refs or `--input`) and open them;
//! 3. key = blake3(stage, version, canonical config, input keys, external fingerprints);
//! 4. if the artifact exists: print `cached <stage> <key>`, rewrite the ref, exit 0;
//! 5. otherwise run the stage into a staging directory (working files, such as checkpoints,
//!    live in `.work/<stage>/<key>/` so a restart resumes), publish atomically, write the ref.
//!
//! Exit codes: 0 done or cached; 2 usage/config error; 3 bad input; 75 checkpointed on a
//! signal (run again to resume); 4 training diverged (non-finite losses or weights; rerunning
//! the same settings diverges again); 1 internal failure. Errors print as one line.

pub mod scale;

mod distill;
mod evaluate_fid;
mod fetch_data;
mod precompute_encoder;
mod train_ct;

pub use distill::Distill;
pub use evaluate_fid::EvaluateFid;
pub use fetch_data::FetchData;
pub use precompute_encoder::PrecomputeEncoder;
pub use train_ct::TrainCt;

use crate::config::{self, Describe};
use crate::error::{bad_input, failure_of, interrupted, usage, Failure};
use crate::parallel::{self, Collective};
use crate::pipeline::stages::{stage_spec, Arity, StageSpec};
use crate::pipeline::Pipeline;
use crate::store::{artifact_key, Artifact, Draft, InputRecord, Key, Store, Verify};
use scale::Scale;
use anyhow::{Context, Result};
use clap::{Args, Command, FromArgMatches};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// A stage binary's library half. `main.rs` is `stage::main::<MyStage>()`.
pub trait Stage {
    /// The stage name; also its directory in the store and its entry in the registry.
    const NAME: &'static str;
    /// Bump when the same config and inputs would now give a different artifact.
    const VERSION: u32;
    /// The config, declared with [`crate::config_struct!`].
    type Config: Describe + Serialize + DeserializeOwned + Default + Clone;
    /// Settings that decide whether a run goes on, never what it produces (a divergence
    /// limit): left out of the key and the manifest, so changing one resumes the same run.
    const KEY_EXCLUDES: &'static [&'static str] = &[];
    /// Whether SIGTERM/SIGUSR1/SIGINT should set `ctx.stop` (the stage checkpoints and exits
    /// 75) instead of ending the process.
    const HANDLES_SIGNALS: bool = false;
    /// Whether several processes started together (`mpirun`, `srun`) run it data-parallel
    /// (`parallel`): rank 0 resolves, locks and publishes, every rank trains its shard.
    const DATA_PARALLEL: bool = false;

    /// Check values that serde cannot (ranges, names); return a usage error naming the field.
    fn validate(_config: &Self::Config) -> Result<()> {
        Ok(())
    }

    /// The smoke scale's cuts (`scale.rs`): lower the counts (steps, samples, rows, seeds) to
    /// what a 2-core CPU runs in minutes; change nothing else. Cuts are caps, so a count a
    /// node already keeps small stays as it is.
    fn smoke(_config: &mut Self::Config) {}

    /// Check, before anything runs (`plan check`), that the files from outside the store
    /// which the config names are there (imported weights). No work, no hashing.
    fn preflight(_config: &Self::Config) -> Result<()> {
        Ok(())
    }

    /// Fingerprints of inputs from outside the store (source files, a Hub commit); they enter
    /// the key, so a changed source gives a new artifact.
    fn external_inputs(_config: &Self::Config, _env: &Env) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    /// Do the work: write files into `ctx.out_dir()`, return the metrics summary.
    fn run(config: &Self::Config, ctx: &mut Ctx<'_>) -> Result<Value>;
}

/// Flags every stage takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Pipeline file that declares the profiles
    #[arg(long, env = "CTPIPE_PIPELINE", default_value = "pipeline.toml")]
    pub pipeline: PathBuf,
    /// Profile in the pipeline file
    #[arg(long, env = "CTPIPE_PROFILE", default_value = "default")]
    pub profile: String,
    /// Node of the profile to run (`<stage>.<name>`); without it the config is the defaults
    /// plus --set, and inputs come from --input
    #[arg(long)]
    pub node: Option<String>,
    /// Override a config field (repeatable), e.g. --set lr=2e-4 --set dataset=moons
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Use this artifact for an input role (repeatable): a key, a unique key prefix,
    /// `stage/key` or a ref file
    #[arg(long = "input", value_name = "ROLE=ARTIFACT")]
    pub input: Vec<String>,
    /// Artifact store root
    #[arg(long, env = "CTPIPE_ARTIFACTS", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// Directory for raw downloads (IDX files, .deb packages)
    #[arg(long, env = "CTPIPE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Also write a ref file at this path after success
    #[arg(long, value_name = "PATH")]
    pub write_ref: Option<PathBuf>,
    /// With --node and --set or --input: point the node's ref at the result anyway (for the
    /// nodes run by hand after it; `plan status` flags it, and `make` puts back what
    /// pipeline.toml describes). Without it the ref keeps naming that
    #[arg(long)]
    pub force: bool,
    /// Re-hash every input file before use (default: hash the files changed since they were
    /// last verified; an unchanged file costs a stat)
    #[arg(long)]
    pub verify: bool,
    /// Print the effective config, inputs and key as JSON, and stop
    #[arg(long)]
    pub dry_run: bool,
    /// full, or smoke: the node's counts (steps, samples, rows, seeds) cut to minutes on a
    /// CPU, refs kept under `<profile>@smoke`
    #[arg(long, env = "CTPIPE_SCALE", default_value = "full")]
    pub scale: String,
    /// Compute device: cpu, cuda, cuda:N, or auto (CUDA when built with it and present).
    /// Not part of the artifact key.
    #[arg(long, env = "CTPIPE_DEVICE", default_value = "auto")]
    pub device: String,
}

/// What a stage can see besides its config before the key is known.
pub struct Env {
    pub store: Store,
    pub data_dir: PathBuf,
}

/// What a running stage is given.
pub struct Ctx<'w> {
    pub env: Env,
    pub key: Key,
    /// Set when a stop was requested by a signal (stages with `HANDLES_SIGNALS`).
    pub stop: crate::train::signals::StopFlag,
    pub device: candle_core::Device,
    /// The processes running this stage together (data-parallel training); one otherwise.
    pub world: &'w dyn Collective,
    inputs: BTreeMap<String, Vec<Artifact>>,
    out_dir: PathBuf,
    work_dir: PathBuf,
}

impl Ctx<'_> {
    /// Where the artifact's files go.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The run's private working directory (created on first use); it survives an
    /// interrupted run, so checkpoints written here are found by the restart.
    pub fn work_dir(&self) -> Result<&Path> {
        std::fs::create_dir_all(&self.work_dir).with_context(|| format!("{}: cannot create", self.work_dir.display()))?;
        Ok(&self.work_dir)
    }

    /// The artifact of a single-valued input role.
    pub fn input(&self, role: &str) -> Result<&Artifact> {
        self.inputs
            .get(role)
            .and_then(|v| v.first())
            .ok_or_else(|| usage(format!("input `{role}` is required")))
    }

    /// The artifact of an optional role, if given.
    pub fn optional_input(&self, role: &str) -> Option<&Artifact> {
        self.inputs.get(role).and_then(|v| v.first())
    }

    /// The artifacts of a many-valued role, in the order given.
    pub fn inputs(&self, role: &str) -> &[Artifact] {
        self.inputs.get(role).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// candle (0.11.1) sizes every matrix product's thread pool from `RAYON_NUM_THREADS`, and when
/// that is unset it asks the OS for the CPU count on every call — reading /proc and /sys files,
/// about twenty opens per training step of a small model. Set it once, before any work.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        // SAFETY: called at the start of `main`, before this process starts any thread.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// candle (0.11.1) runs its element-wise ops on a pool of its own beside rayon's (which gemm
/// and our ops use), whose workers spin up to 25 000 `pause`s after each op before they park:
/// on a 2-core machine that spinning took a core from the convolution that followed. 2 000
/// still catches back-to-back element-wise ops (docs/perf.md, issue 18 change 11: the `tiny`
/// and `fmnist` training steps about 8–10 % faster, no row slower). A value set by the user
/// stays.
pub fn tune_candle_pool() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called at the start of `main`, before this process starts any thread.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000") };
    }
}

/// Keep freed memory in the heap instead of returning it to the OS. Training allocates and frees
/// tensors of tens of megabytes every step; by default glibc serves those with fresh `mmap`s
/// whose pages the kernel must zero on first touch (measured: a quarter of a CPU step of the
/// `tiny` U-Net in `clear_page`, and the step 36 % faster with this setting).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Make this thread one of the workers of rayon's global pool (the first; the pool adds the
/// others). A parallel op (gemm, our kernels) called from a thread outside the pool is queued
/// into it while the caller sleeps until a worker has done it: two thread wake-ups per op, and
/// a training step of a small model is hundreds of ops. On a worker the op starts at once on
/// the calling thread, and the other workers steal from it (docs/perf.md, issue 18 change 18:
/// the `tiny` step −12 %, the `mlp-toy` step −23 %). The work stays on the main thread, so
/// its tensors keep coming from glibc's main arena, which `tune_allocator` keeps (running the
/// stage on a pool thread instead put them in a per-thread arena that returns its memory:
/// page faults, the classifier step 40 % slower), and MPI is called from the thread that
/// initialised it. Call at the start of `main`, after [`pin_thread_count`], which sizes the
/// pool; if the pool exists already it is left as it is.
pub fn join_compute_pool() {
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
}

/// Entry point of every stage binary.
pub fn main<S: Stage>() -> ExitCode {
    crate::error::install_panic_hook();
    let stop = match crate::train::signals::install_for_stage(S::HANDLES_SIGNALS) {
        Ok(stop) => stop,
        Err(e) => return crate::error::exit_code(S::NAME, Err(anyhow::Error::new(e).context("installing signal handlers"))),
    };
    pin_thread_count();
    tune_candle_pool();
    tune_allocator();
    join_compute_pool();
    let spec = stage_spec(S::NAME).unwrap_or_else(|| panic!("stage {} is missing from the registry", S::NAME));
    // The flags first: their struct's doc comment would otherwise replace the stage's about.
    let cmd = CommonArgs::augment_args(Command::new(S::NAME))
        .about(spec.about)
        .long_about(spec.long_about())
        .version(env!("CARGO_PKG_VERSION"))
        .after_long_help(config::help_text::<S::Config>());
    let matches = cmd.get_matches();
    let args = match CommonArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let world = match parallel::world_from_env() {
        Ok(w) => w,
        Err(e) => return crate::error::exit_code(S::NAME, Err(e)),
    };
    let result = if world.size() > 1 && !S::DATA_PARALLEL {
        Err(usage(format!("{} runs as one process; started as one of {} (only train-ct and distill run data-parallel)", S::NAME, world.size())))
    } else {
        run::<S>(spec, &args, stop, &*world)
    };
    if let Err(e) = &result {
        // A stop and a divergence are reached by every rank at the same step; anything else
        // may be one rank's alone, and the others would wait for it forever in a collective.
        if world.size() > 1 && !matches!(failure_of(e), Some(Failure::Interrupted | Failure::Diverged)) {
            let code = crate::error::exit_code_of(e);
            eprintln!("error: {} (rank {} of {}): {}", S::NAME, world.rank(), world.size(), crate::error::one_line(e));
            world.abort(code as i32);
        }
    }
    let code = crate::error::exit_code(S::NAME, result);
    // MPI_Finalize, for every rank that ends normally.
    drop(world);
    code
}

/// The resolved config and inputs of one invocation, before any work.
struct Resolved<C> {
    config: C,
    config_json: Value,
    inputs: BTreeMap<String, Vec<Artifact>>,
    node: Option<String>,
    /// Where the profile's refs are at the scale run (`scale.rs`).
    namespace: String,
    /// The fields the node table and `--set` wrote (the rest are the stage's defaults, or
    /// smoke-scale cuts).
    written: Vec<String>,
}

fn resolve<S: Stage>(spec: &StageSpec, args: &CommonArgs, store: &Store) -> Result<Resolved<S::Config>> {
    let (mut table, mut input_specs, origin) = match &args.node {
        Some(node_id) => {
            let pipeline = Pipeline::load(&args.pipeline)?;
            let profile = pipeline.profile(&args.profile)?;
            let node = profile.node(node_id)?;
            if node.stage.name != S::NAME {
                return Err(usage(format!("node `{node_id}` belongs to stage {}, not {}", node.stage.name, S::NAME)));
            }
            let specs: BTreeMap<String, Vec<InputSpec>> = node
                .inputs
                .iter()
                .map(|(role, ids)| (role.clone(), ids.iter().map(|id| InputSpec::Node(id.clone())).collect()))
                .collect();
            let origin = format!("{} [{}.{}]", args.pipeline.display(), args.profile, node_id);
            (node.settings.clone(), specs, origin)
        }
        None => (toml::Table::new(), BTreeMap::new(), "config".to_string()),
    };
    config::apply_overrides(&mut table, &args.set)?;
    let origin = if args.set.is_empty() { origin } else { format!("{origin} with --set") };
    let scale = Scale::parse(&args.scale)?;
    let namespace = scale.namespace(&args.profile);
    let written: Vec<String> = table.keys().cloned().collect();
    let config = typed_config::<S>(table, &origin, args.node.is_some(), scale)?;

    // --input replaces what the node table says for that role.
    let mut overridden = BTreeMap::<String, Vec<InputSpec>>::new();
    for item in &args.input {
        let (role, what) = item
            .split_once('=')
            .ok_or_else(|| usage(format!("--input {item}: expected ROLE=ARTIFACT")))?;
        if !spec.inputs.iter().any(|r| r.name == role) {
            let roles = spec.inputs.iter().map(|r| r.name).collect::<Vec<_>>().join(", ");
            return Err(usage(format!("--input {item}: {} has no input role `{role}` (roles: {roles})", S::NAME)));
        }
        overridden.entry(role.to_string()).or_default().push(InputSpec::Artifact(what.to_string()));
    }
    input_specs.extend(overridden);

    let mut inputs = BTreeMap::new();
    for role in spec.inputs {
        let specs = input_specs.remove(role.name).unwrap_or_default();
        match (role.arity, specs.len()) {
            (Arity::One, 0) => return Err(usage(format!("input `{}` is required (--input {}=ARTIFACT)", role.name, role.name))),
            (Arity::One | Arity::Optional, n) if n > 1 => {
                return Err(usage(format!("input `{}` takes one artifact, got {n}", role.name)))
            }
            _ => {}
        }
        let mut arts = Vec::new();
        for s in specs {
            let (stage, key) = s.locate(store, &namespace)?;
            if !role.from.contains(&stage.as_str()) {
                return Err(bad_input(format!(
                    "input `{}` must be a {} artifact, got {stage}/{}",
                    role.name,
                    role.from.join(" or "),
                    key.short()
                )));
            }
            let verify = if args.verify { Verify::Hashes } else { Verify::Content };
            arts.push(store.open(&stage, &key, verify)?);
        }
        if !arts.is_empty() {
            inputs.insert(role.name.to_string(), arts);
        }
    }
    let mut config_json = config::to_json(&config)?;
    if let Some(map) = config_json.as_object_mut() {
        map.retain(|k, _| !S::KEY_EXCLUDES.contains(&k.as_str()));
    }
    Ok(Resolved { config, config_json, inputs, node: args.node.clone(), namespace, written })
}

/// A node's settings as the stage's config at `scale`, checked. `origin` names the settings in
/// errors (file, profile and node); `in_node` says whether to lead range errors with it.
pub fn typed_config<S: Stage>(table: toml::Table, origin: &str, in_node: bool, scale: Scale) -> Result<S::Config> {
    config::check_finite::<S::Config>(&table, origin)?;
    let mut config: S::Config = config::from_table(table, origin)?;
    let validate = |c: &S::Config, origin: String| {
        config::check_ranges::<S::Config>(&config::to_json(c)?, &origin)?;
        S::validate(c).map_err(|e| if in_node { e.context(origin) } else { e })
    };
    validate(&config, origin.to_string())?;
    if scale == Scale::Smoke {
        S::smoke(&mut config);
        validate(&config, format!("{origin} at smoke scale"))?;
    }
    Ok(config)
}

/// How an input was named: by a node of the profile (through its ref) or directly.
enum InputSpec {
    Node(String),
    Artifact(String),
}

impl InputSpec {
    fn locate(&self, store: &Store, profile: &str) -> Result<(String, Key)> {
        match self {
            InputSpec::Node(id) => {
                let r = store.read_ref(profile, id)?.ok_or_else(|| {
                    bad_input(format!(
                        "input node `{id}` has not been run in profile {profile} (no {}): run `make {id}` first",
                        store.ref_path(profile, id).display()
                    ))
                })?;
                Ok((r.stage, r.key))
            }
            InputSpec::Artifact(what) => store.resolve(what),
        }
    }
}

/// Keys by role for hashing (`role` or `role[i]` for many-valued roles) and manifest records.
fn input_records(inputs: &BTreeMap<String, Vec<Artifact>>) -> (BTreeMap<String, Key>, BTreeMap<String, InputRecord>) {
    let mut keys = BTreeMap::new();
    let mut records = BTreeMap::new();
    for (role, arts) in inputs {
        for (i, a) in arts.iter().enumerate() {
            let name = if arts.len() == 1 { role.clone() } else { format!("{role}[{i}]") };
            keys.insert(name.clone(), a.key().clone());
            records.insert(name, InputRecord { stage: a.stage().to_string(), key: a.key().clone() });
        }
    }
    (keys, records)
}

fn run<S: Stage>(spec: &StageSpec, args: &CommonArgs, stop: crate::train::signals::StopFlag, world: &dyn Collective) -> Result<()> {
    let started = Instant::now();
    let store = Store::new(&args.artifacts);
    let _no_gc = store.stage_guard();
    let resolved = resolve::<S>(spec, args, &store)?;
    if let Some(node) = &resolved.node {
        crate::progress::set_node(node);
    }
    let env = Env { store: store.clone(), data_dir: args.data_dir.clone() };
    let external = S::external_inputs(&resolved.config, &env)?;
    let (input_keys, input_records) = input_records(&resolved.inputs);
    let key = artifact_key(S::NAME, S::VERSION, &resolved.config_json, &input_keys, &external)?;
    parallel::check_agree(world, "the artifact key (are the ranks reading the same pipeline file and store?)", key.as_str().as_bytes())?;
    let leader = world.rank() == 0;

    if args.dry_run {
        if !leader {
            return Ok(());
        }
        // Which settings nobody wrote: the stage's defaults, as they are in effect.
        let default = config::to_json(&S::Config::default())?;
        let defaults: Vec<&String> = resolved.config_json.as_object().into_iter().flatten().filter(|(k, v)| !resolved.written.contains(k) && default.get(k.as_str()) == Some(v)).map(|(k, _)| k).collect();
        let doc = json!({
            "stage": S::NAME, "version": S::VERSION, "key": key, "cached": store.contains(S::NAME, &key),
            "config": resolved.config_json, "defaults": defaults, "inputs": input_records, "external": external,
        });
        return crate::error::print_document(&serde_json::to_string_pretty(&doc)?);
    }

    let cached = |store: &Store| -> Result<bool> {
        if !store.contains(S::NAME, &key) {
            return Ok(false);
        }
        store.open(S::NAME, &key, if args.verify { Verify::Hashes } else { Verify::Content }).map_err(|e| {
            let dir = store.artifact_dir(S::NAME, &key);
            e.context(format!("the cached artifact {} is damaged (remove it to produce it again)", dir.display()))
        })?;
        write_refs(store, args, &resolved.namespace, resolved.node.as_deref(), S::NAME, &key)?;
        println!("cached {} {key}", S::NAME);
        Ok(true)
    };
    // Rank 0 alone looks for the artifact and takes the lock; the other ranks follow its word.
    let _lock = if leader {
        let decided = (|| -> Result<Option<RunLock>> {
            if cached(&store)? {
                return Ok(None);
            }
            // Another process may be producing the same key (two make invocations, a requeued
            // job overlapping its predecessor): wait for it, then it is most likely a cache hit.
            let lock = RunLock::acquire(&store, S::NAME, &key, &stop)?;
            if cached(&store)? {
                return Ok(None);
            }
            Ok(Some(lock))
        })();
        let mut word = match &decided {
            Ok(Some(_)) => vec![b'g'],
            Ok(None) => vec![b'c'],
            Err(e) if failure_of(e) == Some(Failure::Interrupted) => vec![b's'],
            Err(_) => vec![b'f'],
        };
        world.broadcast(&mut word)?;
        match decided? {
            None => return Ok(()),
            Some(lock) => Some(lock),
        }
    } else {
        let mut word = Vec::new();
        world.broadcast(&mut word)?;
        match word.first() {
            Some(b'g') => None,
            Some(b'c') => return Ok(()),
            Some(b's') => return Err(interrupted("stopped by a signal while rank 0 waited for another process producing the artifact; run again")),
            // Rank 0 failed and is ending every rank (its error is in its log); wait for it.
            _ => {
                world.barrier()?;
                anyhow::bail!("rank 0 failed before training")
            }
        }
    };
    let device = crate::device::select(&args.device)?;
    let staging = if leader { Some(store.begin(S::NAME, &key)?) } else { None };
    let mut ctx = Ctx {
        env,
        key: key.clone(),
        stop,
        device,
        world,
        inputs: resolved.inputs,
        out_dir: staging.as_ref().map(|s| s.path().to_path_buf()).unwrap_or_default(),
        work_dir: store.work_dir(S::NAME, &key),
    };
    let metrics = S::run(&resolved.config, &mut ctx)?;
    // Every rank is done with the working directory; the others wait until rank 0 published.
    world.barrier()?;
    let Some(staging) = staging else {
        world.barrier()?;
        return Ok(());
    };
    let draft = Draft {
        stage: S::NAME.to_string(),
        version: S::VERSION,
        key: key.clone(),
        inputs: input_records,
        external,
        config: resolved.config_json,
        metrics,
    };
    let art = staging.commit(draft)?;
    // The checkpoints of a finished run are of no further use.
    let _ = std::fs::remove_dir_all(&ctx.work_dir);
    write_refs(&store, args, &resolved.namespace, resolved.node.as_deref(), S::NAME, &key)?;
    world.barrier()?;
    println!("done {} {key} ({:.1}s) {}", S::NAME, started.elapsed().as_secs_f64(), art.dir.display());
    Ok(())
}

fn write_refs(store: &Store, args: &CommonArgs, namespace: &str, node: Option<&str>, stage: &str, key: &Key) -> Result<()> {
    if let Some(node) = node {
        // A node run with other settings or inputs than pipeline.toml gives it would leave its
        // ref naming an artifact the pipeline does not describe, and `make` (which goes by the
        // ref's time) would then call the node up to date.
        let changed = [("--set", &args.set), ("--input", &args.input)].into_iter().filter(|(_, v)| !v.is_empty()).map(|(f, _)| f).collect::<Vec<_>>();
        if changed.is_empty() {
            store.write_ref(namespace, node, stage, key)?;
        } else if args.force {
            store.write_forced_ref(namespace, node, stage, key)?;
            eprintln!("{stage}: node `{node}` now names {stage}/{key} (forced; `make` puts back what pipeline.toml describes)");
        } else {
            eprintln!(
                "{stage}: node `{node}` ran with {}: its ref {} still names what pipeline.toml describes; this result is {stage}/{key} (--write-ref PATH keeps it, --force repoints the node)",
                changed.join(" and "),
                store.ref_path(namespace, node).display()
            );
        }
    }
    if let Some(path) = &args.write_ref {
        crate::store::write_ref_file(path, stage, key)?;
    }
    Ok(())
}

/// An exclusive lock on a run's key, so two processes never work in one working directory
/// (a requeued SLURM job overlapping its predecessor, two `make` invocations). Released when
/// the process exits, however it exits.
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Take the lock, waiting for its holder; a stop request during the wait ends it (exit 75).
    fn acquire(store: &Store, stage: &str, key: &Key, stop: &crate::train::signals::StopFlag) -> Result<RunLock> {
        let dir = store.root().join(".work").join(stage);
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let path = dir.join(format!("{key}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open lock", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            let try_lock = || -> Result<bool> {
                if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return Ok(true);
                }
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
                    _ => Err(err).with_context(|| format!("{}: cannot lock", path.display())),
                }
            };
            if !try_lock()? {
                eprintln!("{stage}: waiting for another process producing {} ({})", key.short(), path.display());
                // Polled rather than blocking, so a stop request (SIGTERM to a requeued job
                // that overlaps its predecessor) ends the wait.
                while !try_lock()? {
                    if stop.requested() {
                        return Err(crate::error::interrupted(format!(
                            "stopped by a signal while waiting for another process producing {stage}/{}; run again",
                            key.short()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        Ok(RunLock { _file: file })
    }
}
