//! `Error::NoSpace` while writing a snapshot: a child process (this test binary re-executed)
//! lowers `RLIMIT_FSIZE` below the snapshot's size, so the compaction fails with EFBIG. The
//! journal must report `NoSpace` naming the snapshot, leave no temporary file, lose nothing, and go
//! on: writes, reads and checkpoints work; after reopening without the limit, compaction succeeds
//! and every write is there.

mod common;

use std::path::Path;

use common::*;
use statejournal::{CompactionPolicy, Error, Journal, JournalOptions};

const DIR_ENV: &str = "STATEJOURNAL_NO_SPACE_SNAPSHOT_DIR";
const REPORT: &str = "NO-SPACE-SNAPSHOT:";
const TEST: &str = "a_snapshot_that_does_not_fit_fails_with_no_space_and_loses_nothing";
const KEYS: u32 = 12_000;

fn opts() -> JournalOptions {
    // Segments well below the limit: only the snapshot (~1.4 MiB) exceeds it.
    JournalOptions::default()
        .segment_size(128 << 10)
        .compaction(CompactionPolicy::manual())
}

fn value(k: u32, round: u32) -> Vec<u8> {
    let mut v = vec![(k % 251) as u8; 100];
    v[..4].copy_from_slice(&round.to_le_bytes());
    v
}

fn child(dir: &Path) {
    limit_file_size(1 << 20);
    let mut j = Journal::open(dir, opts()).unwrap();
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    for k in 0..KEYS {
        s.set(&mut j, &k, &value(k, 1)).unwrap();
    }
    let line = match j.compact() {
        Err(Error::NoSpace { path, .. }) => {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.contains(".snap"),
                "NoSpace names {name}, not the snapshot"
            );
            // Still usable: writes, reads, a checkpoint (its manifest is small).
            for k in 0..100 {
                s.set(&mut j, &k, &value(k, 2)).unwrap();
            }
            assert_eq!(s.get(&mut j, &5).unwrap(), Some(value(5, 2)));
            assert_eq!(s.get(&mut j, &500).unwrap(), Some(value(500, 1)));
            let c = j.checkpoint().unwrap();
            assert!(c.snapshot.is_none(), "no snapshot was published");
            j.close().unwrap();
            format!("NoSpace {name}")
        }
        Err(other) => format!("Other {other}"),
        Ok(r) => format!("Compacted {}", r.bytes),
    };
    println!("{REPORT} {line}");
}

#[test]
fn a_snapshot_that_does_not_fit_fails_with_no_space_and_loses_nothing() {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = run_test_in_child(TEST, &[(DIR_ENV, dir.path().as_os_str())], REPORT);
    assert!(report.starts_with("NoSpace "), "child: {report}");
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.ends_with(".snap"),
            "{name} left behind"
        );
    }
    // Without the limit: everything is there, and compaction works.
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    for k in [0, 5, 99, 100, 500, KEYS - 1] {
        let round = if k < 100 { 2 } else { 1 };
        assert_eq!(s.get(&mut j, &k).unwrap(), Some(value(k, round)), "key {k}");
    }
    let r = j.compact().unwrap();
    assert_eq!(r.entries, u64::from(KEYS));
    drop(j);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.recovery().snapshot_entries, u64::from(KEYS));
    assert_eq!(s.get(&mut j, &5).unwrap(), Some(value(5, 2)));
}
