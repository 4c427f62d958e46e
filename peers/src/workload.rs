//! The workloads, as one child process runs them against one engine, and their sizes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::{Checkpointing, DurableWriter, Engine, Key, OpenCfg, KEY_LEN};
use crate::measure::{dir_bytes, dirtied_bytes, disk_write_bytes, peak_rss_bytes};

/// Value length of W1, W3 and W6.
pub const VALUE_LEN: usize = 100;

/// Sizes of the workloads: the issue's, times `SJ_PEERS_SCALE` (default 1).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// W1/W2/W5: distinct keys.
    pub keys: u64,
    /// W1/W2: operations.
    pub ops: u64,
    /// W3: seconds each configuration runs.
    pub w3_secs: f64,
    /// W4: list elements and list keys.
    pub list_elements: u64,
    /// W4: list keys.
    pub list_keys: u64,
    /// W6: bytes of state (keys and values) before the checkpoint.
    pub w6_state_bytes: u64,
    /// W6: updates between the two checkpoints.
    pub w6_updates: u64,
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

impl Sizes {
    /// From the environment: `SJ_PEERS_SCALE` scales counts; `SJ_PEERS_W3_SECS` and
    /// `SJ_PEERS_W4_ELEMENTS` set W3's duration and W4's count.
    pub fn from_env() -> Sizes {
        let s = env_f64("SJ_PEERS_SCALE").unwrap_or(1.0);
        let n = |x: f64| ((x * s).round() as u64).max(1);
        Sizes {
            keys: n(1e6),
            ops: n(10e6),
            w3_secs: env_f64("SJ_PEERS_W3_SECS").unwrap_or(3.0),
            // 10 M rather than the 100 M: see docs/BENCHMARKS.md.
            list_elements: env_f64("SJ_PEERS_W4_ELEMENTS").map_or(n(10e6), n),
            list_keys: n(1e5),
            w6_state_bytes: n((1u64 << 30) as f64),
            w6_updates: n(1e6),
        }
    }
}

/// The `i`-th key: 16 bytes, the first 8 a multiplicative hash of `i` (so keys are spread over
/// the key space in no particular order), the last 8 `i` itself.
pub fn key(i: u64) -> Key {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// A xorshift generator: the workloads' fixed pseudo-random key order.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// Incompressible bytes values are cut from (a different 100-byte window for each update).
pub struct Values(Vec<u8>);

impl Values {
    /// 8 KiB of pseudo-random bytes.
    pub fn new() -> Values {
        let mut r = Rng::new(0x5EED);
        Values((0..8192 + VALUE_LEN).map(|_| r.below(256) as u8).collect())
    }

    /// The value of update `i`.
    pub fn get(&self, i: u64) -> &[u8] {
        let at = (i.wrapping_mul(61) % 8192) as usize;
        &self.0[at..at + VALUE_LEN]
    }
}

impl Default for Values {
    fn default() -> Self {
        Values::new()
    }
}

/// Named measurements of one run.
pub type Metrics = Vec<(&'static str, f64)>;

/// Adds what the process wrote so far, the directory's size and the peak memory to `m`.
pub fn finish(mut m: Metrics, dir: &Path) -> Metrics {
    m.push(("disk_write_bytes", disk_write_bytes() as f64));
    m.push(("dir_bytes", dir_bytes(dir) as f64));
    m.push(("peak_rss_bytes", peak_rss_bytes() as f64));
    m
}

/// W1: `ops` updates of 100-byte values over `keys` keys, no sync.
pub fn w1<E: Engine>(dir: &Path, sizes: &Sizes, cfg: OpenCfg) -> (E, Metrics) {
    let values = Values::new();
    let mut e = E::open(
        dir,
        OpenCfg {
            expected_bytes: sizes.ops * 136,
            ..cfg
        },
    );
    let mut rng = Rng::new(1);
    let t = Instant::now();
    for i in 0..sizes.ops {
        e.put(&key(rng.below(sizes.keys)), values.get(i));
    }
    let secs = t.elapsed().as_secs_f64();
    let m = vec![
        ("secs", secs),
        ("ops_per_sec", sizes.ops as f64 / secs),
        (
            "user_mb_per_sec",
            sizes.ops as f64 * (KEY_LEN + VALUE_LEN) as f64 / secs / 1e6,
        ),
        (
            "user_bytes",
            sizes.ops as f64 * (KEY_LEN + VALUE_LEN) as f64,
        ),
    ];
    (e, m)
}

/// Closes `e` and adds what the process wrote and its peak memory.
pub fn close_and_finish<E: Engine>(e: E, m: Metrics, dir: &Path) -> Metrics {
    e.close();
    finish(m, dir)
}

/// W2: `ops` read-modify-write increments of an 8-byte counter over `keys` keys.
pub fn w2<E: Engine>(dir: &Path, sizes: &Sizes) -> Metrics {
    let mut e = E::open(
        dir,
        OpenCfg {
            expected_bytes: sizes.ops * 40,
            ..OpenCfg::default()
        },
    );
    let mut rng = Rng::new(2);
    let t = Instant::now();
    for _ in 0..sizes.ops {
        e.incr(&key(rng.below(sizes.keys)));
    }
    let secs = t.elapsed().as_secs_f64();
    let user = sizes.ops as f64 * (KEY_LEN + 8) as f64;
    let m = vec![
        ("secs", secs),
        ("ops_per_sec", sizes.ops as f64 / secs),
        ("user_mb_per_sec", user / secs / 1e6),
        ("user_bytes", user),
    ];
    close_and_finish(e, m, dir)
}

/// W3: `threads` writers commit batches of `batch` updates, each made durable, for a while.
pub fn w3<E: Engine>(dir: &Path, sizes: &Sizes, batch: usize, threads: usize) -> Metrics {
    let writers = E::writers(dir, threads);
    let duration = Duration::from_secs_f64(sizes.w3_secs);
    let bytes_before = dirtied_bytes();
    let t = Instant::now();
    let handles: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(n, mut w)| {
            std::thread::spawn(move || {
                let values = Values::new();
                let mut rng = Rng::new(3 + n as u64);
                let mut keys = vec![[0u8; KEY_LEN]; batch];
                let mut commits = 0u64;
                let start = Instant::now();
                while start.elapsed() < duration {
                    for k in keys.iter_mut() {
                        *k = key(rng.below(1_000_000));
                    }
                    w.commit(&keys, values.get(commits));
                    commits += 1;
                }
                drop(w);
                commits
            })
        })
        .collect();
    let commits: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("a writer thread"))
        .sum();
    let secs = t.elapsed().as_secs_f64();
    let written = dirtied_bytes().saturating_sub(bytes_before);
    let updates = commits * batch as u64;
    let m = vec![
        ("secs", secs),
        ("commits_per_sec", commits as f64 / secs),
        ("ops_per_sec", updates as f64 / secs),
        (
            "user_mb_per_sec",
            updates as f64 * (KEY_LEN + VALUE_LEN) as f64 / secs / 1e6,
        ),
        ("user_bytes", updates as f64 * (KEY_LEN + VALUE_LEN) as f64),
        (
            "disk_bytes_per_commit",
            written as f64 / commits.max(1) as f64,
        ),
    ];
    finish(m, dir)
}

/// W4: `list_elements` 8-byte appends over `list_keys` list keys.
pub fn w4<E: Engine>(dir: &Path, sizes: &Sizes) -> Metrics {
    let mut e = E::open(
        dir,
        OpenCfg {
            expected_bytes: sizes.list_elements * 40,
            ..OpenCfg::default()
        },
    );
    let mut rng = Rng::new(4);
    let t = Instant::now();
    for i in 0..sizes.list_elements {
        e.list_add(&key(rng.below(sizes.list_keys)), i, i);
    }
    let secs = t.elapsed().as_secs_f64();
    let user = sizes.list_elements as f64 * (KEY_LEN + 8) as f64;
    let m = vec![
        ("secs", secs),
        ("ops_per_sec", sizes.list_elements as f64 / secs),
        ("user_mb_per_sec", user / secs / 1e6),
        ("user_bytes", user),
    ];
    close_and_finish(e, m, dir)
}

/// W5: reopen W1's directory and read every key once.
pub fn w5<E: Engine>(dir: &Path, sizes: &Sizes) -> Metrics {
    let t = Instant::now();
    // No automatic compaction (statejournal): a compaction started by the open would compete
    // with the reads for the two cores.
    let cfg = OpenCfg {
        auto_compaction: false,
        ..OpenCfg::default()
    };
    let mut e = E::open(dir, cfg);
    let open = t.elapsed().as_secs_f64();
    let mut missing = 0u64;
    for i in 0..sizes.keys {
        if e.get_len(&key(i)) != Some(VALUE_LEN) {
            missing += 1;
        }
    }
    let total = t.elapsed().as_secs_f64();
    let mut m = vec![
        ("open_secs", open),
        ("read_secs", total - open),
        ("secs", total),
        ("keys_per_sec", sizes.keys as f64 / total),
        ("missing", missing as f64),
    ];
    if let Some(r) = e.replayed_records() {
        m.push(("replayed_records", r as f64));
        m.push(("replay_records_per_sec", r as f64 / open));
    }
    e.close();
    m.push(("peak_rss_bytes", peak_rss_bytes() as f64));
    m
}

/// W6: fill a state of `w6_state_bytes`, checkpoint, make `w6_updates` updates, and time the
/// next checkpoint. `prepare` runs after the fill (statejournal compacts there, so the first
/// checkpoint names a snapshot, as a long-running job's would).
pub fn w6<E: Checkpointing>(dir: &Path, sizes: &Sizes, prepare: impl FnOnce(&mut E)) -> Metrics {
    let values = Values::new();
    let db = dir.join("db");
    std::fs::create_dir_all(&db).expect("create the database directory");
    let entries = sizes.w6_state_bytes / (KEY_LEN + VALUE_LEN) as u64;
    let mut e = E::open(
        &db,
        OpenCfg {
            expected_bytes: (entries + sizes.w6_updates) * 136,
            ..OpenCfg::default()
        },
    );
    let t = Instant::now();
    for i in 0..entries {
        e.put(&key(i), values.get(i));
    }
    let fill = t.elapsed().as_secs_f64();
    prepare(&mut e);
    e.checkpoint(&dir.join("checkpoint-1"));
    let mut rng = Rng::new(6);
    for i in 0..sizes.w6_updates {
        e.put(&key(rng.below(entries)), values.get(i + 1));
    }
    let bytes_before = dirtied_bytes();
    let t = Instant::now();
    let new_bytes = e.checkpoint(&dir.join("checkpoint-2"));
    let secs = t.elapsed().as_secs_f64();
    let written = dirtied_bytes().saturating_sub(bytes_before);
    let m = vec![
        ("fill_secs", fill),
        ("state_entries", entries as f64),
        ("checkpoint_secs", secs),
        ("checkpoint_new_bytes", new_bytes as f64),
        ("checkpoint_written_bytes", written as f64),
    ];
    close_and_finish(e, m, dir)
}
