//! Snapshot files: a full, sorted copy of a journal's keyed state through some LSN.
//!
//! ```text
//! [header 32 B] [block]* [footer] [trailer 24 B]
//! block   := [crc u32][payload_len u32][key_group u16][reserved u16][entry_count u32] entry*
//! entry   := tag:u8 ...   0 plain, 1 map, 2 map entry under the previous entry's key
//! ```
//!
//! Entries are sorted by (key group, state id, composite key, map key), each block holds entries
//! of exactly one key group, and the footer indexes the blocks of every key group, so that reading
//! a key-group range touches only that range's bytes. Every byte is covered by a CRC-32. The exact
//! layout is specified in `docs/FORMAT.md` ("Snapshot files") and implemented, without I/O, in
//! [`codec`].
//!
//! * [`SnapshotWriter`] streams entries that arrive already sorted (memory: one block), under the
//!   file's temporary name, and makes the file durable and visible in [`SnapshotWriter::finish`].
//! * [`SnapshotReader`] verifies header, trailer and footer on open; [`SnapshotReader::cursor`] is
//!   a sorted cursor over a key-group range (for the compaction merge), and
//!   [`SnapshotReader::for_each_block`] the bulk path for recovery (a verified block at a time,
//!   entries borrowed from the read buffer, no per-entry allocation or system call).
//!
//! Readers trust nothing they read: every block is CRC-checked before use, and decoding also checks
//! the structure (entry counts, lengths, the order of entries, the state registry, the per-key-group
//! and per-state totals of the footer), so even a file that passes its checksums but was not written
//! by [`SnapshotWriter`] yields [`Error::Corruption`](crate::Error::Corruption), never a panic or
//! an unsorted cursor.

pub(crate) mod codec;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;

use crate::KeyGroupRange;

pub(crate) use reader::{BlockEntries, Cursor, SnapshotReader};
pub(crate) use writer::SnapshotWriter;

/// One registered state, as the snapshot's registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateInfo {
    /// The state's id (the registry's dense id).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its kind code (`StateKind::code`: 1 value, 2 list, 3 map, 4 reducing, 5 aggregating).
    pub kind: u8,
    /// Bit 0: refresh the time-to-live on read.
    pub flags: u8,
    /// Time-to-live in milliseconds (0: none).
    pub ttl_millis: u64,
    /// Entries of this state in the snapshot (map entries count one each). Filled by the writer.
    pub entries: u64,
    /// Sum of the lengths of the keys, map keys and values of those entries, so that a loader can
    /// size its tables before loading. Filled by the writer.
    pub payload_bytes: u64,
}

impl StateInfo {
    /// Whether the state is a map (its entries carry map keys).
    pub fn is_map(&self) -> bool {
        self.kind == crate::StateKind::Map.code()
    }
}

/// What a snapshot holds, from its header and footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotMeta {
    /// The snapshot holds the state through this LSN.
    pub lsn: u64,
    /// Key groups of the journal.
    pub max_key_groups: u16,
    /// The key groups the snapshot covers (it may hold no entry of some of them).
    pub key_groups: KeyGroupRange,
    /// The state registry, in id order.
    pub states: Vec<StateInfo>,
    /// Total number of entries.
    pub entries: u64,
}

/// Where the blocks of one non-empty key group are. A key group's blocks are contiguous, and key
/// groups follow each other in order, so a key-group range is one contiguous byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyGroupIndexEntry {
    /// The key group.
    pub kg: u16,
    /// File offset of its first block.
    pub offset: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// Number of entries.
    pub entries: u64,
    /// Bytes its blocks take in the file, block headers included: the blocks are
    /// `offset .. offset + bytes`.
    pub bytes: u64,
}

/// One entry of a snapshot. `key` is the composite key (`len:v32 key namespace`); `map_key` is
/// present exactly for the entries of map states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// Key group of the key.
    pub kg: u16,
    /// The state.
    pub state_id: u32,
    /// The composite key.
    pub key: &'a [u8],
    /// The map key (map states only).
    pub map_key: Option<&'a [u8]>,
    /// The stored value (with its expiry in front for states with a time-to-live).
    pub value: &'a [u8],
}

/// A finished snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotFile {
    /// Its final path (`{lsn:020}.snap` in the journal directory).
    pub path: PathBuf,
    /// The LSN it covers.
    pub lsn: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Entries it holds.
    pub entries: u64,
}
