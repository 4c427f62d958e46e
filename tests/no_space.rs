//! `Error::NoSpace` when a segment cannot be allocated, for real and injected:
//!
//! * A child process (this test binary re-executed) lowers `RLIMIT_FSIZE` to 1 MiB and ignores
//!   `SIGXFSZ`, so `fallocate` of a larger segment fails with EFBIG: opening a new log with 4 MiB
//!   segments fails with `NoSpace` naming the segment file and leaves nothing behind; a roll to a
//!   4 MiB segment fails with `NoSpace` too, and then the log is not poisoned, no LSN was consumed,
//!   every acknowledged record is readable, and after reopening without the limit (in the parent)
//!   every record is there and appends continue.
//! * `FaultInjector::fail_allocation_after` makes one roll fail with `NoSpace` (ENOSPC): same
//!   guarantees, and the very next append rolls successfully.
//!
//! `RLIMIT_FSIZE` limits the size of each file, not the total, so segments below the limit keep
//! working under it: the roll scenario first appends across several small-segment rolls under the
//! limit, then reopens with a segment size above it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::*;
use statejournal::format::{segment_file_name, segment_path, tmp_path};
use statejournal::{Error, Log, LogOptions, Lsn};

/// Tells a re-executed test binary which child role to play.
const ROLE_ENV: &str = "STATEJOURNAL_NO_SPACE_CHILD_ROLE";
/// The log directory of the child.
const DIR_ENV: &str = "STATEJOURNAL_NO_SPACE_CHILD_DIR";
/// Prefix of the child's report line.
const REPORT: &str = "NO-SPACE-CHILD:";

/// The tests of this binary run one at a time. A child process spawned by one test inherits every
/// open file of this process between its fork and its exec (`O_CLOEXEC` closes them only at the
/// exec), including the LOCK file of a log another test just dropped, and that test's reopen
/// failed with `Locked` now and then, until the log released its lock explicitly when dropped
/// (`a_child_holding_a_copy_of_the_lock_descriptor_does_not_keep_the_directory_locked` in
/// `lock_contention.rs`). The serialization predates that fix and is kept as a second guard.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const FILE_SIZE_LIMIT: u64 = 1 << 20;
const BIG_SEGMENT: u64 = 4 << 20;
const SMALL_SEGMENT_64K: u64 = 64 << 10;

/// Runs this test binary again as a child playing `role` on `dir`; returns its report line.
fn run_child(test: &str, role: &str, dir: &Path) -> String {
    run_test_in_child(
        test,
        &[(ROLE_ENV, role.as_ref()), (DIR_ENV, dir.as_os_str())],
        REPORT,
    )
}

/// If this process is a child, plays its role and returns true.
fn child_role(role: &str, play: fn(&Path)) -> bool {
    match std::env::var(ROLE_ENV) {
        Ok(r) if r == role => {
            let dir = std::env::var_os(DIR_ENV).expect("child without a directory");
            play(Path::new(&dir));
            true
        }
        _ => false,
    }
}

/// Asserts `err` is `NoSpace` for segment `id` of `len` bytes with OS error `errno`, and that it
/// names the file (in `path()` and in its message).
fn assert_no_space(err: &Error, id: u64, len_expected: u64, errno: i32) {
    let name = segment_file_name(id);
    match err {
        Error::NoSpace { path, len, source } => {
            assert_eq!(*len, len_expected, "{err}");
            assert_eq!(source.raw_os_error(), Some(errno), "{err}");
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                file.starts_with(&name),
                "NoSpace path {} is not segment {id}'s file",
                path.display()
            );
            assert_eq!(err.path(), Some(path.as_path()));
        }
        other => panic!("expected NoSpace for segment {id}, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&name),
        "message does not name {name}: {err}"
    );
}

/// Names of the files in `dir` that are segments or temporaries (leftovers of a failed creation).
fn segment_and_tmp_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".seg") || n.ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Real failure at open: the first segment is larger than the file size limit.

const OPEN_TEST: &str =
    "open_fails_with_no_space_when_the_first_segment_exceeds_the_file_size_limit";

fn child_open_big(dir: &Path) {
    limit_file_size(FILE_SIZE_LIMIT);
    let err = Log::open(dir, LogOptions::default().segment_size(BIG_SEGMENT))
        .expect_err("opening with a segment above RLIMIT_FSIZE succeeded");
    assert_no_space(&err, 1, BIG_SEGMENT, libc::EFBIG);
    // Nothing was written: no segment, no temporary, no meta file.
    assert_eq!(segment_and_tmp_names(dir), Vec::<String>::new());
    assert!(!dir.join(statejournal::format::META_FILE).exists());
    println!("{REPORT} NoSpace");
}

#[test]
fn open_fails_with_no_space_when_the_first_segment_exceeds_the_file_size_limit() {
    let _serial = serial();
    if child_role("open-big", child_open_big) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_child(OPEN_TEST, "open-big", dir.path()), "NoSpace");
    // Without the limit the same directory opens as a new log.
    let log = Log::open(dir.path(), LogOptions::default().segment_size(BIG_SEGMENT)).unwrap();
    assert!(log.recovery_report().created);
    assert_eq!(log.append(b"first").unwrap(), Lsn(1));
    log.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Real failure at a roll.

const ROLL_TEST: &str =
    "a_roll_past_the_file_size_limit_fails_with_no_space_and_keeps_the_log_usable";

fn child_roll(dir: &Path) {
    limit_file_size(FILE_SIZE_LIMIT);
    // Segments below the (per-file) limit work under it, across several rolls.
    let log = Log::open(dir, LogOptions::default().segment_size(SMALL_SEGMENT_64K)).unwrap();
    let mut n = 0u64;
    while segment_files(dir).len() < 3 {
        n += 1;
        assert_eq!(log.append(&payload(n)).unwrap(), Lsn(n));
    }
    log.close().unwrap();

    // Reopened with segments above the limit: the tail (64 KiB) fills, the roll must fail.
    let log = Log::open(dir, LogOptions::default().segment_size(BIG_SEGMENT)).unwrap();
    let tail_id = segment_files(dir).len() as u64;
    let err = loop {
        match log.append(&payload(n + 1)) {
            Ok(lsn) => {
                n += 1;
                assert_eq!(lsn, Lsn(n));
                assert!(n < 100_000, "a 64 KiB segment never filled");
            }
            Err(e) => break e,
        }
    };
    assert_no_space(&err, tail_id + 1, BIG_SEGMENT, libc::EFBIG);
    // Still no space: a retry fails the same way (not Poisoned, and no LSN consumed).
    let again = log.append(&payload(n + 1)).unwrap_err();
    assert_no_space(&again, tail_id + 1, BIG_SEGMENT, libc::EFBIG);
    check_usable_after_no_space(&log, dir, n, tail_id);
    let again = log.append(&payload(n + 1)).unwrap_err();
    assert_no_space(&again, tail_id + 1, BIG_SEGMENT, libc::EFBIG);
    assert_eq!(log.last_lsn(), Lsn(n));
    drop(log);
    println!("{REPORT} acked={n} tail={tail_id}");
}

/// After a failed allocation: not poisoned, no LSN consumed, every record readable, nothing left
/// of the segment that could not be created, and — although there is still no space — the records
/// already appended can be flushed: making them durable needs no new segment.
fn check_usable_after_no_space(log: &Log, dir: &Path, acked: u64, tail_id: u64) {
    assert_eq!(log.last_lsn(), Lsn(acked));
    let all = read_all(log);
    assert_eq!(all.len() as u64, acked);
    for (i, (lsn, p)) in all.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(*p, payload(*lsn), "payload of LSN {lsn}");
    }
    // No segment file for the failed id, and the failed roll removed its temporary. (Other
    // temporaries, e.g. a segment the log prepares ahead of need, may come and go: they are not
    // part of the log, and recovery removes any left over.)
    let expected: Vec<PathBuf> = (1..=tail_id).map(|id| segment_path(dir, id)).collect();
    assert_eq!(segment_files(dir), expected, "segment files after NoSpace");
    let failed_tmp = tmp_path(dir, &segment_file_name(tail_id + 1));
    assert!(!failed_tmp.exists(), "{} left behind", failed_tmp.display());
    // Not poisoned, and flushing works while still out of space.
    let synced = log.sync().unwrap_or_else(|e| {
        panic!("sync while out of space must flush the {acked} records already appended: {e}")
    });
    assert_eq!(synced, Lsn(acked));
    assert_eq!(log.commit().expect("commit after NoSpace"), Lsn(acked));
    assert_eq!(log.durable_lsn(), Lsn(acked));
}

#[test]
fn a_roll_past_the_file_size_limit_fails_with_no_space_and_keeps_the_log_usable() {
    let _serial = serial();
    if child_role("roll", child_roll) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = run_child(ROLL_TEST, "roll", dir.path());
    let (acked, tail) = report
        .strip_prefix("acked=")
        .and_then(|r| r.split_once(" tail="))
        .map(|(a, t)| (a.parse::<u64>().unwrap(), t.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("bad child report {report:?}"));
    assert!(tail >= 3 && acked > 0, "{report}");

    // Reopen in the parent, without the limit.
    let log = Log::open(dir.path(), opts().segment_size(SMALL_SEGMENT_64K)).unwrap();
    let report = log.recovery_report();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records, acked);
    let expected: Vec<(u64, Vec<u8>)> = (1..=acked).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected);
    // Appends continue where the log stopped, rolling into the segment that could not be created.
    let more = 2000;
    for i in acked + 1..=acked + more {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
    }
    log.close().unwrap();
    assert!(segment_path(dir.path(), tail + 1).exists());
    let log = Log::open(dir.path(), opts()).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (1..=acked + more).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected);
}

// ---------------------------------------------------------------------------------------------
// Injected failure at a roll (feature `testing`).

#[cfg(feature = "testing")]
#[test]
fn injected_allocation_failure_is_no_space_once_and_the_next_roll_succeeds() {
    use std::sync::Arc;

    use statejournal::testing::FaultInjector;
    use statejournal::Durability;

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    // The first roll (to segment 2) succeeds, the second (to segment 3) fails.
    faults.fail_allocation_after(1);
    let log = Log::open(dir.path(), sync_opts().fault_injector(Arc::clone(&faults))).unwrap();
    let mut n = 0u64;
    // The failing roll may be started by an append or by a commit (whose sync marker may not fit
    // in the full segment either): both must report the same NoSpace.
    let err = loop {
        match log.append(&payload(n + 1)) {
            Ok(lsn) => {
                n += 1;
                assert_eq!(lsn, Lsn(n));
                assert!(n < 100_000, "no roll happened");
            }
            Err(e) => break e,
        }
        if n.is_multiple_of(50) {
            match log.commit() {
                Ok(lsn) => assert_eq!(lsn, Lsn(n)),
                Err(e) => break e,
            }
        }
    };
    assert_no_space(&err, 3, SMALL_SEGMENT, libc::ENOSPC);
    assert_eq!(err.path(), Some(segment_path(dir.path(), 3).as_path()));
    assert_eq!(segment_files(dir.path()).len(), 2);
    check_usable_after_no_space(&log, dir.path(), n, 2);
    // `Durability::Sync` commits still work and flushes are not refused (not poisoned).
    assert!(matches!(log.sync_to(Lsn(n)), Ok(l) if l == Lsn(n)));

    // The injected failure happens once: the next append rolls to segment 3.
    assert_eq!(log.append(&payload(n + 1)).unwrap(), Lsn(n + 1));
    assert_eq!(segment_files(dir.path()).len(), 3);
    for i in n + 2..=n + 300 {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
    }
    assert_eq!(log.commit().unwrap(), Lsn(n + 300));
    drop(log);

    let log = Log::open(dir.path(), opts().durability(Durability::Buffered)).unwrap();
    assert!(log.recovery_report().is_clean());
    let expected: Vec<(u64, Vec<u8>)> = (1..=n + 300).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected);
}

/// The disk stays full after a failed roll, and the log had flushed before (so its next flush
/// carries a sync marker): `sync` must still flush the records already appended — that needs no
/// new segment — instead of failing because the marker does not fit in the full segment.
#[cfg(feature = "testing")]
#[test]
fn sync_while_still_out_of_space_flushes_the_records_already_appended() {
    use std::sync::Arc;

    use statejournal::testing::FaultInjector;

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    // Buffered (the default): only `sync` and rolls flush.
    let log = Log::open(dir.path(), opts().fault_injector(Arc::clone(&faults))).unwrap();
    for i in 1..=10 {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
    }
    assert_eq!(log.sync().unwrap(), Lsn(10));

    faults.fail_allocation_after(0);
    let mut n = 10u64;
    let err = loop {
        match log.append(&payload(n + 1)) {
            Ok(lsn) => {
                n += 1;
                assert_eq!(lsn, Lsn(n));
                assert!(n < 100_000, "no roll happened");
            }
            Err(e) => break e,
        }
    };
    assert_no_space(&err, 2, SMALL_SEGMENT, libc::ENOSPC);

    // Still no space: the next allocation fails too.
    faults.fail_allocation_after(0);
    let synced = log.sync().unwrap_or_else(|e| {
        panic!("sync while out of space must flush the {n} records already appended: {e}")
    });
    assert_eq!(synced, Lsn(n));
    assert_eq!(log.durable_lsn(), Lsn(n));
    // Nothing else changed: still one segment, every record readable.
    assert_eq!(segment_files(dir.path()).len(), 1);
    let expected: Vec<(u64, Vec<u8>)> = (1..=n).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected);
}
