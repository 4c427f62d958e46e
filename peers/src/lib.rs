//! Peer benchmarks for statejournal: the same workloads against statejournal, RocksDB (feature
//! `rocksdb`, on by default), fjall and a floor (a `HashMap` plus CRC32-framed appends into a
//! preallocated memory map), interleaved in one run, several repetitions, medians and ratios.
//!
//! `cargo bench -p statejournal-peers` runs it (see `docs/BENCHMARKS.md` for the published run
//! and the environment variables that scale it). Each measurement runs in a child process of the
//! benchmark binary, so that its peak resident memory and its bytes written are its own.

pub mod engine;
pub mod fj;
pub mod floor;
pub mod measure;
pub mod plot;
pub mod report;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod sj;
pub mod workload;

pub use report::main;
