//! `Committer`: threads that share one journal behind a lock write under the lock and commit
//! outside it. Every acknowledged write survives a reopen, the durable LSN a commit returns covers
//! the write, a non-`Sync` journal does not flush, a failed flush poisons every committer, and a
//! live committer keeps the log open (and locked) past `Journal::close`.

use std::sync::{Arc, Mutex};

use statejournal::testing::FaultInjector;
use statejournal::{Durability, Error, Journal, JournalOptions, LogOptions, Lsn};

fn sync_opts() -> JournalOptions {
    JournalOptions::default().durability(Durability::Sync)
}

#[test]
fn threads_sharing_a_journal_commit_outside_the_lock_and_every_write_survives() {
    const THREADS: u64 = 8;
    const WRITES: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), sync_opts()).unwrap();
    let state = journal.value_state::<(u64, u64), u64>("s").unwrap();
    let committer = journal.committer();
    let journal = Arc::new(Mutex::new(journal));
    let state = &state;
    let highest = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (journal, committer) = (Arc::clone(&journal), committer.clone());
                s.spawn(move || {
                    let mut highest = Lsn(0);
                    for i in 0..WRITES {
                        let lsn = {
                            let mut j = journal.lock().unwrap();
                            state.set(&mut j, &(t, i), &(t * 1000 + i)).unwrap();
                            j.last_lsn()
                        };
                        let durable = committer.commit_through(lsn).unwrap();
                        assert!(
                            durable >= lsn,
                            "commit_through({lsn:?}) returned {durable:?}"
                        );
                        assert!(committer.durable_lsn() >= lsn);
                        highest = highest.max(lsn);
                    }
                    highest
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    assert!(highest.get() >= THREADS * WRITES, "{highest:?}");
    let journal = Arc::try_unwrap(journal).unwrap().into_inner().unwrap();
    assert!(journal.log().durable_lsn() >= highest);
    // A crash now loses nothing acknowledged: drop without close, the committer too.
    drop(committer);
    drop(journal);

    let mut journal = Journal::open(dir.path(), sync_opts()).unwrap();
    let state = journal.value_state::<(u64, u64), u64>("s").unwrap();
    for t in 0..THREADS {
        for i in 0..WRITES {
            assert_eq!(
                state.get(&mut journal, &(t, i)).unwrap(),
                Some(t * 1000 + i),
                "thread {t} write {i}"
            );
        }
    }
}

#[test]
fn a_buffered_journal_commit_through_returns_without_flushing() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(
        dir.path(),
        JournalOptions::default().durability(Durability::Buffered),
    )
    .unwrap();
    let state = journal.value_state::<u32, u32>("s").unwrap();
    let committer = journal.committer();
    state.set(&mut journal, &1, &1).unwrap();
    let lsn = journal.last_lsn();
    let durable = committer.commit_through(lsn).unwrap();
    assert!(
        durable < lsn,
        "Buffered must not flush: {durable:?} >= {lsn:?}"
    );
    assert_eq!(durable, journal.log().durable_lsn());
    // `Journal::sync` flushes whatever the mode, and the committer sees it.
    journal.sync().unwrap();
    assert!(committer.durable_lsn() >= lsn);
}

#[test]
fn a_failed_flush_poisons_every_committer() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let opts = JournalOptions::default().log_options(
        LogOptions::default()
            .durability(Durability::Sync)
            .fault_injector(Arc::clone(&faults)),
    );
    let mut journal = Journal::open(dir.path(), opts).unwrap();
    let state = journal.value_state::<u32, u32>("s").unwrap();
    let (a, b) = (journal.committer(), journal.committer());
    state.set(&mut journal, &1, &1).unwrap();
    let first = journal.last_lsn();
    assert!(a.commit_through(first).unwrap() >= first);
    faults.fail_sync_after(0);
    state.set(&mut journal, &2, &2).unwrap();
    let second = journal.last_lsn();
    let err = a.commit_through(second).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
    // Sticky, for the other committer, for an LSN already durable, and for the journal.
    for c in [&a, &b] {
        for lsn in [first, second] {
            let err = c.commit_through(lsn).unwrap_err();
            assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
        }
    }
    assert!(matches!(journal.commit(), Err(Error::Poisoned { .. })));
    assert!(a.durable_lsn() >= first && a.durable_lsn() < second);
}

#[test]
fn a_live_committer_keeps_the_log_open_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), sync_opts()).unwrap();
    let state = journal.value_state::<u32, u32>("s").unwrap();
    let committer = journal.committer();
    state.set(&mut journal, &7, &70).unwrap();
    let lsn = journal.last_lsn();
    journal.close().unwrap();
    // Closed, but the committer still holds the log: the directory stays locked...
    match Journal::open(dir.path(), sync_opts()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked while a committer is alive, got {other:?}"),
    }
    // ...and close flushed what was written.
    assert!(committer.durable_lsn() >= lsn);
    drop(committer);
    let mut journal = Journal::open(dir.path(), sync_opts()).unwrap();
    let state = journal.value_state::<u32, u32>("s").unwrap();
    assert_eq!(state.get(&mut journal, &7).unwrap(), Some(70));
}
