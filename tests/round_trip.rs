//! Records come back exactly as appended: across segment rolls, reopens and continued appends.

mod common;

use common::*;
use statejournal::{Log, Lsn};

#[test]
fn round_trip_across_many_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut next = 1u64;
    for round in 0..4 {
        let log = Log::open(dir.path(), opts()).unwrap();
        let report = log.recovery_report();
        assert!(report.is_clean(), "round {round}: {report}");
        assert_eq!(report.records, next - 1);
        for _ in 0..500 {
            let lsn = log.append(&payload(next)).unwrap();
            assert_eq!(lsn, Lsn(next));
            expected.push((next, payload(next)));
            next += 1;
        }
        assert_eq!(read_all(&log), expected);
        log.close().unwrap();
    }
    assert!(segment_files(dir.path()).len() > 15, "expected many rolls");
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&log), expected);
    // Reading from the middle starts exactly there.
    let from: Vec<u64> = log
        .read_from(Lsn(1234))
        .map(|r| r.unwrap().lsn.get())
        .take(3)
        .collect();
    assert_eq!(from, [1234, 1235, 1236]);
    drop(log);
    // A file the background thread prepared for a segment that a roll created meanwhile used to
    // be dropped without being deleted (found by `tests/compaction_policy.rs`).
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "{name} left behind by a closed log"
        );
    }
}
