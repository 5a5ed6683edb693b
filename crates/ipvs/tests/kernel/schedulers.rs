//! What each IPVS scheduler does with real connections: three real servers in
//! their own namespaces behind a virtual IP on the director (the test's
//! namespace), a client namespace connecting. Each server accepts, writes its
//! name and keeps the connection open until the test ends, so held connections
//! count as active ones.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kpr_ipvs::{Protocol, RealServer, VirtualServer};
use kpr_netns_lab::Netns;

use crate::traffic::attach;
use crate::{ip, ipvs};

const VIP: &str = "10.96.0.10";

/// The director's world: client and servers `a`, `b`, `c` (10.0.2.2, 10.0.3.2,
/// 10.0.4.2), each holding the connections it accepts.
struct Bed {
    client: Netns,
    _servers: Vec<Netns>,
    stop: Arc<AtomicBool>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn server_ip(i: u8) -> IpAddr {
    ip(&format!("10.0.{}.2", i + 2))
}

fn bed(director: &Netns) -> Bed {
    let client = Netns::new("cl").unwrap();
    attach(director, &client, "to-client", 1);
    director
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    director
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let ns = Netns::new(&format!("sv{name}")).unwrap();
        attach(director, &ns, &format!("to-{name}"), i as u8 + 2);
        let stop = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        ns.spawn(move || {
            let listener = TcpListener::bind("0.0.0.0:8080").unwrap();
            listener.set_nonblocking(true).unwrap();
            let _ = ready_tx.send(());
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        use std::io::Write;
                        let _ = stream.write_all(name.as_bytes());
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .unwrap();
        ready_rx.recv().unwrap();
        servers.push(ns);
    }
    Bed {
        client,
        _servers: servers,
        stop,
    }
}

/// Opens a connection from the client (optionally from a given source address)
/// and returns the server's name with the open stream.
fn connect(bed: &Bed, source: Option<IpAddr>) -> (String, TcpStream) {
    bed.client
        .enter(move || {
            let target = SocketAddr::new(ip(VIP), 80);
            let mut last = None;
            for _ in 0..3 {
                let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                if let Some(src) = source {
                    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
                }
                match sock.connect_timeout(&target.into(), Duration::from_secs(5)) {
                    Ok(()) => {
                        let mut stream: TcpStream = sock.into();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        let mut buf = [0u8; 1];
                        stream.read_exact(&mut buf).unwrap();
                        return (String::from_utf8_lossy(&buf).into_owned(), stream);
                    }
                    Err(e) => last = Some(e),
                }
            }
            panic!("no connection to {target}: {last:?}");
        })
        .unwrap()
}

fn service(scheduler: &str, weights: &[(u8, i32)]) -> VirtualServer {
    let mut table = ipvs();
    let vs = VirtualServer::new(ip(VIP), Protocol::Tcp, 80, scheduler);
    table.add_service(&vs).unwrap();
    for (i, w) in weights {
        table
            .add_real_server(&vs, &RealServer::new(server_ip(*i), 8080, *w))
            .unwrap();
    }
    vs
}

fn add_servers(vs: &VirtualServer, servers: &[u8]) {
    let mut table = ipvs();
    for i in servers {
        table
            .add_real_server(vs, &RealServer::new(server_ip(*i), 8080, 1))
            .unwrap();
    }
}

/// Names of `n` new connections, all kept open.
fn names(bed: &Bed, n: usize, held: &mut Vec<TcpStream>) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (name, s) = connect(bed, None);
            held.push(s);
            name
        })
        .collect()
}

fn counts(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// rr: each server in turn, in the same order every round.
pub fn scheduler_rr_takes_turns(director: &Netns) {
    let bed = bed(director);
    service("rr", &[(0, 1), (1, 1), (2, 1)]);
    let mut held = Vec::new();
    let seq = names(&bed, 6, &mut held);
    assert_eq!(seq[..3], seq[3..], "same order each round: {seq:?}");
    assert_eq!(counts(&seq).len(), 3, "every server in a round: {seq:?}");
}

/// wrr: shares follow the weights (3:1).
pub fn scheduler_wrr_follows_weights(director: &Netns) {
    let bed = bed(director);
    service("wrr", &[(0, 3), (1, 1)]);
    let mut held = Vec::new();
    let c = counts(&names(&bed, 8, &mut held));
    assert_eq!(c.get("a"), Some(&6), "{c:?}");
    assert_eq!(c.get("b"), Some(&2), "{c:?}");
}

/// Servers already busy with held connections get no new one while others are
/// idle: lc, wlc, sed and nq send the next connections to the idle servers; rr,
/// as the contrast, keeps its turns.
pub fn scheduler_least_connections_prefer_idle(director: &Netns) {
    for (scheduler, avoids_busy) in [
        ("lc", true),
        ("wlc", true),
        ("sed", true),
        ("nq", true),
        ("rr", false),
    ] {
        let bed = bed(director);
        let vs = service(scheduler, &[(0, 1)]);
        let mut held = Vec::new();
        assert_eq!(names(&bed, 2, &mut held), ["a", "a"]);
        add_servers(&vs, &[1, 2]);
        let next = names(&bed, 4, &mut held);
        let to_busy = next.iter().filter(|n| *n == "a").count();
        if avoids_busy {
            assert_eq!(to_busy, 0, "{scheduler}: {next:?}");
            let c = counts(&next);
            assert_eq!(
                (c.get("b"), c.get("c")),
                (Some(&2), Some(&2)),
                "{scheduler}: {next:?}"
            );
        } else {
            assert!(to_busy > 0, "{scheduler} takes turns: {next:?}");
        }
        drop(held);
        drop(bed);
        ipvs().flush().unwrap();
        for link in ["to-client", "to-a", "to-b", "to-c"] {
            let _ = director.ip(&["link", "del", link]);
        }
        let _ = director.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    }
}

/// Hashing schedulers keep a client on one server: sh and mh by source address,
/// dh, lblc and lblcr by destination (one VIP: one server).
pub fn scheduler_hashing_sticks(director: &Netns) {
    for scheduler in ["sh", "mh", "dh", "lblc", "lblcr"] {
        let bed = bed(director);
        // Heavy weights: lblc and lblcr move on from an overloaded server.
        service(scheduler, &[(0, 100), (1, 100), (2, 100)]);
        let seq: Vec<String> = (0..6).map(|_| connect(&bed, None).0).collect();
        assert_eq!(counts(&seq).len(), 1, "{scheduler} sticks: {seq:?}");
        drop(bed);
        ipvs().flush().unwrap();
        for link in ["to-client", "to-a", "to-b", "to-c"] {
            let _ = director.ip(&["link", "del", link]);
        }
        let _ = director.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    }
}
