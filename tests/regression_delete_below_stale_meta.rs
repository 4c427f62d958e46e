//! Regression (found by `tests/model.rs`): in Buffered mode a roll records the new segment in
//! `log.meta` lazily (the background thread does it). A `delete_below` right after a roll moved
//! `first_segment` past the stale `last_segment` and wrote a meta file that fails its own
//! validation ("segment range"); if the process stopped before the background thread rewrote it,
//! the next open refused the log. `delete_below` now brings the meta file up to date first.
//! The window is narrow, so the test checks the meta file right after every one of many deletions
//! (before the fix about one round in fifty failed).

use statejournal::codec::meta::LogMeta;
use statejournal::format::META_FILE;
use statejournal::{Log, LogOptions, RecoveryMode};

#[test]
fn the_meta_file_is_valid_right_after_delete_below() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions::default().segment_size(8192);
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    for round in 0..300u64 {
        for i in 0..12u64 {
            log.append(&[(round + i) as u8; 1500]).unwrap();
        }
        let last = log.last_lsn();
        assert!(log.delete_below(last).unwrap() >= 1);
        let meta = std::fs::read(dir.path().join(META_FILE)).unwrap();
        if let Err(e) = LogMeta::decode(&meta) {
            panic!("round {round}: delete_below wrote an invalid meta file: {e}");
        }
    }
    let last = log.last_lsn();
    drop(log);
    let log = Log::open(dir.path(), opts.recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(log.last_lsn(), last);
}
