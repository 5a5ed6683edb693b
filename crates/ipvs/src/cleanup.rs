//! Removing IPVS mode from a node (`--cleanup`, or a switch to another mode): the
//! virtual servers kube-proxy made, `kube-ipvs0`, then (after the iptables chains
//! are gone, as a set in use cannot be destroyed) the ipsets.
//!
//! Upstream flushes the whole IPVS table, other tools' virtual servers included.
//! We delete only ours: those whose address is bound to `kube-ipvs0` (ClusterIPs,
//! external and load-balancer IPs), and those our sets name (NodePorts on node
//! addresses, external IPs that are node addresses).

use std::collections::BTreeSet;
use std::net::IpAddr;

use kpr_model::{IpFamily, Protocol};

use crate::ipset::Ipset;
use crate::links::Links;
use crate::proxier::DUMMY_DEVICE;
use crate::sets::Set;
use crate::table::IpvsTable;
use crate::types::{Operation, ServiceKey};

/// What [`remove_servers_and_device`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Virtual servers deleted.
    pub services: usize,
    /// `kube-ipvs0` was deleted.
    pub device: bool,
}

/// Parses a `hash:ip,port` entry (`10.96.0.1,tcp:443`).
fn parse_ip_port(entry: &str) -> Option<ServiceKey> {
    let (ip, rest) = entry.split_once(',')?;
    let (proto, port) = rest.split_once(':')?;
    let protocol = Protocol::from_kubernetes(&proto.to_ascii_uppercase())?;
    Some(ServiceKey::new(
        ip.parse().ok()?,
        protocol,
        port.parse().ok()?,
    ))
}

/// Deletes our virtual servers (as found through the sets and `kube-ipvs0`) and
/// the device. `table` is `None` when the kernel has no IPVS (nothing to delete
/// there). Returns failures as one-line messages.
pub fn remove_servers_and_device(
    table: Option<&mut dyn IpvsTable>,
    links: &mut Links,
    ipset: &Ipset,
) -> Result<Removed, Vec<String>> {
    let mut errors = Vec::new();
    let mut removed = Removed::default();
    let mut keys: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut node_ports: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    let mut bound: BTreeSet<IpAddr> = BTreeSet::new();
    for family in IpFamily::ALL {
        match links.addresses(DUMMY_DEVICE, family) {
            Ok(a) => bound.extend(a),
            Err(e) => errors.push(format!("{DUMMY_DEVICE}: {e}")),
        }
    }
    let saved = ipset.save_both().unwrap_or_else(|e| {
        // No ipset tool or no sets: nothing named there.
        tracing::debug!(error = %e, "no ipsets to read");
        IpFamily::ALL.map(|f| (f, Default::default()))
    });
    for (_, sets) in &saved {
        for (set, entries) in sets {
            let proto = match set {
                Set::NodePortTcp => Some(Protocol::Tcp),
                Set::NodePortUdp => Some(Protocol::Udp),
                _ => None,
            };
            for e in entries {
                if let Some(p) = proto {
                    if let Ok(port) = e.parse() {
                        node_ports.insert((p, port));
                    }
                } else if matches!(
                    set,
                    Set::ClusterIp
                        | Set::ExternalIp
                        | Set::ExternalIpLocal
                        | Set::LoadBalancer
                        | Set::NodePortSctp
                ) && let Some(k) = parse_ip_port(e)
                {
                    keys.insert(k);
                }
            }
        }
    }
    if let Some(table) = table {
        match table.services() {
            Ok(services) => {
                let ops: Vec<Operation> = services
                    .iter()
                    .map(|vs| vs.key())
                    .filter(|k| {
                        keys.contains(k)
                            || bound.contains(&k.address)
                            || node_ports.contains(&(k.protocol, k.port))
                    })
                    .map(Operation::DeleteService)
                    .collect();
                match table.apply(&ops) {
                    Ok(report) => {
                        removed.services = report.done;
                        errors.extend(report.failures.into_iter().map(|(_, e)| e.to_string()));
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    match links.delete_dummy(DUMMY_DEVICE) {
        Ok(d) => removed.device = d,
        Err(e) => errors.push(format!("{DUMMY_DEVICE}: {e}")),
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set entries name virtual servers.
    #[test]
    fn entries_to_keys() {
        let k = parse_ip_port("10.96.0.1,tcp:443");
        assert_eq!(
            k.map(|k| k.to_string()).as_deref(),
            Some("TCP 10.96.0.1:443")
        );
        let k = parse_ip_port("fd00::1,sctp:80");
        assert_eq!(
            k.map(|k| k.to_string()).as_deref(),
            Some("SCTP [fd00::1]:80")
        );
        assert!(parse_ip_port("10.96.0.1").is_none());
    }
}
