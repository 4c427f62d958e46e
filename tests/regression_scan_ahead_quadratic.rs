//! Found by `statejournal verify` on a demo journal with one flipped byte near the start of a
//! 24 MiB segment: recovery's scan past damage (`scan_ahead`, looking for intact frames and sync
//! markers after it) tried `decode_frame` at every 8-byte offset, and `decode_frame` checksums up
//! to the frame's claimed `len` bytes before looking at anything else. Record bytes read as a
//! `len` of megabytes at most offsets, so opening the log took tens of minutes (quadratic in the
//! bytes after the damage). The scan now rejects offsets whose kind, flags, reserved bytes, length
//! or LSN cannot start a frame it would count before checksumming.

use std::time::{Duration, Instant};

use statejournal::{Durability, Error, Log, LogOptions, RecoveryMode};

#[test]
fn damage_early_in_a_large_segment_is_found_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions::default().durability(Durability::Sync),
    )
    .unwrap();
    // Payloads of little-endian u32s below 2^24: at most offsets a `len` field reads as up to
    // 16 MiB.
    let mut x = 0x1234_5678u32;
    for i in 0..40_000u32 {
        let payload: Vec<u8> = (0..64)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0x00ff_ffff).to_le_bytes()
            })
            .collect();
        log.append(&payload).unwrap();
        if i % 1000 == 0 {
            log.commit().unwrap(); // sync markers: the damage below is in durable data
        }
    }
    log.commit().unwrap();
    drop(log);
    let seg = dir.path().join(statejournal::format::segment_file_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200] ^= 0xff; // inside the second record
    std::fs::write(&seg, &bytes).unwrap();

    let started = Instant::now();
    let err = Log::open(
        dir.path(),
        LogOptions::default().recovery_mode(RecoveryMode::TolerateTornTail),
    )
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Corruption(ref c) if c.offset < 300),
        "damaged durable data near the start is refused: {err}"
    );
    assert!(
        took < Duration::from_secs(20),
        "recovery took {took:?} to scan 10 MiB past the damage"
    );
}
