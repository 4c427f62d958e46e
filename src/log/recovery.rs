//! Opening a log directory: validate every segment, prove where the durable data ends, cut a torn
//! tail, and refuse (or, in point-in-time mode, set aside) damage to durable data.
//!
//! # How a torn tail is told apart from damaged durable data
//!
//! A crash can leave garbage only where a flush had not completed. The log records how far it is
//! known durable in two ways, and recovery trusts only those:
//!
//! * **Sync markers.** Every flush appends a marker holding the LSN through which the *previous*
//!   flush made the log durable (a flush cannot attest to its own completion). A marker anywhere in
//!   the log — before the damage or, found by scanning ahead, after it — that covers the damaged
//!   record proves the damage is in durable data.
//! * **Later segments.** A segment is created only after its predecessor is flushed completely,
//!   and its header names the predecessor's last LSN and CRC. Damage in a segment that has a
//!   successor is damage to durable data.
//!
//! Damage with neither proof is a torn tail: cut, with the cut bytes kept in a side file and the
//! intact records found after the damage (which no completed flush covered) listed in the report.
//! The last flush before a crash is the one window the markers cannot prove (its own marker is
//! written by the next flush); the report names exactly what was cut there.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{write_meta, LogOptions, Lsn, RecoveryMode};
use crate::codec::frame::{decode_frame, decode_sync_marker, FrameError, FrameKind, FRAME_ALIGN};
use crate::codec::header::{HeaderError, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::codec::meta::{DiscardCause, DiscardIntent, LogMeta, MetaError, DISCARD_VERSION};
use crate::crash_point::crash_point;
use crate::error::{Corruption, CorruptionKind, DurabilityEvidence, Error, RecordDamage, Result};
use crate::format;
use crate::segment::{sync_dir, Segment};

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The directory held no log; a new one was created.
    pub created: bool,
    /// Segments in the recovered log.
    pub segments: usize,
    /// Data records recovered.
    pub records: u64,
    /// Bytes of intact frames scanned (records and sync markers).
    pub bytes: u64,
    /// LSN of the oldest record in the log.
    pub first_lsn: Lsn,
    /// LSN of the newest recovered record (`first_lsn - 1` when the log is empty).
    pub last_lsn: Lsn,
    /// The highest watermark a sync marker proved durable before this open.
    pub synced_through: Lsn,
    /// Bytes cut from the end of the log, and why.
    pub cuts: Vec<TailCut>,
    /// Segment files set aside whole, renamed `*.discarded`: those after a cut (a torn tail that
    /// spans segments, or point-in-time recovery past damaged durable data).
    pub discarded_segments: Vec<PathBuf>,
    /// Temporary files and leftovers of interrupted deletions that were removed.
    pub removed_files: Vec<PathBuf>,
    /// A discard an earlier open made durable (`log.discard`) and a crash interrupted, which
    /// this open finished: the records after its LSN are set aside, whatever was left of them.
    /// Its cause says whether durable data was lost ([`DiscardCause::DurableDataDamaged`]: the
    /// interrupted open was a point-in-time recovery past damaged durable records).
    pub interrupted_discard: Option<InterruptedDiscard>,
    /// Wall time of the recovery.
    pub duration: Duration,
}

impl RecoveryReport {
    /// Nothing was cut or set aside.
    pub fn is_clean(&self) -> bool {
        self.cuts.is_empty() && self.discarded_segments.is_empty()
    }

    /// Data the log had proven durable was set aside: by this open (only in
    /// [`RecoveryMode::PointInTime`]), or by a point-in-time open a crash interrupted, which this
    /// one finished (in any mode; see [`RecoveryReport::interrupted_discard`]).
    pub fn lost_durable_data(&self) -> bool {
        self.cuts
            .iter()
            .any(|c| matches!(c.reason, CutReason::DurableDataDamaged(_)))
            || self
                .interrupted_discard
                .is_some_and(|d| d.cause == DiscardCause::DurableDataDamaged)
    }
}

/// A discard that an earlier open began and a crash interrupted (see
/// [`RecoveryReport::interrupted_discard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterruptedDiscard {
    /// The last LSN the discard keeps.
    pub after: Lsn,
    /// Why the earlier open discarded.
    pub cause: DiscardCause,
}

impl fmt::Display for InterruptedDiscard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.cause {
            DiscardCause::Requested => "a checkpoint restore or requested discard",
            DiscardCause::DurableDataDamaged => {
                "a point-in-time recovery past damaged durable records"
            }
        };
        write!(
            f,
            "finished {what} that an earlier open began and a crash interrupted: records after \
             LSN {} set aside",
            self.after
        )
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.created {
            return write!(f, "created a new log in {:.1?}", self.duration);
        }
        write!(
            f,
            "recovered {} records (LSN {}..={}) from {} segments, {} bytes, in {:.1?}",
            self.records, self.first_lsn, self.last_lsn, self.segments, self.bytes, self.duration
        )?;
        for c in &self.cuts {
            write!(f, "; {c}")?;
        }
        for d in &self.discarded_segments {
            write!(f, "; set aside {}", d.display())?;
        }
        if let Some(d) = &self.interrupted_discard {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// Bytes recovery cut from the end of the log.
#[derive(Debug, Clone)]
pub struct TailCut {
    /// The segment cut.
    pub path: PathBuf,
    /// Where the cut starts (the first damaged byte's frame).
    pub offset: u64,
    /// How many bytes (up to the last non-zero byte) were cut.
    pub bytes: u64,
    /// What was wrong at `offset` (`None` when the cut was asked for, not forced by damage: see
    /// [`CutReason::Discarded`]).
    pub damage: Option<RecordDamage>,
    /// Why cutting was allowed.
    pub reason: CutReason,
    /// The LSN the first cut record would have had: the log continues from here.
    pub first_cut_lsn: Lsn,
    /// LSN range of intact data records found after the damage and cut with it.
    pub intact_records_cut: Option<(Lsn, Lsn)>,
    /// The highest LSN known to have existed among what was cut and set aside (the records
    /// `first_cut_lsn ..= lost_through` are lost): the last intact record found after the damage,
    /// the last record a later segment's header names, or what the evidence of durability covers
    /// — whichever is highest. `None` when nothing shows that any record was lost.
    pub lost_through: Option<Lsn>,
    /// Where the cut bytes were saved.
    pub backup: Option<PathBuf>,
}

impl fmt::Display for TailCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.reason {
            CutReason::TornTail => "torn tail".to_string(),
            CutReason::DurableDataDamaged(c) => format!("point-in-time recovery past damage: {c}"),
            CutReason::DebrisAfterCompleteSegment => {
                "debris after the last record of a complete segment, no record lost".to_string()
            }
            CutReason::Discarded { after } => format!(
                "records after LSN {after} discarded as a checkpoint restore or a point-in-time \
                 recovery decided"
            ),
        };
        write!(
            f,
            "cut {} bytes of {} at offset {} ({why}",
            self.bytes,
            self.path.display(),
            self.offset,
        )?;
        if let Some(d) = &self.damage {
            write!(f, "; {d}")?;
        }
        write!(f, "), log continues at LSN {}", self.first_cut_lsn)?;
        if let Some(l) = self.lost_through {
            write!(f, "; records {}..={l} are lost", self.first_cut_lsn)?;
        }
        if let Some((a, b)) = self.intact_records_cut {
            write!(f, "; intact records {a}..={b} after the damage were cut")?;
        }
        if let Some(b) = &self.backup {
            write!(f, "; cut bytes saved in {}", b.display())?;
        }
        Ok(())
    }
}

/// Why recovery was allowed to cut.
#[derive(Debug, Clone)]
pub enum CutReason {
    /// The damage lies after everything the log proves durable.
    TornTail,
    /// The damage is in durable data and [`RecoveryMode::PointInTime`] chose to stop before it.
    DurableDataDamaged(Box<Corruption>),
    /// Damaged or stray bytes after the last record of a segment whose successor proves it
    /// complete (for instance a damaged sync marker): nothing is lost; the bytes are set aside so
    /// that no reader trips over them.
    DebrisAfterCompleteSegment,
    /// Every record after this LSN is set aside as decided before the open: by
    /// [`LogOptions::discard_after`](super::LogOptions::discard_after) (a checkpoint restore), or
    /// by the durable intent (`log.discard`) of an earlier open that a crash interrupted — a
    /// checkpoint restore, or a [`RecoveryMode::PointInTime`] recovery that cut durable data (that
    /// open's cut was [`CutReason::DurableDataDamaged`]; this one finishes it, and
    /// [`RecoveryReport::interrupted_discard`] says which it was).
    Discarded {
        /// The last LSN kept.
        after: Lsn,
    },
}

pub(super) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub meta: LogMeta,
    pub durable_lsn: u64,
    pub watermark: u64,
    pub report: RecoveryReport,
}

/// The result of scanning one segment's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// Where the intact frames end.
    pub end: usize,
    /// The damage found at `end`, if the frames did not end cleanly (zero length or end of file).
    pub damage: Option<RecordDamage>,
    /// Data records in `[header, end)`.
    pub data_records: u64,
    /// LSN and CRC of the last one.
    pub last_data: Option<(u64, u32)>,
    /// LSN the next data record would carry.
    pub next_lsn: u64,
    /// Highest watermark in the sync markers read.
    pub watermark: u64,
}

/// Scans the frames of a segment image. Pure: no I/O, never panics.
///
/// In a `recycled` segment an intact frame that an older segment wrote (a data record with an
/// LSN below `base_lsn`, a sync marker with one below `base_lsn - 1`) ends the written part, as
/// a zero length does: see [`SegmentHeader::recycled`].
pub(crate) fn scan_frames(buf: &[u8], base_lsn: u64, recycled: bool) -> SegmentScan {
    scan_frames_through(buf, base_lsn, recycled, u64::MAX)
}

/// Whether an intact frame is an older segment's, left in a recycled file: every LSN an older
/// segment used is below this segment's base, and below its base minus one for a sync marker
/// (the log recycles a file only when that holds with a margin, see `Shared::try_pool`).
fn is_stale(kind: FrameKind, lsn: u64, base_lsn: u64) -> bool {
    match kind {
        FrameKind::Data => lsn < base_lsn,
        FrameKind::SyncMarker => lsn.saturating_add(1) < base_lsn,
    }
}

/// [`scan_frames`], stopping (without damage) at the first data record past LSN `stop`.
fn scan_frames_through(buf: &[u8], base_lsn: u64, recycled: bool, stop: u64) -> SegmentScan {
    let mut s = SegmentScan {
        end: SEGMENT_HEADER_LEN,
        damage: None,
        data_records: 0,
        last_data: None,
        next_lsn: base_lsn,
        watermark: 0,
    };
    loop {
        if s.end >= buf.len() {
            return s;
        }
        match decode_frame(buf, s.end) {
            Ok(f) if recycled && is_stale(f.kind, f.lsn, base_lsn) => return s,
            Ok(f) => {
                let ok = match f.kind {
                    FrameKind::Data => f.lsn == s.next_lsn,
                    FrameKind::SyncMarker => f.lsn == s.next_lsn - 1,
                };
                if !ok {
                    s.damage = Some(RecordDamage::LsnMismatch { found: f.lsn });
                    return s;
                }
                match f.kind {
                    FrameKind::Data if f.lsn > stop => return s,
                    FrameKind::Data => {
                        s.data_records += 1;
                        s.last_data = Some((f.lsn, f.crc));
                        s.next_lsn += 1;
                    }
                    FrameKind::SyncMarker => {
                        let w = buf
                            .get(f.payload_start..f.payload_end)
                            .and_then(decode_sync_marker);
                        s.watermark = s.watermark.max(w.unwrap_or(0));
                    }
                }
                s.end = f.next;
            }
            Err(FrameError::End) => return s,
            Err(e) => {
                s.damage = Some(RecordDamage::Frame(e));
                return s;
            }
        }
    }
}

/// Offset just past the last non-zero byte at or after `from`, rounded up to the frame alignment
/// (`from` itself if everything after it is zero).
pub(crate) fn dirty_end(buf: &[u8], from: usize) -> usize {
    const BLOCK: usize = 4096;
    let from = from.min(buf.len());
    let mut end = buf.len();
    while end > from {
        let start = end.saturating_sub(BLOCK).max(from);
        let block = &buf[start..end];
        // A fold (not `any`) so the compiler vectorizes the common all-zero case.
        if block.iter().fold(0u8, |a, &b| a | b) != 0 {
            let last = block
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| start + i + 1);
            return ((last + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1))
                .min(buf.len())
                .max(from);
        }
        end = start;
    }
    from
}

/// The end of the bytes a cut at `from` must zero in a recycled segment, whose bytes past its
/// records may be an older segment's: the end of the last intact frame at or after `from` that
/// is not stale (`is_stale`), and of a frame header at `from` itself that claims this segment's
/// LSNs (a torn record), rounded to the frame alignment; at least the first 8 bytes at `from`
/// (crc and `len`; all that is left, when less than a frame header is) unless they are zero or
/// start an intact older frame; else `from`.
///
/// Left in place, an intact frame of this segment could be taken for a record again, and
/// bytes at `from` that end the scan as damage would be found (and cut, or refused by `Strict`)
/// at every later open: zeroing the `len` field makes the end clean. Older bytes after that
/// stay: they end the written part wherever it stops. Pure; reads every aligned offset, but
/// rejects most on the frame header's fields first, as [`scan_ahead`] does.
pub(crate) fn recycled_dirty_end(buf: &[u8], from: usize, base_lsn: u64) -> usize {
    recycled_dirty_end_in(buf, from, base_lsn, None)
}

/// [`recycled_dirty_end`], looking for frames only inside `regions` (the ranges the file
/// system reports as holding data; everything else reads as zeros) when given.
fn recycled_dirty_end_in(
    buf: &[u8],
    from: usize,
    base_lsn: u64,
    regions: Option<&[(usize, usize)]>,
) -> usize {
    use crate::codec::frame::LEN_OFFSET;
    let from = from.min(buf.len());
    let mut end = from;
    if plausible_frame_at(buf, from, base_lsn) {
        let len = buf
            .get(from + LEN_OFFSET..from + LEN_OFFSET + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b: [u8; 4]| u32::from_le_bytes(b)) as usize;
        end = (from + len).next_multiple_of(FRAME_ALIGN).min(buf.len());
    }
    // The `crc` and `len` fields; everything left when that is less than a frame header (a
    // clean end there needs all of it zero, see `decode_frame`).
    let head_len = if buf.len() - from < crate::codec::frame::FRAME_HEADER_LEN {
        buf.len() - from
    } else {
        FRAME_ALIGN
    };
    let head = &buf[from..from + head_len];
    let older_frame_at_from =
        decode_frame(buf, from).is_ok_and(|f| is_stale(f.kind, f.lsn, base_lsn));
    if head.iter().any(|&b| b != 0) && !older_frame_at_from {
        end = end.max(from + head.len());
    }
    let whole = [(from, buf.len())];
    for &(start, stop) in regions.unwrap_or(&whole) {
        let mut at = start.max(from).next_multiple_of(FRAME_ALIGN);
        while at < stop.min(buf.len()) {
            if plausible_frame_at(buf, at, base_lsn) {
                if let Ok(f) = decode_frame(buf, at) {
                    if !is_stale(f.kind, f.lsn, base_lsn) {
                        end = end.max(f.next.min(buf.len()));
                    }
                }
            }
            at += FRAME_ALIGN;
        }
    }
    end
}

/// [`dirty_end`] of a segment, skipping the ranges its file system reports as holes
/// ([`recycled_dirty_end`] for a recycled one).
fn segment_dirty_end(seg: &Segment, buf: &[u8], from: usize) -> usize {
    if seg.header().recycled {
        // Holes (a closing log zeroes a recycled segment's unused rest into unwritten extents)
        // read as zeros: only the data regions can hold frames.
        let regions = seg.data_regions(from);
        return recycled_dirty_end_in(buf, from, seg.header().base_lsn, regions.as_deref());
    }
    let Some(regions) = seg.data_regions(from) else {
        return dirty_end(buf, from);
    };
    for &(start, end) in regions.iter().rev() {
        let start = start.max(from);
        let Some(region) = buf.get(..end) else {
            return dirty_end(buf, from);
        };
        let d = dirty_end(region, start);
        if d > start {
            return d;
        }
    }
    from
}

/// What scanning past damage found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ahead {
    /// Highest watermark of an intact sync marker after the damage.
    pub watermark: u64,
    /// LSN range of intact data frames after the damage.
    pub data: Option<(u64, u64)>,
}

/// Looks for intact frames at every aligned offset in `(from, to)`. Pure.
pub(crate) fn scan_ahead(buf: &[u8], from: usize, to: usize, expected_lsn: u64) -> Ahead {
    let mut a = Ahead::default();
    let mut at = from + FRAME_ALIGN;
    let to = to.min(buf.len());
    while at < to {
        // Most offsets are not frame starts: reject them on header fields the checksum covers
        // anyway before `decode_frame` checksums up to `len` bytes, or damage early in a large
        // segment makes this scan quadratic (minutes for one damaged record in a 24 MiB tail).
        if !plausible_frame_at(buf, at, expected_lsn) {
            at += FRAME_ALIGN;
            continue;
        }
        if let Ok(f) = decode_frame(buf, at) {
            match f.kind {
                FrameKind::Data if f.lsn >= expected_lsn => {
                    a.data = Some(
                        a.data
                            .map_or((f.lsn, f.lsn), |(lo, hi)| (lo.min(f.lsn), hi.max(f.lsn))),
                    );
                }
                FrameKind::SyncMarker if f.lsn.saturating_add(1) >= expected_lsn => {
                    let w = buf
                        .get(f.payload_start..f.payload_end)
                        .and_then(decode_sync_marker);
                    a.watermark = a.watermark.max(w.unwrap_or(0));
                }
                _ => {}
            }
        }
        at += FRAME_ALIGN;
    }
    a
}

/// Whether the bytes at `at` could start a frame `scan_ahead` would count: a known kind, zero
/// flags and reserved bytes, a length within the buffer and an LSN not below `expected_lsn - 1`.
/// Only fields the frame's checksum covers are looked at, so this rejects nothing `decode_frame`
/// would accept with an LSN `scan_ahead` uses.
fn plausible_frame_at(buf: &[u8], at: usize, expected_lsn: u64) -> bool {
    use crate::codec::frame::{
        FLAGS_OFFSET, FRAME_HEADER_LEN, KIND_OFFSET, LEN_OFFSET, LSN_OFFSET,
    };
    let Some(h) = buf.get(at..at + FRAME_HEADER_LEN) else {
        return false;
    };
    let field = |o: usize, n: usize| h.get(o..o + n).unwrap_or(&[]);
    let len = field(LEN_OFFSET, 4)
        .try_into()
        .map_or(0, |b: [u8; 4]| u32::from_le_bytes(b)) as usize;
    let lsn = field(LSN_OFFSET, 8)
        .try_into()
        .map_or(0, |b: [u8; 8]| u64::from_le_bytes(b));
    matches!(field(KIND_OFFSET, 1), [1] | [2])
        && field(FLAGS_OFFSET, FRAME_HEADER_LEN - FLAGS_OFFSET)
            .iter()
            .all(|&b| b == 0)
        && len >= FRAME_HEADER_LEN
        && len <= buf.len() - at
        && lsn.saturating_add(1) >= expected_lsn
}

struct Listing {
    segments: Vec<(u64, PathBuf)>,
    temporaries: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing> {
    let mut l = Listing {
        segments: Vec::new(),
        temporaries: Vec::new(),
    };
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = format::parse_segment_file_name(name) {
            l.segments.push((id, entry.path()));
        } else if name.ends_with(format::TMP_SUFFIX) {
            l.temporaries.push(entry.path());
        }
    }
    l.segments.sort_unstable_by_key(|(id, _)| *id);
    Ok(l)
}

/// Where the segments that unfinished rolls left behind start in `ids` (the live segment ids,
/// ascending): at the first gap past `last_segment`, or at the first segment past `last_segment`
/// whose header `unwritten` says never reached the disk, whichever comes first; `ids.len()` if
/// there are none. No record in them was acknowledged (see [`recover`]). Shared with `inspect`,
/// which predicts what recovery sets aside.
pub(crate) fn unfinished_rolls(
    ids: &[u64],
    first_segment: u64,
    last_segment: u64,
    mut unwritten: impl FnMut(u64) -> Result<bool>,
) -> Result<usize> {
    for (i, &id) in ids.iter().enumerate() {
        let expect = first_segment + i as u64;
        if id != expect {
            return Ok(if expect > last_segment { i } else { ids.len() });
        }
        if id > last_segment && unwritten(id)? {
            return Ok(i);
        }
    }
    Ok(ids.len())
}

/// Whether the segment file at `path` lacks a header, as a crash leaves a segment whose roll did
/// not wait for its header to be durable: shorter than a header, or a header that does not
/// decode (zeros, or the remains of a torn write, which may keep the magic and show a garbage
/// version). A whole header of a newer format version (its CRC matches) is not that: it is
/// refused as unsupported wherever it is.
pub(crate) fn header_unwritten(path: &Path) -> Result<bool> {
    let file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let mut len = 0;
    while len < head.len() {
        match std::os::unix::fs::FileExt::read_at(&file, &mut head[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read header", path, e)),
        }
    }
    if len < head.len() {
        return Ok(true);
    }
    Ok(match SegmentHeader::decode(&head) {
        Ok(_) => false,
        Err(HeaderError::UnsupportedVersion { .. }) => !SegmentHeader::crc_matches(&head),
        Err(_) => true,
    })
}

/// A snapshot or checkpoint manifest in `dir` (a journal's directory), if there is one.
fn journal_file(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if format::parse_snapshot_file_name(name).is_some()
            || format::parse_manifest_file_name(name).is_some()
        {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

pub(crate) fn random_log_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS's randomness once per process and stepped per instance.
    RandomState::new().hash_one((std::process::id(), Instant::now()))
}

fn create_new(
    dir: &Path,
    opts: &LogOptions,
    mut report: RecoveryReport,
    started: Instant,
) -> Result<Recovered> {
    remove_leftovers(&report)?;
    // An intent without a log to apply it to belongs to no log: the new one must not inherit it.
    remove_discard_intent(dir)?;
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        log_id: random_log_id(),
        segment_id: 1,
        base_lsn: 1,
        prev_last_lsn: 0,
        prev_last_crc: 0,
        predecessor_unsynced: false,
        recycled: false,
    };
    let seg = Segment::create(dir, &header, opts.segment_size)?;
    let meta = LogMeta {
        log_id: header.log_id,
        first_segment: 1,
        last_segment: 1,
    };
    write_meta(dir, &meta)?;
    report.created = true;
    report.segments = 1;
    report.first_lsn = Lsn(1);
    report.duration = started.elapsed();
    Ok(Recovered {
        segments: vec![Arc::new(seg)],
        meta,
        durable_lsn: 0,
        watermark: 0,
        report,
    })
}

/// The error for a meta-style file (`log.meta`) that did not decode.
pub(crate) fn meta_error(path: &Path, e: MetaError) -> Error {
    meta_error_supporting(path, e, FORMAT_VERSION)
}

/// [`meta_error`] for a file whose newest version is `supported`.
pub(crate) fn meta_error_supporting(path: &Path, e: MetaError, supported: u32) -> Error {
    match e {
        MetaError::UnsupportedVersion { found } => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported,
        },
        other => Error::corrupt(path, 0, CorruptionKind::BadMeta(other)),
    }
}

fn damaged(
    path: &Path,
    at: usize,
    expected_lsn: u64,
    damage: RecordDamage,
    evidence: DurabilityEvidence,
) -> Error {
    Error::corrupt(
        path,
        at as u64,
        CorruptionKind::DamagedRecord {
            expected_lsn,
            damage,
            evidence,
        },
    )
}

/// `path`, or `path.1`, `path.2`, ... : the first name not yet taken, so that an earlier recovery's
/// set-aside bytes are never overwritten by a later one's.
fn unused_name(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let mut n = 1u32;
    loop {
        let mut candidate = path.clone().into_os_string();
        candidate.push(format!(".{n}"));
        let candidate = PathBuf::from(candidate);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Saves `[from, to)` of a segment next to it before recovery zeroes it.
fn backup_cut(dir: &Path, seg: &Segment, from: usize, to: usize) -> Result<Option<PathBuf>> {
    if to <= from {
        return Ok(None);
    }
    let Some(bytes) = seg.bytes(from, to) else {
        return Ok(None);
    };
    crash_point("saving the bytes of a cut");
    let path = unused_name(format::cut_backup_path(dir, seg.id(), from as u64));
    let tmp = format::tmp_path(
        dir,
        &path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    Ok(Some(path))
}

pub(super) fn recover(dir: &Path, opts: &LogOptions) -> Result<Recovered> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let listing = list_dir(dir)?;
    // Removed only once recovery succeeds (see `remove_leftovers`): a failed open changes nothing.
    report
        .removed_files
        .extend(listing.temporaries.iter().cloned());

    let meta_path = dir.join(format::META_FILE);
    let intent = read_discard_intent(dir)?;
    let mut meta = match fs::read(&meta_path) {
        Ok(bytes) => LogMeta::decode(&bytes).map_err(|e| meta_error(&meta_path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if listing.segments.is_empty() {
                if !opts.create_if_missing {
                    return Err(Error::io("open", &meta_path, e));
                }
                return create_new(dir, opts, report, started);
            }
            adopt_unfinished_creation(dir, &listing.segments, &meta_path)?
        }
        Err(e) => return Err(Error::io("read", &meta_path, e)),
    };

    // A discard of a journal's log (a checkpoint restore, a point-in-time cut) is finished by
    // the journal, which also sets aside its snapshots and manifests past the discard point.
    // Finished by a bare log open, the intent would go while those files stay, and the next
    // journal open would take them as proof that the discarded records were durable and refuse
    // the directory. Refuse here instead, changing nothing.
    if intent.is_some() && !opts.keep_discard_intent {
        if let Some(file) = journal_file(dir)? {
            return Err(Error::io(
                "open",
                dir.join(format::DISCARD_FILE),
                io::Error::other(format!(
                    "a journal's checkpoint restore or point-in-time cut was interrupted here \
                     ({} belongs to the journal); open the directory with Journal::open, which \
                     finishes it",
                    file.display()
                )),
            ));
        }
    }
    // A discard (a checkpoint restore, or a point-in-time cut of durable data) that a crash
    // interrupted is finished now: from the moment its intent was durable, the records after its
    // LSN were as good as gone. Its cause stays with the intent, however often it is rewritten,
    // so that the open that finishes a point-in-time cut reports the durable data lost.
    let mut discard_cause = DiscardCause::Requested;
    let discard = match intent {
        Some(i) if i.log_id == meta.log_id => {
            discard_cause = i.cause;
            report.interrupted_discard = Some(InterruptedDiscard {
                after: Lsn(i.after),
                cause: i.cause,
            });
            Some(
                opts.discard_after
                    .map_or(i.after, |asked| asked.min(i.after)),
            )
        }
        Some(i) => {
            return Err(Error::corrupt(
                dir.join(format::DISCARD_FILE),
                0,
                CorruptionKind::ForeignLog {
                    expected: meta.log_id,
                    found: i.log_id,
                },
            ))
        }
        None => opts.discard_after,
    };
    // Evidence from outside the log (a journal's snapshots and manifests, written only after the
    // log was durable through their LSN), except past a discard point: what a discard sets aside
    // is gone whatever was once durable.
    let external = opts
        .evidence
        .map_or(0, |f| f(dir, meta.log_id))
        .min(discard.unwrap_or(u64::MAX));

    // Leftovers of a deletion interrupted after the meta file moved on.
    let mut ids = Vec::new();
    for (id, path) in &listing.segments {
        if *id < meta.first_segment {
            report.removed_files.push(path.clone());
        } else {
            ids.push(*id);
        }
    }
    // Segments past `last_segment` exist when a roll created one and crashed before its creation
    // was settled; the header chain below decides whether they belong. No record in them was
    // acknowledged (a flush makes their headers and directory entries durable and records the
    // newest here before it acknowledges anything in them), and renames no directory sync
    // covered may reach the disk in any order: after a gap past `last_segment`, the later ones
    // are orphans of a torn tail, set aside with it. So are the segments from the first one past
    // `last_segment` whose header never reached the disk (a roll in `Buffered` or `Periodic` mode
    // does not wait for it). A gap up to `last_segment`, or a bad header there, is damage.
    let mut orphans = Vec::new();
    if opts.recovery_mode != RecoveryMode::Strict {
        let keep = unfinished_rolls(&ids, meta.first_segment, meta.last_segment, |id| {
            header_unwritten(&format::segment_path(dir, id))
        })?;
        orphans = ids
            .split_off(keep)
            .into_iter()
            .map(|id| format::segment_path(dir, id))
            .collect();
    }
    let last_id = ids.last().copied().unwrap_or(0).max(meta.last_segment);
    for (expect, id) in
        (meta.first_segment..=last_id).zip(ids.iter().copied().chain(std::iter::repeat(u64::MAX)))
    {
        if expect != id {
            return Err(Error::corrupt(
                format::segment_path(dir, expect),
                0,
                CorruptionKind::MissingSegment { segment_id: expect },
            ));
        }
    }

    // Open every segment and check it belongs to this log.
    let mut segs = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let writable = i + 1 == ids.len();
        let seg = Segment::open(&format::segment_path(dir, id), id, writable)?;
        if seg.header().log_id != meta.log_id {
            return Err(Error::corrupt(
                seg.path(),
                0,
                CorruptionKind::ForeignLog {
                    expected: meta.log_id,
                    found: seg.header().log_id,
                },
            ));
        }
        segs.push(seg);
    }

    if segs.is_empty() {
        return Err(Error::corrupt(
            format::segment_path(dir, meta.first_segment),
            0,
            CorruptionKind::MissingSegment {
                segment_id: meta.first_segment,
            },
        ));
    }
    // Read every segment, then decide (the decision is shared with `inspect`, which predicts it).
    let views: Vec<SegmentView> = segs
        .iter()
        .map(|seg| {
            let buf = seg.bytes(0, seg.len()).unwrap_or(&[]);
            SegmentView::read(buf, *seg.header(), |from| segment_dirty_end(seg, buf, from))
        })
        .collect();
    let paths: Vec<PathBuf> = segs.iter().map(|s| s.path().to_path_buf()).collect();
    let plan = plan_log(&views, &paths, opts.recovery_mode, external, discard)?;
    // A point-in-time cut of records the log, its snapshots or its manifests prove durable is a
    // discard from the first change on: its intent is made durable before anything is cut or set
    // aside, so that an open that finds the cut half done (or done, with the snapshots and
    // manifests past it not yet set aside, which a journal does after the log's recovery) finishes
    // it, whatever its mode, instead of refusing it as lost durable records.
    let discard = match (&plan.cut, views.get(plan.tail)) {
        (
            Some(PlannedCut {
                reason: CutReason::DurableDataDamaged(_),
                ..
            }),
            Some(v),
        ) => {
            let after = v.scan.next_lsn.saturating_sub(1);
            discard_cause = DiscardCause::DurableDataDamaged;
            write_discard_intent(dir, meta.log_id, after, discard_cause)?;
            Some(after)
        }
        _ => discard,
    };

    // Carry it out. Complete segments first: sealed at their last record, debris noted (set
    // aside in `finish`, once the whole log is known to recover: a failed open changes nothing).
    let mut debris: Vec<Debris> = Vec::new();
    let mut recovered: Vec<Arc<Segment>> = Vec::with_capacity(plan.tail + 1);
    let mut segs = segs.into_iter();
    for (i, v) in views.iter().enumerate().take(plan.tail) {
        let Some(mut seg) = segs.next() else { break };
        report.records += v.scan.data_records;
        report.bytes += (v.scan.end - SEGMENT_HEADER_LEN) as u64;
        if let Some(&(_, damage)) = plan.debris.iter().find(|&&(d, _)| d == i) {
            debris.push(Debris {
                path: seg.path().to_path_buf(),
                id: seg.id(),
                from: v.scan.end,
                to: v.dirty,
                damage,
                next_lsn: v.scan.next_lsn,
            });
        }
        seg.seal_at(v.scan.end, v.scan.end)
            .map_err(|e| Error::io("msync", seg.path(), e))?;
        recovered.push(Arc::new(seg));
    }
    let (Some(seg), Some(v)) = (segs.next(), views.get(plan.tail)) else {
        return Err(Error::corrupt(
            format::segment_path(dir, meta.first_segment),
            0,
            CorruptionKind::MissingSegment {
                segment_id: meta.first_segment,
            },
        ));
    };
    report.records += v.scan.data_records;
    report.bytes += (v.scan.end - SEGMENT_HEADER_LEN) as u64;
    // Segments after the tail (records its successor names are missing in it) are set aside.
    let later: Vec<PathBuf> = segs.map(|s| s.path().to_path_buf()).collect();
    let seg = if later.is_empty() {
        seg
    } else {
        // Only the last segment was opened writable: reopen the new tail so.
        let (path, id) = (seg.path().to_path_buf(), seg.id());
        drop(seg);
        Segment::open(&path, id, true)?
    };
    match plan.cut {
        None => {
            let mut seg = seg;
            seg.activate(
                v.scan.end,
                v.scan.end,
                v.scan.data_records,
                v.scan.last_data,
            )
            .map_err(|e| Error::io("activate", seg.path(), e))?;
            recovered.push(Arc::new(seg));
        }
        Some(c) => {
            cut_tail(
                dir,
                seg,
                v.scan,
                Some(c.damage),
                c.reason,
                &mut report,
                &mut recovered,
            )?;
            if let Some(cut) = report.cuts.last_mut() {
                cut.intact_records_cut = c.intact_after.map(|(a, b)| (Lsn(a), Lsn(b)));
                cut.lost_through = lost_through(cut, c.intact_after, c.named);
            }
        }
    }
    if !later.is_empty() {
        // The meta file moves first: a crash before the renames below leaves later segments whose
        // chain no longer matches, which the next open sets aside again.
        meta.last_segment = views[plan.tail].header.segment_id;
        crash_point("rewriting log.meta without the segments after the tail");
        write_meta(dir, &meta)?;
        set_aside_segments(dir, &later, &mut report)?;
    } else if let Some(last) = recovered.last() {
        if last.id() > meta.last_segment {
            meta.last_segment = last.id();
            crash_point("rewriting log.meta with the newest segment");
            write_meta(dir, &meta)?;
        }
    }
    finish(
        dir,
        discard.map(|after| (after, discard_cause)),
        meta,
        recovered,
        debris,
        &orphans,
        opts.keep_discard_intent,
        plan.watermark,
        report,
        started,
    )
}

/// What recovery reads off one segment before deciding anything about it. Recovery and
/// [`crate::inspect`] (which predicts recovery) build these alike and hand them to the one
/// decision, [`plan_log`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentView {
    /// Its header.
    pub header: SegmentHeader,
    /// Its intact frames.
    pub scan: SegmentScan,
    /// Just past its last non-zero byte at or after `scan.end`.
    pub dirty: usize,
    /// Intact frames between `scan.end` and `dirty` (past the damage).
    pub ahead: Ahead,
}

impl SegmentView {
    /// Reads a segment image; `dirty_end` finds where the bytes a cut at an offset must zero end
    /// (for a fresh segment the last non-zero byte, for a recycled one [`recycled_dirty_end`]).
    pub(crate) fn read(
        buf: &[u8],
        header: SegmentHeader,
        dirty_end: impl FnOnce(usize) -> usize,
    ) -> SegmentView {
        let scan = scan_frames(buf, header.base_lsn, header.recycled);
        let dirty = dirty_end(scan.end);
        let ahead = scan_ahead(buf, scan.end, dirty, scan.next_lsn);
        SegmentView {
            header,
            scan,
            dirty,
            ahead,
        }
    }
}

/// How recovery treats a log's segments, decided before anything changes.
#[derive(Debug)]
pub(crate) struct LogPlan {
    /// Complete segments (before `tail`) with damaged or stray bytes after their last record,
    /// which are set aside: (index, what is there).
    pub debris: Vec<(usize, RecordDamage)>,
    /// The segment that becomes the appendable tail; any after it are set aside.
    pub tail: usize,
    /// Where and why the tail is cut; `None` for a clean end.
    pub cut: Option<PlannedCut>,
    /// The highest sync-marker watermark in the segments kept.
    pub watermark: u64,
}

/// A cut of the tail segment at the end of its intact frames (`scan.end`).
#[derive(Debug)]
pub(crate) struct PlannedCut {
    /// What is there.
    pub damage: RecordDamage,
    /// Why cutting is allowed.
    pub reason: CutReason,
    /// LSN range of intact data records after the damage (in the tail and the segments after
    /// it), which the cut sets aside.
    pub intact_after: Option<(u64, u64)>,
    /// The last LSN the next segment's header names, when records it names are missing.
    pub named: Option<u64>,
}

/// The decision of log recovery over its segments, in order (`paths[i]` is the file of
/// `views[i]`): which become the log, where it is cut and why — or the error that refuses the
/// open. Pure, shared by recovery and [`crate::inspect`], so that what `verify` and `repair`
/// predict is what recovery does.
///
/// `external` is the LSN through which snapshots and manifests prove the log durable, `discard`
/// the LSN after which an (interrupted) discard sets every record aside.
pub(crate) fn plan_log(
    views: &[SegmentView],
    paths: &[PathBuf],
    mode: RecoveryMode,
    external: u64,
    discard: Option<u64>,
) -> Result<LogPlan> {
    let path = |i: usize| paths.get(i).cloned().unwrap_or_default();
    let mut plan = LogPlan {
        debris: Vec::new(),
        tail: 0,
        cut: None,
        watermark: 0,
    };
    let mut prev_last: Option<(u64, u32)> = None;
    for (i, v) in views.iter().enumerate() {
        let h = v.header;
        let chain = prev_last.unwrap_or((h.prev_last_lsn, h.prev_last_crc));
        if prev_last.is_some() && (h.prev_last_lsn, h.prev_last_crc) != chain {
            return Err(Error::corrupt(
                path(i),
                0,
                CorruptionKind::BrokenChain {
                    previous_last: chain,
                    header_says: (h.prev_last_lsn, h.prev_last_crc),
                },
            ));
        }
        plan.tail = i;
        plan.watermark = plan.watermark.max(v.scan.watermark);
        let last = v.scan.last_data.unwrap_or(chain);
        let Some(next) = views.get(i + 1) else {
            // The tail segment. A clean end before what a snapshot or manifest proves durable:
            // the end of the records was damaged to look unwritten (a zeroed page), not torn.
            let ends_early = external >= v.scan.next_lsn;
            if v.scan.damage.is_none() && v.dirty == v.scan.end && !ends_early {
                return Ok(plan);
            }
            let damage = v.scan.damage.unwrap_or(if v.dirty > v.scan.end {
                RecordDamage::GarbageAfterEnd
            } else {
                RecordDamage::Frame(FrameError::End)
            });
            let evidence = proof(
                plan.watermark.max(v.ahead.watermark),
                external,
                v.scan.next_lsn,
            );
            let reason = cut_reason(mode, discard, evidence, &path(i), &v.scan, damage)?;
            plan.cut = Some(PlannedCut {
                damage,
                reason,
                intact_after: v.ahead.data,
                named: None,
            });
            return Ok(plan);
        };
        let claim = (next.header.prev_last_lsn, next.header.prev_last_crc);
        if last == claim {
            // Every record the successor names is here. Anything after them (a damaged sync
            // marker, stray bytes) is debris: no record is lost, but it must not be read.
            prev_last = Some(last);
            if v.dirty > v.scan.end {
                let damage = v.scan.damage.unwrap_or(RecordDamage::GarbageAfterEnd);
                if mode == RecoveryMode::Strict {
                    return Err(damaged(
                        &path(i),
                        v.scan.end,
                        v.scan.next_lsn,
                        damage,
                        DurabilityEvidence::StrictMode,
                    ));
                }
                plan.debris.push((i, damage));
            }
            continue;
        }
        if last.0 >= claim.0 {
            // The successor expects fewer records, or a different last record: not our successor.
            return Err(Error::corrupt(
                path(i + 1),
                0,
                CorruptionKind::BrokenChain {
                    previous_last: last,
                    header_says: claim,
                },
            ));
        }
        // Records the successor's header names are missing here. Whether they were durable
        // decides between a torn tail (spanning segments) and damaged durable data.
        let damage = v
            .scan
            .damage
            .unwrap_or(RecordDamage::Frame(FrameError::End));
        let mut after = v.ahead;
        for l in &views[i + 1..] {
            after.watermark = after.watermark.max(l.scan.watermark);
            if let Some((lsn, _)) = l.scan.last_data {
                let lo = l.header.base_lsn;
                after.data = Some(
                    after
                        .data
                        .map_or((lo, lsn), |(a, b)| (a.min(lo), b.max(lsn))),
                );
            }
        }
        let evidence = if next.header.predecessor_unsynced {
            proof(
                plan.watermark.max(after.watermark),
                external,
                v.scan.next_lsn,
            )
        } else {
            Some(DurabilityEvidence::LaterSegment(next.header.segment_id))
        };
        let reason = cut_reason(mode, discard, evidence, &path(i), &v.scan, damage)?;
        plan.cut = Some(PlannedCut {
            damage,
            reason,
            intact_after: after.data,
            named: Some(claim.0),
        });
        return Ok(plan);
    }
    Ok(plan)
}

/// What a cut is known to lose through: the last intact record after the damage, the last record
/// a later segment's header names, what its evidence of durability covers.
fn lost_through(cut: &TailCut, intact: Option<(u64, u64)>, named: Option<u64>) -> Option<Lsn> {
    let covered = match &cut.reason {
        CutReason::DurableDataDamaged(c) => match c.kind {
            CorruptionKind::DamagedRecord {
                evidence: DurabilityEvidence::SyncedThrough(n) | DurabilityEvidence::Covered(n),
                ..
            } => Some(n),
            _ => None,
        },
        _ => None,
    };
    [intact.map(|(_, b)| b), named, covered]
        .into_iter()
        .flatten()
        .max()
        .filter(|&n| n >= cut.first_cut_lsn.get())
        .map(Lsn)
}

/// The strongest evidence that the record `lsn` was durable: the highest watermark of a sync
/// marker, or what snapshots and manifests cover (`external`), whichever reaches further (so
/// that the report states as much as is known of what a cut loses). `None` if neither reaches it.
fn proof(marked: u64, external: u64, lsn: u64) -> Option<DurabilityEvidence> {
    if marked.max(external) < lsn {
        None
    } else if external > marked {
        Some(DurabilityEvidence::Covered(external))
    } else {
        Some(DurabilityEvidence::SyncedThrough(marked))
    }
}

/// What the recovery mode makes of damage at `scan.end` of the segment at `path`, given the
/// evidence that it is durable: the reason to cut there, or the error to refuse with.
fn cut_reason(
    mode: RecoveryMode,
    discard: Option<u64>,
    evidence: Option<DurabilityEvidence>,
    path: &Path,
    scan: &SegmentScan,
    damage: RecordDamage,
) -> Result<CutReason> {
    if let Some(after) = discard.filter(|&after| scan.next_lsn > after) {
        // Every record through the discard point is intact: the damage is in records being
        // discarded (an interrupted discard left them half zeroed), not in kept ones.
        return Ok(CutReason::Discarded { after: Lsn(after) });
    }
    let refuse = |ev| damaged(path, scan.end, scan.next_lsn, damage, ev);
    match (mode, evidence) {
        (RecoveryMode::Strict, ev) => Err(refuse(ev.unwrap_or(DurabilityEvidence::StrictMode))),
        (RecoveryMode::TolerateTornTail, Some(ev)) => Err(refuse(ev)),
        (_, None) => Ok(CutReason::TornTail),
        (RecoveryMode::PointInTime, Some(ev)) => match refuse(ev) {
            Error::Corruption(c) => Ok(CutReason::DurableDataDamaged(c)),
            other => Err(other),
        },
    }
}

/// Cuts `seg` at `scan.end` (saving the cut bytes) and makes it the appendable tail.
fn cut_tail(
    dir: &Path,
    mut seg: Segment,
    scan: SegmentScan,
    damage: Option<RecordDamage>,
    reason: CutReason,
    report: &mut RecoveryReport,
    recovered: &mut Vec<Arc<Segment>>,
) -> Result<()> {
    let buf = seg.bytes(0, seg.len()).unwrap_or(&[]);
    let dirty = segment_dirty_end(&seg, buf, scan.end);
    let backup = backup_cut(dir, &seg, scan.end, dirty)?;
    report.cuts.push(TailCut {
        path: seg.path().to_path_buf(),
        offset: scan.end as u64,
        bytes: (dirty - scan.end) as u64,
        damage,
        reason,
        first_cut_lsn: Lsn(scan.next_lsn),
        intact_records_cut: None,
        lost_through: None,
        backup,
    });
    crash_point("zeroing the cut");
    seg.activate(scan.end, dirty, scan.data_records, scan.last_data)
        .map_err(|e| Error::io("msync", seg.path(), e))?;
    recovered.push(Arc::new(seg));
    Ok(())
}

/// Deletes the temporaries and deletion leftovers listed in the report, once recovery has
/// succeeded: a failed open leaves the directory exactly as it found it.
fn remove_leftovers(report: &RecoveryReport) -> Result<()> {
    for path in &report.removed_files {
        crash_point("removing a leftover");
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    Ok(())
}

/// Bytes after the last record of a segment its successor proves complete.
struct Debris {
    path: PathBuf,
    id: u64,
    from: usize,
    to: usize,
    damage: RecordDamage,
    next_lsn: u64,
}

/// Saves and zeroes debris (through a second, writable mapping: the recovered segment is already
/// capped below it and never reads it).
fn clear_debris(dir: &Path, d: Debris, report: &mut RecoveryReport) -> Result<()> {
    let mut seg = Segment::open(&d.path, d.id, true)?;
    let backup = backup_cut(dir, &seg, d.from, d.to)?;
    crash_point("zeroing debris");
    seg.seal_at(d.from, d.to)
        .map_err(|e| Error::io("msync", &d.path, e))?;
    report.cuts.push(TailCut {
        path: d.path,
        offset: d.from as u64,
        bytes: (d.to - d.from) as u64,
        damage: Some(d.damage),
        reason: CutReason::DebrisAfterCompleteSegment,
        first_cut_lsn: Lsn(d.next_lsn),
        intact_records_cut: None,
        lost_through: None,
        backup,
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    dir: &Path,
    discard: Option<(u64, DiscardCause)>,
    mut meta: LogMeta,
    mut recovered: Vec<Arc<Segment>>,
    debris: Vec<Debris>,
    orphans: &[PathBuf],
    keep_intent: bool,
    mut watermark: u64,
    mut report: RecoveryReport,
    started: Instant,
) -> Result<Recovered> {
    remove_leftovers(&report)?;
    set_aside_segments(dir, orphans, &mut report)?;
    for d in debris {
        clear_debris(dir, d, &mut report)?;
    }
    if let Some((stop, cause)) = discard {
        discard_after(dir, stop, cause, &mut meta, &mut recovered, &mut report)?;
        if !keep_intent {
            remove_discard_intent(dir)?;
        }
        // Sync markers among the discarded records attest to records that are gone.
        watermark = watermark.min(stop);
    }
    let (Some(first), Some(tail)) = (recovered.first(), recovered.last()) else {
        return Err(Error::corrupt(
            dir.join(format::META_FILE),
            0,
            CorruptionKind::MissingSegment {
                segment_id: meta.first_segment,
            },
        ));
    };
    if tail.id() != meta.last_segment {
        meta.last_segment = tail.id();
        crash_point("rewriting log.meta with the tail segment");
        write_meta(dir, &meta)?;
    }
    // After a process crash the page cache may still hold pages that never reached the disk: of
    // the tail, and of any segment a non-syncing roll left behind (its successor says so). Make
    // them durable, and the directory entries too, before calling anything durable.
    for (i, seg) in recovered.iter().enumerate() {
        let successor_unsynced = recovered
            .get(i + 1)
            .is_some_and(|n| n.header().predecessor_unsynced);
        if successor_unsynced || i + 1 == recovered.len() {
            seg.sync_file()
                .map_err(|e| Error::io("fsync", seg.path(), e))?;
        }
    }
    sync_dir(dir)?;
    let durable = tail.last_reserved_lsn();
    report.segments = recovered.len();
    report.first_lsn = Lsn(first.header().base_lsn);
    report.last_lsn = Lsn(durable);
    report.synced_through = Lsn(watermark);
    report.duration = started.elapsed();
    Ok(Recovered {
        segments: recovered,
        meta,
        durable_lsn: durable,
        watermark,
        report,
    })
}

/// Sets aside every record after `stop` (see [`LogOptions::discard_after`]). Crash-safe: the
/// intent (`log.discard`) is made durable first and recovery finishes an interrupted discard;
/// then the meta file forgets the later segments, they are renamed aside newest first (each
/// rename durable before the next, so the remaining segments always chain without a gap), the
/// segment holding `stop + 1` is cut, and the intent is removed (by `finish`, or — with
/// `keep_discard_intent` — by the journal, once it has set aside the snapshots and manifests past
/// `stop`, which until then prove records durable that the discard sets aside).
fn discard_after(
    dir: &Path,
    stop: u64,
    cause: DiscardCause,
    meta: &mut LogMeta,
    recovered: &mut Vec<Arc<Segment>>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let (Some(first), Some(tail)) = (recovered.first(), recovered.last()) else {
        return Ok(());
    };
    let last = tail.last_reserved_lsn();
    if last <= stop {
        return Ok(());
    }
    if first.header().base_lsn > stop.saturating_add(1) {
        // The records up to `stop` are deleted: keeping "the log through `stop`" is impossible.
        return Err(Error::corrupt(
            first.path(),
            0,
            CorruptionKind::MissingSegment {
                segment_id: first.id().saturating_sub(1),
            },
        ));
    }
    write_discard_intent(dir, meta.log_id, stop, cause)?;
    // The segment holding record `stop + 1`: the last one starting at or before it.
    let k = recovered
        .partition_point(|s| s.header().base_lsn <= stop + 1)
        .saturating_sub(1);
    let later: Vec<PathBuf> = recovered
        .split_off(k + 1)
        .iter()
        .map(|s| s.path().to_path_buf())
        .collect();
    let Some(seg) = recovered.pop() else {
        return Ok(());
    };
    let (path, id, base) = (seg.path().to_path_buf(), seg.id(), seg.header().base_lsn);
    drop(seg);
    if meta.last_segment != id {
        meta.last_segment = id;
        crash_point("rewriting log.meta before a discard sets segments aside");
        write_meta(dir, meta)?;
    }
    set_aside_segments(dir, &later, report)?;
    let seg = Segment::open(&path, id, true)?;
    let buf = seg.bytes(0, seg.len()).unwrap_or(&[]);
    let scan = scan_frames_through(buf, base, seg.header().recycled, stop);
    let reason = CutReason::Discarded { after: Lsn(stop) };
    cut_tail(dir, seg, scan, None, reason, report, recovered)?;
    if let Some(cut) = report.cuts.last_mut() {
        cut.intact_records_cut = Some((Lsn(stop + 1), Lsn(last)));
        cut.lost_through = Some(Lsn(last));
    }
    Ok(())
}

/// Renames whole segments aside (`*.seg.discarded`), newest first, each rename durable before
/// the next: a crash in between leaves the remaining segments contiguous (a gap would make the
/// log unopenable), and the next recovery sets them aside again.
fn set_aside_segments(dir: &Path, later: &[PathBuf], report: &mut RecoveryReport) -> Result<()> {
    for p in later.iter().rev() {
        let aside = unused_name(p.with_extension("seg.discarded"));
        crash_point("setting a segment aside");
        fs::rename(p, &aside).map_err(|e| Error::io("rename", p, e))?;
        sync_dir(dir)?;
        report.discarded_segments.push(aside);
    }
    Ok(())
}

/// Makes the intent to discard every record of log `log_id` after `after` durable (`log.discard`).
fn write_discard_intent(dir: &Path, log_id: u64, after: u64, cause: DiscardCause) -> Result<()> {
    crash_point("writing the discard intent");
    super::write_small_file(
        dir,
        format::DISCARD_FILE,
        &DiscardIntent {
            log_id,
            after,
            cause,
        }
        .encode(),
    )
    .map(drop)
}

/// Reads `log.discard`, if there is one.
fn read_discard_intent(dir: &Path) -> Result<Option<DiscardIntent>> {
    let path = dir.join(format::DISCARD_FILE);
    match fs::read(&path) {
        Ok(bytes) => DiscardIntent::decode(&bytes)
            .map(Some)
            .map_err(|e| meta_error_supporting(&path, e, DISCARD_VERSION)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// Removes `log.discard` (durably), once the discard it announced is complete.
pub(crate) fn remove_discard_intent(dir: &Path) -> Result<()> {
    let path = dir.join(format::DISCARD_FILE);
    if !path.exists() {
        return Ok(());
    }
    crash_point("removing the discard intent");
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// A crash between creating the first segment and writing the meta file leaves one empty
/// segment and no meta file: finish the creation. Anything else without a meta file is damage.
fn adopt_unfinished_creation(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    meta_path: &Path,
) -> Result<LogMeta> {
    let missing = || Error::corrupt(meta_path, 0, CorruptionKind::MissingMeta);
    let [(1, path)] = segments else {
        return Err(missing());
    };
    let seg = Segment::open(path, 1, false)?;
    let buf = seg.bytes(0, seg.len()).unwrap_or(&[]);
    if seg.header().base_lsn != 1 || dirty_end(buf, SEGMENT_HEADER_LEN) != SEGMENT_HEADER_LEN {
        return Err(missing());
    }
    let meta = LogMeta {
        log_id: seg.header().log_id,
        first_segment: 1,
        last_segment: 1,
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{encode_frame, frame_size};

    fn image(records: &[&[u8]]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let mut at = SEGMENT_HEADER_LEN;
        for (i, r) in records.iter().enumerate() {
            let n = frame_size(r.len()).unwrap();
            encode_frame(&mut buf[at..at + n], 10 + i as u64, FrameKind::Data, r);
            at += n;
        }
        buf
    }

    #[test]
    fn scan_counts_records_and_stops_at_damage() {
        let buf = image(&[b"a", b"bb", b"ccc"]);
        let s = scan_frames(&buf, 10, false);
        assert_eq!((s.data_records, s.next_lsn, s.damage), (3, 13, None));
        let mut bad = buf.clone();
        bad[SEGMENT_HEADER_LEN + 24 + 21] ^= 1; // payload of the second frame (frames are 24 bytes)
        let s = scan_frames(&bad, 10, false);
        assert_eq!(s.data_records, 1);
        assert_eq!(s.end, SEGMENT_HEADER_LEN + 24);
        assert!(matches!(
            s.damage,
            Some(RecordDamage::Frame(FrameError::Checksum { .. }))
        ));
        let ahead = scan_ahead(&bad, s.end, bad.len(), s.next_lsn);
        assert_eq!(ahead.data, Some((12, 12)));
    }

    #[test]
    fn wrong_base_lsn_is_an_lsn_mismatch() {
        let buf = image(&[b"a"]);
        assert_eq!(
            scan_frames(&buf, 11, false).damage,
            Some(RecordDamage::LsnMismatch { found: 10 })
        );
    }

    /// Frames `(lsn, kind, payload)` written back to back from the header on, into `buf`.
    fn frames_into(buf: &mut [u8], mut at: usize, frames: &[(u64, FrameKind, &[u8])]) -> usize {
        for &(lsn, kind, p) in frames {
            let n = frame_size(p.len()).unwrap();
            encode_frame(&mut buf[at..at + n], lsn, kind, p);
            at += n;
        }
        at
    }

    #[test]
    fn in_a_recycled_segment_an_older_frame_ends_the_records() {
        // An older segment (LSNs 3..=6, a marker for 4) under a newer one based at 20.
        let mut buf = vec![0u8; 4096];
        let marker = 4u64.to_le_bytes();
        frames_into(
            &mut buf,
            SEGMENT_HEADER_LEN,
            &[
                (3, FrameKind::Data, b"old3"),
                (4, FrameKind::Data, b"old4"),
                (4, FrameKind::SyncMarker, &marker),
                (5, FrameKind::Data, b"old5"),
                (6, FrameKind::Data, b"old6"),
            ],
        );
        let old = buf.clone();
        // The newer segment's two records overwrite the first two older frames exactly.
        let end = frames_into(
            &mut buf,
            SEGMENT_HEADER_LEN,
            &[
                (20, FrameKind::Data, b"new0"),
                (21, FrameKind::Data, b"new1"),
            ],
        );
        let s = scan_frames(&buf, 20, true);
        assert_eq!((s.data_records, s.end, s.damage), (2, end, None));
        // Nothing of this segment lies after its records: a cut would zero nothing.
        assert_eq!(recycled_dirty_end(&buf, end, 20), end);
        // Read as a fresh segment, the same bytes are damage.
        assert_eq!(
            scan_frames(&buf, 20, false).damage,
            Some(RecordDamage::LsnMismatch { found: 4 })
        );
        // An older sync marker right at the end ends it too, and its watermark counts for
        // nothing.
        // (The log reuses a file only when its markers' LSNs are below the new base less one.)
        let mut m = old.clone();
        let end = frames_into(
            &mut m,
            SEGMENT_HEADER_LEN,
            &[(6, FrameKind::Data, b"n6"), (7, FrameKind::Data, b"n7")],
        );
        frames_into(&mut m, end, &[(4, FrameKind::SyncMarker, &marker)]);
        let s = scan_frames(&m, 6, true);
        assert_eq!(
            (s.data_records, s.end, s.watermark, s.damage),
            (2, end, 0, None)
        );
        // A marker for the record before the base is this segment's own, not an older one.
        let mut own = old;
        let end = frames_into(
            &mut own,
            SEGMENT_HEADER_LEN,
            &[
                (5, FrameKind::SyncMarker, &marker),
                (6, FrameKind::Data, b"n6"),
            ],
        );
        let s = scan_frames(&own, 6, true);
        assert_eq!((s.data_records, s.end, s.watermark), (1, end, 4));
    }

    #[test]
    fn the_dirty_end_of_a_recycled_segment_covers_only_its_own_frames() {
        let mut buf = vec![0u8; 4096];
        // Older frames everywhere.
        let mut at = SEGMENT_HEADER_LEN;
        for lsn in 1..40 {
            at = frames_into(&mut buf, at, &[(lsn, FrameKind::Data, b"older bytes")]);
        }
        // The newer records are as long as the older ones: an older frame starts at their end.
        let end = frames_into(
            &mut buf,
            SEGMENT_HEADER_LEN,
            &[
                (100, FrameKind::Data, b"newer bytes"),
                (101, FrameKind::Data, b"newer bytes"),
            ],
        );
        assert_eq!(recycled_dirty_end(&buf, end, 100), end);
        // Older bytes from the middle of a frame there are damage at every open unless the cut
        // zeroes the `len` field: at least 8 bytes.
        let mut shifted = buf.clone();
        let mid = frames_into(&mut shifted, end, &[(102, FrameKind::Data, b"xx")]);
        shifted[end..mid].fill(0x5a);
        assert_eq!(recycled_dirty_end(&shifted, end, 100), end + 8);
        // Zeros there need nothing.
        shifted[end..mid].fill(0);
        assert_eq!(recycled_dirty_end(&shifted, end, 100), end);
        // Fewer bytes left than a frame header: all of them, or the end is never clean.
        let short = &buf[..end + 16];
        assert_eq!(recycled_dirty_end(short, end, 100), end + 16);
        // A frame of this segment further on (written back before a torn one in between): the
        // cut must zero through it, or appends resuming at `end` could meet it again.
        let later = end + 3 * 40;
        let after = frames_into(&mut buf, later, &[(104, FrameKind::Data, b"later")]);
        assert_eq!(recycled_dirty_end(&buf, end, 100), after);
        // A torn frame of this segment at `end` itself (checksum broken): covered by its length.
        let mut torn = buf.clone();
        let n = frames_into(&mut torn, end, &[(102, FrameKind::Data, &[7u8; 200])]);
        torn[n - 8] ^= 1;
        assert!(recycled_dirty_end(&torn, end, 100) >= n);
    }

    #[test]
    fn dirty_end_finds_the_last_nonzero_byte() {
        let mut buf = vec![0u8; 3 * 4096 + 100];
        assert_eq!(dirty_end(&buf, 64), 64);
        buf[5000] = 1;
        assert_eq!(dirty_end(&buf, 64), 5008);
        assert_eq!(dirty_end(&buf, 6000), 6000);
        let n = buf.len();
        buf[n - 1] = 7;
        assert_eq!(dirty_end(&buf, 64), n);
    }
}
