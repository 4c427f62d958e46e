//! Segment recycling (`LogOptions::recycle_segments`): files `delete_below` removes from the log
//! are reused as later segments, recovery tells the older segment's bytes left in them from
//! damage, and a file anything else still uses is never reused.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use statejournal::codec::header::RECYCLED_SEGMENT_VERSION;
use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

/// Every record the same size, so frames start at the same offsets in every segment: the older
/// segment's frames then lie exactly where the newer one's end.
fn fixed(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(100, (i % 251) as u8);
    v
}

fn recycling(files: usize) -> LogOptions {
    opts().recycle_segments(files)
}

/// The header version of a segment file.
fn version(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

fn recycled_segments(dir: &Path) -> Vec<PathBuf> {
    segment_files(dir)
        .into_iter()
        .filter(|p| version(p) == RECYCLED_SEGMENT_VERSION)
        .collect()
}

fn pooled_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".free.tmp")
        })
        .count()
}

fn inodes(dir: &Path) -> HashMap<u64, PathBuf> {
    segment_files(dir)
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().ino(), p))
        .collect()
}

fn append_fixed(log: &Log, from: u64, to: u64) {
    for i in from..=to {
        assert_eq!(log.append(&fixed(i)).unwrap(), Lsn(i));
    }
}

/// Every record from `first` through `last` reads back, in order, and nothing else.
fn assert_records(log: &Log, first: u64, last: u64) {
    let got: Vec<(u64, Vec<u8>)> = log
        .read_from(Lsn(first))
        .map(|r| {
            let r = r.unwrap();
            (r.lsn.get(), r.payload.to_vec())
        })
        .collect();
    let want: Vec<(u64, Vec<u8>)> = (first..=last).map(|i| (i, fixed(i))).collect();
    assert_eq!(got.len(), want.len(), "record count");
    assert!(got == want, "records differ");
    assert_eq!(log.last_lsn(), Lsn(last));
}

#[test]
fn deleted_segments_are_reused_and_recover() {
    for durability in [Durability::Buffered, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), recycling(2).durability(durability)).unwrap();
        append_fixed(&log, 1, 300);
        log.commit().unwrap();
        let before = inodes(dir.path());
        assert!(before.len() >= 4, "{} segments", before.len());
        let deleted = log.delete_below(Lsn(300)).unwrap();
        assert!(deleted >= 3, "deleted {deleted}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // Up to two kept, and possibly a third: the background thread may take one of them as
        // the next segment (still under its temporary name) while `delete_below` keeps
        // another. Fewer when a segment was held for a moment by another thread (the
        // background thread's list of segments to settle): it is deleted instead.
        let kept = pooled_files(dir.path());
        assert!(
            (1..=3).contains(&kept),
            "{kept} files kept for reuse: {names:?}"
        );
        // A kept file's header is zeros (synced before the rename): a crash can never leave
        // its older header under a newer segment's name. (A file the background thread took
        // already is zeroed whole.)
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".free.tmp") {
                let head = std::fs::read(&p).unwrap();
                assert_eq!(head[..64], [0u8; 64], "{}", p.display());
            }
        }

        append_fixed(&log, 301, 600);
        log.commit().unwrap();
        let recycled = recycled_segments(dir.path());
        assert!(!recycled.is_empty(), "no segment was reused");
        for p in &recycled {
            let ino = std::fs::metadata(p).unwrap().ino();
            assert!(
                before.contains_key(&ino),
                "{} says it is recycled but is a new file",
                p.display()
            );
        }
        let first = log.first_lsn().get();
        assert!(first <= 300, "first LSN {first}");
        assert_records(&log, first, 600);
        log.close().unwrap();
        assert_eq!(pooled_files(dir.path()), 0, "close deletes the kept files");

        // A clean close leaves nothing even strict recovery objects to, recycled or not.
        let log = Log::open(dir.path(), recycling(2).recovery_mode(RecoveryMode::Strict)).unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{}",
            log.recovery_report()
        );
        assert_records(&log, first, 600);
        // Appends continue (in a new segment if the tail is a recycled one) and recover.
        append_fixed(&log, 601, 700);
        log.close().unwrap();
        let log = Log::open(dir.path(), recycling(2)).unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{}",
            log.recovery_report()
        );
        assert_records(&log, first, 700);
    }
}

/// A copy of a log whose tail is a recycled segment (as a crash leaves it for another process):
/// fills segments with fixed-size records, deletes all but the current one keeping one file,
/// appends until a recycled segment holds a few records, syncs, closes and copies the
/// directory. Returns the copy, the recycled segment's path in it, its content before reuse,
/// and the last LSN.
fn image_with_recycled_tail() -> (tempfile::TempDir, PathBuf, Vec<u8>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), recycling(1)).unwrap();
    append_fixed(&log, 1, 200);
    let contents: HashMap<u64, Vec<u8>> = inodes(dir.path())
        .into_iter()
        .map(|(ino, p)| (ino, std::fs::read(p).unwrap()))
        .collect();
    log.delete_below(Lsn(200)).unwrap();
    assert_eq!(pooled_files(dir.path()), 1);
    let mut last = 200;
    loop {
        last += 1;
        append_fixed(&log, last, last);
        if let Some(p) = recycled_segments(dir.path()).first() {
            // A few records into it.
            let head = std::fs::read(p).unwrap();
            let base = u64::from_le_bytes(head[32..40].try_into().unwrap());
            if last >= base + 5 {
                log.sync().unwrap();
                let ino = std::fs::metadata(p).unwrap().ino();
                let old = contents[&ino].clone();
                // Closed first: the background thread renames and removes temporary files
                // while it runs.
                drop(log);
                let image = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), image.path());
                let path = image.path().join(p.file_name().unwrap());
                return (image, path, old, last);
            }
        }
        assert!(last < 2000, "no recycled segment became the tail");
    }
}

/// Opens `dir` in `Strict` mode, which must find nothing to cut, and checks its records run
/// from its first LSN through `last`.
fn open_strict_clean(dir: &Path, last: u64) -> Log {
    let log = Log::open(dir, recycling(1).recovery_mode(RecoveryMode::Strict)).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert_records(&log, log.first_lsn().get(), last);
    log
}

/// Where the records of a segment image end: the first zero length, or frame of an older
/// segment (an LSN below the segment's base less one).
fn records_end(img: &[u8]) -> usize {
    let field = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
    let base = field(32);
    let mut end = 64;
    while end + 16 <= img.len() && img[end + 4..end + 8] != [0; 4] && field(end + 8) + 1 >= base {
        end += (u32::from_le_bytes(img[end + 4..end + 8].try_into().unwrap()) as usize)
            .next_multiple_of(8);
    }
    end
}

#[test]
fn older_frames_after_the_records_end_the_log_cleanly() {
    let (image, path, old, last) = image_with_recycled_tail();
    let mut img = std::fs::read(&path).unwrap();
    let end = records_end(&img);
    assert!(end > 64 && end < img.len() - 256, "end {end}");
    // None of the zeros the file was reused with reached the disk: the older segment's frames
    // follow the records, starting exactly at their end (same record sizes).
    img[end..].copy_from_slice(&old[end..]);
    assert_ne!(&img[end..end + 8], &[0u8; 8], "an older frame starts there");
    std::fs::write(&path, &img).unwrap();

    // Even strict recovery sees a clean end, not damage.
    let log = open_strict_clean(image.path(), last);
    // Appending goes on in a new segment; the older bytes stay where they are and keep ending
    // the recycled one.
    append_fixed(&log, last + 1, last + 50);
    log.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[end..], old[end..]);
    open_strict_clean(image.path(), last + 50);
}

#[test]
fn older_bytes_in_the_middle_of_a_frame_are_a_torn_tail_and_lose_nothing() {
    let (image, path, old, last) = image_with_recycled_tail();
    let mut img = std::fs::read(&path).unwrap();
    let end = records_end(&img);
    // The older segment's bytes from the middle of one of its frames: no frame starts there.
    let n = img.len() - end - 64;
    img[end..end + n].copy_from_slice(&old[end + 64..end + 64 + n]);
    std::fs::write(&path, &img).unwrap();

    // Strict refuses (a torn tail is damage to it) and changes nothing.
    let strict = Log::open(
        image.path(),
        recycling(1).recovery_mode(RecoveryMode::Strict),
    );
    assert!(
        strict.is_err(),
        "strict recovery accepted older bytes mid-frame"
    );
    assert_eq!(std::fs::read(&path).unwrap(), img);
    // The default cuts it as a torn tail: every record is still there.
    let log = Log::open(image.path(), recycling(1)).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.cuts.len(), 1, "{report}");
    assert_eq!(report.cuts[0].offset, end as u64, "{report}");
    // The cut zeroes the frame header there (no frame of the segment's own follows), so the
    // end is clean from now on; the older bytes after it stay.
    assert_eq!(report.cuts[0].bytes, 8, "{report}");
    assert!(!report.lost_durable_data(), "{report}");
    assert_records(&log, log.first_lsn().get(), last);
    log.close().unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after[end..end + 8], [0u8; 8]);
    // Past the page holding the end, each page holds the older bytes still, or zeros: closing
    // a log whose last segment is recycled drops the unused rest of it from the page cache
    // (unwritten extents) instead of writing zeros there.
    let from = (end + 8).next_multiple_of(4096);
    assert_eq!(after[end + 8..from], img[end + 8..from]);
    for (page, was) in after[from..].chunks(4096).zip(img[from..].chunks(4096)) {
        assert!(page == was || page.iter().all(|&b| b == 0));
    }
    open_strict_clean(image.path(), last);
}

#[test]
fn a_hard_linked_segment_is_deleted_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), recycling(2)).unwrap();
    append_fixed(&log, 1, 200);
    let mut linked = Vec::new();
    let mut segments = segment_files(dir.path());
    segments.pop(); // the current one, which appends keep changing
    assert!(segments.len() >= 2);
    for p in segments {
        let link = links.path().join(p.file_name().unwrap());
        std::fs::hard_link(&p, &link).unwrap();
        linked.push((link, std::fs::read(&p).unwrap()));
    }
    log.delete_below(Lsn(200)).unwrap();
    assert_eq!(
        pooled_files(dir.path()),
        0,
        "a linked file was kept for reuse"
    );
    append_fixed(&log, 201, 600);
    log.sync().unwrap();
    assert!(recycled_segments(dir.path()).is_empty());
    for (link, bytes) in linked {
        assert!(
            std::fs::read(&link).unwrap() == bytes,
            "{} changed",
            link.display()
        );
    }
}

#[test]
fn a_segment_a_reader_holds_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), recycling(2)).unwrap();
    append_fixed(&log, 1, 300);
    // Two payloads from the first segment, kept as zero-copy views.
    let held: Vec<(u64, bytes::Bytes)> = log
        .read_from(Lsn(1))
        .map(|r| r.unwrap())
        .filter(|r| r.lsn.get() == 1 || r.lsn.get() == 30)
        .map(|r| (r.lsn.get(), r.payload))
        .collect();
    assert_eq!(held.len(), 2);
    let first = segment_files(dir.path())[0].clone();
    let first_ino = std::fs::metadata(&first).unwrap().ino();
    assert!(log.delete_below(Lsn(300)).unwrap() >= 3);
    assert!(!first.exists());
    append_fixed(&log, 301, 1000);
    log.sync().unwrap();
    let recycled = recycled_segments(dir.path());
    assert!(
        !recycled.is_empty(),
        "the segments nobody held were not reused"
    );
    for p in recycled {
        assert_ne!(
            std::fs::metadata(&p).unwrap().ino(),
            first_ino,
            "the held file was reused"
        );
    }
    for (lsn, payload) in held {
        assert_eq!(
            payload.as_ref(),
            fixed(lsn).as_slice(),
            "record {lsn} changed"
        );
    }
}

#[test]
fn recycling_off_deletes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), recycling(0)).unwrap();
    append_fixed(&log, 1, 200);
    log.delete_below(Lsn(200)).unwrap();
    assert_eq!(pooled_files(dir.path()), 0);
    append_fixed(&log, 201, 600);
    assert!(recycled_segments(dir.path()).is_empty());
    assert_records(&log, log.first_lsn().get(), 600);
}

#[test]
fn segments_found_at_open_are_deleted_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), recycling(2)).unwrap();
    append_fixed(&log, 1, 300);
    log.close().unwrap();
    // Recovery's reads leave its segments in large page-cache folios: not reused.
    let log = Log::open(dir.path(), recycling(2)).unwrap();
    append_fixed(&log, 301, 310);
    assert!(log.delete_below(Lsn(300)).unwrap() >= 3);
    assert_eq!(pooled_files(dir.path()), 0);
    // Segments this open created are.
    append_fixed(&log, 311, 700);
    assert!(log.delete_below(Lsn(700)).unwrap() >= 3);
    // (Up to two kept, plus possibly the next segment the background thread prepared from
    // them; see `deleted_segments_are_reused_and_recover`.)
    let kept = pooled_files(dir.path());
    assert!((1..=3).contains(&kept), "{kept} files kept");
    assert_records(&log, log.first_lsn().get(), 700);
}
