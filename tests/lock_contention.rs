//! One log directory, one writer: while a `Log` is open, every other `Log::open` of the same
//! directory — from this process or from another one — fails at once with `Error::Locked` naming
//! the `LOCK` file, a failed attempt does not weaken the holder's lock, and as soon as the holder is
//! dropped the directory opens normally (and the holder's records are there).
//!
//! The cross-process half re-executes this test binary (`--exact <test> --nocapture`) with an
//! environment variable telling the child to play the "other process": it tries to open the log
//! and reports what happened on stdout.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::*;
use statejournal::format::LOCK_FILE;
use statejournal::{Error, Log, Lsn};

/// Tells a re-executed test binary that it is the child, and which directory to open.
const CHILD_DIR_ENV: &str = "STATEJOURNAL_LOCK_CONTENTION_CHILD_DIR";
/// Prefix of the one line the child prints for the parent.
const REPORT: &str = "LOCK-CONTENTION-CHILD:";
/// Name of the test that plays both roles (must match the function below).
const CROSS_PROCESS_TEST: &str = "another_process_is_locked_out_until_the_holder_drops_the_log";

/// The tests of this binary run one at a time. A child process spawned by one test inherits every
/// open file of this process between its fork and its exec (`O_CLOEXEC` closes them only at the
/// exec), including the LOCK file of a log another test just dropped, and that test's reopen
/// failed with `Locked` now and then, until the log released its lock explicitly when dropped
/// (`a_child_holding_a_copy_of_the_lock_descriptor_does_not_keep_the_directory_locked` in
/// `lock_contention.rs`). The serialization predates that fix and is kept as a second guard.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bound on how long an open that should fail "at once" may take: not a timing assertion (the
/// open takes microseconds), only a guard so a blocking lock fails the test instead of hanging it.
const AT_ONCE: Duration = Duration::from_secs(10);

/// Opens `dir` on another thread and returns the result, failing if the open blocks.
fn open_without_blocking(dir: &Path) -> Result<Log, Error> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Log::open(&dir, opts()));
    });
    rx.recv_timeout(AT_ONCE)
        .expect("Log::open blocked on a held lock instead of failing with Error::Locked")
}

fn assert_locked(result: Result<Log, Error>, dir: &Path) {
    let lock_path = dir.join(LOCK_FILE);
    match result {
        Err(err @ Error::Locked { .. }) => {
            assert_eq!(err.path(), Some(lock_path.as_path()), "{err}");
            assert!(err.to_string().contains(LOCK_FILE), "{err}");
        }
        Err(other) => panic!(
            "expected Error::Locked for {}, got {other:?}",
            dir.display()
        ),
        Ok(_) => panic!("a second open of {} succeeded", dir.display()),
    }
}

#[test]
fn second_open_in_the_same_process_is_locked_until_the_first_is_dropped() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(log.append(b"held").unwrap(), Lsn(1));

    assert_locked(open_without_blocking(dir.path()), dir.path());
    // The same directory spelled differently is the same lock.
    let dotted: PathBuf = dir.path().join(".");
    assert_locked(open_without_blocking(&dotted), &dotted);
    // A failed attempt (which opened and closed the LOCK file) did not release the holder's lock.
    assert_locked(open_without_blocking(dir.path()), dir.path());

    // The holder is unaffected.
    assert_eq!(log.append(b"still held").unwrap(), Lsn(2));
    drop(log);

    let log = open_without_blocking(dir.path()).expect("open after the holder was dropped");
    assert_eq!(
        read_all(&log),
        [(1, b"held".to_vec()), (2, b"still held".to_vec())]
    );
    // And the new holder locks others out in turn.
    assert_locked(open_without_blocking(dir.path()), dir.path());
    drop(log);
    // Closing (rather than dropping) releases the lock too.
    let log = Log::open(dir.path(), opts()).unwrap();
    log.close().unwrap();
    Log::open(dir.path(), opts()).expect("open after close");
}

/// The child's side: open the log; report `Locked <path>`, or `Opened <lsn>` after appending one
/// record and closing, or `Other <error>`.
fn child(dir: &Path) {
    let line = match Log::open(dir, opts()) {
        Ok(log) => {
            let lsn = log.append(b"from the child").expect("child append");
            log.close().expect("child close");
            format!("Opened {lsn}")
        }
        Err(Error::Locked { path }) => format!("Locked {}", path.display()),
        Err(other) => format!("Other {other}"),
    };
    println!("{REPORT} {line}");
}

/// Runs the child in a new process and returns its report line (after the prefix).
fn run_child(dir: &Path) -> String {
    run_test_in_child(
        CROSS_PROCESS_TEST,
        &[(CHILD_DIR_ENV, dir.as_os_str())],
        REPORT,
    )
}

#[test]
fn another_process_is_locked_out_until_the_holder_drops_the_log() {
    let _serial = serial();
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(log.append(b"parent").unwrap(), Lsn(1));

    let report = run_child(dir.path());
    let expected = format!("Locked {}", dir.path().join(LOCK_FILE).display());
    assert_eq!(report, expected, "while the parent holds the log");
    // The child's failed attempt changed nothing for the holder.
    assert_eq!(log.append(b"parent again").unwrap(), Lsn(2));

    drop(log);
    let report = run_child(dir.path());
    assert_eq!(report, "Opened 3", "after the parent dropped the log");

    // The child released the lock when it exited, and its record follows the parent's.
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(
        read_all(&log),
        [
            (1, b"parent".to_vec()),
            (2, b"parent again".to_vec()),
            (3, b"from the child".to_vec()),
        ]
    );
}

/// A process that forks while a log is open hands its child a copy of the `LOCK` descriptor
/// (`O_CLOEXEC` closes it only at the child's exec, and a child that never execs keeps it). An
/// `flock` belongs to the open file, not the descriptor, so closing the log's copy did not
/// release it: until the child exec'd or exited, the directory stayed locked, and a reopen in
/// this process or another failed with `Locked` (the cause of flaky `Locked` errors in tests that
/// spawn processes from other threads). The log now unlocks the file when it is dropped or closed.
/// Here the child is `sleep`, made to keep the descriptor across its exec.
#[test]
fn a_child_holding_a_copy_of_the_lock_descriptor_does_not_keep_the_directory_locked() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for close in [false, true] {
        let log = Log::open(dir.path(), opts()).unwrap();
        log.append(b"x").unwrap();
        let lock_path = dir.path().join(LOCK_FILE).canonicalize().unwrap();
        let fd = open_descriptor_of(&lock_path);
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("60");
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the child between fork and exec and calls only `fcntl`,
        // which is async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn sleep");
        if close {
            log.close().unwrap();
        } else {
            drop(log);
        }
        let reopened = open_without_blocking(dir.path());
        let _ = child.kill();
        let _ = child.wait();
        let log = reopened.unwrap_or_else(|e| {
            panic!("reopen while a child holds a copy of the lock descriptor (close: {close}): {e}")
        });
        log.close().unwrap();
    }
}

/// The descriptor number this process has open on `path` (found through /proc/self/fd).
fn open_descriptor_of(path: &Path) -> i32 {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(path) {
            return entry.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no descriptor open on {}", path.display())
}
