//! A torn tail — the last, unacknowledged record only partly written — is cut at every possible
//! byte offset, exhaustively, and recovery returns exactly the acknowledged records; appends then
//! continue where the tail was cut. Garbage after the tail is handled the same way.

mod common;

use std::path::Path;

use common::*;
use statejournal::codec::frame::{decode_frame, FRAME_HEADER_LEN};
use statejournal::codec::header::SEGMENT_HEADER_LEN;
use statejournal::{CutReason, Error, Log, Lsn, RecoveryMode};

/// Offsets of every frame in a segment image, with their unpadded lengths.
fn frames(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut v = Vec::new();
    while let Ok(f) = decode_frame(buf, at) {
        v.push((at, f.payload_end - at));
        at = f.next;
    }
    v
}

/// 20 committed records, then one more appended but never committed (the torn one).
fn build(dir: &Path) -> (Vec<u8>, std::path::PathBuf, (usize, usize)) {
    write_records(dir, 20, 5);
    let log = Log::open(dir, sync_opts()).unwrap();
    log.append(&payload(21)).unwrap();
    drop(log);
    let seg = segment_files(dir).pop().unwrap();
    let image = std::fs::read(&seg).unwrap();
    let last = *frames(&image).last().unwrap();
    (image, seg, last)
}

#[test]
fn torn_last_record_is_cut_at_every_byte_offset() {
    let base = tempfile::tempdir().unwrap();
    let (image, seg, (start, len)) = build(base.path());
    assert_eq!(
        decode_frame(&image, start).unwrap().lsn,
        21,
        "the last frame is the uncommitted record"
    );
    for cut in start..start + len {
        for garbage in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(base.path(), dir.path());
            let mut img = image.clone();
            for (i, b) in img[cut..start + len + 64].iter_mut().enumerate() {
                *b = if garbage { 0xA5 ^ (i as u8) } else { 0 };
            }
            std::fs::write(dir.path().join(seg.file_name().unwrap()), &img).unwrap();

            let log = Log::open(dir.path(), opts()).unwrap();
            let report = log.recovery_report().clone();
            let records = read_all(&log);
            assert_eq!(
                records.len(),
                20,
                "cut at {cut}, garbage {garbage}: {report}"
            );
            assert_eq!(
                records,
                (1..=20).map(|i| (i, payload(i))).collect::<Vec<_>>()
            );
            let clean_end = cut == start && !garbage;
            if clean_end {
                assert!(
                    report.is_clean(),
                    "a frame never started is a clean end: {report}"
                );
            } else {
                assert_eq!(report.cuts.len(), 1, "cut at {cut}: {report}");
                let c = &report.cuts[0];
                assert_eq!(c.offset, start as u64);
                assert_eq!(c.first_cut_lsn, Lsn(21));
                assert!(matches!(c.reason, CutReason::TornTail));
                assert!(
                    c.backup.as_ref().is_some_and(|b| b.exists()),
                    "cut bytes kept aside"
                );
                assert!(!report.lost_durable_data());
            }
            // Appends continue exactly where the tail was cut, and survive another reopen.
            assert_eq!(log.append(b"after").unwrap(), Lsn(21));
            log.close().unwrap();
            let log = Log::open(dir.path(), mode(RecoveryMode::Strict)).unwrap();
            assert!(
                log.recovery_report().is_clean(),
                "zeroed tail leaves no debris"
            );
            let records = read_all(&log);
            assert_eq!(records.len(), 21);
            assert_eq!(records[20], (21, b"after".to_vec()));
        }
    }
}

#[test]
fn strict_mode_refuses_a_torn_tail_and_changes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let (image, seg, (start, _)) = build(base.path());
    let mut img = image.clone();
    img[start + FRAME_HEADER_LEN] ^= 0xFF;
    std::fs::write(&seg, &img).unwrap();
    let err = Log::open(base.path(), mode(RecoveryMode::Strict)).unwrap_err();
    assert_eq!(err.path(), Some(seg.as_path()));
    assert_eq!(err.offset(), Some(start as u64));
    assert!(
        err.to_string().contains(&format!("byte offset {start}")),
        "{err}"
    );
    assert!(matches!(err, Error::Corruption(_)));
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        img,
        "strict recovery wrote nothing"
    );
}

#[test]
fn garbage_after_a_clean_end_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10, 10);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut img = std::fs::read(&seg).unwrap();
    let end = {
        let f = frames(&img);
        let (at, len) = *f.last().unwrap();
        (at + len).next_multiple_of(8)
    };
    // A stray page of garbage far after the end (as a torn multi-page write can leave).
    for b in &mut img[end + 1000..end + 1100] {
        *b = 0x5A;
    }
    std::fs::write(&seg, &img).unwrap();
    assert!(Log::open(dir.path(), mode(RecoveryMode::Strict)).is_err());
    let log = Log::open(dir.path(), opts()).unwrap();
    let r = log.recovery_report();
    assert_eq!(r.records, 10);
    assert_eq!(r.cuts.len(), 1, "{r}");
    assert_eq!(r.cuts[0].offset, end as u64);
    assert_eq!(
        r.cuts[0].bytes,
        1100u64.next_multiple_of(8),
        "cut up to the last non-zero byte, aligned"
    );
    assert_eq!(read_all(&log).len(), 10);
}

#[test]
fn garbage_deep_in_the_preallocated_part_is_found() {
    // The never-written part of a segment is skipped by SEEK_DATA; bytes written there (a stray
    // page of a torn write) must still be seen and cut.
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let big = statejournal::LogOptions::default().segment_size(1 << 20);
    let log = Log::open(dir.path(), big.clone()).unwrap();
    for i in 1..=10 {
        log.append(&payload(i)).unwrap();
    }
    log.close().unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xEE; 100], 900_000).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let log = Log::open(dir.path(), big).unwrap();
    let r = log.recovery_report();
    assert_eq!(r.records, 10);
    assert_eq!(r.cuts.len(), 1, "{r}");
    let c = &r.cuts[0];
    assert_eq!(
        c.offset + c.bytes,
        900_104,
        "cut reaches the stray bytes: {r}"
    );
    drop(log);
    let img = std::fs::read(&seg).unwrap();
    assert!(
        img[900_000..900_100].iter().all(|&b| b == 0),
        "stray bytes zeroed"
    );
}

/// In `Buffered` mode a roll does not wait for the disk, so after a power loss a segment can be
/// torn while its successor exists. Without a sync marker proving the damaged records durable,
/// that is a torn tail spanning segments: cut, later segments set aside, the loss reported.
#[test]
fn torn_tail_spanning_segments_in_buffered_mode() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts()).unwrap(); // Buffered
    for i in 1..=300 {
        log.append(&payload(i)).unwrap();
    }
    drop(log); // no flush: a power loss could leave any of this torn
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3);
    let mut img = std::fs::read(&segs[1]).unwrap();
    let (at, _) = frames(&img)[5];
    let lsn = decode_frame(&img, at).unwrap().lsn;
    img[at + FRAME_HEADER_LEN] ^= 0x40; // as if this page never reached the disk
    std::fs::write(&segs[1], &img).unwrap();

    assert!(Log::open(dir.path(), mode(RecoveryMode::Strict)).is_err());
    let log = Log::open(dir.path(), opts()).unwrap();
    let r = log.recovery_report().clone();
    assert_eq!(r.cuts.len(), 1, "{r}");
    assert!(matches!(r.cuts[0].reason, CutReason::TornTail));
    assert_eq!(r.cuts[0].first_cut_lsn, Lsn(lsn));
    let (lo, hi) = r.cuts[0]
        .intact_records_cut
        .expect("intact records after the damage are named");
    assert_eq!((lo.get(), hi.get()), (lsn + 1, 300));
    assert_eq!(r.discarded_segments.len(), segs.len() - 2, "{r}");
    assert!(!r.lost_durable_data());
    assert_eq!(read_all(&log).len() as u64, lsn - 1);
    assert_eq!(log.append(b"on").unwrap(), Lsn(lsn));
}

/// The same damage after a sync marker proved the records durable is corruption, not a tail.
#[test]
fn damage_behind_a_marker_in_an_earlier_buffered_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts()).unwrap(); // Buffered
    for i in 1..=200 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap(); // durable through 200
    for i in 201..=300 {
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap(); // its marker records "durable through 200"
    drop(log);
    let segs = segment_files(dir.path());
    let mut img = std::fs::read(&segs[1]).unwrap();
    let (at, _) = frames(&img)[5];
    img[at + FRAME_HEADER_LEN] ^= 0x40;
    std::fs::write(&segs[1], &img).unwrap();
    let err = Log::open(dir.path(), opts()).unwrap_err();
    assert_eq!(err.path(), Some(segs[1].as_path()));
    assert!(
        matches!(
            err.corruption().unwrap().kind,
            statejournal::CorruptionKind::DamagedRecord {
                evidence: statejournal::DurabilityEvidence::SyncedThrough(200),
                ..
            }
        ),
        "{err}"
    );
}
