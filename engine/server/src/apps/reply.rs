//! The reply the example state machines return for a command or a query: one tag byte, then a
//! body whose shape the tag fixes:
//!
//! | tag | variant | body |
//! |-----|---------|------|
//! | 0 | `Ok` | nothing |
//! | 1 | `Value` | the value's bytes (the rest of the reply) |
//! | 2 | `Nil` | nothing (no such key) |
//! | 3 | `Int` | `i64`, little-endian, 8 bytes |
//! | 4 | `Error` | a UTF-8 message (the rest of the reply) |
//! | 5 | `Array` | `u32` LE element count, then per element a `u32` LE length and that many bytes of an encoded reply |
//!
//! An `Error` message starts with an upper-case code word when the machine wants a RESP client
//! to see a specific code (`ERR`, `NOSESSION`, `LOCKED`, ...); see `docs/CLIENTS.md`.
//!
//! Replies without a body are static bytes, so answering `Ok` allocates nothing.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

const TAG_OK: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_NIL: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_ERROR: u8 = 4;
const TAG_ARRAY: u8 = 5;

static OK_BYTES: [u8; 1] = [TAG_OK];
static NIL_BYTES: [u8; 1] = [TAG_NIL];

/// A decoded reply of an example state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done, nothing to return.
    Ok,
    /// A value.
    Value(Bytes),
    /// No such key.
    Nil,
    /// A number (a count, a new value, a flag as 0/1).
    Int(i64),
    /// The command was refused; the message says why. The state is unchanged.
    Error(String),
    /// Several replies in order (a multi-key read, a tuple).
    Array(Vec<Reply>),
}

/// Why bytes are not a valid reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// No bytes at all.
    Empty,
    /// A reply whose tag takes no body has one.
    Body {
        /// The tag.
        tag: u8,
        /// Bytes of the body.
        len: usize,
    },
    /// An int reply that is not 8 bytes.
    IntLength(usize),
    /// An error reply whose message is not UTF-8.
    ErrorNotUtf8,
    /// A tag this code does not know.
    UnknownTag(u8),
    /// An array cut short where a length was due.
    ArrayCut {
        /// Where, in bytes.
        at: usize,
    },
    /// An array element announces more bytes than are present.
    ElementLength {
        /// The element.
        position: usize,
        /// Bytes announced.
        announced: usize,
        /// Bytes present.
        present: usize,
    },
    /// An array element that is not a valid reply.
    Element {
        /// The element.
        position: usize,
        /// What is wrong with it.
        error: Box<ReplyError>,
    },
    /// Bytes after the last element of an array.
    Trailing(usize),
}

impl ReplyError {
    /// What is wrong, without the "bad reply" prefix.
    fn detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Empty => f.write_str("empty"),
            ReplyError::Body { tag, len } => {
                write!(f, "tag {tag} takes no body, found {len} bytes")
            }
            ReplyError::IntLength(len) => write!(f, "an int takes 8 bytes, found {len}"),
            ReplyError::ErrorNotUtf8 => f.write_str("error message is not UTF-8"),
            ReplyError::UnknownTag(tag) => write!(f, "unknown tag {tag}"),
            ReplyError::ArrayCut { at } => write!(f, "array cut short at byte {at}"),
            ReplyError::ElementLength {
                position,
                announced,
                present,
            } => write!(
                f,
                "array element {position}: {announced} bytes announced, {present} present"
            ),
            ReplyError::Element { position, error } => {
                write!(f, "array element {position}: ")?;
                error.detail(f)
            }
            ReplyError::Trailing(bytes) => write!(f, "{bytes} unexpected bytes after the array"),
        }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bad reply: ")?;
        self.detail(f)
    }
}

impl std::error::Error for ReplyError {}

impl Reply {
    /// The encoded `Ok` reply (static, no allocation).
    pub fn ok_bytes() -> Bytes {
        Bytes::from_static(&OK_BYTES)
    }

    /// The encoded `Nil` reply (static, no allocation).
    pub fn nil_bytes() -> Bytes {
        Bytes::from_static(&NIL_BYTES)
    }

    /// Encodes a `Value` reply holding `value`.
    pub fn value_bytes(value: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + value.len());
        out.put_u8(TAG_VALUE);
        out.put_slice(value);
        out.freeze()
    }

    /// Encodes an `Int` reply.
    pub fn int_bytes(value: i64) -> Bytes {
        let mut out = BytesMut::with_capacity(9);
        out.put_u8(TAG_INT);
        out.put_i64_le(value);
        out.freeze()
    }

    /// Encodes an `Error` reply.
    pub fn error_bytes(message: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + message.len());
        out.put_u8(TAG_ERROR);
        out.put_slice(message.as_bytes());
        out.freeze()
    }

    /// Encodes an `Array` reply of the given encoded elements.
    pub fn array_bytes<'a>(elements: impl ExactSizeIterator<Item = &'a [u8]>) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(TAG_ARRAY);
        let count = u32::try_from(elements.len()).expect("more than u32::MAX reply elements");
        out.put_u32_le(count);
        for element in elements {
            let len = u32::try_from(element.len()).expect("reply element over u32::MAX bytes");
            out.put_u32_le(len);
            out.put_slice(element);
        }
        out.freeze()
    }

    /// Encodes this reply.
    pub fn encode(&self) -> Bytes {
        match self {
            Reply::Ok => Reply::ok_bytes(),
            Reply::Value(value) => Reply::value_bytes(value),
            Reply::Nil => Reply::nil_bytes(),
            Reply::Int(value) => Reply::int_bytes(*value),
            Reply::Error(message) => Reply::error_bytes(message),
            Reply::Array(elements) => {
                let encoded: Vec<Bytes> = elements.iter().map(Reply::encode).collect();
                Reply::array_bytes(encoded.iter().map(|element| &element[..]))
            }
        }
    }

    /// Decodes a reply. `Value` shares `bytes`' buffer (no copy).
    pub fn decode(bytes: &Bytes) -> Result<Reply, ReplyError> {
        let Some((&tag, body)) = bytes.split_first() else {
            return Err(ReplyError::Empty);
        };
        let expect_empty = |reply: Reply| {
            if body.is_empty() {
                Ok(reply)
            } else {
                Err(ReplyError::Body {
                    tag,
                    len: body.len(),
                })
            }
        };
        match tag {
            TAG_OK => expect_empty(Reply::Ok),
            TAG_NIL => expect_empty(Reply::Nil),
            TAG_VALUE => Ok(Reply::Value(bytes.slice(1..))),
            TAG_INT => match <[u8; 8]>::try_from(body) {
                Ok(raw) => Ok(Reply::Int(i64::from_le_bytes(raw))),
                Err(_) => Err(ReplyError::IntLength(body.len())),
            },
            TAG_ERROR => match std::str::from_utf8(body) {
                Ok(message) => Ok(Reply::Error(message.to_string())),
                Err(_) => Err(ReplyError::ErrorNotUtf8),
            },
            TAG_ARRAY => Reply::decode_array(bytes),
            other => Err(ReplyError::UnknownTag(other)),
        }
    }

    fn decode_array(bytes: &Bytes) -> Result<Reply, ReplyError> {
        let read_u32 = |at: usize| -> Result<usize, ReplyError> {
            bytes
                .get(at..at + 4)
                .map(|raw| u32::from_le_bytes(raw.try_into().expect("4 bytes")) as usize)
                .ok_or(ReplyError::ArrayCut { at })
        };
        let count = read_u32(1)?;
        let mut at = 5;
        // Every element takes at least 5 bytes, which bounds the allocation by the input size.
        let mut elements = Vec::with_capacity(count.min(bytes.len() / 5));
        for position in 0..count {
            let len = read_u32(at)?;
            let start = at + 4;
            if bytes.len() - start < len {
                return Err(ReplyError::ElementLength {
                    position,
                    announced: len,
                    present: bytes.len() - start,
                });
            }
            let element = Reply::decode(&bytes.slice(start..start + len)).map_err(|error| {
                ReplyError::Element {
                    position,
                    error: Box::new(error),
                }
            })?;
            elements.push(element);
            at = start + len;
        }
        if at != bytes.len() {
            return Err(ReplyError::Trailing(bytes.len() - at));
        }
        Ok(Reply::Array(elements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips() {
        let replies = [
            Reply::Ok,
            Reply::Value(Bytes::from_static(b"v")),
            Reply::Value(Bytes::new()),
            Reply::Nil,
            Reply::Int(-7),
            Reply::Error("nope".to_string()),
            Reply::Array(vec![]),
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Nil,
                Reply::Array(vec![Reply::Value(Bytes::from_static(b"x"))]),
            ]),
        ];
        for reply in replies {
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(Reply::decode(&Bytes::new()).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[9])).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[TAG_OK, 1])).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[TAG_INT, 1, 2])).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[TAG_ERROR, 0xff])).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[TAG_ARRAY, 1, 0, 0])).is_err());
        assert!(Reply::decode(&Bytes::from_static(&[TAG_ARRAY, 1, 0, 0, 0])).is_err());
        assert!(
            Reply::decode(&Bytes::from_static(&[TAG_ARRAY, 1, 0, 0, 0, 9, 0, 0, 0, 0])).is_err()
        );
        assert!(Reply::decode(&Bytes::from_static(&[TAG_ARRAY, 0, 0, 0, 0, 0])).is_err());
        let nested = Reply::array_bytes([&[TAG_INT, 1][..]].into_iter());
        let err = Reply::decode(&nested).unwrap_err();
        assert_eq!(
            err,
            ReplyError::Element {
                position: 0,
                error: Box::new(ReplyError::IntLength(1))
            }
        );
        assert_eq!(
            err.to_string(),
            "bad reply: array element 0: an int takes 8 bytes, found 1"
        );
    }
}
