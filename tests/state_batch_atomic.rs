//! A write batch is one log record: cut at every byte offset (a torn write of it), recovery gives
//! all of the batch or none of it — never part.

use statejournal::codec::frame::decode_frame;
use statejournal::codec::header::SEGMENT_HEADER_LEN;
use statejournal::{Journal, JournalOptions};

#[test]
fn a_torn_batch_recovers_all_or_nothing() {
    let base = tempfile::tempdir().unwrap();
    let opts = || JournalOptions::default().segment_size(64 << 10);
    {
        let mut j = Journal::open(base.path(), opts()).unwrap();
        let v = j.value_state::<u32, String>("v").unwrap();
        let l = j.list_state::<u32, u32>("l").unwrap();
        v.set(&mut j, &0, &"before".into()).unwrap();
        j.sync().unwrap();
        j.write_batch(|j| {
            for i in 1..=20u32 {
                v.set(j, &i, &format!("batch-{i}"))?;
                l.add(j, &(i % 3), &i)?;
            }
            Ok(())
        })
        .unwrap();
    }
    let seg = base.path().join(statejournal::format::segment_file_name(1));
    let image = std::fs::read(&seg).unwrap();
    // The batch is the last frame.
    let mut at = SEGMENT_HEADER_LEN;
    let mut last = (0, 0);
    while let Ok(f) = decode_frame(&image, at) {
        last = (at, f.payload_end);
        at = f.next;
    }
    let (start, end) = last;
    assert!(end - start > 400, "the batch is one big record");
    for cut in start..=end {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(base.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let mut img = image.clone();
        img[cut..end].fill(0);
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &img).unwrap();
        let mut j = Journal::open(dir.path(), opts()).unwrap();
        let v = j.value_state::<u32, String>("v").unwrap();
        let l = j.list_state::<u32, u32>("l").unwrap();
        assert_eq!(v.get(&mut j, &0).unwrap().as_deref(), Some("before"));
        let present: Vec<bool> = (1..=20u32)
            .map(|i| v.get(&mut j, &i).unwrap().is_some())
            .collect();
        let lists: usize = (0..3u32).map(|k| l.get(&mut j, &k).unwrap().len()).sum();
        if cut == end {
            assert!(present.iter().all(|p| *p), "intact batch fully applied");
            assert_eq!(lists, 20);
        } else {
            assert!(
                present.iter().all(|p| !*p),
                "cut at {cut}: part of a batch was applied"
            );
            assert_eq!(lists, 0, "cut at {cut}");
        }
    }
}

#[test]
fn a_failed_batch_logs_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), JournalOptions::default().segment_size(1 << 20)).unwrap();
    let v = j.value_state::<u32, u32>("v").unwrap();
    let before = j.log().last_lsn();
    let err = j
        .write_batch(|j| {
            v.set(j, &1, &1)?;
            v.set(j, &2, &2)?;
            Err::<(), _>(statejournal::Error::InvalidOptions {
                name: "test",
                reason: "abort".into(),
            })
        })
        .unwrap_err();
    assert!(err.to_string().contains("abort"));
    assert_eq!(j.log().last_lsn(), before, "nothing logged");
    assert_eq!(v.get(&mut j, &1).unwrap(), None, "nothing applied");
    // Registration inside a batch is refused (ids would be handed out before they exist).
    let e = j
        .write_batch(|j| j.value_state::<u8, u8>("late").map(drop))
        .unwrap_err();
    assert!(e.to_string().contains("before the write batch"), "{e}");
}
