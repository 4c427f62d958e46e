//! The built binary's remote subcommands — `checkpoint push|pull|restore` and `checkpoint list
//! --remote` — and `demo --remote`, against a `file://` store in a temporary directory, and
//! against S3 (moto, started by `.ci/run`) when `SJ_S3_ENDPOINT` names one. Without it the S3 test
//! says on stderr that it was skipped and why; under CI (`CI` set) a missing endpoint fails it,
//! as in the library's `tests/remote.rs`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use statejournal::{Error, Journal, JournalOptions, KeyGroupRange, LogOptions};

const EXE: &str = env!("CARGO_BIN_EXE_statejournal");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(EXE)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run statejournal");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !r.stderr.contains("panicked"),
        "statejournal {args:?} panicked: {}",
        r.stderr
    );
    r
}

fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// Runs and expects success.
fn ok(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, 0, "statejournal {args:?}: {}{}", r.stdout, r.stderr);
    r
}

/// Runs and expects the error exit code and a one-line message on stderr.
fn fails(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, 1, "statejournal {args:?} should fail: {}", r.stdout);
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.trim_end().lines().count() == 1,
        "one clear sentence: {}",
        r.stderr
    );
    r
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn url_of(store: &Path) -> String {
    format!("file://{}", store.display())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const KEYS: u32 = 700;

fn opts() -> JournalOptions {
    JournalOptions::default()
        .segment_size(256 << 10)
        .retain_checkpoints(5)
}

type Model = BTreeMap<u32, u64>;

/// A journal with a snapshot, three checkpoints and a log tail after the last. Returns each
/// checkpoint's id with the state it holds.
fn journal(dir: &Path) -> Vec<(u64, Model)> {
    let mut j = Journal::open(dir, opts()).unwrap();
    let clicks = j.value_state::<u32, u64>("clicks").unwrap();
    let pages = j.list_state::<u32, String>("pages").unwrap();
    let mut model = Model::new();
    let mut out = Vec::new();
    for i in 0..6000u32 {
        let k = i.wrapping_mul(2_654_435_761) % KEYS;
        clicks.set(&mut j, &k, &u64::from(i)).unwrap();
        model.insert(k, u64::from(i));
        pages
            .add(&mut j, &(k % 50), &format!("/p{}", i % 7))
            .unwrap();
        if i == 2000 {
            out.push((j.checkpoint().unwrap().id, model.clone()));
        }
        if i == 4000 {
            j.compact().unwrap();
            out.push((j.checkpoint().unwrap().id, model.clone()));
        }
    }
    out.push((j.checkpoint().unwrap().id, model.clone()));
    clicks.set(&mut j, &1, &u64::MAX).unwrap(); // after the last checkpoint: never restored
    j.commit().unwrap();
    j.close().unwrap();
    out
}

/// Opens a restored directory (with its key-group range) and reads every key: the values of the
/// keys it owns, and how many keys it does not own.
fn read(dir: &Path, range: Option<KeyGroupRange>) -> (Model, u32) {
    let mut o = opts().log_options(LogOptions::default().create_if_missing(false));
    if let Some(r) = range {
        o = o.key_group_range(r);
    }
    let mut j = Journal::open(dir, o).unwrap();
    let clicks = j.value_state::<u32, u64>("clicks").unwrap();
    let mut got = Model::new();
    let mut foreign = 0;
    for k in 0..KEYS {
        match clicks.get(&mut j, &k) {
            Ok(Some(v)) => {
                got.insert(k, v);
            }
            Ok(None) => {}
            Err(Error::KeyGroupNotOwned { .. }) => foreign += 1,
            Err(e) => panic!("key {k}: {e}"),
        }
    }
    j.close().unwrap();
    (got, foreign)
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn flip_byte(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    b[at] ^= 0x5a;
    std::fs::write(p, b).unwrap();
}

fn remote_list(url: &str) -> Vec<Value> {
    let r = ok(&["checkpoint", "list", "--remote", url, "--json"]);
    match json(&r.stdout) {
        Value::Array(a) => a,
        v => panic!("not an array: {v}"),
    }
}

#[test]
fn push_list_restore_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, store) = (tmp.path().join("job"), tmp.path().join("store"));
    let cps = journal(&dir);
    let url = url_of(&store);
    let d = s(&dir);

    // An empty store lists nothing and restores nothing.
    assert!(remote_list(&url).is_empty());
    let r = ok(&["checkpoint", "list", "--remote", &url]);
    assert!(r.stdout.contains("none"), "{}", r.stdout);
    let r = fails(&["checkpoint", "restore", s(&tmp.path().join("x")), &url]);
    assert!(r.stderr.contains("holds no checkpoint"), "{}", r.stderr);

    // The first checkpoint, then the newest (the default).
    let r = ok(&[
        "checkpoint",
        "push",
        d,
        &url,
        "--checkpoint",
        &cps[0].0.to_string(),
    ]);
    assert!(
        r.stdout
            .contains(&format!("pushed checkpoint {} ", cps[0].0))
            && r.stdout.contains("remote checkpoint #1"),
        "{}",
        r.stdout
    );
    let r = ok(&["checkpoint", "push", d, &url]);
    assert!(
        r.stdout
            .contains(&format!("pushed checkpoint {} ", cps[2].0))
            && r.stdout.contains("remote checkpoint #2"),
        "{}",
        r.stdout
    );
    // Again: nothing to do, nothing published; the same for the older one pushed first.
    let r = ok(&["checkpoint", "push", d, &url]);
    assert!(
        r.stdout.contains("already in") && r.stdout.contains("remote checkpoint #2"),
        "{}",
        r.stdout
    );
    let r = ok(&[
        "checkpoint",
        "push",
        d,
        &url,
        "--checkpoint",
        &cps[0].0.to_string(),
    ]);
    assert!(
        r.stdout.contains("already in") && r.stdout.contains("remote checkpoint #1"),
        "{}",
        r.stdout
    );
    // An older checkpoint than the newest pushed from this log would become the newest: refused.
    let r = fails(&[
        "checkpoint",
        "push",
        d,
        &url,
        "--checkpoint",
        &cps[1].0.to_string(),
    ]);
    assert!(r.stderr.contains("older than"), "{}", r.stderr);
    // An id the journal does not have.
    let r = fails(&["checkpoint", "push", d, &url, "--checkpoint", "999"]);
    assert!(r.stderr.contains("no checkpoint 999"), "{}", r.stderr);

    let listed = remote_list(&url);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let ids: Vec<u64> = listed
        .iter()
        .map(|c| c["checkpoint_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![cps[0].0, cps[2].0]);
    assert_eq!(listed[1]["seq"], 2);
    // The first push claimed epoch 1 in the empty store; the second joined it.
    assert_eq!(
        (listed[0]["epoch"].as_u64(), listed[1]["epoch"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(listed.iter().all(|c| c["bytes"].as_u64().unwrap() > 0));
    let r = ok(&["checkpoint", "list", "--remote", &url]);
    assert!(
        r.stdout.contains("local id") && r.stdout.contains("created (UTC)"),
        "{}",
        r.stdout
    );
    // The local listing is unchanged by all this.
    let r = ok(&["checkpoint", "list", d, "--json"]);
    assert_eq!(json(&r.stdout).as_array().unwrap().len(), 3);

    // restore (the newest): the state at the checkpoint, not the tail after it.
    let out = tmp.path().join("restored");
    let r = ok(&["checkpoint", "restore", s(&out), &url]);
    assert!(
        r.stdout.contains("restored remote checkpoint #2")
            && r.stdout.contains("every checksum verified")
            && r.stdout.contains(&format!("at checkpoint {}", cps[2].0)),
        "{}",
        r.stdout
    );
    let (got, foreign) = read(&out, None);
    assert_eq!(foreign, 0);
    assert_eq!(got, cps[2].1);
    assert_ne!(got.get(&1), Some(&u64::MAX));

    // pull of an older one: files only, which verify and open at that state.
    let pulled = tmp.path().join("pulled");
    let r = ok(&["checkpoint", "pull", s(&pulled), &url, "--checkpoint", "1"]);
    assert!(
        r.stdout.contains("restored remote checkpoint #1"),
        "{}",
        r.stdout
    );
    ok(&["verify", s(&pulled)]);
    assert_eq!(read(&pulled, None).0, cps[0].1);

    // An unknown remote checkpoint: refused, nothing created.
    let none = tmp.path().join("none");
    let r = fails(&[
        "checkpoint",
        "restore",
        s(&none),
        &url,
        "--checkpoint",
        "42",
    ]);
    assert!(
        r.stderr.contains("#42") && r.stderr.contains("#1, #2"),
        "{}",
        r.stderr
    );
    assert!(!none.exists());

    // A non-empty directory: refused, untouched.
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    for verb in ["pull", "restore"] {
        let r = fails(&["checkpoint", verb, s(&full), &url]);
        assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn key_group_ranges_scale_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, store) = (tmp.path().join("job"), tmp.path().join("store"));
    let cps = journal(&dir);
    let url = url_of(&store);
    ok(&["checkpoint", "push", s(&dir), &url]);
    let want = &cps[2].1;
    let mut union = Model::new();
    for (part, range) in [(0u16, 64u16), (64, 128)].into_iter().enumerate() {
        let out = tmp.path().join(format!("part-{part}"));
        let arg = format!("{}..{}", range.0, range.1);
        let r = ok(&["checkpoint", "restore", s(&out), &url, "--key-groups", &arg]);
        assert!(
            r.stdout
                .contains(&format!("key groups {}..{}", range.0, range.1)),
            "{}",
            r.stdout
        );
        let (got, foreign) = read(&out, Some(KeyGroupRange::new(range.0, range.1)));
        assert!(!got.is_empty() && foreign > 0, "{part}: {foreign}");
        for (k, v) in &got {
            assert_eq!(want.get(k), Some(v), "key {k}");
        }
        union.extend(got);
    }
    assert_eq!(&union, want, "the two parts hold every key once");
    // A range the checkpoint does not hold, and malformed ones.
    let r = fails(&[
        "checkpoint",
        "restore",
        s(&tmp.path().join("x")),
        &url,
        "--key-groups",
        "0..200",
    ]);
    assert!(r.stderr.contains("key groups"), "{}", r.stderr);
    assert!(!tmp.path().join("x").exists());
    for bad in ["7", "9..3", "a..b"] {
        let r = run(&[
            "checkpoint",
            "pull",
            s(&tmp.path().join("y")),
            &url,
            "--key-groups",
            bad,
        ]);
        assert_eq!(r.code, 2, "{bad}: a usage error: {}", r.stderr);
    }
}

#[test]
fn damaged_remote_objects_are_named_and_nothing_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, store) = (tmp.path().join("job"), tmp.path().join("store"));
    journal(&dir);
    let url = url_of(&store);
    ok(&["checkpoint", "push", s(&dir), &url]);
    let out = tmp.path().join("out");
    for suffix in [".snap", ".chunk"] {
        let objects = files_ending(&store, suffix);
        let victim = objects
            .last()
            .unwrap_or_else(|| panic!("no {suffix} object"));
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        let len = std::fs::metadata(victim).unwrap().len() as usize;
        flip_byte(victim, len / 2);
        for verb in ["pull", "restore"] {
            let r = fails(&["checkpoint", verb, s(&out), &url]);
            assert!(
                r.stderr.contains(&name) && r.stderr.contains("CRC"),
                "{verb} names the damaged object {name}: {}",
                r.stderr
            );
            assert!(!out.exists(), "a failed {verb} leaves nothing behind");
        }
        flip_byte(victim, len / 2);
    }
    ok(&["checkpoint", "restore", s(&out), &url]);
    // A damaged manifest, too.
    let manifest = files_ending(&store, ".sjrm").pop().unwrap();
    flip_byte(&manifest, 3);
    let r = fails(&["checkpoint", "list", "--remote", &url]);
    assert!(
        r.stderr
            .contains(&*manifest.file_name().unwrap().to_string_lossy()),
        "{}",
        r.stderr
    );
}

#[test]
fn push_needs_the_lock_and_store_urls_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    journal(&dir);
    let url = url_of(&tmp.path().join("store"));
    let j = Journal::open(&dir, opts()).unwrap();
    let r = fails(&["checkpoint", "push", s(&dir), &url]);
    assert!(
        r.stderr.contains("open in another process") && r.stderr.contains("lock"),
        "{}",
        r.stderr
    );
    drop(j);
    assert!(!tmp.path().join("store").exists(), "nothing was pushed");
    for (bad, says) in [
        ("not-a-url", "not a store URL"),
        ("file://relative/path", "absolute path"),
        ("nonsense://x/y", "cannot use store"),
    ] {
        let r = fails(&["checkpoint", "list", "--remote", bad]);
        assert!(r.stderr.contains(says), "{bad}: {}", r.stderr);
    }
    let r = run(&["checkpoint", "list"]);
    assert_eq!(r.code, 2, "DIR or --remote is required");
    let r = fails(&["checkpoint", "push", s(&tmp.path().join("missing")), &url]);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    // A directory without a checkpoint.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails(&["checkpoint", "push", s(&empty), &url]);
}

#[test]
fn an_operator_push_joins_the_epoch_unless_told_to_take_over() {
    use statejournal::remote::{RemoteStore, Shipper};
    let tmp = tempfile::tempdir().unwrap();
    let url = url_of(&tmp.path().join("store"));
    // A running job pushing to the store, with the epoch its shipper claimed.
    let mut live = Journal::open(tmp.path().join("live"), opts()).unwrap();
    let v = live.value_state::<u32, u64>("clicks").unwrap();
    let shipper = Shipper::new(RemoteStore::from_url(&url).unwrap()).unwrap();
    let push_live = |live: &mut Journal, n: u64| {
        v.set(live, &0, &n).unwrap();
        live.checkpoint_and_push(&shipper).unwrap().1.wait()
    };
    assert_eq!(push_live(&mut live, 1).unwrap().epoch, 1);
    // An operator pushes another journal to the same store: it joins epoch 1, fencing nobody.
    let other = tmp.path().join("other");
    journal(&other);
    let r = ok(&["checkpoint", "push", s(&other), &url]);
    assert!(r.stdout.contains("(epoch 1)"), "{}", r.stdout);
    assert_eq!(push_live(&mut live, 2).unwrap().epoch, 1);
    // --new-epoch takes the store over: the job's next push is fenced off.
    let r = ok(&["checkpoint", "push", s(&other), &url, "--new-epoch"]);
    assert!(r.stdout.contains("(epoch 2)"), "{}", r.stdout);
    assert!(
        matches!(push_live(&mut live, 3), Err(Error::Fenced { .. })),
        "the older writer is fenced off"
    );
    live.close().unwrap();
}

#[test]
fn demo_pushes_its_checkpoints_and_moves_to_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let url = url_of(&tmp.path().join("store"));
    let events = "30000";
    let first = tmp.path().join("a");
    let demo = |dir: &Path| {
        ok(&[
            "demo",
            "--quiet",
            "--events",
            events,
            "--checkpoint-every",
            "0.05",
            "--dir",
            s(dir),
            "--remote",
            &url,
        ])
    };
    let r = demo(&first);
    assert!(
        r.stdout.contains("exactly-once: OK") && r.stdout.contains("remote: pushed"),
        "{}",
        r.stdout
    );
    let listed = remote_list(&url);
    assert!(listed.len() >= 2, "{listed:?}");
    let epoch = listed.last().unwrap()["epoch"].as_u64().unwrap();
    // An empty directory starts from the store's newest checkpoint, which is the finished run.
    let second = tmp.path().join("b");
    let r = demo(&second);
    assert!(
        r.stdout
            .contains(&format!("restored remote checkpoint #{}", listed.len()))
            && r.stdout.contains("exactly-once: OK")
            && r.stdout.contains("processed 0 events"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("remote: pushed 0 checkpoints"),
        "{}",
        r.stdout
    );
    // The second run claimed a newer epoch, fencing off the first.
    let store = statejournal::remote::RemoteStore::from_url(&url).unwrap();
    assert_eq!(store.current_epoch_blocking().unwrap(), epoch + 1);
    assert_eq!(remote_list(&url).len(), listed.len(), "nothing new to push");
}

fn s3_endpoint() -> Option<String> {
    std::env::var("SJ_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
}

const BUCKET: &str = "statejournal-cli-test";

/// Creates the test bucket with a bare HTTP request (moto accepts unsigned requests).
fn create_bucket(endpoint: &str) {
    let hostport = endpoint
        .strip_prefix("http://")
        .expect("SJ_S3_ENDPOINT must be http://host:port")
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to the S3 endpoint");
    write!(
        s,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.contains("BucketAlreadyOwnedByYou"),
        "creating bucket {BUCKET}: {resp}"
    );
}

#[test]
fn s3_round_trip_with_settings_from_the_environment() {
    let Some(endpoint) = s3_endpoint() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the S3 tests: SJ_S3_ENDPOINT is not set (.ci/run starts moto and sets it)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED s3_round_trip_with_settings_from_the_environment: SJ_S3_ENDPOINT is not set \
             (run .ci/run, or start `moto_server -H 127.0.0.1 -p PORT` and export \
             SJ_S3_ENDPOINT=http://127.0.0.1:PORT)"
        );
        return;
    };
    create_bucket(&endpoint);
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    let cps = journal(&dir);
    let url = format!("s3://{BUCKET}/cli-{}", std::process::id());
    let go = |args: &[&str]| {
        let r = run_env(args, &env);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
        r
    };
    go(&["checkpoint", "push", s(&dir), &url]);
    let r = go(&["checkpoint", "list", "--remote", &url, "--json"]);
    let listed = json(&r.stdout);
    assert_eq!(listed[0]["checkpoint_id"].as_u64(), Some(cps[2].0));
    let out = tmp.path().join("restored");
    go(&["checkpoint", "restore", s(&out), &url]);
    assert_eq!(read(&out, None).0, cps[2].1);
    let part = tmp.path().join("part");
    go(&[
        "checkpoint",
        "pull",
        s(&part),
        &url,
        "--key-groups",
        "0..64",
    ]);
    let (got, foreign) = read(&part, Some(KeyGroupRange::new(0, 64)));
    assert!(!got.is_empty() && foreign > 0);
    // The settings really come from the environment: without the endpoint, no server answers.
    let r = run_env(
        &["checkpoint", "list", "--remote", &url],
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            env[1],
            env[2],
            env[3],
            env[4],
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
}
