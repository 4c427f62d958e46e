//! Options of a [`Log`](super::Log): durability and recovery policies and their documented defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};

/// When appended records reach stable storage. Redis calls these `appendfsync no / everysec / always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The OS writes dirty pages back when it likes. Every appended record survives a crash of the
    /// process (the bytes are in the page cache the moment `append` returns), but a power loss or
    /// kernel crash loses whatever was not yet written back. `commit()` does not wait.
    #[default]
    Buffered,
    /// A background thread flushes every interval: a power loss loses at most about one interval
    /// of acknowledged appends. `commit()` does not wait.
    Periodic(Duration),
    /// `commit()` returns only once every record appended before it is on stable storage.
    /// Concurrent committers share one flush (group commit).
    Sync,
}

/// What recovery does with damaged log data. In every mode, damage is reported in the
/// [`RecoveryReport`](super::RecoveryReport) or as an error naming file and offset: never skipped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn tail (damage after the last point the log proves durable: records of a flush
    /// that may not have completed, which no `Sync` commit acknowledged), keep a copy of the cut
    /// bytes, and continue appending there. Damage to durable data is an
    /// [`Error::Corruption`](crate::Error::Corruption) and nothing is changed.
    #[default]
    TolerateTornTail,
    /// As `TolerateTornTail`, but damage to durable data does not stop the open: the log is
    /// recovered up to the last intact record before the damage and everything after it is set
    /// aside (cut bytes kept in `*.cut-OFFSET` files, later segments renamed `*.discarded`). The
    /// report lists what was set aside. Use when availability matters more than the lost suffix.
    /// Cutting durable data is decided durably first (the discard intent, `log.discard`): an
    /// open in any mode that finds a point-in-time recovery interrupted by a crash finishes it.
    PointInTime,
    /// Any damaged or unexpected byte, even a torn tail, is an error and nothing is changed.
    /// Use to verify a log, or after a clean shutdown.
    Strict,
}

/// Options of a [`Log`](super::Log). Build with [`LogOptions::default`] and the setters.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub(crate) segment_size: u64,
    pub(crate) durability: Durability,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) create_if_missing: bool,
    pub(crate) discard_after: Option<u64>,
    /// Evidence from outside the log (a journal's snapshots and manifests): given the directory
    /// and the log's id, an LSN through which the log is known durable. Called with the
    /// directory locked.
    pub(crate) evidence: Option<fn(&std::path::Path, u64) -> u64>,
    /// Leave `log.discard` in place when a discard completes: the journal removes it once it
    /// has set aside the snapshots and manifests past the discard point (until then they are
    /// evidence the discard must override).
    pub(crate) keep_discard_intent: bool,
    /// `Sync` mode: write the prefaulted window back ahead of the appenders (`None`: decided
    /// at open from the directory's file system).
    pub(crate) convert_ahead: Option<bool>,
    /// How many deleted segment files are kept for reuse (`None`: the default, see
    /// [`LogOptions::recycle_segments`]).
    pub(crate) recycle_segments: Option<usize>,
    #[cfg(feature = "testing")]
    pub(crate) faults: Option<std::sync::Arc<crate::testing::FaultInjector>>,
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// By default, deleted segment files are kept for reuse up to this many bytes of them (8 of
/// the default 64 MiB segments), within [`DEFAULT_RECYCLE_FILES`] files.
pub(crate) const DEFAULT_RECYCLE_BYTES: u64 = 512 << 20;
/// The fewest and the most files the default keeps for reuse, whatever the segment size.
pub(crate) const DEFAULT_RECYCLE_FILES: std::ops::RangeInclusive<usize> = 2..=8;

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            durability: Durability::default(),
            recovery_mode: RecoveryMode::default(),
            create_if_missing: true,
            discard_after: None,
            evidence: None,
            keep_discard_intent: false,
            convert_ahead: None,
            recycle_segments: None,
            #[cfg(feature = "testing")]
            faults: None,
        }
    }
}

impl LogOptions {
    /// Size of each segment file, preallocated in full (default 64 MiB; a multiple of 4096 between
    /// 4 KiB and 1 GiB). Applies to segments created from now on; existing ones keep their size.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Durability mode (default [`Durability::Buffered`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Recovery mode (default [`RecoveryMode::TolerateTornTail`]).
    pub fn recovery_mode(mut self, m: RecoveryMode) -> Self {
        self.recovery_mode = m;
        self
    }

    /// Whether `open` creates a new log in an empty or missing directory (default true).
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// Opens the log as it was at `lsn`: every record after it is set aside — its bytes saved to
    /// `*.cut-OFFSET` files, whole later segments renamed `*.discarded`, as recovery does with a
    /// torn tail — and appends continue at `lsn + 1`. This is how a journal restores a checkpoint
    /// (exactly-once restore discards what was written after it). An `lsn` at or past the end
    /// of the log changes nothing.
    pub fn discard_after(mut self, lsn: super::Lsn) -> Self {
        self.discard_after = Some(lsn.0);
        self
    }

    /// In [`Durability::Sync`] mode, whether the background thread writes the zero pages ahead
    /// of the appenders back to disk, so that the segment's preallocated, unwritten extents are
    /// converted once per window instead of by the commits that reach them (see
    /// `docs/DESIGN.md`, "Sync commits"). It writes each log page once more as zeros.
    ///
    /// By default `open` decides from the file system holding the log: on where it was measured
    /// to pay, ext4 (16-record commits about 30% faster, 256-record ones about 20%) and XFS
    /// (both about 75% faster); off elsewhere. On btrfs, which copies on write and so has no
    /// extents to convert, it made 256-record commits 8–10% slower; a file system or device
    /// that needs stable pages during writeback (btrfs with data checksums, dm-integrity) also
    /// makes an appender storing into a page being written back wait for that I/O. Set it to
    /// override that choice, e.g. where the device's write bandwidth is what commits wait for.
    pub fn convert_extents_ahead(mut self, yes: bool) -> Self {
        self.convert_ahead = Some(yes);
        self
    }

    /// How many segment files [`Log::delete_below`](super::Log::delete_below) keeps for reuse
    /// instead of deleting them (default: 512 MiB of them, that is 8 of the default 64 MiB
    /// segments, and between 2 and 8 files whatever the size; 0 turns recycling off). RocksDB
    /// calls this `recycle_log_file_num`.
    ///
    /// Keeping files does not raise the directory's peak size: a roll takes a kept file before
    /// it creates one, so the log's files never take more room than the largest the log has
    /// been (plus the one segment prepared ahead); they only give that room back later, when
    /// the log closes. A log truncated in bulk (a compaction deletes every segment its new
    /// snapshot covers) reuses files only for as many segments as it keeps: with 64 MiB
    /// segments and a snapshot of a few hundred MiB, two would leave most new segments fresh.
    ///
    /// A fresh segment costs the kernel a zeroed page for every 4 KiB appended (about 2 GB/s on
    /// the machine the benchmarks ran on, which caps appends there), and in `Sync` mode a
    /// conversion of unwritten extents; a reused file's pages are in the page cache and its
    /// blocks written. The log's background thread zeroes a kept file through its mapping
    /// before it becomes the next segment. On disk the older segment's bytes remain after the
    /// records until the zeros are written back; its header says it is recycled (segment
    /// header version 2, which version-1 readers refuse by name), and recovery ends the
    /// written part at the first frame whose LSN is older than the segment. A kept file is held
    /// in memory only, under a temporary name, and deleted when the log closes. Files a reader
    /// in this process (a `LogReader`, a record's `Bytes`, a checkpoint push) or a hard link
    /// still uses are deleted, never reused, and so are the segments this open found on disk.
    /// Another process reading a segment file by its path after the log deleted it may find
    /// it overwritten in place instead of still holding the old bytes through its descriptor:
    /// copy a checkpoint's files while the journal retains the checkpoint.
    ///
    /// A log that recycled a segment has a version-2 segment header, which builds from before
    /// recycling refuse by name (`Error::UnsupportedVersion`); set 0 to keep a log readable by
    /// them.
    pub fn recycle_segments(mut self, files: usize) -> Self {
        self.recycle_segments = Some(files);
        self
    }

    /// The number of files kept for reuse: as set, or the default for the segment size.
    pub(crate) fn recycled_files(&self) -> usize {
        self.recycle_segments.unwrap_or_else(|| {
            let fit = DEFAULT_RECYCLE_BYTES / self.segment_size.max(1);
            usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(*DEFAULT_RECYCLE_FILES.start(), *DEFAULT_RECYCLE_FILES.end())
        })
    }

    /// Injects faults into flushes and allocations (tests only).
    #[cfg(feature = "testing")]
    pub fn fault_injector(mut self, f: std::sync::Arc<crate::testing::FaultInjector>) -> Self {
        self.faults = Some(f);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let s = self.segment_size;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&s) || !s.is_multiple_of(4096) {
            return Err(Error::InvalidOptions {
                name: "segment_size",
                reason: format!(
                    "{s} is not a multiple of 4096 between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
                ),
            });
        }
        if let Durability::Periodic(d) = self.durability {
            if d.is_zero() {
                return Err(Error::InvalidOptions {
                    name: "durability",
                    reason: "a periodic flush interval must be positive".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keeps_512_mib_of_files_within_two_to_eight() {
        let files = |segment: u64| LogOptions::default().segment_size(segment).recycled_files();
        assert_eq!(files(DEFAULT_SEGMENT_SIZE), 8);
        assert_eq!(files(128 << 20), 4);
        assert_eq!(files(256 << 20), 2);
        assert_eq!(
            files(1 << 30),
            2,
            "at least two, however large the segments"
        );
        assert_eq!(files(4096), 8, "at most eight, however small");
        // A setting wins over the default, 0 included.
        for n in [0, 1, 3, 20] {
            let o = LogOptions::default().recycle_segments(n);
            assert_eq!(o.recycled_files(), n);
            assert_eq!(o.segment_size(1 << 30).recycled_files(), n);
        }
    }
}
