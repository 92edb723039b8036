//! Encodes the commands the kv load sends (`SET key value`, `GET key`, and `MSET` to preload
//! the keys) as RESP2 arrays of bulk strings, appended to a caller's buffer.
//!
//! Guarantees: nothing is allocated except by the buffer growing (which a reused buffer stops
//! doing once it has held one full refill); the bytes are exactly what `redis-cli` would send.

/// Appends `*3 $3 SET $k key $v value` to `out`.
pub fn set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    bulk(out, key);
    bulk(out, value);
}

/// Appends `*2 $3 GET $k key` to `out`.
pub fn get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    bulk(out, key);
}

/// Appends the header of `MSET` with `pairs` key-value pairs (`*<1+2n> $4 MSET`); the caller
/// appends each key and value with [`bulk`].
pub fn mset_header(out: &mut Vec<u8>, pairs: usize) {
    out.push(b'*');
    decimal(out, 1 + 2 * pairs as u64);
    out.extend_from_slice(b"\r\n$4\r\nMSET\r\n");
}

/// Appends `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `value` (no sign, no padding).
pub fn decimal(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let start = decimal_into(&mut digits, value);
    out.extend_from_slice(&digits[start..]);
}

/// Writes the decimal digits of `value` right-aligned into `digits`; returns where they start.
pub fn decimal_into(digits: &mut [u8; 20], mut value: u64) -> usize {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        set(&mut out, b"key:07", b"vvv");
        get(&mut out, b"k");
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$6\r\nkey:07\r\n$3\r\nvvv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        // The server's parser reads them back as the same arguments.
        let mut parser = lockstep::resp::parser::RequestParser::new(
            lockstep::resp::parser::RespLimits::default(),
        );
        let mut skipped = 0;
        let request = parser.next(&out, &mut skipped).unwrap().unwrap();
        parser.consumed();
        let bytes = bytes::Bytes::copy_from_slice(&out[..request.len]);
        let args = request.into_args(&bytes);
        assert_eq!(args, [&b"SET"[..], b"key:07", b"vvv"]);
        let mut mset = Vec::new();
        mset_header(&mut mset, 2);
        for word in [&b"a"[..], b"1", b"b", b"2"] {
            bulk(&mut mset, word);
        }
        let request = parser.next(&mset, &mut skipped).unwrap().unwrap();
        let bytes = bytes::Bytes::copy_from_slice(&mset[..request.len]);
        assert_eq!(
            request.into_args(&bytes),
            [&b"MSET"[..], b"a", b"1", b"b", b"2"]
        );
    }

    #[test]
    fn decimals() {
        for value in [0, 7, 10, 99, 12_345, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }
}
