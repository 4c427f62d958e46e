//! Damage to durable data: see [`CrashSimulator::check_damage`].
//!
//! A crash image changes only what was not durable; here, on top of such an image, one thing
//! that *was* durable is damaged the way a medium damages it — a flipped bit, or a 4 KiB page
//! read back as zeros — in a log segment (its header or its frames, within the length a flush
//! made durable), a snapshot, a checkpoint manifest or `log.meta`. Recovery may refuse (an error
//! naming the damaged file and an offset at or before the damage), fall back past the damage in
//! a way its report states, or find the damage harmless; it may never return a state that is not
//! the model's state at the LSN it recovered, lose records anything still proves durable without
//! saying which, or panic. (Records of the last flush that a zeroed page makes look unwritten can
//! be lost unsaid: nothing proves them durable; see [`DamageOutcome::UnprovableWindow`].)

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{build_image, CrashSimulator, Image, Point, Rng, ScratchDir, SimFailure, PAGE};
use crate::codec::header::SEGMENT_HEADER_LEN;
use crate::format;
use crate::log::{CutReason, RecoveryMode};
use crate::{Codec, Error, Journal, Result};

/// The kind of durable file an image damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DamagedFile {
    /// The 64-byte header of a log segment.
    SegmentHeader,
    /// The frames (records and sync markers) of a log segment, within its durable length.
    SegmentFrames,
    /// The snapshot that recovering the undamaged image loaded.
    LoadedSnapshot,
    /// Another snapshot (an older one a retained checkpoint still needs).
    OtherSnapshot,
    /// A checkpoint manifest.
    Manifest,
    /// The log's `log.meta`.
    LogMeta,
}

/// How a damaged image was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DamageCheck {
    /// [`Journal::open`] with [`RecoveryMode::TolerateTornTail`] (the default).
    Open,
    /// [`Journal::open`] with [`RecoveryMode::PointInTime`].
    OpenPointInTime,
    /// [`Journal::open`] with [`RecoveryMode::Strict`] (which also refuses the torn tails of
    /// the crash image under the damage, so its errors may name another segment).
    OpenStrict,
    /// [`Journal::open_at_checkpoint`] of the checkpoint whose manifest was damaged.
    RestoreDamagedManifest,
    /// [`Journal::open_at_checkpoint`] of another checkpoint in the image.
    Restore,
}

/// What recovery made of a damaged image (every outcome also had the model's exact state at the
/// LSN it recovered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DamageOutcome {
    /// An error naming the damaged file (or, for a restore, the manifest restored) and, for
    /// [`Error::Corruption`], an offset at or before the damage.
    Refused,
    /// The records after some LSN were lost, and the report states exactly which: a cut whose
    /// first LSN is the one after the recovered LSN and whose intact records cut run to the last
    /// record the undamaged image recovers.
    ReportedLoss,
    /// Records of the last flush before the crash were lost, and nothing says so. The only
    /// evidence that a flush completed is the sync marker of the *next* flush; damage that makes
    /// the end of that last flush look unwritten (a zeroed page) is indistinguishable from a
    /// flush that never reached the disk. Allowed only when every lost record is past what any
    /// sync marker or segment header proves durable (see `docs/DESIGN.md`).
    UnprovableWindow,
    /// A damaged snapshot was set aside and recovery fell back to an older one (or the whole log)
    /// giving the same state; the report says so.
    FellBack,
    /// A damaged manifest was reported unreadable; the state is whole.
    DamagedManifestReported,
    /// Bytes were cut or set aside and the report says so, but no record was lost.
    CutNoLoss,
    /// The damage changed nothing recovery reads (padding between frames, a snapshot no one
    /// loads): same LSN, same state, clean report.
    NoEffect,
}

/// What [`CrashSimulator::check_damage`] explored: damaged images, and each check's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamageReport {
    /// Crash points damaged images were built from.
    pub points: usize,
    /// Distinct damaged images checked.
    pub images: usize,
    /// Damaged images skipped because an identical one was already checked.
    pub duplicates: usize,
    /// Journals opened (undamaged base images, and damaged ones in each recovery mode).
    pub opens: usize,
    /// Journals opened with [`Journal::open_at_checkpoint`].
    pub restores: usize,
    /// Checks by damaged file, check and outcome.
    pub outcomes: BTreeMap<(DamagedFile, DamageCheck, DamageOutcome), usize>,
}

impl DamageReport {
    /// How many checks of `file` with `check` had `outcome`.
    pub fn count(&self, file: DamagedFile, check: DamageCheck, outcome: DamageOutcome) -> usize {
        self.outcomes
            .get(&(file, check, outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &DamageReport) {
        self.points += other.points;
        self.images += other.images;
        self.duplicates += other.duplicates;
        self.opens += other.opens;
        self.restores += other.restores;
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(*k).or_default() += v;
        }
    }
}

impl fmt::Display for DamageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} damaged images from {} crash points ({} duplicates skipped), {} opens, {} restores",
            self.images, self.points, self.duplicates, self.opens, self.restores
        )?;
        for ((file, check, outcome), n) in &self.outcomes {
            writeln!(f, "  {file:?} / {check:?} / {outcome:?}: {n}")?;
        }
        Ok(())
    }
}

/// One damage to one durable file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    BitFlip { offset: usize, bit: u8 },
    ZeroedPage { from: usize, to: usize },
}

impl Damage {
    /// The damaged byte range.
    fn range(self) -> (usize, usize) {
        match self {
            Damage::BitFlip { offset, .. } => (offset, offset + 1),
            Damage::ZeroedPage { from, to } => (from, to),
        }
    }

    fn apply(self, bytes: &mut [u8]) {
        match self {
            Damage::BitFlip { offset, bit } => {
                if let Some(b) = bytes.get_mut(offset) {
                    *b ^= 1 << bit;
                }
            }
            Damage::ZeroedPage { from, to } => {
                if let Some(r) = bytes.get_mut(from..to) {
                    r.fill(0);
                }
            }
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::BitFlip { offset, bit } => write!(f, "bit {bit} of byte {offset} flipped"),
            Damage::ZeroedPage { from, to } => write!(f, "bytes {from}..{to} zeroed (a page)"),
        }
    }
}

/// What recovering the undamaged base image gave.
struct Base {
    image: Image,
    /// Its number at the point (0: every file as copied; 1: everything not durable lost).
    n: usize,
    /// The LSN it recovered through.
    recovered: u64,
    /// Every record through this LSN is proven durable by the log itself: a sync marker's
    /// watermark, or a successor created after a full flush.
    proven: u64,
    /// Every record through this LSN is proven durable by a snapshot or a manifest (evidence
    /// damage to a segment cannot destroy).
    proven_by_files: u64,
    /// Every record through this LSN is proven durable by a segment created after its
    /// predecessor was flushed completely.
    proven_by_headers: u64,
    /// The snapshot it loaded.
    snapshot: Option<String>,
    /// The durable length of each segment.
    durable: BTreeMap<String, usize>,
}

/// A durable file of a base image that can be damaged, and how many of its bytes are durable.
struct Target {
    name: String,
    kind: DamagedFile,
    durable: usize,
}

impl<S: Clone + PartialEq + fmt::Debug, C: Codec + Clone> CrashSimulator<S, C> {
    /// Damages durable data: builds `images_per_point` damaged images from every recorded point
    /// and checks what recovery makes of each.
    ///
    /// Each image starts from the point's image 0 (every file as copied) or image 1 (everything
    /// not durable lost) — see [`check`](Self::check) — and damages one durable file once: a
    /// segment's header or its frames within the length a flush made durable, a snapshot, a
    /// manifest or `log.meta`; with a flipped bit (three times in four) or a zeroed 4 KiB page.
    /// The image is opened with [`RecoveryMode::TolerateTornTail`], [`RecoveryMode::PointInTime`]
    /// and [`RecoveryMode::Strict`], and every manifest in it restored; each check must end in
    /// one of the [`DamageOutcome`]s, with the model's exact state at the LSN recovered:
    ///
    /// * an error must name the damaged file (a restore may instead name its manifest) and, if
    ///   it is [`Error::Corruption`], an offset at or before the last damaged byte;
    /// * records the undamaged image recovers may be missing only if the report states exactly
    ///   which ([`DamageOutcome::ReportedLoss`]; in `TolerateTornTail` mode only past what the
    ///   log, its snapshots and its manifests prove durable: proven-durable damage must be
    ///   refused), or if they lie past everything still proving durability
    ///   ([`DamageOutcome::UnprovableWindow`]); `Strict` mode cuts nothing;
    /// * a damaged manifest is reported by `open` and refused by its restore; the snapshot the
    ///   undamaged image loaded is never used damaged: fallback or refusal.
    ///
    /// Identical damaged images are checked once. Stops at the first violation.
    pub fn check_damage(
        &mut self,
        images_per_point: usize,
        seed: u64,
        mut observe: impl FnMut(&mut Journal<C>) -> Result<S>,
    ) -> std::result::Result<DamageReport, SimFailure> {
        let scratch = ScratchDir::new(self.scratch.as_deref()).map_err(|e| SimFailure {
            point: 0,
            recipe: String::new(),
            message: format!("cannot create a scratch directory: {e}"),
        })?;
        let mut report = DamageReport {
            points: self.points.len(),
            ..DamageReport::default()
        };
        let mut seen = HashSet::new();
        for (index, point) in self.points.iter().enumerate() {
            let mut bases: [Option<Base>; 2] = [None, None];
            for k in 0..images_per_point {
                let mut rng = Rng::new(
                    seed ^ 0x5851_f42d_4c95_7f2d
                        ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f)
                        ^ (k as u64).wrapping_mul(0xe703_7ed1_a0b4_28db),
                );
                let n = rng.below(2);
                if bases[n].is_none() {
                    report.opens += 1;
                    bases[n] = Some(self.open_base(&scratch, index, point, n, &mut observe)?);
                }
                let Some(base) = &bases[n] else { continue };
                let targets = targets(base);
                let Some(target) = pick_target(&targets, &mut rng) else {
                    continue;
                };
                let damage = pick_damage(target, &mut rng);
                let mut files = base.image.files.clone();
                for (name, bytes) in &mut files {
                    if *name == target.name {
                        let mut b = bytes.to_vec();
                        damage.apply(&mut b);
                        *bytes = Arc::new(b);
                    }
                }
                let mut changes = base.image.changes.clone();
                changes.push((
                    target.name.clone(),
                    super::Change::Damaged(damage.to_string()),
                ));
                let image = Image { files, changes };
                if !seen.insert(image.hash()) {
                    report.duplicates += 1;
                    continue;
                }
                report.images += 1;
                self.check_damaged(
                    &scratch,
                    index,
                    point,
                    base,
                    &image,
                    target,
                    damage,
                    &mut observe,
                    &mut report,
                )?;
            }
        }
        Ok(report)
    }

    /// Opens base image `n` of a point undamaged: it must recover as [`check`](Self::check)
    /// demands; returns what it recovered.
    fn open_base(
        &self,
        scratch: &ScratchDir,
        index: usize,
        point: &Point,
        n: usize,
        observe: &mut impl FnMut(&mut Journal<C>) -> Result<S>,
    ) -> std::result::Result<Base, SimFailure> {
        let mut rng = Rng::new(0x0bad_5eed ^ index as u64);
        let image = build_image(point, n, &mut rng);
        let fail = |message: String| SimFailure {
            point: index,
            recipe: image.recipe(),
            message,
        };
        let dir = scratch.fresh();
        image
            .write_to(&dir)
            .map_err(|e| fail(format!("cannot write the image: {e}")))?;
        let outcome = (|| {
            let mut j = Journal::open_with(&dir, self.opts.clone())
                .map_err(|e| format!("open of the undamaged image failed: {e}"))?;
            let r = j.recovery_report().last_lsn.get();
            if r < point.acknowledged || r > point.last {
                return Err(format!(
                    "the undamaged image recovered through LSN {r} (acknowledged {}, appended {})",
                    point.acknowledged, point.last
                ));
            }
            let found = observe(&mut j).map_err(|e| format!("observe failed: {e}"))?;
            if Some(&found) != self.state_at(r) {
                return Err(format!(
                    "the undamaged image recovered a wrong state at LSN {r}"
                ));
            }
            let segs = j.log().segments();
            // Snapshots and manifests are written only after the log is durable through them.
            let mut by_files = 0;
            for (name, bytes) in &image.files {
                if let Some(lsn) = format::parse_snapshot_file_name(name) {
                    by_files = by_files.max(lsn);
                } else if format::parse_manifest_file_name(name).is_some() {
                    if let Ok(m) = crate::codec::manifest::Manifest::decode(bytes) {
                        by_files = by_files.max(m.lsn);
                    }
                }
            }
            let mut by_headers = 0;
            for s in segs.iter().skip(1) {
                if !s.header().predecessor_unsynced {
                    by_headers = by_headers.max(s.header().base_lsn.saturating_sub(1));
                }
            }
            let proven = j
                .recovery_report()
                .synced_through
                .get()
                .max(by_files)
                .max(by_headers);
            let snapshot = j
                .recovery()
                .snapshot
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            Ok((r, proven, by_files, by_headers, snapshot))
        })();
        let _ = fs::remove_dir_all(&dir);
        let (recovered, proven, proven_by_files, proven_by_headers, snapshot) =
            outcome.map_err(fail)?;
        let durable = point
            .files
            .iter()
            .filter_map(|f| match f.durable {
                super::Durable::Segment { len, .. } => Some((f.name.clone(), len)),
                _ => None,
            })
            .collect();
        Ok(Base {
            durable,
            image,
            n,
            recovered,
            proven,
            proven_by_files,
            proven_by_headers,
            snapshot,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn check_damaged(
        &self,
        scratch: &ScratchDir,
        index: usize,
        point: &Point,
        base: &Base,
        image: &Image,
        target: &Target,
        damage: Damage,
        observe: &mut impl FnMut(&mut Journal<C>) -> Result<S>,
        report: &mut DamageReport,
    ) -> std::result::Result<(), SimFailure> {
        let fail = |message: String| SimFailure {
            point: index,
            recipe: format!("image {} of the point, then {}", base.n, image.recipe()),
            message,
        };
        let (_, damage_end) = damage.range();
        // An error must name the damaged file, and the damage at or before its last byte.
        let refused = |dir: &Path,
                       e: &Error,
                       also: Option<&str>|
         -> std::result::Result<(), String> {
            let named = e
                .path()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy());
            let ok_name = named.as_deref() == Some(target.name.as_str())
                || (also.is_some() && named.as_deref() == also);
            let in_dir = e.path().is_some_and(|p| p.starts_with(dir));
            if !ok_name || !in_dir {
                return Err(format!(
                    "refused with an error that does not name {}: {e}",
                    target.name
                ));
            }
            match e {
                Error::Corruption(c) => {
                    if named.as_deref() == Some(target.name.as_str())
                        && c.offset as usize >= damage_end
                    {
                        return Err(format!(
                            "the error names offset {}, past the damage (bytes before {damage_end}): {e}",
                            c.offset
                        ));
                    }
                    Ok(())
                }
                Error::UnsupportedVersion { .. } => Ok(()),
                _ => Err(format!(
                    "refused with an error that is not about damage: {e}"
                )),
            }
        };

        for (check, mode) in [
            (DamageCheck::Open, RecoveryMode::TolerateTornTail),
            (DamageCheck::OpenPointInTime, RecoveryMode::PointInTime),
            (DamageCheck::OpenStrict, RecoveryMode::Strict),
        ] {
            let dir = scratch.fresh();
            image
                .write_to(&dir)
                .map_err(|e| fail(format!("cannot write the image: {e}")))?;
            report.opens += 1;
            let outcome = (|| -> std::result::Result<DamageOutcome, String> {
                let opts = self.opts.clone().recovery_mode(mode);
                // `inspect` must predict what this open does, damage and all, in every mode and
                // for every kind of damage (the CLI's `verify` and `repair` stand on it).
                let predicted = if self.check_inspection {
                    Some(super::inspect_unchanged(&dir)?)
                } else {
                    None
                };
                let mut opened = Journal::open_with(&dir, opts);
                if let Some(i) = &predicted {
                    match &mut opened {
                        Ok(j) => super::inspection_agrees(i, j, mode)
                            .map_err(|e| format!("{check:?}: {e}"))?,
                        Err(e) => {
                            let refusal = i
                                .problems
                                .iter()
                                .any(|p| p.outcome(mode) == &crate::inspect::Outcome::Refuses);
                            if !refusal {
                                return Err(format!(
                                    "{check:?}: the open refused ({e}), inspect predicted no \
                                     refusal: {:?}",
                                    i.problems
                                ));
                            }
                        }
                    }
                }
                let mut j = match opened {
                    Ok(j) => j,
                    Err(e) if mode == RecoveryMode::Strict => {
                        let in_dir = e.path().is_some_and(|p| p.starts_with(&dir));
                        if !in_dir
                            || !matches!(e, Error::Corruption(_) | Error::UnsupportedVersion { .. })
                        {
                            return Err(format!("{check:?}: refused with an unclear error: {e}"));
                        }
                        return Ok(DamageOutcome::Refused);
                    }
                    Err(e) => {
                        refused(&dir, &e, None)?;
                        return Ok(DamageOutcome::Refused);
                    }
                };
                // What the log recovered (a journal whose log recovered empty appends its Init
                // record: the state is still the one after LSN 0).
                let r = j.recovery_report().last_lsn.get();
                if r > point.last {
                    return Err(format!(
                        "recovered through LSN {r}, but only {} were appended",
                        point.last
                    ));
                }
                let expected = self
                    .state_at(r)
                    .ok_or_else(|| format!("no model state for LSN {r}"))?;
                let found = observe(&mut j).map_err(|e| format!("observe failed: {e}"))?;
                if &found != expected {
                    return Err(format!(
                        "{check:?}: recovered through LSN {r} a state that is not the model's there\n  expected: {expected:?}\n  found:    {found:?}\n  report: {}",
                        j.recovery()
                    ));
                }
                let rec = j.recovery();
                // What still proves durability after the damage: damage to a segment's frames
                // may have destroyed the sync markers that proved records durable (the
                // successor headers and the snapshots and manifests remain).
                let still_proven = if target.kind == DamagedFile::SegmentFrames {
                    base.proven_by_files.max(base.proven_by_headers)
                } else {
                    base.proven
                };
                if mode == RecoveryMode::Strict {
                    if !rec.log.cuts.is_empty() || !rec.log.discarded_segments.is_empty() {
                        return Err(format!(
                            "{check:?}: strict recovery cut or set aside: {rec}"
                        ));
                    }
                    if r < base.recovered {
                        if r >= still_proven {
                            return Ok(DamageOutcome::UnprovableWindow);
                        }
                        return Err(format!(
                            "{check:?}: records {}..={} lost silently (proven durable through LSN {still_proven}); report: {rec}",
                            r + 1,
                            base.recovered
                        ));
                    }
                }
                if r < base.recovered {
                    let lost = (r + 1, base.recovered);
                    let cut = rec.log.cuts.iter().find(|c| c.first_cut_lsn.get() == r + 1);
                    let Some(cut) = cut else {
                        if r >= still_proven {
                            return Ok(DamageOutcome::UnprovableWindow);
                        }
                        return Err(format!(
                            "{check:?}: records {}..={} lost silently (proven durable through LSN {still_proven}); report: {rec}",
                            lost.0, lost.1
                        ));
                    };
                    let claimed_end = cut
                        .lost_through
                        .map_or(cut.first_cut_lsn.get(), |l| l.get())
                        .max(cut.first_cut_lsn.get());
                    if claimed_end < lost.1.min(still_proven) {
                        return Err(format!(
                            "{check:?}: records {}..={} lost, the report states {}..={claimed_end}: {rec}",
                            lost.0, lost.1, lost.0
                        ));
                    }
                    if r < still_proven {
                        let durable_cut = matches!(cut.reason, CutReason::DurableDataDamaged(_));
                        if mode != RecoveryMode::PointInTime || !durable_cut {
                            return Err(format!(
                                "{check:?}: records {}..={} proven durable (through LSN {still_proven}) were cut as {:?}: {rec}",
                                lost.0, lost.1, cut.reason
                            ));
                        }
                    }
                    return Ok(DamageOutcome::ReportedLoss);
                }
                Ok(if !rec.fallbacks.is_empty() {
                    DamageOutcome::FellBack
                } else if !rec.damaged_manifests.is_empty() {
                    DamageOutcome::DamagedManifestReported
                } else if !rec.log.cuts.is_empty() || !rec.log.discarded_segments.is_empty() {
                    DamageOutcome::CutNoLoss
                } else {
                    DamageOutcome::NoEffect
                })
            })();
            let _ = fs::remove_dir_all(&dir);
            let outcome = outcome.map_err(&fail)?;
            // Damage to a file recovery must read whole is always detected.
            let undetected = outcome == DamageOutcome::NoEffect
                && matches!(
                    target.kind,
                    DamagedFile::LoadedSnapshot
                        | DamagedFile::Manifest
                        | DamagedFile::LogMeta
                        | DamagedFile::SegmentHeader
                );
            if undetected {
                return Err(fail(format!("{check:?}: the damage went unnoticed")));
            }
            *report
                .outcomes
                .entry((target.kind, check, outcome))
                .or_default() += 1;
        }

        for (name, _) in &image.files {
            let Some(id) = format::parse_manifest_file_name(name) else {
                continue;
            };
            let Some(&lsn) = self.checkpoints.get(&id) else {
                return Err(fail(format!(
                    "manifest {name} of a checkpoint the simulator never saw"
                )));
            };
            let damaged_manifest = *name == target.name;
            let check = if damaged_manifest {
                DamageCheck::RestoreDamagedManifest
            } else {
                DamageCheck::Restore
            };
            let dir = scratch.fresh();
            image
                .write_to(&dir)
                .map_err(|e| fail(format!("cannot write the image: {e}")))?;
            report.restores += 1;
            let outcome = (|| -> std::result::Result<DamageOutcome, String> {
                let mut j = match Journal::open_at_checkpoint(&dir, id, self.opts.clone()) {
                    Ok(j) => j,
                    Err(e) => {
                        refused(&dir, &e, Some(name))?;
                        return Ok(DamageOutcome::Refused);
                    }
                };
                if damaged_manifest {
                    return Err(format!(
                        "open_at_checkpoint({id}) used its damaged manifest"
                    ));
                }
                let r = j.log().last_lsn().get();
                if r != lsn {
                    return Err(format!(
                        "open_at_checkpoint({id}) ended at LSN {r}, not {lsn}"
                    ));
                }
                let expected = self
                    .state_at(lsn)
                    .ok_or_else(|| format!("no model state for LSN {lsn}"))?;
                let found = observe(&mut j).map_err(|e| format!("observe failed: {e}"))?;
                if &found != expected {
                    return Err(format!(
                        "open_at_checkpoint({id}) at LSN {lsn}\n  expected: {expected:?}\n  found:    {found:?}"
                    ));
                }
                let rec = j.recovery();
                Ok(if !rec.fallbacks.is_empty() {
                    DamageOutcome::FellBack
                } else if !rec.damaged_manifests.is_empty() {
                    DamageOutcome::DamagedManifestReported
                } else {
                    DamageOutcome::NoEffect
                })
            })();
            let _ = fs::remove_dir_all(&dir);
            let outcome = outcome.map_err(&fail)?;
            *report
                .outcomes
                .entry((target.kind, check, outcome))
                .or_default() += 1;
        }
        Ok(())
    }
}

/// The durable files of a base image, and how many of their bytes are durable.
fn targets(base: &Base) -> Vec<Target> {
    let mut v = Vec::new();
    for (name, bytes) in &base.image.files {
        let len = bytes.len();
        if format::parse_segment_file_name(name).is_some() {
            // The prefix a flush made durable (the header always is: it is fsynced before the
            // segment is renamed into place). Past the last non-zero byte nothing was written.
            let durable = base
                .durable
                .get(name)
                .copied()
                .unwrap_or(SEGMENT_HEADER_LEN)
                .min(len);
            v.push(Target {
                name: name.clone(),
                kind: DamagedFile::SegmentHeader,
                durable: SEGMENT_HEADER_LEN.min(len),
            });
            if durable > SEGMENT_HEADER_LEN {
                v.push(Target {
                    name: name.clone(),
                    kind: DamagedFile::SegmentFrames,
                    durable,
                });
            }
        } else if format::parse_snapshot_file_name(name).is_some() {
            let kind = if base.snapshot.as_deref() == Some(name.as_str()) {
                DamagedFile::LoadedSnapshot
            } else {
                DamagedFile::OtherSnapshot
            };
            v.push(Target {
                name: name.clone(),
                kind,
                durable: len,
            });
        } else if format::parse_manifest_file_name(name).is_some() {
            v.push(Target {
                name: name.clone(),
                kind: DamagedFile::Manifest,
                durable: len,
            });
        } else if name == format::META_FILE {
            v.push(Target {
                name: name.clone(),
                kind: DamagedFile::LogMeta,
                durable: len,
            });
        }
    }
    v.retain(|t| t.durable > 0);
    v
}

/// A target: a kind first (segment frames 8, loaded snapshot 4, segment header, other snapshot
/// and manifest 2 each, `log.meta` 1, among the kinds present), then a file of that kind.
fn pick_target<'t>(targets: &'t [Target], rng: &mut Rng) -> Option<&'t Target> {
    let weight = |k: DamagedFile| match k {
        DamagedFile::SegmentFrames => 8,
        DamagedFile::LoadedSnapshot => 4,
        DamagedFile::SegmentHeader | DamagedFile::OtherSnapshot | DamagedFile::Manifest => 2,
        DamagedFile::LogMeta => 1,
    };
    let mut kinds: Vec<DamagedFile> = targets.iter().map(|t| t.kind).collect();
    kinds.sort();
    kinds.dedup();
    let total: usize = kinds.iter().map(|&k| weight(k)).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.below(total);
    let kind = *kinds.iter().find(|&&k| {
        if x < weight(k) {
            true
        } else {
            x -= weight(k);
            false
        }
    })?;
    let of_kind: Vec<&Target> = targets.iter().filter(|t| t.kind == kind).collect();
    of_kind.get(rng.below(of_kind.len().max(1))).copied()
}

/// A flipped bit anywhere in the target's durable bytes (frames: past the header), or a zeroed
/// 4 KiB page (its part within them).
fn pick_damage(t: &Target, rng: &mut Rng) -> Damage {
    let lo = if t.kind == DamagedFile::SegmentFrames {
        SEGMENT_HEADER_LEN
    } else {
        0
    };
    if t.kind != DamagedFile::SegmentHeader && rng.below(4) == 0 {
        let page = rng.between(lo / PAGE, (t.durable - 1) / PAGE);
        let from = (page * PAGE).max(lo);
        let to = ((page + 1) * PAGE).min(t.durable);
        return Damage::ZeroedPage { from, to };
    }
    Damage::BitFlip {
        offset: rng.between(lo, t.durable - 1),
        bit: rng.below(8) as u8,
    }
}
