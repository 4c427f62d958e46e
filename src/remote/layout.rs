//! Every object name under a remote store's prefix, built and parsed in one place.
//!
//! | key                                                             | what |
//! |-----------------------------------------------------------------|------|
//! | `epochs/{epoch:020}.epoch`                                      | a writer's claim of an epoch (created once, empty) |
//! | `manifests/{seq:020}.sjrm`                                      | remote checkpoint number `seq` ([`crate::codec::remote_manifest`]) |
//! | `snapshots/{log_id:016x}-{lsn:020}-{crc:08x}-{xxh3:016x}.snap`  | a snapshot file, named by its content |
//! | `log/{log_id:016x}-{base_lsn:020}-{start:012}-{end:012}-{crc:08x}-{xxh3:016x}.chunk` | bytes `[start, end)` of the segment whose first LSN is `base_lsn`, named by their content |
//!
//! Data objects (snapshots, chunks) are immutable: their name says what they hold, so a name is
//! never given to other bytes (a 32-bit CRC alone could collide between two writers' divergent
//! histories of one log; with the XXH3-64 beside it, that is not a practical concern).

/// Folder of epoch markers.
pub const EPOCHS: &str = "epochs";
/// Folder of manifests.
pub const MANIFESTS: &str = "manifests";
/// Folder of snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// Folder of log chunks.
pub const LOG: &str = "log";

/// Key of the marker of `epoch`.
pub fn epoch_key(epoch: u64) -> String {
    format!("{EPOCHS}/{epoch:020}.epoch")
}

/// The epoch an epoch-marker file name (without its folder) denotes.
pub fn parse_epoch_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(".epoch")?)
}

/// Key of manifest `seq`.
pub fn manifest_key(seq: u64) -> String {
    format!("{MANIFESTS}/{seq:020}.sjrm")
}

/// The sequence number a manifest file name (without its folder) denotes.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(".sjrm")?)
}

/// Key of a snapshot object.
pub fn snapshot_key(log_id: u64, lsn: u64, crc: u32, xxh3: u64) -> String {
    format!("{SNAPSHOTS}/{log_id:016x}-{lsn:020}-{crc:08x}-{xxh3:016x}.snap")
}

/// Key of a log chunk.
pub fn chunk_key(log_id: u64, base_lsn: u64, start: u64, end: u64, crc: u32, xxh3: u64) -> String {
    format!("{LOG}/{log_id:016x}-{base_lsn:020}-{start:012}-{end:012}-{crc:08x}-{xxh3:016x}.chunk")
}

fn parse_digits(d: &str) -> Option<u64> {
    if d.len() != 20 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    d.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        for n in [0u64, 1, 99, u64::MAX] {
            let k = manifest_key(n);
            assert_eq!(parse_manifest_name(k.rsplit('/').next().unwrap()), Some(n));
            let k = epoch_key(n);
            assert_eq!(parse_epoch_name(k.rsplit('/').next().unwrap()), Some(n));
        }
        assert!(manifest_key(9) < manifest_key(10));
        assert_eq!(parse_manifest_name("1.sjrm"), None);
        assert_eq!(parse_manifest_name("00000000000000000001.epoch"), None);
        assert_ne!(
            chunk_key(1, 2, 0, 10, 3, 4),
            chunk_key(1, 2, 0, 10, 3, 5),
            "the XXH3 tells apart ranges whose CRCs collide"
        );
    }
}
