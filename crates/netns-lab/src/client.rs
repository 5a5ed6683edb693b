//! Clients: one TCP connection or UDP exchange from inside a namespace, with bounded
//! timeouts, returning what the backend answered.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::Netns;

/// What a backend answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The backend's name.
    pub backend: String,
    /// The source address the backend saw.
    pub seen_source: SocketAddr,
}

/// How a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Actively refused (TCP RST or ICMP unreachable): a REJECT answers this way.
    #[error("refused")]
    Refused,
    /// No answer within the timeout: a DROP looks like this.
    #[error("timed out")]
    TimedOut,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn classify(e: std::io::Error) -> RequestError {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable => {
            RequestError::Refused
        }
        TimedOut | WouldBlock => RequestError::TimedOut,
        _ => RequestError::Other(e.to_string()),
    }
}

fn parse(text: &str) -> Result<Answer, RequestError> {
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|a| a.parse().ok())) {
        (Some(backend), Some(seen_source)) => Ok(Answer {
            backend: backend.to_string(),
            seen_source,
        }),
        _ => Err(RequestError::Other(format!("unexpected answer {text:?}"))),
    }
}

/// One TCP connection from `ns` to `ip:port`.
pub fn tcp(ns: &Netns, ip: IpAddr, port: u16, timeout: Duration) -> Result<Answer, RequestError> {
    tcp_from(ns, None, ip, port, timeout)
}

/// One TCP connection from `ns`, optionally from a fixed source port. Connecting,
/// and then reading the answer, each give up after `timeout`.
pub fn tcp_from(
    ns: &Netns,
    source_port: Option<u16>,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Answer, RequestError> {
    let result = ns.enter(move || -> Result<Answer, RequestError> {
        let addr = SocketAddr::new(ip, port);
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(classify)?;
        if let Some(sp) = source_port {
            socket.set_reuse_address(true).map_err(classify)?;
            let any = if ip.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            };
            socket
                .bind(&SocketAddr::new(any, sp).into())
                .map_err(classify)?;
        }
        socket
            .connect_timeout(&addr.into(), timeout)
            .map_err(classify)?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(timeout)).map_err(classify)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.contains(&b'\n') {
                        break;
                    }
                }
                Err(e) => return Err(classify(e)),
            }
        }
        let _ = stream.write_all(b"bye\n");
        let _ = stream.shutdown(std::net::Shutdown::Both);
        parse(&String::from_utf8_lossy(&buf))
    });
    result.map_err(|e| RequestError::Other(e.to_string()))?
}

/// One UDP exchange from `ns` to `ip:port`, from `source_port` (0: any).
pub fn udp(
    ns: &Netns,
    source_port: u16,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Answer, RequestError> {
    let result = ns.enter(move || -> Result<Answer, RequestError> {
        let local = SocketAddr::new(
            if ip.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            },
            source_port,
        );
        let sock = UdpSocket::bind(local).map_err(classify)?;
        sock.set_read_timeout(Some(timeout)).map_err(classify)?;
        sock.connect(SocketAddr::new(ip, port)).map_err(classify)?;
        sock.send(b"hello\n").map_err(classify)?;
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).map_err(classify)?;
        parse(&String::from_utf8_lossy(&buf[..n]))
    });
    result.map_err(|e| RequestError::Other(e.to_string()))?
}

/// One HTTP/1.0 `GET path` to `addr` from the calling thread's namespace, with
/// `timeout` for connecting and for reading: the status and the body.
pub fn http_get_here(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), RequestError> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(classify)?;
    s.set_read_timeout(Some(timeout)).map_err(classify)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(classify)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(classify)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| RequestError::Other(format!("no HTTP status in {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// [`http_get_here`] from inside `ns`.
pub fn http_get(
    ns: &Netns,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), RequestError> {
    let path = path.to_string();
    ns.enter(move || http_get_here(addr, &path, timeout))
        .map_err(|e| RequestError::Other(e.to_string()))?
}
