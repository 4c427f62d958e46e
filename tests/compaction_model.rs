//! Compaction equals replay: random histories over every state kind (namespaces, batches, clears,
//! time-to-live with a driven clock) run against journal A, which compacts, checkpoints, garbage
//! collects and reopens at random points, and against journal B, which only appends. After every
//! reopen and at the end A's visible state must equal B's. Then every retained checkpoint of A is
//! restored with `open_at_checkpoint` and compared with journal C, a fresh replay of exactly the
//! operations before that checkpoint.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::copy_dir;
use proptest::prelude::*;
use statejournal::{
    Clock, CompactionPolicy, Journal, JournalOptions, ManualClock, StateTtl, ValueState,
};

#[derive(Debug, Clone)]
enum Op {
    ValueSet(u16, u32),
    ValueClear(u16),
    ValueInc(u16),
    ListAdd(u16, u8),
    ListUpdate(u16, Vec<u8>),
    ListClear(u16),
    MapPut(u16, u8, u16),
    MapRemove(u16, u8),
    MapClear(u16),
    Reduce(u16, u64),
    NsSet(u16, u8, u32),
    TtlSet(u16, u32),
    TtlListAdd(u16, u8),
    TtlMapPut(u16, u8, u16),
    LongSet(u16, u32),
    LongClear(u16),
    ClearAllValues,
    ClearAllMaps,
    Batch(Vec<Op>),
    Advance(u16),
    // A only:
    Compact,
    Checkpoint,
    Reopen,
}

/// Few keys, so that histories touch the same key often (appends spanning a TTL, deletes then
/// puts, clears then writes).
fn key() -> impl Strategy<Value = u16> {
    0u16..8
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), any::<u32>()).prop_map(|(k, v)| Op::ValueSet(k, v)),
        key().prop_map(Op::ValueClear),
        key().prop_map(Op::ValueInc),
        (key(), any::<u8>()).prop_map(|(k, e)| Op::ListAdd(k, e)),
        (key(), proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(k, v)| Op::ListUpdate(k, v)),
        key().prop_map(Op::ListClear),
        (key(), 0u8..6, any::<u16>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
        (key(), 0u8..6).prop_map(|(k, u)| Op::MapRemove(k, u)),
        key().prop_map(Op::MapClear),
        (key(), 0u64..1000).prop_map(|(k, v)| Op::Reduce(k, v)),
        (key(), 0u8..4, any::<u32>()).prop_map(|(k, n, v)| Op::NsSet(k, n, v)),
        (key(), any::<u32>()).prop_map(|(k, v)| Op::TtlSet(k, v)),
        (key(), any::<u8>()).prop_map(|(k, e)| Op::TtlListAdd(k, e)),
        (key(), 0u8..6, any::<u16>()).prop_map(|(k, u, v)| Op::TtlMapPut(k, u, v)),
        (key(), any::<u32>()).prop_map(|(k, v)| Op::LongSet(k, v)),
        key().prop_map(Op::LongClear),
    ]
}

/// The key of the `long` state for `k`: every key shares its first 8 bytes with the others
/// (the merge's sort must look past them), and half are longer than a compaction keeps in its
/// delta entries (20 bytes), so they live in its key arena.
fn long_key(k: u16) -> String {
    if k.is_multiple_of(2) {
        format!("customer:{k}")
    } else {
        format!("customer:with-a-much-longer-name:{k}")
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => simple_op(),
        1 => Just(Op::ClearAllValues),
        1 => Just(Op::ClearAllMaps),
        3 => proptest::collection::vec(simple_op(), 1..5).prop_map(Op::Batch),
        3 => (1u16..40).prop_map(Op::Advance),
        3 => Just(Op::Compact),
        2 => Just(Op::Checkpoint),
        2 => Just(Op::Reopen),
    ]
}

struct Handles {
    value: ValueState<u16, u32>,
    list: statejournal::ListState<u16, u8>,
    map: statejournal::MapState<u16, u8, u16>,
    sum: statejournal::ReducingState<u16, u64, fn(&u64, &u64) -> u64>,
    ns: ValueState<u16, u32, u8>,
    ttl_value: ValueState<u16, u32>,
    ttl_list: statejournal::ListState<u16, u8>,
    ttl_map: statejournal::MapState<u16, u8, u16>,
    long: ValueState<String, u32>,
}

fn sum(a: &u64, b: &u64) -> u64 {
    a + b
}

const TTL: Duration = Duration::from_secs(60);

fn opts(clock: &Arc<ManualClock>) -> JournalOptions {
    JournalOptions::default()
        .segment_size(8 << 10)
        .clock(clock.clone())
        .retain_checkpoints(2)
        // Few key groups, so that keys share them: within a group the snapshot's order is the
        // keys' (and `long`'s keys share their first 8 bytes).
        .max_key_groups(4)
        .compaction(CompactionPolicy::manual().snapshot_block_size(300))
}

fn handles(j: &mut Journal) -> Handles {
    Handles {
        value: j.value_state("value").unwrap(),
        list: j.list_state("list").unwrap(),
        map: j.map_state("map").unwrap(),
        sum: j
            .reducing_state("sum", sum as fn(&u64, &u64) -> u64)
            .unwrap(),
        ns: j
            .value_state::<u16, u32>("ns")
            .unwrap()
            .in_namespace::<u8>(),
        ttl_value: j
            .with_ttl(StateTtl::after_access(TTL))
            .value_state("ttl_value")
            .unwrap(),
        ttl_list: j
            .with_ttl(StateTtl::after_write(TTL))
            .list_state("ttl_list")
            .unwrap(),
        ttl_map: j
            .with_ttl(StateTtl::after_write(TTL))
            .map_state("ttl_map")
            .unwrap(),
        long: j.value_state("long").unwrap(),
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> (Journal, Handles) {
    let mut j = Journal::open(dir, opts(clock)).unwrap();
    let h = handles(&mut j);
    (j, h)
}

fn run(j: &mut Journal, h: &Handles, clock: &ManualClock, op: &Op) -> statejournal::Result<()> {
    match op {
        Op::ValueSet(k, v) => h.value.set(j, k, v),
        Op::ValueClear(k) => h.value.clear(j, k),
        Op::ValueInc(k) => h
            .value
            .update(j, k, |v| Some(v.unwrap_or(0).wrapping_add(1)))
            .map(drop),
        Op::ListAdd(k, e) => h.list.add(j, k, e),
        Op::ListUpdate(k, es) => h.list.update(j, k, es),
        Op::ListClear(k) => h.list.clear(j, k),
        Op::MapPut(k, u, v) => h.map.put(j, k, u, v),
        Op::MapRemove(k, u) => h.map.remove(j, k, u),
        Op::MapClear(k) => h.map.clear(j, k),
        Op::Reduce(k, v) => h.sum.add(j, k, v),
        Op::NsSet(k, n, v) => h.ns.set_in(j, k, n, v),
        Op::TtlSet(k, v) => h.ttl_value.set(j, k, v),
        Op::TtlListAdd(k, e) => h.ttl_list.add(j, k, e),
        Op::TtlMapPut(k, u, v) => h.ttl_map.put(j, k, u, v),
        Op::LongSet(k, v) => h.long.set(j, &long_key(*k), v),
        Op::LongClear(k) => h.long.clear(j, &long_key(*k)),
        Op::ClearAllValues => h.value.clear_all(j),
        Op::ClearAllMaps => h.map.clear_all(j),
        Op::Batch(ops) => j.write_batch(|j| {
            for o in ops {
                run(j, h, clock, o)?;
            }
            Ok(())
        }),
        Op::Advance(secs) => {
            clock.advance(Duration::from_secs(u64::from(*secs)));
            Ok(())
        }
        Op::Compact | Op::Checkpoint | Op::Reopen => Ok(()),
    }
}

/// Everything visible, read in a fixed order (reads of the after-access state log refreshes, so
/// both journals must read identically).
#[derive(Debug, PartialEq)]
struct View {
    values: BTreeMap<u16, u32>,
    lists: BTreeMap<u16, Vec<u8>>,
    maps: BTreeMap<u16, Vec<(u8, u16)>>,
    sums: BTreeMap<u16, u64>,
    ns: BTreeMap<(u16, u8), u32>,
    ttl_values: BTreeMap<u16, u32>,
    ttl_lists: BTreeMap<u16, Vec<u8>>,
    ttl_maps: BTreeMap<u16, Vec<(u8, u16)>>,
    longs: BTreeMap<u16, u32>,
    value_keys: Vec<u16>,
    map_keys: Vec<u16>,
}

fn observe(j: &mut Journal, h: &Handles) -> View {
    let mut v = View {
        values: BTreeMap::new(),
        lists: BTreeMap::new(),
        maps: BTreeMap::new(),
        sums: BTreeMap::new(),
        ns: BTreeMap::new(),
        ttl_values: BTreeMap::new(),
        ttl_lists: BTreeMap::new(),
        ttl_maps: BTreeMap::new(),
        longs: BTreeMap::new(),
        value_keys: Vec::new(),
        map_keys: Vec::new(),
    };
    for k in 0..8u16 {
        if let Some(x) = h.value.get(j, &k).unwrap() {
            v.values.insert(k, x);
        }
        let l = h.list.get(j, &k).unwrap();
        if !l.is_empty() {
            v.lists.insert(k, l);
        }
        let mut m = h.map.entries(j, &k).unwrap();
        m.sort_unstable();
        if !m.is_empty() {
            v.maps.insert(k, m);
        }
        if let Some(s) = h.sum.get(j, &k).unwrap() {
            v.sums.insert(k, s);
        }
        for n in 0..4u8 {
            if let Some(x) = h.ns.get_in(j, &k, &n).unwrap() {
                v.ns.insert((k, n), x);
            }
        }
        if let Some(x) = h.ttl_value.get(j, &k).unwrap() {
            v.ttl_values.insert(k, x);
        }
        let l = h.ttl_list.get(j, &k).unwrap();
        if !l.is_empty() {
            v.ttl_lists.insert(k, l);
        }
        let mut m = h.ttl_map.entries(j, &k).unwrap();
        m.sort_unstable();
        if !m.is_empty() {
            v.ttl_maps.insert(k, m);
        }
        if let Some(x) = h.long.get(j, &long_key(k)).unwrap() {
            v.longs.insert(k, x);
        }
    }
    v.value_keys = h
        .value
        .keys(j)
        .unwrap()
        .into_iter()
        .map(|(k, ())| k)
        .collect();
    v.value_keys.sort_unstable();
    v.map_keys = h
        .map
        .keys(j)
        .unwrap()
        .into_iter()
        .map(|(k, ())| k)
        .collect();
    v.map_keys.sort_unstable();
    v
}

const START: u64 = 1_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn compaction_and_checkpoints_equal_replay(ops in proptest::collection::vec(op(), 1..120)) {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let (mut a, mut ha) = open(dir_a.path(), &clock);
        let (mut b, hb) = open(dir_b.path(), &clock);
        // (checkpoint id, number of ops before it, clock then)
        let mut checkpoints = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Compact => {
                    let r = a.compact().unwrap();
                    prop_assert!(r.lsn.get() >= r.base_lsn.get());
                }
                Op::Checkpoint => {
                    let c = a.checkpoint().unwrap();
                    checkpoints.push((c.id, i));
                }
                Op::Reopen => {
                    drop(a);
                    (a, ha) = open(dir_a.path(), &clock);
                    prop_assert_eq!(observe(&mut a, &ha), observe(&mut b, &hb), "after reopen at op {}", i);
                }
                Op::Advance(secs) => clock.advance(Duration::from_secs(u64::from(*secs))),
                op => {
                    run(&mut a, &ha, &clock, op).unwrap();
                    run(&mut b, &hb, &clock, op).unwrap();
                }
            }
        }
        prop_assert_eq!(observe(&mut a, &ha), observe(&mut b, &hb), "at the end");
        let retained: Vec<u64> = a.checkpoints().iter().map(|c| c.id).collect();
        prop_assert!(retained.len() <= 2);
        drop(a);
        let (mut a, ha) = open(dir_a.path(), &clock);
        prop_assert_eq!(observe(&mut a, &ha), observe(&mut b, &hb), "after the final reopen");
        drop(a);

        // Every retained checkpoint restores exactly the state after the ops before it.
        let now = clock.now_millis();
        for (id, n) in checkpoints.into_iter().filter(|(id, _)| retained.contains(id)) {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir_a.path(), copy.path());
            let restore_clock = Arc::new(ManualClock::new(now));
            let mut r = Journal::open_at_checkpoint(copy.path(), id, opts(&restore_clock)).unwrap();
            prop_assert_eq!(r.recovery().checkpoint, Some(id));
            let hr = handles(&mut r);
            let dir_c = tempfile::tempdir().unwrap();
            let replay_clock = Arc::new(ManualClock::new(START));
            let (mut c, hc) = open(dir_c.path(), &replay_clock);
            for op in &ops[..n] {
                if let Op::Reopen = op {
                    // A's reads after a reopen refreshed the after-access TTLs: so do C's.
                    observe(&mut c, &hc);
                }
                run(&mut c, &hc, &replay_clock, op).unwrap();
            }
            replay_clock.set(now);
            prop_assert_eq!(observe(&mut r, &hr), observe(&mut c, &hc), "checkpoint {}", id);
        }
    }
}

/// Found in review: when two TTL appends to one list were folded into one piece, the compaction
/// judged whether the snapshot's list had expired at the *last* append's time instead of the
/// first's, and dropped its elements.
#[test]
fn ttl_list_appends_spanning_the_ttl_keep_the_snapshot_elements() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let opts = || {
        JournalOptions::default()
            .clock(clock.clone())
            .compaction(CompactionPolicy::manual())
    };
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let l = j
        .with_ttl(StateTtl::after_write(Duration::from_secs(10)))
        .list_state::<u8, u32>("l")
        .unwrap();
    l.add(&mut j, &1, &100).unwrap(); // t = 0, expires at 10
    j.compact().unwrap();
    clock.advance(Duration::from_secs(5));
    l.add(&mut j, &1, &101).unwrap(); // t = 5: alive, expires at 15
    clock.advance(Duration::from_secs(7));
    l.add(&mut j, &1, &102).unwrap(); // t = 12: alive, expires at 22
    assert_eq!(l.get(&mut j, &1).unwrap(), [100, 101, 102]);
    j.compact().unwrap();
    drop(j);
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.recovery().replayed_records, 0, "{}", j.recovery());
    assert_eq!(l.get(&mut j, &1).unwrap(), [100, 101, 102]);
}
