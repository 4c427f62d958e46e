//! `checkpoint push|pull|restore` and `checkpoint list --remote`: remote checkpoints from the
//! command line, over `statejournal::remote`.
//!
//! * `push` opens the journal (it needs the directory lock, like any job) and pushes one of its
//!   checkpoints, checked first (every snapshot block, every segment prefix's CRC). It joins the
//!   store's current epoch rather than claiming a new one, so a job pushing to the same store is
//!   not fenced off by an operator's one-off push; `--new-epoch` claims one (fencing every other
//!   writer), to take a store over.
//! * `pull` downloads a remote checkpoint into an empty directory, every object's length, CRC-32
//!   and XXH3 checked, and stops there: the directory is what a job then opens.
//! * `restore` is `pull` and then an open of the directory at the checkpoint (the library's own
//!   recovery: every snapshot block and log record decoded into the state), which it reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use statejournal::inspect::{self, InspectOptions};
use statejournal::remote::{Progress, RemoteOptions, RemoteStore, RestoreReport, Shipper};
use statejournal::{
    CompactionPolicy, Error, Journal, JournalOptions, KeyGroupRange, LogOptions, RecoveryMode,
};

use crate::fmt::{bytes, duration, Table};
use crate::{existing_dir, CliError, CliResult};

/// Transfers larger than this get a progress bar (on a terminal).
const BAR_THRESHOLD: u64 = 4 << 20;

/// `checkpoint push DIR URL`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The journal directory.
    dir: PathBuf,
    /// The store: s3://bucket/prefix, file:///absolute/path, memory:///prefix.
    url: String,
    /// The local checkpoint to push (an id from `checkpoint list DIR`; default: the newest).
    #[arg(long, value_name = "ID")]
    checkpoint: Option<u64>,
    /// Claim a new epoch, fencing off every other writer of the store (their next push fails);
    /// by default the push joins the store's current epoch.
    #[arg(long)]
    new_epoch: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `checkpoint pull|restore DIR URL`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The directory to restore into: empty or missing.
    dir: PathBuf,
    /// The store: s3://bucket/prefix, file:///absolute/path, memory:///prefix.
    url: String,
    /// The remote checkpoint (its number, `#` in `checkpoint list --remote URL`; default: the
    /// newest).
    #[arg(long, value_name = "N")]
    checkpoint: Option<u64>,
    /// Only these key groups, `A..B` (from A up to, not including, B): to scale out, each new
    /// journal takes a part. Only their snapshot blocks are downloaded; the log is downloaded
    /// whole.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    key_groups: Option<KeyGroupRange>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `A..B` as a key-group range.
fn parse_range(s: &str) -> Result<KeyGroupRange, String> {
    let bad = || format!("{s:?} is not a key-group range A..B (e.g. 0..64)");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(format!("{s:?} is empty: A..B needs A < B"));
    }
    Ok(KeyGroupRange::new(a, b))
}

/// The `AWS_*` environment variables, as `object_store`'s S3 builder takes them (lower-cased;
/// names it does not know are ignored by it).
fn aws_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// The store at `url`, with S3 settings from the environment.
pub fn open_store(url: &str, progress: Option<Arc<Progress>>) -> Result<RemoteStore, CliError> {
    if !url.contains("://") {
        return Err(CliError(format!(
            "{url:?} is not a store URL: use s3://bucket/prefix, file:///absolute/path or \
             memory:///prefix"
        )));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(CliError(format!(
                "{url:?}: a file:// URL needs an absolute path (file:///absolute/path)"
            )));
        }
    }
    let store = RemoteStore::from_url_opts(url, aws_env())
        .map_err(|e| CliError(format!("cannot use store {url}: {e}")))?;
    Ok(match progress {
        Some(p) => store.with_options(RemoteOptions::default().progress(p)),
        None => store,
    })
}

/// Runs `work` on a thread of its own while the main thread draws `progress` as a bar on
/// standard error, once the transfer is known to move more than [`BAR_THRESHOLD`] bytes
/// (indicatif draws nothing when standard error is not a terminal).
fn with_bar<T: Send>(
    progress: &Progress,
    verb: &str,
    quiet: bool,
    work: impl FnOnce() -> T + Send,
) -> Result<T, CliError> {
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
    )
    .map_err(|e| CliError(e.to_string()))?
    .progress_chars("=> ");
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let worker = s.spawn(move || {
            // The receiver outlives this thread: the send cannot fail.
            let _ = tx.send(work());
        });
        let bar = ProgressBar::hidden();
        bar.set_style(style);
        bar.set_message(verb.to_string());
        let mut shown = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) => {
                    bar.finish_and_clear();
                    return Ok(v);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let total = progress.total();
                    if !shown && !quiet && total > BAR_THRESHOLD {
                        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(5));
                        shown = true;
                    }
                    bar.set_length(total);
                    bar.set_position(progress.done());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The worker ended without a result: it panicked. Joined here, so that the
                    // scope does not panic in turn.
                    bar.finish_and_clear();
                    let _ = worker.join();
                    return Err(CliError(format!("{verb}: the transfer thread failed")));
                }
            }
        }
    })
}

fn rate(n: u64, d: Duration) -> String {
    format!("{}/s", bytes((n as f64 / d.as_secs_f64().max(1e-6)) as u64))
}

/// `created_millis` as a UTC date and time, `2026-11-26 19:50:50Z`.
fn utc(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `checkpoint list --remote URL`.
pub fn list(url: &str, as_json: bool) -> CliResult {
    let remote = open_store(url, None)?;
    let cps = remote
        .checkpoints_blocking()
        .map_err(|e| CliError(format!("cannot list the checkpoints in {url}: {e}")))?;
    let mut rows = Vec::with_capacity(cps.len());
    for c in cps {
        let m = remote
            .manifest_blocking(c.seq)
            .map_err(|e| CliError(format!("cannot read remote checkpoint #{}: {e}", c.seq)))?;
        rows.push((c, m.log_id, m.created_millis));
    }
    if as_json {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, log_id, created)| {
                json!({
                    "seq": c.seq,
                    "checkpoint_id": c.checkpoint_id,
                    "lsn": c.lsn,
                    "snapshot_lsn": c.snapshot_lsn,
                    "epoch": c.epoch,
                    "log_id": format!("{log_id:#018x}"),
                    "bytes": c.bytes,
                    "created_millis": created,
                })
            })
            .collect();
        let s = serde_json::to_string_pretty(&v)?;
        crate::outln!("{s}");
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        crate::outln!("  none ({url} holds no checkpoint)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "#",
        "local id",
        "LSN",
        "snapshot LSN",
        "epoch",
        "log id",
        "size",
        "created (UTC)",
    ]);
    for (c, log_id, created) in &rows {
        t.row(vec![
            c.seq.to_string(),
            c.checkpoint_id.to_string(),
            c.lsn.to_string(),
            c.snapshot_lsn.to_string(),
            c.epoch.to_string(),
            format!("{log_id:016x}"),
            bytes(c.bytes),
            utc(*created),
        ]);
    }
    crate::out!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// `statejournal checkpoint push`.
pub fn push(a: PushArgs) -> CliResult {
    existing_dir(&a.dir)?;
    let dir = a.dir.display().to_string();
    // The checkpoint is checked before it is published: every snapshot block, every segment
    // prefix's CRC (a push copies bytes; it would publish damage nobody could restore).
    let spin = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spin.set_message(format!("checking {dir}"));
    spin.enable_steady_tick(Duration::from_millis(100));
    let i = inspect::inspect(
        &a.dir,
        InspectOptions {
            verify_snapshots: true,
            verify_checkpoints: true,
            replay_state: false,
        },
    )
    .map_err(|e| CliError(e.to_string()));
    spin.finish_and_clear();
    let i = i?;
    if i.in_use {
        return Err(locked(&dir));
    }
    // Damage an open repairs without losing an acknowledged record (a torn tail after a job was
    // killed) is repaired as the job's own restart would; anything else is refused.
    if !i.opens_without_loss(RecoveryMode::TolerateTornTail) {
        if let Some(p) = i.problems.first() {
            return Err(CliError(format!(
                "{p}; run `statejournal verify` and `statejournal repair` first"
            )));
        }
    }
    let ids: Vec<u64> = i.checkpoints.iter().map(|c| c.id).collect();
    let id = match a.checkpoint {
        Some(id) if ids.contains(&id) => id,
        Some(id) => {
            return Err(CliError(format!(
                "{dir} has no checkpoint {id} (it has {}); see `statejournal checkpoint list {dir}`",
                list_ids(&ids, "")
            )))
        }
        None => *ids.last().ok_or_else(|| {
            CliError(format!(
                "{dir} has no checkpoint to push (a job takes them; see `statejournal checkpoint list {dir}`)"
            ))
        })?,
    };
    if let Some(err) = i
        .checkpoints
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.error.as_ref())
    {
        return Err(CliError(format!(
            "checkpoint {id} of {dir} cannot be restored ({err}); not pushing it"
        )));
    }

    let progress = Arc::new(Progress::default());
    let remote = open_store(&a.url, Some(Arc::clone(&progress)))?;
    let store_err = |e: Error| CliError(format!("{}: {e}", a.url));
    // The push joins the store's current epoch, or claims a new one (above every epoch there).
    let current = remote.current_epoch_blocking().map_err(store_err)?;
    let claim = a.new_epoch || current == 0;
    // Already there, for a push with that epoch (the library's answer, which its push gives
    // too): nothing to push, and no reason to load the journal or to claim an epoch.
    let local = i
        .checkpoints
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.manifest.as_ref());
    if let Some(local) = local {
        let pushing_as = if claim { current + 1 } else { current };
        if let Some(found) = remote
            .find_published_blocking(local, pushing_as)
            .map_err(store_err)?
        {
            say_already_there(id, &dir, &a.url, found.seq);
            return Ok(ExitCode::SUCCESS);
        }
    }
    let epoch = if claim {
        remote.claim_epoch_blocking().map_err(store_err)?
    } else {
        current
    };
    let opts = crate::repair::reopen_options(&a.dir, &i, RecoveryMode::TolerateTornTail)?
        .compaction(CompactionPolicy::manual());
    let mut journal = match Journal::open(&a.dir, opts) {
        Ok(j) => j,
        Err(Error::Locked { .. }) => return Err(locked(&dir)),
        Err(e) => return Err(CliError(format!("cannot open the journal in {dir}: {e}"))),
    };
    let cuts = journal.recovery().log.cuts.len();
    if cuts > 0 {
        crate::outln!(
            "note: opening {dir} cut a torn tail ({cuts} cut{}), as a job's restart would",
            if cuts == 1 { "" } else { "s" }
        );
    }
    let shipper = Shipper::with_epoch(remote, epoch)?;
    let handle = journal
        .push_checkpoint(id, &shipper)
        .map_err(|e| CliError(format!("cannot push checkpoint {id} of {dir}: {e}")))?;
    let report = with_bar(&progress, "uploading", a.quiet, move || handle.wait())?;
    journal.close()?;
    let r = report.map_err(|e| {
        CliError(format!(
            "pushing checkpoint {id} of {dir} to {} failed: {e}",
            a.url
        ))
    })?;
    if r.already_published {
        // Published meanwhile, by another push.
        say_already_there(id, &dir, &a.url, r.seq);
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "pushed checkpoint {id} (LSN {}) of {dir} to {} as remote checkpoint #{} (epoch {}): uploaded {} objects, {} ({} of snapshot), reused {} objects, in {} ({})",
        r.lsn,
        a.url,
        r.seq,
        r.epoch,
        r.objects_uploaded,
        bytes(r.bytes_uploaded),
        bytes(r.snapshot_bytes_uploaded),
        r.objects_reused,
        duration(r.duration),
        rate(r.bytes_uploaded, r.duration)
    );
    Ok(ExitCode::SUCCESS)
}

fn say_already_there(id: u64, dir: &str, url: &str, seq: u64) {
    crate::outln!(
        "checkpoint {id} of {dir} is already in {url} as remote checkpoint #{seq}; nothing to push"
    );
}

fn locked(dir: &str) -> CliError {
    CliError(format!(
        "the journal in {dir} is open in another process (a running job holds its lock): push \
         from the job itself (e.g. `statejournal demo --remote URL`), or stop it first"
    ))
}

/// `3, 4, 5` (each after `mark`), or `none`.
fn list_ids(ids: &[u64], mark: &str) -> String {
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) if ids.len() > 8 => {
            format!("{} in {mark}{first}..={mark}{last}", ids.len())
        }
        (Some(_), Some(_)) => ids
            .iter()
            .map(|i| format!("{mark}{i}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

/// Whether `dir` may receive a restore (empty or missing), checked before anything is downloaded
/// (the library checks it again).
fn check_target(dir: &Path) -> Result<(), CliError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(CliError(format!(
                "{} is not empty: a restore writes a new journal into an empty or missing \
                 directory (move its files away or pick another)",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(CliError(format!("{} is not a directory", dir.display())))
        }
        Err(e) => Err(CliError(format!("cannot read {}: {e}", dir.display()))),
    }
}

fn pull_into(a: &PullArgs, verb: &str) -> Result<RestoreReport, CliError> {
    check_target(&a.dir)?;
    let progress = Arc::new(Progress::default());
    let remote = open_store(&a.url, Some(Arc::clone(&progress)))?;
    let cps = remote
        .checkpoints_blocking()
        .map_err(|e| CliError(format!("cannot list the checkpoints in {}: {e}", a.url)))?;
    let seqs: Vec<u64> = cps.iter().map(|c| c.seq).collect();
    let chosen = match a.checkpoint {
        None => cps.last(),
        Some(n) => cps.iter().find(|c| c.seq == n),
    };
    let Some(chosen) = chosen.cloned() else {
        return Err(CliError(match a.checkpoint {
            None => format!("{} holds no checkpoint", a.url),
            Some(n) => format!(
                "{} holds no checkpoint #{n} (it holds {}); see `statejournal checkpoint list --remote {}`",
                a.url,
                list_ids(&seqs, "#"),
                a.url
            ),
        }));
    };
    let seq = Some(chosen.seq);
    let dir = a.dir.clone();
    let range = a.key_groups;
    let outcome = with_bar(&progress, verb, a.quiet, move || match range {
        None => remote.restore_blocking(seq, &dir),
        Some(r) => remote.restore_key_groups_blocking(seq, r, &dir),
    })?;
    match outcome {
        Ok(report) => Ok(report),
        // The library restores atomically: a failed restore left the directory as it was.
        Err(e) => Err(CliError(format!(
            "remote checkpoint #{} of {} cannot be restored, nothing was left in {}: {e}",
            chosen.seq,
            a.url,
            a.dir.display()
        ))),
    }
}

fn say_pulled(a: &PullArgs, r: &RestoreReport) {
    crate::outln!(
        "restored remote checkpoint #{} (local checkpoint {}, LSN {}{}) from {} into {}: {} objects, {} in {} ({}), every checksum verified",
        r.seq,
        r.checkpoint_id,
        r.lsn,
        a.key_groups
            .map(|k| format!(", key groups {}..{}", k.start(), k.end()))
            .unwrap_or_default(),
        a.url,
        a.dir.display(),
        r.objects,
        bytes(r.bytes),
        duration(r.duration),
        rate(r.bytes, r.duration)
    );
}

/// `statejournal checkpoint pull`.
pub fn pull(a: PullArgs) -> CliResult {
    let p = pull_into(&a, "downloading")?;
    say_pulled(&a, &p);
    crate::outln!(
        "a job opens it at checkpoint {} (`Journal::open_at_checkpoint`{}); `statejournal verify {}` checks it",
        p.checkpoint_id,
        a.key_groups
            .map(|k| format!(
                " with `key_group_range(KeyGroupRange::new({}, {}))`",
                k.start(),
                k.end()
            ))
            .unwrap_or_default(),
        a.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `statejournal checkpoint restore`: pull, then open at the checkpoint.
pub fn restore(a: PullArgs) -> CliResult {
    let p = pull_into(&a, "downloading")?;
    say_pulled(&a, &p);
    let id = p.checkpoint_id;
    let dir = a.dir.display().to_string();
    let opened = || -> Result<_, CliError> {
        let i = inspect::inspect(&a.dir, InspectOptions::structure_only())?;
        let m = i
            .checkpoints
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.manifest.clone())
            .ok_or_else(|| {
                CliError(format!(
                    "the restored manifest of checkpoint {id} is unreadable"
                ))
            })?;
        let range = KeyGroupRange::new(m.kg_start, m.kg_end);
        let opts = JournalOptions::default()
            .log_options(LogOptions::default().create_if_missing(false))
            .max_key_groups(m.max_key_groups)
            .key_group_range(range)
            .compaction(CompactionPolicy::manual());
        let started = Instant::now();
        let mut j = Journal::open_at_checkpoint(&a.dir, id, opts)?;
        let took = started.elapsed();
        let st = j.state_stats()?;
        let states = j.recovery().snapshot_entries;
        let replayed = j.recovery().replayed_records;
        j.close()?;
        Ok((range, m.max_key_groups, st, states, replayed, took))
    };
    let (range, max, st, snap_entries, replayed, took) = opened().map_err(|CliError(e)| {
        CliError(format!(
            "the files of checkpoint {id} are in {dir}, but opening them failed: {e}"
        ))
    })?;
    crate::outln!(
        "opened {dir} at checkpoint {id} in {}: {} entries ({}) in key groups {}..{} of {max} ({snap_entries} from the snapshot, {replayed} log records replayed); a job opens it with `Journal::open_at_checkpoint` and the same key groups",
        duration(took),
        st.entries,
        bytes(st.payload_bytes),
        range.start(),
        range.end()
    );
    Ok(ExitCode::SUCCESS)
}
