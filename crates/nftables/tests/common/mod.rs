//! Shared helpers of the kernel-backed nftables tests: nft inside a test namespace,
//! loading upstream's expected texts, and a normalised view of a table that two
//! namespaces can be compared by.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use kpr_exec::{Output, ProcessRunner, Runner};
use kpr_model::{Change, IpFamily};
use kpr_netns_lab::Netns;
use kpr_nftables::netlink::NfTables;
use kpr_nftables::nft::Nft;
use kpr_nftables::objects::Family;
use serde_json::{Value, json};

/// Runs tools inside one namespace.
pub struct InNetns(pub String);

impl Runner for InNetns {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut full = vec!["netns", "exec", self.0.as_str(), program];
        full.extend_from_slice(args);
        ProcessRunner.run("ip", &full, stdin)
    }
}

/// nft for `family` inside `ns`.
pub fn nft_in(ns: &Netns, family: IpFamily) -> Nft {
    Nft::new(Family(family), Arc::new(InNetns(ns.name().to_string())))
}

/// nft for `family` inside `ns`, sending transactions over a netlink socket opened
/// there.
pub fn nft_netlink_in(ns: &Netns, family: IpFamily) -> Nft {
    let socket = ns.enter(NfTables::new).unwrap().unwrap();
    nft_in(ns, family).with_netlink(Arc::new(Mutex::new(socket)))
}

/// Runs `nft` in `ns` with `stdin`, panicking with nft's message on failure.
pub fn nft(ns: &Netns, args: &[&str], stdin: Option<&str>) -> String {
    let out = InNetns(ns.name().to_string())
        .run("nft", args, stdin.map(str::as_bytes))
        .unwrap();
    assert!(
        out.success(),
        "nft {args:?} failed: {}\ninput:\n{}",
        out.stderr,
        stdin.unwrap_or_default()
    );
    out.stdout
}

/// A test file from `tests/<path>` at the repository root.
pub fn data(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../tests/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Loads upstream's expected-ruleset text (sorted by object kind, so rules may come
/// before the sets they use) into `ns`, reordered so every reference resolves.
pub fn load(ns: &Netns, text: &str) {
    let rank = |l: &str| match l.split(' ').nth(1) {
        Some("table") => 0,
        Some("chain") => 1,
        Some("set") | Some("map") => 2,
        Some("rule") => 3,
        _ => 4,
    };
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    lines.sort_by_key(|l| rank(l));
    nft(ns, &["-f", "-"], Some(&(lines.join("\n") + "\n")));
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("handle");
            o.values_mut().for_each(strip_handles);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// The `family` table of `ns` as the kernel reports it, without handles, objects
/// sorted by kind and name (rules keep their order), set elements sorted: two
/// namespaces holding the same ruleset give the same text, however it was built.
pub fn normalized(ns: &Netns, family: IpFamily) -> String {
    let word = if family == IpFamily::V4 { "ip" } else { "ip6" };
    let text = nft(ns, &["--json", "list", "table", word, "kube-proxy"], None);
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let mut items: Vec<(String, String, String)> = Vec::new();
    for item in doc["nftables"].as_array_mut().unwrap() {
        let Some((kind, obj)) = item.as_object_mut().and_then(|o| o.iter_mut().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        strip_handles(obj);
        if let Some(Value::Array(elems)) = obj.get_mut("elem") {
            elems.sort_by_key(|e| e.to_string());
        }
        let name = obj
            .get("chain")
            .or_else(|| obj.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        items.push((kind.clone(), name, obj.to_string()));
    }
    items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    items.iter().map(|(k, _, o)| format!("{k} {o}\n")).collect()
}

/// What the kernel makes of upstream's expected text: loaded into a scratch namespace
/// and normalised.
pub fn expected_state(text: &str, family: IpFamily) -> String {
    let scratch = Netns::new("nft-expect").unwrap();
    load(&scratch, text);
    normalized(&scratch, family)
}

/// A ClusterIP Service with one TCP port.
pub fn service(ns: &str, name: &str, ip: &str, port_name: &str, port: u16) -> Change {
    Change::ServiceUpsert(Box::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
        }))
        .unwrap(),
    ))
}

/// The `<svc>-1` slice of a Service with one TCP port and ready endpoints.
pub fn slice(ns: &str, svc: &str, port_name: &str, port: u16, ips: &[&str]) -> Change {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    Change::SliceUpsert(Box::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
        }))
        .unwrap(),
    ))
}

/// Panics with the lines only one side has, if the normalised tables differ.
pub fn assert_same(what: &str, have: &str, want: &str) {
    if have == want {
        return;
    }
    let h: Vec<&str> = have.lines().collect();
    let w: Vec<&str> = want.lines().collect();
    let missing: Vec<&&str> = w.iter().filter(|l| !h.contains(l)).collect();
    let extra: Vec<&&str> = h.iter().filter(|l| !w.contains(l)).collect();
    panic!("{what}: kernel table differs\nmissing: {missing:#?}\nextra: {extra:#?}");
}

/// `text` (an `nft --debug=netlink list`) with the elements of each set in order (the
/// kernel lists hash sets in the order of their random hash seed, which differs
/// between two loads of one script) and anonymous set names without their numbers
/// (nft's are picked by the kernel, ours by the applier).
pub fn comparable(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("__") {
        let (head, tail) = rest.split_at(at);
        plain.push_str(head);
        match ["__set", "__map"].iter().find(|p| tail.starts_with(**p)) {
            Some(p) => {
                plain.push_str(p);
                plain.push('#');
                let after = &tail[p.len()..];
                let n = after
                    .find(|c: char| !c.is_ascii_hexdigit())
                    .unwrap_or(after.len());
                rest = &after[n..];
            }
            None => {
                plain.push_str("__");
                rest = &tail[2..];
            }
        }
    }
    plain.push_str(rest);
    elements_sorted(&plain)
}

fn elements_sorted(text: &str) -> String {
    let mut out = String::new();
    let mut block: Vec<String> = Vec::new();
    let flush = |block: &mut Vec<String>, out: &mut String| {
        block.sort();
        for e in block.drain(..) {
            out.push_str(&e);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.trim_start().starts_with("element ") {
            block.extend(
                line.split('\t')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| p.trim().to_string()),
            );
        } else {
            flush(&mut block, &mut out);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush(&mut block, &mut out);
    out
}
