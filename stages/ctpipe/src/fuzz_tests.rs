//! Property-based tests of every reader of untrusted bytes: arbitrary and damaged inputs give
//! an error or a value that passes the reader's own checks, never a panic. Seeded and bounded
//! (`CASES` each), so `make test` runs them in seconds and every run tries the same inputs;
//! `CTPIPE_FUZZ_CASES` raises the count (`make test-faults` runs 20× as many).

use crate::data::io::{read_split, write_split};
use crate::data::schema::{DatasetInfo, SampleKind, Samples, Split};
use crate::data::sources::idx::parse_idx;
use crate::train::checkpoint;
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

const CASES: u32 = 256;

fn runner() -> TestRunner {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(crate::error::install_panic_hook);
    let cases = std::env::var("CTPIPE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let config = Config { cases, failure_persistence: None, rng_seed: RngSeed::Fixed(15), rng_algorithm: RngAlgorithm::ChaCha, ..Config::default() };
    TestRunner::new(config)
}

/// Damage to a file: flip bits at some positions, then keep a prefix (or all) of it.
fn damage() -> impl Strategy<Value = (Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>)> {
    (prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4), prop::option::of(any::<prop::sample::Index>()))
}

fn apply(bytes: &[u8], (flips, cut): &(Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>)) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for (at, mask) in flips {
        let i = at.index(b.len());
        b[i] ^= mask;
    }
    if let Some(cut) = cut {
        b.truncate(cut.index(b.len()));
    }
    b
}

#[test]
fn idx_reader_accepts_only_consistent_arrays() {
    let valid = crate::data::sources::idx::encode_idx(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let check = |bytes: &[u8]| {
        if let Ok(idx) = parse_idx(bytes) {
            let want = idx.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            prop_assert_eq!(want, Some(idx.data.len()));
        }
        Ok(())
    };
    runner().run(&prop::collection::vec(any::<u8>(), 0..64), |b| check(&b)).unwrap();
    runner().run(&damage(), |d| check(&apply(&valid, &d))).unwrap();
}

#[test]
fn split_reader_never_panics_on_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let info = DatasetInfo { name: "p".into(), kind: SampleKind::Points { dim: 2 }, class_names: vec!["a".into(), "b".into()] };
    let split = Split { samples: Samples::Points((0..200).map(|i| i as f32 * 0.25).collect()), labels: (0..100).map(|i| i % 2).collect() };
    let good = dir.path().join("good.parquet");
    write_split(&good, &info, "train", &split).unwrap();
    let valid = std::fs::read(&good).unwrap();
    let path = dir.path().join("train.parquet");
    let read = std::cell::Cell::new(0);
    runner()
        .run(&damage(), |d| {
            std::fs::write(&path, apply(&valid, &d)).unwrap();
            // parquet-rs panics on some damaged files; read_split must turn that into an error.
            if let Ok((i, s)) = read_split(&path) {
                prop_assert!(s.check(&i, "fuzz").is_ok());
                read.set(read.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert!(read.get() > 0, "the undamaged cases are read");
}

/// Hub-style Parquet (source = parquet: or hub:), from the corpus' valid snappy file.
#[test]
fn image_parquet_import_never_panics_on_damaged_files() {
    use crate::data::sources::images::ImageCollector;
    use crate::data::sources::parquet_file::{import_file, Columns, Labels};
    let valid = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corpus/files/parquet/ok-snappy.parquet")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    runner()
        .run(&damage(), |d| {
            std::fs::write(&path, apply(&valid, &d)).unwrap();
            let _ = import_file(&path, &Columns::default(), &mut ImageCollector::new(None), &mut Labels::default());
            Ok(())
        })
        .unwrap();
}

#[test]
fn checkpoint_reader_gives_back_what_was_written_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Device::Cpu;
    let tensors = vec![
        ("net/w".to_string(), Tensor::new(&[[1f32, -2.0], [3.5, 4.0]], &d).unwrap()),
        ("opt/m.w".to_string(), Tensor::new(&[0.5f32, 0.25, -1.0], &d).unwrap()),
    ];
    let written = checkpoint::save(dir.path(), "run", 7, 7, &tensors).unwrap();
    let valid = std::fs::read(&written).unwrap();
    let digest = checkpoint::digest(tensors.iter().map(|(k, t)| (k, t))).unwrap();
    runner()
        .run(&damage(), |dmg| {
            std::fs::write(&written, apply(&valid, &dmg)).unwrap();
            if let Ok(c) = checkpoint::load(&written, "run", &d) {
                // Accepted only if it holds exactly what was written (JSON whitespace may differ).
                prop_assert_eq!((c.meta.step, c.meta.optimizer_t), (7, 7));
                prop_assert_eq!(checkpoint::digest(c.tensors.iter()).unwrap(), digest.clone());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn safetensors_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let header = |n: u64, json: &str| [n.to_le_bytes().as_slice(), json.as_bytes()].concat();
    let valid = header(56, r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  "#);
    let mut valid = valid;
    valid.extend([0u8; 8]);
    runner()
        .run(&(damage(), prop::collection::vec(any::<u8>(), 0..32)), |(dmg, extra)| {
            let mut b = apply(&valid, &dmg);
            b.extend(extra);
            std::fs::write(&path, &b).unwrap();
            let _ = crate::model::load_tensors(&path, &Device::Cpu);
            Ok(())
        })
        .unwrap();
}

/// Settings: any field of train-ct with any number, string, boolean or list is refused with a
/// usage error or gives a config inside every declared range; never a panic.
#[test]
fn settings_reader_refuses_or_keeps_every_range() {
    use crate::config::Describe;
    use crate::stage::{scale::Scale, typed_config, Stage, TrainCt};
    let names: Vec<&str> = <TrainCt as Stage>::Config::fields().iter().map(|f| f.name).collect();
    let value = prop_oneof![
        any::<f64>().prop_map(toml::Value::Float),
        any::<i64>().prop_map(toml::Value::Integer),
        (-3i64..3000).prop_map(toml::Value::Integer),
        (-1.0f64..10.0).prop_map(toml::Value::Float),
        "[a-z0-9-]{0,8}".prop_map(toml::Value::String),
        any::<bool>().prop_map(toml::Value::Boolean),
        prop::collection::vec((-2i64..5).prop_map(toml::Value::Integer), 0..3).prop_map(toml::Value::Array),
    ];
    let table = prop::collection::vec((prop::sample::select(names), value), 1..4);
    runner()
        .run(&table, |entries| {
            let t: toml::Table = entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            match typed_config::<TrainCt>(t, "fuzz", false, Scale::Full) {
                Ok(c) => {
                    let json = crate::config::to_json(&c).unwrap();
                    prop_assert!(crate::config::check_ranges::<<TrainCt as Stage>::Config>(&json, "fuzz").is_ok());
                }
                Err(e) => prop_assert_eq!(crate::error::exit_code_of(&e), 2, "{}", crate::error::one_line(&e)),
            }
            Ok(())
        })
        .unwrap();
}
