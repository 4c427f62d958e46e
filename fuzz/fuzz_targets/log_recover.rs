//! Crash-recovery fuzz target: `data` is a log directory image, raw or generated and damaged,
//! recovered in every recovery mode. The harness, its input format and the invariants it checks
//! live in `statejournal::testing::fuzz_log_recover`, shared with the `fuzz_corpus` test that
//! replays `corpus/log_recover/`.
//!
//! ```text
//! TMPDIR=/dev/shm cargo +nightly fuzz run log_recover fuzz/corpus/log_recover
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statejournal::testing::fuzz_log_recover(data);
});
