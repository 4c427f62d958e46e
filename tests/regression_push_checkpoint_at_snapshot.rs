//! A checkpoint taken right at its snapshot's LSN names no segment locally, but its remote copy
//! needs the segment holding that LSN (the restored log must end there). Local garbage collection
//! kept segments only from the snapshot's LSN + 1 on, so once the log rolled past that segment and
//! a later checkpoint collected garbage, pushing the (still retained) checkpoint failed: "the
//! segment holding that LSN is gone". GC must keep what a retained checkpoint's push needs.
#![cfg(feature = "remote")]

use std::sync::Arc;

use object_store::memory::InMemory;
use statejournal::remote::{RemoteStore, Shipper};
use statejournal::{CompactionPolicy, Durability, Journal, JournalOptions};

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Sync)
        .segment_size(8 << 10)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual())
}

/// The `base_lsn` of every segment file in `dir` (bytes 32..40 of its header, little-endian).
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
fn retained_checkpoint_at_its_snapshot_can_still_be_pushed_after_gc() {
    let remote = RemoteStore::new(Arc::new(InMemory::new()), "at-snapshot").unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    // Find a history where the record after the snapshot is the first of a new segment, so that
    // the snapshot's segment holds nothing a local restore needs.
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
        assert!(first.segments.is_empty());
        s.set(&mut j, &n, &vec![0xee; 2500]).unwrap();
        s.set(&mut j, &(n + 1), &vec![0xef; 2500]).unwrap();
        j.checkpoint().unwrap(); // collects garbage; `first` is still retained
        assert!(j.checkpoints().iter().any(|c| c.id == first.id));
        // The record after the snapshot began a segment: the snapshot's segment holds nothing
        // a local restore needs, and GC may take it.
        if !segment_bases(dir.path()).contains(&(snapshot.get() + 1)) {
            continue;
        }
        // Before the fix: Err(InvalidOptions("... the segment holding that LSN is gone ...")).
        let pushed = j
            .push_checkpoint(first.id, &shipper)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(pushed.lsn, snapshot.get());
        // Once no retained checkpoint (and no push) needs it, the segment goes as before. (The
        // push's pin is released on the runtime right after the push resolves.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            j.checkpoint().unwrap();
            assert!(j.checkpoints().iter().all(|c| c.id != first.id));
            if segment_bases(dir.path())
                .iter()
                .all(|&b| b > snapshot.get())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the snapshot's segment outlived its checkpoint"
            );
            std::thread::yield_now();
        }
        drop(j);

        let restored = tempfile::tempdir().unwrap();
        let r = remote
            .restore_blocking(Some(pushed.seq), restored.path())
            .unwrap();
        let mut j = Journal::open_at_checkpoint(restored.path(), r.checkpoint_id, opts()).unwrap();
        assert_eq!(j.log().last_lsn(), snapshot);
        let s = j.value_state::<u32, Vec<u8>>("s").unwrap();
        for k in 0..n + 2 {
            let expected = (k < n).then(|| vec![k as u8; 500]);
            assert_eq!(s.get(&mut j, &k).unwrap(), expected, "key {k}");
        }
        return;
    }
    panic!("no history rolled right after the snapshot");
}
