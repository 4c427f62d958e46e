//! The keyed-state table (`src/state/table.rs`) against std `HashMap<Vec<u8>, Vec<u8>>`, the
//! structure a naive state backend would use ("the floor"), in the same run.
//!
//! The table is crate-private and depends only on `std`, so this benchmark compiles the file
//! itself with `#[path]`.
//!
//! * Criterion first times single operations on structures preloaded with 1 M keys:
//!   `update/{table,hashmap}`, `get/{table,hashmap}`, `append/{table,hashmap}`.
//! * Then `main` runs the workloads of the summary, alternating the contenders in bursts of
//!   1 M operations so that a change of the machine's load hits both alike:
//!   - **update**: 10 M upserts of 100-byte values in random key order over 1 M distinct
//!     16-byte keys (preloaded). Table: `insert(hash, key, value)`. Floor: `HashMap::insert(
//!     key.to_vec(), value.to_vec())`. For reference also the floor's best case, `get_mut` and an
//!     overwrite in place (no allocation, not what a backend storing owned values does).
//!   - **get**: 10 M lookups of present keys in random order.
//!   - **append**: 10 M appends of 8-byte elements to 100 k keys in random order. Table:
//!     `append`. Floor: `get_mut` + `extend_from_slice` (inserting a new key when absent).
//!   - **build**: inserting the 1 M keys into an empty structure, and into
//!     `Table::with_capacity`.
//!   - **pauses**: the longest single operation while growing to 1 M keys, and while
//!     rewriting 1 M values with sizes that do not fit in place (relocation and compaction);
//!     then while growing to 8 M keys, against `HashMap` (which rehashes all at once): the
//!     table's slot index grows a bounded segment at a time.
//!   - **memory**: heap bytes beyond the keys' and values' bytes, per entry, at 1 M entries:
//!     `Table::heap_bytes() - payload_bytes()`, checked against a counting global allocator
//!     plus the table's anonymously mapped arena chunks (`Table::mapped_bytes`, which the
//!     allocator does not see), and the allocator also measures the floor. (The allocator counts
//!     only while structures are built for this measurement; while timing, it costs one relaxed
//!     load per allocation.)
//!
//! Hashing: the table takes the caller's 64-bit hash of each key; as in the library, it is XXH3-64
//! of the encoded key (`xxhash_rust::xxh3::xxh3_64`, what `keygroup::key_hash` computes), computed
//! for every operation inside the timed loop. `HashMap` uses std's default hasher (SipHash-1-3),
//! which is part of the floor's cost. Keys and the random order come from splitmix64.
//!
//! Environment: `SJ_BENCH_QUICK=1` divides every operation count by 10. Under `cargo test
//! --benches` (or `--test`) everything runs once at 1/1000 size.

// A counting global allocator for the memory figures; the blocks say why each call is sound.
#![allow(unsafe_code)]

// `cargo clippy --all-targets` and `cargo test --benches` compile this target with `cfg(test)`
// but without running its `#[test]`s, so the table's test module's imports go unused here.
// The table uses only some of the hints.
#[path = "../src/hint.rs"]
#[allow(dead_code, unused_imports)]
mod hint;
#[path = "../src/state/table.rs"]
#[allow(dead_code, unused_imports)]
mod table;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use table::Table;

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// Delegates to the system allocator and, while [`COUNTING`] is set, tracks net bytes.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through it) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for `dealloc`, and the caller guarantees `new_size` is valid for `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Net bytes allocated while `f` runs with counting on, and its result.
fn counted<T>(f: impl FnOnce() -> T) -> (isize, T) {
    ALLOCATED.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let out = f();
    COUNTING.store(false, Ordering::Relaxed);
    (ALLOCATED.load(Ordering::Relaxed), out)
}

// ---------------------------------------------------------------------------------------------
// Configuration, keys, hashes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Test,
    List,
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    keys: u64,
    updates: u64,
    gets: u64,
    append_keys: u64,
    appends: u64,
    burst: u64,
    /// Keys of the large growth-pause run (where a whole-array rehash would take long).
    grow_keys: u64,
}

fn mode() -> Mode {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        Mode::List
    } else if has("--test") || !has("--bench") {
        Mode::Test
    } else if std::env::var("SJ_BENCH_QUICK").is_ok_and(|v| v == "1") {
        Mode::Quick
    } else {
        Mode::Full
    }
}

fn sizes(mode: Mode) -> Sizes {
    let div = match mode {
        Mode::Full | Mode::List => 1,
        Mode::Quick => 10,
        Mode::Test => 1000,
    };
    Sizes {
        keys: 1_000_000 / div.min(100),
        updates: 10_000_000 / div,
        gets: 10_000_000 / div,
        append_keys: 100_000 / div.min(100),
        appends: 10_000_000 / div,
        burst: 1_000_000 / div,
        grow_keys: 8_000_000 / div,
    }
}

const VALUE_LEN: usize = 100;
const ELEMENT: usize = 8;

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key hash the library uses (`keygroup::key_hash`): XXH3-64 of the encoded key.
fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Key `i`: 16 bytes (the index and a scrambled copy, like an encoded key and namespace).
fn key(i: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&mix(i ^ 0xA5A5).to_le_bytes());
    k
}

/// A small, fast PRNG (splitmix64 sequence) for the random key order.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ((u128::from(mix(self.0)) * u128::from(n)) >> 64) as u64
    }
}

type Map = HashMap<Vec<u8>, Vec<u8>>;

// ---------------------------------------------------------------------------------------------
// Workloads: each runs `ops` operations and returns nothing but side effects
// ---------------------------------------------------------------------------------------------

fn value_for(n: u64) -> [u8; VALUE_LEN] {
    let mut v = [0x5A; VALUE_LEN];
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

fn table_updates(t: &mut Table, rng: &mut Rng, keys: u64, ops: u64) {
    let mut value = value_for(0);
    for n in 0..ops {
        let k = key(rng.below(keys));
        value[..8].copy_from_slice(&n.to_le_bytes());
        t.insert(hash_key(&k), &k, &value);
    }
}

fn map_updates(m: &mut Map, rng: &mut Rng, keys: u64, ops: u64) {
    let mut value = value_for(0);
    for n in 0..ops {
        let k = key(rng.below(keys));
        value[..8].copy_from_slice(&n.to_le_bytes());
        m.insert(k.to_vec(), value.to_vec());
    }
}

fn map_updates_in_place(m: &mut Map, rng: &mut Rng, keys: u64, ops: u64) {
    let mut value = value_for(0);
    for n in 0..ops {
        let k = key(rng.below(keys));
        value[..8].copy_from_slice(&n.to_le_bytes());
        match m.get_mut(&k[..]) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(&value);
            }
            None => {
                m.insert(k.to_vec(), value.to_vec());
            }
        }
    }
}

fn table_gets(t: &Table, rng: &mut Rng, keys: u64, ops: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..ops {
        let k = key(rng.below(keys));
        if let Some(v) = t.get(hash_key(&k), &k) {
            sum = sum.wrapping_add(u64::from(v[1]) + v.len() as u64);
        }
    }
    sum
}

fn map_gets(m: &Map, rng: &mut Rng, keys: u64, ops: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..ops {
        let k = key(rng.below(keys));
        if let Some(v) = m.get(&k[..]) {
            sum = sum.wrapping_add(u64::from(v[1]) + v.len() as u64);
        }
    }
    sum
}

fn table_appends(t: &mut Table, rng: &mut Rng, keys: u64, ops: u64) {
    for n in 0..ops {
        let k = key(rng.below(keys));
        t.append(hash_key(&k), &k, &n.to_le_bytes());
    }
}

fn map_appends(m: &mut Map, rng: &mut Rng, keys: u64, ops: u64) {
    for n in 0..ops {
        let k = key(rng.below(keys));
        match m.get_mut(&k[..]) {
            Some(v) => v.extend_from_slice(&n.to_le_bytes()),
            None => {
                m.insert(k.to_vec(), n.to_le_bytes().to_vec());
            }
        }
    }
}

fn build_table(keys: u64, mut t: Table) -> Table {
    let value = value_for(0);
    for i in 0..keys {
        let k = key(i);
        t.insert(hash_key(&k), &k, &value);
    }
    t
}

fn build_map(keys: u64) -> Map {
    let value = value_for(0);
    let mut m = Map::new();
    for i in 0..keys {
        m.insert(key(i).to_vec(), value.to_vec());
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Criterion: single operations on preloaded structures
// ---------------------------------------------------------------------------------------------

fn bench_ops(c: &mut Criterion, s: Sizes, table: &mut Table, map: &mut Map) {
    let mut g = c.benchmark_group("state_table");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    let mut rng = Rng(1);
    g.bench_function("update/table", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            table_updates(table, &mut rng, s.keys, iters);
            start.elapsed()
        })
    });
    g.bench_function("update/hashmap", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            map_updates(map, &mut rng, s.keys, iters);
            start.elapsed()
        })
    });
    g.bench_function("get/table", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            black_box(table_gets(table, &mut rng, s.keys, iters));
            start.elapsed()
        })
    });
    g.bench_function("get/hashmap", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            black_box(map_gets(map, &mut rng, s.keys, iters));
            start.elapsed()
        })
    });
    // Appends go to separate structures of `append_keys` keys, whose values grow meanwhile.
    let mut append_table = Table::new();
    let mut append_map = Map::new();
    g.bench_function("append/table", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            table_appends(&mut append_table, &mut rng, s.append_keys, iters);
            start.elapsed()
        })
    });
    g.bench_function("append/hashmap", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            map_appends(&mut append_map, &mut rng, s.append_keys, iters);
            start.elapsed()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Summary runs
// ---------------------------------------------------------------------------------------------

/// Two contenders' times, run alternately in bursts of the same operations.
struct Race {
    /// Total time of the first contender.
    a: Duration,
    /// Total time of the second contender.
    b: Duration,
    /// For each burst, the first contender's speed over the second's.
    ratios: Vec<f64>,
}

impl Race {
    /// The median of the per-burst speed ratios: robust to a burst pair that the machine's other
    /// load disturbed.
    fn median_ratio(&self) -> f64 {
        let mut r = self.ratios.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Runs two contenders alternately in bursts until each did `ops` operations (the same key
/// sequence for both).
fn alternate(
    ops: u64,
    burst: u64,
    mut a: impl FnMut(&mut Rng, u64),
    mut b: impl FnMut(&mut Rng, u64),
) -> Race {
    let mut race = Race {
        a: Duration::ZERO,
        b: Duration::ZERO,
        ratios: Vec::new(),
    };
    let (mut ra, mut rb) = (Rng(7), Rng(7));
    let mut done = 0;
    while done < ops {
        let n = burst.min(ops - done);
        let start = Instant::now();
        a(&mut ra, n);
        let ta = start.elapsed();
        let start = Instant::now();
        b(&mut rb, n);
        let tb = start.elapsed();
        race.a += ta;
        race.b += tb;
        race.ratios
            .push(tb.as_secs_f64() / ta.as_secs_f64().max(1e-12));
        done += n;
    }
    race
}

fn rate(ops: u64, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64().max(1e-12)
}

fn mops(ops: u64, d: Duration) -> String {
    format!(
        "{:7.2} M/s  ({:6.1} ns/op)",
        rate(ops, d) / 1e6,
        d.as_nanos() as f64 / ops as f64
    )
}

/// The longest single call of `op(i)` for `i` in `0..n`.
fn longest(n: u64, mut op: impl FnMut(u64)) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..n {
        let start = Instant::now();
        op(i);
        worst = worst.max(start.elapsed());
    }
    worst
}

fn summary(s: Sizes, table: &mut Table, map: &mut Map) {
    println!();
    println!("=================== statejournal state_table summary ===================");
    println!(
        "{} keys of 16 bytes, {}-byte values; table hash: XXH3-64 of the key",
        s.keys, VALUE_LEN
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());

    // Updates.
    let race = alternate(
        s.updates,
        s.burst,
        |rng, n| table_updates(table, rng, s.keys, n),
        |rng, n| map_updates(map, rng, s.keys, n),
    );
    let reference = alternate(
        s.updates / 2,
        s.burst,
        |rng, n| table_updates(table, rng, s.keys, n),
        |rng, n| map_updates_in_place(map, rng, s.keys, n),
    );
    println!(
        "\nupdate ({} upserts of existing keys, random order)",
        s.updates
    );
    println!(
        "  Table::insert                  {}",
        mops(s.updates, race.a)
    );
    println!(
        "  HashMap::insert (floor)        {}",
        mops(s.updates, race.b)
    );
    println!(
        "  ratio Table / HashMap floor    {:.2}x total, {:.2}x median of {} bursts   (target >= 3x)",
        rate(s.updates, race.a) / rate(s.updates, race.b),
        race.median_ratio(),
        race.ratios.len()
    );
    println!(
        "  reference, HashMap get_mut + overwrite in place (no allocation): {} vs Table {}, ratio {:.2}x",
        mops(s.updates / 2, reference.b),
        mops(s.updates / 2, reference.a),
        reference.median_ratio()
    );

    // Gets.
    let mut sums = (0, 0);
    let race = alternate(
        s.gets,
        s.burst,
        |rng, n| sums.0 += table_gets(table, rng, s.keys, n),
        |rng, n| sums.1 += map_gets(map, rng, s.keys, n),
    );
    black_box(sums);
    println!("\nget ({} lookups of present keys, random order)", s.gets);
    println!("  Table::get                     {}", mops(s.gets, race.a));
    println!("  HashMap::get                   {}", mops(s.gets, race.b));
    println!(
        "  ratio Table / HashMap          {:.2}x total, {:.2}x median",
        rate(s.gets, race.a) / rate(s.gets, race.b),
        race.median_ratio()
    );

    // Appends.
    let mut append_table = Table::new();
    let mut append_map = Map::new();
    let race = alternate(
        s.appends,
        s.burst,
        |rng, n| table_appends(&mut append_table, rng, s.append_keys, n),
        |rng, n| map_appends(&mut append_map, rng, s.append_keys, n),
    );
    println!(
        "\nappend ({} appends of {ELEMENT}-byte elements over {} keys, random order)",
        s.appends, s.append_keys
    );
    println!(
        "  Table::append                  {}",
        mops(s.appends, race.a)
    );
    println!(
        "  HashMap get_mut+extend         {}",
        mops(s.appends, race.b)
    );
    println!(
        "  ratio Table / HashMap          {:.2}x total, {:.2}x median",
        rate(s.appends, race.a) / rate(s.appends, race.b),
        race.median_ratio()
    );
    let st = append_table.stats();
    println!(
        "  Table: {} entries, {:.1} MB payload, {:.1} MB heap, {} relocations, {} chunks evacuated",
        append_table.len(),
        append_table.payload_bytes() as f64 / 1e6,
        append_table.heap_bytes() as f64 / 1e6,
        st.relocations,
        st.evacuated_chunks
    );
    drop(append_table);
    drop(append_map);

    // Memory at steady state: the table after the updates, checked against the allocator.
    let per_entry = |heap: usize, payload: usize, len: usize| {
        (heap as f64 - payload as f64) / len.max(1) as f64
    };
    println!(
        "\nmemory ({} entries, 16-byte keys, {VALUE_LEN}-byte values)",
        s.keys
    );
    println!(
        "  Table after the updates: heap_bytes {:.1} MB, payload {:.1} MB, overhead {:.1} B/entry (target <= 64)",
        table.heap_bytes() as f64 / 1e6,
        table.payload_bytes() as f64 / 1e6,
        per_entry(table.heap_bytes(), table.payload_bytes(), table.len())
    );
    // Full-size arena chunks are anonymous mappings, which the allocator does not see: the
    // independent count is the allocator's bytes plus the mapped chunks' lengths.
    let (allocated, fresh) = counted(|| build_table(s.keys, Table::new()));
    let counted_bytes = allocated.max(0) as usize + fresh.mapped_bytes();
    println!(
        "  Table freshly built: heap_bytes {:.1} MB; allocator {:.1} MB + mapped chunks {:.1} MB = {:.1} MB, overhead {:.1} B/entry by that count",
        fresh.heap_bytes() as f64 / 1e6,
        allocated as f64 / 1e6,
        fresh.mapped_bytes() as f64 / 1e6,
        counted_bytes as f64 / 1e6,
        per_entry(counted_bytes, fresh.payload_bytes(), fresh.len())
    );
    let payload = fresh.payload_bytes();
    drop(fresh);
    let (allocated, fresh_map) = counted(|| build_map(s.keys));
    println!(
        "  HashMap freshly built: allocator {:.1} MB, overhead {:.1} B/entry (requested bytes; malloc adds ~16 per block)",
        allocated as f64 / 1e6,
        per_entry(allocated.max(0) as usize, payload, fresh_map.len())
    );
    drop(fresh_map);

    // Builds.
    let start = Instant::now();
    let t1 = build_table(s.keys, Table::new());
    let b_table = start.elapsed();
    let start = Instant::now();
    let t2 = build_table(
        s.keys,
        Table::with_capacity(s.keys as usize, s.keys as usize * (16 + VALUE_LEN)),
    );
    let b_presized = start.elapsed();
    let start = Instant::now();
    let m1 = build_map(s.keys);
    let b_map = start.elapsed();
    println!("\nbuild ({} new keys into an empty structure)", s.keys);
    println!("  Table::new                     {}", mops(s.keys, b_table));
    println!(
        "  Table::with_capacity           {}",
        mops(s.keys, b_presized)
    );
    println!("  HashMap::new                   {}", mops(s.keys, b_map));
    drop((t1, t2, m1));

    // Pauses. The growth is measured twice and the smaller maximum reported: on a shared
    // machine a single preemption would otherwise be reported as the table's pause.
    let value = value_for(0);
    let grow_timed = || {
        let mut t = Table::new();
        let worst = longest(s.keys, |i| {
            let k = key(i);
            t.insert(hash_key(&k), &k, &value);
        });
        (worst, t)
    };
    let (first, _) = grow_timed();
    let (second, mut t) = grow_timed();
    let grow = first.min(second);
    // Rewrite every value with a size that does not fit in place, twice, in random order:
    // relocation, garbage and compaction.
    let big = [7u8; 3 * VALUE_LEN];
    let mut rng = Rng(3);
    let rewrite = longest(2 * s.keys, |n| {
        let k = key(rng.below(s.keys));
        let v = if n < s.keys { &big[..] } else { &value[..] };
        t.insert(hash_key(&k), &k, v);
    });
    let st = t.stats();
    // Growth at a size where doubling a whole slot array would stop one insert for long: the
    // table against HashMap (which rehashes everything at once), each once, in one run.
    let big_table = {
        let mut t = Table::new();
        longest(s.grow_keys, |i| {
            let k = key(i);
            t.insert(hash_key(&k), &k, &value);
        })
    };
    let big_map = {
        let mut m = Map::new();
        longest(s.grow_keys, |i| {
            m.insert(key(i).to_vec(), value.to_vec());
        })
    };
    println!("\npauses (longest single operation)");
    println!(
        "  growing to {} keys (slot-array doubling):   {:.2} ms",
        s.keys,
        grow.as_secs_f64() * 1e3
    );
    println!(
        "  2x{} size-changing rewrites (compaction): {:.2} ms  ({} chunks evacuated, {:.1} MB copied, heap {:.1} MB for {:.1} MB payload)",
        s.keys,
        rewrite.as_secs_f64() * 1e3,
        st.evacuated_chunks,
        st.evacuated_bytes as f64 / 1e6,
        t.heap_bytes() as f64 / 1e6,
        t.payload_bytes() as f64 / 1e6
    );
    println!(
        "  growing to {} keys: Table {:.2} ms, HashMap {:.2} ms (one run each; a preemption on a shared machine adds to either)",
        s.grow_keys,
        big_table.as_secs_f64() * 1e3,
        big_map.as_secs_f64() * 1e3
    );
    println!("========================================================================");
}

fn main() {
    let mode = mode();
    let s = sizes(mode);
    let mut c = Criterion::default().without_plots().configure_from_args();
    if mode == Mode::List {
        bench_ops(&mut c, s, &mut Table::new(), &mut Map::new());
        return;
    }
    let mut table = build_table(s.keys, Table::new());
    let mut map = build_map(s.keys);
    bench_ops(&mut c, s, &mut table, &mut map);
    c.final_summary();
    summary(s, &mut table, &mut map);
}
