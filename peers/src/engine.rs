//! What every engine offers the workloads: keyed puts, a per-key counter, list appends, point
//! reads, and durable batches from one or several writer threads.

use std::path::Path;

/// Key length of every workload.
pub const KEY_LEN: usize = 16;

/// A key of the workloads.
pub type Key = [u8; KEY_LEN];

/// How an engine is opened for a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenCfg {
    /// Every commit is made durable (`fdatasync`/`msync`) before it returns (W3 only).
    pub sync: bool,
    /// statejournal: compact on its own (the default policy) or only when asked.
    pub auto_compaction: bool,
    /// Bytes the workload is expected to append (the floor preallocates its segments from it).
    pub expected_bytes: u64,
}

impl Default for OpenCfg {
    fn default() -> Self {
        OpenCfg {
            sync: false,
            auto_compaction: true,
            expected_bytes: 256 << 20,
        }
    }
}

/// One engine, owned by one thread (the single-writer workloads).
pub trait Engine: Sized {
    /// A handle one writer thread commits durable batches through (W3).
    type Writer: DurableWriter + Send + 'static;

    /// Opens (or creates, or recovers) the engine in `dir`.
    fn open(dir: &Path, cfg: OpenCfg) -> Self;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &Key, value: &[u8]);
    /// Adds one to the 8-byte counter of `key` (read-modify-write).
    fn incr(&mut self, key: &Key);
    /// Appends `element` to the list of `key`; `seq` is unique and increasing per run (engines
    /// without a merge operator use it to build one key per element).
    fn list_add(&mut self, key: &Key, element: u64, seq: u64);
    /// Reads `key`'s value (W1's state); returns its length.
    fn get_len(&mut self, key: &Key) -> Option<usize>;
    /// Records replayed by the last open, if the engine reports it (statejournal and the floor).
    fn replayed_records(&self) -> Option<u64> {
        None
    }
    /// Everything the workload wrote reaches the files (not necessarily the device), and the
    /// engine is closed.
    fn close(self);
    /// `threads` writers for durable commits, in `dir`.
    fn writers(dir: &Path, threads: usize) -> Vec<Self::Writer>;
}

/// A writer thread's handle for durable commits.
pub trait DurableWriter {
    /// Puts every key of `keys` to `value` as one atomic batch, made durable before it returns.
    fn commit(&mut self, keys: &[Key], value: &[u8]);
}

/// Engines that can take a checkpoint (W6).
pub trait Checkpointing: Engine {
    /// Takes a checkpoint; `target` is a fresh path the engine may create it under. Returns the
    /// bytes new to this checkpoint: what an incremental upload of it would send.
    fn checkpoint(&mut self, target: &Path) -> u64;
}
