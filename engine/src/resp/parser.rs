//! Incremental RESP2 request parsing with size limits: arrays of bulk strings (what every client
//! library sends) and inline commands (what a person types into `telnet`).
