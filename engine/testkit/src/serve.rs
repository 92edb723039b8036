//! The `lockstep serve` command line of a local node, and the status queries a supervisor
//! makes over the client protocol (a node's status, the leader its members agree on).

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use lockstep::client::{Client, ClientError, Credentials};
use lockstep::net::ClientTls;
use lockstep_server::MemberConfig;
use serde_json::Value;

/// What every local node is started with: `serve --id ID --cluster-id N --data-dir DIR
/// --app APP --member M...` (and `--join`).
#[derive(Clone, Copy, Debug)]
pub struct ServeFlags<'a> {
    /// The node's id.
    pub id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The node's data directory.
    pub data_dir: &'a Path,
    /// The state machine, by name (`kv`, `bank`, `lock`, `journal`).
    pub app: &'a str,
    /// The `--member` flags.
    pub members: &'a [MemberConfig],
    /// Whether to pass `--join` (a node added to a running cluster).
    pub join: bool,
}

impl ServeFlags<'_> {
    /// The arguments, from the `serve` subcommand on.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--id".into(),
            self.id.to_string().into(),
            "--cluster-id".into(),
            self.cluster_id.to_string().into(),
            "--data-dir".into(),
            self.data_dir.into(),
            "--app".into(),
            self.app.into(),
        ];
        for member in self.members {
            args.push("--member".into());
            args.push(member.to_string().into());
        }
        if self.join {
            args.push("--join".into());
        }
        args
    }
}

/// Why a node's status could not be read.
#[derive(Debug)]
pub enum StatusError {
    /// The client protocol failed (no answer, refused handshake...).
    Client(ClientError),
    /// The status was not JSON.
    NotJson(serde_json::Error),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Client(error) => write!(f, "{error}"),
            StatusError::NotJson(error) => write!(f, "status is not JSON: {error}"),
        }
    }
}

impl std::error::Error for StatusError {}

/// How to reach a node's client port for a status query.
#[derive(Clone, Copy)]
pub struct StatusQuery<'a> {
    /// The cluster id.
    pub cluster_id: u64,
    /// The connect and reply timeout.
    pub timeout: Duration,
    /// The client credentials, if the nodes ask for them.
    pub credentials: Option<&'a Credentials>,
    /// The client side of TLS, if the client ports speak it.
    pub tls: Option<&'a ClientTls>,
}

impl StatusQuery<'_> {
    /// The status JSON of the node at `addr`.
    pub fn status(&self, addr: SocketAddr) -> Result<Value, StatusError> {
        let mut client = Client::connect_with(
            addr,
            self.cluster_id,
            self.timeout,
            self.credentials,
            self.tls,
        )
        .map_err(StatusError::Client)?;
        let json = client.status().map_err(StatusError::Client)?;
        serde_json::from_str(&json).map_err(StatusError::NotJson)
    }
}

/// The leader every node agrees on, given each node's status (`None` for a node that did not
/// answer): every node answered and names the same leader, which is among them and says it
/// leads.
pub fn agreed_leader(statuses: &[Option<Value>]) -> Option<u64> {
    let first = statuses.first()?.as_ref()?;
    let leader = first["leader"].as_u64()?;
    let mut leads = false;
    for status in statuses {
        let status = status.as_ref()?;
        if status["leader"].as_u64() != Some(leader) {
            return None;
        }
        leads |= status["id"].as_u64() == Some(leader) && status["role"] == "leader";
    }
    leads.then_some(leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: &str, leader: u64) -> Option<Value> {
        Some(serde_json::json!({ "id": id, "role": role, "leader": leader }))
    }

    #[test]
    fn a_leader_is_agreed_only_when_every_node_names_it_and_it_leads() {
        let agreed = [
            status(1, "follower", 2),
            status(2, "leader", 2),
            status(3, "follower", 2),
        ];
        assert_eq!(agreed_leader(&agreed), Some(2));
        let silent = [status(1, "follower", 2), status(2, "leader", 2), None];
        assert_eq!(agreed_leader(&silent), None);
        let split = [status(1, "leader", 1), status(2, "leader", 2)];
        assert_eq!(agreed_leader(&split), None);
        // Node 2 was killed: the others still name it, but it is not among them.
        let gone = [status(1, "follower", 2), status(3, "follower", 2)];
        assert_eq!(agreed_leader(&gone), None);
        assert_eq!(agreed_leader(&[]), None);
    }

    #[test]
    fn serve_flags_name_every_member_and_join_only_when_asked() {
        let members = crate::ports::loopback_members(1..=2).unwrap();
        let flags = ServeFlags {
            id: 2,
            cluster_id: 9,
            data_dir: Path::new("/d/node-2"),
            app: "kv",
            members: &members,
            join: false,
        };
        let text = |flags: ServeFlags| -> Vec<String> {
            flags
                .to_args()
                .into_iter()
                .map(|arg| arg.into_string().unwrap())
                .collect()
        };
        let args = text(flags);
        assert_eq!(
            args[..9],
            [
                "serve",
                "--id",
                "2",
                "--cluster-id",
                "9",
                "--data-dir",
                "/d/node-2",
                "--app",
                "kv"
            ]
        );
        assert_eq!(
            args[9..],
            [
                "--member",
                &members[0].to_string(),
                "--member",
                &members[1].to_string()
            ]
        );
        assert_eq!(
            text(ServeFlags {
                join: true,
                ..flags
            })
            .last()
            .unwrap(),
            "--join"
        );
    }
}
