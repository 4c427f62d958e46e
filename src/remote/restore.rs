//! Restoring a remote checkpoint into an empty directory, every byte checked, and published whole
//! (see [`super::staging`]).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::staging::Staging;
use super::{layout, RemoteCheckpoint, RemoteStore};
use crate::codec::manifest::Manifest;
use crate::codec::meta::LogMeta;
use crate::codec::remote_manifest::{Chunk, RemoteManifest};
use crate::error::{Error, Result};
use crate::format;
use crate::keygroup::{KeyGroup, KeyGroupRange};
use crate::segment::sync_dir;
use crate::snapshot::{SnapshotReader, SnapshotWriter};

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The remote checkpoint restored.
    pub seq: u64,
    /// Its local checkpoint id: open the directory with
    /// [`Journal::open_at_checkpoint`](crate::Journal::open_at_checkpoint) and this id (or with
    /// `Journal::open`, which gives the same state).
    pub checkpoint_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// Objects downloaded.
    pub objects: usize,
    /// Bytes downloaded (snapshot and log chunks).
    pub bytes: u64,
    /// Files written (their final paths, in the target directory).
    pub files: Vec<PathBuf>,
    /// Wall time.
    pub duration: Duration,
}

/// Files written so far, removed again if the restore fails.
struct Written(Vec<PathBuf>);

impl Written {
    fn clean(&mut self) {
        for p in self.0.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

impl RemoteStore {
    /// Restores remote checkpoint `seq` (the newest when `None`) into `dir`, which must be empty
    /// or not exist: its snapshot, the log segment prefixes after it (padded with zeros to their
    /// original file size, so appends continue in place), `log.meta` and the checkpoint's local
    /// manifest. Every object's length, CRC-32 and XXH3-64, and every segment prefix's CRC-32, are
    /// checked. Then open the directory with
    /// [`Journal::open_at_checkpoint`](crate::Journal::open_at_checkpoint) (id
    /// [`RestoreReport::checkpoint_id`]).
    ///
    /// **Atomic**: the journal is built in a directory beside `dir`
    /// (`.{name}.restore-{random}.tmp`, in `dir`'s parent, on the same file system: `dir` must not
    /// be a mount point) and renamed to `dir` only when complete and durable, so `dir` holds the
    /// whole restore or is left as it was (missing or empty) — also after a crash. A failed
    /// restore removes its directory; one a crash left behind is removed by the next restore into
    /// `dir`, and one still in use by a running restore makes this one fail.
    pub async fn restore(&self, seq: Option<u64>, dir: &Path) -> Result<RestoreReport> {
        let started = Instant::now();
        let m = self.pick(seq).await?;
        let local = self.check_manifest(&m)?;
        let staging = Staging::beside(dir, "restore")?;
        self.progress_start(RemoteCheckpoint::of(&m).bytes);
        let mut written = Written(Vec::new());
        let outcome = self
            .restore_files(&m, &local, staging.path(), &mut written)
            .await;
        publish(staging, restored(&m, started, written, outcome)?)
    }

    /// Restores only key groups `range` of remote checkpoint `seq` (the newest when `None`) into
    /// `dir` (empty or missing): to scale out, each of several new journals takes a part of one
    /// checkpoint. Of the snapshot only the header, the footer and the blocks of `range` are
    /// downloaded (ranged GETs: the footer's index makes a key-group range one byte range), each
    /// block CRC-checked, and rewritten as a snapshot of just `range`; the log is downloaded whole
    /// (its records are not grouped), and replay skips other groups' records. The local manifest
    /// is rewritten for the range and the new snapshot. Open the directory with
    /// [`JournalOptions::key_group_range`](crate::JournalOptions::key_group_range)`(range)` and
    /// [`Journal::open_at_checkpoint`](crate::Journal::open_at_checkpoint). Atomic, as
    /// [`RemoteStore::restore`] is.
    pub async fn restore_key_groups(
        &self,
        seq: Option<u64>,
        range: KeyGroupRange,
        dir: &Path,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        let m = self.pick(seq).await?;
        let local = self.check_manifest(&m)?;
        if range.start() < local.kg_start || range.end() > local.kg_end {
            return Err(Error::InvalidOptions {
                name: "key_group_range",
                reason: format!(
                    "remote checkpoint {} holds key groups {}..{}, not all of {range}",
                    m.seq, local.kg_start, local.kg_end
                ),
            });
        }
        let staging = Staging::beside(dir, "restore")?;
        // The log whole; the snapshot's ranges are added as they are read.
        self.progress_start(m.segments.iter().map(|s| s.len).sum());
        let mut written = Written(Vec::new());
        let outcome = self
            .restore_subset(&m, local, range, staging.path(), &mut written, true)
            .await;
        publish(staging, restored(&m, started, written, outcome)?)
    }

    /// [`RemoteStore::restore_key_groups`] of a checkpoint already picked and checked, for a
    /// merged restore: the snapshot's header, footer and the blocks of `range` are left in the
    /// stand-in file [`stand_in_name`] (unchecked: the merge reads them through the cursor,
    /// which checks each block) instead of being rewritten as a snapshot of `range`, which the
    /// merge would only read once more.
    pub(crate) async fn restore_key_groups_unwritten(
        &self,
        m: &RemoteManifest,
        local: Manifest,
        range: KeyGroupRange,
        dir: &Path,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        prepare_dir(dir)?;
        let mut written = Written(Vec::new());
        let outcome = self
            .restore_subset(m, local, range, dir, &mut written, false)
            .await;
        restored(m, started, written, outcome)
    }

    async fn restore_subset(
        &self,
        m: &RemoteManifest,
        mut local: Manifest,
        range: KeyGroupRange,
        dir: &Path,
        written: &mut Written,
        rewrite: bool,
    ) -> Result<(usize, u64)> {
        let mut objects = 0;
        let mut bytes = 0;
        if let (Some(s), Some(ls)) = (&m.snapshot, local.snapshot.as_mut()) {
            let bad = |offset: u64, detail: String| Error::RemoteCorruption {
                object: self.describe(&s.object),
                offset,
                detail,
            };
            let (header_len, trailer_len) = (32u64, 24u64);
            if s.len < header_len + trailer_len
                || format::parse_snapshot_file_name(&ls.file) != Some(s.lsn)
            {
                return Err(bad(
                    0,
                    format!("not a snapshot of LSN {} ({} bytes)", s.lsn, s.len),
                ));
            }
            // Where the footer is, from the trailer; then the header and the footer.
            let trailer = self
                .get_range(&s.object, s.len - trailer_len..s.len)
                .await?;
            let footer_offset = trailer
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .filter(|&f| f >= header_len && f < s.len - trailer_len)
                .ok_or_else(|| {
                    bad(
                        s.len - trailer_len,
                        "the trailer's footer offset is out of range".into(),
                    )
                })?;
            let tail = self.get_range(&s.object, footer_offset..s.len).await?;
            let head = self.get_range(&s.object, 0..header_len).await?;
            // A stand-in of the whole file with only those parts (the rest a hole: this file is
            // only ever read, never mapped), from which the reader learns where `range` lies.
            let sparse = dir.join(format!("{}.kg{}", ls.file, format::TMP_SUFFIX));
            let file = create(&sparse, written)?;
            let write = |b: &[u8], at: u64| {
                file.write_all_at(b, at)
                    .map_err(|e| Error::io("write", &sparse, e))
            };
            write(&head, 0)?;
            write(&tail, footer_offset)?;
            bytes += head.len() as u64 + trailer.len() as u64 + tail.len() as u64;
            self.progress_add(
                head.len() as u64 + trailer.len() as u64 + tail.len() as u64,
                true,
            );
            // Damage the reader finds in the stand-in is damage of the object, at the same offset.
            let of_object = |e: Error| match e {
                Error::Corruption(c) if c.path == sparse => Error::RemoteCorruption {
                    object: self.describe(&s.object),
                    offset: c.offset,
                    detail: c.kind.to_string(),
                },
                other => other,
            };
            let reader = SnapshotReader::open(&sparse).map_err(of_object)?;
            let wanted: Vec<_> = reader
                .index()
                .iter()
                .filter(|e| range.contains(KeyGroup(e.kg)))
                .copied()
                .collect();
            if let (Some(first), Some(last)) = (wanted.first(), wanted.last()) {
                // In ranged GETs of at most `range_get_size`, several in flight, each written as
                // it arrives: memory stays bounded whatever the range's size.
                let (start, end) = (first.offset, last.offset + last.bytes);
                let piece = self.opts.range_get_size;
                let pieces = (start..end)
                    .step_by(piece as usize)
                    .map(|at| at..(at + piece).min(end));
                let mut got =
                    futures::stream::iter(pieces)
                        .map(|r| async move {
                            self.get_range(&s.object, r.clone()).await.map(|b| (r, b))
                        })
                        .buffered(self.opts.concurrency);
                while let Some((r, b)) = got.try_next().await? {
                    write(&b, r.start)?;
                    bytes += b.len() as u64;
                    self.progress_add(b.len() as u64, true);
                }
            }
            objects += 1;
            if !rewrite {
                drop(reader);
                drop(file);
                let kept = dir.join(stand_in_name(&ls.file));
                fs::rename(&sparse, &kept).map_err(|e| Error::io("rename", &sparse, e))?;
                written.0.retain(|p| p != &sparse);
                written.0.push(kept);
                let mut renames = Vec::new();
                let (o, b) = self
                    .download_segments(m, dir, written, &mut renames)
                    .await?;
                self.finish_restore(m, &local.encode(), dir, written, renames)?;
                return Ok((objects + o, bytes + b));
            }
            // The subset as a snapshot of its own; the cursor checks every block it reads.
            let meta = reader.meta();
            let mut w = SnapshotWriter::create(
                dir,
                s.lsn,
                meta.max_key_groups,
                range,
                meta.states.clone(),
            )?;
            let mut cursor = reader.cursor(range);
            while cursor.advance().map_err(of_object)? {
                if let Some(e) = cursor.entry() {
                    w.add(e)?;
                }
            }
            drop(cursor);
            let snap = w.finish()?;
            written.0.push(snap.path.clone());
            drop(reader);
            drop(file);
            fs::remove_file(&sparse).map_err(|e| Error::io("remove", &sparse, e))?;
            written.0.retain(|p| p != &sparse);
            ls.len = snap.len;
        }
        local.kg_start = range.start();
        local.kg_end = range.end();
        let mut renames = Vec::new();
        let (o, b) = self
            .download_segments(m, dir, written, &mut renames)
            .await?;
        self.finish_restore(m, &local.encode(), dir, written, renames)?;
        Ok((objects + o, bytes + b))
    }

    /// Manifest `seq`, or the newest.
    pub(crate) async fn pick(&self, seq: Option<u64>) -> Result<RemoteManifest> {
        match seq {
            Some(seq) => self.manifest(seq).await,
            None => self.latest().await?.ok_or_else(|| Error::InvalidOptions {
                name: "remote checkpoint",
                reason: format!("{} holds no checkpoint", self.describe(layout::MANIFESTS)),
            }),
        }
    }

    /// Checks that a manifest is one a restore can produce a journal from.
    pub(crate) fn check_manifest(&self, m: &RemoteManifest) -> Result<Manifest> {
        let bad = |detail: String| Error::RemoteCorruption {
            object: self.describe(&layout::manifest_key(m.seq)),
            offset: 0,
            detail,
        };
        let local = Manifest::decode(&m.local_manifest)
            .map_err(|e| bad(format!("its local manifest does not decode: {e}")))?;
        if (local.id, local.lsn, local.log_id) != (m.checkpoint_id, m.lsn, m.log_id) {
            return Err(bad(format!(
                "its local manifest is of checkpoint {} (LSN {}, log {:#x}), not {} (LSN {}, log {:#x})",
                local.id, local.lsn, local.log_id, m.checkpoint_id, m.lsn, m.log_id
            )));
        }
        match (&local.snapshot, &m.snapshot) {
            (None, None) => {}
            (Some(l), Some(r)) if l.lsn == r.lsn && l.len == r.len => {}
            _ => return Err(bad("its snapshot differs from its local manifest's".into())),
        }
        if m.segments.is_empty() {
            return Err(bad("it names no log segment".into()));
        }
        if local.segments.iter().any(|l| {
            !m.segments
                .iter()
                .any(|r| (r.id, r.len, r.crc) == (l.id, l.len, l.crc))
        }) {
            return Err(bad(
                "a segment of its local manifest is missing from it or differs".into(),
            ));
        }
        Ok(local)
    }

    async fn restore_files(
        &self,
        m: &RemoteManifest,
        local: &Manifest,
        dir: &Path,
        written: &mut Written,
    ) -> Result<(usize, u64)> {
        let mut objects = 0;
        let mut bytes = 0;
        let mut renames = Vec::new();
        if let (Some(s), Some(ls)) = (&m.snapshot, &local.snapshot) {
            let name = ls.file.clone();
            if format::parse_snapshot_file_name(&name) != Some(s.lsn) {
                return Err(Error::RemoteCorruption {
                    object: self.describe(&layout::manifest_key(m.seq)),
                    offset: 0,
                    detail: format!("snapshot file name {name:?} is not LSN {}'s", s.lsn),
                });
            }
            let tmp = format::tmp_path(dir, &name);
            let file = Arc::new(create(&tmp, written)?);
            let got = self
                .store
                .get(&self.path(&s.object))
                .await
                .map_err(|e| self.err("get", &s.object, e))?;
            let mut stream = got.into_stream();
            let mut crc = crc32fast::Hasher::new();
            let mut xxh = xxhash_rust::xxh3::Xxh3::new();
            let mut at = 0u64;
            // Pieces are collected to 8 MiB and written on the blocking pool (a write, like the
            // fsync below, must not hold one of the runtime's worker threads).
            let mut pending: Vec<bytes::Bytes> = Vec::new();
            let mut pending_at = 0u64;
            loop {
                let piece = stream
                    .try_next()
                    .await
                    .map_err(|e| self.err("get", &s.object, e))?;
                let done = piece.is_none();
                if let Some(piece) = piece {
                    crc.update(&piece);
                    xxh.update(&piece);
                    at += piece.len() as u64;
                    self.progress_add(piece.len() as u64, false);
                    pending.push(piece);
                }
                if at - pending_at >= WRITE_BATCH || (done && at > pending_at) {
                    let batch = std::mem::take(&mut pending);
                    let (f, p, from) = (Arc::clone(&file), tmp.clone(), pending_at);
                    super::blocking("write", &tmp, move || write_pieces(&f, &p, from, &batch))
                        .await?;
                    pending_at = at;
                }
                if done {
                    break;
                }
            }
            let found = (at, crc.finalize(), xxh.digest());
            if found != (s.len, s.crc, s.xxh3) {
                return Err(Error::RemoteCorruption {
                    object: self.describe(&s.object),
                    offset: 0,
                    detail: format!(
                        "expected {} bytes, CRC {:#010x}, XXH3 {:#018x}; found {} bytes, CRC \
                         {:#010x}, XXH3 {:#018x}",
                        s.len, s.crc, s.xxh3, found.0, found.1, found.2
                    ),
                });
            }
            sync_file(&file, &tmp).await?;
            objects += 1;
            bytes += at;
            renames.push((tmp, dir.join(&name)));
        }
        let (o, b) = self
            .download_segments(m, dir, written, &mut renames)
            .await?;
        objects += o;
        bytes += b;
        self.finish_restore(m, &m.local_manifest, dir, written, renames)?;
        Ok((objects, bytes))
    }

    /// Downloads and checks every segment prefix into `*.tmp` files (renamed by
    /// [`RemoteStore::finish_restore`]).
    async fn download_segments(
        &self,
        m: &RemoteManifest,
        dir: &Path,
        written: &mut Written,
        renames: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<(usize, u64)> {
        let mut objects = 0;
        let mut bytes = 0;
        for seg in &m.segments {
            let name = format::segment_file_name(seg.id);
            let tmp = format::tmp_path(dir, &name);
            let file = Arc::new(create(&tmp, written)?);
            // The whole file size first, allocated (the original segment's room to append; never
            // a sparse hole: the log maps the file, and a store into a hole on a full disk would
            // be a SIGBUS). Where the file system cannot allocate, zeros are written: before
            // the data, which then overwrites them.
            let (f, p, len) = (Arc::clone(&file), tmp.clone(), seg.file_len);
            super::blocking("fallocate", &tmp, move || {
                crate::segment::preallocate(&f, &p, len)
            })
            .await?;
            let mut prefix_crc = crc32fast::Hasher::new();
            // Chunks download concurrently and arrive in order, each checked before it is written.
            let mut chunks = futures::stream::iter(seg.chunks.iter())
                .map(|c| async move { self.get_chunk(c).await.map(|b| (c, b)) })
                .buffered(self.opts.concurrency);
            while let Some((c, b)) = chunks.try_next().await? {
                prefix_crc.update(&b);
                let n = b.len() as u64;
                let (f, p, at) = (Arc::clone(&file), tmp.clone(), c.start);
                super::blocking("write", &tmp, move || write_pieces(&f, &p, at, &[b])).await?;
                objects += 1;
                bytes += n;
                self.progress_add(n, false);
            }
            let crc = prefix_crc.finalize();
            if crc != seg.crc {
                return Err(Error::RemoteCorruption {
                    object: self.describe(&layout::manifest_key(m.seq)),
                    offset: 0,
                    detail: format!(
                        "segment {} : its chunks' {} bytes have CRC {crc:#010x}, the manifest \
                         says {:#010x}",
                        seg.id, seg.len, seg.crc
                    ),
                });
            }
            sync_file(&file, &tmp).await?;
            renames.push((tmp, dir.join(name)));
        }
        Ok((objects, bytes))
    }

    /// Gives the checked files their final names, then writes `log.meta` and the manifest
    /// (`local_manifest`) and makes the directory durable.
    fn finish_restore(
        &self,
        m: &RemoteManifest,
        local_manifest: &[u8],
        dir: &Path,
        written: &mut Written,
        renames: Vec<(PathBuf, PathBuf)>,
    ) -> Result<()> {
        // Everything checked: final names, then the meta file and the manifest, then the
        // directory entries made durable.
        for (tmp, path) in renames {
            fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
            written.0.retain(|p| p != &tmp);
            written.0.push(path);
        }
        let (first, last) = match (m.segments.first(), m.segments.last()) {
            (Some(f), Some(l)) => (f.id, l.id),
            _ => unreachable_segments()?,
        };
        written.0.push(dir.join(format::META_FILE));
        crate::log::write_meta(
            dir,
            &LogMeta {
                log_id: m.log_id,
                first_segment: first,
                last_segment: last,
            },
        )?;
        let name = format::manifest_file_name(m.checkpoint_id);
        written.0.push(dir.join(&name));
        crate::log::write_small_file(dir, &name, local_manifest)?;
        sync_dir(dir)
    }

    async fn get_chunk(&self, c: &Chunk) -> Result<bytes::Bytes> {
        let b = self.get_bytes(&c.object).await?;
        let found = (
            b.len() as u64,
            crc32fast::hash(&b),
            xxhash_rust::xxh3::xxh3_64(&b),
        );
        let expected = (c.end - c.start, c.crc, c.xxh3);
        if found != expected {
            return Err(Error::RemoteCorruption {
                object: self.describe(&c.object),
                offset: 0,
                detail: format!(
                    "expected {} bytes, CRC {:#010x}, XXH3 {:#018x}; found {} bytes, CRC {:#010x}, \
                     XXH3 {:#018x}",
                    expected.0, expected.1, expected.2, found.0, found.1, found.2
                ),
            });
        }
        Ok(b)
    }
}

/// The name under which [`RemoteStore::restore_key_groups_unwritten`] leaves the parts of
/// snapshot `file` it downloaded (a file of the snapshot's length, holes where nothing was read).
pub(crate) fn stand_in_name(file: &str) -> String {
    format!("{file}.stand-in")
}

/// Bytes collected before a write of a streamed download.
const WRITE_BATCH: u64 = 8 << 20;

/// Writes `pieces` back to back from `at`.
fn write_pieces(file: &File, path: &Path, mut at: u64, pieces: &[bytes::Bytes]) -> Result<()> {
    for piece in pieces {
        file.write_all_at(piece, at)
            .map_err(|e| Error::io("write", path, e))?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// `fsync` on the blocking pool.
async fn sync_file(file: &Arc<File>, path: &Path) -> Result<()> {
    let (f, p) = (Arc::clone(file), path.to_path_buf());
    super::blocking("fsync", path, move || {
        f.sync_all().map_err(|e| Error::io("fsync", &p, e))
    })
    .await
}

/// Creates `dir`, or checks that it is empty.
fn prepare_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidOptions {
                    name: "restore directory",
                    reason: format!("{} is not empty", dir.display()),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
        }
        Err(e) => Err(Error::io("read directory", dir, e)),
    }
}

fn unreachable_segments() -> Result<(u64, u64)> {
    Err(Error::InvalidOptions {
        name: "remote checkpoint",
        reason: "it names no log segment".into(),
    })
}

fn create(path: &Path, written: &mut Written) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    written.0.push(path.to_path_buf());
    Ok(f)
}

/// Publishes the restore staged in `staging`, its report naming the files where they are now.
fn publish(staging: Staging, mut report: RestoreReport) -> Result<RestoreReport> {
    report.files = report
        .files
        .iter()
        .map(|p| staging.published_path(p))
        .collect();
    staging.publish()?;
    Ok(report)
}

/// The report of a restore that wrote `written`, or, when it failed, its error after the files
/// it wrote are removed (a failed restore leaves the directory empty).
fn restored(
    m: &RemoteManifest,
    started: Instant,
    mut written: Written,
    outcome: Result<(usize, u64)>,
) -> Result<RestoreReport> {
    match outcome {
        Ok((objects, bytes)) => Ok(RestoreReport {
            seq: m.seq,
            checkpoint_id: m.checkpoint_id,
            lsn: m.lsn,
            objects,
            bytes,
            files: written.0,
            duration: started.elapsed(),
        }),
        Err(e) => {
            written.clean();
            Err(e)
        }
    }
}
