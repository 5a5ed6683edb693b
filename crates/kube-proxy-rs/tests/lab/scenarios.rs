//! The Service scenario matrix, written once and run against each data plane.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kpr_netns_lab::client::{self, RequestError};

use super::Lab;
use super::manifests::{Ep, Port, Svc, nodes, slice};

/// Requests until every name in `want` answered (at most `tries`); returns who answered.
fn until_all(
    lab: &Lab,
    from: &kpr_netns_lab::Host,
    ip: IpAddr,
    port: u16,
    udp: bool,
    want: &[&str],
    tries: usize,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        let r = if udp {
            lab.udp(from, 0, ip, port)
        } else {
            lab.tcp(from, ip, port)
        };
        let a = r.unwrap_or_else(|e| panic!("request {ip}:{port} from {} failed: {e}", from.name));
        seen.insert(a.backend);
        if want.iter().all(|w| seen.contains(*w)) {
            break;
        }
    }
    seen
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// ClusterIP, TCP and UDP: from a pod, from the node, from a pod on the other node;
/// a pod reaching itself through its Service is masqueraded (hairpin).
pub fn cluster_ip(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c1 = lab.cluster.add_pod(1, "client1").unwrap();
    let c2 = lab.cluster.add_pod(2, "client2").unwrap();
    let ports = vec![Port::tcp(80, 8080), Port::udp(53, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "web.yaml",
        &(Svc::new("web", "10.96.0.10", ports.clone()).yaml()
            + &slice(
                "web",
                "web-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let vip = ip("10.96.0.10");
    let pods = &lab.cluster.pods;
    for (who, from) in [("pod on node1", &pods[c1]), ("pod on node2", &pods[c2])] {
        let seen = until_all(&lab, from, vip, 80, false, &["a", "b"], 40);
        assert_eq!(
            seen,
            BTreeSet::from(["a".into(), "b".into()]),
            "TCP from {who}"
        );
        let seen = until_all(&lab, from, vip, 53, true, &["a", "b"], 40);
        assert_eq!(
            seen,
            BTreeSet::from(["a".into(), "b".into()]),
            "UDP from {who}"
        );
        let ans = lab
            .tcp(from, vip, 80)
            .unwrap_or_else(|e| panic!("TCP from {who}: {e}"));
        assert_eq!(
            ans.seen_source.ip(),
            from.ip(false),
            "pod traffic is not masqueraded ({who})"
        );
    }
    let node1 = &lab.cluster.node(1).host;
    let seen = until_all(&lab, node1, vip, 80, false, &["a", "b"], 40);
    assert_eq!(seen.len(), 2, "TCP from the node itself");
    let seen = until_all(&lab, node1, vip, 53, true, &["a", "b"], 40);
    assert_eq!(seen.len(), 2, "UDP from the node itself");
    // Hairpin: pod a reaches itself through the Service and sees a masqueraded source.
    let pa = &lab.cluster.pods[a];
    for _ in 0..40 {
        let ans = lab.tcp(pa, vip, 80).unwrap();
        if ans.backend == "a" {
            assert_ne!(
                ans.seen_source.ip(),
                pa.ip(false),
                "hairpin traffic must be masqueraded"
            );
            return;
        }
    }
    panic!("pod a never reached itself through the Service");
}

/// A Service without endpoints is refused at once (REJECT), not timed out.
pub fn no_endpoints(mode: &str) {
    let mut lab = Lab::new(mode);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080), Port::udp(53, 8080)];
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "empty.yaml",
        &(Svc::new("empty", "10.96.0.20", ports.clone()).yaml()
            + &slice("empty", "empty-1", false, &[], &ports)),
    );
    lab.start();
    let started = Instant::now();
    let err = lab
        .tcp(&lab.cluster.pods[c], ip("10.96.0.20"), 80)
        .unwrap_err();
    assert_eq!(err, RequestError::Refused);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, took {:?}",
        started.elapsed()
    );
    let err = lab
        .udp(&lab.cluster.pods[c], 0, ip("10.96.0.20"), 53)
        .unwrap_err();
    assert_eq!(err, RequestError::Refused, "UDP gets an ICMP unreachable");
    let node = &lab.cluster.node(1).host;
    assert_eq!(
        lab.tcp(node, ip("10.96.0.20"), 80).unwrap_err(),
        RequestError::Refused,
        "from the node too"
    );
}

/// Sets routes on the external clients so that `cidr` (external IPs, LB IPs) is
/// reached through node `node`, as a router or load balancer would send it.
fn route_via_node(lab: &Lab, cidr: &str, node: u8) {
    let via = lab.cluster.node(node).host.ip4.to_string();
    for c in [&lab.cluster.client, &lab.cluster.blocked_client] {
        c.ns.ip(&["route", "replace", cidr, "via", &via]).unwrap();
    }
}

/// NodePort from the external client on each node's IP; with `nodePortAddresses`
/// limited to node1's address, node2's address no longer answers.
pub fn node_port(mode: &str) {
    for limited in [false, true] {
        let mut lab = Lab::new(mode);
        if limited {
            lab = lab.with_args(&["--nodeport-addresses=192.168.56.11/32"]);
        }
        let a = lab.pod(1, "a", 8080);
        let b = lab.pod(2, "b", 8080);
        let ports = vec![
            Port::tcp(80, 8080).node_port(30080),
            Port::udp(53, 8080).node_port(30053),
        ];
        let mut svc = Svc::new("np", "10.96.0.30", ports.clone());
        svc.type_ = "NodePort";
        let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
        lab.write_manifest("nodes.yaml", &nodes());
        lab.write_manifest(
            "np.yaml",
            &(svc.yaml()
                + &slice(
                    "np",
                    "np-1",
                    false,
                    &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                    &ports,
                )),
        );
        lab.start();
        let client = &lab.cluster.client;
        for node in [1u8, 2] {
            let node_ip = lab.cluster.node(node).host.ip(false);
            if limited && node == 2 {
                let err = lab.tcp(client, node_ip, 30080).unwrap_err();
                assert_eq!(
                    err,
                    RequestError::Refused,
                    "node2 is not in nodePortAddresses"
                );
                continue;
            }
            let seen = until_all(&lab, client, node_ip, 30080, false, &["a", "b"], 40);
            assert_eq!(seen.len(), 2, "TCP NodePort on node{node}");
            let seen = until_all(&lab, client, node_ip, 30053, true, &["a", "b"], 40);
            assert_eq!(seen.len(), 2, "UDP NodePort on node{node}");
            let ans = lab.tcp(client, node_ip, 30080).unwrap();
            assert_ne!(
                ans.seen_source.ip(),
                client.ip(false),
                "externalTrafficPolicy Cluster masquerades"
            );
        }
    }
}

/// externalIPs and a LoadBalancer ingress IP; loadBalancerSourceRanges admit one
/// client and drop another.
pub fn external_and_load_balancer(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let ports = vec![Port::tcp(80, 8080).node_port(30081)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let eps = [Ep::ready(a4, 1), Ep::ready(b4, 2)];
    let mut ext = Svc::new("ext", "10.96.0.40", vec![Port::tcp(80, 8080)]);
    ext.external_ips = vec!["192.168.57.20".into()];
    let mut lb = Svc::new("lb", "10.96.0.41", ports.clone());
    lb.type_ = "LoadBalancer";
    lb.lb_ips = vec!["192.168.57.30".into()];
    lb.source_ranges = vec![format!("{}/32", lab.cluster.client.ip4)];
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "svc.yaml",
        &(ext.yaml()
            + &slice("ext", "ext-1", false, &eps, &[Port::tcp(80, 8080)])
            + &lb.yaml()
            + &slice("lb", "lb-1", false, &eps, &ports)),
    );
    lab.start();
    route_via_node(&lab, "192.168.57.0/24", 1);
    let client = &lab.cluster.client;
    let seen = until_all(
        &lab,
        client,
        ip("192.168.57.20"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "external IP");
    let seen = until_all(
        &lab,
        client,
        ip("192.168.57.30"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "load-balancer IP from an allowed source");
    let started = Instant::now();
    let err = client::tcp(
        &lab.cluster.blocked_client.ns,
        ip("192.168.57.30"),
        80,
        Duration::from_millis(700),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RequestError::TimedOut,
        "a source outside loadBalancerSourceRanges is dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    // NodePorts are not subject to source ranges.
    let ans = lab
        .tcp(
            &lab.cluster.blocked_client,
            lab.cluster.node(1).host.ip(false),
            30081,
        )
        .unwrap();
    assert!(["a", "b"].contains(&ans.backend.as_str()));
}

/// externalTrafficPolicy Local: only the node's own endpoints, client source kept.
/// Cluster: any endpoint, masqueraded.
pub fn external_traffic_policy(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let local_ports = vec![Port::tcp(80, 8080).node_port(30090)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let eps = [Ep::ready(a4, 1), Ep::ready(b4, 2)];
    let mut local = Svc::new("local", "10.96.0.50", local_ports.clone());
    local.type_ = "LoadBalancer";
    local.etp_local = true;
    local.health_check_node_port = Some(32090);
    local.lb_ips = vec!["192.168.57.50".into()];
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "local.yaml",
        &(local.yaml() + &slice("local", "local-1", false, &eps, &local_ports)),
    );
    lab.start();
    let client = &lab.cluster.client;
    for (node, want) in [(1u8, "a"), (2, "b")] {
        for _ in 0..10 {
            let ans = lab
                .tcp(client, lab.cluster.node(node).host.ip(false), 30090)
                .unwrap();
            assert_eq!(
                ans.backend, want,
                "node{node} serves only its local endpoint"
            );
            assert_eq!(
                ans.seen_source.ip(),
                client.ip(false),
                "client source IP is preserved"
            );
        }
    }
    route_via_node(&lab, "192.168.57.0/24", 2);
    let ans = lab.tcp(client, ip("192.168.57.50"), 80).unwrap();
    assert_eq!(
        (ans.backend.as_str(), ans.seen_source.ip()),
        ("b", client.ip(false)),
        "LB IP through node2"
    );
    // The ClusterIP is not subject to externalTrafficPolicy.
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let seen = until_all(
        &lab,
        &lab.cluster.pods[c],
        ip("10.96.0.50"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2);
}

/// internalTrafficPolicy Local: pods reach only their node's endpoints; a node
/// without local endpoints drops the traffic.
pub fn internal_traffic_policy(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let a2 = lab.pod(1, "a2", 8080);
    let c1 = lab.cluster.add_pod(1, "client1").unwrap();
    let c2 = lab.cluster.add_pod(2, "client2").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let (a4, a24) = (lab.cluster.pods[a].ip4, lab.cluster.pods[a2].ip4);
    let mut svc = Svc::new("itp", "10.96.0.60", ports.clone());
    svc.itp_local = true;
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "itp.yaml",
        &(svc.yaml()
            + &slice(
                "itp",
                "itp-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(a24, 1)],
                &ports,
            )),
    );
    lab.start();
    let seen = until_all(
        &lab,
        &lab.cluster.pods[c1],
        ip("10.96.0.60"),
        80,
        false,
        &["a", "a2"],
        40,
    );
    assert_eq!(seen.len(), 2, "both local endpoints on node1");
    let err = client::tcp(
        &lab.cluster.pods[c2].ns,
        ip("10.96.0.60"),
        80,
        Duration::from_millis(700),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RequestError::TimedOut,
        "node2 has no local endpoint: dropped"
    );
}

/// sessionAffinity ClientIP: one client sticks to one endpoint, and is released
/// after timeoutSeconds of silence.
pub fn session_affinity(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let mut svc = Svc::new("sticky", "10.96.0.70", ports.clone());
    svc.affinity_seconds = Some(2);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "sticky.yaml",
        &(svc.yaml()
            + &slice(
                "sticky",
                "sticky-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let client = &lab.cluster.pods[c];
    let first = lab.tcp(client, ip("10.96.0.70"), 80).unwrap().backend;
    for _ in 0..20 {
        assert_eq!(
            lab.tcp(client, ip("10.96.0.70"), 80).unwrap().backend,
            first,
            "sticky within the timeout"
        );
    }
    // After 2 s of silence the affinity is gone: a new connection may pick the
    // other endpoint (bounded: 10 rounds, 1 in 1024 to see the same one each time).
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(2200));
        if lab.tcp(client, ip("10.96.0.70"), 80).unwrap().backend != first {
            return;
        }
    }
    panic!("affinity to {first} never expired");
}

/// Terminating endpoints are used only when no ready endpoint is left.
pub fn terminating_endpoints(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let svc = Svc::new("term", "10.96.0.80", ports.clone());
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "term.yaml",
        &(svc.yaml()
            + &slice(
                "term",
                "term-1",
                false,
                &[Ep::ready(a4, 1), Ep::terminating(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let client = &lab.cluster.pods[c];
    for _ in 0..20 {
        assert_eq!(
            lab.tcp(client, ip("10.96.0.80"), 80).unwrap().backend,
            "a",
            "ready endpoint preferred"
        );
    }
    lab.apply(
        "term.yaml",
        &(svc.yaml() + &slice("term", "term-1", false, &[Ep::terminating(b4, 2)], &ports)),
    );
    let client = &lab.cluster.pods[c];
    for _ in 0..10 {
        assert_eq!(
            lab.tcp(client, ip("10.96.0.80"), 80).unwrap().backend,
            "b",
            "terminating endpoint as a fallback"
        );
    }
}

/// 400 connections over 4 endpoints: each gets 15-35%.
pub fn load_distribution(mode: &str) {
    let mut lab = Lab::new(mode);
    let pods: Vec<usize> = [(1, "e1"), (1, "e2"), (2, "e3"), (2, "e4")]
        .iter()
        .map(|(n, name)| lab.pod(*n, name, 8080))
        .collect();
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let eps: Vec<Ep> = pods
        .iter()
        .zip([1u8, 1, 2, 2])
        .map(|(p, n)| Ep::ready(lab.cluster.pods[*p].ip4, n))
        .collect();
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "lb.yaml",
        &(Svc::new("spread", "10.96.0.90", ports.clone()).yaml()
            + &slice("spread", "spread-1", false, &eps, &ports)),
    );
    lab.start();
    let answers = lab.tcp_many(&lab.cluster.pods[c], ip("10.96.0.90"), 80, 400);
    let counts = super::tally(&answers);
    assert_eq!(counts.values().sum::<usize>(), 400);
    for name in ["e1", "e2", "e3", "e4"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            (60..=140).contains(&n),
            "{name} got {n} of 400 connections: {counts:?}"
        );
    }
}

/// A client connecting in a loop from a pod on node1, until stopped; every result
/// with the time the request started.
struct LoadLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, Result<String, RequestError>)>>,
}

impl LoadLoop {
    fn start(lab: &Lab, pod: usize, vip: IpAddr, port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ns_path = lab.cluster.pods[pod].ns.path();
        let handle = std::thread::spawn(move || {
            let f = std::fs::File::open(ns_path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut out = Vec::new();
            // Bounded: at most 10 000 requests (about a minute).
            for _ in 0..10_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = direct_tcp(vip, port).map(|a| a.backend);
                out.push((t, r));
                std::thread::sleep(Duration::from_millis(3));
            }
            out
        });
        Self { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, Result<String, RequestError>)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// One TCP request from the calling thread's namespace.
fn direct_tcp(ip: IpAddr, port: u16) -> Result<kpr_netns_lab::client::Answer, RequestError> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(ip, port);
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, super::T).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => RequestError::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => RequestError::TimedOut,
            _ => RequestError::Other(e.to_string()),
        })?;
    s.set_read_timeout(Some(super::T)).unwrap();
    let mut buf = String::new();
    let mut chunk = [0u8; 128];
    while !buf.contains('\n') {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e) => return Err(RequestError::Other(e.to_string())),
        }
    }
    let _ = s.write_all(b"bye\n");
    let mut parts = buf.split_whitespace();
    match (parts.next(), parts.next().and_then(|a| a.parse().ok())) {
        (Some(b), Some(src)) => Ok(kpr_netns_lab::client::Answer {
            backend: b.to_string(),
            seen_source: src,
        }),
        _ => Err(RequestError::Other(format!("bad answer {buf:?}"))),
    }
}

/// Churn under load: endpoints added while a client keeps connecting lose no
/// connection; after an endpoint is removed and the proxy synced, no new
/// connection reaches it.
pub fn churn(mode: &str) {
    let mut lab = Lab::new(mode);
    let names = [(1u8, "e1"), (2, "e2"), (1, "e3"), (2, "e4")];
    let pods: Vec<usize> = names
        .iter()
        .map(|(n, name)| lab.pod(*n, name, 8080))
        .collect();
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let ips: Vec<_> = pods.iter().map(|p| lab.cluster.pods[*p].ip4).collect();
    let ep = |i: usize| Ep::ready(ips[i], names[i].0);
    let svc = Svc::new("churn", "10.96.0.100", ports.clone());
    let manifest = |eps: &[Ep]| svc.yaml() + &slice("churn", "churn-1", false, eps, &ports);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest("churn.yaml", &manifest(&[ep(0), ep(1)]));
    lab.start();
    let vip = ip("10.96.0.100");

    let load = LoadLoop::start(&lab, c, vip, 80);
    std::thread::sleep(Duration::from_millis(300));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(2)]));
    std::thread::sleep(Duration::from_millis(300));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(2), ep(3)]));
    std::thread::sleep(Duration::from_millis(300));
    let results = load.finish();
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(results.len() > 100, "only {} requests", results.len());
    assert!(
        failures.is_empty(),
        "{} of {} connections failed while endpoints were added: {failures:?}",
        failures.len(),
        results.len()
    );
    let seen: BTreeSet<&str> = results
        .iter()
        .filter_map(|(_, r)| r.as_deref().ok())
        .collect();
    assert_eq!(seen.len(), 4, "new endpoints took traffic: {seen:?}");

    let load = LoadLoop::start(&lab, c, vip, 80);
    std::thread::sleep(Duration::from_millis(200));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(3)]));
    let synced = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let results = load.finish();
    let late: Vec<_> = results
        .iter()
        .filter(|(t, r)| *t > synced && r.as_deref() == Ok("e3"))
        .collect();
    assert!(
        late.is_empty(),
        "{} new connections reached the removed endpoint after the sync",
        late.len()
    );
    assert!(results.iter().filter(|(t, _)| *t > synced).count() > 50);
    assert!(
        results.iter().all(|(_, r)| r.is_ok()),
        "removing an endpoint (still running) failed no connection"
    );
}

/// Restarting the proxy under continuous load loses no connection: the rules stay
/// in place while it is down and the restart rewrites them atomically.
pub fn restart(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "r.yaml",
        &(Svc::new("r", "10.96.0.110", ports.clone()).yaml()
            + &slice(
                "r",
                "r-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let load = LoadLoop::start(&lab, c, ip("10.96.0.110"), 80);
    std::thread::sleep(Duration::from_millis(300));
    lab.stop_proxy(1);
    std::thread::sleep(Duration::from_millis(500));
    lab.start_proxy(1);
    std::thread::sleep(Duration::from_millis(300));
    let results = load.finish();
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(results.len() > 100, "only {} requests", results.len());
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across the restart: {failures:?}",
        failures.len(),
        results.len()
    );
}

/// Dual-stack: an IPv6 ClusterIP and NodePort work next to the IPv4 ones.
pub fn dual_stack(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080).node_port(30100)];
    let mut svc = Svc::new("ds", "10.96.0.120", ports.clone());
    svc.type_ = "NodePort";
    svc.cluster_ips.push("fd96::120".into());
    let (pa, pb) = (&lab.cluster.pods[a], &lab.cluster.pods[b]);
    let v4 = slice(
        "ds",
        "ds-v4",
        false,
        &[Ep::ready(pa.ip4, 1), Ep::ready(pb.ip4, 2)],
        &ports,
    );
    let v6 = slice(
        "ds",
        "ds-v6",
        true,
        &[Ep::ready(pa.ip6, 1), Ep::ready(pb.ip6, 2)],
        &ports,
    );
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest("ds.yaml", &(svc.yaml() + &v4 + &v6));
    lab.start();
    let client_pod = &lab.cluster.pods[c];
    let seen = until_all(
        &lab,
        client_pod,
        ip("fd96::120"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "IPv6 ClusterIP");
    let ans = lab.tcp(client_pod, ip("fd96::120"), 80).unwrap();
    assert_eq!(
        ans.seen_source.ip(),
        client_pod.ip(true),
        "IPv6 pod traffic not masqueraded"
    );
    for node in [1u8, 2] {
        let seen = until_all(
            &lab,
            &lab.cluster.client,
            lab.cluster.node(node).host.ip(true),
            30100,
            false,
            &["a", "b"],
            40,
        );
        assert_eq!(seen.len(), 2, "IPv6 NodePort on node{node}");
    }
    let seen = until_all(
        &lab,
        client_pod,
        ip("10.96.0.120"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "IPv4 ClusterIP of the same Service");
}

/// The checks of [`cluster_ip`] fail when a rule is broken: deleting the rule that
/// sends the Service's traffic to its endpoints (with the proxy stopped so it
/// cannot repair it) makes the same assertion fail.
pub fn broken_rule_is_detected(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let a4 = lab.cluster.pods[a].ip4;
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "web.yaml",
        &(Svc::new("web", "10.96.0.10", ports.clone()).yaml()
            + &slice("web", "web-1", false, &[Ep::ready(a4, 1)], &ports)),
    );
    lab.start();
    let vip = ip("10.96.0.10");
    let check = |lab: &Lab| until_all(lab, &lab.cluster.pods[c], vip, 80, false, &["a"], 5);
    assert!(check(&lab).contains("a"), "works before the rule is broken");
    lab.stop_proxy(1);
    let node = &lab.cluster.node(1).host.ns;
    match mode {
        "iptables" => {
            let rules = node.sh("iptables-save -t nat").unwrap();
            let rule = rules
                .lines()
                .find(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("10.96.0.10/32"))
                .expect("the ClusterIP rule");
            let mut args: Vec<String> = vec!["-t".into(), "nat".into(), "-D".into()];
            args.extend(kpr_iptables::dump::split_words(rule).into_iter().skip(1));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            node.exec("iptables", &args).unwrap();
        }
        other => panic!("no rule breaker for mode {other}"),
    }
    let broken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&lab)));
    assert!(
        broken.is_err(),
        "the scenario check passed with the Service's rule deleted"
    );
}

/// 300 TCP connections to a ClusterIP with 3 endpoints: all succeed, each endpoint
/// gets at least 20%.
pub fn three_endpoints(mode: &str) {
    let mut lab = Lab::new(mode);
    let pods: Vec<usize> = [(1, "p1"), (2, "p2"), (2, "p3")]
        .iter()
        .map(|(n, name)| lab.pod(*n, name, 8080))
        .collect();
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let eps: Vec<Ep> = pods
        .iter()
        .zip([1u8, 2, 2])
        .map(|(p, n)| Ep::ready(lab.cluster.pods[*p].ip4, n))
        .collect();
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "three.yaml",
        &(Svc::new("three", "10.96.0.95", ports.clone()).yaml()
            + &slice("three", "three-1", false, &eps, &ports)),
    );
    lab.start();
    let answers = lab.tcp_many(&lab.cluster.pods[c], ip("10.96.0.95"), 80, 300);
    let counts = super::tally(&answers);
    assert!(
        answers.iter().all(Result::is_ok),
        "all 300 connections succeed: {counts:?}"
    );
    for name in ["p1", "p2", "p3"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            n >= 60,
            "{name} got {n} of 300 connections (< 20%): {counts:?}"
        );
    }
}

/// A Service backed by host-network endpoints (node addresses): reachable from pods
/// on both nodes and from the nodes.
pub fn host_network_backend(mode: &str) {
    let mut lab = Lab::new(mode);
    lab.host_backend(1, "host1", 9100);
    lab.host_backend(2, "host2", 9100);
    let c = lab.cluster.add_pod(2, "client").unwrap();
    let ports = vec![Port::tcp(9100, 9100), Port::udp(9101, 9100)];
    let (n1, n2) = (lab.cluster.node(1).host.ip4, lab.cluster.node(2).host.ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "hostnet.yaml",
        &(Svc::new("hostnet", "10.96.0.96", ports.clone()).yaml()
            + &slice(
                "hostnet",
                "hostnet-1",
                false,
                &[Ep::ready(n1, 1), Ep::ready(n2, 2)],
                &ports,
            )),
    );
    lab.start();
    for from in [&lab.cluster.pods[c], &lab.cluster.node(1).host] {
        let seen = until_all(
            &lab,
            from,
            ip("10.96.0.96"),
            9100,
            false,
            &["host1", "host2"],
            40,
        );
        assert_eq!(
            seen.len(),
            2,
            "TCP to host-network endpoints from {}",
            from.name
        );
        let seen = until_all(
            &lab,
            from,
            ip("10.96.0.96"),
            9101,
            true,
            &["host1", "host2"],
            40,
        );
        assert_eq!(
            seen.len(),
            2,
            "UDP to host-network endpoints from {}",
            from.name
        );
    }
}
