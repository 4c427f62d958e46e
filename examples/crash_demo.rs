//! The main job, for now: append durably in a child process, kill it with SIGKILL at an arbitrary
//! moment, recover, and check that every acknowledged record survived — several rounds in a row.
//!
//! ```text
//! cargo run --release --example crash_demo [-- DIR [ROUNDS]]     (DIR defaults to ./statejournal-demo)
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use statejournal::{Durability, Log, LogOptions, Lsn};

fn record(lsn: u64) -> Vec<u8> {
    // Deterministic content, so the parent can check every byte it reads back.
    let mut v = format!("event {lsn}: ").into_bytes();
    v.resize(64 + (lsn % 64) as usize, b'0' + (lsn % 10) as u8);
    v
}

/// Child: append forever in batches of 100, commit each batch durably, print the durable LSN.
fn child(dir: &Path) -> Result<(), statejournal::Error> {
    let log = Log::open(dir, LogOptions::default().durability(Durability::Sync))?;
    let mut next = log.last_lsn().get() + 1;
    loop {
        for _ in 0..100 {
            let lsn = log.append(&record(next))?;
            assert_eq!(lsn, Lsn(next), "LSNs are dense");
            next += 1;
        }
        let durable = log.commit()?;
        println!("{durable}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let dir = PathBuf::from(args.get(2).ok_or("--child needs a directory")?);
        child(&dir)?;
        return Ok(());
    }
    let dir = PathBuf::from(args.get(1).map_or("statejournal-demo", String::as_str));
    let rounds: u32 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    println!(
        "statejournal crash demo in {} ({rounds} rounds)",
        dir.display()
    );
    let exe = std::env::current_exe()?;
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .arg("--child")
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        // Kill after a varying number of acknowledged commits: mid-append, mid-flush, anywhere.
        let kill_after = 50 + (round as usize * 37) % 200;
        let mut acked = 0u64;
        for line in BufReader::new(stdout).lines().take(kill_after) {
            acked = line?.trim().parse()?;
        }
        child.kill()?; // SIGKILL: no destructor, no flush
        child.wait()?;

        let started = Instant::now();
        let log = Log::open(&dir, LogOptions::default())?;
        let took = started.elapsed();
        let mut count = 0u64;
        for r in log.read_from(Lsn(1)) {
            let r = r?;
            if r.payload != record(r.lsn.get()) {
                return Err(format!("record {} came back with the wrong bytes", r.lsn).into());
            }
            count += 1;
        }
        let last = log.last_lsn().get();
        if last < acked || count != last {
            return Err(format!(
                "round {round}: acknowledged {acked} but recovered {count} (last {last})"
            )
            .into());
        }
        println!(
            "round {round}: killed after LSN {acked} was acknowledged; recovered {count} records in {took:.1?} \
             ({} unacknowledged survived); {}",
            last - acked,
            log.recovery_report()
        );
    }
    println!("every acknowledged record survived {rounds} kills");
    Ok(())
}
