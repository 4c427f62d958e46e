//! The one public error type, and the structured detail of corruption.
//!
//! Every error that concerns a file names it; every corruption also names the byte offset, so an
//! operator can look at the bytes (`xxd -s OFFSET FILE`) and decide what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::frame::FrameError;
use crate::codec::header::HeaderError;
use crate::codec::meta::MetaError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong. The variant tells the caller what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. Retrying may help if the cause was transient; the log is unchanged
    /// unless the failure was a flush, in which case the log is [`Error::Poisoned`] as well.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"open"`, `"fallocate"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file system has no room for a new segment (or the process may not grow files that
    /// far). Nothing was written: the log is still readable and consistent, and appends work again
    /// once space is freed.
    #[error("no space to allocate {len} bytes for {}: {source}", path.display())]
    NoSpace {
        /// The file that could not be allocated.
        path: PathBuf,
        /// Bytes requested.
        len: u64,
        /// The OS error (ENOSPC, EDQUOT or EFBIG).
        #[source]
        source: io::Error,
    },
    /// Another open log (in this process or another) holds the directory lock. (A log dropped a
    /// moment ago can still hold it if the process forked a child in the meantime: the child
    /// shares the lock until it execs.)
    #[error("{} is locked: the log is open elsewhere (in this or another process)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A flush (msync/fsync) failed earlier. What reached the disk is unknown, so the log refuses
    /// appends and commits until it is reopened, and recovery decides what is durable. Retrying
    /// the flush would be a lie: the kernel may have dropped the dirty pages (PostgreSQL's
    /// "fsyncgate").
    #[error("the log is poisoned: flushing {} failed ({source}); reopen it to recover", path.display())]
    Poisoned {
        /// The file whose flush failed.
        path: PathBuf,
        /// The original failure.
        #[source]
        source: Arc<io::Error>,
    },
    /// Stored data is damaged and recovery may not repair it under the chosen recovery mode.
    #[error(transparent)]
    Corruption(Box<Corruption>),
    /// A file was written by a newer format version than this build understands.
    #[error("{}: format version {found} is newer than this build reads (at most {supported}); upgrade statejournal", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// A record does not fit in one segment.
    #[error("record of {len} bytes exceeds the largest that fits in a segment ({max} bytes)")]
    RecordTooLarge {
        /// Payload length requested.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// The log has used every LSN up to [`MAX_LSN`](crate::codec::frame::MAX_LSN).
    #[error("the log has reached the largest LSN ({max}); start a new log")]
    LsnExhausted {
        /// The limit.
        max: u64,
    },
    /// A state is registered under this name with another kind.
    #[error("state {name:?} is a {existing} state; it cannot be opened as a {requested} state")]
    StateConflict {
        /// The state's name.
        name: String,
        /// Its registered kind.
        existing: crate::StateKind,
        /// The kind asked for.
        requested: crate::StateKind,
    },
    /// A state registered with a time-to-live is opened without one, or the other way round.
    /// Its stored values carry their expiry exactly when the state has a TTL, so the presence of
    /// a TTL is fixed when the state is created (as in Flink); its duration may change.
    #[error(
        "state {name:?} was registered {}; it cannot be opened {} (a TTL's duration may change, \
         but not whether the state has one)",
        ttl_phrase(*existing, "with a time-to-live of", "without a time-to-live"),
        ttl_phrase(*requested, "with a time-to-live of", "without one")
    )]
    TtlConflict {
        /// The state's name.
        name: String,
        /// Its registered time-to-live.
        existing: Option<std::time::Duration>,
        /// The time-to-live asked for.
        requested: Option<std::time::Duration>,
    },
    /// The key belongs to a key group this journal does not serve.
    #[error("key group {key_group} is not served by this journal (it serves {range})")]
    KeyGroupNotOwned {
        /// The key's group.
        key_group: crate::KeyGroup,
        /// The groups the journal serves.
        range: crate::KeyGroupRange,
    },
    /// A state handle was used with a journal that did not register it: its state id is not
    /// registered there, or belongs to a state of another kind. Nothing was logged.
    #[error("a state handle (state id {state_id}) was used with a journal that did not register it: {detail}; nothing was logged")]
    ForeignHandle {
        /// The handle's state id.
        state_id: u32,
        /// What does not match.
        detail: &'static str,
    },
    /// The journal was created with another number of key groups.
    #[error("the journal in {} has {stored} key groups, not {requested}: the number is fixed when a journal is created", path.display())]
    KeyGroupsMismatch {
        /// The journal directory.
        path: PathBuf,
        /// The stored number.
        stored: u16,
        /// The number asked for.
        requested: u16,
    },
    /// A key, namespace or value could not be encoded or decoded (for instance a value written as
    /// another type).
    #[error("state {state:?}: {source}")]
    Codec {
        /// The state.
        state: String,
        /// What the codec said.
        #[source]
        source: crate::CodecError,
    },
    /// A log record passed its checksum but is not a valid state mutation (written by a foreign
    /// program, or a bug).
    #[error("{}{}: the record with LSN {lsn} is not a valid state record: {detail}",
        path.display(), offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    InvalidRecord {
        /// The segment file holding the record when it is known (replay, compaction), else the
        /// journal directory.
        path: PathBuf,
        /// Where the record's frame starts in `path`, when `path` is its segment file.
        offset: Option<u64>,
        /// The record.
        lsn: u64,
        /// What is wrong.
        detail: String,
    },
    /// An option is out of range.
    #[error("invalid option {name}: {reason}")]
    InvalidOptions {
        /// The option.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A call to the object store failed (network, permissions, a missing object). Retrying the
    /// push, restore or collection may help; nothing visible changed in the store.
    #[error("{op} {object}: {source}")]
    Remote {
        /// What was being done (`"put"`, `"get"`, `"list"`, ...).
        op: &'static str,
        /// The object (store and key) concerned.
        object: String,
        /// What the store said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A writer with a newer epoch has claimed the store: this writer is a zombie and may not
    /// publish checkpoints any more. Nothing was published.
    #[error(
        "{object}: epoch {newer} has claimed the store; this writer's epoch {epoch} is fenced off"
    )]
    Fenced {
        /// The object that proves it (an epoch marker or a manifest).
        object: String,
        /// This writer's epoch.
        epoch: u64,
        /// The newer epoch found.
        newer: u64,
    },
    /// Another writer published a checkpoint under the same name first (the conditional create
    /// of the manifest lost). Nothing of ours was published; push again to retry.
    #[error("{object} was created by another writer first; this checkpoint was not published")]
    RemoteConflict {
        /// The manifest object.
        object: String,
    },
    /// The checkpoints given to a merged restore
    /// ([`remote::restore_merged`](crate::remote::restore_merged)) cannot form one journal:
    /// their key-group ranges overlap or leave part of the range asked for uncovered, their
    /// numbers of key groups differ, or a state name is registered with another kind, TTL or
    /// refresh flag in one than in another. Nothing was written; pick other checkpoints.
    #[error("these checkpoints cannot be merged: {detail}")]
    IncompatibleCheckpoints {
        /// What conflicts, naming the manifests concerned.
        detail: String,
    },
    /// A remote object is damaged or not what the manifest naming it says.
    #[error("{object} at byte {offset}: {detail}")]
    RemoteCorruption {
        /// The object.
        object: String,
        /// Byte offset in the object.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The file the error concerns, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::NoSpace { path, .. }
            | Error::Locked { path }
            | Error::Poisoned { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::KeyGroupsMismatch { path, .. }
            | Error::InvalidRecord { path, .. } => Some(path),
            Error::Corruption(c) => Some(&c.path),
            Error::RecordTooLarge { .. }
            | Error::InvalidOptions { .. }
            | Error::LsnExhausted { .. }
            | Error::StateConflict { .. }
            | Error::TtlConflict { .. }
            | Error::KeyGroupNotOwned { .. }
            | Error::ForeignHandle { .. }
            | Error::Codec { .. }
            | Error::Remote { .. }
            | Error::Fenced { .. }
            | Error::RemoteConflict { .. }
            | Error::IncompatibleCheckpoints { .. }
            | Error::RemoteCorruption { .. } => None,
        }
    }

    /// The byte offset of the damage, for corruption errors.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corruption(c) => Some(c.offset),
            Error::RemoteCorruption { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The corruption detail, for corruption errors.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corruption(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A failed write or allocation of `len` bytes: [`Error::NoSpace`] when the file system is
    /// full (or a quota or file-size limit was hit), [`Error::Io`] otherwise.
    pub(crate) fn write_failed(
        op: &'static str,
        path: impl Into<PathBuf>,
        len: u64,
        source: io::Error,
    ) -> Self {
        #[cfg(unix)]
        {
            if matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            ) {
                return Error::NoSpace {
                    path: path.into(),
                    len,
                    source,
                };
            }
        }
        Error::io(op, path, source)
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        Error::Corruption(Box::new(Corruption {
            path: path.into(),
            offset,
            kind,
        }))
    }
}

/// Where stored data is damaged and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte offset of the damage within the file.
    pub offset: u64,
    /// What is wrong there.
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is corrupt at byte offset {}: {}",
            self.path.display(),
            self.offset,
            self.kind
        )
    }
}

impl std::error::Error for Corruption {}

/// What is wrong with damaged data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The segment header is damaged or not ours.
    BadSegmentHeader(HeaderError),
    /// The meta file is damaged or not ours.
    BadMeta(MetaError),
    /// The file is shorter than its header.
    Truncated {
        /// Length found.
        len: u64,
        /// Length needed.
        needed: u64,
    },
    /// The segment id in the header differs from the one in the file name (a renamed or swapped file).
    SegmentIdMismatch {
        /// Id from the file name.
        expected: u64,
        /// Id in the header.
        found: u64,
    },
    /// The segment belongs to another log.
    ForeignLog {
        /// This log's identity.
        expected: u64,
        /// The identity in the segment.
        found: u64,
    },
    /// The segment does not continue where the previous one ended: a segment is missing, swapped
    /// or replaced by another version, or the previous one lost records at its end.
    BrokenChain {
        /// LSN and CRC of the last record the previous segment holds.
        previous_last: (u64, u32),
        /// LSN and CRC this segment's header says the previous segment ends with.
        header_says: (u64, u32),
    },
    /// The meta file is missing although segments exist.
    MissingMeta,
    /// A segment between the first and the last is missing.
    MissingSegment {
        /// Its id.
        segment_id: u64,
    },
    /// A record is damaged and the damage cannot be a torn tail: the data was durable.
    DamagedRecord {
        /// LSN the damaged record should have had.
        expected_lsn: u64,
        /// What is wrong with the bytes.
        damage: RecordDamage,
        /// Why the damage is known to be in durable data (or `Strict` mode, which allows none).
        evidence: DurabilityEvidence,
    },
    /// A snapshot file is damaged or not ours (header, block, footer or trailer).
    BadSnapshot {
        /// What is wrong there.
        detail: String,
    },
    /// A checkpoint manifest is damaged or not ours, or names something that is not there.
    BadManifest {
        /// What is wrong there.
        detail: String,
    },
}

/// What is wrong with a record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordDamage {
    /// The frame does not decode or fails its checksum.
    Frame(FrameError),
    /// The frame is intact but carries the wrong LSN.
    LsnMismatch {
        /// The LSN found.
        found: u64,
    },
    /// Non-zero bytes after the end of the written data.
    GarbageAfterEnd,
}

/// Why damage is known to affect durable data rather than a torn, unacknowledged tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurabilityEvidence {
    /// A sync marker records the log as durable through this LSN, at or past the damaged record.
    SyncedThrough(u64),
    /// A later segment exists; segments are created only after their predecessor is fully durable.
    LaterSegment(u64),
    /// A snapshot or checkpoint manifest of this log covers it through this LSN, at or past the
    /// damaged record: both are written only after the log is durable through their LSN.
    Covered(u64),
    /// `RecoveryMode::Strict` accepts no damage of any kind.
    StrictMode,
    /// The record was read intact earlier (recovery or a flush walked it): the file changed under
    /// the open log.
    AlreadyRead,
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadSegmentHeader(e) => write!(f, "bad segment header: {e}"),
            CorruptionKind::BadMeta(e) => write!(f, "bad log meta file: {e}"),
            CorruptionKind::Truncated { len, needed } => {
                write!(f, "file is {len} bytes, shorter than the {needed} its header needs")
            }
            CorruptionKind::SegmentIdMismatch { expected, found } => write!(
                f,
                "header says segment {found} but the file name says {expected} (renamed or swapped file)"
            ),
            CorruptionKind::ForeignLog { expected, found } => write!(
                f,
                "segment belongs to log {found:#018x}, not to this log {expected:#018x}"
            ),
            CorruptionKind::BrokenChain { previous_last, header_says } => write!(
                f,
                "segment does not continue its predecessor: predecessor ends with LSN {} (crc {:#010x}) \
                 but this header expects LSN {} (crc {:#010x}); a segment is missing, swapped or damaged",
                previous_last.0, previous_last.1, header_says.0, header_says.1
            ),
            CorruptionKind::MissingMeta => {
                write!(f, "the log meta file is missing but segment files exist")
            }
            CorruptionKind::MissingSegment { segment_id } => {
                write!(f, "segment {segment_id} is missing from the log")
            }
            CorruptionKind::DamagedRecord { expected_lsn, damage, evidence } => {
                write!(f, "record with LSN {expected_lsn} is damaged ({damage}); ")?;
                match evidence {
                    DurabilityEvidence::SyncedThrough(lsn) => write!(
                        f,
                        "it was durable (a sync marker records the log as synced through LSN {lsn}), so this is not a torn tail"
                    ),
                    DurabilityEvidence::LaterSegment(id) => write!(
                        f,
                        "it was durable (segment {id} follows it), so this is not a torn tail"
                    ),
                    DurabilityEvidence::Covered(lsn) => write!(
                        f,
                        "it was durable (a snapshot or checkpoint covers the log through LSN {lsn}), so this is not a torn tail"
                    ),
                    DurabilityEvidence::StrictMode => {
                        write!(f, "strict recovery mode tolerates no damage, not even a torn tail")
                    }
                    DurabilityEvidence::AlreadyRead => write!(
                        f,
                        "it was intact when written and validated, so the file changed under the open log"
                    ),
                }
            }
            CorruptionKind::BadSnapshot { detail } => write!(f, "bad snapshot: {detail}"),
            CorruptionKind::BadManifest { detail } => write!(f, "bad checkpoint manifest: {detail}"),
        }
    }
}

impl fmt::Display for RecordDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordDamage::Frame(e) => write!(f, "{e}"),
            RecordDamage::LsnMismatch { found } => write!(f, "intact frame carries LSN {found}"),
            RecordDamage::GarbageAfterEnd => {
                write!(f, "non-zero bytes after the end of the written data")
            }
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::End => write!(f, "zero length (end of data)"),
            FrameError::Truncated { available } => {
                write!(f, "only {available} bytes left, fewer than a frame header")
            }
            FrameError::BadLength { len, available } => {
                write!(
                    f,
                    "length field {len} is impossible ({available} bytes left)"
                )
            }
            FrameError::Checksum { computed, stored } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            FrameError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            FrameError::ReservedBitsSet => write!(f, "reserved header bytes are not zero"),
            FrameError::BadMarker => write!(f, "sync marker with a malformed payload"),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated { len } => write!(f, "only {len} bytes, shorter than a header"),
            HeaderError::BadMagic => write!(f, "not a statejournal segment (bad magic)"),
            HeaderError::UnsupportedVersion { found } => {
                write!(f, "unsupported format version {found}")
            }
            HeaderError::Checksum { computed, stored } => write!(
                f,
                "header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            HeaderError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::BadLength(n) => write!(f, "{n} bytes, not a meta file's length"),
            MetaError::BadMagic => write!(f, "not a statejournal meta file (bad magic)"),
            MetaError::UnsupportedVersion { found } => {
                write!(f, "unsupported format version {found}")
            }
            MetaError::Checksum { computed, stored } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            MetaError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

/// "with a time-to-live of 60s" or `none` (for [`Error::TtlConflict`]'s message).
fn ttl_phrase(ttl: Option<std::time::Duration>, some: &str, none: &str) -> String {
    match ttl {
        Some(d) => format!("{some} {d:?}"),
        None => none.to_string(),
    }
}
