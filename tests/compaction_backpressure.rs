//! Backpressure: writers faster than compaction must not grow the log (its disk and the recovery
//! time) without bound. While an automatic compaction runs, a write that brings the log since
//! the newest snapshot to `stall_percent`% of the size that starts a compaction waits for it; so
//! does one that would make the replay take longer than the recovery budget. The test holds
//! compactions at their start (feature `testing`) to play a compaction that cannot keep up.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wait_for;
use statejournal::testing::FaultInjector;
use statejournal::{CompactionPolicy, Journal, JournalOptions, LogOptions};

const MIB: u64 = 1 << 20;

fn opts(policy: CompactionPolicy, faults: &Arc<FaultInjector>) -> JournalOptions {
    JournalOptions::default()
        .log_options(
            LogOptions::default()
                .segment_size(MIB)
                .fault_injector(Arc::clone(faults)),
        )
        .compaction(policy)
}

/// Writes `ops` updates of 100-byte values over 1000 keys on another thread while compactions
/// are held, and checks that the writer stops with the log since the snapshot near `limit`
/// bytes, and goes on (to the end, with the state intact) once the compaction may run.
fn writer_waits_for_a_held_compaction(policy: CompactionPolicy, limit: u64) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    faults.hold_compactions(true);
    let mut j = Journal::open(dir.path(), opts(policy, &faults)).unwrap();
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    let ops = 400_000u32; // ~60 MiB of log: far past the limit
    let logged = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let writer = {
        let (logged, finished) = (Arc::clone(&logged), Arc::clone(&finished));
        std::thread::spawn(move || {
            for i in 0..ops {
                s.set(&mut j, &(i % 1000), &vec![(i % 251) as u8; 100])
                    .unwrap();
                logged.store(j.io_stats().log_bytes, Ordering::SeqCst);
            }
            finished.store(true, Ordering::SeqCst);
            j
        })
    };
    // A compaction is requested once the log passes the size that starts one, and held.
    wait_for("a held compaction", || faults.compactions_held() == 1);
    // Unthrottled, the writer is done in well under a second; give it two.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !finished.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    assert!(
        !finished.load(Ordering::SeqCst),
        "the writer finished all {ops} updates while the compaction was held"
    );
    let stuck_at = logged.load(Ordering::SeqCst);
    assert!(
        stuck_at >= limit - MIB && stuck_at <= limit + 2 * MIB,
        "the writer stopped at {stuck_at} bytes of log, the limit is {limit}"
    );
    faults.hold_compactions(false);
    let mut j = writer.join().unwrap();
    let io = j.io_stats();
    assert!(io.write_stalls >= 1, "{io:?}");
    assert!(io.write_stall_time >= Duration::from_millis(500), "{io:?}");
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    for k in [0u32, 1, 999] {
        let last = (0..ops).rev().find(|i| i % 1000 == k).unwrap();
        assert_eq!(
            s.get(&mut j, &k).unwrap(),
            Some(vec![(last % 251) as u8; 100])
        );
    }
}

#[test]
fn writers_wait_for_a_compaction_that_falls_behind_the_size_rule() {
    // A compaction starts at 2 MiB of log; writers wait at 300% of that.
    let policy = CompactionPolicy::default()
        .min_tail_bytes(2 * MIB)
        .tail_ratio_percent(0)
        .stall_percent(300);
    writer_waits_for_a_held_compaction(policy, 6 * MIB);
}

#[test]
fn writers_wait_when_the_replay_would_exceed_the_recovery_budget() {
    // No size rule; a budget worth 8 MiB of replay at the assumed replay speed (a fresh journal
    // has measured none): a compaction starts at 4 MiB, writers wait at 8.
    let budget =
        Duration::from_secs_f64(8.0 * MIB as f64 / statejournal::DEFAULT_REPLAY_BYTES_PER_SEC);
    let policy = CompactionPolicy::default()
        .min_tail_bytes(1 << 40)
        .stall_percent(0)
        .recovery_budget(budget);
    writer_waits_for_a_held_compaction(policy, 8 * MIB);
}

#[test]
fn a_manual_policy_or_a_zero_stall_percent_never_waits() {
    for policy in [
        CompactionPolicy::manual().min_tail_bytes(MIB),
        CompactionPolicy::default()
            .min_tail_bytes(MIB)
            .tail_ratio_percent(0)
            .stall_percent(0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::new());
        faults.hold_compactions(true);
        let mut j = Journal::open(dir.path(), opts(policy, &faults)).unwrap();
        let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
        // ~30 MiB of log, 30x the size that starts a compaction.
        for i in 0..200_000u32 {
            s.set(&mut j, &(i % 1000), &vec![7u8; 100]).unwrap();
        }
        let io = j.io_stats();
        assert_eq!(io.write_stalls, 0, "{policy:?}: {io:?}");
        assert!(io.log_bytes > 25 * MIB, "{io:?}");
        faults.hold_compactions(false);
        drop(j);
    }
}
