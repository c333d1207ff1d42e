//! ctpipe: consistency-model training as composable, content-addressed pipeline stages.
//!
//! Module map (one responsibility each):
//! - [`store`]    — artifact keys, canonical JSON, manifests, atomic publish, refs, gc
//! - [`pipeline`] — `pipeline.toml` profiles and nodes, the DAG, the make plan
//! - [`stage`]    — the stage contract every binary runs through (flags, key, cache, publish)
//! - [`config`]   — typed configs with documented defaults; overrides; `--help` tables
//! - [`data`]     — the dataset schema, Parquet I/O, and the sources `fetch-data` imports
//! - [`error`]    — failure kinds and exit codes; one-line messages
//! - [`progress`] — progress bars on a terminal, plain lines in logs
//! - [`fsx`]      — fsync and atomic file writes
//! - [`failpoint`] — crash points for the fault-injection tests

pub mod config;
pub mod data;
pub mod error;
pub mod failpoint;
pub mod fsx;
pub mod pipeline;
pub mod progress;
pub mod stage;
pub mod store;
