//! Network namespaces for partitions: each node runs in its own namespace, attached by a veth
//! pair to one bridge in the harness's namespace (which holds the bridge address, so the
//! harness and its clients reach every node). Partitions are nftables rules in a node's own
//! namespace dropping packets from chosen peers, so links can be cut one way or both ways and
//! restored without touching the clients' path.
//!
//! Names carry the harness's process id, so concurrent runs do not collide; everything created
//! is deleted on drop (also after a panic). Needs root, `ip` (iproute2) and `nft` (nftables).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// The nftables table and chain every node's namespace gets (empty = nothing cut).
const NFT_SETUP: [&str; 2] = [
    "add table inet chaos",
    "add chain inet chaos input { type filter hook input priority 0; policy accept; }",
];

/// Creates the chaos table and chain in `namespace`.
fn nft_setup(namespace: &str) -> Result<(), String> {
    for command in NFT_SETUP {
        run("ip", &["netns", "exec", namespace, "nft", command])?;
    }
    Ok(())
}

/// Highest node id a namespace can be made for (the last octet of its address; 254 is the
/// harness's).
const NODE_ID_MAX: u64 = 253;

/// The namespaces, veth pairs and bridge of one run.
pub struct Netns {
    tag: String,
    subnet: u8,
    /// Nodes whose namespace exists (the first ones, and nodes added since), in id order.
    created_nodes: Vec<u64>,
    bridge_created: bool,
}

/// Runs `program args`, returning its stderr on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why partitions cannot run here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(program)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Some(format!("`{program}` not found (install {package})"));
        }
    }
    let probe = format!("lsprobe{}", std::process::id());
    if let Err(err) = run("ip", &["netns", "add", &probe]) {
        return Some(format!(
            "cannot create a network namespace (root needed?): {err}"
        ));
    }
    let nft = nft_setup(&probe);
    let _ = run("ip", &["netns", "del", &probe]);
    nft.err()
        .map(|err| format!("nftables does not work in a namespace: {err}"))
}

impl Netns {
    /// Creates the bridge and one namespace per node (ids `1..=nodes`).
    pub fn create(nodes: u64) -> Result<Netns, String> {
        assert!(
            (1..=NODE_ID_MAX).contains(&nodes),
            "{nodes} nodes do not fit the subnet"
        );
        let pid = std::process::id();
        let mut netns = Netns {
            tag: format!("ls{pid}"),
            // 10.213.<20..=219>.0/24: keeps concurrent runs apart with high probability.
            subnet: 20 + (pid % 200) as u8,
            created_nodes: Vec::new(),
            bridge_created: false,
        };
        let bridge = netns.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        netns.bridge_created = true;
        let bridge_addr = format!("{}/24", netns.host_addr());
        run("ip", &["addr", "add", &bridge_addr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for id in 1..=nodes {
            netns.add_node(id)?;
        }
        Ok(netns)
    }

    /// Creates node `id`'s namespace, attached to the bridge (a node added during the run).
    pub fn add_node(&mut self, id: u64) -> Result<(), String> {
        assert!(
            (1..=NODE_ID_MAX).contains(&id),
            "node {id} does not fit the subnet"
        );
        assert!(
            !self.created_nodes.contains(&id),
            "node {id} has a namespace already"
        );
        let bridge = self.bridge();
        let namespace = self.namespace(id);
        let veth = format!("{}v{id}", self.tag);
        run("ip", &["netns", "add", &namespace])?;
        self.created_nodes.push(id);
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ],
        )?;
        run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
        let addr = format!("{}/24", self.addr(id));
        run(
            "ip",
            &["-n", &namespace, "addr", "add", &addr, "dev", "eth0"],
        )?;
        run("ip", &["-n", &namespace, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
        nft_setup(&namespace)?;
        Ok(())
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The namespace node `id` runs in.
    pub fn namespace(&self, id: u64) -> String {
        format!("{}n{id}", self.tag)
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> IpAddr {
        assert!(
            self.created_nodes.contains(&id),
            "node {id} has no namespace"
        );
        IpAddr::V4(Ipv4Addr::new(10, 213, self.subnet, id as u8))
    }

    /// The harness's address on the bridge.
    fn host_addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 213, self.subnet, 254))
    }

    /// A hook that moves the child it runs in into node `id`'s namespace, for
    /// `lockstep_testkit::process::Launch::pre_exec` (the child's pid stays the program's).
    ///
    /// The child joins the namespace's network only (`setns` between fork and exec), not a mount
    /// namespace of its own as `ip netns exec` would give it: such a namespace keeps a copy of
    /// every mount of the harness, the power nemesis's disks included, and a copied FUSE mount
    /// outlives its unmount here, so a disk could never be powered on again.
    ///
    /// The hook only makes the setns(2) system call, which is async-signal-safe, on a
    /// descriptor it owns.
    pub fn enter_hook(&self, id: u64) -> impl FnMut() -> std::io::Result<()> + Send + Sync {
        let path = format!("/run/netns/{}", self.namespace(id));
        // Opened close-on-exec in the harness: still open in the child until its exec.
        let namespace = std::fs::File::open(&path)
            .unwrap_or_else(|err| panic!("open {path} (created with the namespace): {err}"));
        move || {
            // SAFETY: setns(2) on a descriptor the hook owns; it changes only this process's
            // network namespace.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }

    /// Drops every packet from node `from` arriving at node `to` (one direction).
    pub fn cut(&self, from: u64, to: u64) -> Result<(), String> {
        assert_ne!(from, to, "cannot cut node {from} from itself");
        let rule = format!(
            "add rule inet chaos input ip saddr {} drop",
            self.addr(from)
        );
        run("ip", &["netns", "exec", &self.namespace(to), "nft", &rule])
    }

    /// Restores every link.
    pub fn heal(&self) -> Result<(), String> {
        for &id in &self.created_nodes {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.namespace(id),
                    "nft",
                    "flush chain inet chaos input",
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for &id in &self.created_nodes {
            // Deleting a namespace also deletes the veth pair inside it.
            if let Err(err) = run("ip", &["netns", "del", &self.namespace(id)]) {
                eprintln!("chaos: cleanup: {err}");
            }
        }
        if self.bridge_created {
            if let Err(err) = run("ip", &["link", "del", &self.bridge()]) {
                eprintln!("chaos: cleanup: {err}");
            }
        }
    }
}
