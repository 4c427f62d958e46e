//! Byte-level codecs of everything the log puts on disk.
//!
//! Nothing here does I/O: each codec encodes into and decodes from byte slices, so it can be fuzzed,
//! run under miri and benchmarked alone. All integers are little-endian. The layouts are specified
//! byte by byte in `docs/FORMAT.md`; the offsets below are derived from each other, never typed twice.

pub mod frame;
pub mod header;
pub mod manifest;
pub mod meta;
pub mod record;
pub mod remote_manifest;

/// Reads a little-endian `u32` at `at`. `None` if the slice is too short.
#[inline]
pub(crate) fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a little-endian `u64` at `at`. `None` if the slice is too short.
#[inline]
pub(crate) fn get_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Writes `v` little-endian at `at`. The caller sized `buf`; a short buffer is a bug, so this panics.
#[inline]
pub(crate) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` little-endian at `at`. The caller sized `buf`; a short buffer is a bug, so this panics.
#[inline]
pub(crate) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
