//! Typed handles: what users program against. A handle is a registered state's id plus the types
//! of its keys, namespaces and values; operations take the [`Journal`] that owns the state.
//!
//! Handles with the default namespace `()` have short methods (`get`, `set`, ...); any namespace
//! (a window, say) is addressed with the `_in` variants (`get_in(journal, key, namespace)`). The
//! namespace is not part of the key-group hash, so all namespaces of a key stay in its group.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::record::{split_composite, Op, Reader};
use crate::error::{Error, Result};
use crate::journal::{live, Journal, Loc};
use crate::keygroup::key_hash;
use crate::state::{Codec, Data};

/// Carries a handle's types without owning values of them (and keeps handles `Send + Sync`).
type Types<T> = PhantomData<fn() -> T>;

fn invalid_stored(state: String, what: &str) -> Error {
    Error::Codec {
        state,
        source: crate::CodecError(format!("stored bytes are damaged: {what}")),
    }
}

/// Reads the live value of a located key, without refreshing its TTL.
fn read_plain<C: Codec, V: DeserializeOwned>(
    j: &Journal<C>,
    id: u32,
    loc: Loc,
) -> Result<Option<V>> {
    match j.live_value(id, loc) {
        Some(bytes) => j.decode(id, bytes).map(Some),
        None => Ok(None),
    }
}

/// For states whose TTL is refreshed on read: logs the located value again with a new expiry.
fn refresh_on_read<C: Codec>(j: &mut Journal<C>, id: u32, loc: Loc) -> Result<()> {
    if !j.ttl_of(id).is_some_and(|t| t.refresh_on_read) {
        return Ok(());
    }
    let Some(payload) = j.live_value(id, loc).map(<[u8]>::to_vec) else {
        return Ok(());
    };
    j.begin_value(id);
    j.bufs.vbuf.extend_from_slice(&payload);
    j.emit(Some(loc.hash), |b| Op::Put {
        state_id: id,
        kg: loc.kg,
        key: &b.cbuf,
        value: &b.vbuf,
    })
}

/// Every live (key, namespace) of a plain state.
fn plain_keys<C: Codec, K: DeserializeOwned, N: DeserializeOwned>(
    j: &mut Journal<C>,
    id: u32,
) -> Result<Vec<(K, N)>> {
    j.settle()?;
    let j = &*j;
    let Some(table) = j.plain(id) else {
        return Ok(Vec::new());
    };
    let (ttl, now) = j.ttl_now(id);
    let mut out = Vec::new();
    for (composite, stored) in table.iter() {
        if live(ttl, stored, now).is_none() {
            continue;
        }
        let (k, n) =
            split_composite(composite).map_err(|e| invalid_stored(String::new(), e.what))?;
        out.push((j.decode(id, k)?, j.decode(id, n)?));
    }
    Ok(out)
}

macro_rules! handle_common {
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.id).finish_non_exhaustive()
            }
        }
    };
}

/// One value per (key, namespace). Flink's `ValueState`.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut j = Journal::open(dir.path(), JournalOptions::default())?;
/// let last_seen = j.value_state::<u64, String>("last-page")?;
/// last_seen.set(&mut j, &42, &"/checkout".to_string())?;
/// assert_eq!(last_seen.get(&mut j, &42)?.as_deref(), Some("/checkout"));
/// last_seen.clear(&mut j, &42)?;
/// assert_eq!(last_seen.get(&mut j, &42)?, None);
///
/// // The same state addressed per window (a namespace):
/// let per_window = last_seen.in_namespace::<u32>();
/// per_window.set_in(&mut j, &42, &7, &"/home".to_string())?;
/// assert_eq!(per_window.get_in(&mut j, &42, &7)?.as_deref(), Some("/home"));
/// # Ok(()) }
/// ```
pub struct ValueState<K, V, N = ()> {
    id: u32,
    _types: Types<(K, V, N)>,
}
handle_common!(ValueState<K, V, N>);

impl<K, V, N> Clone for ValueState<K, V, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V, N> Copy for ValueState<K, V, N> {}

impl<K, V, N> ValueState<K, V, N> {
    pub(crate) fn new(id: u32) -> Self {
        ValueState {
            id,
            _types: PhantomData,
        }
    }

    /// The same state, addressed with namespaces of type `N2`.
    pub fn in_namespace<N2>(self) -> ValueState<K, V, N2> {
        ValueState::new(self.id)
    }
}

impl<K: Serialize, V: Serialize + DeserializeOwned, N: Serialize> ValueState<K, V, N> {
    /// The value of (key, namespace), if set and not expired.
    pub fn get_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<Option<V>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let v = read_plain(j, self.id, loc)?;
        if v.is_some() {
            refresh_on_read(j, self.id, loc)?;
        }
        Ok(v)
    }

    /// Sets the value of (key, namespace).
    pub fn set_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N, value: &V) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        j.begin_value(self.id);
        j.push_encoded(self.id, value)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Put {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            value: &b.vbuf,
        })
    }

    /// Read-modify-write: `f` gets the current value and returns the new one (`None` clears).
    /// Returns the new value.
    pub fn update_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<Option<V>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let new = f(read_plain(j, self.id, loc)?);
        let id = self.id;
        match &new {
            Some(v) => {
                j.begin_value(id);
                j.push_encoded(id, v)?;
                j.emit(Some(loc.hash), |b| Op::Put {
                    state_id: id,
                    kg: loc.kg,
                    key: &b.cbuf,
                    value: &b.vbuf,
                })?;
            }
            None => j.emit(Some(loc.hash), |b| Op::Delete {
                state_id: id,
                kg: loc.kg,
                key: &b.cbuf,
            })?,
        }
        Ok(new)
    }

    /// Removes the value of (key, namespace).
    pub fn clear_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Delete {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
        })
    }

    /// Removes every value of the state.
    pub fn clear_all<C: Codec>(&self, j: &mut Journal<C>) -> Result<()> {
        let id = self.id;
        j.emit(None, |_| Op::ClearState { state_id: id })
    }
}

impl<K: DeserializeOwned, V, N: DeserializeOwned> ValueState<K, V, N> {
    /// Every (key, namespace) with a live value, in no particular order: for timers and firing
    /// windows.
    pub fn keys<C: Codec>(&self, j: &mut Journal<C>) -> Result<Vec<(K, N)>> {
        plain_keys(j, self.id)
    }
}

impl<K: Serialize, V: Serialize + DeserializeOwned> ValueState<K, V, ()> {
    /// The value of `key`.
    pub fn get<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<Option<V>> {
        self.get_in(j, key, &())
    }

    /// Sets the value of `key`.
    pub fn set<C: Codec>(&self, j: &mut Journal<C>, key: &K, value: &V) -> Result<()> {
        self.set_in(j, key, &(), value)
    }

    /// Read-modify-write of `key` (see [`ValueState::update_in`]).
    pub fn update<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<Option<V>> {
        self.update_in(j, key, &(), f)
    }

    /// Removes the value of `key`.
    pub fn clear<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<()> {
        self.clear_in(j, key, &())
    }
}

/// A list per (key, namespace). `add` logs only the added element. Flink's `ListState`.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut j = Journal::open(dir.path(), JournalOptions::default())?;
/// let events = j.list_state::<String, u32>("events")?;
/// events.add(&mut j, &"bob".into(), &1)?;
/// events.add_all(&mut j, &"bob".into(), &[2, 3])?;
/// assert_eq!(events.get(&mut j, &"bob".into())?, vec![1, 2, 3]);
/// events.update(&mut j, &"bob".into(), &[9])?;
/// assert_eq!(events.get(&mut j, &"bob".into())?, vec![9]);
/// # Ok(()) }
/// ```
pub struct ListState<K, E, N = ()> {
    id: u32,
    _types: Types<(K, E, N)>,
}
handle_common!(ListState<K, E, N>);

impl<K, E, N> Clone for ListState<K, E, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, E, N> Copy for ListState<K, E, N> {}

impl<K, E, N> ListState<K, E, N> {
    pub(crate) fn new(id: u32) -> Self {
        ListState {
            id,
            _types: PhantomData,
        }
    }

    /// The same state, addressed with namespaces of type `N2`.
    pub fn in_namespace<N2>(self) -> ListState<K, E, N2> {
        ListState::new(self.id)
    }
}

impl<K: Serialize, E: Serialize + DeserializeOwned, N: Serialize> ListState<K, E, N> {
    /// The elements of (key, namespace), oldest first (empty if none or expired).
    pub fn get_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<Vec<E>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let Some(bytes) = j.live_value(self.id, loc) else {
            return Ok(Vec::new());
        };
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while !r.is_empty() {
            let e = r
                .bytes()
                .map_err(|e| invalid_stored(String::new(), e.what))?;
            out.push(j.decode(self.id, e)?);
        }
        refresh_on_read(j, self.id, loc)?;
        Ok(out)
    }

    /// Appends one element.
    pub fn add_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N, element: &E) -> Result<()> {
        self.add_all_in(j, key, ns, std::slice::from_ref(element))
    }

    /// Appends elements (one log op carrying just them).
    pub fn add_all_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        elements: &[E],
    ) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let loc = j.locate(self.id, key, ns)?;
        j.bufs.vbuf.clear();
        for e in elements {
            j.push_element(self.id, e)?;
        }
        let (id, expiry) = (self.id, j.list_expiry(self.id));
        j.emit(Some(loc.hash), |b| Op::Append {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            expiry,
            element: &b.vbuf,
        })
    }

    /// Replaces the list (an empty slice clears it).
    pub fn update_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        elements: &[E],
    ) -> Result<()> {
        if elements.is_empty() {
            return self.clear_in(j, key, ns);
        }
        let loc = j.locate(self.id, key, ns)?;
        j.begin_value(self.id);
        for e in elements {
            j.push_element(self.id, e)?;
        }
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Put {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            value: &b.vbuf,
        })
    }

    /// Removes the list of (key, namespace).
    pub fn clear_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Delete {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
        })
    }

    /// Removes every list of the state.
    pub fn clear_all<C: Codec>(&self, j: &mut Journal<C>) -> Result<()> {
        let id = self.id;
        j.emit(None, |_| Op::ClearState { state_id: id })
    }
}

impl<K: DeserializeOwned, E, N: DeserializeOwned> ListState<K, E, N> {
    /// Every (key, namespace) with a live list.
    pub fn keys<C: Codec>(&self, j: &mut Journal<C>) -> Result<Vec<(K, N)>> {
        plain_keys(j, self.id)
    }
}

impl<K: Serialize, E: Serialize + DeserializeOwned> ListState<K, E, ()> {
    /// The elements of `key`'s list.
    pub fn get<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<Vec<E>> {
        self.get_in(j, key, &())
    }

    /// Appends one element to `key`'s list.
    pub fn add<C: Codec>(&self, j: &mut Journal<C>, key: &K, element: &E) -> Result<()> {
        self.add_in(j, key, &(), element)
    }

    /// Appends elements to `key`'s list.
    pub fn add_all<C: Codec>(&self, j: &mut Journal<C>, key: &K, elements: &[E]) -> Result<()> {
        self.add_all_in(j, key, &(), elements)
    }

    /// Replaces `key`'s list.
    pub fn update<C: Codec>(&self, j: &mut Journal<C>, key: &K, elements: &[E]) -> Result<()> {
        self.update_in(j, key, &(), elements)
    }

    /// Removes `key`'s list.
    pub fn clear<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<()> {
        self.clear_in(j, key, &())
    }
}

/// A map per (key, namespace); entries are logged one by one. Flink's `MapState`.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut j = Journal::open(dir.path(), JournalOptions::default())?;
/// let carts = j.map_state::<u64, String, u32>("cart")?;
/// carts.put(&mut j, &7, &"apple".into(), &2)?;
/// carts.put(&mut j, &7, &"pear".into(), &1)?;
/// assert_eq!(carts.get(&mut j, &7, &"apple".into())?, Some(2));
/// assert!(carts.contains(&mut j, &7, &"pear".into())?);
/// carts.remove(&mut j, &7, &"pear".into())?;
/// assert_eq!(carts.entries(&mut j, &7)?, vec![("apple".to_string(), 2)]);
/// # Ok(()) }
/// ```
pub struct MapState<K, UK, UV, N = ()> {
    id: u32,
    _types: Types<(K, UK, UV, N)>,
}
handle_common!(MapState<K, UK, UV, N>);

impl<K, UK, UV, N> Clone for MapState<K, UK, UV, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, UK, UV, N> Copy for MapState<K, UK, UV, N> {}

impl<K, UK, UV, N> MapState<K, UK, UV, N> {
    pub(crate) fn new(id: u32) -> Self {
        MapState {
            id,
            _types: PhantomData,
        }
    }

    /// The same state, addressed with namespaces of type `N2`.
    pub fn in_namespace<N2>(self) -> MapState<K, UK, UV, N2> {
        MapState::new(self.id)
    }
}

impl<K, UK, UV, N> MapState<K, UK, UV, N>
where
    K: Serialize,
    UK: Serialize + DeserializeOwned,
    UV: Serialize + DeserializeOwned,
    N: Serialize,
{
    fn encode_map_key<C: Codec>(&self, j: &mut Journal<C>, map_key: &UK) -> Result<u64> {
        j.bufs.mbuf.clear();
        if let Err(source) = j.codec.encode(map_key, &mut j.bufs.mbuf) {
            return Err((j.codec_err(self.id))(source));
        }
        Ok(key_hash(&j.bufs.mbuf))
    }

    fn entries_table<'j, C: Codec>(
        &self,
        j: &'j Journal<C>,
        loc: Loc,
    ) -> Option<&'j crate::state::Table> {
        match j
            .settled_store()
            .states
            .get(self.id as usize)
            .map(|(_, d)| d)
        {
            Some(Data::Map(m)) => m.entries(loc.hash, &j.bufs.cbuf),
            _ => None,
        }
    }

    /// The value under `map_key` in (key, namespace)'s map.
    pub fn get_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        map_key: &UK,
    ) -> Result<Option<UV>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let mh = self.encode_map_key(j, map_key)?;
        let (ttl, now) = j.ttl_now(self.id);
        let Some(stored) = self
            .entries_table(j, loc)
            .and_then(|t| t.get(mh, &j.bufs.mbuf))
        else {
            return Ok(None);
        };
        let Some(bytes) = live(ttl, stored, now) else {
            return Ok(None);
        };
        let value: UV = j.decode(self.id, bytes)?;
        if ttl.is_some_and(|t| t.refresh_on_read) {
            self.put_in(j, key, ns, map_key, &value)?;
        }
        Ok(Some(value))
    }

    /// Whether `map_key` has a live value in (key, namespace)'s map.
    pub fn contains_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        map_key: &UK,
    ) -> Result<bool> {
        let loc = j.locate_read(self.id, key, ns)?;
        let mh = self.encode_map_key(j, map_key)?;
        let (ttl, now) = j.ttl_now(self.id);
        Ok(self
            .entries_table(j, loc)
            .and_then(|t| t.get(mh, &j.bufs.mbuf))
            .and_then(|s| live(ttl, s, now))
            .is_some())
    }

    /// Puts `map_key → value` into (key, namespace)'s map.
    pub fn put_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        map_key: &UK,
        value: &UV,
    ) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        self.encode_map_key(j, map_key)?;
        j.begin_value(self.id);
        j.push_encoded(self.id, value)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::MapPut {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            map_key: &b.mbuf,
            value: &b.vbuf,
        })
    }

    /// Removes `map_key` from (key, namespace)'s map.
    pub fn remove_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        map_key: &UK,
    ) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        self.encode_map_key(j, map_key)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::MapRemove {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            map_key: &b.mbuf,
        })
    }

    /// Every live entry of (key, namespace)'s map, in no particular order.
    pub fn entries_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let (ttl, now) = j.ttl_now(self.id);
        let mut out = Vec::new();
        if let Some(t) = self.entries_table(j, loc) {
            for (mk, stored) in t.iter() {
                if let Some(v) = live(ttl, stored, now) {
                    out.push((j.decode(self.id, mk)?, j.decode(self.id, v)?));
                }
            }
        }
        Ok(out)
    }

    /// The keys of (key, namespace)'s map.
    pub fn keys_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<Vec<UK>> {
        Ok(self
            .entries_in(j, key, ns)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Removes (key, namespace)'s whole map.
    pub fn clear_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Delete {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
        })
    }

    /// Removes every map of the state.
    pub fn clear_all<C: Codec>(&self, j: &mut Journal<C>) -> Result<()> {
        let id = self.id;
        j.emit(None, |_| Op::ClearState { state_id: id })
    }
}

impl<K: DeserializeOwned, UK, UV, N: DeserializeOwned> MapState<K, UK, UV, N> {
    /// Every (key, namespace) whose map has at least one live entry.
    pub fn keys<C: Codec>(&self, j: &mut Journal<C>) -> Result<Vec<(K, N)>> {
        j.settle()?;
        let j = &*j;
        let Some((_, Data::Map(m))) = j.settled_store().states.get(self.id as usize) else {
            return Ok(Vec::new());
        };
        let (ttl, now) = j.ttl_now(self.id);
        let mut out = Vec::new();
        for (composite, idx) in m.outer.iter() {
            let Some(entries) = <[u8; 4]>::try_from(idx)
                .ok()
                .and_then(|b| m.inner.get(u32::from_le_bytes(b) as usize))
            else {
                continue;
            };
            if !entries.iter().any(|(_, s)| live(ttl, s, now).is_some()) {
                continue;
            }
            let (k, n) =
                split_composite(composite).map_err(|e| invalid_stored(String::new(), e.what))?;
            out.push((j.decode(self.id, k)?, j.decode(self.id, n)?));
        }
        Ok(out)
    }
}

impl<K, UK, UV> MapState<K, UK, UV, ()>
where
    K: Serialize,
    UK: Serialize + DeserializeOwned,
    UV: Serialize + DeserializeOwned,
{
    /// The value under `map_key` in `key`'s map.
    pub fn get<C: Codec>(&self, j: &mut Journal<C>, key: &K, map_key: &UK) -> Result<Option<UV>> {
        self.get_in(j, key, &(), map_key)
    }

    /// Whether `key`'s map has `map_key`.
    pub fn contains<C: Codec>(&self, j: &mut Journal<C>, key: &K, map_key: &UK) -> Result<bool> {
        self.contains_in(j, key, &(), map_key)
    }

    /// Puts `map_key → value` into `key`'s map.
    pub fn put<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        map_key: &UK,
        value: &UV,
    ) -> Result<()> {
        self.put_in(j, key, &(), map_key, value)
    }

    /// Removes `map_key` from `key`'s map.
    pub fn remove<C: Codec>(&self, j: &mut Journal<C>, key: &K, map_key: &UK) -> Result<()> {
        self.remove_in(j, key, &(), map_key)
    }

    /// Every entry of `key`'s map.
    pub fn entries<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<Vec<(UK, UV)>> {
        self.entries_in(j, key, &())
    }

    /// Removes `key`'s map.
    pub fn clear<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<()> {
        self.clear_in(j, key, &())
    }
}

/// One value per (key, namespace), combined with every added value by a reduce function.
/// The reduced value is logged, so replay never calls the function. Flink's `ReducingState`.
///
/// ```
/// use statejournal::{Journal, JournalOptions};
/// # fn main() -> Result<(), statejournal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut j = Journal::open(dir.path(), JournalOptions::default())?;
/// let max_bid = j.reducing_state::<String, u64, _>("max-bid", |a: &u64, b: &u64| *a.max(b))?;
/// for bid in [5, 12, 7] {
///     max_bid.add(&mut j, &"lot-1".into(), &bid)?;
/// }
/// assert_eq!(max_bid.get(&mut j, &"lot-1".into())?, Some(12));
/// # Ok(()) }
/// ```
pub struct ReducingState<K, V, F, N = ()> {
    id: u32,
    reduce: F,
    _types: Types<(K, V, N)>,
}
handle_common!(ReducingState<K, V, F, N>);

impl<K, V, F: Clone, N> Clone for ReducingState<K, V, F, N> {
    fn clone(&self) -> Self {
        ReducingState {
            id: self.id,
            reduce: self.reduce.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V, F, N> ReducingState<K, V, F, N> {
    pub(crate) fn new(id: u32, reduce: F) -> Self {
        ReducingState {
            id,
            reduce,
            _types: PhantomData,
        }
    }

    /// The same state, addressed with namespaces of type `N2`.
    pub fn in_namespace<N2>(self) -> ReducingState<K, V, F, N2> {
        ReducingState {
            id: self.id,
            reduce: self.reduce,
            _types: PhantomData,
        }
    }
}

impl<K, V, F, N> ReducingState<K, V, F, N>
where
    K: Serialize,
    V: Serialize + DeserializeOwned,
    F: Fn(&V, &V) -> V,
    N: Serialize,
{
    /// The reduced value of (key, namespace).
    pub fn get_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<Option<V>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let v = read_plain(j, self.id, loc)?;
        if v.is_some() {
            refresh_on_read(j, self.id, loc)?;
        }
        Ok(v)
    }

    /// Reduces `value` into (key, namespace)'s value.
    pub fn add_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N, value: &V) -> Result<()> {
        let loc = j.locate_read(self.id, key, ns)?;
        let old: Option<V> = read_plain(j, self.id, loc)?;
        j.begin_value(self.id);
        match old {
            Some(o) => j.push_encoded(self.id, &(self.reduce)(&o, value))?,
            None => j.push_encoded(self.id, value)?,
        }
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Put {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            value: &b.vbuf,
        })
    }

    /// Removes (key, namespace)'s value.
    pub fn clear_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Delete {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
        })
    }
}

impl<K: DeserializeOwned, V, F, N: DeserializeOwned> ReducingState<K, V, F, N> {
    /// Every (key, namespace) with a live value.
    pub fn keys<C: Codec>(&self, j: &mut Journal<C>) -> Result<Vec<(K, N)>> {
        plain_keys(j, self.id)
    }
}

impl<K, V, F> ReducingState<K, V, F, ()>
where
    K: Serialize,
    V: Serialize + DeserializeOwned,
    F: Fn(&V, &V) -> V,
{
    /// The reduced value of `key`.
    pub fn get<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<Option<V>> {
        self.get_in(j, key, &())
    }

    /// Reduces `value` into `key`'s value.
    pub fn add<C: Codec>(&self, j: &mut Journal<C>, key: &K, value: &V) -> Result<()> {
        self.add_in(j, key, &(), value)
    }

    /// Removes `key`'s value.
    pub fn clear<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<()> {
        self.clear_in(j, key, &())
    }
}

/// How an [`AggregatingState`] folds inputs into an accumulator and reads a result from it.
pub trait AggregateFunction {
    /// What is added.
    type Input;
    /// What is stored (and logged).
    type Accumulator: Serialize + DeserializeOwned;
    /// What is read.
    type Output;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Accumulator;
    /// Folds `input` into `acc`.
    fn add(&self, input: &Self::Input, acc: &mut Self::Accumulator);
    /// The result of an accumulator.
    fn result(&self, acc: &Self::Accumulator) -> Self::Output;
}

/// An accumulator per (key, namespace), fed by an [`AggregateFunction`]. Flink's `AggregatingState`.
///
/// ```
/// use statejournal::{AggregateFunction, Journal, JournalOptions};
/// struct Average;
/// impl AggregateFunction for Average {
///     type Input = f64;
///     type Accumulator = (f64, u64);
///     type Output = f64;
///     fn create_accumulator(&self) -> (f64, u64) { (0.0, 0) }
///     fn add(&self, x: &f64, acc: &mut (f64, u64)) { acc.0 += x; acc.1 += 1; }
///     fn result(&self, acc: &(f64, u64)) -> f64 { acc.0 / acc.1 as f64 }
/// }
/// # fn main() -> Result<(), statejournal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut j = Journal::open(dir.path(), JournalOptions::default())?;
/// let latency = j.aggregating_state::<String, _>("latency", Average)?;
/// latency.add(&mut j, &"eu".into(), &10.0)?;
/// latency.add(&mut j, &"eu".into(), &20.0)?;
/// assert_eq!(latency.get(&mut j, &"eu".into())?, Some(15.0));
/// # Ok(()) }
/// ```
pub struct AggregatingState<K, A, N = ()> {
    id: u32,
    aggregate: A,
    _types: Types<(K, N)>,
}
handle_common!(AggregatingState<K, A, N>);

impl<K, A, N> AggregatingState<K, A, N> {
    pub(crate) fn new(id: u32, aggregate: A) -> Self {
        AggregatingState {
            id,
            aggregate,
            _types: PhantomData,
        }
    }

    /// The same state, addressed with namespaces of type `N2`.
    pub fn in_namespace<N2>(self) -> AggregatingState<K, A, N2> {
        AggregatingState {
            id: self.id,
            aggregate: self.aggregate,
            _types: PhantomData,
        }
    }
}

impl<K: Serialize, A: AggregateFunction, N: Serialize> AggregatingState<K, A, N> {
    /// The result for (key, namespace), if anything was added.
    pub fn get_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
    ) -> Result<Option<A::Output>> {
        let loc = j.locate_read(self.id, key, ns)?;
        let acc: Option<A::Accumulator> = read_plain(j, self.id, loc)?;
        if acc.is_some() {
            refresh_on_read(j, self.id, loc)?;
        }
        Ok(acc.map(|a| self.aggregate.result(&a)))
    }

    /// Folds `input` into (key, namespace)'s accumulator.
    pub fn add_in<C: Codec>(
        &self,
        j: &mut Journal<C>,
        key: &K,
        ns: &N,
        input: &A::Input,
    ) -> Result<()> {
        let loc = j.locate_read(self.id, key, ns)?;
        let mut acc =
            read_plain(j, self.id, loc)?.unwrap_or_else(|| self.aggregate.create_accumulator());
        self.aggregate.add(input, &mut acc);
        j.begin_value(self.id);
        j.push_encoded(self.id, &acc)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Put {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
            value: &b.vbuf,
        })
    }

    /// Removes (key, namespace)'s accumulator.
    pub fn clear_in<C: Codec>(&self, j: &mut Journal<C>, key: &K, ns: &N) -> Result<()> {
        let loc = j.locate(self.id, key, ns)?;
        let id = self.id;
        j.emit(Some(loc.hash), |b| Op::Delete {
            state_id: id,
            kg: loc.kg,
            key: &b.cbuf,
        })
    }
}

impl<K: Serialize, A: AggregateFunction> AggregatingState<K, A, ()> {
    /// The result for `key`.
    pub fn get<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<Option<A::Output>> {
        self.get_in(j, key, &())
    }

    /// Folds `input` into `key`'s accumulator.
    pub fn add<C: Codec>(&self, j: &mut Journal<C>, key: &K, input: &A::Input) -> Result<()> {
        self.add_in(j, key, &(), input)
    }

    /// Removes `key`'s accumulator.
    pub fn clear<C: Codec>(&self, j: &mut Journal<C>, key: &K) -> Result<()> {
        self.clear_in(j, key, &())
    }
}
