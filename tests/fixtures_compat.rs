//! Logs written by earlier format versions stay readable. `tests/fixtures/log-v1/` was written by
//! format version 1 and is committed; this test opens a copy in strict mode and checks every record.
//! Every later format change must keep it readable (or refuse it with a clear "unsupported version"
//! error, by a documented decision). Regenerate only when adding a new fixture version:
//! `SJ_WRITE_FIXTURE=1 cargo test --all-features --test fixtures_compat` (writes log-v1 afresh).

mod common;

use std::path::{Path, PathBuf};

use common::payload;
use statejournal::{Durability, Log, LogOptions, Lsn, RecoveryMode};

const RECORDS: u64 = 60;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v1")
}

fn write_fixture(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        dir,
        LogOptions::default()
            .segment_size(4096)
            .durability(Durability::Sync),
    )
    .unwrap();
    for i in 1..=RECORDS {
        log.append(&payload(i)).unwrap();
        if i % 7 == 0 {
            log.commit().unwrap();
        }
    }
    log.close().unwrap();
    std::fs::remove_file(dir.join(statejournal::format::LOCK_FILE)).unwrap();
}

#[test]
fn format_v1_fixture_still_opens() {
    if std::env::var_os("SJ_WRITE_FIXTURE").is_some() {
        write_fixture(&fixture_dir());
    }
    let copy = tempfile::tempdir().unwrap();
    let mut files = 0;
    for e in std::fs::read_dir(fixture_dir()).expect("fixture directory is committed") {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        files += 1;
    }
    assert!(files >= 3, "fixture has a meta file and several segments");
    let log = Log::open(
        copy.path(),
        LogOptions::default().recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    let report = log.recovery_report();
    assert!(report.is_clean() && !report.created, "{report}");
    assert!(report.segments >= 2, "the fixture spans segments: {report}");
    let got: Vec<(u64, Vec<u8>)> = log
        .read_from(Lsn(1))
        .map(|r| r.map(|r| (r.lsn.get(), r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        (1..=RECORDS).map(|i| (i, payload(i))).collect::<Vec<_>>()
    );
    assert_eq!(log.append(b"next").unwrap(), Lsn(RECORDS + 1));
}
