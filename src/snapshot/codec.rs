//! The bytes of a snapshot file, encoded into and decoded from slices (no I/O).
//!
//! ```text
//! file    := header block* footer trailer
//!
//! header (32 bytes, at offset 0)
//! offset size field
//!      0    8 magic           b"SJSNAPSH"
//!      8    4 version         SNAPSHOT_VERSION of the writer
//!     12    4 reserved        0
//!     16    8 lsn             the snapshot holds the state through this LSN
//!     24    2 max_key_groups  key groups of the journal (1..=32768)
//!     26    2 reserved        0
//!     28    4 header_crc      CRC-32 of bytes 0..28
//!
//! block (from offset 32 on, back to back)
//! offset size field
//!      0    4 crc             CRC-32 of bytes 4 .. 16 + payload_len
//!      4    4 payload_len     bytes of entries after this 16-byte header
//!      8    2 key_group       every entry of the block is in this key group
//!     10    2 reserved        0
//!     12    4 entry_count     entries in the block (at least 1)
//!     16    n entries
//!
//! entry   := tag:u8 body
//!   0 plain             state_id:v32 key:bytes value:bytes
//!   1 map               state_id:v32 key:bytes map_key:bytes value:bytes
//!   2 map, same key     map_key:bytes value:bytes   (state and key of the previous entry of the
//!                                                     block, which is a map entry)
//! bytes   := len:v32 byte*                            (v32/v64: LEB128 as in `codec::record`)
//!
//! footer (at footer_offset, footer_len bytes)
//!      0    8 lsn             equal to the header's
//!      8    2 max_key_groups  equal to the header's
//!     10    2 kg_start        the key groups covered: kg_start .. kg_end
//!     12    2 kg_end
//!     14    8 entries         total entries
//!     22      state_count:v32 state*  index_count:v32 index*
//!   state := state_id:v32 kind:u8 flags:u8 ttl_millis:v64 name:bytes entries:v64 payload_bytes:v64
//!   index := kg:u16 first_block_offset:u64 block_count:v32 entries:v64 bytes:v64
//!
//! trailer (the last 24 bytes)
//!      0    8 footer_offset
//!      8    4 footer_len      footer_offset + footer_len = file length - 24
//!     12    4 footer_crc      CRC-32 of file bytes footer_offset .. length - 12 (the footer and
//!                             the trailer's first 12 bytes)
//!     16    8 magic           b"SJSNAPND"
//! ```
//!
//! Entries are in strictly increasing (key group, state id, key, map key) order, keys and map keys
//! compared as byte strings. The footer's states are in increasing id order; its index has one
//! entry per non-empty key group, in increasing key-group order, each key group's blocks contiguous
//! and the key groups back to back from offset 32 up to the footer. Decoding never panics and never
//! reads outside the slice, whatever the bytes.

use std::cmp::Ordering;

use super::{Entry, KeyGroupIndexEntry, SnapshotMeta, StateInfo};
use crate::codec::record::{put_varint, Reader, RecordError};
use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::{KeyGroupRange, MAX_KEY_GROUPS};

/// Identifies a snapshot file (its first 8 bytes).
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"SJSNAPSH";
/// Ends a complete snapshot file (its last 8 bytes).
pub(crate) const TRAILER_MAGIC: [u8; 8] = *b"SJSNAPND";
/// The snapshot format this build writes. Readers accept every version up to this one.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_RESERVED: usize = H_VERSION + 4;
const H_LSN: usize = H_RESERVED + 4;
const H_MAX_KEY_GROUPS: usize = H_LSN + 8;
const H_RESERVED2: usize = H_MAX_KEY_GROUPS + 2;
const H_CRC: usize = H_RESERVED2 + 2;
/// Size of the file header; the first block starts here.
pub(crate) const HEADER_LEN: usize = H_CRC + 4;

const B_CRC: usize = 0;
const B_PAYLOAD_LEN: usize = B_CRC + 4;
const B_KEY_GROUP: usize = B_PAYLOAD_LEN + 4;
const B_RESERVED: usize = B_KEY_GROUP + 2;
const B_ENTRY_COUNT: usize = B_RESERVED + 2;
/// Size of a block header; the block's entries follow.
pub(crate) const BLOCK_HEADER_LEN: usize = B_ENTRY_COUNT + 4;

const T_FOOTER_OFFSET: usize = 0;
const T_FOOTER_LEN: usize = T_FOOTER_OFFSET + 8;
const T_FOOTER_CRC: usize = T_FOOTER_LEN + 4;
const T_MAGIC: usize = T_FOOTER_CRC + 4;
/// Size of the trailer at the end of the file.
pub(crate) const TRAILER_LEN: usize = T_MAGIC + 8;
/// Bytes at the end of the file that the footer CRC covers besides the footer: the trailer's
/// `footer_offset` and `footer_len`.
pub(crate) const TRAILER_CRC_COVERED: usize = T_FOOTER_CRC;

const F_LSN: usize = 0;
const F_MAX_KEY_GROUPS: usize = F_LSN + 8;
const F_KG_START: usize = F_MAX_KEY_GROUPS + 2;
const F_KG_END: usize = F_KG_START + 2;
const F_ENTRIES: usize = F_KG_END + 2;
const F_FIXED_LEN: usize = F_ENTRIES + 8;

/// Entry tag: an entry of a non-map state.
pub(crate) const TAG_PLAIN: u8 = 0;
/// Entry tag: a map entry carrying its state and key.
pub(crate) const TAG_MAP: u8 = 1;
/// Entry tag: a map entry with the state and key of the previous entry of the same block.
pub(crate) const TAG_MAP_SAME_KEY: u8 = 2;

const _: () = assert!(HEADER_LEN == 32 && BLOCK_HEADER_LEN == 16 && TRAILER_LEN == 24);

/// Why bytes do not decode. `at` is relative to the slice given to the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapError {
    /// The header's version is newer than this build reads.
    UnsupportedVersion(u32),
    /// The bytes are damaged or not a snapshot's.
    Bad {
        /// Offset of the offending bytes within the decoded slice.
        at: usize,
        /// What is wrong.
        detail: String,
    },
}

fn bad(at: usize, detail: impl Into<String>) -> SnapError {
    SnapError::Bad {
        at,
        detail: detail.into(),
    }
}

fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Bytes an unsigned LEB128 encoding of `v` takes.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[inline]
fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

// ---------------------------------------------------------------------------------------------
// Header

/// The decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotHeader {
    /// The LSN the snapshot covers.
    pub lsn: u64,
    /// Key groups of the journal.
    pub max_key_groups: u16,
}

impl SnapshotHeader {
    /// Encodes the header (version [`SNAPSHOT_VERSION`]).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[H_MAGIC..H_VERSION].copy_from_slice(&SNAPSHOT_MAGIC);
        put_u32(&mut out, H_VERSION, SNAPSHOT_VERSION);
        put_u64(&mut out, H_LSN, self.lsn);
        out[H_MAX_KEY_GROUPS..H_RESERVED2].copy_from_slice(&self.max_key_groups.to_le_bytes());
        let crc = crc32fast::hash(&out[..H_CRC]);
        put_u32(&mut out, H_CRC, crc);
        out
    }

    /// Decodes and validates a header: the first [`HEADER_LEN`] bytes of `buf`. The version is
    /// checked before the CRC (a newer version may change what the CRC covers).
    pub fn decode(buf: &[u8]) -> Result<Self, SnapError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(bad(
                0,
                format!("{} bytes, shorter than a header", buf.len()),
            ));
        };
        if h.get(H_MAGIC..H_VERSION) != Some(&SNAPSHOT_MAGIC[..]) {
            return Err(bad(H_MAGIC, "not a statejournal snapshot (bad magic)"));
        }
        let version = get_u32(h, H_VERSION).unwrap_or(0);
        if version > SNAPSHOT_VERSION {
            return Err(SnapError::UnsupportedVersion(version));
        }
        let stored = get_u32(h, H_CRC).unwrap_or(0);
        let computed = crc32fast::hash(&h[..H_CRC]);
        if stored != computed {
            return Err(bad(
                0,
                format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        if version == 0 {
            return Err(bad(H_VERSION, "version 0"));
        }
        if get_u32(h, H_RESERVED) != Some(0) || get_u16(h, H_RESERVED2) != Some(0) {
            return Err(bad(H_RESERVED, "reserved header bytes are not zero"));
        }
        let max_key_groups = get_u16(h, H_MAX_KEY_GROUPS).unwrap_or(0);
        if max_key_groups == 0 || max_key_groups > MAX_KEY_GROUPS {
            return Err(bad(
                H_MAX_KEY_GROUPS,
                format!("max_key_groups {max_key_groups} is out of range"),
            ));
        }
        Ok(SnapshotHeader {
            lsn: get_u64(h, H_LSN).unwrap_or(0),
            max_key_groups,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks

/// A verified block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    /// Bytes of entries after the header.
    pub payload_len: u32,
    /// The block's key group.
    pub kg: u16,
    /// Entries in the block.
    pub entry_count: u32,
}

/// The length of the whole block (header included) that starts `buf`, read from its header
/// before anything is verified. `None` if `buf` is shorter than a block header.
pub(crate) fn block_len(buf: &[u8]) -> Option<u64> {
    get_u32(buf, B_PAYLOAD_LEN).map(|n| BLOCK_HEADER_LEN as u64 + u64::from(n))
}

/// Fills in the header of a block whose entries are `block[BLOCK_HEADER_LEN..]`; the first
/// [`BLOCK_HEADER_LEN`] bytes of `block` are overwritten. The caller guarantees that the payload
/// fits the 32-bit length field.
pub(crate) fn seal_block(block: &mut [u8], kg: u16, entry_count: u32) {
    let payload_len = (block.len() - BLOCK_HEADER_LEN) as u32;
    put_u32(block, B_PAYLOAD_LEN, payload_len);
    block[B_KEY_GROUP..B_RESERVED].copy_from_slice(&kg.to_le_bytes());
    block[B_RESERVED..B_ENTRY_COUNT].fill(0);
    put_u32(block, B_ENTRY_COUNT, entry_count);
    let crc = crc32fast::hash(&block[B_PAYLOAD_LEN..]);
    put_u32(block, B_CRC, crc);
}

/// Verifies a whole block (`block` is exactly the block: header and payload) and decodes its
/// header. The entries are decoded by [`BlockDecoder`].
pub(crate) fn verify_block(block: &[u8]) -> Result<BlockHeader, SnapError> {
    let Some(len) = block_len(block) else {
        return Err(bad(0, "truncated block header"));
    };
    if len != block.len() as u64 {
        return Err(bad(
            B_PAYLOAD_LEN,
            format!(
                "block length {len} differs from the {} bytes given",
                block.len()
            ),
        ));
    }
    let stored = get_u32(block, B_CRC).unwrap_or(0);
    let computed = crc32fast::hash(block.get(B_PAYLOAD_LEN..).unwrap_or(&[]));
    if stored != computed {
        return Err(bad(
            0,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    if get_u16(block, B_RESERVED) != Some(0) {
        return Err(bad(B_RESERVED, "reserved block header bytes are not zero"));
    }
    let entry_count = get_u32(block, B_ENTRY_COUNT).unwrap_or(0);
    if entry_count == 0 {
        return Err(bad(B_ENTRY_COUNT, "a block holds no entry"));
    }
    Ok(BlockHeader {
        payload_len: (len - BLOCK_HEADER_LEN as u64) as u32,
        kg: get_u16(block, B_KEY_GROUP).unwrap_or(0),
        entry_count,
    })
}

/// Bytes [`encode_entry`] appends for `e`.
#[inline]
pub(crate) fn entry_len(e: &Entry<'_>, same_key: bool) -> usize {
    let tail = e.map_key.map_or(0, bytes_len) + bytes_len(e.value);
    if same_key {
        1 + tail
    } else {
        1 + varint_len(u64::from(e.state_id)) + bytes_len(e.key) + tail
    }
}

/// Appends the encoding of `e` to a block's entries. `same_key`: `e` is a map entry and the
/// previous entry of the block is a map entry of the same state and key (tag 2). The caller checked
/// that every length fits 32 bits.
#[inline]
pub(crate) fn encode_entry(out: &mut Vec<u8>, e: &Entry<'_>, same_key: bool) {
    match e.map_key {
        Some(map_key) if same_key => {
            out.push(TAG_MAP_SAME_KEY);
            put_bytes(out, map_key);
        }
        Some(map_key) => {
            out.push(TAG_MAP);
            put_varint(out, u64::from(e.state_id));
            put_bytes(out, e.key);
            put_bytes(out, map_key);
        }
        None => {
            out.push(TAG_PLAIN);
            put_varint(out, u64::from(e.state_id));
            put_bytes(out, e.key);
        }
    }
    put_bytes(out, e.value);
}

/// Compares two entries of the same key group in snapshot order.
#[inline]
pub(crate) fn entry_order(
    a: (u32, &[u8], Option<&[u8]>),
    b: (u32, &[u8], Option<&[u8]>),
) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| bytes_order(a.1, b.1))
        .then_with(|| match (a.2, b.2) {
            (Some(x), Some(y)) => bytes_order(x, y),
            (x, y) => x.cmp(&y),
        })
}

/// The lexicographic order of two byte strings (`a.cmp(b)`), decided inline by their first 8
/// bytes read as big-endian numbers when those differ, as they do for all but a few neighbours
/// among hashed or random keys: a snapshot load checks the order of every entry, and a call
/// into `memcmp` for 16-byte keys was about 5% of it.
#[inline]
pub(crate) fn bytes_order(a: &[u8], b: &[u8]) -> Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

/// Where one decoded entry lies in its block's payload (`start..end` byte ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryPos {
    /// The state.
    pub state_id: u32,
    /// The composite key.
    pub key: (usize, usize),
    /// The map key (map entries only).
    pub map_key: Option<(usize, usize)>,
    /// The value.
    pub value: (usize, usize),
}

#[inline]
fn span(payload: &[u8], s: (usize, usize)) -> &[u8] {
    payload.get(s.0..s.1).unwrap_or(&[])
}

impl EntryPos {
    /// The entry, borrowing `payload` (the payload this position was decoded from).
    #[inline]
    pub fn entry<'a>(&self, kg: u16, payload: &'a [u8]) -> Entry<'a> {
        Entry {
            kg,
            state_id: self.state_id,
            key: span(payload, self.key),
            map_key: self.map_key.map(|m| span(payload, m)),
            value: span(payload, self.value),
        }
    }
}

/// The last entry of the previous block of the same key group (owned: the block's buffer is
/// reused), so that order is checked across blocks too.
#[derive(Debug, Default)]
struct LastEntry {
    valid: bool,
    state_id: u32,
    key: Vec<u8>,
    map_key: Option<Vec<u8>>,
}

/// What decoding carries from block to block: the registry (to validate state ids and entry
/// kinds), the last entry of the previous block, and per-state totals.
#[derive(Debug)]
pub(crate) struct DecodeCtx {
    /// `(id, is_map)` of every state, in id order.
    states: Vec<(u32, bool)>,
    /// `(entries, payload bytes)` decoded per state (same order).
    tally: Vec<(u64, u64)>,
    last: LastEntry,
}

impl DecodeCtx {
    /// A context for a snapshot with this (verified, id-ordered) registry.
    pub fn new(states: &[StateInfo]) -> Self {
        DecodeCtx {
            states: states.iter().map(|s| (s.id, s.is_map())).collect(),
            tally: vec![(0, 0); states.len()],
            last: LastEntry::default(),
        }
    }

    /// The next block starts a new key group: its first entry need not follow the previous one.
    pub fn start_key_group(&mut self) {
        self.last.valid = false;
    }

    /// `(entries, payload bytes)` decoded so far per state, in registry order.
    pub fn tally(&self) -> &[(u64, u64)] {
        &self.tally
    }
}

/// Decodes the entries of one verified block, checking their structure and order.
#[derive(Debug, Clone)]
pub(crate) struct BlockDecoder {
    pos: usize,
    left: u32,
    done: bool,
    prev: Option<EntryPos>,
    /// Registry index and map-ness of `prev`'s state.
    state: (usize, bool),
}

impl BlockDecoder {
    /// A decoder for a block whose header announces `entry_count` entries.
    pub fn new(entry_count: u32) -> Self {
        BlockDecoder {
            pos: 0,
            left: entry_count,
            done: false,
            prev: None,
            state: (0, false),
        }
    }

    /// The next entry of `payload` (always the same block's payload), or `None` after the last
    /// one. At the end, checks that the payload holds nothing more and remembers the last entry in
    /// `ctx` for the next block. Offsets in errors are relative to `payload`.
    #[inline]
    pub fn next(
        &mut self,
        payload: &[u8],
        ctx: &mut DecodeCtx,
    ) -> Result<Option<EntryPos>, SnapError> {
        if self.left == 0 {
            if !self.done {
                self.finish(payload, ctx)?;
            }
            return Ok(None);
        }
        let start = self.pos;
        let rest = payload.get(start..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(bad(
                start,
                format!("the block ends with {} of its entries missing", self.left),
            ));
        }
        let rec = |e: RecordError| bad(start + e.offset, e.what);
        let mut r = Reader::new(rest);
        let span_of = |r: &mut Reader<'_>| -> Result<(usize, usize), SnapError> {
            let b = r.bytes().map_err(rec)?;
            let end = start + r.offset();
            Ok((end - b.len(), end))
        };
        let tag = r.u8().map_err(rec)?;
        let (state_id, key, map_key, same_key) = match tag {
            TAG_PLAIN | TAG_MAP => {
                let v = r.varint(5).map_err(rec)?;
                let state_id =
                    u32::try_from(v).map_err(|_| bad(start + 1, "state id overflows 32 bits"))?;
                let key = span_of(&mut r)?;
                let map_key = if tag == TAG_MAP {
                    Some(span_of(&mut r)?)
                } else {
                    None
                };
                (state_id, key, map_key, false)
            }
            TAG_MAP_SAME_KEY => {
                let Some(prev) = self.prev.filter(|p| p.map_key.is_some()) else {
                    return Err(bad(
                        start,
                        "a same-key map entry does not follow a map entry of its block",
                    ));
                };
                (prev.state_id, prev.key, Some(span_of(&mut r)?), true)
            }
            _ => return Err(bad(start, format!("unknown entry tag {tag}"))),
        };
        let value = span_of(&mut r)?;
        let pos = EntryPos {
            state_id,
            key,
            map_key,
            value,
        };

        // The state: registered, and of the kind the tag says.
        let new_state = self.prev.is_none_or(|p| p.state_id != state_id);
        if new_state {
            let i = ctx
                .states
                .binary_search_by_key(&state_id, |s| s.0)
                .map_err(|_| bad(start, format!("state id {state_id} is not in the registry")))?;
            self.state = (i, ctx.states.get(i).is_some_and(|s| s.1));
        }
        if map_key.is_some() != self.state.1 {
            return Err(bad(
                start,
                format!(
                    "entry tag {tag} does not match the kind of state {state_id} ({})",
                    if self.state.1 { "a map" } else { "not a map" }
                ),
            ));
        }

        // Strictly after the previous entry (in this block, or the previous block of the group).
        let entry = pos.entry(0, payload);
        let after = if same_key {
            let prev_map_key = self.prev.and_then(|p| p.map_key).map(|m| span(payload, m));
            entry.map_key > prev_map_key
        } else if let Some(p) = self.prev {
            let prev = p.entry(0, payload);
            entry_order(
                (entry.state_id, entry.key, entry.map_key),
                (prev.state_id, prev.key, prev.map_key),
            ) == Ordering::Greater
        } else if ctx.last.valid {
            entry_order(
                (entry.state_id, entry.key, entry.map_key),
                (
                    ctx.last.state_id,
                    &ctx.last.key,
                    ctx.last.map_key.as_deref(),
                ),
            ) == Ordering::Greater
        } else {
            true
        };
        if !after {
            return Err(bad(
                start,
                "entry is not after the previous one in (state, key, map key) order",
            ));
        }

        if let Some(t) = ctx.tally.get_mut(self.state.0) {
            t.0 += 1;
            t.1 +=
                (entry.key.len() + entry.map_key.map_or(0, <[u8]>::len) + entry.value.len()) as u64;
        }
        self.prev = Some(pos);
        self.left -= 1;
        self.pos = start + r.offset();
        Ok(Some(pos))
    }

    fn finish(&mut self, payload: &[u8], ctx: &mut DecodeCtx) -> Result<(), SnapError> {
        if self.pos != payload.len() {
            return Err(bad(
                self.pos,
                format!(
                    "{} bytes after the block's last entry",
                    payload.len().saturating_sub(self.pos)
                ),
            ));
        }
        if let Some(p) = self.prev {
            let e = p.entry(0, payload);
            let last = &mut ctx.last;
            last.valid = true;
            last.state_id = e.state_id;
            last.key.clear();
            last.key.extend_from_slice(e.key);
            match (e.map_key, &mut last.map_key) {
                (Some(m), Some(v)) => {
                    v.clear();
                    v.extend_from_slice(m);
                }
                (Some(m), slot) => *slot = Some(m.to_vec()),
                (None, slot) => *slot = None,
            }
        }
        self.done = true;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Footer and trailer

/// Appends the footer for `meta` and `index` to `out`.
pub(crate) fn encode_footer(out: &mut Vec<u8>, meta: &SnapshotMeta, index: &[KeyGroupIndexEntry]) {
    out.extend_from_slice(&meta.lsn.to_le_bytes());
    out.extend_from_slice(&meta.max_key_groups.to_le_bytes());
    out.extend_from_slice(&meta.key_groups.start().to_le_bytes());
    out.extend_from_slice(&meta.key_groups.end().to_le_bytes());
    out.extend_from_slice(&meta.entries.to_le_bytes());
    put_varint(out, meta.states.len() as u64);
    for s in &meta.states {
        put_varint(out, u64::from(s.id));
        out.push(s.kind);
        out.push(s.flags);
        put_varint(out, s.ttl_millis);
        put_bytes(out, s.name.as_bytes());
        put_varint(out, s.entries);
        put_varint(out, s.payload_bytes);
    }
    put_varint(out, index.len() as u64);
    for i in index {
        out.extend_from_slice(&i.kg.to_le_bytes());
        out.extend_from_slice(&i.offset.to_le_bytes());
        put_varint(out, u64::from(i.blocks));
        put_varint(out, i.entries);
        put_varint(out, i.bytes);
    }
}

/// Decodes and validates a footer (`buf` is exactly the footer) of a file with this header whose
/// footer starts at `footer_offset`. Offsets in errors are relative to `buf`.
pub(crate) fn decode_footer(
    buf: &[u8],
    header: &SnapshotHeader,
    footer_offset: u64,
) -> Result<(SnapshotMeta, Vec<KeyGroupIndexEntry>), SnapError> {
    if buf.len() < F_FIXED_LEN {
        return Err(bad(
            0,
            format!("footer of {} bytes is too short", buf.len()),
        ));
    }
    let lsn = get_u64(buf, F_LSN).unwrap_or(0);
    let max_key_groups = get_u16(buf, F_MAX_KEY_GROUPS).unwrap_or(0);
    let kg_start = get_u16(buf, F_KG_START).unwrap_or(0);
    let kg_end = get_u16(buf, F_KG_END).unwrap_or(0);
    let entries = get_u64(buf, F_ENTRIES).unwrap_or(0);
    if lsn != header.lsn || max_key_groups != header.max_key_groups {
        return Err(bad(
            F_LSN,
            format!(
                "footer says LSN {lsn} and {max_key_groups} key groups, the header LSN {} and {}",
                header.lsn, header.max_key_groups
            ),
        ));
    }
    if kg_start > kg_end || kg_end > max_key_groups {
        return Err(bad(
            F_KG_START,
            format!("key-group range {kg_start}..{kg_end} is invalid"),
        ));
    }
    let body = &buf[F_FIXED_LEN..];
    let mut r = Reader::new(body);
    let at = |r: &Reader<'_>| F_FIXED_LEN + r.offset();
    let rec = |e: RecordError| bad(F_FIXED_LEN + e.offset, e.what);

    let state_count = r.varint(5).map_err(rec)?;
    // Never reserve more than the bytes could hold (a state takes at least 7).
    let mut states = Vec::with_capacity((state_count as usize).min(body.len() / 7));
    let mut state_entries = 0u64;
    for _ in 0..state_count {
        let s_at = at(&r);
        let id = u32::try_from(r.varint(5).map_err(rec)?)
            .map_err(|_| bad(s_at, "state id overflows 32 bits"))?;
        let kind = r.u8().map_err(rec)?;
        let flags = r.u8().map_err(rec)?;
        let ttl_millis = r.varint(10).map_err(rec)?;
        let name_at = at(&r);
        let name = r.bytes().map_err(rec)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| bad(name_at, "state name is not UTF-8"))?
            .to_owned();
        let s_entries = r.varint(10).map_err(rec)?;
        let payload_bytes = r.varint(10).map_err(rec)?;
        if states.last().is_some_and(|p: &StateInfo| p.id >= id) {
            return Err(bad(s_at, "state ids are not in increasing order"));
        }
        state_entries = state_entries
            .checked_add(s_entries)
            .ok_or_else(|| bad(s_at, "state entry counts overflow"))?;
        states.push(StateInfo {
            id,
            name,
            kind,
            flags,
            ttl_millis,
            entries: s_entries,
            payload_bytes,
        });
    }
    if state_entries != entries {
        return Err(bad(
            F_ENTRIES,
            format!("the states hold {state_entries} entries, the footer says {entries}"),
        ));
    }

    let count_at = at(&r);
    let index_count = r.varint(5).map_err(rec)?;
    if index_count > u64::from(kg_end - kg_start) {
        return Err(bad(
            count_at,
            format!(
                "{index_count} index entries for {} key groups",
                kg_end - kg_start
            ),
        ));
    }
    let mut index: Vec<KeyGroupIndexEntry> = Vec::with_capacity(index_count as usize);
    let mut next_offset = HEADER_LEN as u64;
    let mut index_entries = 0u64;
    for _ in 0..index_count {
        let i_at = at(&r);
        let mut fixed = [0u8; 10];
        for b in &mut fixed {
            *b = r.u8().map_err(rec)?;
        }
        let kg = u16::from_le_bytes([fixed[0], fixed[1]]);
        let offset = get_u64(&fixed, 2).unwrap_or(0);
        let blocks = u32::try_from(r.varint(5).map_err(rec)?)
            .map_err(|_| bad(i_at, "block count overflows 32 bits"))?;
        let kg_entries = r.varint(10).map_err(rec)?;
        let bytes = r.varint(10).map_err(rec)?;
        if kg < kg_start || kg >= kg_end || index.last().is_some_and(|p| p.kg >= kg) {
            return Err(bad(
                i_at,
                format!("index entry for key group {kg} is out of range or out of order"),
            ));
        }
        if offset != next_offset {
            return Err(bad(
                i_at,
                format!("key group {kg} starts at {offset}, not where the previous one ends ({next_offset})"),
            ));
        }
        if blocks == 0
            || kg_entries < u64::from(blocks)
            || bytes < u64::from(blocks) * BLOCK_HEADER_LEN as u64
        {
            return Err(bad(
                i_at,
                format!(
                    "key group {kg}: {blocks} blocks, {kg_entries} entries and {bytes} bytes are inconsistent"
                ),
            ));
        }
        next_offset = offset
            .checked_add(bytes)
            .filter(|&end| end <= footer_offset)
            .ok_or_else(|| bad(i_at, format!("key group {kg} runs past the footer")))?;
        index_entries = index_entries.saturating_add(kg_entries);
        index.push(KeyGroupIndexEntry {
            kg,
            offset,
            blocks,
            entries: kg_entries,
            bytes,
        });
    }
    if next_offset != footer_offset {
        return Err(bad(
            count_at,
            format!("the blocks end at {next_offset} but the footer starts at {footer_offset}"),
        ));
    }
    if index_entries != entries {
        return Err(bad(
            count_at,
            format!("the index counts {index_entries} entries, the footer says {entries}"),
        ));
    }
    if !r.is_empty() {
        return Err(bad(at(&r), "bytes after the end of the footer"));
    }
    let meta = SnapshotMeta {
        lsn,
        max_key_groups,
        key_groups: KeyGroupRange::new(kg_start, kg_end),
        states,
        entries,
    };
    Ok((meta, index))
}

/// The decoded trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    /// Where the footer starts.
    pub footer_offset: u64,
    /// Footer length.
    pub footer_len: u32,
    /// CRC-32 of the footer and the trailer's first [`TRAILER_CRC_COVERED`] bytes.
    pub footer_crc: u32,
}

/// The trailer for a footer `footer` at `footer_offset`.
pub(crate) fn encode_trailer(footer_offset: u64, footer: &[u8]) -> [u8; TRAILER_LEN] {
    let mut out = [0u8; TRAILER_LEN];
    put_u64(&mut out, T_FOOTER_OFFSET, footer_offset);
    put_u32(&mut out, T_FOOTER_LEN, footer.len() as u32);
    let mut h = crc32fast::Hasher::new();
    h.update(footer);
    h.update(&out[..TRAILER_CRC_COVERED]);
    put_u32(&mut out, T_FOOTER_CRC, h.finalize());
    out[T_MAGIC..].copy_from_slice(&TRAILER_MAGIC);
    out
}

/// Decodes the trailer of a file of `file_len` bytes (`buf` is its last [`TRAILER_LEN`] bytes)
/// and checks that the footer it points to lies between the header and the trailer.
pub(crate) fn decode_trailer(buf: &[u8], file_len: u64) -> Result<Trailer, SnapError> {
    if buf.len() != TRAILER_LEN {
        return Err(bad(0, "truncated trailer"));
    }
    if buf.get(T_MAGIC..) != Some(&TRAILER_MAGIC[..]) {
        return Err(bad(
            T_MAGIC,
            "no snapshot trailer at the end of the file (incomplete or damaged)",
        ));
    }
    let t = Trailer {
        footer_offset: get_u64(buf, T_FOOTER_OFFSET).unwrap_or(0),
        footer_len: get_u32(buf, T_FOOTER_LEN).unwrap_or(0),
        footer_crc: get_u32(buf, T_FOOTER_CRC).unwrap_or(0),
    };
    let trailer_at = file_len.checked_sub(TRAILER_LEN as u64);
    let footer_end = t.footer_offset.checked_add(u64::from(t.footer_len));
    if t.footer_offset < HEADER_LEN as u64 || trailer_at.is_none() || footer_end != trailer_at {
        return Err(bad(
            T_FOOTER_OFFSET,
            format!(
                "footer at {} of {} bytes does not end where the trailer starts",
                t.footer_offset, t.footer_len
            ),
        ));
    }
    Ok(t)
}

/// Checks the footer CRC. `tail` is the file from the footer to the end (footer and trailer).
pub(crate) fn verify_footer_crc(tail: &[u8], trailer: &Trailer) -> Result<(), SnapError> {
    let covered_len = tail.len().saturating_sub(TRAILER_LEN - TRAILER_CRC_COVERED);
    let covered = tail.get(..covered_len).unwrap_or(&[]);
    let computed = crc32fast::hash(covered);
    if computed != trailer.footer_crc {
        return Err(bad(
            0,
            format!(
                "checksum mismatch: stored {:#010x}, computed {computed:#010x}",
                trailer.footer_crc
            ),
        ));
    }
    Ok(())
}

/// Rewrites every checksum of a snapshot image in place — the header's, each block's that can be
/// found by walking the blocks from offset 32, and the footer's if the trailer points to a
/// plausible footer — so that tests and the fuzzer can make structural damage that gets past the
/// CRCs. Never panics, whatever the bytes.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn fix_checksums(file: &mut [u8]) {
    if file.len() >= HEADER_LEN {
        let crc = crc32fast::hash(&file[..H_CRC]);
        put_u32(file, H_CRC, crc);
    }
    let len = file.len();
    let trailer_at = len.checked_sub(TRAILER_LEN).filter(|&t| t >= HEADER_LEN);
    let footer_at = trailer_at.and_then(|t| {
        let off = usize::try_from(get_u64(file, t + T_FOOTER_OFFSET)?).ok()?;
        (HEADER_LEN..=t).contains(&off).then_some(off)
    });
    let blocks_end = footer_at.or(trailer_at).unwrap_or(len);
    let mut at = HEADER_LEN;
    while at + BLOCK_HEADER_LEN <= blocks_end {
        let Some(end) = get_u32(file, at + B_PAYLOAD_LEN)
            .and_then(|n| (at + BLOCK_HEADER_LEN).checked_add(n as usize))
            .filter(|&end| end <= blocks_end)
        else {
            break;
        };
        let crc = crc32fast::hash(&file[at + B_PAYLOAD_LEN..end]);
        put_u32(file, at + B_CRC, crc);
        at = end;
    }
    if let (Some(f), Some(t)) = (footer_at, trailer_at) {
        let crc = crc32fast::hash(&file[f..t + TRAILER_CRC_COVERED]);
        put_u32(file, t + T_FOOTER_CRC, crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The inline order is the slices' own, for lengths around the 8-byte head and for
        /// strings sharing a prefix (small alphabet), where the fallback decides.
        #[test]
        fn bytes_order_is_slice_order(
            a in proptest::collection::vec(0u8..3, 0..20),
            b in proptest::collection::vec(0u8..3, 0..20),
            x in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
            y in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
        ) {
            proptest::prop_assert_eq!(bytes_order(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(bytes_order(&x, &y), x.cmp(&y));
            proptest::prop_assert_eq!(bytes_order(&a, &a), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn varint_len_matches_put_varint() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(varint_len(v), b.len(), "{v}");
        }
    }

    #[test]
    fn header_round_trip_and_flips() {
        let h = SnapshotHeader {
            lsn: 77,
            max_key_groups: 128,
        };
        let buf = h.encode();
        assert_eq!(SnapshotHeader::decode(&buf), Ok(h));
        for byte in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut b = buf;
                b[byte] ^= 1 << bit;
                let res = SnapshotHeader::decode(&b);
                match res {
                    Err(SnapError::UnsupportedVersion(_)) => {
                        assert!((H_VERSION..H_RESERVED).contains(&byte))
                    }
                    Err(SnapError::Bad { .. }) => {}
                    Ok(_) => panic!("flip at byte {byte} bit {bit} accepted"),
                }
            }
        }
        assert!(SnapshotHeader::decode(&buf[..31]).is_err());
    }

    #[test]
    fn entries_round_trip_with_the_decoder() {
        let states = vec![
            StateInfo {
                id: 0,
                name: "v".into(),
                kind: 1,
                flags: 0,
                ttl_millis: 0,
                entries: 0,
                payload_bytes: 0,
            },
            StateInfo {
                id: 300,
                name: "m".into(),
                kind: 3,
                flags: 0,
                ttl_millis: 0,
                entries: 0,
                payload_bytes: 0,
            },
        ];
        let e = |state_id, key: &'static [u8], map_key, value: &'static [u8]| Entry {
            kg: 0,
            state_id,
            key,
            map_key,
            value,
        };
        let entries = [
            e(0, b"\x01a", None, b"1"),
            e(0, b"\x01b", None, b""),
            e(300, b"\x01a", Some(&b"x"[..]), b"2"),
            e(300, b"\x01a", Some(&b"y"[..]), b"3"),
            e(300, b"\x01c", Some(&b""[..]), b"4"),
        ];
        let mut payload = Vec::new();
        let mut prev: Option<Entry> = None;
        for x in &entries {
            let same = prev.is_some_and(|p| p.map_key.is_some() && p.key == x.key);
            let before = payload.len();
            encode_entry(&mut payload, x, same);
            assert_eq!(payload.len() - before, entry_len(x, same));
            prev = Some(*x);
        }
        let mut ctx = DecodeCtx::new(&states);
        let mut d = BlockDecoder::new(entries.len() as u32);
        let mut got = Vec::new();
        while let Some(p) = d.next(&payload, &mut ctx).unwrap() {
            got.push(p.entry(0, &payload));
        }
        assert_eq!(got, entries);
        assert_eq!(ctx.tally(), &[(2, 5), (3, 11)]);
        // Every truncation and every wrong count is an error, never a panic.
        for cut in 0..payload.len() {
            let mut ctx = DecodeCtx::new(&states);
            let mut d = BlockDecoder::new(entries.len() as u32);
            let mut res = Ok(Some(()));
            while let Ok(Some(())) = res {
                res = d.next(&payload[..cut], &mut ctx).map(|o| o.map(|_| ()));
            }
            assert!(res.is_err(), "cut at {cut}");
        }
        for count in [1, 4, 6] {
            let mut ctx = DecodeCtx::new(&states);
            let mut d = BlockDecoder::new(count);
            let mut res = Ok(Some(()));
            while let Ok(Some(())) = res {
                res = d.next(&payload, &mut ctx).map(|o| o.map(|_| ()));
            }
            assert!(res.is_err(), "count {count}");
        }
    }

    #[test]
    fn trailer_checks() {
        let footer = b"some footer bytes";
        let t = encode_trailer(100, footer);
        let len = 100 + footer.len() as u64 + TRAILER_LEN as u64;
        let d = decode_trailer(&t, len).unwrap();
        assert_eq!(d.footer_offset, 100);
        let mut tail = footer.to_vec();
        tail.extend_from_slice(&t);
        verify_footer_crc(&tail, &d).unwrap();
        assert!(decode_trailer(&t, len + 1).is_err());
        assert!(decode_trailer(&t[1..], len).is_err());
        let mut bad_tail = tail.clone();
        bad_tail[3] ^= 1;
        assert!(verify_footer_crc(&bad_tail, &d).is_err());
    }
}
