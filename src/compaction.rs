//! Compaction: merge(previous snapshot, log records `(s, m]`) → a new snapshot at `m`.
//!
//! It works from the files alone — the previous snapshot and the log — never from the journal's
//! tables, so it runs on a background thread while the owner goes on writing. Its memory is the
//! [`Delta`]: the final change of every key the tail touched, not the whole state. The merge
//! streams the previous snapshot's entries (sorted) past the sorted delta and writes each
//! resulting entry once.
//!
//! The delta mirrors [`Store::apply_op`](crate::state::Store::apply_op) exactly, op by op, so
//! `snapshot(merge) == tables(replay)`; `tests/compaction_model.rs` checks that for random
//! histories of every state kind.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::codec::record::{decode_record, Op, RecordError};
use crate::error::{Error, Result};
use crate::hint::{advise_huge_pages, prefetch, prefetch_range, reserve_huge};
use crate::keygroup::{KeyGroup, KeyGroupRange};
use crate::log::{Log, Lsn};
use crate::snapshot::codec::bytes_order;
use crate::snapshot::{Entry, SnapshotFile, SnapshotReader, SnapshotWriter, StateInfo};
use crate::state::{list_base, split_expiry};

/// Code of a map state (see `StateKind::code`).
const KIND_MAP: u8 = 3;

/// What the tail did to one key, relative to the previous snapshot.
#[derive(Debug)]
enum Change {
    /// The key's value is now this. Absolute: the base value does not matter.
    Set(Val),
    /// The key is now deleted. Absolute too.
    Deleted,
    /// Appends to whatever the base holds: [`Piece`]s applied in order, each as
    /// the tables apply an `Append` op (an expiry of 0 appends raw bytes; another one replaces
    /// the value's expiry). No pieces: the key is unchanged.
    Append { pieces: Vec<Piece> },
    /// A map key (boxed: rare next to value updates, and a map would double the size of every
    /// [`DeltaKey`]).
    Map(Box<MapChange>),
}

/// What the tail did to one key of a map state: `cleared` when it deleted the whole key (its
/// base entries are gone), then the entries put (`Some`) or removed (`None`) since.
#[derive(Debug, Default)]
struct MapChange {
    cleared: bool,
    entries: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// One run of appends, applied to a value as the tables apply them one by one.
#[derive(Debug)]
struct Piece {
    /// Expiry of the run's first append, with the state's TTL then: together they say when that
    /// append was made, which decides whether the value before it had expired (`list_base`).
    first_expiry: u64,
    ttl: u64,
    /// Expiry the value has after the run (0: the appends carried none).
    last_expiry: u64,
    elements: Vec<u8>,
}

impl Piece {
    /// `base` after the run.
    fn apply(&self, base: Option<&[u8]>) -> Vec<u8> {
        append_run(
            base,
            self.first_expiry,
            self.ttl,
            self.last_expiry,
            &self.elements,
        )
    }
}

/// The value of a [`Change::Set`]: `len` bytes at `off` in [`Delta::value_bytes`], in a place
/// with room for `cap`.
#[derive(Debug, Clone, Copy)]
struct Val {
    off: usize,
    /// A record's value is under 4 GiB (its frame's length is 32 bits).
    len: u32,
    cap: u32,
}

impl Val {
    fn bytes<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.off..self.off + self.len as usize]
    }
}

/// Composite keys this long or shorter are kept in their [`DeltaKey`] (a 16-byte key with its
/// length prefix is 17 bytes; a `u64` id 1 to 10).
const INLINE_KEY: usize = 20;

/// A delta key's bytes: in place when they are at most [`INLINE_KEY`] long (comparing them
/// then loads nothing beyond the entry), otherwise at an offset in [`Delta::key_bytes`] kept in
/// the first 8 bytes of `bytes`.
#[derive(Debug, Clone, Copy)]
struct KeyStore {
    bytes: [u8; INLINE_KEY],
    /// Keys are under 2 GiB (the tables refuse longer ones).
    len: u32,
}

impl KeyStore {
    /// Stores `key`, appending it to `arena` if it is too long to keep in place.
    fn new(key: &[u8], arena: &mut Vec<u8>) -> Result<Self, RecordError> {
        let len = u32::try_from(key.len()).map_err(|_| bad("a key of 4 GiB or more"))?;
        let mut bytes = [0u8; INLINE_KEY];
        match bytes.get_mut(..key.len()) {
            Some(place) => place.copy_from_slice(key),
            None => {
                bytes[..8].copy_from_slice(&(arena.len() as u64).to_le_bytes());
                reserve_huge(arena, key.len());
                arena.extend_from_slice(key);
            }
        }
        Ok(KeyStore { bytes, len })
    }

    /// Where the key is in the arena, if it is not in place.
    #[inline]
    fn arena_offset(&self) -> Option<usize> {
        let len = self.len as usize;
        (len > INLINE_KEY).then(|| {
            let mut off = [0u8; 8];
            off.copy_from_slice(&self.bytes[..8]);
            u64::from_le_bytes(off) as usize
        })
    }

    /// The key, from `arena` (the delta's key arena) if it is not in place.
    #[inline]
    fn get<'a>(&'a self, arena: &'a [u8]) -> &'a [u8] {
        let len = self.len as usize;
        match self.arena_offset() {
            None => &self.bytes[..len],
            Some(off) => &arena[off..off + len],
        }
    }
}

/// One distinct (state, composite key) of the delta: one cache line, so that the compaction
/// loop's one prefetch of an entry loads all of it, a short key included (at 96 bytes, with
/// every key in the arena, the key's hash and place were in a second line half the time, and
/// the key itself a third miss).
#[derive(Debug)]
#[repr(align(64))]
struct DeltaKey {
    /// XXH3 of the composite key, seeded with the state id.
    hash: u64,
    key: KeyStore,
    state_id: u32,
    kg: u16,
    /// False once a `ClearState` removed the key (the entry stays, out of the index).
    live: bool,
    change: Change,
}

const _: () = assert!(std::mem::size_of::<DeltaKey>() == 64);

impl DeltaKey {
    #[inline]
    fn key<'a>(&'a self, arena: &'a [u8]) -> &'a [u8] {
        self.key.get(arena)
    }
}

/// A composite key's first 8 bytes as a big-endian number (zero-padded): the merge's sort
/// compares these first, without a visit to the key arena for all but equal prefixes.
fn key_head(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

/// How many records ahead the compaction loop starts loading a key's index slot, then its
/// entry, then its value bytes and, for a key too long for the entry, the key's bytes (each
/// stage needs the previous one in the cache).
const PREFETCH_SLOT: usize = 8;
const PREFETCH_ENTRY: usize = 4;
const PREFETCH_BYTES: usize = 2;
/// The same for the merge's walk over the delta in key order: an entry, then its bytes.
const MERGE_PREFETCH_ENTRY: usize = 16;
const MERGE_PREFETCH_BYTES: usize = 8;

/// The hash of a delta key: the state is in it too, so that one composite key used in several
/// states does not make one long probe chain.
#[inline]
fn delta_hash(state_id: u32, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, u64::from(state_id))
}

/// Open-addressing index of the delta's keys: linear probing, at most half full. A slot holds
/// `tag << 32 | (entry + 1)`, `tag` being the low half of the key's hash, or 0 when free.
/// Written for the job rather than taken from a map crate so that the compaction loop can
/// compute a key's slot ahead of time and prefetch it, then its entry (see
/// [`Delta::prefetch_slot`]): building the delta is a chain of cache misses otherwise.
#[derive(Debug, Default)]
struct DeltaIndex {
    slots: Vec<u64>,
    /// `64 - log2(slots.len())`: turns a hash into a home slot (its top bits).
    shift: u32,
    len: usize,
}

impl DeltaIndex {
    const MIN: usize = 1024;

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    #[inline]
    fn tag(hash: u64) -> u64 {
        hash & 0xFFFF_FFFF
    }

    /// The entry whose key has `hash` and for which `is` holds.
    #[inline]
    fn find(&self, hash: u64, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s >> 32 == Self::tag(hash) && is((s & 0xFFFF_FFFF) as usize - 1) {
                return Some((s & 0xFFFF_FFFF) as usize - 1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Sizes an empty index for `keys` keys (at most half full, as growth keeps it).
    fn reserve(&mut self, keys: usize) {
        if self.len != 0 {
            return;
        }
        let Some(n) = keys.saturating_mul(2).checked_next_power_of_two() else {
            return;
        };
        let n = n.max(Self::MIN);
        if n <= self.slots.len() {
            return;
        }
        self.slots = Vec::with_capacity(n);
        advise_huge_pages(self.slots.spare_capacity_mut());
        self.slots.resize(n, 0);
        self.shift = 64 - n.trailing_zeros();
    }

    /// Adds entry `e` (not yet present) under `hash`; `hash_of` gives the hash of any entry
    /// (for growth).
    fn insert(&mut self, hash: u64, e: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            let n = (old.len() * 2).max(Self::MIN);
            self.slots = Vec::with_capacity(n);
            advise_huge_pages(self.slots.spare_capacity_mut());
            self.slots.resize(n, 0);
            self.shift = 64 - n.trailing_zeros();
            self.len = 0;
            for s in old {
                if s != 0 {
                    let j = ((s & 0xFFFF_FFFF) - 1) as u32;
                    self.put(hash_of(j), j);
                }
            }
        }
        self.put(hash, e);
    }

    fn put(&mut self, hash: u64, e: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (Self::tag(hash) << 32) | (u64::from(e) + 1);
        self.len += 1;
    }

    /// Empties the index and returns the entries it held for which `keep` holds, for the
    /// caller to insert again ([`DeltaIndex::insert_all`]) once `keep`'s borrows have ended.
    fn take_kept(&mut self, mut keep: impl FnMut(u32) -> bool) -> Vec<u32> {
        let old = std::mem::take(&mut self.slots);
        *self = DeltaIndex::default();
        old.into_iter()
            .filter(|&s| s != 0)
            .map(|s| ((s & 0xFFFF_FFFF) - 1) as u32)
            .filter(|&j| keep(j))
            .collect()
    }

    /// Inserts every entry of `entries`.
    fn insert_all(&mut self, entries: &[u32], hash_of: impl Fn(u32) -> u64) {
        for &j in entries {
            self.insert(hash_of(j), j, &hash_of);
        }
    }
}

/// The changes of a log tail, per (state, composite key).
#[derive(Debug)]
pub(crate) struct Delta {
    max_key_groups: Option<u16>,
    range: KeyGroupRange,
    states: Vec<StateInfo>,
    /// States a `ClearState` in the tail emptied: their base entries are dropped.
    cleared: Vec<bool>,
    /// The delta's keys in first-touch order; `index` finds them by key.
    entries: Vec<DeltaKey>,
    /// Indices into `entries` of the live keys, hashed by [`DeltaKey::hash`]: one probe per op,
    /// and no allocation per key (the key bytes go to `key_bytes`).
    index: DeltaIndex,
    /// The bytes of the keys too long to keep in their entries ([`KeyStore`]), back to back.
    key_bytes: Vec<u8>,
    /// The values of `Change::Set`s (no allocation per key). A value that outgrows its place
    /// moves to the end with room to double; the places left behind are `value_garbage` bytes,
    /// reclaimed once they outweigh the live ones (see `store_value`).
    value_bytes: Vec<u8>,
    value_garbage: usize,
    /// Key and value bytes the delta holds.
    bytes: usize,
}

fn bad(what: &'static str) -> RecordError {
    RecordError { offset: 0, what }
}

impl Delta {
    /// An empty delta over the state described by `base` (a snapshot's registry), or over an empty
    /// journal.
    pub fn new(
        range: KeyGroupRange,
        max_key_groups: Option<u16>,
        base_states: Vec<StateInfo>,
    ) -> Self {
        let n = base_states.len();
        Delta {
            max_key_groups,
            range,
            states: base_states,
            cleared: vec![false; n],
            entries: Vec::new(),
            index: DeltaIndex::default(),
            key_bytes: Vec::new(),
            value_bytes: Vec::new(),
            value_garbage: 0,
            bytes: 0,
        }
    }

    /// Distinct keys the delta holds.
    pub fn keys(&self) -> usize {
        self.index.len
    }

    /// How large its arrays are.
    fn size(&self) -> DeltaSize {
        DeltaSize {
            keys: self.entries.len(),
            key_bytes: self.key_bytes.len(),
            value_bytes: self.value_bytes.len(),
        }
    }

    /// Reserves room for a delta like `like` (a quarter more), but for no more keys than the
    /// tail has records (a bound only for unbatched writes: one record can hold a whole batch).
    /// A delta that grows by doubling copies each array into fresh memory at every step and
    /// rebuilds its index: with a million keys, the kernel zeroing those pages was an eighth of
    /// a compaction's time. Reserved but unused room costs address space only (nothing touches
    /// it); the index, which is built up front, is sized for `like`'s keys alone (growth adds
    /// the rest).
    fn reserve_like(&mut self, like: DeltaSize, records: u64) {
        // Entry ids are 32 bits.
        let records = usize::try_from(records.min(u64::from(u32::MAX))).unwrap_or(usize::MAX);
        let keys = like.keys.saturating_add(like.keys / 4).min(records);
        if keys == 0 || like.keys == 0 {
            return;
        }
        // The arenas in proportion to the keys reserved.
        let scaled = |bytes: usize| bytes.div_ceil(like.keys).saturating_mul(keys);
        reserve_huge(&mut self.entries, keys);
        reserve_huge(&mut self.key_bytes, scaled(like.key_bytes));
        reserve_huge(&mut self.value_bytes, scaled(like.value_bytes));
        self.index.reserve(like.keys.min(records));
    }

    /// Bytes of keys and values the delta holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The registry after the tail.
    pub fn states(&self) -> &[StateInfo] {
        &self.states
    }

    /// The number of key groups (from the base snapshot or the tail's `Init` record).
    pub fn max_key_groups(&self) -> Option<u16> {
        self.max_key_groups
    }

    fn kind(&self, state_id: u32) -> Result<u8, RecordError> {
        self.states
            .get(state_id as usize)
            .map(|s| s.kind)
            .ok_or(bad("op on an unregistered state"))
    }

    /// The change of a key, created as "unchanged" (an empty append) on first touch. `hint` is
    /// [`delta_hash`] of the key when the caller computed it already.
    fn entry(
        &mut self,
        state_id: u32,
        kg: u16,
        key: &[u8],
        hint: Option<u64>,
    ) -> Result<usize, RecordError> {
        let hash = hint.unwrap_or_else(|| delta_hash(state_id, key));
        debug_assert_eq!(hash, delta_hash(state_id, key));
        let (entries, arena) = (&self.entries, &self.key_bytes);
        let found = self.index.find(hash, |i| {
            let e = &entries[i];
            e.hash == hash && e.state_id == state_id && e.key(arena) == key
        });
        let i = match found {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                let id = u32::try_from(i).map_err(|_| bad("more than 2^32 distinct keys"))?;
                let key_store = KeyStore::new(key, &mut self.key_bytes)?;
                reserve_huge(&mut self.entries, 1);
                self.entries.push(DeltaKey {
                    hash,
                    key: key_store,
                    state_id,
                    kg,
                    live: true,
                    change: Change::Append { pieces: Vec::new() },
                });
                let entries = &self.entries;
                self.index.insert(hash, id, |j| entries[j as usize].hash);
                self.bytes += key.len();
                i
            }
        };
        Ok(i)
    }

    /// Sets the value of entry `i` to `bytes` (a `Change::Set`), in place when it fits.
    /// A value of 4 GiB or more (a list grown past what the tables hold) is an error.
    fn store_value(&mut self, i: usize, bytes: &[u8]) -> Result<(), RecordError> {
        let old = match &self.entries[i].change {
            Change::Set(v) => Some(*v),
            _ => None,
        };
        let len = u32::try_from(bytes.len()).map_err(|_| bad("a value of 4 GiB or more"))?;
        let val = match old {
            Some(mut v) if len <= v.cap => {
                self.value_bytes[v.off..v.off + bytes.len()].copy_from_slice(bytes);
                v.len = len;
                v
            }
            _ => {
                let cap = old.map_or(len, |v| len.max(v.cap.saturating_mul(2)));
                self.value_garbage += old.map_or(0, |v| v.cap as usize);
                let off = self.value_bytes.len();
                reserve_huge(&mut self.value_bytes, cap as usize);
                self.value_bytes.extend_from_slice(bytes);
                self.value_bytes.resize(off + cap as usize, 0);
                Val { off, len, cap }
            }
        };
        self.entries[i].change = Change::Set(val);
        if self.value_garbage > (1 << 20).max(self.value_bytes.len() / 2) {
            self.collect_value_garbage();
        }
        Ok(())
    }

    /// Drops the value arena's dead places: live values are copied, in entry order, to a new
    /// arena with exactly their length as room. Amortized over the stores that made the
    /// garbage, so the arena stays within twice its live bytes (plus 1 MiB).
    fn collect_value_garbage(&mut self) {
        let mut fresh = Vec::with_capacity(self.value_bytes.len() - self.value_garbage);
        advise_huge_pages(fresh.spare_capacity_mut());
        for e in &mut self.entries {
            if let Change::Set(v) = &mut e.change {
                let off = fresh.len();
                fresh.extend_from_slice(v.bytes(&self.value_bytes));
                *v = Val {
                    off,
                    len: v.len,
                    cap: v.len,
                };
            }
        }
        self.value_bytes = fresh;
        self.value_garbage = 0;
    }

    /// Marks the value of entry `i` deleted (`Change::Deleted`), its place garbage.
    fn delete_value(&mut self, i: usize) {
        if let Change::Set(v) = &self.entries[i].change {
            self.value_garbage += v.cap as usize;
        }
        self.entries[i].change = Change::Deleted;
    }

    /// Applies one record (every op of it). (The compaction loop hints; merges of remote
    /// checkpoints and tests do not.)
    #[cfg(any(feature = "remote", test))]
    pub fn apply(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        self.apply_hinted(payload, None)
    }

    /// [`Delta::apply`] with [`delta_hash`] of the first op's key when the caller computed it
    /// ([`Delta::hint`]).
    pub fn apply_hinted(&mut self, payload: &[u8], hint: Option<u64>) -> Result<(), RecordError> {
        let mut hint = hint;
        for op in decode_record(payload)? {
            // The hint is the first op's only, whether or not that op uses it.
            self.apply_op(op?, hint.take())?;
        }
        Ok(())
    }

    /// [`delta_hash`] of the key the first op of `payload` addresses (`None` if it addresses
    /// none, or does not decode: applying it reports that).
    pub fn hint(payload: &[u8]) -> Option<u64> {
        let op = decode_record(payload).ok()?.next()?.ok()?;
        op.target().map(|t| delta_hash(t.state_id, t.key))
    }

    /// Starts loading the home slot of `hash` (a hint).
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        if let Some(s) = self.index.slots.get(self.index.home(hash)) {
            prefetch(s);
        }
    }

    /// Starts loading the entry whose slot is the first match of `hash` in its probe run (which
    /// [`Delta::prefetch_slot`] should have loaded), and that entry's value, if the entry is in
    /// the cache already (a second call, later, finds it there). Looks at a few slots; a hint.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64, value_too: bool) {
        let idx = &self.index;
        if idx.slots.is_empty() {
            return;
        }
        let mask = idx.slots.len() - 1;
        let mut i = idx.home(hash);
        for _ in 0..4 {
            let s = idx.slots[i];
            if s == 0 {
                return;
            }
            if s >> 32 == DeltaIndex::tag(hash) {
                let Some(e) = self.entries.get((s & 0xFFFF_FFFF) as usize - 1) else {
                    return;
                };
                if value_too {
                    if let Change::Set(v) = &e.change {
                        prefetch_range(
                            self.value_bytes.as_ptr().wrapping_add(v.off),
                            v.cap as usize,
                        );
                    }
                    if let Some(off) = e.key.arena_offset() {
                        prefetch(self.key_bytes.as_ptr().wrapping_add(off));
                    }
                } else {
                    prefetch(e);
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn apply_op(&mut self, op: Op<'_>, hint: Option<u64>) -> Result<(), RecordError> {
        match op {
            Op::Init { max_key_groups } => match self.max_key_groups {
                Some(m) if m != max_key_groups => Err(bad("a second Init record disagrees")),
                _ => {
                    self.max_key_groups = Some(max_key_groups);
                    Ok(())
                }
            },
            Op::Register {
                state_id,
                kind,
                flags,
                ttl_millis,
                name,
            } => {
                let name = std::str::from_utf8(name).map_err(|_| bad("state name is not UTF-8"))?;
                if !(1..=5).contains(&kind) {
                    return Err(bad("unknown state kind"));
                }
                let count = self.states.len();
                match self.states.get_mut(state_id as usize) {
                    Some(s) if s.name == name && s.kind == kind => {
                        s.flags = flags;
                        s.ttl_millis = ttl_millis;
                    }
                    Some(_) => return Err(bad("registration conflicts with an existing state")),
                    None if state_id as usize == count => {
                        self.states.push(StateInfo {
                            id: state_id,
                            name: name.to_string(),
                            kind,
                            flags,
                            ttl_millis,
                            entries: 0,
                            payload_bytes: 0,
                        });
                        self.cleared.push(false);
                    }
                    None => return Err(bad("state ids are not dense")),
                }
                Ok(())
            }
            Op::ClearState { state_id } => {
                self.kind(state_id)?;
                if let Some(c) = self.cleared.get_mut(state_id as usize) {
                    *c = true;
                }
                let mut freed = 0;
                let mut garbage = 0;
                let entries = &mut self.entries;
                let kept = self.index.take_kept(|i| {
                    let e = &mut entries[i as usize];
                    let keep = e.state_id != state_id;
                    if !keep {
                        freed += e.key.len as usize + change_bytes(&e.change);
                        if let Change::Set(v) = e.change {
                            garbage += v.cap as usize;
                        }
                        e.live = false;
                        e.change = Change::Deleted;
                    }
                    keep
                });
                let entries = &self.entries;
                self.index.insert_all(&kept, |i| entries[i as usize].hash);
                self.value_garbage += garbage;
                self.bytes -= freed.min(self.bytes);
                Ok(())
            }
            Op::Put {
                state_id,
                kg,
                key,
                value,
            } => {
                let kind = self.kind(state_id)?;
                if !self.range.contains(KeyGroup(kg)) {
                    return Ok(());
                }
                if kind == KIND_MAP {
                    return Err(bad("Put on a map state"));
                }
                self.bytes += value.len();
                let i = self.entry(state_id, kg, key, hint)?;
                let old = change_bytes(&self.entries[i].change);
                self.store_value(i, value)?;
                self.bytes -= old.min(self.bytes);
                Ok(())
            }
            Op::Delete { state_id, kg, key } => {
                let kind = self.kind(state_id)?;
                if !self.range.contains(KeyGroup(kg)) {
                    return Ok(());
                }
                let i = self.entry(state_id, kg, key, hint)?;
                let old = change_bytes(&self.entries[i].change);
                if kind == KIND_MAP {
                    self.entries[i].change = Change::Map(Box::new(MapChange {
                        cleared: true,
                        entries: HashMap::new(),
                    }));
                } else {
                    self.delete_value(i);
                }
                self.bytes -= old.min(self.bytes);
                Ok(())
            }
            Op::Append {
                state_id,
                kg,
                key,
                expiry,
                element,
            } => {
                let kind = self.kind(state_id)?;
                if !self.range.contains(KeyGroup(kg)) {
                    return Ok(());
                }
                if kind == KIND_MAP {
                    return Err(bad("Append on a map state"));
                }
                self.bytes += element.len();
                let ttl = self.ttl_millis(state_id);
                let i = self.entry(state_id, kg, key, hint)?;
                let mut set = None;
                match &mut self.entries[i].change {
                    // Exactly what the tables do to a known value.
                    Change::Set(v) => {
                        set = Some(appended(
                            Some(v.bytes(&self.value_bytes)),
                            expiry,
                            ttl,
                            element,
                        ));
                    }
                    Change::Deleted => set = Some(appended(None, expiry, ttl, element)),
                    Change::Append { pieces } => match pieces.last_mut() {
                        // Appending raw bytes, or replacing an expiry the previous piece set
                        // anyway, composes with the previous piece (whose first append still
                        // decides about the base) — unless the list had expired in between: then
                        // the result no longer depends on the base at all.
                        Some(p) if expiry == 0 || p.last_expiry != 0 => {
                            if expiry != 0 && ttl > 0 && p.last_expiry <= expiry.saturating_sub(ttl)
                            {
                                let mut v = expiry.to_le_bytes().to_vec();
                                v.extend_from_slice(element);
                                set = Some(v);
                            } else {
                                if expiry != 0 {
                                    p.last_expiry = expiry;
                                }
                                p.elements.extend_from_slice(element);
                            }
                        }
                        _ => pieces.push(Piece {
                            first_expiry: expiry,
                            ttl,
                            last_expiry: expiry,
                            elements: element.to_vec(),
                        }),
                    },
                    Change::Map(_) => return Err(bad("Append on a map state")),
                }
                if let Some(v) = set {
                    self.store_value(i, &v)?;
                }
                Ok(())
            }
            Op::MapPut {
                state_id,
                kg,
                key,
                map_key,
                value,
            } => {
                if self.kind(state_id)? != KIND_MAP {
                    return Err(bad("MapPut on a state that is not a map"));
                }
                if !self.range.contains(KeyGroup(kg)) {
                    return Ok(());
                }
                let mut added = map_key.len() + value.len();
                let i = self.entry(state_id, kg, key, hint)?;
                let c = &mut self.entries[i].change;
                if !matches!(c, Change::Map(_)) {
                    *c = Change::Map(Box::default());
                }
                if let Change::Map(m) = c {
                    let entries = &mut m.entries;
                    if let Some(Some(old)) = entries.insert(map_key.to_vec(), Some(value.to_vec()))
                    {
                        added = added.saturating_sub(map_key.len() + old.len());
                    }
                }
                self.bytes += added;
                Ok(())
            }
            Op::MapRemove {
                state_id,
                kg,
                key,
                map_key,
            } => {
                if self.kind(state_id)? != KIND_MAP {
                    return Err(bad("MapRemove on a state that is not a map"));
                }
                if !self.range.contains(KeyGroup(kg)) {
                    return Ok(());
                }
                let i = self.entry(state_id, kg, key, hint)?;
                let c = &mut self.entries[i].change;
                if !matches!(c, Change::Map(_)) {
                    *c = Change::Map(Box::default());
                }
                if let Change::Map(m) = c {
                    let entries = &mut m.entries;
                    entries.insert(map_key.to_vec(), None);
                }
                self.bytes += map_key.len();
                Ok(())
            }
        }
    }

    /// Whether a stored value of `state_id` has expired at `now` (states without a TTL never do).
    fn expired(&self, state_id: u32, value: &[u8], now: u64) -> bool {
        let ttl = self
            .states
            .get(state_id as usize)
            .is_some_and(|s| s.ttl_millis > 0);
        ttl && split_expiry(value).is_some_and(|(expiry, _)| expiry <= now)
    }

    fn ttl_millis(&self, state_id: u32) -> u64 {
        self.states
            .get(state_id as usize)
            .map_or(0, |s| s.ttl_millis)
    }

    fn state_cleared(&self, state_id: u32) -> bool {
        self.cleared
            .get(state_id as usize)
            .copied()
            .unwrap_or(false)
    }
}

/// The value after appending `element` to `base` with `expiry` (0: none) in a state whose TTL
/// is `ttl_millis`, as the tables do (see `list_base`).
fn appended(base: Option<&[u8]>, expiry: u64, ttl_millis: u64, element: &[u8]) -> Vec<u8> {
    append_run(base, expiry, ttl_millis, expiry, element)
}

/// `base` after a run of appends of `elements`: raw bytes after it when `first_expiry` is 0;
/// otherwise its elements (if it had not expired at the first append, see `list_base`) then the
/// new ones, behind the run's `last_expiry`.
fn append_run(
    base: Option<&[u8]>,
    first_expiry: u64,
    ttl_millis: u64,
    last_expiry: u64,
    elements: &[u8],
) -> Vec<u8> {
    if first_expiry == 0 {
        let mut v = base.map(<[u8]>::to_vec).unwrap_or_default();
        v.extend_from_slice(elements);
        return v;
    }
    let rest = base
        .and_then(|b| list_base(b, first_expiry, ttl_millis))
        .unwrap_or(&[]);
    let mut v = Vec::with_capacity(8 + rest.len() + elements.len());
    v.extend_from_slice(&last_expiry.to_le_bytes());
    v.extend_from_slice(rest);
    v.extend_from_slice(elements);
    v
}

fn change_bytes(c: &Change) -> usize {
    match c {
        Change::Set(v) => v.len as usize,
        Change::Deleted => 0,
        Change::Append { pieces } => pieces.iter().map(|p| p.elements.len()).sum(),
        Change::Map(m) => m
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum(),
    }
}

/// Entries (or records) between looks at the cancel flag.
const CANCEL_CHECK: u64 = 4096;

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::io(
            "compact",
            std::path::PathBuf::new(),
            std::io::Error::other("compaction cancelled: the journal is closing"),
        ));
    }
    Ok(())
}

/// Counters of one merge.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MergeStats {
    /// Entries read from the previous snapshot.
    pub base_entries: u64,
    /// Entries written.
    pub written: u64,
    /// Entries dropped because their TTL had expired.
    pub expired: u64,
}

/// Where [`merge`] writes its sorted entries: a snapshot writer, or (a merged restore) an adapter
/// that renumbers states before writing.
pub(crate) trait EntrySink {
    /// Takes the next entry, in (key group, state, key, map key) order.
    fn add(&mut self, e: Entry<'_>) -> Result<()>;
}

impl EntrySink for SnapshotWriter {
    fn add(&mut self, e: Entry<'_>) -> Result<()> {
        SnapshotWriter::add(self, e)
    }
}

/// Streams the previous snapshot's entries (if any) past the sorted delta into `out`.
pub(crate) fn merge<S: EntrySink>(
    base: Option<&SnapshotReader>,
    delta: Delta,
    out: &mut S,
    now: u64,
    cancel: &AtomicBool,
) -> Result<MergeStats> {
    let mut stats = MergeStats::default();
    let mut delta = delta;
    let mut entries = std::mem::take(&mut delta.entries);
    let arena = std::mem::take(&mut delta.key_bytes);
    let values = std::mem::take(&mut delta.value_bytes);
    // The snapshot's order: (key group, state, the key's first 8 bytes) packed into one
    // number, sorted as numbers (a tuple comparison's branches made the sort twice as slow);
    // then the runs of equal numbers, keys sharing their first 8 bytes, by the whole key.
    // Sized once: collecting a filter grows by doubling, each step into fresh pages.
    let mut order: Vec<(u128, u32)> = Vec::with_capacity(entries.len());
    order.extend(
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.live)
            .map(|(i, e)| {
                let packed = u128::from(e.kg) << 96
                    | u128::from(e.state_id) << 64
                    | u128::from(key_head(e.key(&arena)));
                (packed, i as u32)
            }),
    );
    order.sort_unstable_by_key(|o| o.0);
    for run in order.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| {
                entries[a.1 as usize]
                    .key(&arena)
                    .cmp(entries[b.1 as usize].key(&arena))
            });
        }
    }
    // The delta in key order is a random walk over its entries and arenas: load the entry of
    // change j + 16, and the value bytes (and a long key's bytes) of change j + 8, while change
    // j is merged.
    let mut at = 0usize;
    let mut changes = std::iter::from_fn(|| {
        let &(_, i) = order.get(at)?;
        if let Some(&(_, a)) = order.get(at + MERGE_PREFETCH_ENTRY) {
            prefetch(&entries[a as usize]);
        }
        if let Some(&(_, b)) = order.get(at + MERGE_PREFETCH_BYTES) {
            let e = &entries[b as usize];
            if let Some(off) = e.key.arena_offset() {
                prefetch(arena.as_ptr().wrapping_add(off));
            }
            if let Change::Set(v) = &e.change {
                prefetch_range(values.as_ptr().wrapping_add(v.off), v.len as usize);
            }
        }
        at += 1;
        let e = &mut entries[i as usize];
        let change = std::mem::replace(&mut e.change, Change::Deleted);
        Some((e.kg, e.state_id, e.key, change))
    });
    let mut cursor = base.map(|b| b.cursor(delta.range));
    let mut has = match cursor.as_mut() {
        Some(c) => c.advance()?,
        None => false,
    };
    // Writes one entry unless its state was cleared or it has expired.
    let mut emit = |e: Entry<'_>, stats: &mut MergeStats| -> Result<()> {
        if delta.expired(e.state_id, e.value, now) {
            stats.expired += 1;
            return Ok(());
        }
        stats.written += 1;
        if stats.written.is_multiple_of(CANCEL_CHECK) {
            check_cancel(cancel)?;
        }
        out.add(e)
    };
    let mut changes = changes.by_ref().peekable();
    loop {
        // The base entry at the cursor, as an owned position for comparisons.
        let base_pos = match (&cursor, has) {
            (Some(c), true) => c.entry().map(|e| (e.kg, e.state_id)),
            _ => None,
        };
        let order = match (base_pos, changes.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(bp), Some(d)) => {
                let e = cursor.as_ref().and_then(|c| c.entry());
                let key = e.map_or(&[][..], |e| e.key);
                (bp.0, bp.1)
                    .cmp(&(d.0, d.1))
                    .then_with(|| bytes_order(key, d.2.get(&arena)))
            }
        };
        if order == std::cmp::Ordering::Less {
            // Only in the base.
            if let Some(e) = cursor.as_ref().and_then(|c| c.entry()) {
                stats.base_entries += 1;
                if !delta.state_cleared(e.state_id) {
                    emit(e, &mut stats)?;
                }
            }
            has = advance(&mut cursor)?;
            continue;
        }
        let Some((kg, sid, key_store, change)) = changes.next() else {
            break;
        };
        let key = key_store.get(&arena);
        let same = order == std::cmp::Ordering::Equal && !delta.state_cleared(sid);
        match change {
            Change::Set(_) | Change::Deleted => {
                if order == std::cmp::Ordering::Equal {
                    stats.base_entries += 1;
                    has = advance(&mut cursor)?;
                }
                if let Change::Set(v) = change {
                    emit(entry_of(kg, sid, key, None, v.bytes(&values)), &mut stats)?;
                }
            }
            Change::Append { pieces } => {
                let mut base_value = None;
                if order == std::cmp::Ordering::Equal {
                    stats.base_entries += 1;
                    if same {
                        base_value = cursor
                            .as_ref()
                            .and_then(|c| c.entry())
                            .map(|e| e.value.to_vec());
                    }
                    has = advance(&mut cursor)?;
                }
                let mut v = base_value;
                for p in &pieces {
                    v = Some(p.apply(v.as_deref()));
                }
                // No pieces and no base: untouched, nothing to write.
                if let Some(v) = v {
                    emit(entry_of(kg, sid, key, None, &v), &mut stats)?;
                }
            }
            Change::Map(m) => {
                let MapChange { cleared, entries } = *m;
                let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries.into_iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut entries = entries.into_iter().peekable();
                let keep_base = same && !cleared;
                // The base's entries of this key, merged by map key with the delta's.
                while order == std::cmp::Ordering::Equal && has {
                    let Some(e) = cursor.as_ref().and_then(|c| c.entry()) else {
                        break;
                    };
                    if (e.kg, e.state_id, e.key) != (kg, sid, key) {
                        break;
                    }
                    stats.base_entries += 1;
                    let mk = e.map_key.unwrap_or(&[]);
                    while let Some((dk, dv)) = entries.next_if(|(dk, _)| dk.as_slice() < mk) {
                        if let Some(dv) = dv {
                            emit(entry_of(kg, sid, key, Some(&dk), &dv), &mut stats)?;
                        }
                    }
                    match entries.next_if(|(dk, _)| dk.as_slice() == mk) {
                        Some((dk, Some(dv))) => {
                            emit(entry_of(kg, sid, key, Some(&dk), &dv), &mut stats)?
                        }
                        Some((_, None)) => {}
                        None if keep_base => emit(e, &mut stats)?,
                        None => {}
                    }
                    has = advance(&mut cursor)?;
                }
                for (dk, dv) in entries {
                    if let Some(dv) = dv {
                        emit(entry_of(kg, sid, key, Some(&dk), &dv), &mut stats)?;
                    }
                }
            }
        }
    }
    Ok(stats)
}

fn entry_of<'a>(
    kg: u16,
    state_id: u32,
    key: &'a [u8],
    map_key: Option<&'a [u8]>,
    value: &'a [u8],
) -> Entry<'a> {
    Entry {
        kg,
        state_id,
        key,
        map_key,
        value,
    }
}

fn advance(cursor: &mut Option<crate::snapshot::Cursor<'_>>) -> Result<bool> {
    match cursor.as_mut() {
        Some(c) => c.advance(),
        None => Ok(false),
    }
}

/// What one compaction did.
#[derive(Debug, Clone)]
pub struct CompactionReport {
    /// The snapshot written.
    pub snapshot: std::path::PathBuf,
    /// The LSN it covers.
    pub lsn: Lsn,
    /// Its size in bytes.
    pub bytes: u64,
    /// Entries in it.
    pub entries: u64,
    /// The previous snapshot's LSN (0: there was none).
    pub base_lsn: Lsn,
    /// Log records merged.
    pub records: u64,
    /// Log payload bytes merged.
    pub log_bytes: u64,
    /// Distinct keys the tail touched (the merge's memory is proportional to these).
    pub delta_keys: u64,
    /// Bytes of keys and values the merge held in memory for them.
    pub delta_bytes: u64,
    /// Entries dropped because their time-to-live had expired.
    pub expired: u64,
    /// Wall time.
    pub duration: Duration,
    /// Set when the snapshot was published but the garbage collection after it failed (the next
    /// compaction or checkpoint retries it): the compaction itself succeeded.
    pub gc_error: Option<String>,
}

/// How large a compaction's delta grew: the next compaction of the same journal reserves that
/// much up front (see [`Delta::reserve_like`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeltaSize {
    keys: usize,
    key_bytes: usize,
    value_bytes: usize,
}

/// Everything a compaction needs, none of it borrowed from the journal's owner.
pub(crate) struct CompactionJob<'a> {
    pub dir: &'a Path,
    pub log: &'a Log,
    /// The previous snapshot, if any.
    pub base: Option<SnapshotReader>,
    /// Merge the log through this LSN (it must be durable).
    pub through: u64,
    pub max_key_groups: u16,
    /// The time TTL expiry is judged at.
    pub now: u64,
    /// Snapshot block size (`None`: the default).
    pub block_size: Option<usize>,
    /// Set when the journal closes: the job stops early (its temporary file is removed).
    pub cancel: &'a AtomicBool,
    /// The previous compaction's delta, to reserve room for this one's.
    pub like: DeltaSize,
}

impl CompactionJob<'_> {
    /// Builds the delta from the log, merges, and publishes the new snapshot (durably).
    pub fn run(self) -> Result<(SnapshotFile, CompactionReport, DeltaSize)> {
        let started = Instant::now();
        // The files hold more than the journal may serve (a journal opened on a subset of the key
        // groups loads only those, but its log and snapshot are the whole journal's): compact
        // everything they hold, never just the groups served, or the others would be lost when
        // GC deletes the log below the new snapshot.
        let (base_lsn, states, max_kg, range) = match &self.base {
            Some(b) => (
                b.meta().lsn,
                b.meta().states.clone(),
                Some(b.meta().max_key_groups),
                b.meta().key_groups,
            ),
            None => (0, Vec::new(), None, KeyGroupRange::all(self.max_key_groups)),
        };
        let mut delta = Delta::new(range, max_kg, states);
        // Data records have dense LSNs: the tail holds at most this many.
        delta.reserve_like(self.like, self.through.saturating_sub(base_lsn));
        let mut records = 0u64;
        let mut log_bytes = 0u64;
        let mut next = base_lsn + 1;
        if self.through >= next {
            let through = self.through;
            let log = self.log;
            let cancel = self.cancel;
            let mut hints: Vec<Option<u64>> = Vec::with_capacity(1024);
            // No helper thread: the compaction runs beside the writers, whose core it would take.
            let scanned = log.scan_from(Lsn(next), 1024, false, |batch| {
                // Each op is a few dependent cache misses (the key's slot, its entry, its value
                // bytes, a long key's bytes): hash the whole batch first, then load those of record
                // i + 8, i + 4 and i + 2 while record i is applied, as replay does.
                hints.clear();
                hints.extend(batch.iter().map(|r| Delta::hint(r.payload)));
                for (i, rec) in batch.iter().enumerate() {
                    if let Some(Some(h)) = hints.get(i + PREFETCH_SLOT) {
                        delta.prefetch_slot(*h);
                    }
                    if let Some(Some(h)) = hints.get(i + PREFETCH_ENTRY) {
                        delta.prefetch_entry(*h, false);
                    }
                    if let Some(Some(h)) = hints.get(i + PREFETCH_BYTES) {
                        delta.prefetch_entry(*h, true);
                    }
                    let (lsn, payload) = (rec.lsn, rec.payload);
                    if lsn > through {
                        return Ok(ControlFlow::Break(())); // everything through it is merged
                    }
                    if lsn != next {
                        return Err(missing_records(log, next, lsn));
                    }
                    delta
                        .apply_hinted(payload, hints.get(i).copied().flatten())
                        .map_err(|e| rec.invalid(e.to_string()))?;
                    records += 1;
                    log_bytes += payload.len() as u64;
                    next = lsn + 1;
                }
                check_cancel(cancel)?;
                Ok(ControlFlow::Continue(()))
            });
            scanned?;
        }
        if next <= self.through {
            return Err(missing_records(self.log, next, self.through + 1));
        }
        match delta.max_key_groups() {
            Some(m) if m == self.max_key_groups => {}
            Some(m) => {
                return Err(Error::KeyGroupsMismatch {
                    path: self.dir.to_path_buf(),
                    stored: m,
                    requested: self.max_key_groups,
                })
            }
            None => {
                return Err(Error::InvalidRecord {
                    path: self.dir.to_path_buf(),
                    offset: None,
                    lsn: base_lsn + 1,
                    detail: "the log does not start with the journal's Init record".into(),
                })
            }
        }
        let delta_keys = delta.keys() as u64;
        let delta_bytes = delta.bytes() as u64;
        let size = delta.size();
        let mut writer = SnapshotWriter::create(
            self.dir,
            self.through,
            self.max_key_groups,
            range,
            delta.states().to_vec(),
        )?;
        if let Some(bs) = self.block_size {
            writer = writer.with_block_size(bs);
        }
        let stats = merge(
            self.base.as_ref(),
            delta,
            &mut writer,
            self.now,
            self.cancel,
        )?;
        let file = writer.finish()?;
        let report = CompactionReport {
            snapshot: file.path.clone(),
            lsn: Lsn(self.through),
            bytes: file.len,
            entries: file.entries,
            base_lsn: Lsn(base_lsn),
            records,
            log_bytes,
            delta_keys,
            delta_bytes,
            expired: stats.expired,
            duration: started.elapsed(),
            gc_error: None,
        };
        Ok((file, report, size))
    }
}

fn missing_records(log: &Log, want: u64, found: u64) -> Error {
    Error::InvalidRecord {
        path: log.dir().to_path_buf(),
        offset: None,
        lsn: want,
        detail: format!(
            "the log has no record {want} (the next one it holds is {found}): \
             the records after the snapshot are incomplete"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Collects the merged entries.
    struct Collect(Vec<(u16, u32, Vec<u8>, Vec<u8>)>);

    impl EntrySink for Collect {
        fn add(&mut self, e: Entry<'_>) -> Result<()> {
            self.0
                .push((e.kg, e.state_id, e.key.to_vec(), e.value.to_vec()));
            Ok(())
        }
    }

    /// The delta index finds every entry through growth and a `retain`, with hashes whose top
    /// bits (the home slot) or low bits (the tag) collide, and never finds one it does not hold.
    #[test]
    fn the_delta_index_finds_what_it_holds_through_growth_and_retain() {
        // Entry j's hash: few distinct homes for the first half, few distinct tags for the rest.
        let hash_of = |j: u32| -> u64 {
            let j = u64::from(j);
            if j % 2 == 0 {
                ((j % 7) << 60) | (j * 0x9E37_79B9) & 0xFFFF_FFFF
            } else {
                (j.wrapping_mul(0x9E37_79B9_7F4A_7C15) & !0xFFFF_FFFF) | (j % 3)
            }
        };
        let mut idx = DeltaIndex::default();
        let n = 20_000u32;
        for j in 0..n {
            assert_eq!(idx.find(hash_of(j), |e| e == j as usize), None);
            idx.insert(hash_of(j), j, hash_of);
            assert!(idx.len * 2 <= idx.slots.len());
        }
        assert_eq!(idx.len, n as usize);
        for j in 0..n {
            assert_eq!(idx.find(hash_of(j), |e| e == j as usize), Some(j as usize));
        }
        let kept = idx.take_kept(|j| j % 3 != 0);
        idx.insert_all(&kept, hash_of);
        for j in 0..n {
            let want = (j % 3 != 0).then_some(j as usize);
            assert_eq!(idx.find(hash_of(j), |e| e == j as usize), want, "entry {j}");
        }
        assert_eq!(idx.len, (0..n).filter(|j| j % 3 != 0).count());
    }

    fn apply(delta: &mut Delta, op: Op<'_>) {
        let mut rec = Vec::new();
        crate::codec::record::begin_record(&mut rec);
        op.encode(&mut rec);
        delta.apply(&rec).expect("a valid record");
    }

    /// A delta over `max_key_groups` groups with value states (kind 1) named `names`, ids in
    /// order.
    fn delta_with_value_states(max_key_groups: u16, names: &[&str]) -> Delta {
        let mut delta = Delta::new(KeyGroupRange::all(max_key_groups), None, Vec::new());
        apply(&mut delta, Op::Init { max_key_groups });
        for (id, name) in names.iter().enumerate() {
            apply(
                &mut delta,
                Op::Register {
                    state_id: id as u32,
                    kind: 1,
                    flags: 0,
                    ttl_millis: 0,
                    name: name.as_bytes(),
                },
            );
        }
        delta
    }

    /// Merges `delta` onto no base and checks that it writes exactly `model`, in its order.
    fn assert_merges_to(delta: Delta, model: BTreeMap<(u16, u32, Vec<u8>), Vec<u8>>) {
        let mut out = Collect(Vec::new());
        merge(None, delta, &mut out, 0, &AtomicBool::new(false)).expect("merge");
        let want: Vec<_> = model
            .into_iter()
            .map(|((kg, sid, k), v)| (kg, sid, k, v))
            .collect();
        assert_eq!(out.0, want);
    }

    /// Keys whose first 8 bytes are equal (a long shared prefix, and short keys that differ
    /// only by trailing zero bytes, which pad to the same head) are still merged in key order:
    /// the sort's packed number cannot tell them apart, its second pass must. Keys kept in
    /// their entries and keys in the arena are found again and compared alike.
    #[test]
    fn keys_sharing_their_first_8_bytes_are_merged_in_key_order() {
        let mut delta = delta_with_value_states(2, &["v"]);
        // Short keys kept in their entries, and long ones (over `INLINE_KEY`) in the arena.
        let mut keys: Vec<Vec<u8>> = (0..3_000u32)
            .map(|i| match i % 2 {
                0 => format!("customer:{}", i * 7919 % 3_001),
                _ => format!("customer:with-a-longer-name:{}", i * 7919 % 3_001),
            })
            .map(String::into_bytes)
            .collect();
        assert!(keys.iter().any(|k| k.len() > INLINE_KEY));
        assert!(keys.iter().any(|k| k.len() <= INLINE_KEY));
        for n in 1..=9 {
            keys.push(vec![0; n]);
            let mut k = vec![1];
            k.resize(n, 0);
            keys.push(k);
        }
        let mut model: BTreeMap<(u16, u32, Vec<u8>), Vec<u8>> = BTreeMap::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = &keys[(x % keys.len() as u64) as usize];
            let kg = (k.len() % 2) as u16;
            let v = step.to_le_bytes();
            apply(
                &mut delta,
                Op::Put {
                    state_id: 0,
                    kg,
                    key: k,
                    value: &v,
                },
            );
            model.insert((kg, 0, k.clone()), v.to_vec());
        }
        assert_merges_to(delta, model);
    }

    /// Values that grow, shrink and get deleted, over enough keys and bytes that the value
    /// arena's garbage is collected several times (and a whole state is cleared on the way):
    /// the merge must still write exactly each key's last value.
    #[test]
    fn the_value_arena_keeps_the_last_value_of_every_key_across_collections() {
        let mut delta = delta_with_value_states(4, &["a", "b"]);
        let mut model: BTreeMap<(u16, u32, Vec<u8>), Vec<u8>> = BTreeMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut collections = 0;
        let mut garbage = 0;
        for step in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 1_000).to_be_bytes().to_vec();
            let kg = (x % 4) as u16;
            let sid = ((x >> 20) % 2) as u32;
            if step == 30_000 {
                apply(&mut delta, Op::ClearState { state_id: 1 });
                model.retain(|(_, s, _), _| *s != 1);
                continue;
            }
            if x.is_multiple_of(3) {
                apply(
                    &mut delta,
                    Op::Delete {
                        state_id: sid,
                        kg,
                        key: &k,
                    },
                );
                model.remove(&(kg, sid, k));
            } else {
                let len = ((x >> 8) % 300) as usize;
                let v = vec![(step % 251) as u8; len];
                apply(
                    &mut delta,
                    Op::Put {
                        state_id: sid,
                        kg,
                        key: &k,
                        value: &v,
                    },
                );
                model.insert((kg, sid, k), v);
            }
            // Garbage only shrinks when it is collected.
            if delta.value_garbage < garbage {
                collections += 1;
            }
            garbage = delta.value_garbage;
        }
        assert!(collections > 1, "the arena was never collected");
        assert_merges_to(delta, model);
    }

    /// A delta reserved like an earlier one holds and merges exactly what an unreserved one
    /// does (whether the reservation was too small, right or larger than the tail), and one
    /// reserved like itself grows nothing while it fills.
    #[test]
    fn a_reserved_delta_merges_like_an_unreserved_one() {
        let fill = |delta: &mut Delta, keys: u64| {
            let mut model: BTreeMap<(u16, u32, Vec<u8>), Vec<u8>> = BTreeMap::new();
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for step in 0..3 * keys {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = (x % keys).to_be_bytes().to_vec();
                let kg = (x % 4) as u16;
                let v = vec![(step % 251) as u8; ((x >> 8) % 120) as usize];
                apply(
                    delta,
                    Op::Put {
                        state_id: 0,
                        kg,
                        key: &k,
                        value: &v,
                    },
                );
                model.insert((kg, 0, k), v);
            }
            model
        };
        let mut first = delta_with_value_states(4, &["a"]);
        let model = fill(&mut first, 5_000);
        let like = first.size();
        assert!(like.keys > 4_000 && like.value_bytes > 0, "{like:?}");
        assert_merges_to(first, model.clone());

        for (name, like, records) in [
            ("like the last one", like, 15_000),
            (
                "like a smaller one",
                DeltaSize {
                    keys: 100,
                    key_bytes: 0,
                    value_bytes: 900,
                },
                15_000,
            ),
            (
                "like a larger one",
                DeltaSize {
                    keys: 1 << 20,
                    key_bytes: 0,
                    value_bytes: 1 << 26,
                },
                15_000,
            ),
            ("with fewer records than keys", like, 50),
            ("like none", DeltaSize::default(), 15_000),
        ] {
            let mut delta = delta_with_value_states(4, &["a"]);
            delta.reserve_like(like, records);
            let keys = like
                .keys
                .saturating_add(like.keys / 4)
                .min(records as usize);
            assert!(delta.entries.capacity() >= keys, "{name}");
            assert!(
                delta.index.slots.len() >= 2 * like.keys.min(records as usize),
                "{name}: the index fits them"
            );
            let (entries, values, slots) = (
                delta.entries.capacity(),
                delta.value_bytes.capacity(),
                delta.index.slots.len(),
            );
            assert_eq!(fill(&mut delta, 5_000), model, "{name}");
            if name == "like the last one" {
                assert_eq!(delta.entries.capacity(), entries, "{name}: entries grew");
                assert_eq!(delta.value_bytes.capacity(), values, "{name}: values grew");
                assert_eq!(delta.index.slots.len(), slots, "{name}: the index grew");
            }
            assert_merges_to(delta, model.clone());
        }
    }
}
