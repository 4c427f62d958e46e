//! Time-to-live of state entries, and the clock it is measured with.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The time source of TTL expiry, in milliseconds. Inject a [`ManualClock`] in tests.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since an arbitrary, fixed epoch; never decreasing.
    fn now_millis(&self) -> u64;
}

/// Wall-clock time (milliseconds since the Unix epoch).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place wall-clock time enters the library
    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `start_millis`.
    pub fn new(start_millis: u64) -> Self {
        ManualClock(AtomicU64::new(start_millis))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock (never backwards: an earlier time is ignored).
    pub fn set(&self, millis: u64) {
        self.0.fetch_max(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A state's time-to-live: entries not written (and, if chosen, not read) for `ttl` are expired,
/// never returned again, and dropped when next touched or compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtl {
    pub(crate) ttl_millis: u64,
    pub(crate) refresh_on_read: bool,
}

impl StateTtl {
    /// Entries expire `ttl` after their last write.
    pub fn after_write(ttl: Duration) -> Self {
        StateTtl {
            ttl_millis: (ttl.as_millis() as u64).max(1),
            refresh_on_read: false,
        }
    }

    /// Entries expire `ttl` after their last write or read (a read that refreshes is logged).
    pub fn after_access(ttl: Duration) -> Self {
        StateTtl {
            ttl_millis: (ttl.as_millis() as u64).max(1),
            refresh_on_read: true,
        }
    }

    /// The time-to-live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_millis)
    }
}

/// Bytes of the expiry prefix of values of states with a TTL.
pub(crate) const EXPIRY_LEN: usize = 8;

/// Splits a stored value into (expiry, value). `None` if it is too short to carry one.
pub(crate) fn split_expiry(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = stored.split_first_chunk::<EXPIRY_LEN>()?;
    Some((u64::from_le_bytes(*head), rest))
}
