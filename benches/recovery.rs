//! Issue #4's goals, each against a floor or a baseline measured in the same run: recovery of
//! 1 GiB of state with a 256 MiB log tail, checkpoint latency for a small and a large state, append
//! latency while a compaction runs, and write amplification over a long run.
//!
//! Run: `cargo bench --bench recovery` (about 6 minutes on the 2-core VM; at most about 5 GiB of
//! temporary files, during phase 3; the peak memory is printed at the end). Under `cargo test --benches` (no `--bench` flag) every
//! phase runs once on tiny sizes.
//!
//! The state is one `ValueState<ByteArray<16>, ByteBuf>` (serde's byte strings, as in
//! `state_ops`): 16-byte keys, 100-byte values, 122 bytes per snapshot entry, 152 bytes per log
//! frame of an update. Everything runs in `Buffered` mode.
//!
//! 1. **Recovery** (`recovery/*`, criterion, 10 samples of one open each). Built once: the keys
//!    are set, `compact()` writes the snapshot (`CompactionPolicy::manual()`), then updates of
//!    random keys append the log tail, and the journal is closed. Then:
//!    * `recovery/open`: `Journal::open` of that directory, files in the page cache. Each open's
//!      `StateRecovery` is kept; the summary prints medians of snapshot load (GB/s of the file,
//!      entries/s), log recovery (`log.duration`: the log's own scan, CRCs, chain, fsyncs), replay
//!      (records/s, MB/s of record payloads) and the whole open.
//!    * `recovery/floor`: the naive recovery of the same files. Snapshot: `read` the file block by
//!      block from offset 32 (`docs/FORMAT.md`), CRC32 (`crc32fast`) of every block, decode every
//!      entry and insert owned key and value into a std `HashMap<Vec<u8>, Vec<u8>>` presized from
//!      the footer's entry count. Log: `read` every `*.seg` after its 64-byte header, check each
//!      frame with `codec::frame::decode_frame` (CRC), decode the record
//!      (`codec::record::decode_record`) and insert the `Put`'s key and value into the same map.
//!      Both phases are timed separately; the replay goal compares records/s of the two log phases
//!      (target ≥ 2×), the snapshot goal is ≥ 1 GB/s (and is shown against the floor's GB/s).
//!    * `recovery/floor_log_empty_map`: the log floor alone into an empty `HashMap` (the issue's
//!      literal floor; smaller table, so usually faster than the one above).
//!    * `recovery/log_scan`: the log floor without the map (read, CRC, decode): the scan's share.
//!
//!    After criterion, one cold open: every file's pages dropped from the page cache first
//!    (`posix_fadvise(DONTNEED)` after `fdatasync`).
//! 2. **Checkpoint latency**: a journal of `SJ_BENCH_SMALL_MIB` (10) MiB of state (compacted),
//!    measured as built and again after a close and reopen, then the large one reopened. On each,
//!    one checkpoint to start (not counted: it covers the whole tail), then `SJ_BENCH_CHECKPOINTS`
//!    (50) times: `SJ_BENCH_CKPT_UPDATES` (1000) updates, then `checkpoint()` timed alone. p50 of
//!    each and the ratio large / small, both reopened (target ≤ 1.5×). Also the bytes the process
//!    dirtied per round (`/proc/self/io` `write_bytes`, counted by whole page-cache folios): a
//!    checkpoint's flush writes back whole folios, and a reopened log's last segment sits in large
//!    folios that recovery's reads (readahead) created.
//! 3. **Append latency during compaction**: the large journal reopened with an automatic policy
//!    whose size floor lies just past the end of the idle phase (`min_tail_bytes`,
//!    `tail_ratio_percent(0)`). `SJ_BENCH_APPEND_OPS` (2 M) `ValueState::set` calls to random keys
//!    are timed one by one with `Instant` (idle); the calls continue, and those from the op at which
//!    the log since the snapshot crosses the floor (the policy looks every MiB, so the compaction
//!    starts within ~7 k ops of it) until `last_compaction()` reports the compaction finished are
//!    the "during" set. p50/p99/p99.9/max of both and the p99 ratio (target ≤ 2×). No public API
//!    was added: the policy starts the compaction on the journal's own thread.
//! 4. **Write amplification**: a fresh journal with the automatic policy (`min_tail_bytes` =
//!    `SJ_BENCH_WA_MIN_TAIL_MIB`, default 64, ratio 100%), `SJ_BENCH_WA_KEYS` (1 M) keys set, then
//!    `SJ_BENCH_WA_UPDATES` (20 M) updates of random keys; `io_stats()` after the last compaction,
//!    against the bound the policy implies: each compaction writes one snapshot of size S after
//!    at least max(floor, ratio × S) bytes of log, so snapshot bytes ≤ log bytes × 100 / ratio
//!    (plus one snapshot), and WA ≤ (log bytes / mutation bytes) × (1 + 100 / ratio). Each
//!    compaction seen is listed (LSN range, log merged, duration): when the writer outruns the
//!    compaction, the tails (and so recovery time) grow past what the policy asks for.
//!
//! Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SJ_BENCH_STATE_MIB` | 1024 | state of the large journal, in MiB of snapshot (122 B per key) |
//! | `SJ_BENCH_TAIL_MIB` | 256 | log tail after its snapshot, MiB of frames (152 B per update) |
//! | `SJ_BENCH_SMALL_MIB` | 10 | state of the small journal (checkpoint latency) |
//! | `SJ_BENCH_CHECKPOINTS` | 50 | timed checkpoints per journal |
//! | `SJ_BENCH_CKPT_UPDATES` | 1000 | updates before each checkpoint |
//! | `SJ_BENCH_APPEND_OPS` | 2000000 | idle ops timed (phase 3) |
//! | `SJ_BENCH_WA_KEYS` | 1000000 | keys of the write-amplification run |
//! | `SJ_BENCH_WA_UPDATES` | 20000000 | updates of the write-amplification run |
//! | `SJ_BENCH_WA_MIN_TAIL_MIB` | 64 | the policy's size floor in that run |
//! | `SJ_BENCH_PHASES` | `recovery,checkpoint,append,wa` | which phases run |
//! | `SJ_BENCH_DIR` | `target/tmp/sj-recovery-bench` | where the temporary directories go |
//!
//! A quick run: `SJ_BENCH_STATE_MIB=64 SJ_BENCH_TAIL_MIB=16 SJ_BENCH_APPEND_OPS=200000
//! SJ_BENCH_WA_KEYS=100000 SJ_BENCH_WA_UPDATES=2000000 SJ_BENCH_WA_MIN_TAIL_MIB=8 cargo bench
//! --bench recovery`.

// `posix_fadvise` to drop the files' pages before the cold open; the block says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use serde_bytes::{ByteArray, ByteBuf};
use statejournal::codec::frame::{decode_frame, frame_size, FrameError, FrameKind};
use statejournal::codec::header::SEGMENT_HEADER_LEN;
use statejournal::codec::record::{decode_record, Op};
use statejournal::format::parse_segment_file_name;
use statejournal::{
    CompactionPolicy, CompactionReport, Durability, IoStats, Journal, JournalOptions,
    StateRecovery, ValueState,
};

const VALUE_LEN: usize = 100;
/// Bytes of one entry in a snapshot block: tag, state id, composite-key length, composite key
/// (length byte and 16 key bytes), value length, value (postcard's length byte and 100 bytes).
const SNAPSHOT_ENTRY_BYTES: u64 = 1 + 1 + 1 + 17 + 1 + 101;
const MIB: u64 = 1 << 20;

type State = ValueState<ByteArray<16>, ByteBuf>;
type FloorMap = HashMap<Vec<u8>, Vec<u8>>;

fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--test") || !has("--bench")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Config {
    state_mib: u64,
    tail_mib: u64,
    small_mib: u64,
    checkpoints: usize,
    ckpt_updates: u64,
    append_ops: usize,
    wa_keys: u64,
    wa_updates: u64,
    wa_min_tail_mib: u64,
    phases: Vec<String>,
}

impl Config {
    fn get(test: bool) -> Config {
        let phases = std::env::var("SJ_BENCH_PHASES")
            .unwrap_or_else(|_| "recovery,checkpoint,append,wa".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        if test {
            return Config {
                state_mib: 4,
                tail_mib: 1,
                small_mib: 1,
                checkpoints: 3,
                ckpt_updates: 100,
                append_ops: 20_000,
                wa_keys: 10_000,
                wa_updates: 200_000,
                wa_min_tail_mib: 1,
                phases,
            };
        }
        Config {
            state_mib: env_u64("SJ_BENCH_STATE_MIB", 1024),
            tail_mib: env_u64("SJ_BENCH_TAIL_MIB", 256),
            small_mib: env_u64("SJ_BENCH_SMALL_MIB", 10),
            checkpoints: env_u64("SJ_BENCH_CHECKPOINTS", 50) as usize,
            ckpt_updates: env_u64("SJ_BENCH_CKPT_UPDATES", 1000),
            append_ops: env_u64("SJ_BENCH_APPEND_OPS", 2_000_000) as usize,
            wa_keys: env_u64("SJ_BENCH_WA_KEYS", 1_000_000),
            wa_updates: env_u64("SJ_BENCH_WA_UPDATES", 20_000_000),
            wa_min_tail_mib: env_u64("SJ_BENCH_WA_MIN_TAIL_MIB", 64),
            phases,
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn bench_dir() -> PathBuf {
    let d = std::env::var_os("SJ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/sj-recovery-bench")
        });
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Peak resident memory of the process (`VmHWM`).
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn key(i: u64) -> ByteArray<16> {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    ByteArray::new(k)
}

/// xorshift64: the random keys of updates.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The value of the `seq`-th write: 100 bytes, the first 8 of them varying.
fn stamp(value: &mut ByteBuf, seq: u64) {
    value[..8].copy_from_slice(&seq.to_le_bytes());
}

fn options(policy: CompactionPolicy) -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Buffered)
        .compaction(policy)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Percentile `p` (0..=100) of sorted nanosecond latencies.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64) as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

// ---------------------------------------------------------------------------------------------
// The large journal.

struct Built {
    dir: tempfile::TempDir,
    keys: u64,
    tail_updates: u64,
    snapshot: PathBuf,
    snapshot_lsn: u64,
    snapshot_len: u64,
    set_time: Duration,
    compaction: CompactionReport,
    tail_time: Duration,
}

/// Sets `keys` keys, compacts (the policy is manual: this is the only compaction), appends
/// `tail_bytes` of log frames of updates to random keys, and closes.
fn build(keys: u64, tail_bytes: u64) -> Built {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let mut j = Journal::open(dir.path(), options(CompactionPolicy::manual())).unwrap();
    let v: State = j.value_state("v").unwrap();
    let mut value = ByteBuf::from(vec![0xAB; VALUE_LEN]);
    let t = Instant::now();
    for i in 0..keys {
        stamp(&mut value, i);
        v.set(&mut j, &key(i), &value).unwrap();
    }
    let set_time = t.elapsed();
    let compaction = j.compact().unwrap();
    let at = j.io_stats().log_bytes;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let t = Instant::now();
    let mut tail_updates = 0;
    while j.io_stats().log_bytes - at < tail_bytes {
        stamp(&mut value, keys + tail_updates);
        v.set(&mut j, &key(rng.below(keys)), &value).unwrap();
        tail_updates += 1;
    }
    let tail_time = t.elapsed();
    j.close().unwrap();
    Built {
        snapshot_lsn: compaction.lsn.get(),
        snapshot_len: compaction.bytes,
        snapshot: compaction.snapshot.clone(),
        dir,
        keys,
        tail_updates,
        set_time,
        compaction,
        tail_time,
    }
}

// ---------------------------------------------------------------------------------------------
// The floors.

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn bytes<'a>(b: &'a [u8], at: &mut usize) -> &'a [u8] {
    let n = varint(b, at) as usize;
    let s = &b[*at..*at + n];
    *at += n;
    s
}

/// The naive snapshot load: read block by block, CRC each, insert every entry into a presized
/// std `HashMap`. Returns the map.
fn snapshot_floor(path: &Path) -> FloorMap {
    let mut f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut trailer = [0u8; 24];
    f.seek(SeekFrom::Start(len - 24)).unwrap();
    f.read_exact(&mut trailer).unwrap();
    assert_eq!(&trailer[16..], b"SJSNAPND");
    let footer_offset = le_u64(&trailer, 0);
    // footer := lsn:u64 max_key_groups:u16 kg_start:u16 kg_end:u16 entries:u64 ...
    let mut footer = [0u8; 22];
    f.seek(SeekFrom::Start(footer_offset)).unwrap();
    f.read_exact(&mut footer).unwrap();
    let entries = le_u64(&footer, 14);
    let mut map = FloorMap::with_capacity(entries as usize);
    f.seek(SeekFrom::Start(32)).unwrap();
    let mut pos = 32u64;
    let mut head = [0u8; 16];
    let mut payload = Vec::new();
    let mut seen = 0u64;
    while pos < footer_offset {
        f.read_exact(&mut head).unwrap();
        let crc = le_u32(&head, 0);
        let payload_len = le_u32(&head, 4) as usize;
        let count = le_u32(&head, 12);
        payload.resize(payload_len, 0);
        f.read_exact(&mut payload).unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(&head[4..]);
        h.update(&payload);
        assert_eq!(h.finalize(), crc, "snapshot block at {pos}: CRC mismatch");
        let mut at = 0;
        for _ in 0..count {
            let tag = payload[at];
            at += 1;
            assert_eq!(tag, 0, "only plain entries in this benchmark");
            let _state = varint(&payload, &mut at);
            let key = bytes(&payload, &mut at);
            let value = bytes(&payload, &mut at);
            map.insert(key.to_vec(), value.to_vec());
        }
        assert_eq!(at, payload_len, "snapshot block at {pos}: trailing bytes");
        seen += u64::from(count);
        pos += 16 + payload_len as u64;
    }
    assert_eq!(seen, entries);
    map
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let id = parse_segment_file_name(e.file_name().to_str()?)?;
            Some((id, e.path()))
        })
        .collect();
    segs.sort();
    segs.into_iter().map(|(_, p)| p).collect()
}

/// The naive log replay: read every segment, check every frame (CRC), decode the records after
/// `after` and hand each `Put`'s key and value to `put`. Returns (records, payload bytes).
fn log_floor(dir: &Path, after: u64, mut put: impl FnMut(&[u8], &[u8])) -> (u64, u64) {
    let mut buf = Vec::new();
    let (mut records, mut payload_bytes) = (0u64, 0u64);
    for path in segment_files(dir) {
        buf.clear();
        File::open(&path).unwrap().read_to_end(&mut buf).unwrap();
        let mut at = SEGMENT_HEADER_LEN;
        loop {
            match decode_frame(&buf, at) {
                Ok(f) => {
                    if f.kind == FrameKind::Data && f.lsn > after {
                        let payload = &buf[f.payload_start..f.payload_end];
                        for op in decode_record(payload).unwrap() {
                            if let Op::Put { key, value, .. } = op.unwrap() {
                                put(key, value);
                            }
                        }
                        records += 1;
                        payload_bytes += payload.len() as u64;
                    }
                    at = f.next;
                }
                Err(FrameError::End) => break,
                Err(e) => panic!("{}: frame at {at}: {e:?}", path.display()),
            }
        }
    }
    (records, payload_bytes)
}

/// Makes every file of `dir` durable and drops its pages from the page cache.
fn evict_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let f = File::open(&path).unwrap();
        f.sync_data().unwrap();
        // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open and
        // owned by `f`, which outlives the call.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise failed: {rc}");
    }
}

// ---------------------------------------------------------------------------------------------
// Phases 2-4.

struct Checkpoints {
    first: Duration,
    times: Vec<Duration>,
    segments: usize,
    /// Bytes the process dirtied per round (updates and checkpoint), by `/proc/self/io`'s
    /// `write_bytes`: the kernel counts whole folios when a page of one is dirtied, so this shows
    /// what each round's flush writes.
    dirtied_per_round: Option<f64>,
}

/// `write_bytes` of `/proc/self/io`: bytes the process caused to be written to storage.
fn proc_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// One untimed-for-the-goal checkpoint, then `n` times: `updates` random updates, a timed
/// checkpoint.
fn checkpoint_latency(
    j: &mut Journal,
    v: &State,
    keys: u64,
    n: usize,
    updates: u64,
    seed: u64,
) -> Checkpoints {
    let mut rng = Rng(seed);
    let mut value = ByteBuf::from(vec![0xCD; VALUE_LEN]);
    let t = Instant::now();
    j.checkpoint().unwrap();
    let first = t.elapsed();
    let mut times = Vec::with_capacity(n);
    let mut segments = 0;
    let written_before = proc_write_bytes();
    for round in 0..n as u64 {
        for i in 0..updates {
            stamp(&mut value, round * updates + i);
            v.set(j, &key(rng.below(keys)), &value).unwrap();
        }
        let t = Instant::now();
        let info = black_box(j.checkpoint().unwrap());
        times.push(t.elapsed());
        segments = info.segments.len();
    }
    let dirtied_per_round = written_before
        .zip(proc_write_bytes())
        .map(|(a, b)| (b - a) as f64 / n.max(1) as f64);
    Checkpoints {
        first,
        times,
        segments,
        dirtied_per_round,
    }
}

struct AppendLatency {
    idle: Vec<u32>,
    during: Vec<u32>,
    idle_time: Duration,
    window: Duration,
    report: Option<CompactionReport>,
}

/// Phase 3 on the journal in `dir` (state of `keys` keys).
fn append_latency(dir: &Path, keys: u64, idle_ops: usize) -> AppendLatency {
    // The log since the snapshot at open: every replayed record is a `Put` of the same size.
    let probe = Journal::open(dir, options(CompactionPolicy::manual())).unwrap();
    let r = probe.recovery().clone();
    probe.close().unwrap();
    assert!(r.replayed_records > 0 && r.replayed_bytes.is_multiple_of(r.replayed_records));
    let frame = frame_size((r.replayed_bytes / r.replayed_records) as usize).unwrap() as u64;
    let tail_at_open = r.replayed_records * frame;
    // The compaction starts a little after the idle phase.
    let threshold = tail_at_open + idle_ops as u64 * frame + 4 * MIB;
    let policy = CompactionPolicy::default()
        .min_tail_bytes(threshold)
        .tail_ratio_percent(0);
    let mut j = Journal::open(dir, options(policy)).unwrap();
    let v: State = j.value_state("v").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut value = ByteBuf::from(vec![0xEF; VALUE_LEN]);
    let mut seq = 0u64;

    let mut idle = Vec::with_capacity(idle_ops);
    let t = Instant::now();
    for _ in 0..idle_ops {
        let k = key(rng.below(keys));
        stamp(&mut value, seq);
        seq += 1;
        let t = Instant::now();
        v.set(&mut j, &k, &value).unwrap();
        idle.push(t.elapsed().as_nanos() as u32);
    }
    let idle_time = t.elapsed();
    assert!(
        j.last_compaction().is_none(),
        "a compaction ran during the idle phase"
    );

    let mut during = Vec::with_capacity(16 << 20);
    let mut started: Option<Instant> = None;
    let mut report = None;
    // Stop if no compaction shows up after 8 times the idle ops (it should start after ~30 k).
    let limit = 8 * idle_ops as u64 + (64 * MIB) / frame;
    for n in 0u64.. {
        let k = key(rng.below(keys));
        stamp(&mut value, seq);
        seq += 1;
        let t = Instant::now();
        v.set(&mut j, &k, &value).unwrap();
        let lat = t.elapsed().as_nanos() as u32;
        match started {
            Some(_) => during.push(lat),
            None if tail_at_open + j.io_stats().log_bytes >= threshold => {
                started = Some(Instant::now());
                during.push(lat);
            }
            None => {}
        }
        if started.is_some() && n % 256 == 0 {
            if let Some(r) = j.last_compaction() {
                report = Some(r.unwrap());
                break;
            }
        }
        if started.is_none() && n > limit {
            break;
        }
    }
    let window = started.map_or(Duration::ZERO, |s| s.elapsed());
    j.close().unwrap();
    AppendLatency {
        idle,
        during,
        idle_time,
        window,
        report,
    }
}

struct WriteAmp {
    io: IoStats,
    time: Duration,
    dir_bytes: u64,
    min_tail: u64,
    /// The compactions' reports (one may be missed if two finish between two looks).
    reports: Vec<CompactionReport>,
}

fn write_amplification(keys: u64, updates: u64, min_tail: u64) -> WriteAmp {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let mut j = Journal::open(
        dir.path(),
        options(CompactionPolicy::default().min_tail_bytes(min_tail)),
    )
    .unwrap();
    let v: State = j.value_state("v").unwrap();
    let mut value = ByteBuf::from(vec![0x5A; VALUE_LEN]);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let t = Instant::now();
    for i in 0..keys {
        stamp(&mut value, i);
        v.set(&mut j, &key(i), &value).unwrap();
    }
    let mut reports = Vec::new();
    for i in 0..updates {
        stamp(&mut value, keys + i);
        v.set(&mut j, &key(rng.below(keys)), &value).unwrap();
        if i % 65_536 == 0 {
            if let Some(r) = j.last_compaction() {
                reports.push(r.unwrap());
            }
        }
    }
    if let Some(r) = j.wait_for_compaction() {
        reports.push(r.unwrap());
    }
    let time = t.elapsed();
    let io = j.io_stats();
    let dir_bytes = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    j.close().unwrap();
    WriteAmp {
        io,
        time,
        dir_bytes,
        min_tail,
        reports,
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct FloorRun {
    snapshot: Duration,
    log: Duration,
    entries: u64,
    records: u64,
}

fn main() {
    let test = test_mode();
    let cfg = Config::get(test);
    let load_start = loadavg();
    let started = Instant::now();
    let keys = (cfg.state_mib * MIB / SNAPSHOT_ENTRY_BYTES).max(1);

    let need_large = cfg.runs("recovery") || cfg.runs("checkpoint") || cfg.runs("append");
    let built = need_large.then(|| {
        let b = build(keys, cfg.tail_mib * MIB);
        println!(
            "built: {} keys set in {:.1} s ({:.2} M/s); compaction to a {:.1} MiB snapshot in {:.1} s; \
             tail of {} updates ({:.1} MiB of frames) in {:.1} s",
            b.keys,
            b.set_time.as_secs_f64(),
            b.keys as f64 / b.set_time.as_secs_f64() / 1e6,
            mib(b.snapshot_len),
            b.compaction.duration.as_secs_f64(),
            b.tail_updates,
            mib(cfg.tail_mib * MIB),
            b.tail_time.as_secs_f64(),
        );
        b
    });

    // ---- 1. Recovery.
    let mut opens: Vec<(Duration, StateRecovery)> = Vec::new();
    let mut floors: Vec<FloorRun> = Vec::new();
    let mut floor_empty: Vec<(Duration, u64)> = Vec::new();
    let mut scans: Vec<(Duration, u64, u64)> = Vec::new();
    let mut cold: Option<(Duration, StateRecovery)> = None;
    if let (true, Some(b)) = (cfg.runs("recovery"), built.as_ref()) {
        let dir = b.dir.path();
        let mut c = Criterion::default()
            .without_plots()
            .configure_from_args()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            // One open per sample: criterion will say it cannot finish 10 samples in 1 s.
            .measurement_time(Duration::from_secs(1));
        let mut g = c.benchmark_group("recovery");
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("open", |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let j = Journal::open(dir, options(CompactionPolicy::manual())).unwrap();
                    let d = t.elapsed();
                    total += d;
                    let r = j.recovery().clone();
                    assert_eq!(r.snapshot_entries, b.keys);
                    assert_eq!(r.replayed_records, b.tail_updates);
                    opens.push((d, r));
                    j.close().unwrap();
                }
                total
            })
        });
        g.bench_function("floor", |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let mut map = snapshot_floor(&b.snapshot);
                    let snapshot = t.elapsed();
                    let entries = map.len() as u64;
                    let t = Instant::now();
                    let (records, _) = log_floor(dir, b.snapshot_lsn, |k, v| {
                        map.insert(k.to_vec(), v.to_vec());
                    });
                    let log = t.elapsed();
                    assert_eq!(map.len() as u64, b.keys);
                    assert_eq!(records, b.tail_updates);
                    total += snapshot + log;
                    floors.push(FloorRun {
                        snapshot,
                        log,
                        entries,
                        records,
                    });
                    drop(map);
                }
                total
            })
        });
        g.bench_function("floor_log_empty_map", |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut map = FloorMap::new();
                    let t = Instant::now();
                    let (records, _) = log_floor(dir, b.snapshot_lsn, |k, v| {
                        map.insert(k.to_vec(), v.to_vec());
                    });
                    let d = t.elapsed();
                    total += d;
                    floor_empty.push((d, records));
                    drop(map);
                }
                total
            })
        });
        g.bench_function("log_scan", |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut sum = 0usize;
                    let t = Instant::now();
                    let (records, bytes) = log_floor(dir, b.snapshot_lsn, |k, v| {
                        sum = sum.wrapping_add(k.len() + v.len());
                    });
                    let d = t.elapsed();
                    black_box(sum);
                    total += d;
                    scans.push((d, records, bytes));
                }
                total
            })
        });
        g.finish();
        c.final_summary();

        evict_dir(dir);
        let t = Instant::now();
        let j = Journal::open(dir, options(CompactionPolicy::manual())).unwrap();
        let d = t.elapsed();
        cold = Some((d, j.recovery().clone()));
        j.close().unwrap();
    }

    // ---- 2. Checkpoint latency.
    let mut ckpt: Option<(Checkpoints, Checkpoints, Checkpoints, u64)> = None;
    if let (true, Some(b)) = (cfg.runs("checkpoint"), built.as_ref()) {
        let small_keys = (cfg.small_mib * MIB / SNAPSHOT_ENTRY_BYTES).max(1);
        let small_dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let mut j = Journal::open(small_dir.path(), options(CompactionPolicy::manual())).unwrap();
        let v: State = j.value_state("v").unwrap();
        let mut value = ByteBuf::from(vec![0xAB; VALUE_LEN]);
        for i in 0..small_keys {
            stamp(&mut value, i);
            v.set(&mut j, &key(i), &value).unwrap();
        }
        j.compact().unwrap();
        let fresh =
            checkpoint_latency(&mut j, &v, small_keys, cfg.checkpoints, cfg.ckpt_updates, 7);
        j.close().unwrap();
        // Reopened, like the large one: the same page-cache history of the log's last segment.
        let mut j = Journal::open(small_dir.path(), options(CompactionPolicy::manual())).unwrap();
        let v: State = j.value_state("v").unwrap();
        let small =
            checkpoint_latency(&mut j, &v, small_keys, cfg.checkpoints, cfg.ckpt_updates, 9);
        j.close().unwrap();
        drop(small_dir);

        let mut j = Journal::open(b.dir.path(), options(CompactionPolicy::manual())).unwrap();
        let v: State = j.value_state("v").unwrap();
        let large = checkpoint_latency(&mut j, &v, b.keys, cfg.checkpoints, cfg.ckpt_updates, 11);
        j.close().unwrap();
        ckpt = Some((fresh, small, large, small_keys));
    }

    // ---- 3. Append latency during compaction.
    let mut append: Option<AppendLatency> = None;
    if let (true, Some(b)) = (cfg.runs("append"), built.as_ref()) {
        append = Some(append_latency(b.dir.path(), b.keys, cfg.append_ops));
    }
    let large_desc = built.as_ref().map(|b| {
        (
            b.keys,
            b.tail_updates,
            b.snapshot_len,
            b.compaction.records,
            b.compaction.duration,
        )
    });
    drop(built); // free the disk before the last phase

    // ---- 4. Write amplification.
    let wa = cfg
        .runs("wa")
        .then(|| write_amplification(cfg.wa_keys, cfg.wa_updates, cfg.wa_min_tail_mib * MIB));

    // ---- Summary.
    println!();
    println!(
        "== statejournal recovery benchmark (issue #4): load average at start {load_start}, at end {}; {:.0} s in all; peak RSS {} ==",
        loadavg(),
        started.elapsed().as_secs_f64(),
        peak_rss()
    );
    if let Some((keys, tail, snap_len, _, _)) = large_desc {
        println!(
            "state: {keys} keys of 16 B with 100 B values, snapshot {:.1} MiB; log tail {tail} updates",
            mib(snap_len)
        );
    }
    if !opens.is_empty() {
        print_recovery(
            &opens,
            &floors,
            &floor_empty,
            &scans,
            cold.as_ref(),
            large_desc,
        );
    }
    if let Some((fresh, small, large, small_keys)) = &ckpt {
        print_checkpoints(fresh, small, large, *small_keys, cfg.ckpt_updates);
    }
    if let Some(a) = append {
        print_append(a);
    }
    if let Some(w) = wa {
        print_wa(&w, cfg.wa_keys, cfg.wa_updates);
    }
}

fn print_recovery(
    opens: &[(Duration, StateRecovery)],
    floors: &[FloorRun],
    floor_empty: &[(Duration, u64)],
    scans: &[(Duration, u64, u64)],
    cold: Option<&(Duration, StateRecovery)>,
    large: Option<(u64, u64, u64, u64, Duration)>,
) {
    let snap_file = large.map_or(0, |l| l.2) as f64;
    let med = |f: &dyn Fn(&(Duration, StateRecovery)) -> f64| median(opens.iter().map(f).collect());
    let snap_s = med(&|(_, r)| r.snapshot_time.as_secs_f64());
    let log_s = med(&|(_, r)| r.log.duration.as_secs_f64());
    let replay_s = med(&|(_, r)| r.replay_time.as_secs_f64());
    let total_s = med(&|(d, _)| d.as_secs_f64());
    let r0 = &opens[0].1;
    let entries = r0.snapshot_entries as f64;
    let records = r0.replayed_records as f64;
    let replay_bytes = r0.replayed_bytes as f64;
    let log_frames = r0.log.bytes as f64;
    println!(
        "\n-- 1. recovery: Journal::open, median of {} opens from the page cache --",
        opens.len()
    );
    println!(
        "  snapshot load    {:>8.0} ms  {:>5.2} GB/s of file ({:.1} MiB), {:>5.2} GB/s of keys+values, {:.2} M entries/s",
        snap_s * 1e3,
        snap_file / snap_s / 1e9,
        snap_file / MIB as f64,
        r0.snapshot_bytes as f64 / snap_s / 1e9,
        entries / snap_s / 1e6
    );
    println!(
        "  log recovery     {:>8.0} ms  (Log::open: scan and CRC of {:.1} MiB of frames in {} segments, {:.2} GB/s)",
        log_s * 1e3,
        log_frames / MIB as f64,
        r0.log.segments,
        log_frames / log_s / 1e9
    );
    println!(
        "  replay           {:>8.0} ms  {:.2} M records/s, {:.0} MB/s of payload ({} records, {:.1} MiB)",
        replay_s * 1e3,
        records / replay_s / 1e6,
        replay_bytes / replay_s / 1e6,
        r0.replayed_records,
        replay_bytes / MIB as f64
    );
    println!(
        "  replay + log recovery: {:.2} M records/s",
        records / (replay_s + log_s) / 1e6
    );
    println!(
        "  whole open       {:>8.0} ms  (min {:.0}, max {:.0}); state + tail {:.2} GB/s of files",
        total_s * 1e3,
        opens
            .iter()
            .map(|(d, _)| ms(*d))
            .fold(f64::INFINITY, f64::min),
        opens.iter().map(|(d, _)| ms(*d)).fold(0.0, f64::max),
        (snap_file + log_frames) / total_s / 1e9
    );
    if let Some((d, r)) = cold {
        println!(
            "  cold (pages dropped first): open {:.0} ms: snapshot {:.0} ms ({:.2} GB/s), log recovery {:.0} ms, replay {:.0} ms ({:.2} M records/s)",
            ms(*d),
            ms(r.snapshot_time),
            snap_file / r.snapshot_time.as_secs_f64() / 1e9,
            ms(r.log.duration),
            ms(r.replay_time),
            r.replayed_records as f64 / r.replay_time.as_secs_f64() / 1e6
        );
    }
    if !floors.is_empty() {
        let fs = median(floors.iter().map(|f| f.snapshot.as_secs_f64()).collect());
        let fl = median(floors.iter().map(|f| f.log.as_secs_f64()).collect());
        let f0 = &floors[0];
        println!(
            "  floor, snapshot  {:>8.0} ms  {:.2} GB/s of file, {:.2} M entries/s (read, CRC per block, HashMap presized)",
            fs * 1e3,
            snap_file / fs / 1e9,
            f0.entries as f64 / fs / 1e6
        );
        println!(
            "  floor, log       {:>8.0} ms  {:.2} M records/s (read, CRC per frame, insert into the map holding the snapshot)",
            fl * 1e3,
            f0.records as f64 / fl / 1e6
        );
        println!("  floor, whole     {:>8.0} ms", (fs + fl) * 1e3);
        let ours_rate = records / replay_s;
        let floor_rate = f0.records as f64 / fl;
        println!(
            "  GOAL replay >= 2x floor records/s: {:.2}x ({:.2} vs {:.2} M/s){}",
            ours_rate / floor_rate,
            ours_rate / 1e6,
            floor_rate / 1e6,
            verdict(ours_rate / floor_rate >= 2.0)
        );
        if !floor_empty.is_empty() {
            let fe = median(floor_empty.iter().map(|f| f.0.as_secs_f64()).collect());
            let fer = floor_empty[0].1 as f64 / fe;
            println!(
                "       against the log floor into an empty HashMap ({:.0} ms, {:.2} M records/s): {:.2}x{}",
                fe * 1e3,
                fer / 1e6,
                ours_rate / fer,
                verdict(ours_rate / fer >= 2.0)
            );
        }
        println!(
            "       counting the log's own recovery scan as replay: {:.2}x",
            (records / (replay_s + log_s)) / floor_rate
        );
        println!(
            "  GOAL snapshot load >= 1 GB/s: {:.2} GB/s{}; the floor's {:.2} GB/s: ours is {:.2}x the floor",
            snap_file / snap_s / 1e9,
            verdict(snap_file / snap_s >= 1e9),
            snap_file / fs / 1e9,
            fs / snap_s
        );
        println!(
            "  whole open vs whole floor: {:.2}x the floor's speed",
            (fs + fl) / total_s
        );
    }
    if !scans.is_empty() {
        let sc = median(scans.iter().map(|s| s.0.as_secs_f64()).collect());
        println!(
            "  log scan alone (read, CRC, decode; no map): {:.0} ms, {:.2} M records/s, {:.2} GB/s of payload",
            sc * 1e3,
            scans[0].1 as f64 / sc / 1e6,
            scans[0].2 as f64 / sc / 1e9
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "  [met]"
    } else {
        "  [MISSED]"
    }
}

fn print_checkpoints(
    fresh: &Checkpoints,
    small: &Checkpoints,
    large: &Checkpoints,
    small_keys: u64,
    updates: u64,
) {
    let p50 = |c: &Checkpoints| median(c.times.iter().map(|d| d.as_secs_f64()).collect());
    let row = |name: &str, c: &Checkpoints| {
        let mut v: Vec<f64> = c.times.iter().map(|d| ms(*d)).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "  {name:<30} p50 {:>6.2} ms  min {:>6.2}  max {:>6.2}  ({} checkpoints; {} segment(s) in the manifest; {:.0} KiB dirtied per round; the first, covering the whole tail: {:.1} ms)",
            p50(c) * 1e3,
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
            v.len(),
            c.segments,
            c.dirtied_per_round.unwrap_or(f64::NAN) / 1024.0,
            ms(c.first)
        );
    };
    println!("\n-- 2. checkpoint latency, {updates} updates before each --");
    row(&format!("small ({small_keys} keys), as built"), fresh);
    row("small, reopened", small);
    row("large, reopened", large);
    let ratio = p50(large) / p50(small);
    println!(
        "  GOAL large within 1.5x of small (both reopened): {ratio:.2}x{}  (large vs small as built: {:.2}x)",
        verdict(ratio <= 1.5),
        p50(large) / p50(fresh)
    );
}

fn print_append(a: AppendLatency) {
    let AppendLatency {
        mut idle,
        mut during,
        idle_time,
        window,
        report,
    } = a;
    idle.sort_unstable();
    during.sort_unstable();
    println!("\n-- 3. ValueState::set latency (Buffered), idle vs while a compaction runs --");
    let row = |name: &str, v: &[u32], rate: f64| {
        println!(
            "  {name:<8} p50 {:>6.0} ns  p99 {:>7.0} ns  p99.9 {:>8.0} ns  max {:>10.0} ns  ({} ops, {:.2} M ops/s)",
            pct(v, 50.0),
            pct(v, 99.0),
            pct(v, 99.9),
            v.last().map_or(f64::NAN, |&x| f64::from(x)),
            v.len(),
            rate / 1e6
        );
    };
    row("idle", &idle, idle.len() as f64 / idle_time.as_secs_f64());
    row(
        "during",
        &during,
        during.len() as f64 / window.as_secs_f64(),
    );
    let over = |v: &[u32], ns: u32| v.len() - v.partition_point(|&x| x <= ns);
    let top = |v: &[u32]| {
        v.iter()
            .rev()
            .take(5)
            .map(|&x| format!("{:.1}", f64::from(x) / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, v) in [("idle", &idle), ("during", &during)] {
        println!(
            "  {name:<8} ops over 100 us: {}, over 1 ms: {}, over 10 ms: {}; longest (ms): {}",
            over(v, 100_000),
            over(v, 1_000_000),
            over(v, 10_000_000),
            top(v)
        );
    }
    match report {
        Some(r) => println!(
            "  the compaction: {:.0} ms by its report ({} records merged, {} delta keys, {:.1} MiB written); ops timed during it over {:.0} ms",
            ms(r.duration),
            r.records,
            r.delta_keys,
            mib(r.bytes),
            ms(window)
        ),
        None => println!("  NO compaction was observed: the 'during' figures are meaningless"),
    }
    let ratio = pct(&during, 99.0) / pct(&idle, 99.0);
    println!(
        "  GOAL p99 during <= 2x idle: {ratio:.2}x{}  (p99.9: {:.2}x)",
        verdict(ratio <= 2.0),
        pct(&during, 99.9) / pct(&idle, 99.9)
    );
}

fn print_wa(w: &WriteAmp, keys: u64, updates: u64) {
    let io = &w.io;
    println!(
        "\n-- 4. write amplification: {keys} keys, {updates} updates, automatic policy (min tail {:.0} MiB, ratio 100%) --",
        mib(w.min_tail)
    );
    println!(
        "  {:.1} s ({:.2} M updates/s incl. compactions)",
        w.time.as_secs_f64(),
        (keys + updates) as f64 / w.time.as_secs_f64() / 1e6
    );
    println!(
        "  mutation bytes {:.1} MiB, log bytes {:.1} MiB, snapshot bytes {:.1} MiB, manifest bytes {}, compactions {}, checkpoints {}",
        mib(io.mutation_bytes),
        mib(io.log_bytes),
        mib(io.snapshot_bytes),
        io.manifest_bytes,
        io.compactions,
        io.checkpoints
    );
    if !w.reports.is_empty() {
        let n = w.reports.len() as f64;
        let avg = |f: &dyn Fn(&CompactionReport) -> f64| w.reports.iter().map(f).sum::<f64>() / n;
        println!(
            "  compactions seen: {}, on average {:.0} ms, {:.1} MiB of log merged ({:.0} k records, {:.0} k distinct keys) into a {:.1} MiB snapshot",
            w.reports.len(),
            avg(&|r| ms(r.duration)),
            avg(&|r| mib(r.log_bytes)),
            avg(&|r| r.records as f64 / 1e3),
            avg(&|r| r.delta_keys as f64 / 1e3),
            avg(&|r| mib(r.bytes))
        );
    }
    for r in &w.reports {
        println!(
            "    compaction: LSN {} -> {}: {:.1} MiB of log ({} records), {:.0} ms",
            r.base_lsn,
            r.lsn,
            mib(r.log_bytes),
            r.records,
            ms(r.duration)
        );
    }
    println!(
        "  backpressure (writers wait at 1000% of the size that starts a compaction): {} write stalls, {:.0} ms in all",
        io.write_stalls,
        ms(io.write_stall_time)
    );
    let log_amp = io.log_bytes as f64 / io.mutation_bytes.max(1) as f64;
    println!(
        "  write amplification {:.2} (log framing alone {:.2}); the policy bounds it by {:.2} (log x (1 + 100/ratio)) plus one snapshot; files left: {:.1} MiB",
        io.write_amplification(),
        log_amp,
        log_amp * 2.0,
        mib(w.dir_bytes)
    );
}
