//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

/// Small segments so tests roll often.
pub const SMALL_SEGMENT: u64 = 8192;

pub fn opts() -> LogOptions {
    LogOptions::default().segment_size(SMALL_SEGMENT)
}

pub fn sync_opts() -> LogOptions {
    opts().durability(Durability::Sync)
}

pub fn mode(m: RecoveryMode) -> LogOptions {
    opts().recovery_mode(m)
}

/// A payload that encodes its index, of varying length, so reordering or loss is visible.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i as usize * 7) % 90;
    let mut v = i.to_le_bytes().to_vec();
    v.resize(8 + len, (i % 251) as u8);
    v
}

/// Every record from LSN 1 as (lsn, payload).
pub fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.read_from(Lsn(0))
        .map(|r| {
            let r = r.expect("read");
            (r.lsn.get(), r.payload.to_vec())
        })
        .collect()
}

/// Segment files of a log directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(statejournal::format::parse_segment_file_name)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

/// Copies the files of a journal or log directory (not its `LOCK`), as a crash or a backup would
/// leave them for another process to open.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != statejournal::format::LOCK_FILE {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Writes `n` records (payload(1..=n)) with a durable commit every `every` records.
pub fn write_records(dir: &Path, n: u64, every: u64) {
    let log = Log::open(dir, sync_opts()).unwrap();
    for i in 1..=n {
        assert_eq!(log.append(&payload(i)).unwrap(), Lsn(i));
        if i % every == 0 {
            log.commit().unwrap();
        }
    }
    log.commit().unwrap();
}

/// Runs this test binary again, as a child process that runs only `test` with the environment
/// variables `envs`, and returns the one line it printed after `report` (the child's verdict).
/// Fails if the child fails or does not print exactly one such line.
pub fn run_test_in_child(test: &str, envs: &[(&str, &std::ffi::OsStr)], report: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", test, "--nocapture"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let reports: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(report))
        .map(str::trim)
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "expected one report line from child {test}:\n{stdout}\n{stderr}"
    );
    reports[0].to_string()
}

/// Runs `f` on its own thread and fails if it does not finish within a generous deadline, so a
/// concurrency bug that deadlocks, spins forever or leaves a committer waiting fails the test
/// instead of hanging it.
pub fn within_deadline(f: impl FnOnce() + Send + 'static) {
    use std::sync::mpsc::{self, RecvTimeoutError};
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => worker.join().unwrap(),
        // `f` panicked: report its panic.
        Err(RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("no progress for 60 s: deadlock, livelock or a hung committer")
        }
    }
}

/// Polls `cond` until it holds, failing after a generous deadline.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// Lowers this process's file size limit and ignores SIGXFSZ, so writing or allocating past the
/// limit fails with EFBIG instead of killing the process.
#[allow(unsafe_code)] // the crate denies unsafe code; these libc calls have no safe wrapper
pub fn limit_file_size(bytes: u64) {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code, so there is no
    // async-signal-safety concern; the arguments are a valid signal number and SIG_IGN.
    let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    assert_ne!(previous, libc::SIG_ERR, "signal(SIGXFSZ, SIG_IGN) failed");
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_cur = bytes as libc::rlim_t;
    // SAFETY: `lim` is a valid, initialized `rlimit` that outlives the call; the kernel only reads
    // it (a soft limit above the hard one would be an EINVAL error, not undefined behaviour).
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}
