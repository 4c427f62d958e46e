//! Simulated power loss (issue 5, item 1): random workloads of value, list, map and namespaced
//! operations (single and in write batches), commits in `Sync` mode or in `Buffered` mode with
//! explicit `sync()`, compactions and checkpoints, with crash points at random operation
//! boundaries and right after every compaction and checkpoint. `CrashSimulator::check` builds
//! crash images from every point (changing only what was not durable there) and checks that
//! `open` and `open_at_checkpoint` of each give exactly the model's state.
//!
//! A second test damages durable data on top of crash images (issue 5, item 2: flipped bits and
//! zeroed pages in segments, snapshots, manifests and `log.meta`) and checks that every damage is
//! refused naming the file and offset, or recovered with the model's state and any loss stated.
//!
//! `SJ_CRASH_IMAGES` (distinct crash images to check, default 10,000) and `SJ_DAMAGED_IMAGES`
//! (default 2,000) make the run longer; see docs/TESTING.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use statejournal::testing::{
    CrashSimulator, DamageCheck, DamageOutcome, DamageReport, DamagedFile, FaultInjector,
};
use statejournal::{
    CompactionPolicy, Durability, Journal, JournalOptions, ListState, LogOptions, MapState,
    ValueState,
};

const KEYS: u16 = 6;

#[derive(Debug, Clone)]
enum Op {
    Set(u16, u32),
    Clear(u16),
    /// A large value, so that segments fill up and roll.
    Blob(u16, usize, u8),
    ListAdd(u16, u8),
    ListClear(u16),
    MapPut(u16, u8, u16),
    MapRemove(u16, u8),
    NsSet(u16, u8, u32),
    Batch(Vec<Op>),
    /// Several large values in a row: two or more segment rolls between flushes.
    Burst(Vec<Op>),
    /// `commit()`: a flush in `Sync` mode; in `Buffered` mode it only reports what is durable.
    Commit,
    /// `sync()`: a flush in any mode.
    Sync,
    Compact,
    Checkpoint,
    Crash,
}

fn key() -> impl Strategy<Value = u16> {
    0..KEYS
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Set(k, v)),
        1 => key().prop_map(Op::Clear),
        2 => (key(), 200usize..2000, any::<u8>()).prop_map(|(k, n, b)| Op::Blob(k, n, b)),
        3 => (key(), any::<u8>()).prop_map(|(k, e)| Op::ListAdd(k, e)),
        1 => key().prop_map(Op::ListClear),
        3 => (key(), 0u8..4, any::<u16>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
        1 => (key(), 0u8..4).prop_map(|(k, u)| Op::MapRemove(k, u)),
        2 => (key(), 0u8..3, any::<u32>()).prop_map(|(k, n, v)| Op::NsSet(k, n, v)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => simple_op(),
        3 => proptest::collection::vec(simple_op(), 1..5).prop_map(Op::Batch),
        1 => proptest::collection::vec(
            (key(), 3000usize..3600, any::<u8>()).prop_map(|(k, n, b)| Op::Blob(k, n, b)),
            3..6
        )
        .prop_map(Op::Burst),
        4 => Just(Op::Commit),
        2 => Just(Op::Sync),
        2 => Just(Op::Compact),
        2 => Just(Op::Checkpoint),
        6 => Just(Op::Crash),
    ]
}

/// The model: everything the workload wrote, as it should read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Model {
    values: BTreeMap<u16, u32>,
    blobs: BTreeMap<u16, Vec<u8>>,
    lists: BTreeMap<u16, Vec<u8>>,
    maps: BTreeMap<u16, BTreeMap<u8, u16>>,
    ns: BTreeMap<(u16, u8), u32>,
}

struct Handles {
    value: ValueState<u16, u32>,
    blob: ValueState<u16, Vec<u8>>,
    list: ListState<u16, u8>,
    map: MapState<u16, u8, u16>,
    ns: ValueState<u16, u32, u8>,
}

fn handles(j: &mut Journal) -> statejournal::Result<Handles> {
    Ok(Handles {
        value: j.value_state("value")?,
        blob: j.value_state("blob")?,
        list: j.list_state("list")?,
        map: j.map_state("map")?,
        ns: j.value_state::<u16, u32>("ns")?.in_namespace::<u8>(),
    })
}

/// Applies a data op to the journal and the model.
fn apply(j: &mut Journal, h: &Handles, m: &mut Model, op: &Op) -> statejournal::Result<()> {
    match op {
        Op::Set(k, v) => {
            h.value.set(j, k, v)?;
            m.values.insert(*k, *v);
        }
        Op::Clear(k) => {
            h.value.clear(j, k)?;
            m.values.remove(k);
        }
        Op::Blob(k, n, b) => {
            let v = vec![*b; *n];
            h.blob.set(j, k, &v)?;
            m.blobs.insert(*k, v);
        }
        Op::ListAdd(k, e) => {
            h.list.add(j, k, e)?;
            m.lists.entry(*k).or_default().push(*e);
        }
        Op::ListClear(k) => {
            h.list.clear(j, k)?;
            m.lists.remove(k);
        }
        Op::MapPut(k, u, v) => {
            h.map.put(j, k, u, v)?;
            m.maps.entry(*k).or_default().insert(*u, *v);
        }
        Op::MapRemove(k, u) => {
            h.map.remove(j, k, u)?;
            if let Some(inner) = m.maps.get_mut(k) {
                inner.remove(u);
                if inner.is_empty() {
                    m.maps.remove(k);
                }
            }
        }
        Op::NsSet(k, n, v) => {
            h.ns.set_in(j, k, n, v)?;
            m.ns.insert((*k, *n), *v);
        }
        Op::Batch(ops) => {
            // The model changes only if the whole batch is logged.
            let mut after = m.clone();
            j.write_batch(|j| {
                for o in ops {
                    apply(j, h, &mut after, o)?;
                }
                Ok(())
            })?;
            *m = after;
        }
        Op::Burst(ops) => {
            for o in ops {
                apply(j, h, m, o)?;
            }
        }
        Op::Commit | Op::Sync | Op::Compact | Op::Checkpoint | Op::Crash => {}
    }
    Ok(())
}

/// Reads everything back (no TTLs: reads log nothing).
fn observe(j: &mut Journal) -> statejournal::Result<Model> {
    let h = handles(j)?;
    let mut m = Model::default();
    for k in 0..KEYS {
        if let Some(v) = h.value.get(j, &k)? {
            m.values.insert(k, v);
        }
        if let Some(v) = h.blob.get(j, &k)? {
            m.blobs.insert(k, v);
        }
        let l = h.list.get(j, &k)?;
        if !l.is_empty() {
            m.lists.insert(k, l);
        }
        let e: BTreeMap<u8, u16> = h.map.entries(j, &k)?.into_iter().collect();
        if !e.is_empty() {
            m.maps.insert(k, e);
        }
        for n in 0..3u8 {
            if let Some(v) = h.ns.get_in(j, &k, &n)? {
                m.ns.insert((k, n), v);
            }
        }
    }
    Ok(m)
}

/// `defer`: in `Buffered` mode, the background thread leaves new segments' directory entries
/// unsynced until a flush, so that several undurable creations pile up and crash images can lose
/// any subset of them.
fn opts(sync: bool, defer: bool) -> JournalOptions {
    let log = LogOptions::default()
        .durability(if sync {
            Durability::Sync
        } else {
            Durability::Buffered
        })
        .segment_size(8 << 10);
    let log = if defer {
        let faults = Arc::new(FaultInjector::new());
        faults.defer_directory_syncs(true);
        log.fault_injector(faults)
    } else {
        log
    };
    JournalOptions::default()
        .log_options(log)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual().snapshot_block_size(512))
}

/// A tmpfs when there is one: images are written and opened by the thousand.
fn scratch() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static IMAGES: AtomicUsize = AtomicUsize::new(0);
static OPENS: AtomicUsize = AtomicUsize::new(0);
static RESTORES: AtomicUsize = AtomicUsize::new(0);
static POINTS: AtomicUsize = AtomicUsize::new(0);
static DUPLICATES: AtomicUsize = AtomicUsize::new(0);
static CASES: AtomicUsize = AtomicUsize::new(0);
static CHANGES: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

/// Runs a workload under the simulator, recording crash points.
fn record(
    sync: bool,
    defer: bool,
    ops: &[Op],
) -> Result<(tempfile::TempDir, CrashSimulator<Model>), TestCaseError> {
    let base = tempfile::tempdir_in(scratch()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let dir = base.path().join("journal");
    let err = |e: statejournal::Error| TestCaseError::fail(e.to_string());
    let mut sim = CrashSimulator::new(&dir, opts(sync, defer), Model::default())
        .map_err(err)?
        .scratch_dir(base.path());
    let h = handles(sim.journal()).map_err(err)?;
    let mut model = Model::default();
    sim.crash_point().map_err(err)?;
    for op in ops {
        match op {
            Op::Commit => {
                sim.journal().commit().map_err(err)?;
                sim.acknowledged();
            }
            Op::Sync => {
                sim.journal().sync().map_err(err)?;
                sim.acknowledged();
            }
            Op::Compact => {
                sim.journal().compact().map_err(err)?;
                sim.crash_point().map_err(err)?;
            }
            Op::Checkpoint => {
                sim.journal().checkpoint().map_err(err)?;
                sim.acknowledged();
                sim.crash_point().map_err(err)?;
            }
            Op::Crash => sim.crash_point().map_err(err)?,
            Op::Burst(ops) => {
                // One record each: the model after each.
                for o in ops {
                    apply(sim.journal(), &h, &mut model, o).map_err(err)?;
                    sim.mutated(model.clone());
                }
            }
            data => {
                apply(sim.journal(), &h, &mut model, data).map_err(err)?;
                sim.mutated(model.clone());
            }
        }
    }
    sim.crash_point().map_err(err)?;
    Ok((base, sim))
}

fn run_case(
    sync: bool,
    ops: &[Op],
    seed: u64,
    images_per_point: usize,
) -> Result<(), TestCaseError> {
    let (_base, mut sim) = record(sync, seed.is_multiple_of(2), ops)?;
    let report = sim
        .check(images_per_point, seed, observe)
        .map_err(|f| TestCaseError::fail(f.to_string()))?;
    IMAGES.fetch_add(report.images, Ordering::Relaxed);
    OPENS.fetch_add(report.opens, Ordering::Relaxed);
    RESTORES.fetch_add(report.restores, Ordering::Relaxed);
    POINTS.fetch_add(report.points, Ordering::Relaxed);
    DUPLICATES.fetch_add(report.duplicates, Ordering::Relaxed);
    CASES.fetch_add(1, Ordering::Relaxed);
    let mut changes = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in report.changes {
        *changes.entry(k).or_default() += v;
    }
    Ok(())
}

/// Runs random workloads (in rounds of `PROPTEST_CASES` cases, default 32) until at least
/// `SJ_CRASH_IMAGES` distinct crash images (default 10,000) were checked, `SJ_IMAGES_PER_POINT`
/// (default 32) tried at each crash point.
#[test]
fn crash_images_recover_to_the_model() {
    let target = env_usize("SJ_CRASH_IMAGES", 10_000);
    let cases = env_usize("PROPTEST_CASES", 32) as u32;
    let images_per_point = env_usize("SJ_IMAGES_PER_POINT", 32);
    let started = Instant::now();
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(op(), 20..120),
        any::<u64>(),
    );
    let mut result = Ok(());
    while result.is_ok() && IMAGES.load(Ordering::Relaxed) < target {
        let mut runner = TestRunner::new(Config {
            cases,
            source_file: Some(file!()),
            ..Config::default()
        });
        result = runner.run(&strategy, |(sync, ops, seed)| {
            if IMAGES.load(Ordering::Relaxed) >= target {
                return Ok(()); // enough: the rest of the round is skipped
            }
            run_case(sync, &ops, seed, images_per_point)
        });
    }
    eprintln!(
        "crash_sim: {} cases, {} crash points, {} distinct crash images ({} duplicates skipped), {} opens, {} restores in {:.1?}",
        CASES.load(Ordering::Relaxed),
        POINTS.load(Ordering::Relaxed),
        IMAGES.load(Ordering::Relaxed),
        DUPLICATES.load(Ordering::Relaxed),
        OPENS.load(Ordering::Relaxed),
        RESTORES.load(Ordering::Relaxed),
        started.elapsed()
    );
    for (kind, n) in CHANGES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        eprintln!("  images with {kind}: {n}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    let changes = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
    for kind in [
        "torn in 512-byte sectors",
        "torn in 4 KiB pages",
        "zeroed past the durable length",
        "garbage past the durable length",
        "deleted file resurrected",
        "segment creation lost out of order",
        "a recycled segment's older bytes",
    ] {
        assert!(
            changes.get(kind).copied().unwrap_or(0) > 0,
            "no image explored: {kind}"
        );
    }
}

/// Durable-data damage (issue 5, item 2): on top of crash images, one durable byte flipped or one
/// 4 KiB page zeroed in a segment, a snapshot, a manifest or `log.meta`, until
/// `SJ_DAMAGED_IMAGES` (default 2,000) distinct damaged images were checked, `SJ_DAMAGES_PER_POINT`
/// (default 6) per crash point. Each must be refused naming the file and offset, or recovered
/// with the model's exact state and any loss stated (see `CrashSimulator::check_damage`); each
/// outcome kind that proves detection must occur.
#[test]
fn damaged_durable_data_is_refused_or_reported() {
    let target = env_usize("SJ_DAMAGED_IMAGES", 2_000);
    let cases = env_usize("PROPTEST_CASES", 32) as u32;
    let per_point = env_usize("SJ_DAMAGES_PER_POINT", 6);
    let started = Instant::now();
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(op(), 20..120),
        any::<u64>(),
    );
    let total = Mutex::new(DamageReport::default());
    let mut result = Ok(());
    let done = || total.lock().unwrap_or_else(|e| e.into_inner()).images >= target;
    while result.is_ok() && !done() {
        let mut runner = TestRunner::new(Config {
            cases,
            source_file: Some(file!()),
            ..Config::default()
        });
        result = runner.run(&strategy, |(sync, ops, seed)| {
            if done() {
                return Ok(());
            }
            let (_base, sim) = record(sync, seed.is_multiple_of(2), &ops)?;
            // Also checks that `inspect` (the CLI's `verify` and `repair`) predicts each open.
            let mut sim = sim.check_inspection(true);
            let report = sim
                .check_damage(per_point, seed, observe)
                .map_err(|f| TestCaseError::fail(f.to_string()))?;
            total
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .merge(&report);
            Ok(())
        });
    }
    let total = total.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!("damage: {total}in {:.1?}", started.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
    use DamageCheck::*;
    use DamageOutcome::*;
    use DamagedFile::*;
    for (file, check, outcome) in [
        (SegmentFrames, Open, Refused),
        (SegmentFrames, OpenPointInTime, ReportedLoss),
        (SegmentHeader, Open, Refused),
        (LoadedSnapshot, Open, FellBack),
        (Manifest, Open, DamagedManifestReported),
        (Manifest, RestoreDamagedManifest, Refused),
        (LogMeta, Open, Refused),
    ] {
        assert!(
            total.count(file, check, outcome) > 0,
            "no damaged image had the outcome {file:?} / {check:?} / {outcome:?}"
        );
    }
}
