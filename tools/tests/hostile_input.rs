//! Hostile input against a real 3-node cluster: a wrong cluster id, garbage bytes and an
//! oversized frame, sent both to a peer port and to a client port. Each such connection is
//! closed (or the handshake refused), and the cluster keeps committing afterwards.

mod common;

use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Cluster, CLIENT_TIMEOUT};
use lockstep::client::{Client, ClientError, ClusterClient};
use lockstep::net::frame::{encode_frame, frame_header, FrameType};
use lockstep::net::{ClientHello, ClientRequest, PeerHello};
use lockstep::types::NodeId;

/// 2 MiB frames (above the default 1 MiB appends), so the oversized frame below is only 4 MiB.
const MAX_FRAME_BYTES: u32 = 2 << 20;

/// Asserts that the node closes `stream` (after possibly answering) within a few seconds.
fn assert_closed(mut stream: TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return
            }
            Err(err) => panic!("{what}: the node did not close the connection: {err}"),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect")
}

fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = connect(addr);
    // The node may close before reading everything; a failed write is fine then.
    let _ = stream.write_all(bytes);
    stream
}

/// Bytes that are not a frame (and not RESP either: the first byte is not ASCII).
fn garbage() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = vec![0xFFu8];
    while out.len() < 4096 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// A frame header announcing a body twice the node's frame limit, then some of that body.
fn oversized(ty: FrameType) -> Vec<u8> {
    let body = vec![7u8; 2 * MAX_FRAME_BYTES as usize];
    let mut out = frame_header(ty, [body.as_slice()]).to_vec();
    out.extend_from_slice(&body[..4096]);
    out
}

fn commits(client: &mut ClusterClient, count: usize, what: &str) {
    for n in 0..count {
        let entry = format!("{what}-{n}");
        if let Err(err) = client.propose(entry.as_bytes()) {
            panic!("the cluster stopped committing after {what}: {err}");
        }
    }
}

#[test]
fn hostile_connections_are_refused_and_the_cluster_keeps_committing() {
    let max_frame = MAX_FRAME_BYTES.to_string();
    let cluster = Cluster::start(3, "journal", &["--max-frame-bytes", &max_frame]);
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT);
    commits(&mut client, 50, "start");

    for id in cluster.ids() {
        let peer = cluster.peer_addr(id);
        let mut hello = Vec::new();
        PeerHello::new(cluster.cluster_id + 1, NodeId(9), false, [0; 32]).encode(&mut hello);
        let mut frame = Vec::new();
        encode_frame(FrameType::PeerHello, &hello, &mut frame);
        assert_closed(send(peer, &frame), "peer port, wrong cluster id");
        assert_closed(send(peer, &garbage()), "peer port, garbage");
        assert_closed(
            send(peer, &oversized(FrameType::PeerHello)),
            "peer port, oversized",
        );
        commits(&mut client, 50, &format!("peer attacks on node {id}"));

        let addr = cluster.client_addr(id);
        match Client::connect(addr, cluster.cluster_id + 1, CLIENT_TIMEOUT) {
            Err(ClientError::Refused(message)) => assert!(
                message.contains(&(cluster.cluster_id + 1).to_string()),
                "the refusal should name the wrong cluster id: {message}"
            ),
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("a client of another cluster was accepted"),
        }
        assert_closed(send(addr, &garbage()), "client port, garbage");
        assert_closed(
            send(addr, &oversized(FrameType::ClientHello)),
            "client port, oversized hello",
        );
        // Oversized after a good handshake.
        let mut hello = Vec::new();
        ClientHello::new(cluster.cluster_id).encode(&mut hello);
        let mut good_hello = Vec::new();
        encode_frame(FrameType::ClientHello, &hello, &mut good_hello);
        let mut stream = send(addr, &good_hello);
        let _ = stream.write_all(&oversized(FrameType::ClientRequest));
        assert_closed(stream, "client port, oversized request");
        commits(&mut client, 50, &format!("client attacks on node {id}"));
    }
}

/// Client request frames that pass the framing but whose bodies are valid requests altered at
/// one byte, or random bytes, go after a good handshake to every node's client port, through
/// the code that decodes and serves them: the nodes answer or close the connection, none
/// stops, and the cluster keeps committing.
#[test]
fn no_client_request_frame_stops_a_node() {
    let cluster = Cluster::start(3, "journal", &[]);
    let mut client = ClusterClient::new(cluster.client_addrs(), cluster.cluster_id, CLIENT_TIMEOUT);
    commits(&mut client, 20, "start");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bases = [
        ClientRequest::Propose {
            req: 1,
            command: Bytes::from_static(b"fuzzed command"),
        },
        ClientRequest::ProposeBatch {
            req: 2,
            commands: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        },
        ClientRequest::Read {
            req: 3,
            query: Bytes::from_static(b"q"),
            linearizable: true,
        },
        ClientRequest::Read {
            req: 4,
            query: Bytes::new(),
            linearizable: false,
        },
        ClientRequest::Status { req: 5 },
    ];
    let mut hello = Vec::new();
    ClientHello::new(cluster.cluster_id).encode(&mut hello);
    let mut good_hello = Vec::new();
    encode_frame(FrameType::ClientHello, &hello, &mut good_hello);
    for id in cluster.ids() {
        for connection in 0..20 {
            let mut bytes = good_hello.clone();
            for _ in 0..8 {
                let mut body = Vec::new();
                if connection % 4 == 3 {
                    let len = (next() % 64) as usize;
                    body.extend((0..len).map(|_| next() as u8));
                } else {
                    bases[(next() % bases.len() as u64) as usize].encode(&mut body);
                    let at = (next() as usize) % body.len();
                    body[at] ^= (next() % 255 + 1) as u8;
                }
                encode_frame(FrameType::ClientRequest, &body, &mut bytes);
            }
            let mut stream = send(cluster.client_addr(id), &bytes);
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let mut buf = [0u8; 4096];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
        for node in cluster.ids() {
            assert!(
                cluster.status(node).is_ok(),
                "node {node} stopped answering after altered requests to node {id}:\n{}",
                cluster.log_tail(node)
            );
        }
        commits(&mut client, 20, &format!("altered requests to node {id}"));
    }
}
