//! Checkpoints, exactly-once restore, retention and GC, and what recovery does with damaged or
//! missing snapshots, manifests and segments.

mod common;

use std::path::{Path, PathBuf};

use common::copy_dir;

use statejournal::{
    CompactionPolicy, CorruptionKind, Error, Journal, JournalOptions, KeyGroupRange, Lsn,
    ValueState,
};

fn opts() -> JournalOptions {
    JournalOptions::default()
        .segment_size(8 << 10)
        .compaction(CompactionPolicy::manual().snapshot_block_size(512))
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn write(j: &mut Journal, s: &ValueState<u32, u64>, keys: std::ops::Range<u32>, v: u64) {
    for k in keys {
        s.set(j, &k, &(v * 1000 + u64::from(k))).unwrap();
    }
}

fn read(j: &mut Journal, s: &ValueState<u32, u64>, keys: std::ops::Range<u32>) -> Vec<Option<u64>> {
    keys.map(|k| s.get(j, &k).unwrap()).collect()
}

fn expect(keys: std::ops::Range<u32>, v: u64) -> Vec<Option<u64>> {
    keys.map(|k| Some(v * 1000 + u64::from(k))).collect()
}

#[test]
fn open_at_checkpoint_restores_exactly_and_discards_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    write(&mut j, &s, 0..300, 1);
    j.compact().unwrap();
    write(&mut j, &s, 0..100, 2);
    let c1 = j.checkpoint().unwrap();
    assert_eq!(c1.id, 1);
    assert!(c1.snapshot.is_some());
    // After the checkpoint: more writes, another compaction, another checkpoint, a new state.
    write(&mut j, &s, 0..300, 3);
    let late = j.value_state::<u32, u64>("late").unwrap();
    write(&mut j, &late, 0..10, 4);
    j.compact().unwrap();
    let c2 = j.checkpoint().unwrap();
    write(&mut j, &s, 0..50, 5);
    j.close().unwrap();

    let mut r = Journal::open_at_checkpoint(dir.path(), c1.id, opts()).unwrap();
    assert_eq!(r.log().last_lsn(), c1.lsn, "{}", r.recovery());
    let mut want = expect(0..100, 2);
    want.extend(expect(100..300, 1));
    assert_eq!(read(&mut r, &s, 0..300), want);
    // The checkpoint's registry has no "late" state: registering it creates it afresh, empty.
    let late = r.value_state::<u32, u64>("late").unwrap();
    assert_eq!(read(&mut r, &late, 0..10), vec![None; 10]);
    // Checkpoint 2 and the newer snapshot were set aside, not deleted.
    let report = r.recovery().clone();
    assert!(
        report
            .set_aside
            .iter()
            .any(|p| p.to_string_lossy().contains(".ckpt.discarded")),
        "{report}"
    );
    assert!(!dir.path().join(format!("{:020}.ckpt", c2.id)).exists());
    assert_eq!(
        r.checkpoints().iter().map(|c| c.id).collect::<Vec<_>>(),
        [c1.id]
    );
    // Appends continue after the checkpoint, and new checkpoint ids never reuse discarded ones.
    s.set(&mut r, &7, &77).unwrap();
    let c3 = r.checkpoint().unwrap();
    assert!(c3.id > c2.id, "{} vs {}", c3.id, c2.id);
    r.close().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(&mut j, &7).unwrap(), Some(77));
    assert_eq!(s.get(&mut j, &8).unwrap(), Some(2008));
    assert_eq!(s.get(&mut j, &200).unwrap(), Some(1200));
}

#[test]
fn retention_keeps_the_last_n_and_gc_deletes_only_what_nothing_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts().retain_checkpoints(2)).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    let mut ids = Vec::new();
    for round in 1..=6u64 {
        write(&mut j, &s, 0..200, round);
        if round % 2 == 0 {
            j.compact().unwrap();
        }
        ids.push(j.checkpoint().unwrap().id);
    }
    let kept: Vec<u64> = j.checkpoints().iter().map(|c| c.id).collect();
    assert_eq!(kept, ids[4..]);
    assert_eq!(files(dir.path(), ".ckpt").len(), 2);
    // Only snapshots a retained checkpoint or the live log needs are left.
    let needed: Vec<PathBuf> = j
        .checkpoints()
        .iter()
        .filter_map(|c| c.snapshot.clone())
        .collect();
    for snap in files(dir.path(), ".snap") {
        assert!(
            needed.contains(&snap) || snap == *needed.last().unwrap(),
            "{snap:?} kept"
        );
    }
    // The log starts no later than the oldest retained checkpoint's snapshot needs.
    let oldest = &j.checkpoints()[0];
    assert!(j.log().first_lsn().get() <= oldest.snapshot_lsn.get() + 1);
    // Many segments were written, few remain.
    assert!(files(dir.path(), ".seg").len() < 20);
    j.close().unwrap();
    // Every retained checkpoint restores (on a copy).
    for (id, round) in [(ids[4], 5u64), (ids[5], 6)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let mut r = Journal::open_at_checkpoint(copy.path(), id, opts()).unwrap();
        assert_eq!(read(&mut r, &s, 0..200), expect(0..200, round));
    }
}

/// Flips one byte of a file.
fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Offset of a byte inside the first block of a snapshot (after its 32-byte header and the
/// block's 16-byte header).
const FIRST_BLOCK_PAYLOAD: u64 = 32 + 16 + 3;

#[test]
fn corrupt_snapshot_falls_back_to_an_older_one_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    write(&mut j, &s, 0..200, 1);
    j.compact().unwrap();
    j.checkpoint().unwrap(); // keeps the first snapshot and the log after it
    write(&mut j, &s, 0..200, 2);
    let newest = j.compact().unwrap().snapshot;
    write(&mut j, &s, 0..10, 3);
    j.close().unwrap();
    assert_eq!(files(dir.path(), ".snap").len(), 2);

    flip(&newest, FIRST_BLOCK_PAYLOAD);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let report = j.recovery().clone();
    assert_eq!(report.fallbacks.len(), 1, "{report}");
    assert!(
        report.fallbacks[0].contains(&newest.display().to_string()),
        "{report}"
    );
    assert!(report.snapshot_lsn.get() < j.log().last_lsn().get());
    let mut want = expect(0..10, 3);
    want.extend(expect(10..200, 2));
    assert_eq!(read(&mut j, &s, 0..200), want, "{report}");
    // The damaged file is kept aside, and the next compaction does not build on it.
    assert!(!newest.exists());
    assert_eq!(files(dir.path(), ".snap.corrupt").len(), 1);
    j.compact().unwrap();
    drop(j);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert!(j.recovery().fallbacks.is_empty());
    assert_eq!(read(&mut j, &s, 0..200), want);
}

#[test]
fn corrupt_snapshot_without_a_fallback_is_an_error_naming_file_and_offset() {
    for (what, offset_from_end) in [
        ("block", None),
        ("footer", Some(40u64)),
        ("trailer", Some(3)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), opts()).unwrap();
        let s = j.value_state::<u32, u64>("s").unwrap();
        for round in 1..=3 {
            write(&mut j, &s, 0..200, round); // several segments
        }
        let snap = j.compact().unwrap().snapshot;
        // The log before the snapshot is gone: no fallback to a full replay.
        assert!(j.log().first_lsn().get() > 1);
        write(&mut j, &s, 0..5, 4);
        j.close().unwrap();
        assert!(Journal::open(dir.path(), opts()).is_ok());
        let len = std::fs::metadata(&snap).unwrap().len();
        let at = offset_from_end.map_or(FIRST_BLOCK_PAYLOAD, |o| len - o);
        flip(&snap, at);
        let before: Vec<PathBuf> = files(dir.path(), "");
        let err = Journal::open(dir.path(), opts()).unwrap_err();
        let c = err.corruption().unwrap_or_else(|| panic!("{what}: {err}"));
        assert_eq!(c.path, snap, "{what}: {err}");
        assert!(
            matches!(c.kind, CorruptionKind::BadSnapshot { .. }),
            "{what}: {err}"
        );
        assert!(
            c.offset <= at,
            "{what}: offset {} past the damage at {at}",
            c.offset
        );
        // A failed open changes nothing.
        assert_eq!(files(dir.path(), ""), before, "{what}");
    }
}

#[test]
fn manifest_naming_missing_files_is_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    write(&mut j, &s, 0..200, 1);
    j.compact().unwrap();
    write(&mut j, &s, 0..200, 2);
    let c = j.checkpoint().unwrap();
    j.close().unwrap();

    // The snapshot it names is gone.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let snap = copy
        .path()
        .join(c.snapshot.as_ref().unwrap().file_name().unwrap());
    std::fs::remove_file(&snap).unwrap();
    let err = Journal::open_at_checkpoint(copy.path(), c.id, opts()).unwrap_err();
    let cor = err.corruption().unwrap_or_else(|| panic!("{err}"));
    assert!(
        matches!(cor.kind, CorruptionKind::BadManifest { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");

    // A segment it names is gone (replaced by garbage of the same name: the chain check or the
    // manifest check must catch it).
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let (seg, len) = c.segments.last().unwrap().clone();
    let seg = copy.path().join(seg.file_name().unwrap());
    flip(&seg, len - 8);
    let err = Journal::open_at_checkpoint(copy.path(), c.id, opts()).unwrap_err();
    assert!(err.corruption().is_some(), "{err}");

    // No such checkpoint.
    let err = Journal::open_at_checkpoint(dir.path(), 99, opts()).unwrap_err();
    assert!(err.to_string().contains("no checkpoint 99"), "{err}");

    // A damaged manifest does not stop a plain open; it is reported.
    flip(&c.manifest, 30);
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.recovery().damaged_manifests.len(), 1, "{}", j.recovery());
    drop(j);
    let err = Journal::open_at_checkpoint(dir.path(), c.id, opts()).unwrap_err();
    assert!(matches!(err, Error::Corruption(_)), "{err}");
}

#[test]
fn key_group_range_restore_reads_only_its_blocks() {
    // Keys of two key groups only; the snapshot's first block belongs to the lower one.
    let max = 128u16;
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts().max_key_groups(max)).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    let mut groups: Vec<(u16, u32)> = (0..5000u32)
        .map(|k| (j.key_group(&k).unwrap().0, k))
        .collect();
    groups.sort_unstable();
    let low = groups[0].0;
    let high = groups.last().unwrap().0;
    let low_keys: Vec<u32> = groups.iter().filter(|g| g.0 == low).map(|g| g.1).collect();
    let high_keys: Vec<u32> = groups.iter().filter(|g| g.0 == high).map(|g| g.1).collect();
    for &k in low_keys.iter().chain(&high_keys) {
        s.set(&mut j, &k, &u64::from(k)).unwrap();
    }
    // Enough log that compaction deletes its start: no fallback to a full replay.
    for i in 0..600u64 {
        s.set(&mut j, &high_keys[0], &i).unwrap();
    }
    s.set(&mut j, &high_keys[0], &u64::from(high_keys[0]))
        .unwrap();
    let snap = j.compact().unwrap().snapshot;
    assert!(j.log().first_lsn().get() > 1);
    j.close().unwrap();
    flip(&snap, FIRST_BLOCK_PAYLOAD); // damages key group `low` only

    let upper = KeyGroupRange::new(low + 1, max);
    let mut j = Journal::open(
        dir.path(),
        opts().max_key_groups(max).key_group_range(upper),
    )
    .unwrap();
    assert!(j.recovery().fallbacks.is_empty(), "{}", j.recovery());
    for &k in &high_keys {
        assert_eq!(s.get(&mut j, &k).unwrap(), Some(u64::from(k)));
    }
    drop(j);
    let err = Journal::open(dir.path(), opts().max_key_groups(max)).unwrap_err();
    assert_eq!(
        err.corruption().map(|c| c.path.clone()),
        Some(snap),
        "{err}"
    );
}

#[test]
fn snapshot_loads_then_only_the_tail_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    for round in 0..5 {
        write(&mut j, &s, 0..500, round);
    }
    let r = j.compact().unwrap();
    assert_eq!(r.entries, 500);
    assert!(r.records >= 2500, "{r:?}");
    write(&mut j, &s, 0..7, 9);
    j.close().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let rec = j.recovery().clone();
    assert_eq!(rec.snapshot_entries, 500, "{rec}");
    assert_eq!(rec.replayed_records, 7, "{rec}");
    assert_eq!(rec.snapshot_lsn, r.lsn);
    let mut want = expect(0..7, 9);
    want.extend(expect(7..500, 4));
    assert_eq!(read(&mut j, &s, 0..500), want);
    // The log before the snapshot is gone (no checkpoint needs it).
    assert!(j.log().first_lsn() > Lsn(1));
}

/// Found in review: a journal opened on a subset of the key groups compacted only those, and GC
/// then deleted the log holding the others.
#[test]
fn compacting_a_key_group_subset_keeps_the_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    for round in 1..=3 {
        write(&mut j, &s, 0..300, round);
    }
    j.close().unwrap();
    let half = KeyGroupRange::new(0, 64);
    let mut j = Journal::open(dir.path(), opts().key_group_range(half)).unwrap();
    let mine: Vec<u32> = (0..300u32)
        .filter(|k| half.contains(j.key_group(k).unwrap()))
        .collect();
    assert!(!mine.is_empty() && mine.len() < 300);
    for &k in &mine {
        s.set(&mut j, &k, &7).unwrap();
    }
    j.compact().unwrap();
    assert!(
        j.log().first_lsn().get() > 1,
        "GC deleted the log below the snapshot"
    );
    j.close().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    for k in 0..300u32 {
        let want = if mine.contains(&k) {
            7
        } else {
            3000 + u64::from(k)
        };
        assert_eq!(s.get(&mut j, &k).unwrap(), Some(want), "key {k}");
    }
}

/// Found in review: a restore that failed (its snapshot damaged) had already cut the log and set
/// newer snapshots aside, so the journal no longer opened at all. Every check now comes first.
#[test]
fn a_failed_restore_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts().retain_checkpoints(2)).unwrap();
    let s = j.value_state::<u32, u64>("s").unwrap();
    for round in 1..=3 {
        write(&mut j, &s, 0..300, round);
    }
    let s1 = j.compact().unwrap().snapshot;
    let c1 = j.checkpoint().unwrap();
    write(&mut j, &s, 0..300, 4);
    j.compact().unwrap();
    j.checkpoint().unwrap();
    write(&mut j, &s, 0..10, 5);
    j.close().unwrap();
    assert!(j_first_lsn(dir.path()) > 1);

    flip(&s1, FIRST_BLOCK_PAYLOAD);
    let before = files(dir.path(), "");
    let err = Journal::open_at_checkpoint(dir.path(), c1.id, opts()).unwrap_err();
    assert_eq!(
        err.corruption().map(|c| c.path.clone()),
        Some(s1.clone()),
        "{err}"
    );
    assert_eq!(
        files(dir.path(), ""),
        before,
        "a failed restore changed the directory"
    );
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let mut want = expect(0..10, 5);
    want.extend(expect(10..300, 4));
    assert_eq!(read(&mut j, &s, 0..300), want);
}

fn j_first_lsn(dir: &Path) -> u64 {
    let j = Journal::open(dir, opts()).unwrap();
    j.log().first_lsn().get()
}

/// Found in review: restoring in a directory without a journal created one (a 64 MiB segment
/// and all) before failing.
#[test]
fn restoring_where_there_is_no_journal_creates_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nothing-here");
    let err = Journal::open_at_checkpoint(&dir, 1, opts()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!dir.exists(), "{} was created", dir.display());
    let empty = tempfile::tempdir().unwrap();
    assert!(Journal::open_at_checkpoint(empty.path(), 1, opts()).is_err());
    assert_eq!(files(empty.path(), ".seg"), Vec::<PathBuf>::new());
}

/// A snapshot large enough that loading it fills several full-size arena chunks (2 MiB), which
/// a second thread faults in ahead of the inserts: every entry comes back, whole and in the
/// right chunk, for all key groups and for a subset (where the chunks prepared from the footer's
/// counts outnumber those used).
#[test]
fn a_multi_chunk_snapshot_loads_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let big = j.value_state::<u32, Vec<u8>>("big").unwrap();
    let m = j.map_state::<u32, u32, u64>("m").unwrap();
    let value = |k: u32| vec![(k % 251) as u8; 180 + (k % 37) as usize];
    const KEYS: u32 = 40_000; // ~8 MiB of entries
    for k in 0..KEYS {
        big.set(&mut j, &k, &value(k)).unwrap();
        if k % 100 == 0 {
            m.put(&mut j, &k, &(k + 1), &u64::from(k)).unwrap();
        }
    }
    let r = j.compact().unwrap();
    assert!(r.bytes > 6 << 20, "{r:?}");
    j.close().unwrap();

    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.recovery().replayed_records, 0, "{}", j.recovery());
    assert_eq!(j.recovery().snapshot_entries, u64::from(KEYS + KEYS / 100));
    for k in 0..KEYS {
        assert_eq!(big.get(&mut j, &k).unwrap(), Some(value(k)), "key {k}");
    }
    for k in (0..KEYS).step_by(100) {
        assert_eq!(m.get(&mut j, &k, &(k + 1)).unwrap(), Some(u64::from(k)));
    }
    drop(j);

    let half = KeyGroupRange::new(0, 64);
    let mut j = Journal::open(dir.path(), opts().key_group_range(half)).unwrap();
    let mut served = 0;
    for k in 0..KEYS {
        if half.contains(j.key_group(&k).unwrap()) {
            assert_eq!(big.get(&mut j, &k).unwrap(), Some(value(k)), "key {k}");
            served += 1;
        }
    }
    assert!(served > 0 && served < KEYS);
}
