//! Incremental RESP2 request parsing with size limits: arrays of bulk strings (what every client
//! library sends) and inline commands (what a person types into `telnet`).
//!
//! [`RequestParser`] reads the connection's buffer from its start and keeps its progress through
//! a request that has not fully arrived, so bytes are looked at once however the request is split
//! across reads. A complete request is reported as the ranges of its arguments in the buffer
//! plus its length; the caller splits those bytes off the buffer (zero copy) and calls
//! [`RequestParser::consumed`]. Inline arguments are unquoted into owned bytes.
//!
//! Guarantees: no buffer is ever sized from a length the client announced; a request over any of
//! the [`RespLimits`] is refused as soon as its announced size shows it (before its bytes
//! arrive); every refusal is a [`ProtocolError`] whose message says what is wrong and at which
//! byte of the request. After an error the parser must not be used again (the connection
//! closes).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

/// Longest inline command line, and longest `*`/`$` header line, accepted (as Redis: 64 KiB).
pub const INLINE_BYTES_MAX: usize = 64 << 10;

/// Longest `*<count>` or `$<length>` line, CRLF included (an i64 has at most 20 characters).
const HEADER_LINE_BYTES_MAX: usize = 32;

/// Size limits of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Most arguments (command name included) in one request.
    pub args_max: usize,
    /// Longest bulk string (one argument), in bytes.
    pub bulk_bytes_max: usize,
    /// Longest request on the wire, in bytes (headers and CRLFs included).
    pub request_bytes_max: usize,
}

impl Default for RespLimits {
    /// 1 Mi arguments, 64 MiB per argument and per request.
    fn default() -> RespLimits {
        RespLimits {
            args_max: 1 << 20,
            bulk_bytes_max: 64 << 20,
            request_bytes_max: 64 << 20,
        }
    }
}

/// Why the bytes are not an acceptable request. Displayed as `Protocol error: <what>`, the text
/// of the `-ERR` reply sent before the connection closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    /// Whether the request broke a size limit (arguments, bulk or request bytes), rather than
    /// the protocol's syntax.
    pub fn is_over_limit(&self) -> bool {
        self.0.contains("exceeds the maximum") || self.0.starts_with("inline request longer")
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// The arguments of one complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// Ranges of the buffer (relative to its start): the bulk strings of an array request.
    Ranges(Vec<Range<usize>>),
    /// The unquoted words of an inline command.
    Owned(Vec<Bytes>),
}

/// One complete request at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its arguments; never empty.
    pub args: Args,
    /// Bytes of the buffer it occupies (to split off).
    pub len: usize,
}

impl Request {
    /// The arguments as `Bytes`, given the request's bytes (the first [`Request::len`] bytes of
    /// the buffer, split off).
    pub fn into_args(self, bytes: &Bytes) -> Vec<Bytes> {
        assert_eq!(
            bytes.len(),
            self.len,
            "request bytes of the wrong length (parsed {})",
            self.len
        );
        match self.args {
            Args::Ranges(ranges) => ranges.into_iter().map(|range| bytes.slice(range)).collect(),
            Args::Owned(words) => words,
        }
    }
}

/// Progress through an array request that has not fully arrived.
#[derive(Debug, Default)]
struct Partial {
    /// Arguments announced by the `*` line.
    count: usize,
    /// Ranges of the bulk strings read so far.
    ranges: Vec<Range<usize>>,
    /// Where the next `$` line starts.
    at: usize,
}

/// Parses requests from the start of a connection's buffer; see the module documentation.
#[derive(Debug)]
pub struct RequestParser {
    limits: RespLimits,
    partial: Option<Partial>,
}

/// The outcome of parsing a buffer whose start is not a complete request.
enum Step {
    /// A complete request.
    Done(Request),
    /// An empty array or blank inline line of this many bytes: skipped (as Redis does).
    Skip(usize),
    /// More bytes are needed.
    More,
}

impl RequestParser {
    /// A parser enforcing `limits` (each at least 1).
    pub fn new(limits: RespLimits) -> RequestParser {
        assert!(
            limits.args_max >= 1 && limits.bulk_bytes_max >= 1 && limits.request_bytes_max >= 16,
            "unusable RESP limits {limits:?}"
        );
        RequestParser {
            limits,
            partial: None,
        }
    }

    /// The next complete request at the start of `buf`, `Ok(None)` if it has not fully arrived.
    /// Blank inline lines and empty arrays at the start are skipped: the number of bytes to drop
    /// for them is added to `skipped` (the caller drops them before the request).
    pub fn next(
        &mut self,
        buf: &[u8],
        skipped: &mut usize,
    ) -> Result<Option<Request>, ProtocolError> {
        let mut start = 0;
        loop {
            match self.step(&buf[start..])? {
                Step::Done(request) => {
                    *skipped += start;
                    return Ok(Some(request));
                }
                Step::Skip(len) => {
                    assert!(len > 0, "a skip of no bytes would never end");
                    start += len;
                }
                Step::More => {
                    *skipped += start;
                    return Ok(None);
                }
            }
        }
    }

    /// Tells the parser that the request it returned was removed from the buffer's front.
    pub fn consumed(&mut self) {
        assert!(
            self.partial.is_none(),
            "consumed while a request is only partly parsed"
        );
    }

    fn step(&mut self, buf: &[u8]) -> Result<Step, ProtocolError> {
        if self.partial.is_none() {
            match buf.first() {
                None => return Ok(Step::More),
                Some(b'*') => {}
                Some(_) => return self.inline(buf),
            }
            let Some((count, at)) = header_line(buf, b'*', 0)? else {
                return Ok(Step::More);
            };
            if count <= 0 {
                return Ok(Step::Skip(at));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > self.limits.args_max {
                return Err(ProtocolError(format!(
                    "array of {count} arguments exceeds the maximum of {}",
                    self.limits.args_max
                )));
            }
            self.partial = Some(Partial {
                count,
                ranges: Vec::with_capacity(count.min(64)),
                at,
            });
        }
        let partial = self.partial.as_mut().expect("a request in progress");
        while partial.ranges.len() < partial.count {
            let Some((len, body)) = header_line(buf, b'$', partial.at)? else {
                return Ok(Step::More);
            };
            if len < 0 {
                return Err(ProtocolError(format!(
                    "invalid bulk length {len} at byte {}",
                    partial.at
                )));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > self.limits.bulk_bytes_max {
                return Err(ProtocolError(format!(
                    "bulk string of {len} bytes at byte {} exceeds the maximum of {} bytes",
                    partial.at, self.limits.bulk_bytes_max
                )));
            }
            let end = body.saturating_add(len).saturating_add(2);
            if end > self.limits.request_bytes_max {
                return Err(ProtocolError(format!(
                    "request of at least {end} bytes exceeds the maximum of {} bytes",
                    self.limits.request_bytes_max
                )));
            }
            if buf.len() < end {
                return Ok(Step::More);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError(format!(
                    "bulk string at byte {body} is not followed by CRLF"
                )));
            }
            partial.ranges.push(body..end - 2);
            partial.at = end;
        }
        let partial = self.partial.take().expect("a request in progress");
        Ok(Step::Done(Request {
            args: Args::Ranges(partial.ranges),
            len: partial.at,
        }))
    }

    fn inline(&self, buf: &[u8]) -> Result<Step, ProtocolError> {
        let limit = INLINE_BYTES_MAX.min(self.limits.request_bytes_max);
        let Some(newline) = buf.iter().take(limit).position(|&byte| byte == b'\n') else {
            if buf.len() >= limit {
                return Err(ProtocolError(format!(
                    "inline request longer than {limit} bytes"
                )));
            }
            return Ok(Step::More);
        };
        let line = &buf[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let words = split_inline(line)?;
        if words.is_empty() {
            return Ok(Step::Skip(newline + 1));
        }
        if words.len() > self.limits.args_max {
            return Err(ProtocolError(format!(
                "inline request of {} arguments exceeds the maximum of {}",
                words.len(),
                self.limits.args_max
            )));
        }
        Ok(Step::Done(Request {
            args: Args::Owned(words),
            len: newline + 1,
        }))
    }
}

/// Reads a `<kind><decimal>\r\n` line starting at `at`: the number and where the line ends.
fn header_line(buf: &[u8], kind: u8, at: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != kind {
        return Err(ProtocolError(format!(
            "expected '{}' at byte {at}, got {}",
            kind as char,
            shown(first)
        )));
    }
    let window = &buf[at..buf.len().min(at + HEADER_LINE_BYTES_MAX)];
    let Some(cr) = window.iter().position(|&byte| byte == b'\r') else {
        if window.len() >= HEADER_LINE_BYTES_MAX {
            return Err(ProtocolError(format!(
                "'{}' line at byte {at} longer than {HEADER_LINE_BYTES_MAX} bytes",
                kind as char
            )));
        }
        return Ok(None);
    };
    let Some(&lf) = window.get(cr + 1) else {
        return Ok(None);
    };
    let what = if kind == b'*' { "multibulk" } else { "bulk" };
    let digits = &window[1..cr];
    let number = std::str::from_utf8(digits)
        .ok()
        .filter(|text| !text.is_empty() && !text.starts_with('+'))
        .and_then(|text| text.parse::<i64>().ok());
    match (number, lf) {
        (Some(number), b'\n') => Ok(Some((number, at + cr + 2))),
        _ => Err(ProtocolError(format!(
            "invalid {what} length {:?} at byte {at}",
            String::from_utf8_lossy(digits)
        ))),
    }
}

fn shown(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", byte as char)
    } else {
        format!("byte {byte:#04x}")
    }
}

/// Splits an inline line into words: runs of non-blank bytes, or quoted strings. In double
/// quotes `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` are unescaped; in single quotes only `\'`.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut words = Vec::new();
    let mut at = 0;
    while at < line.len() {
        if line[at].is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let mut word = Vec::new();
        match line[at] {
            quote @ (b'"' | b'\'') => {
                let open = at;
                at += 1;
                loop {
                    let Some(&byte) = line.get(at) else {
                        return Err(ProtocolError(format!(
                            "unbalanced quotes in inline request (quote at byte {open})"
                        )));
                    };
                    at += 1;
                    if byte == quote {
                        break;
                    }
                    if byte != b'\\' || at == line.len() {
                        word.push(byte);
                        continue;
                    }
                    let escaped = line[at];
                    at += 1;
                    let hex = line.get(at..at + 2).and_then(|pair| {
                        u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
                    });
                    match (quote, escaped) {
                        (b'\'', b'\'') => word.push(b'\''),
                        (b'\'', other) => word.extend_from_slice(&[b'\\', other]),
                        (_, b'n') => word.push(b'\n'),
                        (_, b'r') => word.push(b'\r'),
                        (_, b't') => word.push(b'\t'),
                        (_, b'x') if hex.is_some() => {
                            word.push(hex.expect("checked"));
                            at += 2;
                        }
                        (_, other) => word.push(other),
                    }
                }
                if line.get(at).is_some_and(|byte| !byte.is_ascii_whitespace()) {
                    return Err(ProtocolError(format!(
                        "closing quote at byte {} must be followed by a space",
                        at - 1
                    )));
                }
            }
            _ => {
                while at < line.len() && !line[at].is_ascii_whitespace() {
                    word.push(line[at]);
                    at += 1;
                }
            }
        }
        words.push(Bytes::from(word));
    }
    Ok(words)
}

/// Appends the array-of-bulk-strings encoding of `args` (what clients send) to `out`.
pub fn encode_request(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` one after another, taking requests out as they complete.
    fn parse_chunks(
        chunks: &[&[u8]],
        limits: RespLimits,
    ) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = RequestParser::new(limits);
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let mut skipped = 0;
                let next = parser.next(&buf, &mut skipped)?;
                let _ = buf.split_to(skipped);
                let Some(request) = next else { break };
                let bytes = buf.split_to(request.len).freeze();
                parser.consumed();
                out.push(request.into_args(&bytes));
            }
        }
        Ok(out)
    }

    fn words(request: &[&str]) -> Vec<Bytes> {
        request
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    fn error(input: &[u8], limits: RespLimits) -> String {
        parse_chunks(&[input], limits).unwrap_err().to_string()
    }

    #[test]
    fn parses_arrays_inline_and_skips_empty() {
        let input =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\r\n*0\r\nPING\r\nset a \"b c\\x41\" 'it\\'s'\n";
        let got = parse_chunks(&[input], RespLimits::default()).unwrap();
        assert_eq!(
            got,
            vec![
                words(&["GET", "k"]),
                words(&["PING"]),
                words(&["set", "a", "b cA", "it's"])
            ]
        );
    }

    #[test]
    fn waits_for_incomplete_requests() {
        for input in [
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r"[..],
            b"*2\r\n$3\r\nGET\r\n$1",
            b"*2",
            b"PING",
        ] {
            assert_eq!(
                parse_chunks(&[input], RespLimits::default()).unwrap(),
                Vec::<Vec<Bytes>>::new()
            );
        }
    }

    #[test]
    fn refuses_malformed_input_naming_what_and_where() {
        let limits = RespLimits::default();
        assert!(error(b"*x\r\n", limits).contains("invalid multibulk length \"x\" at byte 0"));
        assert!(error(b"*1\r\n:5\r\n", limits).contains("expected '$' at byte 4, got ':'"));
        assert!(error(b"*1\r\n$-1\r\n", limits).contains("invalid bulk length -1 at byte 4"));
        assert!(error(b"*1\r\n$2\r\nabcd", limits).contains("not followed by CRLF"));
        assert!(error(b"*1\r\n$1\nx\r\n", limits).contains("invalid bulk length"));
        assert!(error(b"GET \"k\n", limits).contains("unbalanced quotes"));
        assert!(error(b"GET \"k\"x\n", limits).contains("followed by a space"));
        let long = vec![b'*'; 40];
        assert!(error(&long, limits).contains("longer than 32 bytes"));
        assert!(error(b"*1\r\n$99999999999999999999999\r\n", limits).contains("invalid bulk"));
        assert!(error(b"*1\r\n$+1\r\nx\r\n", limits).contains("invalid bulk"));
    }

    #[test]
    fn refuses_oversized_requests_from_the_announced_size() {
        let limits = RespLimits {
            args_max: 3,
            bulk_bytes_max: 10,
            request_bytes_max: 30,
        };
        assert!(error(b"*4\r\n", limits).contains("array of 4 arguments exceeds the maximum of 3"));
        assert!(error(b"*1\r\n$11\r\n", limits).contains("bulk string of 11 bytes at byte 4"));
        assert!(error(b"*3\r\n$10\r\n0123456789\r\n$10\r\n", limits)
            .contains("request of at least 38 bytes exceeds the maximum of 30 bytes"));
        assert!(error(b"a b c d\n", limits).contains("inline request of 4 arguments"));
        assert!(error(&[b'a'; 31], limits).contains("inline request longer than 30 bytes"));
        // Just within every limit.
        let mut ok = Vec::new();
        encode_request(&[b"0123456789", b"x"], &mut ok);
        assert_eq!(parse_chunks(&[&ok], limits).unwrap().len(), 1);
    }

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(arg(), 1..6)
    }

    proptest! {
        #[test]
        fn parse_of_encode_round_trips_under_any_split(
            requests in proptest::collection::vec(request(), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = Vec::new();
            for request in &requests {
                let args: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
                encode_request(&args, &mut wire);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts {
                chunks.push(&wire[from..cut]);
                from = cut;
            }
            chunks.push(&wire[from..]);
            let got = parse_chunks(&chunks, RespLimits::default()).unwrap();
            let expected: Vec<Vec<Bytes>> = requests
                .iter()
                .map(|request| request.iter().map(|arg| Bytes::copy_from_slice(arg)).collect())
                .collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn no_request_bytes_panic_the_parser_or_the_session(
            requests in proptest::collection::vec(proptest::collection::vec(prop_oneof![
                arg(),
                proptest::sample::select(vec![
                    "MULTI", "EXEC", "DISCARD", "WATCH", "AUTH", "HELLO", "CLIENT", "RESET",
                    "QUIT", "SELECT", "CONFIG", "COMMAND", "PING", "SETNAME", "2", "3",
                ]).prop_map(|word| word.as_bytes().to_vec()),
            ], 0..5), 1..8),
            noise in proptest::collection::vec(any::<u8>(), 0..24),
            at in any::<prop::sample::Index>(),
            password in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            for request in &requests {
                let args: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
                encode_request(&args, &mut wire);
            }
            let at = at.index(wire.len() + 1);
            wire.splice(at..at, noise);
            let users = if password {
                crate::net::ClientUsers::new(b"pw", Some(b"ro"))
            } else {
                crate::net::ClientUsers::default()
            };
            let addr = "127.0.0.1:1".parse().expect("an address");
            let mut session = super::super::session::Session::new(1, addr, users.into());
            let limits = RespLimits { args_max: 8, bulk_bytes_max: 64, request_bytes_max: 256 };
            // The network stage hands every parsed request to the session, as here.
            for args in parse_chunks(&[&wire], limits).unwrap_or_default() {
                prop_assert!(!args.is_empty(), "an empty request came out of the parser");
                let _ = session.command(&args);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(bytes.len() + 1);
            let limits = RespLimits { args_max: 4, bulk_bytes_max: 16, request_bytes_max: 64 };
            let whole = parse_chunks(&[&bytes], limits);
            let split = parse_chunks(&[&bytes[..cut], &bytes[cut..]], limits);
            // The same requests come out, and an error is found either way.
            prop_assert_eq!(whole.is_ok(), split.is_ok());
            if let (Ok(whole), Ok(split)) = (whole, split) {
                prop_assert_eq!(whole, split);
            }
        }
    }
}
