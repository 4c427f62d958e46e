//! `plan`: sizing answers before a job exists, from constants the benchmarks measured (the README's
//! performance section; 2-core KVM guest, ext4 on virtio). Each constant names its benchmark.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::fmt::{bytes, count, duration};
use crate::{CliError, CliResult};

/// `ValueState` updates per second on one core (`state_ops`: 1 M keys of 16 B, 100-byte values,
/// `Buffered`).
pub const VALUE_UPDATES_PER_SEC: f64 = 1.42e6;
/// Bytes the in-memory tables add per entry beyond its key and value (`state_ops`).
pub const TABLE_OVERHEAD_PER_ENTRY: f64 = 41.0;
/// Snapshot load speed during recovery, bytes of snapshot file per second (`recovery`).
pub const SNAPSHOT_LOAD_BYTES_PER_SEC: f64 = 0.31e9;
/// Log replay speed during recovery, records per second (`recovery`).
pub const REPLAY_RECORDS_PER_SEC: f64 = 1.09e6;
/// Write amplification with the default compaction policy, 20 M updates over 1 M keys
/// (`recovery`).
pub const MEASURED_WRITE_AMPLIFICATION: f64 = 1.37;
/// Bytes per second a flush makes durable in bulk (`log_append`: `Sync` with a commit every 256
/// records of 128 bytes, 1.5 M records/s).
pub const FLUSH_BYTES_PER_SEC: f64 = 1.5e6 * 128.0;
/// Checkpoint latency with 1000 updates since the previous one (`recovery`: 0.7 ms at 10 MiB of
/// state, 1.4 ms at 1 GiB); a checkpoint syncs the log written since the previous one.
pub const CHECKPOINT_BASE_SECS: f64 = 1.4e-3;
/// Default compaction trigger: log since the newest snapshot at least this many bytes (and at
/// least the snapshot's size).
pub const COMPACTION_MIN_LOG_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
/// Default segment size (preallocated).
pub const SEGMENT_BYTES: f64 = statejournal::DEFAULT_SEGMENT_SIZE as f64;
/// Framing per log record: 16-byte frame header, payload padded to 8 bytes; the state record
/// adds a version byte, an op tag, the state id, the key group and length prefixes.
const RECORD_OVERHEAD: f64 = 16.0 + 12.0 + 4.0;
/// Per-entry overhead in a snapshot block (tag, state id, length prefixes).
const SNAPSHOT_ENTRY_OVERHEAD: f64 = 5.0;
/// Object-store part size assumed for uploads of large files.
const UPLOAD_PART_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// `plan --keys N --value-bytes B --updates-per-sec R`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of distinct keys in the state.
    #[arg(long)]
    keys: u64,
    /// Bytes of each value (encoded).
    #[arg(long)]
    value_bytes: u64,
    /// State updates per second (each rewrites one value).
    #[arg(long)]
    updates_per_sec: f64,
    /// Bytes of each key (encoded).
    #[arg(long, default_value_t = 16)]
    key_bytes: u64,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 10.0)]
    checkpoint_interval: f64,
    /// Checkpoints retained.
    #[arg(long, default_value_t = statejournal::DEFAULT_RETAINED_CHECKPOINTS as u64)]
    retain: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `statejournal plan`.
pub fn run(a: Args) -> CliResult {
    let finite = a.updates_per_sec.is_finite() && a.checkpoint_interval.is_finite();
    if a.keys == 0 || !finite || a.updates_per_sec < 0.0 || a.checkpoint_interval <= 0.0 {
        return Err(CliError(
            "--keys must be at least 1, --updates-per-sec at least 0 and --checkpoint-interval above 0".into(),
        ));
    }
    let keys = a.keys as f64;
    let entry = (a.key_bytes + a.value_bytes) as f64;
    let state = keys * entry;
    let memory = keys * (entry + TABLE_OVERHEAD_PER_ENTRY);
    let snapshot = keys * (entry + SNAPSHOT_ENTRY_OVERHEAD);
    let record = ((entry + RECORD_OVERHEAD) / 8.0).ceil() * 8.0;
    let log_rate = a.updates_per_sec * record;
    // The default policy compacts when the log since the snapshot reaches max(64 MiB, snapshot).
    let tail_max = COMPACTION_MIN_LOG_BYTES.max(snapshot);
    let compaction_every = if log_rate > 0.0 {
        Some(tail_max / log_rate)
    } else {
        None
    };
    // Each compaction writes one snapshot per `tail_max` bytes of log.
    let wa_model = (tail_max + snapshot) / (tail_max.max(1.0)) * (record / entry.max(1.0));
    // Disk: newest snapshot + a new one being written + log up to the trigger + a preallocated
    // segment ahead; retained checkpoints can each pin an older snapshot and its log.
    let disk_typical = snapshot + tail_max + SEGMENT_BYTES;
    let disk_peak = (a.retain as f64 + 1.0) * snapshot + 2.0 * tail_max + 2.0 * SEGMENT_BYTES;
    let per_checkpoint_log = log_rate * a.checkpoint_interval;
    let checkpoint_secs = CHECKPOINT_BASE_SECS + per_checkpoint_log / FLUSH_BYTES_PER_SEC;
    let recovery_worst =
        snapshot / SNAPSHOT_LOAD_BYTES_PER_SEC + (tail_max / record) / REPLAY_RECORDS_PER_SEC;
    let cores = a.updates_per_sec / VALUE_UPDATES_PER_SEC;
    // Incremental upload per checkpoint: the log since the last one, plus a snapshot whenever a
    // compaction happened in between (amortized), plus the manifest.
    let snapshots_per_checkpoint =
        compaction_every.map_or(0.0, |c| (a.checkpoint_interval / c).min(1.0));
    let upload = per_checkpoint_log + snapshots_per_checkpoint * snapshot;
    let requests = 1.0
        + (per_checkpoint_log / UPLOAD_PART_BYTES).ceil().max(1.0)
        + snapshots_per_checkpoint * (snapshot / UPLOAD_PART_BYTES).ceil().max(1.0);

    if a.json {
        let v = json!({
            "state_bytes": state,
            "memory_bytes": memory,
            "snapshot_bytes": snapshot,
            "log_bytes_per_sec": log_rate,
            "compaction_interval_secs": compaction_every,
            "disk_bytes_typical": disk_typical,
            "disk_bytes_peak": disk_peak,
            "checkpoint_log_bytes": per_checkpoint_log,
            "checkpoint_secs": checkpoint_secs,
            "recovery_secs_worst": recovery_worst,
            "cores_for_updates": cores,
            "write_amplification_model": wa_model,
            "write_amplification_measured": MEASURED_WRITE_AMPLIFICATION,
            "upload_bytes_per_checkpoint": upload,
            "object_store_requests_per_checkpoint": requests,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b = |x: f64| bytes(x.max(0.0) as u64);
    let d = |s: f64| duration(Duration::from_secs_f64(s.max(0.0)));
    crate::outln!(
        "{} keys x ({} key + {} value), {} updates/s, a checkpoint every {}, {} retained\n",
        count(keys),
        b(a.key_bytes as f64),
        b(a.value_bytes as f64),
        count(a.updates_per_sec),
        d(a.checkpoint_interval),
        a.retain
    );
    crate::outln!("state                      {} of keys and values; {} in memory (tables add ~{} B per entry)", b(state), b(memory), TABLE_OVERHEAD_PER_ENTRY);
    crate::outln!(
        "snapshot                   {} per full snapshot",
        b(snapshot)
    );
    crate::outln!(
        "log written                {}/s ({} per record, framed)",
        b(log_rate),
        b(record)
    );
    match compaction_every {
        Some(c) => crate::outln!(
            "compaction                 every {} (when the log since the snapshot reaches {})",
            d(c),
            b(tail_max)
        ),
        None => crate::outln!("compaction                 never needed (no updates)"),
    }
    crate::outln!("disk                       ~{} typical, ~{} peak (a compaction in progress, {} retained checkpoints pinning older files)", b(disk_typical), b(disk_peak), a.retain);
    crate::outln!(
        "checkpoint                 syncs {} of log, ~{}; nothing is copied locally",
        b(per_checkpoint_log),
        d(checkpoint_secs)
    );
    crate::outln!("remote upload / checkpoint ~{} in ~{:.0} object-store requests (incremental: log since the last one, snapshots amortized)", b(upload), requests);
    crate::outln!("recovery (worst case)      ~{} (snapshot load at {}/s + replay of up to {} of log at {} records/s)", d(recovery_worst), b(SNAPSHOT_LOAD_BYTES_PER_SEC), b(tail_max), count(REPLAY_RECORDS_PER_SEC));
    crate::outln!(
        "cores for the updates      {:.2} (one journal per core: {} value updates/s measured)",
        cores,
        count(VALUE_UPDATES_PER_SEC)
    );
    crate::outln!("write amplification        ~{:.2} by the policy's model; {:.2} measured (20 M updates over 1 M keys)", wa_model, MEASURED_WRITE_AMPLIFICATION);
    if cores > 1.0 {
        crate::outln!("\nnote: more than one core's worth of updates: split the key groups over {} journals (one per task)", cores.ceil());
    }
    Ok(ExitCode::SUCCESS)
}
