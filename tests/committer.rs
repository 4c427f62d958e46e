//! `Committer`: threads that share one journal behind a lock write under the lock and commit
//! outside it. Every acknowledged write survives a reopen, the durable LSN a commit returns covers
//! the write, a non-`Sync` journal does not flush, a failed flush poisons every committer, and a
//! live committer keeps the log open (and locked) past `Journal::close`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use statejournal::format;
use statejournal::testing::{CrashSimulator, FaultInjector};
use statejournal::{Durability, Error, Journal, JournalOptions, LogOptions, Lsn};

fn sync_opts() -> JournalOptions {
    JournalOptions::default().durability(Durability::Sync)
}

/// Small segments, so that the threads' writes roll the log several times.
const SEGMENT: u64 = 256 << 10;

fn small_segments() -> JournalOptions {
    sync_opts().segment_size(SEGMENT)
}

/// A value of `len` bytes that says which write it is.
fn value(t: u64, i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|n| (t * 31 + i * 7 + n as u64) as u8)
        .collect()
}

/// The id of the newest segment file in `dir`.
fn newest_segment(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| format::parse_segment_file_name(e.unwrap().file_name().to_str()?))
        .max()
        .expect("a segment")
}

/// Drops the clean page-cache pages of every file in `dir` (nothing of it may be mapped or
/// open for writing), so that the next open reads from the disk what the flushes wrote there,
/// not what the page cache still holds. Dirty pages stay (and hold nothing acknowledged).
fn drop_clean_pages(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let f = File::open(&path).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open and
        // owned by `f`, which outlives the call. It changes no file content.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise({}) failed: {rc}", path.display());
    }
}

#[test]
fn threads_sharing_a_journal_commit_outside_the_lock_and_every_write_survives() {
    const THREADS: u64 = 8;
    const WRITES: u64 = 150;
    const LEN: usize = 600; // 8 x 150 x ~650 B of log: several 256 KiB segments
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), small_segments()).unwrap();
    let first = newest_segment(dir.path());
    let state = journal.value_state::<(u64, u64), Vec<u8>>("s").unwrap();
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
                            state.set(&mut j, &(t, i), &value(t, i, LEN)).unwrap();
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
    let newest = newest_segment(dir.path());
    assert!(
        newest >= first + 2,
        "the writes rolled {} times",
        newest - first
    );
    // Every write was acknowledged: drop without close (the committer too), throw away the
    // clean page cache, and reopen from what the disk holds.
    drop(committer);
    drop(journal);
    drop_clean_pages(dir.path());

    let mut journal = Journal::open(dir.path(), small_segments()).unwrap();
    let state = journal.value_state::<(u64, u64), Vec<u8>>("s").unwrap();
    for t in 0..THREADS {
        for i in 0..WRITES {
            assert_eq!(
                state.get(&mut journal, &(t, i)).unwrap(),
                Some(value(t, i, LEN)),
                "thread {t} write {i}"
            );
        }
    }
}

/// What `commit_through` acknowledged survives every simulated power loss: writes of varied
/// sizes across several segments, each committed through its own LSN (and every fourth through
/// an older LSN, which must not need a flush of its own), with crash points between them.
#[test]
fn commit_through_acknowledges_only_what_survives_a_power_loss() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("journal");
    let mut sim = CrashSimulator::new(&dir, small_segments(), BTreeMap::<u32, Vec<u8>>::new())
        .unwrap()
        .scratch_dir(base.path());
    let first = newest_segment(&dir);
    let state = sim.journal().value_state::<u32, Vec<u8>>("s").unwrap();
    let committer = sim.journal().committer();
    let mut model = BTreeMap::new();
    let mut older = Lsn(0);
    for i in 0..400u32 {
        let v = value(u64::from(i), 1, 100 + (i as usize * 37) % 3000);
        state.set(sim.journal(), &(i % 50), &v).unwrap();
        model.insert(i % 50, v);
        sim.mutated(model.clone());
        let lsn = sim.journal().last_lsn();
        if i % 4 == 3 {
            // An LSN already durable: returns at once, durable still covering it.
            assert!(committer.commit_through(older).unwrap() >= older);
        } else {
            assert!(committer.commit_through(lsn).unwrap() >= lsn);
            // The log's own watermark, which the crash images below hold it to, covers it.
            assert!(sim.journal().log().durable_lsn() >= lsn);
            sim.acknowledged();
            older = lsn;
        }
        if i % 25 == 0 {
            sim.crash_point().unwrap();
        }
    }
    sim.crash_point().unwrap();
    assert!(newest_segment(&dir) >= first + 2, "too few rolls");
    let report = sim
        .check(3, 7, |j| {
            let state = j.value_state::<u32, Vec<u8>>("s")?;
            let mut seen = BTreeMap::new();
            for k in 0..50 {
                if let Some(v) = state.get(j, &k)? {
                    seen.insert(k, v);
                }
            }
            Ok(seen)
        })
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.images > 20, "{report:?}");
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
