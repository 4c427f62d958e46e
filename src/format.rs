//! Every on-disk file name of a log directory, built and parsed in one place.
//!
//! | name                        | what                                                        |
//! |-----------------------------|-------------------------------------------------------------|
//! | `LOCK`                      | held with an exclusive `flock` while the log is open         |
//! | `log.meta`                  | identity and segment range ([`crate::codec::meta`])          |
//! | `log.discard`               | intent to discard the records after an LSN, while that happens |
//! | `{id:020}.seg`              | segment number `id`                                          |
//! | `{id:020}.seg.cut-{offset}` | bytes recovery cut from segment `id` at `offset`, kept aside |
//! | `{lsn:020}.snap`            | full snapshot of the state through LSN `lsn` (`src/snapshot/`) |
//! | `{id:020}.ckpt`             | manifest of checkpoint `id` (`docs/FORMAT.md`, "Checkpoint manifest") |
//! | `*.tmp`                     | a file being created (`{id:020}.seg.next.tmp`: a segment prepared ahead of need); removed by recovery |

use std::path::{Path, PathBuf};

/// Name of the lock file.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the meta file.
pub const META_FILE: &str = "log.meta";
/// Name of the discard-intent file (present only while records are being discarded).
pub const DISCARD_FILE: &str = "log.discard";
/// Suffix of files under construction.
pub const TMP_SUFFIX: &str = ".tmp";
const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_DIGITS: usize = 20;

/// File name of segment `id`.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// Path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(segment_file_name(id))
}

/// The segment id a file name denotes, or `None` if the name is not exactly a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, SEGMENT_SUFFIX)
}

const SNAPSHOT_SUFFIX: &str = ".snap";
const MANIFEST_SUFFIX: &str = ".ckpt";

fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// File name of the snapshot covering the state through LSN `lsn`.
pub fn snapshot_file_name(lsn: u64) -> String {
    format!("{lsn:0SEGMENT_DIGITS$}{SNAPSHOT_SUFFIX}")
}

/// The LSN a snapshot file name denotes, or `None` if the name is not exactly a snapshot's.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, SNAPSHOT_SUFFIX)
}

/// File name of the manifest of checkpoint `id`.
pub fn manifest_file_name(id: u64) -> String {
    format!("{id:0SEGMENT_DIGITS$}{MANIFEST_SUFFIX}")
}

/// The checkpoint id a manifest file name denotes, or `None` if the name is not exactly one.
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, MANIFEST_SUFFIX)
}

/// Where recovery keeps the bytes it cut from segment `id` at `offset`.
pub fn cut_backup_path(dir: &Path, id: u64, offset: u64) -> PathBuf {
    dir.join(format!("{}.cut-{offset}", segment_file_name(id)))
}

/// Temporary name under which the log's background thread prepares segment `id` ahead of need.
/// Distinct from [`tmp_path`] so that a roll creating the same segment synchronously never
/// shares (and truncates) the background thread's file.
pub fn prepared_segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{}.next{TMP_SUFFIX}", segment_file_name(id)))
}

/// Temporary name of a deleted segment file the log keeps for reuse (segment recycling): a
/// crash leaves it for recovery to delete with the other temporaries.
pub fn pooled_segment_path(dir: &Path, old_id: u64) -> PathBuf {
    dir.join(format!("{}.free{TMP_SUFFIX}", segment_file_name(old_id)))
}

/// Temporary name under which `final_name` is built before its atomic rename.
pub fn tmp_path(dir: &Path, final_name: &str) -> PathBuf {
    dir.join(format!("{final_name}{TMP_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        for id in [0u64, 1, 42, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(id)), Some(id));
        }
        for bad in [
            "1.seg",
            "00000000000000000001.seg.tmp",
            "0000000000000000000x.seg",
            "log.meta",
            "00000000000000000001.seg.cut-64",
            "000000000000000000001.seg",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        for n in [0u64, 7, u64::MAX] {
            assert_eq!(parse_snapshot_file_name(&snapshot_file_name(n)), Some(n));
            assert_eq!(parse_manifest_file_name(&manifest_file_name(n)), Some(n));
            assert_eq!(parse_segment_file_name(&snapshot_file_name(n)), None);
            assert_eq!(parse_snapshot_file_name(&manifest_file_name(n)), None);
        }
        assert_eq!(
            parse_snapshot_file_name("00000000000000000001.snap.tmp"),
            None
        );
    }
}
