//! Model-based property test of keyed state: random operation sequences over every state kind
//! (with namespaces, write batches and whole-state clears), with random reopen points, compared
//! with plain `BTreeMap` models after every reopen, at random points between writes, and at the
//! end.

use std::collections::BTreeMap;

use proptest::prelude::*;
use statejournal::{AggregateFunction, Journal, JournalOptions};

#[derive(Debug, Clone)]
enum Op {
    ValueSet(u16, u32),
    ValueClear(u16),
    ValueInc(u16),
    ListAdd(u16, u8),
    ListAddAll(u16, Vec<u8>),
    ListUpdate(u16, Vec<u8>),
    ListClear(u16),
    MapPut(u16, u8, u16),
    MapRemove(u16, u8),
    MapClear(u16),
    Reduce(u16, u64),
    Count(u16),
    NsSet(u16, u8, u32),
    NsClear(u16, u8),
    ClearAllValues,
    Batch(Vec<Op>),
    Reopen,
    /// Read everything back without reopening: the reads must see the writes just made,
    /// including those whose table update the journal still holds back.
    Check,
}

fn key() -> impl Strategy<Value = u16> {
    0u16..24
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), any::<u32>()).prop_map(|(k, v)| Op::ValueSet(k, v)),
        key().prop_map(Op::ValueClear),
        key().prop_map(Op::ValueInc),
        (key(), any::<u8>()).prop_map(|(k, e)| Op::ListAdd(k, e)),
        (key(), proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(k, v)| Op::ListAddAll(k, v)),
        (key(), proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(k, v)| Op::ListUpdate(k, v)),
        key().prop_map(Op::ListClear),
        (key(), 0u8..6, any::<u16>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
        (key(), 0u8..6).prop_map(|(k, u)| Op::MapRemove(k, u)),
        key().prop_map(Op::MapClear),
        (key(), 0u64..1000).prop_map(|(k, v)| Op::Reduce(k, v)),
        key().prop_map(Op::Count),
        (key(), 0u8..4, any::<u32>()).prop_map(|(k, n, v)| Op::NsSet(k, n, v)),
        (key(), 0u8..4).prop_map(|(k, n)| Op::NsClear(k, n)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => simple_op(),
        1 => Just(Op::ClearAllValues),
        2 => proptest::collection::vec(simple_op(), 1..6).prop_map(Op::Batch),
        2 => Just(Op::Reopen),
        2 => Just(Op::Check),
    ]
}

struct Count;
impl AggregateFunction for Count {
    type Input = ();
    type Accumulator = u64;
    type Output = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: &(), acc: &mut u64) {
        *acc += 1;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

#[derive(Default, Debug, Clone, PartialEq)]
struct Model {
    values: BTreeMap<u16, u32>,
    lists: BTreeMap<u16, Vec<u8>>,
    maps: BTreeMap<u16, BTreeMap<u8, u16>>,
    sums: BTreeMap<u16, u64>,
    counts: BTreeMap<u16, u64>,
    ns: BTreeMap<(u16, u8), u32>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::ValueSet(k, v) => {
                self.values.insert(*k, *v);
            }
            Op::ValueClear(k) => {
                self.values.remove(k);
            }
            Op::ValueInc(k) => {
                let v = self.values.get(k).copied().unwrap_or(0).wrapping_add(1);
                self.values.insert(*k, v);
            }
            Op::ListAdd(k, e) => self.lists.entry(*k).or_default().push(*e),
            Op::ListAddAll(k, es) => {
                if !es.is_empty() {
                    self.lists.entry(*k).or_default().extend(es)
                }
            }
            Op::ListUpdate(k, es) => {
                if es.is_empty() {
                    self.lists.remove(k);
                } else {
                    self.lists.insert(*k, es.clone());
                }
            }
            Op::ListClear(k) => {
                self.lists.remove(k);
            }
            Op::MapPut(k, u, v) => {
                self.maps.entry(*k).or_default().insert(*u, *v);
            }
            Op::MapRemove(k, u) => {
                if let Some(m) = self.maps.get_mut(k) {
                    m.remove(u);
                    if m.is_empty() {
                        self.maps.remove(k);
                    }
                }
            }
            Op::MapClear(k) => {
                self.maps.remove(k);
            }
            Op::Reduce(k, v) => *self.sums.entry(*k).or_default() += v,
            Op::Count(k) => *self.counts.entry(*k).or_default() += 1,
            Op::NsSet(k, n, v) => {
                self.ns.insert((*k, *n), *v);
            }
            Op::NsClear(k, n) => {
                self.ns.remove(&(*k, *n));
            }
            Op::ClearAllValues => self.values.clear(),
            Op::Batch(ops) => {
                // Reads inside a batch see the state from before it: replay that semantics.
                let before = self.clone();
                for o in ops {
                    match o {
                        Op::ValueInc(k) => {
                            let v = before.values.get(k).copied().unwrap_or(0).wrapping_add(1);
                            self.values.insert(*k, v);
                        }
                        Op::Reduce(k, v) => {
                            self.sums
                                .insert(*k, before.sums.get(k).copied().unwrap_or(0) + v);
                        }
                        Op::Count(k) => {
                            self.counts
                                .insert(*k, before.counts.get(k).copied().unwrap_or(0) + 1);
                        }
                        other => self.apply(other),
                    }
                }
            }
            Op::Reopen | Op::Check => {}
        }
    }
}

struct Handles {
    value: statejournal::ValueState<u16, u32>,
    list: statejournal::ListState<u16, u8>,
    map: statejournal::MapState<u16, u8, u16>,
    sum: statejournal::ReducingState<u16, u64, fn(&u64, &u64) -> u64>,
    count: statejournal::AggregatingState<u16, Count>,
    ns: statejournal::ValueState<u16, u32, u8>,
}

fn sum(a: &u64, b: &u64) -> u64 {
    a + b
}

fn open(dir: &std::path::Path) -> (Journal, Handles) {
    let mut j = Journal::open(dir, JournalOptions::default().segment_size(64 << 10)).unwrap();
    let h = Handles {
        value: j.value_state("value").unwrap(),
        list: j.list_state("list").unwrap(),
        map: j.map_state("map").unwrap(),
        sum: j
            .reducing_state("sum", sum as fn(&u64, &u64) -> u64)
            .unwrap(),
        count: j.aggregating_state("count", Count).unwrap(),
        ns: j
            .value_state::<u16, u32>("ns")
            .unwrap()
            .in_namespace::<u8>(),
    };
    (j, h)
}

fn run(j: &mut Journal, h: &Handles, op: &Op) -> statejournal::Result<()> {
    match op {
        Op::ValueSet(k, v) => h.value.set(j, k, v),
        Op::ValueClear(k) => h.value.clear(j, k),
        Op::ValueInc(k) => h
            .value
            .update(j, k, |v| Some(v.unwrap_or(0).wrapping_add(1)))
            .map(drop),
        Op::ListAdd(k, e) => h.list.add(j, k, e),
        Op::ListAddAll(k, es) => h.list.add_all(j, k, es),
        Op::ListUpdate(k, es) => h.list.update(j, k, es),
        Op::ListClear(k) => h.list.clear(j, k),
        Op::MapPut(k, u, v) => h.map.put(j, k, u, v),
        Op::MapRemove(k, u) => h.map.remove(j, k, u),
        Op::MapClear(k) => h.map.clear(j, k),
        Op::Reduce(k, v) => h.sum.add(j, k, v),
        Op::Count(k) => h.count.add(j, k, &()),
        Op::NsSet(k, n, v) => h.ns.set_in(j, k, n, v),
        Op::NsClear(k, n) => h.ns.clear_in(j, k, n),
        Op::ClearAllValues => h.value.clear_all(j),
        Op::Batch(ops) => j.write_batch(|j| {
            for o in ops {
                run(j, h, o)?;
            }
            Ok(())
        }),
        Op::Reopen | Op::Check => Ok(()),
    }
}

fn observe(j: &mut Journal, h: &Handles) -> Model {
    let mut m = Model::default();
    for k in 0..24u16 {
        if let Some(v) = h.value.get(j, &k).unwrap() {
            m.values.insert(k, v);
        }
        let l = h.list.get(j, &k).unwrap();
        if !l.is_empty() {
            m.lists.insert(k, l);
        }
        let entries: BTreeMap<u8, u16> = h.map.entries(j, &k).unwrap().into_iter().collect();
        for u in 0..6u8 {
            assert_eq!(h.map.get(j, &k, &u).unwrap(), entries.get(&u).copied());
        }
        if !entries.is_empty() {
            m.maps.insert(k, entries);
        }
        if let Some(s) = h.sum.get(j, &k).unwrap() {
            m.sums.insert(k, s);
        }
        if let Some(c) = h.count.get(j, &k).unwrap() {
            m.counts.insert(k, c);
        }
        for n in 0..4u8 {
            if let Some(v) = h.ns.get_in(j, &k, &n).unwrap() {
                m.ns.insert((k, n), v);
            }
        }
    }
    // Key iteration agrees with point reads.
    let mut keys: Vec<u16> = h
        .value
        .keys(j)
        .unwrap()
        .into_iter()
        .map(|(k, ())| k)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, m.values.keys().copied().collect::<Vec<_>>());
    let mut ns_keys = h.ns.keys(j).unwrap();
    ns_keys.sort_unstable();
    assert_eq!(ns_keys, m.ns.keys().copied().collect::<Vec<_>>());
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn keyed_state_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut h) = open(dir.path());
        let mut model = Model::default();
        for op in &ops {
            if let Op::Reopen = op {
                drop(j);
                (j, h) = open(dir.path());
                prop_assert_eq!(&observe(&mut j, &h), &model, "after reopen");
                continue;
            }
            if let Op::Check = op {
                prop_assert_eq!(&observe(&mut j, &h), &model, "without a reopen");
                continue;
            }
            run(&mut j, &h, op).unwrap();
            model.apply(op);
        }
        prop_assert_eq!(&observe(&mut j, &h), &model);
        drop(j);
        let (mut j, h) = open(dir.path());
        prop_assert_eq!(&observe(&mut j, &h), &model, "after the final reopen");
    }
}
