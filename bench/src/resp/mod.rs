//! The bench's RESP2 client side: commands written into a reused buffer without allocating
//! ([`encode`]) and replies read incrementally from a connection's buffer without copying
//! ([`reply`]).
//!
//! The server side of RESP (values, the request parser, the command sets) lives in
//! `lockstep::resp`; the bench needs the other direction, at load-generator speed: one `Vec`
//! per connection for the commands it writes and one for the bytes it reads, both reused for
//! the whole run, and replies that borrow from the read buffer.

pub mod encode;
pub mod reply;
