//! Reading records from an LSN onwards, zero-copy.

use std::sync::Arc;

use bytes::Bytes;

use super::{lock, Lsn, Shared};
use crate::codec::frame::{decode_frame, FrameError, FrameKind};
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
