//! State mutation records: the payload of every log record a [`Journal`](crate::Journal) writes.
//!
//! ```text
//! record  := version:u8 (=1) op+          one record = one atomic unit (a write batch)
//! op      := tag:u8 fields
//!   1 Init        max_key_groups:u16
//!   2 Register    state_id:v32 kind:u8 flags:u8 ttl_millis:v64 name:bytes
//!   3 Put         state_id:v32 kg:u16 key:bytes value:bytes
//!   4 Delete      state_id:v32 kg:u16 key:bytes
//!   5 Append      state_id:v32 kg:u16 key:bytes expiry:v64 element:bytes
//!   6 ClearState  state_id:v32
//!   7 MapPut      state_id:v32 kg:u16 key:bytes map_key:bytes value:bytes
//!   8 MapRemove   state_id:v32 kg:u16 key:bytes map_key:bytes
//! bytes   := len:v32 byte*
//! v32/v64 := unsigned LEB128 (at most 5 / 10 bytes); u16 little-endian
//! ```
//!
//! `key` is the composite key the tables use: `len:v32 key_bytes namespace_bytes`, both encoded by
//! the journal's codec. Values of states with a time-to-live start with their expiry time
//! (`u64` little-endian, milliseconds of the journal's clock). Decoding never panics and never
//! reads past the slice; it borrows from it.

/// The record format version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;

const TAG_INIT: u8 = 1;
const TAG_REGISTER: u8 = 2;
const TAG_PUT: u8 = 3;
const TAG_DELETE: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_CLEAR_STATE: u8 = 6;
const TAG_MAP_PUT: u8 = 7;
const TAG_MAP_REMOVE: u8 = 8;

/// One state mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// The first record of a journal: its fixed number of key groups.
    Init {
        /// Key groups of the journal, fixed for its life.
        max_key_groups: u16,
    },
    /// A state was registered.
    Register {
        /// Its id (dense, from 0).
        state_id: u32,
        /// Its kind.
        kind: u8,
        /// Bit 0: refresh the time-to-live on read.
        flags: u8,
        /// Time-to-live in milliseconds (0: none).
        ttl_millis: u64,
        /// Its name.
        name: &'a [u8],
    },
    /// Set the value of a key (value, reducing and aggregating states; list replace).
    Put {
        /// State.
        state_id: u32,
        /// Key group of the key.
        kg: u16,
        /// Composite key.
        key: &'a [u8],
        /// Stored value.
        value: &'a [u8],
    },
    /// Remove a key (of any state kind; for maps, all its entries).
    Delete {
        /// State.
        state_id: u32,
        /// Key group.
        kg: u16,
        /// Composite key.
        key: &'a [u8],
    },
    /// Append one encoded element to a list.
    Append {
        /// State.
        state_id: u32,
        /// Key group.
        kg: u16,
        /// Composite key.
        key: &'a [u8],
        /// New expiry of the list (0: the state has no time-to-live).
        expiry: u64,
        /// The element, already length-prefixed as stored in the list.
        element: &'a [u8],
    },
    /// Remove every key of a state.
    ClearState {
        /// State.
        state_id: u32,
    },
    /// Put one entry of a map.
    MapPut {
        /// State.
        state_id: u32,
        /// Key group.
        kg: u16,
        /// Composite key.
        key: &'a [u8],
        /// The map's key.
        map_key: &'a [u8],
        /// Stored value.
        value: &'a [u8],
    },
    /// Remove one entry of a map.
    MapRemove {
        /// State.
        state_id: u32,
        /// Key group.
        kg: u16,
        /// Composite key.
        key: &'a [u8],
        /// The map's key.
        map_key: &'a [u8],
    },
}

/// Why a record did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordError {
    /// Byte offset within the record payload.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {} of the record", self.what, self.offset)
    }
}

/// Appends unsigned LEB128.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Starts a record (writes the version byte) into an empty or cleared buffer.
pub fn begin_record(out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_VERSION);
}

/// The key an op addresses: its state, key group and composite key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTarget<'a> {
    /// The state.
    pub state_id: u32,
    /// The key's key group.
    pub kg: u16,
    /// The composite key (key and namespace).
    pub key: &'a [u8],
}

impl<'a> Op<'a> {
    /// The key the op addresses; `None` for the ops that address no key (`Init`, `Register`,
    /// `ClearState`).
    #[inline]
    pub fn target(&self) -> Option<OpTarget<'a>> {
        match *self {
            Op::Put {
                state_id, kg, key, ..
            }
            | Op::Delete {
                state_id, kg, key, ..
            }
            | Op::Append {
                state_id, kg, key, ..
            }
            | Op::MapPut {
                state_id, kg, key, ..
            }
            | Op::MapRemove {
                state_id, kg, key, ..
            } => Some(OpTarget { state_id, kg, key }),
            Op::Init { .. } | Op::Register { .. } | Op::ClearState { .. } => None,
        }
    }
}

impl Op<'_> {
    /// The state the op changes; `None` for `Init` and `Register`.
    pub fn state_id(&self) -> Option<u32> {
        match *self {
            Op::Put { state_id, .. }
            | Op::Delete { state_id, .. }
            | Op::Append { state_id, .. }
            | Op::MapPut { state_id, .. }
            | Op::MapRemove { state_id, .. }
            | Op::ClearState { state_id } => Some(state_id),
            Op::Init { .. } | Op::Register { .. } => None,
        }
    }

    /// Appends the op's encoding to a record started with [`begin_record`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Init { max_key_groups } => {
                out.push(TAG_INIT);
                out.extend_from_slice(&max_key_groups.to_le_bytes());
            }
            Op::Register {
                state_id,
                kind,
                flags,
                ttl_millis,
                name,
            } => {
                out.push(TAG_REGISTER);
                put_varint(out, state_id.into());
                out.push(kind);
                out.push(flags);
                put_varint(out, ttl_millis);
                put_bytes(out, name);
            }
            Op::Put {
                state_id,
                kg,
                key,
                value,
            } => {
                out.push(TAG_PUT);
                put_varint(out, state_id.into());
                out.extend_from_slice(&kg.to_le_bytes());
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { state_id, kg, key } => {
                out.push(TAG_DELETE);
                put_varint(out, state_id.into());
                out.extend_from_slice(&kg.to_le_bytes());
                put_bytes(out, key);
            }
            Op::Append {
                state_id,
                kg,
                key,
                expiry,
                element,
            } => {
                out.push(TAG_APPEND);
                put_varint(out, state_id.into());
                out.extend_from_slice(&kg.to_le_bytes());
                put_bytes(out, key);
                put_varint(out, expiry);
                put_bytes(out, element);
            }
            Op::ClearState { state_id } => {
                out.push(TAG_CLEAR_STATE);
                put_varint(out, state_id.into());
            }
            Op::MapPut {
                state_id,
                kg,
                key,
                map_key,
                value,
            } => {
                out.push(TAG_MAP_PUT);
                put_varint(out, state_id.into());
                out.extend_from_slice(&kg.to_le_bytes());
                put_bytes(out, key);
                put_bytes(out, map_key);
                put_bytes(out, value);
            }
            Op::MapRemove {
                state_id,
                kg,
                key,
                map_key,
            } => {
                out.push(TAG_MAP_REMOVE);
                put_varint(out, state_id.into());
                out.extend_from_slice(&kg.to_le_bytes());
                put_bytes(out, key);
                put_bytes(out, map_key);
            }
        }
    }
}

/// A cursor over a byte slice; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn err(&self, what: &'static str) -> RecordError {
        RecordError {
            offset: self.pos,
            what,
        }
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, RecordError> {
        let b = *self.buf.get(self.pos).ok_or(self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 2)
            .ok_or(self.err("truncated"))?;
        self.pos += 2;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes.
    pub fn varint(&mut self, max_bytes: usize) -> Result<u64, RecordError> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                self.pos = start;
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.pos = start;
        Err(self.err("varint too long"))
    }

    fn v32(&mut self) -> Result<u32, RecordError> {
        let v = self.varint(5)?;
        u32::try_from(v).map_err(|_| self.err("varint overflows 32 bits"))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.v32()? as usize;
        let b = self
            .buf
            .get(self.pos..self.pos.saturating_add(len))
            .ok_or(self.err("length runs past the end"))?;
        self.pos += len;
        Ok(b)
    }

    /// The remaining bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        r
    }
}

/// Iterates over the ops of a record payload.
pub fn decode_record(payload: &[u8]) -> Result<OpIter<'_>, RecordError> {
    let mut r = Reader::new(payload);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(RecordError {
            offset: 0,
            what: "unknown record version",
        });
    }
    if r.is_empty() {
        return Err(RecordError {
            offset: 1,
            what: "a record holds no op",
        });
    }
    Ok(OpIter { r, failed: false })
}

/// Iterator over the ops of a record. See [`decode_record`].
#[derive(Debug, Clone)]
pub struct OpIter<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> OpIter<'a> {
    fn op(&mut self) -> Result<Op<'a>, RecordError> {
        let r = &mut self.r;
        let tag_at = r.offset();
        Ok(match r.u8()? {
            TAG_INIT => Op::Init {
                max_key_groups: r.u16()?,
            },
            TAG_REGISTER => Op::Register {
                state_id: r.v32()?,
                kind: r.u8()?,
                flags: r.u8()?,
                ttl_millis: r.varint(10)?,
                name: r.bytes()?,
            },
            TAG_PUT => Op::Put {
                state_id: r.v32()?,
                kg: r.u16()?,
                key: r.bytes()?,
                value: r.bytes()?,
            },
            TAG_DELETE => Op::Delete {
                state_id: r.v32()?,
                kg: r.u16()?,
                key: r.bytes()?,
            },
            TAG_APPEND => Op::Append {
                state_id: r.v32()?,
                kg: r.u16()?,
                key: r.bytes()?,
                expiry: r.varint(10)?,
                element: r.bytes()?,
            },
            TAG_CLEAR_STATE => Op::ClearState { state_id: r.v32()? },
            TAG_MAP_PUT => Op::MapPut {
                state_id: r.v32()?,
                kg: r.u16()?,
                key: r.bytes()?,
                map_key: r.bytes()?,
                value: r.bytes()?,
            },
            TAG_MAP_REMOVE => Op::MapRemove {
                state_id: r.v32()?,
                kg: r.u16()?,
                key: r.bytes()?,
                map_key: r.bytes()?,
            },
            _ => {
                return Err(RecordError {
                    offset: tag_at,
                    what: "unknown op tag",
                })
            }
        })
    }
}

impl<'a> Iterator for OpIter<'a> {
    type Item = Result<Op<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let op = self.op();
        self.failed = op.is_err();
        Some(op)
    }
}

/// Builds the composite key `len:v32 key namespace` into `out` (cleared first). Returns the
/// length of the prefix plus key (where the namespace starts).
#[inline]
pub fn composite_key(out: &mut Vec<u8>, key: &[u8], namespace: &[u8]) -> usize {
    out.clear();
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    let ns_start = out.len();
    out.extend_from_slice(namespace);
    ns_start
}

/// Splits a composite key into (key, namespace).
pub fn split_composite(composite: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    let mut r = Reader::new(composite);
    let len = r.v32()? as usize;
    let start = r.offset();
    let key = composite
        .get(start..start.saturating_add(len))
        .ok_or(RecordError {
            offset: start,
            what: "composite key length runs past the end",
        })?;
    Ok((key, &composite[start + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ops() -> Vec<Op<'static>> {
        vec![
            Op::Init {
                max_key_groups: 128,
            },
            Op::Register {
                state_id: 3,
                kind: 2,
                flags: 1,
                ttl_millis: 60_000,
                name: b"clicks",
            },
            Op::Put {
                state_id: 0,
                kg: 7,
                key: b"\x02ab",
                value: b"value",
            },
            Op::Delete {
                state_id: 300,
                kg: 65535,
                key: b"",
            },
            Op::Append {
                state_id: 1,
                kg: 0,
                key: b"\x01k",
                expiry: u64::MAX,
                element: b"\x03xyz",
            },
            Op::ClearState { state_id: u32::MAX },
            Op::MapPut {
                state_id: 2,
                kg: 9,
                key: b"\x01k",
                map_key: b"mk",
                value: b"",
            },
            Op::MapRemove {
                state_id: 2,
                kg: 9,
                key: b"\x01k",
                map_key: b"mk",
            },
        ]
    }

    #[test]
    fn every_op_round_trips_alone_and_in_a_batch() {
        let mut batch = Vec::new();
        begin_record(&mut batch);
        for op in all_ops() {
            let mut one = Vec::new();
            begin_record(&mut one);
            op.encode(&mut one);
            op.encode(&mut batch);
            let got: Vec<_> = decode_record(&one)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, vec![op]);
        }
        let got: Vec<_> = decode_record(&batch)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, all_ops());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut batch = Vec::new();
        begin_record(&mut batch);
        for op in all_ops() {
            op.encode(&mut batch);
        }
        for cut in 0..batch.len() {
            let res: Result<Vec<_>, _> = match decode_record(&batch[..cut]) {
                Ok(it) => it.collect(),
                Err(e) => Err(e),
            };
            // A cut exactly between two ops decodes as a shorter batch; anywhere else it fails.
            if let Ok(ops) = res {
                assert!(ops.len() < all_ops().len());
            }
        }
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[2, 1]).is_err());
        assert!(decode_record(&[1]).is_err());
        assert!(decode_record(&[1, 99]).unwrap().next().unwrap().is_err());
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Reader::new(&b).varint(10), Ok(v));
        }
        assert!(Reader::new(&[0xff; 11]).varint(10).is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint(10)
                .is_err()
        );
    }

    #[test]
    fn composite_keys_split_back() {
        let mut c = Vec::new();
        let ns_at = composite_key(&mut c, b"key", b"window-7");
        assert_eq!(&c[ns_at..], b"window-7");
        assert_eq!(split_composite(&c), Ok((&b"key"[..], &b"window-7"[..])));
        assert!(split_composite(&[9, 1]).is_err());
    }
}
