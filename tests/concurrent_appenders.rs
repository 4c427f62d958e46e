//! Many threads appending to one shared `Log` (with 8 KiB segments, so rolls happen under
//! contention) get distinct, dense LSNs — exactly 1..=N*M, no gap, no duplicate — and each LSN
//! holds exactly the payload its appender wrote: in the running log, after close and reopen, and
//! in each thread's own append order; also with `Log::appender` handles among the threads. A
//! reader following the tail while writers append sees every record once, in LSN order, with no
//! gap, picking up new records after it returned `None`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use statejournal::{Durability, Log, Lsn};

/// Payload of thread `tid`'s record number `seq`: both encoded, plus a length that varies with
/// both so frames of different sizes interleave.
fn record(tid: u32, seq: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&tid.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let pad = (seq as usize * 13 + tid as usize * 7) % 57;
    v.extend(std::iter::repeat_n((tid * 31 + seq) as u8, pad));
    v
}

/// Decodes (thread, sequence) from a payload and checks the rest of it.
fn decode(p: &[u8]) -> (u32, u32) {
    assert!(p.len() >= 8, "payload too short: {p:?}");
    let tid = u32::from_le_bytes(p[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    assert_eq!(p, record(tid, seq), "payload of ({tid}, {seq}) is damaged");
    (tid, seq)
}

/// How the appending threads append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `Log::append`.
    Log,
    /// Odd threads through their own `Log::appender()`, even ones with `Log::append`: the
    /// appenders keep a segment between appends while others roll it away from under them.
    Mixed,
}

/// Spawns `threads` appenders of `per_thread` records each, released together by a barrier;
/// returns, per thread, the LSNs its appends returned (in append order).
fn append_concurrently(log: &Arc<Log>, threads: u32, per_thread: u32, via: Via) -> Vec<Vec<u64>> {
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|tid| {
            let log = Arc::clone(log);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                if via == Via::Mixed && tid % 2 == 1 {
                    let mut appender = log.appender();
                    (0..per_thread)
                        .map(|seq| appender.append(&record(tid, seq)).expect("append").get())
                        .collect::<Vec<u64>>()
                } else {
                    (0..per_thread)
                        .map(|seq| log.append(&record(tid, seq)).expect("append").get())
                        .collect::<Vec<u64>>()
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Checks the log holds exactly the records `lsns` says were appended, at those LSNs, each
/// thread's in its append order.
fn check_log(log: &Log, lsns: &[Vec<u64>], what: &str) {
    let total: u64 = lsns.iter().map(|v| v.len() as u64).sum();
    let mut owner: HashMap<u64, (u32, u32)> = HashMap::new();
    for (tid, v) in lsns.iter().enumerate() {
        for (seq, &lsn) in v.iter().enumerate() {
            assert!(
                owner.insert(lsn, (tid as u32, seq as u32)).is_none(),
                "{what}: LSN {lsn} returned twice"
            );
        }
    }
    let mut sorted: Vec<u64> = owner.keys().copied().collect();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=total).collect::<Vec<_>>(),
        "{what}: LSNs are not 1..={total}"
    );

    let records = read_all(log);
    assert_eq!(records.len() as u64, total, "{what}: record count");
    let mut next_seq = vec![0u32; lsns.len()];
    for (i, (lsn, p)) in records.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1, "{what}: read order");
        let (tid, seq) = decode(p);
        assert_eq!(
            owner.get(lsn),
            Some(&(tid, seq)),
            "{what}: LSN {lsn} holds another append's payload"
        );
        assert_eq!(
            seq, next_seq[tid as usize],
            "{what}: thread {tid}'s records out of append order"
        );
        next_seq[tid as usize] += 1;
    }
    assert_eq!(log.last_lsn(), Lsn(total), "{what}");
}

fn appenders(threads: u32, per_thread: u32) {
    within_deadline(move || appenders_inner(threads, per_thread, Via::Log));
}

fn appenders_inner(threads: u32, per_thread: u32, via: Via) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), opts()).unwrap());
    let lsns = append_concurrently(&log, threads, per_thread, via);
    for (tid, v) in lsns.iter().enumerate() {
        assert_eq!(v.len(), per_thread as usize);
        assert!(
            v.windows(2).all(|w| w[0] < w[1]),
            "thread {tid}: LSNs not increasing in append order"
        );
    }
    check_log(&log, &lsns, &format!("{threads} threads, live"));
    let segments = segment_files(dir.path()).len();
    assert!(segments >= 5, "only {segments} segments: too few rolls");
    Arc::try_unwrap(log).unwrap().close().unwrap();

    let log = Log::open(dir.path(), opts()).unwrap();
    let report = log.recovery_report();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records, u64::from(threads * per_thread));
    assert_eq!(report.segments, segments);
    check_log(&log, &lsns, &format!("{threads} threads, reopened"));
    // And the log continues densely.
    assert_eq!(
        log.append(b"after").unwrap(),
        Lsn(u64::from(threads * per_thread) + 1)
    );
}

#[test]
fn two_appenders_get_dense_distinct_lsns() {
    appenders(2, 1000);
}

#[test]
fn four_appenders_get_dense_distinct_lsns() {
    appenders(4, 500);
}

#[test]
fn eight_appenders_get_dense_distinct_lsns() {
    appenders(8, 250);
}

#[test]
fn appender_handles_mixed_with_plain_appends_get_dense_distinct_lsns() {
    within_deadline(|| appenders_inner(4, 1000, Via::Mixed));
}

/// An appender whose cached segment was rolled away (by plain appends, many segments ago)
/// appends its next record at the next LSN, in the current segment, never in the stale one.
#[test]
fn an_appender_whose_segment_was_rolled_away_appends_at_the_tail() {
    within_deadline(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let mut appender = log.appender();
        assert_eq!(appender.append(&record(1, 0)).unwrap(), Lsn(1));
        let mut last = 1;
        while segment_files(dir.path()).len() < 4 {
            last = log.append(&record(0, last as u32)).unwrap().get();
        }
        assert_eq!(appender.append(&record(1, 1)).unwrap(), Lsn(last + 1));
        assert_eq!(log.append(&record(0, 9999)).unwrap(), Lsn(last + 2));
        assert_eq!(appender.append(&record(1, 2)).unwrap(), Lsn(last + 3));
        log.close().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        let records = read_all(&log);
        assert_eq!(records.len() as u64, last + 3);
        for (i, (lsn, _)) in records.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1, "read order");
        }
        let tail: Vec<(u32, u32)> = records[records.len() - 3..]
            .iter()
            .map(|(_, p)| decode(p))
            .collect();
        assert_eq!(tail, [(1, 1), (0, 9999), (1, 2)]);
    });
}

#[test]
fn a_reader_following_the_tail_sees_every_record_once_without_gaps() {
    within_deadline(follow_the_tail);
}

fn follow_the_tail() {
    const WRITERS: u32 = 4;
    const PER_WRITER: u32 = 600;
    const TOTAL: u64 = WRITERS as u64 * PER_WRITER as u64;
    let dir = tempfile::tempdir().unwrap();
    // Sync durability with commits interleaved: the reader must also skip sync markers.
    let log = Arc::new(Log::open(dir.path(), opts().durability(Durability::Sync)).unwrap());
    let mut reader = log.read_from(Lsn(1));
    assert!(reader.next().is_none(), "an empty log has nothing to read");

    let barrier = Arc::new(Barrier::new(WRITERS as usize + 1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|tid| {
            let log = Arc::clone(&log);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut lsns = Vec::with_capacity(PER_WRITER as usize);
                for seq in 0..PER_WRITER {
                    lsns.push(log.append(&record(tid, seq)).expect("append").get());
                    if seq % 100 == 99 {
                        log.commit().expect("commit");
                    }
                }
                lsns
            })
        })
        .collect();
    barrier.wait();

    // Follow the tail until every record was seen; `None` means "caught up for now".
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<(u64, (u32, u32))> = Vec::with_capacity(TOTAL as usize);
    let mut caught_up = 0u64;
    while (seen.len() as u64) < TOTAL {
        match reader.next() {
            Some(r) => {
                let r = r.expect("read while writers append");
                let expected = seen.len() as u64 + 1;
                assert_eq!(r.lsn, Lsn(expected), "gap or repeat in the tail reader");
                seen.push((r.lsn.get(), decode(&r.payload)));
            }
            None => {
                caught_up += 1;
                assert!(
                    Instant::now() < deadline,
                    "reader stuck at LSN {} of {TOTAL} (writers done: {})",
                    seen.len(),
                    writers.iter().all(|w| w.is_finished())
                );
                thread::yield_now();
            }
        }
    }
    let lsns: Vec<Vec<u64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(reader.next().is_none(), "records beyond the last appended");

    // What the reader saw is what the writers wrote.
    let mut owner: HashMap<u64, (u32, u32)> = HashMap::new();
    for (tid, v) in lsns.iter().enumerate() {
        for (seq, &lsn) in v.iter().enumerate() {
            owner.insert(lsn, (tid as u32, seq as u32));
        }
    }
    for (lsn, who) in &seen {
        assert_eq!(owner.get(lsn), Some(who), "LSN {lsn}");
    }
    check_log(&log, &lsns, "after following the tail");
    // The reader keeps following: one more record shows up.
    assert_eq!(log.append(&record(99, 0)).unwrap(), Lsn(TOTAL + 1));
    let r = reader.next().expect("the new record").unwrap();
    assert_eq!((r.lsn, decode(&r.payload)), (Lsn(TOTAL + 1), (99, 0)));
    // Informational only: how often the reader caught up with the writers.
    eprintln!("tail reader caught up {caught_up} times");
    assert!(segment_files(dir.path()).len() >= 5, "too few rolls");
}
