//! Appends 128-byte records in Buffered mode from N threads for a few seconds, and reports
//! throughput, stalls and the page faults the appending threads took: a target for `perf record`
//! and a quick check between benchmark runs.
//!
//! `cargo run --release --example append_profile -- [DIR] [SECONDS] [THREADS]`
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), statejournal::Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map_or("target/tmp/append-profile", String::as_str);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let _ = std::fs::remove_dir_all(dir);
    // SJ_COMMIT_EVERY=N: Sync durability with a commit every N appends (default: Buffered).
    let commit_every: u64 = std::env::var("SJ_COMMIT_EVERY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut opts = statejournal::LogOptions::default();
    if commit_every > 0 {
        opts = opts.durability(statejournal::Durability::Sync);
    }
    let log = Arc::new(statejournal::Log::open(dir, opts)?);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(
                move || -> Result<(u64, Vec<Duration>, u64), statejournal::Error> {
                    let payload = [7u8; 128];
                    let faults0 = thread_minor_faults();
                    let mut batches = Vec::new();
                    let mut n = 0u64;
                    while start.elapsed() < Duration::from_secs(secs) {
                        let t = Instant::now();
                        for i in 0..10_000u64 {
                            log.append(&payload)?;
                            if commit_every > 0 && i % commit_every == commit_every - 1 {
                                log.commit()?;
                            }
                        }
                        batches.push(t.elapsed());
                        n += 10_000;
                    }
                    Ok((n, batches, thread_minor_faults() - faults0))
                },
            )
        })
        .collect();
    let mut total = 0u64;
    let mut batches = Vec::new();
    let mut faults = 0u64;
    for w in workers {
        let (n, b, f) = w.join().expect("worker panicked")?;
        total += n;
        batches.extend(b);
        faults += f;
    }
    let el = start.elapsed().as_secs_f64();
    batches.sort();
    let med = batches[batches.len() / 2];
    let slow: Duration = batches.iter().filter(|b| **b > med * 3).sum();
    println!(
        "{threads} thread(s): {:.2} M records/s; batches of 10k: min {:?} median {med:?} max {:?}; \
         time in batches slower than 3x median: {slow:?}; page faults in appenders: {faults}",
        total as f64 / el / 1e6,
        batches[0],
        batches[batches.len() - 1],
    );
    Ok(())
}

/// Minor page faults of the calling thread (field 10 of /proc/thread-self/stat).
fn thread_minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    after_comm
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}
