//! Checkpoint manifests (`{id:020}.ckpt`): what a checkpoint consists of.
//!
//! ```text
//! offset size field
//!      0    8 magic     b"SJCKPT\0\0"
//!      8    4 version   MANIFEST_VERSION of the writer
//!     12    4 body_len  bytes of the body
//!     16    4 crc       CRC-32 of the body
//!     20    4 reserved  0
//!     24    … body
//!
//! body := id:v64 lsn:v64 log_id:v64 created_millis:v64
//!         max_key_groups:v32 kg_start:v32 kg_end:v32
//!         has_snapshot:u8 [snapshot_lsn:v64 snapshot_len:v64 snapshot_file:bytes]
//!         segment_count:v32 (segment_id:v64 base_lsn:v64 len:v64 crc:v32)*
//!         state_count:v32 (state_id:v32 kind:u8 flags:u8 ttl_millis:v64 name:bytes)*
//! ```
//!
//! The checkpoint's state is the snapshot (covering LSNs up to `snapshot_lsn`) plus the log records
//! in `(snapshot_lsn, lsn]`, which lie in the listed segments: each entry gives the byte length of
//! the segment prefix that holds them (through record `lsn` for the last one) and the CRC-32 of
//! that prefix, so a restore can prove the log it replays is the one the checkpoint saw. The file
//! is written to a temporary name, fsynced, renamed and the directory fsynced: a final-named
//! manifest is complete.

use super::record::{put_varint, Reader};
use super::{get_u32, put_u32};

/// Identifies a manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"SJCKPT\0\0";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
const VERSION_OFFSET: usize = 8;
const LEN_OFFSET: usize = VERSION_OFFSET + 4;
const CRC_OFFSET: usize = LEN_OFFSET + 4;
const RESERVED_OFFSET: usize = CRC_OFFSET + 4;
/// Bytes before the body.
pub const MANIFEST_HEADER_LEN: usize = RESERVED_OFFSET + 4;

/// The snapshot a checkpoint builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// The LSN it covers.
    pub lsn: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Its file name in the journal directory.
    pub file: String,
}

/// A segment prefix a checkpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRef {
    /// The segment's id.
    pub id: u64,
    /// The LSN of its first record.
    pub base_lsn: u64,
    /// Bytes of the prefix the checkpoint needs (header included).
    pub len: u64,
    /// CRC-32 of that prefix.
    pub crc: u32,
}

/// A registered state, as of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRef {
    /// Its id.
    pub id: u32,
    /// Kind code (1 value, 2 list, 3 map, 4 reducing, 5 aggregating).
    pub kind: u8,
    /// Bit 0: TTL refreshed on read.
    pub flags: u8,
    /// Time-to-live in milliseconds (0: none).
    pub ttl_millis: u64,
    /// Its name.
    pub name: String,
}

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Checkpoint id (increasing).
    pub id: u64,
    /// The LSN the checkpoint covers: its state is every record through it.
    pub lsn: u64,
    /// Identity of the log the segments belong to.
    pub log_id: u64,
    /// When it was taken (milliseconds of the journal's clock).
    pub created_millis: u64,
    /// The journal's number of key groups.
    pub max_key_groups: u16,
    /// First key group the checkpoint holds.
    pub kg_start: u16,
    /// One past the last key group it holds.
    pub kg_end: u16,
    /// The snapshot it builds on (`None`: the log from LSN 1).
    pub snapshot: Option<SnapshotRef>,
    /// Segment prefixes holding the records after the snapshot, oldest first.
    pub segments: Vec<SegmentRef>,
    /// The state registry.
    pub states: Vec<StateRef>,
}

/// Why a manifest did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestError {
    /// Shorter than its header or its stated body.
    Truncated,
    /// Not our magic.
    BadMagic,
    /// Written by a newer format.
    UnsupportedVersion(u32),
    /// The body's checksum does not match.
    Checksum {
        /// Computed CRC.
        computed: u32,
        /// Stored CRC.
        stored: u32,
    },
    /// A field is malformed or out of range.
    Invalid(&'static str),
}

impl ManifestError {
    /// The byte offset of the damaged structure, for error messages: the magic (0), the version
    /// (8), the body length that disagrees with the file (12), the CRC that disagrees with the
    /// body (16), the reserved header bytes (20), or the body (24) for a field inside it.
    pub fn offset(&self) -> usize {
        match self {
            ManifestError::BadMagic => 0,
            ManifestError::UnsupportedVersion(_) => VERSION_OFFSET,
            ManifestError::Truncated | ManifestError::Invalid(BYTES_AFTER_BODY) => LEN_OFFSET,
            ManifestError::Checksum { .. } => CRC_OFFSET,
            ManifestError::Invalid(RESERVED_NOT_ZERO) => RESERVED_OFFSET,
            ManifestError::Invalid(_) => MANIFEST_HEADER_LEN,
        }
    }
}

const BYTES_AFTER_BODY: &str = "bytes after the body";
const RESERVED_NOT_ZERO: &str = "reserved header bytes are not zero";

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Truncated => write!(f, "truncated"),
            ManifestError::BadMagic => write!(f, "not a statejournal manifest (bad magic)"),
            ManifestError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            ManifestError::Checksum { computed, stored } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            ManifestError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl Manifest {
    /// The encoded file.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(128 + 40 * self.segments.len());
        for v in [self.id, self.lsn, self.log_id, self.created_millis] {
            put_varint(&mut body, v);
        }
        for v in [self.max_key_groups, self.kg_start, self.kg_end] {
            put_varint(&mut body, v.into());
        }
        match &self.snapshot {
            None => body.push(0),
            Some(s) => {
                body.push(1);
                put_varint(&mut body, s.lsn);
                put_varint(&mut body, s.len);
                put_bytes(&mut body, s.file.as_bytes());
            }
        }
        put_varint(&mut body, self.segments.len() as u64);
        for s in &self.segments {
            put_varint(&mut body, s.id);
            put_varint(&mut body, s.base_lsn);
            put_varint(&mut body, s.len);
            put_varint(&mut body, s.crc.into());
        }
        put_varint(&mut body, self.states.len() as u64);
        for s in &self.states {
            put_varint(&mut body, s.id.into());
            body.push(s.kind);
            body.push(s.flags);
            put_varint(&mut body, s.ttl_millis);
            put_bytes(&mut body, s.name.as_bytes());
        }
        let mut out = vec![0u8; MANIFEST_HEADER_LEN];
        out[..8].copy_from_slice(&MANIFEST_MAGIC);
        put_u32(&mut out, VERSION_OFFSET, MANIFEST_VERSION);
        put_u32(&mut out, LEN_OFFSET, body.len() as u32);
        put_u32(&mut out, CRC_OFFSET, crc32fast::hash(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a manifest file. Never panics; rejects trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Manifest, ManifestError> {
        if buf.len() < MANIFEST_HEADER_LEN {
            return Err(ManifestError::Truncated);
        }
        if buf[..8] != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = get_u32(buf, VERSION_OFFSET).ok_or(ManifestError::Truncated)?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let len = get_u32(buf, LEN_OFFSET).ok_or(ManifestError::Truncated)? as usize;
        let stored = get_u32(buf, CRC_OFFSET).ok_or(ManifestError::Truncated)?;
        if get_u32(buf, RESERVED_OFFSET) != Some(0) {
            return Err(ManifestError::Invalid(RESERVED_NOT_ZERO));
        }
        let body = &buf[MANIFEST_HEADER_LEN..];
        if body.len() < len {
            return Err(ManifestError::Truncated);
        }
        if body.len() > len {
            return Err(ManifestError::Invalid(BYTES_AFTER_BODY));
        }
        let computed = crc32fast::hash(body);
        if computed != stored {
            return Err(ManifestError::Checksum { computed, stored });
        }
        decode_body(body).map_err(|e| ManifestError::Invalid(e.what))
    }
}

fn decode_body(body: &[u8]) -> Result<Manifest, super::record::RecordError> {
    let bad = |what| super::record::RecordError { offset: 0, what };
    let mut r = Reader::new(body);
    let v64 = |r: &mut Reader<'_>| r.varint(10);
    let v16 = |r: &mut Reader<'_>| {
        let v = r.varint(3)?;
        u16::try_from(v).map_err(|_| bad("a key-group field exceeds 16 bits"))
    };
    let v32 = |r: &mut Reader<'_>| {
        let v = r.varint(5)?;
        u32::try_from(v).map_err(|_| bad("a field exceeds 32 bits"))
    };
    let text = |r: &mut Reader<'_>| {
        let b = r.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    };
    let (id, lsn, log_id, created_millis) =
        (v64(&mut r)?, v64(&mut r)?, v64(&mut r)?, v64(&mut r)?);
    let (max_key_groups, kg_start, kg_end) = (v16(&mut r)?, v16(&mut r)?, v16(&mut r)?);
    if max_key_groups == 0 || kg_start >= kg_end || kg_end > max_key_groups {
        return Err(bad("key-group range"));
    }
    let snapshot = match r.u8()? {
        0 => None,
        1 => Some(SnapshotRef {
            lsn: v64(&mut r)?,
            len: v64(&mut r)?,
            file: text(&mut r)?,
        }),
        _ => return Err(bad("snapshot flag")),
    };
    if snapshot.as_ref().is_some_and(|s| s.lsn > lsn) {
        return Err(bad("the snapshot is newer than the checkpoint"));
    }
    let n = v32(&mut r)?;
    let mut segments = Vec::new();
    for _ in 0..n {
        segments.push(SegmentRef {
            id: v64(&mut r)?,
            base_lsn: v64(&mut r)?,
            len: v64(&mut r)?,
            crc: v32(&mut r)?,
        });
        if r.is_empty() && segments.len() < n as usize {
            return Err(bad("truncated segment list"));
        }
    }
    let n = v32(&mut r)?;
    let mut states = Vec::new();
    for i in 0..n {
        let id = v32(&mut r)?;
        if id != i {
            return Err(bad("state ids are not dense"));
        }
        states.push(StateRef {
            id,
            kind: r.u8()?,
            flags: r.u8()?,
            ttl_millis: v64(&mut r)?,
            name: text(&mut r)?,
        });
    }
    if !r.is_empty() {
        return Err(bad("bytes after the state list"));
    }
    Ok(Manifest {
        id,
        lsn,
        log_id,
        created_millis,
        max_key_groups,
        kg_start,
        kg_end,
        snapshot,
        segments,
        states,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            id: 7,
            lsn: 12_345,
            log_id: 0xdead_beef_1234,
            created_millis: 1_700_000_000_000,
            max_key_groups: 128,
            kg_start: 0,
            kg_end: 128,
            snapshot: Some(SnapshotRef {
                lsn: 10_000,
                len: 1 << 20,
                file: "00000000000000010000.snap".into(),
            }),
            segments: vec![
                SegmentRef {
                    id: 3,
                    base_lsn: 9_000,
                    len: 64 << 20,
                    crc: 0x1234_5678,
                },
                SegmentRef {
                    id: 4,
                    base_lsn: 11_000,
                    len: 4096,
                    crc: 7,
                },
            ],
            states: vec![StateRef {
                id: 0,
                kind: 3,
                flags: 1,
                ttl_millis: 60_000,
                name: "windows".into(),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m.clone()));
        let empty = Manifest {
            snapshot: None,
            segments: vec![],
            states: vec![],
            ..m
        };
        assert_eq!(Manifest::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                Manifest::decode(&b).is_err(),
                "flip of bit {i} not detected"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..len]).is_err(),
                "truncation to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Manifest::decode(&longer).is_err());
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut b = sample().encode();
        put_u32(&mut b, VERSION_OFFSET, MANIFEST_VERSION + 1);
        assert_eq!(
            Manifest::decode(&b),
            Err(ManifestError::UnsupportedVersion(MANIFEST_VERSION + 1))
        );
    }

    #[test]
    fn every_flipped_bit_is_detected_at_or_before_its_byte() {
        let good = sample().encode();
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                let e = Manifest::decode(&bad).expect_err("a flipped bit is detected");
                assert!(
                    e.offset() <= at,
                    "byte {at} bit {bit}: {e} at {}",
                    e.offset()
                );
            }
        }
        let mut bad = good.clone();
        bad[MANIFEST_HEADER_LEN + 3] ^= 1;
        assert_eq!(
            Manifest::decode(&bad).map_err(|e| e.offset()),
            Err(CRC_OFFSET)
        );
        let mut bad = good;
        bad[RESERVED_OFFSET] = 1;
        assert_eq!(
            Manifest::decode(&bad).map_err(|e| e.offset()),
            Err(RESERVED_OFFSET)
        );
    }
}
