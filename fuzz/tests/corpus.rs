//! Runs every fuzz target over its committed corpus (`fuzz/corpus/<target>`)
//! and its regressions (`fuzz/regressions/<target>`: inputs that once broke
//! a target), then over bounded random mutations of the corpus, so CI
//! exercises each target on stable Rust without libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("wal_frames", sync_fuzz::wal_frames),
    ("wal_log", sync_fuzz::wal_log),
    ("snapshot", sync_fuzz::snapshot),
    ("json_store", sync_fuzz::json_store),
    ("sealed_json_store", sync_fuzz::sealed_json_store),
    ("sealed_wal_store", sync_fuzz::sealed_wal_store),
];

fn inputs(target: &str, kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n != ".keep"))
                .filter_map(|p| fs::read(&p).ok().map(|bytes| (p, bytes)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_target_passes_its_corpus_and_regressions() {
    for (name, target) in TARGETS {
        let corpus = inputs(name, "corpus");
        assert!(!corpus.is_empty(), "{name}: the seed corpus is missing");
        for (path, bytes) in corpus.iter().chain(&inputs(name, "regressions")) {
            // A panic names the input through this message.
            eprintln!("{name}: {}", path.display());
            target(bytes);
        }
    }
}

#[test]
fn the_seeds_decode_so_mutations_start_from_valid_input() {
    let seed = |target: &str, name: &str| {
        inputs(target, "corpus")
            .into_iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, bytes)| bytes)
            .unwrap_or_default()
    };
    let mut record = sync_wal::WalRecord::default();
    let frames = seed("wal_frames", "four-frames");
    assert!(sync_wal::format::decode_frame(&frames, 1 << 16, &mut record).is_ok());
    let snapshot = seed("snapshot", "four-ops");
    assert_eq!(
        sync_store_file::snapshot::Snapshot::decode(&snapshot).map(|s| s.operations.len()),
        Ok(4)
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    fs::write(
        dir.path().join("00000000000000000000.wal"),
        seed("wal_log", "four-records"),
    )
    .expect("write the segment");
    let records = sync_wal::WalInspector::open(dir.path()).map(|v| v.iter_from(0).count());
    assert_eq!(records.ok(), Some(4));
    // The sealed seeds open with the fuzz key, so mutations reach the seal.
    let encryption = sync_fuzz::fuzz_encryption();
    let json = dir.path().join("outbox.json");
    fs::write(&json, seed("sealed_json_store", "two-ops")).expect("write the store file");
    let ops = sync_store_file::JsonOutboxStore::load_read_only_with_encryption(&json, &encryption)
        .map(|s| sync_outbox::OutboxStore::load_all(&s).map(|ops| ops.len()));
    assert!(matches!(ops, Ok(Ok(2))), "{ops:?}");
    let store = dir.path().join("outbox-wal");
    fs::create_dir_all(store.join("log")).expect("the log directory");
    fs::write(
        store.join("log").join("00000000000000000000.wal"),
        seed("sealed_wal_store", "four-records"),
    )
    .expect("write the segment");
    let ops = sync_store_file::WalOutboxStore::load_read_only_with_encryption(&store, &encryption)
        .map(|s| sync_outbox::OutboxStore::load_all(&s).map(|ops| ops.len()));
    assert!(matches!(ops, Ok(Ok(1))), "{ops:?}");
}

/// A seed with a few bytes overwritten, inserted or cut: mostly-valid input
/// that reaches past the first checks.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = inputs(target, "corpus")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn wal_frames_survives_mutations(bytes in mutated("wal_frames")) {
        sync_fuzz::wal_frames(&bytes);
    }

    #[test]
    fn wal_log_survives_mutations(bytes in mutated("wal_log")) {
        sync_fuzz::wal_log(&bytes);
    }

    #[test]
    fn snapshot_survives_mutations(bytes in mutated("snapshot")) {
        sync_fuzz::snapshot(&bytes);
    }

    #[test]
    fn json_store_survives_mutations(bytes in mutated("json_store")) {
        sync_fuzz::json_store(&bytes);
    }

    #[test]
    fn sealed_json_store_survives_mutations(bytes in mutated("sealed_json_store")) {
        sync_fuzz::sealed_json_store(&bytes);
    }

    #[test]
    fn sealed_wal_store_survives_mutations(bytes in mutated("sealed_wal_store")) {
        sync_fuzz::sealed_wal_store(&bytes);
    }

    #[test]
    fn every_target_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for (_, target) in TARGETS {
            target(&bytes);
        }
    }
}
