//! The segment header: the first [`SEGMENT_HEADER_LEN`] bytes of every segment file.
//!
//! ```text
//! offset size field
//!      0    8 magic          b"SJLOGSEG"
//!      8    4 version        format version that wrote the segment (FORMAT_VERSION)
//!     12    4 header_len     SEGMENT_HEADER_LEN; records start here
//!     16    8 log_id         random identity of the log, the same in every segment and the meta file
//!     24    8 segment_id     sequence number, also in the file name
//!     32    8 base_lsn       LSN of the first data record this segment holds
//!     40    8 prev_last_lsn  LSN of the last data record of the previous segment (0: none)
//!     48    4 prev_last_crc  stored CRC of that record (0: none)
//!     52    1 flags          bit 0: the previous segment was NOT flushed completely before this
//!                            one was created (so this segment's existence proves nothing about it)
//!                            bit 1 (version 2 only, and required there): RECYCLED, the file held
//!                            an older segment of the log, whose stale frames may follow the data
//!     53    7 reserved       0
//!     60    4 header_crc     CRC-32 of bytes 0..60
//! ```

use super::{get_u32, get_u64, put_u32, put_u64};

/// Identifies a statejournal segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SJLOGSEG";
/// The format version of the log's files (`log.meta`, `log.discard`, and segment headers of
/// fresh segments). Readers accept every version up to this one.
pub const FORMAT_VERSION: u32 = 1;
/// The segment header version of a recycled segment (`FLAG_RECYCLED`): version 1 plus that
/// flag. Written only for recycled segments, so a log that never recycles stays readable by
/// version-1 readers, and one that does is refused by them by name (a version-1 reader would
/// take the stale frames after the data for damage).
pub const RECYCLED_SEGMENT_VERSION: u32 = 2;
/// The newest segment header version this build reads.
pub const SEGMENT_VERSION_MAX: u32 = RECYCLED_SEGMENT_VERSION;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + 4;
const LOG_ID_OFFSET: usize = HEADER_LEN_OFFSET + 4;
const SEGMENT_ID_OFFSET: usize = LOG_ID_OFFSET + 8;
const BASE_LSN_OFFSET: usize = SEGMENT_ID_OFFSET + 8;
const PREV_LAST_LSN_OFFSET: usize = BASE_LSN_OFFSET + 8;
const PREV_LAST_CRC_OFFSET: usize = PREV_LAST_LSN_OFFSET + 8;
const FLAGS_OFFSET: usize = PREV_LAST_CRC_OFFSET + 4;
const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
const HEADER_CRC_OFFSET: usize = RESERVED_OFFSET + 7;
/// Header flag: the predecessor was not flushed completely when this segment was created.
const FLAG_PREDECESSOR_UNSYNCED: u8 = 1;
/// Header flag (version 2 only, and required there): the file held an older segment of the same
/// log and was reused; see [`SegmentHeader::recycled`].
const FLAG_RECYCLED: u8 = 2;
/// Size of the segment header; the first frame starts here (a multiple of the frame alignment).
pub const SEGMENT_HEADER_LEN: usize = HEADER_CRC_OFFSET + 4;

const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(super::frame::FRAME_ALIGN));

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version that wrote the segment.
    pub version: u32,
    /// Identity of the log the segment belongs to.
    pub log_id: u64,
    /// Sequence number of the segment.
    pub segment_id: u64,
    /// LSN of the first data record in the segment.
    pub base_lsn: u64,
    /// LSN of the last data record of the previous segment (0 when there is none).
    pub prev_last_lsn: u64,
    /// Stored CRC of that record (0 when there is none).
    pub prev_last_crc: u32,
    /// The previous segment was not flushed completely when this one was created (the roll did
    /// not wait for the disk, as in `Buffered` and `Periodic` mode). When false, the existence
    /// of this segment proves the previous one durable.
    pub predecessor_unsynced: bool,
    /// The file held an older segment of the same log and was reused (segment recycling). Past
    /// the last record its bytes may be that older segment's: frames whose LSNs lie below
    /// `base_lsn` (every LSN of an older segment does), which end the written part like a zero
    /// length does. Encoded as header version [`RECYCLED_SEGMENT_VERSION`].
    pub recycled: bool,
}

/// Why a header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// Not our magic: a foreign file.
    BadMagic,
    /// Written by a newer format than this build reads.
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
    },
    /// The header checksum does not match.
    Checksum {
        /// CRC computed over the header.
        computed: u32,
        /// CRC stored in the header.
        stored: u32,
    },
    /// A field holds a value no writer produces (header length, reserved bytes, LSN chain).
    Invalid(&'static str),
}

impl SegmentHeader {
    /// Encodes the header into the first [`SEGMENT_HEADER_LEN`] bytes of `out`: version
    /// [`FORMAT_VERSION`], or [`RECYCLED_SEGMENT_VERSION`] for a recycled segment (`self.version`
    /// is what a decode found, not what is written).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..SEGMENT_HEADER_LEN];
        out.fill(0);
        out[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
        let version = if self.recycled {
            RECYCLED_SEGMENT_VERSION
        } else {
            FORMAT_VERSION
        };
        put_u32(out, VERSION_OFFSET, version);
        put_u32(out, HEADER_LEN_OFFSET, SEGMENT_HEADER_LEN as u32);
        put_u64(out, LOG_ID_OFFSET, self.log_id);
        put_u64(out, SEGMENT_ID_OFFSET, self.segment_id);
        put_u64(out, BASE_LSN_OFFSET, self.base_lsn);
        put_u64(out, PREV_LAST_LSN_OFFSET, self.prev_last_lsn);
        put_u32(out, PREV_LAST_CRC_OFFSET, self.prev_last_crc);
        out[FLAGS_OFFSET] = if self.predecessor_unsynced {
            FLAG_PREDECESSOR_UNSYNCED
        } else {
            0
        } | if self.recycled { FLAG_RECYCLED } else { 0 };
        let crc = crc32fast::hash(&out[..HEADER_CRC_OFFSET]);
        put_u32(out, HEADER_CRC_OFFSET, crc);
    }

    /// Whether the header's stored CRC matches its bytes by this version's layout (`false` for
    /// fewer than [`SEGMENT_HEADER_LEN`] bytes). Tells a torn header whose version field is
    /// garbage from one a newer writer wrote whole.
    pub(crate) fn crc_matches(buf: &[u8]) -> bool {
        buf.get(..SEGMENT_HEADER_LEN).is_some_and(|head| {
            get_u32(head, HEADER_CRC_OFFSET) == Some(crc32fast::hash(&head[..HEADER_CRC_OFFSET]))
        })
    }

    /// Decodes and validates a header. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, HeaderError> {
        let head = buf
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(HeaderError::Truncated { len: buf.len() })?;
        if head.get(MAGIC_OFFSET..MAGIC_OFFSET + 8) != Some(&SEGMENT_MAGIC[..]) {
            return Err(HeaderError::BadMagic);
        }
        let version = get_u32(head, VERSION_OFFSET).unwrap_or(0);
        // The version is checked before the CRC: a newer writer may have changed the layout
        // the CRC covers, and "unsupported version" is the error the operator must see.
        if version > SEGMENT_VERSION_MAX {
            return Err(HeaderError::UnsupportedVersion { found: version });
        }
        let stored = get_u32(head, HEADER_CRC_OFFSET).unwrap_or(0);
        let computed = crc32fast::hash(&head[..HEADER_CRC_OFFSET]);
        if stored != computed {
            return Err(HeaderError::Checksum { computed, stored });
        }
        if version == 0 {
            return Err(HeaderError::Invalid("format version 0"));
        }
        if get_u32(head, HEADER_LEN_OFFSET) != Some(SEGMENT_HEADER_LEN as u32) {
            return Err(HeaderError::Invalid("header length"));
        }
        if head[RESERVED_OFFSET..HEADER_CRC_OFFSET]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(HeaderError::Invalid("reserved bytes are not zero"));
        }
        let flags = head[FLAGS_OFFSET];
        if flags & !(FLAG_PREDECESSOR_UNSYNCED | FLAG_RECYCLED) != 0 {
            return Err(HeaderError::Invalid("unknown header flags"));
        }
        // Version 2 is version 1 with the recycled flag: one without the other is no writer's.
        if (flags & FLAG_RECYCLED != 0) != (version == RECYCLED_SEGMENT_VERSION) {
            return Err(HeaderError::Invalid(
                "the recycled flag and the header version disagree",
            ));
        }
        let h = SegmentHeader {
            version,
            log_id: get_u64(head, LOG_ID_OFFSET).unwrap_or(0),
            segment_id: get_u64(head, SEGMENT_ID_OFFSET).unwrap_or(0),
            base_lsn: get_u64(head, BASE_LSN_OFFSET).unwrap_or(0),
            prev_last_lsn: get_u64(head, PREV_LAST_LSN_OFFSET).unwrap_or(0),
            prev_last_crc: get_u32(head, PREV_LAST_CRC_OFFSET).unwrap_or(0),
            predecessor_unsynced: flags & FLAG_PREDECESSOR_UNSYNCED != 0,
            recycled: flags & FLAG_RECYCLED != 0,
        };
        if h.base_lsn == 0
            || h.base_lsn > super::frame::MAX_LSN
            || h.prev_last_lsn != h.base_lsn - 1
        {
            return Err(HeaderError::Invalid(
                "base LSN does not follow the previous segment's last LSN",
            ));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            log_id: 0xdead_beef,
            segment_id: 3,
            base_lsn: 101,
            prev_last_lsn: 100,
            prev_last_crc: 0x1234_5678,
            predecessor_unsynced: true,
            recycled: false,
        }
    }

    #[test]
    fn a_recycled_header_is_version_2_and_round_trips() {
        let h = SegmentHeader {
            version: RECYCLED_SEGMENT_VERSION,
            recycled: true,
            ..sample()
        };
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        h.encode(&mut buf);
        assert_eq!(
            get_u32(&buf, VERSION_OFFSET),
            Some(RECYCLED_SEGMENT_VERSION)
        );
        assert_eq!(buf[FLAGS_OFFSET], FLAG_PREDECESSOR_UNSYNCED | FLAG_RECYCLED);
        assert_eq!(SegmentHeader::decode(&buf), Ok(h));
        // The flag without version 2, or version 2 without the flag, is refused.
        for (version, flags) in [
            (FORMAT_VERSION, FLAG_RECYCLED),
            (RECYCLED_SEGMENT_VERSION, 0),
        ] {
            let mut bad = buf;
            put_u32(&mut bad, VERSION_OFFSET, version);
            bad[FLAGS_OFFSET] = flags;
            let crc = crc32fast::hash(&bad[..HEADER_CRC_OFFSET]);
            put_u32(&mut bad, HEADER_CRC_OFFSET, crc);
            assert_eq!(
                SegmentHeader::decode(&bad),
                Err(HeaderError::Invalid(
                    "the recycled flag and the header version disagree"
                )),
                "version {version} flags {flags}"
            );
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        sample().encode(&mut buf);
        assert_eq!(SegmentHeader::decode(&buf), Ok(sample()));
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        sample().encode(&mut buf);
        for byte in 0..SEGMENT_HEADER_LEN {
            for bit in 0..8 {
                let mut bad = buf;
                bad[byte] ^= 1 << bit;
                assert!(
                    SegmentHeader::decode(&bad).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        sample().encode(&mut buf);
        put_u32(&mut buf, VERSION_OFFSET, SEGMENT_VERSION_MAX + 1);
        assert_eq!(
            SegmentHeader::decode(&buf),
            Err(HeaderError::UnsupportedVersion {
                found: SEGMENT_VERSION_MAX + 1
            })
        );
        assert_eq!(
            SegmentHeader::decode(&buf[..10]),
            Err(HeaderError::Truncated { len: 10 })
        );
        assert_eq!(
            SegmentHeader::decode(&[0u8; 64]),
            Err(HeaderError::BadMagic)
        );
    }
}
