//! fjall, the Rust-native LSM tree: one database with one keyspace per workload, its journal
//! buffered unless the workload syncs (then each batch persists with `SyncData`, `fdatasync`, as
//! RocksDB's `sync = true` does). No compression (crate default feature `lz4` off: our values are
//! incompressible and neither statejournal nor the floor compress); a 256 MiB block cache, as
//! RocksDB gets. fjall has no merge operator, so a list element is its own key
//! (`list key | sequence number`), the LSM way of appending (a read-modify-write of the whole
//! list would grow quadratically). fjall has no checkpoint API, so it sits out W6.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::engine::{DurableWriter, Engine, Key, OpenCfg};

/// A fjall database and its keyspace.
pub struct Fj {
    _db: Database,
    ks: Keyspace,
}

fn open(dir: &Path) -> (Database, Keyspace) {
    let db = Database::builder(dir)
        .cache_size(256 << 20)
        .open()
        .expect("open fjall");
    let ks = db
        .keyspace("state", KeyspaceCreateOptions::default)
        .expect("open fjall's keyspace");
    (db, ks)
}

impl Engine for Fj {
    type Writer = FjWriter;

    fn open(dir: &Path, _cfg: OpenCfg) -> Self {
        let (db, ks) = open(dir);
        Fj { _db: db, ks }
    }

    fn put(&mut self, key: &Key, value: &[u8]) {
        self.ks.insert(&key[..], value).expect("insert");
    }

    fn incr(&mut self, key: &Key) {
        let n = match self.ks.get(&key[..]).expect("get") {
            Some(v) => u64::from_le_bytes(v[..8].try_into().expect("an 8-byte counter")) + 1,
            None => 1,
        };
        self.ks
            .insert(&key[..], &n.to_le_bytes()[..])
            .expect("insert");
    }

    fn list_add(&mut self, key: &Key, element: u64, seq: u64) {
        let mut k = [0u8; 24];
        k[..16].copy_from_slice(key);
        k[16..].copy_from_slice(&seq.to_be_bytes());
        self.ks
            .insert(&k[..], &element.to_le_bytes()[..])
            .expect("insert");
    }

    fn get_len(&mut self, key: &Key) -> Option<usize> {
        self.ks.get(&key[..]).expect("get").map(|v| v.len())
    }

    fn close(self) {
        drop(self);
    }

    fn writers(dir: &Path, threads: usize) -> Vec<FjWriter> {
        // One database shared by every writer, as with RocksDB.
        let (db, ks) = open(dir);
        (0..threads)
            .map(|_| FjWriter {
                db: db.clone(),
                ks: ks.clone(),
            })
            .collect()
    }
}

/// A writer thread's handle on the shared database.
pub struct FjWriter {
    db: Database,
    ks: Keyspace,
}

impl DurableWriter for FjWriter {
    fn commit(&mut self, keys: &[Key], value: &[u8]) {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for k in keys {
            batch.insert(&self.ks, &k[..], value);
        }
        batch.commit().expect("commit a batch");
    }
}
