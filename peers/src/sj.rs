//! statejournal as a user would hold it: a [`Journal`] with typed states over byte-string keys
//! and values (`serde_bytes`), `Buffered` unless the workload syncs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_bytes::{ByteArray, ByteBuf};
use statejournal::{
    Committer, CompactionPolicy, Durability, Journal, JournalOptions, ListState, ValueState,
};

use crate::engine::{Checkpointing, DurableWriter, Engine, Key, OpenCfg};

/// A journal with the workloads' three states.
pub struct Sj {
    journal: Journal,
    values: ValueState<ByteArray<16>, ByteBuf>,
    counters: ValueState<ByteArray<16>, u64>,
    lists: ListState<ByteArray<16>, u64>,
    scratch: ByteBuf,
    /// Log bytes written (since open) and snapshot file at the last checkpoint.
    at_checkpoint: (u64, Option<std::path::PathBuf>),
}

fn options(cfg: OpenCfg) -> JournalOptions {
    let opts = JournalOptions::default().durability(if cfg.sync {
        Durability::Sync
    } else {
        Durability::Buffered
    });
    if cfg.auto_compaction {
        opts
    } else {
        opts.compaction(CompactionPolicy::manual())
    }
}

impl Sj {
    /// The journal (for compaction and statistics).
    pub fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }
}

impl Engine for Sj {
    type Writer = SjWriter;

    fn open(dir: &Path, cfg: OpenCfg) -> Self {
        let mut journal = Journal::open(dir, options(cfg)).expect("open the journal");
        let values = journal.value_state("values").expect("register values");
        let counters = journal.value_state("counters").expect("register counters");
        let lists = journal.list_state("lists").expect("register lists");
        Sj {
            journal,
            values,
            counters,
            lists,
            scratch: ByteBuf::new(),
            at_checkpoint: (0, None),
        }
    }

    fn put(&mut self, key: &Key, value: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        self.values
            .set(&mut self.journal, &ByteArray::new(*key), &self.scratch)
            .expect("set");
    }

    fn incr(&mut self, key: &Key) {
        self.counters
            .update(&mut self.journal, &ByteArray::new(*key), |n| {
                Some(n.unwrap_or(0) + 1)
            })
            .expect("update");
    }

    fn list_add(&mut self, key: &Key, element: u64, _seq: u64) {
        self.lists
            .add(&mut self.journal, &ByteArray::new(*key), &element)
            .expect("add");
    }

    fn get_len(&mut self, key: &Key) -> Option<usize> {
        self.values
            .get(&mut self.journal, &ByteArray::new(*key))
            .expect("get")
            .map(|v| v.len())
    }

    fn replayed_records(&self) -> Option<u64> {
        Some(self.journal.recovery().replayed_records)
    }

    fn close(self) {
        self.journal.close().expect("close the journal");
    }

    fn writers(dir: &Path, threads: usize) -> Vec<SjWriter> {
        // One journal shared by every writer, as RocksDB's and fjall's databases are: each thread
        // writes its batch under the journal's lock and commits outside it through a
        // `Committer`, so that concurrent commits share one flush (group commit).
        let cfg = OpenCfg {
            sync: true,
            ..OpenCfg::default()
        };
        let sj = Sj::open(dir, cfg);
        let committer = sj.journal.committer();
        let shared = Arc::new(Mutex::new(sj));
        (0..threads)
            .map(|_| SjWriter {
                sj: Arc::clone(&shared),
                committer: committer.clone(),
            })
            .collect()
    }
}

/// A writer thread's handle on the shared journal (in `Sync` mode).
pub struct SjWriter {
    sj: Arc<Mutex<Sj>>,
    committer: Committer,
}

impl DurableWriter for SjWriter {
    fn commit(&mut self, keys: &[Key], value: &[u8]) {
        let lsn = {
            let mut guard = self.sj.lock().expect("a writer panicked");
            let sj = &mut *guard;
            sj.scratch.clear();
            sj.scratch.extend_from_slice(value);
            let (values, scratch) = (&sj.values, &sj.scratch);
            sj.journal
                .write_batch(|j| {
                    for k in keys {
                        values.set(j, &ByteArray::new(*k), scratch)?;
                    }
                    Ok(())
                })
                .expect("write batch");
            sj.journal.last_lsn()
        };
        self.committer.commit_through(lsn).expect("commit");
    }
}

impl Checkpointing for Sj {
    fn checkpoint(&mut self, _target: &Path) -> u64 {
        let info = self.journal.checkpoint().expect("checkpoint");
        // New to this checkpoint: its manifest, the log written since the previous checkpoint,
        // and its snapshot if that is new.
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let log_bytes = self.journal.io_stats().log_bytes;
        let mut new = size(&info.manifest) + log_bytes - self.at_checkpoint.0;
        if info.snapshot.is_some() && info.snapshot != self.at_checkpoint.1 {
            new += info.snapshot.as_deref().map_or(0, size);
        }
        self.at_checkpoint = (log_bytes, info.snapshot);
        new
    }
}
