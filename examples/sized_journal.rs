//! A journal holding about MIB MiB of keyed state, compacted into a snapshot, with a log tail of a
//! tenth of that after it and a checkpoint at the end: a fixture for timing the remote
//! subcommands (`statejournal checkpoint push|restore`) on a checkpoint of a chosen size.
//!
//! ```text
//! cargo run --release --example sized_journal -- DIR MIB [VALUE_BYTES]     (VALUE_BYTES: 1000)
//! ```

use std::path::PathBuf;
use std::time::Instant;

use serde_bytes::ByteBuf;
use statejournal::{CompactionPolicy, Journal, JournalOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sized_journal DIR MIB [VALUE_BYTES]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let mib: u64 = args.next().ok_or(usage)?.parse()?;
    let value_bytes: usize = args.next().map_or(Ok(1000), |v| v.parse())?;
    let keys = (mib << 20) / value_bytes as u64;
    let started = Instant::now();
    let mut j = Journal::open(
        &dir,
        JournalOptions::default().compaction(CompactionPolicy::manual()),
    )?;
    let state = j.value_state::<u64, ByteBuf>("blobs")?;
    let mut value = vec![0u8; value_bytes];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = |v: &mut [u8]| {
        for b in v.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    };
    for k in 0..keys {
        fill(&mut value);
        state.set(&mut j, &k, &ByteBuf::from(value.clone()))?;
    }
    let snap = j.compact()?;
    for k in (0..keys).step_by(10) {
        fill(&mut value);
        state.set(&mut j, &k, &ByteBuf::from(value.clone()))?;
    }
    let cp = j.checkpoint()?;
    j.close()?;
    println!(
        "{}: {keys} keys of {value_bytes} bytes; snapshot of {} bytes, then {} updates; checkpoint {} in {:.1} s",
        dir.display(),
        snap.bytes,
        keys.div_ceil(10),
        cp.id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
