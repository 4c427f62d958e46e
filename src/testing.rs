//! Test support (feature `testing`): fault injection for crash and failure tests.
//!
//! A [`FaultInjector`] passed in [`LogOptions::fault_injector`](crate::LogOptions::fault_injector)
//! makes chosen flushes or segment allocations fail, so tests can prove what the log does when the
//! disk misbehaves: a failed flush poisons the log; a failed allocation is [`Error::NoSpace`](crate::Error::NoSpace)
//! and leaves the log readable.
//!
//! Crash points ([`exit_at_crash_point`]) end a process at a chosen step inside an open, so that
//! a test can show what the next open makes of an open killed at every step.
//!
//! The [`CrashSimulator`] puts a workload of one's own through simulated power losses: it records
//! crash points while the workload runs, builds crash images that change only what was not durable
//! at each, and checks that recovering each gives the model's state (see `docs/TESTING.md`).
//!
//! Also the fuzz harnesses ([`fuzz_log_recover`], [`fuzz_snapshot_decode`] and its seeds), and the
//! `bench_*` helpers through which `benches/snapshot.rs` drives the crate-private snapshot files.

mod crash;
mod fuzz_ops;

pub use crash::{
    CrashSimulator, DamageCheck, DamageOutcome, DamageReport, DamagedFile, SimFailure, SimReport,
};
pub use fuzz_ops::{fuzz_ops_crash, ops_crash_fuzz_seeds};

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::codec::frame::{
    decode_frame, FrameKind, CRC_OFFSET, FRAME_ALIGN, FRAME_HEADER_LEN, LEN_OFFSET,
};
use crate::codec::header::SEGMENT_HEADER_LEN;
use crate::codec::meta::{LogMeta, META_LEN};
use crate::snapshot::{self, SnapshotReader, SnapshotWriter, StateInfo};
use crate::{format, Durability, KeyGroup, KeyGroupRange, Log, LogOptions, Lsn, RecoveryMode};

/// Counts flushes and allocations down to an injected failure.
#[derive(Debug)]
pub struct FaultInjector {
    sync_countdown: AtomicI64,
    alloc_countdown: AtomicI64,
    writeback_countdown: AtomicI64,
    syncs: AtomicU64,
    defer_directory_syncs: AtomicBool,
    /// Compactions wait at their start while this is true; the count says how many are waiting.
    hold: std::sync::Mutex<(bool, u64)>,
    held: std::sync::Condvar,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultInjector {
    /// An injector that injects nothing until told to.
    pub fn new() -> Self {
        FaultInjector {
            sync_countdown: AtomicI64::new(-1),
            alloc_countdown: AtomicI64::new(-1),
            writeback_countdown: AtomicI64::new(-1),
            syncs: AtomicU64::new(0),
            defer_directory_syncs: AtomicBool::new(false),
            hold: std::sync::Mutex::new((false, 0)),
            held: std::sync::Condvar::new(),
        }
    }

    /// While `yes`, a journal's compactions (automatic or forced) wait at their start, before
    /// they read anything: a compaction that cannot keep up with the writers, on demand.
    pub fn hold_compactions(&self, yes: bool) {
        let mut h = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        h.0 = yes;
        self.held.notify_all();
    }

    /// How many compactions are waiting at their start now (see [`Self::hold_compactions`]).
    pub fn compactions_held(&self) -> u64 {
        self.hold.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Called by a compaction at its start: waits while compactions are held.
    pub(crate) fn on_compaction(&self) {
        let mut h = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if !h.0 {
            return;
        }
        h.1 += 1;
        self.held.notify_all();
        while h.0 {
            h = self.held.wait(h).unwrap_or_else(|e| e.into_inner());
        }
        h.1 -= 1;
    }

    /// The next `n` flushes succeed; the one after fails with EIO, and so do all later ones.
    pub fn fail_sync_after(&self, n: u64) {
        self.sync_countdown.store(n as i64, Ordering::SeqCst);
    }

    /// The next `n` writebacks the log's background thread starts (`sync_file_range`, behind the
    /// appenders in `Buffered`/`Periodic` mode, ahead of them in `Sync` mode) succeed; the one
    /// after fails with EIO, and so do all later ones. Flushes are not affected.
    pub fn fail_writeback_after(&self, n: u64) {
        self.writeback_countdown.store(n as i64, Ordering::SeqCst);
    }

    pub(crate) fn on_writeback(&self) -> io::Result<()> {
        count_down_to_eio(&self.writeback_countdown)
    }

    /// The next `n` segment allocations succeed; the one after fails with ENOSPC (once).
    pub fn fail_allocation_after(&self, n: u64) {
        self.alloc_countdown.store(n as i64, Ordering::SeqCst);
    }

    /// While `yes`, the log's background thread leaves the directory entries of segments that
    /// non-syncing rolls (`Buffered`, `Periodic`) created unsynced; flushes still sync them before
    /// they acknowledge anything. Undurable segment creations then pile up, so that a crash test
    /// can lose them in any subset (the simulator's out-of-order creation loss).
    pub fn defer_directory_syncs(&self, yes: bool) {
        self.defer_directory_syncs.store(yes, Ordering::SeqCst);
    }

    pub(crate) fn directory_syncs_deferred(&self) -> bool {
        self.defer_directory_syncs.load(Ordering::SeqCst)
    }

    /// How many flushes were attempted.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    pub(crate) fn on_sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        count_down_to_eio(&self.sync_countdown)
    }

    pub(crate) fn on_allocate(&self) -> io::Result<()> {
        let left = self.alloc_countdown.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            self.alloc_countdown.store(-1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.alloc_countdown.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One call against a countdown (negative: disarmed): `Ok` while it is above zero (counting it
/// down), EIO once it reaches zero, and on every call after.
fn count_down_to_eio(countdown: &AtomicI64) -> io::Result<()> {
    let left = countdown.load(Ordering::SeqCst);
    if left < 0 {
        return Ok(());
    }
    if left == 0 {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    countdown.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

/// Crash points passed in this process since [`exit_at_crash_point`] last armed them.
static CRASH_POINTS_PASSED: AtomicU64 = AtomicU64::new(0);
/// The crash point that ends the process (0: none).
static CRASH_AT: AtomicU64 = AtomicU64::new(0);

/// The exit code of a process ended at a crash point ([`exit_at_crash_point`]).
pub const CRASH_POINT_EXIT_CODE: i32 = 86;

/// Arms the crash points of this process: the `n`-th one reached from now on (1-based) ends the
/// process at once with [`CRASH_POINT_EXIT_CODE`] — no destructor runs, no buffer is flushed,
/// nothing more is written: the directory is left as a `kill -9` at that moment would leave it.
/// `0` disarms them.
///
/// Crash points mark each step at which an open (log recovery, a journal's open, a restore's
/// discard) changes the directory: before it writes the discard intent, saves or zeroes a cut,
/// rewrites `log.meta`, renames a file aside, removes a leftover or the intent. They are
/// process-wide, so arm them only in a process that does nothing else meanwhile (a child process
/// that runs one open, as `tests/crash_during_point_in_time_open.rs` does); a test raises `n`
/// until the open completes.
pub fn exit_at_crash_point(n: u64) {
    CRASH_POINTS_PASSED.store(0, Ordering::SeqCst);
    CRASH_AT.store(n, Ordering::SeqCst);
}

/// How many crash points this process passed since [`exit_at_crash_point`] last armed them (or
/// since it started).
pub fn crash_points_passed() -> u64 {
    CRASH_POINTS_PASSED.load(Ordering::SeqCst)
}

/// A crash point (see [`exit_at_crash_point`]): `what` says which step comes next.
pub(crate) fn crash_point(what: &'static str) {
    let n = CRASH_POINTS_PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if CRASH_AT.load(Ordering::SeqCst) == n {
        // Straight to the stderr handle (unbuffered); then gone.
        let _ = io::Write::write_all(
            &mut io::stderr(),
            format!("statejournal: crash point {n}, before {what}: exiting\n").as_bytes(),
        );
        std::process::exit(CRASH_POINT_EXIT_CODE);
    }
}

/// A uniquely named directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("statejournal-fuzz-{}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The crash-recovery fuzz harness, shared by the `log_recover` fuzz target (`fuzz/`) and the
/// `fuzz_corpus` test that replays the seed corpus (`fuzz/corpus/log_recover/`).
///
/// `data` describes the contents of a log directory. The directory is written into a fresh
/// temporary directory (under [`std::env::temp_dir`]: point `TMPDIR` at a tmpfs to fuzz fast) once
/// for each [`RecoveryMode`], opened, and checked. Any violated invariant panics: that is how the
/// fuzzer reports a finding.
///
/// # Input format
///
/// Integers are little-endian; reading past the end of `data` yields zeros (and empty slices).
///
/// * byte 0, the **selector**: bit 0 clear selects a raw image, set a generated one.
/// * **Raw image** (selector bit 0 clear): the files are taken from the input.
///   * flags byte: bits 0–1 give the segment count (`1 + bits % 3`); bits 2–3 the meta file
///     (0: none, 1: raw bytes from the input, 2 and 3: derived from the first segment: its log id,
///     segment range first..=last); bit 4 pads each segment with zeros to 4096 bytes; bit 5 fixes
///     the checksums (segment header, every plausible frame, meta file) so that mutations get past
///     them; bit 6 reads the first segment id from the next byte (otherwise 1); bit 7 writes the
///     segments sparse (see below).
///   * then per segment: a `u16` length and that many bytes, written as
///     [`segment_file_name`](crate::format::segment_file_name)`(first + i)`;
///   * then, for meta mode 1: a `u8` length and that many bytes, written as `log.meta`.
/// * **Generated image** (selector bit 0 set): a valid log is written with the real writer, then
///   damaged.
///   * config byte: bits 0–5 are the number of writer ops; bit 6 closes the log at the end
///     (flushing it) instead of dropping it; bit 7 writes the segments sparse.
///   * writer ops, one byte `g` each: `g < 0x80` appends a record of `g` bytes; `0x80..0xc0`
///     appends one of `(g & 0x3f) * 64` bytes (at most what fits a 4096-byte segment); from `0xc0`,
///     `g & 3` is 0 or 1: commit (durability is `Sync`: a flush and a sync marker), 2: drop and
///     reopen the log, 3: `delete_below(last_lsn * next_byte / 255)`. Payloads total at most
///     12 KiB, so a log has at most four segments.
///   * then up to 8 damage ops until the input ends, op byte `d`: the file is
///     `files[(d >> 3) % files.len()]` (sorted names: segments, then `log.meta`), `d & 7` is
///     0: overwrite at `u16 % (len + 1)` with `1 + u8 % 16` bytes from the input (may extend the
///     file); 1: flip bit `u8 & 7` of byte `u16 % len`; 2: zero `u16` bytes from
///     `u16 % (len + 1)`; 3: truncate to `u16 % (len + 1)`; 4: delete; 5: swap contents with
///     `files[u8 % files.len()]`; 6: rename a segment to id `+ (u8 as i8)`; 7: copy
///     `8 * (1 + u8 % 32)` bytes from `u16 % len` to `u16 % len` within the file.
///
/// A segment written sparse has its trailing zeros left as a hole (the data is written, then the
/// file extended), the way a preallocated file system extent reads: recovery's search for the end
/// of the data then takes its `SEEK_DATA`/`SEEK_HOLE` path.
///
/// # Invariants checked
///
/// * `Log::open` returns (no panic, no hang). An error is a corruption or unsupported-version
///   error whose message is non-empty and names a file of the directory (`Error::path`). In
///   `TolerateTornTail` and `Strict` mode an error leaves every file as it was (the open may only
///   remove leftover segments below the meta file's first segment).
/// * On success: reading from LSN 0 yields no error and LSNs increasing by one from `first_lsn`,
///   consistent with the recovery report (record count, first and last LSN); files the report
///   names as set aside exist; a clean report changed no segment byte. The log then reopens in
///   `Strict` mode cleanly with the same records, takes one more append with the next LSN, and
///   reopens cleanly with that record added.
/// * Across modes: if `Strict` opens the image, the others open it cleanly with the same records;
///   if `TolerateTornTail` does, `PointInTime` does with the same records and cuts; a clean open in
///   any mode means `Strict` opens it too.
/// * Generated images: with no damage every mode opens cleanly with exactly the written records;
///   otherwise every written record whose frame lies wholly before the first damaged byte
///   (ordered by segment id, then offset; damage to `log.meta` protects nothing) is recovered
///   intact by every successful open. This covers the committed records when the damage only hit
///   bytes after the last commit. A cleanly dropped log reopens cleanly (writer op 2).
///
/// Set `STATEJOURNAL_FUZZ_VERBOSE` to print what each mode's open did.
///
/// # Panics
///
/// When an invariant is violated, or the temporary directory cannot be written.
pub fn fuzz_log_recover(data: &[u8]) {
    /// Segment size of every log the harness writes: small, so that logs roll after a few records.
    const SEGMENT_SIZE: usize = 4096;
    /// Largest file a damage op may grow.
    const MAX_FILE: usize = 64 << 10;
    const MAX_DAMAGE_OPS: usize = 8;
    const MAX_GENERATED_PAYLOAD: usize = 3 * SEGMENT_SIZE;
    /// The header CRC is the header's last field (see `codec::header`).
    const HEADER_CRC_AT: usize = SEGMENT_HEADER_LEN - 4;
    /// The log id field of the segment header (see `codec::header`).
    const HEADER_LOG_ID_AT: usize = 16;
    /// The meta CRC covers bytes `0..40` and is followed by 4 reserved bytes (see `codec::meta`).
    const META_CRC_AT: usize = META_LEN - 8;

    /// File name to contents.
    type Image = BTreeMap<String, Vec<u8>>;
    /// `(lsn, payload)` of the records of a log.
    type Records = Vec<(u64, Vec<u8>)>;

    struct Input<'a>(&'a [u8]);

    impl<'a> Input<'a> {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        fn u8(&mut self) -> u8 {
            match self.0.split_first() {
                Some((&b, rest)) => {
                    self.0 = rest;
                    b
                }
                None => 0,
            }
        }

        fn u16(&mut self) -> u16 {
            u16::from_le_bytes([self.u8(), self.u8()])
        }

        fn bytes(&mut self, n: usize) -> &'a [u8] {
            let (head, rest) = self.0.split_at(n.min(self.0.len()));
            self.0 = rest;
            head
        }
    }

    /// What a generated image promises.
    struct Expected {
        /// Every record the writer left in the log.
        written: Records,
        /// Whether no damage op was applied.
        undamaged: bool,
        /// The written records that lie wholly before the first damaged byte.
        protected: Records,
    }

    /// What one successful recovery produced.
    struct Outcome {
        records: Records,
        clean: bool,
        cuts: usize,
    }

    fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn write_image(image: &Image, dir: &Path, sparse: bool) {
        for (name, bytes) in image {
            let path = dir.join(name);
            let data = match format::parse_segment_file_name(name) {
                Some(_) if sparse => bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1),
                _ => bytes.len(),
            };
            fs::write(&path, &bytes[..data])
                .and_then(|()| fs::File::options().write(true).open(&path))
                .and_then(|f| f.set_len(bytes.len() as u64))
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }

    /// Every regular file of `dir` but the lock file.
    fn read_image(dir: &Path) -> Image {
        let mut image = Image::new();
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == format::LOCK_FILE || !entry.path().is_file() {
                continue;
            }
            let bytes = fs::read(entry.path())
                .unwrap_or_else(|e| panic!("read {}: {e}", entry.path().display()));
            image.insert(name, bytes);
        }
        image
    }

    /// Data frames of a segment image as `(lsn, end of the frame and its padding)`, walked from
    /// the header as recovery does, up to the first frame that does not decode.
    fn data_frames(buf: &[u8]) -> Vec<(u64, usize)> {
        let mut frames = Vec::new();
        let mut at = SEGMENT_HEADER_LEN;
        while let Ok(f) = decode_frame(buf, at) {
            if f.kind == FrameKind::Data {
                frames.push((f.lsn, f.next));
            }
            at = f.next;
        }
        frames
    }

    /// Rewrites the header CRC and the CRC of every plausible frame (any aligned offset whose
    /// length field fits), so that mutated fields are judged by recovery's logic, not its CRCs.
    fn fix_segment_checksums(buf: &mut [u8]) {
        if buf.len() >= SEGMENT_HEADER_LEN {
            let crc = crc32fast::hash(&buf[..HEADER_CRC_AT]);
            buf[HEADER_CRC_AT..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        }
        let mut at = SEGMENT_HEADER_LEN;
        while at + FRAME_HEADER_LEN <= buf.len() {
            let len = le_u32(buf, at + LEN_OFFSET).map_or(0, |l| l as usize);
            if len >= FRAME_HEADER_LEN && len <= buf.len() - at {
                let crc = crc32fast::hash(&buf[at + LEN_OFFSET..at + len]);
                buf[at + CRC_OFFSET..at + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
                at = (at + len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1);
            } else {
                at += FRAME_ALIGN;
            }
        }
    }

    /// The files of a raw input, and whether to write them sparse.
    fn raw_image(inp: &mut Input) -> (Image, bool) {
        let flags = inp.u8();
        let sparse = flags & 0x80 != 0;
        let segments = 1 + u64::from(flags & 3) % 3;
        let meta_mode = (flags >> 2) & 3;
        let pad = flags & 0x10 != 0;
        let fix = flags & 0x20 != 0;
        let first = if flags & 0x40 != 0 {
            u64::from(inp.u8())
        } else {
            1
        };
        let mut image = Image::new();
        let mut log_id = 0;
        for i in 0..segments {
            let len = usize::from(inp.u16());
            let mut bytes = inp.bytes(len).to_vec();
            if fix {
                fix_segment_checksums(&mut bytes);
            }
            if pad && bytes.len() < SEGMENT_SIZE {
                bytes.resize(SEGMENT_SIZE, 0);
            }
            if i == 0 {
                if let Some(id) = bytes.get(HEADER_LOG_ID_AT..HEADER_LOG_ID_AT + 8) {
                    log_id = id.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
                }
            }
            image.insert(format::segment_file_name(first + i), bytes);
        }
        let meta = match meta_mode {
            0 => return (image, sparse),
            1 => {
                let len = usize::from(inp.u8());
                let mut bytes = inp.bytes(len).to_vec();
                if fix && bytes.len() >= META_CRC_AT + 4 {
                    let crc = crc32fast::hash(&bytes[..META_CRC_AT]);
                    bytes[META_CRC_AT..META_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
                }
                bytes
            }
            _ => LogMeta {
                log_id,
                first_segment: first,
                last_segment: first + segments - 1,
            }
            .encode()
            .to_vec(),
        };
        image.insert(format::META_FILE.to_string(), meta);
        (image, sparse)
    }

    /// Writes a log as the writer ops say; returns its files, its records and whether to write
    /// the files sparse.
    fn generate(inp: &mut Input) -> (Image, Records, bool) {
        let config = inp.u8();
        let ops = config & 0x3f;
        let close = config & 0x40 != 0;
        let sparse = config & 0x80 != 0;
        let dir = TempDir::new();
        let opts = LogOptions::default()
            .segment_size(SEGMENT_SIZE as u64)
            .durability(Durability::Sync);
        let open = || {
            Log::open(dir.path(), opts.clone())
                .unwrap_or_else(|e| panic!("the writer could not open its log: {e}"))
        };
        let max_payload =
            (SEGMENT_SIZE - SEGMENT_HEADER_LEN - FRAME_HEADER_LEN) & !(FRAME_ALIGN - 1);
        let mut budget = MAX_GENERATED_PAYLOAD;
        let mut log = open();
        for _ in 0..ops {
            let g = inp.u8();
            let len = match g >> 6 {
                0 | 1 => usize::from(g),
                2 => (usize::from(g & 0x3f) * 64).min(max_payload),
                _ => {
                    match g & 3 {
                        0 | 1 => {
                            log.commit()
                                .unwrap_or_else(|e| panic!("commit failed: {e}"));
                        }
                        2 => {
                            drop(log);
                            log = open();
                            let report = log.recovery_report();
                            assert!(
                                report.is_clean(),
                                "a log dropped without damage reopened with cuts: {report}"
                            );
                        }
                        _ => {
                            let last = log.last_lsn().get();
                            let below = last * u64::from(inp.u8()) / 255;
                            log.delete_below(Lsn(below))
                                .unwrap_or_else(|e| panic!("delete_below({below}) failed: {e}"));
                        }
                    }
                    continue;
                }
            };
            if len > budget {
                continue;
            }
            budget -= len;
            let lsn = log.last_lsn().get() + 1;
            let payload: Vec<u8> = (0..len)
                .map(|i| (lsn as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect();
            let got = log
                .append(&payload)
                .unwrap_or_else(|e| panic!("append failed: {e}"));
            assert_eq!(got, Lsn(lsn), "append returned the wrong LSN");
        }
        let written: Records = log
            .read_from(Lsn(0))
            .map(|r| match r {
                Ok(r) => (r.lsn.get(), r.payload.to_vec()),
                Err(e) => panic!("reading back the written log failed: {e}"),
            })
            .collect();
        if close {
            log.close().unwrap_or_else(|e| panic!("close failed: {e}"));
        } else {
            drop(log);
        }
        (read_image(dir.path()), written, sparse)
    }

    /// Lowers `first` to where damage to file `name` at `offset` starts. Damage to anything but a
    /// segment (the meta file) protects nothing.
    fn damaged_at(first: &mut Option<(u64, usize)>, name: &str, offset: usize) {
        let at = match format::parse_segment_file_name(name) {
            Some(id) => (id, offset & !(FRAME_ALIGN - 1)),
            None => (0, 0),
        };
        *first = Some(first.map_or(at, |f| f.min(at)));
    }

    /// Applies the damage ops; returns where the earliest damage is, `None` if none was applied.
    fn damage(image: &mut Image, inp: &mut Input) -> Option<(u64, usize)> {
        let mut first = None;
        for _ in 0..MAX_DAMAGE_OPS {
            if inp.is_empty() {
                break;
            }
            let op = inp.u8();
            let names: Vec<String> = image.keys().cloned().collect();
            let Some(name) = names
                .get(usize::from(op >> 3) % names.len().max(1))
                .cloned()
            else {
                break;
            };
            let Some(file) = image.get_mut(&name) else {
                break;
            };
            let len = file.len();
            match op & 7 {
                0 => {
                    let at = usize::from(inp.u16()) % (len + 1);
                    let n = 1 + usize::from(inp.u8() % 16);
                    let bytes = inp.bytes(n);
                    let end = (at + bytes.len()).min(MAX_FILE);
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    let n = end.saturating_sub(at);
                    file[at..end].copy_from_slice(&bytes[..n]);
                    damaged_at(&mut first, &name, at.min(len));
                }
                1 => {
                    let at = usize::from(inp.u16());
                    let bit = inp.u8() & 7;
                    if len > 0 {
                        file[at % len] ^= 1 << bit;
                        damaged_at(&mut first, &name, at % len);
                    }
                }
                2 => {
                    let at = usize::from(inp.u16()) % (len + 1);
                    let end = at.saturating_add(usize::from(inp.u16())).min(len);
                    file[at..end].fill(0);
                    damaged_at(&mut first, &name, at);
                }
                3 => {
                    let to = usize::from(inp.u16()) % (len + 1);
                    file.truncate(to);
                    damaged_at(&mut first, &name, to);
                }
                4 => {
                    image.remove(&name);
                    damaged_at(&mut first, &name, 0);
                }
                5 => {
                    let other = names[usize::from(inp.u8()) % names.len()].clone();
                    if other != name {
                        let a = image.remove(&name).unwrap_or_default();
                        let b = image.insert(other.clone(), a).unwrap_or_default();
                        image.insert(name.clone(), b);
                        damaged_at(&mut first, &name, 0);
                        damaged_at(&mut first, &other, 0);
                    }
                }
                6 => {
                    let delta = i64::from(inp.u8() as i8);
                    let target = format::parse_segment_file_name(&name)
                        .and_then(|id| id.checked_add_signed(delta));
                    if let Some(target) = target {
                        let to = format::segment_file_name(target);
                        if let Some(bytes) = image.remove(&name) {
                            image.insert(to.clone(), bytes);
                        }
                        damaged_at(&mut first, &name, 0);
                        damaged_at(&mut first, &to, 0);
                    }
                }
                _ => {
                    let from = usize::from(inp.u16());
                    let to = usize::from(inp.u16());
                    let n = 8 * (1 + usize::from(inp.u8() % 32));
                    if len > 0 {
                        let (from, to) = (from % len, to % len);
                        let n = n.min(len - from).min(len - to);
                        file.copy_within(from..from + n, to);
                        damaged_at(&mut first, &name, to);
                    }
                }
            }
        }
        first
    }

    /// The written records whose frames lie wholly before `first_damage`.
    fn protected(image: &Image, written: &Records, first_damage: (u64, usize)) -> Records {
        let mut safe = BTreeMap::new();
        for (name, bytes) in image {
            let Some(id) = format::parse_segment_file_name(name) else {
                continue;
            };
            for (lsn, end) in data_frames(bytes) {
                if (id, end) <= first_damage {
                    safe.insert(lsn, ());
                }
            }
        }
        written
            .iter()
            .filter(|(lsn, _)| safe.contains_key(lsn))
            .cloned()
            .collect()
    }

    fn read_all(log: &Log, what: &str) -> Records {
        log.read_from(Lsn(0))
            .map(|r| match r {
                Ok(r) => (r.lsn.get(), r.payload.to_vec()),
                Err(e) => panic!("{what}: reading the recovered log failed: {e}"),
            })
            .collect()
    }

    /// Records and report agree: LSNs consecutive from `first_lsn`, count, last LSN.
    fn check_records(log: &Log, records: &Records, what: &str) {
        let report = log.recovery_report();
        let first = log.first_lsn().get();
        assert_eq!(
            report.first_lsn.get(),
            first,
            "{what}: report vs log first LSN"
        );
        for (i, (lsn, _)) in records.iter().enumerate() {
            assert_eq!(
                u128::from(*lsn),
                u128::from(first) + i as u128,
                "{what}: record {i} has LSN {lsn}, first LSN is {first}"
            );
        }
        assert_eq!(
            report.records,
            records.len() as u64,
            "{what}: the report counts other records than were read ({report})"
        );
        let last = u128::from(first) + records.len() as u128 - 1;
        assert_eq!(
            u128::from(report.last_lsn.get()),
            last,
            "{what}: report's last LSN ({report})"
        );
        assert_eq!(
            log.last_lsn(),
            report.last_lsn,
            "{what}: log vs report last LSN"
        );
    }

    fn check_error(e: &crate::Error, dir: &Path, what: &str) {
        let msg = e.to_string();
        assert!(!msg.trim().is_empty(), "{what}: empty error message: {e:?}");
        assert!(
            matches!(
                e,
                crate::Error::Corruption(_) | crate::Error::UnsupportedVersion { .. }
            ),
            "{what}: recovery failed with an unexpected kind of error: {e:?}"
        );
        let path = e
            .path()
            .unwrap_or_else(|| panic!("{what}: the error names no file: {e:?}"));
        assert!(
            path.starts_with(dir),
            "{what}: the error names a file outside the log directory: {e}"
        );
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(
            name.is_some_and(|n| msg.contains(&n)),
            "{what}: the message does not name the file: {msg}"
        );
    }

    /// A failed open changed nothing but may have removed leftovers of an interrupted deletion.
    fn check_unchanged(before: &Image, after: &Image, e: &crate::Error, what: &str) {
        for (name, bytes) in after {
            assert!(
                before.get(name) == Some(bytes),
                "{what}: the open failed ({e}) but created or changed {name}"
            );
        }
        let first_segment = before
            .get(format::META_FILE)
            .and_then(|m| LogMeta::decode(m).ok())
            .map(|m| m.first_segment);
        for name in before.keys().filter(|n| !after.contains_key(*n)) {
            let leftover = format::parse_segment_file_name(name)
                .zip(first_segment)
                .is_some_and(|(id, first)| id < first);
            assert!(leftover, "{what}: the open failed ({e}) but removed {name}");
        }
    }

    fn run(
        image: &Image,
        sparse: bool,
        mode: RecoveryMode,
        expected: Option<&Expected>,
    ) -> Result<Outcome, String> {
        let what = format!("{mode:?}");
        let what = what.as_str();
        let dir = TempDir::new();
        write_image(image, dir.path(), sparse);
        let opts = LogOptions::default()
            .segment_size(SEGMENT_SIZE as u64)
            .recovery_mode(mode);
        let strict = opts.clone().recovery_mode(RecoveryMode::Strict);
        let log = match Log::open(dir.path(), opts) {
            Ok(log) => log,
            Err(e) => {
                check_error(&e, dir.path(), what);
                if mode != RecoveryMode::PointInTime {
                    check_unchanged(image, &read_image(dir.path()), &e, what);
                }
                if let Some(x) = expected {
                    assert!(!x.undamaged, "{what}: an undamaged log failed to open: {e}");
                }
                return Err(e.to_string());
            }
        };
        let report = log.recovery_report().clone();
        let records = read_all(&log, what);
        check_records(&log, &records, what);
        for cut in &report.cuts {
            if let Some(backup) = &cut.backup {
                assert!(backup.is_file(), "{what}: cut backup missing: {report}");
            }
        }
        for aside in &report.discarded_segments {
            assert!(
                aside.is_file(),
                "{what}: discarded segment missing: {report}"
            );
        }
        if report.is_clean() {
            let after = read_image(dir.path());
            for (name, bytes) in image {
                if format::parse_segment_file_name(name).is_none() {
                    continue;
                }
                let removed = report.removed_files.contains(&dir.path().join(name));
                assert!(
                    after.get(name) == Some(bytes) || (removed && !after.contains_key(name)),
                    "{what}: a clean recovery changed {name}: {report}"
                );
            }
        }
        if let Some(x) = expected {
            if x.undamaged {
                assert!(
                    report.is_clean(),
                    "{what}: undamaged log recovered with cuts: {report}"
                );
                assert!(
                    records == x.written,
                    "{what}: undamaged log lost records: {report}"
                );
            }
            let got: BTreeMap<u64, &Vec<u8>> = records.iter().map(|(l, p)| (*l, p)).collect();
            for (lsn, payload) in &x.protected {
                assert!(
                    got.get(lsn) == Some(&payload),
                    "{what}: record {lsn}, intact before the first damaged byte, was not \
                     recovered intact: {report}"
                );
            }
        }
        drop(log);

        let reopen = |step: &str| {
            let log = Log::open(dir.path(), strict.clone()).unwrap_or_else(|e| {
                panic!("{what}: reopening in Strict mode {step} failed: {e}\nrecovery: {report}")
            });
            let again = log.recovery_report();
            assert!(
                again.is_clean(),
                "{what}: reopened {step} with cuts: {again}\nrecovery: {report}"
            );
            log
        };
        let log = reopen("after recovery");
        let again = read_all(&log, what);
        check_records(&log, &again, what);
        assert!(again == records, "{what}: reopening changed the records");
        let next = log.last_lsn().get().checked_add(1);
        if let Some(next) = next {
            let payload = b"appended after recovery";
            let lsn = log
                .append(payload)
                .unwrap_or_else(|e| panic!("{what}: append after recovery failed: {e}"));
            assert_eq!(
                lsn,
                Lsn(next),
                "{what}: append after recovery got the wrong LSN"
            );
            log.sync()
                .unwrap_or_else(|e| panic!("{what}: sync after recovery failed: {e}"));
            drop(log);
            let log = reopen("after an append");
            let mut with_new = records.clone();
            with_new.push((next, payload.to_vec()));
            let got = read_all(&log, what);
            check_records(&log, &got, what);
            assert!(
                got == with_new,
                "{what}: the appended record did not survive a reopen"
            );
        }
        Ok(Outcome {
            records,
            clean: report.is_clean(),
            cuts: report.cuts.len(),
        })
    }

    let mut inp = Input(data);
    let (image, sparse, expected) = if inp.u8() & 1 == 0 {
        let (image, sparse) = raw_image(&mut inp);
        (image, sparse, None)
    } else {
        let (written_image, written, sparse) = generate(&mut inp);
        let mut image = written_image.clone();
        let first_damage = damage(&mut image, &mut inp);
        let protected = match first_damage {
            Some(at) => protected(&written_image, &written, at),
            None => written.clone(),
        };
        let expected = Expected {
            undamaged: first_damage.is_none(),
            written,
            protected,
        };
        (image, sparse, Some(expected))
    };
    let [torn, pit, strict] = [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::PointInTime,
        RecoveryMode::Strict,
    ]
    .map(|mode| {
        let outcome = run(&image, sparse, mode, expected.as_ref());
        if std::env::var_os("STATEJOURNAL_FUZZ_VERBOSE").is_some() {
            match &outcome {
                Ok(o) => eprintln!(
                    "{mode:?}: ok, {} records, {}",
                    o.records.len(),
                    if o.clean {
                        "clean".to_string()
                    } else {
                        format!("{} cuts", o.cuts)
                    }
                ),
                Err(e) => eprintln!("{mode:?}: error: {e}"),
            }
        }
        outcome
    });

    if let Ok(s) = &strict {
        assert!(s.clean, "Strict recovery reported cuts");
        for (what, other) in [("TolerateTornTail", &torn), ("PointInTime", &pit)] {
            let o = other
                .as_ref()
                .unwrap_or_else(|e| panic!("Strict opened the log but {what} failed: {e}"));
            assert!(o.clean, "Strict opened the log cleanly but {what} cut");
            assert!(
                o.records == s.records,
                "Strict and {what} recovered other records"
            );
        }
    }
    if let Ok(t) = &torn {
        let p = pit.as_ref().unwrap_or_else(|e| {
            panic!("TolerateTornTail opened the log but PointInTime failed: {e}")
        });
        assert!(
            p.records == t.records,
            "TolerateTornTail and PointInTime recovered other records"
        );
        assert_eq!(
            p.cuts, t.cuts,
            "TolerateTornTail and PointInTime cut differently"
        );
        assert_eq!(
            p.clean, t.clean,
            "TolerateTornTail and PointInTime disagree on cleanliness"
        );
    }
    for (what, outcome) in [("TolerateTornTail", &torn), ("PointInTime", &pit)] {
        if let (Ok(o), Err(e)) = (outcome, &strict) {
            assert!(
                !o.clean,
                "{what} found nothing to cut but Strict failed: {e}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot files

/// An owned snapshot entry, ordered as snapshots are: (key group, state id, key, map key, value).
type SnapEntry = (u16, u32, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

fn snap_entry(e: snapshot::Entry<'_>) -> SnapEntry {
    (
        e.kg,
        e.state_id,
        e.key.to_vec(),
        e.map_key.map(<[u8]>::to_vec),
        e.value.to_vec(),
    )
}

fn snap_cursor(r: &SnapshotReader, range: KeyGroupRange) -> crate::Result<Vec<SnapEntry>> {
    let mut c = r.cursor(range);
    let mut v = Vec::new();
    while c.advance()? {
        let e = c
            .entry()
            .unwrap_or_else(|| panic!("advance returned true but the cursor has no entry"));
        v.push(snap_entry(e));
    }
    Ok(v)
}

fn snap_bulk(r: &SnapshotReader, range: KeyGroupRange) -> crate::Result<Vec<SnapEntry>> {
    snap_bulk_via(r, range, None)
}

/// The bulk path reading in place from a mapping of the file, as a snapshot load does; also
/// checks that each block's payload is where `payload_offset` says it is in the mapping.
fn snap_bulk_mapped(r: &SnapshotReader, range: KeyGroupRange) -> crate::Result<Vec<SnapEntry>> {
    let map = r.map()?;
    snap_bulk_via(r, range, Some(&map))
}

fn snap_bulk_via(
    r: &SnapshotReader,
    range: KeyGroupRange,
    map: Option<&crate::segment::ImmutableFileMap>,
) -> crate::Result<Vec<SnapEntry>> {
    let mut v = Vec::new();
    let each = |kg: u16, entries: &mut snapshot::BlockEntries<'_>| {
        if let Some(map) = map {
            let at = entries.payload_offset() as usize;
            let payload = entries.payload();
            assert!(
                map.bytes().get(at..at + payload.len()) == Some(payload),
                "a mapped block's payload is not at its payload_offset"
            );
        }
        let before = v.len();
        for e in entries.by_ref() {
            let e = e?;
            assert_eq!(e.kg, kg, "an entry of another key group in a block");
            v.push(snap_entry(e));
        }
        assert_eq!(
            v.len() - before,
            entries.entry_count() as usize,
            "a verified block yielded another number of entries than its header says"
        );
        Ok(())
    };
    match map {
        Some(map) => r.for_each_mapped_block(map, range, each)?,
        None => r.for_each_block(range, each)?,
    }
    Ok(v)
}

/// Checks that an error from reading `path` (of `len` bytes) is one the reader may return for
/// damaged or foreign bytes: a corruption naming the file and an offset within it, or a newer
/// version.
fn check_snapshot_error(e: &crate::Error, path: &Path, len: u64) {
    assert!(!e.to_string().is_empty(), "an error without a message");
    match e {
        crate::Error::Corruption(c) => {
            assert_eq!(c.path, path, "the corruption names another file: {e}");
            assert!(
                c.offset < len.max(1),
                "the corruption offset {} lies outside the {len}-byte file: {e}",
                c.offset
            );
        }
        crate::Error::UnsupportedVersion {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, path, "{e}");
            assert!(found > supported, "{e}");
        }
        other => panic!("unexpected kind of error for damaged bytes: {other:?}"),
    }
}

/// The snapshot decoding fuzz harness, shared by the `snapshot_decode` fuzz target (`fuzz/`) and
/// the `fuzz_corpus` test that replays its seed corpus (`fuzz/corpus/snapshot_decode/`).
///
/// # Input format
///
/// * byte 0, flags: bit 0 set rewrites every checksum of the image before it is written (the
///   header's, every block's found by walking the blocks from offset 32, the footer's when the
///   trailer points to a plausible footer), so that mutations are judged by the decoder's
///   structural checks rather than stopped by its CRCs. Other bits are ignored.
/// * the rest: the file, written into a fresh temporary directory (under [`std::env::temp_dir`])
///   as `{lsn:020}.snap`, `lsn` being the header's (bytes 16..24, 0 when the file is shorter), so
///   that the reader's file-name check passes.
///
/// # Invariants checked
///
/// * `SnapshotReader::open` returns; an error is a corruption naming the file and an offset within
///   it, or `UnsupportedVersion` (never a panic, an I/O error or an allocation beyond the file's
///   size).
/// * A full sorted-cursor pass and a full bulk (`for_each_block`) pass agree: the same entries, or
///   both fail at the same offset, with an error as above; when they read, the bulk pass over a
///   mapping of the file (`for_each_mapped_block`, the snapshot load's) reads the same entries.
/// * When they succeed: entries are in strictly increasing (key group, state, key, map key) order,
///   in the snapshot's key-group range, of registered states, with a map key exactly for map
///   states; there are `meta.entries` of them; the registry's per-state counts and payload bytes
///   and the index's per-key-group counts are right; a cursor over one key group of the index
///   yields exactly that group's entries, and reading the range in two halves yields the whole.
/// * Writing those entries again with `SnapshotWriter` (same LSN, key groups and registry)
///   succeeds, and the new file reads back to the same metadata and entries.
///
/// Set `STATEJOURNAL_FUZZ_VERBOSE` to print the outcome.
///
/// # Panics
///
/// When an invariant is violated, or the temporary directory cannot be written.
pub fn fuzz_snapshot_decode(data: &[u8]) {
    /// Key groups read one by one, at most.
    const MAX_SINGLE_GROUP_READS: usize = 64;
    let verbose = std::env::var_os("STATEJOURNAL_FUZZ_VERBOSE").is_some();

    let (flags, image) = data.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let mut bytes = image.to_vec();
    if flags & 1 != 0 {
        snapshot::codec::fix_checksums(&mut bytes);
    }
    let lsn = crate::codec::get_u64(&bytes, 16).unwrap_or(0);
    let dir = TempDir::new();
    let path = dir.path().join(format::snapshot_file_name(lsn));
    fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let len = bytes.len() as u64;

    let reader = match SnapshotReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            if verbose {
                eprintln!("open failed: {e}");
            }
            return check_snapshot_error(&e, &path, len);
        }
    };
    let meta = reader.meta().clone();
    let index = reader.index().to_vec();
    assert_eq!(reader.path(), path);
    let everything = KeyGroupRange::new(0, u16::MAX);
    let entries = match (
        snap_cursor(&reader, everything),
        snap_bulk(&reader, everything),
    ) {
        (Ok(a), Ok(b)) => {
            assert!(
                a == b,
                "the cursor and the bulk path read different entries"
            );
            a
        }
        (Err(a), Err(b)) => {
            if verbose {
                eprintln!("opened; reading failed: {a}");
            }
            check_snapshot_error(&a, &path, len);
            check_snapshot_error(&b, &path, len);
            assert_eq!(
                a.offset(),
                b.offset(),
                "the cursor and the bulk path fail differently: {a} / {b}"
            );
            match snap_bulk_mapped(&reader, everything) {
                Ok(m) => panic!(
                    "the mapped bulk path reads {} entries where the buffered one fails: {b}",
                    m.len()
                ),
                Err(c) => {
                    check_snapshot_error(&c, &path, len);
                    assert_eq!(
                        c.offset(),
                        b.offset(),
                        "the mapped and the buffered bulk paths fail differently: {c} / {b}"
                    );
                }
            }
            return;
        }
        (a, b) => panic!(
            "the cursor and the bulk path disagree: {:?} / {:?}",
            a.map(|v| v.len()),
            b.map(|v| v.len())
        ),
    };
    // The load's in-place path reads what the others read.
    match snap_bulk_mapped(&reader, everything) {
        Ok(m) => assert!(
            m == entries,
            "the mapped bulk path reads other entries than the buffered one"
        ),
        Err(e) => panic!("the mapped bulk path fails where the buffered one reads: {e}"),
    }

    if verbose {
        eprintln!(
            "read {} entries of {} states in {} key groups",
            entries.len(),
            meta.states.len(),
            index.len()
        );
    }
    // The entries are what the footer says.
    assert_eq!(entries.len() as u64, meta.entries, "entry count");
    for w in entries.windows(2) {
        let key = |e: &SnapEntry| (e.0, e.1, e.2.clone(), e.3.clone());
        assert!(key(&w[0]) < key(&w[1]), "entries out of order");
    }
    for s in &meta.states {
        let of = entries.iter().filter(|e| e.1 == s.id);
        let bytes: usize = of
            .clone()
            .map(|e| e.2.len() + e.3.as_ref().map_or(0, Vec::len) + e.4.len())
            .sum();
        assert_eq!(of.count() as u64, s.entries, "entries of state {}", s.id);
        assert_eq!(bytes as u64, s.payload_bytes, "bytes of state {}", s.id);
    }
    for e in &entries {
        assert!(meta.key_groups.contains(KeyGroup(e.0)), "key group {}", e.0);
        let state = meta.states.iter().find(|s| s.id == e.1);
        assert!(
            state.is_some_and(|s| s.is_map() == e.3.is_some()),
            "state {}",
            e.1
        );
    }
    let mut groups: Vec<u16> = entries.iter().map(|e| e.0).collect();
    groups.dedup();
    assert_eq!(index.iter().map(|g| g.kg).collect::<Vec<_>>(), groups);

    // Reading part of the range.
    for g in index.iter().take(MAX_SINGLE_GROUP_READS) {
        let want: Vec<SnapEntry> = entries.iter().filter(|e| e.0 == g.kg).cloned().collect();
        assert_eq!(
            want.len() as u64,
            g.entries,
            "index count of key group {}",
            g.kg
        );
        let one = KeyGroupRange::new(g.kg, g.kg + 1);
        let got = snap_cursor(&reader, one)
            .unwrap_or_else(|e| panic!("key group {} alone fails to read: {e}", g.kg));
        assert!(got == want, "key group {} alone reads other entries", g.kg);
    }
    if let Some(mid) = index.get(index.len() / 2).map(|g| g.kg) {
        let mut halves = snap_cursor(&reader, KeyGroupRange::new(0, mid))
            .unwrap_or_else(|e| panic!("the first half fails to read: {e}"));
        halves.extend(
            snap_bulk(&reader, KeyGroupRange::new(mid, u16::MAX))
                .unwrap_or_else(|e| panic!("the second half fails to read: {e}")),
        );
        assert!(
            halves == entries,
            "two halves read other entries than the whole"
        );
    }

    // Writing them again.
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap_or_else(|e| panic!("mkdir {}: {e}", again.display()));
    let mut w = SnapshotWriter::create(
        &again,
        meta.lsn,
        meta.max_key_groups,
        meta.key_groups,
        meta.states.clone(),
    )
    .unwrap_or_else(|e| panic!("a valid snapshot's metadata is refused by the writer: {e}"));
    for e in &entries {
        w.add(snapshot::Entry {
            kg: e.0,
            state_id: e.1,
            key: &e.2,
            map_key: e.3.as_deref(),
            value: &e.4,
        })
        .unwrap_or_else(|err| panic!("a valid snapshot's entry is refused by the writer: {err}"));
    }
    let file = w
        .finish()
        .unwrap_or_else(|e| panic!("rewriting failed: {e}"));
    let copy = SnapshotReader::open(&file.path)
        .unwrap_or_else(|e| panic!("the rewritten snapshot does not open: {e}"));
    assert_eq!(
        copy.meta(),
        &meta,
        "the rewritten snapshot's metadata differs"
    );
    let reread = snap_bulk(&copy, everything)
        .unwrap_or_else(|e| panic!("the rewritten snapshot does not read: {e}"));
    assert!(
        reread == entries,
        "the rewritten snapshot holds other entries"
    );
}

/// The seed inputs of the `snapshot_decode` fuzz target (flags byte, then the file), valid and
/// damaged, as `(name, input)`. `tests/fuzz_corpus.rs` writes them to
/// `fuzz/corpus/snapshot_decode/seed-<name>`.
///
/// # Panics
///
/// If a snapshot cannot be written to the temporary directory.
pub fn snapshot_fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    fn state(id: u32, name: &str, kind: u8, ttl_millis: u64) -> StateInfo {
        StateInfo {
            id,
            name: name.into(),
            kind,
            flags: u8::from(ttl_millis > 0),
            ttl_millis,
            entries: 0,
            payload_bytes: 0,
        }
    }
    type Seed<'a> = (u16, u32, &'a [u8], Option<&'a [u8]>, &'a [u8]);
    fn build(
        dir: &Path,
        lsn: u64,
        range: KeyGroupRange,
        states: Vec<StateInfo>,
        block: usize,
        entries: &[Seed<'_>],
    ) -> Vec<u8> {
        let mut w = SnapshotWriter::create(dir, lsn, 16, range, states)
            .unwrap_or_else(|e| panic!("create: {e}"))
            .with_block_size(block);
        for &(kg, state_id, key, map_key, value) in entries {
            w.add(snapshot::Entry {
                kg,
                state_id,
                key,
                map_key,
                value,
            })
            .unwrap_or_else(|e| panic!("add: {e}"));
        }
        let f = w.finish().unwrap_or_else(|e| panic!("finish: {e}"));
        fs::read(&f.path).unwrap_or_else(|e| panic!("read {}: {e}", f.path.display()))
    }
    fn with_flags(flags: u8, file: &[u8]) -> Vec<u8> {
        let mut v = vec![flags];
        v.extend_from_slice(file);
        v
    }

    let dir = TempDir::new();
    let registry = || {
        vec![
            state(0, "counts", 1, 0),
            state(1, "sessions", 3, 0),
            state(2, "events", 2, 30_000),
        ]
    };
    let small: Vec<Seed<'_>> = vec![
        (1, 0, b"\x01a", None, b"\x05"),
        (1, 0, b"\x01b", None, b"\x07"),
        (1, 1, b"\x01a", Some(b"k1"), b"v1"),
        (1, 1, b"\x01a", Some(b"k2"), b"v2"),
        (1, 1, b"\x02ab", Some(b"k1"), b""),
        (
            3,
            2,
            b"\x01z\x00",
            None,
            b"\x00\x00\x00\x00\x00\x00\x00\x09\x01e",
        ),
        (
            3,
            2,
            b"\x01z\x01",
            None,
            b"\x00\x00\x00\x00\x00\x00\x00\x09\x01f",
        ),
        (4, 0, b"\x03key", None, b"value"),
        (4, 1, b"\x03key", Some(b""), b"empty map key"),
    ];
    let empty = build(dir.path(), 1, KeyGroupRange::new(0, 16), vec![], 1024, &[]);
    let small_blocks = build(
        dir.path(),
        2,
        KeyGroupRange::new(0, 8),
        registry(),
        20,
        &small,
    );
    let one_block = build(
        dir.path(),
        3,
        KeyGroupRange::new(1, 5),
        registry(),
        4096,
        &small,
    );
    let map_keys: Vec<[u8; 2]> = (0..40u16).map(u16::to_be_bytes).collect();
    let maps: Vec<Seed<'_>> = map_keys
        .iter()
        .map(|k| (7, 1, &b"\x04user"[..], Some(&k[..]), &b"x"[..]))
        .collect();
    let map_heavy = build(dir.path(), 4, KeyGroupRange::all(16), registry(), 64, &maps);

    let mut seeds = vec![
        ("empty", with_flags(0, &empty)),
        ("small-blocks", with_flags(0, &small_blocks)),
        ("small-blocks-fix", with_flags(1, &small_blocks)),
        ("one-block-fix", with_flags(1, &one_block)),
        ("map-heavy-fix", with_flags(1, &map_heavy)),
    ];
    let damaged = |at: usize, xor: u8| {
        let mut b = small_blocks.clone();
        if let Some(x) = b.get_mut(at) {
            *x ^= xor;
        }
        b
    };
    // The first block's payload starts at 32 + 16 = 48.
    seeds.push(("block-bit-flip", with_flags(0, &damaged(50, 0x04))));
    seeds.push(("block-tag-fixed", with_flags(1, &damaged(48, 0x02))));
    seeds.push(("block-count-fixed", with_flags(1, &damaged(44, 0x01))));
    let footer_at = small_blocks.len() - 24;
    let footer_offset = crate::codec::get_u64(&small_blocks, footer_at).unwrap_or(0) as usize;
    seeds.push((
        "footer-bit-flip",
        with_flags(0, &damaged(footer_offset + 3, 0x10)),
    ));
    seeds.push((
        "footer-state-count-fixed",
        with_flags(1, &damaged(footer_offset + 22, 0x01)),
    ));
    seeds.push((
        "trailer-magic",
        with_flags(0, &damaged(small_blocks.len() - 1, 0x20)),
    ));
    seeds.push(("header-version-2-fixed", with_flags(1, &damaged(8, 0x03))));
    seeds.push((
        "truncated-mid-block",
        with_flags(0, &small_blocks[..small_blocks.len() / 2]),
    ));
    seeds.push(("truncated-header", with_flags(0, &small_blocks[..20])));
    seeds.push((
        "garbage",
        with_flags(1, &b"not a snapshot at all".repeat(4)),
    ));
    seeds
}

/// Benchmark support (`benches/snapshot.rs`): writes `{lsn}.snap` into `dir` holding
/// `entries` entries of one state over `key_groups` key groups, keys of `key_len` bytes (as a
/// composite key without namespace) and values of `value_len` bytes. With `map_keys_per_key > 0`
/// the state is a map and each key holds that many 8-byte map keys. Returns the path and length.
///
/// # Errors
///
/// Those of the snapshot writer.
pub fn bench_write_snapshot(
    dir: &Path,
    entries: u64,
    key_groups: u16,
    key_len: usize,
    value_len: usize,
    map_keys_per_key: u64,
) -> crate::Result<(PathBuf, u64)> {
    let kind = if map_keys_per_key > 0 {
        crate::StateKind::Map
    } else {
        crate::StateKind::Value
    };
    let states = vec![StateInfo {
        id: 0,
        name: "bench".into(),
        kind: kind.code(),
        flags: 0,
        ttl_millis: 0,
        entries: 0,
        payload_bytes: 0,
    }];
    let mut w = SnapshotWriter::create(dir, 1, key_groups, KeyGroupRange::all(key_groups), states)?;
    let per_key = map_keys_per_key.max(1);
    let keys = entries.div_ceil(per_key);
    let per_group = keys.div_ceil(u64::from(key_groups.max(1)));
    let mut key = Vec::with_capacity(key_len + 5);
    let mut value = vec![0u8; value_len];
    let mut written = 0;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    'out: for kg in 0..key_groups {
        for j in 0..per_group {
            // Sorted within the group: the index first (big-endian), then pseudo-random bytes.
            let mut raw = j.to_be_bytes().to_vec();
            while raw.len() < key_len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                raw.push(x as u8);
            }
            raw.truncate(key_len);
            crate::codec::record::composite_key(&mut key, &raw, &[]);
            for m in 0..per_key {
                if written == entries {
                    break 'out;
                }
                for (i, b) in value.iter_mut().enumerate() {
                    *b = (x >> (i % 8 * 8)) as u8 ^ m as u8;
                }
                let map_key = m.to_be_bytes();
                w.add(snapshot::Entry {
                    kg,
                    state_id: 0,
                    key: &key,
                    map_key: (map_keys_per_key > 0).then_some(&map_key[..]),
                    value: &value,
                })?;
                written += 1;
            }
        }
    }
    let f = w.finish()?;
    Ok((f.path, f.len))
}

/// Benchmark support: reads every entry of a snapshot with the sorted cursor, touching each key
/// and value. Returns the number of entries and a checksum of what was touched.
///
/// # Errors
///
/// Those of the snapshot reader.
pub fn bench_read_snapshot_cursor(path: &Path) -> crate::Result<(u64, u64)> {
    let r = SnapshotReader::open(path)?;
    let mut c = r.cursor(r.meta().key_groups);
    let (mut n, mut sum) = (0u64, 0u64);
    while c.advance()? {
        if let Some(e) = c.entry() {
            n += 1;
            sum = sum.wrapping_add(touch(&e));
        }
    }
    Ok((n, sum))
}

/// Benchmark support: the same with the bulk path, `SnapshotReader::for_each_block`.
///
/// # Errors
///
/// Those of the snapshot reader.
pub fn bench_read_snapshot_bulk(path: &Path) -> crate::Result<(u64, u64)> {
    let r = SnapshotReader::open(path)?;
    let (mut n, mut sum) = (0u64, 0u64);
    r.for_each_block(r.meta().key_groups, |_, entries| {
        for e in entries {
            let e = e?;
            n += 1;
            sum = sum.wrapping_add(touch(&e));
        }
        Ok(())
    })?;
    Ok((n, sum))
}

/// What a loader reads of an entry at least: the lengths and the first and last bytes.
#[inline]
fn touch(e: &snapshot::Entry<'_>) -> u64 {
    let edge =
        |b: &[u8]| u64::from(b.first().copied().unwrap_or(0) ^ b.last().copied().unwrap_or(0));
    (e.key.len() + e.value.len()) as u64 + edge(e.key) + edge(e.value) + e.map_key.map_or(0, edge)
}

/// Fuzz harness of the `manifest_decode` target: `data` is a checkpoint manifest image, local
/// (`*.ckpt`) or remote (`*.sjrm`, [`crate::codec::remote_manifest`]); both decoders get every
/// input. Decoding must never panic; what decodes must encode to bytes that decode to the same
/// manifest (the encoding is canonical for everything the writer produces).
///
/// # Panics
///
/// When that invariant is violated.
pub fn fuzz_manifest_decode(data: &[u8]) {
    use crate::codec::manifest::Manifest;
    use crate::codec::remote_manifest::RemoteManifest;
    if let Ok(m) = RemoteManifest::decode(data) {
        let again = m.encode();
        assert_eq!(
            RemoteManifest::decode(&again).as_ref(),
            Ok(&m),
            "a decoded remote manifest does not survive re-encoding"
        );
        assert!(
            again.len() <= data.len(),
            "re-encoding grew the remote manifest"
        );
    }
    if let Ok(m) = Manifest::decode(data) {
        let again = m.encode();
        assert_eq!(
            Manifest::decode(&again).as_ref(),
            Ok(&m),
            "a decoded manifest does not survive re-encoding"
        );
        assert!(again.len() <= data.len(), "re-encoding grew the manifest");
    }
}

/// Seed inputs of the `manifest_decode` fuzz target: manifests the journal writes (with and
/// without a snapshot, segments and states) and a few damaged ones.
pub fn manifest_fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::codec::manifest::{Manifest, SegmentRef, SnapshotRef, StateRef};
    let full = Manifest {
        id: 42,
        lsn: 1_000_000,
        log_id: 0x0123_4567_89ab_cdef,
        created_millis: 1_764_000_000_000,
        max_key_groups: 128,
        kg_start: 32,
        kg_end: 64,
        snapshot: Some(SnapshotRef {
            lsn: 900_000,
            len: 123_456_789,
            file: crate::format::snapshot_file_name(900_000),
        }),
        segments: (7..10)
            .map(|id| SegmentRef {
                id,
                base_lsn: 850_000 + id * 40_000,
                len: 64 << 20,
                crc: 0xdead_beef ^ id as u32,
            })
            .collect(),
        states: ["clicks", "windows", "sessions"]
            .iter()
            .enumerate()
            .map(|(i, n)| StateRef {
                id: i as u32,
                kind: 1 + i as u8,
                flags: u8::from(i == 2),
                ttl_millis: if i == 2 { 60_000 } else { 0 },
                name: (*n).into(),
            })
            .collect(),
    };
    let bare = Manifest {
        snapshot: None,
        segments: Vec::new(),
        states: Vec::new(),
        kg_start: 0,
        kg_end: 128,
        ..full.clone()
    };
    let mut flipped = full.encode();
    if let Some(b) = flipped.get_mut(40) {
        *b ^= 0x10;
    }
    let mut truncated = full.encode();
    truncated.truncate(truncated.len() / 2);
    let remote = {
        use crate::codec::remote_manifest::{Chunk, RemoteManifest, RemoteSegment, RemoteSnapshot};
        let chunk = |start: u64, end: u64| Chunk {
            start,
            end,
            crc: (start ^ end) as u32,
            xxh3: start.wrapping_mul(31) ^ end,
            object: format!("log/{start:012}-{end:012}.chunk"),
        };
        RemoteManifest {
            seq: 3,
            epoch: 2,
            checkpoint_id: full.id,
            lsn: full.lsn,
            log_id: full.log_id,
            created_millis: full.created_millis,
            local_manifest: full.encode(),
            snapshot: Some(RemoteSnapshot {
                lsn: 900_000,
                len: 1 << 20,
                crc: 0xabcd_ef01,
                xxh3: 0x1234_5678_9abc_def0,
                object: "snapshots/x.snap".into(),
            }),
            segments: vec![RemoteSegment {
                id: 7,
                base_lsn: 899_000,
                file_len: 64 << 20,
                len: 12_288,
                crc: 0x0bad_cafe,
                chunks: vec![chunk(0, 4096), chunk(4096, 12_288)],
            }],
        }
    };
    vec![
        ("full", full.encode()),
        ("bare", bare.encode()),
        ("flipped", flipped),
        ("truncated", truncated),
        ("remote", remote.encode()),
    ]
}
