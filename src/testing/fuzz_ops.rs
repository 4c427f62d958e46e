//! The `ops_crash` fuzz target's harness: an operation sequence plus crash points, checked by the
//! [`CrashSimulator`](super::CrashSimulator) — the fuzzer explores workloads, the simulator the
//! crash images of each.

use std::collections::BTreeMap;

use super::CrashSimulator;
use crate::{CompactionPolicy, Durability, Journal, JournalOptions, Result};

/// What the fuzzed workload wrote, as it should read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Model {
    values: BTreeMap<u8, u32>,
    lists: BTreeMap<u8, Vec<u8>>,
    maps: BTreeMap<u8, BTreeMap<u8, u8>>,
}

const KEYS: u8 = 4;

fn observe(j: &mut Journal) -> Result<Model> {
    let value = j.value_state::<u8, u32>("v")?;
    let list = j.list_state::<u8, u8>("l")?;
    let map = j.map_state::<u8, u8, u8>("m")?;
    let mut m = Model::default();
    for k in 0..KEYS {
        if let Some(v) = value.get(j, &k)? {
            m.values.insert(k, v);
        }
        let l = list.get(j, &k)?;
        if !l.is_empty() {
            m.lists.insert(k, l);
        }
        let e: BTreeMap<u8, u8> = map.entries(j, &k)?.into_iter().collect();
        if !e.is_empty() {
            m.maps.insert(k, e);
        }
    }
    Ok(m)
}

/// Fuzz harness of the `ops_crash` target. `data`: a flags byte (bit 0: `Sync` durability, else
/// `Buffered` with explicit `sync()`), then one operation per byte pair `(op, arg)`, at most 64:
///
/// | `op % 12` | operation |
/// |---|---|
/// | 0–2 | set value `arg % 4` to `op * 256 + arg` |
/// | 3 | clear value `arg % 4` |
/// | 4–5 | add `arg` to list `arg % 4` |
/// | 6 | put map `arg % 4` entry `arg / 4 % 4` = `arg` |
/// | 7 | remove map `arg % 4` entry `arg / 4 % 4` |
/// | 8 | `commit()` (and `sync()` in `Buffered` mode): acknowledged |
/// | 9 | `compact()`, then a crash point |
/// | 10 | `checkpoint()` (acknowledged), then a crash point |
/// | 11 | a crash point |
///
/// Every crash point's images (2 per point) must recover the model's state at the recovered LSN,
/// at or past the acknowledged one, and restore every manifest exactly.
///
/// # Panics
///
/// When the simulator finds a violation, or the temporary directory cannot be written.
pub fn fuzz_ops_crash(data: &[u8]) {
    let Some((&flags, ops)) = data.split_first() else {
        return;
    };
    let sync = flags & 1 != 0;
    let base = super::TempDir::new();
    let dir = base.path().join("journal");
    let opts = JournalOptions::default()
        .durability(if sync {
            Durability::Sync
        } else {
            Durability::Buffered
        })
        .segment_size(8 << 10)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual().snapshot_block_size(256));
    let run = || -> Result<CrashSimulator<Model>> {
        let mut sim =
            CrashSimulator::new(&dir, opts.clone(), Model::default())?.scratch_dir(base.path());
        let j = sim.journal();
        let (value, list, map) = (
            j.value_state::<u8, u32>("v")?,
            j.list_state::<u8, u8>("l")?,
            j.map_state::<u8, u8, u8>("m")?,
        );
        let mut m = Model::default();
        sim.crash_point()?;
        for pair in ops.chunks_exact(2).take(64) {
            let (op, arg) = (pair[0] % 12, pair[1]);
            let (k, e) = (arg % KEYS, arg / KEYS % 4);
            let j = sim.journal();
            match op {
                0..=2 => {
                    let v = u32::from(op) * 256 + u32::from(arg);
                    value.set(j, &k, &v)?;
                    m.values.insert(k, v);
                }
                3 => {
                    value.clear(j, &k)?;
                    m.values.remove(&k);
                }
                4 | 5 => {
                    list.add(j, &k, &arg)?;
                    m.lists.entry(k).or_default().push(arg);
                }
                6 => {
                    map.put(j, &k, &e, &arg)?;
                    m.maps.entry(k).or_default().insert(e, arg);
                }
                7 => {
                    map.remove(j, &k, &e)?;
                    if let Some(inner) = m.maps.get_mut(&k) {
                        inner.remove(&e);
                        if inner.is_empty() {
                            m.maps.remove(&k);
                        }
                    }
                }
                8 => {
                    j.commit()?;
                    if !sync {
                        j.sync()?;
                    }
                    sim.acknowledged();
                    continue;
                }
                9 => {
                    j.compact()?;
                    sim.crash_point()?;
                    continue;
                }
                10 => {
                    j.checkpoint()?;
                    sim.acknowledged();
                    sim.crash_point()?;
                    continue;
                }
                _ => {
                    sim.crash_point()?;
                    continue;
                }
            }
            sim.mutated(m.clone());
        }
        sim.crash_point()?;
        Ok(sim)
    };
    let mut sim = run().unwrap_or_else(|e| panic!("the workload failed: {e}"));
    let seed = crc32fast::hash(data).into();
    if let Err(f) = sim.check(2, seed, observe) {
        panic!("{f}");
    }
}

/// Seed inputs of the `ops_crash` fuzz target: a few workloads of each kind.
pub fn ops_crash_fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let pairs = |ops: &[(u8, u8)]| ops.iter().flat_map(|&(a, b)| [a, b]).collect::<Vec<u8>>();
    let with = |flags: u8, ops: &[(u8, u8)]| {
        let mut v = vec![flags];
        v.extend(pairs(ops));
        v
    };
    let mixed = [
        (0, 1),
        (4, 2),
        (6, 9),
        (8, 0),
        (1, 5),
        (5, 7),
        (11, 0),
        (9, 0),
        (2, 3),
        (7, 9),
        (10, 0),
        (3, 1),
        (4, 1),
        (8, 0),
    ];
    vec![
        ("sync-mixed", with(1, &mixed)),
        ("buffered-mixed", with(0, &mixed)),
        (
            "sync-compact-checkpoint",
            with(1, &[(0, 0), (9, 0), (10, 0), (0, 1), (10, 0)]),
        ),
        (
            "buffered-crash-only",
            with(0, &[(0, 0), (4, 4), (6, 6), (11, 0)]),
        ),
    ]
}
