//! Operations plus crash points, checked by the crash simulator: `data` is a flags byte and one
//! operation per byte pair. The harness and its input format live in
//! `statejournal::testing::fuzz_ops_crash`, shared with the `fuzz_corpus` test that replays
//! `corpus/ops_crash/`.
//!
//! ```text
//! TMPDIR=/dev/shm cargo +nightly fuzz run ops_crash fuzz/corpus/ops_crash
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statejournal::testing::fuzz_ops_crash(data);
});
