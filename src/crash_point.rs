//! Crash points: the places inside an open where a crash test stops the process, one step at a
//! time, to prove that the next open finishes (or never sees) what the interrupted one began.
//!
//! Each marks the moment before the open changes the directory again (writes, renames, zeroes or
//! removes a file). With the `testing` feature a test process can arm them
//! ([`crate::testing::exit_at_crash_point`]); without it they compile to nothing.

#[cfg(feature = "testing")]
pub(crate) use crate::testing::crash_point;

/// Without the `testing` feature: nothing.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub(crate) fn crash_point(_what: &'static str) {}
