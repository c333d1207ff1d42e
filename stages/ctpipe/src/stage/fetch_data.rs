//! `fetch-data`: import a dataset as an artifact (`train.parquet`, `test.parquet`,
//! `dataset.json`; docs/dataset.md).

use super::{Ctx, Env, Stage};
use crate::data::sources::FetchConfig;
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;

pub struct FetchData;

impl Stage for FetchData {
    const NAME: &'static str = "fetch-data";
    // 2: image cells are Hugging Face Image structs of PNG bytes (were raw FixedSizeBinary
    //    pixels), with the `huggingface` features metadata (Image, ClassLabel).
    const VERSION: u32 = 2;
    type Config = FetchConfig;

    fn validate(config: &FetchConfig) -> Result<()> {
        config.validate().map(|_| ())
    }

    // No smoke cuts: a dataset is cheap to import, and the rehearsal should read the real one
    // (the same artifact as the full run's).

    fn external_inputs(config: &FetchConfig, env: &Env) -> Result<BTreeMap<String, String>> {
        config.external_inputs(&env.data_dir)
    }

    fn run(config: &FetchConfig, ctx: &mut Ctx<'_>) -> Result<Value> {
        let dataset = config.fetch(&ctx.env.data_dir)?;
        eprintln!("fetch-data: {}: {} train / {} test rows", dataset.info.name, dataset.train.rows(), dataset.test.rows());
        crate::data::write_dataset(ctx.out_dir(), &dataset)
    }
}
