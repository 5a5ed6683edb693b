//! The Service scenario matrix, written once and run against each data plane.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kpr_netns_lab::client::RequestError;

use super::Lab;

mod conntrack;
mod policies;
mod resilience;
mod services;
mod tools;

pub use conntrack::*;
pub use policies::*;
pub use resilience::*;
pub use services::*;
pub use tools::*;

/// Requests until every name in `want` answered (at most `tries`); returns who answered.
pub(crate) fn until_all(
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

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sets routes on the external clients so that `cidr` (external IPs, LB IPs) is
/// reached through node `node`, as a router or load balancer would send it.
pub(crate) fn route_via_node(lab: &Lab, cidr: &str, node: u8) {
    let via = lab.cluster.node(node).host.ip4.to_string();
    for c in [&lab.cluster.client, &lab.cluster.blocked_client] {
        c.ns.ip(&["route", "replace", cidr, "via", &via]).unwrap();
    }
}

/// A client connecting in a loop from a pod on node1, until stopped; every result
/// with the time the request started.
pub(crate) struct LoadLoop {
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
pub(crate) fn direct_tcp(
    ip: IpAddr,
    port: u16,
) -> Result<kpr_netns_lab::client::Answer, RequestError> {
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
