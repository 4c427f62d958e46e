//! `repair` and `compact`: the two subcommands that change a journal directory, both through the
//! library's own open (so they do exactly what recovery does), after looking with
//! `statejournal::inspect`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use statejournal::codec::record::{decode_record, Op};
use statejournal::inspect::{self, InspectOptions, Inspection, Outcome};
use statejournal::{Journal, JournalOptions, LogOptions, Lsn, RecoveryMode};

use crate::fmt::{bytes, duration, name};
use crate::{existing_dir, CliError, CliResult, EXIT_CORRUPT};

/// `repair DIR`.
#[derive(clap::Args)]
pub struct RepairArgs {
    /// The journal directory.
    dir: PathBuf,
    /// Also truncate the log before damaged *durable* data (point-in-time recovery): every
    /// record from the damage on is set aside (kept in side files), including acknowledged ones.
    #[arg(long)]
    point_in_time: bool,
    /// Show what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `compact DIR`.
#[derive(clap::Args)]
pub struct CompactArgs {
    /// The journal directory.
    dir: PathBuf,
}

/// The journal's number of key groups: from a snapshot's footer, or the log's `Init` record.
pub fn max_key_groups(dir: &Path, i: &Inspection) -> Result<u16, CliError> {
    if let Some(s) = i.snapshots.iter().rev().find(|s| s.max_key_groups > 0) {
        return Ok(s.max_key_groups);
    }
    let mut found = None;
    inspect::read_records(dir, Lsn(1), |r| {
        if let Ok(mut ops) = decode_record(r.payload) {
            if let Some(Ok(Op::Init { max_key_groups })) = ops.next() {
                found = Some(max_key_groups);
            }
        }
        ControlFlow::Break(())
    })
    .map_err(|e| CliError(e.to_string()))?;
    found.ok_or_else(|| {
        CliError(format!(
            "{} holds a log but no journal (no Init record at LSN 1 and no snapshot)",
            dir.display()
        ))
    })
}

/// Options that reopen an existing journal as it is: never create one, its key-group count, and
/// a retention that keeps every checkpoint present.
pub(crate) fn reopen_options(
    dir: &Path,
    i: &Inspection,
    mode: RecoveryMode,
) -> Result<JournalOptions, CliError> {
    Ok(JournalOptions::default()
        .log_options(
            LogOptions::default()
                .create_if_missing(false)
                .recovery_mode(mode),
        )
        .max_key_groups(max_key_groups(dir, i)?)
        .retain_checkpoints(
            i.checkpoints
                .len()
                .max(statejournal::DEFAULT_RETAINED_CHECKPOINTS),
        ))
}

/// `statejournal repair`.
pub fn repair(a: RepairArgs) -> CliResult {
    existing_dir(&a.dir)?;
    let i =
        inspect::inspect(&a.dir, InspectOptions::default()).map_err(|e| CliError(e.to_string()))?;
    if i.in_use {
        return Err(CliError(format!(
            "{} is open in another process (its LOCK is held); stop that process first",
            a.dir.display()
        )));
    }
    if i.is_sound() {
        crate::outln!("{}: sound, nothing to repair", a.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mode = if a.point_in_time {
        RecoveryMode::PointInTime
    } else {
        RecoveryMode::TolerateTornTail
    };
    let mut refused = None;
    crate::outln!("found:");
    for p in &i.problems {
        crate::outln!("  {p}");
        let o = p.outcome(mode);
        let what = match o {
            Outcome::Cuts {
                loses_durable: true,
                ..
            } if !a.point_in_time => {
                refused.get_or_insert(p.clone());
                "recovery would cut records that were durable (acknowledged); not without --point-in-time".into()
            }
            Outcome::Cuts { continues_at, .. } => {
                let to = p
                    .intact_records_after
                    .map_or(String::new(), |(_, b)| format!(" through LSN {b}"));
                format!(
                    "will cut {} from byte offset {} (records from LSN {continues_at}{to}), saved to a *.cut-{} file; later segments renamed *.discarded",
                    bytes(p.bytes),
                    p.offset,
                    p.offset
                )
            }
            Outcome::SetsAside => format!(
                "will set aside {} after the segment's last record (saved to a side file); no record is lost",
                bytes(p.bytes)
            ),
            Outcome::FallsBack => "will rename it *.corrupt and recover from an older snapshot or the log".into(),
            Outcome::Ignores => "left in place (opening ignores it; that checkpoint cannot be restored)".into(),
            _ => {
                refused.get_or_insert(p.clone());
                "cannot be repaired in this mode".into()
            }
        };
        crate::outln!("    -> {what}");
    }
    if let Some(p) = refused {
        let hint = if !a.point_in_time && matches!(p.point_in_time, Outcome::Cuts { .. }) {
            "; rerun with --point-in-time to truncate the log before it (losing the records after it, kept in side files)"
        } else {
            ""
        };
        eprintln!(
            "error: refusing to repair: {} at byte offset {} is {}{hint}",
            p.path.display(),
            p.offset,
            p.kind
        );
        return Ok(ExitCode::from(EXIT_CORRUPT));
    }
    if a.dry_run {
        crate::outln!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = reopen_options(&a.dir, &i, mode)?;
    let journal = Journal::open(&a.dir, opts).map_err(|e| CliError(e.to_string()))?;
    crate::outln!("repaired: {}", journal.recovery());
    journal.close().map_err(|e| CliError(e.to_string()))?;
    let after =
        inspect::inspect(&a.dir, InspectOptions::default()).map_err(|e| CliError(e.to_string()))?;
    if after.is_sound() {
        crate::outln!(
            "{} now verifies: log LSN {}..={}",
            a.dir.display(),
            after.log.first_lsn,
            after.log.last_lsn
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &after.problems {
            eprintln!("still: {p}");
        }
        Ok(ExitCode::from(EXIT_CORRUPT))
    }
}

/// `statejournal compact`.
pub fn compact(a: CompactArgs) -> CliResult {
    existing_dir(&a.dir)?;
    let i = inspect::inspect(&a.dir, InspectOptions::structure_only())
        .map_err(|e| CliError(e.to_string()))?;
    if let Some(p) = i.problems.first() {
        return Err(CliError(format!(
            "{p}; run `statejournal verify` and `statejournal repair` first"
        )));
    }
    let opts = reopen_options(&a.dir, &i, RecoveryMode::TolerateTornTail)?;
    let started = Instant::now();
    let mut journal = Journal::open(&a.dir, opts).map_err(|e| CliError(e.to_string()))?;
    let opened = started.elapsed();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!(
        "compacting {} records after the snapshot at LSN {}",
        journal.recovery().replayed_records,
        journal.recovery().snapshot_lsn
    ));
    bar.enable_steady_tick(Duration::from_millis(100));
    let report = journal.compact();
    bar.finish_and_clear();
    let report = report.map_err(|e| CliError(e.to_string()))?;
    journal.close().map_err(|e| CliError(e.to_string()))?;
    let after = inspect::inspect(&a.dir, InspectOptions::structure_only())
        .map_err(|e| CliError(e.to_string()))?;
    crate::outln!(
        "opened in {}; wrote {} ({}, {} entries) through LSN {}: merged {} log records ({}) into the snapshot at LSN {} in {}",
        duration(opened),
        name(&report.snapshot),
        bytes(report.bytes),
        report.entries,
        report.lsn,
        report.records,
        bytes(report.log_bytes),
        report.base_lsn,
        duration(report.duration)
    );
    crate::outln!(
        "bytes on disk: {} -> {}",
        bytes(i.bytes_on_disk),
        bytes(after.bytes_on_disk)
    );
    if let Some(gc) = report.gc_error {
        crate::outln!(
            "note: cleaning up old files failed ({gc}); the next compaction or checkpoint retries"
        );
    }
    Ok(ExitCode::SUCCESS)
}
