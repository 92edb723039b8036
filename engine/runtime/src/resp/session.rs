//! Connection-level RESP commands: the ones a node answers for a connection without the state
//! machine (AUTH, PING, ECHO, QUIT, SELECT, HELLO, CLIENT, COMMAND, CONFIG, INFO, RESET), and
//! the RESP form of the node's replies (redirects, errors, INFO text).
//!
//! Authentication (Redis semantics): with a client password configured, a session starts
//! unauthenticated and every command but AUTH, HELLO, PING, QUIT and RESET answers `-NOAUTH`;
//! `AUTH [user] password` or `HELLO 2 AUTH user password` authenticates as the default
//! (read-write) or the read-only user; a failed attempt answers `-WRONGPASS` and leaves the
//! session as it was; RESET drops back to unauthenticated. Whether a command writes is the app
//! frontend's call: the connection layer refuses a read-only session's proposals ([`no_perm`]).
//!
//! Pure functions over one connection's [`Session`]; the network stage does the I/O. Covers what
//! `redis-cli`, `redis-benchmark` and the common client libraries send when they connect; every
//! command not listed here goes to the app's [`super::Frontend`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::Value;
use crate::net::{ClientRole, ClientUsers, DEFAULT_USER};

/// The Redis version this server claims in `HELLO` and `INFO` (the command surface it mimics;
/// client libraries pick features by it). lockstep's own version is reported beside it.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// What one connection has told the server about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The connection's id (`CLIENT ID`).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// The name set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub name: Option<Bytes>,
    /// The configured users.
    users: Arc<ClientUsers>,
    /// What the session may do: `None` until it authenticates (when a password is required).
    role: Option<ClientRole>,
    /// A MULTI was refused and no EXEC or DISCARD has followed: every command is refused.
    in_refused_multi: bool,
}

/// What a connection-level command asks the network stage to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply.
    Reply(Value),
    /// Send `+OK`, then close the connection once it is flushed.
    Quit,
    /// Ask the node for its status and answer with [`info`].
    Info,
    /// An authentication attempt failed: answer with the value (`-WRONGPASS`), count and log
    /// the failure.
    AuthFailed(Value),
}

impl Session {
    /// A session of connection `id` from `addr`, unauthenticated if `users` require a password.
    pub fn new(id: u64, addr: SocketAddr, users: Arc<ClientUsers>) -> Session {
        Session {
            id,
            addr,
            name: None,
            role: users.anonymous(),
            users,
            in_refused_multi: false,
        }
    }

    /// What the session may do; `None` while it must still authenticate.
    pub fn role(&self) -> Option<ClientRole> {
        self.role
    }

    /// Answers `args` if it is a connection-level command (or refused before authentication);
    /// `None` sends it to the app.
    pub fn command(&mut self, args: &[Bytes]) -> Option<Action> {
        assert!(!args.is_empty(), "a command without a name");
        let name = args[0].to_ascii_lowercase();
        let before_auth = matches!(
            name.as_slice(),
            b"auth" | b"hello" | b"ping" | b"quit" | b"reset"
        );
        if self.role.is_none() && !before_auth {
            return Some(Action::Reply(Value::error(
                "NOAUTH",
                "Authentication required.",
            )));
        }
        if let Some(reply) = self.transaction(&name) {
            return Some(Action::Reply(reply));
        }
        let reply = match name.as_slice() {
            b"auth" => return Some(self.auth(&args[1..])),
            b"ping" => match args.len() {
                1 => Value::Simple("PONG".to_string()),
                2 => Value::Bulk(args[1].clone()),
                _ => arity("ping"),
            },
            b"echo" if args.len() == 2 => Value::Bulk(args[1].clone()),
            b"echo" => arity("echo"),
            b"quit" => return Some(Action::Quit),
            b"select" => match args.get(1).map(|db| &db[..]) {
                Some(b"0") if args.len() == 2 => Value::ok(),
                Some(_) if args.len() == 2 => Value::error(
                    "ERR",
                    "DB index is out of range (lockstep has one database, 0)",
                ),
                _ => arity("select"),
            },
            b"hello" => return Some(self.hello(&args[1..])),
            b"client" => self.client(&args[1..]),
            b"command" => command(&args[1..]),
            b"config" => config(&args[1..]),
            b"info" => return Some(Action::Info),
            b"reset" => {
                self.in_refused_multi = false;
                self.name = None;
                self.role = self.users.anonymous();
                Value::Simple("RESET".to_string())
            }
            _ => return None,
        };
        Some(Action::Reply(reply))
    }

    /// The transaction commands, which lockstep does not support, and the commands sent between
    /// a refused MULTI and its EXEC or DISCARD: each answers an error and nothing is applied.
    /// `None` for any other command outside a refused MULTI (and for QUIT and RESET, which
    /// end the connection's state as they do in Redis).
    fn transaction(&mut self, name: &[u8]) -> Option<Value> {
        const UNSUPPORTED: &str = "lockstep does not support transactions";
        let reply = match (name, self.in_refused_multi) {
            (b"quit" | b"reset", _) => return None,
            (b"multi", _) => {
                self.in_refused_multi = true;
                Value::error(
                    "ERR",
                    format!(
                        "MULTI is refused: {UNSUPPORTED}; the commands up to the next EXEC or \
                         DISCARD are refused and none of them is applied"
                    ),
                )
            }
            (b"exec" | b"discard", true) => {
                self.in_refused_multi = false;
                Value::error(
                    "EXECABORT",
                    format!(
                        "Transaction discarded: {UNSUPPORTED}; no command sent after MULTI was \
                         applied"
                    ),
                )
            }
            (b"exec" | b"discard", false) => Value::error(
                "ERR",
                format!("{} without MULTI: {UNSUPPORTED}", upper(name)),
            ),
            (b"watch" | b"unwatch", false) => {
                Value::error("ERR", format!("{} is refused: {UNSUPPORTED}", upper(name)))
            }
            (_, false) => return None,
            (_, true) => Value::error(
                "EXECABORT",
                format!(
                    "{} is refused and not applied: it follows a MULTI, and {UNSUPPORTED}; \
                     send EXEC or DISCARD to end the refused transaction",
                    upper(name)
                ),
            ),
        };
        Some(reply)
    }

    /// `AUTH password` (the default user) or `AUTH username password`.
    fn auth(&mut self, args: &[Bytes]) -> Action {
        let (user, password) = match args {
            [password] => (DEFAULT_USER.as_bytes(), password),
            [user, password] => (&user[..], password),
            _ => return Action::Reply(arity("auth")),
        };
        if !self.users.required() {
            return Action::Reply(Value::error(
                "ERR",
                "AUTH called without any password configured for the default user \
                 (this node's security.client_password_file is not set)",
            ));
        }
        match self.authenticate(user, password) {
            Ok(()) => Action::Reply(Value::ok()),
            Err(refusal) => refusal,
        }
    }

    /// Checks a user name and password; on success the session takes the user's role.
    fn authenticate(&mut self, user: &[u8], password: &[u8]) -> Result<(), Action> {
        match self.users.check(user, password) {
            Some(role) => {
                self.role = Some(role);
                Ok(())
            }
            None => Err(Action::AuthFailed(Value::error(
                "WRONGPASS",
                "invalid username-password pair or user is disabled.",
            ))),
        }
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`: RESP2 only.
    fn hello(&mut self, args: &[Bytes]) -> Action {
        let error = |code: &str, message: String| Action::Reply(Value::error(code, message));
        let mut rest = args;
        if let Some(version) = rest.first() {
            match std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(2) => {}
                Some(_) => {
                    return error(
                        "NOPROTO",
                        "this server speaks RESP2 only (HELLO 2)".to_string(),
                    )
                }
                None => {
                    return error(
                        "ERR",
                        "Protocol version is not an integer or out of range".to_string(),
                    )
                }
            }
            rest = &rest[1..];
        }
        let mut name = None;
        let mut credentials = None;
        while let Some(option) = rest.first() {
            match (option.to_ascii_lowercase().as_slice(), rest.len()) {
                (b"setname", 2..) => {
                    name = Some(rest[1].clone());
                    rest = &rest[2..];
                }
                (b"auth", 3..) => {
                    credentials = Some((rest[1].clone(), rest[2].clone()));
                    rest = &rest[3..];
                }
                _ => {
                    return error(
                        "ERR",
                        format!(
                            "syntax error in HELLO option '{}'",
                            String::from_utf8_lossy(option)
                        ),
                    )
                }
            }
        }
        match credentials {
            Some(_) if !self.users.required() => {
                return error(
                    "ERR",
                    "HELLO AUTH called without any password configured (this node's \
                     security.client_password_file is not set)"
                        .to_string(),
                )
            }
            Some((user, password)) => {
                if let Err(refusal) = self.authenticate(&user, &password) {
                    return refusal;
                }
            }
            None if self.role.is_none() => {
                return error(
                    "NOAUTH",
                    "HELLO must be called on an authenticated connection, or authenticate \
                     with its AUTH <username> <password> option"
                        .to_string(),
                )
            }
            None => {}
        }
        if name.is_some() {
            self.name = name;
        }
        let text = |s: &str| Value::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        Action::Reply(Value::Array(vec![
            text("server"),
            text("lockstep"),
            text("version"),
            text(REDIS_COMPAT_VERSION),
            text("proto"),
            Value::Int(2),
            text("id"),
            Value::Int(self.id as i64),
            text("mode"),
            text("standalone"),
            text("role"),
            text("master"),
            text("modules"),
            Value::Array(Vec::new()),
        ]))
    }

    fn client(&mut self, args: &[Bytes]) -> Value {
        let Some(sub) = args.first() else {
            return arity("client");
        };
        match (sub.to_ascii_lowercase().as_slice(), args.len()) {
            (b"setname", 2) => {
                if args[1].iter().any(|&byte| byte <= b' ' || byte > b'~') {
                    return Value::error(
                        "ERR",
                        "Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!args[1].is_empty()).then(|| args[1].clone());
                Value::ok()
            }
            (b"getname", 1) => self.name.clone().map_or(Value::Nil, Value::Bulk),
            (b"id", 1) => Value::Int(self.id as i64),
            (b"setinfo", 3) | (b"no-evict", 2) | (b"no-touch", 2) => Value::ok(),
            (b"info", 1) | (b"list", 1) => {
                let name = self
                    .name
                    .as_ref()
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .unwrap_or_default();
                let line = format!(
                    "id={} addr={} name={name} db=0 resp=2\n",
                    self.id, self.addr
                );
                Value::Bulk(Bytes::from(line))
            }
            (b"setname" | b"getname" | b"id" | b"setinfo" | b"info" | b"list", _) => arity(
                &format!("client|{}", String::from_utf8_lossy(sub).to_lowercase()),
            ),
            _ => Value::error(
                "ERR",
                format!(
                    "unknown subcommand '{}'. lockstep supports CLIENT SETNAME, GETNAME, ID, \
                     SETINFO, INFO, LIST",
                    String::from_utf8_lossy(sub)
                ),
            ),
        }
    }
}

/// The refusal of a write (`command`, as sent) on a read-only session:
/// `-NOPERM User reader has no permissions to run the '<command>' command`.
pub fn no_perm(role: ClientRole, command: &[u8]) -> Value {
    Value::error(
        "NOPERM",
        format!(
            "User {} has no permissions to run the '{}' command",
            role.user(),
            String::from_utf8_lossy(command).to_lowercase()
        ),
    )
}

/// A command name as upper-case text, for error messages.
fn upper(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_uppercase()
}

/// `-ERR wrong number of arguments for '<command>' command` (Redis's wording).
pub fn arity(command: &str) -> Value {
    Value::error(
        "ERR",
        format!("wrong number of arguments for '{command}' command"),
    )
}

/// COMMAND: no command table is published (clients fall back to their built-in knowledge).
fn command(args: &[Bytes]) -> Value {
    match args.first().map(|sub| sub.to_ascii_lowercase()).as_deref() {
        None | Some(b"docs") | Some(b"list") => Value::Array(Vec::new()),
        Some(b"count") => Value::Int(0),
        Some(b"info") => Value::Array(args[1..].iter().map(|_| Value::Nil).collect()),
        Some(_) => Value::error(
            "ERR",
            format!(
                "unknown subcommand '{}'. lockstep supports COMMAND, COMMAND COUNT, DOCS, \
                 INFO, LIST",
                String::from_utf8_lossy(&args[0])
            ),
        ),
    }
}

/// The settings `CONFIG GET` reports, as Redis names them (read-only).
const CONFIG: [(&str, &str); 4] = [
    // Snapshots are the state machine's business; no RDB schedule.
    ("save", ""),
    // Every acknowledged write is in a synced, replicated log.
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("databases", "1"),
];

/// CONFIG GET <pattern>...: the matching settings as a flat name/value array. Other CONFIG
/// subcommands are refused (settings come from the node's configuration file).
fn config(args: &[Bytes]) -> Value {
    let Some(sub) = args.first() else {
        return arity("config");
    };
    if !sub.eq_ignore_ascii_case(b"get") {
        return Value::error(
            "ERR",
            format!(
                "CONFIG {} is not supported: lockstep's settings come from its configuration \
                 file (CONFIG GET works)",
                String::from_utf8_lossy(sub).to_uppercase()
            ),
        );
    }
    if args.len() < 2 {
        return arity("config|get");
    }
    let mut out = Vec::new();
    for (name, value) in CONFIG {
        if args[1..]
            .iter()
            .any(|pattern| glob(pattern, name.as_bytes()))
        {
            out.push(Value::Bulk(Bytes::from_static(name.as_bytes())));
            out.push(Value::Bulk(Bytes::from_static(value.as_bytes())));
        }
    }
    Value::Array(out)
}

/// Case-insensitive glob match supporting `*` and `?` (what CONFIG GET patterns use).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((&p, rest)) => text.split_first().is_some_and(|(&t, text_rest)| {
            (p == b'?' || p.eq_ignore_ascii_case(&t)) && glob(rest, text_rest)
        }),
    }
}

/// The redirect a non-leader answers writes and linearizable reads with:
/// `-NOTLEADER <leader client address or ?> <leader node id or ?>`.
pub fn not_leader(leader_addr: Option<&str>, leader: Option<u64>) -> Value {
    let id = leader.map_or_else(|| "?".to_string(), |id| id.to_string());
    Value::Error(format!("NOTLEADER {} {id}", leader_addr.unwrap_or("?")))
}

/// The INFO text for a node status (the JSON of `lockstep status`): a Redis-style `# Server`
/// section (with `redis_version`, which libraries read) and `# Replication` with the node's
/// role, term, leader and indexes.
pub fn info(status_json: &str) -> Value {
    let status: serde_json::Value = serde_json::from_str(status_json).unwrap_or_default();
    let number = |key: &str| {
        status[key]
            .as_u64()
            .map_or("?".to_string(), |n| n.to_string())
    };
    let role = status["role"].as_str().unwrap_or("?");
    let text = format!(
        "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nlockstep_version:{}\r\n\
         redis_mode:standalone\r\nprocess_id:{}\r\n\r\n\
         # Replication\r\nrole:{}\r\nlockstep_role:{role}\r\nlockstep_node_id:{}\r\n\
         lockstep_term:{}\r\nlockstep_leader:{}\r\nlockstep_commit_index:{}\r\n\
         lockstep_applied_index:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        if role == "leader" { "master" } else { "slave" },
        number("id"),
        number("term"),
        number("leader"),
        number("commit"),
        number("applied"),
    );
    Value::Bulk(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(session: &mut Session, words: &[&str]) -> Option<Action> {
        let args: Vec<Bytes> = words
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect();
        session.command(&args)
    }

    fn reply(session: &mut Session, words: &[&str]) -> Value {
        match run(session, words) {
            Some(Action::Reply(value)) => value,
            other => panic!("{words:?} gave {other:?}"),
        }
    }

    fn bulk(text: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn session() -> Session {
        Session::new(7, "127.0.0.1:5000".parse().unwrap(), Arc::default())
    }

    fn guarded() -> Session {
        let users = ClientUsers::new(b"pw", Some(b"ro"));
        Session::new(8, "127.0.0.1:5001".parse().unwrap(), Arc::new(users))
    }

    fn is_error(value: &Value, code: &str) -> bool {
        matches!(value, Value::Error(text) if text.starts_with(&format!("{code} ")))
    }

    fn failed(session: &mut Session, words: &[&str]) -> bool {
        matches!(
            run(session, words),
            Some(Action::AuthFailed(Value::Error(text))) if text.starts_with("WRONGPASS ")
        )
    }

    #[test]
    fn a_password_guards_everything_but_the_greeting() {
        let mut s = guarded();
        assert_eq!(s.role(), None);
        assert!(is_error(&reply(&mut s, &["GET", "k"]), "NOAUTH"));
        assert!(is_error(&reply(&mut s, &["CLIENT", "ID"]), "NOAUTH"));
        assert!(is_error(&reply(&mut s, &["INFO"]), "NOAUTH"));
        assert_eq!(reply(&mut s, &["PING"]), Value::Simple("PONG".into()));
        assert!(is_error(&reply(&mut s, &["HELLO", "2"]), "NOAUTH"));
        assert!(failed(&mut s, &["AUTH", "nope"]));
        assert!(failed(&mut s, &["AUTH", "reader", "pw"]));
        assert!(is_error(&reply(&mut s, &["AUTH"]), "ERR"));
        assert_eq!(s.role(), None);
        assert_eq!(reply(&mut s, &["AUTH", "pw"]), Value::ok());
        assert_eq!(s.role(), Some(ClientRole::ReadWrite));
        assert_eq!(run(&mut s, &["GET", "k"]), None);
        // A failed attempt keeps the earlier authentication.
        assert!(failed(&mut s, &["AUTH", "default", "wrong"]));
        assert_eq!(s.role(), Some(ClientRole::ReadWrite));
        assert_eq!(reply(&mut s, &["AUTH", "reader", "ro"]), Value::ok());
        assert_eq!(s.role(), Some(ClientRole::ReadOnly));
        assert_eq!(reply(&mut s, &["RESET"]), Value::Simple("RESET".into()));
        assert_eq!(s.role(), None);
        assert!(is_error(&reply(&mut s, &["ECHO", "x"]), "NOAUTH"));
        assert!(failed(&mut s, &["HELLO", "2", "AUTH", "default", "ro"]));
        assert!(matches!(
            reply(
                &mut s,
                &["HELLO", "2", "AUTH", "default", "pw", "SETNAME", "n"]
            ),
            Value::Array(_)
        ));
        assert_eq!(s.role(), Some(ClientRole::ReadWrite));
        assert_eq!(reply(&mut s, &["CLIENT", "GETNAME"]), bulk("n"));
        assert_eq!(
            no_perm(ClientRole::ReadOnly, b"SET"),
            Value::Error(
                "NOPERM User reader has no permissions to run the 'set' command".to_string()
            )
        );
    }

    #[test]
    fn transactions_are_refused_and_nothing_after_a_refused_multi_reaches_the_app() {
        let mut s = session();
        for words in [&["EXEC"][..], &["DISCARD"], &["WATCH", "k"], &["UNWATCH"]] {
            let refused = reply(&mut s, words);
            assert!(is_error(&refused, "ERR"), "{words:?}: {refused:?}");
            assert!(format!("{refused:?}").contains("does not support transactions"));
        }
        assert_eq!(run(&mut s, &["SET", "k", "v"]), None);
        for end in ["EXEC", "discard"] {
            assert!(is_error(&reply(&mut s, &["MULTI"]), "ERR"));
            for words in [
                &["SET", "k", "v"][..],
                &["INCR", "n"],
                &["PING"],
                &["AUTH", "x"],
            ] {
                assert!(is_error(&reply(&mut s, words), "EXECABORT"), "{words:?}");
            }
            // A nested MULTI is refused too and leaves the connection refusing.
            assert!(is_error(&reply(&mut s, &["MULTI"]), "ERR"));
            assert!(is_error(&reply(&mut s, &["GET", "k"]), "EXECABORT"));
            assert!(is_error(&reply(&mut s, &[end]), "EXECABORT"));
            assert_eq!(run(&mut s, &["SET", "k", "v"]), None, "after {end}");
        }
        // QUIT still quits and RESET ends the refused transaction, as in Redis.
        assert!(is_error(&reply(&mut s, &["MULTI"]), "ERR"));
        assert_eq!(run(&mut s, &["QUIT"]), Some(Action::Quit));
        assert_eq!(reply(&mut s, &["RESET"]), Value::Simple("RESET".into()));
        assert_eq!(run(&mut s, &["GET", "k"]), None);
        // Before authentication MULTI is refused for that reason and changes nothing.
        let mut g = guarded();
        assert!(is_error(&reply(&mut g, &["MULTI"]), "NOAUTH"));
        assert_eq!(reply(&mut g, &["AUTH", "pw"]), Value::ok());
        assert_eq!(run(&mut g, &["SET", "k", "v"]), None);
    }

    #[test]
    fn auth_without_a_configured_password_is_an_error() {
        let mut s = session();
        assert!(is_error(&reply(&mut s, &["AUTH", "x"]), "ERR"));
        assert!(is_error(
            &reply(&mut s, &["HELLO", "2", "AUTH", "default", "x"]),
            "ERR"
        ));
        assert_eq!(s.role(), Some(ClientRole::ReadWrite));
    }

    #[test]
    fn answers_connection_commands() {
        let mut s = session();
        assert_eq!(reply(&mut s, &["PING"]), Value::Simple("PONG".into()));
        assert_eq!(reply(&mut s, &["ping", "hi"]), bulk("hi"));
        assert_eq!(reply(&mut s, &["echo", "x"]), bulk("x"));
        assert!(matches!(reply(&mut s, &["echo"]), Value::Error(e) if e.contains("'echo'")));
        assert_eq!(reply(&mut s, &["select", "0"]), Value::ok());
        assert!(matches!(reply(&mut s, &["select", "1"]), Value::Error(e) if e.contains("range")));
        assert_eq!(run(&mut s, &["QUIT"]), Some(Action::Quit));
        assert_eq!(run(&mut s, &["INFO", "server"]), Some(Action::Info));
        assert_eq!(run(&mut s, &["SET", "k", "v"]), None);
        assert_eq!(reply(&mut s, &["COMMAND"]), Value::Array(vec![]));
        assert_eq!(reply(&mut s, &["COMMAND", "DOCS"]), Value::Array(vec![]));
        assert_eq!(reply(&mut s, &["command", "count"]), Value::Int(0));
    }

    #[test]
    fn client_names_and_hello() {
        let mut s = session();
        assert_eq!(reply(&mut s, &["CLIENT", "GETNAME"]), Value::Nil);
        assert_eq!(reply(&mut s, &["CLIENT", "SETNAME", "app"]), Value::ok());
        assert_eq!(reply(&mut s, &["client", "getname"]), bulk("app"));
        assert_eq!(reply(&mut s, &["CLIENT", "ID"]), Value::Int(7));
        assert!(matches!(
            reply(&mut s, &["CLIENT", "SETNAME", "a b"]),
            Value::Error(_)
        ));
        assert!(
            matches!(reply(&mut s, &["CLIENT", "KILL"]), Value::Error(e) if e.contains("KILL"))
        );
        let Value::Bulk(info) = reply(&mut s, &["CLIENT", "INFO"]) else {
            panic!("CLIENT INFO is a bulk string")
        };
        assert!(info.starts_with(b"id=7 addr=127.0.0.1:5000 name=app"));
        assert!(matches!(
            reply(&mut s, &["HELLO", "3"]),
            Value::Error(e) if e.starts_with("NOPROTO ")
        ));
        let Value::Array(fields) = reply(&mut s, &["HELLO", "2", "SETNAME", "other"]) else {
            panic!("HELLO answers an array")
        };
        assert_eq!(fields[4..6], [bulk("proto"), Value::Int(2)]);
        assert_eq!(reply(&mut s, &["CLIENT", "GETNAME"]), bulk("other"));
        assert_eq!(
            reply(&mut s, &["RESET"]),
            Value::Simple("RESET".to_string())
        );
        assert_eq!(reply(&mut s, &["CLIENT", "GETNAME"]), Value::Nil);
    }

    #[test]
    fn config_get_matches_patterns() {
        let mut s = session();
        assert_eq!(
            reply(&mut s, &["CONFIG", "GET", "save"]),
            Value::Array(vec![bulk("save"), bulk("")])
        );
        assert_eq!(
            reply(&mut s, &["config", "get", "APPEND*"]),
            Value::Array(vec![
                bulk("appendonly"),
                bulk("yes"),
                bulk("appendfsync"),
                bulk("always")
            ])
        );
        assert_eq!(
            reply(&mut s, &["CONFIG", "GET", "nothing"]),
            Value::Array(vec![])
        );
        assert!(matches!(
            reply(&mut s, &["CONFIG", "SET", "x", "y"]),
            Value::Error(_)
        ));
    }

    #[test]
    fn redirects_and_info() {
        assert_eq!(
            not_leader(Some("127.0.0.1:6381"), Some(2)),
            Value::Error("NOTLEADER 127.0.0.1:6381 2".to_string())
        );
        assert_eq!(
            not_leader(None, None),
            Value::Error("NOTLEADER ? ?".to_string())
        );
        let Value::Bulk(text) = info(r#"{"id":1,"role":"leader","term":3,"leader":1,"commit":9}"#)
        else {
            panic!("INFO is a bulk string")
        };
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(text.contains("redis_version:7.0.0\r\n"), "{text}");
        assert!(text.contains("role:master\r\n") && text.contains("lockstep_term:3\r\n"));
        assert!(text.contains("lockstep_applied_index:?\r\n"), "{text}");
    }
}
