//! Writing snapshot files: entries stream in sorted, a block at a time is buffered, and
//! [`SnapshotWriter::finish`] makes the file durable before it appears under its final name.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::codec::{
    encode_entry, encode_footer, encode_trailer, entry_len, entry_order, seal_block,
    SnapshotHeader, BLOCK_HEADER_LEN,
};
use super::{Entry, KeyGroupIndexEntry, SnapshotFile, SnapshotMeta, StateInfo};
use crate::error::{Error, Result};
use crate::format::{snapshot_file_name, tmp_path};
use crate::segment::sync_dir;
use crate::{KeyGroup, KeyGroupRange, MAX_KEY_GROUPS};

/// Target size of a block's entries: a block ends at a key-group change or before the entry that
/// would take it past this size (an entry larger than this gets a block of its own).
pub(crate) const DEFAULT_BLOCK_SIZE: usize = 256 << 10;
/// Largest target block size [`SnapshotWriter::with_block_size`] accepts.
const MAX_BLOCK_SIZE: usize = 1 << 30;

/// Writes one snapshot file from entries given in strictly increasing (key group, state id, key,
/// map key) order. Memory: one block (plus the index, one entry per non-empty key group).
///
/// The file is built under its temporary name (`{lsn:020}.snap.tmp`); dropping the writer before
/// [`finish`](Self::finish) succeeds removes it.
#[derive(Debug)]
pub(crate) struct SnapshotWriter {
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    file: File,
    lsn: u64,
    max_key_groups: u16,
    key_groups: KeyGroupRange,
    states: Vec<StateInfo>,
    block_size: usize,
    /// The block being filled: header space, then its entries.
    block: Vec<u8>,
    block_kg: u16,
    block_entries: u32,
    /// File offset where the next write goes.
    offset: u64,
    index: Vec<KeyGroupIndexEntry>,
    entries: u64,
    /// The previous entry (when `has_last`), to enforce the order; its state's registry index.
    has_last: bool,
    last_kg: u16,
    last_state: u32,
    last_state_idx: usize,
    last_key: Vec<u8>,
    last_map_key: Option<Vec<u8>>,
    /// A write failed: the file's contents are unknown, every later call fails.
    failed: bool,
    /// Renamed to its final name: nothing to clean up.
    finished: bool,
}

fn reject(reason: String) -> Error {
    Error::InvalidOptions {
        name: "snapshot entry",
        reason,
    }
}

fn write_all(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    file.write_all(bytes).map_err(|e| {
        if matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        ) {
            Error::NoSpace {
                path: path.to_path_buf(),
                len: bytes.len() as u64,
                source: e,
            }
        } else {
            Error::io("write", path, e)
        }
    })
}

impl SnapshotWriter {
    /// Starts `{lsn:020}.snap` (under its temporary name) in `dir`. `states` is the registry, in
    /// increasing id order; the writer fills in `entries` and `payload_bytes` itself.
    pub fn create(
        dir: &Path,
        lsn: u64,
        max_key_groups: u16,
        key_groups: KeyGroupRange,
        mut states: Vec<StateInfo>,
    ) -> Result<Self> {
        if max_key_groups == 0 || max_key_groups > MAX_KEY_GROUPS {
            return Err(Error::InvalidOptions {
                name: "max_key_groups",
                reason: format!("{max_key_groups} is not in 1..={MAX_KEY_GROUPS}"),
            });
        }
        if key_groups.end() > max_key_groups {
            return Err(Error::InvalidOptions {
                name: "key_groups",
                reason: format!("{key_groups} exceeds the {max_key_groups} key groups"),
            });
        }
        if states.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(Error::InvalidOptions {
                name: "states",
                reason: "state ids must be in strictly increasing order".into(),
            });
        }
        if states.iter().any(|s| u32::try_from(s.name.len()).is_err()) {
            return Err(Error::InvalidOptions {
                name: "states",
                reason: "a state name is longer than 4 GiB".into(),
            });
        }
        for s in &mut states {
            s.entries = 0;
            s.payload_bytes = 0;
        }
        let name = snapshot_file_name(lsn);
        let tmp = tmp_path(dir, &name);
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let mut w = SnapshotWriter {
            dir: dir.to_path_buf(),
            path: dir.join(&name),
            tmp,
            file,
            lsn,
            max_key_groups,
            key_groups,
            states,
            block_size: DEFAULT_BLOCK_SIZE,
            block: Vec::new(),
            block_kg: 0,
            block_entries: 0,
            offset: 0,
            index: Vec::new(),
            entries: 0,
            has_last: false,
            last_kg: 0,
            last_state: 0,
            last_state_idx: 0,
            last_key: Vec::new(),
            last_map_key: None,
            failed: false,
            finished: false,
        };
        w.reset_block();
        let header = SnapshotHeader {
            lsn,
            max_key_groups,
        }
        .encode();
        w.write(&header)?;
        Ok(w)
    }

    /// Sets the target block size (default 256 KiB; clamped to 1 byte ..= 1 GiB). For tests. It
    /// applies to the block being filled and the later ones.
    pub fn with_block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes.clamp(1, MAX_BLOCK_SIZE);
        self
    }

    fn reset_block(&mut self) {
        self.block.clear();
        // A huge entry grew the buffer: give the memory back.
        let want = BLOCK_HEADER_LEN + self.block_size;
        if self.block.capacity() > 2 * want {
            self.block.shrink_to(want);
        }
        self.block.reserve(want);
        self.block.resize(BLOCK_HEADER_LEN, 0);
        self.block_entries = 0;
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_usable()?;
        if let Err(e) = write_all(&mut self.file, &self.tmp, bytes) {
            self.failed = true;
            return Err(e);
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::io(
                "write",
                &self.tmp,
                io::Error::other("an earlier write to this snapshot failed"),
            ));
        }
        Ok(())
    }

    /// Adds the next entry. It must be strictly after the previous one in (key group, state id,
    /// key, map key) order, in the declared key-group range, of a registered state, and carry a
    /// map key exactly if the state is a map; otherwise it is refused with
    /// [`Error::InvalidOptions`] and the writer is unchanged.
    pub fn add(&mut self, e: Entry<'_>) -> Result<()> {
        self.check_usable()?;
        if !self.key_groups.contains(KeyGroup(e.kg)) {
            return Err(reject(format!(
                "key group {} is outside the snapshot's range {}",
                e.kg, self.key_groups
            )));
        }
        let too_long = |b: &[u8]| u32::try_from(b.len()).is_err();
        if too_long(e.key) || e.map_key.is_some_and(too_long) || too_long(e.value) {
            return Err(reject(
                "a key, map key or value is longer than 4 GiB".into(),
            ));
        }
        let full_len = entry_len(&e, false);
        if u32::try_from(full_len).is_err() {
            return Err(reject(format!(
                "an entry of {full_len} bytes exceeds 4 GiB"
            )));
        }
        let state_idx = if self.has_last && self.last_state == e.state_id {
            self.last_state_idx
        } else {
            self.states
                .binary_search_by_key(&e.state_id, |s| s.id)
                .map_err(|_| reject(format!("state id {} is not registered", e.state_id)))?
        };
        let is_map = self.states.get(state_idx).is_some_and(StateInfo::is_map);
        if e.map_key.is_some() != is_map {
            return Err(reject(format!(
                "state {} is {}a map, the entry {} a map key",
                e.state_id,
                if is_map { "" } else { "not " },
                if e.map_key.is_some() { "has" } else { "lacks" },
            )));
        }
        if self.has_last {
            let after = self.last_kg.cmp(&e.kg).then_with(|| {
                entry_order(
                    (
                        self.last_state,
                        &self.last_key,
                        self.last_map_key.as_deref(),
                    ),
                    (e.state_id, e.key, e.map_key),
                )
            });
            if after != std::cmp::Ordering::Less {
                return Err(reject(format!(
                    "entry (key group {}, state {}) is not after the previous one (key group {}, state {}): entries must be added in strictly increasing (key group, state, key, map key) order",
                    e.kg, e.state_id, self.last_kg, self.last_state
                )));
            }
        }

        // Map entries under the key of the previous entry of the block omit state and key.
        let in_block = self.block_entries > 0;
        let mut same_key =
            in_block && is_map && self.last_state == e.state_id && self.last_key == e.key;
        let mut len = entry_len(&e, same_key);
        let payload = self.block.len() - BLOCK_HEADER_LEN;
        if in_block
            && (self.block_kg != e.kg
                || payload + len > self.block_size
                || self.block_entries == u32::MAX)
        {
            self.flush_block()?;
            same_key = false;
            len = full_len;
        }
        if self.block_entries == 0 {
            self.block_kg = e.kg;
        }
        let before = self.block.len();
        encode_entry(&mut self.block, &e, same_key);
        debug_assert_eq!(self.block.len() - before, len);
        self.block_entries += 1;
        self.entries += 1;
        if let Some(s) = self.states.get_mut(state_idx) {
            s.entries += 1;
            s.payload_bytes +=
                (e.key.len() + e.map_key.map_or(0, <[u8]>::len) + e.value.len()) as u64;
        }

        if !(self.has_last && self.last_state == e.state_id && self.last_key == e.key) {
            self.last_key.clear();
            self.last_key.extend_from_slice(e.key);
        }
        match (e.map_key, &mut self.last_map_key) {
            (Some(m), Some(v)) => {
                v.clear();
                v.extend_from_slice(m);
            }
            (Some(m), slot) => *slot = Some(m.to_vec()),
            (None, slot) => *slot = None,
        }
        self.has_last = true;
        self.last_kg = e.kg;
        self.last_state = e.state_id;
        self.last_state_idx = state_idx;
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block_entries == 0 {
            return Ok(());
        }
        seal_block(&mut self.block, self.block_kg, self.block_entries);
        let at = self.offset;
        let len = self.block.len() as u64;
        let block = std::mem::take(&mut self.block);
        let res = self.write(&block);
        self.block = block;
        res?;
        let n = u64::from(self.block_entries);
        match self.index.last_mut() {
            Some(last) if last.kg == self.block_kg => {
                last.blocks += 1;
                last.entries += n;
                last.bytes += len;
            }
            _ => self.index.push(KeyGroupIndexEntry {
                kg: self.block_kg,
                offset: at,
                blocks: 1,
                entries: n,
                bytes: len,
            }),
        }
        self.reset_block();
        Ok(())
    }

    /// Writes the last block, the footer and the trailer, fsyncs the file, renames it to its final
    /// name and fsyncs the directory. Returns the final path and the file's length.
    pub fn finish(mut self) -> Result<SnapshotFile> {
        self.flush_block()?;
        let meta = SnapshotMeta {
            lsn: self.lsn,
            max_key_groups: self.max_key_groups,
            key_groups: self.key_groups,
            states: std::mem::take(&mut self.states),
            entries: self.entries,
        };
        let footer_offset = self.offset;
        let mut tail = Vec::new();
        encode_footer(&mut tail, &meta, &self.index);
        if u32::try_from(tail.len()).is_err() {
            return Err(Error::InvalidOptions {
                name: "states",
                reason: "the snapshot's footer exceeds 4 GiB".into(),
            });
        }
        let trailer = encode_trailer(footer_offset, &tail);
        tail.extend_from_slice(&trailer);
        self.write(&tail)?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename", &self.tmp, e))?;
        self.finished = true;
        sync_dir(&self.dir)?;
        Ok(SnapshotFile {
            path: self.path.clone(),
            lsn: self.lsn,
            len: self.offset,
            entries: self.entries,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: a leftover `*.tmp` is removed by recovery anyway.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
