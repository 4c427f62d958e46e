//! The parent process: runs every (workload, engine) pair in a child process of this binary,
//! interleaved, several repetitions; prints and writes the medians, the ratios and a plot.
//!
//! Environment: `SJ_PEERS_REPS` (default 3), `SJ_PEERS_WORKLOADS` (default `W1,W2,W3,W4,W5,W6`),
//! `SJ_PEERS_ENGINES` (default every engine built in), `SJ_PEERS_SCALE` (sizes, default 1),
//! `SJ_PEERS_W3_SECS` (default 3), `SJ_PEERS_W4_ELEMENTS` (default 10 M), `SJ_PEERS_DIR`
//! (scratch space, default `target/peers-tmp`), `SJ_PEERS_OUT` (where `results.md`,
//! `runs.csv` and `peers.svg` go, default `target/peers`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::engine::{Engine, OpenCfg};
use crate::fj::Fj;
use crate::floor::Floor;
use crate::sj::Sj;
use crate::workload::{self, Metrics, Sizes};

/// W3's configurations: (updates per commit, writer threads).
pub const W3_CONFIGS: [(usize, usize); 6] = [(1, 1), (16, 1), (256, 1), (1, 8), (16, 8), (256, 8)];

/// The engines of this build, in the order tables list them.
pub fn engines() -> Vec<&'static str> {
    let mut e = vec!["statejournal", "floor"];
    if cfg!(feature = "rocksdb") {
        e.push("rocksdb");
    }
    e.push("fjall");
    e
}

/// statejournal with compaction off during W1: its directory is W5's log-only case.
const SJ_LOG_ONLY: &str = "statejournal-log-only";

/// The benchmark's entry point: a child when `SJ_PEERS_CHILD` says what to run, else the parent.
pub fn main() {
    if let Ok(spec) = std::env::var("SJ_PEERS_CHILD") {
        child(&spec);
    } else {
        parent();
    }
}

// ---------------------------------------------------------------------------------------------
// Child side.

fn emit(m: &Metrics) {
    let mut line = String::from("SJPEERS");
    for (k, v) in m {
        let _ = write!(line, " {k}={v}");
    }
    println!("{line}");
}

#[cfg(feature = "rocksdb")]
fn rocks_child(workload: &str, dir: &Path, sizes: &Sizes) -> Metrics {
    run_engine::<crate::rocks::Rocks>(workload, dir, sizes)
}

#[cfg(not(feature = "rocksdb"))]
fn rocks_child(_workload: &str, _dir: &Path, _sizes: &Sizes) -> Metrics {
    panic!("this build has no RocksDB (feature `rocksdb` is off)")
}

fn run_engine<E: Engine>(workload: &str, dir: &Path, sizes: &Sizes) -> Metrics {
    match workload {
        "W1" => {
            let (e, m) = workload::w1::<E>(dir, sizes, OpenCfg::default());
            workload::close_and_finish(e, m, dir)
        }
        "W2" => workload::w2::<E>(dir, sizes),
        "W4" => workload::w4::<E>(dir, sizes),
        "W5" => workload::w5::<E>(dir, sizes),
        w if w.starts_with("W3:") => {
            let mut parts = w[3..]
                .split(':')
                .map(|p| p.parse::<usize>().expect("W3:batch:threads"));
            let batch = parts.next().expect("a batch size");
            let threads = parts.next().expect("a thread count");
            workload::w3::<E>(dir, sizes, batch, threads)
        }
        w => panic!("workload {w} is not defined for this engine"),
    }
}

fn child(spec: &str) {
    let mut it = spec.splitn(3, '|');
    let (Some(workload), Some(engine), Some(dir)) = (it.next(), it.next(), it.next()) else {
        panic!("SJ_PEERS_CHILD must be WORKLOAD|ENGINE|DIR, not {spec:?}");
    };
    let dir = Path::new(dir);
    let sizes = Sizes::from_env();
    let m = match (workload, engine) {
        ("W1", SJ_LOG_ONLY) => {
            let cfg = OpenCfg {
                auto_compaction: false,
                ..OpenCfg::default()
            };
            let (e, m) = workload::w1::<Sj>(dir, &sizes, cfg);
            workload::close_and_finish(e, m, dir)
        }
        ("W1", "statejournal") => {
            let (mut sj, m) = workload::w1::<Sj>(dir, &sizes, OpenCfg::default());
            let m = workload::finish(m, dir);
            // Not measured: a snapshot of the final state, which W5 reopens from (close would
            // cancel an automatic compaction still running).
            sj.journal().compact().expect("compact");
            sj.close();
            m
        }
        ("W5", SJ_LOG_ONLY) => workload::w5::<Sj>(dir, &sizes),
        ("W6", "statejournal") => workload::w6::<Sj>(dir, &sizes, |sj: &mut Sj| {
            sj.journal().compact().expect("compact");
        }),
        #[cfg(feature = "rocksdb")]
        ("W6", "rocksdb") => workload::w6::<crate::rocks::Rocks>(dir, &sizes, |_| {}),
        (w, "statejournal") => run_engine::<Sj>(w, dir, &sizes),
        (w, "floor") => run_engine::<Floor>(w, dir, &sizes),
        (w, "fjall") => run_engine::<Fj>(w, dir, &sizes),
        (w, "rocksdb") => rocks_child(w, dir, &sizes),
        (w, e) => panic!("no workload {w} for engine {e}"),
    };
    emit(&m);
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// One child's measurements.
#[derive(Debug, Clone)]
pub struct Run {
    /// Table row: "W1", "W3 b=16 t=8", ...
    pub row: String,
    /// Engine id.
    pub engine: String,
    /// Repetition.
    pub rep: usize,
    /// Named values.
    pub metrics: BTreeMap<String, f64>,
}

fn env_list(name: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s.split(',').map(|x| x.trim().to_string()).collect(),
        _ => default.iter().map(|s| s.to_string()).collect(),
    }
}

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn spawn(workload: &str, engine: &str, dir: &Path) -> Option<BTreeMap<String, f64>> {
    // Each child starts on a quiet disk: without this, the kernel is still writing back the
    // previous child's gigabytes (fjall's W1 leaves 3 GiB dirty) while the next one runs, and
    // the shortest runs pay for it most (statejournal's W1 with compaction off: 2.9 M updates/s
    // after the others' W1, 3.7-4.2 M/s started alone).
    match Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("  sync before {workload} {engine} failed: {status}"),
        Err(e) => eprintln!("  sync before {workload} {engine} failed: {e}"),
    }
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let out = Command::new(exe)
        .env(
            "SJ_PEERS_CHILD",
            format!("{workload}|{engine}|{}", dir.display()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "  {workload} {engine}: child failed ({}): {stdout}",
            out.status
        );
        return None;
    }
    let line = stdout.lines().find_map(|l| l.strip_prefix("SJPEERS"))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

fn parent() {
    let reps: usize = std::env::var("SJ_PEERS_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let workloads = env_list("SJ_PEERS_WORKLOADS", &["W1", "W2", "W3", "W4", "W5", "W6"]);
    let all = engines();
    let engines: Vec<String> = env_list("SJ_PEERS_ENGINES", &all)
        .into_iter()
        .filter(|e| all.contains(&e.as_str()))
        .collect();
    let base = std::env::var_os("SJ_PEERS_DIR")
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p))
        .unwrap_or_else(|| workspace_target().join("peers-tmp"));
    // Relative paths are the workspace root's (cargo runs benchmarks in the package's directory).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::var_os("SJ_PEERS_OUT")
        .map(|p| root.join(p))
        .unwrap_or_else(|| workspace_target().join("peers"));
    std::fs::create_dir_all(&out).expect("create the output directory");
    let sizes = Sizes::from_env();
    let has = |w: &str| workloads.iter().any(|x| x == w);
    eprintln!("peers: {reps} repetitions of {workloads:?} on {engines:?}, {sizes:?}");

    let mut runs: Vec<Run> = Vec::new();
    let mut loads: Vec<f64> = Vec::new();
    let record = |runs: &mut Vec<Run>,
                  loads: &mut Vec<f64>,
                  row: &str,
                  engine: &str,
                  rep: usize,
                  m: Option<BTreeMap<String, f64>>| {
        loads.push(load_average());
        if let Some(metrics) = m {
            let brief: Vec<String> = ["ops_per_sec", "commits_per_sec", "secs", "checkpoint_secs"]
                .iter()
                .filter_map(|k| metrics.get(*k).map(|v| format!("{k}={v:.4e}")))
                .collect();
            eprintln!(
                "  rep {rep} {row:<14} {engine:<24} {} (load {:.2})",
                brief.join(" "),
                load_average()
            );
            runs.push(Run {
                row: row.to_string(),
                engine: engine.to_string(),
                rep,
                metrics,
            });
        }
    };

    for rep in 0..reps {
        // Interleaved: every engine once per repetition, the order rotated so no engine always
        // runs first (or right after the heaviest).
        let mut order = engines.clone();
        let shift = rep % order.len().max(1);
        order.rotate_left(shift);
        let sj = order.iter().any(|e| e == "statejournal");

        if has("W1") || has("W5") {
            let mut w1_engines = order.clone();
            if sj && has("W5") {
                w1_engines.push(SJ_LOG_ONLY.to_string());
            }
            let mut dirs = Vec::new();
            for e in &w1_engines {
                let d = fresh_dir(&base, &format!("w1-{e}"));
                record(&mut runs, &mut loads, "W1", e, rep, spawn("W1", e, &d));
                dirs.push((e.clone(), d));
            }
            if has("W5") {
                for (e, d) in &dirs {
                    record(&mut runs, &mut loads, "W5", e, rep, spawn("W5", e, d));
                }
            }
            for (_, d) in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        if has("W2") {
            for e in &order {
                let d = fresh_dir(&base, &format!("w2-{e}"));
                record(&mut runs, &mut loads, "W2", e, rep, spawn("W2", e, &d));
                let _ = std::fs::remove_dir_all(d);
            }
        }
        if has("W3") {
            for (b, t) in W3_CONFIGS {
                for e in &order {
                    let d = fresh_dir(&base, &format!("w3-{e}"));
                    record(
                        &mut runs,
                        &mut loads,
                        &w3_row(b, t),
                        e,
                        rep,
                        spawn(&format!("W3:{b}:{t}"), e, &d),
                    );
                    let _ = std::fs::remove_dir_all(d);
                }
            }
        }
        if has("W4") {
            for e in &order {
                let d = fresh_dir(&base, &format!("w4-{e}"));
                record(&mut runs, &mut loads, "W4", e, rep, spawn("W4", e, &d));
                let _ = std::fs::remove_dir_all(d);
            }
        }
        if has("W6") {
            for e in order
                .iter()
                .filter(|e| *e == "statejournal" || *e == "rocksdb")
            {
                let d = fresh_dir(&base, &format!("w6-{e}"));
                record(&mut runs, &mut loads, "W6", e, rep, spawn("W6", e, &d));
                let _ = std::fs::remove_dir_all(d);
            }
        }
        // Everything so far, after every repetition: a run cut short still leaves its results.
        let results = Results {
            runs: runs.clone(),
            sizes,
            reps: rep + 1,
            loads: loads.clone(),
        };
        let md = results.markdown();
        if rep + 1 == reps {
            println!("{md}");
        }
        write_file(&out.join("results.md"), &md);
        write_file(&out.join("runs.csv"), &results.csv());
        if let Err(e) = crate::plot::throughput_svg(&results, &out.join("peers.svg")) {
            eprintln!("peers: no plot: {e}");
        }
        eprintln!(
            "peers: {} repetition(s) done, results in {}",
            rep + 1,
            out.display()
        );
    }
}

fn write_file(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("peers: cannot write {}: {e}", path.display());
    }
}

/// W3's row name.
pub fn w3_row(batch: usize, threads: usize) -> String {
    format!("W3 b={batch} t={threads}")
}

/// Every run of a benchmark.
pub struct Results {
    /// The runs.
    pub runs: Vec<Run>,
    /// Their sizes.
    pub sizes: Sizes,
    /// Repetitions asked for.
    pub reps: usize,
    /// The 1-minute load average after each child.
    pub loads: Vec<f64>,
}

/// The 1-minute load average (`/proc/loadavg`), 0 if unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A count with an SI suffix: 1.23 M, 456 k.
pub fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// Bytes in binary units.
pub fn bytes(x: f64) -> String {
    let a = x.abs();
    if a >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", x / (1u64 << 30) as f64)
    } else if a >= (1 << 20) as f64 {
        format!("{:.1} MiB", x / (1 << 20) as f64)
    } else if a >= 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{x:.0} B")
    }
}

fn secs(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.2} s")
    } else {
        format!("{:.1} ms", x * 1e3)
    }
}

impl Results {
    /// Median of `metric` over the runs of (`row`, `engine`).
    pub fn median(&self, row: &str, engine: &str, metric: &str) -> Option<f64> {
        median(self.values(row, engine, metric))
    }

    fn values(&self, row: &str, engine: &str, metric: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.row == row && r.engine == engine)
            .filter_map(|r| r.metrics.get(metric).copied())
            .collect()
    }

    fn range(&self, row: &str, engine: &str, metric: &str, f: fn(f64) -> String) -> String {
        let v = self.values(row, engine, metric);
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if v.len() < 2 {
            String::from("")
        } else {
            format!("{}–{}", f(lo), f(hi))
        }
    }

    fn engines_of(&self, row: &str) -> Vec<String> {
        let mut order: Vec<String> = engines().iter().map(|s| s.to_string()).collect();
        order.push(SJ_LOG_ONLY.to_string());
        order
            .into_iter()
            .filter(|e| self.runs.iter().any(|r| r.row == row && &r.engine == e))
            .collect()
    }

    /// statejournal's median of `metric` divided by `engine`'s.
    pub fn ratio(&self, row: &str, engine: &str, metric: &str) -> Option<f64> {
        Some(self.median(row, "statejournal", metric)? / self.median(row, engine, metric)?)
    }

    fn label(row: &str, engine: &str) -> String {
        match (row, engine) {
            ("W1", SJ_LOG_ONLY) => "statejournal, compaction off".to_string(),
            ("W5", "statejournal") => "statejournal, from a snapshot".to_string(),
            ("W5", SJ_LOG_ONLY) => "statejournal, log only".to_string(),
            (_, e) => e.to_string(),
        }
    }

    fn throughput_table(&self, md: &mut String, rows: &[(&str, &str)]) {
        md.push_str("| workload | engine | ops/s (median) | min–max | MB/s of keys+values | disk written | write amp. | peak RSS | statejournal ÷ engine |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (row, title) in rows {
            for e in self.engines_of(row) {
                let m = |k: &str| self.median(row, &e, k);
                let (Some(ops), Some(mbs)) = (m("ops_per_sec"), m("user_mb_per_sec")) else {
                    continue;
                };
                let disk = m("disk_write_bytes").unwrap_or(0.0);
                let user = m("user_bytes").unwrap_or(1.0);
                let ratio = match self.ratio(row, &e, "ops_per_sec") {
                    Some(r) if e != "statejournal" => format!("**{r:.2}x**"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    md,
                    "| {title} | {} | {} | {} | {mbs:.1} | {} | {:.2} | {} | {ratio} |",
                    Self::label(row, &e),
                    si(ops),
                    self.range(row, &e, "ops_per_sec", si),
                    bytes(disk),
                    disk / user,
                    bytes(m("peak_rss_bytes").unwrap_or(0.0)),
                );
            }
        }
    }

    /// The results as Markdown tables.
    pub fn markdown(&self) -> String {
        let s = &self.sizes;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Medians of {} repetitions, engines interleaved. Keys 16 B; values 100 B (W1, W3, W5, W6), an 8-byte counter (W2), 8-byte list elements (W4). W1/W2: {} ops over {} keys; W4: {} elements over {} lists; W3: {} s per configuration; W6: {} state, {} updates between checkpoints.\n",
            self.reps,
            si(s.ops as f64),
            si(s.keys as f64),
            si(s.list_elements as f64),
            si(s.list_keys as f64),
            s.w3_secs,
            bytes(s.w6_state_bytes as f64),
            si(s.w6_updates as f64)
        );
        if let Some(m) = median(self.loads.clone()) {
            let hi = self.loads.iter().copied().fold(0.0, f64::max);
            let lo = self.loads.iter().copied().fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                md,
                "1-minute load average after each child process: median {m:.2}, range {lo:.2}–{hi:.2} (2 cores; the benchmark itself adds about 1–2).\n"
            );
        }
        md.push_str(
            "### Throughput (W1 update-heavy, W2 read-modify-write, W4 list appends; no sync)\n\n",
        );
        self.throughput_table(
            &mut md,
            &[
                ("W1", "W1 updates"),
                ("W2", "W2 counter RMW"),
                ("W4", "W4 list appends"),
            ],
        );

        md.push_str("\n### W3 durable commits (sync before each commit returns)\n\n");
        md.push_str("| updates/commit | writer threads | engine | commits/s (median) | min–max | updates/s | disk written per commit | peak RSS | statejournal ÷ engine |\n");
        md.push_str("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for (b, t) in W3_CONFIGS {
            let row = w3_row(b, t);
            for e in self.engines_of(&row) {
                let m = |k: &str| self.median(&row, &e, k);
                let Some(c) = m("commits_per_sec") else {
                    continue;
                };
                let ratio = match self.ratio(&row, &e, "commits_per_sec") {
                    Some(r) if e != "statejournal" => format!("**{r:.2}x**"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    md,
                    "| {b} | {t} | {e} | {} | {} | {} | {} | {} | {ratio} |",
                    si(c),
                    self.range(&row, &e, "commits_per_sec", si),
                    si(m("ops_per_sec").unwrap_or(0.0)),
                    bytes(m("disk_bytes_per_commit").unwrap_or(0.0)),
                    bytes(m("peak_rss_bytes").unwrap_or(0.0)),
                );
            }
        }

        md.push_str("\n### W5 recovery: reopen W1's directory, then read every key once (page cache warm)\n\n");
        md.push_str("| engine | reopen | read all keys | total (median) | min–max | records replayed | replay records/s | peak RSS | engine total ÷ statejournal total |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for e in self.engines_of("W5") {
            let m = |k: &str| self.median("W5", &e, k);
            let Some(total) = m("secs") else { continue };
            let speedup = match self.median("W5", "statejournal", "secs") {
                Some(sj) if e != "statejournal" => format!("{:.2}x", total / sj),
                _ => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {speedup} |",
                Self::label("W5", &e),
                secs(m("open_secs").unwrap_or(0.0)),
                secs(m("read_secs").unwrap_or(0.0)),
                secs(total),
                self.range("W5", &e, "secs", secs),
                m("replayed_records").map_or(String::from("–"), si),
                m("replay_records_per_sec").map_or(String::from("–"), si),
                bytes(m("peak_rss_bytes").unwrap_or(0.0)),
            );
        }
        if let (Some(a), Some(b)) = (
            self.median("W5", SJ_LOG_ONLY, "replay_records_per_sec"),
            self.median("W5", "floor", "replay_records_per_sec"),
        ) {
            let _ = writeln!(
                md,
                "\nReplay, statejournal (log only) ÷ floor: **{:.2}x** records/s.",
                a / b
            );
        }

        md.push_str("\n### W6 checkpoint after the updates, on a full state\n\n");
        md.push_str("| engine | checkpoint time (median) | min–max | bytes new to the checkpoint | bytes written during it | fill time | peak RSS |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for e in self.engines_of("W6") {
            let m = |k: &str| self.median("W6", &e, k);
            let Some(t) = m("checkpoint_secs") else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {e} | {} | {} | {} | {} | {} | {} |",
                secs(t),
                self.range("W6", &e, "checkpoint_secs", secs),
                bytes(m("checkpoint_new_bytes").unwrap_or(0.0)),
                bytes(m("checkpoint_written_bytes").unwrap_or(0.0)),
                secs(m("fill_secs").unwrap_or(0.0)),
                bytes(m("peak_rss_bytes").unwrap_or(0.0)),
            );
        }
        md.push_str("\n### Targets\n\n");
        md.push_str(&self.targets());
        md
    }

    fn targets(&self) -> String {
        let mut t = String::new();
        let check = |t: &mut String, what: &str, r: Option<f64>, goal: f64| {
            let Some(r) = r else { return };
            let verdict = if r >= goal { "met" } else { "MISSED" };
            let _ = writeln!(t, "- {what}: {r:.2}x (target ≥ {goal}x): {verdict}");
        };
        for row in ["W1", "W2"] {
            check(
                &mut t,
                &format!("{row} vs RocksDB"),
                self.ratio(row, "rocksdb", "ops_per_sec"),
                10.0,
            );
            check(
                &mut t,
                &format!("{row} vs fjall"),
                self.ratio(row, "fjall", "ops_per_sec"),
                8.0,
            );
        }
        for (b, th) in W3_CONFIGS {
            let row = w3_row(b, th);
            check(
                &mut t,
                &format!("W3 commits/s vs RocksDB, {b} per commit, {th} threads"),
                self.ratio(&row, "rocksdb", "commits_per_sec"),
                1.3,
            );
        }
        if let (Some(a), Some(b)) = (
            self.median("W5", SJ_LOG_ONLY, "replay_records_per_sec"),
            self.median("W5", "floor", "replay_records_per_sec"),
        ) {
            check(
                &mut t,
                "W5 replay records/s vs floor (log only)",
                Some(a / b),
                2.0,
            );
        }
        if let (Some(sj), Some(r)) = (
            self.median("W5", "statejournal", "secs"),
            self.median("W5", "rocksdb", "secs"),
        ) {
            check(
                &mut t,
                "W5 reopen-and-read-all vs RocksDB (speedup)",
                Some(r / sj),
                5.0,
            );
        }
        t
    }

    /// Every measurement as CSV: row, engine, rep, metric, value.
    pub fn csv(&self) -> String {
        let mut s = String::from("row,engine,rep,metric,value\n");
        for r in &self.runs {
            for (k, v) in &r.metrics {
                let _ = writeln!(s, "{},{},{},{k},{v}", r.row, r.engine, r.rep);
            }
        }
        s
    }
}
