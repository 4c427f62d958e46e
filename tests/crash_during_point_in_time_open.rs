//! A crash during a `PointInTime` open (issue: point-in-time recovery was not crash-safe).
//!
//! Point-in-time recovery past damaged durable data cuts the log, sets the later segments aside,
//! and then — in the journal, after the log's recovery — sets aside the snapshots and manifests
//! past the cut. A crash after the cut but before those files were set aside left a log that ends
//! before what they prove durable: the next default (`TolerateTornTail`) open refused it as lost
//! durable records (`DurabilityEvidence::Covered`), although nothing was lost and a second
//! point-in-time open finished the job. The cut of durable data is now a discard from its first
//! change on: its intent (`log.discard`) is made durable before anything is cut or set aside, and
//! any open finishes it.
//!
//! The test kills a child process at every crash point of the point-in-time open (each step that
//! changes the directory: the intent, the cut's backup, the zeroing and its second half, the meta
//! file, each segment, snapshot and manifest set aside, the intent's removal), and opens what it
//! left in every mode: each gives exactly the state the uninterrupted point-in-time open gives,
//! `inspect` predicts it, and it stays so on a reopen. Only a crash before the intent is durable
//! leaves the directory unchanged, refused by the default and strict modes as before.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use statejournal::codec::frame::{decode_frame, FrameKind};
use statejournal::codec::header::SEGMENT_HEADER_LEN;
use statejournal::format::{DISCARD_FILE, LOCK_FILE};
use statejournal::inspect::{inspect, InspectOptions, Outcome};
use statejournal::testing::{exit_at_crash_point, CRASH_POINT_EXIT_CODE};
use statejournal::{
    CompactionPolicy, CorruptionKind, DiscardCause, Durability, Error, Journal, JournalOptions,
    RecoveryMode,
};

const KEYS: u64 = 64;
const TEST: &str = "every_crash_inside_a_point_in_time_open_is_finished_by_the_next_open";
const CHILD_DIR: &str = "STATEJOURNAL_PIT_CRASH_DIR";
const CHILD_AT: &str = "STATEJOURNAL_PIT_CRASH_AT";

fn opts(mode: RecoveryMode) -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Buffered)
        .segment_size(16 << 10)
        .retain_checkpoints(10)
        .compaction(CompactionPolicy::manual())
        .recovery_mode(mode)
}

fn value(i: u64) -> String {
    format!("{i:0>100}")
}

/// The state after writes `1..=n` (write `i` sets key `i % KEYS` to `value(i)`).
fn state_after(n: u64) -> Vec<Option<String>> {
    (0..KEYS)
        .map(|k| {
            let last = n.checked_sub((n + KEYS - k) % KEYS)?;
            (last >= 1).then(|| value(last))
        })
        .collect()
}

/// What an open produced: the state, where the log ends, the checkpoints kept, the live files.
#[derive(Debug, PartialEq)]
struct Found {
    state: Vec<Option<String>>,
    last_lsn: u64,
    checkpoints: Vec<(u64, u64)>,
    live_files: BTreeSet<String>,
}

fn observe(j: &mut Journal, dir: &Path) -> Found {
    let v = j.value_state::<u64, String>("v").unwrap();
    let state = (0..KEYS).map(|k| v.get(j, &k).unwrap()).collect();
    let live_files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".seg") || n.ends_with(".snap") || n.ends_with(".ckpt") || n == "log.meta"
        })
        .collect();
    Found {
        state,
        last_lsn: j.log().last_lsn().get(),
        checkpoints: j
            .checkpoints()
            .iter()
            .map(|c| (c.id, c.lsn.get()))
            .collect(),
        live_files,
    }
}

/// Every file of a directory but `LOCK`, with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != LOCK_FILE)
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// A journal over many segments with checkpoint 1 early (so nothing is ever deleted), a snapshot
/// and checkpoints 2 and 3 later, and a record flipped in a middle segment between checkpoint 1
/// and the snapshot: damaged durable data (a later segment and the snapshot prove it). Returns
/// the LSN of the damaged record.
fn damaged_journal(dir: &Path) -> u64 {
    let mut j = Journal::open(dir, opts(RecoveryMode::TolerateTornTail)).unwrap();
    let v = j.value_state::<u64, String>("v").unwrap();
    let mut i = 0;
    let mut write = |j: &mut Journal, n: u64| {
        for _ in 0..n {
            i += 1;
            v.set(j, &(i % KEYS), &value(i)).unwrap();
        }
    };
    write(&mut j, 50);
    let c1 = j.checkpoint().unwrap();
    write(&mut j, 1200);
    j.compact().unwrap();
    let c2 = j.checkpoint().unwrap();
    write(&mut j, 300);
    let c3 = j.checkpoint().unwrap();
    assert!(
        c1.lsn < c2.snapshot_lsn && c2.lsn < c3.lsn,
        "{c1:?} {c2:?} {c3:?}"
    );
    j.close().unwrap();

    let segments = common::segment_files(dir);
    assert!(segments.len() >= 8, "want many segments: {segments:?}");
    // The first record of the third segment's second half (a middle segment: its successors
    // prove it complete, the snapshot covers it, checkpoint 1 lies before it).
    let seg = &segments[2];
    let mut img = std::fs::read(seg).unwrap();
    let mut frames = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(f) = decode_frame(&img, at) {
        if f.kind == FrameKind::Data {
            frames.push((at, f.lsn));
        }
        at = f.next;
    }
    let (at, lsn) = frames[frames.len() / 2];
    assert!(
        lsn > c1.lsn.get() && lsn < c2.snapshot_lsn.get(),
        "LSN {lsn}"
    );
    img[at + 22] ^= 0x10; // a payload byte: the frame's CRC fails
    std::fs::write(seg, &img).unwrap();
    lsn
}

/// The child: a point-in-time open of `dir` that ends the process at crash point `at`.
fn child(dir: &Path, at: u64) {
    exit_at_crash_point(at);
    let j = Journal::open(dir, opts(RecoveryMode::PointInTime)).unwrap();
    drop(j);
    println!("the open completed before crash point {at}");
}

#[test]
fn every_crash_inside_a_point_in_time_open_is_finished_by_the_next_open() {
    if let (Some(dir), Some(at)) = (std::env::var_os(CHILD_DIR), std::env::var_os(CHILD_AT)) {
        let at = at.to_str().and_then(|a| a.parse().ok()).unwrap();
        child(Path::new(&dir), at);
        return;
    }
    let original = tempfile::tempdir().unwrap();
    let damaged_lsn = damaged_journal(original.path());
    let before = contents(original.path());

    // Without a crash: what the default open refuses and point-in-time recovery makes of it.
    let refusal = |dir: &Path, mode: RecoveryMode| {
        let Err(err) = Journal::open(dir, opts(mode)) else {
            panic!("{mode:?}: damaged durable data must be refused");
        };
        let Error::Corruption(c) = &err else {
            panic!("{mode:?}: not a corruption error: {err}")
        };
        assert!(
            matches!(c.kind, CorruptionKind::DamagedRecord { expected_lsn, .. } if expected_lsn == damaged_lsn),
            "{mode:?}: {err}"
        );
        err
    };
    refusal(original.path(), RecoveryMode::TolerateTornTail);
    assert_eq!(
        contents(original.path()),
        before,
        "a refused open changes nothing"
    );
    let reference = {
        let copy = tempfile::tempdir().unwrap();
        common::copy_dir(original.path(), copy.path());
        let mut j = Journal::open(copy.path(), opts(RecoveryMode::PointInTime)).unwrap();
        assert!(j.recovery().log.lost_durable_data(), "{}", j.recovery());
        assert_eq!(j.recovery().set_aside.len(), 3, "{}", j.recovery());
        assert!(!copy.path().join(DISCARD_FILE).exists());
        observe(&mut j, copy.path())
    };
    assert_eq!(reference.last_lsn, damaged_lsn - 1);
    assert_eq!(reference.checkpoints.len(), 1, "{reference:?}");
    // The state after some prefix of the writes.
    let written = reference
        .state
        .iter()
        .flatten()
        .map(|s| s.parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(reference.state, state_after(written));

    let exe = std::env::current_exe().unwrap();
    let mut crashes = 0u64;
    let mut with_intent = 0u64;
    for at in 1.. {
        let image = tempfile::tempdir().unwrap();
        common::copy_dir(original.path(), image.path());
        let out = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, image.path())
            .env(CHILD_AT, at.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break; // the open passed every crash point
        }
        assert_eq!(
            out.status.code(),
            Some(CRASH_POINT_EXIT_CODE),
            "crash point {at}: the child failed otherwise:\n{stderr}"
        );
        crashes += 1;
        let step = stderr
            .lines()
            .find(|l| l.contains("crash point"))
            .unwrap_or("?")
            .to_string();
        eprintln!("{step}");
        // Before its intent is durable, the point-in-time open has changed nothing: that
        // directory is still refused as damaged. Any other is finished by the next open.
        let intent = image.path().join(DISCARD_FILE).exists();
        let unchanged = contents(image.path()) == before;
        with_intent += u64::from(intent);

        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::Strict,
            RecoveryMode::PointInTime,
        ] {
            let dir = tempfile::tempdir().unwrap();
            common::copy_dir(image.path(), dir.path());
            let predicted = inspect(dir.path(), InspectOptions::default()).unwrap();
            let refuses = predicted
                .problems
                .iter()
                .any(|p| p.outcome(mode) == &Outcome::Refuses);
            if unchanged && mode != RecoveryMode::PointInTime {
                assert!(refuses, "{step}, {mode:?}: inspect predicts no refusal");
                refusal(dir.path(), mode);
                continue;
            }
            let mut j = match Journal::open(dir.path(), opts(mode)) {
                Ok(j) => j,
                Err(e) => panic!("{step}: the next {mode:?} open failed: {e}"),
            };
            // `inspect`, run before the open, predicted it.
            assert!(
                !refuses,
                "{step}, {mode:?}: inspect predicted a refusal: {:?}",
                predicted.problems
            );
            assert_eq!(
                predicted.discard_after.map(|l| l.get()),
                intent.then_some(damaged_lsn - 1),
                "{step}"
            );
            assert_eq!(
                predicted.discard_cause,
                intent.then_some(DiscardCause::DurableDataDamaged),
                "{step}"
            );
            // The open that finishes the cut reports the durable data lost, as the interrupted
            // open would have (it reported the cut as `Discarded` before the intent said why).
            let finished = j.recovery().log.interrupted_discard;
            assert_eq!(
                finished.map(|d| (d.after.get(), d.cause)),
                intent.then_some((damaged_lsn - 1, DiscardCause::DurableDataDamaged)),
                "{step}, {mode:?}: {}",
                j.recovery()
            );
            assert!(
                j.recovery().log.lost_durable_data(),
                "{step}, {mode:?}: {}",
                j.recovery()
            );
            assert_eq!(predicted.log.last_lsn.get(), reference.last_lsn, "{step}");
            let got = observe(&mut j, dir.path());
            assert_eq!(got, reference, "{step}, {mode:?}: {}", j.recovery());
            assert!(
                !dir.path().join(DISCARD_FILE).exists(),
                "{step}, {mode:?}: the discard is complete"
            );
            drop(j);
            // And it stays so: a default reopen finds nothing to do.
            let mut j = Journal::open(dir.path(), opts(RecoveryMode::TolerateTornTail)).unwrap();
            assert!(j.recovery().log.is_clean(), "{step}: {}", j.recovery());
            assert!(
                j.recovery().set_aside.is_empty(),
                "{step}: {}",
                j.recovery()
            );
            assert_eq!(observe(&mut j, dir.path()), reference, "{step}");
        }
    }
    // The intent, the backup, both halves of the zeroing, log.meta, the later segments, the
    // snapshot, two manifests and the intent's removal: every one of them was crashed at.
    assert!(crashes >= 12, "only {crashes} crash points");
    assert_eq!(
        crashes - with_intent,
        1,
        "every crash but the first (before it) finds the intent"
    );
}
