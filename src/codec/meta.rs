//! The log meta file (`log.meta`): the log's identity and which segments it consists of.
//!
//! ```text
//! offset size field
//!      0    8 magic          b"SJLOGMET"
//!      8    4 version        FORMAT_VERSION of the writer
//!     12    4 reserved       0
//!     16    8 log_id         random identity shared with every segment header
//!     24    8 first_segment  lowest segment id that belongs to the log (older ones were deleted)
//!     32    8 last_segment   highest segment id created and made durable so far
//!     40    4 crc            CRC-32 of bytes 0..40
//!     44    4 reserved       0
//! ```
//!
//! The file is replaced atomically (write a temporary, fsync, rename, fsync the directory).

use super::header::FORMAT_VERSION;
use super::{get_u32, get_u64, put_u32, put_u64};

/// Identifies the meta file.
pub const META_MAGIC: [u8; 8] = *b"SJLOGMET";
const VERSION_OFFSET: usize = 8;
const RESERVED_OFFSET: usize = VERSION_OFFSET + 4;
const LOG_ID_OFFSET: usize = RESERVED_OFFSET + 4;
const FIRST_OFFSET: usize = LOG_ID_OFFSET + 8;
const LAST_OFFSET: usize = FIRST_OFFSET + 8;
const CRC_OFFSET: usize = LAST_OFFSET + 8;
const TAIL_RESERVED_OFFSET: usize = CRC_OFFSET + 4;
/// Size of the meta file.
pub const META_LEN: usize = TAIL_RESERVED_OFFSET + 4;

/// Decoded meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMeta {
    /// Identity of the log.
    pub log_id: u64,
    /// Lowest segment id that belongs to the log.
    pub first_segment: u64,
    /// Highest segment id created durably.
    pub last_segment: u64,
}

/// Why a meta file did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// Not exactly [`META_LEN`] bytes.
    BadLength(usize),
    /// Not our magic.
    BadMagic,
    /// Written by a newer format.
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// Checksum mismatch.
    Checksum {
        /// Computed CRC.
        computed: u32,
        /// Stored CRC.
        stored: u32,
    },
    /// A field no writer produces.
    Invalid(&'static str),
}

impl LogMeta {
    /// Encodes the meta file.
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        out[..8].copy_from_slice(&META_MAGIC);
        put_u32(&mut out, VERSION_OFFSET, FORMAT_VERSION);
        put_u64(&mut out, LOG_ID_OFFSET, self.log_id);
        put_u64(&mut out, FIRST_OFFSET, self.first_segment);
        put_u64(&mut out, LAST_OFFSET, self.last_segment);
        let crc = crc32fast::hash(&out[..CRC_OFFSET]);
        put_u32(&mut out, CRC_OFFSET, crc);
        out
    }

    /// Decodes and validates a meta file. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, MetaError> {
        if buf.len() != META_LEN {
            return Err(MetaError::BadLength(buf.len()));
        }
        if buf.get(..8) != Some(&META_MAGIC[..]) {
            return Err(MetaError::BadMagic);
        }
        let version = get_u32(buf, VERSION_OFFSET).unwrap_or(0);
        if version > FORMAT_VERSION {
            return Err(MetaError::UnsupportedVersion { found: version });
        }
        let stored = get_u32(buf, CRC_OFFSET).unwrap_or(0);
        let computed = crc32fast::hash(&buf[..CRC_OFFSET]);
        if stored != computed {
            return Err(MetaError::Checksum { computed, stored });
        }
        if version == 0
            || get_u32(buf, RESERVED_OFFSET) != Some(0)
            || get_u32(buf, TAIL_RESERVED_OFFSET) != Some(0)
        {
            return Err(MetaError::Invalid("version or reserved fields"));
        }
        let meta = LogMeta {
            log_id: get_u64(buf, LOG_ID_OFFSET).unwrap_or(0),
            first_segment: get_u64(buf, FIRST_OFFSET).unwrap_or(0),
            last_segment: get_u64(buf, LAST_OFFSET).unwrap_or(0),
        };
        if meta.first_segment == 0 || meta.first_segment > meta.last_segment {
            return Err(MetaError::Invalid("segment range"));
        }
        Ok(meta)
    }
}

/// Identifies the discard-intent file (`log.discard`).
pub const DISCARD_MAGIC: [u8; 8] = *b"SJLOGDSC";
const D_LOG_ID_OFFSET: usize = RESERVED_OFFSET + 4;
const D_AFTER_OFFSET: usize = D_LOG_ID_OFFSET + 8;
const D_CRC_OFFSET: usize = D_AFTER_OFFSET + 8;
const D_TAIL_RESERVED_OFFSET: usize = D_CRC_OFFSET + 4;
/// Size of the discard-intent file.
pub const DISCARD_LEN: usize = D_TAIL_RESERVED_OFFSET + 4;

/// The newest version of `log.discard`: version 2 gives the field at offset 12 a meaning (the
/// [`DiscardCause`]). A writer uses it only for a cause version 1 cannot say, so that older
/// readers keep reading the intents of checkpoint restores.
pub const DISCARD_VERSION: u32 = 2;

/// Why records are being discarded (`log.discard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardCause {
    /// The discard was asked for: a checkpoint restore, or
    /// [`LogOptions::discard_after`](crate::LogOptions::discard_after). Written as version 1.
    Requested,
    /// A [`RecoveryMode::PointInTime`](crate::RecoveryMode::PointInTime) open found records the
    /// log had proved durable damaged, and cuts the log before them: durable data is lost.
    /// Written as version 2.
    DurableDataDamaged,
}

impl DiscardCause {
    fn code(self) -> u32 {
        match self {
            DiscardCause::Requested => 0,
            DiscardCause::DurableDataDamaged => 1,
        }
    }
}

/// The intent, made durable before any byte is set aside, to discard every record after `after`
/// (a checkpoint restore, or a point-in-time cut of durable data): recovery that finds it
/// finishes the discard, so a crash in the middle never leaves half-discarded records looking
/// like damaged durable data.
///
/// ```text
/// offset size field
///      0    8 magic     b"SJLOGDSC"
///      8    4 version   1, or 2 when the cause is not `Requested`
///     12    4 cause     version 1: reserved, 0; version 2: 0 requested, 1 durable data damaged
///     16    8 log_id    the log it belongs to
///     24    8 after     the last LSN kept
///     32    4 crc       CRC-32 of bytes 0..32
///     36    4 reserved  0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardIntent {
    /// Identity of the log.
    pub log_id: u64,
    /// The last LSN kept.
    pub after: u64,
    /// Why the records after `after` are discarded.
    pub cause: DiscardCause,
}

impl DiscardIntent {
    /// Encodes the file.
    pub fn encode(&self) -> [u8; DISCARD_LEN] {
        let mut out = [0u8; DISCARD_LEN];
        out[..8].copy_from_slice(&DISCARD_MAGIC);
        let version = match self.cause {
            DiscardCause::Requested => FORMAT_VERSION,
            DiscardCause::DurableDataDamaged => DISCARD_VERSION,
        };
        put_u32(&mut out, VERSION_OFFSET, version);
        // `Requested` is 0: version 1's reserved field.
        put_u32(&mut out, RESERVED_OFFSET, self.cause.code());
        put_u64(&mut out, D_LOG_ID_OFFSET, self.log_id);
        put_u64(&mut out, D_AFTER_OFFSET, self.after);
        let crc = crc32fast::hash(&out[..D_CRC_OFFSET]);
        put_u32(&mut out, D_CRC_OFFSET, crc);
        out
    }

    /// Decodes and validates the file. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, MetaError> {
        if buf.len() != DISCARD_LEN {
            return Err(MetaError::BadLength(buf.len()));
        }
        if buf.get(..8) != Some(&DISCARD_MAGIC[..]) {
            return Err(MetaError::BadMagic);
        }
        let version = get_u32(buf, VERSION_OFFSET).unwrap_or(0);
        if version > DISCARD_VERSION {
            return Err(MetaError::UnsupportedVersion { found: version });
        }
        let stored = get_u32(buf, D_CRC_OFFSET).unwrap_or(0);
        let computed = crc32fast::hash(&buf[..D_CRC_OFFSET]);
        if stored != computed {
            return Err(MetaError::Checksum { computed, stored });
        }
        if version == 0 || get_u32(buf, D_TAIL_RESERVED_OFFSET) != Some(0) {
            return Err(MetaError::Invalid("version or reserved fields"));
        }
        let cause = match (version, get_u32(buf, RESERVED_OFFSET)) {
            (1, Some(0)) | (2, Some(0)) => DiscardCause::Requested,
            (2, Some(1)) => DiscardCause::DurableDataDamaged,
            (1, _) => return Err(MetaError::Invalid("version or reserved fields")),
            _ => return Err(MetaError::Invalid("discard cause")),
        };
        Ok(DiscardIntent {
            log_id: get_u64(buf, D_LOG_ID_OFFSET).unwrap_or(0),
            after: get_u64(buf, D_AFTER_OFFSET).unwrap_or(0),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_intent_round_trip_and_flips() {
        for cause in [DiscardCause::Requested, DiscardCause::DurableDataDamaged] {
            let d = DiscardIntent {
                log_id: 77,
                after: 1234,
                cause,
            };
            let buf = d.encode();
            assert_eq!(DiscardIntent::decode(&buf), Ok(d));
            for byte in 0..DISCARD_LEN {
                let mut bad = buf;
                bad[byte] ^= 0x04;
                assert!(
                    DiscardIntent::decode(&bad).is_err(),
                    "{cause:?}, byte {byte}"
                );
            }
            assert!(DiscardIntent::decode(&buf[..DISCARD_LEN - 1]).is_err());
        }
    }

    /// Re-encodes `buf` with `version` and the field at offset 12 set to `field`, with a valid CRC.
    fn discard_with(buf: &[u8; DISCARD_LEN], version: u32, field: u32) -> [u8; DISCARD_LEN] {
        let mut b = *buf;
        put_u32(&mut b, VERSION_OFFSET, version);
        put_u32(&mut b, RESERVED_OFFSET, field);
        let crc = crc32fast::hash(&b[..D_CRC_OFFSET]);
        put_u32(&mut b, D_CRC_OFFSET, crc);
        b
    }

    #[test]
    fn discard_intent_versions() {
        let requested = DiscardIntent {
            log_id: 9,
            after: 41,
            cause: DiscardCause::Requested,
        };
        let buf = requested.encode();
        // A requested discard is written as version 1, byte for byte what version 1 readers read.
        assert_eq!(get_u32(&buf, VERSION_OFFSET), Some(1));
        assert_eq!(get_u32(&buf, RESERVED_OFFSET), Some(0));
        // A point-in-time cut of durable data needs version 2.
        let damaged = DiscardIntent {
            cause: DiscardCause::DurableDataDamaged,
            ..requested
        };
        let v2 = damaged.encode();
        assert_eq!(get_u32(&v2, VERSION_OFFSET), Some(2));
        assert_eq!(get_u32(&v2, RESERVED_OFFSET), Some(1));
        // Version 2 may also say "requested"; version 1 has no cause field; unknown causes and
        // newer versions are refused, the latter as unsupported.
        assert_eq!(
            DiscardIntent::decode(&discard_with(&buf, 2, 0)),
            Ok(requested)
        );
        assert_eq!(
            DiscardIntent::decode(&discard_with(&buf, 1, 1)),
            Err(MetaError::Invalid("version or reserved fields"))
        );
        assert_eq!(
            DiscardIntent::decode(&discard_with(&buf, 2, 2)),
            Err(MetaError::Invalid("discard cause"))
        );
        assert_eq!(
            DiscardIntent::decode(&discard_with(&buf, 3, 0)),
            Err(MetaError::UnsupportedVersion { found: 3 })
        );
    }

    /// The bytes of both versions, pinned: a later change that moves a field fails here.
    #[test]
    fn discard_intent_bytes_are_pinned() {
        let mut v1 = [0u8; DISCARD_LEN];
        v1[..8].copy_from_slice(b"SJLOGDSC");
        v1[8] = 1; // version
        v1[16..24].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes()); // log_id
        v1[24..32].copy_from_slice(&99u64.to_le_bytes()); // after
        let crc = crc32fast::hash(&v1[..32]);
        v1[32..36].copy_from_slice(&crc.to_le_bytes());
        let mut v2 = v1;
        v2[8] = 2;
        v2[12] = 1; // cause: durable data damaged
        let crc = crc32fast::hash(&v2[..32]);
        v2[32..36].copy_from_slice(&crc.to_le_bytes());
        let intent = |cause| DiscardIntent {
            log_id: 0x0102_0304_0506_0708,
            after: 99,
            cause,
        };
        assert_eq!(intent(DiscardCause::Requested).encode(), v1);
        assert_eq!(intent(DiscardCause::DurableDataDamaged).encode(), v2);
        assert_eq!(
            DiscardIntent::decode(&v1),
            Ok(intent(DiscardCause::Requested))
        );
        assert_eq!(
            DiscardIntent::decode(&v2),
            Ok(intent(DiscardCause::DurableDataDamaged))
        );
    }

    #[test]
    fn round_trip_and_flips() {
        let m = LogMeta {
            log_id: 5,
            first_segment: 2,
            last_segment: 9,
        };
        let buf = m.encode();
        assert_eq!(LogMeta::decode(&buf), Ok(m));
        for byte in 0..META_LEN {
            let mut bad = buf;
            bad[byte] ^= 0x10;
            assert!(LogMeta::decode(&bad).is_err(), "byte {byte}");
        }
        assert_eq!(LogMeta::decode(&buf[..3]), Err(MetaError::BadLength(3)));
    }
}
