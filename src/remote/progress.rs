//! Byte counters a caller can watch while a push or a restore runs (a progress bar, a metric).

use std::sync::atomic::{AtomicU64, Ordering};

use super::RemoteStore;

/// How many bytes the current transfer of a [`RemoteStore`] will move, and how many it has moved:
/// give one to [`RemoteOptions::progress`](super::RemoteOptions::progress) and read it from
/// another thread while [`Journal::push_checkpoint`](crate::Journal::push_checkpoint)'s push or a
/// restore runs.
///
/// * A push sets [`Progress::total`] once it knows what the store lacks (after reading the newest
///   remote manifest and hashing the local files), and counts the bytes of each object uploaded;
///   a multipart upload counts each part as it is handed to the store, so up to
///   `concurrency` parts may still be in flight. A retried attempt starts the counts again.
/// * A restore sets the total to the bytes of the objects it downloads (a key-group restore adds
///   the ranges of the snapshot it reads once it has read the snapshot's index), and counts each
///   piece as it arrives and is written.
///
/// The counters are shared by every transfer made with the same options: watch one at a time.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Bytes the current transfer will move, as far as known yet.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes the current transfer has moved so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

impl RemoteStore {
    /// A transfer of `total` bytes starts.
    pub(crate) fn progress_start(&self, total: u64) {
        if let Some(p) = &self.opts.progress {
            p.total.store(total, Ordering::Relaxed);
            p.done.store(0, Ordering::Relaxed);
        }
    }

    /// `n` more bytes moved; `unplanned`: they were not part of the total yet.
    pub(crate) fn progress_add(&self, n: u64, unplanned: bool) {
        if let Some(p) = &self.opts.progress {
            if unplanned {
                p.total.fetch_add(n, Ordering::Relaxed);
            }
            p.done.fetch_add(n, Ordering::Relaxed);
        }
    }
}
