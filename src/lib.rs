//! # statejournal
//!
//! Keyed state for write-heavy stream processing (what Apache Flink calls a state backend): state
//! lives in memory, every mutation is appended to a log of memory-mapped, checksummed segment
//! files, and recovery replays the log.
//!
//! This release provides the foundation, the [`Log`]: an append-only, `Send + Sync` log with
//! LSNs, three [durability modes](Durability) with group commit, and recovery that can *prove* a
//! damaged tail is torn rather than guess (see [`RecoveryMode`]).
//!
//! ```
//! use statejournal::{Durability, Log, LogOptions};
//! # fn main() -> Result<(), statejournal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogOptions::default().durability(Durability::Sync))?;
//! for i in 0..100u32 {
//!     log.append(&i.to_le_bytes())?;
//! }
//! let durable = log.commit()?; // one flush for all 100 records
//! assert_eq!(durable.get(), 100);
//! drop(log); // or a crash: what `commit` acknowledged is there
//!
//! let log = Log::open(dir.path(), LogOptions::default())?;
//! assert_eq!(log.recovery_report().records, 100);
//! assert_eq!(log.read_from(statejournal::Lsn(1)).count(), 100);
//! # Ok(()) }
//! ```
//!
//! On top of the log, a [`Journal`] keeps keyed state with snapshots and checkpoints, and
//! `remote` (feature `remote`, on by default) ships those checkpoints to an object store and
//! restores them anywhere.
//!
//! The on-disk format is specified in `docs/FORMAT.md`, the design in `docs/DESIGN.md`.

mod checkpoint;
pub mod codec;
mod compaction;
mod crash_point;
mod error;
pub mod format;
mod hint;
pub mod inspect;
mod journal;
mod keygroup;
mod log;
#[cfg(feature = "remote")]
pub mod remote;
mod segment;
pub(crate) mod snapshot;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use checkpoint::CheckpointInfo;
pub use codec::meta::DiscardCause;
pub use compaction::CompactionReport;
pub use error::{Corruption, CorruptionKind, DurabilityEvidence, Error, RecordDamage, Result};
pub use journal::{
    Committer, CompactionPolicy, IoStats, Journal, JournalOptions, Registrar, StateRecovery,
    StateStats, DEFAULT_REPLAY_BYTES_PER_SEC, DEFAULT_RETAINED_CHECKPOINTS,
};
pub use keygroup::{
    key_group_of, key_hash, KeyGroup, KeyGroupRange, DEFAULT_MAX_KEY_GROUPS, MAX_KEY_GROUPS,
};
pub use log::{
    Appender, CutReason, Durability, InterruptedDiscard, Log, LogOptions, LogReader, Lsn, Record,
    RecoveryMode, RecoveryReport, TailCut, DEFAULT_SEGMENT_SIZE,
};
pub use state::{
    AggregateFunction, AggregatingState, Clock, Codec, CodecError, ListState, ManualClock,
    MapState, Postcard, ReducingState, StateKind, StateTtl, SystemClock, ValueState,
};

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
