//! Regression (issue 5, item 2; found by `crash_sim.rs`'s durable-damage test): a 4 KiB page of a
//! segment read back as zeros, at the end of its records, looks exactly like a flush that never
//! reached the disk: the log ends cleanly before it. Log recovery called it a clean end, the
//! journal then set aside the newest snapshot as "newer than the log" and opened with the state
//! from before it: acknowledged records lost silently. But a snapshot (like a checkpoint
//! manifest) is written only after the log is durable through its LSN, so it proves the records
//! before it durable. Recovery now takes snapshots and manifests as evidence: `TolerateTornTail`
//! refuses with an error naming the segment and offset, `PointInTime` recovers before the damage
//! and its report states which records were lost.

use statejournal::{
    CompactionPolicy, CorruptionKind, CutReason, Durability, DurabilityEvidence, Error, Journal,
    JournalOptions, RecoveryMode,
};

const SEG: &str = "00000000000000000001.seg";

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Buffered)
        .segment_size(64 << 10)
        .compaction(CompactionPolicy::manual())
}

/// A journal with records 1..=21 (Init, a registration, values), compacted through the last,
/// and a page of its log zeroed from the first record on. Returns the snapshot's LSN.
fn damaged_journal(dir: &std::path::Path) -> u64 {
    let mut j = Journal::open(dir, opts()).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    for i in 0..20 {
        v.set(&mut j, &i, &(i * 10)).unwrap();
    }
    j.sync().unwrap();
    j.compact().unwrap();
    let snap_lsn = j.log().last_lsn().get();
    j.close().unwrap();
    let seg = dir.join(SEG);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64..4096].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    snap_lsn
}

#[test]
fn a_log_zeroed_before_its_snapshot_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let snap_lsn = damaged_journal(dir.path());
    let Err(err) = Journal::open(dir.path(), opts()) else {
        panic!("must refuse");
    };
    let Error::Corruption(c) = &err else {
        panic!("not a corruption error: {err}")
    };
    assert_eq!(c.path, dir.path().join(SEG), "{err}");
    assert_eq!(c.offset, 64, "{err}");
    assert!(
        matches!(
            c.kind,
            CorruptionKind::DamagedRecord {
                evidence: DurabilityEvidence::Covered(n),
                ..
            } if n == snap_lsn
        ),
        "{err}"
    );
    // Nothing changed: the snapshot is still there.
    assert!(dir.path().join(format!("{snap_lsn:020}.snap")).exists());
}

#[test]
fn point_in_time_recovery_states_what_the_zeroed_page_lost() {
    let dir = tempfile::tempdir().unwrap();
    let snap_lsn = damaged_journal(dir.path());
    let j = Journal::open(dir.path(), opts().recovery_mode(RecoveryMode::PointInTime)).unwrap();
    let rec = j.recovery();
    assert_eq!(rec.log.last_lsn.get(), 0);
    let cut = rec.log.cuts.first().expect("a cut is reported");
    assert!(
        matches!(cut.reason, CutReason::DurableDataDamaged(_)),
        "{rec}"
    );
    assert_eq!(cut.first_cut_lsn.get(), 1, "{rec}");
    assert_eq!(cut.lost_through.map(|l| l.get()), Some(snap_lsn), "{rec}");
    assert!(rec.log.lost_durable_data(), "{rec}");
    assert_eq!(rec.set_aside.len(), 1, "the snapshot past the cut: {rec}");
}
