//! The log: an ordered chain of segments with LSN assignment, rolling, durability (group commit)
//! and recovery.
//!
//! ```text
//!  append ──► current segment (ArcSwap) ──try_append──► reserve (CAS) · copy · publish len
//!                  │ full
//!                  ▼
//!               roll (meta lock): seal · wait for writers · msync all · create next · update meta
//!
//!  commit/sync ──► group commit (dur lock + condvar): one leader flushes the published prefix,
//!                  followers wait; a sync marker records the previous durable LSN
//! ```
//!
//! Lock order: `meta` → `segments` → `dur`. The append path takes none of them unless it rolls.

mod maintenance;
mod options;
mod reader;
pub(crate) mod recovery;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use options::{Durability, LogOptions, RecoveryMode, DEFAULT_SEGMENT_SIZE};
pub use reader::{LogReader, Record};
#[cfg(feature = "remote")]
pub(crate) use recovery::random_log_id as random_id;
pub(crate) use recovery::remove_discard_intent;
pub(crate) use recovery::{meta_error, meta_error_supporting};
pub use recovery::{CutReason, InterruptedDiscard, RecoveryReport, TailCut};

use crate::codec::frame::{FrameKind, MAX_LSN};
use crate::codec::header::{SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::codec::meta::LogMeta;
use crate::error::{Error, Result};
use crate::format;
use crate::segment::{sync_dir, PooledSegment, PreparedSegment, Segment};

/// A log sequence number: the position of a data record in the log. The first record of a new
/// log has LSN 1; every record has the LSN of the one before plus one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest a group-commit leader waits for the committers the last flush released (a
/// yielding wait: on a disk whose flushes take milliseconds it must not spin that long).
const GATHER_MAX: Duration = Duration::from_micros(500);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure behind these mutexes is updated in single steps that leave it valid.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct DurState {
    /// Every data record with an LSN up to this is on stable storage.
    durable: u64,
    /// The watermark the last written sync marker carries.
    marked: u64,
    /// A leader is flushing; followers wait on the condvar.
    flushing: bool,
    /// Committers waiting on the condvar for the current flush.
    waiting: u32,
    /// Committers the last flush released (see [`Shared::gather`]).
    released: u32,
    /// How long the last flush took.
    last_flush: Duration,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// `Sync` mode writes the prefaulted window back ahead of the appenders (the option, or the
    /// file system's default: see [`LogOptions::convert_extents_ahead`]).
    convert_ahead: bool,
    opts: LogOptions,
    log_id: u64,
    current: ArcSwap<Segment>,
    /// Every live segment, oldest first; the last is `current`.
    segments: Mutex<Vec<Arc<Segment>>>,
    /// The meta file's content; its mutex serializes updates of the file (and deletions). An
    /// update fsyncs, so appenders never wait for this mutex: rolls take `rolling`.
    meta: Mutex<LogMeta>,
    /// Serializes rolls.
    rolling: Mutex<()>,
    /// Serializes `settle_creations`, whose list of segments holds references while it syncs:
    /// `delete_below` settles first, and must not find another settle still holding the
    /// segments it would keep for reuse.
    settling: Mutex<()>,
    dur: Mutex<DurState>,
    dur_cv: Condvar,
    poisoned: AtomicBool,
    poison: OnceLock<(PathBuf, Arc<io::Error>)>,
    /// The next segment, prepared by the background thread.
    prepared: Mutex<Option<PreparedSegment>>,
    /// Deleted segment files kept for reuse ([`LogOptions::recycle_segments`]), plus any a
    /// roll or the background thread prepared and did not need.
    pool: Mutex<Vec<PooledSegment>>,
    /// Wakes the background thread (never blocks: a full channel already means "wake up").
    wake: SyncSender<()>,
    /// Tells the background thread to exit.
    stop: AtomicBool,
    /// Held (flock) for the lifetime of the log (taken out only by [`Log::reopen`]).
    lock: Mutex<Option<File>>,
}

/// An append-only log of checksummed records in memory-mapped segment files.
///
/// `Log` is `Send + Sync`: share it (e.g. in an `Arc`) and append from many threads at once; the
/// copy into the mapping happens outside any lock.
///
/// ```
/// use statejournal::{Durability, Log, LogOptions, Lsn};
/// # fn main() -> Result<(), statejournal::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogOptions::default().durability(Durability::Sync))?;
/// let a = log.append(b"first")?;
/// let b = log.append(b"second")?;
/// assert_eq!(b, Lsn(a.get() + 1));
/// assert!(log.commit()? >= b); // durable now
/// drop(log);
///
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let payloads: Vec<_> = log.read_from(a).map(|r| r.map(|r| r.payload)).collect::<Result<_, _>>()?;
/// assert_eq!(payloads, [&b"first"[..], &b"second"[..]]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    report: RecoveryReport,
    background: Option<JoinHandle<()>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it as `opts.recovery_mode` says. The report
    /// of what recovery found and did is [`Log::recovery_report`].
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if opts.create_if_missing {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        }
        let lock_path = dir.join(format::LOCK_FILE);
        let lock_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: lock_path })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        Self::open_locked(dir, opts, lock_file)
    }

    /// Closes this log without flushing (it was just recovered, or everything is synced) and
    /// opens it again with `opts`, keeping the directory lock all along: no other process can
    /// change the directory in between. For a checkpoint restore, which verifies everything with
    /// the log as found and only then reopens it with [`LogOptions::discard_after`].
    pub(crate) fn reopen(mut self, opts: LogOptions) -> Result<Log> {
        opts.validate()?;
        self.stop_background();
        let dir = self.shared.dir.clone();
        let lock_file = lock(&self.shared.lock)
            .take()
            .ok_or_else(|| Error::io("reopen", &dir, io::Error::other("the log lock is gone")))?;
        drop(self);
        Self::open_locked(dir, opts, lock_file)
    }

    fn open_locked(dir: PathBuf, opts: LogOptions, lock_file: File) -> Result<Log> {
        let rec = recovery::recover(&dir, &opts)?;
        if let Some(tail) = rec.segments.last() {
            if opts.durability == Durability::Sync {
                tail.advise_small_flushes()
                    .map_err(|e| Error::io("madvise", tail.path(), e))?;
            }
            // Recovery synced the tail: its unwritten part is clean. Drop the large folios its
            // reads left there, or every flush after reopening writes whole folios.
            if !rec.report.created && !tail.header().recycled {
                tail.drop_clean_cache(tail.reserved_end());
            }
        }
        let current = rec.segments.last().cloned().ok_or_else(|| {
            Error::io(
                "recover",
                &dir,
                io::Error::other("recovery produced no segment"),
            )
        })?;
        let (wake_tx, wake_rx) = mpsc::sync_channel(1);
        let convert_ahead = opts.durability == Durability::Sync
            && opts
                .convert_ahead
                .unwrap_or_else(|| crate::segment::converts_extents_ahead_by_default(&dir));
        let shared = Arc::new(Shared {
            dir,
            convert_ahead,
            log_id: rec.meta.log_id,
            current: ArcSwap::new(current),
            segments: Mutex::new(rec.segments),
            meta: Mutex::new(rec.meta),
            rolling: Mutex::new(()),
            settling: Mutex::new(()),
            dur: Mutex::new(DurState {
                durable: rec.durable_lsn,
                marked: rec.watermark,
                flushing: false,
                waiting: 0,
                released: 0,
                last_flush: Duration::ZERO,
            }),
            dur_cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            poison: OnceLock::new(),
            prepared: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            wake: wake_tx,
            stop: AtomicBool::new(false),
            opts,
            lock: Mutex::new(Some(lock_file)),
        });
        let background = Some(maintenance::spawn(Arc::clone(&shared), wake_rx)?);
        Ok(Log {
            shared,
            report: rec.report,
            background,
        })
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends one record and returns its LSN. The record survives a process crash as soon as this
    /// returns; it survives a power loss once a flush covers it (see [`Durability`]).
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.shared.append(FrameKind::Data, payload).map(Lsn)
    }

    /// Makes records durable as the durability mode promises and returns the LSN through which the
    /// log is now durable against power loss. In [`Durability::Sync`] that includes every record
    /// appended before the call (concurrent callers share one flush); in the other modes this does
    /// not wait and returns what earlier flushes made durable.
    pub fn commit(&self) -> Result<Lsn> {
        self.shared.check_poison()?;
        match self.shared.opts.durability {
            Durability::Sync => self.sync(),
            Durability::Buffered | Durability::Periodic(_) => Ok(self.durable_lsn()),
        }
    }

    /// [`Log::commit`] for the records through `lsn` only: in [`Durability::Sync`] it waits until
    /// they are durable (flushing, or sharing a concurrent committer's flush, if needed); in the
    /// other modes it does not wait. Returns the LSN through which the log is durable. For a
    /// thread that appended under a lock and commits after releasing it: its flush merges with
    /// the other threads' (group commit), while [`Log::commit`] would also wait for records
    /// appended after its own. An `lsn` past the last record appended counts as the last
    /// record: the returned LSN says how far the log is durable.
    pub fn commit_through(&self, lsn: Lsn) -> Result<Lsn> {
        self.shared.check_poison()?;
        match self.shared.opts.durability {
            Durability::Sync => self.sync_to(lsn),
            Durability::Buffered | Durability::Periodic(_) => Ok(self.durable_lsn()),
        }
    }

    /// Flushes every record appended before the call to stable storage, whatever the durability
    /// mode, and returns the durable LSN.
    pub fn sync(&self) -> Result<Lsn> {
        let target = self.shared.current.load().last_reserved_lsn();
        self.shared.sync_to(target).map(Lsn)
    }

    /// Waits until `lsn` is durable, flushing if needed.
    pub fn sync_to(&self, lsn: Lsn) -> Result<Lsn> {
        let last = self.shared.current.load().last_reserved_lsn();
        self.shared.sync_to(lsn.0.min(last)).map(Lsn)
    }

    /// The LSN through which records are known to be on stable storage.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(lock(&self.shared.dur).durable)
    }

    /// Whether this log writes the pages ahead of its appenders back early to convert their
    /// extents: [`LogOptions::convert_extents_ahead`] as set, or as chosen for the directory's
    /// file system when it was left unset. Always false outside [`Durability::Sync`] mode.
    pub fn converts_extents_ahead(&self) -> bool {
        self.shared.convert_ahead
    }

    /// The LSN of the last record appended (0 if none yet).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.shared.current.load().last_reserved_lsn())
    }

    /// The LSN of the oldest record still in the log (segments below it were deleted).
    pub fn first_lsn(&self) -> Lsn {
        Lsn(lock(&self.shared.segments)
            .first()
            .map_or(1, |s| s.header().base_lsn))
    }

    /// The identity of the log (random, fixed when it was created; every segment carries it).
    pub fn id(&self) -> u64 {
        self.shared.log_id
    }

    /// Every live segment, oldest first (the last is being appended to).
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        lock(&self.shared.segments).clone()
    }

    /// What of each live segment is durable now, oldest first: its file name, the length of
    /// its prefix a flush made durable, and whether its directory entry is durable. Read for the
    /// crash simulator ([`crate::testing::CrashSimulator`]).
    #[cfg(feature = "testing")]
    pub(crate) fn durable_extents(&self) -> Vec<(String, u64, bool)> {
        lock(&self.shared.segments)
            .iter()
            .map(|s| {
                (
                    format::segment_file_name(s.id()),
                    s.synced_len() as u64,
                    s.creation_synced(),
                )
            })
            .collect()
    }

    /// The fault injector of the options it was opened with (tests only).
    #[cfg(feature = "testing")]
    pub(crate) fn faults(&self) -> Option<&std::sync::Arc<crate::testing::FaultInjector>> {
        self.shared.opts.faults.as_ref()
    }

    /// Reads the records with LSN ≥ `from`, in order, as zero-copy views of the mapping. The reader
    /// follows the log: after it has returned `None`, later calls return records appended since.
    pub fn read_from(&self, from: Lsn) -> LogReader {
        LogReader::new(Arc::clone(&self.shared), from.0)
    }

    /// Deletes whole segments all of whose records have LSNs below `lsn` (never the segment being
    /// appended to). Returns how many were deleted. Durable: the meta file moves first, so a crash
    /// in the middle leaves leftovers that the next open removes, never a hole.
    pub fn delete_below(&self, lsn: Lsn) -> Result<usize> {
        self.shared.check_poison()?;
        self.shared.delete_below(lsn.0)
    }

    /// A handle for appending from one thread without the per-record cost of finding the current
    /// segment (an atomic reference-count guard): it keeps the segment it last appended to until
    /// that one is full. Records and LSNs are exactly as from [`Log::append`], and any number of
    /// appenders and `append` callers may run at once; a thread that appends many records should
    /// use one.
    ///
    /// ```
    /// use statejournal::{Log, LogOptions, Lsn};
    /// # fn main() -> Result<(), statejournal::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// let mut appender = log.appender();
    /// let a = appender.append(b"first")?;
    /// assert_eq!(log.append(b"second")?, Lsn(a.get() + 1));
    /// assert_eq!(appender.append(b"third")?, Lsn(a.get() + 2));
    /// # Ok(()) }
    /// ```
    pub fn appender(&self) -> Appender<'_> {
        Appender {
            log: self,
            segment: None,
        }
    }

    /// [`Log::append`] through `cache`, the segment the caller appended to last (see
    /// [`Log::appender`]; the journal keeps its own).
    #[inline]
    pub(crate) fn append_cached(
        &self,
        cache: &mut Option<Arc<Segment>>,
        payload: &[u8],
    ) -> Result<Lsn> {
        self.shared
            .append_cached(cache, FrameKind::Data, payload)
            .map(Lsn)
    }

    /// Flushes everything and closes the log, reporting any failure (dropping a log does not flush
    /// in `Buffered` mode: the OS writes the pages back).
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.sync().map(|_| ())
    }

    fn stop_background(&mut self) {
        if let Some(handle) = self.background.take() {
            self.shared.stop.store(true, Ordering::Release);
            let _ = self.shared.wake.try_send(());
            let _ = handle.join();
            if let Some(prepared) = lock(&self.shared.prepared).take() {
                prepared.discard();
            }
            for pooled in lock(&self.shared.pool).drain(..) {
                pooled.discard();
            }
            // Nothing appends any more (appenders borrow the log): a recycled current
            // segment's unused zeros need not reach the disk.
            let current = self.shared.current.load_full();
            current.seal();
            current.release_unused_recycled();
        }
    }
}

/// Appends to a [`Log`] from one thread, keeping the current segment between appends (see
/// [`Log::appender`]).
#[derive(Debug)]
pub struct Appender<'a> {
    log: &'a Log,
    segment: Option<Arc<Segment>>,
}

impl Appender<'_> {
    /// [`Log::append`]: appends one record and returns its LSN.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn> {
        self.log.append_cached(&mut self.segment, payload)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // An `flock` belongs to the open file, not to our descriptor: a child this process forks
        // gets a copy of the descriptor, which keeps the file open until the child execs (or for
        // good, if it never does), and closing ours would leave the directory locked until
        // then. So the lock is released explicitly (`tests/lock_contention.rs`).
        if let Some(file) = self
            .lock
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = file.unlock();
        }
    }
}

impl Shared {
    /// Whether segments are advised for small exact flushes: only where every commit flushes.
    fn small_flushes(&self) -> bool {
        self.opts.durability == Durability::Sync
    }

    fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        Ok(())
    }

    fn poison_error(&self) -> Error {
        match self.poison.get() {
            Some((path, e)) => Error::Poisoned {
                path: path.clone(),
                source: Arc::clone(e),
            },
            None => Error::Poisoned {
                path: self.dir.clone(),
                source: Arc::new(io::Error::other("unknown")),
            },
        }
    }

    /// Records a failed flush: from now on every append and commit fails.
    /// Poisons the log for `e`, met on `path`, and returns the error callers then get.
    pub(super) fn poison(&self, path: &Path, e: io::Error) -> Error {
        let _ = self.poison.set((path.to_path_buf(), Arc::new(e)));
        self.poisoned.store(true, Ordering::Release);
        self.dur_cv.notify_all();
        self.poison_error()
    }

    fn flush_segment(&self, seg: &Segment, end: usize) -> Result<()> {
        #[cfg(feature = "testing")]
        if let Some(f) = &self.opts.faults {
            if let Err(e) = f.on_sync() {
                return Err(self.poison(seg.path(), e));
            }
        }
        seg.flush_to(end).map_err(|e| self.poison(seg.path(), e))
    }

    fn check_payload(&self, payload: &[u8]) -> Result<()> {
        let max = Segment::max_payload(self.opts.segment_size as usize);
        if payload.len() > max {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// After a successful append: lets the background thread prefault ahead when the frame
    /// crossed a chunk boundary. Never blocks.
    #[inline]
    fn appended(&self, a: &crate::segment::Appended) {
        if a.start / maintenance::CHUNK != a.end / maintenance::CHUNK {
            let _ = self.wake.try_send(());
        }
    }

    fn append(&self, kind: FrameKind, payload: &[u8]) -> Result<u64> {
        self.check_poison()?;
        self.check_payload(payload)?;
        loop {
            let seg = self.current.load();
            if let Some(a) = seg.try_append(kind, payload) {
                self.appended(&a);
                return Ok(a.lsn);
            }
            self.roll(&seg)?;
            self.check_poison()?;
        }
    }

    /// [`Shared::append`] through a segment the caller keeps between appends: no `ArcSwap`
    /// guard (two locked instructions) per record, only the reservation's. A cached segment that
    /// is no longer current is sealed (a roll seals before it switches), so `try_append` fails on
    /// it and the cache is refreshed: a record never lands in a stale segment.
    #[inline]
    fn append_cached(
        &self,
        cache: &mut Option<Arc<Segment>>,
        kind: FrameKind,
        payload: &[u8],
    ) -> Result<u64> {
        self.check_poison()?;
        self.check_payload(payload)?;
        loop {
            let seg = match cache {
                Some(seg) => seg,
                None => cache.insert(self.current.load_full()),
            };
            if let Some(a) = seg.try_append(kind, payload) {
                self.appended(&a);
                return Ok(a.lsn);
            }
            let current = self.current.load_full();
            if !Arc::ptr_eq(&current, seg) {
                *cache = Some(current);
                continue;
            }
            *cache = None;
            self.roll(&current)?;
            self.check_poison()?;
        }
    }

    /// Replaces the full segment `full` with a new one (unless another thread already did).
    ///
    /// In `Sync` mode the old segment is flushed completely first, and the new one is created
    /// durably, so the new segment's existence proves the old one durable (recovery's strongest
    /// evidence). In the other modes the roll does not wait for the disk at all: the new header
    /// says so (`predecessor_unsynced`), the old segment's pages are written back by the kernel
    /// and the background thread, the new segment's header and directory entry are made durable
    /// by the background thread or the next flush, whichever comes first (`settle_creations`),
    /// and the meta file is updated then. Until that has happened no record in the new segment is
    /// acknowledged, which is what lets recovery set aside a segment whose header a crash lost.
    fn roll(&self, full: &Arc<Segment>) -> Result<()> {
        let _rolling = lock(&self.rolling);
        if !Arc::ptr_eq(&self.current.load(), full) {
            return Ok(());
        }
        let sync_first = self.opts.durability == Durability::Sync;
        let end = full.seal();
        let prefix = full.wait_published(end);
        let (prev_last_lsn, prev_last_crc) = prefix
            .last_data
            .unwrap_or((full.header().prev_last_lsn, full.header().prev_last_crc));
        if sync_first {
            self.flush_segments(full, end)?;
            let mut d = lock(&self.dur);
            d.durable = d.durable.max(prev_last_lsn);
        }
        if prev_last_lsn >= MAX_LSN {
            return Err(Error::LsnExhausted { max: MAX_LSN });
        }
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            log_id: self.log_id,
            segment_id: full.id() + 1,
            base_lsn: prev_last_lsn + 1,
            prev_last_lsn,
            prev_last_crc,
            predecessor_unsynced: !sync_first,
            recycled: false,
        };
        #[cfg(feature = "testing")]
        if let Some(f) = &self.opts.faults {
            if let Err(e) = f.on_allocate() {
                let path = format::segment_path(&self.dir, header.segment_id);
                return Err(Error::NoSpace {
                    path,
                    len: self.opts.segment_size,
                    source: e,
                });
            }
        }
        // A prepared file for another id or size (the background thread can prepare one while a
        // roll is switching segments) is deleted, not just dropped: dropping it leaked its file.
        // A reused file can become any segment (its temporary name is its own).
        let prepared = match lock(&self.prepared).take() {
            Some(p)
                if (p.id() == header.segment_id || p.is_recycled())
                    && p.len() as u64 == self.opts.segment_size =>
            {
                Some(p)
            }
            Some(stale) => {
                self.return_to_pool(stale);
                None
            }
            None => None,
        };
        // Else a file kept for reuse, else a fresh file. Zeroing a kept file here (the
        // background thread had none ready) costs this append more than an `fallocate` would
        // (a fault and a memset per page, up front), but the appends into it then find their
        // pages ready instead of faulting fresh ones in themselves.
        let prepared = prepared.or_else(|| {
            self.take_pooled()
                .map(|pooled| PreparedSegment::recycle(pooled, header.segment_id))
        });
        let prepared = match prepared {
            Some(p) => p,
            None => PreparedSegment::prepare(
                &self.dir,
                header.segment_id,
                self.opts.segment_size,
                false,
                self.small_flushes(),
            )?,
        };
        let next = Arc::new(prepared.finalize(&self.dir, &header, sync_first)?);
        lock(&self.segments).push(Arc::clone(&next));
        self.current.store(next);
        if sync_first {
            self.record_last_segment(lock(&self.meta), header.segment_id)?;
        }
        // The background thread makes the new segment's creation durable off the append path
        // (in the other modes), and prefaults the new segment ahead of the appenders.
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Updates `last_segment` in the meta file (durably).
    fn record_last_segment(&self, mut meta: MutexGuard<'_, LogMeta>, id: u64) -> Result<()> {
        if meta.last_segment >= id {
            return Ok(());
        }
        let new_meta = LogMeta {
            last_segment: id,
            ..*meta
        };
        write_meta(&self.dir, &new_meta).map_err(|e| match e {
            // The new segment exists durably; recovery accepts it even if the meta update is lost.
            Error::Io { source, path, .. } => self.poison(&path, source),
            other => other,
        })?;
        *meta = new_meta;
        Ok(())
    }

    /// Makes the creation of segments that a roll did not wait for durable (their headers, then
    /// their directory entries), then records the newest in the meta file. Only the meta file
    /// update holds the meta mutex: appenders that roll meanwhile do not wait for these syncs.
    fn settle_creations(&self) -> Result<()> {
        let _settling = lock(&self.settling);
        let pending: Vec<Arc<Segment>> = lock(&self.segments)
            .iter()
            .filter(|s| !s.creation_synced())
            .cloned()
            .collect();
        let Some(newest) = pending.last().map(|s| s.id()) else {
            return Ok(());
        };
        for seg in pending
            .iter()
            .filter(|s| s.synced_len() < SEGMENT_HEADER_LEN)
        {
            // The header first: once the meta file names the segment, recovery treats a bad
            // header as damage to the log, not as a roll a crash interrupted.
            self.flush_segment(seg, SEGMENT_HEADER_LEN)?;
        }
        if let Err(e) = sync_dir(&self.dir) {
            return Err(match e {
                Error::Io { source, path, .. } => self.poison(&path, source),
                other => other,
            });
        }
        for seg in &pending {
            seg.mark_creation_synced();
        }
        self.record_last_segment(lock(&self.meta), newest)
    }

    /// Flushes every older segment not yet completely flushed (non-syncing rolls leave them
    /// behind), oldest first, then `upto` through byte `end`. Newer segments are left alone.
    fn flush_segments(&self, upto: &Arc<Segment>, end: usize) -> Result<()> {
        let unsynced: Vec<Arc<Segment>> = {
            let segs = lock(&self.segments);
            let first = segs
                .iter()
                .rposition(|s| s.fully_synced())
                .map_or(0, |i| i + 1);
            segs[first..].to_vec()
        };
        for seg in unsynced.iter().take_while(|s| s.id() <= upto.id()) {
            // Older segments are sealed and fully published (a roll waits for that).
            let seg_end = if seg.id() == upto.id() {
                end
            } else {
                seg.seal()
            };
            self.flush_segment(seg, seg_end)?;
        }
        Ok(())
    }

    /// Group commit: returns once every data record up to `target` is durable.
    fn sync_to(&self, target: u64) -> Result<u64> {
        let mut d = lock(&self.dur);
        loop {
            self.check_poison()?;
            if d.durable >= target {
                return Ok(d.durable);
            }
            if d.flushing {
                d.waiting += 1;
                d = self.dur_cv.wait(d).unwrap_or_else(PoisonError::into_inner);
                d.waiting -= 1;
                continue;
            }
            d.flushing = true;
            let mark = (d.durable > d.marked).then_some(d.durable);
            let (released, last_flush) = (d.released, d.last_flush);
            drop(d);
            self.gather(target, released, last_flush);
            let started = Instant::now();
            let result = self.flush_once(mark);
            d = lock(&self.dur);
            d.flushing = false;
            d.released = d.waiting;
            d.last_flush = started.elapsed();
            // Every waiter counts itself in `waiting` under this lock before it waits, so none
            // is missed; a lone committer then skips the wake-up (a futex syscall) per commit.
            if d.waiting > 0 {
                self.dur_cv.notify_all();
            }
            let (durable, marked) = result?;
            d.durable = d.durable.max(durable);
            if let Some(m) = marked {
                d.marked = d.marked.max(m);
            }
        }
    }

    /// Before a flush, lets the committers the previous flush released catch up: each of them
    /// returns, appends its next record and commits again, and on a machine with fewer cores
    /// than committers that takes them about as long as the flush itself. Without this wait the
    /// next flush starts at once and covers only the few that made it, and the rest wait for a
    /// flush of their own (16 committers got 3.3–3.9x one committer's commits/s on 2 cores,
    /// 4.7–5.1x with it). The leader yields until `released - 1` records past its own `target`
    /// are reserved, for at most half the last flush's duration and never more than
    /// [`GATHER_MAX`]: latency stays within 1.5 flushes, and a lone committer (or two taking
    /// turns) never waits. The same idea as MySQL's `binlog_group_commit_sync_no_delay_count`
    /// and PostgreSQL's `commit_delay`, bounded by the flush time it saves rather than by a
    /// setting.
    fn gather(&self, target: u64, released: u32, last_flush: Duration) {
        if released < 2 {
            return;
        }
        let want = target.saturating_add(u64::from(released) - 1);
        let deadline = Instant::now() + (last_flush / 2).min(GATHER_MAX);
        while self.current.load().last_reserved_lsn() < want && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// One flush by the group-commit leader. Returns the LSN now durable and the watermark of
    /// the sync marker written, if one was.
    fn flush_once(&self, mark: Option<u64>) -> Result<(u64, Option<u64>)> {
        let mut marked = None;
        if let Some(w) = mark {
            // The marker states what the *previous* flush made durable: a flush cannot attest to
            // its own completion. It rides along with this flush. It is evidence, not data: when
            // the current segment has no room it is left out rather than forcing a roll (which
            // could fail for want of space while the flush itself can succeed).
            if self
                .current
                .load()
                .try_append(FrameKind::SyncMarker, &w.to_le_bytes())
                .is_some()
            {
                marked = Some(w);
            }
        }
        let seg = self.current.load_full();
        let prefix = seg.published_prefix();
        // Segments a non-syncing roll left behind first, then the published prefix of `seg`.
        self.flush_segments(&seg, prefix.end)?;
        self.settle_creations()?;
        let durable = prefix
            .last_data
            .map_or(seg.header().prev_last_lsn, |(lsn, _)| lsn);
        Ok((durable, marked))
    }

    fn delete_below(&self, lsn: u64) -> Result<usize> {
        // Rolls in Buffered/Periodic mode record new segments in the meta file lazily; bring it
        // up to date first, or moving `first_segment` past a stale `last_segment` would write an
        // invalid meta file (a bug `tests/model.rs` found).
        self.settle_creations()?;
        let mut meta = lock(&self.meta);
        let doomed: Vec<Arc<Segment>> = {
            let segs = lock(&self.segments);
            segs.windows(2)
                .take_while(|w| w[1].header().base_lsn <= lsn)
                .map(|w| Arc::clone(&w[0]))
                .collect()
        };
        let Some(last_doomed) = doomed.last() else {
            return Ok(0);
        };
        // Every frame a doomed segment holds has an LSN below its successor's base.
        let stale_below = {
            let segs = lock(&self.segments);
            segs.iter()
                .find(|s| s.id() == last_doomed.id() + 1)
                .map_or(0, |s| s.header().base_lsn)
        };
        let new_meta = LogMeta {
            first_segment: last_doomed.id() + 1,
            ..*meta
        };
        write_meta(&self.dir, &new_meta)?;
        *meta = new_meta;
        lock(&self.segments).retain(|s| s.id() >= new_meta.first_segment);
        // The unlinks (which free whole extents, and take milliseconds each for full segments)
        // and the directory sync happen after the meta lock is released, so a meta file update
        // (a sync roll, a settled creation) does not wait for them. The doomed files are out of
        // the meta file and the segment list already: nothing else deletes or reads them by name.
        drop(meta);
        let count = doomed.len();
        // Newest first: the files most likely still in the page cache are the ones kept.
        for seg in doomed.into_iter().rev() {
            let seg = match self.try_pool(seg, stale_below) {
                Ok(()) => continue,
                Err(seg) => seg,
            };
            // Readers holding the segment keep the mapping; the file name goes now.
            std::fs::remove_file(seg.path()).map_err(|e| Error::io("remove", seg.path(), e))?;
        }
        sync_dir(&self.dir)?;
        Ok(count)
    }

    /// Keeps a segment that left the log for reuse, if recycling wants it (gives it back to be
    /// deleted otherwise). `stale_below` bounds the LSNs of every frame in it.
    ///
    /// A reused file's frames must all carry LSNs below the base of the segment it becomes, and
    /// its sync markers LSNs below that base minus one (recovery takes a frame of either kind
    /// with an LSN that low for an older segment's). Every LSN in it is below `stale_below`; the
    /// next segment's base is the last data LSN at its roll plus one, so requiring a data
    /// record at or past `stale_below` to exist already gives a margin of one. LSNs never
    /// decrease in a running log (a discard happens only at open, and the pool lives in memory).
    fn try_pool(
        &self,
        seg: Arc<Segment>,
        stale_below: u64,
    ) -> std::result::Result<(), Arc<Segment>> {
        let max = self.opts.recycled_files();
        if max == 0
            || stale_below == 0
            || self.current.load().last_reserved_lsn() < stale_below
            || lock(&self.pool).len() >= max
        {
            return Err(seg);
        }
        // The last reference: no reader, view, push or appender holds the segment, and none
        // can get it any more (it left the segment list; `current` never pointed to it since
        // its successor exists).
        let seg = Arc::try_unwrap(seg)?;
        let tmp = format::pooled_segment_path(&self.dir, seg.id());
        match seg.into_pooled(tmp, self.opts.segment_size) {
            Ok(pooled) => {
                let mut pool = lock(&self.pool);
                if pool.len() < max {
                    pool.push(pooled);
                } else {
                    pooled.discard();
                }
                Ok(())
            }
            // Not reusable (another link, another size, an I/O error): deleted instead.
            Err(refused) => Err(Arc::new(refused.0)),
        }
    }

    /// Puts a prepared file that was not used back into the pool if it is a reused one (of the
    /// configured size), deletes it otherwise.
    pub(super) fn return_to_pool(&self, prepared: PreparedSegment) {
        if prepared.len() as u64 != self.opts.segment_size {
            prepared.discard();
            return;
        }
        if let Some(pooled) = prepared.into_pooled() {
            lock(&self.pool).push(pooled);
        }
    }

    /// Whether a segment file is kept for reuse.
    pub(super) fn has_pooled(&self) -> bool {
        !lock(&self.pool).is_empty()
    }

    /// A kept segment file, if one is pooled.
    pub(super) fn take_pooled(&self) -> Option<PooledSegment> {
        let mut pool = lock(&self.pool);
        // The newest: the one most likely still in the page cache.
        let at = pool
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() as u64 == self.opts.segment_size)
            .max_by_key(|(_, p)| p.old_id())
            .map(|(i, _)| i)?;
        Some(pool.swap_remove(at))
    }
}

/// Replaces the meta file atomically and durably.
pub(crate) fn write_meta(dir: &Path, meta: &LogMeta) -> Result<()> {
    write_small_file(dir, format::META_FILE, &meta.encode()).map(drop)
}

/// Replaces `name` in `dir` atomically and durably: temporary, fsync, rename, directory fsync.
/// A failed write removes the temporary; a full disk is [`Error::NoSpace`].
pub(crate) fn write_small_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = format::tmp_path(dir, name);
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        std::fs::write(&tmp, bytes)?;
        File::open(&tmp)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::write_failed("write", &tmp, bytes.len() as u64, e));
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    Ok(path)
}
