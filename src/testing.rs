//! Test support (feature `testing`): fault injection for crash and failure tests.
//!
//! A [`FaultInjector`] passed in [`LogOptions::fault_injector`](crate::LogOptions::fault_injector)
//! makes chosen flushes or segment allocations fail, so tests can prove what the log does when the
//! disk misbehaves: a failed flush poisons the log; a failed allocation is [`Error::NoSpace`](crate::Error::NoSpace)
//! and leaves the log readable.

use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counts flushes and allocations down to an injected failure.
#[derive(Debug)]
pub struct FaultInjector {
    sync_countdown: AtomicI64,
    alloc_countdown: AtomicI64,
    syncs: AtomicU64,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultInjector {
    /// An injector that injects nothing until told to.
    pub fn new() -> Self {
        FaultInjector {
            sync_countdown: AtomicI64::new(-1),
            alloc_countdown: AtomicI64::new(-1),
            syncs: AtomicU64::new(0),
        }
    }

    /// The next `n` flushes succeed; the one after fails with EIO, and so do all later ones.
    pub fn fail_sync_after(&self, n: u64) {
        self.sync_countdown.store(n as i64, Ordering::SeqCst);
    }

    /// The next `n` segment allocations succeed; the one after fails with ENOSPC (once).
    pub fn fail_allocation_after(&self, n: u64) {
        self.alloc_countdown.store(n as i64, Ordering::SeqCst);
    }

    /// How many flushes were attempted.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    pub(crate) fn on_sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        let left = self.sync_countdown.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.sync_countdown.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn on_allocate(&self) -> io::Result<()> {
        let left = self.alloc_countdown.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            self.alloc_countdown.store(-1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.alloc_countdown.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}
