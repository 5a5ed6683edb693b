//! Benchmark of the stale-entry cleanup (root; works in a network namespace it
//! makes and removes):
//!
//! ```sh
//! cargo run --release -p kpr-conntrack --example kpr-conntrack-bench [ENTRIES] [STALE] [ROUNDS]
//! ```
//!
//! Fills the namespace's conntrack table with ENTRIES (default 100,000) UDP
//! entries to 100 Services of 10 endpoints each, STALE (default 1,000) of them
//! DNATed to endpoints the state no longer has, then per round times the
//! baseline (a dump alone) and a full cleanup (dump + select + delete), and puts
//! the stale entries back for the next round. Entries are inserted over netlink;
//! no packet is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Port, state};
use kpr_conntrack::{Conntrack, ConntrackTable, Entry, Tuple, cleanup, stale_entries};
use kpr_model::{IpFamily, Protocol};
use kpr_netns_lab::Netns;

const SERVICES: u32 = 100;
const ENDPOINTS: u32 = 10;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn service_ip(s: u32) -> IpAddr {
    v4(10, 96, (s / 250) as u8, (s % 250 + 1) as u8)
}

fn endpoint_ip(s: u32, e: u32) -> IpAddr {
    v4(10, 244, s as u8, e as u8 + 1)
}

/// Entry `i`: a client address and port of its own, a Service, and an endpoint
/// of that Service (or, if `stale`, an address the Service does not have).
fn entry(i: u32, stale: bool) -> Entry {
    let s = i % SERVICES;
    let to = if stale {
        v4(10, 245, s as u8, (i % 250) as u8 + 1)
    } else {
        endpoint_ip(s, i % ENDPOINTS)
    };
    Entry::new(
        Protocol::Udp,
        Tuple {
            src: v4(10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8),
            dst: service_ip(s),
            src_port: 10000 + (i % 50000) as u16,
            dst_port: 53,
        },
        (to, 5353),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are counts"))
        .collect();
    let total = args.first().copied().unwrap_or(100_000);
    let stale = args.get(1).copied().unwrap_or(1_000).min(total);
    let rounds = args.get(2).copied().unwrap_or(5).clamp(1, 50);

    // The state: every Service with its ten endpoints.
    let endpoint_text: Vec<Vec<(String, u16)>> = (0..SERVICES)
        .map(|s| {
            (0..ENDPOINTS)
                .map(|e| (endpoint_ip(s, e).to_string(), 5353))
                .collect()
        })
        .collect();
    let endpoint_refs: Vec<Vec<(&str, u16)>> = endpoint_text
        .iter()
        .map(|eps| eps.iter().map(|(a, p)| (a.as_str(), *p)).collect())
        .collect();
    let ips: Vec<String> = (0..SERVICES).map(|s| service_ip(s).to_string()).collect();
    let ports: Vec<Port<'_>> = (0..SERVICES as usize)
        .map(|s| Port {
            protocol: Protocol::Udp,
            cluster_ip: &ips[s],
            port: 53,
            node_port: None,
            endpoints: &endpoint_refs[s],
        })
        .collect();
    let current = state(IpFamily::V4, &ports);

    let fresh: Vec<Entry> = (stale..total).map(|i| entry(i, false)).collect();
    let stale_set: Vec<Entry> = (0..stale).map(|i| entry(i, true)).collect();
    let expected = stale_entries(None, &current, &[], &stale_set).len();
    assert_eq!(expected, stale as usize, "every stale entry is selected");

    let ns = Netns::new("ctbench").expect("a network namespace (run as root)");
    let report = ns
        .enter(move || {
            let mut ct = Conntrack::new().unwrap();
            let t = Instant::now();
            let created = ct.create(&fresh, 3600).unwrap() + ct.create(&stale_set, 3600).unwrap();
            let fill = t.elapsed();
            let mut lines = vec![format!(
                "table: {created} UDP entries ({stale} stale), filled in {} ({:.0} entries/s)",
                ms(fill),
                created as f64 / fill.as_secs_f64()
            )];
            let (mut base, mut full, mut dumps, mut selects, mut deletes) =
                (vec![], vec![], vec![], vec![], vec![]);
            for round in 0..rounds {
                if round > 0 {
                    ct.create(&stale_set, 3600).unwrap();
                }
                let t = Instant::now();
                let dump = ct.dump(IpFamily::V4, Protocol::Udp).unwrap();
                base.push(t.elapsed());
                assert_eq!(dump.entries.len(), total as usize);

                let t = Instant::now();
                let r = cleanup(&mut ct, None, &current, &[]).unwrap();
                full.push(t.elapsed());
                assert_eq!((r.dumped, r.deleted), (total as usize, stale as usize), "{r:?}");
                dumps.push(r.dump_time);
                selects.push(r.select_time);
                deletes.push(r.delete_time);
                lines.push(format!(
                    "round {round}: baseline dump {}; cleanup {} = dump {} + select {} + delete {} ({} deleted)",
                    ms(base[round as usize]),
                    ms(full[round as usize]),
                    ms(r.dump_time),
                    ms(r.select_time),
                    ms(r.delete_time),
                    r.deleted
                ));
            }
            let again = cleanup(&mut ct, None, &current, &[]).unwrap();
            assert_eq!(again.deleted, 0, "a second cleanup finds nothing");
            lines.push(format!(
                "median of {rounds}: baseline dump {}; cleanup {} (dump {}, select {}, delete {}); \
                 cleanup with nothing stale {}",
                ms(median(base)),
                ms(median(full)),
                ms(median(dumps)),
                ms(median(selects)),
                ms(median(deletes)),
                ms(again.elapsed())
            ));
            lines
        })
        .unwrap();
    for line in report {
        println!("{line}");
    }
}
