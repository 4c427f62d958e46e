//! A roll in `Buffered` or `Periodic` mode does not wait for the disk (an fsync there queued
//! behind the file system's other writeback, a running compaction's snapshot say, and stalled
//! appends for up to a second). The new segment's header and directory entry are made durable
//! later, by the background thread or the next flush, which records the segment in `log.meta`
//! before it acknowledges anything in it. So a crash can leave a segment past `log.meta`'s last
//! segment whose header never reached the disk (zeros, a short file), with none of its records
//! acknowledged: recovery sets it aside instead of refusing the log. A bad header on a segment
//! the meta file names is still damage, in every mode.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use statejournal::codec::meta::LogMeta;
use statejournal::format::META_FILE;
use statejournal::inspect::{inspect, InspectOptions, Outcome, ProblemKind};
use statejournal::testing::FaultInjector;
use statejournal::{CorruptionKind, Log, Lsn, RecoveryMode};

fn meta(dir: &Path) -> LogMeta {
    LogMeta::decode(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap()
}

/// A process-crash image of a `Buffered` log right after a roll whose creation was not settled
/// yet (the background thread's directory syncs are held back): records 1..=n, the last segment
/// newer than `log.meta`'s last segment. Returns the image, its segment files and the LSN of the
/// last record before the newest segment.
fn image_after_roll() -> (tempfile::TempDir, Vec<std::path::PathBuf>, u64) {
    let live = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    faults.defer_directory_syncs(true);
    let log = Log::open(live.path(), opts().fault_injector(faults)).unwrap();
    // One settled roll, then records until the next roll.
    let mut i = 0;
    while segment_files(live.path()).len() < 2 {
        i += 1;
        log.append(&payload(i)).unwrap();
    }
    log.sync().unwrap();
    let settled = meta(live.path()).last_segment;
    assert_eq!(settled as usize, segment_files(live.path()).len());
    while segment_files(live.path()).len() < 3 {
        i += 1;
        log.append(&payload(i)).unwrap();
    }
    for _ in 0..3 {
        i += 1;
        log.append(&payload(i)).unwrap();
    }
    // The roll neither synced the directory nor updated the meta file.
    assert_eq!(meta(live.path()).last_segment, settled);
    let image = tempfile::tempdir().unwrap();
    copy_dir(live.path(), image.path());
    let segs = segment_files(image.path());
    assert_eq!(segs.len(), 3);
    let newest = std::fs::read(&segs[2]).unwrap();
    let base = u64::from_le_bytes(newest[32..40].try_into().unwrap());
    assert!(
        base > 1 && base <= i,
        "base LSN {base} of the newest segment"
    );

    // A flush settles the creation: the meta file names the segment before `sync` returns.
    assert!(log.sync().unwrap() >= Lsn(i));
    assert_eq!(meta(live.path()).last_segment, settled + 1);
    (image, segs, base - 1)
}

fn check_set_aside(dir: &Path, segs: &[std::path::PathBuf], last: u64, what: &str) {
    // Inspect predicts it: set aside, except in Strict mode.
    let i = inspect(dir, InspectOptions::default()).unwrap();
    let p = i
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::UnfinishedRoll)
        .unwrap_or_else(|| panic!("{what}: inspect saw no unfinished roll: {:?}", i.problems));
    assert_eq!(p.path, segs[2], "{what}");
    assert_eq!(p.outcome(RecoveryMode::Strict), &Outcome::Refuses, "{what}");
    assert_eq!(
        p.outcome(RecoveryMode::TolerateTornTail),
        &Outcome::SetsAside
    );
    assert_eq!(p.outcome(RecoveryMode::PointInTime), &Outcome::SetsAside);
    assert!(i
        .segments
        .iter()
        .any(|s| s.unfinished_roll && s.path == segs[2]));

    // Strict mode accepts no damage of any kind: refused, naming the file, nothing changed.
    let err = Log::open(dir, mode(RecoveryMode::Strict)).unwrap_err();
    assert_eq!(err.path(), Some(segs[2].as_path()), "{what}: {err}");
    // At the header (an unsupported-version error names no offset: it is the header's).
    assert_eq!(err.offset().unwrap_or(0), 0, "{what}: {err}");
    assert!(segs[2].exists());

    let log = Log::open(dir, opts()).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(report.discarded_segments.len(), 1, "{what}: {report}");
    assert!(!segs[2].exists(), "{what}: set aside");
    assert_eq!(log.last_lsn().get(), last, "{what}: {report}");
    let recs = read_all(&log);
    assert_eq!(recs.len() as u64, last);
    for (lsn, p) in &recs {
        assert_eq!(p, &payload(*lsn), "{what}");
    }
    // Appends continue right after, in a segment created anew, and the log reopens cleanly.
    assert_eq!(log.append(b"next").unwrap().get(), last + 1);
    log.commit().unwrap();
    drop(log);
    let log = Log::open(dir, mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(log.last_lsn().get(), last + 1, "{what}");
    assert!(log.recovery_report().is_clean());
}

#[test]
fn a_segment_whose_header_never_reached_the_disk_is_set_aside() {
    // The header page lost, the records after it written back.
    let (image, segs, last) = image_after_roll();
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    bytes[..64].fill(0);
    std::fs::write(&segs[2], &bytes).unwrap();
    check_set_aside(image.path(), &segs, last, "zeroed header");

    // Nothing of the file reached the disk but its name.
    let (image, segs, last) = image_after_roll();
    std::fs::write(&segs[2], b"").unwrap();
    check_set_aside(image.path(), &segs, last, "empty file");

    // Half a header: sectors of the header page in a torn write.
    let (image, segs, last) = image_after_roll();
    let bytes = std::fs::read(&segs[2]).unwrap();
    std::fs::write(&segs[2], &bytes[..20]).unwrap();
    check_set_aside(image.path(), &segs, last, "short file");

    // A torn header that kept the magic and shows a garbage version (the crash simulator's
    // garbage images made one): not a newer format, its CRC does not match.
    let (image, segs, last) = image_after_roll();
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    bytes[8..12].copy_from_slice(&0x6636_1188u32.to_le_bytes());
    std::fs::write(&segs[2], &bytes).unwrap();
    check_set_aside(image.path(), &segs, last, "garbage version");
}

#[test]
fn a_whole_header_of_a_newer_version_is_refused_even_past_the_meta_file() {
    let (image, segs, _) = image_after_roll();
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    // Version 3: version 2 is a recycled segment's, which this build reads.
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segs[2], &bytes).unwrap();
    let err = Log::open(image.path(), opts()).unwrap_err();
    assert!(
        matches!(
            err,
            statejournal::Error::UnsupportedVersion { found: 3, .. }
        ),
        "{err}"
    );
    assert_eq!(err.path(), Some(segs[2].as_path()), "{err}");
    assert!(segs[2].exists());
}

#[test]
fn a_bad_header_on_a_segment_the_meta_file_names_is_damage() {
    let (image, segs, _) = image_after_roll();
    let dir = image.path();
    let mut m = meta(dir);
    m.last_segment += 1;
    std::fs::write(dir.join(META_FILE), m.encode()).unwrap();
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    bytes[..64].fill(0);
    std::fs::write(&segs[2], &bytes).unwrap();
    for mode_ in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::PointInTime,
    ] {
        let err = Log::open(dir, mode(mode_)).unwrap_err();
        assert_eq!(err.path(), Some(segs[2].as_path()), "{mode_:?}: {err}");
        assert!(
            matches!(
                err.corruption().map(|c| &c.kind),
                Some(CorruptionKind::BadSegmentHeader(_))
            ),
            "{mode_:?}: {err}"
        );
        assert!(segs[2].exists());
    }
    let i = inspect(dir, InspectOptions::default()).unwrap();
    assert!(
        !i.problems
            .iter()
            .any(|p| p.kind == ProblemKind::UnfinishedRoll),
        "{:?}",
        i.problems
    );
    assert!(
        i.problems
            .iter()
            .any(|p| p.kind == ProblemKind::Structure && p.path == segs[2]),
        "{:?}",
        i.problems
    );
}
