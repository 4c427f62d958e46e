//! The demo job killed with SIGKILL at random moments and started again resumes from its last
//! checkpoint, and its final per-window results equal what this test computes itself from the
//! generator: every event counted exactly once.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../src/stream.rs"]
mod stream;

const EXE: &str = env!("CARGO_BIN_EXE_statejournal");
/// Enough for window 0 to fire during the run (its end plus the watermark delay is at event
/// 120,000) and window 1 at the end of the stream.
const EVENTS: u64 = 200_000;

/// (clicks, users, digest) per window, aggregated here from the generator.
fn expected() -> BTreeMap<u64, (u64, u64, u64)> {
    let mut per_user: BTreeMap<(u64, u32), u64> = BTreeMap::new();
    for i in 0..EVENTS {
        let e = stream::event(i);
        *per_user
            .entry((e.time_ms / stream::WINDOW_MS, e.user))
            .or_default() += 1;
    }
    let mut out: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for ((w, user), n) in per_user {
        let r = out.entry(w).or_default();
        r.0 += n;
        r.1 += 1;
        r.2 = r.2.wrapping_add(stream::digest_of(user, n));
    }
    out
}

/// The window lines of the demo's summary: `window W [..) clicks users digest ok`.
fn windows(stdout: &str) -> BTreeMap<u64, (u64, u64, u64)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("window ") && l.contains('['))
        .map(|l| {
            let w: u64 = l["window ".len()..]
                .trim_start()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let after = &l[l.find(')').unwrap() + 1..];
            let f: Vec<&str> = after.split_whitespace().collect();
            (
                w,
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    u64::from_str_radix(f[2], 16).unwrap(),
                ),
            )
        })
        .collect()
}

fn demo(dir: &std::path::Path) -> Command {
    let mut c = Command::new(EXE);
    c.args([
        "demo",
        "--quiet",
        "--events",
        &EVENTS.to_string(),
        "--checkpoint-every",
        "0.05",
        "--dir",
    ])
    .arg(dir)
    .stderr(Stdio::piped());
    c
}

/// A small xorshift generator, seeded from the clock and printed, so a failure can be replayed
/// with `SJ_KILL_SEED`.
fn seed() -> u64 {
    std::env::var("SJ_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::process::id())
        })
        | 1
}

#[test]
fn killed_and_restarted_demo_counts_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed();
    println!("SJ_KILL_SEED={rng}");
    let started = Instant::now();
    let mut kills = 0;
    let mut resumed_mid_stream = 0;
    for _ in 0..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = Duration::from_millis(300 + rng % 1500);
        let mut child = demo(dir.path()).stdout(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + after;
        let mut exited = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            #[allow(clippy::disallowed_methods)] // polling a child process; no clock to inject
            std::thread::sleep(Duration::from_millis(20));
        }
        if exited {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = stdout
            .lines()
            .find(|l| l.starts_with("resumed from checkpoint"))
        {
            let offset: u64 = l
                .split("source offset ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if offset > 0 && offset < EVENTS {
                resumed_mid_stream += 1;
            }
        }
        kills += 1;
    }
    let out = demo(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "final run failed:\n{stdout}\n{stderr}"
    );
    if kills > 0 {
        let resumed = stdout
            .lines()
            .find(|l| l.starts_with("resumed from checkpoint"));
        assert!(
            resumed.is_some(),
            "the final run resumes from a checkpoint:\n{stdout}"
        );
    }
    assert!(stdout.contains("exactly-once: OK"), "{stdout}");
    let want = expected();
    assert_eq!(want.len(), 2);
    assert_eq!(
        windows(&stdout),
        want,
        "per-window results after {kills} kills:\n{stdout}"
    );
    println!(
        "{kills} kills ({resumed_mid_stream} restarts resumed mid-stream), {:?} in all",
        started.elapsed()
    );
    assert!(kills >= 1, "the job was killed at least once");

    // The journal is sound after all that, and its last checkpoint is the end of the stream.
    let v = Command::new(EXE)
        .arg("verify")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}
