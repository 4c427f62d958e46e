//! The facade users hold: a [`Journal`] owns a [`Log`] and the keyed state recovered from it.

mod background;
mod pending;
pub(crate) mod recovery;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use background::{CompactionPolicy, DEFAULT_REPLAY_BYTES_PER_SEC};
pub use recovery::StateRecovery;

use crate::checkpoint::{write_manifest, Catalog, CheckpointInfo};
use crate::codec::manifest::{Manifest, StateRef};
use crate::compaction::CompactionReport;
pub(crate) use background::lock;
use background::{Compactor, Context};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::record::{begin_record, composite_key, put_varint, Op};
use crate::error::{Error, Result};
use crate::keygroup::{
    key_group_of, key_hash, KeyGroup, KeyGroupRange, DEFAULT_MAX_KEY_GROUPS, MAX_KEY_GROUPS,
};
use crate::log::{Durability, Log, LogOptions, Lsn, RecoveryMode, RecoveryReport};
use crate::state::{
    split_expiry, table_hash, Clock, Codec, Data, Postcard, StateKind, StateTtl, Store,
    SystemClock, Table,
};

/// Options of a [`Journal`]: a builder over [`LogOptions`] plus the keyed-state settings.
///
/// | option | default |
/// |---|---|
/// | durability | [`Durability::Buffered`] |
/// | segment size | 64 MiB |
/// | recovery mode | [`RecoveryMode::TolerateTornTail`] |
/// | max key groups | 128 (fixed when the journal is created; at most 32768) |
/// | key-group range | all of them |
/// | codec | [`Postcard`] |
/// | clock (for TTL) | [`SystemClock`] |
/// | compaction | automatic: log since the snapshot ≥ 64 MiB and ≥ 100% of the snapshot ([`CompactionPolicy`]) |
/// | checkpoints kept | 3 |
#[derive(Debug, Clone)]
pub struct JournalOptions<C: Codec = Postcard> {
    log: LogOptions,
    max_key_groups: u16,
    key_groups: Option<KeyGroupRange>,
    codec: C,
    clock: Arc<dyn Clock>,
    compaction: CompactionPolicy,
    retain_checkpoints: usize,
}

/// Checkpoints kept by default.
pub const DEFAULT_RETAINED_CHECKPOINTS: usize = 3;

impl Default for JournalOptions<Postcard> {
    fn default() -> Self {
        JournalOptions {
            log: LogOptions::default(),
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            key_groups: None,
            codec: Postcard,
            clock: Arc::new(SystemClock),
            compaction: CompactionPolicy::default(),
            retain_checkpoints: DEFAULT_RETAINED_CHECKPOINTS,
        }
    }
}

impl<C: Codec> JournalOptions<C> {
    /// Durability of commits (see [`Durability`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.log = self.log.durability(d);
        self
    }

    /// Size of each log segment file.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.log = self.log.segment_size(bytes);
        self
    }

    /// What recovery does with damaged log data (see [`RecoveryMode`]).
    pub fn recovery_mode(mut self, m: RecoveryMode) -> Self {
        self.log = self.log.recovery_mode(m);
        self
    }

    /// All log options at once.
    pub fn log_options(mut self, log: LogOptions) -> Self {
        self.log = log;
        self
    }

    /// Number of key groups (1..=32768). Fixed when the journal is created: reopening with
    /// another number is [`Error::KeyGroupsMismatch`].
    pub fn max_key_groups(mut self, n: u16) -> Self {
        self.max_key_groups = n;
        self
    }

    /// The key groups this journal serves (default: all). Recovery loads only these; touching a
    /// key of another group is [`Error::KeyGroupNotOwned`].
    pub fn key_group_range(mut self, range: KeyGroupRange) -> Self {
        self.key_groups = Some(range);
        self
    }

    /// The codec for keys, namespaces and values.
    pub fn codec<C2: Codec>(self, codec: C2) -> JournalOptions<C2> {
        JournalOptions {
            log: self.log,
            max_key_groups: self.max_key_groups,
            key_groups: self.key_groups,
            codec,
            clock: self.clock,
            compaction: self.compaction,
            retain_checkpoints: self.retain_checkpoints,
        }
    }

    /// When the journal compacts its log into a new snapshot on its own (see
    /// [`CompactionPolicy`]).
    pub fn compaction(mut self, policy: CompactionPolicy) -> Self {
        self.compaction = policy;
        self
    }

    /// How many checkpoints to keep (default 3, at least 1). Older ones are deleted with every
    /// file only they needed.
    pub fn retain_checkpoints(mut self, n: usize) -> Self {
        self.retain_checkpoints = n;
        self
    }

    /// The clock TTL expiry is measured with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The recovery mode these options open with (for the crash simulator's checks).
    #[cfg(feature = "testing")]
    pub(crate) fn recovery_mode_of(&self) -> RecoveryMode {
        self.log.recovery_mode
    }
}

/// Sizes of a journal's in-memory state (see [`Journal::state_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Live table entries (a map's entries count one each, plus one per map).
    pub entries: u64,
    /// Bytes of their keys and values (as stored: composite keys, encoded values).
    pub payload_bytes: u64,
    /// Bytes the tables allocated (slots, arenas, free space).
    pub heap_bytes: u64,
}

/// Scratch buffers an op borrows from while it is encoded and applied.
#[derive(Debug, Default)]
pub(crate) struct Bufs {
    /// Composite key (`len key namespace`) of the last `locate`.
    pub cbuf: Vec<u8>,
    /// Stored value (or list element, or map value) being written.
    pub vbuf: Vec<u8>,
    /// Map key being written.
    pub mbuf: Vec<u8>,
}

/// Where a key lives: its key group and its table hash (the composite key is in `Bufs::cbuf`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    pub kg: u16,
    pub hash: u64,
}

/// Commits a [`Journal`]'s logged mutations from any thread, without holding the journal.
///
/// A journal has one owner at a time (`&mut self` for every write), so threads that share one put
/// it behind a lock. Committing under that lock would serialize their flushes; with a committer
/// each thread writes under the lock, reads [`Journal::last_lsn`], releases the lock and calls
/// [`Committer::commit_through`], and concurrent committers share one flush (group commit):
///
/// ```
/// # fn main() -> statejournal::Result<()> {
/// use std::sync::{Arc, Mutex};
/// use statejournal::{Durability, Journal, JournalOptions};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let mut journal = Journal::open(dir.path(), JournalOptions::default().durability(Durability::Sync))?;
/// let counts = journal.value_state::<String, u64>("counts")?;
/// let committer = journal.committer();
/// let journal = Arc::new(Mutex::new(journal));
/// let counts = &counts;
/// std::thread::scope(|s| {
///     for t in 0..4u64 {
///         let (journal, committer) = (Arc::clone(&journal), committer.clone());
///         s.spawn(move || -> statejournal::Result<()> {
///             let lsn = {
///                 let mut j = journal.lock().expect("not poisoned");
///                 counts.set(&mut j, &format!("thread-{t}"), &t)?;
///                 j.last_lsn()
///             };
///             let durable = committer.commit_through(lsn)?; // outside the lock
///             assert!(durable >= lsn);
///             Ok(())
///         });
///     }
/// });
/// # Ok(())
/// # }
/// ```
///
/// A committer holds the journal's log open: [`Journal::close`] only flushes while one is alive,
/// and the directory stays locked until the last one is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    log: Arc<Log>,
}

impl Committer {
    /// Makes the mutations through `lsn` durable as the durability mode promises and returns the
    /// LSN through which the log is durable: in [`Durability::Sync`] it waits for (or performs)
    /// the flush that covers `lsn`; in the other modes it returns at once (see [`Log::commit`]).
    /// After a failed flush it returns [`Error::Poisoned`], as every commit of the journal does.
    /// An `lsn` past [`Journal::last_lsn`] counts as the last LSN (nothing later exists to be made
    /// durable); compare the result with `lsn` if that can happen.
    pub fn commit_through(&self, lsn: Lsn) -> Result<Lsn> {
        self.log.commit_through(lsn)
    }

    /// The LSN through which the journal's log is known to be durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.log.durable_lsn()
    }
}

/// Keyed state made durable by a log: the state backend of one stream-processing task.
///
/// Mutations take `&mut self`: a journal has one owner, like a Flink task's keyed backend, so the
/// hot path takes no lock. Scale across cores with several journals over disjoint key-group
/// ranges, or share one behind a lock and commit outside it with a [`Committer`], so that the
/// threads' flushes merge. Every mutation is one log record (a [write batch](Journal::write_batch) is one record
/// for many); [`commit`](Journal::commit) makes them durable as the [`Durability`] mode says.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let mut journal = Journal::open(dir.path(), JournalOptions::default())?;
/// let clicks = journal.value_state::<String, u64>("clicks")?;
/// clicks.set(&mut journal, &"alice".to_string(), &3)?;
/// clicks.update(&mut journal, &"alice".to_string(), |n| Some(n.unwrap_or(0) + 1))?;
/// journal.commit()?;
/// drop(journal);
///
/// let mut journal = Journal::open(dir.path(), JournalOptions::default())?;
/// let clicks = journal.value_state::<String, u64>("clicks")?;
/// assert_eq!(clicks.get(&mut journal, &"alice".to_string())?, Some(4));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Journal<C: Codec = Postcard> {
    pub(crate) log: Arc<Log>,
    pub(crate) store: Store,
    pub(crate) codec: C,
    pub(crate) clock: Arc<dyn Clock>,
    max_key_groups: u16,
    dir: PathBuf,
    /// Encoded key.
    kbuf: Vec<u8>,
    /// Encoded namespace.
    nbuf: Vec<u8>,
    /// The buffers ops are built from.
    pub(crate) bufs: Bufs,
    /// A single-op record being written.
    rec: Vec<u8>,
    /// Single-op records appended to the log whose table update waits for the next ops
    /// ([`pending`]). Every reader of `store` settles them first.
    pending: pending::Pending,
    /// The log segment this journal appended to last ([`Log::append_cached`]).
    segment: Option<Arc<crate::segment::Segment>>,
    /// The record of the open write batch.
    batch: Option<Vec<u8>>,
    /// Files needed by checkpoints and the live log; shared with the compaction thread.
    catalog: Arc<Mutex<Catalog>>,
    compactor: Compactor,
    policy: CompactionPolicy,
    /// Bytes of log frames written since the newest snapshot (an estimate between compactions).
    tail_bytes: u64,
    /// `tail_bytes` when the running automatic compaction was requested.
    tail_at_request: u64,
    /// `tail_bytes` at which the policy is looked at next.
    next_check: u64,
    /// Size of the newest snapshot file.
    snapshot_bytes: u64,
    /// Replay speed (log bytes per second) measured when opened, for the recovery-time budget.
    replay_rate: f64,
    /// The outcome of the last automatic compaction.
    last_compaction: Option<Result<CompactionReport>>,
    io: IoStats,
    recovery: StateRecovery,
    /// A garbage collection after a checkpoint that failed.
    gc_error: Option<Error>,
    /// LSN of the newest snapshot this journal knows of.
    snapshot_lsn: u64,
}

/// Bytes a journal wrote since it was opened (see [`Journal::io_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Bytes of mutation records (what the state changes amount to).
    pub mutation_bytes: u64,
    /// Bytes of log frames written for them (headers and alignment included).
    pub log_bytes: u64,
    /// Bytes of snapshot files written by compactions.
    pub snapshot_bytes: u64,
    /// Bytes of checkpoint manifests written.
    pub manifest_bytes: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Writes that waited for a compaction that fell behind (see
    /// [`CompactionPolicy::stall_percent`]).
    pub write_stalls: u64,
    /// The time they waited, in all.
    pub write_stall_time: std::time::Duration,
}

impl IoStats {
    /// Bytes written to files per byte of mutations (0 before any mutation).
    pub fn write_amplification(&self) -> f64 {
        if self.mutation_bytes == 0 {
            return 0.0;
        }
        (self.log_bytes + self.snapshot_bytes + self.manifest_bytes) as f64
            / self.mutation_bytes as f64
    }
}

/// How often (in log bytes) the owner looks at the compaction policy.
const POLICY_CHECK_BYTES: u64 = 1 << 20;

impl Journal<Postcard> {
    /// Opens (or creates) the journal in `dir` and recovers its state: the log is replayed into
    /// the in-memory tables, loading only the key groups this journal serves.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions<Postcard>) -> Result<Self> {
        Self::open_with(dir, opts)
    }
}

impl<C: Codec> Journal<C> {
    /// [`Journal::open`] with any codec.
    pub fn open_with(dir: impl AsRef<Path>, opts: JournalOptions<C>) -> Result<Self> {
        Self::open_inner(dir.as_ref(), opts, None)
    }

    /// Opens the journal in `dir` exactly as it was at checkpoint `id` (Flink's exactly-once
    /// restore): its snapshot, then the log through the checkpoint's LSN. Everything written after
    /// the checkpoint is discarded — set aside, not deleted: log bytes go to `*.cut-OFFSET` and
    /// `*.discarded` files, newer snapshots and manifests are renamed `*.discarded` — and appends
    /// continue right after the checkpoint.
    pub fn open_at_checkpoint(
        dir: impl AsRef<Path>,
        id: u64,
        opts: JournalOptions<C>,
    ) -> Result<Self> {
        Self::open_inner(dir.as_ref(), opts, Some(id))
    }

    fn open_inner(dir: &Path, opts: JournalOptions<C>, checkpoint: Option<u64>) -> Result<Self> {
        let dir = dir.to_path_buf();
        let max = opts.max_key_groups;
        if max == 0 || max > MAX_KEY_GROUPS {
            return Err(Error::InvalidOptions {
                name: "max_key_groups",
                reason: format!("{max} is not between 1 and {MAX_KEY_GROUPS}"),
            });
        }
        let range = opts.key_groups.unwrap_or(KeyGroupRange::all(max));
        if range.end() > max {
            return Err(Error::InvalidOptions {
                name: "key_group_range",
                reason: format!("{range} reaches past the {max} key groups"),
            });
        }
        if opts.retain_checkpoints == 0 {
            return Err(Error::InvalidOptions {
                name: "retain_checkpoints",
                reason: "at least one checkpoint must be kept".into(),
            });
        }
        let opened = recovery::open(recovery::OpenArgs {
            dir: &dir,
            log: opts.log,
            max_key_groups: max,
            range,
            retain: opts.retain_checkpoints,
            checkpoint,
        })?;
        let log = Arc::new(opened.log);
        let catalog = Arc::new(Mutex::new(opened.catalog));
        let compactor = Compactor::spawn(Context {
            dir: dir.clone(),
            log: Arc::clone(&log),
            catalog: Arc::clone(&catalog),
            max_key_groups: max,
            clock: Arc::clone(&opts.clock),
            block_size: opts.compaction.block_size,
            cancel: Arc::default(),
        })?;
        let report = opened.report;
        let replay_rate = if report.replayed_bytes >= 4 << 20 {
            report.replayed_bytes as f64 / report.replay_time.as_secs_f64().max(1e-6)
        } else {
            DEFAULT_REPLAY_BYTES_PER_SEC
        };
        let mut journal = Journal {
            log,
            store: opened.store,
            codec: opts.codec,
            clock: opts.clock,
            max_key_groups: max,
            dir,
            kbuf: Vec::new(),
            nbuf: Vec::new(),
            bufs: Bufs::default(),
            rec: Vec::new(),
            pending: pending::Pending::default(),
            segment: None,
            batch: None,
            catalog,
            compactor,
            policy: opts.compaction,
            tail_bytes: opened.tail_bytes,
            tail_at_request: 0,
            next_check: 0,
            snapshot_bytes: opened.snapshot_file_bytes,
            replay_rate,
            last_compaction: None,
            io: IoStats::default(),
            snapshot_lsn: report.snapshot_lsn.get(),
            recovery: report,
            gc_error: None,
        };
        match journal.store.max_key_groups {
            Some(stored) if stored != max => {
                return Err(Error::KeyGroupsMismatch {
                    path: journal.dir.clone(),
                    stored,
                    requested: max,
                })
            }
            Some(_) => {}
            None => {
                begin_record(&mut journal.rec);
                Op::Init {
                    max_key_groups: max,
                }
                .encode(&mut journal.rec);
                journal.commit_rec()?;
            }
        }
        journal.check_policy();
        Ok(journal)
    }

    /// What opening the journal found and did: log recovery, the snapshot loaded, the records
    /// replayed, any fallback.
    pub fn recovery(&self) -> &StateRecovery {
        &self.recovery
    }

    /// Bytes written since the journal was opened, and the write amplification they amount to.
    pub fn io_stats(&self) -> IoStats {
        self.io
    }

    /// Merges the newest snapshot with the log into a new snapshot now, and waits for it (after
    /// an automatic compaction already running). Appends from other handles are not blocked: the
    /// work happens on the compaction thread, from the files. Afterwards segments and snapshots
    /// that no retained checkpoint needs are deleted.
    pub fn compact(&mut self) -> Result<CompactionReport> {
        let tail_before = self.tail_bytes;
        let report = self.compactor.compact_now()?;
        self.compacted(&report, tail_before);
        Ok(report)
    }

    fn compacted(&mut self, report: &CompactionReport, tail_at_request: u64) {
        if report.records == 0 || report.lsn.get() <= self.snapshot_lsn {
            return; // nothing new, or older than a snapshot already accounted for
        }
        self.snapshot_lsn = report.lsn.get();
        self.io.compactions += 1;
        self.io.snapshot_bytes += report.bytes;
        self.snapshot_bytes = report.bytes;
        // What was appended since the request lies (mostly) after the new snapshot.
        self.tail_bytes = self.tail_bytes.saturating_sub(tail_at_request);
        self.next_check = self.tail_bytes;
    }

    /// The outcome of the last automatic compaction, if one finished since the last call: a
    /// background failure (a full disk, say) does not fail writes, so look here for it.
    pub fn last_compaction(&mut self) -> Option<Result<CompactionReport>> {
        self.poll_compactor();
        self.last_compaction.take()
    }

    /// Waits for the automatic compaction running in the background, if there is one, and
    /// returns its outcome (or that of one that finished earlier and was not collected yet).
    pub fn wait_for_compaction(&mut self) -> Option<Result<CompactionReport>> {
        if let Some(result) = self.compactor.wait() {
            if let Ok(report) = &result {
                self.compacted(report, self.tail_at_request);
            }
            self.last_compaction = Some(result);
        }
        self.last_compaction.take()
    }

    fn poll_compactor(&mut self) {
        if let Some(result) = self.compactor.poll() {
            if let Ok(report) = &result {
                self.compacted(report, self.tail_at_request);
            }
            self.last_compaction = Some(result);
        }
    }

    /// Looks at the compaction policy (called every `POLICY_CHECK_BYTES` of log).
    #[cold]
    fn check_policy(&mut self) {
        self.next_check = self.tail_bytes + POLICY_CHECK_BYTES;
        self.poll_compactor();
        if self.compactor.in_flight
            && self
                .policy
                .must_wait(self.tail_bytes, self.snapshot_bytes, self.replay_rate)
        {
            // Backpressure: the compaction fell behind the writers.
            let started = std::time::Instant::now();
            if let Some(result) = self.compactor.wait() {
                if let Ok(report) = &result {
                    self.compacted(report, self.tail_at_request);
                }
                self.last_compaction = Some(result);
            }
            self.io.write_stalls += 1;
            self.io.write_stall_time += started.elapsed();
        }
        if !self.compactor.in_flight
            && self
                .policy
                .due(self.tail_bytes, self.snapshot_bytes, self.replay_rate)
        {
            self.tail_at_request = self.tail_bytes;
            self.compactor.request();
        }
    }

    /// Takes a checkpoint: makes the log durable through the current LSN `c` and publishes a
    /// manifest naming the newest snapshot and the log segments after it through `c`. Its cost
    /// grows with what was written since the previous checkpoint, not with the state: nothing is
    /// copied, the segments' checksums are extended incrementally. Checkpoints beyond the
    /// retention count are then dropped, with the files only they needed.
    pub fn checkpoint(&mut self) -> Result<CheckpointInfo> {
        if self.batch.is_some() {
            return Err(Error::InvalidOptions {
                name: "checkpoint",
                reason: "a checkpoint cannot be taken inside a write batch".into(),
            });
        }
        let c = self.log.sync()?.get();
        let states = self
            .store
            .states
            .iter()
            .enumerate()
            .map(|(i, (m, _))| StateRef {
                id: i as u32,
                kind: m.kind.code(),
                flags: u8::from(m.ttl.is_some_and(|t| t.refresh_on_read)),
                ttl_millis: m.ttl.map_or(0, |t| t.ttl_millis),
                name: m.name.clone(),
            })
            .collect();
        let created_millis = self.clock.now_millis();
        let mut cat = lock(&self.catalog);
        let snapshot = cat
            .newest_snapshot()
            .filter(|(lsn, _)| *lsn <= c)
            .map(|(lsn, e)| crate::codec::manifest::SnapshotRef {
                lsn,
                len: e.len,
                file: crate::format::snapshot_file_name(lsn),
            });
        let after = snapshot.as_ref().map_or(0, |s| s.lsn);
        let segments = cat.segment_refs(&self.log, after, c)?;
        // The id is used up even if writing fails half way (a renamed manifest whose directory
        // fsync failed must never be overwritten by the next checkpoint).
        cat.last_id += 1;
        let manifest = Manifest {
            id: cat.last_id,
            lsn: c,
            log_id: self.log.id(),
            created_millis,
            max_key_groups: self.max_key_groups,
            kg_start: self.store.range.start(),
            kg_end: self.store.range.end(),
            snapshot,
            segments,
            states,
        };
        write_manifest(&self.dir, &manifest)?;
        let info = CheckpointInfo::of(&self.dir, &manifest);
        self.io.manifest_bytes += manifest.encode().len() as u64;
        self.io.checkpoints += 1;
        cat.checkpoints.insert(manifest.id, manifest);
        // The checkpoint is durable now, whatever garbage collection does: a failure to collect
        // (which the next collection retries) is not a failed checkpoint.
        if let Err(e) = cat.retain_and_collect(&self.log) {
            self.gc_error = Some(e);
        }
        Ok(info)
    }

    /// Starts pushing retained checkpoint `id` to the shipper's store and returns at once: the
    /// upload runs on the shipper's runtime while this journal goes on appending. The files the
    /// checkpoint names stay pinned (garbage collection keeps them) until the push ends, and the
    /// directory stays locked until then too (a reopen reports [`Error::Locked`]). Pushes of one
    /// shipper run one at a time, in the order they were started.
    ///
    /// Idempotent: a checkpoint the store already holds — as its newest checkpoint, or behind a
    /// later one of this writer — is not published again; the push resolves to a report with
    /// [`already_published`](crate::remote::PushReport::already_published) set and the number it
    /// has ([`RemoteStore::find_published`](crate::remote::RemoteStore::find_published)). A
    /// checkpoint older than the newest one this writer published that the store does not hold is
    /// refused ([`Error::InvalidOptions`]): it would become the newest.
    #[cfg(feature = "remote")]
    pub fn push_checkpoint(
        &mut self,
        id: u64,
        shipper: &crate::remote::Shipper,
    ) -> Result<crate::remote::PushHandle> {
        let job = crate::remote::push::prepare(&self.dir, &self.log, &self.catalog, id)?;
        Ok(shipper.spawn(job))
    }

    /// Takes a checkpoint ([`Journal::checkpoint`]) and starts pushing it
    /// ([`Journal::push_checkpoint`]): complete locally when this returns, remotely when the
    /// handle resolves.
    #[cfg(feature = "remote")]
    pub fn checkpoint_and_push(
        &mut self,
        shipper: &crate::remote::Shipper,
    ) -> Result<(CheckpointInfo, crate::remote::PushHandle)> {
        let info = self.checkpoint()?;
        let handle = self.push_checkpoint(info.id, shipper)?;
        Ok((info, handle))
    }

    /// The error of the last garbage collection after a checkpoint, if it failed (the
    /// checkpoint itself succeeded; the next one retries the collection).
    pub fn take_gc_error(&mut self) -> Option<Error> {
        self.gc_error.take()
    }

    /// The retained checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<CheckpointInfo> {
        lock(&self.catalog)
            .checkpoints
            .values()
            .map(|m| CheckpointInfo::of(&self.dir, m))
            .collect()
    }

    /// What log recovery found and did when the journal was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.log.recovery_report()
    }

    /// The underlying log, to look at (LSNs, durability, segments). Do not append to it or
    /// delete from it: records that are not state mutations fail the next open, and deleting
    /// segments behind the journal's back can remove what a checkpoint needs.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Sizes of the in-memory state: live entries, their key and value bytes, and the bytes the
    /// tables allocate for them.
    ///
    /// Fails only if an update queued for the tables fails to apply (which the checks made
    /// before logging rule out).
    pub fn state_stats(&mut self) -> Result<StateStats> {
        self.settle()?;
        let mut st = StateStats::default();
        let mut add = |t: &Table| {
            st.entries += t.len() as u64;
            st.payload_bytes += t.payload_bytes() as u64;
            st.heap_bytes += t.heap_bytes() as u64;
        };
        for (_, data) in &self.store.states {
            match data {
                Data::Plain(t) => add(t),
                Data::Map(m) => {
                    add(&m.outer);
                    m.inner.iter().for_each(&mut add);
                }
            }
        }
        Ok(st)
    }

    /// The journal's number of key groups.
    pub fn max_key_groups(&self) -> u16 {
        self.max_key_groups
    }

    /// The key groups this journal serves.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.store.range
    }

    /// The key group of `key` (as this journal's codec encodes it).
    pub fn key_group<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<KeyGroup> {
        self.kbuf.clear();
        self.codec
            .encode(key, &mut self.kbuf)
            .map_err(|source| Error::Codec {
                state: String::new(),
                source,
            })?;
        Ok(key_group_of(key_hash(&self.kbuf), self.max_key_groups))
    }

    /// Makes mutations durable as the durability mode promises; returns the durable LSN.
    pub fn commit(&mut self) -> Result<Lsn> {
        self.log.commit()
    }

    /// The LSN of the last record in the journal's log: every mutation logged so far has an LSN
    /// at or below it. Read it after a write, under whatever lock guards the journal, and hand
    /// it to a [`Committer`] after releasing the lock.
    pub fn last_lsn(&self) -> Lsn {
        self.log.last_lsn()
    }

    /// A handle that commits this journal's logged mutations from any thread, without the
    /// journal itself (see [`Committer`]).
    pub fn committer(&self) -> Committer {
        Committer {
            log: Arc::clone(&self.log),
        }
    }

    /// Flushes every mutation to stable storage, whatever the durability mode.
    pub fn sync(&mut self) -> Result<Lsn> {
        self.log.sync()
    }

    /// Waits for a running compaction, flushes and closes. While a [`Committer`] of this journal
    /// is alive the log stays open (and its directory locked) until the last one is dropped;
    /// `close` then only flushes.
    pub fn close(self) -> Result<()> {
        let Journal {
            log, mut compactor, ..
        } = self;
        compactor.stop(); // its thread holds the other reference to the log
        drop(compactor);
        match Arc::try_unwrap(log) {
            Ok(log) => log.close(),
            Err(log) => log.sync().map(|_| ()),
        }
    }

    /// Runs `f` as one atomic write batch: every mutation `f` makes is logged as a single record,
    /// so after any crash either all of them are there or none. Mutations are applied to the state
    /// when `f` returns `Ok` (reads inside `f` see the state from before the batch); if `f`
    /// returns an error, nothing is logged or applied. States must be registered before.
    pub fn write_batch<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if self.batch.is_some() {
            return f(self); // nested: part of the enclosing batch
        }
        let mut buf = std::mem::take(&mut self.rec);
        begin_record(&mut buf);
        self.batch = Some(buf);
        let result = f(self);
        let buf = self.batch.take().unwrap_or_default();
        self.rec = buf;
        let value = result?;
        if self.rec.len() > 1 {
            self.commit_rec()?;
        }
        Ok(value)
    }

    /// A registrar that registers states with a time-to-live.
    ///
    /// Whether a state has a TTL is fixed when it is first registered: opening it later with a
    /// TTL when it had none, or without one when it had one, is [`Error::TtlConflict`] (its
    /// stored values carry an expiry exactly when it has a TTL). The duration and the refresh
    /// rule may change; values keep the expiry they were written with.
    pub fn with_ttl(&mut self, ttl: StateTtl) -> Registrar<'_, C> {
        Registrar {
            journal: self,
            ttl: Some(ttl),
        }
    }

    /// Registers (or opens) a [`ValueState`](crate::ValueState).
    pub fn value_state<K, V>(&mut self, name: &str) -> Result<crate::ValueState<K, V>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .value_state(name)
    }

    /// Registers (or opens) a [`ListState`](crate::ListState).
    pub fn list_state<K, E>(&mut self, name: &str) -> Result<crate::ListState<K, E>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .list_state(name)
    }

    /// Registers (or opens) a [`MapState`](crate::MapState).
    pub fn map_state<K, UK, UV>(&mut self, name: &str) -> Result<crate::MapState<K, UK, UV>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .map_state(name)
    }

    /// Registers (or opens) a [`ReducingState`](crate::ReducingState) combining values with `reduce`.
    pub fn reducing_state<K, V, F>(
        &mut self,
        name: &str,
        reduce: F,
    ) -> Result<crate::ReducingState<K, V, F>>
    where
        F: Fn(&V, &V) -> V,
    {
        Registrar {
            journal: self,
            ttl: None,
        }
        .reducing_state(name, reduce)
    }

    /// Registers (or opens) an [`AggregatingState`](crate::AggregatingState) fed by `aggregate`.
    pub fn aggregating_state<K, A>(
        &mut self,
        name: &str,
        aggregate: A,
    ) -> Result<crate::AggregatingState<K, A>>
    where
        A: crate::AggregateFunction,
    {
        Registrar {
            journal: self,
            ttl: None,
        }
        .aggregating_state(name, aggregate)
    }

    pub(crate) fn register(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtl>,
    ) -> Result<u32> {
        if self.batch.is_some() {
            return Err(Error::InvalidOptions {
                name: "state registration",
                reason: format!(
                    "state {name:?} must be registered before the write batch, not inside it"
                ),
            });
        }
        let id = match self.store.by_name.get(name) {
            Some(&id) => {
                let meta = &self.store.states[id as usize].0;
                if meta.kind != kind {
                    return Err(Error::StateConflict {
                        name: name.to_string(),
                        existing: meta.kind,
                        requested: kind,
                    });
                }
                if meta.ttl == ttl {
                    return Ok(id);
                }
                if meta.ttl.is_some() != ttl.is_some() {
                    return Err(Error::TtlConflict {
                        name: name.to_string(),
                        existing: meta.ttl.map(|t| t.ttl()),
                        requested: ttl.map(|t| t.ttl()),
                    });
                }
                id // the TTL changes: registered again
            }
            None => self.store.states.len() as u32,
        };
        begin_record(&mut self.rec);
        Op::Register {
            state_id: id,
            kind: kind.code(),
            flags: u8::from(ttl.is_some_and(|t| t.refresh_on_read)),
            ttl_millis: ttl.map_or(0, |t| t.ttl_millis),
            name: name.as_bytes(),
        }
        .encode(&mut self.rec);
        self.commit_rec()?;
        Ok(id)
    }

    /// Appends the record in `rec` to the log and applies it (after the queued ops).
    fn commit_rec(&mut self) -> Result<()> {
        self.settle()?;
        let lsn = self.log.append_cached(&mut self.segment, &self.rec)?;
        self.account(self.rec.len());
        self.store
            .apply(&self.rec)
            .map_err(|e| self.invalid_record(lsn.get(), e.to_string()))
    }

    fn invalid_record(&self, lsn: u64, detail: String) -> Error {
        Error::InvalidRecord {
            path: self.dir.clone(),
            offset: None,
            lsn,
            detail,
        }
    }

    /// Applies the ops whose table update is still queued ([`pending`]): every reader of the
    /// tables calls this first.
    #[inline]
    pub(crate) fn settle(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending
            .settle(&mut self.store)
            .map_err(|f| self.invalid_record(f.lsn, f.detail))
    }

    /// The tables, for a reader: panics if ops are still queued (the reader forgot to
    /// [`settle`](Self::settle)), rather than serve state that misses them.
    #[inline]
    pub(crate) fn settled_store(&self) -> &Store {
        assert!(
            self.pending.is_empty(),
            "state read before the queued ops were applied"
        );
        &self.store
    }

    /// Emits one op: into the open batch, or as its own record — appended to the log, then
    /// applied to the tables (with the table hash the caller already computed).
    ///
    /// A keyed op's table update is queued behind the next ops' ([`pending`]), so that its
    /// cache misses overlap their work; any other op first applies the queued ones.
    pub(crate) fn emit(
        &mut self,
        hash: Option<u64>,
        op: impl FnOnce(&Bufs) -> Op<'_>,
    ) -> Result<()> {
        let op = op(&self.bufs);
        if let Err(e) = self.store.check_applicable(&op) {
            return Err(Error::ForeignHandle {
                state_id: op.state_id().unwrap_or(u32::MAX),
                detail: e.what,
            });
        }
        if let Some(batch) = self.batch.as_mut() {
            op.encode(batch);
            return Ok(());
        }
        begin_record(&mut self.rec);
        op.encode(&mut self.rec);
        let (Some(h), Some(state_id)) = (hash, op.target().map(|t| t.state_id)) else {
            if let Err(f) = self.pending.settle(&mut self.store) {
                return Err(self.invalid_record(f.lsn, f.detail));
            }
            let lsn = self.log.append_cached(&mut self.segment, &self.rec)?;
            let applied = self.store.apply_op(op, hash);
            self.account(self.rec.len());
            return applied.map_err(|e| self.invalid_record(lsn.get(), e.to_string()));
        };
        // The previous op's slot line has arrived: its entry starts loading now. The op before
        // it, whose entry has arrived, is applied.
        self.pending.prefetch_newest(&self.store);
        if self.pending.is_full() {
            if let Err(f) = self.pending.apply_oldest(&mut self.store) {
                return Err(self.invalid_record(f.lsn, f.detail));
            }
        }
        let lsn = self.log.append_cached(&mut self.segment, &self.rec)?;
        self.account(self.rec.len());
        self.pending.push(&mut self.rec, h, state_id, lsn.get());
        Ok(())
    }

    /// Counts an appended record and looks at the compaction policy every MiB.
    #[inline]
    fn account(&mut self, payload: usize) {
        let frame = crate::codec::frame::frame_size(payload).unwrap_or(payload) as u64;
        self.io.mutation_bytes += payload as u64;
        self.io.log_bytes += frame;
        self.tail_bytes += frame;
        if self.tail_bytes >= self.next_check {
            self.check_policy();
        }
    }

    fn state_name(&self, id: u32) -> String {
        self.store
            .states
            .get(id as usize)
            .map(|(m, _)| m.name.clone())
            .unwrap_or_default()
    }

    pub(crate) fn codec_err(&self, id: u32) -> impl Fn(crate::CodecError) -> Error + '_ {
        move |source| Error::Codec {
            state: self.state_name(id),
            source,
        }
    }

    /// [`locate`](Self::locate) for a reader: the queued table updates are applied first.
    #[inline]
    pub(crate) fn locate_read<K, N>(&mut self, id: u32, key: &K, ns: &N) -> Result<Loc>
    where
        K: Serialize + ?Sized,
        N: Serialize + ?Sized,
    {
        self.settle()?;
        self.locate(id, key, ns)
    }

    /// Encodes `key` and `ns` into the composite-key buffer and finds the key's group.
    pub(crate) fn locate<K, N>(&mut self, id: u32, key: &K, ns: &N) -> Result<Loc>
    where
        K: Serialize + ?Sized,
        N: Serialize + ?Sized,
    {
        self.kbuf.clear();
        self.nbuf.clear();
        if let Err(source) = self
            .codec
            .encode(key, &mut self.kbuf)
            .and_then(|()| self.codec.encode(ns, &mut self.nbuf))
        {
            return Err(Error::Codec {
                state: self.state_name(id),
                source,
            });
        }
        let kh = key_hash(&self.kbuf);
        let kg = key_group_of(kh, self.max_key_groups);
        if !self.store.range.contains(kg) {
            return Err(Error::KeyGroupNotOwned {
                key_group: kg,
                range: self.store.range,
            });
        }
        let ns_start = composite_key(&mut self.bufs.cbuf, &self.kbuf, &self.nbuf);
        let hash = table_hash(&self.bufs.cbuf, ns_start, kh);
        // The slot starts loading while the caller encodes the value.
        self.store.prefetch_slot(id, hash);
        Ok(Loc { kg: kg.0, hash })
    }

    pub(crate) fn ttl_of(&self, id: u32) -> Option<StateTtl> {
        self.store.states.get(id as usize).and_then(|(m, _)| m.ttl)
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// State `id`'s TTL and the time to judge expiry by, for [`live`]: the clock is read only
    /// when the state has a TTL (a read of a state without one pays nothing for it).
    pub(crate) fn ttl_now(&self, id: u32) -> (Option<StateTtl>, u64) {
        let ttl = self.ttl_of(id);
        (ttl, if ttl.is_some() { self.now() } else { 0 })
    }

    /// The plain table of a state (the queued ops must be settled).
    pub(crate) fn plain(&self, id: u32) -> Option<&Table> {
        match self.settled_store().states.get(id as usize).map(|(_, d)| d) {
            Some(Data::Plain(t)) => Some(t),
            _ => None,
        }
    }

    /// The stored bytes of the located key, without an expired TTL prefix, if live.
    pub(crate) fn live_value(&self, id: u32, loc: Loc) -> Option<&[u8]> {
        let stored = self.plain(id)?.get(loc.hash, &self.bufs.cbuf)?;
        let (ttl, now) = self.ttl_now(id);
        live(ttl, stored, now)
    }

    /// Starts `vbuf` as a stored value: the expiry prefix when the state has a TTL.
    pub(crate) fn begin_value(&mut self, id: u32) {
        self.bufs.vbuf.clear();
        if let Some(ttl) = self.ttl_of(id) {
            let expiry = self.now().saturating_add(ttl.ttl_millis);
            self.bufs.vbuf.extend_from_slice(&expiry.to_le_bytes());
        }
    }

    /// Encodes `value` onto `vbuf`.
    pub(crate) fn push_encoded<T: Serialize + ?Sized>(&mut self, id: u32, value: &T) -> Result<()> {
        let r = self.codec.encode(value, &mut self.bufs.vbuf);
        r.map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    /// Encodes a list element onto `vbuf` as `len:v32 bytes`.
    pub(crate) fn push_element<T: Serialize + ?Sized>(&mut self, id: u32, value: &T) -> Result<()> {
        let mut tmp = std::mem::take(&mut self.nbuf);
        tmp.clear();
        let r = self.codec.encode(value, &mut tmp);
        if r.is_ok() {
            put_varint(&mut self.bufs.vbuf, tmp.len() as u64);
            self.bufs.vbuf.extend_from_slice(&tmp);
        }
        self.nbuf = tmp;
        r.map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, id: u32, bytes: &[u8]) -> Result<T> {
        self.codec.decode(bytes).map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    /// The expiry a list append carries (0 without TTL).
    pub(crate) fn list_expiry(&self, id: u32) -> u64 {
        self.ttl_of(id)
            .map_or(0, |t| self.now().saturating_add(t.ttl_millis))
    }
}

/// A stored value's bytes without its expiry prefix, or `None` if it has expired.
pub(crate) fn live(ttl: Option<StateTtl>, stored: &[u8], now: u64) -> Option<&[u8]> {
    match ttl {
        None => Some(stored),
        Some(_) => {
            let (expiry, rest) = split_expiry(stored)?;
            (expiry > now).then_some(rest)
        }
    }
}

/// Registers states with a time-to-live (see [`Journal::with_ttl`]).
#[derive(Debug)]
pub struct Registrar<'j, C: Codec> {
    journal: &'j mut Journal<C>,
    ttl: Option<StateTtl>,
}

impl<C: Codec> Registrar<'_, C> {
    /// Registers (or opens) a [`ValueState`](crate::ValueState).
    pub fn value_state<K, V>(self, name: &str) -> Result<crate::ValueState<K, V>> {
        let id = self.journal.register(name, StateKind::Value, self.ttl)?;
        Ok(crate::ValueState::new(id))
    }

    /// Registers (or opens) a [`ListState`](crate::ListState).
    pub fn list_state<K, E>(self, name: &str) -> Result<crate::ListState<K, E>> {
        let id = self.journal.register(name, StateKind::List, self.ttl)?;
        Ok(crate::ListState::new(id))
    }

    /// Registers (or opens) a [`MapState`](crate::MapState).
    pub fn map_state<K, UK, UV>(self, name: &str) -> Result<crate::MapState<K, UK, UV>> {
        let id = self.journal.register(name, StateKind::Map, self.ttl)?;
        Ok(crate::MapState::new(id))
    }

    /// Registers (or opens) a [`ReducingState`](crate::ReducingState).
    pub fn reducing_state<K, V, F>(
        self,
        name: &str,
        reduce: F,
    ) -> Result<crate::ReducingState<K, V, F>>
    where
        F: Fn(&V, &V) -> V,
    {
        let id = self.journal.register(name, StateKind::Reducing, self.ttl)?;
        Ok(crate::ReducingState::new(id, reduce))
    }

    /// Registers (or opens) an [`AggregatingState`](crate::AggregatingState).
    pub fn aggregating_state<K, A>(
        self,
        name: &str,
        aggregate: A,
    ) -> Result<crate::AggregatingState<K, A>>
    where
        A: crate::AggregateFunction,
    {
        let id = self
            .journal
            .register(name, StateKind::Aggregating, self.ttl)?;
        Ok(crate::AggregatingState::new(id, aggregate))
    }
}
