//! RocksDB through the `rocksdb` crate, set up like Flink's RocksDB state backend: WAL on, no
//! sync unless the workload syncs, list state through a merge operator (Flink uses RocksDB's
//! string-append operator), value state as get-then-put. No compression (our values are
//! incompressible, and statejournal and the floor store them as they are); a 256 MiB LRU block
//! cache and 10-bit Bloom filters (Flink's managed memory gives RocksDB a cache of that order);
//! 64 MiB write buffers (RocksDB's default); background jobs sized to the machine's cores.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, MergeOperands, Options, WriteBatch, WriteOptions,
    DB,
};

use crate::engine::{Checkpointing, DurableWriter, Engine, Key, OpenCfg};

/// A RocksDB instance and the write options of the workload.
pub struct Rocks {
    db: Arc<DB>,
    write: WriteOptions,
    /// The previous checkpoint's directory (W6 counts only files new to the next one).
    last_checkpoint: Option<PathBuf>,
    /// Keeps the block cache alive as long as the database.
    _cache: Cache,
}

/// Concatenates list elements: the merge operator of list state.
fn append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

fn options() -> (Options, Cache) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    opts.increase_parallelism(cores as i32);
    opts.set_max_background_jobs(cores.max(2) as i32);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(64 << 20);
    opts.set_merge_operator_associative("append", append);
    let cache = Cache::new_lru_cache(256 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    (opts, cache)
}

fn open(dir: &Path, sync: bool) -> Rocks {
    let (opts, cache) = options();
    let db = DB::open(&opts, dir).expect("open RocksDB");
    let mut write = WriteOptions::default();
    write.set_sync(sync);
    write.disable_wal(false);
    Rocks {
        db: Arc::new(db),
        write,
        last_checkpoint: None,
        _cache: cache,
    }
}

impl Engine for Rocks {
    type Writer = RocksWriter;

    fn open(dir: &Path, cfg: OpenCfg) -> Self {
        open(dir, cfg.sync)
    }

    fn put(&mut self, key: &Key, value: &[u8]) {
        self.db.put_opt(key, value, &self.write).expect("put");
    }

    fn incr(&mut self, key: &Key) {
        let n = match self.db.get_pinned(key).expect("get") {
            Some(v) => u64::from_le_bytes(v[..8].try_into().expect("an 8-byte counter")) + 1,
            None => 1,
        };
        self.db
            .put_opt(key, n.to_le_bytes(), &self.write)
            .expect("put");
    }

    fn list_add(&mut self, key: &Key, element: u64, _seq: u64) {
        self.db
            .merge_opt(key, element.to_le_bytes(), &self.write)
            .expect("merge");
    }

    fn get_len(&mut self, key: &Key) -> Option<usize> {
        self.db.get_pinned(key).expect("get").map(|v| v.len())
    }

    fn close(self) {
        drop(self);
    }

    fn writers(dir: &Path, threads: usize) -> Vec<RocksWriter> {
        // One database shared by every writer: RocksDB's group commit merges concurrent
        // writers' batches into one WAL write and one sync.
        let rocks = open(dir, true);
        (0..threads)
            .map(|_| RocksWriter {
                db: Arc::clone(&rocks.db),
                write: {
                    let mut w = WriteOptions::default();
                    w.set_sync(true);
                    w
                },
            })
            .collect()
    }
}

/// A writer thread's handle on the shared database.
pub struct RocksWriter {
    db: Arc<DB>,
    write: WriteOptions,
}

impl DurableWriter for RocksWriter {
    fn commit(&mut self, keys: &[Key], value: &[u8]) {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.put(k, value);
        }
        self.db
            .write_opt(batch, &self.write)
            .expect("write a batch");
    }
}

/// (device, inode) of every file under `dir`.
fn inodes(dir: &Path) -> HashSet<(u64, u64)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

impl Checkpointing for Rocks {
    fn checkpoint(&mut self, target: &Path) -> u64 {
        Checkpoint::new(&self.db)
            .expect("a checkpoint object")
            .create_checkpoint(target)
            .expect("create a RocksDB checkpoint");
        // New to this checkpoint: files that are not hard links of the previous one's.
        let before = self
            .last_checkpoint
            .as_deref()
            .map(inodes)
            .unwrap_or_default();
        let new = std::fs::read_dir(target)
            .expect("list the checkpoint")
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| !before.contains(&(m.dev(), m.ino())))
            .map(|m| m.len())
            .sum();
        self.last_checkpoint = Some(target.to_path_buf());
        new
    }
}
