//! Remote checkpoints (issue 6): push, restore, fencing, conflicts, GC and failures, against
//! every kind of store: `InMemory`, `LocalFileSystem`, and a real S3 server (moto, started by
//! `.ci/run`) when `SJ_S3_ENDPOINT` names one. Without it the S3 variants say on stderr that they
//! were skipped and why; under CI (`CI` set) a missing endpoint fails them instead.

#[path = "common/faulty_store.rs"]
mod faulty_store;
#[macro_use]
#[path = "common/remote_env.rs"]
mod remote_env;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use faulty_store::FaultyStore;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use remote_env::{s3_endpoint, unique, Env, Kind, BUCKET};
use statejournal::remote::{RemoteOptions, RemoteStore, Shipper};
use statejournal::{
    CompactionPolicy, Error, Journal, JournalOptions, KeyGroupRange, ListState, ValueState,
};

on_every_store!(
    restore_gives_each_checkpoint_state,
    uploads_only_what_was_appended,
    newer_epoch_fences_the_older_writer,
    concurrent_manifests_exactly_one_wins,
    gc_keeps_what_retained_checkpoints_name,
    failed_push_is_retried_and_never_half_visible,
    large_objects_go_up_in_parts,
    key_group_restore_scales_out,
    pushes_publish_in_checkpoint_order,
    interrupted_restore_leaves_the_target_untouched,
);

fn journal_opts() -> JournalOptions {
    JournalOptions::default()
        .segment_size(64 << 10)
        .compaction(CompactionPolicy::manual())
}

/// The model of the journal's state.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    values: BTreeMap<u32, String>,
    lists: BTreeMap<u32, Vec<u32>>,
}

struct Job {
    j: Journal,
    v: ValueState<u32, String>,
    l: ListState<u32, u32>,
    model: Model,
    rng: u64,
}

impl Job {
    fn open(dir: &Path) -> Job {
        let mut j = Journal::open(dir, journal_opts()).unwrap();
        let v = j.value_state("values").unwrap();
        let l = j.list_state("lists").unwrap();
        Job {
            j,
            v,
            l,
            model: Model::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// `n` random mutations, mirrored in the model.
    fn mutate(&mut self, n: usize) {
        for _ in 0..n {
            let r = self.next();
            let k = (r % 300) as u32;
            match (r >> 20) % 10 {
                0 => {
                    self.v.clear(&mut self.j, &k).unwrap();
                    self.model.values.remove(&k);
                }
                1..=5 => {
                    let s = format!("value {k} {}", r >> 40);
                    self.v.set(&mut self.j, &k, &s).unwrap();
                    self.model.values.insert(k, s);
                }
                6 => {
                    self.l.clear(&mut self.j, &k).unwrap();
                    self.model.lists.remove(&k);
                }
                _ => {
                    let e = (r >> 32) as u32;
                    self.l.add(&mut self.j, &k, &e).unwrap();
                    self.model.lists.entry(k).or_default().push(e);
                }
            }
        }
    }
}

/// The whole state of a journal, read through its handles.
fn read_state(j: &mut Journal) -> Model {
    let v: ValueState<u32, String> = j.value_state("values").unwrap();
    let l: ListState<u32, u32> = j.list_state("lists").unwrap();
    let mut m = Model::default();
    for (k, ()) in v.keys(j).unwrap() {
        if let Some(s) = v.get(j, &k).unwrap() {
            m.values.insert(k, s);
        }
    }
    for (k, ()) in l.keys(j).unwrap() {
        let items = l.get(j, &k).unwrap();
        if !items.is_empty() {
            m.lists.insert(k, items);
        }
    }
    m
}

/// Restores remote checkpoint `seq` into a fresh directory and opens it at its checkpoint.
fn restore_and_read(remote: &RemoteStore, seq: Option<u64>) -> (Model, u64) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("restored");
    let report = remote.restore_blocking(seq, &target).unwrap();
    let mut j = Journal::open_at_checkpoint(&target, report.checkpoint_id, journal_opts()).unwrap();
    assert_eq!(j.log().last_lsn().get(), report.lsn);
    let state = read_state(&mut j);
    (state, report.seq)
}

fn restore_gives_each_checkpoint_state(kind: Kind) {
    let Some(env) = Env::new(kind, "restore") else {
        return;
    };
    let remote = env.remote();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    let mut expected = Vec::new();
    for round in 0..5 {
        job.mutate(400);
        if round == 2 {
            job.j.compact().unwrap(); // a checkpoint with a snapshot, and segments deleted
        }
        let (info, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        let report = push.wait().unwrap();
        assert_eq!(report.checkpoint_id, info.id);
        assert_eq!(report.lsn, info.lsn.get());
        expected.push((report.seq, job.model.clone()));
    }
    // A checkpoint right at a snapshot: no segment after it, yet the restored log must end there.
    job.j.compact().unwrap();
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    expected.push((push.wait().unwrap().seq, job.model.clone()));
    job.mutate(300); // after the last checkpoint: must not be restored

    assert_eq!(remote.checkpoints_blocking().unwrap().len(), expected.len());
    for (seq, model) in &expected {
        let (state, got) = restore_and_read(&remote, Some(*seq));
        assert_eq!(got, *seq);
        assert_eq!(&state, model, "remote checkpoint {seq}");
    }
    let (latest, seq) = restore_and_read(&remote, None);
    assert_eq!(
        Some(&(seq, latest)),
        expected.last().map(|(s, m)| (*s, m.clone())).as_ref()
    );

    // A restored job appends on, and a plain open sees the checkpoint's state too.
    let dir2 = tempfile::tempdir().unwrap();
    let r = remote
        .restore_blocking(Some(expected[1].0), dir2.path())
        .unwrap();
    {
        let mut j = Journal::open(dir2.path(), journal_opts()).unwrap();
        assert_eq!(read_state(&mut j), expected[1].1);
        let v: ValueState<u32, String> = j.value_state("values").unwrap();
        v.set(&mut j, &7, &"after restore".to_string()).unwrap();
        j.commit().unwrap();
    }
    let mut j = Journal::open(dir2.path(), journal_opts()).unwrap();
    let v: ValueState<u32, String> = j.value_state("values").unwrap();
    assert_eq!(v.get(&mut j, &7).unwrap().as_deref(), Some("after restore"));
    assert!(r.bytes > 0 && r.objects > 0);

    // Restoring into a non-empty directory is refused, and changes nothing there.
    let err = remote.restore_blocking(None, dir2.path()).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

fn uploads_only_what_was_appended(kind: Kind) {
    let Some(env) = Env::new(kind, "incremental") else {
        return;
    };
    let faulty = FaultyStore::new(Arc::clone(&env.store));
    let remote = env.remote_over(faulty.clone());
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(200);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let first = push.wait().unwrap();
    assert!(first.bytes_uploaded > 0);
    let mut total_appended = 0;
    let mut total_uploaded = 0;
    for round in 0..6 {
        let before = job.j.io_stats().log_bytes;
        let stored_before = faulty.bytes_written();
        job.mutate(150 + round * 100);
        let appended = job.j.io_stats().log_bytes - before;
        let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        let r = push.wait().unwrap();
        let stored = faulty.bytes_written() - stored_before;
        // What the store received: the chunks, and the manifest.
        assert_eq!(stored, r.bytes_uploaded + r.manifest_bytes, "round {round}");
        assert_eq!(r.snapshot_bytes_uploaded, 0);
        assert!(r.objects_reused > 0, "round {round}: nothing reused");
        // Appended log bytes, plus at most one sync marker per segment touched and the headers of
        // segments begun since: ≤ 1.1× what was appended.
        assert!(
            r.bytes_uploaded * 10 <= appended * 11 + 10 * 64 * 2,
            "round {round}: uploaded {} for {appended} appended",
            r.bytes_uploaded
        );
        assert!(r.bytes_uploaded >= appended, "round {round}: lost bytes?");
        total_appended += appended;
        total_uploaded += r.bytes_uploaded;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{kind:?}: incremental pushes uploaded {total_uploaded} bytes for {total_appended} \
         bytes appended ({:.3}x)",
        total_uploaded as f64 / total_appended as f64
    );
    // A compaction makes the next push upload the snapshot, once.
    job.j.compact().unwrap();
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let with_snapshot = push.wait().unwrap();
    assert!(with_snapshot.snapshot_bytes_uploaded > 0);
    job.mutate(50);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let after = push.wait().unwrap();
    assert_eq!(
        after.snapshot_bytes_uploaded, 0,
        "the snapshot went up twice"
    );
    assert_eq!(restore_and_read(&remote, None).0, job.model);
}

fn newer_epoch_fences_the_older_writer(kind: Kind) {
    let Some(env) = Env::new(kind, "fencing") else {
        return;
    };
    let remote = env.remote();
    let old = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(100);
    let (_, push) = job.j.checkpoint_and_push(&old).unwrap();
    let first = push.wait().unwrap();

    // The job restarts elsewhere: a new writer claims the store, restores, goes on.
    let new = Shipper::new(remote.clone()).unwrap();
    assert!(new.epoch() > old.epoch());
    let dir2 = tempfile::tempdir().unwrap();
    let r = remote.restore_blocking(None, dir2.path()).unwrap();
    let mut j2 = Journal::open_at_checkpoint(dir2.path(), r.checkpoint_id, journal_opts()).unwrap();
    let v: ValueState<u32, String> = j2.value_state("values").unwrap();
    v.set(&mut j2, &1, &"new writer".to_string()).unwrap();

    // The zombie tries to publish: fenced, and nothing of it becomes visible.
    job.mutate(100);
    let (_, push) = job.j.checkpoint_and_push(&old).unwrap();
    match push.wait() {
        Err(Error::Fenced { epoch, newer, .. }) => {
            assert_eq!((epoch, newer), (old.epoch(), new.epoch()));
        }
        other => panic!("the zombie's push must be fenced, got {other:?}"),
    }
    assert_eq!(remote.checkpoints_blocking().unwrap().len(), 1);
    // The zombie's local appends go on regardless.
    job.mutate(10);

    let (_, push) = j2.checkpoint_and_push(&new).unwrap();
    let second = push.wait().unwrap();
    assert_eq!(second.seq, first.seq + 1);
    let (state, _) = restore_and_read(&remote, None);
    assert_eq!(state.values.get(&1).map(String::as_str), Some("new writer"));
    // Even after the new writer's manifest, the zombie stays fenced.
    let (_, push) = job.j.checkpoint_and_push(&old).unwrap();
    assert!(matches!(push.wait(), Err(Error::Fenced { .. })));
}

fn concurrent_manifests_exactly_one_wins(kind: Kind) {
    let Some(env) = Env::new(kind, "conflict") else {
        return;
    };
    // The store's primitive first: 16 concurrent conditional creates of one key.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = object_store::path::Path::from(format!("{}/race", env.prefix));
    let wins: usize = rt.block_on(async {
        let tasks: Vec<_> = (0..16u8)
            .map(|i| {
                let store = Arc::clone(&env.store);
                let key = key.clone();
                tokio::spawn(async move {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    };
                    match store.put_opts(&key, PutPayload::from(vec![i]), opts).await {
                        Ok(_) => 1,
                        Err(object_store::Error::AlreadyExists { .. }) => 0,
                        Err(e) => panic!("create {i}: {e}"),
                    }
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap();
        }
        wins
    });
    assert_eq!(wins, 1, "exactly one conditional create may succeed");

    // The protocol: two writers (same epoch, say two attempts the scheduler confused) both read
    // the store and reach the manifest's conditional create at the same moment.
    let faulty = FaultyStore::new(Arc::clone(&env.store));
    let remote = env.remote_over(faulty.clone());
    let a = Shipper::with_epoch(remote.clone(), 1).unwrap();
    let b = Shipper::with_epoch(remote.clone(), 1).unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ja = Job::open(da.path());
    let mut jb = Job::open(db.path());
    ja.mutate(50);
    jb.rng = 42;
    jb.mutate(70);
    faulty.gate_writes("manifests/", Arc::new(tokio::sync::Barrier::new(2)));
    let (_, pa) = ja.j.checkpoint_and_push(&a).unwrap();
    let (_, pb) = jb.j.checkpoint_and_push(&b).unwrap();
    let (ra, rb) = (pa.wait(), pb.wait());
    let (winner, loser) = match (&ra, &rb) {
        (Ok(w), Err(l)) => ((w, &ja.model), l),
        (Err(l), Ok(w)) => ((w, &jb.model), l),
        other => panic!("exactly one must win: {other:?}"),
    };
    assert!(matches!(loser, Error::RemoteConflict { .. }), "{loser}");
    let list = remote.checkpoints_blocking().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].seq, winner.0.seq);
    assert_eq!(&restore_and_read(&remote, None).0, winner.1);
}

fn gc_keeps_what_retained_checkpoints_name(kind: Kind) {
    let Some(env) = Env::new(kind, "gc") else {
        return;
    };
    let remote = env.remote();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    let mut expected = Vec::new();
    for round in 0..5 {
        job.mutate(300);
        if round % 2 == 1 {
            job.j.compact().unwrap();
        }
        let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        expected.push((push.wait().unwrap().seq, job.model.clone()));
    }
    // An interrupted push: its data objects went up, its manifest did not.
    let faulty = FaultyStore::new(Arc::clone(&env.store));
    let remote_f = env
        .remote_over(faulty.clone())
        .with_options(RemoteOptions::default().attempts(1));
    let interrupted = Shipper::with_epoch(remote_f, shipper.epoch()).unwrap();
    job.mutate(200);
    job.j.compact().unwrap();
    faulty.fail_writes("manifests/", 1);
    let (_, push) = job.j.checkpoint_and_push(&interrupted).unwrap();
    assert!(matches!(push.wait(), Err(Error::Remote { .. })));
    assert_eq!(remote.checkpoints_blocking().unwrap().len(), 5);

    // Young garbage survives a collection with a grace period...
    let r = remote
        .collect_garbage_blocking(2, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(r.kept, vec![expected[3].0, expected[4].0]);
    assert_eq!(r.manifests_deleted.len(), 3);
    assert!(r.young_unreferenced > 0, "{r:?}");
    // ...and goes without one.
    let r = remote.collect_garbage_blocking(2, Duration::ZERO).unwrap();
    assert!(r.objects_deleted > 0, "{r:?}");
    assert_eq!(r.young_unreferenced, 0);

    // Every object left is named by a kept manifest, and each kept checkpoint still restores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut named = std::collections::HashSet::new();
    for (seq, _) in &expected[3..] {
        let m = rt.block_on(remote.manifest(*seq)).unwrap();
        named.extend(m.objects().map(str::to_string));
    }
    let prefix = object_store::path::Path::from(env.prefix.as_str());
    let all: Vec<object_store::ObjectMeta> = rt
        .block_on(futures::TryStreamExt::try_collect(
            env.store.list(Some(&prefix)),
        ))
        .unwrap();
    for o in &all {
        let key = o.location.as_ref()[env.prefix.len() + 1..].to_string();
        if key.starts_with("log/") || key.starts_with("snapshots/") {
            assert!(named.contains(&key), "{key} survived GC unreferenced");
        }
    }
    assert!(
        all.iter()
            .filter(|o| o.location.as_ref().contains("/epochs/"))
            .count()
            == 1
    );
    for (seq, model) in &expected[3..] {
        assert_eq!(&restore_and_read(&remote, Some(*seq)).0, model);
    }
    let dir2 = tempfile::tempdir().unwrap();
    assert!(remote
        .restore_blocking(Some(expected[0].0), dir2.path())
        .is_err());
}

fn failed_push_is_retried_and_never_half_visible(kind: Kind) {
    let Some(env) = Env::new(kind, "faults") else {
        return;
    };
    let faulty = FaultyStore::new(Arc::clone(&env.store));
    let remote = env.remote_over(faulty.clone()).with_options(
        RemoteOptions::default()
            .attempts(3)
            .backoff(Duration::from_millis(10), Duration::from_millis(50)),
    );
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(100);

    // Two failures: retried with backoff, then published.
    faulty.fail_writes("log/", 2);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let r = push.wait().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(restore_and_read(&remote, None).0, job.model);

    // Failures outlasting the attempts: reported, and no checkpoint becomes visible; while the
    // push is held and failing, appends go on.
    let sem = Arc::new(tokio::sync::Semaphore::new(0));
    faulty.hold_writes(Arc::clone(&sem));
    faulty.fail_writes("log/", 100);
    job.mutate(100);
    let before = job.model.clone();
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    job.mutate(500); // the upload is held: appends do not wait for it
    job.j.commit().unwrap();
    assert!(!push.is_finished());
    sem.add_permits(1 << 20);
    match push.wait() {
        Err(Error::Remote { op, object, .. }) => {
            assert!(object.contains("log/"), "{op} {object}");
        }
        other => panic!("the push must fail: {other:?}"),
    }
    assert_eq!(remote.checkpoints_blocking().unwrap().len(), 1);
    assert_ne!(restore_and_read(&remote, None).0, before);

    // Calls slower than the upload timeout: each attempt times out, and nothing is published.
    faulty.fail_writes("log/", 0);
    faulty.delay(Duration::from_millis(400));
    let impatient = Shipper::with_epoch(
        remote.clone().with_options(
            RemoteOptions::default()
                .attempts(2)
                .backoff(Duration::from_millis(10), Duration::from_millis(10))
                .upload_timeout(Duration::from_millis(100)),
        ),
        shipper.epoch(),
    )
    .unwrap();
    job.mutate(20);
    let (_, push) = job.j.checkpoint_and_push(&impatient).unwrap();
    match push.wait() {
        Err(Error::Remote { op: "upload", .. }) => {}
        other => panic!("the push must time out: {other:?}"),
    }
    faulty.delay(Duration::ZERO);
    assert_eq!(remote.checkpoints_blocking().unwrap().len(), 1);

    // Slow calls only slow it down.
    faulty.delay(Duration::from_millis(20));
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let r = push.wait().unwrap();
    assert_eq!(r.attempts, 1);
    faulty.delay(Duration::ZERO);
    assert_eq!(restore_and_read(&remote, None).0, job.model);

    // A damaged object is found on restore, which then leaves the directory empty.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = rt.block_on(remote.manifest(r.seq)).unwrap();
    let victim = &m.segments.last().unwrap().chunks.last().unwrap().object;
    let path = object_store::path::Path::from(format!("{}/{victim}", env.prefix));
    let mut bytes = rt
        .block_on(async { env.store.get(&path).await.unwrap().bytes().await })
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    rt.block_on(env.store.put(&path, PutPayload::from(bytes)))
        .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    match remote.restore_blocking(None, dir2.path()) {
        Err(Error::RemoteCorruption { object, .. }) => assert!(object.contains(victim.as_str())),
        other => panic!("a damaged chunk must be detected: {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir2.path()).unwrap().count(), 0);
}

/// Names in `dir`, sorted (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Copies the directory tree `from` to `to` (what a crash at this moment leaves on disk).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Opens a restored directory at its checkpoint and reads the state.
fn open_restored(dir: &Path, checkpoint_id: u64) -> Model {
    let mut j = Journal::open_at_checkpoint(dir, checkpoint_id, journal_opts()).unwrap();
    read_state(&mut j)
}

/// A restore is atomic: killed at any point of its downloads (the snapshot's GET, each chunk's),
/// what it leaves is its target as it was — missing, or empty — and at most its own directory
/// beside it, which the next restore removes before it restores the checkpoint whole; failed at
/// any GET, it leaves the target as it was and nothing beside it. (Restores used to write into
/// the target itself: a crash left `*.tmp` files there, a directory `Journal::open` would have
/// taken for an empty one and started a new journal in.)
fn interrupted_restore_leaves_the_target_untouched(kind: Kind) {
    let Some(env) = Env::new(kind, "restore-atomic") else {
        return;
    };
    let faulty = FaultyStore::new(Arc::clone(&env.store));
    // One object at a time: when a GET is held, every byte before it is written.
    let remote = env
        .remote_over(faulty.clone())
        .with_options(RemoteOptions::default().concurrency(1));
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(1500);
    job.j.compact().unwrap(); // a snapshot object
    let mut pushed = None;
    for _ in 0..3 {
        // Segments after it, in chunks of successive pushes.
        job.mutate(700);
        let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        pushed = Some(push.wait().unwrap());
    }
    let pushed = pushed.unwrap();
    let model = job.model.clone();

    // The GETs of a whole restore.
    let probe = tempfile::tempdir().unwrap();
    let before = faulty.gets.load(std::sync::atomic::Ordering::SeqCst);
    let r = remote
        .restore_blocking(None, probe.path().join("restored"))
        .unwrap();
    let gets = faulty.gets.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        gets >= 6,
        "a snapshot, chunks and the manifest: {gets} GETs"
    );
    assert!(r
        .files
        .iter()
        .all(|f| f.starts_with(probe.path().join("restored"))));
    assert_eq!(
        open_restored(&probe.path().join("restored"), r.checkpoint_id),
        model
    );
    assert_eq!(names(probe.path()), ["restored"], "nothing left beside it");

    for n in 0..gets {
        for existing in [false, true] {
            let what = format!("GET {n} of {gets}, target existing: {existing}");
            let untouched = |parent: &Path| {
                let target = parent.join("restored");
                if existing {
                    assert!(names(&target).is_empty(), "{what}: {:?}", names(&target));
                } else {
                    assert!(!target.exists(), "{what}: {:?}", names(&target));
                }
            };
            let fresh = || {
                let parent = tempfile::tempdir().unwrap();
                if existing {
                    std::fs::create_dir(parent.path().join("restored")).unwrap();
                }
                parent
            };

            // Failing at GET n: an error, nothing changed.
            let parent = fresh();
            faulty.fail_gets_after(Some(n));
            let err = remote
                .restore_blocking(None, parent.path().join("restored"))
                .unwrap_err();
            let part = remote
                .restore_key_groups_blocking(
                    None,
                    KeyGroupRange::new(0, 64),
                    parent.path().join("restored"),
                )
                .unwrap_err();
            faulty.fail_gets_after(None);
            assert!(matches!(err, Error::Remote { .. }), "{what}: {err}");
            assert!(matches!(part, Error::Remote { .. }), "{what}: {part}");
            untouched(parent.path());
            assert_eq!(
                names(parent.path()),
                if existing { vec!["restored"] } else { vec![] },
                "{what}: a failed restore leaves nothing beside its target"
            );

            // Killed at GET n: held there, and what is on disk copied, as a crash leaves it.
            let parent = fresh();
            let sem = Arc::new(tokio::sync::Semaphore::new(0));
            let start = faulty.gets.load(std::sync::atomic::Ordering::SeqCst);
            faulty.hold_gets_after(n, Arc::clone(&sem));
            let restoring = {
                let (remote, target) = (remote.clone(), parent.path().join("restored"));
                std::thread::spawn(move || remote.restore_blocking(None, target))
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while faulty.gets.load(std::sync::atomic::Ordering::SeqCst) < start + n + 1 {
                assert!(std::time::Instant::now() < deadline, "{what}: no GET {n}");
                std::thread::yield_now();
            }
            let crashed = tempfile::tempdir().unwrap();
            copy_tree(parent.path(), crashed.path());
            faulty.hold_gets_after(u64::MAX, Arc::clone(&sem));
            sem.add_permits(1 << 20);
            let done = restoring.join().unwrap().unwrap();
            assert_eq!(
                open_restored(&parent.path().join("restored"), done.checkpoint_id),
                model
            );

            // The crash left the target untouched, and at most the restore's own directory.
            untouched(crashed.path());
            for name in names(crashed.path()) {
                assert!(
                    name == "restored"
                        || (name.starts_with(".restored.restore-") && name.ends_with(".tmp")),
                    "{what}: {name} left beside the target"
                );
            }
            // The next restore removes what the crashed one left and restores the whole.
            let again = remote
                .restore_blocking(Some(pushed.seq), crashed.path().join("restored"))
                .unwrap();
            assert_eq!(names(crashed.path()), ["restored"], "{what}");
            assert_eq!(
                open_restored(&crashed.path().join("restored"), again.checkpoint_id),
                model,
                "{what}"
            );
        }
    }
}

fn large_objects_go_up_in_parts(kind: Kind) {
    let Some(env) = Env::new(kind, "multipart") else {
        return;
    };
    // S3 needs parts of at least 5 MiB (but the last).
    let remote = env.remote().with_options(
        RemoteOptions::default()
            .multipart_threshold(6 << 20)
            .part_size(5 << 20)
            .concurrency(3),
    );
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(
        dir.path(),
        JournalOptions::default()
            .segment_size(32 << 20)
            .compaction(CompactionPolicy::manual()),
    )
    .unwrap();
    let v: ValueState<u32, Vec<u8>> = j.value_state("blobs").unwrap();
    let mut model = BTreeMap::new();
    for k in 0..180u32 {
        let blob: Vec<u8> = (0..64 << 10)
            .map(|i| (i as u32 ^ k.wrapping_mul(2654435761)) as u8)
            .collect();
        v.set(&mut j, &k, &blob).unwrap();
        model.insert(k, blob);
    }
    j.compact().unwrap(); // an ~11 MiB snapshot
    for k in 0..40u32 {
        v.set(&mut j, &k, &vec![k as u8; 200]).unwrap();
        model.insert(k, vec![k as u8; 200]);
    }
    let (_, push) = j.checkpoint_and_push(&shipper).unwrap();
    let r = push.wait().unwrap();
    assert!(r.snapshot_bytes_uploaded > 6 << 20, "{r:?}");
    let dir2 = tempfile::tempdir().unwrap();
    let rr = remote.restore_blocking(None, dir2.path()).unwrap();
    let mut j2 = Journal::open_at_checkpoint(
        dir2.path(),
        rr.checkpoint_id,
        JournalOptions::default().compaction(CompactionPolicy::manual()),
    )
    .unwrap();
    let v2: ValueState<u32, Vec<u8>> = j2.value_state("blobs").unwrap();
    for (k, blob) in &model {
        assert_eq!(v2.get(&mut j2, k).unwrap().as_ref(), Some(blob), "key {k}");
    }
    // A key-group restore of every group fetches the ~11 MiB of blocks in several ranged GETs.
    let dir3 = tempfile::tempdir().unwrap();
    let kr = remote
        .clone()
        .with_options(RemoteOptions::default().range_get_size(3 << 20))
        .restore_key_groups_blocking(None, KeyGroupRange::new(0, 128), dir3.path())
        .unwrap();
    assert!(kr.bytes > 8 << 20, "{kr:?}");
    let mut j3 = Journal::open_at_checkpoint(
        dir3.path(),
        kr.checkpoint_id,
        JournalOptions::default().compaction(CompactionPolicy::manual()),
    )
    .unwrap();
    let v3: ValueState<u32, Vec<u8>> = j3.value_state("blobs").unwrap();
    for (k, blob) in &model {
        assert_eq!(v3.get(&mut j3, k).unwrap().as_ref(), Some(blob), "key {k}");
    }
}

fn key_group_restore_scales_out(kind: Kind) {
    let Some(env) = Env::new(kind, "rescale") else {
        return;
    };
    let remote = env.remote();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(1500);
    job.j.compact().unwrap();
    job.mutate(300);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    push.wait().unwrap();
    let whole = tempfile::tempdir().unwrap();
    let full = remote.restore_blocking(None, whole.path()).unwrap();
    // Which key group each key of the model falls in.
    let mut group = |k: u32| job.j.key_group(&k).unwrap();
    let groups: BTreeMap<u32, u16> = (0..300).map(|k| (k, group(k).0)).collect();
    let mut union = Model::default();
    for range in [
        KeyGroupRange::new(0, 40),
        KeyGroupRange::new(40, 41),
        KeyGroupRange::new(41, 128),
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = remote
            .restore_key_groups_blocking(None, range, d.path())
            .unwrap();
        assert!(
            r.bytes < full.bytes,
            "{range}: {} of {} bytes",
            r.bytes,
            full.bytes
        );
        let mut j = Journal::open_at_checkpoint(
            d.path(),
            r.checkpoint_id,
            journal_opts().key_group_range(range),
        )
        .unwrap();
        let part = read_state(&mut j);
        let mine = |k: &u32| range.contains(statejournal::KeyGroup(groups[k]));
        let expected = Model {
            values: job
                .model
                .values
                .iter()
                .filter(|(k, _)| mine(k))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            lists: job
                .model
                .lists
                .iter()
                .filter(|(k, _)| mine(k))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        };
        assert_eq!(part, expected, "key groups {range}");
        union.values.extend(part.values);
        union.lists.extend(part.lists);
        // The part goes on as a journal of its own: a compaction of it works.
        j.compact().unwrap();
    }
    assert_eq!(union, job.model);
    let d = tempfile::tempdir().unwrap();
    assert!(remote
        .restore_key_groups_blocking(None, KeyGroupRange::new(0, 129), d.path())
        .is_err());
}

fn pushes_publish_in_checkpoint_order(kind: Kind) {
    let Some(env) = Env::new(kind, "order") else {
        return;
    };
    let remote = env.remote();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    // Started back to back, none awaited: they must publish in the order they were started.
    let mut pushes = Vec::new();
    let mut models = Vec::new();
    for _ in 0..6 {
        job.mutate(100);
        let (info, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        pushes.push((info.id, push));
        models.push(job.model.clone());
    }
    let reports: Vec<_> = pushes
        .into_iter()
        .map(|(id, p)| {
            let r = p.wait().unwrap();
            assert_eq!(r.checkpoint_id, id);
            r
        })
        .collect();
    assert!(
        reports.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "{reports:?}"
    );
    assert_eq!(restore_and_read(&remote, None).0, *models.last().unwrap());
    // Pushing an older checkpoint again after a newer one: it is already there, under its number.
    let oldest_retained = job.j.checkpoints()[0].id;
    let again = job
        .j
        .push_checkpoint(oldest_retained, &shipper)
        .unwrap()
        .wait()
        .unwrap();
    let pushed = reports.iter().find(|r| r.checkpoint_id == oldest_retained);
    assert!(again.already_published, "{again:?}");
    assert_eq!(Some(again.seq), pushed.map(|r| r.seq));
    // An older checkpoint after a newer one, never pushed, is refused: it would become the newest.
    job.mutate(10);
    let unpushed = job.j.checkpoint().unwrap();
    job.mutate(10);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    push.wait().unwrap();
    let err = job
        .j
        .push_checkpoint(unpushed.id, &shipper)
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

#[test]
fn local_checkpoint_files_stay_pinned_while_pushed() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = FaultyStore::new(store);
    let remote = RemoteStore::new(faulty.clone(), "pins").unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(600);
    job.j.compact().unwrap();
    job.mutate(300);
    let sem = Arc::new(tokio::sync::Semaphore::new(0));
    faulty.hold_writes(Arc::clone(&sem));
    let (info, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let pushed = job.model.clone();
    // Retention (3 local checkpoints) drops the pushed one, and compactions make its snapshot
    // and segments garbage: the pin must keep them until the upload is done.
    for _ in 0..4 {
        job.mutate(600);
        job.j.compact().unwrap();
        job.j.checkpoint().unwrap();
    }
    assert!(job.j.checkpoints().iter().all(|c| c.id != info.id));
    let snapshot = info.snapshot.clone().unwrap();
    assert!(snapshot.exists(), "GC deleted a pinned snapshot");
    for (seg, _) in &info.segments {
        assert!(seg.exists(), "GC deleted pinned segment {}", seg.display());
    }
    sem.add_permits(1 << 20);
    push.wait().unwrap();
    assert_eq!(restore_and_read(&remote, None).0, pushed);
    // Unpinned: the next collection removes them.
    job.mutate(10);
    job.j.checkpoint().unwrap();
    assert!(
        !snapshot.exists(),
        "the unpinned snapshot was not collected"
    );
}

#[test]
fn store_from_url() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("bucket").display());
    std::fs::create_dir_all(tmp.path().join("bucket")).unwrap();
    for url in [url.as_str(), "memory:///jobs/a"] {
        let remote = RemoteStore::from_url(url).unwrap();
        let shipper = Shipper::new(remote.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut job = Job::open(dir.path());
        job.mutate(50);
        let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        push.wait().unwrap();
        assert_eq!(restore_and_read(&remote, None).0, job.model, "{url}");
    }
    assert!(tmp.path().join("bucket/manifests").is_dir());
    // s3:// with options, when there is a server.
    if Env::new(Kind::S3, "from_url").is_some() {
        let endpoint = s3_endpoint().unwrap();
        let url = format!("s3://{BUCKET}/{}", unique("from-url"));
        let remote = RemoteStore::from_url_opts(
            &url,
            [
                ("aws_endpoint", endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
                ("aws_region", "us-east-1"),
            ],
        )
        .unwrap();
        let shipper = Shipper::new(remote.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut job = Job::open(dir.path());
        job.mutate(50);
        let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
        push.wait().unwrap();
        assert_eq!(restore_and_read(&remote, None).0, job.model, "{url}");
    }
    assert!(matches!(
        RemoteStore::from_url("nonsense:/x"),
        Err(Error::InvalidOptions { .. })
    ));
}

/// The local manifest of a checkpoint, as its file holds it.
fn local_manifest(info: &statejournal::CheckpointInfo) -> statejournal::codec::manifest::Manifest {
    statejournal::codec::manifest::Manifest::decode(&std::fs::read(&info.manifest).unwrap())
        .unwrap()
}

/// Manifest objects in a `file://` store's directory.
fn manifest_objects(bucket: &Path) -> usize {
    names(&bucket.join("manifests"))
        .iter()
        .filter(|n| n.ends_with(".sjrm"))
        .count()
}

/// Pushing a checkpoint the store already holds — as its newest, or behind a later checkpoint of
/// the same writer — is idempotent and says so (`PushReport::already_published`, with the number
/// it has), whoever pushed it; a checkpoint older than the newest that the store does not hold is
/// still refused, and a writer of a newer epoch still publishes an older one again (taking the
/// store over makes it the newest). Before, only the command line checked, and only against the
/// newest checkpoint: `Journal::push_checkpoint` of a checkpoint already published published a
/// duplicate manifest under the next number.
#[test]
fn pushing_a_published_checkpoint_again_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let remote = RemoteStore::from_url(&format!("file://{}", bucket.display())).unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(200);
    let c1 = job.j.checkpoint().unwrap();
    let model1 = job.model.clone();
    job.mutate(200);
    let c2 = job.j.checkpoint().unwrap(); // never pushed
    job.mutate(200);
    let c3 = job.j.checkpoint().unwrap();
    let push = |job: &mut Job, id: u64, shipper: &Shipper| {
        job.j.push_checkpoint(id, shipper).unwrap().wait()
    };

    let first = push(&mut job, c1.id, &shipper).unwrap();
    assert!(!first.already_published && first.seq == 1, "{first:?}");
    let again = push(&mut job, c1.id, &shipper).unwrap();
    assert!(again.already_published, "{again:?}");
    assert_eq!(
        (again.seq, again.checkpoint_id, again.lsn),
        (1, c1.id, c1.lsn.get())
    );
    assert_eq!(
        (
            again.objects_uploaded,
            again.bytes_uploaded,
            again.manifest_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(manifest_objects(&bucket), 1, "no duplicate manifest");

    let newest = push(&mut job, c3.id, &shipper).unwrap();
    assert!(!newest.already_published && newest.seq == 2, "{newest:?}");
    // The newest again, and the older one pushed before: both already there.
    let again = push(&mut job, c3.id, &shipper).unwrap();
    assert!(again.already_published && again.seq == 2, "{again:?}");
    let again = push(&mut job, c1.id, &shipper).unwrap();
    assert!(again.already_published && again.seq == 1, "{again:?}");
    // One older than the newest that was never pushed would become the newest: refused.
    let err = push(&mut job, c2.id, &shipper).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOptions { .. }) && err.to_string().contains("older than"),
        "{err}"
    );
    assert_eq!(manifest_objects(&bucket), 2, "no duplicate manifest");
    assert_eq!(remote.checkpoints_blocking().unwrap().len(), 2);

    // The library's answer, which the command line asks before it opens a journal.
    let epoch = shipper.epoch();
    let found = |info, epoch| {
        remote
            .find_published_blocking(&local_manifest(info), epoch)
            .unwrap()
            .map(|c| c.seq)
    };
    assert_eq!(found(&c1, epoch), Some(1));
    assert_eq!(found(&c2, epoch), None);
    assert_eq!(found(&c3, epoch), Some(2));
    // For a newer epoch (a writer taking the store over) only the newest is already there: a
    // push of another checkpoint makes it the newest, which is what taking over is for.
    assert_eq!(found(&c3, epoch + 1), Some(2));
    assert_eq!(found(&c1, epoch + 1), None);

    // Another writer (a newer epoch) pushing the newest checkpoint: already there, as published
    // by the first writer's epoch. Pushing c1 makes it the newest again, under a new number.
    let other = Shipper::new(remote.clone()).unwrap();
    assert!(other.epoch() > epoch);
    let again = push(&mut job, c3.id, &other).unwrap();
    assert!(again.already_published && again.seq == 2, "{again:?}");
    assert_eq!(again.epoch, epoch);
    assert_eq!(manifest_objects(&bucket), 2, "no duplicate manifest");
    let over = push(&mut job, c1.id, &other).unwrap();
    assert!(!over.already_published && over.seq == 3, "{over:?}");
    assert_eq!(restore_and_read(&remote, None).0, model1);
    let again = push(&mut job, c1.id, &other).unwrap();
    assert!(again.already_published && again.seq == 3, "{again:?}");

    // A checkpoint with c2's id and LSN from another history (a job restored from c1 that
    // wrote other records) is not c2, and not published either.
    let restored = tempfile::tempdir().unwrap();
    let r = remote.restore_blocking(Some(1), restored.path()).unwrap();
    assert_eq!(open_restored(restored.path(), r.checkpoint_id), model1);
    let mut twin = Job::open(restored.path());
    for _ in 0..7 {
        twin.next(); // another stream of mutations than the original job's
    }
    twin.mutate(200);
    let twin_c2 = twin.j.checkpoint().unwrap();
    assert_eq!((twin_c2.id, twin_c2.lsn), (c2.id, c2.lsn));
    assert_eq!(found(&twin_c2, epoch), None);
    assert_eq!(found(&twin_c2, epoch + 1), None);
}

#[test]
fn progress_counts_every_byte_of_a_push_and_a_restore() {
    use statejournal::remote::Progress;
    let progress = Arc::new(Progress::default());
    // Small parts, so that the snapshot goes up in a multipart upload whose parts are counted.
    let opts = RemoteOptions::default()
        .multipart_threshold(8 << 10)
        .part_size(4 << 10)
        .progress(Arc::clone(&progress));
    let remote = RemoteStore::new(Arc::new(InMemory::new()), "progress")
        .unwrap()
        .with_options(opts);
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(3000);
    job.j.compact().unwrap();
    job.mutate(500);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let pushed = push.wait().unwrap();
    assert!(pushed.snapshot_bytes_uploaded > 8 << 10, "{pushed:?}");
    assert_eq!(progress.total(), pushed.bytes_uploaded);
    assert_eq!(progress.done(), pushed.bytes_uploaded);
    // An incremental push counts only what it uploads.
    job.mutate(100);
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let pushed = push.wait().unwrap();
    assert_eq!(pushed.snapshot_bytes_uploaded, 0);
    assert_eq!(
        (progress.total(), progress.done()),
        (pushed.bytes_uploaded, pushed.bytes_uploaded)
    );

    let out = tempfile::tempdir().unwrap();
    let restored = remote
        .restore_blocking(None, out.path().join("all"))
        .unwrap();
    assert_eq!(progress.total(), restored.bytes);
    assert_eq!(progress.done(), restored.bytes);
    let part = remote
        .restore_key_groups_blocking(None, KeyGroupRange::new(0, 16), out.path().join("part"))
        .unwrap();
    assert!(part.bytes < restored.bytes, "{part:?} {restored:?}");
    assert_eq!(progress.total(), part.bytes);
    assert_eq!(progress.done(), part.bytes);
}

#[test]
fn closing_during_a_push_keeps_the_directory_locked_until_it_ends() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = FaultyStore::new(store);
    let remote = RemoteStore::new(faulty.clone(), "close").unwrap();
    let shipper = Shipper::new(remote.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::open(dir.path());
    job.mutate(200);
    let sem = Arc::new(tokio::sync::Semaphore::new(0));
    faulty.hold_writes(Arc::clone(&sem));
    let (_, push) = job.j.checkpoint_and_push(&shipper).unwrap();
    let model = job.model.clone();
    job.j.close().unwrap();
    // The push still reads the segments through their mappings: nobody may reopen and rewrite
    // them meanwhile.
    assert!(matches!(
        Journal::open(dir.path(), journal_opts()),
        Err(Error::Locked { .. })
    ));
    sem.add_permits(1 << 20);
    push.wait().unwrap();
    // The push's last reference to the log is dropped on the runtime just after it resolves.
    let mut reopened = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match Journal::open(dir.path(), journal_opts()) {
            Ok(j) => {
                reopened = Some(j);
                break;
            }
            Err(Error::Locked { .. }) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let mut j = reopened.expect("the directory is unlocked once the push is done");
    assert_eq!(read_state(&mut j), model);
    assert_eq!(restore_and_read(&remote, None).0, model);
}
