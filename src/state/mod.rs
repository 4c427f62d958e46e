//! Keyed state: the state registry, the in-memory tables, and applying mutation records to them.
//!
//! Every mutation reaches the tables the same way, live or in recovery: it is encoded as a record
//! ([`crate::codec::record`]), appended to the log, and then applied from the encoded bytes by
//! [`Store::apply`]. Replay therefore rebuilds exactly the state the live path built.

mod codec;
mod handles;
// `retain`, `update`, `stats` and `compact_all` serve TTL cleanup and compaction of the arenas
// (not used yet); the journal uses the rest.
#[allow(dead_code)]
mod table;
mod ttl;

use std::collections::HashMap;

pub use codec::{Codec, CodecError, Postcard};
pub use handles::{
    AggregateFunction, AggregatingState, ListState, MapState, ReducingState, ValueState,
};
pub use ttl::{Clock, ManualClock, StateTtl, SystemClock};

pub(crate) use table::Table;
pub(crate) use ttl::{split_expiry, EXPIRY_LEN};

use crate::codec::record::{decode_record, split_composite, Op, RecordError};
use crate::keygroup::{key_group_of, key_hash, KeyGroup, KeyGroupRange};

/// The kinds of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A list per key; adds log only the added elements.
    List,
    /// A map per key; entries are logged one by one.
    Map,
    /// One value per key, combined with each added value by a reduce function.
    Reducing,
    /// An accumulator per key, fed by an aggregate function.
    Aggregating,
}

impl StateKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            StateKind::Value => 1,
            StateKind::List => 2,
            StateKind::Map => 3,
            StateKind::Reducing => 4,
            StateKind::Aggregating => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => StateKind::Value,
            2 => StateKind::List,
            3 => StateKind::Map,
            4 => StateKind::Reducing,
            5 => StateKind::Aggregating,
            _ => return None,
        })
    }
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
            StateKind::Reducing => "reducing",
            StateKind::Aggregating => "aggregating",
        };
        f.write_str(s)
    }
}

/// A registered state.
#[derive(Debug, Clone)]
pub(crate) struct StateMeta {
    pub name: String,
    pub kind: StateKind,
    pub ttl: Option<StateTtl>,
}

/// A map state's tables: `outer` maps a composite key to the index of its entries' table.
#[derive(Debug, Default)]
pub(crate) struct MapData {
    pub outer: Table,
    pub inner: Vec<Table>,
    free: Vec<u32>,
}

impl MapData {
    /// The entries of a composite key, if it has any.
    pub fn entries(&self, hash: u64, key: &[u8]) -> Option<&Table> {
        let idx = self.outer.get(hash, key)?;
        let idx = u32::from_le_bytes(idx.try_into().ok()?) as usize;
        self.inner.get(idx)
    }

    fn entries_mut(&mut self, hash: u64, key: &[u8], create: bool) -> Option<&mut Table> {
        let idx = match self
            .outer
            .get(hash, key)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            Some(b) => u32::from_le_bytes(b),
            None if create => {
                let idx = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.inner.push(Table::new());
                        (self.inner.len() - 1) as u32
                    }
                };
                self.outer.insert(hash, key, &idx.to_le_bytes());
                idx
            }
            None => return None,
        };
        self.inner.get_mut(idx as usize)
    }

    fn remove_key(&mut self, hash: u64, key: &[u8]) {
        if let Some(b) = self
            .outer
            .get(hash, key)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            let idx = u32::from_le_bytes(b);
            if let Some(t) = self.inner.get_mut(idx as usize) {
                t.clear();
                self.free.push(idx);
            }
            self.outer.remove(hash, key);
        }
    }

    fn clear(&mut self) {
        self.outer.clear();
        self.inner.clear();
        self.free.clear();
    }
}

/// How many entries ahead a snapshot load starts loading a key's table slot.
const LOAD_AHEAD: usize = 8;
/// How many prefaulted arena chunks (2 MiB each) a snapshot load keeps ready ahead of need.
const PREFAULT_AHEAD: usize = 16;

/// One verified snapshot block, decoded (a unit of the parallel load): where its entry bytes
/// lie in the mapped snapshot file, and each entry, either written already into its table's
/// arena by the decoding thread or, when its table takes no [`table::ChunkWriter`], its
/// position in the payload with its key's table hash. Keys are distinct, so the order in which
/// the two kinds are indexed does not matter.
#[derive(Debug, Default)]
struct DecodedBlock {
    kg: u16,
    /// The payload: `len` bytes at file offset `at`.
    at: usize,
    len: usize,
    /// The entries the decoding thread wrote into their tables' arenas (state id, entry):
    /// their slots are still to be placed. Kept apart from `entries` because they are under a
    /// third of the size (24 bytes against 80): 8.8 M of them pass from one thread to the other
    /// in a large load.
    written: Vec<(u32, table::Written)>,
    /// The other entries, still to be inserted from the payload: their positions in it, and
    /// their keys' table hashes.
    entries: Vec<(crate::snapshot::codec::EntryPos, u64)>,
    /// Arena chunks the writers finished while decoding this block, with their state ids: the
    /// inserting thread adopts them into their tables.
    chunks: Vec<(u32, table::FilledChunk)>,
    /// Number and key and value bytes of the entries in `written`.
    written_sum: Loaded,
}

impl DecodedBlock {
    /// Decodes (and so checks) every entry of `entries` into `self`, hashing each key and
    /// checking that it belongs to the block's key group (of `max_key_groups`). An entry of a
    /// plain state whose table has a writer in `writers` (indexed by state id) is written into
    /// that table's arena here.
    fn decode(
        &mut self,
        entries: &mut crate::snapshot::BlockEntries<'_>,
        max_key_groups: u16,
        writers: &mut [Option<table::ChunkWriter>],
        corrupt: &impl Fn(String) -> crate::Error,
    ) -> crate::Result<()> {
        let payload = entries.payload();
        self.kg = entries.kg();
        self.len = payload.len();
        self.at = usize::try_from(entries.payload_offset())
            .map_err(|_| corrupt("a block lies past the address space".into()))?;
        self.entries.clear();
        self.written.clear();
        self.written_sum = Loaded::default();
        while let Some(pos) = entries.next_pos() {
            let pos = pos?;
            let e = pos.entry(self.kg, payload);
            let bad_entry = |what: &str| {
                corrupt(format!(
                    "an entry of key group {} (state {}) {what}",
                    e.kg, e.state_id
                ))
            };
            let (key, ns) = split_composite(e.key).map_err(|err| bad_entry(err.what))?;
            let kh = key_hash(key);
            // The key must belong to the group it is filed under: a load inserts without
            // looking for the key first, which the snapshot's order (checked per group) makes
            // safe only if no key can appear in two groups.
            if key_group_of(kh, max_key_groups).0 != self.kg {
                return Err(bad_entry(
                    "is filed under a key group its key does not hash to",
                ));
            }
            let hash = table_hash(e.key, e.key.len() - ns.len(), kh);
            let writer = match e.map_key {
                None => writers
                    .get_mut(e.state_id as usize)
                    .and_then(Option::as_mut),
                Some(_) => None, // a map entry, or a kind mismatch the inserter reports
            };
            match writer {
                Some(w) => {
                    self.written_sum.entries += 1;
                    self.written_sum.bytes += (e.key.len() + e.value.len()) as u64;
                    self.written
                        .push((e.state_id, w.write(hash, e.key, e.value)));
                }
                None => self.entries.push((pos, hash)),
            }
        }
        for (id, w) in writers.iter_mut().enumerate() {
            if let Some(w) = w {
                self.chunks
                    .extend(w.take_done().into_iter().map(|c| (id as u32, c)));
            }
        }
        Ok(())
    }
}

/// Inserts a decoded block's entries (those not written yet: their bytes in `file`, the mapped
/// snapshot) into their tables, with the table slot of the entry [`LOAD_AHEAD`] places further
/// already loading: a fresh table's inserts are one cache miss each (the slot), and this
/// overlaps them. First adopts the arena chunks that came with the block.
fn insert_block(
    states: &mut [(StateMeta, Data)],
    file: &[u8],
    block: &mut DecodedBlock,
    loaded: &mut Loaded,
    corrupt: &impl Fn(String) -> crate::Error,
) -> crate::Result<()> {
    for (id, chunk) in block.chunks.drain(..) {
        // A writer exists only for a plain state's table.
        if let Some((_, Data::Plain(t))) = states.get_mut(id as usize) {
            t.adopt(chunk);
        }
    }
    loaded.entries += block.written_sum.entries;
    loaded.bytes += block.written_sum.bytes;
    for (i, &(state_id, entry)) in block.written.iter().enumerate() {
        if let Some(&(ahead_id, ahead)) = block.written.get(i + LOAD_AHEAD) {
            if let Some((_, Data::Plain(t))) = states.get(ahead_id as usize) {
                t.prefetch_written(ahead);
            }
        }
        // Distinct, as for `insert_unique` below; the entry's chunk is adopted above or comes
        // with a later block.
        if let Some((_, Data::Plain(t))) = states.get_mut(state_id as usize) {
            t.place_written(entry);
        }
    }
    let payload = file
        .get(block.at..block.at + block.len)
        .ok_or_else(|| corrupt(format!("a block at {} is past the file's end", block.at)))?;
    for (i, &(pos, h)) in block.entries.iter().enumerate() {
        if let Some(&(ahead, ahead_hash)) = block.entries.get(i + LOAD_AHEAD) {
            if let Some((_, Data::Plain(t))) = states.get(ahead.state_id as usize) {
                t.prefetch_slot(ahead_hash);
            }
        }
        let e = pos.entry(block.kg, payload);
        let bad_entry = |what: &str| {
            corrupt(format!(
                "an entry of key group {} (state {}) {what}",
                e.kg, e.state_id
            ))
        };
        match (states.get_mut(e.state_id as usize), e.map_key) {
            (Some((_, Data::Plain(t))), None) => {
                // Distinct: the decoder checked the order of each key group's entries and
                // that every key is in its own group.
                t.insert_unique(h, e.key, e.value);
            }
            (Some((_, Data::Map(m))), Some(mk)) => {
                if let Some(entries) = m.entries_mut(h, e.key, true) {
                    entries.insert(key_hash(mk), mk, e.value);
                }
            }
            (None, _) => return Err(bad_entry("names an unregistered state")),
            (Some(_), _) => return Err(bad_entry("does not match its state's kind")),
        }
        loaded.entries += 1;
        loaded.bytes += (e.key.len() + e.value.len() + e.map_key.map_or(0, <[u8]>::len)) as u64;
    }
    Ok(())
}

/// The tables of one state.
#[derive(Debug)]
pub(crate) enum Data {
    /// Value, list, reducing and aggregating states: composite key → stored value.
    Plain(Table),
    /// Map states.
    Map(MapData),
}

/// Every state of a journal.
#[derive(Debug)]
pub(crate) struct Store {
    pub states: Vec<(StateMeta, Data)>,
    pub by_name: HashMap<String, u32>,
    /// Set by the journal's `Init` record.
    pub max_key_groups: Option<u16>,
    /// The key groups this journal loads and serves.
    pub range: KeyGroupRange,
}

/// The hash the tables use for a composite key: the key's own hash when there is no namespace
/// (then it is also the key-group hash, computed once), the composite's hash otherwise.
#[inline]
pub(crate) fn table_hash(composite: &[u8], ns_start: usize, key_hash_value: u64) -> u64 {
    if ns_start >= composite.len() {
        key_hash_value
    } else {
        key_hash(composite)
    }
}

/// The elements a list append with `expiry` builds on: those of `stored` (after its expiry
/// prefix), or none if the list had expired when the append was made. The append was made at
/// `expiry - ttl_millis` (the expiry is the time of the append plus the TTL), so replay decides
/// exactly as the live path did, without a clock.
pub(crate) fn list_base(stored: &[u8], expiry: u64, ttl_millis: u64) -> Option<&[u8]> {
    let (old_expiry, rest) = split_expiry(stored)?;
    let appended_at = expiry.saturating_sub(ttl_millis);
    (ttl_millis == 0 || old_expiry > appended_at).then_some(rest)
}

fn hash_of_composite(composite: &[u8]) -> Result<u64, RecordError> {
    let (key, ns) = split_composite(composite)?;
    Ok(if ns.is_empty() {
        key_hash(key)
    } else {
        key_hash(composite)
    })
}

fn bad(what: &'static str) -> RecordError {
    RecordError { offset: 0, what }
}

/// What loading a snapshot did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loaded {
    pub entries: u64,
    pub bytes: u64,
}

impl Store {
    /// Loads a snapshot into an empty store: its registry and number of key groups, and the
    /// entries of the key groups this store serves (only their blocks are read). Tables are sized
    /// from the snapshot's per-state counts first, so loading never rehashes.
    pub fn load_snapshot(
        &mut self,
        snap: &crate::snapshot::SnapshotReader,
    ) -> crate::Result<Loaded> {
        let meta = snap.meta();
        let corrupt = |detail: String| {
            crate::Error::corrupt(
                snap.path(),
                0,
                crate::CorruptionKind::BadSnapshot { detail },
            )
        };
        self.max_key_groups = Some(meta.max_key_groups);
        let mkg = meta.max_key_groups;
        // The share of the snapshot's entries in the key groups this store loads, to size its
        // tables (the footer counts entries per state and per key group).
        let (ours, total) = snap.index().iter().fold((0u64, 0u64), |(o, t), g| {
            let mine = self.range.contains(KeyGroup(g.kg));
            (o + if mine { g.entries } else { 0 }, t + g.entries)
        });
        let share = |n: u64| (u128::from(n) * u128::from(ours) / u128::from(total.max(1))) as usize;
        for (i, info) in meta.states.iter().enumerate() {
            if info.id as usize != i {
                return Err(corrupt(format!("state ids are not dense at {}", info.id)));
            }
            let kind = StateKind::from_code(info.kind)
                .ok_or_else(|| corrupt(format!("unknown state kind {}", info.kind)))?;
            let ttl = (info.ttl_millis > 0).then_some(StateTtl {
                ttl_millis: info.ttl_millis,
                refresh_on_read: info.flags & 1 != 0,
            });
            let data = match kind {
                StateKind::Map => Data::Map(MapData::default()),
                _ => Data::Plain(Table::with_capacity(
                    share(info.entries),
                    share(info.payload_bytes),
                )),
            };
            if self.by_name.insert(info.name.clone(), info.id).is_some() {
                return Err(corrupt(format!(
                    "state {:?} is registered twice",
                    info.name
                )));
            }
            self.states.push((
                StateMeta {
                    name: info.name.clone(),
                    kind,
                    ttl,
                },
                data,
            ));
        }
        let states = &mut self.states;
        let range = self.range;
        // Decoding (block CRCs, entry structure and order, key hashes) and inserting each take
        // about half the work: where a second core exists, a thread decodes block n + 1 while
        // this one inserts block n.
        // Read in place: copying the file through a buffer, and each block again for the
        // inserting thread, was about 15% of the load's CPU (all threads).
        let map = snap.map()?;
        let file = map.bytes();
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
        if !parallel {
            let mut block = DecodedBlock::default();
            let mut loaded = Loaded::default();
            snap.for_each_mapped_block(&map, range, |_, entries| {
                block.decode(entries, mkg, &mut [], &corrupt)?;
                insert_block(states, file, &mut block, &mut loaded, &corrupt)
            })?;
            return Ok(loaded);
        }
        // The decoding thread also writes the entries of large plain tables into their arenas
        // (`table::ChunkWriter`): copying entries was about 40% of the inserting thread's work,
        // which was the critical path, and decoding leaves the other thread room for it.
        let mut writers: Vec<Option<table::ChunkWriter>> = states
            .iter()
            .map(|(_, d)| match d {
                Data::Plain(t) => t.bulk_writer(),
                Data::Map(_) => None,
            })
            .collect();
        // Full-size arena chunks the tables will need, faulted in by a third thread: the kernel
        // zeroing fresh pages was 40% of the thread writing entries, and this one has the slack
        // (on a VM, first touches of memory are slower still). Tables with a writer get theirs
        // through the writer, on the decoding thread; the others on the inserting thread.
        let wanted: Vec<(u32, usize)> = states
            .iter()
            .enumerate()
            .filter_map(|(id, (_, d))| match d {
                Data::Plain(t) => Some((id as u32, t.chunks_wanted())),
                Data::Map(_) => None,
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        std::thread::scope(|scope| {
            let (chunk_tx, chunk_rx) =
                std::sync::mpsc::sync_channel::<(u32, table::PrefaultedChunk)>(PREFAULT_AHEAD);
            if !wanted.is_empty() {
                scope.spawn(move || {
                    for (id, n) in wanted {
                        for _ in 0..n {
                            // A closed channel: the load is over (or failed).
                            if chunk_tx.send((id, table::PrefaultedChunk::new())).is_err() {
                                return;
                            }
                        }
                    }
                });
            } else {
                drop(chunk_tx);
            }
            // Prefaulted chunks for tables without a writer, passed on by the decoding thread.
            let (spare_tx, spare_rx) = std::sync::mpsc::channel::<(u32, table::PrefaultedChunk)>();
            let (tx, rx) = std::sync::mpsc::sync_channel::<crate::Result<DecodedBlock>>(4);
            let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<DecodedBlock>();
            let decoder_corrupt = &corrupt;
            let map = &map;
            scope.spawn(move || {
                let abandoned = || decoder_corrupt("the load was abandoned".into());
                let outcome = snap.for_each_mapped_block(map, range, |_, entries| {
                    while let Ok((id, chunk)) = chunk_rx.try_recv() {
                        match writers.get_mut(id as usize) {
                            Some(Some(w)) => w.add_prefaulted(chunk),
                            _ => {
                                let _ = spare_tx.send((id, chunk));
                            }
                        }
                    }
                    let mut block = recycle_rx.try_recv().unwrap_or_default();
                    block.decode(entries, mkg, &mut writers, decoder_corrupt)?;
                    // A closed channel means the loader failed and returned: stop quietly.
                    tx.send(Ok(block)).map_err(|_| abandoned())
                });
                let outcome = outcome.and_then(|()| {
                    // The chunks still being filled complete their tables.
                    let mut last = DecodedBlock::default();
                    for (id, w) in writers.into_iter().enumerate() {
                        if let Some(w) = w {
                            last.chunks
                                .extend(w.finish().into_iter().map(|c| (id as u32, c)));
                        }
                    }
                    tx.send(Ok(last)).map_err(|_| abandoned())
                });
                // Stops the faulting thread, and returns what it made beyond the need.
                drop(chunk_rx);
                if let Err(e) = outcome {
                    let _ = tx.send(Err(e));
                }
            });
            let mut loaded = Loaded::default();
            let inserted = (|| {
                for block in rx {
                    let mut block = block?;
                    while let Ok((id, chunk)) = spare_rx.try_recv() {
                        if let Some((_, Data::Plain(t))) = states.get_mut(id as usize) {
                            t.add_prefaulted(chunk);
                        }
                    }
                    insert_block(states, file, &mut block, &mut loaded, &corrupt)?;
                    let _ = recycle_tx.send(block);
                }
                Ok(())
            })();
            drop(spare_rx);
            for (_, d) in states.iter_mut() {
                if let Data::Plain(t) = d {
                    t.drop_prefaulted();
                }
            }
            inserted.map(|()| loaded)
        })
    }

    pub fn new(range: KeyGroupRange) -> Self {
        Store {
            states: Vec::new(),
            by_name: HashMap::new(),
            max_key_groups: None,
            range,
        }
    }

    /// Applies one record (every op of it). Ops on key groups outside `range` are skipped.
    pub fn apply(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        self.apply_hinted(payload, None)
    }

    /// [`Store::apply`] with the table hash of the record's first op's key when the caller
    /// computed it already ([`Store::replay_hint`]); the other ops' hashes are computed here.
    pub fn apply_hinted(
        &mut self,
        payload: &[u8],
        first_hash: Option<u64>,
    ) -> Result<(), RecordError> {
        let mut hash = first_hash;
        for op in decode_record(payload)? {
            self.apply_op(op?, hash.take())?;
        }
        Ok(())
    }

    /// The state and table hash of the key the first op of `payload` addresses, when that op
    /// is keyed and its key group is served; `None` otherwise, and for a record that does not
    /// decode (applying it reports the error). Replay computes these a few records ahead to
    /// prefetch the tables ([`Store::prefetch_slot`]) and hands the hash to
    /// [`Store::apply_hinted`], so no key is hashed twice.
    pub fn replay_hint(&self, payload: &[u8]) -> Option<(u32, u64)> {
        let op = decode_record(payload).ok()?.next()?.ok()?;
        let t = op.target()?;
        if !self.owned(t.kg) {
            return None;
        }
        Some((t.state_id, hash_of_composite(t.key).ok()?))
    }

    fn owned(&self, kg: u16) -> bool {
        self.range.contains(KeyGroup(kg))
    }

    fn data(&mut self, state_id: u32) -> Result<&mut Data, RecordError> {
        self.states
            .get_mut(state_id as usize)
            .map(|(_, d)| d)
            .ok_or(bad("op on an unregistered state"))
    }

    /// Checks that `op` can be applied: the state it changes is registered and holds the kind of
    /// data the op changes (a map op on a map state, a value or list op on a plain one). The
    /// journal checks every op before logging it, so a record it appends never fails to apply,
    /// neither now nor when it is replayed: a handle used on a journal it was not registered
    /// with is refused instead of leaving a record that no replay could get past.
    #[inline]
    pub fn check_applicable(&self, op: &Op<'_>) -> Result<(), RecordError> {
        let Some(state_id) = op.state_id() else {
            return Ok(()); // Init, Register: checked when applied, before anything uses them
        };
        let wants_map = match op {
            Op::Put { .. } | Op::Append { .. } => Some(false),
            Op::MapPut { .. } | Op::MapRemove { .. } => Some(true),
            _ => None,
        };
        let Some((_, data)) = self.states.get(state_id as usize) else {
            return Err(bad("op on an unregistered state"));
        };
        match (wants_map, data) {
            (Some(true), Data::Plain(_)) => Err(bad("a map op on a state that is not a map")),
            (Some(false), Data::Map(_)) => Err(bad("a value or list op on a map state")),
            _ => Ok(()),
        }
    }

    /// Starts loading the table slot of a key of a plain state (value, list, reducing,
    /// aggregating) into the cache; see [`Table::prefetch_slot`]. A hint: does nothing for map
    /// states or unknown ids.
    #[inline]
    pub fn prefetch_slot(&self, state_id: u32, hash: u64) {
        if let Some((_, Data::Plain(t))) = self.states.get(state_id as usize) {
            t.prefetch_slot(hash);
        }
    }

    /// Starts loading the table entry of a key of a plain state; see [`Table::prefetch_entry`].
    #[inline]
    pub fn prefetch_entry(&self, state_id: u32, hash: u64) {
        if let Some((_, Data::Plain(t))) = self.states.get(state_id as usize) {
            t.prefetch_entry(hash);
        }
    }

    /// Applies one op. `hash` is the table hash of the op's composite key when the caller
    /// already knows it (the live path); replay computes it.
    pub fn apply_op(&mut self, op: Op<'_>, hash: Option<u64>) -> Result<(), RecordError> {
        let hash_of = |key: &[u8]| hash.map_or_else(|| hash_of_composite(key), Ok);
        // Keyed ops of key groups this journal does not serve are skipped (after checking the
        // state exists): a restore of a key-group range loads only its own keys.
        if let Some(t) = op.target() {
            if !self.owned(t.kg) {
                self.data(t.state_id)?;
                return Ok(());
            }
        }
        match op {
            Op::Init { max_key_groups } => match self.max_key_groups {
                Some(m) if m != max_key_groups => {
                    return Err(bad("a second Init record disagrees"))
                }
                _ => self.max_key_groups = Some(max_key_groups),
            },
            Op::Register {
                state_id,
                kind,
                flags,
                ttl_millis,
                name,
            } => {
                let kind = StateKind::from_code(kind).ok_or(bad("unknown state kind"))?;
                let name = std::str::from_utf8(name).map_err(|_| bad("state name is not UTF-8"))?;
                let ttl = (ttl_millis > 0).then_some(StateTtl {
                    ttl_millis,
                    refresh_on_read: flags & 1 != 0,
                });
                let meta = StateMeta {
                    name: name.to_string(),
                    kind,
                    ttl,
                };
                let count = self.states.len();
                match self.states.get_mut(state_id as usize) {
                    // Re-registration: the kind is fixed, the TTL may change.
                    Some((existing, _)) if existing.name == meta.name && existing.kind == kind => {
                        existing.ttl = ttl;
                    }
                    Some(_) => return Err(bad("registration conflicts with an existing state")),
                    None if state_id as usize == count => {
                        let data = match kind {
                            StateKind::Map => Data::Map(MapData::default()),
                            _ => Data::Plain(Table::new()),
                        };
                        self.by_name.insert(meta.name.clone(), state_id);
                        self.states.push((meta, data));
                    }
                    None => return Err(bad("state ids are not dense")),
                }
            }
            Op::Put {
                state_id,
                kg: _,
                key,
                value,
            } => {
                let h = hash_of(key)?;
                match self.data(state_id)? {
                    Data::Plain(t) => {
                        t.insert(h, key, value);
                    }
                    Data::Map(_) => return Err(bad("Put on a map state")),
                }
            }
            Op::Delete {
                state_id,
                kg: _,
                key,
            } => {
                let h = hash_of(key)?;
                match self.data(state_id)? {
                    Data::Plain(t) => {
                        t.remove(h, key);
                    }
                    Data::Map(m) => m.remove_key(h, key),
                }
            }
            Op::Append {
                state_id,
                kg: _,
                key,
                expiry,
                element,
            } => {
                let h = hash_of(key)?;
                let ttl_millis = self
                    .states
                    .get(state_id as usize)
                    .and_then(|(m, _)| m.ttl)
                    .map_or(0, |t| t.ttl_millis);
                let Data::Plain(t) = self.data(state_id)? else {
                    return Err(bad("Append on a map state"));
                };
                if expiry == 0 {
                    t.append(h, key, element);
                } else {
                    // A list with a TTL carries its expiry in front: rewrite it, and keep the
                    // elements unless the list had expired when this append was made.
                    let old = t
                        .get(h, key)
                        .and_then(|v| list_base(v, expiry, ttl_millis))
                        .unwrap_or(&[]);
                    let mut v = Vec::with_capacity(EXPIRY_LEN + old.len() + element.len());
                    v.extend_from_slice(&expiry.to_le_bytes());
                    v.extend_from_slice(old);
                    v.extend_from_slice(element);
                    t.insert(h, key, &v);
                }
            }
            Op::ClearState { state_id } => match self.data(state_id)? {
                Data::Plain(t) => t.clear(),
                Data::Map(m) => m.clear(),
            },
            Op::MapPut {
                state_id,
                kg: _,
                key,
                map_key,
                value,
            } => {
                let h = hash_of(key)?;
                let Data::Map(m) = self.data(state_id)? else {
                    return Err(bad("MapPut on a state that is not a map"));
                };
                if let Some(entries) = m.entries_mut(h, key, true) {
                    entries.insert(key_hash(map_key), map_key, value);
                }
            }
            Op::MapRemove {
                state_id,
                kg: _,
                key,
                map_key,
            } => {
                let h = hash_of(key)?;
                let Data::Map(m) = self.data(state_id)? else {
                    return Err(bad("MapRemove on a state that is not a map"));
                };
                let now_empty = match m.entries_mut(h, key, false) {
                    Some(entries) => {
                        entries.remove(key_hash(map_key), map_key);
                        entries.is_empty()
                    }
                    None => false,
                };
                if now_empty {
                    m.remove_key(h, key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::codec::record::composite_key;
    use crate::snapshot::{Entry, SnapshotReader, SnapshotWriter, StateInfo};

    const KEY_GROUPS: u16 = 16;

    fn composite(key: &[u8], ns: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        composite_key(&mut out, key, ns);
        out
    }

    fn kg_of(key: &[u8]) -> u16 {
        key_group_of(key_hash(key), KEY_GROUPS).0
    }

    /// Writes a snapshot of one value state holding `entries` (kg, composite key, value),
    /// which must be in snapshot order, and loads it into an empty store.
    fn load(entries: &[(u16, Vec<u8>, Vec<u8>)]) -> (Store, crate::Result<Loaded>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let states = vec![StateInfo {
            id: 0,
            name: "v".into(),
            kind: StateKind::Value.code(),
            flags: 0,
            ttl_millis: 0,
            entries: 0,
            payload_bytes: 0,
        }];
        let all = KeyGroupRange::all(KEY_GROUPS);
        let mut w = SnapshotWriter::create(dir.path(), 7, KEY_GROUPS, all, states).expect("create");
        for (kg, key, value) in entries {
            w.add(Entry {
                kg: *kg,
                state_id: 0,
                key,
                map_key: None,
                value,
            })
            .expect("add");
        }
        let file = w.finish().expect("finish");
        let reader = SnapshotReader::open(&file.path).expect("open");
        let mut store = Store::new(all);
        let loaded = store.load_snapshot(&reader);
        (store, loaded)
    }

    fn get<'s>(store: &'s Store, composite: &[u8]) -> Option<&'s [u8]> {
        let (key, ns) = split_composite(composite).ok()?;
        let h = if ns.is_empty() {
            key_hash(key)
        } else {
            key_hash(composite)
        };
        match &store.states.first()?.1 {
            Data::Plain(t) => t.get(h, composite),
            Data::Map(_) => None,
        }
    }

    #[test]
    fn a_load_serves_every_key_with_and_without_namespaces() {
        let mut entries = Vec::new();
        for i in 0u32..3000 {
            let key = i.to_le_bytes();
            let ns: &[u8] = if i % 3 == 0 { b"" } else { b"window-7" };
            entries.push((kg_of(&key), composite(&key, ns), i.to_be_bytes().to_vec()));
        }
        entries.sort();
        let (store, loaded) = load(&entries);
        let loaded = loaded.expect("a valid snapshot loads");
        assert_eq!(loaded.entries, 3000);
        for (_, key, value) in &entries {
            assert_eq!(get(&store, key), Some(&value[..]), "key {key:?}");
        }
        assert_eq!(get(&store, &composite(&9999u32.to_le_bytes(), b"")), None);
    }

    #[test]
    fn a_large_load_writes_entries_on_the_decoding_thread() {
        // Over 2 MiB of entries: the table takes a `ChunkWriter`, so the decoding thread writes
        // the entries and the loading thread adopts the chunks (where a second core exists).
        let mut entries = Vec::new();
        for i in 0u32..40_000 {
            let key = i.to_le_bytes();
            let ns: &[u8] = if i.is_multiple_of(5) { b"w" } else { b"" };
            let len = if i % 9_999 == 0 {
                300_000
            } else {
                (i % 200) as usize
            };
            entries.push((kg_of(&key), composite(&key, ns), vec![i as u8; len]));
        }
        entries.sort();
        let (store, loaded) = load(&entries);
        let loaded = loaded.expect("a valid snapshot loads");
        assert_eq!(loaded.entries, 40_000);
        let payload: usize = entries.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        assert_eq!(loaded.bytes, payload as u64);
        let Some((_, Data::Plain(t))) = store.states.first() else {
            panic!("the value state's table");
        };
        t.check_invariants();
        assert_eq!(t.len(), 40_000);
        for (_, key, value) in &entries {
            assert_eq!(get(&store, key), Some(&value[..]), "key {key:?}");
        }
    }

    #[test]
    fn a_key_filed_under_another_key_group_is_refused() {
        // Two copies of one key in two groups: each group's order is fine, and only the key
        // group check stops the load from storing the key twice.
        let key = composite(b"k", b"");
        let home = kg_of(b"k");
        let other = (home + 1) % KEY_GROUPS;
        let mut entries = vec![
            (home, key.clone(), b"a".to_vec()),
            (other, key, b"b".to_vec()),
        ];
        entries.sort();
        let (_, loaded) = load(&entries);
        let err = loaded.expect_err("a key in a foreign key group loads");
        let text = err.to_string();
        assert!(
            text.contains(&format!("an entry of key group {other} (state 0)"))
                && text.contains("does not hash to")
                && text.contains(".snap"),
            "{text}"
        );
    }
}
