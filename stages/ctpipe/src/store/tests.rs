use super::*;
use crate::error::{exit_code_of, one_line};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;

/// A draft whose key is computed from what it says (`open` checks that they agree).
fn draft(stage: &str, key: &Key, config: serde_json::Value, inputs: &[(&str, &str, &Key)]) -> Draft {
    Draft {
        stage: stage.into(),
        version: 1,
        key: key.clone(),
        inputs: inputs
            .iter()
            .map(|(role, st, k)| (role.to_string(), InputRecord { stage: st.to_string(), key: (*k).clone() }))
            .collect(),
        external: BTreeMap::new(),
        config,
        metrics: json!({"rows": 3}),
    }
}

fn key_of(n: u64) -> Key {
    artifact_key("fetch-data", 1, &json!({ "n": n }), &BTreeMap::new(), &BTreeMap::new()).unwrap()
}

fn publish(store: &Store, stage: &str, key: &Key, config: serde_json::Value, inputs: &[(&str, &str, &Key)]) -> Artifact {
    let s = store.begin(stage, key).unwrap();
    fs::write(s.path().join("a.bin"), b"hello").unwrap();
    fs::create_dir(s.path().join("sub")).unwrap();
    fs::write(s.path().join("sub/b.txt"), b"world!").unwrap();
    s.commit(draft(stage, key, config, inputs)).unwrap()
}

#[test]
fn publish_then_open_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(1);
    let art = publish(&store, "fetch-data", &k, json!({"n": 1}), &[]);
    assert_eq!(art.dir, dir.path().join("fetch-data").join(k.as_str()));
    let paths: Vec<_> = art.manifest.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(paths, vec![("a.bin", 5), ("sub/b.txt", 6)]);
    assert_eq!(art.manifest.files[0].blake3, blake3::hash(b"hello").to_hex().to_string());
    let again = store.open("fetch-data", &k, Verify::Hashes).unwrap();
    assert_eq!(again.manifest, art.manifest);
    assert_eq!(store.list().unwrap(), vec![("fetch-data".to_string(), k.clone())]);
    assert_eq!(store.resolve(&k.as_str()[..8]).unwrap(), ("fetch-data".to_string(), k.clone()));
    assert_eq!(store.resolve(&format!("fetch-data/{}", &k.as_str()[..6])).unwrap().1, k);
    // No staging leftovers.
    let names: Vec<_> = fs::read_dir(dir.path().join("fetch-data")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 1);
}

/// Files written through a temporary file (safetensors 0.8 does, `tempfile` creates 0600) are
/// published readable by all under the usual umask, as a plain `create` would make them.
#[cfg(unix)]
#[test]
fn published_files_get_the_default_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(9);
    let s = store.begin("fetch-data", &k).unwrap();
    let private = tempfile::NamedTempFile::new_in(s.path()).unwrap();
    assert_eq!(private.as_file().metadata().unwrap().permissions().mode() & 0o777, 0o600);
    private.persist(s.path().join("w.safetensors")).unwrap();
    let art = s.commit(draft("fetch-data", &k, json!({"n": 9}), &[])).unwrap();
    let mode = fs::metadata(art.dir.join("w.safetensors")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666 & !crate::fsx::umask());
}

#[test]
fn dropped_staging_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    {
        let s = store.begin("fetch-data", &key_of(2)).unwrap();
        fs::write(s.path().join("x"), b"partial").unwrap();
    }
    assert!(fs::read_dir(dir.path().join("fetch-data")).unwrap().next().is_none());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn corruption_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(3);
    let art = publish(&store, "fetch-data", &k, json!({"n": 3}), &[]);
    // Same size, different bytes: only re-hashing sees it.
    fs::write(art.dir.join("a.bin"), b"jello").unwrap();
    store.open("fetch-data", &k, Verify::Sizes).unwrap();
    let e = store.open("fetch-data", &k, Verify::Hashes).unwrap_err();
    assert_eq!(exit_code_of(&e), 3);
    let msg = one_line(&e);
    assert!(msg.contains("a.bin") && msg.contains("blake3") && msg.contains("corrupt"), "{msg}");
    // Truncation: the cheap check sees it.
    fs::write(art.dir.join("sub/b.txt"), b"wor").unwrap();
    let msg = one_line(&store.open("fetch-data", &k, Verify::Sizes).unwrap_err());
    assert!(msg.contains("sub/b.txt") && msg.contains("size 3") && msg.contains("records 6"), "{msg}");
    // A missing file, a broken manifest.
    fs::remove_file(art.dir.join("a.bin")).unwrap();
    assert!(one_line(&store.open("fetch-data", &k, Verify::Sizes).unwrap_err()).contains("missing"));
    fs::write(art.dir.join("manifest.json"), b"{not json").unwrap();
    assert!(one_line(&store.open("fetch-data", &k, Verify::Sizes).unwrap_err()).contains("invalid manifest"));
}

/// The default check of every stage's inputs: a same-size change is found without asking, a
/// file unchanged since it was verified is not hashed again, and an edited manifest is refused.
#[test]
fn content_checks_hash_only_what_changed_since_it_was_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(5);
    let art = publish(&store, "fetch-data", &k, json!({"n": 5}), &[]);
    let record = dir.path().join(".verified/fetch-data").join(format!("{k}.json"));
    let stamp = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime_nsec(), m.ctime_nsec())
    };
    // As if `secs` had passed since every stamp was taken (they are trusted from then on).
    let age = |secs: i128| {
        let mut r = verified::load(&store, "fetch-data", &k);
        r.values_mut().for_each(|v| v.at_ns += secs * 1_000_000_000);
        verified::save(&store, "fetch-data", &k, &r);
    };
    // The publish recorded what it hashed; a moment later, opening hashes nothing and
    // rewrites nothing.
    age(10);
    let before = stamp(&record);
    store.open("fetch-data", &k, Verify::Content).unwrap();
    assert_eq!(stamp(&record), before, "nothing was hashed, so the record is untouched");
    assert_eq!(verified::load(&store, "fetch-data", &k).len(), 3, "two files and the manifest");

    // Same size, different bytes: the stamp changed, so the file is hashed and refused.
    fs::write(art.dir.join("a.bin"), b"jello").unwrap();
    let e = store.open("fetch-data", &k, Verify::Content).unwrap_err();
    assert_eq!(exit_code_of(&e), 3);
    assert!(one_line(&e).contains("a.bin: blake3"), "{}", one_line(&e));
    // Restored, it is hashed once more and then trusted again.
    fs::write(art.dir.join("a.bin"), b"hello").unwrap();
    store.open("fetch-data", &k, Verify::Content).unwrap();
    assert_ne!(stamp(&record), before, "the restored file was hashed and recorded");
    age(10);
    let after = stamp(&record);
    store.open("fetch-data", &k, Verify::Content).unwrap();
    assert_eq!(stamp(&record), after);

    // Racily clean: a stamp taken in the same clock tick as a same-size rewrite matches the
    // rewritten file. Forge one (the old hash with the new file's stamp): taken right after
    // the change it is not trusted, and the rewrite is found; taken 10 s later it would be.
    fs::write(art.dir.join("a.bin"), b"jello").unwrap();
    let meta = fs::metadata(art.dir.join("a.bin")).unwrap();
    let mut r = verified::load(&store, "fetch-data", &k);
    let hello = r["a.bin"].blake3.clone();
    verified::stamp(&mut r, "a.bin", &hello, &meta);
    verified::save(&store, "fetch-data", &k, &r);
    assert!(one_line(&store.open("fetch-data", &k, Verify::Content).unwrap_err()).contains("a.bin: blake3"));
    verified::save(&store, "fetch-data", &k, &r);
    age(10);
    store.open("fetch-data", &k, Verify::Content).unwrap();
    fs::write(art.dir.join("a.bin"), b"hello").unwrap();

    // Without a record (another machine's store, a read-only one) every file is hashed.
    fs::remove_file(&record).unwrap();
    fs::write(art.dir.join("sub/b.txt"), b"World!").unwrap();
    assert!(one_line(&store.open("fetch-data", &k, Verify::Content).unwrap_err()).contains("sub/b.txt: blake3"));
    fs::write(art.dir.join("sub/b.txt"), b"world!").unwrap();
    store.open("fetch-data", &k, Verify::Content).unwrap();

    // A manifest whose metrics were edited: its key still matches, its recorded hash does not.
    let mpath = art.dir.join("manifest.json");
    let good = fs::read_to_string(&mpath).unwrap();
    fs::write(&mpath, good.replace("\"rows\": 3", "\"rows\": 4")).unwrap();
    let msg = one_line(&store.open("fetch-data", &k, Verify::Content).unwrap_err());
    assert!(msg.contains("manifest.json: changed since the artifact was published"), "{msg}");
    fs::write(&mpath, &good).unwrap();
    store.open("fetch-data", &k, Verify::Content).unwrap();

    // A manifest edited to say another config no longer hashes to its key.
    let mpath = art.dir.join("manifest.json");
    let text = fs::read_to_string(&mpath).unwrap().replace("\"n\": 5", "\"n\": 6");
    fs::write(&mpath, text).unwrap();
    let msg = one_line(&store.open("fetch-data", &k, Verify::Sizes).unwrap_err());
    assert!(msg.contains("manifest.json") && msg.contains("the manifest was altered"), "{msg}");
}

#[test]
fn refs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(4);
    assert!(store.read_ref("default", "fetch-data.toy").unwrap().is_none());
    store.write_ref("default", "fetch-data.toy", "fetch-data", &k).unwrap();
    let r = store.read_ref("default", "fetch-data.toy").unwrap().unwrap();
    assert_eq!((r.stage.as_str(), &r.key), ("fetch-data", &k));
    assert_eq!(store.list_refs().unwrap().len(), 1);
    let path = store.ref_path("default", "fetch-data.toy");
    assert_eq!(fs::read_to_string(&path).unwrap(), format!("fetch-data/{k}\n"));
    fs::write(&path, "garbage").unwrap();
    assert_eq!(exit_code_of(&store.read_ref("default", "fetch-data.toy").unwrap_err()), 3);
}

/// A forced ref is told apart from one the pipeline wrote, until the pipeline writes it again.
#[test]
fn forced_refs_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let k = key_of(5);
    store.write_ref("default", "train-ct.a", "train-ct", &k).unwrap();
    assert!(!store.ref_is_forced("default", "train-ct.a"));
    assert!(!store.ref_is_forced("default", "train-ct.missing"));
    store.write_forced_ref("default", "train-ct.a", "train-ct", &k).unwrap();
    assert!(store.ref_is_forced("default", "train-ct.a"));
    assert_eq!(store.read_ref("default", "train-ct.a").unwrap().unwrap().key, k);
    store.write_ref("default", "train-ct.a", "train-ct", &k).unwrap();
    assert!(!store.ref_is_forced("default", "train-ct.a"));
}

#[test]
fn gc_keeps_what_refs_reach_through_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let (d1, d2) = (key_of(10), key_of(11));
    publish(&store, "fetch-data", &d1, json!({"n": 10}), &[]);
    publish(&store, "fetch-data", &d2, json!({"n": 11}), &[]);
    let t = artifact_key("train-ct", 1, &json!({}), &BTreeMap::from([("data".into(), d1.clone())]), &BTreeMap::new()).unwrap();
    publish(&store, "train-ct", &t, json!({}), &[("data", "fetch-data", &d1)]);
    store.write_ref("default", "train-ct.x", "train-ct", &t).unwrap();
    // A crash leftover whose process is gone, and a finished run's work dir.
    fs::create_dir_all(dir.path().join("fetch-data/.tmp-abc-999999999-1")).unwrap();
    fs::create_dir_all(store.work_dir("train-ct", &t)).unwrap();
    let unfinished = key_of(12);
    fs::create_dir_all(store.work_dir("train-ct", &unfinished)).unwrap();

    let plan = store.gc_plan().unwrap();
    let doomed: Vec<_> = plan.artifacts.iter().map(|(s, k, _)| (s.as_str(), k)).collect();
    assert_eq!(doomed, vec![("fetch-data", &d2)], "d1 is reached through train-ct's input");
    assert_eq!(plan.leftovers.len(), 2);
    assert!(!plan.leftovers.iter().any(|(p, _)| p.ends_with(unfinished.as_str())), "interrupted runs are kept");
    store.gc_execute(&plan).unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(store.work_dir("train-ct", &unfinished).is_dir());
    assert!(store.gc_plan().unwrap().is_empty());
}
