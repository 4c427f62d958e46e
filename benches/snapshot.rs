//! Snapshot files: read throughput of the sorted cursor and of the bulk path (reading, CRC-checking
//! and decoding every entry), and write throughput for reference.
//!
//! The snapshot module is crate-private; the benchmark drives it through the `testing` feature's
//! helpers (`statejournal::testing::bench_*`), which do exactly what a loader does at least: open
//! the file, walk every entry of the whole key-group range and touch its key and value (lengths,
//! first and last bytes).
//!
//! * Data: `SJ_SNAPSHOT_MIB` MiB (default 256) of 16-byte keys (17-byte composite keys) and
//!   100-byte values of one value state over 128 key groups, default 256 KiB blocks.
//! * Criterion times `read/cursor` and `read/bulk` with the file in the page cache (it was just
//!   written), throughput in file bytes.
//! * `main` then prints a summary: write (including the final fsyncs), warm reads, and cold reads
//!   of both paths (the file's pages dropped from the page cache with
//!   `posix_fadvise(POSIX_FADV_DONTNEED)` first — only this file's pages, which are clean after
//!   the writer's fsync), and the size of a map-state snapshot (8 map keys per key) against the
//!   same entries as plain entries, which shows what omitting the repeated key saves.
//!
//! Run: `cargo bench --features testing --bench snapshot`. Under `cargo test --benches` (or
//! `--test`) everything runs once on 1 MiB. `SJ_BENCH_DIR` overrides the directory of the
//! temporary files (default `target/tmp/sj-snapshot-bench`).

// `posix_fadvise` to drop the file's pages for the cold reads; the block says why it is sound.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use statejournal::testing::{
    bench_read_snapshot_bulk, bench_read_snapshot_cursor, bench_write_snapshot,
};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const KEY_GROUPS: u16 = 128;
/// Bytes an entry takes in a block: tag, state id, key length, composite key (length byte and
/// key), value length (one byte for 100), value.
const ENTRY_BYTES: u64 = (1 + 1 + 1 + (1 + KEY_LEN) + 1 + VALUE_LEN) as u64;

fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--test") || !has("--bench")
}

fn bench_dir() -> PathBuf {
    let d = std::env::var_os("SJ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/sj-snapshot-bench")
        });
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Drops the file's cached pages (they are clean: the writer fsynced the file).
fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open and
    // owned by `f`, which outlives the call.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed: {rc}");
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// The best of `runs` timed calls of `f`.
fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn main() {
    let test = test_mode();
    let mib: u64 = if test {
        1
    } else {
        std::env::var("SJ_SNAPSHOT_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    };
    let entries = (mib << 20) / ENTRY_BYTES;
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();

    let t = Instant::now();
    let (path, len) =
        bench_write_snapshot(dir.path(), entries, KEY_GROUPS, KEY_LEN, VALUE_LEN, 0).unwrap();
    let write_time = t.elapsed();
    let expected = bench_read_snapshot_bulk(&path).unwrap();
    assert_eq!(expected.0, entries);
    assert_eq!(bench_read_snapshot_cursor(&path).unwrap(), expected);

    let mut c = Criterion::default()
        .without_plots()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    {
        let mut g = c.benchmark_group("read");
        g.throughput(Throughput::Bytes(len));
        g.bench_function("cursor", |b| {
            b.iter(|| black_box(bench_read_snapshot_cursor(&path).unwrap()))
        });
        g.bench_function("bulk", |b| {
            b.iter(|| black_box(bench_read_snapshot_bulk(&path).unwrap()))
        });
        g.finish();
    }
    c.final_summary();
    if test {
        return;
    }

    let path = path.as_path();
    let timed = |f: fn(&Path) -> statejournal::Result<(u64, u64)>, cold: bool| {
        move || {
            if cold {
                evict(path);
            }
            let t = Instant::now();
            let got = f(path).unwrap();
            let d = t.elapsed();
            assert_eq!(got, expected);
            d
        }
    };
    let warm_cursor = best(5, timed(bench_read_snapshot_cursor, false));
    let warm_bulk = best(5, timed(bench_read_snapshot_bulk, false));
    let cold_cursor = best(3, timed(bench_read_snapshot_cursor, true));
    let cold_bulk = best(3, timed(bench_read_snapshot_bulk, true));

    // Map entries: the same number of entries, 8 map keys of 8 bytes per key.
    let map_dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let (_, map_len) =
        bench_write_snapshot(map_dir.path(), entries, KEY_GROUPS, KEY_LEN, VALUE_LEN, 8).unwrap();
    drop(map_dir);
    // Without the same-key encoding each map entry would repeat state id and key.
    let map_len_repeating =
        map_len + (entries - entries.div_ceil(8)) * (1 + 1 + 1 + KEY_LEN as u64);

    println!();
    println!("snapshot of {entries} entries (16 B keys, 100 B values, {KEY_GROUPS} key groups): {:.1} MiB", len as f64 / (1 << 20) as f64);
    println!(
        "  write (with fsync)        {:>6.2} GB/s  ({:.0} ms)",
        gbps(len, write_time),
        write_time.as_secs_f64() * 1e3
    );
    for (what, d) in [
        ("read, warm: cursor", warm_cursor),
        ("read, warm: bulk", warm_bulk),
        ("read, cold: cursor", cold_cursor),
        ("read, cold: bulk", cold_bulk),
    ] {
        println!(
            "  {what:<25} {:>6.2} GB/s  ({:.0} ms, {:.1} M entries/s)",
            gbps(len, d),
            d.as_secs_f64() * 1e3,
            entries as f64 / d.as_secs_f64() / 1e6
        );
    }
    println!(
        "  map state, 8 map keys per key: {:.1} MiB; repeating the key in every entry: {:.1} MiB ({:.0}% larger)",
        map_len as f64 / (1 << 20) as f64,
        map_len_repeating as f64 / (1 << 20) as f64,
        (map_len_repeating as f64 / map_len as f64 - 1.0) * 100.0
    );
}
