//! Replays the seed corpora of the fuzz targets through their harnesses, so that the harnesses and
//! the corpora keep working without a fuzzer: `log_recover` (`fuzz/corpus/log_recover/`, harness
//! [`statejournal::testing::fuzz_log_recover`]) and `snapshot_decode`
//! (`fuzz/corpus/snapshot_decode/`, harness [`statejournal::testing::fuzz_snapshot_decode`]) and
//! `manifest_decode` (`fuzz/corpus/manifest_decode/`, harness
//! [`statejournal::testing::fuzz_manifest_decode`]) and `ops_crash` (`fuzz/corpus/ops_crash/`,
//! harness [`statejournal::testing::fuzz_ops_crash`]). Needs the `testing` feature:
//! `cargo test --all-features`.
//!
//! The `seed-*` files of the corpora are written by `regenerate_seed_corpus` below (the snapshot
//! seeds come from [`statejournal::testing::snapshot_fuzz_seeds`]); the input formats they follow
//! are documented on the harnesses. To regenerate them (after a format change, or to add a seed to
//! the list):
//!
//! ```text
//! cargo test --all-features --test fuzz_corpus -- --ignored regenerate_seed_corpus
//! ```
//!
//! Files of other names (inputs a fuzzer found and someone chose to keep) are left alone.
//! `STATEJOURNAL_FUZZ_VERBOSE=1` makes the harness print what each recovery mode did.

use std::fs;
use std::path::{Path, PathBuf};

use statejournal::codec::frame::{encode_frame, frame_size, FrameKind};
use statejournal::codec::header::{SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use statejournal::format::{parse_segment_file_name, META_FILE};
use statejournal::testing::{
    fuzz_log_recover, fuzz_manifest_decode, fuzz_ops_crash, fuzz_snapshot_decode,
    manifest_fuzz_seeds, ops_crash_fuzz_seeds, snapshot_fuzz_seeds,
};
use statejournal::{Durability, Log, LogOptions, Lsn};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log_recover")
}

fn snapshot_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot_decode")
}

fn corpus_files() -> Vec<PathBuf> {
    files_of(corpus_dir())
}

fn files_of(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("list the corpus").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => panic!("cannot read the seed corpus {}: {e}", dir.display()),
    };
    files.sort();
    files
}

#[test]
fn corpus_passes_the_recovery_harness() {
    let files = corpus_files();
    assert!(
        !files.is_empty(),
        "the seed corpus {} is empty",
        corpus_dir().display()
    );
    let generated = files
        .iter()
        .filter(|f| {
            fs::read(f)
                .expect("read")
                .first()
                .is_some_and(|b| b & 1 == 1)
        })
        .count();
    assert!(
        generated > 0 && generated < files.len(),
        "the corpus should hold both raw and generated inputs"
    );
    for file in &files {
        let data = fs::read(file).expect("read a corpus file");
        // Shown with the panic message if this input fails.
        eprintln!("replaying {}", file.display());
        fuzz_log_recover(&data);
    }
}

#[test]
fn snapshot_corpus_passes_the_decode_harness() {
    let files = files_of(snapshot_corpus_dir());
    assert!(
        files.len() >= snapshot_fuzz_seeds().len(),
        "the seed corpus {} lacks seeds",
        snapshot_corpus_dir().display()
    );
    for file in &files {
        let data = fs::read(file).expect("read a corpus file");
        eprintln!("replaying {}", file.display());
        fuzz_snapshot_decode(&data);
    }
}

fn manifest_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/manifest_decode")
}

#[test]
fn manifest_corpus_passes_the_decode_harness_and_is_current() {
    for (name, data) in manifest_fuzz_seeds() {
        let path = manifest_corpus_dir().join(format!("seed-{name}"));
        assert!(
            fs::read(&path).ok().as_deref() == Some(&data[..]),
            "{} is missing or stale: run `cargo test --all-features --test fuzz_corpus -- --ignored regenerate_seed_corpus`",
            path.display()
        );
    }
    for file in files_of(manifest_corpus_dir()) {
        let data = fs::read(&file).expect("read a corpus file");
        eprintln!("replaying {}", file.display());
        fuzz_manifest_decode(&data);
    }
}

fn ops_crash_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops_crash")
}

#[test]
fn ops_crash_corpus_passes_the_simulator_and_is_current() {
    for (name, data) in ops_crash_fuzz_seeds() {
        let path = ops_crash_corpus_dir().join(format!("seed-{name}"));
        assert!(
            fs::read(&path).ok().as_deref() == Some(&data[..]),
            "{} is missing or stale: run `cargo test --all-features --test fuzz_corpus -- --ignored regenerate_seed_corpus`",
            path.display()
        );
    }
    for file in files_of(ops_crash_corpus_dir()) {
        let data = fs::read(&file).expect("read a corpus file");
        eprintln!("replaying {}", file.display());
        fuzz_ops_crash(&data);
    }
}

/// The committed snapshot seeds are what the writer produces today: a format change that forgot
/// to regenerate them would leave the fuzzer starting from stale files.
#[test]
fn snapshot_seeds_are_current() {
    for (name, data) in snapshot_fuzz_seeds() {
        let path = snapshot_corpus_dir().join(format!("seed-{name}"));
        assert!(
            fs::read(&path).ok().as_deref() == Some(&data[..]),
            "{} is missing or stale: run `cargo test --all-features --test fuzz_corpus -- --ignored regenerate_seed_corpus`",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The seed generator. Inputs follow the format documented on `fuzz_log_recover`.

/// One writer op of a generated input.
#[derive(Clone, Copy)]
enum W {
    /// Append a record of this many bytes (< 128).
    Small(u8),
    /// Append a record of `64 * n` bytes (n < 64).
    Large(u8),
    Commit,
    Reopen,
    /// `delete_below(last_lsn * n / 255)`.
    DeleteBelow(u8),
}

/// One damage op; `file` indexes the sorted file names (segments, then `log.meta`).
#[derive(Clone, Copy)]
enum D<'a> {
    Overwrite(u8, u16, &'a [u8]),
    Flip(u8, u16, u8),
    Zero(u8, u16, u16),
    Truncate(u8, u16),
    Delete(u8),
    Swap(u8, u8),
    Rename(u8, i8),
    Copy(u8, u16, u16, u8),
}

fn generated(close: bool, ops: &[W], damage: &[D]) -> Vec<u8> {
    assert!(ops.len() < 64);
    let mut v = vec![1, ops.len() as u8 | if close { 0x40 } else { 0 }];
    for op in ops {
        match *op {
            W::Small(n) => v.push(n & 0x7f),
            W::Large(n) => v.push(0x80 | (n & 0x3f)),
            W::Commit => v.push(0xc0),
            W::Reopen => v.push(0xc2),
            W::DeleteBelow(n) => v.extend([0xc3, n]),
        }
    }
    let op = |file: u8, kind: u8| (file << 3) | kind;
    for d in damage {
        match *d {
            D::Overwrite(f, at, bytes) => {
                v.push(op(f, 0));
                v.extend(at.to_le_bytes());
                v.push(bytes.len() as u8 - 1);
                v.extend(bytes);
            }
            D::Flip(f, at, bit) => {
                v.push(op(f, 1));
                v.extend(at.to_le_bytes());
                v.push(bit);
            }
            D::Zero(f, at, n) => {
                v.push(op(f, 2));
                v.extend(at.to_le_bytes());
                v.extend(n.to_le_bytes());
            }
            D::Truncate(f, to) => {
                v.push(op(f, 3));
                v.extend(to.to_le_bytes());
            }
            D::Delete(f) => v.push(op(f, 4)),
            D::Swap(f, g) => v.extend([op(f, 5), g]),
            D::Rename(f, delta) => v.extend([op(f, 6), delta as u8]),
            D::Copy(f, from, to, n) => {
                v.push(op(f, 7));
                v.extend(from.to_le_bytes());
                v.extend(to.to_le_bytes());
                v.push(n);
            }
        }
    }
    v
}

/// The same input with its segments written sparse (bit 7 of the flags or config byte).
fn sparse(mut input: Vec<u8>) -> Vec<u8> {
    input[1] |= 0x80;
    input
}

/// Raw-image flags.
const META_RAW: u8 = 1 << 2;
const META_DERIVED: u8 = 2 << 2;
const PAD: u8 = 0x10;
const FIX: u8 = 0x20;
const FIRST_ID: u8 = 0x40;

/// A raw input: `segments` (1 to 3) from `first_id`, then the meta file if `META_RAW`.
fn raw(flags: u8, first_id: u8, segments: &[Vec<u8>], meta: &[u8]) -> Vec<u8> {
    assert!((1..=3).contains(&segments.len()));
    let flags = flags | (segments.len() as u8 - 1);
    let mut v = vec![0, flags];
    if flags & FIRST_ID != 0 {
        v.push(first_id);
    }
    for s in segments {
        v.extend((s.len() as u16).to_le_bytes());
        v.extend(s);
    }
    if flags & (3 << 2) == META_RAW {
        v.push(meta.len() as u8);
        v.extend(meta);
    }
    v
}

/// The files of a real log written by `build` (segment size 4096, `Sync` durability): segments
/// oldest first with their trailing zeros stripped (`PAD` restores them), the id of the first,
/// and the meta file.
fn real_log(build: impl FnOnce(&Log)) -> (Vec<Vec<u8>>, u8, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions::default()
        .segment_size(4096)
        .durability(Durability::Sync);
    let log = Log::open(dir.path(), opts).expect("open");
    build(&log);
    drop(log);
    let mut segments: Vec<(u64, Vec<u8>)> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("list").path())
        .filter_map(|p| {
            let id = parse_segment_file_name(p.file_name()?.to_str()?)?;
            Some((id, fs::read(&p).expect("read")))
        })
        .collect();
    segments.sort();
    let first = u8::try_from(segments[0].0).expect("small segment id");
    let stripped = segments
        .into_iter()
        .map(|(_, mut bytes)| {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            bytes.truncate(end.div_ceil(8) * 8);
            bytes
        })
        .collect();
    let meta = fs::read(dir.path().join(META_FILE)).expect("read meta");
    (stripped, first, meta)
}

fn append(log: &Log, n: usize, len: usize) {
    for i in 0..n {
        log.append(&vec![i as u8 ^ 0x5a; len]).expect("append");
    }
}

fn commit(log: &Log) {
    log.commit().expect("commit");
}

/// Every seed: name and input.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use D::*;
    use W::*;
    // Two segments: records 1..=3 in segment 1 (durable: segment 2 follows), 4..=7 in segment 2,
    // of which 4 and 5 are committed (a sync marker says 3) and 6, 7 are not. Frames of segment 2:
    // record 4 at 64..2648, 5 at 2648..2704, marker at 2704..2736, 6 at 2736..2768, 7 at
    // 2768..2800. Files: 0 = segment 1, 1 = segment 2, 2 = log.meta.
    let base = BASE;
    // Three segments: records 1, 2 in segment 1; 3 and a marker in segment 2; 4, 5, a marker and
    // 6 in segment 3. Files: 0, 1, 2 are the segments, 3 is log.meta.
    let three = [
        Large(40),
        Small(1),
        Commit,
        Large(40),
        Commit,
        Large(40),
        Small(2),
        Commit,
        Small(3),
    ];
    let mut seeds = vec![
        ("gen-fresh-log", generated(false, &[], &[])),
        ("gen-two-segments-dropped", generated(false, &base, &[])),
        ("gen-two-segments-closed", generated(true, &base, &[])),
        (
            "gen-two-segments-dropped-sparse",
            sparse(generated(false, &base, &[])),
        ),
        ("gen-three-segments-closed", generated(true, &three, &[])),
        (
            "gen-reopen-and-delete-below",
            generated(
                false,
                &[
                    Large(40),
                    Commit,
                    Large(40),
                    Large(40),
                    Reopen,
                    Small(3),
                    DeleteBelow(200),
                    Small(9),
                    Commit,
                    Small(11),
                ],
                &[],
            ),
        ),
        (
            "gen-many-small-records",
            generated(
                false,
                &[
                    Small(1),
                    Small(2),
                    Small(3),
                    Commit,
                    Small(4),
                    Small(5),
                    Small(6),
                    Small(7),
                    Commit,
                    Small(8),
                    Small(9),
                    Commit,
                    Small(10),
                    Small(11),
                    Small(12),
                    Small(13),
                    Small(14),
                    Small(15),
                ],
                &[Flip(0, 400, 2)],
            ),
        ),
        (
            "gen-garbage-after-tail-end",
            generated(false, &base, &[Overwrite(1, 2808, b"\xab\xcd\xef\x01")]),
        ),
        (
            "gen-garbage-after-tail-end-sparse",
            sparse(generated(false, &base, &[Overwrite(1, 3000, b"\x01")])),
        ),
        (
            "gen-torn-last-record",
            generated(false, &base, &[Flip(1, 2785, 4)]),
        ),
        (
            "gen-torn-tail-truncated-mid-record",
            generated(false, &base, &[Truncate(1, 2780)]),
        ),
        (
            "gen-committed-tail-record-damaged",
            generated(false, &base, &[Flip(1, 1000, 0)]),
        ),
        (
            "gen-durable-record-damaged",
            generated(false, &base, &[Flip(0, 1000, 7)]),
        ),
        (
            "gen-durable-record-zeroed",
            generated(false, &base, &[Zero(0, 96, 100)]),
        ),
        (
            "gen-middle-segment-damaged",
            generated(true, &three, &[Flip(1, 300, 1)]),
        ),
        (
            "gen-first-segment-truncated-below-header",
            generated(false, &base, &[Truncate(0, 30)]),
        ),
        (
            "gen-middle-segment-deleted",
            generated(true, &three, &[Delete(1)]),
        ),
        (
            "gen-last-segment-deleted",
            generated(false, &base, &[Delete(1)]),
        ),
        ("gen-meta-deleted", generated(false, &base, &[Delete(2)])),
        (
            "gen-meta-overwritten",
            generated(false, &base, &[Overwrite(2, 24, b"\x07")]),
        ),
        (
            "gen-segments-swapped",
            generated(false, &base, &[Swap(0, 1)]),
        ),
        (
            "gen-last-segment-renamed",
            generated(false, &base, &[Rename(1, 1)]),
        ),
        (
            "gen-segment-header-version-flipped",
            generated(false, &base, &[Flip(1, 9, 0)]),
        ),
        (
            "gen-frame-duplicated-after-end",
            generated(false, &base, &[Copy(1, 2736, 2800, 3)]),
        ),
        (
            "gen-several-damages",
            generated(
                false,
                &three,
                &[
                    Flip(2, 500, 3),
                    Truncate(2, 3000),
                    Overwrite(2, 3100, b"xyz"),
                ],
            ),
        ),
    ];

    // Raw images of real logs, with checksums fixed after mutation.
    let (segs, _, meta) = real_log(|log| {
        append(log, 3, 40);
        commit(log);
        append(log, 2, 9);
    });
    seeds.push((
        "raw-one-segment-fixed",
        raw(META_DERIVED | PAD | FIX, 1, &segs, &[]),
    ));
    seeds.push((
        "raw-one-segment-fixed-sparse",
        sparse(raw(META_DERIVED | PAD | FIX, 1, &segs, &[])),
    ));
    seeds.push((
        "raw-one-segment-verbatim",
        raw(META_RAW | PAD, 1, &segs, &meta),
    ));
    seeds.push(("raw-one-segment-no-meta", raw(PAD | FIX, 1, &segs, &[])));
    let (segs, _, _) = real_log(|log| {
        for i in 0..5 {
            append(log, 1, 700 + 100 * i);
            commit(log);
        }
        append(log, 1, 3000);
        append(log, 2, 5);
    });
    seeds.push((
        "raw-three-segments-fixed",
        raw(META_DERIVED | PAD | FIX, 1, &segs[..3.min(segs.len())], &[]),
    ));
    let (segs, first, _) = real_log(|log| {
        for _ in 0..4 {
            append(log, 1, 3000);
            commit(log);
        }
        append(log, 1, 17);
        log.delete_below(Lsn(4)).expect("delete_below");
    });
    seeds.push((
        "raw-later-first-segment-fixed",
        raw(META_DERIVED | PAD | FIX | FIRST_ID, first, &segs, &[]),
    ));
    // Record 2 of 4 damaged where the CRC fixup cannot repair it (an unknown kind); a sync marker
    // after it proves it durable.
    let (mut segs, _, _) = real_log(|log| {
        append(log, 1, 12);
        commit(log);
        append(log, 1, 12);
        commit(log);
        append(log, 1, 12);
        commit(log);
        append(log, 1, 12);
    });
    segs[0][64 + 32 + 16] = 9; // the kind byte of record 2 (frames of 12-byte records are 32 bytes)
    seeds.push((
        "raw-marker-after-damage-fixed",
        raw(META_DERIVED | PAD | FIX, 1, &segs, &[]),
    ));
    // A fresh log whose meta file was never written (a crash during creation).
    let (segs, _, _) = real_log(|_| {});
    seeds.push(("raw-unfinished-creation", raw(PAD, 1, &segs, &[])));
    seeds.push((
        "raw-garbage",
        raw(0, 1, &[b"not a segment, not a log".repeat(4)], &[]),
    ));
    seeds.push((
        "raw-empty-segment-file",
        raw(META_DERIVED, 1, &[vec![]], &[]),
    ));
    // Recycled segments (header version 2): records 50..=52 and a marker, then an older
    // segment's frames (LSNs 10..=12 and a marker for 11), which end the written part; in the
    // second, a frame of the segment's own (LSN 54) after the older ones, which a cut zeroes.
    let marker = 11u64.to_le_bytes();
    let older: [(u64, FrameKind, &[u8]); 4] = [
        (10, FrameKind::Data, b"older ten"),
        (11, FrameKind::Data, b"older eleven"),
        (11, FrameKind::SyncMarker, &marker),
        (12, FrameKind::Data, b"older twelve"),
    ];
    let own_marker = 51u64.to_le_bytes();
    let own: [(u64, FrameKind, &[u8]); 4] = [
        (50, FrameKind::Data, b"fifty"),
        (51, FrameKind::Data, b"fifty-one"),
        (51, FrameKind::SyncMarker, &own_marker),
        (52, FrameKind::Data, b"fifty-two"),
    ];
    let frames: Vec<_> = own.iter().chain(older.iter()).copied().collect();
    seeds.push((
        "raw-recycled-older-frames",
        raw(META_DERIVED, 1, &[recycled(segment(50, &frames))], &[]),
    ));
    let mut frames = frames;
    frames.push((54, FrameKind::Data, b"own, after the older ones"));
    seeds.push((
        "raw-recycled-own-frame-after-older",
        raw(META_DERIVED, 1, &[recycled(segment(50, &frames))], &[]),
    ));
    seeds
}

/// Marks a segment image recycled: header version 2, flag bit 1, CRC redone.
fn recycled(mut seg: Vec<u8>) -> Vec<u8> {
    let mut h = SegmentHeader::decode(&seg).expect("a valid header");
    h.recycled = true;
    h.encode(&mut seg);
    seg
}

/// The two-segment log of `seeds`: records 1..=3 in segment 1, 4..=7 in segment 2.
const BASE: [W; 10] = [
    W::Small(10),
    W::Small(20),
    W::Commit,
    W::Large(40),
    W::Commit,
    W::Large(40),
    W::Small(30),
    W::Commit,
    W::Small(5),
    W::Small(7),
];

/// Inputs that failed the harness because of library bugs, each fixed since; they are also in the
/// corpus as `regression-<name>`, so the fuzzer starts from them.
///
/// * The two "non-tail" inputs: recovery accepted a segment whose successor proved it complete
///   without looking at bytes after its last record, so a damaged trailing sync marker gave a clean
///   report (even in Strict mode) and then every full read failed. Such debris is now an error in
///   Strict mode and set aside (reported as `CutReason::DebrisAfterCompleteSegment`) otherwise.
/// * The three "lsn-overflow" inputs: LSN arithmetic overflowed on forged LSNs near `u64::MAX`.
///   Headers with a base LSN above `MAX_LSN` are now refused and the scans use saturating math.
fn fuzz_regressions() -> Vec<(&'static str, Vec<u8>)> {
    let flags = META_DERIVED | PAD | FIX;
    let max = u64::MAX;
    vec![
        (
            // Non-zero bytes after the last frame of a segment that is not the last one: recovery
            // accepts the segment (clean report, even in Strict mode), then reading it fails.
            "garbage-after-end-of-non-tail-segment",
            generated(
                false,
                &BASE,
                &[D::Overwrite(0, 2752, b"\x30\x00\x00\x00\x30\x00\x00\x00")],
            ),
        ),
        (
            // The same with realistic damage (found by the fuzzer): one bit flipped in the sync
            // marker that ends segment 1 (at 2720..2752).
            "damaged-sync-marker-at-end-of-non-tail-segment",
            generated(false, &BASE, &[D::Flip(0, 2730, 0)]),
        ),
        (
            // A data frame with LSN u64::MAX: `scan_frames` overflows computing the next LSN.
            "lsn-overflow-in-scan-frames",
            raw(
                flags,
                1,
                &[segment(max, &[(max, FrameKind::Data, b"abc")])],
                &[],
            ),
        ),
        (
            // A sync marker with LSN u64::MAX after a torn record: `scan_ahead` overflows.
            "lsn-overflow-in-scan-ahead",
            raw(
                flags,
                1,
                &[segment(
                    5,
                    &[
                        (5, FrameKind::Data, b"abc"),
                        (0, FrameKind::Data, &[]), // replaced by 8 bytes of garbage below
                        (max, FrameKind::SyncMarker, &1u64.to_le_bytes()),
                    ],
                )],
                &[],
            ),
        ),
        (
            // An empty segment based at LSN u64::MAX: the append that takes LSN u64::MAX
            // succeeds, then `last_reserved_lsn` overflows computing base + count (in `sync`).
            "lsn-overflow-appending-at-u64-max",
            raw(flags, 1, &[segment(max, &[])], &[]),
        ),
    ]
}

/// Segment 1 of log 7 based at `base_lsn`, holding `frames`. A data frame with LSN 0 and no
/// payload stands for 8 bytes of garbage (0xff).
fn segment(base_lsn: u64, frames: &[(u64, FrameKind, &[u8])]) -> Vec<u8> {
    let mut seg = vec![0u8; SEGMENT_HEADER_LEN];
    SegmentHeader {
        version: FORMAT_VERSION,
        log_id: 7,
        segment_id: 1,
        base_lsn,
        prev_last_lsn: base_lsn - 1,
        prev_last_crc: 0,
        predecessor_unsynced: false,
        recycled: false,
    }
    .encode(&mut seg);
    for &(lsn, kind, payload) in frames {
        if lsn == 0 && payload.is_empty() {
            seg.extend([0xff; 8]);
            continue;
        }
        let at = seg.len();
        seg.resize(at + frame_size(payload.len()).expect("small frame"), 0);
        encode_frame(&mut seg[at..], lsn, kind, payload);
    }
    seg
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let failing: Vec<&str> = fuzz_regressions()
        .into_iter()
        .filter(|(name, data)| {
            eprintln!("replaying {name}");
            std::panic::catch_unwind(|| fuzz_log_recover(data)).is_err()
        })
        .map(|(name, _)| name)
        .collect();
    assert!(failing.is_empty(), "failing again: {failing:?}");
    // And they are in the corpus the fuzzer starts from.
    for (name, data) in fuzz_regressions() {
        let path = corpus_dir().join(format!("regression-{name}"));
        assert_eq!(
            fs::read(&path).ok().as_deref(),
            Some(&data[..]),
            "{} missing or stale",
            path.display()
        );
    }
}

#[test]
#[ignore = "regenerates the seed corpus"]
fn regenerate_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for old in corpus_files() {
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            fs::remove_file(&old).expect("remove an old seed");
        }
    }
    for (name, data) in seeds() {
        assert!(data.len() < 64 << 10, "seed {name} is too large");
        fs::write(dir.join(format!("seed-{name}")), &data).expect("write a seed");
    }
    for (name, data) in fuzz_regressions() {
        fs::write(dir.join(format!("regression-{name}")), &data).expect("write a regression input");
    }

    let dir = snapshot_corpus_dir();
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for old in files_of(dir.clone()) {
        if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            fs::remove_file(&old).expect("remove an old seed");
        }
    }
    for (name, data) in snapshot_fuzz_seeds() {
        assert!(data.len() < 64 << 10, "seed {name} is too large");
        fs::write(dir.join(format!("seed-{name}")), &data).expect("write a seed");
    }

    let dir = manifest_corpus_dir();
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, data) in manifest_fuzz_seeds() {
        fs::write(dir.join(format!("seed-{name}")), &data).expect("write a seed");
    }

    let dir = ops_crash_corpus_dir();
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, data) in ops_crash_fuzz_seeds() {
        fs::write(dir.join(format!("seed-{name}")), &data).expect("write a seed");
    }
}
