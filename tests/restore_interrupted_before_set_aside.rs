//! A checkpoint restore discards the log after the checkpoint, then sets aside the snapshots and
//! manifests past it. Those files prove the log durable through their LSNs (recovery takes them as
//! evidence: see `regression_zeroed_log_before_snapshot.rs`), so a crash between the two steps must
//! not look like lost records: the restore keeps its intent (`log.discard`) until the files are set
//! aside, and the next open finishes the restore. Without the intent, the same directory is a log
//! that lost records a snapshot proves durable, and is refused.

use statejournal::codec::meta::{DiscardCause, DiscardIntent, LogMeta};
use statejournal::format::{DISCARD_FILE, META_FILE};
use statejournal::{
    CompactionPolicy, CorruptionKind, Durability, DurabilityEvidence, Error, Journal,
    JournalOptions, Log, LogOptions, Lsn,
};

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Buffered)
        .segment_size(64 << 10)
        .compaction(CompactionPolicy::manual())
}

/// Values 0..10 at checkpoint 1, then 10..20, a compaction and checkpoint 2; then the log
/// discarded after checkpoint 1 as a restore does, the snapshot and checkpoint 2 not yet set aside.
/// Returns checkpoint 1's LSN and the log's id.
fn restore_interrupted(dir: &std::path::Path) -> (u64, u64) {
    let mut j = Journal::open(dir, opts()).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    for i in 0..10 {
        v.set(&mut j, &i, &i).unwrap();
    }
    let c1 = j.checkpoint().unwrap();
    for i in 10..20 {
        v.set(&mut j, &i, &i).unwrap();
    }
    j.compact().unwrap();
    let c2 = j.checkpoint().unwrap();
    assert!(c2.lsn > c1.lsn && c2.snapshot_lsn > c1.lsn);
    j.close().unwrap();
    // The log part of the restore, as a raw log does it (it removes the intent when done).
    let log = Log::open(
        dir,
        LogOptions::default()
            .segment_size(64 << 10)
            .discard_after(c1.lsn),
    )
    .unwrap();
    assert_eq!(log.last_lsn(), c1.lsn);
    drop(log);
    let meta = LogMeta::decode(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
    (c1.lsn.get(), meta.log_id)
}

/// [`restore_interrupted`] with the restore's intent (`log.discard`) still in place, as a
/// crash before the set-aside leaves it. Returns checkpoint 1's LSN.
fn restore_interrupted_with_intent(dir: &std::path::Path) -> u64 {
    let (c1, log_id) = restore_interrupted(dir);
    let intent = DiscardIntent {
        log_id,
        after: c1,
        cause: DiscardCause::Requested,
    };
    std::fs::write(dir.join(DISCARD_FILE), intent.encode()).unwrap();
    c1
}

#[test]
fn the_next_open_finishes_a_restore_whose_intent_is_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = restore_interrupted_with_intent(dir.path());

    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.log().last_lsn(), Lsn(c1));
    let v = j.value_state::<u32, u32>("v").unwrap();
    for i in 0..20 {
        let expect = (i < 10).then_some(i);
        assert_eq!(v.get(&mut j, &i).unwrap(), expect, "key {i}");
    }
    let aside = &j.recovery().set_aside;
    assert_eq!(aside.len(), 2, "the snapshot and checkpoint 2: {aside:?}");
    // The report says what was finished, and that it lost nothing durable.
    let finished = j.recovery().log.interrupted_discard;
    assert!(
        finished.is_some_and(|d| d.after == Lsn(c1) && d.cause == DiscardCause::Requested),
        "{finished:?}"
    );
    assert!(!j.recovery().log.lost_durable_data(), "{}", j.recovery());
    assert!(
        !dir.path().join(DISCARD_FILE).exists(),
        "the restore is complete"
    );
    drop(j);
    // And it stays complete.
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.log().last_lsn(), Lsn(c1));
}

/// A bare `Log::open` must not finish a journal's restore: it would remove the intent and
/// leave the snapshot and manifest past the discard point, which the next `Journal::open` then
/// takes as proof of lost records. It refuses, naming the intent, and changes nothing.
#[test]
fn a_bare_log_open_refuses_to_finish_a_journals_restore() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = restore_interrupted_with_intent(dir.path());
    let listing = |d: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(dir.path());

    let err = Log::open(dir.path(), LogOptions::default().segment_size(64 << 10))
        .expect_err("a bare log open finished a journal's restore");
    let text = err.to_string();
    assert!(
        text.contains(DISCARD_FILE) && text.contains("Journal::open"),
        "{text}"
    );
    assert_eq!(
        listing(dir.path()),
        before,
        "the refused open changed the directory"
    );

    // The journal finishes it as if the bare open had never happened.
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.log().last_lsn(), Lsn(c1));
    let v = j.value_state::<u32, u32>("v").unwrap();
    assert_eq!(v.get(&mut j, &9).unwrap(), Some(9));
    assert_eq!(v.get(&mut j, &10).unwrap(), None);
    assert!(!dir.path().join(DISCARD_FILE).exists());
}

#[test]
fn without_the_intent_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, _) = restore_interrupted(dir.path());
    let Err(err) = Journal::open(dir.path(), opts()) else {
        panic!("a log that ends before its snapshot must be refused");
    };
    let Error::Corruption(c) = &err else {
        panic!("not a corruption error: {err}")
    };
    assert!(
        matches!(
            c.kind,
            CorruptionKind::DamagedRecord {
                expected_lsn,
                evidence: DurabilityEvidence::Covered(_),
                ..
            } if expected_lsn == c1 + 1
        ),
        "{err}"
    );
}
