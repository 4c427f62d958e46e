//! Damage to durable data — a bit flip or a zeroed range inside records that a later sync marker or
//! a later segment proves were flushed — is never mistaken for a torn tail: `TolerateTornTail` and
//! `Strict` refuse with an error naming file and offset and change nothing; `PointInTime` recovers
//! the prefix before the damage, sets the rest aside and says so in the report.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use statejournal::codec::frame::decode_frame;
use statejournal::codec::header::SEGMENT_HEADER_LEN;
use statejournal::{CorruptionKind, CutReason, DurabilityEvidence, Error, Log, RecoveryMode};

/// (offset, lsn) of every data frame of a segment (sync markers skipped).
fn data_frames(buf: &[u8]) -> Vec<(usize, u64)> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut v = Vec::new();
    while let Ok(f) = decode_frame(buf, at) {
        if f.kind == statejournal::codec::frame::FrameKind::Data {
            v.push((at, f.lsn));
        }
        at = f.next;
    }
    v
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("LOCK"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Builds a log of 400 records committed in groups of 10 (several segments), then damages the
/// data record with index `victim` among the data frames of segment `seg_idx` (negative: from the end).
fn damaged_log(
    seg_idx: isize,
    victim: usize,
    zero: bool,
) -> (tempfile::TempDir, PathBuf, usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 400, 10);
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 4);
    let idx = if seg_idx < 0 {
        (segs.len() as isize + seg_idx) as usize
    } else {
        seg_idx as usize
    };
    let seg = segs[idx].clone();
    let mut img = std::fs::read(&seg).unwrap();
    let (at, lsn) = data_frames(&img)[victim];
    if zero {
        img[at..at + 24].fill(0);
    } else {
        img[at + 22] ^= 0x04;
    }
    std::fs::write(&seg, &img).unwrap();
    (dir, seg, at, lsn)
}

fn assert_refused(dir: &Path, seg: &Path, at: usize, lsn: u64, m: RecoveryMode) -> Error {
    let before = snapshot(dir);
    let err = Log::open(dir, mode(m)).unwrap_err();
    assert_eq!(err.path(), Some(seg), "{err}");
    assert_eq!(err.offset(), Some(at as u64), "{err}");
    match &err.corruption().expect("a corruption error").kind {
        CorruptionKind::DamagedRecord { expected_lsn, .. } => assert_eq!(*expected_lsn, lsn),
        other => panic!("unexpected kind {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&at.to_string()),
        "{msg}"
    );
    assert_eq!(snapshot(dir), before, "a refused open changes nothing");
    err
}

#[test]
fn bit_flip_in_the_last_segment_behind_a_sync_marker_is_corruption() {
    // Record 2 of the last segment: later commits' markers prove it durable.
    let (dir, seg, at, lsn) = damaged_log(-1, 2, false);
    let err = assert_refused(dir.path(), &seg, at, lsn, RecoveryMode::TolerateTornTail);
    match &err.corruption().unwrap().kind {
        CorruptionKind::DamagedRecord {
            evidence: DurabilityEvidence::SyncedThrough(w),
            ..
        } => {
            assert!(*w >= lsn)
        }
        other => panic!("expected marker evidence, got {other:?}"),
    }
    assert_refused(dir.path(), &seg, at, lsn, RecoveryMode::Strict);
}

#[test]
fn zeroed_record_in_an_earlier_segment_is_corruption() {
    // A zeroed frame header reads as "end of data", but the next segment proves more followed.
    let (dir, seg, at, lsn) = damaged_log(1, 3, true);
    let err = assert_refused(dir.path(), &seg, at, lsn, RecoveryMode::TolerateTornTail);
    assert!(matches!(
        err.corruption().unwrap().kind,
        CorruptionKind::DamagedRecord {
            evidence: DurabilityEvidence::LaterSegment(_),
            ..
        }
    ));
}

#[test]
fn point_in_time_recovers_the_prefix_and_sets_the_rest_aside() {
    for (seg_idx, zero) in [(-1isize, false), (1, false), (1, true)] {
        let (dir, seg, at, lsn) = damaged_log(seg_idx, 3, zero);
        let segs_before = segment_files(dir.path()).len();
        let log = Log::open(dir.path(), mode(RecoveryMode::PointInTime)).unwrap();
        let report = log.recovery_report().clone();
        assert!(report.lost_durable_data(), "{report}");
        assert_eq!(report.cuts.len(), 1);
        let cut = &report.cuts[0];
        assert_eq!(cut.path, seg);
        assert_eq!(cut.offset, at as u64);
        assert_eq!(cut.first_cut_lsn.get(), lsn);
        assert!(matches!(cut.reason, CutReason::DurableDataDamaged(_)));
        assert!(
            cut.backup.as_ref().is_some_and(|b| b.exists()),
            "cut bytes are kept"
        );
        let records = read_all(&log);
        assert_eq!(
            records,
            (1..lsn).map(|i| (i, payload(i))).collect::<Vec<_>>()
        );
        if seg_idx >= 0 {
            let later = segs_before - 1 - seg_idx as usize;
            assert_eq!(report.discarded_segments.len(), later, "{report}");
            assert!(
                report.discarded_segments.iter().all(|p| p.exists()),
                "set aside, not deleted"
            );
        }
        // The log goes on from the cut and reopens cleanly in strict mode.
        assert_eq!(log.append(b"x").unwrap().get(), lsn);
        log.close().unwrap();
        let log = Log::open(dir.path(), mode(RecoveryMode::Strict)).unwrap();
        assert_eq!(read_all(&log).len() as u64, lsn);
    }
}

#[test]
fn replaced_older_copy_of_a_segment_breaks_the_chain() {
    // Segment 2 is replaced by an image of itself taken before it was full.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sync_opts()).unwrap();
    let mut early = None;
    for i in 1..=400 {
        log.append(&payload(i)).unwrap();
        if i % 10 == 0 {
            log.commit().unwrap();
            let segs = segment_files(dir.path());
            if segs.len() == 2 {
                early = Some(std::fs::read(&segs[1]).unwrap()); // segment 2 while it was the tail
            }
        }
    }
    drop(log);
    let segs = segment_files(dir.path());
    let old = early.unwrap();
    let full = std::fs::read(&segs[1]).unwrap();
    assert_ne!(old, full, "the copy is older than the final segment");
    std::fs::write(&segs[1], &old).unwrap();
    let err = Log::open(dir.path(), opts()).unwrap_err();
    assert_eq!(err.path(), Some(segs[1].as_path()), "{err}");
    assert!(matches!(
        err.corruption().unwrap().kind,
        CorruptionKind::DamagedRecord {
            evidence: DurabilityEvidence::LaterSegment(3),
            ..
        }
    ));
}
