//! Remote checkpoints (issue 6): push throughput and bytes uploaded per checkpoint against bytes
//! appended, to `LocalFileSystem` and, when `SJ_S3_ENDPOINT` names one (moto, say), to S3.
//!
//! Run: `cargo bench --bench remote_push` (under a minute on the 2-core VM with the defaults).
//! Under `cargo test --benches` every phase runs once on tiny sizes.
//!
//! 1. `remote_push/incremental/{local_fs,s3}` (criterion): one iteration = `SJ_BENCH_PUSH_UPDATES`
//!    (2000) `ValueState::set` of random keys (16-byte keys, 100-byte values), then
//!    `checkpoint_and_push` and `wait`. The time is the whole round (appends, local checkpoint,
//!    upload, manifest). Afterwards the sums over every round: bytes uploaded / log bytes appended.
//! 2. Snapshot push: a state of `SJ_BENCH_PUSH_SNAPSHOT_MIB` (64) MiB compacted into one snapshot,
//!    pushed to a fresh prefix (a multipart upload: 8 MiB parts, 4 in flight), timed once:
//!    MiB/s. Then restored into an empty directory, timed: MiB/s; and restored again through
//!    `restore_merged` (the scale-in path, one source over every key group): MiB/s downloaded.
//!    The 1 GiB case: `SJ_BENCH_PUSH_SNAPSHOT_MIB=1024 cargo bench --bench remote_push`
//!    (about 3 GiB of disk and 3 GiB of memory; a few minutes).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use serde_bytes::ByteBuf;
use statejournal::remote::{restore_merged_blocking, MergeSource, RemoteStore, Shipper};
use statejournal::{
    CompactionPolicy, Journal, JournalOptions, KeyGroupRange, ValueState, DEFAULT_MAX_KEY_GROUPS,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether criterion runs for real (`cargo bench`) rather than once as a test.
fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn stores(tmp: &std::path::Path) -> Vec<(&'static str, Arc<dyn ObjectStore>)> {
    let mut v: Vec<(&'static str, Arc<dyn ObjectStore>)> = vec![(
        "local_fs",
        Arc::new(LocalFileSystem::new_with_prefix(tmp).expect("a local store")),
    )];
    match std::env::var("SJ_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let s3 = AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_bucket_name("statejournal-test")
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .expect("an S3 store");
            v.push(("s3", Arc::new(s3)));
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "remote_push: SJ_S3_ENDPOINT is not set, S3 skipped (bucket statejournal-test \
                 must exist on the server)"
            );
        }
    }
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k
}

fn opts() -> JournalOptions {
    JournalOptions::default().compaction(CompactionPolicy::manual())
}

fn bench(c: &mut Criterion) {
    let real = benching();
    let updates = if real {
        env_or("SJ_BENCH_PUSH_UPDATES", 2000)
    } else {
        50
    };
    let snapshot_mib = if real {
        env_or("SJ_BENCH_PUSH_SNAPSHOT_MIB", 64)
    } else {
        1
    };
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("remote_push");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for (name, store) in stores(tmp.path()) {
        let remote = RemoteStore::new(Arc::clone(&store), &format!("incremental-{name}"))
            .expect("a remote store");
        let shipper = Shipper::new(remote).expect("a shipper");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut j = Journal::open(dir.path(), opts()).expect("open");
        let v: ValueState<[u8; 16], ByteBuf> = j.value_state("v").expect("register");
        let mut rng = Rng(7);
        let (_, first) = j.checkpoint_and_push(&shipper).expect("checkpoint");
        first.wait().expect("first push");
        let (mut appended, mut uploaded, mut rounds) = (0u64, 0u64, 0u64);
        group.bench_function(format!("incremental/{name}"), |b| {
            b.iter(|| {
                let before = j.io_stats().log_bytes;
                for _ in 0..updates {
                    let k = key(rng.next() % 100_000);
                    v.set(&mut j, &k, &ByteBuf::from(vec![rng.next() as u8; 100]))
                        .expect("set");
                }
                let (_, push) = j.checkpoint_and_push(&shipper).expect("checkpoint");
                let r = push.wait().expect("push");
                appended += j.io_stats().log_bytes - before;
                uploaded += r.bytes_uploaded;
                rounds += 1;
            })
        });
        println!(
            "remote_push/incremental/{name}: {rounds} checkpoints of {updates} updates: \
             {uploaded} bytes uploaded for {appended} bytes of log appended ({:.4}x, {:.0} bytes \
             per checkpoint)",
            uploaded as f64 / appended.max(1) as f64,
            uploaded as f64 / rounds.max(1) as f64
        );

        // A large snapshot, pushed whole, then restored.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut j = Journal::open(dir.path(), opts()).expect("open");
        let v: ValueState<[u8; 16], ByteBuf> = j.value_state("v").expect("register");
        let entries = (snapshot_mib << 20) / 122;
        for i in 0..entries {
            v.set(&mut j, &key(i), &ByteBuf::from(vec![i as u8; 100]))
                .expect("set");
        }
        let report = j.compact().expect("compact");
        let remote = RemoteStore::new(Arc::clone(&store), &format!("snapshot-{name}"))
            .expect("a remote store");
        // The push runs on a 2-worker runtime of the bench's own, beside a task that sleeps 1 ms
        // in a loop: how late its wake-ups get shows whether the push blocks the runtime's
        // worker threads (blocking file reads, hashing) instead of leaving them to other tasks.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let shipper = Shipper::new(remote.clone())
            .expect("a shipper")
            .on_runtime(rt.handle().clone());
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let stop = Arc::clone(&stop);
            rt.spawn(async move {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(1)));
                }
                worst
            })
        };
        let started = Instant::now();
        let (_, push) = j.checkpoint_and_push(&shipper).expect("checkpoint");
        let r = push.wait().expect("push");
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let worst = rt.block_on(ticker).expect("the ticker");
        println!(
            "remote_push/snapshot/{name}: {} bytes ({} of snapshot, {} of log) in {:.2} s: {:.0} \
             MiB/s; a 1 ms timer on the push's runtime woke up to {:.1} ms late",
            r.bytes_uploaded,
            report.bytes,
            r.bytes_uploaded - r.snapshot_bytes_uploaded,
            secs,
            r.bytes_uploaded as f64 / secs / (1 << 20) as f64,
            worst.as_secs_f64() * 1e3
        );
        let target = tempfile::tempdir().expect("a temporary directory");
        let started = Instant::now();
        let rr = remote
            .restore_blocking(None, target.path())
            .expect("restore");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "remote_push/restore/{name}: {} bytes in {:.2} s: {:.0} MiB/s",
            rr.bytes,
            secs,
            rr.bytes as f64 / secs / (1 << 20) as f64
        );
        // The same checkpoint through a merged restore (the scale-in path: every block
        // re-encoded into a new snapshot, the log tail folded in), as the one source of a
        // journal over every key group.
        let target = tempfile::tempdir().expect("a temporary directory");
        let started = Instant::now();
        let mr = restore_merged_blocking(
            &[MergeSource::latest(remote.clone())],
            KeyGroupRange::all(DEFAULT_MAX_KEY_GROUPS),
            target.path().join("merged"),
        )
        .expect("merged restore");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "remote_push/merged_restore/{name}: {} bytes downloaded, a {} byte snapshot of {} \
             entries written, in {:.2} s: {:.0} MiB/s downloaded",
            mr.bytes,
            mr.snapshot_bytes,
            mr.entries,
            secs,
            mr.bytes as f64 / secs / (1 << 20) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
