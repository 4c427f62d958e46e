//! A failed flush poisons the log (feature `testing`, `FaultInjector::fail_sync_after`): the call
//! that hit it returns `Error::Poisoned` naming the segment file, and from then on every `append`,
//! `commit`, `sync`, `sync_to` and `delete_below` returns `Poisoned` too (sticky), while the durable
//! LSN stays where the last successful flush left it. Dropping and reopening without the fault
//! recovers every record a successful commit acknowledged, and appends work again.
//!
//! Covered: a `Sync` commit's flush, the flush of a full segment at roll time, the background flush
//! of `Durability::Periodic`, and a flush failing under concurrent group-committers (all of them
//! see `Poisoned`, none hangs).

mod common;

use std::path::Path;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use statejournal::format::{segment_file_name, segment_path};
use statejournal::testing::FaultInjector;
use statejournal::{Durability, Error, Log, LogOptions, Lsn};

/// Large enough that these tests never roll unless they mean to.
const ONE_SEGMENT: u64 = 1 << 20;

/// Asserts `err` is `Poisoned` by an injected EIO on segment `id`'s file.
fn assert_poisoned(err: &Error, dir: &Path, id: u64, what: &str) {
    match err {
        Error::Poisoned { path, source } => {
            assert_eq!(path, &segment_path(dir, id), "{what}: {err}");
            assert_eq!(source.raw_os_error(), Some(libc::EIO), "{what}: {err}");
        }
        other => panic!("{what}: expected Poisoned, got {other:?}"),
    }
    assert_eq!(err.path(), Some(segment_path(dir, id).as_path()), "{what}");
    let msg = err.to_string();
    assert!(
        msg.contains(&segment_file_name(id)) && msg.contains("poisoned"),
        "{what}: {msg}"
    );
}

/// Every mutating call fails with the same `Poisoned` error, twice over.
fn assert_sticky(log: &Log, dir: &Path, id: u64) {
    for round in 0..2 {
        let e = log.append(b"refused").unwrap_err();
        assert_poisoned(&e, dir, id, &format!("append #{round}"));
        assert_poisoned(&log.commit().unwrap_err(), dir, id, "commit");
        assert_poisoned(&log.sync().unwrap_err(), dir, id, "sync");
        assert_poisoned(&log.sync_to(Lsn(1)).unwrap_err(), dir, id, "sync_to");
        assert_poisoned(
            &log.delete_below(Lsn(1)).unwrap_err(),
            dir,
            id,
            "delete_below",
        );
    }
}

/// Reopens `dir` without faults and checks: every record through `acked` is there, what is there
/// is a dense prefix of `payload(1..)` no longer than `appended`, and appends continue after it.
/// Returns how many records recovery found.
fn reopen_and_check(dir: &Path, acked: u64, appended: u64) -> u64 {
    let log = Log::open(dir, sync_opts()).expect("reopen after poisoning");
    let records = read_all(&log);
    let n = records.len() as u64;
    assert!(
        (acked..=appended).contains(&n),
        "recovered {n} records; acknowledged {acked}, appended {appended}"
    );
    for (i, (lsn, p)) in records.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(*p, payload(*lsn), "payload of LSN {lsn}");
    }
    // Appends and commits work again, across a roll.
    for i in n + 1..=n + 300 {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
    }
    assert_eq!(log.commit().unwrap(), Lsn(n + 300));
    drop(log);
    let log = Log::open(dir, sync_opts()).unwrap();
    assert_eq!(log.recovery_report().records, n + 300);
    n
}

#[test]
fn a_failed_commit_flush_poisons_the_log_until_it_is_reopened() {
    const GOOD_FLUSHES: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    faults.fail_sync_after(GOOD_FLUSHES);
    let log = Log::open(
        dir.path(),
        sync_opts()
            .segment_size(ONE_SEGMENT)
            .fault_injector(Arc::clone(&faults)),
    )
    .unwrap();

    let mut appended = 0u64;
    let mut acked = 0u64;
    let mut good_commits = 0u64;
    let err = loop {
        for _ in 0..10 {
            appended += 1;
            assert_eq!(log.append(&payload(appended)).unwrap(), Lsn(appended));
        }
        match log.commit() {
            Ok(lsn) => {
                assert_eq!(
                    lsn,
                    Lsn(appended),
                    "a Sync commit covers every append before it"
                );
                acked = lsn.get();
                good_commits += 1;
                assert!(
                    good_commits <= GOOD_FLUSHES,
                    "the injected failure never hit"
                );
            }
            Err(e) => break e,
        }
    };
    // One flush per single-threaded commit: the failure hits commit number GOOD_FLUSHES + 1.
    assert_eq!(good_commits, GOOD_FLUSHES);
    assert_eq!(faults.syncs(), GOOD_FLUSHES + 1);
    assert_poisoned(&err, dir.path(), 1, "the failing commit");
    // The failed flush made nothing durable.
    assert_eq!(log.durable_lsn(), Lsn(acked));
    assert_sticky(&log, dir.path(), 1);
    assert_eq!(log.durable_lsn(), Lsn(acked));
    assert_eq!(log.last_lsn(), Lsn(appended), "refused appends took no LSN");
    // No flush is even attempted once poisoned.
    assert_eq!(faults.syncs(), GOOD_FLUSHES + 1);
    drop(log);

    reopen_and_check(dir.path(), acked, appended);
}

#[test]
fn a_failed_flush_at_roll_time_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    // Sync mode without commits: the only flushes are those of full segments at roll time (a
    // Sync roll flushes its predecessor before creating the next segment). The first roll
    // (segment 1 → 2) flushes fine; the second (2 → 3) fails.
    faults.fail_sync_after(1);
    let log = Log::open(
        dir.path(),
        opts()
            .durability(statejournal::Durability::Sync)
            .fault_injector(Arc::clone(&faults)),
    )
    .unwrap();
    let mut appended = 0u64;
    let err = loop {
        match log.append(&payload(appended + 1)) {
            Ok(lsn) => {
                appended += 1;
                assert_eq!(lsn, Lsn(appended));
                assert!(appended < 100_000, "no roll happened");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(faults.syncs(), 2);
    assert_poisoned(&err, dir.path(), 2, "the append that rolled");
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "no segment after a failed flush"
    );
    assert_sticky(&log, dir.path(), 2);
    assert_eq!(log.last_lsn(), Lsn(appended));
    // Segment 1 was flushed completely before segment 2 existed: durable through its end.
    let durable = log.durable_lsn().get();
    assert!(
        durable > 0 && durable < appended,
        "durable {durable} of {appended}"
    );
    drop(log);

    // Segment 1 was durable; the rest was acknowledged by `append` in Buffered mode, and the
    // process did not crash, so the page cache still holds it: all of it comes back.
    let n = reopen_and_check(dir.path(), durable, appended);
    assert_eq!(n, appended);
}

#[test]
fn a_failed_background_flush_poisons_a_periodic_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let log = Log::open(
        dir.path(),
        opts()
            .segment_size(ONE_SEGMENT)
            .durability(Durability::Periodic(Duration::from_millis(2)))
            .fault_injector(Arc::clone(&faults)),
    )
    .unwrap();

    // Phase 1: no fault; the background flusher makes the records durable without any commit.
    for i in 1..=20 {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
    }
    wait_for("the background flush of LSN 20", || {
        log.durable_lsn() >= Lsn(20)
    });
    assert_eq!(log.durable_lsn(), Lsn(20));
    let good_syncs = faults.syncs();
    assert!(good_syncs >= 1);

    // Phase 2: the next flush fails. Nothing but the flusher flushes here (no commit in
    // Periodic mode waits, and the segment is far from full), and it flushes only new records.
    // It may strike after any of these appends; the appends after it are refused.
    faults.fail_sync_after(0);
    let mut appended = 20;
    for i in 21..=30 {
        match log.append(&payload(i)) {
            Ok(lsn) => {
                assert_eq!(lsn, Lsn(i));
                appended = i;
            }
            Err(e) => {
                assert_poisoned(&e, dir.path(), 1, "an append after the background failure");
                break;
            }
        }
    }
    assert!(
        appended > 20,
        "poisoned before any new record needed a flush"
    );
    wait_for("the background flush to fail", || log.commit().is_err());
    assert_eq!(faults.syncs(), good_syncs + 1, "only the flusher flushed");
    let err = log.append(&payload(appended + 1)).unwrap_err();
    assert_poisoned(
        &err,
        dir.path(),
        1,
        "the append after the background failure",
    );
    assert_sticky(&log, dir.path(), 1);
    assert_eq!(
        log.durable_lsn(),
        Lsn(20),
        "the failed flush made nothing durable"
    );
    assert_eq!(log.last_lsn(), Lsn(appended));
    drop(log);

    reopen_and_check(dir.path(), 20, appended);
}

#[test]
fn every_concurrent_committer_sees_the_poison_and_none_hangs() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    faults.fail_sync_after(5);
    let log = Arc::new(
        Log::open(
            dir.path(),
            sync_opts()
                .segment_size(ONE_SEGMENT)
                .fault_injector(Arc::clone(&faults)),
        )
        .unwrap(),
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for tid in 0..THREADS {
        let (log, barrier, tx) = (Arc::clone(&log), Arc::clone(&barrier), tx.clone());
        handles.push(thread::spawn(move || {
            barrier.wait();
            // Append and commit until the log refuses; report (highest acknowledged commit,
            // the error that stopped us).
            let mut acked = 0u64;
            let err = loop {
                let lsn = match log.append(&(tid as u64).to_le_bytes()) {
                    Ok(l) => l,
                    Err(e) => break e,
                };
                match log.commit() {
                    Ok(c) => {
                        assert!(c >= lsn, "commit {c} below own record {lsn}");
                        acked = acked.max(c.get());
                    }
                    Err(e) => break e,
                }
            };
            let _ = tx.send((acked, err));
        }));
    }
    drop(tx);
    let mut max_acked = 0;
    for _ in 0..THREADS {
        let (acked, err) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a committer hung after the log was poisoned");
        assert_poisoned(&err, dir.path(), 1, "a concurrent committer");
        max_acked = max_acked.max(acked);
    }
    // Every thread has reported, so these joins return at once; they release the threads' Arcs.
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(faults.syncs(), 6, "no flush after the failed one");
    let appended = log.last_lsn().get();
    assert!(log.durable_lsn().get() >= max_acked);
    drop(log);

    // Every acknowledged commit survives (payloads here are thread ids, not `payload(i)`).
    let log = Log::open(dir.path(), sync_opts()).unwrap();
    let n = log.recovery_report().records;
    assert!(
        (max_acked..=appended).contains(&n),
        "recovered {n}; acknowledged {max_acked}, appended {appended}"
    );
    assert_eq!(log.append(b"again").unwrap(), Lsn(n + 1));
    assert!(log.commit().unwrap() >= Lsn(n + 1));
}

/// Opens a log in `dir` with 64 MiB segments (no roll in these tests) whose every background
/// writeback is refused.
fn open_refusing_writebacks(dir: &Path, opts: LogOptions) -> (Log, Arc<FaultInjector>) {
    let faults = Arc::new(FaultInjector::new());
    faults.fail_writeback_after(0);
    let log = Log::open(
        dir,
        opts.segment_size(64 << 20)
            .fault_injector(Arc::clone(&faults)),
    )
    .unwrap();
    (log, faults)
}

/// A writeback the log's background thread starts and the file system refuses
/// (`sync_file_range` itself failing) poisons the log as a failed flush does: in `Sync` mode,
/// where the thread writes back the window ahead of the appenders, and in `Buffered` mode, where
/// it writes back the published MiBs behind them.
#[test]
fn a_refused_background_writeback_poisons_the_log() {
    for durability in [Durability::Sync, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        // In `Sync` mode the background thread's writeback is the conversion ahead, which is
        // chosen by file system when left unset: set it, so the test runs wherever /tmp is.
        let opts = opts().durability(durability).convert_extents_ahead(true);
        let (log, faults) = open_refusing_writebacks(dir.path(), opts);
        // Appends wake the thread at every MiB; `Buffered` writes back once 4 MiB are published.
        let record = vec![7u8; 4000];
        let mut refused = None;
        wait_for("the background writeback to poison the log", || {
            match log.append(&record) {
                Ok(_) => false,
                Err(e) => {
                    refused = Some(e);
                    true
                }
            }
        });
        let e = refused.expect("an append was refused");
        assert_poisoned(
            &e,
            dir.path(),
            1,
            &format!("{durability:?}: the refused append"),
        );
        assert_sticky(&log, dir.path(), 1);
        assert_eq!(
            faults.syncs(),
            0,
            "{durability:?}: no flush ran, so none failed"
        );
    }
}

/// `LogOptions::convert_extents_ahead(false)`: a `Sync` log starts no writeback of its own, so
/// the refused writeback of the test above never happens and commits go on; the same loop with
/// the conversion on is poisoned.
#[test]
fn without_conversion_ahead_a_sync_log_starts_no_writeback() {
    let record = vec![7u8; 4000];
    for convert in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let sync = opts().durability(Durability::Sync);
        let (log, _faults) =
            open_refusing_writebacks(dir.path(), sync.convert_extents_ahead(convert));
        // 10 records and a commit per round: 40 KB, so the background thread is woken (at every
        // MiB) many times over.
        let round = || -> Result<Lsn, statejournal::Error> {
            for _ in 0..10 {
                log.append(&record)?;
            }
            log.commit()
        };
        if convert {
            let mut refused = None;
            wait_for("the writeback ahead to poison the log", || match round() {
                Ok(_) => false,
                Err(e) => {
                    refused = Some(e);
                    true
                }
            });
            assert_poisoned(&refused.unwrap(), dir.path(), 1, "conversion on");
        } else {
            for n in 0..500 {
                let durable = round().unwrap_or_else(|e| panic!("round {n}: {e}"));
                assert_eq!(durable, log.last_lsn(), "round {n}");
            }
        }
    }
}

/// Left unset, the conversion ahead is chosen by the file system holding the log: on for ext4
/// and XFS, off elsewhere (btrfs, tmpfs, overlayfs...). The expectation is read from
/// /proc/self/mountinfo, not from the library's own `statfs`. Set, it is what was set; outside
/// `Sync` mode it is always off.
#[test]
fn conversion_ahead_is_chosen_by_file_system_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let fs = file_system_type(dir.path());
    let expected = matches!(fs.as_str(), "ext2" | "ext3" | "ext4" | "xfs");
    let open = |o: LogOptions| {
        let log = Log::open(dir.path(), o).unwrap();
        let on = log.converts_extents_ahead();
        log.close().unwrap();
        on
    };
    let sync = opts().durability(Durability::Sync);
    assert_eq!(open(sync.clone()), expected, "unset, on {fs}");
    assert!(
        open(sync.clone().convert_extents_ahead(true)),
        "set on, on {fs}"
    );
    assert!(!open(sync.convert_extents_ahead(false)), "set off, on {fs}");
    for other in [
        Durability::Buffered,
        Durability::Periodic(Duration::from_millis(5)),
    ] {
        let o = opts().durability(other);
        assert!(!open(o.clone()), "{other:?}, unset");
        assert!(!open(o.convert_extents_ahead(true)), "{other:?}, set on");
    }
}

/// The type of the file system mounted at the longest mount point containing `path`.
fn file_system_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        // `id parent major:minor root mount-point options [optional...] - type source ...`
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(mount_point), Some(dash)) =
            (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let mount_point = unescape_mountinfo(mount_point);
        let Some(fs_type) = fields.get(dash + 1) else {
            continue;
        };
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() >= *len)
        {
            best = Some((mount_point.len(), (*fs_type).to_string()));
        }
    }
    best.unwrap_or_else(|| panic!("no mount holds {}", path.display()))
        .1
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\ooo` (octal).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
