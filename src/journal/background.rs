//! The compaction thread and the policy that starts it.
//!
//! The owner never waits for a compaction: it sends a request over a channel and goes on. The
//! thread makes the log durable through some LSN `m` (a flush it shares with any committer), then
//! merges the newest snapshot with the records up to `m` from the files alone, publishes the new
//! snapshot and lets the [`Catalog`] delete what nothing needs any more. Only the catalog mutex is
//! shared with the owner, and the owner takes it only in `checkpoint`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::checkpoint::{Catalog, SnapshotEntry};
use crate::compaction::{CompactionJob, CompactionReport, DeltaSize};
use crate::error::{Error, Result};
use crate::log::{Log, Lsn};
use crate::snapshot::SnapshotReader;
use crate::state::Clock;

/// When the journal compacts on its own (see [`JournalOptions::compaction`](super::JournalOptions::compaction)).
///
/// Like Redis's automatic AOF rewrite, a compaction starts when the log written since the newest
/// snapshot exceeds both a size floor and a ratio of the snapshot's size; and, if a recovery-time
/// budget is set, whenever replaying that log would take longer than the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    pub(crate) auto: bool,
    pub(crate) min_tail_bytes: u64,
    pub(crate) tail_ratio_percent: u64,
    pub(crate) recovery_budget: Option<Duration>,
    pub(crate) stall_percent: u64,
    pub(crate) block_size: Option<usize>,
}

impl Default for CompactionPolicy {
    /// Automatic: at least 64 MiB of log and 100% of the snapshot's size; no time budget;
    /// writers wait for a compaction that falls ten times behind (see
    /// [`CompactionPolicy::stall_percent`]).
    fn default() -> Self {
        CompactionPolicy {
            auto: true,
            min_tail_bytes: 64 << 20,
            tail_ratio_percent: 100,
            recovery_budget: None,
            stall_percent: 1000,
            block_size: None,
        }
    }
}

impl CompactionPolicy {
    /// Never compact on its own; only [`Journal::compact`](super::Journal::compact) does.
    pub fn manual() -> Self {
        CompactionPolicy {
            auto: false,
            ..Self::default()
        }
    }

    /// The log since the newest snapshot must be at least this big (default 64 MiB).
    pub fn min_tail_bytes(mut self, bytes: u64) -> Self {
        self.min_tail_bytes = bytes;
        self
    }

    /// ... and at least this percentage of the snapshot's size (default 100).
    pub fn tail_ratio_percent(mut self, percent: u64) -> Self {
        self.tail_ratio_percent = percent;
        self
    }

    /// Keep replaying the log since the newest snapshot within `budget` (estimated from the
    /// replay speed measured when the journal was opened, or [`DEFAULT_REPLAY_BYTES_PER_SEC`]
    /// before one was measured), regardless of the size rules: a compaction starts once the
    /// replay would take half the budget, and writers wait for it (see
    /// [`CompactionPolicy::stall_percent`]) if it is still running when the replay would take
    /// the whole budget.
    pub fn recovery_budget(mut self, budget: Duration) -> Self {
        self.recovery_budget = Some(budget);
        self
    }

    /// Backpressure: while an automatic compaction runs, a write that brings the log since the
    /// newest snapshot to `percent`% of the size that starts a compaction (the larger of the size
    /// floor and the ratio of the snapshot) waits for that compaction to finish (default 1000; 0
    /// never waits for the size rule). Without it, writers faster than compaction grow the log,
    /// the disk it takes and the recovery time without bound. The default is generous, like
    /// RocksDB's limits on pending compaction bytes: a burst of writes is not slowed, a
    /// sustained overload is held to a log ten times the size that starts a compaction. A
    /// [`recovery budget`](CompactionPolicy::recovery_budget) bounds the replay time itself. Also, with a
    /// [`recovery budget`](CompactionPolicy::recovery_budget), a write waits when the replay
    /// would take longer than the budget. A wait ends when the compaction finishes (or fails:
    /// a failed compaction stalls nobody); its count and time are in
    /// [`IoStats`](super::IoStats). A manual policy never waits.
    pub fn stall_percent(mut self, percent: u64) -> Self {
        self.stall_percent = percent;
        self
    }

    /// Size of snapshot blocks (default 256 KiB; small values only make sense in tests).
    pub fn snapshot_block_size(mut self, bytes: usize) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// The log size that starts a compaction over a snapshot of `snapshot` bytes.
    fn trigger_bytes(&self, snapshot: u64) -> u64 {
        self.min_tail_bytes
            .max(snapshot.saturating_mul(self.tail_ratio_percent) / 100)
    }

    /// Whether a log tail of `tail` bytes over a snapshot of `snapshot` bytes calls for a
    /// compaction, replaying at `replay_rate` bytes per second.
    pub(crate) fn due(&self, tail: u64, snapshot: u64, replay_rate: f64) -> bool {
        if !self.auto || tail == 0 {
            return false;
        }
        let by_size = tail >= self.trigger_bytes(snapshot);
        let by_time = self
            .recovery_budget
            .is_some_and(|b| tail as f64 / replay_rate.max(1.0) > b.as_secs_f64() / 2.0);
        by_size || by_time
    }

    /// Whether a writer that brought the tail to `tail` bytes must wait for the compaction in
    /// flight (see [`CompactionPolicy::stall_percent`]).
    pub(crate) fn must_wait(&self, tail: u64, snapshot: u64, replay_rate: f64) -> bool {
        if !self.auto {
            return false;
        }
        let by_size = self.stall_percent > 0
            && u128::from(tail) * 100
                >= u128::from(self.trigger_bytes(snapshot)) * u128::from(self.stall_percent);
        let by_time = self
            .recovery_budget
            .is_some_and(|b| tail as f64 / replay_rate.max(1.0) > b.as_secs_f64());
        by_size || by_time
    }
}

/// Replay speed assumed before one was measured (bytes of log per second). Conservative: the
/// replay measured on a 2-core VM runs several times faster.
pub const DEFAULT_REPLAY_BYTES_PER_SEC: f64 = 100e6;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the compaction thread needs, none of it borrowed from the owner.
pub(crate) struct Context {
    pub dir: PathBuf,
    pub log: Arc<Log>,
    pub catalog: Arc<Mutex<Catalog>>,
    pub max_key_groups: u16,
    pub clock: Arc<dyn Clock>,
    pub block_size: Option<usize>,
    /// Set when the journal closes, so that a compaction in progress stops early.
    pub cancel: Arc<AtomicBool>,
}

enum Request {
    Compact(Option<SyncSender<Result<CompactionReport>>>),
    Stop,
}

/// The owner's end of the compaction thread.
pub(crate) struct Compactor {
    tx: Sender<Request>,
    cancel: Arc<AtomicBool>,
    done: Receiver<Result<CompactionReport>>,
    handle: Option<JoinHandle<()>>,
    /// An automatic compaction was requested and has not reported yet.
    pub in_flight: bool,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Compactor {
    pub fn spawn(ctx: Context) -> Result<Compactor> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (done_tx, done) = mpsc::channel();
        let dir = ctx.dir.clone();
        let cancel = Arc::clone(&ctx.cancel);
        let handle = std::thread::Builder::new()
            .name("statejournal-compaction".into())
            .spawn(move || {
                // The last compaction's delta: the next one reserves as much up front.
                let mut like = DeltaSize::default();
                while let Ok(Request::Compact(reply)) = rx.recv() {
                    // A panic (a bug) must not leave the owner waiting forever or GC pinned.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        compact(&ctx, &mut like)
                    }))
                    .unwrap_or_else(|panic| {
                        lock(&ctx.catalog).compacting_from = None;
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::io(
                            "compact",
                            &ctx.dir,
                            std::io::Error::other(format!("the compaction panicked: {what}")),
                        ))
                    });
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(result);
                        }
                        None => {
                            let _ = done_tx.send(result);
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn the compaction thread", dir, e))?;
        Ok(Compactor {
            tx,
            cancel,
            done,
            handle: Some(handle),
            in_flight: false,
        })
    }

    /// Starts an automatic compaction (its outcome comes back through [`Compactor::poll`]).
    pub fn request(&mut self) {
        if !self.in_flight && self.tx.send(Request::Compact(None)).is_ok() {
            self.in_flight = true;
        }
    }

    /// Runs a compaction and waits for it (after any automatic one already queued).
    pub fn compact_now(&self) -> Result<CompactionReport> {
        let (reply, rx) = mpsc::sync_channel(1);
        let gone = || {
            Error::io(
                "compact",
                PathBuf::new(),
                std::io::Error::other("the compaction thread has stopped"),
            )
        };
        self.tx
            .send(Request::Compact(Some(reply)))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// The outcome of the automatic compaction, if it has finished.
    pub fn poll(&mut self) -> Option<Result<CompactionReport>> {
        let r = self.done.try_recv().ok()?;
        self.in_flight = false;
        Some(r)
    }

    /// Waits for the automatic compaction in flight, if any, and returns its outcome.
    pub fn wait(&mut self) -> Option<Result<CompactionReport>> {
        if !self.in_flight {
            return None;
        }
        let r = self.done.recv().ok();
        self.in_flight = false;
        r
    }

    /// Stops the thread; a compaction in progress stops early (its snapshot is not published).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.cancel.store(true, Ordering::Relaxed);
            let _ = self.tx.send(Request::Stop);
            let _ = h.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One compaction: durable through `m`, merge, publish, collect garbage.
///
/// `like` is the previous compaction's delta size, updated to this one's.
pub(crate) fn compact(ctx: &Context, like: &mut DeltaSize) -> Result<CompactionReport> {
    // Taken, not copied: a compaction that fails (or panics) leaves no hint for the next one.
    let hint = std::mem::take(like);
    #[cfg(feature = "testing")]
    if let Some(f) = ctx.log.faults() {
        f.on_compaction();
    }
    let through = ctx.log.sync()?.get();
    let base = {
        let mut cat = lock(&ctx.catalog);
        let base = cat.newest_snapshot();
        if let Some((lsn, entry)) = base.filter(|(lsn, _)| *lsn >= through) {
            // Nothing new since the newest snapshot.
            return Ok(CompactionReport {
                snapshot: cat.snapshot_path(lsn),
                lsn: Lsn(lsn),
                bytes: entry.len,
                entries: 0,
                base_lsn: Lsn(lsn),
                records: 0,
                log_bytes: 0,
                delta_keys: 0,
                delta_bytes: 0,
                expired: 0,
                duration: Duration::ZERO,
                gc_error: None,
            });
        }
        cat.compacting_from = Some(base.map_or(0, |(l, _)| l));
        base.map(|(l, _)| cat.snapshot_path(l))
    };
    let result = base
        .as_deref()
        .map(SnapshotReader::open)
        .transpose()
        .and_then(|base| {
            CompactionJob {
                dir: &ctx.dir,
                log: &ctx.log,
                base,
                through,
                max_key_groups: ctx.max_key_groups,
                now: ctx.clock.now_millis(),
                block_size: ctx.block_size,
                cancel: &ctx.cancel,
                like: hint,
            }
            .run()
        });
    let mut cat = lock(&ctx.catalog);
    cat.compacting_from = None;
    let (file, mut report, size) = result?;
    *like = size;
    cat.snapshots
        .insert(file.lsn, SnapshotEntry { len: file.len });
    // The snapshot is published: a failure to collect garbage now does not undo that.
    if let Err(e) = cat.retain_and_collect(&ctx.log) {
        report.gc_error = Some(e.to_string());
    }
    Ok(report)
}
