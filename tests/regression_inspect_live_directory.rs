//! Regression: `inspect` of a journal another process has open must not fail because a file
//! vanished between listing the directory and looking at the file. A live journal creates,
//! renames and removes files all the time (a prepared segment, a snapshot's temporary, the
//! segments a compaction made obsolete); `statejournal checkpoint push` of a running job's
//! directory could report such a race as "stat …: No such file or directory" instead of "open in
//! another process".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use statejournal::inspect::{inspect, InspectOptions};
use statejournal::{Journal, JournalOptions};

#[test]
fn files_vanishing_during_an_inspection_are_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut j = Journal::open(&dir, JournalOptions::default().segment_size(256 << 10)).unwrap();
    let counts = j.value_state::<u32, u64>("counts").unwrap();
    for k in 0..100u32 {
        counts.set(&mut j, &k, &u64::from(k)).unwrap();
    }
    j.commit().unwrap();

    // Stands in for the journal's own churn, at a rate that makes the race likely: files that
    // appear and disappear while the inspection lists the directory.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, dir) = (Arc::clone(&stop), dir.clone());
        std::thread::spawn(move || {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..64)
                    .map(|i| dir.join(format!("churn-{i}.tmp")))
                    .collect();
                for p in &batch {
                    std::fs::write(p, b"x").unwrap();
                }
                for p in &batch {
                    std::fs::remove_file(p).unwrap();
                }
                made += batch.len() as u64;
            }
            made
        })
    };
    let quick = InspectOptions {
        verify_snapshots: false,
        verify_checkpoints: false,
        replay_state: false,
    };
    let mut failures = Vec::new();
    for _ in 0..300 {
        match inspect(&dir, quick) {
            Ok(i) => assert!(i.in_use, "the journal is open: the inspection must say so"),
            Err(e) => failures.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let made = churn.join().unwrap();
    assert!(made > 0, "the churn thread ran");
    assert!(
        failures.is_empty(),
        "{} of 300 inspections failed, e.g. {}",
        failures.len(),
        failures[0]
    );
    j.close().unwrap();
}
