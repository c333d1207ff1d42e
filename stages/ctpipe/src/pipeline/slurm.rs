//! The same plan as SLURM batch jobs: one script per node and a `submit.sh` that submits them
//! in dependency order with `--dependency=afterok:<input jobs>`.
//!
//! Each script runs the node's stage binary in the background and forwards signals to it
//! (bash runs a trap only after its foreground child exits, so the binary must not be one).
//! What happens on a signal depends on who sent it:
//! - SIGUSR1 is the time-limit warning (`--signal=B:USR1@<s>`): the stage checkpoints and exits
//!   75, and the script requeues the job, which resumes from the checkpoint, keeping its job id
//!   so dependent jobs keep waiting;
//! - SIGTERM is a preemption (SLURM requeues a preempted job itself, `PreemptMode=REQUEUE`) or
//!   a user's `scancel`, which must stay cancelled: the stage checkpoints and exits 75, and the
//!   script does not requeue.
//!
//! Resources come from `slurm = { ... }` tables, profile-wide (`[<profile>.slurm]`) and per node
//! (a `slurm` key in the node table): each key becomes an `#SBATCH` option. They are not part of
//! any artifact key. A node asking for several tasks (`ntasks`, `ntasks-per-node`, `nodes`)
//! runs its stage data-parallel under `srun` (train-ct and distill only; an `mpi` build).

use super::{Pipeline, Profile};
use crate::error::usage;
use crate::fsx;
use crate::stage::scale::Scale;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the scripts find things, as absolute paths, and the scale they run at.
pub struct SlurmPaths {
    /// Stage binaries for nodes that ask for no GPU.
    pub bin: PathBuf,
    /// Stage binaries for nodes that ask for a GPU (a `make cuda` build).
    pub gpu_bin: PathBuf,
    pub artifacts: PathBuf,
    pub data: PathBuf,
    pub workdir: PathBuf,
    pub scale: Scale,
}

/// Options the scripts set themselves; a `slurm` table may not change them.
const RESERVED: &[&str] = &["job-name", "output", "error", "open-mode", "requeue", "no-requeue", "dependency", "parsable", "kill-on-invalid-dep", "wrap"];

/// Stages that run data-parallel over several tasks.
const DATA_PARALLEL: &[&str] = &["train-ct", "distill"];

/// One node's resources as `#SBATCH` options, checked: keys are sbatch's long options (`_`
/// read as `-`), `true` is a bare flag and `false` leaves it out, arrays are comma lists.
fn sbatch_options(table: &toml::Table, origin: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = k.replace('_', "-");
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || key.starts_with('-') {
            return Err(usage(format!("{origin}: slurm option `{k}` is not an sbatch long option (lower-case letters, digits and dashes, e.g. cpus-per-task)")));
        }
        if RESERVED.contains(&key.as_str()) {
            return Err(usage(format!("{origin}: slurm option `{k}` is set by `plan sbatch` itself and cannot be changed")));
        }
        let value = match v {
            toml::Value::Boolean(true) => None,
            toml::Value::Boolean(false) => continue,
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Array(items) => {
                let parts: Option<Vec<String>> = items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Some(s.clone()),
                        toml::Value::Integer(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                Some(parts.ok_or_else(|| usage(format!("{origin}: slurm option `{k}`: an array must hold strings or integers")))?.join(","))
            }
            _ => return Err(usage(format!("{origin}: slurm option `{k}`: expected a string, a number, a boolean or an array, got {v}"))),
        };
        if value.as_deref().is_some_and(|s| s.contains('\n')) {
            return Err(usage(format!("{origin}: slurm option `{k}`: a value cannot span lines")));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn option<'a>(opts: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    opts.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
}

/// A time limit in seconds from sbatch's formats: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]].
pub fn time_limit_s(s: &str) -> Option<u64> {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, s),
    };
    let p: Vec<u64> = rest.split(':').map(|x| x.parse::<u64>().ok()).collect::<Option<_>>()?;
    let s = match (s.contains('-'), p.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86400 + s)
}

/// Seconds of warning before the time limit: a tenth of the limit, between 60 s and 10 min
/// (SLURM sends the signal up to a minute late; a checkpoint of a large model takes a while),
/// 120 s when the limit is not given.
pub fn warning_s(time: Option<&str>) -> u64 {
    match time.and_then(time_limit_s) {
        Some(t) => (t / 10).clamp(60, 600),
        None => 120,
    }
}

fn asks_for_gpu(opts: &[(String, Option<String>)]) -> bool {
    opts.iter().any(|(k, v)| match k.as_str() {
        "gres" => v.as_deref().is_some_and(|v| v.contains("gpu")),
        "gpus" | "gpus-per-node" | "gpus-per-task" | "gpus-per-socket" | "gpu-bind" => true,
        _ => false,
    })
}

fn task_count_above_one(opts: &[(String, Option<String>)]) -> bool {
    ["ntasks", "ntasks-per-node", "nodes"].iter().any(|k| option(opts, k).is_some_and(|v| v.split('-').next_back().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 1)))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Write `<node>.sbatch` for every node and `submit.sh`; returns the directory.
pub fn write_sbatch(pipeline: &Pipeline, profile: &Profile, paths: &SlurmPaths, out: &Path) -> Result<PathBuf> {
    let ns = paths.scale.namespace(&profile.name);
    let logs = paths.artifacts.join("logs").join(&ns);
    // Always explicit: a CTPIPE_SCALE in the job's environment must not change what runs.
    let scale = match paths.scale {
        Scale::Full => "full",
        Scale::Smoke => "smoke",
    };
    let pipe = std::path::absolute(&pipeline.path)?;
    let q = |p: &Path| shell_quote(&p.display().to_string());
    // Everything checked before anything is written.
    let mut scripts = Vec::new();
    for node in profile.nodes.values() {
        let origin = format!("{} [{}.{}]", pipeline.path.display(), profile.name, node.id);
        let mut resources = profile.slurm.clone();
        resources.extend(node.slurm.clone());
        let opts = sbatch_options(&resources, &origin)?;
        let parallel = task_count_above_one(&opts);
        if parallel && !DATA_PARALLEL.contains(&node.stage.name) {
            return Err(usage(format!("{origin}: asks for several tasks, but {} runs as one process (only {} run data-parallel)", node.stage.name, DATA_PARALLEL.join(" and "))));
        }
        let bin = if asks_for_gpu(&opts) { &paths.gpu_bin } else { &paths.bin };
        let exe = bin.join(node.stage.name);
        if !exe.is_file() {
            eprintln!("plan sbatch: note: {} runs {}, which is not there yet{}", node.id, exe.display(), if bin == &paths.gpu_bin { " (build it with `make cuda`)" } else { "" });
        }

        let mut s = String::new();
        let _ = writeln!(s, "#!/bin/bash");
        let _ = writeln!(s, "# {} — node {} of profile {} (generated by `plan sbatch`; edit pipeline.toml)", node.stage.name, node.id, profile.name);
        let _ = writeln!(s, "#SBATCH --job-name={ns}-{}", node.id);
        let _ = writeln!(s, "#SBATCH --output={}/{}-%j.log", logs.display(), node.id);
        let _ = writeln!(s, "#SBATCH --open-mode=append\n#SBATCH --requeue\n#SBATCH --kill-on-invalid-dep=yes");
        if !opts.iter().any(|(k, _)| k == "signal") {
            let _ = writeln!(s, "#SBATCH --signal=B:USR1@{}", warning_s(option(&opts, "time")));
        }
        for (k, v) in &opts {
            match v {
                Some(v) => writeln!(s, "#SBATCH --{k}={v}")?,
                None => writeln!(s, "#SBATCH --{k}")?,
            }
        }
        let _ = writeln!(s, "set -u\ncd {}\nmkdir -p {}", q(&paths.workdir), q(&logs));
        // The stage's threads: the CPUs SLURM gave each task, unless the user set it.
        s.push_str("if [ -z \"${RAYON_NUM_THREADS:-}\" ] && [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export RAYON_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi\n");
        let launch = if parallel {
            // One task per rank; srun forwards the script's signals to every task.
            "srun --mpi=\"${CTPIPE_SRUN_MPI:-pmix}\" --kill-on-bad-exit=1 "
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{launch}{} --pipeline {} --profile {} --scale {scale} --node {} --artifacts {} --data-dir {} &",
            q(&exe),
            q(&pipe),
            shell_quote(&profile.name),
            shell_quote(&node.id),
            q(&paths.artifacts),
            q(&paths.data),
        );
        s.push_str(
            r#"child=$!
requeue=0
# USR1: the time limit is near, come back for more. TERM: a preemption (SLURM requeues the job
# itself) or scancel (which must stay cancelled): checkpoint, never requeue here.
trap 'requeue=1; kill -USR1 "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
# `wait` returns early when a trapped signal arrives; wait until the stage really exits.
while true; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
done
if [ "$rc" -eq 75 ] && [ "$requeue" -eq 1 ]; then
    echo "checkpointed before the time limit; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"#,
        );
        scripts.push((node.id.clone(), s));
    }

    fsx::create_dir_all(out)?;
    fsx::create_dir_all(&logs)?;
    for (id, s) in &scripts {
        fsx::write_atomic(&out.join(format!("{id}.sbatch")), s.as_bytes())?;
    }
    fsx::write_atomic(&out.join("submit.sh"), submit_script(profile, paths, &pipe, &logs).as_bytes())?;
    #[cfg(unix)]
    for entry in std::fs::read_dir(out)?.flatten() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
    }
    Ok(out.to_path_buf())
}

/// `submit.sh`: check the profile, skip the nodes whose artifact is already there (and whose
/// inputs are not being rebuilt), test every script with `sbatch --test-only`, then submit in
/// dependency order; if a submission is refused, cancel the jobs already submitted.
fn submit_script(profile: &Profile, paths: &SlurmPaths, pipe: &Path, logs: &Path) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let scale = match paths.scale {
        Scale::Full => "full",
        Scale::Smoke => "smoke",
    };
    let common = format!("--pipeline {} --profile {} --scale {scale} --artifacts {}", q(pipe), shell_quote(&profile.name), q(&paths.artifacts));
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash\n# Submit the nodes of profile {} in dependency order (generated by `plan sbatch`).", profile.name);
    s.push_str("# Nodes whose artifact exists are skipped; set SUBMIT_ALL=1 to submit every node.\n");
    s.push_str("set -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
    let _ = writeln!(s, "mkdir -p {}", q(logs));
    let _ = writeln!(s, "{} {common} check", q(&paths.bin.join("plan")));
    s.push_str("declare -A job\nsubmitted=()\n");
    s.push_str(
        r#"cancel_submitted() {
    if [ "${#submitted[@]}" -gt 0 ]; then
        echo "submit.sh: cancelling the jobs already submitted: ${submitted[*]}" >&2
        scancel "${submitted[@]}" || true
    fi
}
trap 'cancel_submitted; exit 1' ERR
# up_to_date NODE BINARY: the node's artifact is in the store (the stage's --dry-run says so).
up_to_date() {
    local doc
    [ "${SUBMIT_ALL:-0}" != 1 ] && doc=$("$2" "#,
    );
    // The document is captured before it is searched: `| grep -q` under pipefail failed
    // whenever grep left before the stage had written its last line (CI, a loaded machine).
    let _ = writeln!(s, "{common} --data-dir {} --node \"$1\" --dry-run 2>/dev/null) && [[ \"$doc\" == *'\"cached\": true'* ]]\n}}", q(&paths.data));
    // Decide which nodes to submit: a node is skipped when it is up to date and none of its
    // inputs is submitted.
    s.push_str("todo=()\n");
    for node in profile.topo_order() {
        let deps: Vec<String> = node.dependencies().iter().map(|d| format!("${{job[{d}]:-}}")).collect();
        let exe = paths.bin.join(node.stage.name);
        let _ = writeln!(
            s,
            "if [ -z \"{}\" ] && up_to_date {} {}; then echo \"{}: up to date\"; else job[{}]=pending; todo+=({}); fi",
            deps.join(""),
            shell_quote(&node.id),
            q(&exe),
            node.id,
            node.id,
            shell_quote(&node.id)
        );
    }
    s.push_str("[ \"${#todo[@]}\" -gt 0 ] || { echo \"submit.sh: every node is up to date\"; exit 0; }\n");
    s.push_str("for n in \"${todo[@]}\"; do\n    sbatch --test-only \"$n.sbatch\" >/dev/null 2>\"$n.test-only.err\" || { echo \"submit.sh: sbatch refuses $n.sbatch: $(tail -1 \"$n.test-only.err\")\" >&2; exit 1; }\n    rm -f \"$n.test-only.err\"\ndone\n");
    for node in profile.topo_order() {
        let deps: Vec<String> = node.dependencies().iter().map(|d| format!("${{job[{d}]:-}}")).collect();
        let _ = writeln!(
            s,
            "if [ -n \"${{job[{id}]:-}}\" ]; then\n    deps=\"\"; for d in {deps}; do [ -n \"$d\" ] && [ \"$d\" != pending ] && deps=\"$deps:$d\"; done\n    job[{id}]=$(sbatch --parsable ${{deps:+--dependency=afterok$deps}} {id}.sbatch)\n    submitted+=(\"${{job[{id}]}}\")\n    echo \"{id}: job ${{job[{id}]}}\"\nfi",
            id = node.id,
            deps = if deps.is_empty() { "\"\"".to_string() } else { deps.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(" ") },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_in_every_sbatch_format() {
        for (s, want) in [("30", 1800), ("5:30", 330), ("01:00:00", 3600), ("2-0", 172_800), ("1-02:03", 93_780), ("1-00:00:05", 86_405)] {
            assert_eq!(time_limit_s(s), Some(want), "{s}");
        }
        assert_eq!(time_limit_s("soon"), None);
        assert_eq!(warning_s(Some("24:00:00")), 600);
        assert_eq!(warning_s(Some("00:30:00")), 180);
        assert_eq!(warning_s(Some("5")), 60);
        assert_eq!(warning_s(None), 120);
    }

    #[test]
    fn options_are_normalised_and_checked() {
        let t: toml::Table = toml::from_str("exclusive = true\noversubscribe = false\ncpus_per_task = 4\nconstraint = [\"a100\", \"ib\"]\ntime = \"01:00:00\"").unwrap();
        let opts = sbatch_options(&t, "p.toml [x.y]").unwrap();
        assert_eq!(
            opts,
            vec![
                ("constraint".into(), Some("a100,ib".into())),
                ("cpus-per-task".into(), Some("4".into())),
                ("exclusive".into(), None),
                ("time".into(), Some("01:00:00".into())),
            ]
        );
        for (bad, says) in [("output = \"x\"", "set by `plan sbatch`"), ("\"Bad Key\" = 1", "not an sbatch long option"), ("mem = { a = 1 }", "expected a string")] {
            let err = sbatch_options(&toml::from_str(bad).unwrap(), "p.toml [x.y]").unwrap_err().to_string();
            assert!(err.starts_with("p.toml [x.y]: slurm option") && err.contains(says), "{bad}: {err}");
        }
        assert!(asks_for_gpu(&sbatch_options(&toml::from_str("gres = \"gpu:2\"").unwrap(), "").unwrap()));
        assert!(!asks_for_gpu(&opts));
        assert!(task_count_above_one(&sbatch_options(&toml::from_str("ntasks-per-node = 4").unwrap(), "").unwrap()));
        assert!(!task_count_above_one(&sbatch_options(&toml::from_str("ntasks = 1").unwrap(), "").unwrap()));
    }
}
