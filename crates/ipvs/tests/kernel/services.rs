//! Virtual servers against the kernel: create, read back, change, delete, and
//! the errors the kernel gives.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use kpr_ipvs::{
    IpvsError, Operation, Protocol, RealServer, ServiceFlags, ServiceKey, Timeouts, VirtualServer,
};
use kpr_netns_lab::Netns;

use crate::{ip, ipvs, services};

const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// TCP, UDP and SCTP services of both families are created, read back equal,
/// updated (scheduler, flags, timeout) and deleted.
pub fn services_of_every_protocol_and_family(_: &Netns) {
    let mut ipvs = ipvs();
    let mut created = Vec::new();
    for address in [ip("10.96.0.1"), ip("fd00:96::1")] {
        for (i, protocol) in PROTOCOLS.into_iter().enumerate() {
            let vs = VirtualServer::new(address, protocol, 80 + i as u16, "rr");
            ipvs.add_service(&vs).unwrap();
            created.push(vs);
        }
    }
    created.sort_by_key(VirtualServer::key);
    assert_eq!(services(&mut ipvs), created);

    for vs in &mut created {
        vs.scheduler = "wlc".into();
        vs.flags = ServiceFlags::PERSISTENT;
        vs.timeout = 600;
        ipvs.update_service(vs).unwrap();
    }
    assert_eq!(services(&mut ipvs), created);

    for vs in &created {
        ipvs.delete_service(vs).unwrap();
    }
    assert_eq!(services(&mut ipvs), vec![]);
}

/// Every scheduler of Linux can be created and reads back by name.
pub fn every_scheduler(_: &Netns) {
    let mut ipvs = ipvs();
    let names = [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
    ];
    for (i, name) in names.iter().enumerate() {
        let vs = VirtualServer::new(ip("10.96.1.1"), Protocol::Tcp, 1000 + i as u16, *name);
        ipvs.add_service(&vs)
            .unwrap_or_else(|e| panic!("scheduler {name}: {e}"));
    }
    let read: Vec<(u16, String)> = services(&mut ipvs)
        .into_iter()
        .map(|vs| (vs.port, vs.scheduler))
        .collect();
    let expected: Vec<(u16, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (1000 + i as u16, n.to_string()))
        .collect();
    assert_eq!(read, expected);
}

/// sh and mh scheduler flags and one-packet scheduling read back as set (and
/// can be cleared again).
pub fn scheduler_flags_round_trip(_: &Netns) {
    let mut ipvs = ipvs();
    let cases = [
        ("sh", ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT),
        ("sh", ServiceFlags::SH_PORT),
        ("mh", ServiceFlags::SCHED1 | ServiceFlags::SCHED2),
        ("mh", ServiceFlags::SCHED1),
        ("rr", ServiceFlags::ONEPACKET),
    ];
    let mut created = Vec::new();
    for (i, (scheduler, flags)) in cases.into_iter().enumerate() {
        let mut vs = VirtualServer::new(ip("fd00:96::2"), Protocol::Udp, 53 + i as u16, scheduler);
        vs.flags = flags;
        ipvs.add_service(&vs).unwrap();
        created.push(vs);
    }
    assert_eq!(services(&mut ipvs), created);
    created[0].flags = ServiceFlags::empty();
    ipvs.update_service(&created[0]).unwrap();
    assert_eq!(services(&mut ipvs), created);
}

/// Persistence timeout and netmask (an IPv4 mask, an IPv6 prefix length) read
/// back as set, and change with an update.
pub fn persistence_round_trip(_: &Netns) {
    let mut ipvs = ipvs();
    let mut v4 = VirtualServer::new(ip("10.96.0.5"), Protocol::Tcp, 443, "rr");
    v4.flags = ServiceFlags::PERSISTENT;
    v4.timeout = 10800;
    v4.netmask = 0xffff_ff00;
    let mut v6 = VirtualServer::new(ip("fd00:96::5"), Protocol::Tcp, 443, "rr");
    v6.flags = ServiceFlags::PERSISTENT;
    v6.timeout = 10800;
    v6.netmask = 64;
    ipvs.add_service(&v4).unwrap();
    ipvs.add_service(&v6).unwrap();
    assert_eq!(services(&mut ipvs), vec![v4.clone(), v6.clone()]);

    v4.timeout = 60;
    v6.timeout = 1;
    v6.netmask = 128;
    ipvs.update_service(&v4).unwrap();
    ipvs.update_service(&v6).unwrap();
    assert_eq!(services(&mut ipvs), vec![v4, v6]);
}

/// Adding a service twice is `ServiceExists`, naming the service.
pub fn duplicate_service_is_exists(_: &Netns) {
    let mut ipvs = ipvs();
    let vs = VirtualServer::new(ip("10.96.0.7"), Protocol::Udp, 53, "rr");
    ipvs.add_service(&vs).unwrap();
    let err = ipvs.add_service(&vs).unwrap_err();
    assert!(
        matches!(err, IpvsError::ServiceExists { service } if service == vs.key()),
        "{err:?}"
    );
    assert!(err.is_exists());
    assert!(err.to_string().contains("UDP 10.96.0.7:53"), "{err}");
}

/// Deleting, updating or adding a real server to a missing service is
/// `ServiceNotFound`, naming the service.
pub fn missing_service_is_not_found(_: &Netns) {
    let mut ipvs = ipvs();
    let vs = VirtualServer::new(ip("fd00:96::7"), Protocol::Sctp, 9999, "rr");
    let errors = [
        ipvs.delete_service(&vs).unwrap_err(),
        ipvs.update_service(&vs).unwrap_err(),
        ipvs.add_real_server(&vs, &RealServer::new(ip("fd00:1::1"), 80, 1))
            .unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, IpvsError::ServiceNotFound { .. }), "{err:?}");
        assert!(err.is_not_found());
        assert!(err.to_string().contains("SCTP [fd00:96::7]:9999"), "{err}");
    }
    // The real servers of a missing service: none (an empty dump).
    assert_eq!(ipvs.real_servers(&vs).unwrap(), vec![]);
}

/// A scheduler the kernel does not have is `SchedulerNotFound`.
pub fn unknown_scheduler(_: &Netns) {
    let mut ipvs = ipvs();
    let vs = VirtualServer::new(ip("10.96.0.8"), Protocol::Tcp, 80, "nosuch");
    let err = ipvs.add_service(&vs).unwrap_err();
    assert!(
        matches!(&err, IpvsError::SchedulerNotFound { scheduler, .. } if scheduler == "nosuch"),
        "{err:?}"
    );
    // Too long a name is refused before it reaches the kernel.
    let long = VirtualServer::new(ip("10.96.0.8"), Protocol::Tcp, 80, "x".repeat(16));
    let err = ipvs.add_service(&long).unwrap_err();
    assert!(matches!(err, IpvsError::Invalid { .. }), "{err:?}");
    assert_eq!(services(&mut ipvs), vec![]);
}

/// Flush removes every service with its real servers.
pub fn flush_removes_everything(_: &Netns) {
    let mut ipvs = ipvs();
    for port in 1..=5 {
        let vs = VirtualServer::new(ip("10.96.0.9"), Protocol::Tcp, port, "rr");
        ipvs.add_service(&vs).unwrap();
        ipvs.add_real_server(&vs, &RealServer::new(ip("10.1.0.9"), 80, 1))
            .unwrap();
    }
    assert_eq!(ipvs.services().unwrap().len(), 5);
    ipvs.flush().unwrap();
    assert_eq!(ipvs.services().unwrap(), vec![]);
}

/// Timeouts read back as set; a zero leaves a value unchanged.
pub fn timeouts_set_and_get(_: &Netns) {
    let mut ipvs = ipvs();
    let set = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    ipvs.set_timeouts(&set).unwrap();
    assert_eq!(ipvs.timeouts().unwrap(), set);
    ipvs.set_timeouts(&Timeouts {
        udp: 60,
        ..Timeouts::default()
    })
    .unwrap();
    assert_eq!(ipvs.timeouts().unwrap(), Timeouts { udp: 60, ..set });
}

/// 2000 services with 3 real servers each go in one batch call and read back
/// whole (the dumps span many datagrams of `NLM_F_MULTI` messages).
pub fn many_services(_: &Netns) {
    const SERVICES: usize = 2000;
    let mut ipvs = ipvs();
    let mut operations = Vec::new();
    let mut expected = BTreeSet::new();
    for i in 0..SERVICES {
        let address = service_address(i);
        let vs = VirtualServer::new(address, Protocol::Tcp, 80, "rr");
        expected.insert(vs.key());
        operations.push(Operation::AddService(vs.clone()));
        for port in 8080..8083 {
            operations.push(Operation::AddRealServer(
                vs.key(),
                RealServer::new(backend_address(i), port, 1),
            ));
        }
    }
    let started = Instant::now();
    let report = ipvs.apply(&operations).unwrap();
    let applied = started.elapsed();
    assert!(report.failures.is_empty(), "{:?}", &report.failures[..1]);
    assert_eq!(report.done, SERVICES * 4);

    let started = Instant::now();
    let dumped = ipvs.services().unwrap();
    let dump = started.elapsed();
    let keys: BTreeSet<ServiceKey> = dumped.iter().map(VirtualServer::key).collect();
    assert_eq!(dumped.len(), SERVICES);
    assert_eq!(keys, expected);

    let started = Instant::now();
    for key in &expected {
        let servers = ipvs.real_servers(key).unwrap();
        assert_eq!(servers.len(), 3, "{key}");
    }
    eprintln!(
        "many_services: {} operations applied in {applied:?}, service dump {dump:?}, \
         {SERVICES} real-server dumps {:?}",
        operations.len(),
        started.elapsed()
    );
}

/// The address of service `i` of the many-services test.
fn service_address(i: usize) -> IpAddr {
    IpAddr::from([10, 100, (i / 250) as u8, (i % 250 + 1) as u8])
}

/// The address of the real servers of service `i`.
fn backend_address(i: usize) -> IpAddr {
    IpAddr::from([10, 200, (i / 250) as u8, (i % 250 + 1) as u8])
}
