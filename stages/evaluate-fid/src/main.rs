//! evaluate-fid: sample model artifacts (1-step, 2-step, …; Heun for EDM teachers) for several
//! seeds and measure them: FD against reference statistics (min and mean over seeds), and for
//! the 2-D toys sliced Wasserstein, MMD and mode coverage. Writes `metrics.json`, `report.md`,
//! `fd.svg` (and `fd-training.svg` with snapshots) and sample pictures.
//!
//! Usually run by make: `evaluate-fid --profile default --node evaluate-fid.fmnist`.
//! Directly: `evaluate-fid --input data=<dataset> --input reference=<stats> --input models=<model>`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ctpipe::stage::main::<ctpipe::stage::EvaluateFid>()
}
