//! The client protocol against running nodes over real TCP: proposals, reads, status, transfer,
//! and the redirect a follower answers with.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use lockstep::net::frame::{encode_frame, read_frame, FrameType};
use lockstep::net::{ClientHello, ClientReply, ClientRequest};
use lockstep::types::NodeId;
use lockstep::Node;
use lockstep_testkit::cluster::{wait_for, wait_leader, Kv, TestCluster};

/// A blocking framed connection.
struct Conn {
    stream: TcpStream,
    body: Vec<u8>,
}

impl Conn {
    fn open(node: &Node) -> Conn {
        let stream = TcpStream::connect(node.client_addr().expect("a client port")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut conn = Conn {
            stream,
            body: Vec::new(),
        };
        let mut hello = Vec::new();
        ClientHello::new(7).encode(&mut hello);
        let mut frame = Vec::new();
        encode_frame(FrameType::ClientHello, &hello, &mut frame);
        conn.stream.write_all(&frame).unwrap();
        assert_eq!(conn.reply(), ClientReply::Ok { req: 0 });
        conn
    }

    fn send(&mut self, requests: &[ClientRequest]) {
        let mut frames = Vec::new();
        let mut body = Vec::new();
        for request in requests {
            body.clear();
            request.encode(&mut body);
            encode_frame(FrameType::ClientRequest, &body, &mut frames);
        }
        self.stream.write_all(&frames).unwrap();
    }

    fn reply(&mut self) -> ClientReply {
        let ty = read_frame(&mut self.stream, 64 << 20, &mut self.body).unwrap();
        assert_eq!(ty, FrameType::ClientReply);
        ClientReply::decode(&self.body).unwrap()
    }
}

#[test]
fn clients_propose_read_and_get_redirected() {
    let cluster = TestCluster::start(
        3,
        true,
        1 << 20,
        |_| {},
        |cfg| Node::start(cfg, Kv::default()),
    );
    let (nodes, members) = (cluster.nodes, cluster.members);
    let leader = wait_leader(&nodes);
    let leader_node = nodes[leader].as_ref().unwrap();

    // Pipelined proposals on one connection: each answered once, with its own result.
    let mut conn = Conn::open(leader_node);
    let requests: Vec<_> = (0..2000u64)
        .map(|req| ClientRequest::Propose {
            req,
            command: Bytes::from(format!("k{}={req}", req % 10)),
        })
        .collect();
    conn.send(&requests);
    let mut seen = vec![false; 2000];
    for _ in 0..2000 {
        match conn.reply() {
            ClientReply::Applied { req, result, .. } => {
                assert!(!seen[req as usize], "req {req} answered twice");
                seen[req as usize] = true;
                let expected = if req < 10 {
                    String::new()
                } else {
                    (req - 10).to_string()
                };
                assert_eq!(result, Bytes::from(expected), "req {req}");
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    conn.send(&[
        ClientRequest::Read {
            req: 5000,
            query: Bytes::from_static(b"k3"),
            linearizable: true,
        },
        ClientRequest::Status { req: 5001 },
    ]);
    for _ in 0..2 {
        match conn.reply() {
            ClientReply::ReadOk {
                req: 5000, result, ..
            } => {
                assert_eq!(result, Bytes::from_static(b"1993"))
            }
            ClientReply::Status { req: 5001, json } => {
                assert!(json.contains("\"role\":\"leader\""), "{json}")
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    // A follower redirects proposals and linearizable reads, and serves local reads.
    let follower = (leader + 1) % 3;
    let mut conn = Conn::open(nodes[follower].as_ref().unwrap());
    conn.send(&[ClientRequest::Propose {
        req: 1,
        command: Bytes::from_static(b"x=1"),
    }]);
    let leader_client = members[&NodeId(leader as u64 + 1)].client_addr.unwrap();
    assert_eq!(
        conn.reply(),
        ClientReply::NotLeader {
            req: 1,
            leader: Some(NodeId(leader as u64 + 1)),
            leader_addr: Some(leader_client.to_string()),
        }
    );
    wait_for("the follower to apply", Duration::from_secs(10), || {
        conn.send(&[ClientRequest::Read {
            req: 2,
            query: Bytes::from_static(b"k3"),
            linearizable: false,
        }]);
        matches!(conn.reply(), ClientReply::ReadOk { result, .. } if result == Bytes::from_static(b"1993"))
    });

    // Transfer leadership through the protocol.
    let target = NodeId(follower as u64 + 1);
    let mut conn = Conn::open(leader_node);
    conn.send(&[ClientRequest::TransferLeader { req: 9, to: target }]);
    assert_eq!(conn.reply(), ClientReply::Ok { req: 9 });
    wait_for("the transfer", Duration::from_secs(10), || {
        nodes[follower].as_ref().unwrap().leadership().role == lockstep::Role::Leader
    });
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}
