//! The power-loss crash simulator: see [`CrashSimulator`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::format::{self, TMP_SUFFIX};

mod damage;
use crate::{Codec, Error, Journal, JournalOptions, Postcard, Result};
pub use damage::{DamageCheck, DamageOutcome, DamageReport, DamagedFile};

/// Size of the pages a torn write is made of (and of a zeroed page of durable data).
const PAGE: usize = 4096;
/// Size of the sectors a sub-page torn write is made of: a disk persists a page it was writing
/// back in sectors, any subset of them, not necessarily a prefix.
const SECTOR: usize = 512;

/// A small deterministic PRNG (SplitMix64): images are a function of the seed alone.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// What was durable about one file at a crash point.
#[derive(Debug, Clone)]
enum Durable {
    /// Complete and durable: renamed into place after an fsync, the directory synced.
    Whole,
    /// A log segment: `len` bytes are durable; `created` says whether its directory entry is.
    Segment { len: usize, created: bool },
    /// A temporary file (`*.tmp`): nothing about it is durable.
    Temporary,
}

#[derive(Debug, Clone)]
struct PointFile {
    name: String,
    bytes: Arc<Vec<u8>>,
    durable: Durable,
    /// The file's content at the previous crash point, if it existed then (for stale pages).
    previous: Option<Arc<Vec<u8>>>,
    /// A recycled segment: what the file held before the log reused it (its header zeroed, as
    /// the log zeroes it durably before reuse), which is on disk wherever its pages have not
    /// been written back since. `None` for a fresh segment (zeros there) or when the simulator
    /// never saw the file's earlier life.
    underneath: Option<Arc<Vec<u8>>>,
    /// One past the last non-zero byte.
    data_end: usize,
}

/// One recorded crash point.
#[derive(Debug, Clone)]
struct Point {
    /// Every data record up to this LSN was acknowledged as durable.
    acknowledged: u64,
    /// The last LSN appended.
    last: u64,
    files: Vec<PointFile>,
    /// Files deleted since the previous point, with their content then.
    deleted: Vec<(String, Arc<Vec<u8>>)>,
}

/// What one crash image did to one file (for failure messages).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Missing,
    /// A segment whose creation did not reach the disk while a later one's did.
    MissingOutOfOrder,
    CutAt(usize),
    GarbageFrom(usize, usize),
    /// A recycled segment's unwritten pages show what the file held before its reuse.
    OlderBytes,
    /// Torn at `unit`-byte granularity ([`PAGE`] or [`SECTOR`]): these units (by index in
    /// the file) zeroed, these restored to their content at the previous point.
    Torn {
        unit: usize,
        zeroed: Vec<usize>,
        stale: Vec<usize>,
    },
    TruncatedTo(usize),
    Resurrected,
    /// Durable bytes damaged (by [`CrashSimulator::check_damage`]).
    Damaged(String),
}

impl Change {
    /// The kind of change, for [`SimReport::changes`].
    fn kind(&self) -> &'static str {
        match self {
            Change::Missing => "file missing",
            Change::MissingOutOfOrder => "segment creation lost out of order",
            Change::CutAt(_) => "zeroed past the durable length",
            Change::GarbageFrom(..) => "garbage past the durable length",
            Change::OlderBytes => "a recycled segment's older bytes",
            Change::Torn { unit: PAGE, .. } => "torn in 4 KiB pages",
            Change::Torn { .. } => "torn in 512-byte sectors",
            Change::TruncatedTo(_) => "temporary file truncated",
            Change::Resurrected => "deleted file resurrected",
            Change::Damaged(_) => "durable bytes damaged",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Missing => write!(f, "missing"),
            Change::MissingOutOfOrder => write!(
                f,
                "missing (the creation of a later segment reached the disk, this one's did not)"
            ),
            Change::CutAt(o) => write!(f, "zeroed from byte {o}"),
            Change::GarbageFrom(a, b) => write!(f, "garbage in bytes {a}..{b}"),
            Change::OlderBytes => write!(
                f,
                "recycled: the bytes 'zeroed' are what the file held before its reuse"
            ),
            Change::Torn {
                unit,
                zeroed,
                stale,
            } => write!(
                f,
                "torn in {unit}-byte units: units {zeroed:?} zeroed, units {stale:?} stale"
            ),
            Change::TruncatedTo(n) => write!(f, "truncated to {n} bytes"),
            Change::Resurrected => write!(f, "resurrected (deleted since the previous point)"),
            Change::Damaged(d) => write!(f, "durable bytes damaged: {d}"),
        }
    }
}

/// A crash image: the files of the directory after a simulated power loss, and how they were made.
struct Image {
    files: Vec<(String, Arc<Vec<u8>>)>,
    changes: Vec<(String, Change)>,
}

impl Image {
    fn recipe(&self) -> String {
        if self.changes.is_empty() {
            return "every file as it was (nothing lost)".into();
        }
        let mut s = String::new();
        for (i, (name, c)) in self.changes.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            let _ = write!(s, "{name}: {c}");
        }
        s
    }

    fn hash(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (name, bytes) in &self.files {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.digest128()
    }

    fn write_to(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        for (name, bytes) in &self.files {
            fs::write(dir.join(name), bytes.as_slice())?;
        }
        Ok(())
    }
}

/// What [`CrashSimulator::check`] explored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Crash points recorded.
    pub points: usize,
    /// Distinct crash images built and checked.
    pub images: usize,
    /// Images skipped because an identical one was already checked.
    pub duplicates: usize,
    /// Journals opened with [`Journal::open`] (one per image).
    pub opens: usize,
    /// Journals opened with [`Journal::open_at_checkpoint`] (one per manifest in each image).
    pub restores: usize,
    /// Distinct images checked, by kind of change they contain (an image can count under
    /// several kinds).
    pub changes: BTreeMap<&'static str, usize>,
}

/// A crash image that recovered wrongly (or a failure of the simulator itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The crash point (0-based, in recording order).
    pub point: usize,
    /// How the image was built from the files at that point.
    pub recipe: String,
    /// What went wrong: expected against found.
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash point {}: {}\n  image: {}",
            self.point, self.message, self.recipe
        )
    }
}

impl std::error::Error for SimFailure {}

/// Simulated power loss for a workload of one's own: records crash points while the workload
/// runs, then builds crash images from them and checks that recovering each gives exactly the
/// model's state at the recovered LSN, with nothing acknowledged lost.
///
/// * `S` is the workload's model of the state (anything comparable; often a `BTreeMap`).
/// * The workload mutates the journal ([`journal`](Self::journal)) and after each mutation
///   reports the model's state ([`mutated`](Self::mutated)); the simulator maps the journal's
///   last LSN to it. After `commit()`, `sync()` or `checkpoint()` returned `Ok` it calls
///   [`acknowledged`](Self::acknowledged).
/// * [`crash_point`](Self::crash_point) copies the directory and records what of it is durable:
///   each segment's flushed length and whether its directory entry was synced; files renamed into
///   place (snapshots, manifests, `log.meta`) are durable; `*.tmp` files are not; files deleted
///   since the previous point may come back. Call it between operations, when no compaction is
///   running (after [`Journal::compact`], [`Journal::wait_for_compaction`], or with
///   [`CompactionPolicy::manual`](crate::CompactionPolicy::manual)).
/// * [`check`](Self::check) builds crash images from every point (each changes only what was not
///   durable there), opens each with [`Journal::open`] and every manifest in it with
///   [`Journal::open_at_checkpoint`], reads the state back with the caller's `observe`, and
///   compares.
///
/// ```
/// use statejournal::testing::CrashSimulator;
/// use statejournal::{Durability, JournalOptions};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let opts = JournalOptions::default().durability(Durability::Sync).segment_size(8192);
/// let mut sim = CrashSimulator::new(dir.path(), opts, Vec::<u32>::new())?;
/// let mut model = Vec::new();
/// for i in 0..20u32 {
///     let j = sim.journal();
///     let s = j.list_state::<u8, u32>("items")?;
///     s.add(j, &0, &i)?;
///     model.push(i);
///     sim.mutated(model.clone());
///     if i % 3 == 0 {
///         sim.journal().commit()?;
///         sim.acknowledged();
///     }
///     sim.crash_point()?;
/// }
/// let report = sim.check(4, 7, |j| {
///     let s = j.list_state::<u8, u32>("items")?;
///     Ok(s.get(j, &0)?)
/// })?;
/// assert!(report.images > 20);
/// # Ok(()) }
/// ```
pub struct CrashSimulator<S, C: Codec + Clone = Postcard> {
    dir: PathBuf,
    opts: JournalOptions<C>,
    journal: Journal<C>,
    /// The model state after the record with each LSN (the greatest key ≤ an LSN gives the state
    /// after it).
    states: BTreeMap<u64, S>,
    acknowledged: u64,
    points: Vec<Point>,
    /// Every checkpoint seen, id → LSN.
    checkpoints: BTreeMap<u64, u64>,
    scratch: Option<PathBuf>,
    /// Also check [`crate::inspect`]'s view of every image against what opening it does.
    check_inspection: bool,
    /// Each file (by inode) as last seen: its name and content.
    by_inode: std::collections::HashMap<u64, (String, Arc<Vec<u8>>)>,
    /// A recycled segment's content before its reuse, by name and inode.
    underneath: std::collections::HashMap<(String, u64), Arc<Vec<u8>>>,
}

impl<S, C: Codec + Clone> Debug for CrashSimulator<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashSimulator")
            .field("dir", &self.dir)
            .field("points", &self.points.len())
            .field("acknowledged", &self.acknowledged)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + PartialEq + Debug> CrashSimulator<S, Postcard> {
    /// Opens (or creates) the journal in `dir`, whose state `initial` models.
    pub fn new(dir: &Path, opts: JournalOptions<Postcard>, initial: S) -> Result<Self> {
        Self::with_codec(dir, opts, initial)
    }
}

impl<S: Clone + PartialEq + Debug, C: Codec + Clone> CrashSimulator<S, C> {
    /// [`CrashSimulator::new`] with any codec.
    pub fn with_codec(dir: &Path, opts: JournalOptions<C>, initial: S) -> Result<Self> {
        let journal = Journal::open_with(dir, opts.clone())?;
        let mut states = BTreeMap::new();
        states.insert(0, initial.clone());
        states.insert(journal.log().last_lsn().get(), initial);
        let acknowledged = journal.log().durable_lsn().get();
        Ok(CrashSimulator {
            dir: dir.to_path_buf(),
            opts,
            journal,
            states,
            acknowledged,
            points: Vec::new(),
            checkpoints: BTreeMap::new(),
            scratch: None,
            check_inspection: false,
            by_inode: std::collections::HashMap::new(),
            underneath: std::collections::HashMap::new(),
        })
    }

    /// Where crash images are written while they are checked (default: a fresh directory under
    /// [`std::env::temp_dir`]; a tmpfs such as `/dev/shm` is much faster). Each image's directory
    /// is removed once checked.
    pub fn scratch_dir(mut self, dir: &Path) -> Self {
        self.scratch = Some(dir.to_path_buf());
        self
    }

    /// Also check, on every crash image, that the read-only [`crate::inspect::inspect`] (what
    /// `statejournal verify` and `repair` report) changes nothing and predicts what opening the
    /// image then does: that it opens, where the log is cut and why, where it ends, and the
    /// number of live entries.
    pub fn check_inspection(mut self, yes: bool) -> Self {
        self.check_inspection = yes;
        self
    }

    /// The journal the workload runs against.
    pub fn journal(&mut self) -> &mut Journal<C> {
        &mut self.journal
    }

    /// Reports the model's state after a mutation: it is the state after the journal's last
    /// record. (Records that change no state, like registrations, need no call.)
    pub fn mutated(&mut self, state: S) {
        let lsn = self.journal.log().last_lsn().get();
        self.states.insert(lsn, state);
    }

    /// Reports that `commit()`, `sync()` or `checkpoint()` returned `Ok`: every record up to the
    /// journal's durable LSN is acknowledged and must survive every crash from now on.
    pub fn acknowledged(&mut self) {
        self.acknowledged = self
            .acknowledged
            .max(self.journal.log().durable_lsn().get());
    }

    /// The number of crash points recorded.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Records a crash point: a copy of the directory as it is now, and what of it is durable.
    pub fn crash_point(&mut self) -> Result<()> {
        // Durability only grows: read it before and after the copy, and copy again if a
        // background step (a directory sync in Buffered mode) changed it meanwhile, so that the
        // copy never holds more durable state than the extents say.
        let (extents, files) = loop {
            let before = self.journal.log.durable_extents();
            let files = self.copy_dir()?;
            if self.journal.log.durable_extents() == before {
                break (before, files);
            }
        };
        for info in self.journal.checkpoints() {
            self.checkpoints.insert(info.id, info.lsn.get());
        }
        let previous = self.points.last();
        let mut point_files = Vec::with_capacity(files.len());
        for (name, bytes, ino) in files {
            let prev = previous.and_then(|p| p.files.iter().find(|f| f.name == name));
            // Share unchanged contents with the previous point.
            let bytes = match prev {
                Some(p) if *p.bytes == bytes => Arc::clone(&p.bytes),
                _ => Arc::new(bytes),
            };
            let durable = if name.ends_with(TMP_SUFFIX) {
                Durable::Temporary
            } else if let Some((_, len, created)) = extents.iter().find(|e| e.0 == name) {
                Durable::Segment {
                    len: *len as usize,
                    created: *created,
                }
            } else {
                Durable::Whole
            };
            let mut data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            let recycled = matches!(durable, Durable::Segment { .. })
                && crate::codec::header::SegmentHeader::decode(&bytes).is_ok_and(|h| h.recycled);
            let underneath = if recycled {
                let key = (name.clone(), ino);
                if !self.underneath.contains_key(&key) {
                    if let Some((_, old)) = self
                        .by_inode
                        .get(&ino)
                        .filter(|(old_name, _)| *old_name != name)
                    {
                        let mut old = old.to_vec();
                        let head = old.len().min(crate::codec::header::SEGMENT_HEADER_LEN);
                        old[..head].fill(0);
                        self.underneath.insert(key.clone(), Arc::new(old));
                    }
                }
                // Every unwritten page may show older bytes, not only those up to the data.
                data_end = bytes.len();
                self.underneath.get(&key).cloned()
            } else {
                None
            };
            self.by_inode
                .insert(ino, (name.clone(), Arc::clone(&bytes)));
            point_files.push(PointFile {
                name,
                previous: prev.map(|p| Arc::clone(&p.bytes)),
                bytes,
                durable,
                data_end,
                underneath,
            });
        }
        // Manifests are not among them: retention makes a manifest's unlink durable before it
        // moves on (deletes the files only that checkpoint needed, updates the log's meta file),
        // so a manifest can come back only together with the state from before all of that —
        // which the previous point's images cover.
        let deleted = previous.map_or_else(Vec::new, |p| {
            p.files
                .iter()
                .filter(|f| !point_files.iter().any(|g| g.name == f.name))
                .filter(|f| format::parse_manifest_file_name(&f.name).is_none())
                .map(|f| (f.name.clone(), Arc::clone(&f.bytes)))
                .collect()
        });
        self.points.push(Point {
            acknowledged: self.acknowledged,
            last: self.journal.log().last_lsn().get(),
            files: point_files,
            deleted,
        });
        Ok(())
    }

    /// Every file of the directory but the lock: name, content and inode number.
    fn copy_dir(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read_dir", &self.dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read_dir", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == format::LOCK_FILE {
                continue;
            }
            let path = entry.path();
            let read = fs::File::open(&path).and_then(|mut f| {
                let ino = std::os::unix::fs::MetadataExt::ino(&f.metadata()?);
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut f, &mut bytes)?;
                Ok((bytes, ino))
            });
            match read {
                Ok((bytes, ino)) => files.push((name, bytes, ino)),
                // Gone since the listing (a temporary file renamed or removed): not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// The model state after the record `lsn`.
    fn state_at(&self, lsn: u64) -> Option<&S> {
        self.states.range(..=lsn).next_back().map(|(_, s)| s)
    }

    /// Builds `images_per_point` crash images from every recorded point (the first two of each
    /// point: every file as copied, and everything not durable lost; the rest random, from
    /// `seed`), and checks each:
    ///
    /// * [`Journal::open`] succeeds, recovers through an LSN `r` at or past the LSN acknowledged
    ///   at the point (and not past the last appended), and `observe` reads exactly the model's
    ///   state after `r`;
    /// * for every manifest in the image, [`Journal::open_at_checkpoint`] (on a fresh copy of the
    ///   image) succeeds, ends exactly at the checkpoint's LSN, and `observe` reads the model's
    ///   state there.
    ///
    /// Identical images are checked once. Stops at the first violation.
    pub fn check(
        &mut self,
        images_per_point: usize,
        seed: u64,
        mut observe: impl FnMut(&mut Journal<C>) -> Result<S>,
    ) -> std::result::Result<SimReport, SimFailure> {
        let scratch = ScratchDir::new(self.scratch.as_deref()).map_err(|e| SimFailure {
            point: 0,
            recipe: String::new(),
            message: format!("cannot create a scratch directory: {e}"),
        })?;
        let mut report = SimReport {
            points: self.points.len(),
            ..SimReport::default()
        };
        let mut seen = HashSet::new();
        for (index, point) in self.points.iter().enumerate() {
            for n in 0..images_per_point {
                let mut rng = Rng::new(
                    seed ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f)
                        ^ (n as u64).wrapping_mul(0xe703_7ed1_a0b4_28db),
                );
                let image = build_image(point, n, &mut rng);
                if !seen.insert(image.hash()) {
                    report.duplicates += 1;
                    continue;
                }
                report.images += 1;
                let kinds: std::collections::BTreeSet<&'static str> =
                    image.changes.iter().map(|(_, c)| c.kind()).collect();
                for k in kinds {
                    *report.changes.entry(k).or_default() += 1;
                }
                self.check_image(&scratch, index, point, &image, &mut observe, &mut report)?;
            }
        }
        Ok(report)
    }

    fn check_image(
        &self,
        scratch: &ScratchDir,
        index: usize,
        point: &Point,
        image: &Image,
        observe: &mut impl FnMut(&mut Journal<C>) -> Result<S>,
        report: &mut SimReport,
    ) -> std::result::Result<(), SimFailure> {
        let fail = |message: String| SimFailure {
            point: index,
            recipe: image.recipe(),
            message,
        };
        let dir = scratch.fresh();
        image
            .write_to(&dir)
            .map_err(|e| fail(format!("cannot write the image: {e}")))?;
        report.opens += 1;
        let outcome = (|| {
            let predicted = if self.check_inspection {
                Some(inspect_unchanged(&dir)?)
            } else {
                None
            };
            let mut j = Journal::open_with(&dir, self.opts.clone())
                .map_err(|e| format!("open failed: {e}"))?;
            if let Some(i) = &predicted {
                inspection_agrees(i, &mut j, self.opts.recovery_mode_of())?;
            }
            let r = j.log().last_lsn().get();
            if r < point.acknowledged {
                return Err(format!(
                    "open recovered through LSN {r}, but LSN {} was acknowledged",
                    point.acknowledged
                ));
            }
            if r > point.last {
                return Err(format!(
                    "open recovered through LSN {r}, but only {} records were appended",
                    point.last
                ));
            }
            let expected = self
                .state_at(r)
                .ok_or_else(|| format!("no model state for LSN {r}"))?;
            let found = observe(&mut j).map_err(|e| format!("observe failed after open: {e}"))?;
            if &found != expected {
                return Err(format!(
                    "open recovered through LSN {r} (acknowledged {}, appended {})\n  expected: {expected:?}\n  found:    {found:?}",
                    point.acknowledged, point.last
                ));
            }
            Ok(())
        })();
        let _ = fs::remove_dir_all(&dir);
        outcome.map_err(fail)?;
        for (name, _) in &image.files {
            let Some(id) = format::parse_manifest_file_name(name) else {
                continue;
            };
            let lsn = *self.checkpoints.get(&id).ok_or_else(|| {
                fail(format!(
                    "manifest {name} of a checkpoint the simulator never saw"
                ))
            })?;
            let dir = scratch.fresh();
            image
                .write_to(&dir)
                .map_err(|e| fail(format!("cannot write the image: {e}")))?;
            report.restores += 1;
            let outcome = (|| {
                let mut j = Journal::open_at_checkpoint(&dir, id, self.opts.clone())
                    .map_err(|e| format!("open_at_checkpoint({id}) failed: {e}"))?;
                let r = j.log().last_lsn().get();
                if r != lsn {
                    return Err(format!(
                        "open_at_checkpoint({id}) ended at LSN {r}, but the checkpoint is at LSN {lsn}"
                    ));
                }
                let expected = self
                    .state_at(lsn)
                    .ok_or_else(|| format!("no model state for LSN {lsn}"))?;
                let found = observe(&mut j)
                    .map_err(|e| format!("observe failed after open_at_checkpoint({id}): {e}"))?;
                if &found != expected {
                    return Err(format!(
                        "open_at_checkpoint({id}) at LSN {lsn}\n  expected: {expected:?}\n  found:    {found:?}"
                    ));
                }
                Ok(())
            })();
            let _ = fs::remove_dir_all(&dir);
            outcome.map_err(fail)?;
        }
        Ok(())
    }
}

/// Every file of a directory and its bytes.
fn dir_contents(dir: &Path) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        let bytes =
            fs::read(e.path()).map_err(|err| format!("reading {}: {err}", e.path().display()))?;
        out.insert(e.file_name().to_string_lossy().into_owned(), bytes);
    }
    Ok(out)
}

/// Inspects `dir` and checks that inspecting changed nothing.
pub(super) fn inspect_unchanged(
    dir: &Path,
) -> std::result::Result<crate::inspect::Inspection, String> {
    let before = dir_contents(dir)?;
    let i = crate::inspect::inspect(dir, crate::inspect::InspectOptions::default())
        .map_err(|e| format!("inspect failed: {e}"))?;
    if dir_contents(dir)? != before {
        return Err("inspect changed the directory".into());
    }
    Ok(i)
}

/// Checks what `inspect` predicted against what opening the same image did.
pub(super) fn inspection_agrees<C: Codec>(
    i: &crate::inspect::Inspection,
    j: &mut Journal<C>,
    mode: crate::RecoveryMode,
) -> std::result::Result<(), String> {
    use crate::inspect::{Outcome, ProblemKind};
    use crate::CutReason;
    let rec = j.recovery();
    if let Some(p) = i
        .problems
        .iter()
        .find(|p| p.outcome(mode) == &Outcome::Refuses)
    {
        return Err(format!(
            "inspect predicted a refusal ({p}), but the open succeeded"
        ));
    }
    // Every cut of the log: predicted at the same file and offset, for the same reason.
    let log_kinds = [
        ProblemKind::TornTail,
        ProblemKind::DamagedDurableData,
        ProblemKind::Debris,
    ];
    let mut predicted: Vec<(PathBuf, u64, bool)> = i
        .problems
        .iter()
        .filter(|p| log_kinds.contains(&p.kind))
        .map(|p| (p.path.clone(), p.offset, p.kind == ProblemKind::Debris))
        .collect();
    let mut actual: Vec<(PathBuf, u64, bool)> = rec
        .log
        .cuts
        .iter()
        .filter(|c| !matches!(c.reason, CutReason::Discarded { .. }))
        .map(|c| {
            let debris = matches!(c.reason, CutReason::DebrisAfterCompleteSegment);
            (c.path.clone(), c.offset, debris)
        })
        .collect();
    predicted.sort();
    actual.sort();
    if predicted != actual {
        return Err(format!(
            "inspect predicted log cuts {predicted:?}, the open made {actual:?} ({})",
            rec.log
        ));
    }
    // Opening a journal with neither a snapshot nor a record appends its `Init` record.
    let init = u64::from(i.log.records == 0 && i.usable_snapshot().is_none());
    if i.discard_after.is_none() && j.log().last_lsn().get() != i.log.last_lsn.get() + init {
        return Err(format!(
            "inspect said the log ends at LSN {}, the open ended it at {}",
            i.log.last_lsn,
            j.log().last_lsn()
        ));
    }
    if i.discard_after.is_none() && rec.fallbacks.is_empty() {
        if let Some(st) = &i.state {
            let entries: u64 = st.states.iter().map(|s| s.entries).sum();
            let held = j.state_stats().map_err(|e| e.to_string())?.entries;
            if entries != held {
                return Err(format!(
                    "inspect counted {entries} live entries, the open holds {held}"
                ));
            }
        } else if let Some(e) = &i.state_error {
            return Err(format!(
                "inspect could not rebuild the state ({e}), the open could"
            ));
        }
    }
    Ok(())
}

/// Builds image `n` of a point. Image 0 keeps every file as copied (a process crash); image 1
/// loses everything not durable; the others vary at random what was not durable.
fn build_image(point: &Point, n: usize, rng: &mut Rng) -> Image {
    let mut files = Vec::with_capacity(point.files.len());
    let mut changes = Vec::new();
    // Directory entries of segments not yet synced: any subset of them may be missing. Renames
    // that no directory sync covered reach the disk in whatever order the file system commits
    // them: on ext4 and XFS in order (a suffix goes missing), but nothing in POSIX promises that,
    // so arbitrary subsets are explored too (recovery sets aside the segments after a gap).
    let fresh: Vec<&str> = point
        .files
        .iter()
        .filter(|f| matches!(f.durable, Durable::Segment { created: false, .. }))
        .map(|f| f.name.as_str())
        .collect();
    let missing: Vec<&str> = match n {
        0 => Vec::new(),
        1 => fresh.clone(),
        _ if fresh.is_empty() || rng.chance(2) => Vec::new(),
        _ if rng.chance(2) => fresh[rng.below(fresh.len())..].to_vec(),
        _ => fresh.iter().copied().filter(|_| rng.chance(2)).collect(),
    };
    for f in &point.files {
        match &f.durable {
            Durable::Whole => files.push((f.name.clone(), Arc::clone(&f.bytes))),
            Durable::Temporary => {
                let choice = match n {
                    0 => 0,
                    1 => 2,
                    _ => rng.below(3),
                };
                match choice {
                    0 => files.push((f.name.clone(), Arc::clone(&f.bytes))),
                    1 => {
                        let len = rng.between(0, f.bytes.len());
                        files.push((f.name.clone(), Arc::new(f.bytes[..len].to_vec())));
                        changes.push((f.name.clone(), Change::TruncatedTo(len)));
                    }
                    _ => changes.push((f.name.clone(), Change::Missing)),
                }
            }
            Durable::Segment { len, .. } => {
                if missing.contains(&f.name.as_str()) {
                    let later_kept = fresh
                        .iter()
                        .any(|g| *g > f.name.as_str() && !missing.contains(g));
                    let change = if later_kept {
                        Change::MissingOutOfOrder
                    } else {
                        Change::Missing
                    };
                    changes.push((f.name.clone(), change));
                    continue;
                }
                let durable = (*len).min(f.bytes.len());
                if f.data_end <= durable || n == 0 {
                    files.push((f.name.clone(), Arc::clone(&f.bytes)));
                    continue;
                }
                let choice = if n == 1 { 1 } else { rng.below(7) };
                let (bytes, change) = damage_segment(f, durable, choice, rng);
                files.push((f.name.clone(), Arc::new(bytes)));
                if let Some(c) = change {
                    let unwritten = match &c {
                        Change::CutAt(_) => true,
                        Change::Torn { zeroed, .. } => !zeroed.is_empty(),
                        _ => false,
                    };
                    if f.underneath.is_some() && unwritten {
                        changes.push((f.name.clone(), Change::OlderBytes));
                    }
                    changes.push((f.name.clone(), c));
                }
            }
        }
    }
    // Files deleted since the previous point may come back (any subset: unlinks a single
    // directory sync makes durable reach the disk in any order).
    if n >= 2 && !point.deleted.is_empty() && rng.chance(2) {
        for (name, bytes) in &point.deleted {
            if rng.chance(2) && !files.iter().any(|(n, _)| n == name) {
                files.push((name.clone(), Arc::clone(bytes)));
                changes.push((name.clone(), Change::Resurrected));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Image { files, changes }
}

/// Changes the bytes of a segment past its durable length `durable` (and up to the end of its
/// data, or a little past it for garbage): 0 keeps them, 1 zeroes them from an offset (1: from
/// the durable length), 2 writes garbage from an offset, 3 and 4 tear the pages (each kept,
/// zeroed, or — with 4, where the file existed at the previous point — its content then), 5 and
/// 6 the same in 512-byte sectors (a page written back partially: some sectors new, some old or
/// zero, in any pattern, not only a prefix).
fn damage_segment(
    f: &PointFile,
    durable: usize,
    choice: usize,
    rng: &mut Rng,
) -> (Vec<u8>, Option<Change>) {
    let mut bytes = f.bytes.to_vec();
    let len = bytes.len();
    let end = f.data_end;
    match choice {
        0 => (bytes, None),
        1 => {
            let at = if rng.chance(4) {
                durable
            } else {
                rng.between(durable, end)
            };
            unwritten(&mut bytes, at, len, f.underneath.as_deref());
            (bytes, Some(Change::CutAt(at)))
        }
        2 => {
            let from = rng.between(durable, end);
            let to = rng
                .between(from + 1, (end + 64).min(len).max(from + 1))
                .min(len);
            for b in &mut bytes[from..to] {
                *b = rng.next() as u8;
            }
            (bytes, Some(Change::GarbageFrom(from, to)))
        }
        _ => {
            let unit = if choice <= 4 { PAGE } else { SECTOR };
            let stale = if choice == 4 || choice == 6 {
                f.previous.as_ref()
            } else {
                None
            };
            let mut zeroed = Vec::new();
            let mut staled = Vec::new();
            for u in durable / unit..end.div_ceil(unit) {
                let lo = (u * unit).max(durable);
                let hi = ((u + 1) * unit).min(len);
                match rng.below(3) {
                    0 => {}
                    1 => {
                        unwritten(&mut bytes, lo, hi, f.underneath.as_deref());
                        zeroed.push(u);
                    }
                    _ => {
                        if let Some(old) = stale {
                            for (i, b) in bytes[lo..hi].iter_mut().enumerate() {
                                *b = old.get(lo + i).copied().unwrap_or(0);
                            }
                            staled.push(u);
                        }
                    }
                }
            }
            if zeroed.is_empty() && staled.is_empty() {
                (bytes, None)
            } else {
                (
                    bytes,
                    Some(Change::Torn {
                        unit,
                        zeroed,
                        stale: staled,
                    }),
                )
            }
        }
    }
}

/// Makes `bytes[from..to]` read as never written back: zeros in a fresh segment, the file's
/// bytes from before its reuse in a recycled one.
fn unwritten(bytes: &mut [u8], from: usize, to: usize, underneath: Option<&Vec<u8>>) {
    for (i, b) in bytes[from..to].iter_mut().enumerate() {
        *b = underneath
            .and_then(|u| u.get(from + i))
            .copied()
            .unwrap_or(0);
    }
}

/// A directory for crash images, removed on drop.
struct ScratchDir {
    root: PathBuf,
    next: AtomicU64,
}

impl ScratchDir {
    fn new(base: Option<&Path>) -> io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let root = base.join(format!("statejournal-crashsim-{}-{n}", std::process::id()));
            match fs::create_dir(&root) {
                Ok(()) => {
                    return Ok(ScratchDir {
                        root,
                        next: AtomicU64::new(0),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fresh(&self) -> PathBuf {
        self.root
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
