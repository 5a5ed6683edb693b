//! A small cluster in network namespaces.
//!
//! ```text
//!   client (192.168.56.100, fd56::100)   blocked client (.101, fd56::101)
//!        \                                 /
//!         +---------- lan: bridge br0 ----+  192.168.56.1 / fd56::1
//!        /                                 \
//!   node1 (192.168.56.11, fd56::11)     node2 (192.168.56.12, fd56::12)
//!     cbr0 10.244.1.1/24 fd44:1::1/64      cbr0 10.244.2.1/24 fd44:2::1/64
//!      |    |                               |
//!    pods 10.244.1.2+                     pods 10.244.2.2+
//! ```
//!
//! Nodes forward, route each other's pod CIDRs via the other node's LAN address, and
//! have a default route to the LAN router (so locally generated traffic to Service
//! IPs has a route before it is DNATed). Pods route through their node's bridge.
//! Everything is removed when the [`Cluster`] drops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{LabError, Netns};

/// Test-bed addressing, fixed so manifests can name addresses.
pub mod addr {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// LAN router (the `lan` namespace's bridge).
    pub const LAN_ROUTER4: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 1);
    /// LAN router, IPv6.
    pub const LAN_ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd56, 0, 0, 0, 0, 0, 0, 1);

    /// Node `i` (1-based) LAN address.
    pub fn node4(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 56, 10 + i)
    }
    /// Node `i` LAN address, IPv6.
    pub fn node6(i: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd56, 0, 0, 0, 0, 0, 0, 0x10 + u16::from(i))
    }
    /// The external clients' addresses (`n` = 0 for the client, 1 for the blocked one).
    pub fn client4(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 56, 100 + n)
    }
    /// External client address, IPv6.
    pub fn client6(n: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd56, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(n))
    }
    /// Gateway of node `i`'s pod bridge.
    pub fn pod_gw4(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, i, 1)
    }
    /// Gateway of node `i`'s pod bridge, IPv6.
    pub fn pod_gw6(i: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd44, u16::from(i), 0, 0, 0, 0, 0, 1)
    }
    /// Pod `p` (2+) on node `i`.
    pub fn pod4(i: u8, p: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, i, p)
    }
    /// Pod `p` on node `i`, IPv6.
    pub fn pod6(i: u8, p: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd44, u16::from(i), 0, 0, 0, 0, 0, u16::from(p))
    }
}

/// A namespace with addresses: a node, a pod or a client.
#[derive(Debug)]
pub struct Host {
    /// Its name in the test (`node1`, `node1-web-0`, `client` ...).
    pub name: String,
    /// The namespace.
    pub ns: Netns,
    /// IPv4 address.
    pub ip4: Ipv4Addr,
    /// IPv6 address.
    pub ip6: Ipv6Addr,
}

impl Host {
    /// The address of `family` (true: IPv6).
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.ip6)
        } else {
            IpAddr::V4(self.ip4)
        }
    }
}

/// A node: a host with a pod bridge.
#[derive(Debug)]
pub struct Node {
    /// The node namespace and its LAN addresses.
    pub host: Host,
    /// 1-based index.
    pub index: u8,
    next_pod: u8,
    used: std::collections::BTreeSet<u8>,
}

/// The whole test bed.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes (`node1`, `node2`).
    pub nodes: Vec<Node>,
    /// The external client.
    pub client: Host,
    /// A second external client (for source-range tests).
    pub blocked_client: Host,
    /// Pods, in creation order.
    pub pods: Vec<Host>,
    // Dropped last: the LAN namespace holds the peer ends of the LAN links.
    lan: Netns,
}

fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), LabError> {
    ns.exec("sysctl", &["-qw", &format!("{key}={value}")])
        .map(|_| ())
}

impl Cluster {
    /// Builds the LAN, `nodes` nodes (1 or 2) and the two external clients.
    pub fn new(nodes: u8) -> Result<Self, LabError> {
        let lan = Netns::new("lan")?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&[
            "addr",
            "add",
            &format!("{}/24", addr::LAN_ROUTER4),
            "dev",
            "br0",
        ])?;
        lan.ip(&[
            "addr",
            "add",
            &format!("{}/64", addr::LAN_ROUTER6),
            "dev",
            "br0",
            "nodad",
        ])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        sysctl(&lan, "net.ipv4.ip_forward", "1")?;
        sysctl(&lan, "net.ipv6.conf.all.forwarding", "1")?;

        let attach = |host_ns: &Netns,
                      lan_end: &str,
                      ip4: Ipv4Addr,
                      ip6: Ipv6Addr|
         -> Result<(), LabError> {
            host_ns.ip(&[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                lan_end,
                "netns",
                lan.name(),
            ])?;
            lan.ip(&["link", "set", lan_end, "master", "br0", "up"])?;
            host_ns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", "eth0"])?;
            host_ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
            host_ns.ip(&["link", "set", "eth0", "up"])?;
            host_ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &addr::LAN_ROUTER4.to_string(),
            ])?;
            host_ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &addr::LAN_ROUTER6.to_string(),
            ])?;
            Ok(())
        };

        let mut node_list = Vec::new();
        for i in 1..=nodes {
            let ns = Netns::new(&format!("n{i}"))?;
            attach(&ns, &format!("vn{i}"), addr::node4(i), addr::node6(i))?;
            sysctl(&ns, "net.ipv4.ip_forward", "1")?;
            sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
            ns.ip(&["link", "add", "cbr0", "type", "bridge"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", addr::pod_gw4(i)),
                "dev",
                "cbr0",
            ])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", addr::pod_gw6(i)),
                "dev",
                "cbr0",
                "nodad",
            ])?;
            ns.ip(&["link", "set", "cbr0", "up"])?;
            // Pod traffic bridged between pods of this node must pass iptables, or
            // replies from a DNATed backend bypass conntrack (the classic
            // "reply from unexpected source").
            let _ = sysctl(&ns, "net.bridge.bridge-nf-call-iptables", "1");
            let _ = sysctl(&ns, "net.bridge.bridge-nf-call-ip6tables", "1");
            node_list.push(Node {
                host: Host {
                    name: format!("node{i}"),
                    ns,
                    ip4: addr::node4(i),
                    ip6: addr::node6(i),
                },
                index: i,
                next_pod: 2,
                used: Default::default(),
            });
        }
        // Each node reaches the other nodes' pods through them.
        for a in &node_list {
            for b in &node_list {
                if a.index != b.index {
                    let j = b.index;
                    a.host.ns.ip(&[
                        "route",
                        "add",
                        &format!("10.244.{j}.0/24"),
                        "via",
                        &addr::node4(j).to_string(),
                    ])?;
                    a.host.ns.ip(&[
                        "-6",
                        "route",
                        "add",
                        &format!("fd44:{j}::/64"),
                        "via",
                        &addr::node6(j).to_string(),
                    ])?;
                }
            }
        }
        // The LAN router reaches pods through their nodes too.
        for n in &node_list {
            let j = n.index;
            lan.ip(&[
                "route",
                "add",
                &format!("10.244.{j}.0/24"),
                "via",
                &addr::node4(j).to_string(),
            ])?;
            lan.ip(&[
                "-6",
                "route",
                "add",
                &format!("fd44:{j}::/64"),
                "via",
                &addr::node6(j).to_string(),
            ])?;
        }

        let client_ns = Netns::new("cl")?;
        attach(&client_ns, "vc0", addr::client4(0), addr::client6(0))?;
        let blocked_ns = Netns::new("bl")?;
        attach(&blocked_ns, "vc1", addr::client4(1), addr::client6(1))?;
        Ok(Self {
            nodes: node_list,
            client: Host {
                name: "client".into(),
                ns: client_ns,
                ip4: addr::client4(0),
                ip6: addr::client6(0),
            },
            blocked_client: Host {
                name: "blocked-client".into(),
                ns: blocked_ns,
                ip4: addr::client4(1),
                ip6: addr::client6(1),
            },
            pods: Vec::new(),
            lan,
        })
    }

    /// The LAN namespace (the router between nodes and clients).
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// Adds a pod named `name` on node `node` (1-based); returns its index in `pods`.
    pub fn add_pod(&mut self, node: u8, name: &str) -> Result<usize, LabError> {
        let p = self
            .nodes
            .iter()
            .find(|n| n.index == node)
            .map(|n| n.next_pod)
            .ok_or_else(|| LabError::Command {
                command: format!("add pod {name}"),
                message: format!("no node {node}"),
            })?;
        self.add_pod_at(node, name, p)
    }

    /// Adds a pod named `name` on node `node` with host number `p` (addresses
    /// `10.244.<node>.<p>` and `fd44:<node>::<p>`, p >= 2); returns its index in `pods`.
    pub fn add_pod_at(&mut self, node: u8, name: &str, p: u8) -> Result<usize, LabError> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.index == node)
            .ok_or_else(|| LabError::Command {
                command: format!("add pod {name}"),
                message: format!("no node {node}"),
            })?;
        if p < 2 || n.used.contains(&p) {
            return Err(LabError::Command {
                command: format!("add pod {name}"),
                message: format!("address 10.244.{node}.{p} is taken or reserved"),
            });
        }
        n.used.insert(p);
        while n.used.contains(&n.next_pod) {
            n.next_pod += 1;
        }
        let ns = Netns::new(&format!("p{node}{p}"))?;
        let host_end = format!("vp{p}");
        ns.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &host_end,
            "netns",
            n.host.ns.name(),
        ])?;
        n.host
            .ns
            .ip(&["link", "set", &host_end, "master", "cbr0", "up"])?;
        // As CNI bridge plugins do (hairpinMode): a pod that reaches itself through a
        // Service gets its packets back on the port they came in on.
        n.host.ns.ip(&[
            "link",
            "set",
            &host_end,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])?;
        let (ip4, ip6) = (addr::pod4(node, p), addr::pod6(node, p));
        ns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", "eth0"])?;
        ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &addr::pod_gw4(node).to_string(),
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &addr::pod_gw6(node).to_string(),
        ])?;
        self.pods.push(Host {
            name: name.to_string(),
            ns,
            ip4,
            ip6,
        });
        Ok(self.pods.len() - 1)
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: u8) -> &Node {
        &self.nodes[usize::from(i) - 1]
    }

    /// A pod by name.
    pub fn pod(&self, name: &str) -> &Host {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }
}
