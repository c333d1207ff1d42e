//! Every numeric setting of every stage at NaN, ±inf, 0, negative and absurd values: a value
//! outside the field's declared range (read from the stage's own `--help`) is refused with exit
//! 2 and one line naming the field, before any key is computed; no value panics.

use ctpipe_e2e::{release_bin, run, Sandbox};

const VALUES: [&str; 8] = ["nan", "inf", "-inf", "0", "-1", "-1e-300", "1e300", "1000000000000"];

/// (field, lo, hi, lo_closed, hi_closed) of every field whose help line declares a range.
fn ranged_fields(help: &str) -> Vec<(String, f64, f64, bool, bool)> {
    let mut out = Vec::new();
    for line in help.lines() {
        let Some((head, range)) = line.split_once("  (in ") else { continue };
        let field = head.trim().split(" = ").next().unwrap().to_string();
        let range = range.strip_suffix(')').unwrap();
        let (lo, hi) = range[1..range.len() - 1].split_once(',').unwrap();
        let num = |s: &str| s.trim().parse::<f64>().unwrap();
        out.push((field, num(lo), num(hi), range.starts_with('['), range.ends_with(']')));
    }
    out
}

#[test]
fn every_numeric_setting_out_of_range_is_refused_naming_the_field() {
    let sb = Sandbox::new();
    let mut tried = 0;
    for stage in ["fetch-data", "train-ct", "distill", "precompute-encoder", "evaluate-fid"] {
        let help = run(sb.cmd(release_bin(stage)).arg("--help")).expect_code(0).stdout;
        let fields = ranged_fields(&help);
        assert!(fields.len() >= 5, "{stage}: no ranges in --help:\n{help}");
        for (field, lo, hi, lo_closed, hi_closed) in fields {
            for v in VALUES {
                let x: f64 = v.parse().unwrap();
                let inside = x.is_finite() && (if lo_closed { x >= lo } else { x > lo }) && (if hi_closed { x <= hi } else { x < hi });
                let r = run(sb.cmd(release_bin(stage)).args(["--dry-run", "--set", &format!("{field}={v}")]));
                tried += 1;
                assert!(r.code == 0 || r.code == 2, "{stage} {field}={v}: exit {}\n{}", r.code, r.stderr);
                if r.code == 2 {
                    let line = r.one_error_line();
                    if !inside {
                        assert!(line.contains(&format!("field `{field}`")), "{stage} {field}={v}: {line}");
                    }
                } else {
                    assert!(inside, "{stage} {field}={v}: accepted outside its range");
                }
            }
        }
    }
    eprintln!("settings tried: {tried}");
}

/// The case that shared a key: a NaN setting is refused, so it cannot be cached under the
/// default's key and handed out later.
#[test]
fn a_nan_setting_never_reaches_the_store() {
    let sb = Sandbox::new();
    let data = ctpipe_e2e::publish_toy(&sb, 500).to_string();
    let r = ctpipe_e2e::run_stage(&sb, release_bin("train-ct"), &[("data", &data)], &["network=mlp-toy", "steps=2", "batch=4", "grid=1", "huber_c=nan"]);
    let r = r.expect_code(2);
    assert!(r.one_error_line().contains("field `huber_c`: expected a finite number in [0, inf), got NaN"), "{}", r.stderr);
    assert!(!sb.artifacts().join("train-ct").exists(), "nothing published");
}
