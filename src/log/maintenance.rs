//! The log's background thread. It keeps work off the append path that would otherwise stall it:
//!
//! * **prefaulting**: the pages a few MiB ahead of the appenders are faulted in
//!   (`MADV_POPULATE_WRITE`), so an append is a memcpy, not a page fault;
//! * **progressive writeback**: in `Buffered`/`Periodic` mode, completed MiBs are handed to the
//!   kernel for writeback (`sync_file_range`), so the full flush a roll needs finds little to do;
//! * **converting extents ahead** in `Sync` mode: the prefaulted window is written back at once,
//!   so commits do not each pay a file-system journal commit for fresh blocks;
//! * **preparing the next segment**: allocated and mapped under a temporary name before the
//!   current one fills, so a roll only writes a header and renames (and, in `Sync` mode, syncs);
//! * **settling creations**: the headers and directory entries of segments that non-`Sync` rolls
//!   created without waiting for the disk are made durable and recorded in `log.meta`;
//! * **periodic flushes** in [`Durability::Periodic`].
//!
//! Appenders wake it, without blocking, each time they cross a [`CHUNK`] boundary.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{lock, Durability, Shared};
use crate::codec::header::SEGMENT_HEADER_LEN;
use crate::error::{Error, Result};
use crate::segment::{PreparedSegment, Segment};

/// Appenders wake the thread each time their writes cross a multiple of this many bytes.
pub(super) const CHUNK: usize = 1 << 20;
/// How far ahead of the appenders pages are prefaulted.
const PREFAULT_AHEAD: usize = 4 << 20;
/// Writeback is started once this much published data has not been handed to the kernel yet.
const WRITEBACK_BATCH: usize = 4 << 20;
/// How often the thread looks around when nobody wakes it.
const IDLE_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Progress {
    segment: u64,
    prefaulted: usize,
    written_back: usize,
    /// `Sync` mode: the window whose writeback the previous round started.
    converting: (usize, usize),
}

pub(super) fn spawn(shared: Arc<Shared>, wake: Receiver<()>) -> Result<JoinHandle<()>> {
    let dir = shared.dir.clone();
    std::thread::Builder::new()
        .name("statejournal-log".into())
        .spawn(move || run(&shared, &wake))
        .map_err(|e| Error::io("spawn log thread", dir, e))
}

fn run(shared: &Shared, wake: &Receiver<()>) {
    let periodic = match shared.opts.durability {
        Durability::Periodic(every) => Some(every),
        _ => None,
    };
    let mut next_flush = periodic.map(|every| Instant::now() + every);
    let mut progress = Progress::default();
    loop {
        let timeout = next_flush.map_or(IDLE_TICK, |at| {
            at.saturating_duration_since(Instant::now()).min(IDLE_TICK)
        });
        match wake.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if let (Some(at), Some(every)) = (next_flush, periodic) {
            if Instant::now() >= at {
                // A failure poisons the log; the owner sees it on its next call.
                let target = shared.current.load().last_reserved_lsn();
                let _ = shared.sync_to(target);
                next_flush = Some(Instant::now() + every);
            }
        }
        if !shared.poisoned.load(Ordering::Acquire) {
            // Prefaulting first: an appender that overtakes it pays for page faults itself.
            prefault(shared, &mut progress);
            #[cfg(feature = "testing")]
            let deferred = shared
                .opts
                .faults
                .as_ref()
                .is_some_and(|f| f.directory_syncs_deferred());
            #[cfg(not(feature = "testing"))]
            let deferred = false;
            if !deferred {
                // A failure poisons the log; the owner sees it on its next call.
                let _ = shared.settle_creations();
            }
            tend(shared, &mut progress);
        }
    }
}

/// Faults in the pages up to [`PREFAULT_AHEAD`] past the appenders.
fn prefault(shared: &Shared, p: &mut Progress) {
    let seg = shared.current.load_full();
    if seg.id() != p.segment {
        *p = Progress {
            segment: seg.id(),
            prefaulted: SEGMENT_HEADER_LEN,
            written_back: SEGMENT_HEADER_LEN,
            converting: (0, 0),
        };
    }
    let reserved = seg.reserved_end();
    let ahead = (reserved + PREFAULT_AHEAD).min(seg.len());
    if p.prefaulted < ahead {
        let from = p.prefaulted.max(reserved);
        seg.prefault(from, ahead);
        // A recycled segment's blocks are written already: nothing to convert.
        if shared.convert_ahead && !seg.header().recycled {
            // Write the prefaulted (zero, dirty) pages back now, without waiting. The segment
            // is fallocated: its blocks are unwritten extents, and the first write into one
            // changes the file's metadata, so the `fdatasync` of a commit that reaches it must
            // also commit the file system's journal (a third device write and flush). Writing
            // the window's zeros back ahead converts its extents in one go: commits then flush
            // their data only, and the journal commits once per window, not once per commit.
            // On this class of machine: 16-record commits +30%, 256-record +20% (see
            // docs/DESIGN.md, "Sync commits"). It changes no byte and promises nothing; an I/O
            // error it meets stays recorded on the file for the next commit's flush to report,
            // and one the call itself returns poisons the log. The window is unmapped first
            // (one batched TLB flush instead of an IPI per page it cleans), but only on kernels
            // where that is safe while appenders may be storing into it (see
            // `Segment::release_pages`).
            seg.release_pages_in_use(from, ahead);
            if let Err(e) = start_writeback(shared, &seg, from, ahead) {
                // The owner sees it on its next call.
                let _ = shared.poison(seg.path(), e);
            }
            // The window whose writeback the previous round started is written back by now (a
            // MiB of appends later), its pages clean and write-protected or unmapped: each
            // appender's first store to one would fault (and run the file system's
            // `page_mkwrite`). Prefaulting it again for writing takes those faults here, on
            // this thread, for the part the appenders have not reached yet. The pages turn
            // dirty again; a commit's flush writes only its own range, and the rest is zeros
            // the kernel may write once more. 256-record commits: 62–68% → 76–87% of a bare
            // `pwrite` + `fdatasync` loop (`log_append -- interleaved/batch256`, three
            // alternating runs each).
            let (c_from, c_to) = p.converting;
            let c_from = c_from.max(seg.reserved_end().next_multiple_of(4096));
            if c_to > c_from {
                seg.prefault(c_from, c_to);
            }
            p.converting = (from, ahead);
        }
        p.prefaulted = ahead;
    }
}

/// [`Segment::start_writeback`], through the fault injector in tests.
fn start_writeback(shared: &Shared, seg: &Segment, from: usize, to: usize) -> std::io::Result<()> {
    #[cfg(feature = "testing")]
    if let Some(f) = &shared.opts.faults {
        f.on_writeback()?;
    }
    #[cfg(not(feature = "testing"))]
    let _ = shared;
    seg.start_writeback(from, to)
}

/// One round of writeback and preparation of the next segment.
fn tend(shared: &Shared, p: &mut Progress) {
    let seg = shared.current.load_full();
    if seg.id() != p.segment {
        return; // rolled meanwhile: the next round starts with the new segment
    }
    let reserved = seg.reserved_end();
    // Advancing the published-prefix walk here also keeps the roll's final walk short.
    let published = seg.published_prefix().end;
    if shared.opts.durability != Durability::Sync && published >= p.written_back + WRITEBACK_BATCH {
        let to = published & !(4096 - 1);
        seg.release_pages(p.written_back, to);
        if let Err(e) = start_writeback(shared, &seg, p.written_back, to) {
            // The owner sees it on its next call.
            let _ = shared.poison(seg.path(), e);
        }
        p.written_back = to;
    }
    // Prepare the next segment once this one is half full, or at once when a file kept for
    // reuse is there to zero (which takes longer than a fresh file's `fallocate`).
    if reserved >= seg.len() / 2 || shared.has_pooled() {
        let next = seg.id() + 1;
        let size = shared.opts.segment_size as usize;
        let mut slot = lock(&shared.prepared);
        // A reused file can become any segment; a fresh one is named after its id.
        if slot
            .as_ref()
            .is_some_and(|s| (s.id() != next && !s.is_recycled()) || s.len() != size)
        {
            if let Some(stale) = slot.take() {
                shared.return_to_pool(stale);
            }
        }
        if slot.is_none() {
            drop(slot);
            // Failure (a full disk) is not reported here: the roll retries synchronously and
            // reports it to the appender.
            // Not prefaulted here: prefaulted pages are dirty, and a `Sync` roll's fsync of the
            // new file would write them all (elsewhere a trial showed no gain). The roll wakes
            // this thread to prefault right after.
            // A file kept for reuse first (see `LogOptions::recycle_segments`): zeroing it here
            // through its mapping costs this thread a few milliseconds and saves the appenders
            // a fresh page per 4 KiB.
            let prepared = match shared.take_pooled() {
                Some(pooled) => Ok(PreparedSegment::recycle(pooled, next)),
                None => PreparedSegment::prepare(
                    &shared.dir,
                    next,
                    size as u64,
                    true,
                    shared.small_flushes(),
                ),
            };
            if let Ok(prepared) = prepared {
                let mut slot = lock(&shared.prepared);
                if slot.is_none()
                    && (shared.current.load().id() + 1 == next || prepared.is_recycled())
                {
                    *slot = Some(prepared);
                } else {
                    drop(slot);
                    shared.return_to_pool(prepared);
                }
            }
        }
    }
}
