//! plan: check a profile of pipeline.toml, turn it into make rules or SLURM jobs, and report on
//! its nodes.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ctpipe::pipeline::{check, plan, status, Pipeline, Profile};
use ctpipe::stage::scale::Scale;
use ctpipe::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "plan", version, about = "Expand a pipeline.toml profile into make rules; show node status")]
struct Cli {
    /// Pipeline file
    #[arg(long, env = "CTPIPE_PIPELINE", default_value = "pipeline.toml", global = true)]
    pipeline: PathBuf,
    /// Profile
    #[arg(long, env = "CTPIPE_PROFILE", default_value = "default", global = true)]
    profile: String,
    /// Artifact store root
    #[arg(long, env = "CTPIPE_ARTIFACTS", default_value = "artifacts", global = true)]
    artifacts: PathBuf,
    /// full, or smoke: every node's counts cut to minutes on a CPU, refs under <profile>@smoke
    #[arg(long, env = "CTPIPE_SCALE", default_value = "full", global = true)]
    scale: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check every node of the profile before anything runs: settings, ranges, method
    /// combinations, input stages, that an init or teacher fits its student, and the outside
    /// files (imported weights) of the NODES given and what they read (default: all)
    Check { nodes: Vec<String> },
    /// Write plans/<profile>/<node>.json stamps (only where changed) and plans/<profile>.mk
    Make,
    /// One line per node: up to date, or what `make all` would do to it and why (never run,
    /// a setting, input, stage version or outside file changed, its artifact gone or
    /// damaged, an upstream node to run first), from a `--dry-run` of each node
    Status {
        /// Directory of the stage binaries (default: this binary's)
        #[arg(long)]
        bin: Option<PathBuf>,
        /// Raw-data directory the stages read
        #[arg(long, env = "CTPIPE_DATA", default_value = "data")]
        data_dir: PathBuf,
    },
    /// The profile's report: every evaluate-fid node's table, gathered into
    /// <artifacts>/reports/<profile>.md and printed
    Report,
    /// The profiles of the pipeline file
    Profiles,
    /// Write one SLURM batch script per node and a submit.sh chaining them with afterok
    Sbatch {
        /// Directory for the scripts
        #[arg(long, default_value = "slurm")]
        out: PathBuf,
        /// Directory of the stage binaries for nodes that ask for no GPU (default: this
        /// binary's). A node asking for several tasks needs an `mpi` build (`make mpi`)
        #[arg(long)]
        bin: Option<PathBuf>,
        /// Directory of the stage binaries for nodes that ask for a GPU (`gres = "gpu:…"`,
        /// `gpus…`): a `make cuda` build (default: target/cuda/release beside --bin's target)
        #[arg(long)]
        gpu_bin: Option<PathBuf>,
        /// Raw-data directory the jobs use
        #[arg(long, env = "CTPIPE_DATA", default_value = "data")]
        data_dir: PathBuf,
    },
}

/// The stage binaries' directory: `--bin`, or this binary's own.
fn bin_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match given {
        Some(b) => b,
        None => std::env::current_exe()?.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
    };
    Ok(std::path::absolute(dir)?)
}

fn main() -> ExitCode {
    ctpipe::error::end_quietly_on_closed_pipe();
    ctpipe::error::exit_code("plan", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    let pipeline = Pipeline::load(&cli.pipeline)?;
    let scale = Scale::parse(&cli.scale)?;
    let ns = scale.namespace(&cli.profile);
    let check = |profile: &Profile, goals: &[String]| -> Result<()> {
        let report = check::check_profile(&pipeline, profile, scale, goals)?;
        for note in &report.notes {
            eprintln!("plan check: note: {note}");
        }
        Ok(())
    };
    match cli.command {
        Cmd::Check { nodes } => {
            let profile = pipeline.profile(&cli.profile)?;
            check(profile, &nodes)?;
            eprintln!("plan check: {} nodes of profile {ns} are fit to run", profile.nodes.len());
        }
        Cmd::Make => {
            let profile = pipeline.profile(&cli.profile)?;
            let path = plan::write_make_plan(&pipeline, profile, &ns, &cli.artifacts)?;
            eprintln!("plan: {} nodes of profile {ns} -> {}", profile.nodes.len(), path.display());
        }
        Cmd::Status { bin, data_dir } => {
            let profile = pipeline.profile(&cli.profile)?;
            let store = Store::new(&cli.artifacts);
            let runner = status::BinaryDryRun {
                bin: bin_dir(bin)?,
                pipeline: cli.pipeline.clone(),
                profile: cli.profile.clone(),
                scale: cli.scale.clone(),
                artifacts: cli.artifacts.clone(),
                data_dir,
            };
            println!("profile {ns}: {}", profile.about);
            let states = status::node_states(&store, profile, &ns, |node| runner.run(node))?;
            let fresh = states.iter().filter(|(_, s)| s.up_to_date()).count();
            for (id, state) in &states {
                println!("  {id:<28} {}", state.describe());
            }
            println!("{fresh} of {} nodes up to date", states.len());
        }
        Cmd::Sbatch { out, bin, gpu_bin, data_dir } => {
            let profile = pipeline.profile(&cli.profile)?;
            check(profile, &[])?;
            let bin = bin_dir(bin)?;
            let gpu_bin = match gpu_bin {
                Some(g) => std::path::absolute(g)?,
                None => bin.parent().map(|target| target.join("cuda").join("release")).unwrap_or_else(|| bin.clone()),
            };
            let paths = ctpipe::pipeline::slurm::SlurmPaths {
                bin,
                gpu_bin,
                artifacts: std::path::absolute(&cli.artifacts)?,
                data: std::path::absolute(data_dir)?,
                workdir: std::env::current_dir()?,
                scale,
            };
            let dir = ctpipe::pipeline::slurm::write_sbatch(&pipeline, profile, &paths, &out.join(&ns))?;
            println!("{} scripts in {}; submit with {}/submit.sh", profile.nodes.len(), dir.display(), dir.display());
        }
        Cmd::Report => {
            let profile = pipeline.profile(&cli.profile)?;
            let store = Store::new(&cli.artifacts);
            let text = ctpipe::evaluate::report::profile_report(&store, profile, scale)?;
            let path = cli.artifacts.join("reports").join(format!("{ns}.md"));
            ctpipe::fsx::write_atomic(&path, text.as_bytes())?;
            print!("{text}");
            eprintln!("report: {}", path.display());
        }
        Cmd::Profiles => {
            for (name, p) in &pipeline.profiles {
                println!("{name:<12} {:>3} nodes  {}", p.nodes.len(), p.about);
            }
        }
    }
    Ok(())
}
