//! The automatic compaction policy: size floor and ratio (like Redis's auto AOF rewrite), the
//! recovery-time budget, and the write amplification it bounds.

use std::time::Duration;

use statejournal::{CompactionPolicy, Journal, JournalOptions};

fn opts(policy: CompactionPolicy) -> JournalOptions {
    JournalOptions::default()
        .segment_size(256 << 10)
        .compaction(policy)
}

/// Collects the automatic compaction in flight, if any.
fn settle(j: &mut Journal) -> Vec<statejournal::CompactionReport> {
    j.wait_for_compaction()
        .map(Result::unwrap)
        .into_iter()
        .collect()
}

#[test]
fn size_floor_and_ratio_start_compactions_and_bound_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy::default()
        .min_tail_bytes(1 << 20)
        .tail_ratio_percent(100);
    let mut j = Journal::open(dir.path(), opts(policy)).unwrap();
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    let value = vec![7u8; 400];
    // 2500 keys × ~410 B ≈ 1 MiB of state; 30 passes ≈ 32 MiB of log.
    for pass in 0..30u32 {
        for k in 0..2500u32 {
            s.set(&mut j, &k, &value).unwrap();
        }
        if pass % 10 == 9 {
            settle(&mut j);
        }
    }
    settle(&mut j);
    let io = j.io_stats();
    assert!(io.compactions >= 5, "{io:?}");
    // The log on disk stays around the floor/ratio, not the 100 MiB written.
    let seg_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(seg_bytes < 8 << 20, "{seg_bytes} bytes of segments left");
    // Write amplification: the log once, plus a snapshot of ~the state per ~state-sized tail.
    let wa = io.write_amplification();
    assert!(wa > 1.0 && wa < 3.5, "write amplification {wa:.2} ({io:?})");
    drop(j);
    let mut j = Journal::open(dir.path(), opts(CompactionPolicy::manual())).unwrap();
    let rec = j.recovery().clone();
    assert_eq!(rec.snapshot_entries, 2500, "{rec}");
    assert!(rec.replayed_bytes < 4 << 20, "{rec}");
    assert_eq!(s.get(&mut j, &2499).unwrap(), Some(value));
}

#[test]
fn a_recovery_time_budget_compacts_below_the_size_floor() {
    let dir = tempfile::tempdir().unwrap();
    // A size floor never reached; a budget that ~1 MiB of replay already exceeds at the assumed
    // replay speed.
    let budget = Duration::from_secs_f64(1.0 / statejournal::DEFAULT_REPLAY_BYTES_PER_SEC * 1e6);
    let policy = CompactionPolicy::default()
        .min_tail_bytes(1 << 40)
        .recovery_budget(budget);
    let mut j = Journal::open(dir.path(), opts(policy)).unwrap();
    let s = j.value_state::<u32, u32>("s").unwrap();
    for k in 0..60_000u32 {
        s.set(&mut j, &(k % 1000), &k).unwrap();
    }
    let done = settle(&mut j);
    assert!(!done.is_empty(), "no compaction started");
    assert!(done.iter().all(|r| r.records > 0));
    // Without the budget nothing happens.
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy::default().min_tail_bytes(1 << 40);
    let mut j = Journal::open(dir.path(), opts(policy)).unwrap();
    let s = j.value_state::<u32, u32>("s").unwrap();
    for k in 0..60_000u32 {
        s.set(&mut j, &(k % 1000), &k).unwrap();
    }
    std::thread::yield_now();
    assert!(j.last_compaction().is_none());
    assert_eq!(j.io_stats().compactions, 0);
}

#[test]
fn manual_policy_never_compacts_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(
        dir.path(),
        opts(CompactionPolicy::manual().min_tail_bytes(1)),
    )
    .unwrap();
    let s = j.value_state::<u32, u32>("s").unwrap();
    for k in 0..60_000u32 {
        s.set(&mut j, &(k % 100), &k).unwrap();
    }
    assert!(j.last_compaction().is_none());
    let r = j.compact().unwrap();
    assert_eq!(r.entries, 100);
    assert_eq!(j.io_stats().compactions, 1);
}

#[test]
fn closing_during_a_compaction_leaves_no_temporary_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy::default().min_tail_bytes(1 << 20);
    let mut j = Journal::open(dir.path(), opts(policy)).unwrap();
    let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
    for k in 0..40_000u32 {
        s.set(&mut j, &k, &vec![(k % 7) as u8; 64]).unwrap();
    }
    // A compaction was requested along the way and may be running: drop cancels it.
    drop(j);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name} left behind");
    }
    let mut j = Journal::open(dir.path(), opts(CompactionPolicy::manual())).unwrap();
    for k in [0u32, 1, 20_000, 39_999] {
        assert_eq!(s.get(&mut j, &k).unwrap(), Some(vec![(k % 7) as u8; 64]));
    }
}
