//! One reconcile of a family's conntrack table: dump, select, delete.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use kpr_model::{FamilyState, IpFamily, Protocol};

use crate::error::ConntrackError;
use crate::netlink::ConntrackTable;
use crate::stale::{Frontends, StaleReason};

/// What one cleanup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanupReport {
    /// The family cleaned.
    pub family: IpFamily,
    /// Protocols whose entries were dumped (none when no Service of the family
    /// uses UDP or SCTP).
    pub protocols: Vec<Protocol>,
    /// Entries dumped.
    pub dumped: usize,
    /// Dumped messages that were not usable entries.
    pub skipped: usize,
    /// A dump was interrupted by concurrent table changes.
    pub interrupted: bool,
    /// Stale entries found, by reason (sorted by reason).
    pub stale: Vec<(StaleReason, usize)>,
    /// Entries the kernel deleted (stale entries that expired meanwhile are not
    /// counted).
    pub deleted: usize,
    /// Time spent dumping.
    pub dump_time: Duration,
    /// Time spent selecting.
    pub select_time: Duration,
    /// Time spent deleting.
    pub delete_time: Duration,
}

impl CleanupReport {
    /// Stale entries found, all reasons together.
    pub fn stale_total(&self) -> usize {
        self.stale.iter().map(|(_, n)| n).sum()
    }

    /// Total time of the cleanup.
    pub fn elapsed(&self) -> Duration {
        self.dump_time + self.select_time + self.delete_time
    }
}

/// Reconciles the conntrack table of `current.family` against `current`: dumps
/// the UDP and SCTP entries (only for protocols some Service uses, now or in
/// `previous`), selects the stale ones as [`crate::stale_entries`] does and
/// deletes them in batches. `node_ips` may hold both families.
///
/// Call it only with a complete state (every source has finished its initial
/// list), after the rules of `current` are in place.
pub fn cleanup(
    conntrack: &mut dyn ConntrackTable,
    previous: Option<&FamilyState>,
    current: &FamilyState,
    node_ips: &[IpAddr],
) -> Result<CleanupReport, ConntrackError> {
    let family = current.family;
    let mut report = CleanupReport {
        family,
        protocols: Vec::new(),
        dumped: 0,
        skipped: 0,
        interrupted: false,
        stale: Vec::new(),
        deleted: 0,
        dump_time: Duration::ZERO,
        select_time: Duration::ZERO,
        delete_time: Duration::ZERO,
    };
    let start = Instant::now();
    let node_ips: Vec<IpAddr> = node_ips
        .iter()
        .filter(|ip| IpFamily::of(ip) == family)
        .copied()
        .collect();
    let frontends = Frontends::new(previous, current, &node_ips);
    report.select_time += start.elapsed();

    let mut counts = std::collections::BTreeMap::<StaleReason, usize>::new();
    for protocol in [Protocol::Udp, Protocol::Sctp] {
        if !frontends.has_protocol(protocol) {
            continue;
        }
        report.protocols.push(protocol);

        let t = Instant::now();
        let dump = conntrack.dump(family, protocol)?;
        report.dump_time += t.elapsed();
        report.dumped += dump.entries.len();
        report.skipped += dump.skipped;
        report.interrupted |= dump.interrupted;

        let t = Instant::now();
        let mut stale = Vec::new();
        for entry in &dump.entries {
            if let Some(reason) = frontends.classify(entry) {
                *counts.entry(reason).or_default() += 1;
                stale.push(*entry);
            }
        }
        report.select_time += t.elapsed();

        if !stale.is_empty() {
            let t = Instant::now();
            report.deleted += conntrack.delete(&stale)?;
            report.delete_time += t.elapsed();
        }
    }
    report.stale = counts.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fake::FakeConntrack;
    use crate::stale::tests::{DNS, Svc, family, flow, ip, udp};

    /// A cleanup dumps UDP only when only UDP Services exist, deletes exactly
    /// the stale entries, and counts them by reason.
    #[test]
    fn deletes_stale_entries_and_reports() {
        let live = udp("10.96.0.10", 53, ("10.244.1.5", 5353));
        let gone = udp("10.96.0.10", 53, ("10.244.9.9", 5353));
        let mut raw = udp("10.96.0.10", 53, ("10.96.0.10", 53));
        raw.original.src_port = 1;
        let tcp = flow(Protocol::Tcp, "10.96.0.10", 53, ("10.244.9.9", 5353));
        let mut table = FakeConntrack::new([live, gone, raw, tcp]);
        let report = cleanup(&mut table, None, &family(&[DNS]), &[]).unwrap();
        assert_eq!(report.protocols, [Protocol::Udp]);
        assert_eq!(
            (report.dumped, report.deleted, report.stale_total()),
            (3, 2, 2)
        );
        assert_eq!(
            report.stale,
            [
                (StaleReason::NotAnEndpoint, 1),
                (StaleReason::NotTranslated, 1)
            ]
        );
        assert_eq!((table.dumps, table.delete_requests), (1, 2));
        let left: Vec<_> = table.entries.iter().map(|e| e.reply.src).collect();
        assert_eq!(
            left,
            [ip("10.244.1.5"), ip("10.244.9.9")],
            "live UDP and TCP stay"
        );

        let again = cleanup(&mut table, None, &family(&[DNS]), &[]).unwrap();
        assert_eq!(
            (again.deleted, table.delete_requests),
            (0, 2),
            "nothing to delete"
        );
    }

    /// Without UDP or SCTP Services (now or before) nothing is dumped at all;
    /// an SCTP Service deleted since the last cleanup still gets its dump.
    #[test]
    fn dumps_only_what_can_be_stale() {
        let mut table = FakeConntrack::new([udp("10.96.0.10", 53, ("10.244.9.9", 5353))]);
        let tcp = Svc {
            protocol: Protocol::Tcp,
            ..DNS
        };
        let report = cleanup(&mut table, None, &family(&[tcp]), &[]).unwrap();
        assert!(report.protocols.is_empty());
        assert_eq!((table.dumps, report.deleted), (0, 0));

        let sctp = Svc {
            protocol: Protocol::Sctp,
            ..DNS
        };
        let mut table =
            FakeConntrack::new([flow(Protocol::Sctp, "10.96.0.10", 53, ("10.244.1.5", 5353))]);
        let report = cleanup(&mut table, Some(&family(&[sctp])), &family(&[]), &[]).unwrap();
        assert_eq!(report.protocols, [Protocol::Sctp]);
        assert_eq!(report.stale, [(StaleReason::ServiceRemoved, 1)]);
        assert!(table.entries.is_empty());
    }

    /// Node addresses of the other family are ignored, so a NodePort flow on a
    /// foreign address is not taken for a node's (empty list = unknown).
    #[test]
    fn node_addresses_of_the_family_only() {
        let np = Svc {
            node_port: Some(30053),
            ..DNS
        };
        let foreign = udp("198.51.100.1", 30053, ("10.244.9.9", 5353));
        let mut table = FakeConntrack::new([foreign]);
        let v6_only = [ip("fd00::1")];
        let report = cleanup(
            &mut table,
            None,
            &family(std::slice::from_ref(&np)),
            &v6_only,
        )
        .unwrap();
        assert_eq!(
            report.deleted, 1,
            "no IPv4 node address known: DNATed flow matched"
        );
        let mut table = FakeConntrack::new([foreign]);
        let both = [ip("fd00::1"), ip("192.168.1.2")];
        let report = cleanup(&mut table, None, &family(&[np]), &both).unwrap();
        assert_eq!(report.deleted, 0, "198.51.100.1 is not a node address");
    }

    /// A failing dump is reported with the kernel's error.
    #[test]
    fn dump_errors_propagate() {
        let mut table = FakeConntrack {
            fail_next_dump: Some(105),
            ..FakeConntrack::default()
        };
        let err = cleanup(&mut table, None, &family(&[DNS]), &[]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(105));
        assert!(err.to_string().starts_with("conntrack dump: "), "{err}");
    }
}
