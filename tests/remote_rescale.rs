//! Rescaling through the store (issue 6): checkpoints of jobs that each own part of the key
//! groups restored into one journal (scale in, `restore_merged`), and into other splits
//! (2 → 3), with value, list and map states with TTLs, compared with a model key group by key
//! group; and the merges that must be refused (overlapping ranges, a gap, conflicting
//! registries, a damaged object), which must leave nothing behind. On `InMemory`,
//! `LocalFileSystem` and S3 (moto), as `tests/remote.rs`.

#[macro_use]
#[path = "common/remote_env.rs"]
mod remote_env;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use remote_env::{Env, Kind};
use statejournal::remote::{restore_merged_blocking, MergeSource, RemoteStore, Shipper};
use statejournal::{
    Clock, CompactionPolicy, Error, Journal, JournalOptions, KeyGroup, KeyGroupRange, ListState,
    ManualClock, MapState, StateTtl, ValueState,
};

on_every_store!(
    rescale_two_into_one,
    rescale_two_into_three,
    damaged_source_is_refused
);

const MAX_KG: u16 = 128;
const TTL: Duration = Duration::from_millis(2_000);

fn opts(clock: &Arc<ManualClock>, range: KeyGroupRange) -> JournalOptions {
    JournalOptions::default()
        .segment_size(64 << 10)
        .compaction(CompactionPolicy::manual())
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .key_group_range(range)
}

/// Values, lists and map entries with their expiry (milliseconds of the clock): a value is
/// visible while `now < expiry`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    values: BTreeMap<u32, (String, u64)>,
    lists: BTreeMap<u32, (Vec<u32>, u64)>,
    maps: BTreeMap<u32, BTreeMap<u16, (u32, u64)>>,
}

/// What reads see at `now`, per key.
#[derive(Debug, Clone, Default, PartialEq)]
struct Visible {
    values: BTreeMap<u32, String>,
    lists: BTreeMap<u32, Vec<u32>>,
    maps: BTreeMap<u32, BTreeMap<u16, u32>>,
}

impl Visible {
    fn only(&self, keep: impl Fn(u32) -> bool) -> Visible {
        Visible {
            values: self
                .values
                .clone()
                .into_iter()
                .filter(|(k, _)| keep(*k))
                .collect(),
            lists: self
                .lists
                .clone()
                .into_iter()
                .filter(|(k, _)| keep(*k))
                .collect(),
            maps: self
                .maps
                .clone()
                .into_iter()
                .filter(|(k, _)| keep(*k))
                .collect(),
        }
    }

    fn extend(&mut self, other: Visible) {
        self.values.extend(other.values);
        self.lists.extend(other.lists);
        self.maps.extend(other.maps);
    }

    fn keys(&self) -> usize {
        self.values.len() + self.lists.len() + self.maps.len()
    }
}

impl Model {
    fn visible(&self, now: u64) -> Visible {
        Visible {
            values: self
                .values
                .iter()
                .filter(|(_, (_, e))| now < *e)
                .map(|(k, (v, _))| (*k, v.clone()))
                .collect(),
            lists: self
                .lists
                .iter()
                .filter(|(_, (l, e))| now < *e && !l.is_empty())
                .map(|(k, (l, _))| (*k, l.clone()))
                .collect(),
            maps: self
                .maps
                .iter()
                .map(|(k, m)| {
                    let live: BTreeMap<u16, u32> = m
                        .iter()
                        .filter(|(_, (_, e))| now < *e)
                        .map(|(mk, (v, _))| (*mk, *v))
                        .collect();
                    (*k, live)
                })
                .filter(|(_, m)| !m.is_empty())
                .collect(),
        }
    }
}

/// The states, registered in the order `order` names them (0 values, 1 lists, 2 maps): jobs
/// that register in different orders give the same state different ids.
struct States {
    v: ValueState<u32, String>,
    l: ListState<u32, u32>,
    m: MapState<u32, u16, u32>,
}

fn register(j: &mut Journal, order: [u8; 3]) -> States {
    let ttl = StateTtl::after_write(TTL);
    let (mut v, mut l, mut m) = (None, None, None);
    for s in order {
        match s {
            0 => v = Some(j.with_ttl(ttl).value_state("values").unwrap()),
            1 => l = Some(j.with_ttl(ttl).list_state("lists").unwrap()),
            _ => m = Some(j.with_ttl(ttl).map_state("maps").unwrap()),
        }
    }
    States {
        v: v.unwrap(),
        l: l.unwrap(),
        m: m.unwrap(),
    }
}

/// One task of a job: a journal over a key-group range, pushing to a store prefix of its own.
struct Task {
    j: Journal,
    s: States,
    clock: Arc<ManualClock>,
    model: Model,
    rng: u64,
    keys: Vec<u32>,
    remote: RemoteStore,
    shipper: Shipper,
    _dir: tempfile::TempDir,
}

impl Task {
    fn new(
        env: &Env,
        name: &str,
        range: KeyGroupRange,
        order: [u8; 3],
        clock: &Arc<ManualClock>,
    ) -> Task {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), opts(clock, range)).unwrap();
        let s = register(&mut j, order);
        let keys = (0..600u32)
            .filter(|k| range.contains(j.key_group(k).unwrap()))
            .collect();
        let remote =
            RemoteStore::new(Arc::clone(&env.store), &format!("{}/{name}", env.prefix)).unwrap();
        let shipper = Shipper::new(remote.clone()).unwrap();
        Task {
            j,
            s,
            clock: Arc::clone(clock),
            model: Model::default(),
            rng: 0x2545_f491_4f6c_dd1d ^ u64::from(range.start()),
            keys,
            remote,
            shipper,
            _dir: dir,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// `n` random mutations of keys this task owns, 3 ms of the clock apart, mirrored in the model.
    fn mutate(&mut self, n: usize) {
        for _ in 0..n {
            self.clock.advance(Duration::from_millis(3));
            let now = self.clock.now_millis();
            let expiry = now + TTL.as_millis() as u64;
            let r = self.next();
            let k = self.keys[(r % self.keys.len() as u64) as usize];
            let (j, s, model) = (&mut self.j, &self.s, &mut self.model);
            match (r >> 24) % 12 {
                0 => {
                    s.v.clear(j, &k).unwrap();
                    model.values.remove(&k);
                }
                1..=3 => {
                    let val = format!("value {k} {}", r >> 40);
                    s.v.set(j, &k, &val).unwrap();
                    model.values.insert(k, (val, expiry));
                }
                4 => {
                    s.l.clear(j, &k).unwrap();
                    model.lists.remove(&k);
                }
                5..=7 => {
                    let e = (r >> 32) as u32;
                    s.l.add(j, &k, &e).unwrap();
                    let list = model.lists.entry(k).or_insert((Vec::new(), 0));
                    if list.1 <= now {
                        list.0.clear(); // it had expired: the append starts a new list
                    }
                    list.0.push(e);
                    list.1 = expiry;
                }
                8 => {
                    let mk = ((r >> 32) % 8) as u16;
                    s.m.remove(j, &k, &mk).unwrap();
                    if let Some(m) = model.maps.get_mut(&k) {
                        m.remove(&mk);
                    }
                }
                9 => {
                    s.m.clear(j, &k).unwrap();
                    model.maps.remove(&k);
                }
                _ => {
                    let mk = ((r >> 32) % 8) as u16;
                    let val = (r >> 40) as u32;
                    s.m.put(j, &k, &mk, &val).unwrap();
                    model.maps.entry(k).or_default().insert(mk, (val, expiry));
                }
            }
        }
    }

    /// A checkpoint pushed to the task's prefix.
    fn push(&mut self) -> MergeSource {
        let (_, push) = self.j.checkpoint_and_push(&self.shipper).unwrap();
        let r = push.wait().unwrap();
        MergeSource::at(self.remote.clone(), r.seq)
    }
}

/// The whole visible state of a journal, read through its handles.
fn read_state(j: &mut Journal, s: &States) -> Visible {
    let mut out = Visible::default();
    for (k, ()) in s.v.keys(j).unwrap() {
        if let Some(v) = s.v.get(j, &k).unwrap() {
            out.values.insert(k, v);
        }
    }
    for (k, ()) in s.l.keys(j).unwrap() {
        let l = s.l.get(j, &k).unwrap();
        if !l.is_empty() {
            out.lists.insert(k, l);
        }
    }
    for (k, ()) in s.m.keys(j).unwrap() {
        let m: BTreeMap<u16, u32> = s.m.entries(j, &k).unwrap().into_iter().collect();
        if !m.is_empty() {
            out.maps.insert(k, m);
        }
    }
    out
}

/// Two tasks over [0, 64) and [64, 128) that registered their states in different orders: the
/// first checkpoints a log with no snapshot, the second a snapshot plus a log tail. Returns the
/// tasks, their checkpoints and the model of the union of their checkpoints' states.
fn two_tasks(env: &Env, clock: &Arc<ManualClock>) -> (Vec<Task>, Vec<MergeSource>, Model) {
    let mut a = Task::new(env, "a", KeyGroupRange::new(0, 64), [0, 1, 2], clock);
    let mut b = Task::new(env, "b", KeyGroupRange::new(64, MAX_KG), [2, 0, 1], clock);
    a.mutate(700);
    b.mutate(900);
    b.j.compact().unwrap();
    b.mutate(500);
    a.mutate(300);
    let sources = vec![a.push(), b.push()];
    let now = clock.now_millis();
    // Each task agrees with its model (so the model's TTL rules are the journal's).
    for t in [&mut a, &mut b] {
        let (j, s) = (&mut t.j, &t.s);
        assert_eq!(read_state(j, s), t.model.visible(now));
    }
    let mut union = a.model.clone();
    union.values.extend(b.model.values.clone());
    union.lists.extend(b.model.lists.clone());
    union.maps.extend(b.model.maps.clone());
    assert!(
        union.visible(now).keys() > 100,
        "too few live keys to tell anything: {}",
        union.visible(now).keys()
    );
    // Written after the checkpoints (and 150 ms later): must not be restored.
    a.mutate(50);
    b.mutate(50);
    (vec![a, b], sources, union)
}

/// Restores `range` from `sources` into a new directory and opens it at its checkpoint.
fn merge_and_open(
    sources: &[MergeSource],
    range: KeyGroupRange,
    clock: &Arc<ManualClock>,
    dir: &Path,
) -> (Journal, States) {
    let r = restore_merged_blocking(sources, range, dir).unwrap();
    assert_eq!(r.key_groups, range);
    assert!(r.bytes > 0 && r.objects > 0);
    // A journal by the format's rules: inspection (which mirrors recovery) finds nothing wrong.
    let seen = statejournal::inspect::inspect(dir, Default::default()).unwrap();
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert!(seen.state_error.is_none(), "{:?}", seen.state_error);
    assert_eq!(seen.checkpoints.len(), 1);
    let mut j = Journal::open_at_checkpoint(dir, r.checkpoint_id, opts(clock, range)).unwrap();
    assert_eq!(j.log().last_lsn().get(), r.lsn);
    let s = register(&mut j, [1, 2, 0]);
    (j, s)
}

fn rescale_two_into_one(kind: Kind) {
    let Some(env) = Env::new(kind, "merge-2-1") else {
        return;
    };
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (tasks, sources, model) = two_tasks(&env, &clock);
    let all = KeyGroupRange::all(MAX_KG);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("merged");
    let (mut j, s) = merge_and_open(&sources, all, &clock, &dir);
    let got = read_state(&mut j, &s);
    let expected = model.visible(clock.now_millis());
    // Key group by key group.
    let mut group = BTreeMap::new();
    for k in 0..600u32 {
        group.insert(k, j.key_group(&k).unwrap());
    }
    for kg in 0..MAX_KG {
        let mine = |k: u32| group[&k] == KeyGroup(kg);
        assert_eq!(got.only(mine), expected.only(mine), "key group {kg}");
    }
    assert_eq!(got, expected);

    // The merged journal is a journal: it takes writes, compacts, checkpoints, reopens.
    s.v.set(&mut j, &1, &"after the merge".to_string()).unwrap();
    j.compact().unwrap();
    j.checkpoint().unwrap();
    drop(j);
    let mut j = Journal::open(&dir, opts(&clock, all)).unwrap();
    let s = register(&mut j, [0, 1, 2]);
    assert_eq!(
        s.v.get(&mut j, &1).unwrap().as_deref(),
        Some("after the merge")
    );
    let mut after = read_state(&mut j, &s);
    after.values.remove(&1);
    let mut before = expected.clone();
    before.values.remove(&1);
    assert_eq!(after, before);
    drop(j);

    // A partial range, or a source twice (overlap), or a missing part: refused, nothing written.
    let tmp2 = tempfile::tempdir().unwrap();
    let target = tmp2.path().join("refused");
    let refused = |sources: &[MergeSource], range: KeyGroupRange| {
        let e = restore_merged_blocking(sources, range, &target).unwrap_err();
        assert_eq!(
            std::fs::read_dir(tmp2.path()).unwrap().count(),
            0,
            "{e}: left files"
        );
        e
    };
    let e = refused(
        &[sources[0].clone(), sources[0].clone()],
        KeyGroupRange::new(0, 64),
    );
    assert!(matches!(e, Error::IncompatibleCheckpoints { .. }), "{e}");
    assert!(e.to_string().contains("overlap"), "{e}");
    let e = refused(&sources[..1], all);
    assert!(matches!(e, Error::IncompatibleCheckpoints { .. }), "{e}");
    assert!(e.to_string().contains("[64, 128)"), "{e}");
    let e = refused(&sources[1..], all);
    assert!(
        e.to_string().contains("no source holds key groups [0, 64)"),
        "{e}"
    );
    // Into a directory that holds something: refused, and it is left as it was.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"x").unwrap();
    let e = restore_merged_blocking(&sources, all, &target).unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e}");
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"x");
    drop(tasks);
}

fn rescale_two_into_three(kind: Kind) {
    let Some(env) = Env::new(kind, "merge-2-3") else {
        return;
    };
    let clock = Arc::new(ManualClock::new(5_000_000));
    let (tasks, sources, model) = two_tasks(&env, &clock);
    let expected = model.visible(clock.now_millis());
    let tmp = tempfile::tempdir().unwrap();
    let mut union = Visible::default();
    // The middle part cuts across both sources; the outer ones take one source each (the other
    // is not even downloaded).
    for (i, range) in [
        KeyGroupRange::new(0, 40),
        KeyGroupRange::new(40, 90),
        KeyGroupRange::new(90, MAX_KG),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("part-{i}"));
        let r = restore_merged_blocking(&sources, range, &dir).unwrap();
        assert_eq!(r.sources.len(), if i == 1 { 2 } else { 1 }, "{r:?}");
        let mut j =
            Journal::open_at_checkpoint(&dir, r.checkpoint_id, opts(&clock, range)).unwrap();
        let s = register(&mut j, [0, 1, 2]);
        let part = read_state(&mut j, &s);
        let mut group = BTreeMap::new();
        for k in 0..600u32 {
            group.insert(k, j.key_group(&k).unwrap());
        }
        for kg in range.start()..range.end() {
            let mine = |k: u32| group[&k] == KeyGroup(kg);
            assert_eq!(part.only(mine), expected.only(mine), "key group {kg}");
        }
        let mine = |k: u32| range.contains(group[&k]);
        assert_eq!(part, expected.only(mine), "{range}");
        // A key of another part is refused by this one.
        if let Some(foreign) = (0..600u32).find(|k| !mine(*k)) {
            assert!(matches!(
                s.v.set(&mut j, &foreign, &String::new()),
                Err(Error::KeyGroupNotOwned { .. })
            ));
        }
        union.extend(part);
        // Scale in again: the part goes on, and is itself a source (pushed under its prefix).
        j.compact().unwrap();
    }
    assert_eq!(union, expected);
    drop(tasks);
}

/// A source whose registry conflicts with another's: "values" is a list state there.
#[test]
fn conflicting_registries_are_refused() {
    let env = Env::new(Kind::Memory, "merge-conflict").unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let mut a = Task::new(&env, "a", KeyGroupRange::new(0, 64), [0, 1, 2], &clock);
    a.mutate(100);
    let a_src = a.push();
    let dir = tempfile::tempdir().unwrap();
    let range = KeyGroupRange::new(64, MAX_KG);
    let mut j = Journal::open(dir.path(), opts(&clock, range)).unwrap();
    let l: ListState<u32, u32> = j
        .with_ttl(StateTtl::after_write(TTL))
        .list_state("values")
        .unwrap();
    let k = (0..100u32)
        .find(|k| range.contains(j.key_group(k).unwrap()))
        .unwrap();
    l.add(&mut j, &k, &7).unwrap();
    let remote = RemoteStore::new(Arc::clone(&env.store), &format!("{}/b", env.prefix)).unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let (_, push) = j.checkpoint_and_push(&shipper).unwrap();
    push.wait().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let e = restore_merged_blocking(
        &[a_src.clone(), MergeSource::latest(remote.clone())],
        KeyGroupRange::all(MAX_KG),
        tmp.path().join("merged"),
    )
    .unwrap_err();
    assert!(matches!(e, Error::IncompatibleCheckpoints { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("\"values\"") && text.contains("list state") && text.contains("value state"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // Same kind, other TTL: refused as well (which TTL would the merged state have?).
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts(&clock, range)).unwrap();
    let v: ValueState<u32, String> = j
        .with_ttl(StateTtl::after_write(TTL * 2))
        .value_state("values")
        .unwrap();
    v.set(&mut j, &k, &"x".to_string()).unwrap();
    let remote = RemoteStore::new(Arc::clone(&env.store), &format!("{}/c", env.prefix)).unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let (_, push) = j.checkpoint_and_push(&shipper).unwrap();
    push.wait().unwrap();
    let e = restore_merged_blocking(
        &[a_src, MergeSource::latest(remote)],
        KeyGroupRange::all(MAX_KG),
        tmp.path().join("merged"),
    )
    .unwrap_err();
    assert!(matches!(e, Error::IncompatibleCheckpoints { .. }), "{e}");
    assert!(e.to_string().contains("4000 ms"), "{e}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A damaged snapshot block or log chunk of one source fails the merge with an error naming the
/// object and the offset, and leaves nothing at the target or beside it.
fn damaged_source_is_refused(kind: Kind) {
    let Some(env) = Env::new(kind, "merge-damage") else {
        return;
    };
    let clock = Arc::new(ManualClock::new(9_000_000));
    let (tasks, sources, _) = two_tasks(&env, &clock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = &sources[1];
    let m = rt.block_on(b.remote.manifest(b.seq.unwrap())).unwrap();
    let flip = |object: &str, at: usize| {
        let path = object_store::path::Path::from(format!("{}/b/{object}", env.prefix));
        let mut bytes = rt
            .block_on(async { env.store.get(&path).await.unwrap().bytes().await })
            .unwrap()
            .to_vec();
        bytes[at] ^= 0x40;
        rt.block_on(env.store.put(&path, PutPayload::from(bytes)))
            .unwrap();
    };
    let tmp = tempfile::tempdir().unwrap();
    let all = KeyGroupRange::all(MAX_KG);

    // A byte in the middle of the snapshot's blocks.
    let snap = m.snapshot.clone().expect("task b compacted");
    let at = (snap.len / 2) as usize;
    flip(&snap.object, at);
    match restore_merged_blocking(&sources, all, tmp.path().join("merged")) {
        Err(Error::RemoteCorruption { object, offset, .. }) => {
            assert!(object.contains(&snap.object), "{object}");
            assert!(
                offset >= 32 && offset <= at as u64,
                "offset {offset}, damage at {at}"
            );
        }
        other => panic!("the damaged snapshot must be found: {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "left files behind"
    );
    flip(&snap.object, at); // repaired

    // The last byte of a log chunk.
    let chunk = m.segments.last().unwrap().chunks.last().unwrap().clone();
    flip(&chunk.object, (chunk.end - chunk.start - 1) as usize);
    match restore_merged_blocking(&sources, all, tmp.path().join("merged")) {
        Err(Error::RemoteCorruption { object, offset, .. }) => {
            assert!(object.contains(&chunk.object), "{object}");
            assert_eq!(offset, 0);
        }
        other => panic!("the damaged chunk must be found: {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "left files behind"
    );
    flip(&chunk.object, (chunk.end - chunk.start - 1) as usize);
    // Repaired, the merge goes through.
    restore_merged_blocking(&sources, all, tmp.path().join("merged")).unwrap();
    drop(tasks);
}
