//! Opening a journal: the log, then the newest usable snapshot, then the log after it.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint::{self, read_manifest, set_aside, verify_segments, Catalog, SnapshotEntry};
use crate::codec::manifest::Manifest;
use crate::error::{CorruptionKind, Error, Result};
use crate::format;
use crate::keygroup::KeyGroupRange;
use crate::log::{CutReason, Log, Lsn, RecoveryReport};
use crate::segment::sync_dir;
use crate::snapshot::SnapshotReader;
use crate::state::Store;

/// What opening a journal found and did: the log's recovery, the snapshot loaded, the records
/// replayed after it, and anything set aside on the way.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StateRecovery {
    /// What log recovery found and did.
    pub log: RecoveryReport,
    /// The checkpoint restored ([`Journal::open_at_checkpoint`](super::Journal::open_at_checkpoint)).
    pub checkpoint: Option<u64>,
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// The LSN it covers (0: no snapshot; the whole log was replayed).
    pub snapshot_lsn: Lsn,
    /// Entries loaded from it (of the key groups this journal serves).
    pub snapshot_entries: u64,
    /// Bytes of keys and values loaded from it.
    pub snapshot_bytes: u64,
    /// Time spent loading it.
    pub snapshot_time: Duration,
    /// Log records replayed after the snapshot.
    pub replayed_records: u64,
    /// Bytes of their payloads.
    pub replayed_bytes: u64,
    /// Time spent replaying them.
    pub replay_time: Duration,
    /// Snapshots that could not be used, and why; recovery fell back to an older snapshot (or the
    /// whole log) that gives the same state. Each was renamed `*.corrupt`.
    pub fallbacks: Vec<String>,
    /// Files renamed aside (`*.discarded`): snapshots and manifests newer than the state
    /// recovered (after a checkpoint restore, or a point-in-time recovery that cut the log).
    pub set_aside: Vec<PathBuf>,
    /// Manifests that could not be read (left in place, ignored).
    pub damaged_manifests: Vec<String>,
    /// Wall time of the whole open.
    pub duration: Duration,
}

impl std::fmt::Display for StateRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.log)?;
        if let Some(id) = self.checkpoint {
            write!(f, "; restored checkpoint {id}")?;
        }
        if let Some(s) = &self.snapshot {
            write!(
                f,
                "; loaded {} entries from {} in {:.1?}",
                self.snapshot_entries,
                s.display(),
                self.snapshot_time
            )?;
        }
        write!(
            f,
            "; replayed {} records after LSN {} in {:.1?}",
            self.replayed_records, self.snapshot_lsn, self.replay_time
        )?;
        for fb in &self.fallbacks {
            write!(f, "; {fb}")?;
        }
        for p in &self.set_aside {
            write!(f, "; set aside {}", p.display())?;
        }
        for m in &self.damaged_manifests {
            write!(f, "; {m}")?;
        }
        Ok(())
    }
}

/// The recovered pieces a journal is built from.
pub(crate) struct Opened {
    pub log: Log,
    pub store: Store,
    pub catalog: Catalog,
    pub report: StateRecovery,
    /// Bytes of log (frames) after the loaded snapshot.
    pub tail_bytes: u64,
    /// Size of the loaded snapshot file.
    pub snapshot_file_bytes: u64,
}

/// Records handed over per call while replaying.
const REPLAY_BATCH: usize = 256;
/// How many records ahead replay starts loading a key's table slot.
const SLOT_AHEAD: usize = 8;
/// How many records ahead replay starts loading a key's table entry (its slot, prefetched
/// `SLOT_AHEAD - ENTRY_AHEAD` records earlier, should be in the cache by then).
const ENTRY_AHEAD: usize = 4;

fn manifest_error(path: &Path, detail: String) -> Error {
    Error::corrupt(path, 0, CorruptionKind::BadManifest { detail })
}

pub(crate) struct OpenArgs<'a> {
    pub dir: &'a Path,
    pub log: crate::log::LogOptions,
    pub max_key_groups: u16,
    pub range: KeyGroupRange,
    pub retain: usize,
    pub checkpoint: Option<u64>,
}

pub(crate) fn open(mut args: OpenArgs<'_>) -> Result<Opened> {
    let started = Instant::now();
    let dir = args.dir;
    // Snapshots and manifests are evidence for the log's recovery: each is written only after
    // the log is durable through its LSN, so a log that ends before one lost durable records
    // (which a torn tail cannot explain). A discard (a checkpoint restore, or a point-in-time
    // cut of durable data) keeps its intent until the files past its point are set aside below,
    // so that a crash in between is still recognized as a discard, not as lost records.
    args.log.evidence = Some(checkpoint::durable_evidence);
    args.log.keep_discard_intent = true;
    // The log first: it takes the directory lock, so nothing below races another process. A
    // restore needs an existing journal: never create one for it.
    let first_opts = match args.checkpoint {
        Some(_) => args.log.clone().create_if_missing(false),
        None => args.log.clone(),
    };
    let mut log = Log::open(dir, first_opts)?;
    let listing = checkpoint::list(dir)?;
    let mut report = StateRecovery {
        log: log.recovery_report().clone(),
        checkpoint: args.checkpoint,
        ..StateRecovery::default()
    };

    // Restoring a checkpoint: check everything it names before anything changes.
    let restore = match args.checkpoint {
        None => None,
        Some(id) => Some(check_restore(dir, id, &log, args.max_key_groups)?),
    };
    // The state to rebuild: through the checkpoint, or through the end of the log.
    let target = restore
        .as_ref()
        .map_or(log.last_lsn().get(), |(_, m)| m.lsn);
    let first = log.first_lsn().get();

    // The newest usable snapshot (at most the checkpoint's), falling back to older ones.
    let limit = restore
        .as_ref()
        .map_or(target, |(_, m)| m.snapshot.as_ref().map_or(0, |s| s.lsn));
    let mut snapshot_file_bytes = 0;
    let load_started = Instant::now();
    let range = args.range;
    let choice = choose_snapshot(&listing.snapshots, first, limit, |lsn, path| {
        let r = SnapshotReader::open(path)?;
        let m = r.meta();
        if m.lsn != lsn {
            return Err(Error::corrupt(
                path,
                0,
                CorruptionKind::BadSnapshot {
                    detail: format!("its name says LSN {lsn}, its footer {}", m.lsn),
                },
            ));
        }
        if m.key_groups.start() > range.start() || m.key_groups.end() < range.end() {
            return Err(Error::InvalidOptions {
                name: "key_group_range",
                reason: format!(
                    "{} holds key groups {}, not all of the {} this journal serves",
                    path.display(),
                    m.key_groups,
                    range
                ),
            });
        }
        let mut st = Store::new(range);
        let l = st.load_snapshot(&r)?;
        Ok((st, l, r.file_len()))
    })?;
    let mut store = None;
    let mut corrupt = Vec::with_capacity(choice.unusable.len());
    let mut first_error = None;
    for (path, e) in choice.unusable {
        report.fallbacks.push(format!(
            "snapshot {} is unusable ({e}); falling back to an older state",
            path.display()
        ));
        corrupt.push(path);
        first_error.get_or_insert(e);
    }
    if let Some((lsn, path, (st, l, file_len))) = choice.loaded {
        snapshot_file_bytes = file_len;
        report.snapshot = Some(path);
        report.snapshot_lsn = Lsn(lsn);
        report.snapshot_entries = l.entries;
        report.snapshot_bytes = l.bytes;
        store = Some(st);
    }
    report.snapshot_time = load_started.elapsed();
    let mut store = match store {
        Some(s) => s,
        None if first <= 1 => Store::new(args.range), // the whole log is there: replay it all
        None => {
            // Point-in-time recovery may have cut the log before every snapshot: the damage it
            // stopped at is the cause.
            let cut_damage = report.log.cuts.iter().find_map(|c| match &c.reason {
                CutReason::DurableDataDamaged(d) => Some(Error::Corruption(d.clone())),
                _ => None,
            });
            let first_segment = log.segments().first().map_or(0, |s| s.id());
            return Err(first_error.or(cut_damage).unwrap_or_else(|| {
                Error::corrupt(
                    format::segment_path(dir, first_segment),
                    0,
                    CorruptionKind::BadSnapshot {
                        detail: format!(
                            "the log starts at LSN {first} and no snapshot covers the records \
                             before it"
                        ),
                    },
                )
            }));
        }
    };
    if let Some((_, m)) = &restore {
        if report.snapshot_lsn.get() != m.snapshot.as_ref().map_or(0, |s| s.lsn) {
            report.fallbacks.push(format!(
                "checkpoint {} is restored from snapshot LSN {} and the log after it instead of \
                 its own snapshot",
                m.id, report.snapshot_lsn
            ));
        }
    }
    let replay_started = Instant::now();
    let tail_bytes = replay(
        dir,
        &log,
        &mut store,
        report.snapshot_lsn.get(),
        target,
        &mut report,
    )?;
    report.replay_time = replay_started.elapsed();

    // Read every manifest before changing anything: one that cannot be read (an I/O error, a
    // newer format) fails the open here, not after a restore has discarded records.
    let mut manifests = Vec::new();
    for (&id, path) in &listing.manifests {
        match read_manifest(path) {
            Ok(m) => manifests.push((id, path.clone(), m)),
            Err(e) if manifest_error_refuses(&e) => return Err(e),
            Err(e) => {
                // Left in place for inspection; it cannot be restored, and nothing is kept for it.
                report.damaged_manifests.push(e.to_string());
            }
        }
    }

    // Everything is verified and the state is whole. Only now change the directory.
    if let Some((_, m)) = &restore {
        // Reopen the log discarding what came after the checkpoint, holding the directory lock
        // throughout: nothing changed since the checks above.
        log = log.reopen(args.log.clone().discard_after(Lsn(m.lsn)))?;
        let discarded = log.recovery_report();
        report.log.cuts.extend(discarded.cuts.iter().cloned());
        report
            .log
            .discarded_segments
            .extend(discarded.discarded_segments.iter().cloned());
        if log.last_lsn().get() != m.lsn {
            return Err(Error::io(
                "restore",
                dir,
                std::io::Error::other(format!(
                    "the log ends at LSN {} after discarding past checkpoint {} (LSN {})",
                    log.last_lsn(),
                    m.id,
                    m.lsn
                )),
            ));
        }
    }
    let last = log.last_lsn().get();
    // Snapshots and manifests past the end of the log describe a history the log no longer has
    // (a restored checkpoint discarded it, or point-in-time recovery cut it): set them aside
    // before anything is appended, or a later open could pair them with other records.
    let mut changed = false;
    for (_, path) in listing.snapshots.range(last + 1..) {
        report.set_aside.push(set_aside(path, "discarded")?);
        changed = true;
    }
    let mut catalog = Catalog::new(dir, args.retain);
    for (id, path, m) in manifests {
        let newer = restore.as_ref().is_some_and(|(_, r)| id > r.id);
        if newer || m.lsn > last || m.log_id != log.id() {
            report.set_aside.push(set_aside(&path, "discarded")?);
            changed = true;
        } else {
            catalog.checkpoints.insert(id, m);
        }
    }
    // Only now that the state is whole: set aside the snapshots that could not be used.
    for path in corrupt {
        report.set_aside.push(set_aside(&path, "corrupt")?);
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    // Only now is a discard complete.
    crate::log::remove_discard_intent(dir)?;
    for (&lsn, path) in listing.snapshots.range(..=last) {
        if path.exists() {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            catalog.snapshots.insert(lsn, SnapshotEntry { len });
        }
    }
    catalog.last_id = listing_max_id(dir)?;
    report.duration = started.elapsed();
    Ok(Opened {
        log,
        store,
        catalog,
        report,
        tail_bytes,
        snapshot_file_bytes,
    })
}

/// Reads the manifest of checkpoint `id` and checks it against the (recovered, not yet cut)
/// log: identity, reach, and the CRC of every segment prefix it names; and that its snapshot
/// exists. Changes nothing.
fn check_restore(
    dir: &Path,
    id: u64,
    log: &Log,
    max_key_groups: u16,
) -> Result<(PathBuf, Manifest)> {
    let path = dir.join(format::manifest_file_name(id));
    if !path.exists() {
        return Err(manifest_error(
            &path,
            format!("there is no checkpoint {id} in {}", dir.display()),
        ));
    }
    let m = read_manifest(&path)?;
    if m.id != id {
        return Err(manifest_error(
            &path,
            format!("the file of checkpoint {id} holds checkpoint {}", m.id),
        ));
    }
    if m.max_key_groups != max_key_groups {
        return Err(Error::KeyGroupsMismatch {
            path,
            stored: m.max_key_groups,
            requested: max_key_groups,
        });
    }
    if m.log_id != log.id() {
        return Err(manifest_error(
            &path,
            format!(
                "checkpoint {id} belongs to log {:#018x}, not to this log {:#018x}",
                m.log_id,
                log.id()
            ),
        ));
    }
    if log.last_lsn().get() < m.lsn {
        return Err(manifest_error(
            &path,
            format!(
                "checkpoint {id} covers the log through LSN {}, but the log ends at LSN {}",
                m.lsn,
                log.last_lsn()
            ),
        ));
    }
    if let Some(s) = &m.snapshot {
        let sp = dir.join(&s.file);
        if format::parse_snapshot_file_name(&s.file) != Some(s.lsn) || !sp.exists() {
            return Err(manifest_error(
                &path,
                format!("it names snapshot {}, which does not exist", sp.display()),
            ));
        }
    }
    verify_segments(log, &path, &m)?;
    Ok((path, m))
}

/// Replays the records in `(after, through]` into `store`; returns their bytes as framed.
fn replay(
    dir: &Path,
    log: &Log,
    store: &mut Store,
    after: u64,
    through: u64,
    report: &mut StateRecovery,
) -> Result<u64> {
    let mut expect = after + 1;
    let mut tail_bytes = 0u64;
    let mut hints = Vec::with_capacity(REPLAY_BATCH);
    log.scan_from(Lsn(expect), REPLAY_BATCH, true, |batch| {
        // Each record's key is hashed first; while record i is applied, the table slot of
        // record i + SLOT_AHEAD and the entry of record i + ENTRY_AHEAD are being loaded, so
        // the table's cache misses overlap instead of following one another.
        hints.clear();
        hints.extend(batch.iter().map(|r| store.replay_hint(r.payload)));
        for (i, rec) in batch.iter().enumerate() {
            let (lsn, payload) = (rec.lsn, rec.payload);
            if let Some(&Some((state, hash))) = hints.get(i + SLOT_AHEAD) {
                store.prefetch_slot(state, hash);
            }
            if let Some(&Some((state, hash))) = hints.get(i + ENTRY_AHEAD) {
                store.prefetch_entry(state, hash);
            }
            if lsn > through {
                return Ok(ControlFlow::Break(()));
            }
            if lsn != expect {
                return Err(rec.invalid(format!(
                    "the log continues at LSN {lsn} where LSN {expect} was due"
                )));
            }
            let hint = hints.get(i).copied().flatten().map(|(_, hash)| hash);
            store
                .apply_hinted(payload, hint)
                .map_err(|e| rec.invalid(e.to_string()))?;
            if lsn == 1 && store.max_key_groups.is_none() {
                return Err(rec.invalid("the first record of a journal is its Init record"));
            }
            report.replayed_records += 1;
            report.replayed_bytes += payload.len() as u64;
            tail_bytes += crate::codec::frame::frame_size(payload.len()).unwrap_or(0) as u64;
            expect = lsn + 1;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if expect <= through {
        return Err(Error::InvalidRecord {
            path: dir.to_path_buf(),
            offset: None,
            lsn: expect,
            detail: format!("the log ends before LSN {through}"),
        });
    }
    Ok(tail_bytes)
}

/// The highest checkpoint id ever used in `dir`, counting manifests set aside: ids are never
/// reused, so a restored job's new checkpoints never share an id with discarded ones.
fn listing_max_id(dir: &Path) -> Result<u64> {
    let mut max = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stem = name.split(".ckpt").next().unwrap_or("");
        if name.contains(".ckpt") {
            if let Some(id) = format::parse_manifest_file_name(&format!("{stem}.ckpt")) {
                max = max.max(id);
            }
        }
    }
    Ok(max)
}

/// Which snapshot an open loads, and which it falls back past: the one decision, shared by
/// recovery and [`crate::inspect`] (which predicts what recovery will do).
pub(crate) struct SnapshotChoice<T> {
    /// The snapshot loaded: its LSN, its file and what `load` made of it.
    pub loaded: Option<(u64, PathBuf, T)>,
    /// The snapshots tried before it and found unusable, newest first, with why.
    pub unusable: Vec<(PathBuf, Error)>,
}

/// Tries the snapshots at or below `limit`, newest first, while the log after them is still
/// there (`lsn + 1 >= first`: a snapshot older than that cannot be brought up to date, nor can
/// anything older), and takes the first that `load` accepts. A snapshot `load` refuses is
/// unusable and recovery falls back past it, except for an [`Error::InvalidOptions`] (the
/// journal's options, not the file, are wrong), which is returned at once.
///
/// With nothing loaded, the state is whole only if the whole log is there (`first <= 1`): see
/// [`SnapshotChoice::covers`].
pub(crate) fn choose_snapshot<T>(
    snapshots: &std::collections::BTreeMap<u64, PathBuf>,
    first: u64,
    limit: u64,
    mut load: impl FnMut(u64, &Path) -> Result<T>,
) -> Result<SnapshotChoice<T>> {
    let mut choice = SnapshotChoice {
        loaded: None,
        unusable: Vec::new(),
    };
    for (&lsn, path) in snapshots.range(..=limit).rev() {
        if lsn + 1 < first {
            break;
        }
        match load(lsn, path) {
            Ok(t) => {
                choice.loaded = Some((lsn, path.clone(), t));
                break;
            }
            Err(e @ Error::InvalidOptions { .. }) => return Err(e),
            Err(e) => choice.unusable.push((path.clone(), e)),
        }
    }
    Ok(choice)
}

impl<T> SnapshotChoice<T> {
    /// The state can be rebuilt: from the snapshot loaded, or from the whole log when it starts
    /// at its first record.
    pub(crate) fn covers(&self, first: u64) -> bool {
        self.loaded.is_some() || first <= 1
    }
}

/// Whether a manifest that cannot be read fails the open (an I/O error, a newer format: the
/// manifest may be sound), rather than being left in place and ignored (it is damaged). Shared
/// with [`crate::inspect`].
pub(crate) fn manifest_error_refuses(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::UnsupportedVersion { .. })
}
