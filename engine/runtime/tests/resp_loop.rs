//! RESP on the client port of running nodes over real TCP, with a tiny frontend over the test
//! key-value machine: pipelined requests answered in order (local replies held behind earlier
//! proposals and reads), the follower's redirect, connection-level commands, back-pressure on a
//! client that does not read, and malformed or oversized input closing only its connection.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep::resp::parser::encode_request;
use lockstep::resp::{Frontend, RouteContext, Routed, Value};
use lockstep::{Node, NodeConfig};
use lockstep_testkit::cluster::{wait_leader, Kv, TestCluster};

/// `SET k v` proposes `k=v`, `GET k` reads `k`; replies are the machine's bytes as bulk strings.
#[derive(Debug)]
struct Tiny;

impl Frontend for Tiny {
    fn route(&self, args: &[Bytes], _context: &RouteContext) -> Routed {
        match (args[0].to_ascii_lowercase().as_slice(), args.len()) {
            (b"set", 3) => Routed::Propose(Bytes::from([&args[1][..], b"=", &args[2]].concat())),
            (b"get", 2) => Routed::Read(args[1].clone()),
            _ => Routed::Reply(Value::error(
                "ERR",
                format!("unknown command '{}'", String::from_utf8_lossy(&args[0])),
            )),
        }
    }

    fn reply(&self, result: &[u8]) -> Value {
        Value::Bulk(Bytes::copy_from_slice(result))
    }
}

/// A blocking RESP connection.
struct Resp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp {
    fn open(addr: SocketAddr) -> Resp {
        let writer = TcpStream::connect(addr).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        Resp { writer, reader }
    }

    fn send(&mut self, commands: &[&[&str]]) {
        let mut wire = Vec::new();
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(|arg| arg.as_bytes()).collect();
            encode_request(&args, &mut wire);
        }
        self.writer.write_all(&wire).unwrap();
    }

    fn read(&mut self) -> Value {
        Value::read_from(&mut self.reader, 64 << 20).unwrap()
    }

    fn call(&mut self, command: &[&str]) -> Value {
        self.send(&[command]);
        self.read()
    }

    /// Whether the server closed the connection (after any replies still unread).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

fn bulk(text: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

fn start(
    n: u64,
    frontend: Option<Arc<dyn Frontend>>,
) -> (Vec<Option<Node>>, Vec<tempfile::TempDir>) {
    let tune = |cfg: &mut NodeConfig| {
        cfg.frontend = frontend.clone();
        cfg.max_frame_bytes = 1 << 20;
    };
    let cluster = TestCluster::start(n, true, 1 << 20, tune, |cfg| {
        Node::start(cfg, Kv::default())
    });
    (cluster.nodes, cluster.dirs)
}

#[test]
fn pipelined_requests_are_answered_in_order_and_followers_redirect() {
    let (nodes, _dirs) = start(3, Some(Arc::new(Tiny)));
    let leader = wait_leader(&nodes);
    let leader_node = nodes[leader].as_ref().unwrap();
    let mut conn = Resp::open(leader_node.client_addr().unwrap());

    // One write: proposals, reads and local commands interleaved; replies in request order.
    conn.send(&[
        &["SET", "a", "1"],
        &["GET", "a"],
        &["PING"],
        &["SET", "a", "2"],
        &["ECHO", "x"],
        &["GET", "a"],
        &["NOPE"],
        &["INFO"],
    ]);
    assert_eq!(conn.read(), bulk(""));
    assert_eq!(conn.read(), bulk("1"));
    assert_eq!(conn.read(), Value::Simple("PONG".to_string()));
    assert_eq!(conn.read(), bulk("1"));
    assert_eq!(conn.read(), bulk("x"));
    assert_eq!(conn.read(), bulk("2"));
    assert_eq!(
        conn.read(),
        Value::Error("ERR unknown command 'NOPE'".to_string())
    );
    let Value::Bulk(info) = conn.read() else {
        panic!("INFO is a bulk string")
    };
    let info = String::from_utf8(info.to_vec()).unwrap();
    assert!(info.contains("role:master\r\n"), "{info}");
    assert!(info.contains("lockstep_role:leader\r\n"), "{info}");

    // Inline commands work too.
    conn.writer.write_all(b"PING hello\r\n").unwrap();
    assert_eq!(conn.read(), bulk("hello"));

    // A deep pipeline: more requests than a connection may have in flight at once.
    let count = 3 * lockstep::net::RESP_IN_FLIGHT_MAX;
    let keys: Vec<String> = (0..count).map(|i| format!("k{i}")).collect();
    let commands: Vec<[&str; 3]> = keys.iter().map(|key| ["SET", key, key]).collect();
    let commands: Vec<&[&str]> = commands.iter().map(|command| &command[..]).collect();
    conn.send(&commands);
    conn.send(&[&["GET", "k5"]]);
    for _ in 0..count {
        assert_eq!(conn.read(), bulk(""));
    }
    assert_eq!(conn.read(), bulk("k5"));

    // A follower redirects writes and linearizable reads to the leader's client address.
    let follower = (leader + 1) % 3;
    let mut other = Resp::open(nodes[follower].as_ref().unwrap().client_addr().unwrap());
    let redirect = Value::Error(format!(
        "NOTLEADER {} {}",
        leader_node.client_addr().unwrap(),
        leader + 1
    ));
    assert_eq!(other.call(&["SET", "b", "1"]), redirect);
    assert_eq!(other.call(&["GET", "a"]), redirect);
    assert_eq!(other.call(&["PING"]), Value::Simple("PONG".to_string()));
    let Value::Bulk(info) = other.call(&["INFO"]) else {
        panic!("INFO is a bulk string")
    };
    assert!(String::from_utf8_lossy(&info).contains("role:slave\r\n"));

    // QUIT answers +OK and closes.
    assert_eq!(conn.call(&["QUIT"]), Value::ok());
    assert!(conn.closed());
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}

#[test]
fn a_client_that_does_not_read_is_paused_not_buffered() {
    let (nodes, _dirs) = start(1, Some(Arc::new(Tiny)));
    let node = nodes[0].as_ref().unwrap();
    let mut conn = Resp::open(node.client_addr().unwrap());
    // 300k PINGs (5.7 MB of replies) written by a thread while this one reads nothing for a
    // while: the server stops reading once 1 MiB of replies is queued, and TCP holds the rest.
    let count = 300_000;
    let mut writer = conn.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let pings = b"*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n".repeat(count);
        writer.write_all(&pings).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..count {
        assert_eq!(conn.read(), bulk("hello"));
    }
    sender.join().unwrap();
    assert_eq!(conn.call(&["SET", "after", "1"]), bulk(""));
    drop(nodes);
}

#[test]
fn bad_input_closes_only_its_connection() {
    let (nodes, _dirs) = start(1, None);
    let node = nodes[0].as_ref().unwrap();
    let addr = node.client_addr().unwrap();
    let mut good = Resp::open(addr);
    assert_eq!(good.call(&["PING"]), Value::Simple("PONG".to_string()));
    // Without a frontend, only connection-level commands work.
    assert_eq!(
        good.call(&["SET", "a", "1"]),
        Value::Error("ERR this node's app has no RESP command set".to_string())
    );

    // Malformed: the requests before the bad bytes are answered, then the error, then close.
    let mut bad = Resp::open(addr);
    bad.writer
        .write_all(b"*1\r\n$4\r\nPING\r\n*1\r\n:5\r\n")
        .unwrap();
    assert_eq!(bad.read(), Value::Simple("PONG".to_string()));
    assert_eq!(
        bad.read(),
        Value::Error("ERR Protocol error: expected '$' at byte 4, got ':'".to_string())
    );
    assert!(bad.closed());

    // Oversized: refused from the announced length (the node's frames are 1 MiB).
    let mut big = Resp::open(addr);
    big.writer
        .write_all(b"*2\r\n$4\r\nECHO\r\n$2000000\r\n")
        .unwrap();
    let Value::Error(error) = big.read() else {
        panic!("an oversized request gets an error")
    };
    assert!(
        error.starts_with("ERR Protocol error: request of at least"),
        "{error}"
    );
    assert!(big.closed());

    assert_eq!(good.call(&["ECHO", "still here"]), bulk("still here"));
    let stats = node.status().net.unwrap();
    assert_eq!(stats.bad_frames, 2, "{stats:?}");
    drop(nodes);
}
