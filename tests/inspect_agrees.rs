//! `statejournal verify` and `repair` agree with recovery on the files the crash harness
//! produces: on every crash image of a mixed workload (values, lists, maps; commits, syncs,
//! compactions, checkpoints; `Sync` and `Buffered`), the read-only `inspect` changes nothing, and
//! what it predicts — that the image opens, where the log is cut and why (torn tail or debris),
//! where the log ends, how many live entries the state holds — is what `Journal::open` then does
//! (`CrashSimulator::check_inspection`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use statejournal::testing::CrashSimulator;
use statejournal::{CompactionPolicy, Durability, Journal, JournalOptions};

type Model = (
    BTreeMap<u16, u64>,
    BTreeMap<u16, Vec<u32>>,
    BTreeMap<(u16, u16), u32>,
);

fn opts(sync: bool) -> JournalOptions {
    JournalOptions::default()
        .durability(if sync {
            Durability::Sync
        } else {
            Durability::Buffered
        })
        .segment_size(8 << 10)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual().snapshot_block_size(512))
}

fn observe(j: &mut Journal) -> statejournal::Result<Model> {
    let v = j.value_state::<u16, u64>("v")?;
    let l = j.list_state::<u16, u32>("l")?;
    let m = j.map_state::<u16, u16, u32>("m")?;
    let mut out = Model::default();
    for (k, ()) in v.keys(j)? {
        if let Some(x) = v.get(j, &k)? {
            out.0.insert(k, x);
        }
    }
    for (k, ()) in l.keys(j)? {
        out.1.insert(k, l.get(j, &k)?);
    }
    for (k, ()) in m.keys(j)? {
        for (mk, x) in m.entries(j, &k)? {
            out.2.insert((k, mk), x);
        }
    }
    Ok(out)
}

fn scratch() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn run(sync: bool, seed: u64) -> statejournal::testing::SimReport {
    let base = tempfile::tempdir_in(scratch()).unwrap();
    let mut sim = CrashSimulator::new(&base.path().join("j"), opts(sync), Model::default())
        .unwrap()
        .scratch_dir(base.path())
        .check_inspection(true);
    let j = sim.journal();
    let v = j.value_state::<u16, u64>("v").unwrap();
    let l = j.list_state::<u16, u32>("l").unwrap();
    let m = j.map_state::<u16, u16, u32>("m").unwrap();
    let mut model = Model::default();
    let mut x = seed | 1;
    sim.crash_point().unwrap();
    for i in 0..160u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % 23) as u16;
        let j = sim.journal();
        match x % 16 {
            0 => {
                j.commit().unwrap();
                sim.acknowledged();
                continue;
            }
            1 => {
                j.sync().unwrap();
                sim.acknowledged();
                sim.crash_point().unwrap();
                continue;
            }
            2 => {
                j.compact().unwrap();
                sim.crash_point().unwrap();
                continue;
            }
            3 => {
                j.checkpoint().unwrap();
                sim.acknowledged();
                sim.crash_point().unwrap();
                continue;
            }
            4 => {
                v.clear(j, &k).unwrap();
                model.0.remove(&k);
            }
            5..=8 => {
                l.add(j, &k, &i).unwrap();
                model.1.entry(k).or_default().push(i);
            }
            9..=11 => {
                let mk = (x >> 20) as u16 % 5;
                m.put(j, &k, &mk, &i).unwrap();
                model.2.insert((k, mk), i);
            }
            _ => {
                v.set(j, &k, &(u64::from(i) << 20)).unwrap();
                model.0.insert(k, u64::from(i) << 20);
            }
        }
        sim.mutated(model.clone());
        if i % 7 == 0 {
            sim.crash_point().unwrap();
        }
    }
    sim.crash_point().unwrap();
    sim.check(12, seed, observe)
        .unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn inspect_predicts_recovery_on_every_crash_image() {
    let mut images = 0;
    for (sync, seed) in [
        (true, 0x1234_5678),
        (false, 0x9abc_def1),
        (false, 42),
        (true, 7),
    ] {
        images += run(sync, seed).images;
    }
    assert!(images > 400, "only {images} distinct crash images");
    println!("{images} crash images: inspect agreed with recovery on each");
}
