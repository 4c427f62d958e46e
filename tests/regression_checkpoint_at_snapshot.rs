//! Found by the crash simulator (`tests/crash_sim.rs`), with no damage at all: a checkpoint taken
//! right after a compaction (its LSN equal to its snapshot's) named the segment holding the
//! snapshot's last record, though it needs no record of the log. Once the log rolled past that
//! segment, the next checkpoint's garbage collection deleted it (nothing needs records at or below
//! the snapshot), and restoring the first checkpoint failed: "it names segment 1, which is not in
//! the log".

use statejournal::{CompactionPolicy, Durability, Journal, JournalOptions};

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Sync)
        .segment_size(8 << 10)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual())
}

/// The `base_lsn` of every segment file in `dir` (bytes 32..40 of its header, little-endian).
/// (Since GC keeps the segment holding a retained checkpoint's LSN when the checkpoint lies at
/// its snapshot — pushing it needs that segment, `regression_push_checkpoint_at_snapshot.rs` —
/// the log's first LSN no longer shows whether the log rolled right after the snapshot.)
fn segment_bases(dir: &std::path::Path) -> Vec<u64> {
    let mut bases = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            let bytes = std::fs::read(&path).unwrap();
            bases.push(u64::from_le_bytes(bytes[32..40].try_into().unwrap()));
        }
    }
    bases
}

#[test]
fn checkpoint_at_its_snapshot_survives_gc_of_the_log_before_it() {
    // Find a history where the record after the snapshot is the first of a new segment.
    for n in 1..30u32 {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), opts()).unwrap();
        let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
        for k in 0..n {
            s.set(&mut j, &k, &vec![k as u8; 500]).unwrap();
        }
        j.commit().unwrap();
        let snapshot = j.compact().unwrap().lsn;
        let first = j.checkpoint().unwrap();
        assert_eq!(first.lsn, snapshot);
        s.set(&mut j, &n, &vec![0xee; 2500]).unwrap();
        j.checkpoint().unwrap();
        if !segment_bases(dir.path()).contains(&(snapshot.get() + 1)) {
            continue; // the new record went into the snapshot's segment
        }
        drop(j);

        let mut j = Journal::open_at_checkpoint(dir.path(), first.id, opts()).unwrap();
        assert_eq!(j.log().last_lsn(), first.lsn);
        let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
        for k in 0..=n {
            let expected = (k < n).then(|| vec![k as u8; 500]);
            assert_eq!(s.get(&mut j, &k).unwrap(), expected, "key {k}");
        }
        return;
    }
    panic!("no history rolled right after the snapshot");
}
