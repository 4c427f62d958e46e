//! How keys, namespaces and values become bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes keys, namespaces and values of states to bytes and back.
///
/// The encoding of a key is what its key group is computed from, so a journal must be reopened
/// with the codec that wrote it.
pub trait Codec: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>)
        -> Result<(), CodecError>;
    /// Decodes a whole `T` from `bytes` (trailing bytes are an error: they mean another type).
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// The default codec: [postcard](https://docs.rs/postcard), a compact, stable (its wire format is
/// specified and frozen at 1.0), allocation-free serde format with varint integers. It is
/// several times smaller than bincode's fixed-width integers for the small keys and counters of
/// streaming state, and fast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let buf = std::mem::take(out);
        match postcard::to_extend(value, buf) {
            Ok(buf) => {
                *out = buf;
                Ok(())
            }
            Err(e) => Err(CodecError(e.to_string())),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CodecError(format!(
                "{} bytes left over after the value: it was written as another type",
                rest.len()
            )));
        }
        Ok(value)
    }
}
