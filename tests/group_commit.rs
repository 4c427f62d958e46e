//! Group commit (feature `testing`, whose `FaultInjector::syncs()` counts flush attempts):
//!
//! * `Durability::Sync`: with 16 threads appending and committing, every commit returns an LSN at
//!   or past the committing thread's own last record, and concurrent committers share flushes —
//!   when 16 threads commit at once, one flush serves them all, so there are far fewer flushes
//!   than commits. Everything committed is there after reopening.
//! * `Durability::Periodic`: `durable_lsn()` advances over appended records with no commit call at
//!   all (the background flusher), batch after batch.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use statejournal::testing::FaultInjector;
use statejournal::{Durability, Log, LogOptions, Lsn};

const THREADS: usize = 16;
/// Large enough that no roll (which flushes too) happens in these tests.
const ONE_SEGMENT: u64 = 1 << 20;

fn sync_log(dir: &std::path::Path, faults: &Arc<FaultInjector>) -> Arc<Log> {
    let opts = LogOptions::default()
        .segment_size(ONE_SEGMENT)
        .durability(Durability::Sync)
        .fault_injector(Arc::clone(faults));
    Arc::new(Log::open(dir, opts).unwrap())
}

/// Record of thread `tid`'s `i`-th append.
fn record(tid: usize, i: u64) -> Vec<u8> {
    let mut v = (tid as u64).to_le_bytes().to_vec();
    v.extend_from_slice(&i.to_le_bytes());
    v
}

fn check_reopened(dir: &std::path::Path, records: u64) {
    let log = Log::open(dir, opts()).unwrap();
    let report = log.recovery_report();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records, records);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, records);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, (lsn, _))| *lsn == i as u64 + 1));
}

/// In each round all 16 threads append, wait for each other, then all commit at once: every
/// commit covers its own record, and the 16 commits of a round share a single flush.
#[test]
fn sixteen_simultaneous_committers_share_one_flush_per_round() {
    within_deadline(lockstep_rounds);
}

fn lockstep_rounds() {
    const ROUNDS: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let log = sync_log(dir.path(), &faults);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|tid| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut commits = 0u64;
                let mut last_commit = Lsn(0);
                for round in 0..ROUNDS {
                    let own = log.append(&record(tid, round)).unwrap();
                    barrier.wait(); // every record of the round is appended
                    let durable = log.commit().unwrap();
                    commits += 1;
                    assert!(
                        durable >= own,
                        "thread {tid}: commit {durable} < own LSN {own}"
                    );
                    assert!(
                        durable >= last_commit,
                        "thread {tid}: commit went backwards"
                    );
                    assert!(log.durable_lsn() >= own);
                    last_commit = durable;
                    barrier.wait(); // every commit of the round returned
                }
                commits
            })
        })
        .collect();
    let commits: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let syncs = faults.syncs();
    assert_eq!(commits, THREADS as u64 * ROUNDS);
    assert!(
        syncs < commits,
        "{syncs} flushes for {commits} commits: concurrent commits did not share flushes"
    );
    // Each round's records were all appended before any of its commits started, so the first
    // flush of the round covers every one of them and the other 15 commits need none.
    assert_eq!(
        syncs, ROUNDS,
        "{syncs} flushes for {ROUNDS} rounds of {THREADS} simultaneous commits"
    );
    let total = THREADS as u64 * ROUNDS;
    assert_eq!(log.durable_lsn(), Lsn(total));
    Arc::try_unwrap(log).unwrap().close().unwrap();
    check_reopened(dir.path(), total);
}

/// Threads append and commit freely (no lockstep): every commit still covers the thread's own
/// record, and commits seen by one thread never go backwards.
#[test]
fn free_running_committers_each_get_their_own_record_durable() {
    within_deadline(free_running);
}

fn free_running() {
    const PER_THREAD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let log = sync_log(dir.path(), &faults);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|tid| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let mut last_commit = Lsn(0);
                for i in 0..PER_THREAD {
                    let own = log.append(&record(tid, i)).unwrap();
                    let durable = log.commit().unwrap();
                    assert!(
                        durable >= own,
                        "thread {tid}: commit {durable} < own LSN {own}"
                    );
                    assert!(
                        durable >= last_commit,
                        "thread {tid}: commit went backwards"
                    );
                    assert!(durable <= log.last_lsn(), "durable past the last record");
                    last_commit = durable;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = THREADS as u64 * PER_THREAD;
    assert_eq!(log.durable_lsn(), Lsn(total));
    let syncs = faults.syncs();
    assert!(syncs >= 1, "commits flushed nothing");
    eprintln!("free-running: {syncs} flushes for {total} commits");
    Arc::try_unwrap(log).unwrap().close().unwrap();
    check_reopened(dir.path(), total);
}

#[test]
fn periodic_durability_advances_without_commit() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let log = Log::open(
        dir.path(),
        opts()
            .segment_size(ONE_SEGMENT)
            .durability(Durability::Periodic(Duration::from_millis(5)))
            .fault_injector(Arc::clone(&faults)),
    )
    .unwrap();
    assert_eq!(log.durable_lsn(), Lsn(0));
    let mut last = 0u64;
    for batch in 1..=3u64 {
        for _ in 0..100 {
            last += 1;
            assert_eq!(log.append(&payload(last)).unwrap(), Lsn(last));
        }
        wait_for(&format!("batch {batch} to become durable"), || {
            log.durable_lsn() >= Lsn(last)
        });
        assert_eq!(log.durable_lsn(), Lsn(last), "durable past the last record");
        // Each batch needed at least one background flush.
        assert!(
            faults.syncs() >= batch,
            "{} flushes after {batch} batches",
            faults.syncs()
        );
    }
    drop(log);
    check_reopened(dir.path(), last);
}
