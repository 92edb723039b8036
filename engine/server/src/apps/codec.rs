//! The little-endian building blocks every app encoding uses (commands, envelopes, snapshots):
//! a byte string is a `u32` LE length then the bytes; numbers are fixed-width LE. Decoding is
//! bounds-checked and returns an error naming the field that is wrong, never panics.

/// Appends a length-prefixed byte string.
///
/// # Panics
/// If `value` is longer than `u32::MAX` bytes (no command or snapshot field can be: frames and
/// entries are far smaller).
pub(crate) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("app field longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// Appends a count-prefixed list of byte strings.
pub(crate) fn put_list(out: &mut Vec<u8>, values: &[&[u8]]) {
    let count = u32::try_from(values.len()).expect("app list longer than u32::MAX items");
    out.extend_from_slice(&count.to_le_bytes());
    for value in values {
        put_bytes(out, value);
    }
}

/// Reads the fields of an encoding, front to back.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(format!("{what}: length prefix cut short"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "{what}: {len} bytes announced, {} present",
                rest.len()
            ));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    /// A count-prefixed list of byte strings. The count is checked against the bytes left
    /// before anything is allocated.
    pub(crate) fn list(&mut self, what: &str) -> Result<Vec<&'a [u8]>, String> {
        let count = self.u32(what)? as usize;
        if count > self.rest.len() / 4 {
            return Err(format!(
                "{what}: {count} items announced, only {} bytes left",
                self.rest.len()
            ));
        }
        (0..count).map(|_| self.bytes(what)).collect()
    }

    /// The rest of the input, whatever it holds.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn chunk<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let Some((raw, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(format!(
                "{what}: {N} bytes expected, {} left",
                self.rest.len()
            ));
        };
        self.rest = rest;
        Ok(*raw)
    }

    /// One byte.
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.chunk::<1>(what)?[0])
    }

    /// A `u32`, LE.
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.chunk(what)?))
    }

    /// A `u64`, LE.
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.chunk(what)?))
    }

    /// An `i64`, LE.
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.chunk(what)?))
    }

    /// Checks that nothing is left and returns `value`.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, String> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(format!(
                "{} unexpected bytes after the last field",
                self.rest.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_input_is_refused() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"key");
        put_list(&mut out, &[b"a", b"", b"ccc"]);
        out.extend_from_slice(&7u64.to_le_bytes());
        let mut reader = Reader::new(&out);
        assert_eq!(reader.bytes("k"), Ok(&b"key"[..]));
        assert_eq!(reader.list("l"), Ok(vec![&b"a"[..], b"", b"ccc"]));
        assert_eq!(reader.u64("n"), Ok(7));
        assert_eq!(reader.finish(()), Ok(()));
        for cut in 0..out.len() {
            let mut reader = Reader::new(&out[..cut]);
            let whole = reader
                .bytes("k")
                .and_then(|_| reader.list("l"))
                .and_then(|_| reader.u64("n"));
            assert!(whole.is_err(), "cut at {cut} decoded");
        }
        let huge_count = [0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&huge_count).list("l").is_err());
    }
}
