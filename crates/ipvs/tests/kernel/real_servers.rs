//! Real servers against the kernel, batches, and what `ipvsadm -Ln` shows.

use kpr_ipvs::{
    ForwardMethod, IpvsError, Operation, Protocol, RealServer, RealServerStats, ServiceFlags,
    VirtualServer,
};
use kpr_netns_lab::Netns;

use crate::{ip, ipvs, services};

/// Masqueraded real servers of both families are added, read back with zero
/// counters, re-weighted (to 0 too), and deleted; duplicates and missing ones
/// give their own errors.
pub fn real_servers_add_update_delete(_: &Netns) {
    let mut ipvs = ipvs();
    for (vip, backends) in [
        ("10.96.0.20", ["10.1.0.1", "10.1.0.2", "10.1.0.3"]),
        ("fd00:96::20", ["fd00:1::1", "fd00:1::2", "fd00:1::3"]),
    ] {
        let vs = VirtualServer::new(ip(vip), Protocol::Tcp, 80, "wrr");
        ipvs.add_service(&vs).unwrap();
        let mut servers: Vec<RealServer> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| RealServer::new(ip(b), 8080, i as i32 + 1))
            .collect();
        for rs in &servers {
            ipvs.add_real_server(&vs, rs).unwrap();
        }
        assert_eq!(read(&mut ipvs, &vs), servers);
        assert!(
            ipvs.real_servers(&vs)
                .unwrap()
                .iter()
                .all(|(_, stats)| *stats == RealServerStats::default())
        );

        servers[0].weight = 0;
        servers[1].weight = 100;
        servers[1].upper_threshold = 50;
        servers[1].lower_threshold = 10;
        ipvs.update_real_server(&vs, &servers[0]).unwrap();
        ipvs.update_real_server(&vs, &servers[1]).unwrap();
        assert_eq!(read(&mut ipvs, &vs), servers);

        let err = ipvs.add_real_server(&vs, &servers[2]).unwrap_err();
        assert!(
            matches!(err, IpvsError::RealServerExists { real_server, .. }
                if real_server == servers[2].socket_addr()),
            "{err:?}"
        );
        let gone = servers.remove(2);
        ipvs.delete_real_server(&vs, &gone).unwrap();
        assert_eq!(read(&mut ipvs, &vs), servers);
        for err in [
            ipvs.delete_real_server(&vs, &gone).unwrap_err(),
            ipvs.update_real_server(&vs, &gone).unwrap_err(),
        ] {
            assert!(
                matches!(err, IpvsError::RealServerNotFound { .. }) && err.is_not_found(),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&gone.socket_addr().to_string()),
                "{err}"
            );
        }
    }
}

fn read(ipvs: &mut kpr_ipvs::Ipvs, vs: &VirtualServer) -> Vec<RealServer> {
    let mut servers: Vec<RealServer> = ipvs
        .real_servers(vs)
        .unwrap()
        .into_iter()
        .map(|(rs, _)| rs)
        .collect();
    servers.sort_by_key(RealServer::socket_addr);
    servers
}

/// A batch goes on past refused operations and reports each one by index, with
/// the kernel's classification; the valid ones take effect.
pub fn batch_reports_each_failure(_: &Netns) {
    let mut ipvs = ipvs();
    let a = VirtualServer::new(ip("10.96.0.30"), Protocol::Tcp, 80, "rr");
    let b = VirtualServer::new(ip("10.96.0.31"), Protocol::Udp, 53, "rr");
    let rs = RealServer::new(ip("10.1.0.30"), 8080, 1);
    let mut tunnel = RealServer::new(ip("10.1.0.31"), 8080, 1);
    tunnel.forward = ForwardMethod::Tunnel;
    let operations = vec![
        Operation::AddService(a.clone()),              // 0 ok
        Operation::AddService(a.clone()),              // 1 exists
        Operation::AddRealServer(a.key(), rs.clone()), // 2 ok
        Operation::DeleteService(b.key()),             // 3 not found
        Operation::AddRealServer(a.key(), RealServer::new(ip("fd00::1"), 80, 1)), // 4 invalid
        Operation::AddRealServer(a.key(), tunnel),     // 5 invalid
        Operation::AddService(b.clone()),              // 6 ok
        Operation::DeleteRealServer(b.key(), rs.clone()), // 7 not found
        Operation::UpdateRealServer(a.key(), RealServer::new(rs.address, rs.port, 7)), // 8 ok
    ];
    let report = ipvs.apply(&operations).unwrap();
    assert_eq!(report.done, 4);
    let failures: Vec<(usize, String)> = report
        .failures
        .iter()
        .map(|(i, e)| {
            let kind = match e {
                IpvsError::ServiceExists { .. } => "exists",
                IpvsError::ServiceNotFound { .. } => "no service",
                IpvsError::RealServerNotFound { .. } => "no real server",
                IpvsError::Invalid { .. } => "invalid",
                other => panic!("{other:?}"),
            };
            (*i, kind.to_string())
        })
        .collect();
    assert_eq!(
        failures,
        vec![
            (1, "exists".into()),
            (3, "no service".into()),
            (4, "invalid".into()),
            (5, "invalid".into()),
            (7, "no real server".into()),
        ]
    );
    assert_eq!(services(&mut ipvs), vec![a.clone(), b]);
    assert_eq!(
        read(&mut ipvs, &a),
        vec![RealServer::new(rs.address, rs.port, 7)]
    );
}

/// One service as `ipvsadm -Ln` lists it.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    /// `TCP 10.96.0.1:80`.
    service: String,
    scheduler: String,
    /// Words after the scheduler (`persistent 300`, `(sh-port)`...).
    options: Vec<String>,
    /// `(address:port, forward, weight)`.
    real_servers: Vec<(String, String, i32)>,
}

fn parse_ipvsadm(text: &str) -> Vec<Listed> {
    let mut listed: Vec<Listed> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [
                proto @ ("TCP" | "UDP" | "SCTP"),
                addr,
                scheduler,
                options @ ..,
            ] => listed.push(Listed {
                service: format!("{proto} {addr}"),
                scheduler: scheduler.to_string(),
                options: options.iter().map(|w| w.to_string()).collect(),
                real_servers: vec![],
            }),
            ["->", addr, forward, weight, _, _] if *addr != "RemoteAddress:Port" => {
                let last = listed.last_mut().expect("a real server before any service");
                last.real_servers.push((
                    addr.to_string(),
                    forward.to_string(),
                    weight.parse().unwrap(),
                ));
            }
            _ => {}
        }
    }
    listed
}

/// What we created is what `ipvsadm -Ln` (ipvsadm's own netlink client) lists;
/// a firewall-mark service ipvsadm creates is left out of our dump.
pub fn ipvsadm_agrees(ns: &Netns) {
    let mut ipvs = ipvs();
    let mut persistent = VirtualServer::new(ip("10.96.0.40"), Protocol::Tcp, 443, "wlc");
    persistent.flags = ServiceFlags::PERSISTENT;
    persistent.timeout = 300;
    let mut sh = VirtualServer::new(ip("fd00:96::40"), Protocol::Udp, 53, "sh");
    sh.flags = ServiceFlags::SH_PORT;
    let sctp = VirtualServer::new(ip("10.96.0.41"), Protocol::Sctp, 3868, "rr");
    let created = [
        (persistent, vec![RealServer::new(ip("10.1.0.40"), 8443, 2)]),
        (
            sh,
            vec![
                RealServer::new(ip("fd00:1::40"), 5353, 1),
                RealServer::new(ip("fd00:1::41"), 5353, 0),
            ],
        ),
        (sctp, vec![]),
    ];
    for (vs, servers) in &created {
        ipvs.add_service(vs).unwrap();
        for rs in servers {
            ipvs.add_real_server(vs, rs).unwrap();
        }
    }
    ns.exec("ipvsadm", &["-A", "-f", "7", "-s", "rr"]).unwrap();

    let out = ns.exec("ipvsadm", &["-Ln"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut listed = parse_ipvsadm(&text);
    listed.sort_by(|a, b| a.service.cmp(&b.service));
    let mut expected: Vec<Listed> = created
        .iter()
        .map(|(vs, servers)| Listed {
            service: vs.key().to_string(),
            scheduler: vs.scheduler.clone(),
            options: match vs.scheduler.as_str() {
                "wlc" => vec!["persistent".into(), "300".into()],
                "sh" => vec!["(sh-port)".into()],
                _ => vec![],
            },
            real_servers: servers
                .iter()
                .map(|rs| (rs.socket_addr().to_string(), "Masq".to_string(), rs.weight))
                .collect(),
        })
        .collect();
    expected.sort_by(|a, b| a.service.cmp(&b.service));
    for l in &mut listed {
        l.real_servers.sort();
    }
    for e in &mut expected {
        e.real_servers.sort();
    }
    assert_eq!(listed, expected, "ipvsadm -Ln:\n{text}");
    assert!(text.contains("FWM  7 rr"), "{text}");
    // Ours leaves the firewall-mark service out.
    assert_eq!(ipvs.services().unwrap().len(), created.len());
}

/// When the receive buffer is too small for a batch's ACKs, every operation still
/// takes effect, the ones whose ACK was dropped are reported as `AckLost`, the
/// batch shrinks, and the handle stays usable.
pub fn dropped_acks_are_reported(_: &Netns) {
    let mut ipvs = ipvs();
    ipvs.set_receive_buffer(2048).unwrap();
    let before = ipvs.batch_size();
    let operations: Vec<Operation> = (0..300u16)
        .map(|port| {
            Operation::AddService(VirtualServer::new(
                ip("10.96.0.50"),
                Protocol::Tcp,
                port + 1,
                "rr",
            ))
        })
        .collect();
    let report = ipvs.apply(&operations).unwrap();
    let lost = report
        .failures
        .iter()
        .filter(|(_, e)| matches!(e, IpvsError::AckLost { .. }))
        .count();
    assert_eq!(lost, report.failures.len(), "{:?}", report.failures.first());
    assert_eq!(report.done + lost, 300);
    assert!(lost > 0, "the small buffer dropped some ACKs");
    assert!(ipvs.batch_size() <= before);
    assert_eq!(ipvs.services().unwrap().len(), 300, "every add took effect");
    ipvs.flush().unwrap();
    assert_eq!(ipvs.services().unwrap(), vec![]);
}
