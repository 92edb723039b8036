//! Incremental RESP2 reply parsing over a connection's read buffer, without copying.
//!
//! [`ReplyParser::next`] is given the unconsumed bytes of the buffer, starting at a reply's
//! first byte, and returns the reply (borrowing its text or bulk bytes from the buffer) and its
//! length once it has fully arrived; the caller then drops that many bytes from the front. A
//! reply that has not fully arrived returns `Ok(None)`: a simple value or a bulk string is
//! re-checked from its start next time (its header says how long it is, so that costs one short
//! line), and an array keeps its progress in the parser, so the elements already read are not
//! read again.
//!
//! Guarantees: no buffer is sized from a length the server announced; a bulk string longer
//! than the parser's limit, a line longer than [`LINE_BYTES_MAX`], an unknown type byte or a
//! malformed length is a [`ReplyError`] naming what and at which byte of the reply. After an
//! error the connection's stream cannot be trusted: the caller drops it.

use std::fmt;
use std::ops::Range;

/// Longest `+`, `-` or `:` line accepted, CRLF included.
pub const LINE_BYTES_MAX: usize = 64 << 10;

/// One complete reply; text and bulk bytes borrow from the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+text`.
    Simple(&'a [u8]),
    /// `-text` (the first word is the error code).
    Error(&'a [u8]),
    /// `:n`.
    Int(i64),
    /// `$len` and the bytes.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` and its `n` elements (nested arrays included), which are checked but not returned.
    Array(usize),
}

/// A reply as text for messages: `+OK`, `-ERR ...`, `:1`, `$3 "abc"` (long bulk strings cut).
pub fn shown(reply: &Reply<'_>) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
    match reply {
        Reply::Simple(line) => format!("+{}", text(line)),
        Reply::Error(line) => format!("-{}", text(line)),
        Reply::Int(n) => format!(":{n}"),
        Reply::Bulk(bytes) => format!("${} {:?}", bytes.len(), text(bytes)),
        Reply::Nil => "nil".to_string(),
        Reply::Array(len) => format!("array of {len}"),
    }
}

/// Why the bytes are not a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyError(pub String);

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad RESP reply: {}", self.0)
    }
}

/// Progress through an array reply that has not fully arrived.
#[derive(Clone, Copy, Debug)]
struct Partial {
    /// Elements of the top-level array.
    len: usize,
    /// Values still to read (nested arrays add theirs).
    remaining: usize,
    /// Where the next value starts, from the reply's first byte.
    at: usize,
}

/// One value's header and extent.
enum Item {
    Simple(Range<usize>),
    Error(Range<usize>),
    Int(i64),
    Bulk(Range<usize>),
    Nil,
    Array(usize),
}

/// Parses replies from the front of a read buffer; see the module documentation.
#[derive(Debug)]
pub struct ReplyParser {
    bulk_bytes_max: usize,
    partial: Option<Partial>,
}

impl ReplyParser {
    /// A parser refusing bulk strings longer than `bulk_bytes_max` bytes.
    pub fn new(bulk_bytes_max: usize) -> ReplyParser {
        ReplyParser {
            bulk_bytes_max,
            partial: None,
        }
    }

    /// The reply at the start of `buf` and its length in bytes, `Ok(None)` until it has fully
    /// arrived. `buf` must start where the previous reply ended, and hold at least the bytes
    /// it held on the previous call for the same reply.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Reply<'a>, usize)>, ReplyError> {
        let mut partial = match self.partial {
            Some(partial) => partial,
            None => {
                let Some((item, end)) = self.item(buf, 0)? else {
                    return Ok(None);
                };
                let reply = match item {
                    Item::Simple(range) => Reply::Simple(&buf[range]),
                    Item::Error(range) => Reply::Error(&buf[range]),
                    Item::Int(n) => Reply::Int(n),
                    Item::Bulk(range) => Reply::Bulk(&buf[range]),
                    Item::Nil => Reply::Nil,
                    Item::Array(0) => Reply::Array(0),
                    Item::Array(len) => {
                        self.partial = Some(Partial {
                            len,
                            remaining: len,
                            at: end,
                        });
                        return self.next(buf);
                    }
                };
                return Ok(Some((reply, end)));
            }
        };
        while partial.remaining > 0 {
            let Some((item, end)) = self.item(buf, partial.at)? else {
                self.partial = Some(partial);
                return Ok(None);
            };
            partial.remaining -= 1;
            if let Item::Array(len) = item {
                partial.remaining = partial.remaining.checked_add(len).ok_or_else(|| {
                    ReplyError(format!("array elements overflow at byte {}", partial.at))
                })?;
            }
            partial.at = end;
        }
        self.partial = None;
        Ok(Some((Reply::Array(partial.len), partial.at)))
    }

    /// The value whose first byte is `buf[at]`, and where it ends; `None` if incomplete.
    fn item(&self, buf: &[u8], at: usize) -> Result<Option<(Item, usize)>, ReplyError> {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(ReplyError(format!(
                "unknown type byte {kind:#04x} at byte {at}"
            )));
        }
        let window = &buf[at..buf.len().min(at + LINE_BYTES_MAX)];
        let Some(lf) = window.iter().position(|&byte| byte == b'\n') else {
            if window.len() >= LINE_BYTES_MAX {
                return Err(ReplyError(format!(
                    "line at byte {at} longer than {LINE_BYTES_MAX} bytes"
                )));
            }
            return Ok(None);
        };
        if lf < 1 || window[lf - 1] != b'\r' {
            return Err(ReplyError(format!(
                "line at byte {at} does not end in CRLF"
            )));
        }
        let text = at + 1..at + lf - 1;
        let end = at + lf + 1;
        let number = || -> Result<i64, ReplyError> {
            std::str::from_utf8(&buf[text.clone()])
                .ok()
                .and_then(|digits| digits.parse::<i64>().ok())
                .ok_or_else(|| {
                    ReplyError(format!(
                        "bad number {:?} at byte {at}",
                        String::from_utf8_lossy(&buf[text.clone()])
                    ))
                })
        };
        let item = match kind {
            b'+' => Item::Simple(text),
            b'-' => Item::Error(text),
            b':' => Item::Int(number()?),
            b'$' => match number()? {
                -1 => Item::Nil,
                len if len >= 0 && len as u64 <= self.bulk_bytes_max as u64 => {
                    let body_end = end + len as usize;
                    if buf.len() < body_end + 2 {
                        return Ok(None);
                    }
                    if &buf[body_end..body_end + 2] != b"\r\n" {
                        return Err(ReplyError(format!(
                            "bulk string at byte {at} is not followed by CRLF"
                        )));
                    }
                    return Ok(Some((Item::Bulk(end..body_end), body_end + 2)));
                }
                len => {
                    return Err(ReplyError(format!(
                        "bulk length {len} at byte {at} (most {})",
                        self.bulk_bytes_max
                    )))
                }
            },
            _ => match number()? {
                -1 => Item::Nil,
                len if len >= 0 => Item::Array(len as usize),
                len => return Err(ReplyError(format!("array length {len} at byte {at}"))),
            },
        };
        Ok(Some((item, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lockstep::resp::Value;
    use proptest::prelude::*;

    /// What a reply says, owned, to compare with the value that was encoded.
    fn expected(value: &Value) -> String {
        match value {
            Value::Simple(text) => format!("+{text}"),
            Value::Error(text) => format!("-{text}"),
            Value::Int(n) => format!(":{n}"),
            Value::Bulk(bytes) => format!("${:?}", bytes.as_ref()),
            Value::Nil => "nil".to_string(),
            Value::Array(items) => format!("*{}", items.len()),
        }
    }

    fn seen(reply: &Reply<'_>) -> String {
        match reply {
            Reply::Simple(text) => format!("+{}", String::from_utf8_lossy(text)),
            Reply::Error(text) => format!("-{}", String::from_utf8_lossy(text)),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(bytes) => format!("${bytes:?}"),
            Reply::Nil => "nil".to_string(),
            Reply::Array(len) => format!("*{len}"),
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let text = "[a-zA-Z0-9 :._-]{0,24}";
        let leaf = prop_oneof![
            text.prop_map(Value::Simple),
            text.prop_map(Value::Error),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|bytes| Value::Bulk(Bytes::from(bytes))),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    /// Feeds `wire` to a parser in pieces ending at `cuts`, as a connection's reads would
    /// deliver them, dropping each reply from the front of the buffer once parsed.
    fn parse_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut parser = ReplyParser::new(1 << 20);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut replies = Vec::new();
        let mut ends: Vec<usize> = cuts.iter().map(|cut| cut % (wire.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(wire.len());
        for end in ends {
            if end <= fed {
                continue;
            }
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
            while let Some((reply, len)) = parser.next(&buf).unwrap() {
                replies.push(seen(&reply));
                buf.drain(..len);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        replies
    }

    proptest! {
        #[test]
        fn fragmented_replies_parse_as_whole_ones(
            values in proptest::collection::vec(value(), 1..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let mut wire = Vec::new();
            for value in &values {
                value.encode(&mut wire);
            }
            let want: Vec<String> = values.iter().map(expected).collect();
            prop_assert_eq!(&parse_in_pieces(&wire, &cuts), &want);
            // One byte at a time, the worst split.
            let every: Vec<usize> = (0..wire.len()).collect();
            prop_assert_eq!(&parse_in_pieces(&wire, &every), &want);
        }
    }

    #[test]
    fn set_and_get_replies() {
        let mut parser = ReplyParser::new(16);
        let wire = b"+OK\r\n$3\r\nabc\r\n$-1\r\n-NOTLEADER 127.0.0.1:7 2\r\n";
        let (reply, len) = parser.next(wire).unwrap().unwrap();
        assert_eq!((reply, len), (Reply::Simple(b"OK"), 5));
        let (reply, len2) = parser.next(&wire[len..]).unwrap().unwrap();
        assert_eq!(reply, Reply::Bulk(b"abc"));
        let (reply, len3) = parser.next(&wire[len + len2..]).unwrap().unwrap();
        assert_eq!(reply, Reply::Nil);
        let (reply, _) = parser.next(&wire[len + len2 + len3..]).unwrap().unwrap();
        assert_eq!(reply, Reply::Error(b"NOTLEADER 127.0.0.1:7 2"));
        assert_eq!(parser.next(b"$3\r\nab").unwrap(), None);
        assert_eq!(parser.next(b"").unwrap(), None);
    }

    #[test]
    fn bad_replies_are_refused_naming_the_byte() {
        for (wire, what) in [
            (&b"?x\r\n"[..], "unknown type byte 0x3f at byte 0"),
            (b"$17\r\n", "bulk length 17"),
            (b"$-2\r\n", "bulk length -2"),
            (b":12a\r\n", "bad number \"12a\""),
            (b"+OK\n", "CRLF"),
            (b"$2\r\nabcd", "not followed by CRLF"),
            (b"*2\r\n:1\r\n!", "unknown type byte 0x21 at byte 8"),
        ] {
            let error = ReplyParser::new(16).next(wire).unwrap_err();
            assert!(error.0.contains(what), "{wire:?}: {error}");
        }
        let long = vec![b'+'; LINE_BYTES_MAX];
        let error = ReplyParser::new(16).next(&long).unwrap_err();
        assert!(error.0.contains("longer than"), "{error}");
    }
}
