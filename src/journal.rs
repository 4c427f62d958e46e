//! The facade users hold: a [`Journal`] owns a [`Log`] and the keyed state recovered from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::record::{begin_record, composite_key, put_varint, Op};
use crate::error::{Error, Result};
use crate::keygroup::{
    key_group_of, key_hash, KeyGroup, KeyGroupRange, DEFAULT_MAX_KEY_GROUPS, MAX_KEY_GROUPS,
};
use crate::log::{Durability, Log, LogOptions, Lsn, RecoveryMode, RecoveryReport};
use crate::state::{
    split_expiry, table_hash, Clock, Codec, Data, Postcard, StateKind, StateTtl, Store,
    SystemClock, Table,
};

/// Options of a [`Journal`]: a builder over [`LogOptions`] plus the keyed-state settings.
///
/// | option | default |
/// |---|---|
/// | durability | [`Durability::Buffered`] |
/// | segment size | 64 MiB |
/// | recovery mode | [`RecoveryMode::TolerateTornTail`] |
/// | max key groups | 128 (fixed when the journal is created; at most 32768) |
/// | key-group range | all of them |
/// | codec | [`Postcard`] |
/// | clock (for TTL) | [`SystemClock`] |
#[derive(Debug, Clone)]
pub struct JournalOptions<C: Codec = Postcard> {
    log: LogOptions,
    max_key_groups: u16,
    key_groups: Option<KeyGroupRange>,
    codec: C,
    clock: Arc<dyn Clock>,
}

impl Default for JournalOptions<Postcard> {
    fn default() -> Self {
        JournalOptions {
            log: LogOptions::default(),
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            key_groups: None,
            codec: Postcard,
            clock: Arc::new(SystemClock),
        }
    }
}

impl<C: Codec> JournalOptions<C> {
    /// Durability of commits (see [`Durability`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.log = self.log.durability(d);
        self
    }

    /// Size of each log segment file.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.log = self.log.segment_size(bytes);
        self
    }

    /// What recovery does with damaged log data (see [`RecoveryMode`]).
    pub fn recovery_mode(mut self, m: RecoveryMode) -> Self {
        self.log = self.log.recovery_mode(m);
        self
    }

    /// All log options at once.
    pub fn log_options(mut self, log: LogOptions) -> Self {
        self.log = log;
        self
    }

    /// Number of key groups (1..=32768). Fixed when the journal is created: reopening with
    /// another number is [`Error::KeyGroupsMismatch`].
    pub fn max_key_groups(mut self, n: u16) -> Self {
        self.max_key_groups = n;
        self
    }

    /// The key groups this journal serves (default: all). Recovery loads only these; touching a
    /// key of another group is [`Error::KeyGroupNotOwned`].
    pub fn key_group_range(mut self, range: KeyGroupRange) -> Self {
        self.key_groups = Some(range);
        self
    }

    /// The codec for keys, namespaces and values.
    pub fn codec<C2: Codec>(self, codec: C2) -> JournalOptions<C2> {
        JournalOptions {
            log: self.log,
            max_key_groups: self.max_key_groups,
            key_groups: self.key_groups,
            codec,
            clock: self.clock,
        }
    }

    /// The clock TTL expiry is measured with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Sizes of a journal's in-memory state (see [`Journal::state_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Live table entries (a map's entries count one each, plus one per map).
    pub entries: u64,
    /// Bytes of their keys and values (as stored: composite keys, encoded values).
    pub payload_bytes: u64,
    /// Bytes the tables allocated (slots, arenas, free space).
    pub heap_bytes: u64,
}

/// Scratch buffers an op borrows from while it is encoded and applied.
#[derive(Debug, Default)]
pub(crate) struct Bufs {
    /// Composite key (`len key namespace`) of the last `locate`.
    pub cbuf: Vec<u8>,
    /// Stored value (or list element, or map value) being written.
    pub vbuf: Vec<u8>,
    /// Map key being written.
    pub mbuf: Vec<u8>,
}

/// Where a key lives: its key group and its table hash (the composite key is in `Bufs::cbuf`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    pub kg: u16,
    pub hash: u64,
}

/// Keyed state made durable by a log: the state backend of one stream-processing task.
///
/// Mutations take `&mut self`: a journal has one owner, like a Flink task's keyed backend, so the
/// hot path takes no lock. Scale across cores with several journals over disjoint key-group
/// ranges. Every mutation is one log record (a [write batch](Journal::write_batch) is one record
/// for many); [`commit`](Journal::commit) makes them durable as the [`Durability`] mode says.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let mut journal = Journal::open(dir.path(), JournalOptions::default())?;
/// let clicks = journal.value_state::<String, u64>("clicks")?;
/// clicks.set(&mut journal, &"alice".to_string(), &3)?;
/// clicks.update(&mut journal, &"alice".to_string(), |n| Some(n.unwrap_or(0) + 1))?;
/// journal.commit()?;
/// drop(journal);
///
/// let mut journal = Journal::open(dir.path(), JournalOptions::default())?;
/// let clicks = journal.value_state::<String, u64>("clicks")?;
/// assert_eq!(clicks.get(&mut journal, &"alice".to_string())?, Some(4));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Journal<C: Codec = Postcard> {
    pub(crate) log: Log,
    pub(crate) store: Store,
    pub(crate) codec: C,
    pub(crate) clock: Arc<dyn Clock>,
    max_key_groups: u16,
    dir: PathBuf,
    /// Encoded key.
    kbuf: Vec<u8>,
    /// Encoded namespace.
    nbuf: Vec<u8>,
    /// The buffers ops are built from.
    pub(crate) bufs: Bufs,
    /// A single-op record being written.
    rec: Vec<u8>,
    /// The record of the open write batch.
    batch: Option<Vec<u8>>,
}

impl Journal<Postcard> {
    /// Opens (or creates) the journal in `dir` and recovers its state: the log is replayed into
    /// the in-memory tables, loading only the key groups this journal serves.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions<Postcard>) -> Result<Self> {
        Self::open_with(dir, opts)
    }
}

impl<C: Codec> Journal<C> {
    /// [`Journal::open`] with any codec.
    pub fn open_with(dir: impl AsRef<Path>, opts: JournalOptions<C>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let max = opts.max_key_groups;
        if max == 0 || max > MAX_KEY_GROUPS {
            return Err(Error::InvalidOptions {
                name: "max_key_groups",
                reason: format!("{max} is not between 1 and {MAX_KEY_GROUPS}"),
            });
        }
        let range = opts.key_groups.unwrap_or(KeyGroupRange::all(max));
        if range.end() > max {
            return Err(Error::InvalidOptions {
                name: "key_group_range",
                reason: format!("{range} reaches past the {max} key groups"),
            });
        }
        let log = Log::open(&dir, opts.log)?;
        let mut store = Store::new(range);
        let mut first = true;
        for rec in log.read_from(Lsn(0)) {
            let rec = rec?;
            let lsn = rec.lsn.get();
            let invalid = |detail: String| Error::InvalidRecord {
                path: dir.clone(),
                lsn,
                detail,
            };
            store
                .apply(&rec.payload)
                .map_err(|e| invalid(e.to_string()))?;
            if first && store.max_key_groups.is_none() {
                return Err(invalid(
                    "the first record of a journal is its Init record".into(),
                ));
            }
            first = false;
        }
        let mut journal = Journal {
            log,
            store,
            codec: opts.codec,
            clock: opts.clock,
            max_key_groups: max,
            dir,
            kbuf: Vec::new(),
            nbuf: Vec::new(),
            bufs: Bufs::default(),
            rec: Vec::new(),
            batch: None,
        };
        match journal.store.max_key_groups {
            Some(stored) if stored != max => {
                return Err(Error::KeyGroupsMismatch {
                    path: journal.dir.clone(),
                    stored,
                    requested: max,
                })
            }
            Some(_) => {}
            None => {
                begin_record(&mut journal.rec);
                Op::Init {
                    max_key_groups: max,
                }
                .encode(&mut journal.rec);
                journal.commit_rec()?;
            }
        }
        Ok(journal)
    }

    /// What log recovery found and did when the journal was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.log.recovery_report()
    }

    /// The underlying log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Sizes of the in-memory state: live entries, their key and value bytes, and the bytes the
    /// tables allocate for them.
    pub fn state_stats(&self) -> StateStats {
        let mut st = StateStats::default();
        let mut add = |t: &Table| {
            st.entries += t.len() as u64;
            st.payload_bytes += t.payload_bytes() as u64;
            st.heap_bytes += t.heap_bytes() as u64;
        };
        for (_, data) in &self.store.states {
            match data {
                Data::Plain(t) => add(t),
                Data::Map(m) => {
                    add(&m.outer);
                    m.inner.iter().for_each(&mut add);
                }
            }
        }
        st
    }

    /// The journal's number of key groups.
    pub fn max_key_groups(&self) -> u16 {
        self.max_key_groups
    }

    /// The key groups this journal serves.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.store.range
    }

    /// The key group of `key` (as this journal's codec encodes it).
    pub fn key_group<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<KeyGroup> {
        self.kbuf.clear();
        self.codec
            .encode(key, &mut self.kbuf)
            .map_err(|source| Error::Codec {
                state: String::new(),
                source,
            })?;
        Ok(key_group_of(key_hash(&self.kbuf), self.max_key_groups))
    }

    /// Makes mutations durable as the durability mode promises; returns the durable LSN.
    pub fn commit(&mut self) -> Result<Lsn> {
        self.log.commit()
    }

    /// Flushes every mutation to stable storage, whatever the durability mode.
    pub fn sync(&mut self) -> Result<Lsn> {
        self.log.sync()
    }

    /// Flushes and closes.
    pub fn close(self) -> Result<()> {
        self.log.close()
    }

    /// Runs `f` as one atomic write batch: every mutation `f` makes is logged as a single record,
    /// so after any crash either all of them are there or none. Mutations are applied to the state
    /// when `f` returns `Ok` (reads inside `f` see the state from before the batch); if `f`
    /// returns an error, nothing is logged or applied. States must be registered before.
    pub fn write_batch<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if self.batch.is_some() {
            return f(self); // nested: part of the enclosing batch
        }
        let mut buf = std::mem::take(&mut self.rec);
        begin_record(&mut buf);
        self.batch = Some(buf);
        let result = f(self);
        let buf = self.batch.take().unwrap_or_default();
        self.rec = buf;
        let value = result?;
        if self.rec.len() > 1 {
            self.commit_rec()?;
        }
        Ok(value)
    }

    /// A registrar that registers states with a time-to-live.
    pub fn with_ttl(&mut self, ttl: StateTtl) -> Registrar<'_, C> {
        Registrar {
            journal: self,
            ttl: Some(ttl),
        }
    }

    /// Registers (or opens) a [`ValueState`](crate::ValueState).
    pub fn value_state<K, V>(&mut self, name: &str) -> Result<crate::ValueState<K, V>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .value_state(name)
    }

    /// Registers (or opens) a [`ListState`](crate::ListState).
    pub fn list_state<K, E>(&mut self, name: &str) -> Result<crate::ListState<K, E>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .list_state(name)
    }

    /// Registers (or opens) a [`MapState`](crate::MapState).
    pub fn map_state<K, UK, UV>(&mut self, name: &str) -> Result<crate::MapState<K, UK, UV>> {
        Registrar {
            journal: self,
            ttl: None,
        }
        .map_state(name)
    }

    /// Registers (or opens) a [`ReducingState`](crate::ReducingState) combining values with `reduce`.
    pub fn reducing_state<K, V, F>(
        &mut self,
        name: &str,
        reduce: F,
    ) -> Result<crate::ReducingState<K, V, F>>
    where
        F: Fn(&V, &V) -> V,
    {
        Registrar {
            journal: self,
            ttl: None,
        }
        .reducing_state(name, reduce)
    }

    /// Registers (or opens) an [`AggregatingState`](crate::AggregatingState) fed by `aggregate`.
    pub fn aggregating_state<K, A>(
        &mut self,
        name: &str,
        aggregate: A,
    ) -> Result<crate::AggregatingState<K, A>>
    where
        A: crate::AggregateFunction,
    {
        Registrar {
            journal: self,
            ttl: None,
        }
        .aggregating_state(name, aggregate)
    }

    pub(crate) fn register(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtl>,
    ) -> Result<u32> {
        if self.batch.is_some() {
            return Err(Error::InvalidOptions {
                name: "state registration",
                reason: format!(
                    "state {name:?} must be registered before the write batch, not inside it"
                ),
            });
        }
        let id = match self.store.by_name.get(name) {
            Some(&id) => {
                let meta = &self.store.states[id as usize].0;
                if meta.kind != kind {
                    return Err(Error::StateConflict {
                        name: name.to_string(),
                        existing: meta.kind,
                        requested: kind,
                    });
                }
                if meta.ttl == ttl {
                    return Ok(id);
                }
                id // the TTL changes: registered again
            }
            None => self.store.states.len() as u32,
        };
        begin_record(&mut self.rec);
        Op::Register {
            state_id: id,
            kind: kind.code(),
            flags: u8::from(ttl.is_some_and(|t| t.refresh_on_read)),
            ttl_millis: ttl.map_or(0, |t| t.ttl_millis),
            name: name.as_bytes(),
        }
        .encode(&mut self.rec);
        self.commit_rec()?;
        Ok(id)
    }

    /// Appends the record in `rec` to the log and applies it.
    fn commit_rec(&mut self) -> Result<()> {
        let lsn = self.log.append(&self.rec)?;
        self.store
            .apply(&self.rec)
            .map_err(|e| Error::InvalidRecord {
                path: self.dir.clone(),
                lsn: lsn.get(),
                detail: e.to_string(),
            })
    }

    /// Emits one op: into the open batch, or as its own record — appended to the log, then
    /// applied to the tables (with the table hash the caller already computed).
    pub(crate) fn emit(
        &mut self,
        hash: Option<u64>,
        op: impl FnOnce(&Bufs) -> Op<'_>,
    ) -> Result<()> {
        let op = op(&self.bufs);
        if let Some(batch) = self.batch.as_mut() {
            op.encode(batch);
            return Ok(());
        }
        begin_record(&mut self.rec);
        op.encode(&mut self.rec);
        let lsn = self.log.append(&self.rec)?;
        self.store
            .apply_op(op, hash)
            .map_err(|e| Error::InvalidRecord {
                path: self.dir.clone(),
                lsn: lsn.get(),
                detail: e.to_string(),
            })
    }

    fn state_name(&self, id: u32) -> String {
        self.store
            .states
            .get(id as usize)
            .map(|(m, _)| m.name.clone())
            .unwrap_or_default()
    }

    pub(crate) fn codec_err(&self, id: u32) -> impl Fn(crate::CodecError) -> Error + '_ {
        move |source| Error::Codec {
            state: self.state_name(id),
            source,
        }
    }

    /// Encodes `key` and `ns` into the composite-key buffer and finds the key's group.
    pub(crate) fn locate<K, N>(&mut self, id: u32, key: &K, ns: &N) -> Result<Loc>
    where
        K: Serialize + ?Sized,
        N: Serialize + ?Sized,
    {
        self.kbuf.clear();
        self.nbuf.clear();
        if let Err(source) = self
            .codec
            .encode(key, &mut self.kbuf)
            .and_then(|()| self.codec.encode(ns, &mut self.nbuf))
        {
            return Err(Error::Codec {
                state: self.state_name(id),
                source,
            });
        }
        let kh = key_hash(&self.kbuf);
        let kg = key_group_of(kh, self.max_key_groups);
        if !self.store.range.contains(kg) {
            return Err(Error::KeyGroupNotOwned {
                key_group: kg,
                range: self.store.range,
            });
        }
        let ns_start = composite_key(&mut self.bufs.cbuf, &self.kbuf, &self.nbuf);
        Ok(Loc {
            kg: kg.0,
            hash: table_hash(&self.bufs.cbuf, ns_start, kh),
        })
    }

    pub(crate) fn ttl_of(&self, id: u32) -> Option<StateTtl> {
        self.store.states.get(id as usize).and_then(|(m, _)| m.ttl)
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// The plain table of a state.
    pub(crate) fn plain(&self, id: u32) -> Option<&Table> {
        match self.store.states.get(id as usize).map(|(_, d)| d) {
            Some(Data::Plain(t)) => Some(t),
            _ => None,
        }
    }

    /// The stored bytes of the located key, without an expired TTL prefix, if live.
    pub(crate) fn live_value(&self, id: u32, loc: Loc) -> Option<&[u8]> {
        let stored = self.plain(id)?.get(loc.hash, &self.bufs.cbuf)?;
        live(self.ttl_of(id), stored, self.now())
    }

    /// Starts `vbuf` as a stored value: the expiry prefix when the state has a TTL.
    pub(crate) fn begin_value(&mut self, id: u32) {
        self.bufs.vbuf.clear();
        if let Some(ttl) = self.ttl_of(id) {
            let expiry = self.now().saturating_add(ttl.ttl_millis);
            self.bufs.vbuf.extend_from_slice(&expiry.to_le_bytes());
        }
    }

    /// Encodes `value` onto `vbuf`.
    pub(crate) fn push_encoded<T: Serialize + ?Sized>(&mut self, id: u32, value: &T) -> Result<()> {
        let r = self.codec.encode(value, &mut self.bufs.vbuf);
        r.map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    /// Encodes a list element onto `vbuf` as `len:v32 bytes`.
    pub(crate) fn push_element<T: Serialize + ?Sized>(&mut self, id: u32, value: &T) -> Result<()> {
        let mut tmp = std::mem::take(&mut self.nbuf);
        tmp.clear();
        let r = self.codec.encode(value, &mut tmp);
        if r.is_ok() {
            put_varint(&mut self.bufs.vbuf, tmp.len() as u64);
            self.bufs.vbuf.extend_from_slice(&tmp);
        }
        self.nbuf = tmp;
        r.map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, id: u32, bytes: &[u8]) -> Result<T> {
        self.codec.decode(bytes).map_err(|source| Error::Codec {
            state: self.state_name(id),
            source,
        })
    }

    /// The expiry a list append carries (0 without TTL).
    pub(crate) fn list_expiry(&self, id: u32) -> u64 {
        self.ttl_of(id)
            .map_or(0, |t| self.now().saturating_add(t.ttl_millis))
    }
}

/// A stored value's bytes without its expiry prefix, or `None` if it has expired.
pub(crate) fn live(ttl: Option<StateTtl>, stored: &[u8], now: u64) -> Option<&[u8]> {
    match ttl {
        None => Some(stored),
        Some(_) => {
            let (expiry, rest) = split_expiry(stored)?;
            (expiry > now).then_some(rest)
        }
    }
}

/// Registers states with a time-to-live (see [`Journal::with_ttl`]).
#[derive(Debug)]
pub struct Registrar<'j, C: Codec> {
    journal: &'j mut Journal<C>,
    ttl: Option<StateTtl>,
}

impl<C: Codec> Registrar<'_, C> {
    /// Registers (or opens) a [`ValueState`](crate::ValueState).
    pub fn value_state<K, V>(self, name: &str) -> Result<crate::ValueState<K, V>> {
        let id = self.journal.register(name, StateKind::Value, self.ttl)?;
        Ok(crate::ValueState::new(id))
    }

    /// Registers (or opens) a [`ListState`](crate::ListState).
    pub fn list_state<K, E>(self, name: &str) -> Result<crate::ListState<K, E>> {
        let id = self.journal.register(name, StateKind::List, self.ttl)?;
        Ok(crate::ListState::new(id))
    }

    /// Registers (or opens) a [`MapState`](crate::MapState).
    pub fn map_state<K, UK, UV>(self, name: &str) -> Result<crate::MapState<K, UK, UV>> {
        let id = self.journal.register(name, StateKind::Map, self.ttl)?;
        Ok(crate::MapState::new(id))
    }

    /// Registers (or opens) a [`ReducingState`](crate::ReducingState).
    pub fn reducing_state<K, V, F>(
        self,
        name: &str,
        reduce: F,
    ) -> Result<crate::ReducingState<K, V, F>>
    where
        F: Fn(&V, &V) -> V,
    {
        let id = self.journal.register(name, StateKind::Reducing, self.ttl)?;
        Ok(crate::ReducingState::new(id, reduce))
    }

    /// Registers (or opens) an [`AggregatingState`](crate::AggregatingState).
    pub fn aggregating_state<K, A>(
        self,
        name: &str,
        aggregate: A,
    ) -> Result<crate::AggregatingState<K, A>>
    where
        A: crate::AggregateFunction,
    {
        let id = self
            .journal
            .register(name, StateKind::Aggregating, self.ttl)?;
        Ok(crate::AggregatingState::new(id, aggregate))
    }
}
