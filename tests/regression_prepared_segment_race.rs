//! Regression (found twice by `tests/model.rs`, whose saved seeds in
//! `tests/model.proptest-regressions` replay both): a final-named segment without a header
//! (`BadMagic` on the next open).
//! 1. The background thread prepared the next segment under the same temporary name a synchronous
//!    roll used; its `open(O_TRUNC)` truncated the file the roll had just renamed into place.
//!    Prepared segments now have a name of their own.
//! 2. While a roll was finalizing a file it had taken from the background thread (header written,
//!    fsync in progress, not yet renamed), the background thread prepared the same segment again
//!    under that name and truncated it. The background thread now creates its file exclusively.

mod common;

use common::payload;
use statejournal::{Log, LogOptions, Lsn, RecoveryMode};

#[test]
fn rapid_rolls_never_leave_a_headerless_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions::default().segment_size(8192);
    for round in 0..5u64 {
        let log = Log::open(dir.path(), opts.clone()).unwrap();
        for i in 0..400u64 {
            // ~3 KiB records: a roll every two or three appends, racing the background thread.
            let mut p = payload(round * 400 + i);
            p.resize(3000, 7);
            log.append(&p).unwrap();
        }
        drop(log);
        let log = Log::open(dir.path(), opts.clone().recovery_mode(RecoveryMode::Strict)).unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{}",
            log.recovery_report()
        );
        assert_eq!(log.last_lsn(), Lsn((round + 1) * 400));
        assert_eq!(log.read_from(Lsn(1)).count() as u64, (round + 1) * 400);
    }
}
