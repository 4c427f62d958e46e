//! Ops appended to the log whose table update waits for the next ops: software pipelining
//! across calls.
//!
//! An update of a large state misses the cache twice, one miss after the other: the key's slot,
//! then the entry it points to. Within one call there is not enough other work to hide both, so
//! the journal spreads them over three calls. When op `n` is emitted, its slot line starts
//! loading ([`Journal::locate`](super::Journal)); op `n - 1`'s slot, loaded by now, is read and
//! its entry starts loading; op `n - 2`, whose entry has arrived, is applied. Each op is
//! appended to the log at once, when it is emitted, exactly as without the pipeline, so
//! durability and the log's order are unchanged; only the in-memory apply lags by at most
//! [`DEPTH`] ops.
//!
//! Everything that reads the tables, and every op that does not take this path, first applies
//! the queued ops in order ([`Journal::settle`](super::Journal::settle)), so no reader ever sees
//! the lag. Readers of the tables assert that the queue is empty.

use crate::codec::record::decode_record;
use crate::state::Store;

/// Ops a journal holds back at most.
pub(crate) const DEPTH: usize = 2;

/// One queued op: its record (as appended to the log), its table hash and state, its LSN.
#[derive(Debug, Default)]
struct Queued {
    rec: Vec<u8>,
    hash: u64,
    state_id: u32,
    lsn: u64,
}

/// A queue of at most [`DEPTH`] appended, not yet applied single-op records, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    ring: [Queued; DEPTH],
    /// Index of the oldest queued op.
    head: usize,
    len: usize,
}

/// A queued op failed to apply: its LSN and why.
#[derive(Debug)]
pub(crate) struct ApplyFailed {
    pub lsn: u64,
    pub detail: String,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == DEPTH
    }

    /// Starts loading the entry of the newest queued op (its slot line was requested when it was
    /// located, one call ago).
    #[inline]
    pub fn prefetch_newest(&self, store: &Store) {
        if self.len > 0 {
            let q = &self.ring[(self.head + self.len - 1) % DEPTH];
            store.prefetch_entry(q.state_id, q.hash);
        }
    }

    /// Applies the oldest queued op to `store` and removes it from the queue.
    #[inline]
    pub fn apply_oldest(&mut self, store: &mut Store) -> Result<(), ApplyFailed> {
        debug_assert!(self.len > 0);
        let q = &self.ring[self.head];
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        let applied = decode_record(&q.rec).and_then(|mut ops| {
            let op = ops
                .next()
                .unwrap_or(Err(crate::codec::record::RecordError {
                    offset: 1,
                    what: "a record holds no op",
                }))?;
            store.apply_op(op, Some(q.hash))
        });
        applied.map_err(|e| ApplyFailed {
            lsn: q.lsn,
            detail: e.to_string(),
        })
    }

    /// Applies every queued op, oldest first. On a failure the ops after the failed one stay
    /// queued.
    pub fn settle(&mut self, store: &mut Store) -> Result<(), ApplyFailed> {
        while self.len > 0 {
            self.apply_oldest(store)?;
        }
        Ok(())
    }

    /// Queues the single-op record in `rec` (already appended at `lsn`), taking its buffer and
    /// leaving a spare one (with old contents) in its place. The queue must not be full.
    #[inline]
    pub fn push(&mut self, rec: &mut Vec<u8>, hash: u64, state_id: u32, lsn: u64) {
        debug_assert!(self.len < DEPTH);
        let q = &mut self.ring[(self.head + self.len) % DEPTH];
        std::mem::swap(&mut q.rec, rec);
        q.hash = hash;
        q.state_id = state_id;
        q.lsn = lsn;
        self.len += 1;
    }
}
