//! Pushing a local checkpoint: what it pins, what it uploads, and the manifest last.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::pin::Pin as StdPin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::layout;
use super::{backoff, RemoteCheckpoint, RemoteStore};
use crate::checkpoint::{Catalog, Pin};
use crate::codec::manifest::Manifest;
use crate::codec::remote_manifest::{Chunk, RemoteManifest, RemoteSegment, RemoteSnapshot};
use crate::error::{Error, Result};
use crate::format;
use crate::journal::lock;
use crate::log::Log;
use crate::segment::Segment;

/// Keeps a checkpoint's files from garbage collection while a push reads them.
struct PinGuard {
    catalog: Arc<Mutex<Catalog>>,
    token: u64,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        lock(&self.catalog).unpin(self.token);
    }
}

impl std::fmt::Debug for PinGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinGuard({})", self.token)
    }
}

#[derive(Debug)]
struct SnapshotSource {
    lsn: u64,
    len: u64,
    path: PathBuf,
    /// Opened while pinned: the bytes stay readable whatever happens to the name.
    file: Arc<File>,
    /// (device, inode, modification time, length): which file the cached hashes are of.
    ident: (u64, u64, i64, u64),
}

#[derive(Debug)]
struct SegmentSource {
    seg: Arc<Segment>,
    /// (device, inode) of the segment file: which file a remembered verification is of.
    ident: (u64, u64),
    base_lsn: u64,
    len: u64,
    crc: u32,
}

/// Everything a push reads, taken (and pinned) when it is started.
#[derive(Debug)]
pub(crate) struct PushJob {
    /// Held until the push ends: the directory stays locked, so no other opener rewrites a
    /// segment the push reads through its mapping.
    _log: Arc<Log>,
    _pin: PinGuard,
    manifest: Manifest,
    local_manifest: Vec<u8>,
    snapshot: Option<SnapshotSource>,
    segments: Vec<SegmentSource>,
}

/// Takes what pushing retained checkpoint `id` needs from the journal in `dir`, pinning its files.
pub(crate) fn prepare(
    dir: &std::path::Path,
    log: &Arc<Log>,
    catalog: &Arc<Mutex<Catalog>>,
    id: u64,
) -> Result<PushJob> {
    let mut cat = lock(catalog);
    let manifest_path = dir.join(format::manifest_file_name(id));
    let Some(m) = cat.checkpoints.get(&id).cloned() else {
        return Err(Error::InvalidOptions {
            name: "checkpoint id",
            reason: format!(
                "there is no retained checkpoint {id} ({} does not exist)",
                manifest_path.display()
            ),
        });
    };
    // Without a segment after the snapshot (a checkpoint at its snapshot's LSN) the remote copy
    // still needs the segment holding record `lsn`: the restored log must end there.
    let refs = if m.segments.is_empty() {
        cat.segment_refs(log, m.lsn.saturating_sub(1), m.lsn)?
    } else {
        m.segments.clone()
    };
    if refs.is_empty() {
        return Err(Error::InvalidOptions {
            name: "checkpoint id",
            reason: format!(
                "checkpoint {id} lies at its snapshot's LSN {} and the segment holding that LSN \
                 is gone (the log rolled past it): take a new checkpoint and push that",
                m.lsn
            ),
        });
    }
    let live = log.segments();
    let mut segments = Vec::with_capacity(refs.len());
    for r in &refs {
        let Some(seg) = live.iter().find(|s| s.id() == r.id) else {
            return Err(Error::InvalidOptions {
                name: "checkpoint id",
                reason: format!(
                    "checkpoint {id} names segment {}, which is not in the log",
                    format::segment_file_name(r.id)
                ),
            });
        };
        let md = std::fs::metadata(seg.path()).map_err(|e| Error::io("stat", seg.path(), e))?;
        segments.push(SegmentSource {
            seg: Arc::clone(seg),
            ident: (md.dev(), md.ino()),
            base_lsn: r.base_lsn,
            len: r.len,
            crc: r.crc,
        });
    }
    let snapshot = match &m.snapshot {
        None => None,
        Some(s) => {
            let path = dir.join(&s.file);
            let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let md = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
            if md.len() != s.len {
                return Err(Error::io(
                    "push",
                    &path,
                    std::io::Error::other(format!(
                        "checkpoint {id} names {} bytes of it, the file has {}",
                        s.len,
                        md.len()
                    )),
                ));
            }
            Some(SnapshotSource {
                lsn: s.lsn,
                len: s.len,
                path,
                file: Arc::new(file),
                ident: (md.dev(), md.ino(), md.mtime(), md.len()),
            })
        }
    };
    let first_lsn = refs.first().map_or(m.lsn, |r| r.base_lsn).max(1);
    let token = cat.pin(Pin {
        snapshot: m.snapshot.as_ref().map(|s| s.lsn),
        first_lsn,
    });
    drop(cat);
    Ok(PushJob {
        _log: Arc::clone(log),
        _pin: PinGuard {
            catalog: Arc::clone(catalog),
            token,
        },
        local_manifest: m.encode(),
        manifest: m,
        snapshot,
        segments,
    })
}

/// What a push uploaded and published — or, for a checkpoint the store already holds, where it
/// is ([`PushReport::already_published`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The remote checkpoint's number in the store.
    pub seq: u64,
    /// The store already held this checkpoint, as remote checkpoint `seq` (a manifest carrying
    /// its local manifest byte for byte, the newest or behind a later checkpoint of the same
    /// writer: see [`RemoteStore::find_published`]): nothing was uploaded and no manifest
    /// written. Pushing a checkpoint again is idempotent; without this a second push would have
    /// published a copy under a new number. `epoch` is then the epoch of the writer that
    /// published it.
    pub already_published: bool,
    /// The local checkpoint pushed.
    pub checkpoint_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// The writer's epoch.
    pub epoch: u64,
    /// Objects uploaded (the manifest excluded).
    pub objects_uploaded: usize,
    /// Bytes of them.
    pub bytes_uploaded: u64,
    /// Of which bytes of snapshots.
    pub snapshot_bytes_uploaded: u64,
    /// Objects of the previous remote checkpoint named again, not uploaded.
    pub objects_reused: usize,
    /// Bytes of the manifest.
    pub manifest_bytes: u64,
    /// Tries it took (1 without a failure).
    pub attempts: u32,
    /// Wall time from the start of the upload to the manifest's publication.
    pub duration: Duration,
}

/// What a shipper remembers between pushes: which chunk objects' contents it has checked against
/// which local segment file (by device and inode: a journal restored in the same process has other
/// files with other bytes at the same ranges), and the hashes of snapshot files.
#[derive(Debug, Default)]
struct ShipState {
    verified: HashSet<(String, (u64, u64))>,
    snapshot_hashes: HashMap<(u64, u64, i64, u64), (u32, u64)>,
}

/// One writer of a [`RemoteStore`], with its epoch: pushes checkpoints one at a time, in the
/// order they were started, on a tokio runtime (its own shared one unless given a handle).
#[derive(Debug, Clone)]
pub struct Shipper {
    remote: RemoteStore,
    epoch: u64,
    handle: tokio::runtime::Handle,
    state: Arc<tokio::sync::Mutex<ShipState>>,
    order: Arc<Order>,
}

/// Pushes run in the order they were started: each takes a ticket when it is spawned (in the
/// caller's thread, so in call order) and waits for its turn. (A mutex alone would not do: the
/// runtime may poll a later task first.)
#[derive(Debug)]
struct Order {
    next_ticket: std::sync::atomic::AtomicU64,
    turn: tokio::sync::watch::Sender<u64>,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            next_ticket: std::sync::atomic::AtomicU64::new(0),
            turn: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Passes the turn on when a push ends, however it ends.
struct Turn(Arc<Order>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.turn.send_modify(|t| *t += 1);
    }
}

impl Shipper {
    /// A writer with a newly claimed epoch ([`RemoteStore::claim_epoch`]), fencing off every
    /// earlier writer of the store. Blocking; runs on the crate's shared runtime.
    pub fn new(remote: RemoteStore) -> Result<Self> {
        let epoch = remote.claim_epoch_blocking()?;
        Self::with_epoch(remote, epoch)
    }

    /// [`Shipper::new`] for async callers: claims an epoch and runs uploads on the current
    /// tokio runtime.
    pub async fn claim(remote: RemoteStore) -> Result<Self> {
        let epoch = remote.claim_epoch().await?;
        Ok(Shipper {
            remote,
            epoch,
            handle: tokio::runtime::Handle::current(),
            state: Arc::default(),
            order: Arc::default(),
        })
    }

    /// A writer with an epoch the caller assigns (say, the job attempt number its scheduler
    /// gives it), which must be at least every epoch already in the store for pushes to succeed.
    /// Two writers given the same epoch are not fenced from each other; the conditional create of
    /// each manifest still lets exactly one of them publish each checkpoint number.
    pub fn with_epoch(remote: RemoteStore, epoch: u64) -> Result<Self> {
        Ok(Shipper {
            remote,
            epoch,
            handle: super::runtime()?.handle().clone(),
            state: Arc::default(),
            order: Arc::default(),
        })
    }

    /// Runs uploads on the given runtime instead of the shared one.
    pub fn on_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.handle = handle;
        self
    }

    /// The writer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The store.
    pub fn remote(&self) -> &RemoteStore {
        &self.remote
    }

    pub(crate) fn spawn(&self, job: PushJob) -> PushHandle {
        let remote = self.remote.clone();
        let epoch = self.epoch;
        let state = Arc::clone(&self.state);
        let checkpoint_id = job.manifest.id;
        let order = Arc::clone(&self.order);
        let ticket = order
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let task = self.handle.spawn(async move {
            let mut turn = order.turn.subscribe();
            // The sender lives in `order`, which this task holds: the wait cannot fail.
            let _ = turn.wait_for(|t| *t == ticket).await;
            let _turn = Turn(order);
            let mut st = state.lock().await;
            push_with_retries(&remote, epoch, &mut st, &job).await
        });
        PushHandle {
            checkpoint_id,
            task,
        }
    }
}

/// A push in progress: a future of its [`PushReport`], or [`PushHandle::wait`] to block.
/// Dropping the handle does not cancel the push.
#[derive(Debug)]
pub struct PushHandle {
    checkpoint_id: u64,
    task: tokio::task::JoinHandle<Result<PushReport>>,
}

impl PushHandle {
    /// The local checkpoint being pushed.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// Whether the push has ended (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Blocks until the push ends. (From inside an async runtime, `.await` the handle instead.)
    pub fn wait(self) -> Result<PushReport> {
        futures::executor::block_on(self)
    }
}

impl std::future::Future for PushHandle {
    type Output = Result<PushReport>;

    fn poll(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.checkpoint_id;
        StdPin::new(&mut self.task).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(e) => Err(Error::Remote {
                op: "push",
                object: format!("checkpoint {id}"),
                source: Box::new(e),
            }),
        })
    }
}

async fn push_with_retries(
    remote: &RemoteStore,
    epoch: u64,
    st: &mut ShipState,
    job: &PushJob,
) -> Result<PushReport> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match push_once(remote, epoch, st, job).await {
            Ok(mut r) => {
                r.attempts = attempt;
                r.duration = started.elapsed();
                return Ok(r);
            }
            // Only a failing store is worth another try; a fenced writer, a lost race or a
            // local error would fail the same way again.
            Err(Error::Remote { .. }) if attempt < remote.opts.attempts => {
                backoff(&remote.opts, attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Bytes to upload under a name.
enum Source {
    Bytes(Bytes),
    File {
        file: Arc<File>,
        path: PathBuf,
        len: u64,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }
}

fn read_at(file: &File, path: &std::path::Path, offset: u64, len: usize) -> Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Bytes::from(buf))
}

/// CRC-32 and XXH3-64 of a whole file, read in 8 MiB pieces (on the blocking pool).
async fn hash_file(s: &SnapshotSource) -> Result<(u32, u64)> {
    let (file, path, len) = (Arc::clone(&s.file), s.path.clone(), s.len);
    super::blocking("read", &s.path, move || {
        let mut crc = crc32fast::Hasher::new();
        let mut xxh = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; (len.min(8 << 20)) as usize];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(8 << 20) as usize;
            let piece = &mut buf[..n];
            file.read_exact_at(piece, at)
                .map_err(|e| Error::io("read", &path, e))?;
            crc.update(piece);
            xxh.update(piece);
            at += n as u64;
        }
        Ok((crc.finalize(), xxh.digest()))
    })
    .await
}

/// [`read_at`] on the blocking pool.
async fn read_at_blocking(
    file: &Arc<File>,
    path: &std::path::Path,
    offset: u64,
    len: usize,
) -> Result<Bytes> {
    let (file, p) = (Arc::clone(file), path.to_path_buf());
    super::blocking("read", path, move || read_at(&file, &p, offset, len)).await
}

fn hash(b: &[u8]) -> (u32, u64) {
    (crc32fast::hash(b), xxhash_rust::xxh3::xxh3_64(b))
}

/// [`hash`], on the blocking pool for more than 1 MiB (a 64 MiB segment takes tens of
/// milliseconds: too long to hold a worker thread).
async fn hash_bytes(b: Bytes, path: &std::path::Path) -> Result<(u32, u64)> {
    if b.len() <= 1 << 20 {
        return Ok(hash(&b));
    }
    super::blocking("checksum", path, move || Ok(hash(&b))).await
}

impl RemoteStore {
    /// Whether a push of local checkpoint `local` by a writer of `epoch` would find it already
    /// published, and under which number: then [`Journal::push_checkpoint`] publishes nothing
    /// ([`PushReport::already_published`]). The command line's `checkpoint push` asks this
    /// before it opens the journal.
    ///
    /// A remote checkpoint holds `local` when its manifest carries `local` byte for byte (the
    /// same log, id, LSN, creation time, snapshot and segment prefixes with their CRCs: it
    /// restores exactly that checkpoint; one of the same id and LSN from another history — a
    /// restored job and its zombie share a log — does not count). A push finds it published when
    /// it is the newest remote checkpoint, or when the newest is a later checkpoint of the same
    /// log and epoch (the push would otherwise be refused: it would roll the writer's history
    /// back). Not otherwise: a checkpoint published before another log's, or another epoch's,
    /// newer one is published again by a push — making it the newest is what such a push is for
    /// (an operator taking a store over, `--new-epoch`).
    ///
    /// Reads the newest manifest, and only when it is a later one of the same log and epoch the
    /// ones before it, back to the first older checkpoint of the log.
    ///
    /// [`Journal::push_checkpoint`]: crate::Journal::push_checkpoint
    pub async fn find_published(
        &self,
        local: &Manifest,
        epoch: u64,
    ) -> Result<Option<RemoteCheckpoint>> {
        let latest = self.latest().await?;
        Ok(self
            .published_as(&local.encode(), local, epoch, latest.as_ref())
            .await?
            .map(|m| RemoteCheckpoint::of(&m)))
    }

    /// [`RemoteStore::find_published`], blocking.
    pub fn find_published_blocking(
        &self,
        local: &Manifest,
        epoch: u64,
    ) -> Result<Option<RemoteCheckpoint>> {
        super::block_on(self.find_published(local, epoch))
    }

    /// [`RemoteStore::find_published`] of `local` (encoded as `encoded`), given the newest
    /// manifest, already read.
    async fn published_as(
        &self,
        encoded: &[u8],
        local: &Manifest,
        epoch: u64,
        latest: Option<&RemoteManifest>,
    ) -> Result<Option<RemoteManifest>> {
        let Some(newest) = latest else {
            return Ok(None);
        };
        if newest.local_manifest == encoded {
            return Ok(Some(newest.clone()));
        }
        let behind =
            newest.epoch == epoch && newest.log_id == local.log_id && newest.lsn > local.lsn;
        if !behind {
            return Ok(None);
        }
        let older = |m: &RemoteManifest| m.log_id == local.log_id && m.lsn < local.lsn;
        for seq in self.manifest_seqs().await?.into_iter().rev() {
            if seq >= newest.seq {
                continue;
            }
            let m = match self.manifest(seq).await {
                Ok(m) => m,
                // Collected since the listing, or damaged (it restores nothing): not this one.
                Err(Error::RemoteCorruption { .. }) => continue,
                Err(Error::Remote { source, .. })
                    if matches!(
                        source.downcast_ref::<object_store::Error>(),
                        Some(object_store::Error::NotFound { .. })
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            if m.local_manifest == encoded {
                return Ok(Some(m));
            }
            if older(&m) {
                break;
            }
        }
        Ok(None)
    }

    /// Uploads `source` under `key`: one PUT, or a multipart upload with several parts in flight.
    async fn upload(&self, key: &str, source: Source) -> Result<u64> {
        let len = source.len();
        let path = self.path(key);
        if len <= self.opts.multipart_threshold {
            let bytes = match source {
                Source::Bytes(b) => b,
                Source::File { file, path, len } => {
                    read_at_blocking(&file, &path, 0, len as usize).await?
                }
            };
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.err("put", key, e))?;
            self.progress_add(len, false);
            return Ok(len);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.err("start multipart upload of", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.opts.part_size);
        let step = self.opts.part_size as u64;
        let mut at = 0;
        while at < len {
            let n = (len - at).min(step);
            let part = match &source {
                Source::Bytes(b) => b.slice(at as usize..(at + n) as usize),
                Source::File { file, path, .. } => {
                    match read_at_blocking(file, path, at, n as usize).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = w.abort().await; // no incomplete upload left in the store
                            return Err(e);
                        }
                    }
                }
            };
            if let Err(e) = w.wait_for_capacity(self.opts.concurrency).await {
                let _ = w.abort().await;
                return Err(self.err("upload a part of", key, e));
            }
            w.put(part);
            self.progress_add(n, false);
            at += n;
        }
        w.finish()
            .await
            .map_err(|e| self.err("complete multipart upload of", key, e))?;
        Ok(len)
    }
}

async fn push_once(
    remote: &RemoteStore,
    epoch: u64,
    st: &mut ShipState,
    job: &PushJob,
) -> Result<PushReport> {
    let m = &job.manifest;
    // Fencing: a writer with a newer epoch has claimed the store, or published in it.
    if let Some((newer, key)) = remote.max_epoch().await? {
        if newer > epoch {
            return Err(Error::Fenced {
                object: remote.describe(&key),
                epoch,
                newer,
            });
        }
    }
    let latest = remote.latest().await?;
    if let Some(l) = &latest {
        if l.epoch > epoch {
            return Err(Error::Fenced {
                object: remote.describe(&layout::manifest_key(l.seq)),
                epoch,
                newer: l.epoch,
            });
        }
    }
    // Already there (pushed before, or by an attempt whose answer was lost): say so, publish no
    // copy of it under a new number (see `find_published` for when a copy is published).
    if let Some(found) = remote
        .published_as(&job.local_manifest, m, epoch, latest.as_ref())
        .await?
    {
        return Ok(PushReport {
            seq: found.seq,
            already_published: true,
            checkpoint_id: m.id,
            lsn: m.lsn,
            epoch: found.epoch,
            objects_uploaded: 0,
            bytes_uploaded: 0,
            snapshot_bytes_uploaded: 0,
            objects_reused: 0,
            manifest_bytes: 0,
            attempts: 1,
            duration: Duration::ZERO,
        });
    }
    if let Some(l) = latest
        .as_ref()
        .filter(|l| l.epoch == epoch && l.log_id == m.log_id)
    {
        if l.lsn > m.lsn {
            return Err(Error::InvalidOptions {
                name: "checkpoint id",
                reason: format!(
                    "checkpoint {} (LSN {}) is older than remote checkpoint {} (LSN {}) this \
                     writer published: it would become the newest",
                    m.id, m.lsn, l.seq, l.lsn
                ),
            });
        }
    }
    let seq = latest.as_ref().map_or(1, |l| l.seq + 1);
    // Reuse only what the newest checkpoint names: retention never drops the newest, so those
    // objects cannot be collected before our manifest (naming them too) is published.
    let prev = latest.as_ref().filter(|l| l.log_id == m.log_id);

    let mut uploads: Vec<(String, Source)> = Vec::new();
    let mut reused = 0usize;
    let mut snapshot_bytes_uploaded = 0;
    let snapshot = match &job.snapshot {
        None => None,
        Some(s) => {
            let (crc, xxh3) = match st.snapshot_hashes.get(&s.ident) {
                Some(h) => *h,
                None => {
                    let h = hash_file(s).await?;
                    st.snapshot_hashes.insert(s.ident, h);
                    h
                }
            };
            let object = layout::snapshot_key(m.log_id, s.lsn, crc, xxh3);
            let present = prev
                .and_then(|p| p.snapshot.as_ref())
                .is_some_and(|p| p.object == object && p.len == s.len);
            if present {
                reused += 1;
            } else {
                snapshot_bytes_uploaded = s.len;
                uploads.push((
                    object.clone(),
                    Source::File {
                        file: Arc::clone(&s.file),
                        path: s.path.clone(),
                        len: s.len,
                    },
                ));
            }
            Some(RemoteSnapshot {
                lsn: s.lsn,
                len: s.len,
                crc,
                xxh3,
                object,
            })
        }
    };

    let mut segments = Vec::with_capacity(job.segments.len());
    for s in &job.segments {
        let seg_id = s.seg.id();
        let unreadable = || {
            Error::io(
                "read",
                s.seg.path(),
                std::io::Error::other(format!("bytes below {} are not published", s.len)),
            )
        };
        let earlier: &[Chunk] = prev
            .and_then(|p| {
                p.segments
                    .iter()
                    .find(|r| r.id == seg_id && r.base_lsn == s.base_lsn)
            })
            .map_or(&[], |r| &r.chunks);
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in earlier {
            if c.end > s.len {
                break;
            }
            let same = st.verified.contains(&(c.object.clone(), s.ident)) || {
                let b = s
                    .seg
                    .slice(c.start as usize, c.end as usize)
                    .ok_or_else(unreadable)?;
                hash_bytes(b, s.seg.path()).await? == (c.crc, c.xxh3)
            };
            if !same {
                break; // another history of this segment (a zombie's, or before a restore)
            }
            chunks.push(c.clone());
            reused += 1;
            at = c.end;
        }
        if at < s.len {
            let bytes = s
                .seg
                .slice(at as usize, s.len as usize)
                .ok_or_else(unreadable)?;
            let (crc, xxh3) = hash_bytes(bytes.clone(), s.seg.path()).await?;
            let object = layout::chunk_key(m.log_id, s.base_lsn, at, s.len, crc, xxh3);
            chunks.push(Chunk {
                start: at,
                end: s.len,
                crc,
                xxh3,
                object: object.clone(),
            });
            uploads.push((object, Source::Bytes(bytes)));
        }
        segments.push(RemoteSegment {
            id: seg_id,
            base_lsn: s.base_lsn,
            file_len: s.seg.len() as u64,
            len: s.len,
            crc: s.crc,
            chunks,
        });
    }

    let objects_uploaded = uploads.len();
    remote.progress_start(uploads.iter().map(|(_, s)| s.len()).sum());
    let transfer = futures::stream::iter(uploads)
        .map(|(key, source)| async move { remote.upload(&key, source).await })
        .buffer_unordered(remote.opts.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) });
    let bytes_uploaded: u64 = match remote.opts.upload_timeout {
        None => transfer.await?,
        Some(limit) => match tokio::time::timeout(limit, transfer).await {
            Ok(r) => r?,
            Err(elapsed) => {
                return Err(Error::Remote {
                    op: "upload",
                    object: format!(
                        "{} objects of checkpoint {} (after {limit:?})",
                        objects_uploaded, m.id
                    ),
                    source: Box::new(elapsed),
                })
            }
        },
    };

    let rm = RemoteManifest {
        seq,
        epoch,
        checkpoint_id: m.id,
        lsn: m.lsn,
        log_id: m.log_id,
        created_millis: m.created_millis,
        local_manifest: job.local_manifest.clone(),
        snapshot,
        segments,
    };
    let encoded = rm.encode();
    let manifest_bytes = encoded.len() as u64;
    let key = layout::manifest_key(seq);
    if !remote.create(&key, encoded).await? {
        return Err(Error::RemoteConflict {
            object: remote.describe(&key),
        });
    }
    st.verified = rm
        .segments
        .iter()
        .zip(&job.segments)
        .flat_map(|(r, s)| r.chunks.iter().map(|c| (c.object.clone(), s.ident)))
        .collect();
    Ok(PushReport {
        seq,
        already_published: false,
        checkpoint_id: m.id,
        lsn: m.lsn,
        epoch,
        objects_uploaded,
        bytes_uploaded,
        snapshot_bytes_uploaded,
        objects_reused: reused,
        manifest_bytes,
        attempts: 1,
        duration: Duration::ZERO,
    })
}
