//! Checkpoints: manifests naming a snapshot plus the log range after it, their retention, and
//! the garbage collection of snapshots and segments nothing needs any more.
//!
//! The [`Catalog`] is the one place that knows which files are needed: the newest snapshot (the
//! live log's base), every retained checkpoint's snapshot and log range, and the inputs of a
//! compaction in progress. It sits behind a mutex shared by the journal's owner (checkpoints) and
//! the compaction thread (new snapshots); the append path never takes it.
//!
//! Crash safety rests on ordering: a manifest is renamed into place only after everything it
//! names is durable (the log through its LSN, the snapshot file); a manifest dropped by retention
//! is unlinked — durably — before the files only it needed are deleted; a segment is deleted only
//! after a durable snapshot covers all its records.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::codec::frame::decode_frame;
use crate::codec::header::SEGMENT_HEADER_LEN;
use crate::codec::manifest::{Manifest, ManifestError, SegmentRef};
use crate::error::{CorruptionKind, Error, Result};
use crate::format;
use crate::log::{Log, Lsn};
use crate::segment::sync_dir;

/// What a checkpoint consists of (see [`Journal::checkpoint`](crate::Journal::checkpoint)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its id (increasing).
    pub id: u64,
    /// The LSN it covers: its state is every record through this one.
    pub lsn: Lsn,
    /// The LSN of the snapshot it builds on (0: none, the log from the start).
    pub snapshot_lsn: Lsn,
    /// The manifest file.
    pub manifest: PathBuf,
    /// The snapshot file, if any.
    pub snapshot: Option<PathBuf>,
    /// Segment files (and how many of their bytes) holding the records after the snapshot.
    pub segments: Vec<(PathBuf, u64)>,
}

impl CheckpointInfo {
    pub(crate) fn of(dir: &Path, m: &Manifest) -> Self {
        CheckpointInfo {
            id: m.id,
            lsn: Lsn(m.lsn),
            snapshot_lsn: Lsn(m.snapshot.as_ref().map_or(0, |s| s.lsn)),
            manifest: dir.join(format::manifest_file_name(m.id)),
            snapshot: m.snapshot.as_ref().map(|s| dir.join(&s.file)),
            segments: m
                .segments
                .iter()
                .map(|s| (format::segment_path(dir, s.id), s.len))
                .collect(),
        }
    }
}

/// A snapshot file the catalog knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    pub len: u64,
}

/// Needed files, retention and GC (see the module docs).
#[derive(Debug)]
pub(crate) struct Catalog {
    dir: PathBuf,
    /// Snapshots on disk by LSN.
    pub snapshots: BTreeMap<u64, SnapshotEntry>,
    /// Retained checkpoints by id.
    pub checkpoints: BTreeMap<u64, Manifest>,
    /// The highest checkpoint id ever used here (ids are never reused).
    pub last_id: u64,
    /// How many checkpoints to keep.
    pub retain: usize,
    /// The base snapshot LSN of a compaction in progress: its inputs must survive GC.
    pub compacting_from: Option<u64>,
    /// Segment id → (prefix length, CRC-32 of the prefix) computed so far, so that each
    /// checkpoint checksums only the bytes appended since the previous one.
    crc_cache: HashMap<u64, (u64, u32)>,
    /// Files a reader outside the journal (a remote push) is using, by pin token: GC keeps them
    /// even after retention dropped the checkpoint that named them.
    pins: BTreeMap<u64, Pin>,
    next_pin: u64,
}

/// What a pin keeps: a snapshot and every segment holding LSNs from `first_lsn` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pin {
    /// The snapshot's LSN, if one is needed.
    pub snapshot: Option<u64>,
    /// The first LSN whose segment must stay (≥ 1).
    pub first_lsn: u64,
}

fn bad_manifest(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(
        path,
        offset,
        CorruptionKind::BadManifest {
            detail: detail.into(),
        },
    )
}

/// Reads and decodes a manifest file.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Manifest::decode(&bytes).map_err(|e| match e {
        ManifestError::UnsupportedVersion(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: crate::codec::manifest::MANIFEST_VERSION,
        },
        other => bad_manifest(path, other.offset() as u64, other.to_string()),
    })
}

/// The LSN through which the snapshots and the readable manifests of log `log_id` in `dir` prove
/// the log durable: each was written only after the log was synced through its LSN (0 if none).
/// Given to log recovery as evidence; unreadable files are ignored here (recovery reports them).
pub(crate) fn durable_evidence(dir: &Path, log_id: u64) -> u64 {
    let Ok(l) = list(dir) else { return 0 };
    let snapshots = l.snapshots.keys().next_back().copied().unwrap_or(0);
    let manifests = l
        .manifests
        .values()
        .filter_map(|p| read_manifest(p).ok())
        .filter(|m| m.log_id == log_id)
        .map(|m| m.lsn)
        .max()
        .unwrap_or(0);
    snapshots.max(manifests)
}

/// Writes a manifest durably: temporary name, fsync, rename, fsync of the directory.
pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<PathBuf> {
    crate::log::write_small_file(dir, &format::manifest_file_name(m.id), &m.encode())
}

/// Snapshot and manifest files found in a journal directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub snapshots: BTreeMap<u64, PathBuf>,
    pub manifests: BTreeMap<u64, PathBuf>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut l = Listing::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(l),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(lsn) = format::parse_snapshot_file_name(name) {
            l.snapshots.insert(lsn, entry.path());
        } else if let Some(id) = format::parse_manifest_file_name(name) {
            l.manifests.insert(id, entry.path());
        }
    }
    Ok(l)
}

/// Renames `path` to `path.<suffix>` (or `.<suffix>.N` if taken): set aside, never deleted.
pub(crate) fn set_aside(path: &Path, suffix: &str) -> Result<PathBuf> {
    let mut n = 0u32;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{suffix}"));
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let target = PathBuf::from(name);
        if !target.exists() {
            crate::crash_point::crash_point("setting a snapshot or manifest aside");
            fs::rename(path, &target).map_err(|e| Error::io("rename", path, e))?;
            return Ok(target);
        }
        n += 1;
    }
}

impl Catalog {
    pub fn new(dir: &Path, retain: usize) -> Self {
        Catalog {
            dir: dir.to_path_buf(),
            snapshots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            last_id: 0,
            retain,
            compacting_from: None,
            crc_cache: HashMap::new(),
            pins: BTreeMap::new(),
            next_pin: 0,
        }
    }

    /// Keeps the files `pin` names from garbage collection until [`Catalog::unpin`] with the
    /// returned token.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub fn pin(&mut self, pin: Pin) -> u64 {
        self.next_pin += 1;
        self.pins.insert(self.next_pin, pin);
        self.next_pin
    }

    /// Releases a pin; the next collection may delete what only it kept.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub fn unpin(&mut self, token: u64) {
        self.pins.remove(&token);
    }

    /// The newest snapshot: the live log's base.
    pub fn newest_snapshot(&self) -> Option<(u64, SnapshotEntry)> {
        self.snapshots.iter().next_back().map(|(l, e)| (*l, *e))
    }

    pub fn snapshot_path(&self, lsn: u64) -> PathBuf {
        self.dir.join(format::snapshot_file_name(lsn))
    }

    /// The segment prefixes holding records `(after, through]`, with their CRCs.
    pub fn segment_refs(&mut self, log: &Log, after: u64, through: u64) -> Result<Vec<SegmentRef>> {
        let segs = log.segments();
        let mut refs = Vec::new();
        if through <= after {
            // No record is needed (a checkpoint right after a compaction). Naming the segment
            // that holds record `after` would tie the checkpoint to a segment whose records all
            // lie in the snapshot: garbage collection deletes it once the log has rolled past
            // it, and the restore then failed (tests/regression_checkpoint_at_snapshot.rs).
            return Ok(refs);
        }
        for (i, seg) in segs.iter().enumerate() {
            let base = seg.header().base_lsn;
            let next_base = segs.get(i + 1).map(|n| n.header().base_lsn);
            // Records of this segment: [base, next_base) (or up to the end for the last one).
            if base > through || next_base.is_some_and(|nb| nb <= after + 1) {
                continue;
            }
            let published = seg.published_prefix().end;
            let end = if next_base.is_some_and(|nb| nb <= through + 1) {
                published // every record of this segment is at or below `through`
            } else {
                self.end_through(seg, published, through)
            };
            let (cached_len, cached_crc) = self
                .crc_cache
                .get(&seg.id())
                .copied()
                .filter(|(l, _)| *l as usize <= end)
                .unwrap_or((0, 0));
            let bytes = seg.bytes(cached_len as usize, end).ok_or_else(|| {
                Error::io(
                    "checksum",
                    seg.path(),
                    io::Error::other("segment bytes below the published end are unreadable"),
                )
            })?;
            let mut h = crc32fast::Hasher::new_with_initial_len(cached_crc, cached_len);
            h.update(bytes);
            let crc = h.finalize();
            self.crc_cache.insert(seg.id(), (end as u64, crc));
            refs.push(SegmentRef {
                id: seg.id(),
                base_lsn: base,
                len: end as u64,
                crc,
            });
        }
        // Forget segments that are gone.
        self.crc_cache
            .retain(|id, _| segs.iter().any(|s| s.id() == *id));
        Ok(refs)
    }

    /// Offset just past the last frame of `seg` whose LSN is at most `through`, walking from the
    /// cached position.
    fn end_through(&self, seg: &crate::segment::Segment, published: usize, through: u64) -> usize {
        let start = self
            .crc_cache
            .get(&seg.id())
            .map_or(SEGMENT_HEADER_LEN, |(l, _)| *l as usize)
            .clamp(SEGMENT_HEADER_LEN, published);
        let Some(buf) = seg.bytes(0, published) else {
            return start;
        };
        let mut pos = start;
        while pos < published {
            match decode_frame(buf, pos) {
                // A sync marker carries the LSN of the record before it.
                Ok(f) if f.lsn <= through => pos = f.next,
                _ => break,
            }
        }
        pos
    }

    /// Drops checkpoints beyond the retention count (their manifests are unlinked durably), then
    /// deletes the snapshots and segments nothing needs.
    pub fn retain_and_collect(&mut self, log: &Log) -> Result<GcReport> {
        let mut report = GcReport::default();
        let excess = self.checkpoints.len().saturating_sub(self.retain);
        let doomed: Vec<u64> = self.checkpoints.keys().take(excess).copied().collect();
        for id in &doomed {
            let path = self.dir.join(format::manifest_file_name(*id));
            match fs::remove_file(&path) {
                Ok(()) => report.manifests.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            self.checkpoints.remove(id);
        }
        if !doomed.is_empty() {
            // The manifests must be gone for good before the files only they needed.
            sync_dir(&self.dir)?;
        }
        self.collect(log, &mut report)?;
        Ok(report)
    }

    fn collect(&mut self, log: &Log, report: &mut GcReport) -> Result<()> {
        let newest = self.newest_snapshot().map(|(l, _)| l);
        let mut needed_snapshots: Vec<u64> = newest.into_iter().collect();
        let mut needed_from = newest.unwrap_or(0);
        for m in self.checkpoints.values() {
            let s = m.snapshot.as_ref().map_or(0, |s| s.lsn);
            needed_snapshots.push(s);
            // A checkpoint at its snapshot's LSN needs no record locally, but pushing it needs
            // the segment holding that LSN (a restored log must end there): keep it too, or a
            // push after the log rolled past it fails
            // (tests/regression_push_checkpoint_at_snapshot.rs).
            let keep = if m.segments.is_empty() {
                m.lsn.saturating_sub(1)
            } else {
                s
            };
            needed_from = needed_from.min(keep);
        }
        if let Some(c) = self.compacting_from {
            needed_snapshots.push(c);
            needed_from = needed_from.min(c);
        }
        for p in self.pins.values() {
            needed_snapshots.extend(p.snapshot);
            needed_from = needed_from.min(p.first_lsn.saturating_sub(1));
        }
        let doomed: Vec<u64> = self
            .snapshots
            .keys()
            .filter(|l| !needed_snapshots.contains(l))
            .copied()
            .collect();
        for lsn in doomed {
            let path = self.snapshot_path(lsn);
            match fs::remove_file(&path) {
                Ok(()) => report.snapshots.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            self.snapshots.remove(&lsn);
        }
        if needed_from > 0 {
            report.segments += log.delete_below(Lsn(needed_from + 1))?;
        }
        Ok(())
    }
}

/// What a GC pass deleted.
#[derive(Debug, Clone, Default)]
pub(crate) struct GcReport {
    pub manifests: Vec<PathBuf>,
    pub snapshots: Vec<PathBuf>,
    pub segments: usize,
}

/// Checks that the log holds exactly the segment prefixes a manifest names.
pub(crate) fn verify_segments(log: &Log, manifest_path: &Path, m: &Manifest) -> Result<()> {
    let segs = log.segments();
    for r in &m.segments {
        let Some(seg) = segs.iter().find(|s| s.id() == r.id) else {
            return Err(bad_manifest(
                manifest_path,
                0,
                format!(
                    "it names segment {} ({}), which is not in the log",
                    r.id,
                    format::segment_file_name(r.id)
                ),
            ));
        };
        let published = seg.published_prefix().end;
        let crc = seg
            .bytes(0, r.len as usize)
            .filter(|_| r.len as usize <= published)
            .map(crc32fast::hash);
        if crc != Some(r.crc) || seg.header().base_lsn != r.base_lsn {
            return Err(Error::corrupt(
                seg.path(),
                0,
                CorruptionKind::BadManifest {
                    detail: format!(
                        "checkpoint {} needs the first {} bytes of this segment with CRC {:#010x}, \
                         but they differ (the segment was replaced or damaged)",
                        m.id, r.len, r.crc
                    ),
                },
            ));
        }
    }
    Ok(())
}
