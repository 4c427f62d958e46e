//! Appends 128-byte records in Buffered mode for a few seconds: a target for `perf record`.
//! `cargo run --release --example append_profile -- DIR SECONDS`
use std::time::{Duration, Instant};

fn main() -> Result<(), statejournal::Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map_or("target/tmp/append-profile", String::as_str);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let _ = std::fs::remove_dir_all(dir);
    let log = statejournal::Log::open(dir, statejournal::LogOptions::default())?;
    let payload = [7u8; 128];
    let mut batches = Vec::new();
    let faults0 = thread_minor_faults();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        for _ in 0..10_000 {
            log.append(&payload)?;
        }
        batches.push(t.elapsed());
        n += 10_000;
        let segs = log.last_lsn().get();
        if segs > 200_000_000 {
            // keep the disk footprint bounded
            log.delete_below(log.last_lsn())?;
        }
    }
    let el = start.elapsed().as_secs_f64();
    batches.sort();
    let med = batches[batches.len() / 2];
    let slow: Duration = batches.iter().filter(|b| **b > med * 3).sum();
    println!(
        "batches of 10k: min {:?} median {:?} p99 {:?} max {:?}; time in batches slower than 3x median: {:?} of {:.2}s",
        batches[0], med, batches[batches.len() * 99 / 100], batches[batches.len() - 1], slow, el
    );
    println!(
        "{:.2} M records/s; page faults taken by the appending thread: {} ({:.1} per MiB)",
        n as f64 / el / 1e6,
        thread_minor_faults() - faults0,
        (thread_minor_faults() - faults0) as f64 / (n as f64 * 152.0 / 1048576.0)
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
