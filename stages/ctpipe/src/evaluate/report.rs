//! Reports people read: one evaluation as a Markdown table, and a profile's evaluations
//! gathered into one document (`plan report`, which `make all` ends with).

use super::fid::{EvalConfig, Evaluation, Row};
use std::fmt::Write as _;

/// Four decimals, or three significant digits for the tiny values of the 2-D toys.
fn num(x: f64) -> String {
    if x == 0.0 || x.abs() >= 0.01 { format!("{x:.4}") } else { format!("{x:.2e}") }
}

fn opt(v: Option<f64>, pct: bool) -> String {
    match v {
        Some(x) if pct => format!("{:.1} %", 100.0 * x),
        Some(x) => num(x),
        None => "–".into(),
    }
}

/// "mean ± std" over seeds, or the mean alone with one seed.
fn spread(r: &Row) -> String {
    match r.fd_std {
        Some(sd) => format!("{} ± {}", num(r.fd_mean), num(sd)),
        None => num(r.fd_mean),
    }
}

/// The Markdown report of one `evaluate-fid` artifact.
pub fn markdown(ev: &Evaluation, cfg: &EvalConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {} — FD on {} features\n", ev.dataset, ev.encoder);
    let _ = writeln!(s, "n = {} samples per seed, seeds {:?}; FD min and mean ± std over seeds. The baselines (in italics) are measured exactly as the models: same n, same seeds, same reference.\n", cfg.n, cfg.seeds);
    let toy = ev.rows.iter().any(|r| r.swd.is_some());
    if toy {
        let _ = writeln!(s, "| model | sampler | NFE | FD min | FD mean ± std | SWD | MMD² | near a mode | smallest mode |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        let _ = writeln!(s, "| model | sampler | NFE | FD min | FD mean ± std |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|");
    }
    let row = |s: &mut String, r: &Row, baseline: bool| {
        let name = match r.train_step {
            Some(step) => format!("{} @ step {step}", r.model),
            None => r.model.clone(),
        };
        let name = if baseline { format!("*{name}*") } else { name };
        let nfe = if baseline { "–".to_string() } else { r.nfe.to_string() };
        let _ = write!(s, "| {name} | {} | {nfe} | {} | {} |", r.sampler, num(r.fd_min), spread(r));
        if toy {
            let _ = write!(s, " {} | {} | {} | {} |", opt(r.swd, false), opt(r.mmd, false), opt(r.near, true), opt(r.min_mode, true));
        }
        s.push('\n');
    };
    for r in ev.rows.iter().filter(|r| r.train_step.is_none() && r.guidance.is_none() && r.class.is_none()) {
        row(&mut s, r, false);
    }
    for r in &ev.baselines {
        row(&mut s, r, true);
    }
    s.push_str(&legend(ev, cfg, toy));
    let per_class: Vec<&Row> = ev.rows.iter().filter(|r| r.class.is_some()).collect();
    if !per_class.is_empty() {
        let _ = writeln!(s, "\nClass-conditional models, per class: {} samples of the class (first seed) against the reference's statistics of that class; the rows above draw every class in turn.\n", cfg.class_n);
        let _ = writeln!(s, "| model | sampler | class | FD |\n|---|---|---:|---:|");
        for r in per_class {
            let _ = writeln!(s, "| {} | {} | {} | {} |", r.model, r.sampler, r.class.unwrap_or(0), num(r.fd_min));
        }
    }
    let guided: Vec<&Row> = ev.rows.iter().filter(|r| r.guidance.is_some()).collect();
    if !guided.is_empty() {
        let _ = writeln!(s, "\nGuidance by a weaker model (`guide`{}): f_w = f_guide + w·(f − f_guide), at every evaluation; w = 1 is the model alone, w = 0 the guide alone.\n", cfg.guide_step.map(|st| format!(", its snapshot at step {st}")).unwrap_or_default());
        let _ = writeln!(s, "| model | sampler | w | FD min | FD mean |\n|---|---|---:|---:|---:|");
        for r in guided {
            let _ = writeln!(s, "| {} | {} | {} | {} | {} |", r.model, r.sampler, r.guidance.unwrap_or(1.0), num(r.fd_min), num(r.fd_mean));
        }
    }
    if let Some(t) = &ev.toy {
        s.push_str(&super::toy_measures::markdown(t));
    }
    let snaps: Vec<&Row> = ev.rows.iter().filter(|r| r.train_step.is_some()).collect();
    if !snaps.is_empty() {
        let _ = writeln!(s, "\nFD over training (snapshots, first seed):\n");
        let _ = writeln!(s, "| model | step | sampler | FD |\n|---|---:|---|---:|");
        for r in snaps {
            let _ = writeln!(s, "| {} | {} | {} | {} |", r.model, r.train_step.unwrap_or(0), r.sampler, num(r.fd_min));
        }
    }
    s
}

/// What every column and number of the main table means.
fn legend(ev: &Evaluation, cfg: &EvalConfig, toy: bool) -> String {
    let mut s = String::from("\n");
    let _ = writeln!(
        s,
        "- **FD**: Fréchet distance between the {} features of n samples and the reference statistics, one per seed; min over seeds and mean ± sample standard deviation. FD is biased upwards at small n, so rows compare only at the same n, as here.",
        ev.encoder
    );
    if ev.encoder != "inception" || cfg.n < 50_000 {
        let why = if ev.encoder != "inception" { format!("{} features, not Inception-v3's", ev.encoder) } else { format!("n = {}, not 50,000", cfg.n) };
        let _ = writeln!(s, "- Not comparable to published FID ({why}).");
    }
    let _ = writeln!(s, "- **NFE**: network evaluations per sample: k for k-step consistency sampling, 2N − 1 for Heun's method on N noise levels (heun-N).");
    let _ = writeln!(s, "- *data*: the held-out split drawn without replacement, as if it were a model's samples (what a perfect model scores at this n); *pure noise*: N(0, 1) shaped like the data, clamped to the data range for images (what a useless one scores).");
    if toy {
        let _ = writeln!(
            s,
            "- First seed only: **SWD**, sliced Wasserstein-2 distance to the held-out points (256 random directions); **MMD²**, unbiased squared maximum mean discrepancy with a Gaussian kernel summed over bandwidths 0.02, 0.1 and 0.5, on at most {} points; **near a mode**, the share of samples within 0.1 of a mixture centre; **smallest mode**, the share of samples whose nearest centre is the least visited one. The data row has no SWD or MMD: they would compare the held-out points with themselves.",
            cfg.mmd_n
        );
    }
    s
}

/// A profile's report: the `report.md` of every evaluate-fid node that has run, with its
/// pictures' paths; nodes not run yet are listed as such.
pub fn profile_report(store: &crate::store::Store, profile: &crate::pipeline::Profile, scale: crate::stage::scale::Scale) -> anyhow::Result<String> {
    let ns = scale.namespace(&profile.name);
    let mut s = format!("# ctpipe report — profile `{ns}`\n\n{}\n\nModel rows are named by the node that produced the model.\n\n", profile.about);
    if scale == crate::stage::scale::Scale::Smoke {
        s.push_str("Smoke scale: every node ran with its counts cut to minutes on a CPU (stage::scale); the numbers only show that the profile runs.\n\n");
    }
    let mut any = false;
    for node in profile.topo_order().into_iter().filter(|n| n.stage.name == "evaluate-fid") {
        any = true;
        let _ = writeln!(s, "## {}\n", node.id);
        let Some(r) = store.read_ref(&ns, &node.id)? else {
            let how = if scale == crate::stage::scale::Scale::Smoke { format!("make {} PROFILE={} SCALE=smoke", node.id, profile.name) } else { format!("make {}", node.id) };
            let _ = writeln!(s, "not run yet (`{how}`)\n");
            continue;
        };
        let art = store.open(&r.stage, &r.key, crate::store::Verify::Content)?;
        let md = std::fs::read_to_string(art.file("report.md")?)?;
        let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(art.file("metrics.json")?)?)?;
        s.push_str(&rename_rows(&md, &node_names(store, &ns, node, &metrics)?));
        let forced: Vec<&str> = std::iter::once(&node.id).chain(node.inputs.values().flatten()).filter(|id| store.ref_is_forced(&ns, id)).map(String::as_str).collect();
        s.push_str(&forced_note(&forced));
        let pics: Vec<String> = art.manifest.files.iter().filter(|f| f.path.ends_with(".svg") || f.path.ends_with(".png")).map(|f| f.path.clone()).collect();
        let _ = writeln!(s, "\nPictures in `{}`: {}\n", art.dir.display(), pics.join(", "));
    }
    if !any {
        s.push_str("This profile has no evaluate-fid node.\n");
    }
    Ok(s)
}

/// A warning naming the nodes whose ref was moved by hand (`--set`/`--input` with `--force`):
/// their rows are not what pipeline.toml describes.
fn forced_note(forced: &[&str]) -> String {
    if forced.is_empty() {
        return String::new();
    }
    let list = forced.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ");
    format!("\n**Set by hand:** {list} now hold artifacts made with `--set`/`--input` and `--force`, not what pipeline.toml describes (`make status` says what differs; `make all` puts the pipeline's back).\n")
}

/// Model labels (`ect`, `sct+cond`) → the profile's node ids, through the keys the model
/// nodes' refs name: an artifact is shared by every profile with the same settings, so its
/// report.md cannot know the node names; the profile report can.
fn node_names(store: &crate::store::Store, ns: &str, node: &crate::pipeline::Node, metrics: &serde_json::Value) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut by_key = std::collections::BTreeMap::new();
    for id in node.inputs.values().flatten() {
        if let Some(r) = store.read_ref(ns, id)? {
            by_key.entry(r.key.as_str().to_string()).or_insert_with(|| id.clone());
        }
    }
    let rows = metrics["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(rows.iter().filter_map(|r| Some((r["model"].as_str()?.to_string(), by_key.get(r["key"].as_str()?)?.clone()))).collect())
}

/// The report's table rows with the model label in the first cell replaced by its node id
/// (`ect @ step 30` keeps its step).
fn rename_rows(md: &str, names: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(md.len());
    for line in md.lines() {
        let renamed = line.strip_prefix("| ").and_then(|rest| {
            let (cell, tail) = rest.split_once(" |")?;
            let (label, step) = match cell.split_once(" @ step ") {
                Some((l, st)) => (l, format!(" @ step {st}")),
                None => (cell, String::new()),
            };
            names.get(label).map(|node| format!("| {node}{step} |{tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_nodes_are_named() {
        assert_eq!(forced_note(&[]), "");
        let note = forced_note(&["train-ct.ect", "evaluate-fid.toy"]);
        assert!(note.contains("`train-ct.ect`, `evaluate-fid.toy` now hold artifacts made with `--set`/`--input` and `--force`"), "{note}");
    }

    #[test]
    fn rows_take_their_node_names() {
        let md = "| model | sampler |\n|---|---|\n| ect | 1-step |\n| ect @ step 30 | 1-step |\n| *data* | – |\n| ectx | 1-step |\nect in prose\n";
        let names = std::collections::BTreeMap::from([("ect".to_string(), "train-ct.ect".to_string())]);
        assert_eq!(
            rename_rows(md, &names),
            "| model | sampler |\n|---|---|\n| train-ct.ect | 1-step |\n| train-ct.ect @ step 30 | 1-step |\n| *data* | – |\n| ectx | 1-step |\nect in prose\n"
        );
    }
}
