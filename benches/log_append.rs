//! Append and commit throughput of the [`Log`], measured against bare floors in the same run.
//!
//! Criterion times every benchmark (`iter_custom`); each timed call also adds its elapsed time and
//! iteration count to a global table, from which `main` prints a summary of throughputs and ratios
//! once the groups have run:
//!
//! * `floor/{wrap,fresh}/N`: frame (crc32fast + memcpy) records of `N`-byte payloads into a
//!   fallocated 64 MiB `MmapMut`; `wrap` starts again at the beginning of the same mapping when it
//!   is full, `fresh` moves on to a new fallocated file (page faults on fresh pages, like the log;
//!   default advice, where the log's segments use `MADV_RANDOM`). Neither floor ever syncs.
//! * `append/{buffered,periodic,sync_batch256,sync_each}/N`: `Log::append` of `N`-byte payloads;
//!   `sync_batch256` commits once per 256 records, `sync_each` after every record;
//!   `append/buffered_appender/N`: the same as `buffered` through one `Log::appender()`.
//! * `threads/{1,2}`: Buffered 128-byte appends from one or two threads sharing an `Arc<Log>`;
//!   `threads_appender/{1,2}`: the same with an `Appender` per thread; in the interleaved runs
//!   only, `floor_threads/{1,2}`: each thread writes the floor's frames into fresh files of its
//!   own, sharing nothing (what the machine gives two threads; not a target).
//! * `committers/{1,4,16}`: threads each appending one 128-byte record and committing (Sync).
//! * `pwrite_fdatasync/{zeroed,fallocated}`: one framed 128-byte record per `pwrite` + `fdatasync`
//!   on a file preallocated by writing zeros, or by `fallocate` (as the log's segments are);
//!   `pwrite_fdatasync/batch256`: 256 frames per `pwrite` + `fdatasync` (the floor of item 7);
//!   the interleaved pair also runs it on a fallocated file (`batch256_fallocated`, as the log's
//!   segments are).
//!
//! `append/sync_each/128`, `committers/*` and `pwrite_fdatasync/*` also read `/proc/self/io` and the
//! block device's `stat` around every timed call, for the bytes and flushes per commit.
//!
//! Criterion runs benchmarks one after the other, so a ratio of two of them also measures how the
//! machine's load (and the disk's flush latency) changed in between. After the groups, `main`
//! therefore also runs the pairs behind each target *interleaved* (short alternating bursts of each
//! contender, several rounds) and prints those ratios next to the sequential ones. With a filter,
//! only the pairs whose name (`interleaved/<pair>`) contains it run: `-- interleaved` runs them all
//! and no criterion benchmark.
//!
//! Environment: `SJ_BENCH_QUICK=1` runs every measurement briefly; `SJ_BENCH_DIR` overrides the
//! directory of the temporary logs (default: a directory under cargo's `target/tmp`).

// memmap2 mappings and `fallocate` for the floor and the baselines; each block says why it is sound.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use memmap2::MmapMut;
use statejournal::codec::frame::{encode_frame, frame_size, FrameKind, FRAME_HEADER_LEN};
use statejournal::{Durability, Log, LogOptions, DEFAULT_SEGMENT_SIZE};
use tempfile::TempDir;

const PAYLOADS: [usize; 3] = [16, 128, 1024];
const SEGMENT: u64 = DEFAULT_SEGMENT_SIZE;
const BATCH: u64 = 256;
const COMMITTERS: [usize; 3] = [1, 4, 16];

// ---------------------------------------------------------------------------------------------
// Run configuration and result tables
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunMode {
    Full,
    Quick,
    /// `--test` (or `cargo test --benches`): criterion runs every benchmark once.
    Test,
    List,
    /// `--profile-time`: criterion runs the routines without measuring; no interleaved pairs.
    Profile,
}

#[derive(Debug)]
struct Config {
    mode: RunMode,
    dir: PathBuf,
    /// `major:minor` of the block device holding `dir`, if it has a `/sys/dev/block` entry.
    dev: Option<String>,
    /// Criterion's benchmark filter, if one was given.
    filter: Option<String>,
}

/// Criterion's options that take a value (the value is not a filter).
const VALUE_OPTIONS: [&str; 19] = [
    "-c",
    "--color",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let quick = std::env::var("SJ_BENCH_QUICK").is_ok_and(|v| v == "1");
        // Criterion's own rule: without `--bench` (cargo test --benches) or with `--test`, it
        // runs each benchmark once as a test.
        let mode = if has("--list") {
            RunMode::List
        } else if args.iter().any(|a| a.starts_with("--profile-time")) {
            RunMode::Profile
        } else if has("--test") || !has("--bench") {
            RunMode::Test
        } else if quick {
            RunMode::Quick
        } else {
            RunMode::Full
        };
        let dir = std::env::var_os("SJ_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sj-bench"));
        std::fs::create_dir_all(&dir).expect("create bench directory");
        let dir = dir.canonicalize().expect("canonicalize bench directory");
        let meta = std::fs::metadata(&dir).expect("stat bench directory");
        let dev = format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()));
        let dev = Path::new("/sys/dev/block")
            .join(&dev)
            .join("stat")
            .exists()
            .then_some(dev);
        let mut filter = None;
        let mut value_next = false;
        for a in args.iter().skip(1) {
            if std::mem::take(&mut value_next) {
                continue;
            }
            if VALUE_OPTIONS.contains(&a.as_str()) {
                value_next = true;
            } else if !a.starts_with('-') {
                filter = Some(a.clone());
            }
        }
        Config {
            mode,
            dir,
            dev,
            filter,
        }
    })
}

/// Total timed duration and iterations of one benchmark, over all of criterion's calls.
#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    elapsed: Duration,
    iters: u64,
}

impl Timing {
    fn per_sec(&self) -> f64 {
        self.iters as f64 / self.elapsed.as_secs_f64().max(1e-12)
    }
}

static TIMINGS: Mutex<BTreeMap<String, Timing>> = Mutex::new(BTreeMap::new());

fn record(key: &str, elapsed: Duration, iters: u64) {
    let mut t = TIMINGS.lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(key.to_owned()).or_default();
    e.elapsed += elapsed;
    e.iters += iters;
}

fn timing(key: &str) -> Option<Timing> {
    let t = TIMINGS.lock().unwrap_or_else(|e| e.into_inner());
    t.get(key).copied().filter(|t| t.iters > 0)
}

/// Where the time of durable commits goes: per workload, the total time of each phase and the
/// number of commits, over every run of the workload (criterion's and the interleaved ones).
static PHASES: Mutex<BTreeMap<String, ([Duration; 3], u64)>> = Mutex::new(BTreeMap::new());

fn record_phases(key: &str, phases: [Duration; 3], commits: u64) {
    let mut t = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(key.to_owned()).or_default();
    for (sum, d) in e.0.iter_mut().zip(phases) {
        *sum += d;
    }
    e.1 += commits;
}

/// The mean time per commit of each phase of `key`, in microseconds.
fn phases_per_commit(key: &str) -> Option<[f64; 3]> {
    let t = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let (sums, commits) = t.get(key).filter(|(_, n)| *n > 0)?;
    Some(sums.map(|d| d.as_secs_f64() * 1e6 / *commits as f64))
}

// ---------------------------------------------------------------------------------------------
// I/O counters (write amplification)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct IoCounters {
    /// `write_bytes` of `/proc/self/io`: bytes this process caused to be written (page dirtying).
    proc_write_bytes: u64,
    /// Write requests, 512-byte sectors written and flush requests of the whole block device.
    dev_writes: u64,
    dev_sectors: u64,
    dev_flushes: u64,
}

impl IoCounters {
    fn read() -> IoCounters {
        let mut c = IoCounters::default();
        if let Ok(s) = std::fs::read_to_string("/proc/self/io") {
            for line in s.lines() {
                if let Some(v) = line.strip_prefix("write_bytes:") {
                    c.proc_write_bytes = v.trim().parse().unwrap_or(0);
                }
            }
        }
        if let Some(dev) = &config().dev {
            let path = Path::new("/sys/dev/block").join(dev).join("stat");
            if let Ok(s) = std::fs::read_to_string(path) {
                let f: Vec<u64> = s
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                c.dev_writes = f.get(4).copied().unwrap_or(0);
                c.dev_sectors = f.get(6).copied().unwrap_or(0);
                c.dev_flushes = f.get(15).copied().unwrap_or(0);
            }
        }
        c
    }

    fn since(self, before: IoCounters) -> IoCounters {
        IoCounters {
            proc_write_bytes: self
                .proc_write_bytes
                .saturating_sub(before.proc_write_bytes),
            dev_writes: self.dev_writes.saturating_sub(before.dev_writes),
            dev_sectors: self.dev_sectors.saturating_sub(before.dev_sectors),
            dev_flushes: self.dev_flushes.saturating_sub(before.dev_flushes),
        }
    }
}

/// Per-call I/O samples: (commits, counters over those commits).
static IO_SAMPLES: Mutex<BTreeMap<String, Vec<(u64, IoCounters)>>> = Mutex::new(BTreeMap::new());

fn record_io(key: &str, commits: u64, io: IoCounters) {
    let mut t = IO_SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    t.entry(key.to_owned()).or_default().push((commits, io));
}

/// Per-commit figures of the I/O samples of `key`: (aggregate over all samples, median sample).
fn io_per_commit(key: &str) -> Option<([f64; 4], [f64; 4])> {
    let t = IO_SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let samples = t.get(key)?;
    let per = |n: u64, c: &IoCounters| {
        let n = n.max(1) as f64;
        [
            c.proc_write_bytes as f64 / n,
            c.dev_sectors as f64 * 512.0 / n,
            c.dev_writes as f64 / n,
            c.dev_flushes as f64 / n,
        ]
    };
    let mut total = (0u64, IoCounters::default());
    for (n, c) in samples {
        total.0 += n;
        total.1.proc_write_bytes += c.proc_write_bytes;
        total.1.dev_sectors += c.dev_sectors;
        total.1.dev_writes += c.dev_writes;
        total.1.dev_flushes += c.dev_flushes;
    }
    if total.0 == 0 {
        return None;
    }
    let mut each: Vec<[f64; 4]> = samples
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, c)| per(*n, c))
        .collect();
    let mut median = [0.0; 4];
    for (i, m) in median.iter_mut().enumerate() {
        each.sort_by(|a, b| a[i].total_cmp(&b[i]));
        *m = each[each.len() / 2][i];
    }
    Some((per(total.0, &total.1), median))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&config().dir)
        .expect("create temporary directory")
}

/// Allocates real blocks for `len` bytes of `file` (unwritten extents, as the log's segments).
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    loop {
        // SAFETY: `fallocate` takes a descriptor that `file` keeps open for the call and plain
        // integers; it touches none of our memory.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn create_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create file")
}

/// Runs `work(count)` on `threads` threads, splitting `iters` between them, and times it from a
/// common start (a barrier) to the end of the slowest thread.
fn run_threads(threads: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    let n = threads as u64;
    let start = thread::scope(|s| {
        for k in 0..n {
            let count = iters / n + u64::from(k < iters % n);
            let (barrier, work) = (&barrier, &work);
            s.spawn(move || {
                barrier.wait();
                work(k as usize, count);
            });
        }
        barrier.wait();
        Instant::now()
    });
    start.elapsed()
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>, slow: bool) {
    let (warm, measure, samples) = match (config().mode, slow) {
        (RunMode::Quick, _) => (Duration::from_millis(200), Duration::from_millis(600), 10),
        (_, false) => (Duration::from_millis(1000), Duration::from_secs(3), 30),
        (_, true) => (Duration::from_millis(1000), Duration::from_secs(3), 10),
    };
    g.warm_up_time(warm)
        .measurement_time(measure)
        .sample_size(samples)
        .throughput(Throughput::Elements(1));
    if slow || config().mode == RunMode::Quick {
        g.sampling_mode(SamplingMode::Flat);
    }
}

/// A measured operation: runs the given number of iterations and returns the time they took
/// (setup and cleanup excluded).
type Workload<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Registers `w` with criterion under `id`, recording every timed call under `key`.
fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    key: &str,
    mut w: impl FnMut(u64) -> Duration,
) {
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let elapsed = w(iters);
            record(key, elapsed, iters);
            elapsed
        })
    });
}

// ---------------------------------------------------------------------------------------------
// 1. The floor: bare framing into a memory map
// ---------------------------------------------------------------------------------------------

/// Writes a data frame (header, payload, zero padding) into `out`, which is `frame_size` bytes:
/// the same bytes as `encode_frame`, computed as a bare loop would.
#[inline(always)]
fn write_frame(out: &mut [u8], lsn: u64, payload: &[u8]) {
    let len = FRAME_HEADER_LEN + payload.len();
    let mut head = [0u8; FRAME_HEADER_LEN];
    head[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    head[8..16].copy_from_slice(&lsn.to_le_bytes());
    head[16] = FrameKind::Data as u8;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[4..]);
    h.update(payload);
    head[..4].copy_from_slice(&h.finalize().to_le_bytes());
    out[..FRAME_HEADER_LEN].copy_from_slice(&head);
    out[FRAME_HEADER_LEN..len].copy_from_slice(payload);
    out[len..].fill(0);
}

struct Floor {
    dir: TempDir,
    fresh: bool,
    map: MmapMut,
    file: File,
    pos: usize,
    lsn: u64,
    files: u64,
    /// Full mappings of the `fresh` floor, unmapped and deleted outside the timed region (the log
    /// also keeps full segments until `delete_below`).
    retired: Vec<(MmapMut, File, PathBuf)>,
}

impl Floor {
    fn new(fresh: bool) -> Floor {
        let dir = tempdir("sj-floor-");
        let (file, map) = Self::map_new(dir.path(), 0);
        Floor {
            dir,
            fresh,
            map,
            file,
            pos: 0,
            lsn: 0,
            files: 1,
            retired: Vec::new(),
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("floor-{id}"))
    }

    fn map_new(dir: &Path, id: u64) -> (File, MmapMut) {
        let file = create_file(&dir.join(format!("floor-{id}")));
        fallocate(&file, SEGMENT).expect("fallocate");
        // SAFETY: the file was created by us in a private temporary directory and nothing else
        // opens, truncates or maps it while this mapping lives.
        let map = unsafe { MmapMut::map_mut(&file) }.expect("mmap");
        (file, map)
    }

    #[inline(always)]
    fn append(&mut self, payload: &[u8]) {
        let size = (FRAME_HEADER_LEN + payload.len() + 7) & !7;
        if self.pos + size > self.map.len() {
            self.roll();
        }
        self.lsn += 1;
        write_frame(&mut self.map[self.pos..self.pos + size], self.lsn, payload);
        self.pos += size;
    }

    #[cold]
    fn roll(&mut self) {
        self.pos = 0;
        if self.fresh {
            let (file, map) = Self::map_new(self.dir.path(), self.files);
            let old_map = std::mem::replace(&mut self.map, map);
            let old_file = std::mem::replace(&mut self.file, file);
            self.retired
                .push((old_map, old_file, self.path(self.files - 1)));
            self.files += 1;
        }
    }

    fn cleanup(&mut self) {
        for (map, file, path) in self.retired.drain(..) {
            drop(map);
            drop(file);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn floor_workload<'a>(fresh: bool, size: usize) -> Workload<'a> {
    let p = payload(size);
    let mut state: Option<Floor> = None;
    Box::new(move |iters| {
        let floor = state.get_or_insert_with(|| Floor::new(fresh));
        let start = Instant::now();
        for _ in 0..iters {
            floor.append(black_box(&p));
        }
        let elapsed = start.elapsed();
        floor.cleanup();
        elapsed
    })
}

fn floor_variant(fresh: bool) -> &'static str {
    if fresh {
        "fresh"
    } else {
        "wrap"
    }
}

fn bench_floor(c: &mut Criterion) {
    // The floor writes exactly the frames the log writes.
    for size in PAYLOADS {
        let p = payload(size);
        let n = frame_size(size).expect("frame size");
        let (mut ours, mut theirs) = (vec![0u8; n], vec![0u8; n]);
        write_frame(&mut ours, 42, &p);
        encode_frame(&mut theirs, 42, FrameKind::Data, &p);
        assert_eq!(ours, theirs, "floor frame differs from encode_frame");
    }
    let mut g = c.benchmark_group("floor");
    configure(&mut g, false);
    for fresh in [false, true] {
        let variant = floor_variant(fresh);
        for size in PAYLOADS {
            let key = format!("floor/{variant}/{size}");
            let w = floor_workload(fresh, size);
            bench(&mut g, BenchmarkId::new(variant, size), &key, w);
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Log::append in every durability mode
// ---------------------------------------------------------------------------------------------

struct LogBench {
    // Dropped before the directory is removed.
    log: Arc<Log>,
    _dir: TempDir,
}

impl LogBench {
    fn open(durability: Durability) -> LogBench {
        let dir = tempdir("sj-log-");
        let opts = LogOptions::default()
            .segment_size(SEGMENT)
            .durability(durability);
        let log = Arc::new(Log::open(dir.path(), opts).expect("open log"));
        LogBench { log, _dir: dir }
    }

    /// Deletes full segments (outside the timed region) so the disk does not fill up.
    fn trim(&self) {
        self.log
            .delete_below(self.log.last_lsn())
            .expect("delete_below");
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Buffered,
    /// Buffered, through one [`statejournal::Appender`] (the single-thread path).
    BufferedAppender,
    Periodic,
    SyncBatch,
    SyncEach,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Buffered,
        Mode::BufferedAppender,
        Mode::Periodic,
        Mode::SyncBatch,
        Mode::SyncEach,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Buffered => "buffered",
            Mode::BufferedAppender => "buffered_appender",
            Mode::Periodic => "periodic",
            Mode::SyncBatch => "sync_batch256",
            Mode::SyncEach => "sync_each",
        }
    }

    fn durability(self) -> Durability {
        match self {
            Mode::Buffered | Mode::BufferedAppender => Durability::Buffered,
            Mode::Periodic => Durability::Periodic(Duration::from_millis(100)),
            Mode::SyncBatch | Mode::SyncEach => Durability::Sync,
        }
    }
}

/// Appends `iters` records as `mode` says and returns the time taken.
fn append_loop(log: &Log, mode: Mode, p: &[u8], iters: u64) -> Duration {
    let start = Instant::now();
    match mode {
        Mode::Buffered | Mode::Periodic => {
            for _ in 0..iters {
                black_box(log.append(black_box(p)).expect("append"));
            }
        }
        Mode::BufferedAppender => {
            let mut appender = log.appender();
            for _ in 0..iters {
                black_box(appender.append(black_box(p)).expect("append"));
            }
        }
        Mode::SyncBatch => {
            // The time inside `commit` is also summed apart (an `Instant` pair per commit of
            // 256 records), for the summary's split of a commit's time.
            let (mut committing, mut commits) = (Duration::ZERO, 0u64);
            let mut commit = || {
                let at = Instant::now();
                black_box(log.commit().expect("commit"));
                committing += at.elapsed();
                commits += 1;
            };
            for i in 1..=iters {
                black_box(log.append(black_box(p)).expect("append"));
                if i.is_multiple_of(BATCH) {
                    commit();
                }
            }
            if !iters.is_multiple_of(BATCH) {
                commit();
            }
            let elapsed = start.elapsed();
            record_phases(
                &format!("append/sync_batch256/{}", p.len()),
                [
                    elapsed.saturating_sub(committing),
                    committing,
                    Duration::ZERO,
                ],
                commits,
            );
            return elapsed;
        }
        Mode::SyncEach => {
            for _ in 0..iters {
                black_box(log.append(black_box(p)).expect("append"));
                black_box(log.commit().expect("commit"));
            }
        }
    }
    start.elapsed()
}

/// `io_key`: also record the I/O counters of every call under this key.
fn append_workload<'a>(mode: Mode, size: usize, io_key: Option<String>) -> Workload<'a> {
    let p = payload(size);
    let mut state: Option<LogBench> = None;
    Box::new(move |iters| {
        let lb = state.get_or_insert_with(|| LogBench::open(mode.durability()));
        let before = IoCounters::read();
        let elapsed = append_loop(&lb.log, mode, &p, iters);
        if let Some(key) = &io_key {
            record_io(key, iters, IoCounters::read().since(before));
        }
        lb.trim();
        elapsed
    })
}

fn bench_append(c: &mut Criterion) {
    for mode in Mode::ALL {
        let mut g = c.benchmark_group("append");
        configure(&mut g, matches!(mode, Mode::SyncEach));
        for size in PAYLOADS {
            let key = format!("append/{}/{size}", mode.name());
            let io = (matches!(mode, Mode::SyncEach) && size == 128).then(|| key.clone());
            let w = append_workload(mode, size, io);
            bench(&mut g, BenchmarkId::new(mode.name(), size), &key, w);
        }
        g.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. One vs two appending threads; 5. concurrent committers
// ---------------------------------------------------------------------------------------------

/// `appender`: each thread appends through its own [`statejournal::Appender`].
fn threads_workload<'a>(threads: usize, appender: bool) -> Workload<'a> {
    let p = payload(128);
    let mut state: Option<LogBench> = None;
    Box::new(move |iters| {
        let lb = state.get_or_insert_with(|| LogBench::open(Durability::Buffered));
        let log = &*lb.log;
        let elapsed = run_threads(threads, iters, |_, n| {
            if appender {
                let mut a = log.appender();
                for _ in 0..n {
                    black_box(a.append(black_box(&p)).expect("append"));
                }
            } else {
                for _ in 0..n {
                    black_box(log.append(black_box(&p)).expect("append"));
                }
            }
        });
        lb.trim();
        elapsed
    })
}

/// What the machine gives `threads` threads: each writes the floor's 128-byte frames into
/// fresh files of its own (no shared state at all), as `floor/fresh` does with one.
fn floor_threads_workload<'a>(threads: usize) -> Workload<'a> {
    let p = payload(128);
    let mut floors: Vec<std::sync::Mutex<Floor>> = Vec::new();
    Box::new(move |iters| {
        if floors.is_empty() {
            floors = (0..threads)
                .map(|_| std::sync::Mutex::new(Floor::new(true)))
                .collect();
        }
        let floors = &floors;
        let elapsed = run_threads(threads, iters, |k, n| {
            // Each thread locks only its own floor, once.
            let mut floor = floors[k].lock().expect("floor lock");
            for _ in 0..n {
                floor.append(black_box(&p));
            }
        });
        for f in floors {
            f.lock().expect("floor lock").cleanup();
        }
        elapsed
    })
}

fn committers_workload<'a>(threads: usize, io_key: Option<String>) -> Workload<'a> {
    let p = payload(128);
    let mut state: Option<LogBench> = None;
    Box::new(move |iters| {
        let lb = state.get_or_insert_with(|| LogBench::open(Durability::Sync));
        let log = &*lb.log;
        let before = IoCounters::read();
        let elapsed = run_threads(threads, iters, |_, n| {
            for _ in 0..n {
                black_box(log.append(black_box(&p)).expect("append"));
                black_box(log.commit().expect("commit"));
            }
        });
        if let Some(key) = &io_key {
            record_io(key, iters, IoCounters::read().since(before));
        }
        lb.trim();
        elapsed
    })
}

fn bench_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    configure(&mut g, false);
    for threads in [1usize, 2] {
        let key = format!("threads/{threads}");
        let w = threads_workload(threads, false);
        bench(&mut g, BenchmarkId::from_parameter(threads), &key, w);
        let key = format!("threads_appender/{threads}");
        let w = threads_workload(threads, true);
        bench(&mut g, BenchmarkId::new("appender", threads), &key, w);
    }
    g.finish();

    let mut g = c.benchmark_group("committers");
    configure(&mut g, true);
    for threads in COMMITTERS {
        let key = format!("committers/{threads}");
        let w = committers_workload(threads, Some(key.clone()));
        bench(&mut g, BenchmarkId::from_parameter(threads), &key, w);
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 6. Bare pwrite + fdatasync of one framed 128-byte record per commit
// ---------------------------------------------------------------------------------------------

struct Pwrite {
    file: File,
    _dir: TempDir,
    /// The frames of one commit.
    buf: Vec<u8>,
    pos: u64,
    lsn: u64,
    /// Time spent framing, in `pwrite` and in `fdatasync`, and the commits, since the last
    /// [`Pwrite::take_phases`].
    phases: [Duration; 3],
    commits: u64,
}

impl Pwrite {
    fn new(fallocated: bool) -> Pwrite {
        let dir = tempdir("sj-pwrite-");
        let file = create_file(&dir.path().join("pwrite"));
        if fallocated {
            fallocate(&file, SEGMENT).expect("fallocate");
        } else {
            let zeros = vec![0u8; 1 << 20];
            for at in (0..SEGMENT).step_by(zeros.len()) {
                file.write_all_at(&zeros, at).expect("write zeros");
            }
        }
        file.sync_all().expect("fsync");
        Pwrite {
            file,
            _dir: dir,
            buf: Vec::new(),
            pos: 0,
            lsn: 0,
            phases: [Duration::ZERO; 3],
            commits: 0,
        }
    }

    /// Writes `records` frames of payload `p` with one `pwrite` and makes them durable with one
    /// `fdatasync`.
    fn commit(&mut self, p: &[u8], records: usize) {
        let start = Instant::now();
        let size = frame_size(p.len()).expect("frame size");
        self.buf.resize(size * records, 0);
        for frame in self.buf.chunks_exact_mut(size) {
            self.lsn += 1;
            write_frame(frame, self.lsn, p);
        }
        if self.pos + self.buf.len() as u64 > SEGMENT {
            self.pos = 0;
        }
        let framed = Instant::now();
        self.file.write_all_at(&self.buf, self.pos).expect("pwrite");
        let written = Instant::now();
        self.file.sync_data().expect("fdatasync");
        let synced = Instant::now();
        self.pos += self.buf.len() as u64;
        for (sum, d) in
            self.phases
                .iter_mut()
                .zip([framed - start, written - framed, synced - written])
        {
            *sum += d;
        }
        self.commits += 1;
    }

    /// The phase times and commits summed since the last call.
    fn take_phases(&mut self) -> ([Duration; 3], u64) {
        let taken = (self.phases, self.commits);
        self.phases = [Duration::ZERO; 3];
        self.commits = 0;
        taken
    }
}

/// One iteration is one 128-byte record; a commit (`pwrite` + `fdatasync`) every `batch` records.
fn pwrite_workload<'a>(fallocated: bool, batch: u64, io_key: Option<String>) -> Workload<'a> {
    let p = payload(128);
    let mut state: Option<Pwrite> = None;
    Box::new(move |iters| {
        let pw = state.get_or_insert_with(|| Pwrite::new(fallocated));
        let before = IoCounters::read();
        let start = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(batch);
            pw.commit(black_box(&p), n as usize);
            left -= n;
        }
        let elapsed = start.elapsed();
        if let Some(key) = &io_key {
            record_io(key, iters, IoCounters::read().since(before));
        }
        let (phases, commits) = pw.take_phases();
        if batch == BATCH {
            let variant = if fallocated { "_fallocated" } else { "" };
            record_phases(
                &format!("pwrite_fdatasync/batch256{variant}"),
                phases,
                commits,
            );
        }
        elapsed
    })
}

fn bench_pwrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("pwrite_fdatasync");
    configure(&mut g, true);
    for (variant, fallocated) in [("zeroed", false), ("fallocated", true)] {
        let key = format!("pwrite_fdatasync/{variant}");
        let w = pwrite_workload(fallocated, 1, Some(key.clone()));
        bench(&mut g, BenchmarkId::from_parameter(variant), &key, w);
    }
    g.finish();
    // 256 records per commit: fast enough for linear sampling.
    let mut g = c.benchmark_group("pwrite_fdatasync");
    configure(&mut g, false);
    let key = "pwrite_fdatasync/batch256";
    let w = pwrite_workload(false, BATCH, None);
    bench(&mut g, BenchmarkId::from_parameter("batch256"), key, w);
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Interleaved pairs: the ratios behind the targets, measured in alternating bursts
// ---------------------------------------------------------------------------------------------

/// Runs `w` in chunks of at least `min_chunk` iterations (growing while they are short) until
/// `budget` of timed work is done; at least one chunk.
fn run_for(w: &mut Workload<'_>, budget: Duration, min_chunk: u64) -> (Duration, u64) {
    let (mut total, mut iters, mut chunk) = (Duration::ZERO, 0u64, min_chunk);
    loop {
        let elapsed = w(chunk);
        total += elapsed;
        iters += chunk;
        if total >= budget {
            return (total, iters);
        }
        if elapsed < Duration::from_millis(5) {
            chunk *= 2;
        }
    }
}

/// How a pair is interleaved: bursts of `burst` of timed work per contender (zero: a single chunk
/// of `min_chunk` iterations, i.e. the contenders alternate operation by operation), round after
/// round for `total` of wall time.
struct Schedule {
    burst: Duration,
    min_chunk: u64,
    total: Duration,
}

const BURSTS: Schedule = Schedule {
    burst: Duration::from_millis(250),
    min_chunk: 1,
    total: Duration::from_secs(5),
};

/// Runs the contenders alternately as `schedule` says, after one discarded warm-up round, and
/// records each under `interleaved/<pair>/<key>`.
fn interleave(pair: &str, schedule: Schedule, mut contenders: Vec<(String, Workload<'_>)>) {
    let (burst, total) = match config().mode {
        RunMode::Full => (schedule.burst, schedule.total),
        RunMode::Quick => (schedule.burst / 4, schedule.total / 6),
        RunMode::Test => (Duration::ZERO, Duration::ZERO),
        RunMode::List | RunMode::Profile => return,
    };
    let name = format!("interleaved/{pair}");
    if config().filter.as_ref().is_some_and(|f| !name.contains(f)) {
        return;
    }
    println!("Running {name} ...");
    if config().mode != RunMode::Test {
        for (_, w) in contenders.iter_mut() {
            run_for(w, burst, schedule.min_chunk);
        }
    }
    let start = Instant::now();
    loop {
        for (key, w) in contenders.iter_mut() {
            let (elapsed, iters) = run_for(w, burst, schedule.min_chunk);
            record(&format!("interleaved/{pair}/{key}"), elapsed, iters);
        }
        if start.elapsed() >= total {
            return;
        }
    }
}

fn run_interleaved() {
    interleave(
        "append128",
        BURSTS,
        vec![
            ("floor/wrap/128".into(), floor_workload(false, 128)),
            ("floor/fresh/128".into(), floor_workload(true, 128)),
            (
                "append/buffered/128".into(),
                append_workload(Mode::Buffered, 128, None),
            ),
            (
                "append/buffered_appender/128".into(),
                append_workload(Mode::BufferedAppender, 128, None),
            ),
        ],
    );
    interleave(
        "threads",
        BURSTS,
        vec![
            ("threads/1".into(), threads_workload(1, false)),
            ("threads/2".into(), threads_workload(2, false)),
            ("threads_appender/1".into(), threads_workload(1, true)),
            ("threads_appender/2".into(), threads_workload(2, true)),
            ("floor_threads/1".into(), floor_threads_workload(1)),
            ("floor_threads/2".into(), floor_threads_workload(2)),
        ],
    );
    interleave(
        "committers",
        Schedule {
            burst: Duration::from_millis(50),
            ..BURSTS
        },
        vec![
            ("committers/1".into(), committers_workload(1, None)),
            ("committers/16".into(), committers_workload(16, None)),
        ],
    );
    // Durable commits alternate one by one: the flush latency of this kind of machine can change
    // by 10x from one second to the next.
    let one_by_one = |min_chunk| Schedule {
        burst: Duration::ZERO,
        min_chunk,
        total: Duration::from_secs(4),
    };
    interleave(
        "batch256",
        one_by_one(BATCH),
        vec![
            (
                "append/sync_batch256/128".into(),
                append_workload(Mode::SyncBatch, 128, None),
            ),
            (
                "pwrite_fdatasync/batch256".into(),
                pwrite_workload(false, BATCH, None),
            ),
            // The log's segments are fallocated (unwritten extents, converted as they are
            // written): the same bare loop on such a file says what that costs a flush.
            (
                "pwrite_fdatasync/batch256_fallocated".into(),
                pwrite_workload(true, BATCH, None),
            ),
        ],
    );
    interleave(
        "commit_vs_pwrite",
        one_by_one(1),
        vec![
            (
                "append/sync_each/128".into(),
                append_workload(Mode::SyncEach, 128, None),
            ),
            (
                "pwrite_fdatasync/zeroed".into(),
                pwrite_workload(false, 1, None),
            ),
            (
                "pwrite_fdatasync/fallocated".into(),
                pwrite_workload(true, 1, None),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}  ")
    }
}

/// Rate of `key` divided by the rate of `base`, from the sequential (criterion) run, or from the
/// interleaved pair `pair` if given.
fn ratio(pair: Option<&str>, key: &str, base: &str) -> Option<f64> {
    let get = |k: &str| match pair {
        Some(p) => timing(&format!("interleaved/{p}/{k}")),
        None => timing(k),
    };
    Some(get(key)?.per_sec() / get(base)?.per_sec())
}

struct Target {
    name: &'static str,
    /// Met when the figure is at least this.
    at_least: f64,
    /// Formats a figure.
    show: fn(f64) -> String,
    /// (label, figure)
    figures: Vec<(&'static str, f64)>,
}

fn show_pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn show_x(x: f64) -> String {
    format!("{x:.2}x")
}

fn show_rate(x: f64) -> String {
    format!("{} records/s", fmt_rate(x).trim_end())
}

fn show_bytes(x: f64) -> String {
    format!("{:.0} B written per commit (limit 8192)", -x)
}

fn bench_dir_description() -> String {
    let cfg = config();
    // The mount holding the directory: the longest mount point that is a prefix of it.
    let mut fs = String::from("?");
    let mut best = 0;
    if let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in s.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(dash) = f.iter().position(|&x| x == "-") else {
                continue;
            };
            let (Some(mnt), Some(fstype), Some(src)) = (f.get(4), f.get(dash + 1), f.get(dash + 2))
            else {
                continue;
            };
            if cfg.dir.starts_with(mnt) && mnt.len() >= best {
                best = mnt.len();
                fs = format!("{fstype} on {src} (mounted at {mnt})");
            }
        }
    }
    let dev = match &cfg.dev {
        Some(d) => {
            let name = std::fs::read_to_string(format!("/sys/dev/block/{d}/uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
                })
                .unwrap_or_default();
            format!("block device {name} ({d})")
        }
        None => "no block device statistics".into(),
    };
    format!("{} -- {fs}; {dev}", cfg.dir.display())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_summary(load_at_start: &str) {
    let cfg = config();
    let mut targets: Vec<Target> = Vec::new();
    println!();
    println!("======================== statejournal log_append summary ========================");
    println!(
        "mode: {:?}{}",
        cfg.mode,
        if cfg.mode == RunMode::Test {
            " (each benchmark ran once: figures are not measurements)"
        } else {
            ""
        }
    );
    println!("bench dir: {}", bench_dir_description());
    println!(
        "load average at start: {load_at_start}; at end: {}",
        loadavg()
    );
    println!(
        "segment size: {} MiB; MB = 10^6 payload bytes; rates = iterations / timed duration,",
        SEGMENT >> 20
    );
    println!("summed over all of criterion's calls (warm-up included) of each benchmark");

    // 1-3.
    println!();
    println!("-- 1-3. append throughput vs the floor --");
    println!(
        "{:>7}  {:<22} {:>12} {:>10} {:>14} {:>14}",
        "payload", "mode", "records/s", "MB/s", "vs floor wrap", "vs floor fresh"
    );
    let rows: [(&str, &str); 7] = [
        ("floor/wrap", "floor (wrap)"),
        ("floor/fresh", "floor (fresh file)"),
        ("append/buffered", "Buffered"),
        ("append/buffered_appender", "Buffered, Appender"),
        ("append/periodic", "Periodic(100ms)"),
        ("append/sync_batch256", "Sync, commit/256"),
        ("append/sync_each", "Sync, commit/record"),
    ];
    for size in PAYLOADS {
        for (key, label) in rows {
            let key = format!("{key}/{size}");
            let Some(tm) = timing(&key) else {
                continue;
            };
            let r = tm.per_sec();
            let vs = |base: &str| {
                ratio(None, &key, &format!("{base}/{size}")).map_or("-".into(), show_pct)
            };
            println!(
                "{:>7}  {:<22} {:>12} {:>10.1} {:>14} {:>14}",
                size,
                label,
                fmt_rate(r),
                r * size as f64 / 1e6,
                vs("floor/wrap"),
                vs("floor/fresh")
            );
        }
    }
    for key in [
        "floor/wrap/128",
        "floor/fresh/128",
        "append/buffered/128",
        "append/buffered_appender/128",
    ] {
        if let Some(tm) = timing(&format!("interleaved/append128/{key}")) {
            println!(
                "interleaved {key:<22} {:>12} records/s",
                fmt_rate(tm.per_sec())
            );
        }
    }
    let f = figures(Some("append128"), "append/buffered/128", "floor/wrap/128");
    let g = figures(Some("append128"), "append/buffered/128", "floor/fresh/128");
    println!(
        "Buffered 128 B vs floor (wrap): {}; vs floor (fresh file): {}",
        show_figures(&f, show_pct),
        show_figures(&g, show_pct)
    );
    targets.push(Target {
        name: "Buffered 128 B append >= 70% of the floor (wrap)",
        at_least: 0.7,
        show: show_pct,
        figures: f,
    });
    targets.push(Target {
        name: "Buffered 128 B append >= 70% of the floor (fresh file)",
        at_least: 0.7,
        show: show_pct,
        figures: g,
    });
    let f = figures(
        Some("append128"),
        "append/buffered_appender/128",
        "floor/wrap/128",
    );
    let g = figures(
        Some("append128"),
        "append/buffered_appender/128",
        "floor/fresh/128",
    );
    println!(
        "Buffered 128 B through an Appender vs floor (wrap): {}; vs floor (fresh file): {}",
        show_figures(&f, show_pct),
        show_figures(&g, show_pct)
    );
    targets.push(Target {
        name: "Buffered 128 B append, Appender, >= 70% of the floor (wrap)",
        at_least: 0.7,
        show: show_pct,
        figures: f,
    });
    targets.push(Target {
        name: "Buffered 128 B append, Appender, >= 70% of the floor (fresh file)",
        at_least: 0.7,
        show: show_pct,
        figures: g,
    });

    // 4.
    println!();
    println!("-- 4. Buffered 128 B appends, threads sharing one Arc<Log> --");
    print_rates(
        &[
            "threads/1",
            "threads/2",
            "threads_appender/1",
            "threads_appender/2",
            "floor_threads/1",
            "floor_threads/2",
        ],
        Some("threads"),
        "records/s total",
    );
    // Not a target: what two threads sharing nothing get from these two cores.
    let f = figures(Some("threads"), "floor_threads/2", "floor_threads/1");
    println!(
        "the floor, a fresh file per thread, 2 threads / 1 thread: {}",
        show_figures(&f, show_x)
    );
    let f = figures(Some("threads"), "threads/2", "threads/1");
    println!("2 threads / 1 thread: {}", show_figures(&f, show_x));
    targets.push(Target {
        name: "two appending threads together not slower than one",
        at_least: 1.0,
        show: show_x,
        figures: f,
    });
    let f = figures(Some("threads"), "threads_appender/2", "threads_appender/1");
    println!(
        "2 threads / 1 thread, an Appender each: {}",
        show_figures(&f, show_x)
    );
    targets.push(Target {
        name: "two appending threads (an Appender each) not slower than one",
        at_least: 1.0,
        show: show_x,
        figures: f,
    });

    // 5.
    println!();
    println!("-- 5. Sync: threads each appending 128 B, then committing; repeat --");
    let keys: Vec<String> = COMMITTERS
        .iter()
        .map(|n| format!("committers/{n}"))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    print_rates(&keys, Some("committers"), "commits/s");
    for key in &keys {
        if let Some((all, _)) = io_per_commit(key) {
            println!(
                "{key}: {:.3} device flushes per commit ({:.1} commits per flush)",
                all[3],
                1.0 / all[3].max(1e-9)
            );
        }
    }
    let f = figures(Some("committers"), "committers/16", "committers/1");
    println!("16 / 1 committers: {}", show_figures(&f, show_x));
    targets.push(Target {
        name: "16 committers >= 4x the commits/s of one",
        at_least: 4.0,
        show: show_x,
        figures: f,
    });

    // 6.
    println!();
    println!("-- 6. one committer vs bare pwrite + fdatasync, one 128 B record per commit --");
    print_rates(
        &[
            "append/sync_each/128",
            "committers/1",
            "pwrite_fdatasync/zeroed",
            "pwrite_fdatasync/fallocated",
        ],
        Some("commit_vs_pwrite"),
        "commits/s",
    );
    println!("(statejournal single committer = append/sync_each/128, in the benchmark thread;");
    println!(" committers/1 is the same loop in a spawned thread; interleaved: commit by commit)");
    for variant in ["zeroed", "fallocated"] {
        let base = format!("pwrite_fdatasync/{variant}");
        let f = figures(Some("commit_vs_pwrite"), "append/sync_each/128", &base);
        println!(
            "statejournal single committer / pwrite+fdatasync ({variant} file): {}",
            show_figures(&f, show_pct)
        );
        targets.push(Target {
            name: if variant == "zeroed" {
                "1 committer >= 90% of pwrite+fdatasync (file preallocated with zeros)"
            } else {
                "1 committer >= 90% of pwrite+fdatasync (fallocated file)"
            },
            at_least: 0.9,
            show: show_pct,
            figures: f,
        });
    }

    // 7.
    println!();
    println!("-- 7. durable commits of 256 records (Sync, one commit per 256 appends) --");
    for size in PAYLOADS {
        if let Some(tm) = timing(&format!("append/sync_batch256/{size}")) {
            let r = tm.per_sec();
            println!(
                "{size:>5} B payload: {:>12} records/s = {:>10} commits/s",
                fmt_rate(r),
                fmt_rate(r / BATCH as f64)
            );
        }
    }
    print_rates(
        &[
            "append/sync_batch256/128",
            "pwrite_fdatasync/batch256",
            "pwrite_fdatasync/batch256_fallocated",
        ],
        Some("batch256"),
        "records/s (128 B)",
    );
    let f = figures(
        Some("batch256"),
        "append/sync_batch256/128",
        "pwrite_fdatasync/batch256",
    );
    println!(
        "statejournal / bare pwrite(256 frames) + fdatasync: {}",
        show_figures(&f, show_pct)
    );
    // Where a commit's time goes: the log's extra cost over the bare loop is in its flush
    // (unmapping the flushed pages, and writeback of pages of a mapped file; see
    // docs/DESIGN.md, "What a durable commit costs beyond a bare pwrite + fdatasync"), not in
    // its appends.
    println!("mean time per 256-record commit of 128 B records, every run of each:");
    if let Some([appends, commit, _]) = phases_per_commit("append/sync_batch256/128") {
        println!(
            "  append/sync_batch256/128: 256 appends {appends:.1} us + commit {commit:.1} us = {:.1} us",
            appends + commit
        );
    }
    for key in [
        "pwrite_fdatasync/batch256",
        "pwrite_fdatasync/batch256_fallocated",
    ] {
        if let Some([framing, pwrite, fdatasync]) = phases_per_commit(key) {
            println!(
                "  {key}: framing {framing:.1} us + pwrite {pwrite:.1} us + fdatasync {fdatasync:.1} us = {:.1} us",
                framing + pwrite + fdatasync
            );
        }
    }
    let mut rates = Vec::new();
    if let Some(tm) = timing("append/sync_batch256/128") {
        rates.push(("sequential", tm.per_sec()));
    }
    if let Some(tm) = timing("interleaved/batch256/append/sync_batch256/128") {
        rates.push(("interleaved", tm.per_sec()));
    }
    targets.push(Target {
        name: "256-record durable commits >= 2 M records/s (128 B)",
        at_least: 2e6,
        show: show_rate,
        figures: rates,
    });

    // 8.
    println!();
    println!("-- 8. bytes written per single-record 128 B durable commit --");
    println!(
        "{:<42} {:>13} {:>10} {:>10} {:>10}",
        "", "process B", "device B", "dev reqs", "dev flush"
    );
    let amp_rows = [
        (
            "append/sync_each/128",
            "statejournal, Sync commit per record",
        ),
        ("committers/1", "statejournal, 1 committer thread"),
        ("pwrite_fdatasync/zeroed", "pwrite+fdatasync, zeroed file"),
        (
            "pwrite_fdatasync/fallocated",
            "pwrite+fdatasync, fallocated file",
        ),
    ];
    for (key, label) in amp_rows {
        let Some((all, median)) = io_per_commit(key) else {
            continue;
        };
        for (which, v) in [("all", all), ("median", median)] {
            println!(
                "{:<42} {:>13.0} {:>10.0} {:>10.2} {:>10.2}",
                format!("{label} [{which}]"),
                v[0],
                v[1],
                v[2],
                v[3]
            );
        }
        if key == "append/sync_each/128" && cfg.dev.is_some() {
            // "At least" with negated bytes: met when at most 8192 bytes.
            targets.push(Target {
                name: "at most two 4 KiB pages written per single-record commit (device)",
                at_least: -8192.0,
                show: show_bytes,
                figures: vec![("all samples", -all[1]), ("median sample", -median[1])],
            });
        }
    }
    println!("process B: write_bytes of /proc/self/io, counted when a page (a whole folio: large");
    println!("folios count in full) turns dirty; device B/reqs/flush: the whole block device's");
    println!("stat (every writer, the file system's own writes included), per commit");

    println!();
    println!("-- targets --");
    if cfg.mode == RunMode::Test {
        println!("(not evaluated in test mode)");
        targets.clear();
    }
    for t in &targets {
        let verdicts: Vec<String> = t
            .figures
            .iter()
            .map(|(label, x)| {
                let met = if *x >= t.at_least { "met" } else { "MISSED" };
                format!("{label} {} ({met})", (t.show)(*x))
            })
            .collect();
        let all_met = t.figures.iter().all(|(_, x)| *x >= t.at_least);
        let any_met = t.figures.iter().any(|(_, x)| *x >= t.at_least);
        // `all` of no figures is true: a target this run did not measure is not met.
        let status = match (all_met, any_met) {
            _ if t.figures.is_empty() => "n/a   ",
            (true, _) => "MET   ",
            (false, true) => "MIXED ",
            (false, false) => "MISSED",
        };
        let verdicts = if verdicts.is_empty() {
            "not measured in this run".to_string()
        } else {
            verdicts.join("; ")
        };
        println!("[{status}] {}: {verdicts}", t.name);
    }
    println!("=================================================================================");
}

/// The ratio rate(key) / rate(base), sequential and (if measured) interleaved in `pair`.
fn figures(pair: Option<&str>, key: &str, base: &str) -> Vec<(&'static str, f64)> {
    let mut f = Vec::new();
    if let Some(r) = ratio(None, key, base) {
        f.push(("sequential", r));
    }
    if let Some(r) = pair.and_then(|p| ratio(Some(p), key, base)) {
        f.push(("interleaved", r));
    }
    f
}

fn show_figures(f: &[(&str, f64)], show: fn(f64) -> String) -> String {
    if f.is_empty() {
        return "-".into();
    }
    f.iter()
        .map(|(label, x)| format!("{} {label}", show(*x)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_rates(keys: &[&str], pair: Option<&str>, unit: &str) {
    println!("{:<30} {:>14} {:>14}", "", "sequential", "interleaved");
    for key in keys {
        let seq = timing(key).map_or("-".into(), |t| fmt_rate(t.per_sec()));
        let il = pair
            .and_then(|p| timing(&format!("interleaved/{p}/{key}")))
            .map_or("-".into(), |t| fmt_rate(t.per_sec()));
        println!("{key:<30} {seq:>14} {il:>14}  {unit}");
    }
}

fn main() {
    let load_at_start = loadavg();
    let mut c = Criterion::default().without_plots().configure_from_args();
    bench_floor(&mut c);
    bench_append(&mut c);
    bench_threads(&mut c);
    bench_pwrite(&mut c);
    if matches!(config().mode, RunMode::List | RunMode::Profile) {
        return;
    }
    c.final_summary();
    run_interleaved();
    print_summary(&load_at_start);
}
