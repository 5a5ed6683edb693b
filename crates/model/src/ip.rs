//! Address parsing with Go's leniency.
//!
//! Upstream parses API addresses with `netutils.ParseIPSloppy`, which accepts IPv4
//! octets with leading zeros (`010.0.0.1` is 10.0.0.1, read as decimal). Objects
//! stored before Kubernetes tightened validation can still hold such values, so we
//! accept them too and print the canonical form.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses an IP address, accepting IPv4 octets with leading zeros like Go's
/// `ParseIPSloppy`. Surrounding whitespace is not accepted.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    parse_v4_leading_zeros(s).map(IpAddr::V4)
}

fn parse_v4_leading_zeros(s: &str) -> Option<Ipv4Addr> {
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
    Some(Ipv4Addr::from(octets))
}

/// Parses a CIDR the way upstream parses Service fields such as
/// `loadBalancerSourceRanges`: host bits are kept as written (like Go's
/// `ParseCIDR` address part is dropped but the network printed is the masked one),
/// so the returned network is truncated to its prefix, as `net.IPNet.String()` prints.
pub fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (addr, len) = s.split_once('/')?;
    let ip = parse_ip_sloppy(addr)?;
    let len: u8 = len.parse().ok()?;
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leading zeros are read as decimal, as Go's ParseIPSloppy does.
    #[test]
    fn sloppy_ipv4() {
        assert_eq!(parse_ip_sloppy("010.000.0.01"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip_sloppy("fd00::1"), "fd00::1".parse().ok());
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        assert_eq!(parse_ip_sloppy(" 1.2.3.4"), None);
    }

    /// CIDRs print as their network, like Go's IPNet.String().
    #[test]
    fn cidr_is_truncated() {
        assert_eq!(
            parse_cidr_sloppy("203.0.113.7/25").map(|n| n.to_string()),
            Some("203.0.113.0/25".into())
        );
        assert_eq!(parse_cidr_sloppy("203.0.113.0"), None);
        assert_eq!(parse_cidr_sloppy("203.0.113.0/33"), None);
    }
}
