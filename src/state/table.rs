//! The in-memory state table: byte keys to byte values, located by a 64-bit hash the caller
//! supplies (the xxh3 of the encoded key, computed once and also used for the key group).
//!
//! ```text
//!  slots: Slots       segments of open addressing, Robin Hood linear probing, max load 7/8,
//!                     under a directory by the fingerprint's top bits (see `table_slots.rs`)
//!  ┌──────────┬────────────┬────────────┐
//!  │ fp: u32  │ chunk: u32 │ off: u32   │   12 bytes; chunk == u32::MAX marks a free slot
//!  └──────────┴─────┬──────┴─────┬──────┘   fp = top 32 bits of hash * 0x9E37_79B9_7F4A_7C15
//!                   ▼            ▼
//!  chunks: Vec<Chunk>   bump-allocated arena: normal chunks of 4 KiB to 2 MiB (an eighth of the
//!                       live data, so small tables stay small); entries over 256 KiB get a chunk
//!                       of their own
//!  entry: [key_len u32 | len u32 | cap u32 | key | value | slack (cap - len) | fp u32]
//!          bit 31 of key_len marks a dead entry  (12-byte header, 4-byte trailer)
//! ```
//!
//! # Lookups and updates
//!
//! A key's fingerprint is the top 32 bits of `hash * 0x9E37_79B9_7F4A_7C15` (Fibonacci hashing)
//! and its home slot the fingerprint's top `log2(slots)` bits, so a table holding one key group,
//! whose hashes share their low bits, still spreads evenly. A probe compares the fingerprint in
//! the slot before it looks at the arena, so probing past other keys, or missing, reads no entry:
//! slots in a probe run have other homes (other top bits) or, rarely, the same home and then
//! still differ in the remaining `32 - log2(slots)` bits but for a 2^-(32 - log2(slots)) chance.
//! An update of an existing key therefore reads one slot line (rarely two) and the entry, whose
//! header, key and first value bytes share a line; nothing else. Robin Hood order ends an
//! unsuccessful probe at the first slot closer to its home than the probe is to its own.
//!
//! A value that fits its entry's capacity is written in place. Otherwise the entry is rewritten
//! at the arena's end and the old one becomes garbage (its header is marked dead). `append` at
//! least doubles the capacity when it must move a value, so n small appends to one key copy O(n)
//! bytes in total. An in-place write that would leave more than `max(new length, 64)` bytes of
//! slack moves the value instead, so a value that shrank does not keep its old size forever.
//!
//! # Deletion and growth
//!
//! Deletion shifts the rest of the probe run back by one slot (backward-shift deletion): there
//! are no tombstones, so insert/remove cycles never degrade probing. Growth rebuilds one segment
//! of the slot index: it doubles while smaller than 2^20 slots and then splits in two by the
//! next fingerprint bit (extendible hashing), re-placing its slots from the fingerprints stored
//! in them, without touching the arena or hashing a key. `remove` never shrinks the index;
//! `retain` rebuilds it smaller when at most 1/8 of it would be needed, and `clear` frees it.
//!
//! # Compaction
//!
//! Garbage is dead entries plus the unused tails of full chunks. Each chunk counts its live bytes,
//! and a chunk with none left is freed at once (so a large value's own chunk goes back to the
//! allocator as soon as the value is replaced or removed). After an operation that made garbage
//! (a value moved, or a key removed), if garbage exceeds both the live bytes and 4 KiB, the table
//! evacuates up to two chunks, each the one with the most garbage and only if at least half of
//! it is garbage: the chunk's live entries are copied to the open chunk (each entry's slot is
//! found by probing with the fingerprint in its trailer) and the chunk is freed. An evacuation
//! copies less than it frees, so compaction costs amortized O(1) per byte of garbage made;
//! garbage stays below about the live bytes plus a few chunks; and no step ever holds a second
//! copy of the arena (growth adds chunks and never copies old ones). `retain` ends by evacuating
//! every chunk that is at least half garbage, in bulk (O(live bytes), within `retain`'s own
//! O(len) cost).
//!
//! # Pauses
//!
//! The longest single operations: an insert of a new key that rebuilds a segment re-places at
//! most 917 K slots, with no arena access (about 15–30 ms on the 2-core VM of
//! `benches/state_table.rs`), however large the table (one array doubling at 7.3 M entries
//! took 235 ms, and twice that at the next doubling); an operation that made garbage evacuates at most
//! two chunks, i.e. copies at most 4 MiB and probes one slot per entry moved (about 1 ms there).
//! `with_capacity` avoids the growth pauses when the final size is known (recovery). `retain`
//! and `clear` are O(len).
//!
//! # Memory
//!
//! Per entry, beyond its key and value bytes: 12 bytes of slot divided by the load factor (7/16
//! to 7/8 after growth, so 14–28 bytes), the 16 bytes of header and trailer, capacity slack (only
//! after `append` or a shrinking write), and garbage not yet reclaimed. For 1 M entries of 16-byte
//! keys and 100-byte values (2 M slots) that is 42 bytes, measured by `heap_bytes`. Full-size
//! chunks are anonymous mappings advised `MADV_HUGEPAGE` and slot arrays of 4 MiB or more are
//! advised likewise: a lookup's cache misses then rarely add a page walk, and a growing arena
//! takes one page fault per 2 MiB (see [`ChunkBuf`]).
//!
//! Limits: keys shorter than 2 GiB, values shorter than 4 GiB, fewer than 2^32 - 1 chunks and
//! fewer than 2^32 slot segments. Larger inputs panic with a message: they are programming errors of the state
//! layer above, not I/O. The table holds no `unsafe` code and panics on no input within these
//! limits.

use std::fmt;
use std::mem;
use std::ops::Range;

use crate::hint::prefetch;

#[path = "table_slots.rs"]
mod slots;
use slots::{Pos, Slots};

/// What the closure of [`Table::update`] decided to do with the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Leave the table as it was: an existing value is unchanged, an absent key stays absent.
    /// Whatever the closure wrote into the buffer is discarded.
    Keep,
    /// Store the buffer's contents as the key's value, inserting the key if it was absent. An
    /// empty buffer stores an empty value (the key is present afterwards).
    Set,
    /// Remove the key if it is present (nothing happens if it is absent). The buffer is ignored.
    Remove,
}

/// Counters of the table's internal work since it was created or cleared, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Slot-array rebuilds (growth, or shrinking at the end of `retain`).
    pub rehashes: u64,
    /// Entries rewritten at the arena's end because the new value did not fit in place.
    pub relocations: u64,
    /// Chunks evacuated by compaction.
    pub evacuated_chunks: u64,
    /// Bytes of whole entries (header, key, value capacity, trailer) copied by compaction.
    pub evacuated_bytes: u64,
}

/// A hash table from byte keys to byte values, with keys and values in a chunked arena and no
/// heap allocation per entry. See the [module documentation](self) for the layout, the cost of
/// each operation and the worst-case pauses.
///
/// Every method takes the key's 64-bit `hash` from the caller, who must pass the same hash for
/// the same key every time (the table never hashes keys itself; a wrong hash makes the key
/// unfindable, never unsound). The hash should be well mixed (xxh3 is); hashes whose low bits
/// are all equal, as within one key group, are fine.
///
/// The table owns plain vectors, so it is `Send` and `Sync`; every mutation takes `&mut self`.
pub struct Table {
    /// The slot index: Robin Hood segments under a directory (see [`slots`]).
    slots: Slots,
    /// Number of entries.
    len: usize,
    /// The arena. A freed chunk stays in place with no allocation and its index on `free_chunks`.
    chunks: Vec<Chunk>,
    /// Indices of freed chunks, reused before the vector grows.
    free_chunks: Vec<u32>,
    /// The chunk new entries are bump-allocated in, or [`NO_CHUNK`].
    open: usize,
    /// Sum of the chunks' nominal capacities.
    arena_bytes: usize,
    /// Sum of the capacities of the chunks holding a single large entry.
    large_bytes: usize,
    /// Sum of the sizes (header, key, value capacity, trailer) of the live entries.
    live_bytes: usize,
    /// Sum of the live keys' and values' lengths.
    payload: usize,
    /// Expected arena size given to `with_capacity`: lets the first chunks be full size.
    arena_hint: usize,
    /// Full-size chunks faulted in ahead of need by another thread ([`Table::add_prefaulted`]),
    /// taken before a new chunk is allocated.
    prefaulted: Vec<ChunkBuf>,
    /// The buffer [`Table::update`] lends to its closure, kept between calls.
    scratch: Vec<u8>,
    /// Work counters.
    stats: TableStats,
}

/// One slot (12 bytes): the key's fingerprint and the location of its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// [`fingerprint`] of the key's hash; its top bits are the home slot's index.
    fp: u32,
    /// Chunk of the entry, or `u32::MAX` for a free slot.
    chunk: u32,
    /// Offset of the entry in its chunk.
    off: u32,
}

impl Slot {
    /// Whether the slot is free.
    #[inline]
    fn is_empty(&self) -> bool {
        self.chunk == u32::MAX
    }

    /// The entry's location, packed.
    #[inline]
    fn loc(&self) -> u64 {
        (u64::from(self.chunk) << 32) | u64::from(self.off)
    }

    /// A used slot.
    #[inline]
    fn new(fp: u32, loc: u64) -> Slot {
        Slot {
            fp,
            chunk: (loc >> 32) as u32,
            off: loc as u32,
        }
    }
}

/// The bytes of a chunk: a used prefix of a fixed capacity, grown only by appending (the arena's
/// bump pointer) and never beyond the capacity. Full-size chunks ([`CHUNK`], 2 MiB) are
/// anonymous mappings advised `MADV_HUGEPAGE`, so the kernel backs each with one huge page: one
/// page fault fills it instead of 512, and one TLB entry covers it, which halves the cost of an
/// entry's cache miss on a VM. Smaller chunks (small tables) come from the heap.
#[derive(Debug)]
enum ChunkBuf {
    /// From the heap; `Vec::len` is the used prefix.
    Heap(Vec<u8>),
    /// An anonymous mapping of the chunk's capacity; `len` bytes of it are used.
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl Default for ChunkBuf {
    fn default() -> ChunkBuf {
        ChunkBuf::Heap(Vec::new())
    }
}

/// A full-size arena chunk whose memory is already faulted in (and so zeroed by the kernel), made
/// on one thread for a table filled on another; see [`Table::add_prefaulted`].
#[derive(Debug)]
pub(crate) struct PrefaultedChunk(ChunkBuf);

impl PrefaultedChunk {
    /// Maps a chunk and faults in all its pages (huge pages where the kernel gives them).
    pub(crate) fn new() -> PrefaultedChunk {
        let mut buf = ChunkBuf::with_capacity(CHUNK);
        if let ChunkBuf::Mapped { map, .. } = &mut buf {
            #[cfg(target_os = "linux")]
            let populated = map.advise(memmap2::Advice::PopulateWrite).is_ok();
            #[cfg(not(target_os = "linux"))]
            let populated = false;
            if !populated {
                // Before Linux 5.14: one write per page faults it in.
                for i in (0..map.len()).step_by(4096) {
                    map[i] = 0;
                }
            }
        }
        PrefaultedChunk(buf)
    }
}

/// An arena chunk a [`ChunkWriter`] filled, with the index it takes in the table's arena.
#[derive(Debug)]
pub(crate) struct FilledChunk {
    index: usize,
    chunk: Chunk,
    /// Sum of the keys' and values' lengths in it.
    payload: usize,
    /// Whether it is the writer's last normal chunk, which becomes the table's open chunk.
    open: bool,
}

impl FilledChunk {
    /// Appends a live entry, which the caller made room for.
    #[inline]
    fn push(&mut self, fp: u32, key: &[u8], value: &[u8]) -> Written {
        let off = self.chunk.data.len();
        self.chunk.live += push_entry(&mut self.chunk.data, fp, key, value, value.len());
        self.payload += key.len() + value.len();
        Written {
            fp,
            loc: pack(self.index, off),
        }
    }
}

/// An entry a [`ChunkWriter`] wrote: what [`Table::place_written`] needs to index it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    fp: u32,
    loc: u64,
}

/// Writes the entries of a bulk load in the arena format of one table, on a thread other than
/// the one that owns the table. An insert of a new key is two halves of about equal cost:
/// writing the entry (a copy of its bytes into fresh memory) and placing its slot (a cache
/// miss in the slot array). A snapshot load's decoding thread does the first half here, and the
/// thread that owns the table does the second with [`Table::place_written`].
///
/// The writer numbers the chunks it makes from the table's arena length when it was made
/// ([`Table::bulk_writer`], an empty table), and the table adopts each under that number
/// ([`Table::adopt`]), in any order, so a [`Written`] location is valid before its chunk
/// arrives. Nothing else may add chunks to that table until every chunk, the last one from
/// [`ChunkWriter::finish`] too, is adopted: the table is in use again only then.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    /// The index the next chunk made gets.
    next: usize,
    /// The normal chunk being filled.
    open: Option<FilledChunk>,
    /// Chunks filled (or made for one large entry) and not yet taken.
    done: Vec<FilledChunk>,
    /// Full-size chunks faulted in by another thread, used before new ones are mapped.
    prefaulted: Vec<ChunkBuf>,
}

impl ChunkWriter {
    /// Hands the writer a chunk another thread faulted in; see [`Table::add_prefaulted`].
    pub(crate) fn add_prefaulted(&mut self, chunk: PrefaultedChunk) {
        self.prefaulted.push(chunk.0);
    }

    /// A new chunk of capacity `cap` under the next index.
    fn new_chunk(&mut self, cap: usize, large: bool) -> FilledChunk {
        let data = ChunkBuf::take_or_new(&mut self.prefaulted, cap);
        let index = self.next;
        assert!(index < u32::MAX as usize, "state table: too many chunks");
        self.next += 1;
        FilledChunk {
            index,
            chunk: Chunk {
                data,
                cap,
                live: 0,
                large,
            },
            payload: 0,
            open: false,
        }
    }

    /// Writes a live entry for `key` (of table hash `hash`) with `value`, exactly as
    /// [`Table::insert`] would lay it out. Panics like [`Table::insert`].
    #[inline]
    pub(crate) fn write(&mut self, hash: u64, key: &[u8], value: &[u8]) -> Written {
        check_key(key);
        check_value(value.len());
        let fp = fingerprint(hash);
        let size = entry_size(key.len(), value.len());
        if size > LARGE {
            let mut large = self.new_chunk(size, true);
            let written = large.push(fp, key, value);
            self.done.push(large);
            return written;
        }
        if self
            .open
            .as_ref()
            .is_none_or(|o| o.chunk.cap - o.chunk.data.len() < size)
        {
            let fresh = self.new_chunk(CHUNK, false);
            self.done.extend(self.open.replace(fresh));
        }
        match self.open.as_mut() {
            Some(open) => open.push(fp, key, value),
            None => unreachable!("the open chunk was just made"),
        }
    }

    /// The chunks finished since the last call (none of them the one still being filled).
    pub(crate) fn take_done(&mut self) -> Vec<FilledChunk> {
        mem::take(&mut self.done)
    }

    /// Every chunk not taken yet, the one being filled last (the table's open chunk to be).
    pub(crate) fn finish(mut self) -> Vec<FilledChunk> {
        if let Some(mut open) = self.open.take() {
            open.open = true;
            self.done.push(open);
        }
        self.done
    }
}

impl ChunkBuf {
    /// A full-size chunk from `prefaulted` when `cap` is the full size and one is there, else a
    /// new buffer of capacity `cap`.
    fn take_or_new(prefaulted: &mut Vec<ChunkBuf>, cap: usize) -> ChunkBuf {
        match prefaulted.pop() {
            Some(c) if cap == CHUNK => c,
            other => {
                prefaulted.extend(other);
                ChunkBuf::with_capacity(cap)
            }
        }
    }

    /// An empty buffer that can hold `cap` bytes.
    fn with_capacity(cap: usize) -> ChunkBuf {
        if cap == CHUNK {
            if let Ok(map) = memmap2::MmapOptions::new().len(cap).map_anon() {
                // A hint: without huge pages the mapping works as well, only slower.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return ChunkBuf::Mapped { map, len: 0 };
            }
        }
        ChunkBuf::Heap(Vec::with_capacity(cap))
    }

    /// Bytes the buffer can hold.
    fn capacity(&self) -> usize {
        match self {
            ChunkBuf::Heap(v) => v.capacity(),
            ChunkBuf::Mapped { map, .. } => map.len(),
        }
    }

    /// The used prefix's new length after appending `n` bytes; panics beyond the capacity of a
    /// mapping (the arena never asks for more room than it reserved).
    fn grown(&self, n: usize) -> usize {
        let len = self.len();
        let new = len
            .checked_add(n)
            .expect("state table: chunk length overflows");
        assert!(new <= self.capacity(), "state table: chunk overrun");
        new
    }

    /// Appends `bytes`.
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.grown(bytes.len());
        match self {
            ChunkBuf::Heap(v) => v.extend_from_slice(bytes),
            ChunkBuf::Mapped { map, len } => {
                map[*len..end].copy_from_slice(bytes);
                *len = end;
            }
        }
    }

    /// Appends a copy of `range` of the used prefix.
    fn extend_from_within(&mut self, range: Range<usize>) {
        let end = self.grown(range.len());
        match self {
            ChunkBuf::Heap(v) => v.extend_from_within(range),
            ChunkBuf::Mapped { map, len } => {
                assert!(
                    range.end <= *len,
                    "state table: copy from beyond the used prefix"
                );
                map.copy_within(range, *len);
                *len = end;
            }
        }
    }

    /// Grows the used prefix to `new_len` bytes with zeros (never shrinks it).
    fn resize_zeroed(&mut self, new_len: usize) {
        let end = self.grown(new_len.saturating_sub(self.len()));
        match self {
            ChunkBuf::Heap(v) => v.resize(end, 0),
            ChunkBuf::Mapped { map, len } => {
                map[*len..end].fill(0);
                *len = end;
            }
        }
    }

    /// Empties the used prefix (the capacity stays).
    fn clear(&mut self) {
        match self {
            ChunkBuf::Heap(v) => v.clear(),
            ChunkBuf::Mapped { len, .. } => *len = 0,
        }
    }
}

impl std::ops::Deref for ChunkBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBuf::Heap(v) => v,
            ChunkBuf::Mapped { map, len } => &map[..*len],
        }
    }
}

impl std::ops::DerefMut for ChunkBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ChunkBuf::Heap(v) => v,
            ChunkBuf::Mapped { map, len } => &mut map[..*len],
        }
    }
}

/// One arena chunk.
#[derive(Debug, Default)]
struct Chunk {
    /// The bytes; `data.len()` is the bump pointer, never beyond `cap`.
    data: ChunkBuf,
    /// Nominal capacity (what the chunk was allocated with); zero for a freed chunk.
    cap: usize,
    /// Sum of the sizes of the live entries in this chunk.
    live: usize,
    /// Whether the chunk was allocated for one large entry.
    large: bool,
}

/// A live entry's position and header, as read during a probe.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Chunk index.
    chunk: usize,
    /// Offset of the header in the chunk.
    off: usize,
    /// Key length.
    key_len: usize,
    /// Value length.
    len: usize,
    /// Value capacity.
    cap: usize,
}

impl Entry {
    /// Range of the value within the chunk.
    fn value_range(&self) -> Range<usize> {
        let start = self.off + HEADER + self.key_len;
        start..start + self.len
    }
}

/// Outcome of probing for a key.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// The key is in `slot`, whose entry is `entry`.
    Found { slot: usize, entry: Entry },
    /// The key is absent; a Robin Hood insertion of it starts at `pos`, `dist` slots from home.
    Vacant { pos: usize, dist: usize },
}

/// Entry header size: key length (4), value length (4), value capacity (4).
const HEADER: usize = 12;
/// Offset of the key length (and the dead flag) in the header.
const H_KEY: usize = 0;
/// Offset of the value length in the header.
const H_LEN: usize = 4;
/// Offset of the value capacity in the header.
const H_CAP: usize = 8;
/// Entry trailer size: the key's fingerprint (4), after the value's capacity. It is read only to
/// find an entry's slot (compaction, `retain`), so it stays off the line an update touches first.
const TRAILER: usize = 4;
/// Flag in the key-length field of a dead entry.
const DEAD: u32 = 1 << 31;
/// Largest key length.
const MAX_KEY: usize = (DEAD - 1) as usize;
/// Largest value length and capacity.
const MAX_VALUE: usize = u32::MAX as usize;

/// Capacity of a full-size normal chunk: one huge page (see [`ChunkBuf`]).
const CHUNK: usize = 2 << 20;
/// Smallest normal chunk (normal chunks are an eighth of the live data, within
/// `MIN_CHUNK..=CHUNK`).
const MIN_CHUNK: usize = 4 << 10;
/// Entries larger than this get a chunk of their own.
const LARGE: usize = CHUNK / 8;
/// Chunks one operation that made garbage may evacuate.
const EVACUATE_PER_OP: usize = 2;
/// Slack an in-place write may leave regardless of the value's length.
const SLACK_MIN: usize = 64;
/// Scratch capacity kept between `update` calls; a larger buffer is freed after use.
const SCRATCH_KEEP: usize = 64 << 10;

/// The free slot (no chunk has index `u32::MAX`).
const EMPTY_SLOT: Slot = Slot {
    fp: 0,
    chunk: u32::MAX,
    off: 0,
};
/// Smallest non-empty slot array.
const MIN_SLOTS: usize = 16;
/// `open` when no chunk is open.
const NO_CHUNK: usize = usize::MAX;
/// Fibonacci-hashing multiplier (2^64 / golden ratio, odd).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The 32-bit fingerprint of a key's hash kept in its slot and entry: the top half of the
/// hash times [`MIX`] (Fibonacci hashing), so that its top bits, the home index, depend on every
/// bit of the hash.
#[inline]
fn fingerprint(hash: u64) -> u32 {
    (hash.wrapping_mul(MIX) >> 32) as u32
}

/// Packs a chunk index and offset into an entry location.
fn pack(chunk: usize, off: usize) -> u64 {
    debug_assert!(chunk < u32::MAX as usize && off <= u32::MAX as usize);
    ((chunk as u64) << 32) | off as u64
}

/// The chunk index of a `loc`.
fn loc_chunk(loc: u64) -> usize {
    (loc >> 32) as usize
}

/// The offset of a `loc`.
fn loc_off(loc: u64) -> usize {
    (loc & u64::from(u32::MAX)) as usize
}

/// Bytes an entry with this key length and value capacity occupies.
fn entry_size(key_len: usize, cap: usize) -> usize {
    HEADER + key_len + cap + TRAILER
}

/// The slot count that holds `entries` within the maximum load of 7/8 (zero for zero).
fn slots_for(entries: usize) -> usize {
    if entries == 0 {
        return 0;
    }
    let needed = entries.saturating_mul(8).div_ceil(7);
    needed.next_power_of_two().max(MIN_SLOTS)
}

/// Whether a value of `len` bytes may be written into an entry of capacity `cap`.
fn fits(len: usize, cap: usize) -> bool {
    len <= cap && cap - len <= len.max(SLACK_MIN)
}

/// The native-endian `u32` at `at` (the arena lives in memory only, never on disk).
fn read_u32(data: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&data[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// Stores `v` native-endian at `at`.
fn write_u32(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Converts a length already checked against [`MAX_VALUE`] or [`MAX_KEY`].
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("state table: length {len} exceeds u32"))
}

/// Panics if `key` is too long for an entry.
fn check_key(key: &[u8]) {
    assert!(
        key.len() <= MAX_KEY,
        "state table: key of {} bytes (limit {MAX_KEY})",
        key.len()
    );
}

/// Panics if a value of `len` bytes is too long for an entry.
fn check_value(len: usize) {
    assert!(
        len <= MAX_VALUE,
        "state table: value of {len} bytes (limit {MAX_VALUE})"
    );
}

/// Appends an entry header to `data`.
fn push_header(data: &mut ChunkBuf, key_len: usize, len: usize, cap: usize) {
    data.extend_from_slice(&len32(key_len).to_ne_bytes());
    data.extend_from_slice(&len32(len).to_ne_bytes());
    data.extend_from_slice(&len32(cap).to_ne_bytes());
}

/// Appends a live entry of `key` and `value` with room for `cap` value bytes to `data` (which
/// has the room); returns its size.
#[inline]
fn push_entry(data: &mut ChunkBuf, fp: u32, key: &[u8], value: &[u8], cap: usize) -> usize {
    let off = data.len();
    push_header(data, key.len(), value.len(), cap);
    data.extend_from_slice(key);
    data.extend_from_slice(value);
    finish_entry(data, off, key.len(), cap, fp);
    entry_size(key.len(), cap)
}

/// Completes the entry begun at `off` in `data` (header, key and value written): zeroes the
/// capacity slack and appends the trailer.
fn finish_entry(data: &mut ChunkBuf, off: usize, key_len: usize, cap: usize, fp: u32) {
    data.resize_zeroed(off + HEADER + key_len + cap);
    data.extend_from_slice(&fp.to_ne_bytes());
}

/// The fixed fields of an entry's header.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Key length.
    key_len: usize,
    /// Value length.
    len: usize,
    /// Value capacity.
    cap: usize,
    /// Whether the entry is dead.
    dead: bool,
}

impl Header {
    /// Decodes a header.
    #[inline]
    fn from_bytes(h: &[u8; HEADER]) -> Header {
        let field = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let key_field = field(H_KEY);
        Header {
            key_len: (key_field & !DEAD) as usize,
            len: field(H_LEN) as usize,
            cap: field(H_CAP) as usize,
            dead: key_field & DEAD != 0,
        }
    }

    /// Bytes the entry occupies.
    fn size(&self) -> usize {
        entry_size(self.key_len, self.cap)
    }

    /// The key's range in the chunk, for the entry at `off`.
    fn key_range(&self, off: usize) -> Range<usize> {
        off + HEADER..off + HEADER + self.key_len
    }

    /// The value's range in the chunk, for the entry at `off`.
    fn value_range(&self, off: usize) -> Range<usize> {
        let start = off + HEADER + self.key_len;
        start..start + self.len
    }

    /// The fingerprint in the trailer of this entry, at `off` in `data`.
    fn fp(&self, data: &[u8], off: usize) -> u32 {
        read_u32(data, off + HEADER + self.key_len + self.cap)
    }
}

/// Appends `chunks[src].data[range]` to `chunks[dst].data` (the two may be the same chunk).
fn push_from(chunks: &mut [Chunk], src: usize, range: Range<usize>, dst: usize) {
    if src == dst {
        chunks[dst].data.extend_from_within(range);
    } else if src < dst {
        let (low, high) = chunks.split_at_mut(dst);
        high[0].data.extend_from_slice(&low[src].data[range]);
    } else {
        let (low, high) = chunks.split_at_mut(src);
        low[dst].data.extend_from_slice(&high[0].data[range]);
    }
}

/// The header of the entry at `off` in `data`.
fn header_at(data: &[u8], off: usize) -> Header {
    let mut h = [0; HEADER];
    h.copy_from_slice(&data[off..off + HEADER]);
    Header::from_bytes(&h)
}

impl Table {
    /// An empty table. Allocates nothing until the first insertion.
    pub fn new() -> Table {
        Table {
            slots: Slots::default(),
            len: 0,
            chunks: Vec::new(),
            free_chunks: Vec::new(),
            open: NO_CHUNK,
            arena_bytes: 0,
            large_bytes: 0,
            live_bytes: 0,
            payload: 0,
            arena_hint: 0,
            prefaulted: Vec::new(),
            scratch: Vec::new(),
            stats: TableStats::default(),
        }
    }

    /// An empty table sized for `entries` entries whose keys and values total `data_bytes`
    /// bytes: the slot array is allocated now, so inserting that many keys never rehashes, and
    /// the arena starts with full-size chunks when the data needs them (chunks themselves are
    /// allocated as they fill).
    pub fn with_capacity(entries: usize, data_bytes: usize) -> Table {
        let mut table = Table::new();
        table.slots = Slots::for_entries(entries);
        table.arena_hint = data_bytes.saturating_add(entries.saturating_mul(HEADER + TRAILER));
        table
    }

    /// How many full-size chunks the arena will still need for the data announced to
    /// [`Table::with_capacity`], beyond those it has and those handed to it already.
    pub(crate) fn chunks_wanted(&self) -> usize {
        if self.arena_hint < CHUNK {
            return 0; // its first chunks are smaller, from the heap
        }
        self.arena_hint
            .saturating_sub(self.arena_bytes)
            .div_ceil(CHUNK)
            .saturating_sub(self.prefaulted.len())
    }

    /// Hands the table a full-size chunk whose pages another thread has already faulted in
    /// ([`PrefaultedChunk::new`]): the next chunk the arena needs is this one, so whoever fills
    /// the table does not stop to have the kernel zero its pages (on a VM, 40% of a snapshot
    /// load's inserting thread was that).
    pub(crate) fn add_prefaulted(&mut self, chunk: PrefaultedChunk) {
        self.prefaulted.push(chunk.0);
    }

    /// A writer of entries for this table on another thread ([`ChunkWriter`]), if the table
    /// is empty and sized by [`Table::with_capacity`] for full-size chunks (a smaller table's
    /// chunks are smaller, and its load is cheap anyway).
    pub(crate) fn bulk_writer(&self) -> Option<ChunkWriter> {
        (self.len == 0 && self.chunks.is_empty() && self.arena_hint >= CHUNK).then(|| ChunkWriter {
            next: self.chunks.len(),
            open: None,
            done: Vec::new(),
            prefaulted: Vec::new(),
        })
    }

    /// Takes a chunk of this table's [`ChunkWriter`] into the arena, at the index the writer
    /// gave it. Panics if that index is taken (adopted twice, or a chunk made meanwhile).
    pub(crate) fn adopt(&mut self, filled: FilledChunk) {
        let FilledChunk {
            index,
            chunk,
            payload,
            open,
        } = filled;
        if self.chunks.len() <= index {
            // Chunks of lower index still on their way wait here as freed chunks.
            self.chunks.resize_with(index + 1, Chunk::default);
        }
        assert!(
            self.chunks[index].cap == 0 && self.open != index,
            "state table: chunk {index} adopted over a chunk in use"
        );
        self.arena_bytes += chunk.cap;
        if chunk.large {
            self.large_bytes += chunk.cap;
        }
        self.live_bytes += chunk.live;
        self.payload += payload;
        if open {
            self.open = index;
        }
        self.chunks[index] = chunk;
    }

    /// Indexes an entry of this table's [`ChunkWriter`] (whose key the caller knows is absent,
    /// as for [`Table::insert_unique`]). The entry's chunk may arrive later ([`Table::adopt`]):
    /// placing a slot reads no entry.
    #[inline]
    pub(crate) fn place_written(&mut self, w: Written) {
        let (pos, dist) = self.slots.vacant(w.fp);
        let (pos, dist) = self.room_at(w.fp, pos, dist);
        self.slots.place_at(pos, dist, Slot::new(w.fp, w.loc));
        self.len += 1;
    }

    /// Starts loading the home slot of a [`Written`] entry into the cache; see
    /// [`Table::prefetch_slot`].
    #[inline]
    pub(crate) fn prefetch_written(&self, w: Written) {
        self.prefetch_fp(w.fp);
    }

    /// Releases the prefaulted chunks not used (a bulk load is over).
    pub(crate) fn drop_prefaulted(&mut self) {
        self.prefaulted = Vec::new();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`, if present.
    #[inline]
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        match self.find(fingerprint(hash), key) {
            Probe::Found { entry, .. } => Some(&self.chunks[entry.chunk].data[entry.value_range()]),
            Probe::Vacant { .. } => None,
        }
    }

    /// Sets the value of `key` to `value`. Returns `true` if the key was new.
    ///
    /// Panics if the key is 2 GiB or longer or the value 4 GiB or longer.
    #[inline]
    pub fn insert(&mut self, hash: u64, key: &[u8], value: &[u8]) -> bool {
        check_key(key);
        check_value(value.len());
        let fp = fingerprint(hash);
        match self.find(fp, key) {
            Probe::Found { slot, entry } => {
                self.set_value(slot, entry, fp, key, value);
                false
            }
            Probe::Vacant { pos, dist } => {
                self.insert_new(fp, key, value, pos, dist);
                true
            }
        }
    }

    /// Inserts `key`, which the caller knows is absent, with `value`: a probe for the insertion
    /// point with no key comparison. A bulk load of distinct keys (a snapshot, whose verified
    /// order proves them distinct) saves a third of its probing this way.
    ///
    /// Inserting a key that is present stores it twice, and lookups then see either copy: the
    /// caller must know. Panics like [`Table::insert`].
    #[inline]
    pub fn insert_unique(&mut self, hash: u64, key: &[u8], value: &[u8]) {
        check_key(key);
        check_value(value.len());
        debug_assert!(
            self.get(hash, key).is_none(),
            "insert_unique of a present key"
        );
        let fp = fingerprint(hash);
        let (pos, dist) = self.slots.vacant(fp);
        self.insert_new(fp, key, value, pos, dist);
    }

    /// Appends `bytes` to the value of `key`, creating the entry (with value `bytes`) if the key
    /// is absent — even when `bytes` is empty.
    ///
    /// Amortized O(`bytes.len()`): when the value outgrows its capacity it moves to the arena's
    /// end with at least twice the capacity. Panics if the value would reach 4 GiB.
    #[inline]
    pub fn append(&mut self, hash: u64, key: &[u8], bytes: &[u8]) {
        check_key(key);
        let fp = fingerprint(hash);
        match self.find(fp, key) {
            Probe::Vacant { pos, dist } => {
                check_value(bytes.len());
                self.insert_new(fp, key, bytes, pos, dist);
            }
            Probe::Found { slot, entry } => {
                let new_len = entry.len.saturating_add(bytes.len());
                check_value(new_len);
                if new_len <= entry.cap {
                    let data = &mut self.chunks[entry.chunk].data;
                    let end = entry.value_range().end;
                    data[end..end + bytes.len()].copy_from_slice(bytes);
                    write_u32(data, entry.off + H_LEN, len32(new_len));
                    self.payload += bytes.len();
                } else {
                    self.relocate_append(slot, fp, key, bytes, new_len, entry.cap);
                }
            }
        }
    }

    /// Read-modify-write of one key with a single probe.
    ///
    /// `f` receives the current value (`None` if the key is absent) and an empty buffer owned by
    /// the table, and returns its decision with a result `R` that `update` passes back:
    /// [`Update::Set`] stores the buffer's contents as the new value (inserting the key if
    /// needed), [`Update::Remove`] removes the key, [`Update::Keep`] changes nothing. The
    /// buffer keeps its capacity between calls (up to 64 KiB), so steady-state updates allocate
    /// nothing. If `f` panics the table is unchanged.
    ///
    /// Panics (after `f` returns) if a `Set` value is 4 GiB or longer.
    pub fn update<R>(
        &mut self,
        hash: u64,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>, &mut Vec<u8>) -> (Update, R),
    ) -> R {
        check_key(key);
        let fp = fingerprint(hash);
        let probe = self.find(fp, key);
        self.scratch.clear();
        let (decision, result) = match probe {
            Probe::Found { entry, .. } => {
                let old = &self.chunks[entry.chunk].data[entry.value_range()];
                f(Some(old), &mut self.scratch)
            }
            Probe::Vacant { .. } => f(None, &mut self.scratch),
        };
        match decision {
            Update::Keep => {}
            Update::Set => {
                let value = mem::take(&mut self.scratch);
                check_value(value.len());
                match probe {
                    Probe::Found { slot, entry } => self.set_value(slot, entry, fp, key, &value),
                    Probe::Vacant { pos, dist } => self.insert_new(fp, key, &value, pos, dist),
                }
                self.scratch = value;
            }
            Update::Remove => {
                if let Probe::Found { slot, .. } = probe {
                    self.remove_at(slot);
                    self.compact(EVACUATE_PER_OP);
                }
            }
        }
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        result
    }

    /// Removes `key`. Returns `true` if it was present.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        match self.find(fingerprint(hash), key) {
            Probe::Found { slot, .. } => {
                self.remove_at(slot);
                self.compact(EVACUATE_PER_OP);
                true
            }
            Probe::Vacant { .. } => false,
        }
    }

    /// Every (key, value) pair, in arena order (roughly insertion order; unspecified). Walks
    /// the arena sequentially, so a full scan streams memory rather than chasing slots.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.chunks.iter().flat_map(|chunk| ChunkEntries {
            data: &chunk.data,
            off: 0,
        })
    }

    /// Keeps only the entries for which `f(key, value)` returns `true` (visited in arena order,
    /// each once), then compacts the arena (every chunk at least half garbage is evacuated) and
    /// shrinks the slot array if at most 1/8 of it is needed. O(len + live bytes). If `f`
    /// panics, the entries decided so far are removed and the table stays consistent.
    pub fn retain(&mut self, mut f: impl FnMut(&[u8], &[u8]) -> bool) {
        for c in 0..self.chunks.len() {
            let mut off = 0;
            // A chunk freed (or the open chunk rewound) on its last removal has no data left,
            // which ends the walk.
            while off < self.chunks[c].data.len() {
                let data = &self.chunks[c].data;
                let h = header_at(data, off);
                if !h.dead && !f(&data[h.key_range(off)], &data[h.value_range(off)]) {
                    let slot = self.slot_of(h.fp(data, off), pack(c, off));
                    self.remove_at(slot);
                }
                off += h.size();
            }
        }
        self.compact_all();
        self.slots.shrink(self.len);
    }

    /// Removes every entry and frees the slot array and the arena (the table is as if new;
    /// the statistics restart).
    pub fn clear(&mut self) {
        *self = Table::new();
    }

    /// Bytes of heap the table holds: slots, arena chunks, the chunk directory and the update
    /// buffer (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|c| c.data.capacity()).sum();
        self.slots.heap_bytes()
            + self.chunks.capacity() * mem::size_of::<Chunk>()
            + chunks
            + self.free_chunks.capacity() * mem::size_of::<u32>()
            + self.scratch.capacity()
    }

    /// The part of [`Table::heap_bytes`] in anonymous mappings (full-size arena chunks) rather
    /// than from the global allocator: what an allocator-counting check must add.
    pub fn mapped_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match &c.data {
                ChunkBuf::Mapped { map, .. } => map.len(),
                ChunkBuf::Heap(_) => 0,
            })
            .sum()
    }

    /// Sum of the lengths of the live keys and values.
    pub fn payload_bytes(&self) -> usize {
        self.payload
    }

    /// Counters of the table's internal work (rehashes, relocations, compaction).
    pub fn stats(&self) -> TableStats {
        TableStats {
            rehashes: self.slots.rebuilds(),
            ..self.stats
        }
    }

    // ---------------------------------------------------------------------------------------
    // Probing
    // ---------------------------------------------------------------------------------------

    /// Starts loading the home slot of `hash` into the cache (a hint; see [`crate::hint`]).
    /// Issued as soon as a key's hash is known, it overlaps the slot's cache miss with the work
    /// done before the lookup (encoding the value).
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        self.prefetch_fp(fingerprint(hash));
    }

    /// [`Table::prefetch_slot`] of a fingerprint.
    #[inline]
    fn prefetch_fp(&self, fp: u32) {
        if let Some(p) = self
            .slots
            .seg_for(fp)
            .and_then(|(_, seg)| seg.slot_ptr(seg.home(fp)))
        {
            // The slot's address, not a copy of it: a copy would be a load that waits.
            prefetch(p);
        }
    }

    /// Reads the probe run of `hash` (which [`Table::prefetch_slot`] should have started
    /// loading) and starts loading the first three cache lines of the entry whose fingerprint
    /// matches, so the entry's cache miss overlaps the log append that precedes the update.
    /// Looks at most four slots; a hint only, it changes nothing.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        let fp = fingerprint(hash);
        let Some((_, seg)) = self.slots.seg_for(fp) else {
            return;
        };
        let mask = seg.mask();
        let mut i = seg.home(fp);
        for _ in 0..4 {
            let s = seg.slot(i);
            if s.is_empty() {
                return;
            }
            if s.fp == fp {
                if let Some(c) = self.chunks.get(loc_chunk(s.loc())) {
                    let p = c.data.as_ptr().wrapping_add(loc_off(s.loc()));
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                    prefetch(p.wrapping_add(128));
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Probes for `key`, whose fingerprint is `fp`.
    #[inline]
    fn find(&self, fp: u32, key: &[u8]) -> Probe {
        let Some((si, seg)) = self.slots.seg_for(fp) else {
            return Probe::Vacant { pos: 0, dist: 0 };
        };
        let mask = seg.mask();
        let mut i = seg.home(fp);
        let mut dist = 0;
        loop {
            let s = seg.slot(i);
            if s.is_empty() {
                return Probe::Vacant {
                    pos: Slots::pos(si, i),
                    dist,
                };
            }
            if s.fp == fp {
                if let Some(entry) = self.entry_with_key(s.loc(), key) {
                    return Probe::Found {
                        slot: Slots::pos(si, i),
                        entry,
                    };
                }
                // Same fingerprint, other key: same home, so the Robin Hood bound cannot stop
                // here.
            } else if seg.dist(i, s.fp) < dist {
                return Probe::Vacant {
                    pos: Slots::pos(si, i),
                    dist,
                };
            }
            i = (i + 1) & mask;
            dist += 1;
        }
    }

    /// The entry at `loc` if its key is `key`.
    #[inline]
    fn entry_with_key(&self, loc: u64, key: &[u8]) -> Option<Entry> {
        let chunk = loc_chunk(loc);
        let off = loc_off(loc);
        // One bounds check for the header and the key (keys of a different length differ).
        let (header, rest) = self.chunks[chunk].data.get(off..)?.split_first_chunk()?;
        let stored = rest.get(..key.len())?;
        let header = Header::from_bytes(header);
        (header.key_len == key.len() && stored == key).then_some(Entry {
            chunk,
            off,
            key_len: header.key_len,
            len: header.len,
            cap: header.cap,
        })
    }

    /// The position of the slot holding the live entry at `loc`, whose fingerprint is `fp`.
    fn slot_of(&self, fp: u32, loc: u64) -> Pos {
        self.slots.find_loc(fp, loc)
    }

    /// Empties the slot at `p` by backward-shift deletion and kills its entry.
    #[inline(never)]
    fn remove_at(&mut self, p: Pos) {
        let loc = self.slots.remove(p).loc();
        self.len -= 1;
        self.kill(loc);
    }

    // ---------------------------------------------------------------------------------------
    // Entries
    // ---------------------------------------------------------------------------------------

    /// Inserts a key known to be absent, whose insertion would start at `pos`/`dist`.
    #[inline(never)]
    fn insert_new(&mut self, fp: u32, key: &[u8], value: &[u8], pos: usize, dist: usize) {
        let (pos, dist) = self.room_at(fp, pos, dist);
        let loc = self.write_entry(fp, key, value, value.len());
        self.slots.place_at(pos, dist, Slot::new(fp, loc));
        self.len += 1;
    }

    /// The vacant slot `pos`, `dist` from home, for fingerprint `fp`, or, when its segment is at
    /// its maximum load (or there are no slots), the vacant slot after the segment grew.
    #[inline]
    fn room_at(&mut self, fp: u32, pos: usize, dist: usize) -> (usize, usize) {
        let full = self.slots.is_empty() || self.slots.full_at(pos);
        if full {
            self.slots.make_room(fp);
            self.slots.vacant(fp)
        } else {
            (pos, dist)
        }
    }

    /// Stores `value` for the key in `slot`, whose entry is `entry`.
    #[inline]
    fn set_value(&mut self, slot: usize, entry: Entry, fp: u32, key: &[u8], value: &[u8]) {
        if fits(value.len(), entry.cap) {
            let data = &mut self.chunks[entry.chunk].data;
            let start = entry.off + HEADER + entry.key_len;
            data[start..start + value.len()].copy_from_slice(value);
            write_u32(data, entry.off + H_LEN, len32(value.len()));
            self.payload = self.payload - entry.len + value.len();
        } else {
            self.relocate_value(slot, fp, key, value);
        }
    }

    /// Stores `value` for the key in `slot` in a new entry at the arena's end.
    #[inline(never)]
    fn relocate_value(&mut self, slot: usize, fp: u32, key: &[u8], value: &[u8]) {
        self.stats.relocations += 1;
        let loc = self.write_entry(fp, key, value, value.len());
        let old = mem::replace(&mut self.slots[slot], Slot::new(fp, loc)).loc();
        self.kill(old);
        self.compact(EVACUATE_PER_OP);
    }

    /// Moves the entry in `slot` to the arena's end with its value extended by `bytes`.
    #[inline(never)]
    fn relocate_append(
        &mut self,
        slot: usize,
        fp: u32,
        key: &[u8],
        bytes: &[u8],
        new_len: usize,
        old_cap: usize,
    ) {
        self.stats.relocations += 1;
        let cap = old_cap.saturating_mul(2).min(MAX_VALUE).max(new_len);
        let size = entry_size(key.len(), cap);
        let (dst, dst_off) = self.reserve(size);
        let old_loc = self.slots[slot].loc();
        let (src, src_off) = (loc_chunk(old_loc), loc_off(old_loc));
        let old_len = read_u32(&self.chunks[src].data, src_off + H_LEN) as usize;
        let data = &mut self.chunks[dst].data;
        push_header(data, key.len(), new_len, cap);
        data.extend_from_slice(key);
        let value_start = src_off + HEADER + key.len();
        push_from(
            &mut self.chunks,
            src,
            value_start..value_start + old_len,
            dst,
        );
        let data = &mut self.chunks[dst].data;
        data.extend_from_slice(bytes);
        finish_entry(data, dst_off, key.len(), cap, fp);
        self.chunks[dst].live += size;
        self.live_bytes += size;
        self.payload += key.len() + new_len;
        self.slots[slot] = Slot::new(fp, pack(dst, dst_off));
        self.kill(old_loc);
        self.compact(EVACUATE_PER_OP);
    }

    /// Writes a new live entry at the arena's end and returns its location.
    fn write_entry(&mut self, fp: u32, key: &[u8], value: &[u8], cap: usize) -> u64 {
        debug_assert!(value.len() <= cap);
        let size = entry_size(key.len(), cap);
        let (c, off) = self.reserve(size);
        let chunk = &mut self.chunks[c];
        chunk.live += push_entry(&mut chunk.data, fp, key, value, cap);
        self.live_bytes += size;
        self.payload += key.len() + value.len();
        pack(c, off)
    }

    /// Marks the entry at `loc` dead and frees its chunk if nothing in it is live any more (the
    /// open chunk is rewound instead).
    fn kill(&mut self, loc: u64) {
        let (c, off) = (loc_chunk(loc), loc_off(loc));
        let chunk = &mut self.chunks[c];
        let h = header_at(&chunk.data, off);
        assert!(!h.dead, "state table: entry killed twice");
        write_u32(&mut chunk.data, off + H_KEY, len32(h.key_len) | DEAD);
        chunk.live -= h.size();
        self.live_bytes -= h.size();
        self.payload -= h.key_len + h.len;
        if chunk.live == 0 {
            if c == self.open {
                chunk.data.clear();
            } else {
                self.free_chunk(c);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Arena
    // ---------------------------------------------------------------------------------------

    /// Finds room for an entry of `size` bytes: returns its chunk and offset, which is the
    /// chunk's current length (the caller appends exactly `size` bytes). Moves no entry.
    fn reserve(&mut self, size: usize) -> (usize, usize) {
        if size > LARGE {
            return (self.new_chunk(size, true), 0);
        }
        if let Some(room) = self.open_room(size) {
            return room;
        }
        // Normal chunks are an eighth of the live normal entries (so a small table stays
        // small), at least MIN_CHUNK, at most CHUNK.
        let target = (self.live_bytes.saturating_sub(self.large_bytes) / 8).max(self.arena_hint);
        let c = self.new_chunk(
            target.next_power_of_two().clamp(MIN_CHUNK, CHUNK).max(size),
            false,
        );
        let previous = mem::replace(&mut self.open, c);
        if self
            .chunks
            .get(previous)
            .is_some_and(|p| p.cap > 0 && p.live == 0)
        {
            // The previous open chunk was rewound empty: nothing refers to it.
            self.free_chunk(previous);
        }
        (c, 0)
    }

    /// The position for `size` bytes in the open chunk, if they fit.
    fn open_room(&self, size: usize) -> Option<(usize, usize)> {
        let chunk = self.chunks.get(self.open)?;
        let used = chunk.data.len();
        (chunk.cap - used >= size).then_some((self.open, used))
    }

    /// Allocates a chunk of capacity `cap` and returns its index.
    fn new_chunk(&mut self, cap: usize, large: bool) -> usize {
        let data = ChunkBuf::take_or_new(&mut self.prefaulted, cap);
        let chunk = Chunk {
            data,
            cap,
            live: 0,
            large,
        };
        self.arena_bytes += cap;
        if large {
            self.large_bytes += cap;
        }
        if let Some(c) = self.free_chunks.pop() {
            let c = c as usize;
            self.chunks[c] = chunk;
            c
        } else {
            let c = self.chunks.len();
            assert!(c < u32::MAX as usize, "state table: too many chunks");
            self.chunks.push(chunk);
            c
        }
    }

    /// Returns chunk `c`'s memory to the allocator.
    fn free_chunk(&mut self, c: usize) {
        debug_assert!(self.chunks[c].live == 0);
        if c == self.open {
            self.open = NO_CHUNK;
        }
        let chunk = mem::take(&mut self.chunks[c]);
        self.arena_bytes -= chunk.cap;
        if chunk.large {
            self.large_bytes -= chunk.cap;
        }
        self.free_chunks.push(len32(c));
    }

    /// Bytes of the arena that are neither live entries nor free room in the open chunk.
    fn garbage_bytes(&self) -> usize {
        let open_free = self
            .chunks
            .get(self.open)
            .map_or(0, |c| c.cap - c.data.len());
        self.arena_bytes - self.live_bytes - open_free
    }

    /// While garbage exceeds the live bytes (and [`MIN_CHUNK`]), evacuates the chunk with the
    /// most garbage if at least half of it is garbage; at most `budget` chunks.
    fn compact(&mut self, budget: usize) {
        for _ in 0..budget {
            let garbage = self.garbage_bytes();
            if garbage <= self.live_bytes.max(MIN_CHUNK) {
                return;
            }
            let victim = self
                .chunks
                .iter()
                .enumerate()
                .filter(|&(c, chunk)| {
                    c != self.open && chunk.cap > 0 && (chunk.cap - chunk.live) * 2 >= chunk.cap
                })
                .max_by_key(|(_, chunk)| chunk.cap - chunk.live)
                .map(|(c, _)| c);
            match victim {
                Some(c) => self.evacuate(c),
                None => return,
            }
        }
    }

    /// Closes the open chunk and evacuates every chunk at least half garbage (each copies less
    /// than it frees): O(live bytes).
    fn compact_all(&mut self) {
        if let Some(open) = self.chunks.get(self.open) {
            let previous = self.open;
            let empty = open.live == 0;
            self.open = NO_CHUNK;
            if empty {
                self.free_chunk(previous);
            }
        }
        let victims: Vec<usize> = (0..self.chunks.len())
            .filter(|&c| {
                let chunk = &self.chunks[c];
                chunk.cap > 0 && (chunk.cap - chunk.live) * 2 >= chunk.cap
            })
            .collect();
        for v in victims {
            if v != self.open {
                self.evacuate(v);
            }
        }
    }

    /// Copies chunk `v`'s live entries to the open chunk(s), repoints their slots and frees `v`.
    /// Capacity slack beyond what an in-place write may leave is dropped on the way.
    fn evacuate(&mut self, v: usize) {
        debug_assert!(v != self.open);
        self.stats.evacuated_chunks += 1;
        let mut off = 0;
        while off < self.chunks[v].data.len() {
            let h = header_at(&self.chunks[v].data, off);
            if !h.dead {
                let fp = h.fp(&self.chunks[v].data, off);
                let new_cap = if fits(h.len, h.cap) { h.cap } else { h.len };
                let new_size = entry_size(h.key_len, new_cap);
                let (dst, dst_off) = self.reserve(new_size);
                push_header(&mut self.chunks[dst].data, h.key_len, h.len, new_cap);
                let body = h.key_range(off).start..h.value_range(off).end;
                push_from(&mut self.chunks, v, body, dst);
                finish_entry(&mut self.chunks[dst].data, dst_off, h.key_len, new_cap, fp);
                let slot = self.slot_of(fp, pack(v, off));
                self.slots[slot] = Slot::new(fp, pack(dst, dst_off));
                self.chunks[dst].live += new_size;
                self.chunks[v].live -= h.size();
                self.live_bytes = self.live_bytes + new_size - h.size();
                self.stats.evacuated_bytes += new_size as u64;
            }
            off += h.size();
        }
        assert!(
            self.chunks[v].live == 0,
            "state table: evacuated chunk still live"
        );
        self.free_chunk(v);
    }
}

impl Default for Table {
    fn default() -> Table {
        Table::new()
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .field("payload_bytes", &self.payload)
            .field("live_bytes", &self.live_bytes)
            .field("arena_bytes", &self.arena_bytes)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The live entries of one chunk, in order.
struct ChunkEntries<'a> {
    /// The chunk's bytes.
    data: &'a [u8],
    /// Offset of the next header.
    off: usize,
}

impl<'a> Iterator for ChunkEntries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.off < self.data.len() {
            let off = self.off;
            let h = header_at(self.data, off);
            self.off = off + h.size();
            if !h.dead {
                return Some((&self.data[h.key_range(off)], &self.data[h.value_range(off)]));
            }
        }
        None
    }
}

#[cfg(test)]
impl Table {
    /// Checks every structural invariant; panics with a description on the first violation.
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashSet;
        let mut locs = HashSet::new();
        let occupied = self.slots.check(|s| {
            assert!(locs.insert(s.loc()), "two slots share an entry");
            let (c, off) = (loc_chunk(s.loc()), loc_off(s.loc()));
            let h = header_at(&self.chunks[c].data, off);
            assert!(!h.dead, "slot points at a dead entry");
            let fp = h.fp(&self.chunks[c].data, off);
            assert_eq!(fp, s.fp, "slot fingerprint differs from the entry's");
        });
        assert_eq!(occupied, self.len);
        let (mut live_total, mut payload, mut arena, mut entries) = (0, 0, 0, 0);
        for (c, chunk) in self.chunks.iter().enumerate() {
            assert!(chunk.data.len() <= chunk.cap);
            arena += chunk.cap;
            if chunk.cap == 0 {
                assert!(self.free_chunks.contains(&len32(c)));
                continue;
            }
            assert!(chunk.live > 0 || c == self.open, "empty chunk not freed");
            let mut off = 0;
            let mut live = 0;
            while off < chunk.data.len() {
                let h = header_at(&chunk.data, off);
                assert!(h.len <= h.cap);
                if !h.dead {
                    assert!(locs.contains(&pack(c, off)), "live entry without a slot");
                    live += h.size();
                    payload += h.key_len + h.len;
                    entries += 1;
                }
                off += h.size();
            }
            assert_eq!(off, chunk.data.len(), "entries overrun the chunk");
            assert_eq!(live, chunk.live, "chunk live count");
            live_total += live;
        }
        assert_eq!(entries, self.len);
        assert_eq!(live_total, self.live_bytes);
        assert_eq!(payload, self.payload);
        assert_eq!(arena, self.arena_bytes);
    }

    /// The longest distance of any slot from its home.
    fn max_probe(&self) -> usize {
        self.slots.max_probe()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
