//! Killed processes during compaction, checkpoints and GC: a child process writes in `Sync` mode,
//! compacting and checkpointing all the time, and reports every acknowledged write; the parent
//! kills it with SIGKILL at varying moments, reopens, and checks that the state is exactly the
//! state after some prefix of the writes that contains every acknowledged one — with `open` and,
//! for the newest checkpoint, with `open_at_checkpoint` (on a copy).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use statejournal::{CompactionPolicy, Durability, Journal, JournalOptions};

const KEYS: u64 = 64;
/// Kills per run (`SJ_KILLS` overrides, for longer runs).
const KILLS_DEFAULT: u32 = 300;
const CHILD_ENV: &str = "STATEJOURNAL_CRASH_COMPACTION_DIR";

fn opts() -> JournalOptions {
    JournalOptions::default()
        .durability(Durability::Sync)
        .segment_size(16 << 10)
        .retain_checkpoints(2)
        .compaction(CompactionPolicy::manual().snapshot_block_size(1024))
}

/// Write `i` sets key `i % KEYS` to `i`: the state after the first `n` writes is, for every key,
/// the largest `i <= n` with that remainder.
fn state_after(n: u64) -> Vec<Option<u64>> {
    (0..KEYS)
        .map(|k| {
            let last = n.checked_sub((n + KEYS - k) % KEYS)?;
            (last >= 1).then_some(last)
        })
        .collect()
}

fn read_state(j: &mut Journal) -> Vec<Option<u64>> {
    let s = j.value_state::<u64, u64>("s").unwrap();
    (0..KEYS).map(|k| s.get(j, &k).unwrap()).collect()
}

/// The child's side: writes forever, one durable commit per write, with compactions and
/// checkpoints interleaved, printing each acknowledged write.
fn child(dir: &Path) {
    let mut j = Journal::open(dir, opts()).unwrap();
    let s = j.value_state::<u64, u64>("s").unwrap();
    let mut i = (0..KEYS)
        .filter_map(|k| s.get(&mut j, &k).unwrap())
        .max()
        .unwrap_or(0);
    loop {
        i += 1;
        s.set(&mut j, &(i % KEYS), &i).unwrap();
        j.commit().unwrap();
        println!("acked {i}");
        if i % 50 == 0 {
            j.compact().unwrap();
        }
        if i % 35 == 0 {
            j.checkpoint().unwrap();
        }
    }
}

const TEST: &str = "killed_during_compaction_and_checkpoints";

#[test]
fn killed_during_compaction_and_checkpoints() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let kills: u32 = std::env::var("SJ_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut rounds = 0u32;
    let mut acked = 0u64;
    // 300 kills per run (issue 5), bounded in time on a slow machine (at least 12). Each kill is
    // a process start, a few dozen durable writes and a recovery: about 35 ms here.
    while rounds < 12 || (rounds < kills && started.elapsed() < Duration::from_secs(45)) {
        rounds += 1;
        let mut child = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a varying number of acknowledged writes: before, in and after compactions,
        // checkpoints and their GC.
        let kill_after = 10 + (u64::from(rounds) * 37) % 120;
        let mut seen = 0u64;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                acked = acked.max(n.trim().parse().unwrap());
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let mut j = Journal::open(dir.path(), opts()).unwrap();
        let got = read_state(&mut j);
        let n = got.iter().flatten().copied().max().unwrap_or(0);
        assert!(
            n >= acked,
            "round {rounds}: write {acked} was acknowledged, state is at {n}"
        );
        assert_eq!(
            got,
            state_after(n),
            "round {rounds}: not the state after a prefix"
        );
        let newest = j.checkpoints().last().map(|c| (c.id, c.lsn));
        drop(j);
        if let Some((id, lsn)) = newest {
            let copy = tempfile::tempdir().unwrap();
            common::copy_dir(dir.path(), copy.path());
            let mut r = Journal::open_at_checkpoint(copy.path(), id, opts()).unwrap();
            assert_eq!(r.log().last_lsn(), lsn);
            let got = read_state(&mut r);
            let m = got.iter().flatten().copied().max().unwrap_or(0);
            assert!(
                m <= n,
                "round {rounds}: checkpoint {id} is ahead of the log"
            );
            assert_eq!(
                got,
                state_after(m),
                "round {rounds}: checkpoint {id} is not a prefix"
            );
        }
        assert_no_temporaries(dir.path());
    }
    assert!(acked > 100, "the child made progress ({acked} writes)");
    eprintln!("{rounds} kills, {acked} writes acknowledged, no acknowledged write lost");
}

fn assert_no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "{name} left behind after a successful open"
        );
    }
}
