//! Little-endian field encoding shared by the message codecs: append helpers for encoding, and a
//! bounds-checked reader for decoding that slices byte fields out of a shared `Bytes` (no copy)
//! and reports every shortfall as a [`CodecError`] instead of panicking.

use bytes::Bytes;

use super::CodecError;

/// Appends a `u16`.
pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u32`.
pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u64`.
pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a bool as one byte (0 or 1).
pub(crate) fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

/// Appends a `u32` length and the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len())
        .unwrap_or_else(|_| panic!("field of {} bytes exceeds u32", value.len()));
    put_u32(out, len);
    out.extend_from_slice(value);
}

/// Reads fields front to back from a frame body.
pub(crate) struct WireReader<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl<'a> WireReader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a Bytes) -> WireReader<'a> {
        WireReader { bytes, pos: 0 }
    }

    /// Takes the next `len` bytes as a borrowed slice.
    pub(crate) fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let left = self.bytes.len() - self.pos;
        if len > left {
            return Err(CodecError::Truncated {
                what,
                needed: len,
                offset: self.pos,
                left,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Takes the next `len` bytes as a shared slice of the body.
    pub(crate) fn take_shared(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<Bytes, CodecError> {
        let start = self.pos;
        self.take(len, what)?;
        Ok(self.bytes.slice(start..start + len))
    }

    /// Reads a `u8`.
    /// Runs a decoder that reads from the front of a slice over the bytes left, and moves past
    /// what it consumed.
    pub(crate) fn decode_with<T, E>(
        &mut self,
        decode: impl FnOnce(&mut &'a [u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        let bytes: &'a Bytes = self.bytes;
        let mut rest: &'a [u8] = &bytes[self.pos..];
        let before = rest.len();
        let value = decode(&mut rest)?;
        self.pos += before - rest.len();
        Ok(value)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a `u16`.
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    /// Reads a `u32`.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    /// Reads a `u64`.
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// Reads a bool; any byte other than 0 or 1 is an error.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(CodecError::NotBool { what, byte }),
        }
    }

    /// Reads a `u32` length and that many bytes, shared.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, CodecError> {
        let len = self.u32(what)? as usize;
        self.take_shared(len, what)
    }

    /// Reads a `u32` length and that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let len = self.u32(what)? as usize;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| CodecError::NotUtf8 { what })
    }

    /// Checks that every byte was consumed.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), CodecError> {
        let left = self.bytes.len() - self.pos;
        if left != 0 {
            return Err(CodecError::LeftOver { what, bytes: left });
        }
        Ok(())
    }
}
