//! Snapshot decoding fuzz target: `data` is a flags byte and a snapshot file image, opened and read
//! in full by the sorted cursor and the bulk path. The harness, its input format and the invariants
//! it checks live in `statejournal::testing::fuzz_snapshot_decode`, shared with the `fuzz_corpus`
//! test that replays `corpus/snapshot_decode/`.
//!
//! ```text
//! TMPDIR=/dev/shm cargo +nightly fuzz run snapshot_decode fuzz/corpus/snapshot_decode
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statejournal::testing::fuzz_snapshot_decode(data);
});
