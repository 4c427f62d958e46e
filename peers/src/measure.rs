//! What a child process reports about itself: bytes it caused to be written to storage, its peak
//! resident memory, and the size of a directory.

use std::path::Path;

/// Bytes this process (all its threads, also finished ones) caused to be written to storage:
/// `write_bytes - cancelled_write_bytes` of `/proc/self/io`. The kernel counts a page when it is
/// dirtied (also through a memory map), so a page written back and dirtied again counts twice,
/// as it costs twice. 0 where `/proc/self/io` cannot be read.
pub fn disk_write_bytes() -> u64 {
    io_field("write_bytes:").saturating_sub(io_field("cancelled_write_bytes:"))
}

/// Bytes this process dirtied for storage so far (`write_bytes` of `/proc/self/io`), not less
/// what it cancelled by deleting files: for deltas over an interval, which a deletion inside the
/// interval must not make negative.
pub fn dirtied_bytes() -> u64 {
    io_field("write_bytes:")
}

fn io_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set of this process in bytes (`VmHWM` of `/proc/self/status`); 0 if unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of the regular files under `dir` (allocated size, so preallocated space counts).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
