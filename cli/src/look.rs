//! `inspect`, `verify` and `checkpoint list`: read-only, built on `statejournal::inspect`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use statejournal::inspect::{self, InspectOptions, Inspection, Outcome, Problem};
use statejournal::{DiscardCause, RecoveryMode};

use crate::fmt::{bytes, count, duration, name, Table};
use crate::plan::{REPLAY_RECORDS_PER_SEC, SNAPSHOT_LOAD_BYTES_PER_SEC};
use crate::{existing_dir, CliError, CliResult, EXIT_CORRUPT, EXIT_REPAIRABLE};

/// `inspect DIR`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The journal directory.
    dir: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Skip reading every snapshot block and rebuilding the state (faster on large journals;
    /// entry counts then come from the snapshot footer only).
    #[arg(long)]
    quick: bool,
}

/// `verify DIR`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The journal directory.
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `checkpoint list DIR` or `checkpoint list --remote URL`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// The journal directory.
    #[arg(required_unless_present = "remote", conflicts_with = "remote")]
    dir: Option<PathBuf>,
    /// List the checkpoints in this store instead (s3://…, file:///…, memory:///…).
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

fn run_inspect(dir: &PathBuf, opts: InspectOptions) -> Result<Inspection, CliError> {
    existing_dir(dir)?;
    inspect::inspect(dir, opts).map_err(|e| CliError(e.to_string()))
}

/// Estimated time to open: load the snapshot an open would use, replay the log after it.
pub fn recovery_estimate(i: &Inspection) -> Duration {
    let snap = i.usable_snapshot();
    let snap_bytes = snap.map_or(0, |s| s.file_len);
    let after = snap.map_or(0, |s| s.lsn.get());
    let records = i
        .log
        .last_lsn
        .get()
        .saturating_sub(after.max(i.log.first_lsn.get().saturating_sub(1)));
    Duration::from_secs_f64(
        snap_bytes as f64 / SNAPSHOT_LOAD_BYTES_PER_SEC + records as f64 / REPLAY_RECORDS_PER_SEC,
    )
}

/// A lower bound of the bytes written per byte of state mutations: log frames of every record
/// ever appended (LSNs times the average frame of the records present) plus the snapshots and
/// manifests present, over the mutations' payload bytes. Snapshots deleted by garbage collection
/// are not counted, hence a lower bound.
fn write_amplification(i: &Inspection) -> Option<f64> {
    if i.log.records == 0 || i.log.payload_bytes == 0 {
        return None;
    }
    let appended = i.log.last_lsn.get() as f64;
    let avg_payload = i.log.payload_bytes as f64 / i.log.records as f64;
    let avg_frame = i.log.frame_bytes as f64 / i.log.records as f64;
    let manifests: u64 = i
        .checkpoints
        .iter()
        .map(|c| std::fs::metadata(&c.path).map_or(0, |m| m.len()))
        .sum();
    Some(
        (appended * avg_frame + i.snapshot_bytes() as f64 + manifests as f64)
            / (appended * avg_payload),
    )
}

fn outcome_json(o: &Outcome) -> Value {
    match o {
        Outcome::Refuses => json!({"action": "refuse"}),
        Outcome::Cuts {
            continues_at,
            loses_durable,
        } => {
            json!({"action": "cut", "continues_at_lsn": continues_at.get(), "loses_durable_records": loses_durable})
        }
        Outcome::SetsAside => json!({"action": "set_aside"}),
        Outcome::FallsBack => json!({"action": "fall_back"}),
        Outcome::Ignores => json!({"action": "ignore"}),
        _ => json!({"action": "other"}),
    }
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "kind": p.kind.to_string(),
        "file": p.path.display().to_string(),
        "offset": p.offset,
        "detail": p.detail,
        "bytes": p.bytes,
        "intact_records_after": p.intact_records_after.map(|(a, b)| json!([a.get(), b.get()])),
        "recovery": {
            "strict": outcome_json(&p.strict),
            "tolerate_torn_tail": outcome_json(&p.tolerate_torn_tail),
            "point_in_time": outcome_json(&p.point_in_time),
        }
    })
}

fn checkpoints_json(i: &Inspection) -> Value {
    Value::Array(
        i.checkpoints
            .iter()
            .map(|c| {
                let m = c.manifest.as_ref();
                json!({
                    "id": c.id,
                    "file": c.path.display().to_string(),
                    "lsn": m.map(|m| m.lsn),
                    "snapshot_lsn": m.map(|m| m.snapshot.as_ref().map_or(0, |s| s.lsn)),
                    "segments": m.map(|m| m.segments.iter().map(|s| s.id).collect::<Vec<_>>()),
                    "states": m.map(|m| m.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>()),
                    "created_millis": m.map(|m| m.created_millis),
                    "restorable": c.error.is_none(),
                    "error": c.error,
                })
            })
            .collect(),
    )
}

fn to_json(i: &Inspection) -> Value {
    json!({
        "dir": i.dir.display().to_string(),
        "log_id": i.log_id.map(|id| format!("{id:#018x}")),
        "in_use": i.in_use,
        "bytes_on_disk": i.bytes_on_disk,
        "log": {
            "first_lsn": i.log.first_lsn.get(),
            "last_lsn": i.log.last_lsn.get(),
            "records": i.log.records,
            "payload_bytes": i.log.payload_bytes,
            "frame_bytes": i.log.frame_bytes,
            "synced_through": i.log.synced_through.get(),
        },
        "segments": i.segments.iter().map(|s| json!({
            "id": s.id,
            "file": s.path.display().to_string(),
            "file_bytes": s.file_len,
            "first_lsn": s.first_lsn.get(),
            "last_lsn": s.last_lsn.get(),
            "records": s.records,
            "data_end": s.data_end,
            "dirty_end": s.dirty_end,
            "payload_bytes": s.payload_bytes,
            "synced_through": s.synced_through.get(),
            "leftover": s.leftover,
            "predecessor_unsynced": s.header.map(|h| h.predecessor_unsynced),
        })).collect::<Vec<_>>(),
        "snapshots": i.snapshots.iter().map(|s| json!({
            "file": s.path.display().to_string(),
            "lsn": s.lsn.get(),
            "file_bytes": s.file_len,
            "entries": s.entries,
            "key_groups": s.key_groups.len(),
            "error": s.error,
        })).collect::<Vec<_>>(),
        "checkpoints": checkpoints_json(i),
        "states": i.state.as_ref().map(|st| st.states.iter().map(|s| json!({
            "id": s.id,
            "name": s.name,
            "kind": s.kind.to_string(),
            "entries": s.entries,
            "payload_bytes": s.payload_bytes,
        })).collect::<Vec<_>>()),
        "key_groups": i.state.as_ref().map(|st| json!({
            "max": st.max_key_groups,
            "groups": st.key_groups.iter().map(|g| json!({
                "key_group": g.key_group,
                "snapshot_entries": g.snapshot_entries,
                "snapshot_bytes": g.snapshot_bytes,
                "log_bytes": g.log_bytes,
            })).collect::<Vec<_>>(),
        })),
        "state_error": i.state_error,
        "other_files": i.other_files.iter().map(|f| json!({
            "file": f.path.display().to_string(), "bytes": f.bytes, "role": f.role,
        })).collect::<Vec<_>>(),
        "write_amplification_lower_bound": write_amplification(i),
        "estimated_recovery_seconds": recovery_estimate(i).as_secs_f64(),
        "problems": i.problems.iter().map(problem_json).collect::<Vec<_>>(),
        "sound": i.is_sound(),
    })
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v)?;
    crate::outln!("{s}");
    Ok(())
}

/// `statejournal inspect`.
pub fn inspect(a: InspectArgs) -> CliResult {
    let opts = InspectOptions {
        verify_snapshots: !a.quick,
        verify_checkpoints: !a.quick,
        replay_state: !a.quick,
    };
    let i = run_inspect(&a.dir, opts)?;
    if a.json {
        print_json(&to_json(&i))?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("journal {}", i.dir.display());
    crate::outln!(
        "  log id {}, {} on disk{}",
        i.log_id
            .map_or("unknown".into(), |id| format!("{id:#018x}")),
        bytes(i.bytes_on_disk),
        if i.in_use {
            " — OPEN in another process now (its tail may be mid-write)"
        } else {
            ""
        }
    );
    crate::outln!(
        "  log: LSN {}..={} ({} records, {} of payload), proven durable through LSN {}",
        i.log.first_lsn,
        i.log.last_lsn,
        i.log.records,
        bytes(i.log.payload_bytes),
        i.log.synced_through
    );
    if let Some(d) = i.discard_after {
        crate::outln!(
            "  {}: the next open discards records after LSN {d}",
            pending_discard(&i)
        );
    }

    crate::outln!("\nsegments");
    let mut t = Table::new(&[
        "id",
        "file",
        "size",
        "used",
        "first LSN",
        "last LSN",
        "records",
        "durable thru",
        "note",
    ]);
    for s in &i.segments {
        let note = if s.leftover {
            "leftover (removed on open)".to_string()
        } else if s.header.is_none() {
            "bad header".to_string()
        } else if s.dirty_end > s.data_end {
            format!(
                "{} after the last intact record",
                bytes(s.dirty_end - s.data_end)
            )
        } else {
            String::new()
        };
        t.row(vec![
            s.id.to_string(),
            name(&s.path),
            bytes(s.file_len),
            bytes(s.data_end),
            s.first_lsn.to_string(),
            s.last_lsn.to_string(),
            s.records.to_string(),
            s.synced_through.to_string(),
            note,
        ]);
    }
    crate::out!("{}", t.render());

    crate::outln!("\nsnapshots");
    if i.snapshots.is_empty() {
        crate::outln!("  none (recovery replays the whole log)");
    } else {
        let mut t = Table::new(&["LSN", "file", "size", "entries", "key groups", "status"]);
        for s in &i.snapshots {
            t.row(vec![
                s.lsn.to_string(),
                name(&s.path),
                bytes(s.file_len),
                s.entries.to_string(),
                s.key_groups.len().to_string(),
                s.error.clone().unwrap_or_else(|| {
                    if a.quick {
                        "footer ok".into()
                    } else {
                        "verified".into()
                    }
                }),
            ]);
        }
        crate::out!("{}", t.render());
    }

    crate::outln!("\ncheckpoints");
    print_checkpoint_table(&i);

    crate::outln!("\nstates");
    match (&i.state, &i.state_error) {
        (Some(st), _) => {
            let mut t = Table::new(&["id", "name", "kind", "entries", "bytes"]);
            for s in &st.states {
                t.row(vec![
                    s.id.to_string(),
                    s.name.clone(),
                    s.kind.to_string(),
                    s.entries.to_string(),
                    bytes(s.payload_bytes),
                ]);
            }
            crate::out!("{}", t.render());
            crate::outln!(
                "  (rebuilt in memory from {} and {} log records after it)",
                st.snapshot
                    .as_ref()
                    .map_or("no snapshot".into(), |p| name(p)),
                st.replayed_records
            );
            crate::outln!("\nkey groups ({} in all)", st.max_key_groups);
            let groups = &st.key_groups;
            if groups.is_empty() {
                crate::outln!("  none holds data");
            } else {
                let total =
                    |f: fn(&inspect::KeyGroupBytes) -> u64| groups.iter().map(f).sum::<u64>();
                let sizes: Vec<u64> = groups
                    .iter()
                    .map(|g| g.snapshot_bytes + g.log_bytes)
                    .collect();
                let (min, max) = (
                    sizes.iter().copied().min().unwrap_or(0),
                    sizes.iter().copied().max().unwrap_or(0),
                );
                crate::outln!(
                    "  {} key groups hold data: {} in the snapshot ({} entries), {} of log ops after it; per group {} .. {} (mean {})",
                    groups.len(),
                    bytes(total(|g| g.snapshot_bytes)),
                    total(|g| g.snapshot_entries),
                    bytes(total(|g| g.log_bytes)),
                    bytes(min),
                    bytes(max),
                    bytes(sizes.iter().sum::<u64>() / groups.len() as u64),
                );
                let mut t = Table::new(&[
                    "key group",
                    "snapshot entries",
                    "snapshot bytes",
                    "log bytes",
                ]);
                let mut largest: Vec<_> = groups.iter().collect();
                largest.sort_by_key(|g| std::cmp::Reverse(g.snapshot_bytes + g.log_bytes));
                for g in largest.iter().take(8) {
                    t.row(vec![
                        g.key_group.to_string(),
                        g.snapshot_entries.to_string(),
                        bytes(g.snapshot_bytes),
                        bytes(g.log_bytes),
                    ]);
                }
                crate::outln!("  largest:");
                crate::out!("{}", t.render());
            }
        }
        (None, Some(e)) => crate::outln!("  not rebuilt: {e}"),
        (None, None) => {
            // --quick: from the newest snapshot's footer.
            if let Some(s) = i.snapshots.last() {
                let mut t = Table::new(&["id", "name", "entries in snapshot", "bytes"]);
                for (id, n, _, e, b) in &s.states {
                    t.row(vec![id.to_string(), n.clone(), e.to_string(), bytes(*b)]);
                }
                crate::out!("{}", t.render());
                crate::outln!(
                    "  (from the footer of {}; the log after it not counted)",
                    name(&s.path)
                );
            } else {
                crate::outln!("  not rebuilt (--quick) and no snapshot");
            }
        }
    }

    if !i.other_files.is_empty() {
        crate::outln!("\nother files");
        let mut t = Table::new(&["file", "size", "what"]);
        for f in &i.other_files {
            t.row(vec![name(&f.path), bytes(f.bytes), f.role.to_string()]);
        }
        crate::out!("{}", t.render());
    }

    crate::outln!("\ncapacity");
    crate::outln!("  bytes on disk            {}", bytes(i.bytes_on_disk));
    crate::outln!(
        "  snapshots / log          {} / {} used of {} allocated",
        bytes(i.snapshot_bytes()),
        bytes(i.segments.iter().map(|s| s.data_end).sum()),
        bytes(i.segments.iter().map(|s| s.file_len).sum())
    );
    match write_amplification(&i) {
        Some(w) => crate::outln!("  write amplification      >= {w:.2} (log frames + snapshots and manifests present, per byte of mutations)"),
        None => crate::outln!("  write amplification      n/a (no records)"),
    }
    let est = recovery_estimate(&i);
    crate::outln!(
        "  estimated recovery time  {} (snapshot load at {}/s, replay at {} records/s)",
        duration(est),
        bytes(SNAPSHOT_LOAD_BYTES_PER_SEC as u64),
        count(REPLAY_RECORDS_PER_SEC)
    );

    crate::outln!();
    if i.is_sound() {
        crate::outln!("no damage found");
    } else {
        for p in &i.problems {
            crate::outln!("problem: {p}");
        }
        crate::outln!(
            "run `statejournal verify {}` for what recovery would do",
            i.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_checkpoint_table(i: &Inspection) {
    if i.checkpoints.is_empty() {
        crate::outln!("  none");
        return;
    }
    let mut t = Table::new(&[
        "id",
        "LSN",
        "snapshot LSN",
        "segments",
        "states",
        "restorable",
    ]);
    for c in &i.checkpoints {
        let m = c.manifest.as_ref();
        t.row(vec![
            c.id.to_string(),
            m.map_or("?".into(), |m| m.lsn.to_string()),
            m.map_or("?".into(), |m| {
                m.snapshot.as_ref().map_or(0, |s| s.lsn).to_string()
            }),
            m.map_or("?".into(), |m| m.segments.len().to_string()),
            m.map_or("?".into(), |m| m.states.len().to_string()),
            match &c.error {
                None => "yes".into(),
                Some(e) => format!("no: {e}"),
            },
        ]);
    }
    crate::out!("{}", t.render());
}

/// `statejournal checkpoint list`.
pub fn list(a: ListArgs) -> CliResult {
    let dir = match (a.dir, a.remote) {
        (_, Some(url)) => return crate::remote::list(&url, a.json),
        (Some(dir), None) => dir,
        (None, None) => return Err(CliError("give a journal directory or --remote URL".into())),
    };
    let i = run_inspect(
        &dir,
        InspectOptions {
            verify_snapshots: true,
            verify_checkpoints: true,
            replay_state: false,
        },
    )?;
    if a.json {
        print_json(&checkpoints_json(&i))?;
    } else {
        print_checkpoint_table(&i);
    }
    Ok(ExitCode::SUCCESS)
}

/// `statejournal verify`.
pub fn verify(a: VerifyArgs) -> CliResult {
    let i = run_inspect(
        &a.dir,
        InspectOptions {
            verify_snapshots: true,
            verify_checkpoints: true,
            replay_state: true,
        },
    )?;
    // Rebuilding the state also checks every record decodes as a state mutation.
    let code = if i.is_sound() && i.state_error.is_none() {
        0
    } else if i.opens_without_loss(RecoveryMode::TolerateTornTail) && i.state_error.is_none() {
        EXIT_REPAIRABLE
    } else {
        EXIT_CORRUPT
    };
    if a.json {
        let mut v = to_json(&i);
        v["exit_code"] = json!(code);
        print_json(&v)?;
        return Ok(ExitCode::from(code));
    }
    let files = i.segments.len() + i.snapshots.len() + i.checkpoints.len();
    crate::outln!(
        "checked {} files ({}): {} log records (LSN {}..={}), {} snapshots, {} checkpoints",
        files,
        bytes(i.bytes_on_disk),
        i.log.records,
        i.log.first_lsn,
        i.log.last_lsn,
        i.snapshots.len(),
        i.checkpoints.len()
    );
    if i.in_use {
        crate::outln!(
            "note: the journal is open in another process; a tail being written may look torn"
        );
    }
    if let Some(d) = i.discard_after {
        crate::outln!(
            "note: {}; the next open discards records after LSN {d}",
            pending_discard(&i)
        );
    }
    for p in &i.problems {
        crate::outln!("\n{p}");
        if let Some((a, b)) = p.intact_records_after {
            crate::outln!("  intact records {a}..={b} lie after the damage");
        }
        crate::outln!("  strict:             {}", p.strict);
        crate::outln!(
            "  tolerate-torn-tail: {} (the default)",
            p.tolerate_torn_tail
        );
        crate::outln!("  point-in-time:      {}", p.point_in_time);
    }
    if let Some(e) = &i.state_error {
        crate::outln!("\nthe state cannot be rebuilt: {e}");
    }
    match code {
        0 => crate::outln!("sound: every checksum verified"),
        EXIT_REPAIRABLE => crate::outln!(
            "\nrepairable: the default open (or `statejournal repair {}`) fixes this without losing an acknowledged record",
            i.dir.display()
        ),
        _ => crate::outln!(
            "\nCORRUPT: the default open refuses this or would lose durable data; see above (`statejournal repair --point-in-time` stops before the damage)"
        ),
    }
    Ok(ExitCode::from(code))
}

/// What the interrupted discard of `i` (`log.discard`) was.
fn pending_discard(i: &Inspection) -> &'static str {
    match i.discard_cause {
        Some(DiscardCause::DurableDataDamaged) => {
            "an interrupted point-in-time recovery past damaged durable records is pending \
             (durable data is lost)"
        }
        _ => "an interrupted checkpoint restore or requested discard is pending",
    }
}
