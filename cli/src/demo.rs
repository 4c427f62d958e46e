//! `demo`: a write-heavy streaming job with exactly-once checkpoints.
//!
//! The job counts clicks per user per 10-second event-time tumbling window over a deterministic
//! generated stream (events arrive up to 2 s out of order; the watermark trails the newest event
//! time by 2 s, so no event is late). Per event, one atomic write batch updates three states in
//! the window's namespace: `clicks` (value: the user's count), `pages` (list: the pages clicked)
//! and `page_counts` (map: clicks per page). A window fires when the watermark passes its end: a
//! timer (`timers`, value state per window) is found, the window's keys are iterated, each
//! user's three states are checked against each other and cleared, and the window's result —
//! clicks, users and an order-independent digest of every (user, count) — goes to the `results`
//! state, the job's sink.
//!
//! The source offset lives in the journal too (`source`), set right before every checkpoint, so
//! the state and the offset are one atomic checkpoint. Killed at any moment (Ctrl-C, SIGKILL) and
//! started again, the job restores its newest checkpoint with `Journal::open_at_checkpoint` —
//! everything after it is discarded — and reprocesses from the checkpointed offset: every event
//! affects the results exactly once. At the end it recomputes every window's result straight
//! from the generator, compares, and prints the verdict (exit code 1 on a mismatch).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use statejournal::remote::{PushHandle, Shipper};
use statejournal::{Journal, JournalOptions, ListState, MapState, ValueState};

use crate::fmt::{bytes, count, duration};
use crate::stream::{digest_of, event, EVENTS_PER_EVENT_SEC, MAX_DELAY_MS, SEED, WINDOW_MS};
use crate::{CliError, CliResult};

/// `demo [--dir DIR] [--events N] [--checkpoint-every SECS] [--remote URL]`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of the job's journal (created if missing).
    #[arg(long, default_value = "statejournal-demo")]
    dir: PathBuf,
    /// Events in the stream.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Seconds between checkpoints (wall clock).
    #[arg(long, default_value_t = 1.0)]
    checkpoint_every: f64,
    /// Delete a previous run's journal in DIR first (only if DIR holds a statejournal journal).
    #[arg(long)]
    fresh: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also push every checkpoint to this store (s3://…, file:///…, memory:///…; see
    /// `statejournal checkpoint push --help`). A DIR without a journal starts from the store's
    /// newest checkpoint: the job moves to another machine.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
}

/// Pushes the job's checkpoints to a store as it takes them.
struct Pusher {
    url: String,
    shipper: Shipper,
    /// Pushes started and not yet waited for, oldest first.
    pending: VecDeque<PushHandle>,
    pushed: u64,
    bytes: u64,
    last_seq: u64,
}

impl Pusher {
    /// Waits for the oldest push in flight.
    fn wait_one(&mut self) -> Result<(), CliError> {
        if let Some(h) = self.pending.pop_front() {
            let id = h.checkpoint_id();
            let r = h.wait().map_err(|e| {
                CliError(format!(
                    "pushing checkpoint {id} to {} failed: {e}",
                    self.url
                ))
            })?;
            self.pushed += 1;
            self.bytes += r.bytes_uploaded;
            self.last_seq = r.seq;
        }
        Ok(())
    }

    /// Starts pushing checkpoint `id`, after collecting the pushes that ended; at most two are
    /// in flight (a slow store slows the job down rather than piling up pinned checkpoints).
    fn push(&mut self, j: &mut Journal, id: u64) -> Result<(), CliError> {
        while self.pending.front().is_some_and(PushHandle::is_finished) || self.pending.len() >= 2 {
            self.wait_one()?;
        }
        let h = j.push_checkpoint(id, &self.shipper)?;
        self.pending.push_back(h);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CliError> {
        while !self.pending.is_empty() {
            self.wait_one()?;
        }
        Ok(())
    }
}

/// The watermark after event `i`: no later event has an earlier time.
fn watermark_after(i: u64) -> u64 {
    (i * 1000 / EVENTS_PER_EVENT_SEC).saturating_sub(MAX_DELAY_MS)
}

/// The sink's record of a fired window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Clicks in the window.
    pub clicks: u64,
    /// Users with at least one click.
    pub users: u64,
    /// Sum over users of a hash of (user, their count): any lost or doubled event changes it.
    pub digest: u64,
}

/// The job's configuration, stored so that a restart with other parameters is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Config {
    events: u64,
    seed: u64,
}

/// The job's state handles.
struct States {
    clicks: ValueState<u32, u64, u64>,
    pages: ListState<u32, u16, u64>,
    page_counts: MapState<u32, u16, u32, u64>,
    timers: ValueState<u64, u8>,
    results: ValueState<u64, WindowResult>,
    source: ValueState<u8, u64>,
    config: ValueState<u8, Config>,
}

fn register(j: &mut Journal) -> statejournal::Result<States> {
    Ok(States {
        clicks: j.value_state::<u32, u64>("clicks")?.in_namespace(),
        pages: j.list_state::<u32, u16>("pages")?.in_namespace(),
        page_counts: j.map_state::<u32, u16, u32>("page_counts")?.in_namespace(),
        timers: j.value_state("timers")?,
        results: j.value_state("results")?,
        source: j.value_state("source")?,
        config: j.value_state("config")?,
    })
}

/// Checkpoint ids present in `dir`, newest first.
fn checkpoint_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    statejournal::format::parse_manifest_file_name(&e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

fn options() -> JournalOptions {
    // Buffered: a checkpoint syncs the log itself; between checkpoints nothing needs to be
    // durable, because a restart goes back to the last checkpoint anyway.
    JournalOptions::default()
}

/// Opens the job's journal: the newest checkpoint that restores, or a fresh state.
fn open_job(dir: &Path, say: &dyn Fn(String)) -> Result<(Journal, Option<u64>), CliError> {
    for id in checkpoint_ids(dir) {
        match Journal::open_at_checkpoint(dir, id, options()) {
            Ok(j) => return Ok((j, Some(id))),
            Err(e @ statejournal::Error::Locked { .. }) => return Err(e.into()),
            Err(e) => say(format!(
                "checkpoint {id} cannot be restored ({e}); trying an older one"
            )),
        }
    }
    // No checkpoint: start from an empty state (a run killed before its first checkpoint may
    // have left records; they are cleared, in the log, like any other mutation).
    let j = Journal::open(dir, options())?;
    Ok((j, None))
}

/// What the stream's windows must hold, computed straight from the generator.
pub fn expected_results(events: u64) -> BTreeMap<u64, WindowResult> {
    let mut per: HashMap<(u64, u32), u64> = HashMap::new();
    for i in 0..events {
        let e = event(i);
        *per.entry((e.time_ms / WINDOW_MS, e.user)).or_default() += 1;
    }
    let mut out: BTreeMap<u64, WindowResult> = BTreeMap::new();
    for ((w, user), n) in per {
        let r = out.entry(w).or_default();
        r.clicks += n;
        r.users += 1;
        r.digest = r.digest.wrapping_add(digest_of(user, n));
    }
    out
}

/// Fires window `w`: checks and clears each user's states, records the result.
fn fire(j: &mut Journal, s: &States, w: u64) -> Result<WindowResult, CliError> {
    let mut users: Vec<u32> = s
        .clicks
        .keys(j)?
        .into_iter()
        .filter(|&(_, ns)| ns == w)
        .map(|(u, _)| u)
        .collect();
    users.sort_unstable();
    let mut r = WindowResult::default();
    for user in users {
        let n = s.clicks.get_in(j, &user, &w)?.unwrap_or(0);
        let pages = s.pages.get_in(j, &user, &w)?;
        let per_page: u64 = s
            .page_counts
            .entries_in(j, &user, &w)?
            .iter()
            .map(|&(_, c)| u64::from(c))
            .sum();
        if pages.len() as u64 != n || per_page != n {
            return Err(CliError(format!(
                "window {w}, user {user}: {n} clicks but {} pages listed and {per_page} counted per page: the states disagree",
                pages.len()
            )));
        }
        r.clicks += n;
        r.users += 1;
        r.digest = r.digest.wrapping_add(digest_of(user, n));
        s.clicks.clear_in(j, &user, &w)?;
        s.pages.clear_in(j, &user, &w)?;
        s.page_counts.clear_in(j, &user, &w)?;
    }
    s.results.set(j, &w, &r)?;
    s.timers.clear(j, &w)?;
    Ok(r)
}

/// `statejournal demo`.
pub fn run(a: Args) -> CliResult {
    if !a.checkpoint_every.is_finite() || a.checkpoint_every <= 0.0 {
        return Err(CliError(
            "--checkpoint-every must be a positive number of seconds".into(),
        ));
    }
    let dir = a.dir.clone();
    if a.fresh && dir.exists() {
        let is_journal = dir.join(statejournal::format::META_FILE).exists()
            || std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !is_journal {
            return Err(CliError(format!(
                "--fresh: {} exists but holds no statejournal journal; not deleting it",
                dir.display()
            )));
        }
        let quick = statejournal::inspect::InspectOptions::structure_only();
        if statejournal::inspect::inspect(&dir, quick).is_ok_and(|i| i.in_use) {
            return Err(CliError(format!(
                "--fresh: the journal in {} is open in another process; not deleting it",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| CliError(format!("--fresh: removing {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError(format!("creating {}: {e}", dir.display())))?;
    let quiet = a.quiet;
    let say = |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    crate::outln!(
        "statejournal demo: clicks per user per 10 s window over {} events, a checkpoint every {} s, in {}{}",
        a.events,
        a.checkpoint_every,
        dir.display(),
        a.remote
            .as_ref()
            .map(|u| format!(", pushed to {u}"))
            .unwrap_or_default()
    );
    let mut pusher = match &a.remote {
        None => None,
        Some(url) => {
            let remote = crate::remote::open_store(url, None)?;
            let fresh_dir = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
            if fresh_dir && !a.fresh {
                // No journal here: start where the store's newest checkpoint left off.
                let cps = remote
                    .checkpoints_blocking()
                    .map_err(|e| CliError(format!("{url}: {e}")))?;
                if !cps.is_empty() {
                    let r = remote.restore_blocking(None, &dir).map_err(|e| {
                        CliError(format!(
                            "restoring the newest checkpoint of {url} into {} failed: {e}",
                            dir.display()
                        ))
                    })?;
                    crate::outln!(
                        "restored remote checkpoint #{} (local checkpoint {}) from {url}: {} in {}",
                        r.seq,
                        r.checkpoint_id,
                        bytes(r.bytes),
                        duration(r.duration)
                    );
                }
            }
            // A new epoch: this run fences off any earlier run still pushing to the store.
            let shipper = Shipper::new(remote).map_err(|e| CliError(format!("{url}: {e}")))?;
            Some(Pusher {
                url: url.clone(),
                shipper,
                pending: VecDeque::new(),
                pushed: 0,
                bytes: 0,
                last_seq: 0,
            })
        }
    };

    let started = Instant::now();
    let (mut j, restored) = open_job(&dir, &say)?;
    let recovery_time = started.elapsed();
    let s = register(&mut j)?;
    let config = Config {
        events: a.events,
        seed: SEED,
    };
    let mut offset = 0u64;
    match restored {
        Some(id) => {
            if let Some(c) = s.config.get(&mut j, &0)? {
                if c != config {
                    return Err(CliError(format!(
                        "{} holds a demo run over {} events; run with --events {} to resume it, or --fresh to start over",
                        dir.display(),
                        c.events,
                        c.events
                    )));
                }
            }
            offset = s.source.get(&mut j, &0)?.unwrap_or(0);
            let rec = j.recovery();
            crate::outln!(
                "resumed from checkpoint {id} at source offset {offset} in {} (snapshot of {} entries, {} records replayed, {} set aside)",
                duration(recovery_time),
                rec.snapshot_entries,
                rec.replayed_records,
                rec.log.cuts.len() + rec.log.discarded_segments.len() + rec.set_aside.len()
            );
        }
        None => {
            // Clear whatever a run killed before its first checkpoint left, and checkpoint the
            // empty state with offset 0.
            s.clicks.clear_all(&mut j)?;
            s.pages.clear_all(&mut j)?;
            s.page_counts.clear_all(&mut j)?;
            s.timers.clear_all(&mut j)?;
            s.results.clear_all(&mut j)?;
            s.source.set(&mut j, &0, &0)?;
            s.config.set(&mut j, &0, &config)?;
            let id = j.checkpoint()?.id;
            if let Some(p) = pusher.as_mut() {
                p.push(&mut j, id)?;
            }
            crate::outln!("started a new run (opened in {})", duration(recovery_time));
        }
    }

    // Timers pending in the state (windows with data not fired yet).
    let mut timers: BTreeSet<u64> = s
        .timers
        .keys(&mut j)?
        .into_iter()
        .map(|(w, ())| w)
        .collect();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b =
            ProgressBar::with_draw_target(Some(a.events), ProgressDrawTarget::stderr_with_hz(5));
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} events, {per_sec} {msg}",
            )
            .map_err(|e| CliError(e.to_string()))?
            .progress_chars("=> "),
        );
        b.set_position(offset);
        b.reset_eta();
        b
    };
    let every = Duration::from_secs_f64(a.checkpoint_every);
    let run_started = Instant::now();
    let first_offset = offset;
    let mut checkpoints = 0u64;
    let mut checkpoint_time = Duration::ZERO;
    let mut last_checkpoint = Instant::now();
    let mut last_id = restored.unwrap_or(0);
    let mut fired = 0u64;
    let set_msg = |j: &mut Journal, id: u64, at: u64| -> Result<(), CliError> {
        let st = j.state_stats()?;
        bar.set_message(format!(
            "| state {} ({} entries) | checkpoint {id} @ {}",
            bytes(st.payload_bytes),
            count(st.entries as f64),
            count(at as f64)
        ));
        Ok(())
    };
    set_msg(&mut j, last_id, offset)?;
    while offset < a.events {
        let e = event(offset);
        let w = e.time_ms / WINDOW_MS;
        if timers.insert(w) {
            s.timers.set(&mut j, &w, &1)?;
        }
        j.write_batch(|j| {
            s.clicks
                .update_in(j, &e.user, &w, |n| Some(n.unwrap_or(0) + 1))?;
            s.pages.add_in(j, &e.user, &w, &e.page)?;
            let c = s.page_counts.get_in(j, &e.user, &w, &e.page)?.unwrap_or(0);
            s.page_counts.put_in(j, &e.user, &w, &e.page, &(c + 1))
        })?;
        offset += 1;
        // Timers: fire every window whose end the watermark has passed.
        let wm = watermark_after(offset - 1);
        while let Some(&t) = timers.first() {
            if (t + 1) * WINDOW_MS > wm {
                break;
            }
            fire(&mut j, &s, t)?;
            timers.remove(&t);
            fired += 1;
        }
        if offset.is_multiple_of(4096) {
            bar.set_position(offset);
            if last_checkpoint.elapsed() >= every {
                let t = Instant::now();
                s.source.set(&mut j, &0, &offset)?;
                last_id = j.checkpoint()?.id;
                if let Some(p) = pusher.as_mut() {
                    p.push(&mut j, last_id)?;
                }
                checkpoint_time += t.elapsed();
                checkpoints += 1;
                last_checkpoint = Instant::now();
                set_msg(&mut j, last_id, offset)?;
            }
        }
    }
    // End of the stream: the watermark goes to infinity and fires every remaining window.
    let pending: Vec<u64> = timers.iter().copied().collect();
    for t in pending {
        fire(&mut j, &s, t)?;
        fired += 1;
    }
    timers.clear();
    s.source.set(&mut j, &0, &offset)?;
    if offset > first_offset || last_id == 0 {
        last_id = j.checkpoint()?.id;
        checkpoints += 1;
        if let Some(p) = pusher.as_mut() {
            p.push(&mut j, last_id)?;
        }
    }
    if let Some(p) = pusher.as_mut() {
        p.finish()?;
    }
    let elapsed = run_started.elapsed();
    bar.finish_and_clear();

    // The exactly-once check: the sink's results against a straight recomputation.
    let mut got: BTreeMap<u64, WindowResult> = BTreeMap::new();
    for (w, ()) in s.results.keys(&mut j)? {
        if let Some(r) = s.results.get(&mut j, &w)? {
            got.insert(w, r);
        }
    }
    let stats = j.state_stats()?;
    let io = j.io_stats();
    j.close()?;
    let want = expected_results(a.events);

    let processed = offset - first_offset;
    let rate = processed as f64 / elapsed.as_secs_f64().max(1e-9);
    crate::outln!("\nwindow            clicks    users  digest");
    let show_all = want.len() <= 40;
    for (w, r) in &want {
        if !show_all && *w >= 5 && *w + 5 < want.len() as u64 {
            continue;
        }
        let mark = if got.get(w) == Some(r) {
            "ok"
        } else {
            "MISMATCH"
        };
        let g = got.get(w).copied().unwrap_or_default();
        crate::outln!(
            "window {:>4} [{:>5}s, {:>5}s) {:>8} {:>8}  {:016x} {mark}",
            w,
            w * WINDOW_MS / 1000,
            (w + 1) * WINDOW_MS / 1000,
            g.clicks,
            g.users,
            g.digest
        );
    }
    if !show_all {
        crate::outln!("({} windows in all; middle ones not shown)", want.len());
    }
    crate::outln!(
        "\nprocessed {} events in {} this run: {} events/s ({} state updates/s); {} windows fired",
        processed,
        duration(elapsed),
        count(rate),
        count(rate * 3.0),
        fired
    );
    crate::outln!(
        "checkpoints: {} this run (last id {last_id}), {} spent in them; recovery time at start: {}",
        checkpoints,
        duration(checkpoint_time),
        duration(recovery_time)
    );
    crate::outln!(
        "state at the end: {} entries, {}; this run wrote {} of log, {} of snapshots ({} compactions); write amplification {:.2}",
        stats.entries,
        bytes(stats.payload_bytes),
        bytes(io.log_bytes),
        bytes(io.snapshot_bytes),
        io.compactions,
        io.write_amplification()
    );
    if let Some(p) = &pusher {
        crate::outln!(
            "remote: pushed {} checkpoints to {} this run ({} uploaded); the newest is remote checkpoint #{}",
            p.pushed,
            p.url,
            bytes(p.bytes),
            p.last_seq
        );
    }
    let total_clicks: u64 = got.values().map(|r| r.clicks).sum();
    if got == want {
        crate::outln!(
            "exactly-once: OK — all {} windows ({} clicks) equal a straight recomputation from the generator",
            want.len(),
            total_clicks
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let bad = want.iter().filter(|(w, r)| got.get(w) != Some(r)).count()
            + got.keys().filter(|w| !want.contains_key(w)).count();
        crate::outln!(
            "exactly-once: FAILED — {bad} of {} windows differ from a straight recomputation ({} clicks counted, {} events in the stream)",
            want.len(),
            total_clicks,
            a.events
        );
        Ok(ExitCode::from(crate::EXIT_ERROR))
    }
}
