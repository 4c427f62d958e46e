//! Keyed-state throughput against the naive floor, in the same run.
//!
//! * `floor/update`: what a naive state backend does per update — std `HashMap<Vec<u8>, Vec<u8>>`
//!   insert of a 16-byte key and 100-byte value, plus a framed (crc32fast + memcpy) append of the
//!   mutation into a preallocated mapping.
//! * `value/update`: `ValueState<[u8; 16], Vec<u8>>::set` of a 100-byte value, `Buffered` mode.
//! * `value/update_bytes`, `value/get_bytes`: the same with `serde_bytes::{ByteArray<16>, ByteBuf}`
//!   (serde's byte-string types: encoded with one copy instead of one call per byte).
//! * `value/get`, `floor/get`: point reads; `floor/get_owned`: the floor's read with a copy of the
//!   value, which is what `ValueState::get` returns (an owned `V`, decoded).
//! * `list/add`: 8-byte elements over 100 k keys; `map/put`: 16-byte values under 8 map keys per key.
//!
//! Keys: 1 M distinct (`SJ_STATE_KEYS` overrides), updated in a fixed random order. After the groups,
//! `main` prints throughputs, the ratio of `value/update` to the floor (target ≥ 1.5x) and the
//! journal's anonymous memory per entry beyond the raw key and value bytes (target ≤ 64 B).

#![allow(unsafe_code)] // the floor's mapping; the block says why it is sound

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use memmap2::MmapMut;
use serde_bytes::{ByteArray, ByteBuf};
use statejournal::codec::frame::{encode_frame, frame_size, FrameKind};
use statejournal::{Journal, JournalOptions, ListState, MapState, ValueState};

static RESULTS: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

fn record(name: &str, elapsed: Duration, iters: u64) {
    let mut r = RESULTS.lock().unwrap();
    let e = r.entry(name.to_string()).or_default();
    e.0 += elapsed;
    e.1 += iters;
}

/// Fails the benchmark if a background compaction failed (its cost must be in the figures, and a
/// failing one costs less than a working one). The journal's own policy compacts and its GC
/// deletes the log below each new snapshot, which is what bounds the disk used here.
fn check_compaction(j: &mut Journal) {
    if let Some(Err(e)) = j.last_compaction() {
        panic!("a background compaction failed: {e}");
    }
}

/// One criterion benchmark `name`: each sample times `iters` calls of `op` on `target` and adds
/// them to the summary's rate; `after` runs once per sample, outside the timing.
fn timed<T>(
    c: &mut Criterion,
    name: &str,
    target: &mut T,
    mut op: impl FnMut(&mut T),
    after: impl Fn(&mut T),
) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                op(target);
            }
            let e = t.elapsed();
            record(name, e, iters);
            after(target);
            e
        })
    });
}

/// For the benchmarks with nothing to check after a sample.
fn nothing<T>(_: &mut T) {}

/// The next key of the visiting order.
fn next_key(ord: &[u32], pos: &mut usize) -> [u8; 16] {
    let k = key(ord[*pos % ord.len()] as usize);
    *pos += 1;
    k
}

fn keys() -> usize {
    std::env::var("SJ_STATE_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn key(i: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k[8..].copy_from_slice(&(i as u64).to_le_bytes());
    k
}

/// A fixed pseudo-random visiting order of `n` keys (xorshift).
fn order(n: usize, len: usize) -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as u32
        })
        .collect()
}

fn bench_dir() -> PathBuf {
    let d = std::env::var_os("SJ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/sj-state-bench")
        });
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The naive floor: HashMap insert + framed append into a preallocated mapping.
struct Floor {
    map: HashMap<Vec<u8>, Vec<u8>>,
    mmap: MmapMut,
    at: usize,
    lsn: u64,
    _dir: tempfile::TempDir,
}

impl Floor {
    fn new(n: usize) -> Floor {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("floor"))
            .unwrap();
        f.set_len(64 << 20).unwrap();
        // SAFETY: the file is private to this benchmark (a fresh temporary directory) and nothing
        // else maps, truncates or writes it while the mapping lives.
        let mmap = unsafe { MmapMut::map_mut(&f).unwrap() };
        Floor {
            map: HashMap::with_capacity(n),
            mmap,
            at: 0,
            lsn: 0,
            _dir: dir,
        }
    }

    fn update(&mut self, k: &[u8; 16], v: &[u8]) {
        let mut rec = [0u8; 128];
        rec[..16].copy_from_slice(k);
        rec[16..16 + v.len()].copy_from_slice(v);
        let size = frame_size(116).unwrap();
        if self.at + size > self.mmap.len() {
            self.at = 0;
        }
        self.lsn += 1;
        encode_frame(
            &mut self.mmap[self.at..self.at + size],
            self.lsn,
            FrameKind::Data,
            &rec[..116],
        );
        self.at += size;
        self.map.insert(k.to_vec(), v.to_vec());
    }
}

fn journal() -> (Journal, tempfile::TempDir) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    (j, dir)
}

fn main() {
    let n = keys();
    let ord = order(n, 4 * n);
    let value = vec![0xABu8; 100];
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    // Floor.
    let mut floor = Floor::new(n);
    for i in 0..n {
        floor.update(&key(i), &value);
    }
    let mut pos = 0usize;
    timed(
        &mut c,
        "floor/update",
        &mut floor,
        |f| f.update(&next_key(&ord, &mut pos), &value),
        nothing,
    );
    timed(
        &mut c,
        "floor/get",
        &mut floor,
        |f| {
            black_box(f.map.get(&next_key(&ord, &mut pos)[..]));
        },
        nothing,
    );
    timed(
        &mut c,
        "floor/get_owned",
        &mut floor,
        |f| {
            black_box(f.map.get(&next_key(&ord, &mut pos)[..]).cloned());
        },
        nothing,
    );
    drop(floor);

    // ValueState.
    let (mut j, dir) = journal();
    let v: ValueState<[u8; 16], Vec<u8>> = j.value_state("v").unwrap();
    for i in 0..n {
        v.set(&mut j, &key(i), &value).unwrap();
    }
    let stats = j.state_stats().unwrap();
    timed(
        &mut c,
        "value/update",
        &mut j,
        |j| v.set(j, &next_key(&ord, &mut pos), &value).unwrap(),
        check_compaction,
    );
    timed(
        &mut c,
        "value/get",
        &mut j,
        |j| {
            black_box(v.get(j, &next_key(&ord, &mut pos)).unwrap());
        },
        nothing,
    );
    drop(j);
    drop(dir);

    // The same with serde's byte-string types: one copy per key and value instead of one
    // serialize call per byte (what a job storing blobs should use).
    let (mut j, dir) = journal();
    let vb: ValueState<ByteArray<16>, ByteBuf> = j.value_state("vb").unwrap();
    let bvalue = ByteBuf::from(value.clone());
    for i in 0..n {
        vb.set(&mut j, &ByteArray::new(key(i)), &bvalue).unwrap();
    }
    timed(
        &mut c,
        "value/update_bytes",
        &mut j,
        |j| {
            let k = ByteArray::new(next_key(&ord, &mut pos));
            vb.set(j, &k, &bvalue).unwrap();
        },
        check_compaction,
    );
    timed(
        &mut c,
        "value/get_bytes",
        &mut j,
        |j| {
            let k = ByteArray::new(next_key(&ord, &mut pos));
            black_box(vb.get(j, &k).unwrap());
        },
        nothing,
    );
    drop(j);
    drop(dir);

    // List adds and map puts.
    let (mut j, dir) = journal();
    let l: ListState<u64, u64> = j.list_state("l").unwrap();
    let m: MapState<u64, u8, [u8; 16]> = j.map_state("m").unwrap();
    let mut i = 0u64;
    timed(
        &mut c,
        "list/add",
        &mut j,
        |j| {
            i += 1;
            l.add(j, &(i % 100_000), &i).unwrap();
        },
        nothing,
    );
    timed(
        &mut c,
        "map/put",
        &mut j,
        |j| {
            i += 1;
            m.put(j, &(i % 100_000), &((i / 100_000) as u8 % 8), &[7u8; 16])
                .unwrap();
        },
        check_compaction,
    );
    drop(j);
    drop(dir);
    c.final_summary();

    let r = RESULTS.lock().unwrap();
    let rate = |name: &str| r.get(name).map(|(d, n)| *n as f64 / d.as_secs_f64());
    println!("\n== keyed state, {n} keys of 16 B, values of 100 B (Buffered) ==");
    for name in [
        "floor/update",
        "value/update",
        "value/update_bytes",
        "floor/get",
        "floor/get_owned",
        "value/get",
        "value/get_bytes",
        "list/add",
        "map/put",
    ] {
        if let Some(x) = rate(name) {
            println!("{name:<20} {:>8.2} M ops/s", x / 1e6);
        }
    }
    if let (Some(a), Some(b)) = (rate("value/update"), rate("floor/update")) {
        println!("ValueState update / floor (HashMap insert + framed mmap append): {:.2}x (target >= 1.5x)", a / b);
    }
    if let (Some(a), Some(b)) = (rate("value/update_bytes"), rate("floor/update")) {
        println!(
            "ValueState<ByteArray<16>, ByteBuf> update / floor: {:.2}x (target >= 1.5x)",
            a / b
        );
    }
    if let (Some(a), Some(b)) = (rate("value/get"), rate("floor/get")) {
        println!("ValueState get / HashMap get (a reference): {:.2}x", a / b);
    }
    if let (Some(a), Some(b)) = (rate("value/get"), rate("floor/get_owned")) {
        println!(
            "ValueState get / HashMap get + clone (an owned value): {:.2}x",
            a / b
        );
    }
    println!(
        "table memory: {} entries, {:.1} MiB of keys+values as stored, {:.1} MiB allocated: {:.1} B per entry of overhead (target <= 64 B)",
        stats.entries,
        stats.payload_bytes as f64 / (1 << 20) as f64,
        stats.heap_bytes as f64 / (1 << 20) as f64,
        (stats.heap_bytes.saturating_sub(stats.payload_bytes)) as f64 / stats.entries.max(1) as f64
    );
}
