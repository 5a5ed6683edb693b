//! Address syntax as upstream parses it: IPs and CIDRs the "sloppy" way of
//! `k8s.io/utils/net` (IPv4 octets may have leading zeros, read as decimal),
//! `IP:port` the way Go's `net.SplitHostPort` splits it, and port ranges as
//! `k8s.io/apimachinery/pkg/util/net.ParsePortRange` reads them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

/// Parses an IP address, accepting IPv4 octets with leading zeros ("010.0.0.1" is 10.0.0.1).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// Parses `ip/prefix` like Go's `net.ParseCIDR` (sloppy IPv4). Host bits are kept;
/// call `.trunc()` for the network.
pub fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (ip, prefix) = s.split_once('/')?;
    let ip = parse_ip_sloppy(ip)?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    IpNet::new(ip, prefix).ok()
}

/// Why an `IP:port` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPortError {
    /// Not splittable into host and port (missing port, too many colons, bad brackets).
    Syntax(&'static str),
    /// The host part is not an IP address; carries the host.
    Ip(String),
    /// The port part is not a number in 1..=65535; carries the port.
    Port(String),
}

/// Splits `host:port` / `[v6]:port` like Go's `net.SplitHostPort` (port may be empty).
pub fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    let colon = s.rfind(':').ok_or("missing port in address")?;
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("missing ']' in address")?;
        if inner.contains(['[', ']']) {
            return Err("unexpected '[' or ']' in address");
        }
        return Ok((inner, port));
    }
    if host.contains(':') {
        return Err("too many colons in address");
    }
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return Err("unexpected '[' or ']' in address");
    }
    Ok((host, port))
}

/// Parses a port the way `strconv.Atoi` does (optional sign), then checks 1..=65535.
fn parse_port(port: &str) -> Option<u16> {
    let digits = port.strip_prefix('+').unwrap_or(port);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.trim_start_matches('0').parse().unwrap_or(0);
    match u16::try_from(value) {
        Ok(p) if p >= 1 => Some(p),
        _ => None,
    }
}

/// Parses a bind address `IP:port`, as upstream's `validateHostPort` requires.
pub fn parse_host_port(s: &str) -> Result<SocketAddr, HostPortError> {
    let (host, port) = split_host_port(s).map_err(HostPortError::Syntax)?;
    let ip = parse_ip_sloppy(host).ok_or_else(|| HostPortError::Ip(host.to_owned()))?;
    let port = parse_port(port).ok_or_else(|| HostPortError::Port(port.to_owned()))?;
    Ok(SocketAddr::new(ip, port))
}

/// Appends `:port` to a bare IP (`[ip]:port` for IPv6), as upstream's
/// `AppendPortIfNeeded`: values already of the `host:port` form, and
/// values that are not IPs, are returned unchanged for validation to judge.
pub fn append_port_if_needed(addr: &str, port: u16) -> String {
    if split_host_port(addr).is_ok() {
        return addr.to_owned();
    }
    match parse_ip_sloppy(addr) {
        Some(IpAddr::V4(_)) => format!("{addr}:{port}"),
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => format!("{addr}:{port}"),
        Some(IpAddr::V6(_)) => format!("[{addr}]:{port}"),
        None => addr.to_owned(),
    }
}

/// A validated `portRange`: empty, a single port, `low-high` or `base+offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (0 when empty).
    pub base: u16,
    /// Number of ports (0 when empty).
    pub size: u32,
}

/// Parses a port range the way `utilnet.ParsePortRange` does; the error is the reason.
pub fn parse_port_range(value: &str) -> Result<PortRange, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(PortRange { base: 0, size: 0 });
    }
    let number = |s: &str| -> Result<u32, String> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a port number"));
        }
        // Too many digits saturates; the range check below reports it.
        let trimmed = digits.trim_start_matches('0');
        Ok(if trimmed.is_empty() {
            0
        } else {
            trimmed.parse().unwrap_or(u32::MAX)
        })
    };
    let (low, high) = match (value.find('-'), value.find('+')) {
        (Some(_), Some(_)) => return Err("may not use both hyphen and plus".to_owned()),
        (None, None) => {
            let p = number(value)?;
            (p, p)
        }
        (Some(i), None) => (number(&value[..i])?, number(&value[i + 1..])?),
        (None, Some(i)) => {
            let low = number(&value[..i])?;
            (low, low.saturating_add(number(&value[i + 1..])?))
        }
    };
    if low > 65535 || high > 65535 {
        return Err("the port range cannot be greater than 65535".to_owned());
    }
    if high < low {
        return Err("end port cannot be less than start port".to_owned());
    }
    Ok(PortRange {
        base: low as u16,
        size: high - low + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sloppy parsing accepts leading zeros, rejects junk.
    #[test]
    fn sloppy_ips_and_cidrs() {
        assert_eq!(
            parse_ip_sloppy("010.001.0.1"),
            Some("10.1.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip_sloppy("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        assert_eq!(
            parse_cidr_sloppy("10.0.0.1/8").map(|n| n.to_string()),
            Some("10.0.0.1/8".into())
        );
        assert_eq!(parse_cidr_sloppy("10.0.0.0/33"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0"), None);
        assert_eq!(parse_cidr_sloppy("fd00::/129"), None);
    }

    /// host:port follows Go's SplitHostPort plus upstream's port range.
    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("0.0.0.0:10256"),
            Ok("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            parse_host_port("[::1]:10249"),
            Ok("[::1]:10249".parse().unwrap())
        );
        assert_eq!(
            parse_host_port("1.2.3.4"),
            Err(HostPortError::Syntax("missing port in address"))
        );
        assert_eq!(
            parse_host_port("::1:80"),
            Err(HostPortError::Syntax("too many colons in address"))
        );
        assert_eq!(
            parse_host_port("1.2.3.4:0"),
            Err(HostPortError::Port("0".into()))
        );
        assert_eq!(
            parse_host_port("1.2.3.4:"),
            Err(HostPortError::Port("".into()))
        );
        assert_eq!(
            parse_host_port("host:80"),
            Err(HostPortError::Ip("host".into()))
        );
        assert_eq!(append_port_if_needed("1.2.3.4", 9), "1.2.3.4:9");
        assert_eq!(append_port_if_needed("::", 9), "[::]:9");
        assert_eq!(append_port_if_needed("1.2.3.4:8", 9), "1.2.3.4:8");
        assert_eq!(append_port_if_needed("junk", 9), "junk");
    }

    /// Port ranges in all three notations.
    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range(""), Ok(PortRange { base: 0, size: 0 }));
        assert_eq!(parse_port_range("80"), Ok(PortRange { base: 80, size: 1 }));
        assert_eq!(
            parse_port_range("300-2000"),
            Ok(PortRange {
                base: 300,
                size: 1701
            })
        );
        assert_eq!(
            parse_port_range("300+10"),
            Ok(PortRange {
                base: 300,
                size: 11
            })
        );
        assert!(parse_port_range("2000-300").is_err());
        assert!(parse_port_range("1-2+3").is_err());
        assert!(parse_port_range("70000").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
