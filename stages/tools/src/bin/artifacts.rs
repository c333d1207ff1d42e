//! artifacts: look into the store. `ls`, `show`, `path NODE|KEY`, `pin`/`unpin`,
//! `verify [KEY|--all]`, `gc [--delete]`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ctpipe::error::{bad_input, one_line};
use ctpipe::store::{Store, Verify};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "artifacts", version, about = "Inspect, verify and garbage-collect the ctpipe artifact store")]
struct Cli {
    /// Artifact store root
    #[arg(long, env = "CTPIPE_ARTIFACTS", default_value = "artifacts", global = true)]
    artifacts: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List artifacts: stage, key, creation time, size, and the refs that point to each
    Ls,
    /// Print an artifact's manifest (KEY, unique key prefix, stage/KEY, or a .ref file)
    Show { artifact: String },
    /// Print the directory of a node's current artifact (`cd $(artifacts path train-ct.ect)`),
    /// or of an artifact given as KEY, prefix, stage/KEY or .ref file
    Path {
        what: String,
        /// The profile whose nodes are meant
        #[arg(long, env = "CTPIPE_PROFILE", default_value = "default")]
        profile: String,
        /// Its smoke-scale rehearsal's refs (`make all SCALE=smoke`)
        #[arg(long)]
        smoke: bool,
    },
    /// Keep an artifact from `gc` under a name of yours (refs/@pinned/NAME.ref), as a node's
    /// ref keeps its artifact: for results made by hand with --set or --write-ref
    Pin { artifact: String, name: String },
    /// Remove a pin (the artifact stays until `gc --delete`)
    Unpin { name: String },
    /// Re-hash an artifact's files against its manifest (or every artifact with --all)
    Verify {
        artifact: Option<String>,
        #[arg(long, conflicts_with = "artifact")]
        all: bool,
    },
    /// List what no ref reaches (dry run); --delete removes it
    Gc {
        #[arg(long)]
        delete: bool,
    },
}

fn main() -> ExitCode {
    ctpipe::error::end_quietly_on_closed_pipe();
    ctpipe::error::exit_code("artifacts", run(Cli::parse()))
}

/// The folder of the refs `pin` writes, beside the profiles' folders; no profile can have
/// this name (profile names are letters, digits, '-' and '_').
const PINNED: &str = "@pinned";

fn check_pin_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) && !name.starts_with('.');
    if !ok {
        return Err(ctpipe::error::usage(format!("pin name `{name}`: expected letters, digits, '.', '_' and '-' (it becomes a file name)")));
    }
    Ok(())
}

/// A short description from the manifest's settings: the dataset a fetch-data artifact holds,
/// the method and network of a model, the encoder of statistics, the n of an evaluation.
fn what_it_is(stage: &str, config: &serde_json::Value) -> String {
    let get = |k: &str| config.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
    let text = match stage {
        "fetch-data" => match (get("source"), get("dataset")) {
            (Some(s), Some(d)) if s == "toy2d" => format!("{s}:{d}"),
            (Some(s), _) => s,
            _ => String::new(),
        },
        "train-ct" => [get("method"), get("network")].into_iter().flatten().collect::<Vec<_>>().join(" "),
        "distill" => ["cd".to_string()].into_iter().chain(get("network")).collect::<Vec<_>>().join(" "),
        "precompute-encoder" => get("encoder").unwrap_or_default(),
        "evaluate-fid" => get("n").map(|n| format!("n = {n}")).unwrap_or_default(),
        _ => String::new(),
    };
    if text.is_empty() { "-".into() } else { text }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

fn run(cli: Cli) -> Result<()> {
    let store = Store::new(&cli.artifacts);
    match cli.command {
        Cmd::Ls => {
            let mut refs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for r in store.list_refs()? {
                refs.entry((r.stage, r.key.to_string())).or_default().push(format!("{}/{}", r.profile, r.node));
            }
            println!("{:<18} {:<14} {:<24} {:<21} {:>10}  refs", "stage", "key", "what", "created", "size");
            for (stage, key) in store.list()? {
                let (what, created, size) = match store.open(&stage, &key, Verify::Sizes) {
                    Ok(a) => (what_it_is(&stage, &a.manifest.config), a.manifest.created.clone(), human(a.manifest.files.iter().map(|f| f.size).sum())),
                    Err(_) => ("-".to_string(), "(damaged)".to_string(), "-".to_string()),
                };
                let by = refs.get(&(stage.clone(), key.to_string())).map(|v| v.join(" ")).unwrap_or_default();
                println!("{stage:<18} {:<14} {what:<24} {created:<21} {size:>10}  {by}", key.short());
            }
            for (stage, key) in store.list_damaged()? {
                println!("{stage:<18} {:<14} {:<24} {:<21} {:>10}  (no manifest.json: `artifacts gc --delete` removes it)", key.short(), "-", "(damaged)", "-");
            }
        }
        Cmd::Show { artifact } => {
            let (stage, key) = store.resolve(&artifact)?;
            let art = store.open(&stage, &key, Verify::Sizes)?;
            println!("# {}", art.dir.display());
            print!("{}", art.manifest.to_json()?);
        }
        Cmd::Path { what, profile, smoke } => {
            let ns = if smoke { format!("{profile}@smoke") } else { profile.clone() };
            let (stage, key) = match store.read_ref(&ns, &what)? {
                Some(r) => (r.stage, r.key),
                None => store.resolve(&what).map_err(|e| bad_input(format!("`{what}`: no node of that name has run in profile {ns}, and {}", one_line(&e))))?,
            };
            if !store.contains(&stage, &key) {
                return Err(bad_input(format!("`{what}` names {stage}/{}, which is not in the store (rerun the node to rebuild it)", key.short())));
            }
            println!("{}", store.artifact_dir(&stage, &key).display());
        }
        Cmd::Pin { artifact, name } => {
            check_pin_name(&name)?;
            let (stage, key) = store.resolve(&artifact)?;
            store.open(&stage, &key, Verify::Sizes)?;
            store.write_ref(PINNED, &name, &stage, &key)?;
            println!("pinned {stage}/{key} as {PINNED}/{name}: gc keeps it until `artifacts unpin {name}`");
        }
        Cmd::Unpin { name } => {
            check_pin_name(&name)?;
            let path = store.ref_path(PINNED, &name);
            std::fs::remove_file(&path).map_err(|e| bad_input(format!("{}: no such pin ({e})", path.display())))?;
            println!("unpinned {name}");
        }
        Cmd::Verify { artifact, all } => {
            let targets = match (artifact, all) {
                (Some(a), _) => vec![store.resolve(&a)?],
                (None, true) => store.list()?,
                (None, false) => return Err(ctpipe::error::usage("verify: give an artifact or --all")),
            };
            let mut bad = 0;
            for (stage, key) in &targets {
                match store.open(stage, key, Verify::Hashes) {
                    Ok(_) => println!("ok {stage}/{key}"),
                    Err(e) => {
                        bad += 1;
                        println!("FAILED {stage}/{key}: {}", one_line(&e));
                    }
                }
            }
            let mut checked = targets.len();
            if all {
                // What `ls` and `open` cannot see: directories without a manifest, and refs
                // that point at nothing.
                for (stage, key) in store.list_damaged()? {
                    bad += 1;
                    checked += 1;
                    println!("FAILED {stage}/{key}: {}: no manifest.json (`artifacts gc --delete` removes it; rerunning its node rebuilds it)", store.artifact_dir(&stage, &key).display());
                }
                for r in store.list_refs()? {
                    checked += 1;
                    if store.contains(&r.stage, &r.key) {
                        println!("ok ref {}/{} -> {}/{}", r.profile, r.node, r.stage, r.key.short());
                    } else {
                        bad += 1;
                        println!("FAILED ref {}/{}: points at {}/{}, which is not in the store (rerun the node to rebuild it)", r.profile, r.node, r.stage, r.key);
                    }
                }
            }
            if bad > 0 {
                return Err(bad_input(format!("{bad} of {checked} artifacts and refs failed verification")));
            }
        }
        Cmd::Gc { delete } => {
            let _lock = if delete { Some(store.gc_guard()?) } else { None };
            let plan = store.gc_plan()?;
            for (stage, key, size) in &plan.artifacts {
                println!("unreferenced {stage}/{key} {}", human(*size));
            }
            for (path, size) in &plan.leftovers {
                println!("leftover {} {}", path.display(), human(*size));
            }
            if plan.is_empty() {
                println!("nothing to collect");
            } else if delete {
                store.gc_execute(&plan)?;
                println!("removed {}", human(plan.total_bytes()));
            } else {
                println!("would free {} (dry run; --delete removes)", human(plan.total_bytes()));
            }
        }
    }
    Ok(())
}
