//! A record that passes its frame checks (CRC, lengths) but is not a state mutation: open
//! (replay) and compaction must both refuse it with an error naming the segment file and the
//! frame's offset, and change nothing on disk.

use statejournal::{CompactionPolicy, Error, Journal, JournalOptions, ValueState};

/// Builds a journal with a few good records, then one foreign record appended to its raw log.
/// Returns the directory and the foreign record's LSN.
fn journal_with_foreign_record() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default().compaction(CompactionPolicy::manual());
    let mut j = Journal::open(dir.path(), opts).unwrap();
    let v: ValueState<u32, u32> = j.value_state("v").unwrap();
    for i in 0..100 {
        v.set(&mut j, &i, &(i * 2)).unwrap();
    }
    // 0xFF is no op code of the record format (docs/FORMAT.md).
    let lsn = j.log().append(&[0xFF, 1, 2, 3, 4, 5, 6, 7]).unwrap().get();
    j.log().sync().unwrap();
    drop(j);
    (dir, lsn)
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Checks that `err` names a segment file of `dir` and the offset of the frame of `lsn` in it.
fn assert_names_frame(err: &Error, dir: &std::path::Path, want_lsn: u64) {
    let Error::InvalidRecord {
        path, offset, lsn, ..
    } = err
    else {
        panic!("expected InvalidRecord, got {err:?}");
    };
    assert_eq!(*lsn, want_lsn, "{err}");
    assert_eq!(path.parent(), Some(dir), "{err}");
    assert!(path.extension().is_some_and(|e| e == "seg"), "{err}");
    let offset = offset.unwrap_or_else(|| panic!("no offset in {err}")) as usize;
    // The frame there: [crc u32 | len u32 | lsn u64 | ...] (docs/FORMAT.md).
    let bytes = std::fs::read(path).unwrap();
    let frame_lsn = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
    assert_eq!(
        frame_lsn, want_lsn,
        "the offset in {err} is not the record's frame"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("at offset {offset}")), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn replay_names_the_segment_and_offset_of_an_invalid_record() {
    let (dir, lsn) = journal_with_foreign_record();
    let before = files(dir.path());
    let err = Journal::open(dir.path(), JournalOptions::default()).unwrap_err();
    assert_names_frame(&err, dir.path(), lsn);
    assert_eq!(
        files(dir.path()),
        before,
        "a failed open changed the directory"
    );
}

#[test]
fn compaction_names_the_segment_and_offset_of_an_invalid_record() {
    // Replay refuses the record at open, so compaction meets it only in a journal that is
    // open already: append the foreign record through the live journal, then compact.
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default().compaction(CompactionPolicy::manual());
    let mut j = Journal::open(dir.path(), opts).unwrap();
    let v: ValueState<u32, u32> = j.value_state("v").unwrap();
    for i in 0..100 {
        v.set(&mut j, &i, &i).unwrap();
    }
    let lsn = j.log().append(&[0xFF, 0, 0, 0]).unwrap().get();
    v.set(&mut j, &7, &70).unwrap();
    let err = j.compact().unwrap_err();
    assert_names_frame(&err, dir.path(), lsn);
    // The journal still serves its state.
    assert_eq!(v.get(&mut j, &7).unwrap(), Some(70));
    assert_eq!(v.get(&mut j, &99).unwrap(), Some(99));
}
