//! Read-only inspection of a journal directory: what is there, whether every byte checks out, and
//! what each [`RecoveryMode`] would do with any damage — without opening the journal.
//!
//! [`Journal::open`](crate::Journal::open) takes the directory lock and *changes* a damaged
//! directory (cuts a torn tail, sets files aside, removes temporaries). Operators need to look
//! first: [`inspect`] reads files and never writes, renames, locks (beyond a momentary shared
//! probe of `LOCK`, to report whether a journal is open there) or creates anything. It reuses the
//! pure scanners recovery uses (frame decoding, the scan past damage, the sync-marker evidence) and
//! mirrors recovery's decisions, so that its predictions match what an open would do; the
//! `statejournal` command's `verify` and `repair` are built on it.
//!
//! ```
//! use statejournal::{inspect, Journal, JournalOptions};
//! # fn main() -> Result<(), statejournal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut journal = Journal::open(dir.path(), JournalOptions::default())?;
//! let clicks = journal.value_state::<u32, u64>("clicks")?;
//! clicks.set(&mut journal, &7, &1)?;
//! journal.checkpoint()?;
//! journal.close()?;
//!
//! let found = inspect::inspect(dir.path(), inspect::InspectOptions::default())?;
//! assert!(found.is_sound());
//! assert_eq!(found.checkpoints.len(), 1);
//! let state = found.state.as_ref().unwrap();
//! assert_eq!(state.states[0].name, "clicks");
//! assert_eq!(state.states[0].entries, 1);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::codec::frame::{decode_frame, FrameError, FrameKind, FRAME_ALIGN};
use crate::codec::header::{HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::codec::manifest::Manifest;
use crate::codec::meta::{DiscardCause, DiscardIntent, LogMeta, DISCARD_VERSION};
use crate::codec::record::{decode_record, Op};
use crate::error::{CorruptionKind, Error, RecordDamage, Result};
use crate::format;
use crate::journal::recovery::{choose_snapshot, manifest_error_refuses, SnapshotChoice};
use crate::keygroup::{KeyGroupRange, MAX_KEY_GROUPS};
use crate::log::recovery::{
    dirty_end, plan_log, recycled_dirty_end, Ahead, LogPlan, SegmentScan, SegmentView,
};
use crate::log::{meta_error, meta_error_supporting};
use crate::log::{CutReason, Lsn, RecoveryMode};
use crate::snapshot::SnapshotReader;
use crate::state::{Data, Store};

/// What [`inspect`] does besides listing and scanning the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectOptions {
    /// Read and check every block of every snapshot (not only header, footer and trailer).
    pub verify_snapshots: bool,
    /// Check the CRC of every segment prefix each checkpoint manifest names.
    pub verify_checkpoints: bool,
    /// Rebuild the state in memory (newest usable snapshot plus the log after it) to count the
    /// live entries and bytes of every state. Takes memory like the journal's own tables.
    pub replay_state: bool,
}

impl InspectOptions {
    /// Only the listing, the log's scan and the headers, footers and manifests: no snapshot
    /// block read, no segment prefix checksummed, no state rebuilt. What a command needs to find
    /// its way in a directory quickly.
    pub fn structure_only() -> Self {
        InspectOptions {
            verify_snapshots: false,
            verify_checkpoints: false,
            replay_state: false,
        }
    }
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            verify_snapshots: true,
            verify_checkpoints: true,
            replay_state: true,
        }
    }
}

/// Everything [`inspect`] found in a journal directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// The log's identity (from `log.meta`), if the meta file is readable.
    pub log_id: Option<u64>,
    /// Another process (or this one) holds the directory lock: a journal is open there, and its
    /// tail may be in the middle of being written.
    pub in_use: bool,
    /// An interrupted discard (`log.discard`: a checkpoint restore, or a point-in-time recovery
    /// that cut durable data, killed before it finished): the next open, in any mode, sets aside
    /// every record after this LSN and the snapshots and manifests past it.
    pub discard_after: Option<Lsn>,
    /// Why that discard was begun: [`DiscardCause::DurableDataDamaged`] when the interrupted open
    /// was a point-in-time recovery past damaged durable records (durable data is lost).
    pub discard_cause: Option<DiscardCause>,
    /// The log's segment files, in id order.
    pub segments: Vec<SegmentInfo>,
    /// Snapshot files, in LSN order.
    pub snapshots: Vec<SnapshotInfo>,
    /// Checkpoint manifests, in id order.
    pub checkpoints: Vec<CheckpointSummary>,
    /// Every other file: backups of cut bytes, files set aside, temporaries, the lock and meta
    /// files.
    pub other_files: Vec<OtherFile>,
    /// Bytes of every file in the directory.
    pub bytes_on_disk: u64,
    /// The records an open in [`RecoveryMode::TolerateTornTail`] would keep: the intact prefix of
    /// the log.
    pub log: LogSummary,
    /// Damage found, each with what every recovery mode would do about it.
    pub problems: Vec<Problem>,
    /// The state rebuilt in memory ([`InspectOptions::replay_state`]), when the log and a usable
    /// snapshot allowed it.
    pub state: Option<StateSummary>,
    /// Why the state could not be rebuilt, if it was asked for and could not be.
    pub state_error: Option<String>,
}

/// One segment file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Segment id (from the file name).
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// File length (preallocated: most of a young segment is zeros).
    pub file_len: u64,
    /// The decoded header (`None` if it did not decode).
    pub header: Option<SegmentHeader>,
    /// Data records in the intact prefix.
    pub records: u64,
    /// LSN of the first record (the header's base LSN).
    pub first_lsn: Lsn,
    /// LSN of the last intact record (`first_lsn - 1` if none).
    pub last_lsn: Lsn,
    /// Where the intact frames end.
    pub data_end: u64,
    /// Where the last non-zero byte ends (past `data_end` if there is damage or debris).
    pub dirty_end: u64,
    /// Bytes of record payloads in the intact prefix.
    pub payload_bytes: u64,
    /// The highest watermark a sync marker of this segment records.
    pub synced_through: Lsn,
    /// Below the meta file's first segment: a leftover of an interrupted deletion, removed by the
    /// next open.
    pub leftover: bool,
    /// Created by a roll that a crash interrupted before its creation was durable: past the meta
    /// file's last segment, and after a gap or from the first such segment whose header never
    /// reached the disk. No record in it was acknowledged; an open sets it aside (renamed
    /// `*.seg.discarded`), except in `Strict` mode, which refuses it.
    pub unfinished_roll: bool,
}

impl SegmentInfo {
    /// A segment whose frames were not read (its header did not decode, or it is set aside
    /// unread): no header, no records, and its length if the file can be stat'ed.
    fn unread(id: u64, path: &Path) -> SegmentInfo {
        SegmentInfo {
            id,
            path: path.to_path_buf(),
            file_len: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            header: None,
            records: 0,
            first_lsn: Lsn(0),
            last_lsn: Lsn(0),
            data_end: 0,
            dirty_end: 0,
            payload_bytes: 0,
            synced_through: Lsn(0),
            leftover: false,
            unfinished_roll: false,
        }
    }
}

/// One snapshot file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The LSN it covers (from its name).
    pub lsn: Lsn,
    /// File length.
    pub file_len: u64,
    /// Entries (from the footer; `0` if the footer is unreadable).
    pub entries: u64,
    /// Number of key groups of the journal.
    pub max_key_groups: u16,
    /// Per state: (id, name, kind code, entries, payload bytes), from the footer.
    pub states: Vec<(u32, String, u8, u64, u64)>,
    /// Per non-empty key group: (key group, entries, bytes), from the footer.
    pub key_groups: Vec<(u16, u64, u64)>,
    /// `None` when it verified (every block, if [`InspectOptions::verify_snapshots`]); otherwise
    /// the error.
    pub error: Option<String>,
}

/// One checkpoint manifest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckpointSummary {
    /// Checkpoint id (from the file name).
    pub id: u64,
    /// The manifest file.
    pub path: PathBuf,
    /// The decoded manifest (`None` if it did not decode).
    pub manifest: Option<Manifest>,
    /// `None` if the manifest and everything it names check out; otherwise why a restore of it
    /// would fail.
    pub error: Option<String>,
}

/// A file that is neither a segment, a snapshot nor a manifest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OtherFile {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// What it is, in a few words.
    pub role: &'static str,
}

/// The log as a [`RecoveryMode::TolerateTornTail`] open would keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogSummary {
    /// LSN of the oldest record.
    pub first_lsn: Lsn,
    /// LSN of the newest intact record before any damage.
    pub last_lsn: Lsn,
    /// Data records kept.
    pub records: u64,
    /// Bytes of their payloads.
    pub payload_bytes: u64,
    /// Bytes of their frames (headers and alignment included), plus sync markers.
    pub frame_bytes: u64,
    /// Highest LSN a sync marker proves durable.
    pub synced_through: Lsn,
}

/// What a kind of damage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Damage after everything the log proves durable: bytes of a flush a crash interrupted. No
    /// record a `Sync` commit acknowledged is in it.
    TornTail,
    /// Damage to records the log had proven durable (a sync marker or a later segment says so).
    DamagedDurableData,
    /// Damaged or stray bytes after the last record of a segment its successor proves complete:
    /// no record is lost.
    Debris,
    /// A segment that a roll created and a crash interrupted before its creation was durable (see
    /// [`SegmentInfo::unfinished_roll`]): no record in it was acknowledged.
    UnfinishedRoll,
    /// The log's structure is broken (missing, foreign or swapped file, bad header or meta file):
    /// no recovery mode opens it.
    Structure,
    /// A snapshot file does not verify.
    BadSnapshot,
    /// A checkpoint manifest does not decode, or names files that are missing or changed.
    BadCheckpoint,
    /// The log no longer starts at its first record and no usable snapshot covers the records
    /// before where it starts: no state can be rebuilt.
    NoState,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::TornTail => "torn tail",
            ProblemKind::DamagedDurableData => "damaged durable data",
            ProblemKind::Debris => "debris after a complete segment",
            ProblemKind::UnfinishedRoll => "segment of an unfinished roll",
            ProblemKind::Structure => "broken log structure",
            ProblemKind::BadSnapshot => "bad snapshot",
            ProblemKind::BadCheckpoint => "bad checkpoint",
            ProblemKind::NoState => "no state to rebuild",
        })
    }
}

/// What one recovery mode does about a problem when the journal is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Opening fails with an error naming the file and offset; nothing is changed.
    Refuses,
    /// The log is cut at the problem's offset (the cut bytes saved in a side file, later segments
    /// renamed `*.discarded`) and continues at `continues_at`. `loses_durable` says whether
    /// records the log had proven durable are among the cut ones.
    Cuts {
        /// The LSN the next appended record gets.
        continues_at: Lsn,
        /// Records proven durable are cut.
        loses_durable: bool,
    },
    /// The bytes are saved in a side file and zeroed; no record is lost.
    SetsAside,
    /// The snapshot is renamed `*.corrupt` and recovery uses an older snapshot or the whole log.
    FallsBack,
    /// Opening ignores the file (it stays for inspection); restoring that checkpoint fails.
    Ignores,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Refuses => f.write_str("refuses to open (error naming file and offset)"),
            Outcome::Cuts {
                continues_at,
                loses_durable: false,
            } => write!(
                f,
                "cuts it (bytes kept in a side file); the log continues at LSN {continues_at}"
            ),
            Outcome::Cuts {
                continues_at,
                loses_durable: true,
            } => write!(
                f,
                "stops before it, losing durable records from LSN {continues_at} on (kept in side files)"
            ),
            Outcome::SetsAside => f.write_str("sets the bytes aside; no record is lost"),
            Outcome::FallsBack => {
                f.write_str("renames it *.corrupt and falls back to an older snapshot or the log")
            }
            Outcome::Ignores => f.write_str("ignores it; restoring that checkpoint fails"),
        }
    }
}

/// One piece of damage, and what each recovery mode would do about it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Problem {
    /// What kind of damage.
    pub kind: ProblemKind,
    /// The damaged file.
    pub path: PathBuf,
    /// Byte offset of the damage in it.
    pub offset: u64,
    /// What is wrong, in a sentence.
    pub detail: String,
    /// [`RecoveryMode::Strict`]'s outcome.
    pub strict: Outcome,
    /// [`RecoveryMode::TolerateTornTail`]'s outcome (the default).
    pub tolerate_torn_tail: Outcome,
    /// [`RecoveryMode::PointInTime`]'s outcome.
    pub point_in_time: Outcome,
    /// Intact records found after the damage (cut with it, if it is cut).
    pub intact_records_after: Option<(Lsn, Lsn)>,
    /// Bytes from the damage to the last non-zero byte (what a cut would set aside, in this file).
    pub bytes: u64,
}

impl Problem {
    /// The outcome under `mode`.
    pub fn outcome(&self, mode: RecoveryMode) -> &Outcome {
        match mode {
            RecoveryMode::Strict => &self.strict,
            RecoveryMode::TolerateTornTail => &self.tolerate_torn_tail,
            RecoveryMode::PointInTime => &self.point_in_time,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at byte offset {}: {}",
            self.kind,
            self.path.display(),
            self.offset,
            self.detail
        )
    }
}

/// The state rebuilt in memory.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StateSummary {
    /// The snapshot it was built from (`None`: the whole log).
    pub snapshot: Option<PathBuf>,
    /// The LSN of that snapshot (0: none).
    pub snapshot_lsn: Lsn,
    /// Records replayed after it.
    pub replayed_records: u64,
    /// Bytes of their payloads.
    pub replayed_bytes: u64,
    /// Number of key groups of the journal.
    pub max_key_groups: u16,
    /// Every registered state.
    pub states: Vec<StateEntryCount>,
    /// Per key group: entries and bytes in the snapshot plus bytes of the log records after it
    /// that touch the group, for the groups that have any.
    pub key_groups: Vec<KeyGroupBytes>,
}

/// Live entries and bytes of one state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateEntryCount {
    /// State id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: crate::StateKind,
    /// Live entries (a map counts each entry plus one per key).
    pub entries: u64,
    /// Bytes of their keys and values as stored.
    pub payload_bytes: u64,
}

/// Bytes of one key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyGroupBytes {
    /// The key group.
    pub key_group: u16,
    /// Entries in the snapshot.
    pub snapshot_entries: u64,
    /// Bytes of its blocks in the snapshot.
    pub snapshot_bytes: u64,
    /// Bytes of keys and values of the log ops after the snapshot that touch it.
    pub log_bytes: u64,
}

impl Inspection {
    /// No damage of any kind.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    /// Opening in `mode` would succeed without losing a record the log had proven durable (it may
    /// cut a torn tail, set debris aside, fall back past a bad snapshot, ignore a bad manifest).
    pub fn opens_without_loss(&self, mode: RecoveryMode) -> bool {
        self.problems.iter().all(|p| match p.outcome(mode) {
            Outcome::Refuses => false,
            Outcome::Cuts { loses_durable, .. } => !loses_durable,
            _ => true,
        })
    }

    /// Bytes of snapshot files.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshots.iter().map(|s| s.file_len).sum()
    }

    /// The newest snapshot that verified and whose log tail is still there: the one an open
    /// would load.
    pub fn usable_snapshot(&self) -> Option<&SnapshotInfo> {
        let (lsn, _, ()) = self.snapshot_choice().loaded?;
        self.snapshots.iter().find(|s| s.lsn.get() == lsn)
    }

    /// What recovery's choice of a snapshot ([`choose_snapshot`]) makes of these snapshots.
    fn snapshot_choice(&self) -> SnapshotChoice<()> {
        let files: BTreeMap<u64, PathBuf> = self
            .snapshots
            .iter()
            .map(|s| (s.lsn.get(), s.path.clone()))
            .collect();
        let by_lsn: BTreeMap<u64, &SnapshotInfo> =
            self.snapshots.iter().map(|s| (s.lsn.get(), s)).collect();
        let choice = choose_snapshot(
            &files,
            self.log.first_lsn.get(),
            self.log.last_lsn.get(),
            |lsn, path| match by_lsn.get(&lsn).and_then(|s| s.error.as_ref()) {
                None => Ok(()),
                Some(detail) => Err(Error::corrupt(
                    path,
                    0,
                    CorruptionKind::BadSnapshot {
                        detail: detail.clone(),
                    },
                )),
            },
        );
        // `load` above never returns `InvalidOptions`, the one error `choose_snapshot` passes on.
        choice.unwrap_or(SnapshotChoice {
            loaded: None,
            unusable: Vec::new(),
        })
    }
}

/// A data record as stored, borrowed from the segment buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// The segment holding it.
    pub segment: u64,
    /// Byte offset of its frame in the segment file.
    pub offset: u64,
    /// The payload (for a journal: a state record, see [`crate::codec::record`]).
    pub payload: &'a [u8],
}

/// Calls `f` with every intact data record of the log in `dir` from LSN `from` on, in order,
/// reading the segment files (no lock, no mapping, no write). Within a segment it stops at the
/// first damage; it goes on to the next segment only if that one continues at the next LSN (so
/// debris after a complete segment is skipped and a torn tail ends the log, as recovery does),
/// and stops at a segment of another log. It does not check the segment chain's CRCs: use
/// [`inspect`] for a verdict. Returns the LSN of the last record delivered (0 if none).
pub fn read_records<F>(dir: &Path, from: Lsn, mut f: F) -> Result<Lsn>
where
    F: FnMut(RecordRef<'_>) -> ControlFlow<()>,
{
    let meta = read_meta(dir)?;
    let listing = list(dir)?;
    let unfinished = unfinished_from(dir, &listing, &meta)?;
    let mut last = 0u64;
    let mut expect: Option<u64> = None;
    for (&id, path) in listing.segments.range(meta.first_segment..unfinished) {
        let buf = read_segment(path)?;
        let header = decode_header(path, &buf, id)?;
        if header.log_id != meta.log_id {
            break;
        }
        if expect.is_some_and(|e| e != header.base_lsn) {
            break; // a gap: what follows is not part of the recoverable log
        }
        let mut at = SEGMENT_HEADER_LEN;
        let mut next = header.base_lsn;
        while at < buf.len() {
            let Ok(fr) = decode_frame(&buf, at) else {
                break;
            };
            match fr.kind {
                FrameKind::Data if fr.lsn == next => {
                    if fr.lsn >= from.get() {
                        let payload = buf.get(fr.payload_start..fr.payload_end).unwrap_or(&[]);
                        last = fr.lsn;
                        if f(RecordRef {
                            lsn: Lsn(fr.lsn),
                            segment: id,
                            offset: at as u64,
                            payload,
                        })
                        .is_break()
                        {
                            return Ok(Lsn(last));
                        }
                    }
                    next += 1;
                }
                FrameKind::SyncMarker if fr.lsn + 1 == next => {}
                _ => break,
            }
            at = fr.next;
        }
        expect = Some(next);
    }
    Ok(Lsn(last))
}

/// Calls `f` with every entry of the snapshot file at `path` (checking every block):
/// `(key group, state id, composite key, map key, stored value)`. Returns the snapshot's state
/// registry: `(id, name, kind code)`.
pub fn read_snapshot<F>(path: &Path, mut f: F) -> Result<Vec<(u32, String, u8)>>
where
    F: FnMut(u16, u32, &[u8], Option<&[u8]>, &[u8]),
{
    let r = SnapshotReader::open(path)?;
    let all = KeyGroupRange::all(r.meta().max_key_groups);
    r.for_each_block(all, |_, block| {
        for e in block {
            let e = e?;
            f(e.kg, e.state_id, e.key, e.map_key, e.value);
        }
        Ok(())
    })?;
    Ok(r.meta()
        .states
        .iter()
        .map(|s| (s.id, s.name.clone(), s.kind))
        .collect())
}

struct Listing {
    segments: BTreeMap<u64, PathBuf>,
    snapshots: BTreeMap<u64, PathBuf>,
    manifests: BTreeMap<u64, PathBuf>,
    others: Vec<(PathBuf, String)>,
    bytes: u64,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut l = Listing {
        segments: BTreeMap::new(),
        snapshots: BTreeMap::new(),
        manifests: BTreeMap::new(),
        others: Vec::new(),
        bytes: 0,
    };
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Gone since the directory was read: a journal open elsewhere renames and removes
            // files as it runs (a prepared segment, a snapshot's temporary, merged segments).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if !meta.is_file() {
            continue;
        }
        l.bytes += meta.len();
        if let Some(id) = format::parse_segment_file_name(&name) {
            l.segments.insert(id, path);
        } else if let Some(lsn) = format::parse_snapshot_file_name(&name) {
            l.snapshots.insert(lsn, path);
        } else if let Some(id) = format::parse_manifest_file_name(&name) {
            l.manifests.insert(id, path);
        } else {
            l.others.push((path, name));
        }
    }
    Ok(l)
}

/// The first segment id that recovery sets aside as left by an unfinished roll (`u64::MAX` if
/// none), decided by recovery's own function.
fn unfinished_from(dir: &Path, listing: &Listing, meta: &LogMeta) -> Result<u64> {
    let ids: Vec<u64> = listing
        .segments
        .range(meta.first_segment..)
        .map(|(&id, _)| id)
        .collect();
    let keep = crate::log::recovery::unfinished_rolls(
        &ids,
        meta.first_segment,
        meta.last_segment,
        |id| crate::log::recovery::header_unwritten(&format::segment_path(dir, id)),
    )?;
    Ok(ids.get(keep).copied().unwrap_or(u64::MAX))
}

fn role_of(name: &str) -> &'static str {
    if name == format::LOCK_FILE {
        "lock file"
    } else if name == format::META_FILE {
        "log meta file"
    } else if name == format::DISCARD_FILE {
        "intent of an interrupted restore or point-in-time recovery (finished by the next open)"
    } else if name.ends_with(format::TMP_SUFFIX) {
        "temporary file (removed by the next open)"
    } else if name.contains(".cut-") {
        "bytes a recovery cut (backup)"
    } else if name.ends_with(".discarded") || name.contains(".discarded.") {
        "set aside by a restore or recovery"
    } else if name.ends_with(".corrupt") || name.contains(".corrupt.") {
        "unusable snapshot set aside by recovery"
    } else {
        "not a statejournal file"
    }
}

fn read_meta(dir: &Path) -> Result<LogMeta> {
    let path = dir.join(format::META_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    LogMeta::decode(&bytes).map_err(|e| meta_error(&path, e))
}

/// The whole segment file, cut to the frame alignment as the mapping is.
fn read_segment(path: &Path) -> Result<Vec<u8>> {
    let mut buf = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    buf.truncate(buf.len() & !(FRAME_ALIGN - 1));
    Ok(buf)
}

fn decode_header(path: &Path, buf: &[u8], id: u64) -> Result<SegmentHeader> {
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::Truncated {
                len: buf.len() as u64,
                needed: SEGMENT_HEADER_LEN as u64,
            },
        ));
    }
    let h = SegmentHeader::decode(buf).map_err(|e| match e {
        HeaderError::UnsupportedVersion { found } => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: crate::codec::header::SEGMENT_VERSION_MAX,
        },
        other => Error::corrupt(path, 0, CorruptionKind::BadSegmentHeader(other)),
    })?;
    if h.segment_id != id {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::SegmentIdMismatch {
                expected: id,
                found: h.segment_id,
            },
        ));
    }
    Ok(h)
}

/// What was learnt from reading one segment.
struct Scanned {
    header: SegmentHeader,
    scan: SegmentScan,
    dirty: usize,
    ahead: Ahead,
    payload_bytes: u64,
}

fn scan_segment(path: &Path, id: u64) -> Result<(Scanned, u64)> {
    let buf = read_segment(path)?;
    let header = decode_header(path, &buf, id)?;
    let SegmentView {
        scan, dirty, ahead, ..
    } = SegmentView::read(&buf, header, |from| {
        if header.recycled {
            recycled_dirty_end(&buf, from, header.base_lsn)
        } else {
            dirty_end(&buf, from)
        }
    });
    let mut payload_bytes = 0u64;
    let mut at = SEGMENT_HEADER_LEN;
    while at < scan.end {
        match decode_frame(&buf, at) {
            Ok(fr) => {
                if fr.kind == FrameKind::Data {
                    payload_bytes += (fr.payload_end - fr.payload_start) as u64;
                }
                at = fr.next;
            }
            Err(_) => break,
        }
    }
    let len = fs::metadata(path)
        .map(|m| m.len())
        .unwrap_or(buf.len() as u64);
    Ok((
        Scanned {
            header,
            scan,
            dirty,
            ahead,
            payload_bytes,
        },
        len,
    ))
}

fn damage_text(d: Option<RecordDamage>) -> String {
    match d {
        Some(d) => d.to_string(),
        None => RecordDamage::Frame(FrameError::End).to_string(),
    }
}

/// Inspects the journal directory `dir` without changing it (see the module docs). Fails only
/// when `dir` cannot be read or holds no journal (no `log.meta` and no segment); damage is
/// reported in [`Inspection::problems`].
pub fn inspect(dir: &Path, opts: InspectOptions) -> Result<Inspection> {
    let listing = list(dir)?;
    let meta_path = dir.join(format::META_FILE);
    let mut out = Inspection {
        dir: dir.to_path_buf(),
        log_id: None,
        in_use: probe_lock(dir),
        discard_after: None,
        discard_cause: None,
        segments: Vec::new(),
        snapshots: Vec::new(),
        checkpoints: Vec::new(),
        other_files: Vec::new(),
        bytes_on_disk: listing.bytes,
        log: LogSummary::default(),
        problems: Vec::new(),
        state: None,
        state_error: None,
    };
    for (path, name) in &listing.others {
        let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        out.other_files.push(OtherFile {
            path: path.clone(),
            bytes,
            role: role_of(name),
        });
    }
    let structure = |out: &mut Inspection, e: Error| {
        let (path, offset) = (
            e.path()
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
            e.offset().unwrap_or(0),
        );
        out.problems.push(Problem {
            kind: ProblemKind::Structure,
            path,
            offset,
            detail: corruption_detail(&e),
            strict: Outcome::Refuses,
            tolerate_torn_tail: Outcome::Refuses,
            point_in_time: Outcome::Refuses,
            intact_records_after: None,
            bytes: 0,
        });
    };

    let meta = match fs::read(&meta_path) {
        Ok(bytes) => match LogMeta::decode(&bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                structure(&mut out, meta_error(&meta_path, e));
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if listing.segments.is_empty() {
                return Err(Error::io(
                    "open",
                    &meta_path,
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "no statejournal journal here (no log.meta and no segment file)",
                    ),
                ));
            }
            structure(
                &mut out,
                Error::corrupt(&meta_path, 0, CorruptionKind::MissingMeta),
            );
            None
        }
        Err(e) => return Err(Error::io("read", &meta_path, e)),
    };
    if let Ok(bytes) = fs::read(dir.join(format::DISCARD_FILE)) {
        match DiscardIntent::decode(&bytes) {
            Ok(i) => {
                out.discard_after = Some(Lsn(i.after));
                out.discard_cause = Some(i.cause);
            }
            Err(e) => structure(
                &mut out,
                meta_error_supporting(&dir.join(format::DISCARD_FILE), e, DISCARD_VERSION),
            ),
        }
    }
    out.log_id = meta.map(|m| m.log_id);

    // Segments: read and scan each.
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut log_ok = meta.is_some();
    let first_segment = meta.map_or(1, |m| m.first_segment);
    // The segments recovery sets aside as unfinished rolls (decided by the same function).
    let unfinished_from = match meta {
        Some(m) => unfinished_from(dir, &listing, &m)?,
        None => u64::MAX,
    };
    for (&id, path) in &listing.segments {
        let leftover = id < first_segment;
        let unfinished_roll = id >= unfinished_from;
        if unfinished_roll {
            let header = scan_segment(path, id).ok().map(|(s, _)| s.header);
            let detail = if header.is_some() {
                "past the meta file's last segment, after a gap: its directory entry was never made durable".to_string()
            } else {
                "past the meta file's last segment, with a header that never reached the disk"
                    .to_string()
            };
            out.segments.push(SegmentInfo {
                header,
                unfinished_roll,
                ..SegmentInfo::unread(id, path)
            });
            out.problems.push(Problem {
                kind: ProblemKind::UnfinishedRoll,
                path: path.clone(),
                offset: 0,
                detail,
                strict: Outcome::Refuses,
                tolerate_torn_tail: Outcome::SetsAside,
                point_in_time: Outcome::SetsAside,
                intact_records_after: None,
                bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            });
            continue;
        }
        match scan_segment(path, id) {
            Ok((s, file_len)) => {
                out.segments.push(SegmentInfo {
                    id,
                    path: path.clone(),
                    file_len,
                    header: Some(s.header),
                    records: s.scan.data_records,
                    first_lsn: Lsn(s.header.base_lsn),
                    last_lsn: Lsn(s.scan.next_lsn.saturating_sub(1)),
                    data_end: s.scan.end as u64,
                    dirty_end: s.dirty as u64,
                    payload_bytes: s.payload_bytes,
                    synced_through: Lsn(s.scan.watermark),
                    leftover,
                    unfinished_roll,
                });
                if !leftover {
                    if let Some(m) = meta {
                        if s.header.log_id != m.log_id && log_ok {
                            structure(
                                &mut out,
                                Error::corrupt(
                                    path,
                                    0,
                                    CorruptionKind::ForeignLog {
                                        expected: m.log_id,
                                        found: s.header.log_id,
                                    },
                                ),
                            );
                            log_ok = false;
                        }
                    }
                    scanned.push(s);
                }
            }
            Err(e) => {
                out.segments.push(SegmentInfo {
                    leftover,
                    unfinished_roll,
                    ..SegmentInfo::unread(id, path)
                });
                if !leftover && log_ok {
                    structure(&mut out, e);
                    log_ok = false;
                }
            }
        }
    }
    if let (Some(m), true) = (meta, log_ok) {
        let ids: Vec<u64> = listing
            .segments
            .keys()
            .copied()
            .filter(|&id| id >= m.first_segment && id < unfinished_from)
            .collect();
        let last_id = ids.last().copied().unwrap_or(0).max(m.last_segment);
        for (expect, id) in
            (m.first_segment..=last_id).zip(ids.iter().copied().chain(std::iter::repeat(u64::MAX)))
        {
            if expect != id {
                structure(
                    &mut out,
                    Error::corrupt(
                        format::segment_path(dir, expect),
                        0,
                        CorruptionKind::MissingSegment { segment_id: expect },
                    ),
                );
                log_ok = false;
                break;
            }
        }
    }
    let live: Vec<&SegmentInfo> = out
        .segments
        .iter()
        .filter(|s| !s.leftover && !s.unfinished_roll)
        .collect();
    let live_paths: Vec<PathBuf> = live.iter().map(|s| s.path.clone()).collect();
    // The newest checkpoint of this log: its LSN was synced before its manifest was written,
    // whatever the sync markers say.
    let checkpointed = listing
        .manifests
        .iter()
        .filter_map(|(&id, p)| crate::checkpoint::read_manifest(p).ok().map(|m| (id, m)))
        .filter(|(_, m)| Some(m.log_id) == out.log_id)
        .map(|(id, m)| (id, m.lsn))
        .max_by_key(|&(_, lsn)| lsn);
    // What recovery takes as evidence from outside the log: the LSN through which snapshots
    // and readable manifests prove the log durable (each was written after a sync through its
    // LSN), except past an interrupted discard.
    let external = out
        .log_id
        .map_or(0, |id| crate::checkpoint::durable_evidence(dir, id))
        .min(out.discard_after.map_or(u64::MAX, Lsn::get));
    if log_ok {
        classify_log(&mut out, &scanned, &live_paths, checkpointed, external);
    }

    // Snapshots.
    for (&lsn, path) in &listing.snapshots {
        out.snapshots
            .push(inspect_snapshot(path, lsn, opts.verify_snapshots));
    }
    // Which snapshot an open loads, decided as recovery decides it (the same function): the
    // unusable ones it tries first are fallen back past, or refuse the open when nothing older
    // covers the log; the others are never read.
    let first = out.log.first_lsn.get();
    let choice = out.snapshot_choice();
    let covers = choice.covers(first);
    let mut snap_problems = Vec::new();
    for s in &out.snapshots {
        if let Some(err) = &s.error {
            let tried = choice.unusable.iter().any(|(p, _)| p == &s.path);
            let outcome = match (tried, covers) {
                (false, _) => Outcome::Ignores,
                (true, true) => Outcome::FallsBack,
                (true, false) => Outcome::Refuses,
            };
            snap_problems.push(Problem {
                kind: ProblemKind::BadSnapshot,
                path: s.path.clone(),
                offset: 0,
                detail: err.clone(),
                strict: outcome.clone(),
                tolerate_torn_tail: outcome.clone(),
                point_in_time: outcome,
                intact_records_after: None,
                bytes: 0,
            });
        }
    }
    if log_ok && !covers && choice.unusable.is_empty() {
        let path = live_paths
            .first()
            .cloned()
            .unwrap_or_else(|| dir.to_path_buf());
        snap_problems.push(Problem {
            kind: ProblemKind::NoState,
            path,
            offset: 0,
            detail: format!(
                "the log starts at LSN {first} (after any cut) and no snapshot at LSN {} or later \
                 covers the records before it",
                first.saturating_sub(1)
            ),
            strict: Outcome::Refuses,
            tolerate_torn_tail: Outcome::Refuses,
            point_in_time: Outcome::Refuses,
            intact_records_after: None,
            bytes: 0,
        });
    }
    out.problems.extend(snap_problems);

    // Checkpoints.
    for (&id, path) in &listing.manifests {
        let (c, refuses) = inspect_manifest(dir, id, path, &out, opts.verify_checkpoints);
        if let Some(err) = &c.error {
            // Opening ignores a damaged manifest, but one it cannot read (a newer format, an I/O
            // error) fails the open (`manifest_error_refuses`).
            let outcome = if refuses {
                Outcome::Refuses
            } else {
                Outcome::Ignores
            };
            out.problems.push(Problem {
                kind: ProblemKind::BadCheckpoint,
                path: path.clone(),
                offset: 0,
                detail: err.clone(),
                strict: outcome.clone(),
                tolerate_torn_tail: outcome.clone(),
                point_in_time: outcome,
                intact_records_after: None,
                bytes: 0,
            });
        }
        out.checkpoints.push(c);
    }

    if opts.replay_state {
        if log_ok {
            match rebuild_state(dir, &out) {
                Ok(s) => out.state = Some(s),
                Err(e) => out.state_error = Some(e.to_string()),
            }
        } else {
            out.state_error = Some("the log's structure is broken".into());
        }
    }
    Ok(out)
}

/// The detail of a corruption error without its path and offset (reported separately).
fn corruption_detail(e: &Error) -> String {
    match e.corruption() {
        Some(c) => c.kind.to_string(),
        None => e.to_string(),
    }
}

/// Whether a journal holds the directory lock, by a momentary shared `flock` probe of `LOCK`
/// (never creating it, never keeping it).
fn probe_lock(dir: &Path) -> bool {
    let Ok(f) = fs::File::open(dir.join(format::LOCK_FILE)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(_)) => false,
    }
}

/// Predicts what log recovery does with the scanned segments, in each mode, by making its own
/// decision ([`plan_log`]) over the same reading of them.
fn classify_log(
    out: &mut Inspection,
    segs: &[Scanned],
    paths: &[PathBuf],
    checkpointed: Option<(u64, u64)>,
    external: u64,
) {
    let Some(first) = segs.first() else {
        return;
    };
    let views: Vec<SegmentView> = segs
        .iter()
        .map(|s| SegmentView {
            header: s.header,
            scan: s.scan,
            dirty: s.dirty,
            ahead: s.ahead,
        })
        .collect();
    let discard = out.discard_after.map(Lsn::get);
    let plan = |mode| plan_log(&views, paths, mode, external, discard);
    let (tolerate, pit, strict) = (
        plan(RecoveryMode::TolerateTornTail),
        plan(RecoveryMode::PointInTime),
        plan(RecoveryMode::Strict),
    );
    // Point-in-time recovery refuses only a broken structure; it cuts any damage.
    let pit = match pit {
        Ok(p) => p,
        Err(e) => {
            push_structure(out, &e);
            return;
        }
    };
    // The records kept: the segments through the tail, up to the end of their intact frames.
    out.log.first_lsn = Lsn(first.header.base_lsn);
    out.log.last_lsn = Lsn(first.header.base_lsn.saturating_sub(1));
    for s in segs.iter().take(pit.tail + 1) {
        out.log.records += s.scan.data_records;
        out.log.payload_bytes += s.payload_bytes;
        out.log.frame_bytes += (s.scan.end - SEGMENT_HEADER_LEN) as u64;
        out.log.last_lsn = Lsn(s.scan.next_lsn.saturating_sub(1));
    }
    out.log.synced_through = Lsn(pit.watermark);
    for &(i, damage) in &pit.debris {
        let (Some(s), Some(path)) = (segs.get(i), paths.get(i)) else {
            continue;
        };
        out.problems.push(Problem {
            kind: ProblemKind::Debris,
            path: path.clone(),
            offset: s.scan.end as u64,
            detail: damage_text(Some(damage)),
            strict: Outcome::Refuses,
            tolerate_torn_tail: Outcome::SetsAside,
            point_in_time: Outcome::SetsAside,
            intact_records_after: None,
            bytes: (s.dirty - s.scan.end) as u64,
        });
    }
    let (Some(cut), Some(s), Some(path)) = (&pit.cut, segs.get(pit.tail), paths.get(pit.tail))
    else {
        return;
    };
    if matches!(cut.reason, CutReason::Discarded { .. }) {
        return; // in records an interrupted discard is setting aside: not damage
    }
    let next = s.scan.next_lsn;
    let durable = matches!(cut.reason, CutReason::DurableDataDamaged(_));
    let mut detail = format!("record LSN {next}: {}", damage_text(s.scan.damage));
    if cut.named.is_some() {
        detail.push_str("; the next segment's header names records missing here");
    }
    // Recovery judges from sync markers, later segments, and the snapshots and readable
    // manifests present. A checkpoint whose manifest is unreadable synced the damaged record
    // too, but proves nothing: recovery cuts (as predicted) what was acknowledged.
    let by_checkpoint = checkpointed.filter(|&(_, lsn)| lsn >= next);
    if let (false, Some((id, lsn))) = (durable, by_checkpoint) {
        detail.push_str(&format!(
            "; checkpoint {id} (LSN {lsn}) had made it durable, but no sync marker proves it, so \
             recovery takes it for a torn tail and cuts it, losing that checkpoint"
        ));
    }
    let lost = durable || by_checkpoint.is_some();
    let outcome = |p: Result<&LogPlan, &Error>| match p {
        Ok(LogPlan { cut: Some(_), .. }) => Outcome::Cuts {
            continues_at: Lsn(next),
            loses_durable: lost,
        },
        // (Not reached: every mode decides about the same damage.)
        Ok(LogPlan { cut: None, .. }) => Outcome::Ignores,
        Err(_) => Outcome::Refuses,
    };
    out.problems.push(Problem {
        kind: if lost {
            ProblemKind::DamagedDurableData
        } else {
            ProblemKind::TornTail
        },
        path: path.clone(),
        offset: s.scan.end as u64,
        detail,
        strict: outcome(strict.as_ref()),
        tolerate_torn_tail: outcome(tolerate.as_ref()),
        point_in_time: outcome(Ok(&pit)),
        intact_records_after: cut.intact_after.map(|(a, b)| (Lsn(a), Lsn(b))),
        bytes: (s.dirty.max(s.scan.end) - s.scan.end) as u64,
    });
}

/// A broken log structure, which no mode opens: recovery's own error.
fn push_structure(out: &mut Inspection, e: &Error) {
    out.problems.push(Problem {
        kind: ProblemKind::Structure,
        path: e.path().map(Path::to_path_buf).unwrap_or_default(),
        offset: e.offset().unwrap_or(0),
        detail: corruption_detail(e),
        strict: Outcome::Refuses,
        tolerate_torn_tail: Outcome::Refuses,
        point_in_time: Outcome::Refuses,
        intact_records_after: None,
        bytes: 0,
    });
}

fn inspect_snapshot(path: &Path, lsn: u64, verify: bool) -> SnapshotInfo {
    let file_len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut info = SnapshotInfo {
        path: path.to_path_buf(),
        lsn: Lsn(lsn),
        file_len,
        entries: 0,
        max_key_groups: 0,
        states: Vec::new(),
        key_groups: Vec::new(),
        error: None,
    };
    let r = match SnapshotReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    };
    let m = r.meta();
    if m.lsn != lsn {
        info.error = Some(format!("its name says LSN {lsn}, its footer {}", m.lsn));
    }
    info.entries = m.entries;
    info.max_key_groups = m.max_key_groups;
    info.states = m
        .states
        .iter()
        .map(|s| (s.id, s.name.clone(), s.kind, s.entries, s.payload_bytes))
        .collect();
    info.key_groups = r
        .index()
        .iter()
        .map(|g| (g.kg, g.entries, g.bytes))
        .collect();
    if verify {
        let all = KeyGroupRange::all(m.max_key_groups);
        let checked = r.for_each_block(all, |_, block| {
            for e in block {
                e?;
            }
            Ok(())
        });
        if let Err(e) = checked {
            info.error.get_or_insert(e.to_string());
        }
    }
    info
}

fn inspect_manifest(
    dir: &Path,
    id: u64,
    path: &Path,
    out: &Inspection,
    verify: bool,
) -> (CheckpointSummary, bool) {
    let mut c = CheckpointSummary {
        id,
        path: path.to_path_buf(),
        manifest: None,
        error: None,
    };
    let m = match crate::checkpoint::read_manifest(path) {
        Ok(m) => m,
        Err(e) => {
            c.error = Some(corruption_detail(&e));
            return (c, manifest_error_refuses(&e));
        }
    };
    c.error = check_manifest(dir, id, &m, out, verify).err();
    c.manifest = Some(m);
    (c, false)
}

fn check_manifest(
    dir: &Path,
    id: u64,
    m: &Manifest,
    out: &Inspection,
    verify: bool,
) -> std::result::Result<(), String> {
    if m.id != id {
        return Err(format!(
            "the file of checkpoint {id} holds checkpoint {}",
            m.id
        ));
    }
    if out.log_id.is_some_and(|l| l != m.log_id) {
        return Err(format!("it belongs to another log ({:#018x})", m.log_id));
    }
    if m.lsn > out.log.last_lsn.get() {
        return Err(format!(
            "it covers the log through LSN {}, but the intact log ends at LSN {}",
            m.lsn, out.log.last_lsn
        ));
    }
    if let Some(s) = &m.snapshot {
        let sp = dir.join(&s.file);
        match out.snapshots.iter().find(|x| x.path == sp) {
            None => return Err(format!("its snapshot {} is missing", sp.display())),
            Some(x) if x.error.is_some() => {
                return Err(format!("its snapshot {} does not verify", sp.display()))
            }
            Some(_) => {}
        }
    }
    for r in &m.segments {
        let sp = format::segment_path(dir, r.id);
        if !sp.exists() {
            return Err(format!("its segment {} is missing", sp.display()));
        }
        if verify {
            let crc =
                prefix_crc(&sp, r.len).map_err(|e| format!("reading {}: {e}", sp.display()))?;
            if crc != Some(r.crc) {
                return Err(format!(
                    "the first {} bytes of {} changed since the checkpoint (CRC mismatch)",
                    r.len,
                    sp.display()
                ));
            }
        }
    }
    Ok(())
}

/// CRC-32 of the first `len` bytes of a file (`None` if it is shorter).
fn prefix_crc(path: &Path, len: u64) -> io::Result<Option<u32>> {
    let mut f = fs::File::open(path)?.take(len);
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(buf.get(..k).unwrap_or(&[]));
        n += k as u64;
    }
    Ok((n == len).then(|| h.finalize()))
}

fn rebuild_state(dir: &Path, out: &Inspection) -> Result<StateSummary> {
    let mut store = Store::new(KeyGroupRange::all(MAX_KEY_GROUPS));
    let mut summary = StateSummary::default();
    let mut kgs: BTreeMap<u16, KeyGroupBytes> = BTreeMap::new();
    if let Some(s) = out.usable_snapshot() {
        let r = SnapshotReader::open(&s.path)?;
        store.load_snapshot(&r)?;
        summary.snapshot = Some(s.path.clone());
        summary.snapshot_lsn = s.lsn;
        summary.max_key_groups = r.meta().max_key_groups;
        for &(kg, entries, bytes) in &s.key_groups {
            let e = kgs.entry(kg).or_insert(KeyGroupBytes {
                key_group: kg,
                snapshot_entries: 0,
                snapshot_bytes: 0,
                log_bytes: 0,
            });
            e.snapshot_entries = entries;
            e.snapshot_bytes = bytes;
        }
    } else if out.log.first_lsn.get() > 1 {
        return Err(Error::corrupt(
            dir,
            0,
            CorruptionKind::BadSnapshot {
                detail: format!(
                    "the log starts at LSN {} and no usable snapshot covers the records before it",
                    out.log.first_lsn
                ),
            },
        ));
    }
    let through = out.log.last_lsn.get();
    let mut failure = None;
    read_records(dir, Lsn(summary.snapshot_lsn.get() + 1), |r| {
        if r.lsn.get() > through {
            return ControlFlow::Break(());
        }
        if let Err(e) = store.apply(r.payload) {
            failure = Some(Error::InvalidRecord {
                path: crate::format::segment_path(dir, r.segment),
                offset: Some(r.offset),
                lsn: r.lsn.get(),
                detail: e.to_string(),
            });
            return ControlFlow::Break(());
        }
        if let Ok(ops) = decode_record(r.payload) {
            for op in ops.flatten() {
                if let Some((kg, bytes)) = op_bytes(&op) {
                    kgs.entry(kg)
                        .or_insert(KeyGroupBytes {
                            key_group: kg,
                            snapshot_entries: 0,
                            snapshot_bytes: 0,
                            log_bytes: 0,
                        })
                        .log_bytes += bytes;
                }
            }
        }
        summary.replayed_records += 1;
        summary.replayed_bytes += r.payload.len() as u64;
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if summary.max_key_groups == 0 {
        summary.max_key_groups = store.max_key_groups.unwrap_or(0);
    }
    for (id, (meta, data)) in store.states.iter().enumerate() {
        let (mut entries, mut bytes) = (0u64, 0u64);
        match data {
            Data::Plain(t) => {
                entries += t.len() as u64;
                bytes += t.payload_bytes() as u64;
            }
            Data::Map(m) => {
                entries += m.outer.len() as u64;
                bytes += m.outer.payload_bytes() as u64;
                for t in &m.inner {
                    entries += t.len() as u64;
                    bytes += t.payload_bytes() as u64;
                }
            }
        }
        summary.states.push(StateEntryCount {
            id: id as u32,
            name: meta.name.clone(),
            kind: meta.kind,
            entries,
            payload_bytes: bytes,
        });
    }
    summary.key_groups = kgs.into_values().collect();
    Ok(summary)
}

/// The key group an op touches and the bytes of its keys and values.
fn op_bytes(op: &Op<'_>) -> Option<(u16, u64)> {
    match *op {
        Op::Put { kg, key, value, .. } => Some((kg, (key.len() + value.len()) as u64)),
        Op::Delete { kg, key, .. } => Some((kg, key.len() as u64)),
        Op::Append {
            kg, key, element, ..
        } => Some((kg, (key.len() + element.len()) as u64)),
        Op::MapPut {
            kg,
            key,
            map_key,
            value,
            ..
        } => Some((kg, (key.len() + map_key.len() + value.len()) as u64)),
        Op::MapRemove {
            kg, key, map_key, ..
        } => Some((kg, (key.len() + map_key.len()) as u64)),
        Op::Init { .. } | Op::Register { .. } | Op::ClearState { .. } => None,
    }
}
