//! fetch-data: import a dataset as a ctpipe artifact (`train.parquet`, `test.parquet`,
//! `dataset.json`). Sources: `toy2d`, `fashion-mnist`, `hub:<owner>/<name>`, `folder:<path>`,
//! `parquet:<path>`; the schema is in docs/dataset.md.
//!
//! Usually run by make: `fetch-data --profile default --node fetch-data.toy`.
//! Directly: `fetch-data --set source=toy2d --set dataset=moons --write-ref moons.ref`.

use anyhow::Result;
use ctpipe::data::sources::FetchConfig;
use ctpipe::stage::{self, Ctx, Env, Stage};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

struct FetchData;

impl Stage for FetchData {
    const NAME: &'static str = "fetch-data";
    const VERSION: u32 = 1;
    type Config = FetchConfig;

    fn validate(config: &FetchConfig) -> Result<()> {
        config.validate().map(|_| ())
    }

    fn external_inputs(config: &FetchConfig, env: &Env) -> Result<BTreeMap<String, String>> {
        config.external_inputs(&env.data_dir)
    }

    fn run(config: &FetchConfig, ctx: &mut Ctx) -> Result<Value> {
        let dataset = config.fetch(&ctx.env.data_dir)?;
        eprintln!(
            "fetch-data: {}: {} train / {} test rows",
            dataset.info.name,
            dataset.train.rows(),
            dataset.test.rows()
        );
        ctpipe::data::write_dataset(ctx.out_dir(), &dataset)
    }
}

fn main() -> ExitCode {
    stage::main::<FetchData>()
}
