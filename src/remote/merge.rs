//! Scale in (and arbitrary rescaling): several remote checkpoints with disjoint key-group ranges
//! restored into one journal.
//!
//! The sources' logs are separate histories: their LSNs are unrelated, their state ids may
//! differ, and no one log can hold records of several. So the merged journal is not a splice of
//! their files but a new journal: one snapshot, written by the snapshot writer, holding for each
//! key group the state its source had at its checkpoint, and an empty log of a new identity after
//! it. Each source is first restored for its part of the range into a scratch directory (the
//! log's chunks checked whole, the snapshot's blocks of the part downloaded into a stand-in file
//! and checked block by block as the merge reads them); its log tail, filtered to that part, is
//! folded into a delta exactly as a
//! compaction folds it, and merged with its snapshot part straight into the one writer, its
//! state ids renumbered into the merged registry. Sources are taken in key-group order, so the
//! entries arrive sorted. Everything is built in a temporary directory beside the target and
//! renamed into place at the end: the target holds a whole journal or nothing.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::staging::Staging;
use super::{layout, RemoteStore};
use crate::codec::header::{SegmentHeader, FORMAT_VERSION};
use crate::codec::manifest::{Manifest, SnapshotRef, StateRef};
use crate::codec::meta::LogMeta;
use crate::codec::remote_manifest::RemoteManifest;
use crate::compaction::{self, Delta, EntrySink};
use crate::error::{Error, Result};
use crate::format;
use crate::keygroup::KeyGroupRange;
use crate::log::{Log, LogOptions, Lsn};
use crate::segment::Segment;
use crate::snapshot::{Entry, SnapshotReader, SnapshotWriter, StateInfo};

/// One checkpoint to merge: a store and a remote checkpoint number in it (the newest when
/// `None`).
#[derive(Debug, Clone)]
pub struct MergeSource {
    /// The store (and prefix) holding the checkpoint.
    pub remote: RemoteStore,
    /// Its number; `None`: the newest in the store.
    pub seq: Option<u64>,
}

impl MergeSource {
    /// The newest checkpoint of `remote`.
    pub fn latest(remote: RemoteStore) -> Self {
        MergeSource { remote, seq: None }
    }

    /// Remote checkpoint `seq` of `remote`.
    pub fn at(remote: RemoteStore, seq: u64) -> Self {
        MergeSource {
            remote,
            seq: Some(seq),
        }
    }
}

/// What one source contributed to a merged restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedSource {
    /// The source's remote checkpoint number.
    pub seq: u64,
    /// Its local checkpoint id.
    pub checkpoint_id: u64,
    /// Its LSN (in its own log).
    pub lsn: u64,
    /// The key groups taken from it.
    pub key_groups: KeyGroupRange,
    /// Entries of the merged snapshot that came from it.
    pub entries: u64,
}

/// What a merged restore ([`restore_merged`]) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// The journal's one checkpoint: open the directory with
    /// [`Journal::open_at_checkpoint`](crate::Journal::open_at_checkpoint) and this id (or with
    /// `Journal::open`), with the range [`MergeReport::key_groups`].
    pub checkpoint_id: u64,
    /// The LSN of the merged snapshot and checkpoint (the new log's records start after it).
    pub lsn: u64,
    /// The key groups the journal serves.
    pub key_groups: KeyGroupRange,
    /// The sources that contributed key groups, in key-group order.
    pub sources: Vec<MergedSource>,
    /// Entries of the merged snapshot.
    pub entries: u64,
    /// Its length in bytes.
    pub snapshot_bytes: u64,
    /// Objects downloaded.
    pub objects: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Wall time.
    pub duration: Duration,
}

/// A source once its manifest is read and checked.
struct Picked {
    remote: RemoteStore,
    manifest: RemoteManifest,
    local: Manifest,
}

impl Picked {
    fn range(&self) -> KeyGroupRange {
        KeyGroupRange::new(self.local.kg_start, self.local.kg_end)
    }

    fn name(&self) -> String {
        self.remote
            .describe(&layout::manifest_key(self.manifest.seq))
    }
}

fn incompatible(detail: String) -> Error {
    Error::IncompatibleCheckpoints { detail }
}

/// Restores key groups `range` from `sources` — remote checkpoints with disjoint key-group ranges
/// that together cover `range`, say the checkpoints of the N tasks of a job — into `dir` (empty
/// or missing) as one journal: scale in (N → 1), or, with a `range` cutting across sources, any
/// rescale N → M (each of the M new tasks restores its own range from all N sources; sources
/// whose range misses `range` are not downloaded).
///
/// The sources must agree on the number of key groups, and on every state they share (merged by
/// name: the same kind, TTL and refresh flag); their ranges must not overlap. The merged journal
/// has a new log of its own, one snapshot holding each key group as its source's checkpoint had
/// it (expired TTL entries are kept; reads filter them as before), and one checkpoint
/// ([`MergeReport::checkpoint_id`]) at that snapshot. Every object is checked (lengths, CRC-32,
/// XXH3, each snapshot block's and segment prefix's CRC); a damaged one fails the restore with
/// an error naming the object and the offset, and nothing is left at `dir` — the journal is built
/// in a temporary directory beside it and renamed into place only when complete.
pub async fn restore_merged(
    sources: &[MergeSource],
    range: KeyGroupRange,
    dir: &Path,
) -> Result<MergeReport> {
    let started = Instant::now();
    let mut picked = Vec::with_capacity(sources.len());
    for s in sources {
        let manifest = s.remote.pick(s.seq).await?;
        let local = s.remote.check_manifest(&manifest)?;
        picked.push(Picked {
            remote: s.remote.clone(),
            manifest,
            local,
        });
    }
    let plan = plan(picked, range)?;
    // Built beside the target and renamed into place whole; a failed merge removes its directory
    // (dropping the staging), and the target is never touched.
    let staging = Staging::beside(dir, "merge")?;
    let mut report = build(&plan, range, staging.path()).await?;
    staging.publish()?;
    report.duration = started.elapsed();
    Ok(report)
}

/// The checked plan of a merge: the contributing sources in key-group order, each with its part
/// of the range and its state ids' numbers in the merged registry.
struct Plan {
    parts: Vec<(Picked, KeyGroupRange, Vec<u32>)>,
    max_key_groups: u16,
    states: Vec<StateInfo>,
}

fn plan(mut picked: Vec<Picked>, range: KeyGroupRange) -> Result<Plan> {
    let Some(first) = picked.first() else {
        return Err(Error::InvalidOptions {
            name: "restore sources",
            reason: "no checkpoint to restore from".into(),
        });
    };
    if range.start() >= range.end() {
        return Err(Error::InvalidOptions {
            name: "key_group_range",
            reason: format!("{range} is empty"),
        });
    }
    let max = first.local.max_key_groups;
    if let Some(other) = picked.iter().find(|p| p.local.max_key_groups != max) {
        return Err(incompatible(format!(
            "{} has {max} key groups, {} has {}",
            first.name(),
            other.name(),
            other.local.max_key_groups
        )));
    }
    if range.end() > max {
        return Err(Error::InvalidOptions {
            name: "key_group_range",
            reason: format!("{range} reaches past the {max} key groups"),
        });
    }
    picked.sort_by_key(|p| (p.local.kg_start, p.local.kg_end));
    for w in picked.windows(2) {
        if let [a, b] = w {
            if b.local.kg_start < a.local.kg_end {
                return Err(incompatible(format!(
                    "their key-group ranges overlap: {} holds {}, {} holds {}",
                    a.name(),
                    a.range(),
                    b.name(),
                    b.range()
                )));
            }
        }
    }
    // The contributing sources must tile `range`.
    let mut parts = Vec::new();
    let mut next = range.start();
    for p in picked {
        let start = p.local.kg_start.max(range.start());
        let end = p.local.kg_end.min(range.end());
        if start >= end {
            continue; // holds none of `range`: not downloaded
        }
        if start > next {
            return Err(incompatible(format!(
                "no source holds key groups {}",
                KeyGroupRange::new(next, start)
            )));
        }
        next = end;
        parts.push((p, KeyGroupRange::new(start, end), Vec::new()));
    }
    if next < range.end() {
        return Err(incompatible(format!(
            "no source holds key groups {}",
            KeyGroupRange::new(next, range.end())
        )));
    }
    // The merged registry: by name, in order of first appearance (sources in key-group order,
    // each in its id order).
    let mut states: Vec<StateInfo> = Vec::new();
    let mut owner: Vec<String> = Vec::new();
    for (p, _, ids) in &mut parts {
        let mut regs: Vec<&StateRef> = p.local.states.iter().collect();
        regs.sort_by_key(|s| s.id);
        for (i, s) in regs.iter().enumerate() {
            if s.id as usize != i {
                return Err(Error::RemoteCorruption {
                    object: p.name(),
                    offset: 0,
                    detail: format!("its registry's state ids are not dense (id {})", s.id),
                });
            }
            match states.iter().position(|m| m.name == s.name) {
                Some(at) => {
                    let m = &states[at];
                    if (m.kind, m.flags, m.ttl_millis) != (s.kind, s.flags, s.ttl_millis) {
                        return Err(incompatible(format!(
                            "state {:?} is {} in {} but {} in {}",
                            s.name,
                            describe_state(m.kind, m.flags, m.ttl_millis),
                            owner[at],
                            describe_state(s.kind, s.flags, s.ttl_millis),
                            p.name()
                        )));
                    }
                    ids.push(at as u32);
                }
                None => {
                    ids.push(states.len() as u32);
                    owner.push(p.name());
                    states.push(StateInfo {
                        id: states.len() as u32,
                        name: s.name.clone(),
                        kind: s.kind,
                        flags: s.flags,
                        ttl_millis: s.ttl_millis,
                        entries: 0,
                        payload_bytes: 0,
                    });
                }
            }
        }
    }
    Ok(Plan {
        parts,
        max_key_groups: max,
        states,
    })
}

fn describe_state(kind: u8, flags: u8, ttl_millis: u64) -> String {
    let kind = match kind {
        1 => "a value state",
        2 => "a list state",
        3 => "a map state",
        4 => "a reducing state",
        5 => "an aggregating state",
        _ => "a state of unknown kind",
    };
    match (ttl_millis, flags & 1) {
        (0, _) => format!("{kind} without TTL"),
        (t, 0) => format!("{kind} with a TTL of {t} ms after write"),
        (t, _) => format!("{kind} with a TTL of {t} ms after access"),
    }
}

async fn build(plan: &Plan, range: KeyGroupRange, tmp: &Path) -> Result<MergeReport> {
    let lsn = plan
        .parts
        .iter()
        .map(|(p, _, _)| p.local.lsn)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut writer = Some(SnapshotWriter::create(
        tmp,
        lsn,
        plan.max_key_groups,
        range,
        plan.states.clone(),
    )?);
    let mut report = MergeReport {
        checkpoint_id: 1,
        lsn,
        key_groups: range,
        sources: Vec::new(),
        entries: 0,
        snapshot_bytes: 0,
        objects: 0,
        bytes: 0,
        duration: Duration::ZERO,
    };
    for (i, (p, part, ids)) in plan.parts.iter().enumerate() {
        let scratch = tmp.join(format!("source-{i}{}", format::TMP_SUFFIX));
        let r = p
            .remote
            .restore_key_groups_unwritten(&p.manifest, p.local.clone(), *part, &scratch)
            .await?;
        report.objects += r.objects;
        report.bytes += r.bytes;
        let Some(w) = writer.take() else {
            return Err(Error::InvalidOptions {
                name: "restore",
                reason: "the merged snapshot's writer is gone".into(),
            });
        };
        let job = FoldJob {
            scratch: scratch.clone(),
            name: p.name(),
            snapshot_object: p
                .manifest
                .snapshot
                .as_ref()
                .map(|s| p.remote.describe(&s.object)),
            local: p.local.clone(),
            part: *part,
            ids: ids.clone(),
            writer: w,
        };
        // Reading the log and the snapshot part and writing the merged snapshot is blocking file
        // I/O and CPU work: off the runtime's worker threads.
        let (w, entries) = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| Error::io("merge", &scratch, std::io::Error::other(e)))??;
        writer = Some(w);
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io("remove", &scratch, e))?;
        report.entries += entries;
        report.sources.push(MergedSource {
            seq: p.manifest.seq,
            checkpoint_id: p.manifest.checkpoint_id,
            lsn: p.manifest.lsn,
            key_groups: *part,
            entries,
        });
    }
    let Some(w) = writer else {
        return Err(Error::InvalidOptions {
            name: "restore",
            reason: "the merged snapshot's writer is gone".into(),
        });
    };
    let snap = w.finish()?;
    report.snapshot_bytes = snap.len;

    // An empty log after the snapshot, of a new identity (the sources' histories end here), in
    // segments as large as the sources' were.
    let segment_size = plan
        .parts
        .iter()
        .filter_map(|(p, _, _)| p.manifest.segments.last().map(|s| s.file_len))
        .max()
        .unwrap_or(crate::log::DEFAULT_SEGMENT_SIZE);
    let log_id = crate::log::random_id();
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        log_id,
        segment_id: 1,
        base_lsn: lsn + 1,
        prev_last_lsn: lsn,
        prev_last_crc: 0,
        predecessor_unsynced: false,
        recycled: false,
    };
    drop(Segment::create(tmp, &header, segment_size)?);
    crate::log::write_meta(
        tmp,
        &LogMeta {
            log_id,
            first_segment: 1,
            last_segment: 1,
        },
    )?;
    let file = format::snapshot_file_name(lsn);
    let manifest = Manifest {
        id: 1,
        lsn,
        log_id,
        created_millis: plan
            .parts
            .iter()
            .map(|(p, _, _)| p.local.created_millis)
            .max()
            .unwrap_or(0),
        max_key_groups: plan.max_key_groups,
        kg_start: range.start(),
        kg_end: range.end(),
        snapshot: Some(SnapshotRef {
            lsn,
            len: snap.len,
            file,
        }),
        segments: Vec::new(),
        states: plan
            .states
            .iter()
            .map(|s| StateRef {
                id: s.id,
                kind: s.kind,
                flags: s.flags,
                ttl_millis: s.ttl_millis,
                name: s.name.clone(),
            })
            .collect(),
    };
    crate::checkpoint::write_manifest(tmp, &manifest)?;
    Ok(report)
}

/// One source's part, restored into `scratch`, folded into the merged snapshot.
struct FoldJob {
    scratch: PathBuf,
    /// The source's manifest object, for errors.
    name: String,
    /// Its snapshot object (store and key), for errors.
    snapshot_object: Option<String>,
    local: Manifest,
    part: KeyGroupRange,
    ids: Vec<u32>,
    writer: SnapshotWriter,
}

impl FoldJob {
    fn run(mut self) -> Result<(SnapshotWriter, u64)> {
        let stand_in = self
            .local
            .snapshot
            .as_ref()
            .map(|s| self.scratch.join(super::restore::stand_in_name(&s.file)));
        match self.fold(stand_in.as_deref()) {
            Ok(entries) => Ok((self.writer, entries)),
            // Damage found in the stand-in is damage of the object, at the same offset.
            Err(Error::Corruption(c)) if Some(c.path.as_path()) == stand_in.as_deref() => {
                Err(Error::RemoteCorruption {
                    object: self.snapshot_object.unwrap_or_default(),
                    offset: c.offset,
                    detail: c.kind.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn fold(&mut self, stand_in: Option<&Path>) -> Result<u64> {
        let base = match stand_in {
            Some(path) => Some(SnapshotReader::open(path)?),
            None => None,
        };
        let snapshot_lsn = self.local.snapshot.as_ref().map_or(0, |s| s.lsn);
        let (states, max_kg) = match &base {
            Some(b) => (b.meta().states.clone(), Some(b.meta().max_key_groups)),
            None => (Vec::new(), None),
        };
        let mut delta = Delta::new(self.part, max_kg, states);
        let log = Log::open(
            &self.scratch,
            LogOptions::default().create_if_missing(false),
        )?;
        let through = self.local.lsn;
        if log.last_lsn().get() < through {
            return Err(Error::RemoteCorruption {
                object: self.name.clone(),
                offset: 0,
                detail: format!(
                    "its log ends at LSN {}, before the checkpoint's LSN {through}",
                    log.last_lsn()
                ),
            });
        }
        let mut next = snapshot_lsn + 1;
        if through >= next {
            log.scan_from(Lsn(next), 1024, true, |batch| {
                for rec in batch {
                    if rec.lsn > through {
                        return Ok(ControlFlow::Break(()));
                    }
                    if rec.lsn != next {
                        return Err(rec.invalid(format!("expected the record with LSN {next}")));
                    }
                    delta
                        .apply(rec.payload)
                        .map_err(|e| rec.invalid(e.to_string()))?;
                    next += 1;
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        if next <= through {
            return Err(Error::RemoteCorruption {
                object: self.name.clone(),
                offset: 0,
                detail: format!("its log lacks the records from LSN {next} to {through}"),
            });
        }
        // The registry the log leads to must be the one the manifest states (the plan numbered
        // the states from it).
        let found: Vec<(&str, u8)> = delta
            .states()
            .iter()
            .map(|s| (s.name.as_str(), s.kind))
            .collect();
        let mut stated: Vec<&StateRef> = self.local.states.iter().collect();
        stated.sort_by_key(|s| s.id);
        let stated: Vec<(&str, u8)> = stated.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        if found != stated {
            return Err(Error::RemoteCorruption {
                object: self.name.clone(),
                offset: 0,
                detail: format!(
                    "its log registers the states {found:?}, its manifest says {stated:?}"
                ),
            });
        }
        if delta.max_key_groups() != Some(self.local.max_key_groups) {
            return Err(Error::RemoteCorruption {
                object: self.name.clone(),
                offset: 0,
                detail: format!(
                    "its state has {:?} key groups, its manifest says {}",
                    delta.max_key_groups(),
                    self.local.max_key_groups
                ),
            });
        }
        let mut sink = Renumber::new(&mut self.writer, &self.ids);
        // `now` 0: nothing is dropped as expired (the restore has no journal clock); reads go on
        // filtering expired values as before.
        let stats = compaction::merge(base.as_ref(), delta, &mut sink, 0, &AtomicBool::new(false))?;
        sink.flush()?;
        drop(log);
        Ok(stats.written)
    }
}

/// An entry held back for reordering: new state id, key, map key, value.
type Held = (u32, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

/// Writes entries with their state ids renumbered. Where the renumbering keeps the order of ids
/// (the usual case: the sources registered their states in the same order) entries pass
/// straight through; otherwise each key group's entries are collected and written in the new
/// order (memory: one key group of one source).
struct Renumber<'a> {
    out: &'a mut SnapshotWriter,
    ids: &'a [u32],
    in_order: bool,
    kg: Option<u16>,
    held: Vec<Held>,
}

impl<'a> Renumber<'a> {
    fn new(out: &'a mut SnapshotWriter, ids: &'a [u32]) -> Self {
        Renumber {
            out,
            ids,
            in_order: ids.windows(2).all(|w| w[0] < w[1]),
            kg: None,
            held: Vec::new(),
        }
    }

    /// Writes the held key group, in the new state order (a stable sort keeps each state's
    /// entries in their key order).
    fn flush(&mut self) -> Result<()> {
        let Some(kg) = self.kg else { return Ok(()) };
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| h.0);
        for (state_id, key, map_key, value) in &held {
            self.out.add(Entry {
                kg,
                state_id: *state_id,
                key,
                map_key: map_key.as_deref(),
                value,
            })?;
        }
        Ok(())
    }
}

impl EntrySink for Renumber<'_> {
    fn add(&mut self, e: Entry<'_>) -> Result<()> {
        let Some(&state_id) = self.ids.get(e.state_id as usize) else {
            return Err(Error::InvalidOptions {
                name: "restore",
                reason: format!("state id {} is not in the source's registry", e.state_id),
            });
        };
        if self.in_order {
            return self.out.add(Entry { state_id, ..e });
        }
        if self.kg != Some(e.kg) {
            self.flush()?;
            self.kg = Some(e.kg);
        }
        self.held.push((
            state_id,
            e.key.to_vec(),
            e.map_key.map(<[u8]>::to_vec),
            e.value.to_vec(),
        ));
        Ok(())
    }
}

/// [`restore_merged`], blocking (on the crate's shared runtime).
pub fn restore_merged_blocking(
    sources: &[MergeSource],
    range: KeyGroupRange,
    dir: impl AsRef<Path>,
) -> Result<MergeReport> {
    super::block_on(restore_merged(sources, range, dir.as_ref()))
}
