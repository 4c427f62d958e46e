//! The built `statejournal` binary on a healthy, a torn and a corrupt journal, and on directories
//! that hold no journal: output, exit codes, that the read-only subcommands change nothing, and
//! that `verify`'s predictions agree with what the library's recovery then does.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use statejournal::inspect::{self, InspectOptions};
use statejournal::{
    CorruptionKind, Durability, DurabilityEvidence, Error, Journal, JournalOptions, Lsn,
    RecoveryMode,
};

const EXE: &str = env!("CARGO_BIN_EXE_statejournal");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(EXE)
        .args(args)
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file of a directory with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Sync)
        .segment_size(256 << 10)
        .retain_checkpoints(5)
}

const CLICK_KEYS: u32 = 500;
const PAGE_KEYS: u32 = 50;
const VISIT_KEYS: u32 = 40;
const VISIT_PAGES: u32 = 9;
const WRITES: u32 = 3000;

/// A journal with value, list and map state over several segments, a snapshot, checkpoints and
/// a log tail after them. Returns the checkpoint ids.
fn healthy(dir: &Path) -> Vec<u64> {
    let mut j = Journal::open(dir, opts()).unwrap();
    let clicks = j.value_state::<u32, u64>("clicks").unwrap();
    let pages = j.list_state::<u32, String>("pages").unwrap();
    let visits = j.map_state::<u32, String, u32>("visits").unwrap();
    let mut ids = Vec::new();
    for i in 0..WRITES {
        clicks
            .set(&mut j, &(i % CLICK_KEYS), &u64::from(i))
            .unwrap();
        pages
            .add(&mut j, &(i % PAGE_KEYS), &format!("/p{}", i % 7))
            .unwrap();
        visits
            .put(
                &mut j,
                &(i % VISIT_KEYS),
                &format!("/p{}", i % VISIT_PAGES),
                &i,
            )
            .unwrap();
        if i % 100 == 99 {
            j.commit().unwrap();
        }
        if i == 1500 {
            ids.push(j.checkpoint().unwrap().id);
        }
        if i == 2000 {
            j.compact().unwrap();
            ids.push(j.checkpoint().unwrap().id);
        }
    }
    ids.push(j.checkpoint().unwrap().id);
    clicks.set(&mut j, &1, &7).unwrap(); // a tail after the last checkpoint
    j.commit().unwrap();
    j.close().unwrap();
    ids
}

fn look(dir: &Path) -> inspect::Inspection {
    inspect::inspect(dir, InspectOptions::default()).unwrap()
}

/// Writes garbage right after the last intact frame of the last segment: a torn tail.
fn tear(dir: &Path) -> (PathBuf, u64) {
    let i = look(dir);
    let seg = i.segments.last().unwrap();
    let mut bytes = std::fs::read(&seg.path).unwrap();
    let at = seg.data_end as usize;
    bytes[at..at + 40].fill(0xab);
    std::fs::write(&seg.path, &bytes).unwrap();
    (seg.path.clone(), seg.data_end)
}

/// Flips a payload byte of a record the log proves durable: returns the file, the frame's offset
/// and its LSN.
fn corrupt(dir: &Path) -> (PathBuf, u64, u64) {
    let i = look(dir);
    let target = (i.log.synced_through.get() / 2).max(10);
    let mut found = None;
    inspect::read_records(dir, Lsn(target), |r| {
        found = Some((r.segment, r.offset, r.lsn.get()));
        ControlFlow::Break(())
    })
    .unwrap();
    let (segment, offset, lsn) = found.unwrap();
    let path = dir.join(statejournal::format::segment_file_name(segment));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize + 17] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    (path, offset, lsn)
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for (name, bytes) in contents(from) {
        std::fs::write(to.path().join(name), bytes).unwrap();
    }
    to
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        vec!["demo"],
        vec!["inspect"],
        vec!["verify"],
        vec!["dump"],
        vec!["repair"],
        vec!["compact"],
        vec!["checkpoint", "list"],
        vec!["checkpoint", "push"],
        vec!["checkpoint", "pull"],
        vec!["checkpoint", "restore"],
        vec!["plan"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let r = run(&args);
        assert_eq!(r.code, 0, "{sub:?} --help: {}", r.stderr);
        assert!(
            r.stdout.contains("Example"),
            "{sub:?} --help has no example:\n{}",
            r.stdout
        );
    }
    let r = run(&["inspect"]);
    assert_eq!(r.code, 2, "a missing argument is a usage error");
}

#[test]
fn healthy_journal() {
    let dir = tempfile::tempdir().unwrap();
    let ids = healthy(dir.path());
    let d = s(dir.path());
    let before = contents(dir.path());

    let r = run(&["verify", d]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("sound"), "{}", r.stdout);

    let r = run(&["inspect", d]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for name in [
        "clicks",
        "pages",
        "visits",
        "segments",
        "snapshots",
        "checkpoints",
        "key groups",
        "estimated recovery time",
        "no damage found",
    ] {
        assert!(
            r.stdout.contains(name),
            "inspect output lacks {name:?}:\n{}",
            r.stdout
        );
    }
    let r = run(&["inspect", "--json", d]);
    assert_eq!(r.code, 0);
    let v = json(&r.stdout);
    let entries = |name: &str| {
        v["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no state {name}"))["entries"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(entries("clicks"), u64::from(CLICK_KEYS));
    assert_eq!(entries("pages"), u64::from(PAGE_KEYS));
    assert_eq!(
        entries("visits"),
        u64::from(VISIT_KEYS + VISIT_KEYS * VISIT_PAGES)
    );
    assert!(
        v["segments"].as_array().unwrap().len() > 1,
        "several segments"
    );
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert!(v["estimated_recovery_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["sound"], true);

    let r = run(&["checkpoint", "list", "--json", d]);
    assert_eq!(r.code, 0);
    let listed: Vec<u64> = json(&r.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, ids);
    let r = run(&["checkpoint", "list", d]);
    assert!(r.stdout.contains("restorable"), "{}", r.stdout);

    // dump: every record as a JSON line, filtered by state and LSN.
    let r = run(&["dump", d, "--state", "clicks"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    let puts: Vec<&Value> = lines.iter().filter(|l| l["op"] == "put").collect();
    assert_eq!(puts.len() as u32, WRITES + 1, "one put per clicks.set");
    assert!(lines.iter().all(|l| l["state"] == "clicks"));
    assert_eq!(puts.last().unwrap()["key"], 1);
    assert_eq!(puts.last().unwrap()["value"], 7);
    let r = run(&["dump", d, "--from", "100", "--limit", "10"]);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l["lsn"].as_u64().unwrap() >= 100));
    let r = run(&["dump", d, "--snapshot", "--state", "visits"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = json(r.stdout.lines().next().unwrap());
    assert!(
        first["map_key"]["str"].as_str().unwrap().starts_with("/p"),
        "{first}"
    );
    let r = run(&["dump", d, "--state", "nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no state named \"nope\""), "{}", r.stderr);
    assert!(
        r.stderr.contains("clicks"),
        "names the states: {}",
        r.stderr
    );

    let r = run(&["repair", d]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("nothing to repair"));
    assert_eq!(
        contents(dir.path()),
        before,
        "read-only subcommands changed the directory"
    );

    let r = run(&[
        "plan",
        "--keys",
        "1000",
        "--value-bytes",
        "1048576",
        "--updates-per-sec",
        "100",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let p = json(&r.stdout);
    assert_eq!(
        p["state_bytes"].as_f64().unwrap(),
        1000.0 * (1048576.0 + 16.0)
    );
    assert!(p["recovery_secs_worst"].as_f64().unwrap() > 1.0);
    assert!(p["disk_bytes_peak"].as_f64().unwrap() > p["disk_bytes_typical"].as_f64().unwrap());
    let r = run(&[
        "plan",
        "--keys",
        "0",
        "--value-bytes",
        "1",
        "--updates-per-sec",
        "1",
    ]);
    assert_eq!(r.code, 1);

    // compact: a new snapshot through the end of the log, the same state, still sound.
    let r = run(&["compact", d]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after = look(dir.path());
    assert!(after.is_sound(), "{:?}", after.problems);
    assert_eq!(after.snapshots.last().unwrap().lsn, after.log.last_lsn);
    let st = after.state.unwrap();
    assert_eq!(
        st.snapshot_lsn, after.log.last_lsn,
        "nothing left to replay"
    );
    let clicks = st.states.iter().find(|s| s.name == "clicks").unwrap();
    assert_eq!(clicks.entries, u64::from(CLICK_KEYS));
    // Every checkpoint is still there and restorable.
    assert_eq!(after.checkpoints.len(), ids.len());
    assert!(after.checkpoints.iter().all(|c| c.error.is_none()));
}

#[test]
fn torn_journal() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let (seg, offset) = tear(dir.path());
    let d = s(dir.path());
    let last = look(dir.path()).log.last_lsn;
    let before = contents(dir.path());

    let r = run(&["verify", d]);
    assert_eq!(r.code, 3, "a torn tail is repairable:\n{}", r.stdout);
    assert!(r.stdout.contains("torn tail"), "{}", r.stdout);
    assert!(r.stdout.contains(s(&seg)), "names the file: {}", r.stdout);
    assert!(
        r.stdout.contains(&format!("offset {offset}")),
        "names the offset: {}",
        r.stdout
    );
    assert!(r.stdout.contains("strict:") && r.stdout.contains("point-in-time:"));
    let v = json(&run(&["verify", "--json", d]).stdout);
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["problems"][0]["offset"].as_u64(), Some(offset));
    assert_eq!(v["problems"][0]["recovery"]["strict"]["action"], "refuse");
    assert_eq!(
        v["problems"][0]["recovery"]["tolerate_torn_tail"]["action"],
        "cut"
    );

    let r = run(&["inspect", d]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("torn tail"), "{}", r.stdout);
    let r = run(&["dump", d, "--from", &last.get().to_string()]);
    assert_eq!(r.code, 0);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["lsn"] == last.get()),
        "the intact records up to the tear"
    );
    let r = run(&["compact", d]);
    assert_eq!(r.code, 1, "compact refuses a damaged directory");
    assert!(r.stderr.contains("repair"), "{}", r.stderr);
    let r = run(&["repair", "--dry-run", d]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains(&format!("will cut 40 B from byte offset {offset}")),
        "{}",
        r.stdout
    );
    assert_eq!(
        contents(dir.path()),
        before,
        "nothing but repair changes the directory"
    );

    // What verify predicted is what the library's recovery does.
    let copy = copy_dir(dir.path());
    let j = Journal::open(copy.path(), opts()).unwrap();
    let cut = &j.recovery().log.cuts[0];
    assert_eq!(cut.offset, offset);
    assert_eq!(cut.first_cut_lsn.get(), last.get() + 1);
    drop(j);

    let r = run(&["repair", d]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("now verifies"), "{}", r.stdout);
    let backup = format!(
        "{}.cut-{offset}",
        statejournal::format::segment_file_name(look(dir.path()).segments.last().unwrap().id)
    );
    let saved =
        std::fs::read(dir.path().join(&backup)).unwrap_or_else(|e| panic!("backup {backup}: {e}"));
    assert_eq!(
        saved,
        vec![0xab; 40],
        "the backup holds exactly the cut bytes"
    );
    let r = run(&["verify", d]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let after = look(dir.path());
    assert_eq!(after.log.last_lsn, last, "no intact record was cut");
}

#[test]
fn corrupt_journal() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let (seg, offset, lsn) = corrupt(dir.path());
    let d = s(dir.path());
    let before = contents(dir.path());

    let r = run(&["verify", d]);
    assert_eq!(r.code, 4, "damaged durable data:\n{}", r.stdout);
    assert!(r.stdout.contains("damaged durable data"), "{}", r.stdout);
    assert!(
        r.stdout.contains(s(&seg)) && r.stdout.contains(&format!("offset {offset}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("record LSN {lsn}")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("CORRUPT"));
    let v = json(&run(&["verify", "--json", d]).stdout);
    let p = &v["problems"][0];
    assert_eq!(p["recovery"]["tolerate_torn_tail"]["action"], "refuse");
    assert_eq!(p["recovery"]["point_in_time"]["action"], "cut");
    assert_eq!(
        p["recovery"]["point_in_time"]["loses_durable_records"],
        true
    );

    let r = run(&["inspect", d]);
    assert_eq!(r.code, 0);
    let r = run(&["dump", d]);
    assert_eq!(r.code, 0);
    let last = json(r.stdout.lines().next_back().unwrap());
    assert_eq!(
        last["lsn"].as_u64(),
        Some(lsn - 1),
        "dump stops before the damage"
    );
    let r = run(&["compact", d]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(s(&seg)) && r.stderr.contains(&format!("offset {offset}")),
        "{}",
        r.stderr
    );
    let r = run(&["repair", d]);
    assert_eq!(
        r.code, 4,
        "repair refuses durable damage without --point-in-time"
    );
    assert!(
        r.stderr.contains("refusing") && r.stderr.contains("--point-in-time"),
        "{}",
        r.stderr
    );
    assert_eq!(
        contents(dir.path()),
        before,
        "a refused repair changes nothing"
    );

    // The library agrees: the default open refuses at that offset, point-in-time cuts there.
    let copy = copy_dir(dir.path());
    match Journal::open(copy.path(), opts()) {
        Err(Error::Corruption(c)) => {
            assert_eq!((c.path.file_name(), c.offset), (seg.file_name(), offset))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let j = Journal::open(copy.path(), opts().recovery_mode(RecoveryMode::PointInTime)).unwrap();
    assert_eq!(j.recovery().log.cuts[0].offset, offset);
    drop(j);

    let r = run(&["repair", "--point-in-time", d]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after = look(dir.path());
    assert!(after.is_sound(), "{:?}", after.problems);
    assert_eq!(after.log.last_lsn.get(), lsn - 1);
}

#[test]
fn no_journal_is_one_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    for sub in ["inspect", "verify", "dump", "repair", "compact"] {
        let r = run(&[sub, s(empty.path())]);
        assert_eq!(r.code, 1, "{sub} on an empty directory");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
        assert!(
            r.stderr.contains("no statejournal journal"),
            "{sub}: {}",
            r.stderr
        );
    }
    let r = run(&["checkpoint", "list", "/nonexistent/statejournal"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("/nonexistent/statejournal"),
        "{}",
        r.stderr
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let r = run(&["verify", s(file.path())]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a directory"), "{}", r.stderr);

    // Foreign files under our names: never a panic, a clear verdict naming the file.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("log.meta"), b"not a meta file at all").unwrap();
    std::fs::write(
        foreign
            .path()
            .join(statejournal::format::segment_file_name(1)),
        vec![7u8; 4096],
    )
    .unwrap();
    std::fs::write(
        foreign
            .path()
            .join(statejournal::format::snapshot_file_name(5)),
        b"junk",
    )
    .unwrap();
    std::fs::write(
        foreign
            .path()
            .join(statejournal::format::manifest_file_name(1)),
        b"junk",
    )
    .unwrap();
    let before = contents(foreign.path());
    let r = run(&["verify", s(foreign.path())]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(r.stdout.contains("log.meta"), "{}", r.stdout);
    for sub in ["dump", "compact", "repair"] {
        let r = run(&[sub, s(foreign.path())]);
        assert_ne!(r.code, 0, "{sub} on a foreign directory");
    }
    let r = run(&["inspect", "--json", s(foreign.path())]);
    assert_eq!(r.code, 0);
    assert_eq!(json(&r.stdout)["sound"], false);
    assert_eq!(
        contents(foreign.path()),
        before,
        "nothing touched a foreign directory"
    );
}

#[test]
fn a_journal_open_elsewhere_is_looked_at_but_not_changed() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let d = s(dir.path());
    let j = Journal::open(dir.path(), opts()).unwrap(); // holds the directory lock
    let r = run(&["verify", d]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("open in another process"), "{}", r.stdout);
    let r = run(&["repair", d]);
    assert_eq!(r.code, 1, "repair refuses a journal open elsewhere");
    assert!(r.stderr.contains("open in another process"), "{}", r.stderr);
    let r = run(&["compact", d]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    drop(j);
    // The lock was only probed: the journal opens again at once.
    let r = run(&["compact", d]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A checkpoint syncs the log, but recovery judges durability from sync markers and later
/// segments only: damage to a record the newest checkpoint covers, with no marker after it, is
/// taken for a torn tail, and the default open cuts it — with the checkpoint. `verify` calls it
/// what it is (damaged durable data, exit 4) and `repair` refuses it without `--point-in-time`.
/// (The last assertions pin the library's current behavior; see the report of issue 8.)
#[test]
fn damage_covered_only_by_a_checkpoint_is_durable_damage() {
    let dir = tempfile::tempdir().unwrap();
    let buffered = || JournalOptions::default().durability(Durability::Buffered);
    let mut j = Journal::open(dir.path(), buffered()).unwrap();
    let v = j.value_state::<u32, u64>("v").unwrap();
    for i in 0..200u32 {
        v.set(&mut j, &i, &u64::from(i)).unwrap();
    }
    let a = j.checkpoint().unwrap();
    for i in 0..200u32 {
        v.set(&mut j, &i, &(u64::from(i) + 1)).unwrap();
    }
    let b = j.checkpoint().unwrap();
    j.close().unwrap();
    let target = a.lsn.get() + 50;
    assert!(target < b.lsn.get());
    let mut at = None;
    inspect::read_records(dir.path(), Lsn(target), |r| {
        at = Some((r.segment, r.offset));
        ControlFlow::Break(())
    })
    .unwrap();
    let (segment, offset) = at.unwrap();
    let seg = dir
        .path()
        .join(statejournal::format::segment_file_name(segment));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offset as usize + 18] ^= 0x33;
    std::fs::write(&seg, &bytes).unwrap();
    let d = s(dir.path());

    let r = run(&["verify", d]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("offset {offset}")),
        "{}",
        r.stdout
    );
    let r = run(&["repair", d]);
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("--point-in-time"), "{}", r.stderr);

    let ins = inspect::inspect(dir.path(), InspectOptions::default()).unwrap();
    let problem = ins
        .problems
        .iter()
        .find(|p| p.offset == offset)
        .unwrap_or_else(|| panic!("no problem at offset {offset}: {:?}", ins.problems));
    assert_eq!(problem.tolerate_torn_tail, inspect::Outcome::Refuses);
    assert_eq!(problem.strict, inspect::Outcome::Refuses);

    // The library's default open refuses it too (what verify predicted): checkpoint b's manifest
    // proves the damaged record was durable, so it is not a torn tail.
    let copy = copy_dir(dir.path());
    let err = Journal::open(copy.path(), buffered()).unwrap_err();
    let Error::Corruption(c) = &err else {
        panic!("expected corruption, got {err:?}");
    };
    assert_eq!(c.offset, offset, "{err}");
    assert_eq!(c.path, copy.path().join(seg.file_name().unwrap()), "{err}");
    assert!(
        matches!(
            c.kind,
            CorruptionKind::DamagedRecord {
                evidence: DurabilityEvidence::Covered(lsn),
                ..
            } if lsn >= b.lsn.get()
        ),
        "{err}"
    );
    // Point-in-time recovery cuts there and says what it lost.
    let j = Journal::open(
        copy.path(),
        buffered().recovery_mode(RecoveryMode::PointInTime),
    )
    .unwrap();
    assert_eq!(j.recovery().log.cuts[0].offset, offset);
    assert_eq!(j.log().last_lsn().get(), target - 1);
    assert!(j.checkpoints().iter().all(|c| c.id != b.id));
}
