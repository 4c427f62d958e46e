//! Files that are not what the log expects — empty, foreign, truncated, from a newer format, from
//! another log, renamed, missing — are refused with a clear error naming the file, and nothing in
//! the directory is changed.

mod common;

use std::path::Path;

use common::*;
use statejournal::codec::header::{FORMAT_VERSION, SEGMENT_HEADER_LEN, SEGMENT_VERSION_MAX};
use statejournal::format::{segment_path, META_FILE};
use statejournal::{CorruptionKind, Error, Log};

fn multi_segment_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 400, 10);
    assert!(segment_files(dir.path()).len() >= 3);
    dir
}

fn open_err(dir: &Path) -> Error {
    let err = Log::open(dir, opts()).unwrap_err();
    assert!(err.path().is_some(), "error names a file: {err}");
    let shown = err.path().unwrap().display().to_string();
    assert!(
        err.to_string().contains(&shown),
        "message names the file: {err}"
    );
    err
}

fn kind(err: &Error) -> &CorruptionKind {
    &err.corruption()
        .unwrap_or_else(|| panic!("not a corruption error: {err}"))
        .kind
}

#[test]
fn empty_segment_file() {
    let dir = multi_segment_log();
    let last = segment_files(dir.path()).pop().unwrap();
    std::fs::write(&last, b"").unwrap();
    let err = open_err(dir.path());
    assert_eq!(err.path(), Some(last.as_path()));
    assert!(
        matches!(kind(&err), CorruptionKind::Truncated { len: 0, .. }),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&last).unwrap().len(), 0, "left as found");
}

#[test]
fn truncated_header() {
    let dir = multi_segment_log();
    let first = segment_files(dir.path())[0].clone();
    let img = std::fs::read(&first).unwrap();
    std::fs::write(&first, &img[..SEGMENT_HEADER_LEN / 2]).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(kind(&err), CorruptionKind::Truncated { .. }),
        "{err}"
    );
}

#[test]
fn foreign_file_under_a_segment_name() {
    let dir = multi_segment_log();
    let first = segment_files(dir.path())[0].clone();
    std::fs::write(&first, vec![0x42u8; 8192]).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.to_string().contains("not a statejournal segment"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn newer_segment_format_version() {
    let dir = multi_segment_log();
    let first = segment_files(dir.path())[0].clone();
    let mut img = std::fs::read(&first).unwrap();
    // Version 2 is a recycled segment's (tests/recycle.rs); the first one this build refuses:
    img[8..12].copy_from_slice(&(SEGMENT_VERSION_MAX + 1).to_le_bytes());
    std::fs::write(&first, &img).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(err, Error::UnsupportedVersion { found, supported, .. } if found == SEGMENT_VERSION_MAX + 1 && supported == SEGMENT_VERSION_MAX),
        "{err}"
    );
}

#[test]
fn newer_meta_format_version() {
    let dir = multi_segment_log();
    let meta = dir.path().join(META_FILE);
    let mut img = std::fs::read(&meta).unwrap();
    img[8..12].copy_from_slice(&(FORMAT_VERSION + 7).to_le_bytes());
    std::fs::write(&meta, &img).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}");
}

#[test]
fn corrupt_or_missing_meta_file() {
    let dir = multi_segment_log();
    let meta = dir.path().join(META_FILE);
    let mut img = std::fs::read(&meta).unwrap();
    img[20] ^= 1;
    std::fs::write(&meta, &img).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(kind(&err), CorruptionKind::BadMeta(_)), "{err}");
    std::fs::remove_file(&meta).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(kind(&err), CorruptionKind::MissingMeta), "{err}");
}

#[test]
fn missing_middle_and_last_segments() {
    let dir = multi_segment_log();
    let segs = segment_files(dir.path());
    let n = segs.len();
    assert!(n >= 3, "need three segments, have {n}");
    std::fs::remove_file(&segs[1]).unwrap();
    let err = open_err(dir.path());
    assert_eq!(err.path(), Some(segs[1].as_path()));
    assert!(
        matches!(kind(&err), CorruptionKind::MissingSegment { segment_id: 2 }),
        "{err}"
    );

    let dir = multi_segment_log();
    let segs = segment_files(dir.path());
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(kind(&err), CorruptionKind::MissingSegment { .. }),
        "deleting the newest segment is detected: {err}"
    );
}

#[test]
fn swapped_segments() {
    let dir = multi_segment_log();
    let segs = segment_files(dir.path());
    let tmp = dir.path().join("swap");
    std::fs::rename(&segs[0], &tmp).unwrap();
    std::fs::rename(&segs[1], &segs[0]).unwrap();
    std::fs::rename(&tmp, &segs[1]).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(kind(&err), CorruptionKind::SegmentIdMismatch { .. }),
        "{err}"
    );
}

#[test]
fn segment_from_another_log() {
    let a = multi_segment_log();
    let b = multi_segment_log();
    let victim = segment_path(a.path(), 2);
    std::fs::copy(segment_path(b.path(), 2), &victim).unwrap();
    let err = open_err(a.path());
    assert_eq!(err.path(), Some(victim.as_path()));
    assert!(
        matches!(kind(&err), CorruptionKind::ForeignLog { .. }),
        "{err}"
    );
}

#[test]
fn interrupted_creation_and_deletion_leftovers_are_finished() {
    // A crash after the first segment was created but before the meta file was written.
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), opts()).unwrap());
    std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
    let log = Log::open(dir.path(), opts()).unwrap();
    assert!(!log.recovery_report().created);
    assert_eq!(log.append(b"a").unwrap().get(), 1);
    drop(log);

    // A crash after the meta file moved past a deleted segment but before the unlink.
    let dir = multi_segment_log();
    let first = segment_files(dir.path())[0].clone();
    let saved = std::fs::read(&first).unwrap();
    let log = Log::open(dir.path(), opts()).unwrap();
    let deleted = log.delete_below(statejournal::Lsn(u64::MAX)).unwrap();
    assert!(deleted >= 1);
    let first_lsn = log.first_lsn();
    drop(log);
    std::fs::write(&first, &saved).unwrap();
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(log.recovery_report().removed_files, vec![first.clone()]);
    assert!(!first.exists());
    assert_eq!(log.first_lsn(), first_lsn);
    assert_eq!(read_all(&log).first().map(|r| r.0), Some(first_lsn.get()));
}
