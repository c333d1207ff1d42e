//! fetch-data: import a dataset as a ctpipe artifact (`train.parquet`, `test.parquet`,
//! `dataset.json`). Sources: `toy2d`, `fashion-mnist`, `hub:<owner>/<name>`, `folder:<path>`,
//! `parquet:<path>`; the schema is in docs/dataset.md.
//!
//! Usually run by make: `fetch-data --profile default --node fetch-data.toy`.
//! Directly: `fetch-data --set source=toy2d --set dataset=moons --write-ref moons.ref`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ctpipe::stage::main::<ctpipe::stage::FetchData>()
}
