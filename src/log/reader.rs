//! Reading records from an LSN onwards, zero-copy.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;

use super::{lock, Lsn, Shared};
use crate::codec::frame::{decode_frame, FrameError, FrameKind, FRAME_HEADER_LEN};
use crate::codec::header::SEGMENT_HEADER_LEN;
use crate::error::{CorruptionKind, DurabilityEvidence, Error, RecordDamage, Result};
use crate::segment::Segment;

/// One record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its payload: a view of the mapped segment, valid as long as it is held.
    pub payload: Bytes,
}

/// Iterator over records from an LSN onwards. See [`Log::read_from`](super::Log::read_from).
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    seg: Option<Arc<Segment>>,
    pos: usize,
    from: u64,
    /// LSN the next data record should carry (for error messages).
    expected: u64,
    failed: bool,
}

impl LogReader {
    pub(super) fn new(shared: Arc<Shared>, from: u64) -> LogReader {
        let seg = {
            let segs = lock(&shared.segments);
            // The last segment starting at or before `from`, or the first one if `from` is older.
            let idx = segs.partition_point(|s| s.header().base_lsn <= from);
            segs.get(idx.saturating_sub(1)).cloned()
        };
        let expected = seg.as_ref().map_or(from, |s| s.header().base_lsn);
        LogReader {
            shared,
            seg,
            pos: SEGMENT_HEADER_LEN,
            from,
            expected,
            failed: false,
        }
    }

    fn next_segment(&mut self, after: u64) -> bool {
        let segs = lock(&self.shared.segments);
        match segs.iter().find(|s| s.id() > after) {
            Some(s) => {
                self.expected = s.header().base_lsn;
                self.seg = Some(Arc::clone(s));
                self.pos = SEGMENT_HEADER_LEN;
                true
            }
            None => false,
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        loop {
            let seg = Arc::clone(self.seg.as_ref()?);
            let limit = seg.published_prefix().end;
            if self.pos >= limit {
                if !seg.is_sealed() {
                    return None; // caught up with the writers
                }
                let end = seg.seal(); // idempotent: where reservations ended
                if self.pos < end && limit < end {
                    seg.wait_published(end);
                    continue;
                }
                if !self.next_segment(seg.id()) {
                    return None;
                }
                continue;
            }
            let buf = seg.bytes(0, limit)?;
            match decode_frame(buf, self.pos) {
                Ok(f) => {
                    self.pos = f.next;
                    if f.kind == FrameKind::Data {
                        self.expected = f.lsn + 1;
                    }
                    if f.kind == FrameKind::SyncMarker || f.lsn < self.from {
                        continue;
                    }
                    let payload = seg.slice(f.payload_start, f.payload_end)?;
                    return Some(Ok(Record {
                        lsn: Lsn(f.lsn),
                        payload,
                    }));
                }
                Err(FrameError::End) if seg.is_sealed() => {
                    if !self.next_segment(seg.id()) {
                        return None;
                    }
                }
                Err(e) => {
                    // Recovery validated these bytes, so this is damage that happened while open.
                    self.failed = true;
                    return Some(Err(Error::corrupt(
                        seg.path(),
                        self.pos as u64,
                        CorruptionKind::DamagedRecord {
                            expected_lsn: self.expected,
                            damage: RecordDamage::Frame(e),
                            evidence: DurabilityEvidence::AlreadyRead,
                        },
                    )));
                }
            }
        }
    }
}

/// Frames of one segment checked by the scanning thread: `(lsn, payload start, payload end)`.
struct Checked {
    seg: Arc<Segment>,
    end: usize,
    records: Vec<(u64, usize, usize)>,
}

/// Walks the frames of `segs` from LSN `from` on, checking each, and hands over the data records
/// in batches of up to `batch`. Returns early (`Ok`) when `give` returns false.
fn walk_frames(
    segs: &[Arc<Segment>],
    from: u64,
    batch: usize,
    mut give: impl FnMut(Result<Checked>) -> bool,
) {
    let first = segs
        .partition_point(|s| s.header().base_lsn <= from)
        .saturating_sub(1);
    for seg in segs.iter().skip(first) {
        let end = seg.published_prefix().end;
        let buf = seg.bytes(0, end).unwrap_or(&[]);
        let mut pos = SEGMENT_HEADER_LEN;
        let mut expected = seg.header().base_lsn;
        let mut records = Vec::with_capacity(batch);
        while pos < end {
            match decode_frame(buf, pos) {
                Ok(fr) => {
                    pos = fr.next;
                    if fr.kind != FrameKind::Data {
                        continue;
                    }
                    expected = fr.lsn + 1;
                    if fr.lsn >= from {
                        records.push((fr.lsn, fr.payload_start, fr.payload_end));
                        if records.len() >= batch {
                            let full = std::mem::replace(&mut records, Vec::with_capacity(batch));
                            let seg = Arc::clone(seg);
                            if !give(Ok(Checked {
                                seg,
                                end,
                                records: full,
                            })) {
                                return;
                            }
                        }
                    }
                }
                Err(FrameError::End) => break,
                Err(e) => {
                    give(Err(Error::corrupt(
                        seg.path(),
                        pos as u64,
                        CorruptionKind::DamagedRecord {
                            expected_lsn: expected,
                            damage: RecordDamage::Frame(e),
                            evidence: DurabilityEvidence::AlreadyRead,
                        },
                    )));
                    return;
                }
            }
        }
        if !records.is_empty()
            && !give(Ok(Checked {
                seg: Arc::clone(seg),
                end,
                records,
            }))
        {
            return;
        }
    }
}

/// One data record handed over by [`Log::scan_from`](super::Log::scan_from).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanned<'a> {
    /// Its LSN.
    pub lsn: u64,
    /// Its payload, borrowed from the mapping.
    pub payload: &'a [u8],
    /// The segment file holding it.
    pub segment: &'a std::path::Path,
    /// Where its frame starts in that file.
    pub offset: u64,
}

impl Scanned<'_> {
    /// The error for a record that checks out as a frame but not as a state record.
    pub fn invalid(&self, detail: impl Into<String>) -> crate::Error {
        crate::Error::InvalidRecord {
            path: self.segment.to_path_buf(),
            offset: Some(self.offset),
            lsn: self.lsn,
            detail: detail.into(),
        }
    }
}

impl super::Log {
    /// Calls `f` with the data records with LSN ≥ `from` published so far, in order, in batches
    /// of up to `batch` records, with payloads borrowed from the mappings: no reference count or
    /// allocation per record, which is what replaying millions of records at open needs
    /// ([`Log::read_from`](super::Log::read_from) hands out owned [`Bytes`] instead). Frames are
    /// checked as the reader checks them. `f` returns whether to go on.
    ///
    /// With `helper`, where a second core is available, a scanning thread walks and checks the
    /// frames (CRC, lengths) while `f` runs on the calling thread: replay applies one batch while
    /// the next is being verified. Work that runs beside the writers (a compaction) passes
    /// `false`: there the second core is the writers', and a helper thread only takes it from
    /// them.
    pub(crate) fn scan_from(
        &self,
        from: Lsn,
        batch: usize,
        helper: bool,
        mut f: impl FnMut(&[Scanned<'_>]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let segs: Vec<Arc<Segment>> = lock(&self.shared.segments).clone();
        let batch = batch.max(1);
        let mut deliver = |c: &Checked| {
            let buf = c.seg.bytes(0, c.end).unwrap_or(&[]);
            let segment = c.seg.path();
            let slices: Vec<Scanned<'_>> = c
                .records
                .iter()
                .map(|&(lsn, a, b)| Scanned {
                    lsn,
                    payload: buf.get(a..b).unwrap_or(&[]),
                    segment,
                    offset: a.saturating_sub(FRAME_HEADER_LEN) as u64,
                })
                .collect();
            f(&slices)
        };
        let parallel = helper && std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
        if !parallel {
            let mut outcome = Ok(());
            walk_frames(&segs, from.0, batch, |c| {
                let step = c.and_then(|c| deliver(&c));
                match step {
                    Ok(ControlFlow::Continue(())) => true,
                    Ok(ControlFlow::Break(())) => false,
                    Err(e) => {
                        outcome = Err(e);
                        false
                    }
                }
            });
            return outcome;
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Checked>>(4);
            let segs = &segs;
            scope.spawn(move || walk_frames(segs, from.0, batch, |c| tx.send(c).is_ok()));
            for checked in rx {
                let checked = checked?;
                if deliver(&checked)?.is_break() {
                    break; // dropping `rx` stops the scanning thread
                }
            }
            Ok(())
        })
    }
}
