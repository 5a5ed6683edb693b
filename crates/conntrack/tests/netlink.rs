//! The netlink layer against a real kernel, in network namespaces made by each
//! test: entries created with the `conntrack` tool are dumped with the right
//! fields, per family and protocol; deletes remove exactly what they are given,
//! in batches, and respect the entry id; `conntrack -L` confirms every change.

#![allow(clippy::unwrap_used)]

mod common;

use common::ip;
use kpr_conntrack::{Conntrack, ConntrackTable, Entry, Tuple};
use kpr_model::{IpFamily, Protocol};
use kpr_netns_lab::Netns;

/// `conntrack -L` of every family, one line per entry.
fn listed(ns: &Netns) -> Vec<String> {
    let out = ns.exec("conntrack", &["-L", "-f", "ipv4"]).unwrap();
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let out = ns.exec("conntrack", &["-L", "-f", "ipv6"]).unwrap();
    lines.extend(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned),
    );
    lines
}

/// `conntrack -I` of a UDP or TCP flow translated to `reply_src:reply_port`.
fn insert(
    ns: &Netns,
    proto: &str,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    reply: (&str, u16),
) {
    let (sport, dport, rport) = (sport.to_string(), dport.to_string(), reply.1.to_string());
    let mut args = vec![
        "-I",
        "-p",
        proto,
        "-s",
        src,
        "-d",
        dst,
        "--sport",
        &sport,
        "--dport",
        &dport,
        "-r",
        reply.0,
        "-q",
        src,
        "--reply-port-src",
        &rport,
        "--reply-port-dst",
        &sport,
        "-t",
        "600",
    ];
    if proto == "tcp" {
        args.extend(["--state", "ESTABLISHED"]);
    }
    ns.exec("conntrack", &args).unwrap();
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16, to: (&str, u16)) -> Entry {
    Entry::new(
        Protocol::Udp,
        Tuple {
            src: ip(src),
            dst: ip(dst),
            src_port: sport,
            dst_port: dport,
        },
        (ip(to.0), to.1),
    )
}

/// A dump returns the entries of one family and protocol with both tuples, id
/// and timeout, and nothing else.
#[test]
fn dump_filters_by_family_and_protocol() {
    let ns = Netns::new("ctd").unwrap();
    insert(
        &ns,
        "udp",
        "10.0.0.1",
        "10.96.0.10",
        40000,
        53,
        ("10.244.1.5", 5353),
    );
    insert(
        &ns,
        "tcp",
        "10.0.0.1",
        "10.96.0.11",
        40001,
        80,
        ("10.244.1.6", 8080),
    );
    insert(
        &ns,
        "udp",
        "fd00::1",
        "fd00::10",
        40002,
        53,
        ("fd00::5", 5353),
    );
    let (v4_udp, v4_tcp, v6_udp, v4_sctp) = ns
        .enter(|| {
            let mut ct = Conntrack::new().unwrap();
            (
                ct.dump(IpFamily::V4, Protocol::Udp).unwrap(),
                ct.dump(IpFamily::V4, Protocol::Tcp).unwrap(),
                ct.dump(IpFamily::V6, Protocol::Udp).unwrap(),
                ct.dump(IpFamily::V4, Protocol::Sctp).unwrap(),
            )
        })
        .unwrap();

    assert_eq!(v4_udp.entries.len(), 1, "{v4_udp:?}");
    assert_eq!(v4_udp.skipped, 0);
    let e = v4_udp.entries[0];
    let want = udp("10.0.0.1", 40000, "10.96.0.10", 53, ("10.244.1.5", 5353));
    assert_eq!(
        (e.protocol, e.original, e.reply),
        (want.protocol, want.original, want.reply)
    );
    assert!(e.id.is_some(), "the kernel reports an id");
    assert!(
        e.timeout.is_some_and(|t| t > 500 && t <= 600),
        "{:?}",
        e.timeout
    );
    assert!(e.is_dnat());

    assert_eq!(v4_tcp.entries.len(), 1);
    assert_eq!(v4_tcp.entries[0].protocol, Protocol::Tcp);
    assert_eq!(v4_tcp.entries[0].reply.src, ip("10.244.1.6"));
    let state = v4_tcp.entries[0]
        .tcp_state
        .expect("a TCP entry has a state");
    assert!(state.is_established(), "{}", state.name());
    assert_eq!(v4_udp.entries[0].tcp_state, None);
    assert_eq!(v6_udp.entries.len(), 1);
    assert_eq!(v6_udp.entries[0].original.dst, ip("fd00::10"));
    assert!(v4_sctp.entries.is_empty());
}

/// Deleting removes exactly the given entries; deleting them again is not an
/// error and deletes nothing.
#[test]
fn delete_removes_exactly_the_given_entries() {
    let ns = Netns::new("ctx").unwrap();
    for sport in [41000, 41001, 41002] {
        insert(
            &ns,
            "udp",
            "10.0.0.1",
            "10.96.0.10",
            sport,
            53,
            ("10.244.1.5", 53),
        );
    }
    let (first, second) = ns
        .enter(|| {
            let mut ct = Conntrack::new().unwrap();
            let dump = ct.dump(IpFamily::V4, Protocol::Udp).unwrap();
            let doomed: Vec<Entry> = dump
                .entries
                .into_iter()
                .filter(|e| e.original.src_port != 41001)
                .collect();
            (ct.delete(&doomed).unwrap(), ct.delete(&doomed).unwrap())
        })
        .unwrap();
    assert_eq!((first, second), (2, 0));
    let left = listed(&ns);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("sport=41001"), "{left:?}");
}

/// A delete carrying the id of an entry that was replaced by a new flow with the
/// same tuple leaves the new flow alone.
#[test]
fn delete_respects_the_entry_id() {
    let ns = Netns::new("cti").unwrap();
    insert(
        &ns,
        "udp",
        "10.0.0.1",
        "10.96.0.10",
        42000,
        53,
        ("10.244.1.5", 53),
    );
    let old = ns
        .enter(|| {
            Conntrack::new()
                .unwrap()
                .dump(IpFamily::V4, Protocol::Udp)
                .unwrap()
        })
        .unwrap()
        .entries[0];
    ns.exec("conntrack", &["-D", "-p", "udp", "--sport", "42000"])
        .unwrap();
    // The kernel's id hashes the entry's address with its original tuple, so
    // the same flow re-created in the freed slot gets the old id back. Which
    // slot a new entry takes depends on the CPU `conntrack` runs on; fillers
    // occupy freed slots until the re-created flow has a new id (bounded).
    let dump_new = |ns: &Netns| -> Vec<Entry> {
        ns.enter(|| {
            Conntrack::new()
                .unwrap()
                .dump(IpFamily::V4, Protocol::Udp)
                .unwrap()
                .entries
        })
        .unwrap()
        .into_iter()
        .filter(|e| e.original.src == ip("10.0.0.1"))
        .collect()
    };
    let mut fresh = None;
    for attempt in 0..20u16 {
        let filler = format!("10.0.1.{}", attempt + 1);
        insert(
            &ns,
            "udp",
            &filler,
            "10.96.0.10",
            42000,
            53,
            ("10.244.1.5", 53),
        );
        // The same flow again, now translated to another endpoint.
        insert(
            &ns,
            "udp",
            "10.0.0.1",
            "10.96.0.10",
            42000,
            53,
            ("10.244.1.6", 53),
        );
        let new = dump_new(&ns);
        assert_eq!(new.len(), 1, "{new:?}");
        if new[0].id != old.id {
            fresh = Some(new[0]);
            break;
        }
        ns.exec(
            "conntrack",
            &["-D", "-p", "udp", "-s", "10.0.0.1", "--sport", "42000"],
        )
        .unwrap();
    }
    let fresh = fresh.expect("precondition: the re-created flow gets a new id within 20 tries");
    let deleted = ns
        .enter(move || Conntrack::new().unwrap().delete(&[old]).unwrap())
        .unwrap();
    assert_eq!(deleted, 0, "the old id no longer exists");
    let new = dump_new(&ns);
    assert_eq!(new.len(), 1, "the new flow is left alone: {new:?}");
    assert_eq!(new[0].id, fresh.id);
    assert_eq!(new[0].reply.src, ip("10.244.1.6"));
}

/// Thousands of entries are created and deleted in batches of many messages per
/// sendmsg, every ACK read, in both families.
#[test]
fn batches_create_dump_and_delete() {
    let ns = Netns::new("ctb").unwrap();
    let entries: Vec<Entry> = (0..3000u32)
        .map(|i| {
            let client = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            udp(&client, 40000, "10.96.0.10", 53, ("10.244.1.5", 5353))
        })
        .chain((0..700u16).map(|i| udp("fd00::1", 20000 + i, "fd00::10", 53, ("fd00::5", 5353))))
        .collect();
    let (created, v4, v6, deleted, after) = ns
        .enter(move || {
            let mut ct = Conntrack::new().unwrap();
            let created = ct.create(&entries, 600).unwrap();
            let v4 = ct.dump(IpFamily::V4, Protocol::Udp).unwrap();
            let v6 = ct.dump(IpFamily::V6, Protocol::Udp).unwrap();
            let all: Vec<Entry> = v4.entries.iter().chain(&v6.entries).copied().collect();
            let deleted = ct.delete(&all).unwrap();
            let after = ct.dump(IpFamily::V4, Protocol::Udp).unwrap().entries.len()
                + ct.dump(IpFamily::V6, Protocol::Udp).unwrap().entries.len();
            (created, v4.entries.len(), v6.entries.len(), deleted, after)
        })
        .unwrap();
    assert_eq!(
        (created, v4, v6, deleted, after),
        (3700, 3000, 700, 3700, 0)
    );
    assert!(listed(&ns).is_empty());
}

/// A second create of an existing tuple is refused by the kernel and reported
/// with its error, after the other requests of the batch succeeded.
#[test]
fn kernel_errors_are_reported_with_counts() {
    let ns = Netns::new("cte").unwrap();
    let e = udp("10.0.0.1", 43000, "10.96.0.10", 53, ("10.244.1.5", 53));
    let other = udp("10.0.0.1", 43001, "10.96.0.10", 53, ("10.244.1.5", 53));
    let err = ns
        .enter(move || {
            let mut ct = Conntrack::new().unwrap();
            ct.create(&[e], 600).unwrap();
            ct.create(&[e, other], 600).unwrap_err()
        })
        .unwrap();
    let text = err.to_string();
    assert_eq!(err.raw_os_error(), Some(17), "{text}");
    assert!(
        text.contains("create") && text.contains("1 succeeded"),
        "{text}"
    );
    assert_eq!(listed(&ns).len(), 2);
}
