//! Checkpoint manifest decoding fuzz target: `data` is a manifest image. The harness and its
//! invariant live in `statejournal::testing::fuzz_manifest_decode`, shared with the `fuzz_corpus`
//! test that replays `corpus/manifest_decode/`.
//!
//! ```text
//! TMPDIR=/dev/shm cargo +nightly fuzz run manifest_decode fuzz/corpus/manifest_decode
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statejournal::testing::fuzz_manifest_decode(data);
});
