//! Real traffic through an IPVS NAT service: a client namespace connects to a
//! virtual IP on a director namespace (the test's own), which forwards to a
//! real server in a third namespace; the real server's replies come back through
//! the director, which un-NATs them.

use std::net::IpAddr;
use std::time::Duration;

use kpr_ipvs::{Protocol, RealServer, VirtualServer};
use kpr_netns_lab::{Netns, backend, client};

use crate::{ip, ipvs};

/// Links `ns` to the director with a veth (`eth0` inside `ns`), addresses both
/// ends in both families and routes `ns`'s traffic through the director.
pub fn attach(director: &Netns, ns: &Netns, link: &str, net: u8) {
    director
        .ip(&[
            "link",
            "add",
            link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])
        .unwrap();
    for (ns_ip, peer_ip, gw, prefix) in [
        (
            format!("10.0.{net}.2"),
            format!("10.0.{net}.1"),
            format!("10.0.{net}.1"),
            "24",
        ),
        (
            format!("fd00:{net}::2"),
            format!("fd00:{net}::1"),
            format!("fd00:{net}::1"),
            "64",
        ),
    ] {
        director
            .ip(&["addr", "add", &format!("{peer_ip}/{prefix}"), "dev", link])
            .unwrap();
        ns.ip(&["addr", "add", &format!("{ns_ip}/{prefix}"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns.ip(&["route", "add", "default", "via", &gw]).unwrap();
    }
    director.ip(&["link", "set", link, "up"]).unwrap();
}

/// A TCP connection from the client to the virtual IP (IPv4 and IPv6) lands on
/// the real server, which sees the client's own address (NAT rewrites only the
/// destination), and the dump then counts the connection.
pub fn nat_traffic_reaches_the_real_server(director: &Netns) {
    let client_ns = Netns::new("cl").unwrap();
    let server_ns = Netns::new("sv").unwrap();
    attach(director, &client_ns, "to-client", 1);
    attach(director, &server_ns, "to-server", 2);
    director
        .exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )
        .unwrap();
    let _backend = backend::serve(&server_ns, "real", 8080).unwrap();

    let mut ipvs = ipvs();
    for (vip, real, client) in [
        ("10.96.0.10", "10.0.2.2", "10.0.1.2"),
        ("fd00:96::10", "fd00:2::2", "fd00:1::2"),
    ] {
        // IPVS answers for local addresses only: the VIP lives on the director.
        let prefix = if ip(vip).is_ipv4() { "/32" } else { "/128" };
        director
            .ip(&["addr", "add", &format!("{vip}{prefix}"), "dev", "lo"])
            .unwrap();
        let vs = VirtualServer::new(ip(vip), Protocol::Tcp, 80, "rr");
        ipvs.add_service(&vs).unwrap();
        ipvs.add_real_server(&vs, &RealServer::new(ip(real), 8080, 1))
            .unwrap();

        let answer = request(&client_ns, ip(vip));
        assert_eq!(answer.backend, "real");
        assert_eq!(answer.seen_source.ip(), ip(client));

        let servers = ipvs.real_servers(&vs).unwrap();
        let (_, stats) = &servers[0];
        assert!(
            stats.active_conns + stats.inactive_conns >= 1,
            "the connection is counted: {stats:?}"
        );
    }
}

/// One request to `vip`:80, retried a few times (the first SYN can race the
/// neighbour discovery of a fresh link).
fn request(ns: &Netns, vip: IpAddr) -> client::Answer {
    let mut last = None;
    for _ in 0..3 {
        match client::tcp(ns, vip, 80, Duration::from_secs(5)) {
            Ok(answer) => return answer,
            Err(e) => last = Some(e),
        }
    }
    panic!("no answer from {vip}:80: {last:?}");
}
