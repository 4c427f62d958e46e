//! `LogOptions::discard_after`: opening a log as it was at an LSN (how a checkpoint is restored).

mod common;

use common::*;
use statejournal::{CutReason, Log, Lsn};

/// First LSN of every segment of a log directory.
fn boundaries(dir: &std::path::Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            statejournal::codec::header::SegmentHeader::decode(&bytes)
                .unwrap()
                .base_lsn
        })
        .collect()
}

#[test]
fn discard_after_keeps_exactly_the_prefix_and_appends_continue() {
    let n = 600;
    let probe = tempfile::tempdir().unwrap();
    write_records(probe.path(), n, 50);
    let firsts = boundaries(probe.path());
    assert!(firsts.len() >= 4, "want several segments: {firsts:?}");
    // Inside the first segment, just before and at a segment start, inside the last, at the end,
    // past the end.
    let b = firsts[2];
    let stops = [1, 7, b - 1, b, b + 1, n - 3, n, n + 10];
    for stop in stops {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), n, 50);
        let log = Log::open(dir.path(), opts().discard_after(Lsn(stop))).unwrap();
        let kept = stop.min(n);
        let report = log.recovery_report().clone();
        assert_eq!(report.last_lsn, Lsn(kept), "stop {stop}: {report}");
        let got = read_all(&log);
        let want: Vec<_> = (1..=kept).map(|i| (i, payload(i))).collect();
        assert_eq!(got, want, "stop {stop}");
        if stop < n {
            let cut = report.cuts.last().expect("a cut");
            assert!(matches!(cut.reason, CutReason::Discarded { after } if after == Lsn(stop)));
            assert_eq!(cut.first_cut_lsn, Lsn(stop + 1));
            assert_eq!(cut.intact_records_cut, Some((Lsn(stop + 1), Lsn(n))));
            assert!(cut.damage.is_none());
        } else {
            assert!(report.is_clean(), "stop {stop}: {report}");
        }
        // Appends continue right after the kept prefix, and a plain reopen sees exactly that.
        assert_eq!(log.append(b"after").unwrap(), Lsn(kept + 1));
        log.close().unwrap();
        let log = Log::open(dir.path(), opts()).unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{}",
            log.recovery_report()
        );
        let all = read_all(&log);
        assert_eq!(all.len() as u64, kept + 1, "stop {stop}");
        assert_eq!(all.last().unwrap(), &(kept + 1, b"after".to_vec()));
        // Nothing discarded is lost: cut bytes and whole segments were set aside.
        if stop < n {
            let aside = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.contains(".cut-") || n.ends_with(".discarded")
                })
                .count();
            assert!(aside >= 1, "stop {stop}: nothing set aside");
        }
    }
}

#[test]
fn discard_after_below_the_first_kept_segment_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 600, 50);
    let log = Log::open(dir.path(), opts()).unwrap();
    let second = boundaries(dir.path())[1];
    assert!(log.delete_below(Lsn(second)).unwrap() >= 1);
    drop(log);
    let before = segment_files(dir.path());
    let err = Log::open(dir.path(), opts().discard_after(Lsn(1))).unwrap_err();
    assert!(err.corruption().is_some(), "{err}");
    assert_eq!(segment_files(dir.path()), before);
    let log = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(log.recovery_report().last_lsn, Lsn(600));
}

/// Byte offset where the frame of LSN `lsn` starts in a segment file image, if it is there.
fn frame_offset(bytes: &[u8], lsn: u64) -> Option<usize> {
    let mut pos = statejournal::codec::header::SEGMENT_HEADER_LEN;
    while let Ok(f) = statejournal::codec::frame::decode_frame(bytes, pos) {
        if f.lsn == lsn && f.kind == statejournal::codec::frame::FrameKind::Data {
            return Some(pos);
        }
        pos = f.next;
    }
    None
}

fn write_intent(dir: &std::path::Path, after: u64) {
    let meta = std::fs::read(dir.join(statejournal::format::META_FILE)).unwrap();
    let log_id = statejournal::codec::meta::LogMeta::decode(&meta)
        .unwrap()
        .log_id;
    let intent = statejournal::codec::meta::DiscardIntent {
        log_id,
        after,
        cause: statejournal::DiscardCause::Requested,
    };
    std::fs::write(
        dir.join(statejournal::format::DISCARD_FILE),
        intent.encode(),
    )
    .unwrap();
}

/// Crash states of an interrupted discard: the intent is durable and then nothing, some later
/// segments renamed aside, or the cut half zeroed. A plain open finishes the discard in each
/// (found in review: a half-zeroed cut looked like damaged durable data, and renaming segments
/// oldest first left a gap); without the intent, the half-zeroed cut is refused as it should be.
#[test]
fn an_interrupted_discard_is_finished_by_the_next_open() {
    let n = 600;
    for case in [
        "intent only",
        "newest segment renamed",
        "half zeroed",
        "no intent",
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), n, 50);
        let firsts = boundaries(dir.path());
        let stop = firsts[1] + 5; // inside the second segment, several segments follow
        let segs = segment_files(dir.path());
        assert!(segs.len() >= 4, "{case}: want later segments");
        match case {
            "intent only" => write_intent(dir.path(), stop),
            "newest segment renamed" => {
                write_intent(dir.path(), stop);
                // The meta file moved first (to the segment holding `stop + 1`), then the newest
                // later segment was renamed aside, then the crash.
                let meta_path = dir.path().join(statejournal::format::META_FILE);
                let mut meta =
                    statejournal::codec::meta::LogMeta::decode(&std::fs::read(&meta_path).unwrap())
                        .unwrap();
                meta.last_segment = meta.first_segment + 1;
                std::fs::write(&meta_path, meta.encode()).unwrap();
                let newest = segs.last().unwrap();
                std::fs::rename(newest, newest.with_extension("seg.discarded")).unwrap();
            }
            "half zeroed" | "no intent" => {
                if case == "half zeroed" {
                    write_intent(dir.path(), stop);
                }
                // What a discard killed while zeroing leaves: the meta file moved, every later
                // segment renamed aside, and the frames right after `stop` partly zeroed.
                let meta_path = dir.path().join(statejournal::format::META_FILE);
                let mut meta =
                    statejournal::codec::meta::LogMeta::decode(&std::fs::read(&meta_path).unwrap())
                        .unwrap();
                meta.last_segment = meta.first_segment + 1;
                std::fs::write(&meta_path, meta.encode()).unwrap();
                for later in segs[2..].iter().rev() {
                    std::fs::rename(later, later.with_extension("seg.discarded")).unwrap();
                }
                let mut bytes = std::fs::read(&segs[1]).unwrap();
                let from = frame_offset(&bytes, stop + 1).unwrap();
                let to = frame_offset(&bytes, stop + 4).unwrap();
                bytes[from..to].fill(0);
                std::fs::write(&segs[1], bytes).unwrap();
            }
            _ => unreachable!(),
        }
        let opened = Log::open(dir.path(), opts());
        if case == "no intent" {
            let err = opened.unwrap_err();
            assert!(err.corruption().is_some(), "{case}: {err}");
            continue;
        }
        let log = opened.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            log.last_lsn(),
            Lsn(stop),
            "{case}: {}",
            log.recovery_report()
        );
        let want: Vec<_> = (1..=stop).map(|i| (i, payload(i))).collect();
        assert_eq!(read_all(&log), want, "{case}");
        assert!(
            !dir.path().join(statejournal::format::DISCARD_FILE).exists(),
            "{case}: intent left behind"
        );
        assert!(
            log.recovery_report().synced_through <= Lsn(stop),
            "{case}: watermark"
        );
        assert_eq!(log.append(b"next").unwrap(), Lsn(stop + 1));
        drop(log);
        let log = Log::open(dir.path(), opts()).unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{case}: {}",
            log.recovery_report()
        );
        assert_eq!(log.last_lsn(), Lsn(stop + 1));
    }
}
