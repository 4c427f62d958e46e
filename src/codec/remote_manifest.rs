//! Remote checkpoint manifests (`manifests/{seq:020}.sjrm` in an object store): what a checkpoint
//! pushed by `statejournal::remote` (feature `remote`) consists of. Encoded and decoded over byte slices, no I/O.
//!
//! ```text
//! offset size field
//!      0    8 magic     b"SJRMANIF"
//!      8    4 version   REMOTE_MANIFEST_VERSION of the writer
//!     12    4 body_len  bytes of the body
//!     16    4 crc       CRC-32 of the body
//!     20    4 reserved  0
//!     24    … body
//!
//! body := seq:v64 epoch:v64 checkpoint_id:v64 lsn:v64 log_id:v64 created_millis:v64
//!         local_manifest:bytes
//!         has_snapshot:u8 [lsn:v64 len:v64 crc:v32 xxh3:v64 object:bytes]
//!         segment_count:v32 segment*
//! segment := id:v64 base_lsn:v64 file_len:v64 len:v64 crc:v32
//!            chunk_count:v32 (start:v64 end:v64 crc:v32 xxh3:v64 object:bytes)*
//! ```
//!
//! `local_manifest` is the checkpoint's own manifest file (`{id:020}.ckpt`, see
//! [`super::manifest`]) byte for byte: a restore writes it back unchanged. Each segment's chunks
//! are contiguous byte ranges of the segment file covering exactly `[0, len)`; `crc` of a segment
//! is the CRC-32 of that whole prefix, and `file_len` the length of the local segment file (a
//! restore pads the prefix with zeros to it, so the restored log has the same room to append).

use super::manifest::ManifestError;
use super::record::{put_varint, Reader, RecordError};
use super::{get_u32, put_u32};

/// Identifies a remote manifest.
pub const REMOTE_MANIFEST_MAGIC: [u8; 8] = *b"SJRMANIF";
/// The remote manifest version this build writes and reads.
pub const REMOTE_MANIFEST_VERSION: u32 = 1;
const VERSION_OFFSET: usize = 8;
const LEN_OFFSET: usize = VERSION_OFFSET + 4;
const CRC_OFFSET: usize = LEN_OFFSET + 4;
const RESERVED_OFFSET: usize = CRC_OFFSET + 4;
/// Bytes before the body.
pub const REMOTE_MANIFEST_HEADER_LEN: usize = RESERVED_OFFSET + 4;

/// The snapshot object of a remote checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    /// The LSN it covers.
    pub lsn: u64,
    /// Its length in bytes.
    pub len: u64,
    /// CRC-32 of the whole file.
    pub crc: u32,
    /// XXH3-64 of the whole file (part of the object name: content addressing).
    pub xxh3: u64,
    /// The object's key, relative to the store's prefix.
    pub object: String,
}

/// One immutable byte range of a segment file, stored as one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// First byte of the range in the segment file.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
    /// CRC-32 of the range.
    pub crc: u32,
    /// XXH3-64 of the range.
    pub xxh3: u64,
    /// The object's key, relative to the store's prefix.
    pub object: String,
}

/// A segment prefix of a remote checkpoint, as the chunks that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSegment {
    /// The segment's id (its file name).
    pub id: u64,
    /// The LSN of its first record.
    pub base_lsn: u64,
    /// Length of the local segment file.
    pub file_len: u64,
    /// Bytes of the prefix the checkpoint needs (header included).
    pub len: u64,
    /// CRC-32 of that prefix.
    pub crc: u32,
    /// The chunks, in order, covering `[0, len)`.
    pub chunks: Vec<Chunk>,
}

/// A decoded remote manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    /// Position in the store's sequence of checkpoints (1, 2, ...): the object name.
    pub seq: u64,
    /// Epoch of the writer that published it.
    pub epoch: u64,
    /// The local checkpoint id.
    pub checkpoint_id: u64,
    /// The checkpoint's LSN.
    pub lsn: u64,
    /// Identity of the log.
    pub log_id: u64,
    /// When the local checkpoint was taken (journal clock, milliseconds).
    pub created_millis: u64,
    /// The local manifest file, byte for byte.
    pub local_manifest: Vec<u8>,
    /// The snapshot, if the checkpoint has one.
    pub snapshot: Option<RemoteSnapshot>,
    /// The log segments after the snapshot (at least the one holding record `lsn`).
    pub segments: Vec<RemoteSegment>,
}

impl RemoteManifest {
    /// Every object key the manifest names (its own excluded).
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.snapshot.iter().map(|s| s.object.as_str()).chain(
            self.segments
                .iter()
                .flat_map(|s| s.chunks.iter().map(|c| c.object.as_str())),
        )
    }

    /// The encoded object.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256 + self.local_manifest.len());
        for v in [
            self.seq,
            self.epoch,
            self.checkpoint_id,
            self.lsn,
            self.log_id,
            self.created_millis,
        ] {
            put_varint(&mut body, v);
        }
        put_bytes(&mut body, &self.local_manifest);
        match &self.snapshot {
            None => body.push(0),
            Some(s) => {
                body.push(1);
                put_varint(&mut body, s.lsn);
                put_varint(&mut body, s.len);
                put_varint(&mut body, s.crc.into());
                put_varint(&mut body, s.xxh3);
                put_bytes(&mut body, s.object.as_bytes());
            }
        }
        put_varint(&mut body, self.segments.len() as u64);
        for s in &self.segments {
            for v in [s.id, s.base_lsn, s.file_len, s.len, s.crc.into()] {
                put_varint(&mut body, v);
            }
            put_varint(&mut body, s.chunks.len() as u64);
            for c in &s.chunks {
                for v in [c.start, c.end, c.crc.into(), c.xxh3] {
                    put_varint(&mut body, v);
                }
                put_bytes(&mut body, c.object.as_bytes());
            }
        }
        let mut out = vec![0u8; REMOTE_MANIFEST_HEADER_LEN];
        out[..8].copy_from_slice(&REMOTE_MANIFEST_MAGIC);
        put_u32(&mut out, VERSION_OFFSET, REMOTE_MANIFEST_VERSION);
        put_u32(&mut out, LEN_OFFSET, body.len() as u32);
        put_u32(&mut out, CRC_OFFSET, crc32fast::hash(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a remote manifest. Never panics; rejects trailing bytes, chunks that do not
    /// exactly tile their segment's prefix, and a snapshot newer than the checkpoint.
    pub fn decode(buf: &[u8]) -> Result<RemoteManifest, ManifestError> {
        if buf.len() < REMOTE_MANIFEST_HEADER_LEN {
            return Err(ManifestError::Truncated);
        }
        if buf[..8] != REMOTE_MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = get_u32(buf, VERSION_OFFSET).ok_or(ManifestError::Truncated)?;
        if version != REMOTE_MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let len = get_u32(buf, LEN_OFFSET).ok_or(ManifestError::Truncated)? as usize;
        let stored = get_u32(buf, CRC_OFFSET).ok_or(ManifestError::Truncated)?;
        if get_u32(buf, RESERVED_OFFSET) != Some(0) {
            return Err(ManifestError::Invalid("reserved header bytes are not zero"));
        }
        let body = &buf[REMOTE_MANIFEST_HEADER_LEN..];
        if body.len() < len {
            return Err(ManifestError::Truncated);
        }
        if body.len() > len {
            return Err(ManifestError::Invalid("bytes after the body"));
        }
        let computed = crc32fast::hash(body);
        if computed != stored {
            return Err(ManifestError::Checksum { computed, stored });
        }
        decode_body(body).map_err(|e| ManifestError::Invalid(e.what))
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn decode_body(body: &[u8]) -> Result<RemoteManifest, RecordError> {
    let bad = |what| RecordError { offset: 0, what };
    let mut r = Reader::new(body);
    let v64 = |r: &mut Reader<'_>| r.varint(10);
    let v32 = |r: &mut Reader<'_>| {
        let v = r.varint(5)?;
        u32::try_from(v).map_err(|_| bad("a field exceeds 32 bits"))
    };
    let text = |r: &mut Reader<'_>| {
        let b = r.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| bad("an object name is not UTF-8"))
    };
    let seq = v64(&mut r)?;
    let epoch = v64(&mut r)?;
    let checkpoint_id = v64(&mut r)?;
    let lsn = v64(&mut r)?;
    let log_id = v64(&mut r)?;
    let created_millis = v64(&mut r)?;
    let local_manifest = r.bytes()?.to_vec();
    let snapshot = match r.u8()? {
        0 => None,
        1 => Some(RemoteSnapshot {
            lsn: v64(&mut r)?,
            len: v64(&mut r)?,
            crc: v32(&mut r)?,
            xxh3: v64(&mut r)?,
            object: text(&mut r)?,
        }),
        _ => return Err(bad("snapshot flag")),
    };
    if snapshot.as_ref().is_some_and(|s| s.lsn > lsn) {
        return Err(bad("the snapshot is newer than the checkpoint"));
    }
    let n = v32(&mut r)?;
    let mut segments = Vec::new();
    for _ in 0..n {
        let (id, base_lsn, file_len, len) =
            (v64(&mut r)?, v64(&mut r)?, v64(&mut r)?, v64(&mut r)?);
        let crc = v32(&mut r)?;
        let chunk_count = v32(&mut r)?;
        let mut chunks = Vec::new();
        let mut at = 0;
        for _ in 0..chunk_count {
            let c = Chunk {
                start: v64(&mut r)?,
                end: v64(&mut r)?,
                crc: v32(&mut r)?,
                xxh3: v64(&mut r)?,
                object: text(&mut r)?,
            };
            if c.start != at || c.end <= c.start {
                return Err(bad("a segment's chunks do not tile its prefix"));
            }
            at = c.end;
            chunks.push(c);
        }
        if at != len || len > file_len {
            return Err(bad("a segment's chunks do not tile its prefix"));
        }
        segments.push(RemoteSegment {
            id,
            base_lsn,
            file_len,
            len,
            crc,
            chunks,
        });
    }
    if !r.is_empty() {
        return Err(bad("bytes after the segment list"));
    }
    Ok(RemoteManifest {
        seq,
        epoch,
        checkpoint_id,
        lsn,
        log_id,
        created_millis,
        local_manifest,
        snapshot,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RemoteManifest {
        RemoteManifest {
            seq: 4,
            epoch: 2,
            checkpoint_id: 9,
            lsn: 5_000,
            log_id: 0xfeed_f00d,
            created_millis: 1_700_000_000_000,
            local_manifest: b"SJCKPT\0\0 stand-in".to_vec(),
            snapshot: Some(RemoteSnapshot {
                lsn: 4_000,
                len: 1 << 20,
                crc: 0xdead_beef,
                xxh3: u64::MAX - 3,
                object: "snapshots/x.snap".into(),
            }),
            segments: vec![RemoteSegment {
                id: 3,
                base_lsn: 3_900,
                file_len: 64 << 20,
                len: 8192,
                crc: 7,
                chunks: vec![
                    Chunk {
                        start: 0,
                        end: 4096,
                        crc: 1,
                        xxh3: 2,
                        object: "log/a.chunk".into(),
                    },
                    Chunk {
                        start: 4096,
                        end: 8192,
                        crc: 3,
                        xxh3: 4,
                        object: "log/b.chunk".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(RemoteManifest::decode(&m.encode()), Ok(m.clone()));
        let bare = RemoteManifest {
            snapshot: None,
            segments: vec![],
            ..m
        };
        assert_eq!(RemoteManifest::decode(&bare.encode()), Ok(bare));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(RemoteManifest::decode(&b).is_err(), "flip of bit {i}");
        }
        for len in 0..bytes.len() {
            assert!(RemoteManifest::decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn chunks_must_tile_the_prefix() {
        let mut m = sample();
        m.segments[0].chunks[1].start = 4000; // overlap
        assert!(RemoteManifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.segments[0].len = 9000; // a gap at the end
        assert!(RemoteManifest::decode(&m.encode()).is_err());
    }
}
