//! Backend servers: answer every TCP connection and UDP datagram with
//! `<name> <peer-ip>:<peer-port>\n`, so a test sees which backend answered and what
//! source address it saw (masqueraded or preserved). They run as threads inside a
//! namespace and stop when their handle drops.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{LabError, Netns};

/// A running TCP+UDP echo server; stops when dropped.
#[derive(Debug)]
pub struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The port it listens on (TCP and UDP).
    pub port: u16,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn reply(name: &str, peer: SocketAddr) -> String {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    format!("{name} {}\n", SocketAddr::new(ip, peer.port()))
}

/// Starts a backend called `name` on `port` (all addresses, both families) inside `ns`.
pub fn serve(ns: &Netns, name: &str, port: u16) -> Result<Backend, LabError> {
    serve_on(ns, name, &[], port)
}

/// Like [`serve`], but UDP answers from each of `udp_addrs` separately (empty: one
/// wildcard socket). A host with several addresses needs this: a wildcard UDP socket
/// replies from the address routing picks, which for a DNATed Service flow is not
/// the address the datagram was sent to, and the reply would not match the flow.
pub fn serve_on(
    ns: &Netns,
    name: &str,
    udp_addrs: &[IpAddr],
    port: u16,
) -> Result<Backend, LabError> {
    let stop = Arc::new(AtomicBool::new(false));
    let bind_err = |what: &str, e: std::io::Error| LabError::Command {
        command: format!("{what} port {port} in {}", ns.name()),
        message: e.to_string(),
    };
    let addrs: Vec<IpAddr> = udp_addrs.to_vec();
    // Sockets are created inside the namespace, then served from other threads.
    let (tcp, udps) = ns
        .enter(move || -> std::io::Result<(TcpListener, Vec<UdpSocket>)> {
            let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            let tcp = TcpListener::bind(any)?;
            tcp.set_nonblocking(true)?;
            let binds: Vec<SocketAddr> = if addrs.is_empty() {
                vec![any]
            } else {
                addrs.iter().map(|a| SocketAddr::new(*a, port)).collect()
            };
            let mut udps = Vec::new();
            for b in binds {
                let udp = UdpSocket::bind(b)?;
                udp.set_read_timeout(Some(Duration::from_millis(50)))?;
                udps.push(udp);
            }
            Ok((tcp, udps))
        })?
        .map_err(|e| bind_err("bind", e))?;

    let mut threads = Vec::new();
    let (n, s) = (name.to_string(), stop.clone());
    threads.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut conn, peer)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = conn.write_all(reply(&n, peer).as_bytes());
                    // Hold the connection until the client closes (or 2 s), so
                    // tests can keep connections open.
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 64];
                    let _ = conn.read(&mut buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }));
    for udp in udps {
        let (n, s) = (name.to_string(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(reply(&n, peer).as_bytes(), peer);
                }
            }
        }));
    }
    Ok(Backend {
        stop,
        threads,
        port,
    })
}
