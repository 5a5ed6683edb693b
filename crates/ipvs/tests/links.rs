//! Real-kernel tests of `kpr_ipvs::Links` (the `kube-ipvs0` dummy device and its
//! addresses). The host kernel has no dummy device, so `cargo test` re-runs
//! this binary in a QEMU VM with Debian's stock kernel (see
//! `kpr_netns_lab::vm`); each test runs in a fresh network namespace there and
//! touches nothing else. Run one with `cargo test -p kpr-ipvs --test links --
//! NAME`.

#![allow(clippy::unwrap_used)]
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use kpr_ipvs::{LinkError, Links};
use kpr_model::IpFamily;
use kpr_netns_lab::Netns;
use kpr_netns_lab::vm::{Suite, Test};

const DEVICE: &str = "kube-ipvs0";

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$(Test { name: stringify!($name), run: $name }),*]
    };
}

const TESTS: &[Test] = tests![
    dummy_is_created_once_and_left_down,
    other_kinds_are_not_dummies,
    addresses_add_list_delete,
    missing_device,
    addresses_except_skips_the_device,
    delete_dummy_once,
];

fn main() -> ExitCode {
    kpr_netns_lab::vm::run(&Suite {
        feature: "dummy",
        modules: &["dummy", "veth"],
        // Present when the module is loaded (or built in: it has parameters).
        probe: "/sys/module/dummy",
        test_timeout: Duration::from_secs(120),
        tests: TESTS,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|a| ip(a)).collect()
}

fn stdout(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.ip(args).unwrap().stdout).into_owned()
}

/// The flags between `<` and `>` in `ip link show` output.
fn link_flags(ns: &Netns, name: &str) -> Vec<String> {
    let out = stdout(ns, &["-d", "link", "show", name]);
    let flags = out
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags)
        .unwrap_or_else(|| panic!("no flags in {out}"));
    flags.split(',').map(str::to_string).collect()
}

/// `ensure_dummy` creates the device once (true, then false), of kind dummy
/// and DOWN, as upstream leaves it.
fn dummy_is_created_once_and_left_down(ns: &Netns) {
    let mut links = Links::new().unwrap();
    assert!(links.ensure_dummy(DEVICE).unwrap());
    assert!(!links.ensure_dummy(DEVICE).unwrap());
    let details = stdout(ns, &["-d", "link", "show", DEVICE]);
    assert!(details.contains("\n    dummy "), "{details}");
    assert!(details.contains("state DOWN"), "{details}");
    assert!(
        !link_flags(ns, DEVICE).contains(&"UP".to_string()),
        "{details}"
    );
    // A second handle sees the same device.
    assert!(!Links::new().unwrap().ensure_dummy(DEVICE).unwrap());
}

/// A veth (or `lo`) under the name is refused, never deleted or reused.
fn other_kinds_are_not_dummies(ns: &Netns) {
    ns.ip(&[
        "link", "add", DEVICE, "type", "veth", "peer", "name", "peer0",
    ])
    .unwrap();
    let mut links = Links::new().unwrap();
    for result in [links.ensure_dummy(DEVICE), links.delete_dummy(DEVICE)] {
        match result {
            Err(LinkError::NotDummy { name, kind }) => {
                assert_eq!((name.as_str(), kind.as_str()), (DEVICE, "veth"));
            }
            other => panic!("expected NotDummy, got {other:?}"),
        }
    }
    assert!(stdout(ns, &["-d", "link", "show", DEVICE]).contains("veth"));
    match links.delete_dummy("lo") {
        Err(LinkError::NotDummy { kind, .. }) => assert_eq!(kind, "none"),
        other => panic!("expected NotDummy, got {other:?}"),
    }
    let err = links.ensure_dummy("lo").unwrap_err();
    assert!(err.to_string().contains("lo"), "{err}");
}

/// IPv4 /32 and IPv6 /128 addresses are added (twice: idempotent) to the DOWN
/// device, listed per family, usable at once (not tentative, with their local
/// routes) and deleted (twice: idempotent).
fn addresses_add_list_delete(ns: &Netns) {
    // Duplicate address detection on, as on a node (the lab turns it off).
    ns.exec(
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.accept_dad=1",
            "net.ipv6.conf.default.accept_dad=1",
        ],
    )
    .unwrap();
    let mut links = Links::new().unwrap();
    links.ensure_dummy(DEVICE).unwrap();
    let v4 = ["10.96.0.1", "10.96.0.2"];
    let v6 = ["fd00:96::1", "fd00:96::2"];
    for _ in 0..2 {
        for a in v4.iter().chain(&v6) {
            links.add_address(DEVICE, ip(a)).unwrap();
        }
    }
    assert_eq!(links.addresses(DEVICE, IpFamily::V4).unwrap(), set(&v4));
    assert_eq!(links.addresses(DEVICE, IpFamily::V6).unwrap(), set(&v6));

    let shown = stdout(ns, &["-o", "addr", "show", "dev", DEVICE]);
    for expected in [
        "inet 10.96.0.1/32 scope global",
        "inet6 fd00:96::1/128 scope global",
    ] {
        assert!(shown.contains(expected), "{expected} in\n{shown}");
    }
    assert!(!shown.contains("tentative"), "{shown}");
    let local = stdout(ns, &["route", "show", "table", "local", "dev", DEVICE])
        + &stdout(
            ns,
            &["-6", "route", "show", "table", "local", "dev", DEVICE],
        );
    for a in v4.iter().chain(&v6) {
        assert!(local.contains(&format!("local {a} ")), "{a} in\n{local}");
    }
    assert!(!link_flags(ns, DEVICE).contains(&"UP".to_string()));

    for _ in 0..2 {
        for a in v4.iter().chain(&v6) {
            links.delete_address(DEVICE, ip(a)).unwrap();
        }
    }
    for family in IpFamily::ALL {
        assert!(links.addresses(DEVICE, family).unwrap().is_empty());
    }
    assert_eq!(stdout(ns, &["-o", "addr", "show", "dev", DEVICE]), "");
}

/// Without the device: no addresses, deleting is done, adding says which link
/// is missing, and an invalid name is refused without asking the kernel.
fn missing_device(_ns: &Netns) {
    let mut links = Links::new().unwrap();
    assert!(links.addresses(DEVICE, IpFamily::V4).unwrap().is_empty());
    links.delete_address(DEVICE, ip("10.96.0.1")).unwrap();
    assert!(!links.delete_dummy(DEVICE).unwrap());
    match links.add_address(DEVICE, ip("10.96.0.1")) {
        Err(LinkError::NoSuchLink { name }) => assert_eq!(name, DEVICE),
        other => panic!("expected NoSuchLink, got {other:?}"),
    }
    // An address the device does not have (EADDRNOTAVAIL) is done too.
    links.ensure_dummy(DEVICE).unwrap();
    links.delete_address(DEVICE, ip("fd00::9")).unwrap();
    assert!(matches!(
        links.ensure_dummy("much-too-long-name"),
        Err(LinkError::InvalidName { .. })
    ));
}

/// `addresses_except` lists every other link's addresses of the family (a
/// veth's, IPv4 link-local included) but not the device's, and leaves out
/// loopback and IPv6 link-local addresses.
fn addresses_except_skips_the_device(ns: &Netns) {
    let mut links = Links::new().unwrap();
    links.ensure_dummy(DEVICE).unwrap();
    links.add_address(DEVICE, ip("10.96.0.1")).unwrap();
    links.add_address(DEVICE, ip("fd00:96::1")).unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    for address in [
        "10.0.0.1/24",
        "169.254.1.1/16",
        "fd00:1::1/64",
        "fe80::1/64",
    ] {
        ns.ip(&["addr", "add", address, "dev", "v0"]).unwrap();
    }
    ns.ip(&["addr", "add", "10.0.1.1/24", "dev", "v1"]).unwrap();
    ns.ip(&["addr", "add", "127.0.0.2/8", "dev", "lo"]).unwrap();
    for link in ["v0", "v1"] {
        ns.ip(&["link", "set", link, "up"]).unwrap();
    }
    let shown = stdout(ns, &["-o", "addr", "show"]);
    assert!(
        shown.contains("inet6 ::1/128") && shown.contains("fe80::1/64"),
        "{shown}"
    );

    assert_eq!(
        links.addresses_except(DEVICE, IpFamily::V4).unwrap(),
        set(&["10.0.0.1", "169.254.1.1", "10.0.1.1"])
    );
    assert_eq!(
        links.addresses_except(DEVICE, IpFamily::V6).unwrap(),
        set(&["fd00:1::1"])
    );
    assert!(links.addresses("lo", IpFamily::V4).unwrap().is_empty());
    assert!(links.addresses("lo", IpFamily::V6).unwrap().is_empty());
    assert_eq!(
        links.addresses("v0", IpFamily::V6).unwrap(),
        set(&["fd00:1::1"])
    );
    // Without the device, every link counts.
    links.delete_dummy(DEVICE).unwrap();
    assert_eq!(
        links.addresses_except(DEVICE, IpFamily::V6).unwrap(),
        set(&["fd00:1::1"])
    );
}

/// `delete_dummy` removes the device with its addresses (true), then finds
/// nothing (false).
fn delete_dummy_once(ns: &Netns) {
    let mut links = Links::new().unwrap();
    links.ensure_dummy(DEVICE).unwrap();
    links.add_address(DEVICE, ip("10.96.0.1")).unwrap();
    assert!(links.delete_dummy(DEVICE).unwrap());
    assert!(!links.delete_dummy(DEVICE).unwrap());
    assert!(ns.ip(&["link", "show", DEVICE]).is_err());
    assert!(links.addresses(DEVICE, IpFamily::V4).unwrap().is_empty());
    // And it can be made again.
    assert!(links.ensure_dummy(DEVICE).unwrap());
}
