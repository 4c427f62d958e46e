//! Regression (issue 5, item 3): renames that no directory sync covered can reach the disk in any
//! order. Rolls in `Buffered` mode create segments without syncing the directory; a crash could
//! leave segment 4's directory entry without segment 3's. Every record in segments past
//! `last_segment` of `log.meta` is unacknowledged (a flush syncs the directory and records the
//! newest segment there before it acknowledges anything), so such a gap is a torn tail: recovery
//! must set the orphans after it aside and open. It refused with `MissingSegment`: a crash that
//! lost nothing acknowledged made the log unopenable. The crash simulator's random-subset loss of
//! undurable segment creations finds it ("segment 3 is missing from the log"; image: `…3.seg`
//! missing, the creation of a later segment reached the disk).

mod common;

use common::*;
use statejournal::codec::meta::LogMeta;
use statejournal::format::META_FILE;
use statejournal::{CorruptionKind, Log, RecoveryMode};

#[test]
fn a_gap_past_last_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 600, 10);
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 4, "need four segments, have {}", segs.len());
    // The meta file as it was before segment 3 was created durably.
    let meta_path = dir.path().join(META_FILE);
    let meta = LogMeta::decode(&std::fs::read(&meta_path).unwrap()).unwrap();
    std::fs::write(
        &meta_path,
        LogMeta {
            last_segment: 2,
            ..meta
        }
        .encode(),
    )
    .unwrap();
    // Segment 3's base LSN: everything before it is in segments 1 and 2.
    let seg3 = std::fs::read(&segs[2]).unwrap();
    let base3 = u64::from_le_bytes(seg3[32..40].try_into().unwrap());
    std::fs::remove_file(&segs[2]).unwrap();

    // Strict mode accepts no damage of any kind: still the old error, nothing changed.
    let err = Log::open(dir.path(), opts().recovery_mode(RecoveryMode::Strict)).unwrap_err();
    assert!(
        matches!(
            err.corruption().map(|c| &c.kind),
            Some(CorruptionKind::MissingSegment { segment_id: 3 })
        ),
        "{err}"
    );
    assert!(segs[3].exists());

    let log = Log::open(dir.path(), opts()).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(log.last_lsn().get(), base3 - 1);
    let recs = read_all(&log);
    assert_eq!(recs.len() as u64, base3 - 1);
    for (lsn, p) in &recs {
        assert_eq!(p, &payload(*lsn));
    }
    // Every later segment is set aside and named in the report.
    assert_eq!(report.discarded_segments.len(), segs.len() - 3, "{report}");
    for s in &segs[3..] {
        assert!(!s.exists(), "{} set aside", s.display());
    }
    // The log goes on from there, and reopens cleanly.
    assert_eq!(log.append(b"next").unwrap().get(), base3);
    log.commit().unwrap();
    drop(log);
    let log = Log::open(dir.path(), opts().recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(log.last_lsn().get(), base3);
}
