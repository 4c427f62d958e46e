//! Remote checkpoints: ship a journal's checkpoints to an object store (S3, GCS, Azure, a shared
//! file system, memory) through [`object_store`], and restore any of them into an empty directory
//! on another machine.
//!
//! * [`RemoteStore`]: an `Arc<dyn ObjectStore>` plus a prefix (or a URL: `s3://bucket/prefix`,
//!   `file:///path`, `memory:///`), with the upload settings ([`RemoteOptions`]).
//! * [`Shipper`]: one writer of a store, with its **epoch**. [`Journal::push_checkpoint`] and
//!   [`Journal::checkpoint_and_push`] hand it a local checkpoint and return at once with a
//!   [`PushHandle`] (a future, or [`PushHandle::wait`] without a runtime): appends go on while
//!   the upload runs, and the checkpoint's files stay pinned against garbage collection until it
//!   ends.
//! * A push uploads only what the store lacks: a snapshot object when the checkpoint's snapshot is
//!   new, and for each segment the bytes after those the previous remote checkpoint already holds
//!   (one new immutable chunk). The manifest goes last, created conditionally under the next
//!   sequence number, so two writers never overwrite each other, and it carries the writer's epoch
//!   so a newer writer fences off an older one ([`Error::Fenced`]).
//! * [`RemoteStore::restore`] writes a checkpoint into an empty directory, verifying every
//!   checksum; [`Journal::open_at_checkpoint`](crate::Journal::open_at_checkpoint) (or `open`)
//!   then opens it at exactly the checkpoint's state.
//! * [`RemoteStore::restore_key_groups`] restores a key-group range of one checkpoint (scale
//!   out); [`restore_merged`] restores a range from several checkpoints with disjoint ranges —
//!   the N tasks of a job, each pushing under its own prefix — into one journal (scale in, and
//!   with ranges cutting across the sources any N → M rescale).
//! * [`RemoteStore::collect_garbage`] keeps the last N remote checkpoints and deletes every
//!   object none of them names.
//!
//! The object layout and the manifest encoding are specified in `docs/FORMAT.md` ("Remote
//! checkpoints"); the protocol is argued in `docs/DESIGN.md`.
//!
//! [`Journal::push_checkpoint`]: crate::Journal::push_checkpoint
//! [`Journal::checkpoint_and_push`]: crate::Journal::checkpoint_and_push

mod gc;
pub mod layout;
mod merge;
mod progress;
pub(crate) mod push;
mod restore;
mod staging;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use crate::codec::remote_manifest::{Chunk, RemoteManifest, RemoteSegment, RemoteSnapshot};
pub use gc::RemoteGcReport;
pub use merge::{restore_merged, restore_merged_blocking, MergeReport, MergeSource, MergedSource};
pub use progress::Progress;
pub use push::{PushHandle, PushReport, Shipper};
pub use restore::RestoreReport;

use crate::error::{Error, Result};

/// Upload settings of a [`RemoteStore`].
///
/// | option | default |
/// |---|---|
/// | multipart threshold | 16 MiB: larger objects go up in parts |
/// | part size | 8 MiB (S3 needs at least 5 MiB for every part but the last) |
/// | concurrency | 4 objects, and 4 parts per multipart upload, in flight at once |
/// | attempts | 3 tries of a push that failed on a store error, with exponential backoff |
/// | backoff | 100 ms, doubling, at most 5 s |
/// | upload timeout | none: the uploads of one push attempt may take as long as they take |
/// | progress | none: no byte counters ([`Progress`]) |
/// | ranged GET size | 64 MiB: a key-group restore fetches its blocks in pieces of this size |
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    multipart_threshold: u64,
    part_size: usize,
    concurrency: usize,
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    upload_timeout: Option<Duration>,
    progress: Option<Arc<Progress>>,
    range_get_size: u64,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            concurrency: 4,
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            upload_timeout: None,
            progress: None,
            range_get_size: 64 << 20,
        }
    }
}

impl RemoteOptions {
    /// Objects larger than this are uploaded in parts.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// Size of each part of a multipart upload (at least 1 byte; S3 wants ≥ 5 MiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// Objects (and parts of one object) uploaded or downloaded at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How often a push is tried when the store fails (at least 1). A fenced writer or a lost
    /// manifest race is never retried.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// A bound on the data uploads of one push attempt (not on the manifest's conditional
    /// create, whose outcome must be known: a create cut off mid-flight could have published).
    /// An attempt that exceeds it fails as a store error, and is retried.
    pub fn upload_timeout(mut self, limit: Duration) -> Self {
        self.upload_timeout = Some(limit);
        self
    }

    /// Byte counters that pushes and restores with these options keep up to date while they run
    /// (see [`Progress`]).
    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The largest ranged GET of a key-group (or merged) restore: the blocks of its range are
    /// fetched in pieces of this size (at least 1 byte), `concurrency` at a time, so memory stays
    /// bounded by their product. (Some servers, moto among them, copy the whole object for each
    /// ranged GET: small pieces make those slow.)
    pub fn range_get_size(mut self, bytes: u64) -> Self {
        self.range_get_size = bytes.max(1);
        self
    }

    /// The wait before the first retry (doubled after each failure, capped at `max`).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }
}

/// An object store and the prefix under which one job's checkpoints live.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    opts: RemoteOptions,
}

/// A remote checkpoint, as listed by [`RemoteStore::checkpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCheckpoint {
    /// Its number in the store (1, 2, ...): what [`RemoteStore::restore`] takes.
    pub seq: u64,
    /// The epoch of the writer that published it.
    pub epoch: u64,
    /// The local checkpoint id it was pushed from.
    pub checkpoint_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// The LSN of its snapshot (0: none).
    pub snapshot_lsn: u64,
    /// Bytes of the objects it names (snapshot and chunks), which a restore downloads.
    pub bytes: u64,
}

impl RemoteCheckpoint {
    fn of(m: &RemoteManifest) -> Self {
        RemoteCheckpoint {
            seq: m.seq,
            epoch: m.epoch,
            checkpoint_id: m.checkpoint_id,
            lsn: m.lsn,
            snapshot_lsn: m.snapshot.as_ref().map_or(0, |s| s.lsn),
            bytes: m.snapshot.as_ref().map_or(0, |s| s.len)
                + m.segments.iter().map(|s| s.len).sum::<u64>(),
        }
    }
}

impl RemoteStore {
    /// A store and a prefix (`""` for the store's root) under which the checkpoints live.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self> {
        let prefix = StorePath::parse(prefix).map_err(|e| Error::InvalidOptions {
            name: "remote prefix",
            reason: format!("{prefix:?}: {e}"),
        })?;
        Ok(RemoteStore {
            store,
            prefix,
            opts: RemoteOptions::default(),
        })
    }

    /// A store from a URL as `object_store` parses it (`s3://bucket/prefix`, `file:///dir`,
    /// `memory:///`, `gs://…`, `az://…` where those features are built), with its path as the
    /// prefix. Credentials and settings come from `options` (e.g. `("aws_endpoint", "http://…")`,
    /// `("aws_allow_http", "true")`); for S3, also see `object_store::aws::AmazonS3Builder`.
    pub fn from_url_opts<I, K, V>(url: &str, options: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let invalid = |reason: String| Error::InvalidOptions {
            name: "remote URL",
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("{url:?}: {e}")))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options)
            .map_err(|e| invalid(format!("{url:?}: {e}")))?;
        Ok(RemoteStore {
            store: Arc::from(store),
            prefix,
            opts: RemoteOptions::default(),
        })
    }

    /// [`RemoteStore::from_url_opts`] without options.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_opts(url, std::iter::empty::<(&str, String)>())
    }

    /// The same store with other upload settings.
    pub fn with_options(mut self, opts: RemoteOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix.
    pub fn prefix(&self) -> &StorePath {
        &self.prefix
    }

    /// The options.
    pub fn options(&self) -> &RemoteOptions {
        &self.opts
    }

    /// The store path of `key` (relative to the prefix).
    pub(crate) fn path(&self, key: &str) -> StorePath {
        if self.prefix.as_ref().is_empty() {
            StorePath::from_iter(key.split('/'))
        } else {
            StorePath::from_iter(self.prefix.parts().chain(key.split('/').map(Into::into)))
        }
    }

    /// How errors name `key`: the store and the full path.
    pub(crate) fn describe(&self, key: &str) -> String {
        format!("{}/{}", self.store, self.path(key))
    }

    pub(crate) fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> Error {
        Error::Remote {
            op,
            object: self.describe(key),
            source: Box::new(e),
        }
    }

    /// The key (relative to the prefix) of a listed object.
    fn relative(&self, meta: &ObjectMeta) -> Option<String> {
        let full = meta.location.as_ref();
        let p = self.prefix.as_ref();
        if p.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(p)?.strip_prefix('/').map(str::to_string)
    }

    /// Objects under `folder`, with their keys relative to the prefix.
    pub(crate) async fn list(&self, folder: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let path = self.path(folder);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| self.err("list", folder, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| self.relative(&m).map(|k| (k, m)))
            .collect())
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<bytes::Bytes> {
        let path = self.path(key);
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.err("get", key, e))?;
        got.bytes().await.map_err(|e| self.err("get", key, e))
    }

    pub(crate) async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes> {
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(&self.path(key), range.clone())
            .await
            .map_err(|e| self.err("get range of", key, e))?;
        if b.len() as u64 != want {
            return Err(Error::RemoteCorruption {
                object: self.describe(key),
                offset: range.start,
                detail: format!("asked for {want} bytes, got {}", b.len()),
            });
        }
        Ok(b)
    }

    /// [`RemoteStore::restore_key_groups`], blocking.
    pub fn restore_key_groups_blocking(
        &self,
        seq: Option<u64>,
        range: crate::KeyGroupRange,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<RestoreReport> {
        block_on(self.restore_key_groups(seq, range, dir.as_ref()))
    }

    /// Creates `key` holding `bytes` unless it exists: `Ok(false)` when it did.
    pub(crate) async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("create", key, e)),
        }
    }

    /// Sequence numbers of the manifests in the store, ascending.
    pub(crate) async fn manifest_seqs(&self) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .list(layout::MANIFESTS)
            .await?
            .iter()
            .filter_map(|(k, _)| layout::parse_manifest_name(k.rsplit('/').next()?))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Reads and decodes manifest `seq`.
    pub async fn manifest(&self, seq: u64) -> Result<RemoteManifest> {
        let key = layout::manifest_key(seq);
        let bytes = self.get_bytes(&key).await?;
        let m = RemoteManifest::decode(&bytes).map_err(|e| Error::RemoteCorruption {
            object: self.describe(&key),
            offset: 0,
            detail: format!("not a valid remote manifest: {e}"),
        })?;
        if m.seq != seq {
            return Err(Error::RemoteCorruption {
                object: self.describe(&key),
                offset: 0,
                detail: format!(
                    "the manifest of checkpoint {seq} holds checkpoint {}",
                    m.seq
                ),
            });
        }
        Ok(m)
    }

    /// The newest manifest, if any.
    pub async fn latest(&self) -> Result<Option<RemoteManifest>> {
        match self.manifest_seqs().await?.last() {
            Some(&seq) => self.manifest(seq).await.map(Some),
            None => Ok(None),
        }
    }

    /// The remote checkpoints, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<RemoteCheckpoint>> {
        let mut out = Vec::new();
        for seq in self.manifest_seqs().await? {
            out.push(RemoteCheckpoint::of(&self.manifest(seq).await?));
        }
        Ok(out)
    }

    /// The highest epoch claimed in the store (by a marker or a manifest), and the object that
    /// shows it.
    pub(crate) async fn max_epoch(&self) -> Result<Option<(u64, String)>> {
        Ok(self
            .list(layout::EPOCHS)
            .await?
            .into_iter()
            .filter_map(|(k, _)| Some((layout::parse_epoch_name(k.rsplit('/').next()?)?, k)))
            .max())
    }

    /// Claims a new epoch: one above every epoch seen in the store, created with a conditional
    /// create so that two claimants never get the same one. A [`Shipper`] with it fences off
    /// every writer with an older epoch.
    pub async fn claim_epoch(&self) -> Result<u64> {
        let mut next = 1 + self.max_epoch().await?.map_or(0, |(e, _)| e);
        if let Some(m) = self.latest().await? {
            next = next.max(m.epoch + 1);
        }
        loop {
            if self.create(&layout::epoch_key(next), Vec::new()).await? {
                return Ok(next);
            }
            next += 1; // another claimant took it
        }
    }

    /// The highest epoch in the store (of an epoch marker or a manifest), 0 when there is none:
    /// a [`Shipper::with_epoch`] with it joins the store's current writers without fencing them
    /// off (a new epoch, [`RemoteStore::claim_epoch`], would).
    pub async fn current_epoch(&self) -> Result<u64> {
        let marked = self.max_epoch().await?.map_or(0, |(e, _)| e);
        let published = self.latest().await?.map_or(0, |m| m.epoch);
        Ok(marked.max(published))
    }

    /// [`RemoteStore::current_epoch`], blocking.
    pub fn current_epoch_blocking(&self) -> Result<u64> {
        block_on(self.current_epoch())
    }

    /// [`RemoteStore::manifest`], blocking.
    pub fn manifest_blocking(&self, seq: u64) -> Result<RemoteManifest> {
        block_on(self.manifest(seq))
    }

    /// [`RemoteStore::checkpoints`], blocking.
    pub fn checkpoints_blocking(&self) -> Result<Vec<RemoteCheckpoint>> {
        block_on(self.checkpoints())
    }

    /// [`RemoteStore::claim_epoch`], blocking.
    pub fn claim_epoch_blocking(&self) -> Result<u64> {
        block_on(self.claim_epoch())
    }

    /// [`RemoteStore::restore`], blocking.
    pub fn restore_blocking(
        &self,
        seq: Option<u64>,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<RestoreReport> {
        block_on(self.restore(seq, dir.as_ref()))
    }

    /// [`RemoteStore::collect_garbage`], blocking.
    pub fn collect_garbage_blocking(
        &self,
        retain: usize,
        min_age: Duration,
    ) -> Result<RemoteGcReport> {
        block_on(self.collect_garbage(retain, min_age))
    }
}

/// The runtime that blocking wrappers and shippers without a handle run on: two worker threads,
/// created on first use, living as long as the process.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("statejournal-remote")
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the remote runtime", "<tokio runtime>", e))?;
    Ok(RT.get_or_init(|| rt))
}

/// Runs `fut` to completion on the shared runtime. Refuses (rather than panics) inside an async
/// runtime, where the async method must be awaited instead.
pub(crate) fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InvalidOptions {
            name: "blocking remote call",
            reason: "called from inside an async runtime: await the async method instead".into(),
        });
    }
    runtime()?.block_on(fut)
}

/// Runs blocking file work (reads, writes, hashing, fsync) on the runtime's blocking pool, so a
/// large snapshot never holds one of its worker threads (other tasks, a user's among them, would
/// stall behind it). `path` names the file for the error if the work panics.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    path: &std::path::Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => Err(Error::io(what, path, std::io::Error::other(e))),
    }
}

/// Waits before retry `attempt` (1-based).
pub(crate) async fn backoff(opts: &RemoteOptions, attempt: u32) {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    let wait = opts
        .initial_backoff
        .saturating_mul(factor)
        .min(opts.max_backoff);
    tokio::time::sleep(wait).await;
}
