//! Logs written by earlier format versions stay readable. `tests/fixtures/log-v1/` was written by
//! format version 1 and is committed; this test opens a copy in strict mode and checks every record.
//! Every later format change must keep it readable (or refuse it with a clear "unsupported version"
//! error, by a documented decision). Regenerate only when adding a new fixture version:
//! `SJ_WRITE_FIXTURE=1 cargo test --all-features --test fixtures_compat` (writes log-v1 afresh).

mod common;

use std::path::{Path, PathBuf};

use common::payload;
use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

const RECORDS: u64 = 60;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v1")
}

fn write_fixture(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        dir,
        LogOptions::default()
            .segment_size(4096)
            .durability(Durability::Sync),
    )
    .unwrap();
    for i in 1..=RECORDS {
        log.append(&payload(i)).unwrap();
        if i % 7 == 0 {
            log.commit().unwrap();
        }
    }
    log.close().unwrap();
    std::fs::remove_file(dir.join(statejournal::format::LOCK_FILE)).unwrap();
}

#[test]
fn format_v1_fixture_still_opens() {
    if std::env::var_os("SJ_WRITE_FIXTURE").is_some() {
        write_fixture(&fixture_dir());
    }
    let copy = tempfile::tempdir().unwrap();
    let mut files = 0;
    for e in std::fs::read_dir(fixture_dir()).expect("fixture directory is committed") {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        files += 1;
    }
    assert!(files >= 3, "fixture has a meta file and several segments");
    let log = Log::open(
        copy.path(),
        LogOptions::default().recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    let report = log.recovery_report();
    assert!(report.is_clean() && !report.created, "{report}");
    assert!(report.segments >= 2, "the fixture spans segments: {report}");
    let got: Vec<(u64, Vec<u8>)> = log
        .read_from(Lsn(1))
        .map(|r| r.map(|r| (r.lsn.get(), r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        (1..=RECORDS).map(|i| (i, payload(i))).collect::<Vec<_>>()
    );
    assert_eq!(log.append(b"next").unwrap(), Lsn(RECORDS + 1));
}

/// A whole journal written by format version 1: log, snapshot and checkpoint manifests, with
/// every state kind. Regenerate (only when adding a new fixture version) with
/// `SJ_WRITE_FIXTURE=1 cargo test --all-features --test fixtures_compat journal_v1` (the filter
/// keeps the log fixture as it is).
mod journal_v1 {
    use std::path::{Path, PathBuf};

    use statejournal::{
        CompactionPolicy, Journal, JournalOptions, ListState, ManualClock, MapState, StateTtl,
        ValueState,
    };

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1")
    }

    fn opts() -> JournalOptions {
        JournalOptions::default()
            .segment_size(4096)
            .clock(std::sync::Arc::new(ManualClock::new(1_000_000)))
            .compaction(CompactionPolicy::manual().snapshot_block_size(256))
    }

    type Handles = (
        ValueState<String, u64>,
        ListState<u32, String>,
        MapState<u32, u8, i64>,
        ValueState<u32, u32>,
    );

    fn handles(j: &mut Journal) -> Handles {
        (
            j.value_state("counts").unwrap(),
            j.list_state("events").unwrap(),
            j.map_state("windows").unwrap(),
            j.with_ttl(StateTtl::after_write(std::time::Duration::from_secs(3600)))
                .value_state("sessions")
                .unwrap(),
        )
    }

    fn write(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        let mut j = Journal::open(dir, opts()).unwrap();
        let (counts, events, windows, sessions) = handles(&mut j);
        for i in 0..40u32 {
            counts
                .set(&mut j, &format!("user-{}", i % 10), &u64::from(i))
                .unwrap();
            events.add(&mut j, &(i % 5), &format!("e{i}")).unwrap();
            windows
                .put(&mut j, &(i % 3), &(i as u8 % 4), &-i64::from(i))
                .unwrap();
            sessions.set(&mut j, &i, &(i * 2)).unwrap();
        }
        j.compact().unwrap();
        j.checkpoint().unwrap(); // checkpoint 1: the state after the 40 rounds
        counts.set(&mut j, &"user-0".to_string(), &999).unwrap();
        events.add(&mut j, &0, &"late".to_string()).unwrap();
        j.close().unwrap();
        std::fs::remove_file(dir.join(statejournal::format::LOCK_FILE)).unwrap();
    }

    fn copy() -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        super::common::copy_dir(&fixture_dir(), copy.path());
        copy
    }

    #[test]
    fn format_v1_journal_fixture_still_opens_and_restores() {
        if std::env::var_os("SJ_WRITE_FIXTURE").is_some() {
            write(&fixture_dir());
        }
        let names: Vec<String> = std::fs::read_dir(fixture_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.ends_with(".snap")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".ckpt")), "{names:?}");

        let dir = copy();
        let mut j = Journal::open(dir.path(), opts()).unwrap();
        assert!(j.recovery().snapshot.is_some(), "{}", j.recovery());
        let (counts, events, windows, sessions) = handles(&mut j);
        assert_eq!(
            counts.get(&mut j, &"user-0".to_string()).unwrap(),
            Some(999)
        );
        assert_eq!(counts.get(&mut j, &"user-3".to_string()).unwrap(), Some(33));
        let e0 = events.get(&mut j, &0).unwrap();
        assert_eq!(e0.len(), 9);
        assert_eq!(e0.last().map(String::as_str), Some("late"));
        let mut w1 = windows.entries(&mut j, &1).unwrap();
        w1.sort_unstable();
        assert_eq!(w1, [(0, -28), (1, -37), (2, -34), (3, -31)]);
        assert_eq!(sessions.get(&mut j, &7).unwrap(), Some(14));
        drop(j);

        let dir = copy();
        let mut j = Journal::open_at_checkpoint(dir.path(), 1, opts()).unwrap();
        let (counts, events, _, _) = handles(&mut j);
        assert_eq!(counts.get(&mut j, &"user-0".to_string()).unwrap(), Some(30));
        assert_eq!(events.get(&mut j, &0).unwrap().len(), 8);
    }
}

/// A log written with segment recycling: segment header version 2. Its tail segment is a
/// recycled file that holds the older segment's bytes from the page after its last record on, as
/// on a disk where none of the zeros the file was reused with were written back (a flush makes
/// the zero length after its last record durable, so the page holding it is always new).
/// Regenerate (only when adding a new fixture version) with
/// `SJ_WRITE_FIXTURE=1 cargo test --all-features --test fixtures_compat log_v2`.
mod log_v2 {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use common::payload;
    use statejournal::codec::header::RECYCLED_SEGMENT_VERSION;
    use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

    use super::common;

    const RECORDS: u64 = 500;
    const DELETED_THROUGH: u64 = 400;
    const PAGE: usize = 4096;

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v2-recycled")
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    fn version(path: &Path) -> u32 {
        let b = std::fs::read(path).unwrap();
        u32::from_le_bytes(b[8..12].try_into().unwrap())
    }

    /// Where the records of a freshly written segment image end (the first zero length).
    fn records_end(img: &[u8]) -> usize {
        let mut end = 64;
        while img[end + 4..end + 8] != [0; 4] {
            end += (u32::from_le_bytes(img[end + 4..end + 8].try_into().unwrap()) as usize)
                .next_multiple_of(8);
        }
        end
    }

    fn write_fixture(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        let opts = LogOptions::default()
            .segment_size(16384)
            .durability(Durability::Sync)
            .recycle_segments(1);
        let log = Log::open(dir, opts).unwrap();
        for i in 1..=DELETED_THROUGH {
            log.append(&payload(i)).unwrap();
            if i % 7 == 0 {
                log.commit().unwrap();
            }
        }
        log.commit().unwrap();
        let before: HashMap<u64, Vec<u8>> = segments(dir)
            .into_iter()
            .map(|p| {
                (
                    std::fs::metadata(&p).unwrap().ino(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        assert_eq!(log.delete_below(Lsn(DELETED_THROUGH)).unwrap(), 1);
        for i in DELETED_THROUGH + 1..=RECORDS {
            log.append(&payload(i)).unwrap();
            if i % 7 == 0 {
                log.commit().unwrap();
            }
        }
        let tail = segments(dir).pop().unwrap();
        assert_eq!(
            version(&tail),
            RECYCLED_SEGMENT_VERSION,
            "the tail is not recycled"
        );
        let old = before[&std::fs::metadata(&tail).unwrap().ino()].clone();
        log.close().unwrap();
        std::fs::remove_file(dir.join(statejournal::format::LOCK_FILE)).unwrap();
        let mut img = std::fs::read(&tail).unwrap();
        let from = (records_end(&img) + 8).next_multiple_of(PAGE);
        assert!(from < img.len(), "the tail's records fill it");
        img[from..].copy_from_slice(&old[from..]);
        std::fs::write(&tail, img).unwrap();
    }

    #[test]
    fn format_v2_recycled_fixture_still_opens() {
        if std::env::var_os("SJ_WRITE_FIXTURE").is_some() {
            write_fixture(&fixture_dir());
        }
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(fixture_dir()).expect("fixture directory is committed") {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        let tail = segments(copy.path()).pop().unwrap();
        assert_eq!(version(&tail), RECYCLED_SEGMENT_VERSION);
        let img = std::fs::read(&tail).unwrap();
        let from = (records_end(&img) + 8).next_multiple_of(PAGE);
        assert_ne!(
            img[from..].iter().filter(|&&b| b != 0).count(),
            0,
            "no older bytes after the tail's records"
        );
        let log = Log::open(
            copy.path(),
            LogOptions::default().recovery_mode(RecoveryMode::Strict),
        )
        .unwrap();
        let report = log.recovery_report();
        assert!(report.is_clean() && !report.created, "{report}");
        let first = log.first_lsn().get();
        assert!(
            first > 1 && first <= DELETED_THROUGH + 1,
            "first LSN {first}"
        );
        let got: Vec<(u64, Vec<u8>)> = log
            .read_from(Lsn(first))
            .map(|r| r.map(|r| (r.lsn.get(), r.payload.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            (first..=RECORDS)
                .map(|i| (i, payload(i)))
                .collect::<Vec<_>>()
        );
        assert_eq!(log.append(b"next").unwrap(), Lsn(RECORDS + 1));
        // A version-1 reader refuses the directory by name (the version rule), rather than
        // taking the older bytes for damage: this build reads every version up to 2.
        assert_eq!(statejournal::codec::header::SEGMENT_VERSION_MAX, 2);
    }
}
