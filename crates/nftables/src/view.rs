//! Reading back what our table does for each Service frontend: the programmed side
//! of `kube-proxy-rs show` (see [`kpr_model::view`]).
//!
//! From `nft --json list table <family> kube-proxy`: the `service-ips` and
//! `service-nodeports` maps give the frontends and their first chain; following
//! `external-*` → `service-*`/`local-*` (the `numgen` verdict map) → `endpoint-*`
//! (the `dnat`) gives the backends, each an equal share of the map. The
//! `no-endpoint-services` and `no-endpoint-nodeports` maps give the frontends that
//! reject or drop. Addresses in the `cluster-ips` set are ClusterIPs; the others are
//! external IPs or load-balancer IPs, which this layout does not tell apart.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use kpr_model::view::{Backend, Frontend, FrontendKey, FrontendKind, Verdict, set_not_forwarding};
use kpr_model::{IpFamily, Protocol};
use serde_json::Value;

use crate::listing::{ListingError, element_parts};
use crate::names::TABLE;
use crate::objects::Family;

/// Service chains are at most this deep (external → service → endpoint).
const MAX_DEPTH: usize = 4;

/// One element: key text, verdict text (maps), comment.
type Element = (String, Option<String>, Option<String>);

/// Our table as listed: rules (as their expression lists), map/set elements and
/// set timeouts.
#[derive(Default)]
struct Table {
    rules: HashMap<String, Vec<Vec<Value>>>,
    /// Map or set name → (key text, verdict text, comment).
    elements: HashMap<String, Vec<Element>>,
    timeouts: HashMap<String, u32>,
}

/// The frontends `json` (a `nft --json list table` of `family`'s kube-proxy table)
/// programs, sorted by key.
pub fn frontends(family: IpFamily, json: &str) -> Result<Vec<Frontend>, ListingError> {
    let table = parse(Family(family), json)?;
    let cluster_ips: Vec<&str> = table
        .elements
        .get("cluster-ips")
        .into_iter()
        .flatten()
        .map(|(k, _, _)| k.as_str())
        .collect();
    let kind_of = |address: Option<&str>| match address {
        None => FrontendKind::NodePort,
        Some(a) if cluster_ips.contains(&a) => FrontendKind::ClusterIp,
        Some(_) => FrontendKind::External,
    };
    let mut out: BTreeMap<FrontendKey, Frontend> = BTreeMap::new();
    for (map, addressed) in [("service-ips", true), ("service-nodeports", false)] {
        for (key_text, verdict, _) in table.elements.get(map).into_iter().flatten() {
            let Some((key, address)) = parse_key(family, key_text, addressed) else {
                continue;
            };
            let Some(target) = verdict.as_deref().and_then(target_of) else {
                continue;
            };
            let mut f = Frontend {
                key,
                kind: kind_of(address),
                service: service_of_chain(target),
                verdict: Verdict::Forward,
                affinity_seconds: None,
                backends: Vec::new(),
            };
            table.resolve(target, 1.0, 0, &mut f);
            f.sort_backends();
            out.insert(key, f);
        }
    }
    for (map, addressed) in [
        ("no-endpoint-services", true),
        ("no-endpoint-nodeports", false),
    ] {
        for (key_text, verdict, comment) in table.elements.get(map).into_iter().flatten() {
            let Some((key, address)) = parse_key(family, key_text, addressed) else {
                continue;
            };
            let verdict = match verdict.as_deref() {
                Some("drop") => Verdict::Drop,
                Some(v) if v.starts_with("goto reject") || v == "reject" => Verdict::Reject,
                _ => continue,
            };
            let service = comment.as_deref().unwrap_or_default();
            set_not_forwarding(&mut out, key, kind_of(address), service, verdict);
        }
    }
    Ok(out.into_values().collect())
}

fn parse(family: Family, json: &str) -> Result<Table, ListingError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| ListingError(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| ListingError("no \"nftables\" array".into()))?;
    let mut table = Table::default();
    for item in items {
        let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let ours = obj.get("family").and_then(Value::as_str) == Some(family.word())
            && obj.get("table").and_then(Value::as_str) == Some(TABLE);
        if !ours {
            continue;
        }
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        match kind.as_str() {
            "rule" => {
                let chain = obj.get("chain").and_then(Value::as_str).unwrap_or_default();
                let expr = obj
                    .get("expr")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                table.rules.entry(chain.to_string()).or_default().push(expr);
            }
            "set" | "map" => {
                if let Some(t) = obj.get("timeout").and_then(Value::as_u64) {
                    table
                        .timeouts
                        .insert(name.to_string(), u32::try_from(t).unwrap_or(u32::MAX));
                }
                let mut elements = Vec::new();
                for e in obj
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let parts = element_parts(e)
                        .ok_or_else(|| ListingError(format!("element {e} of {name}")))?;
                    elements.push(parts);
                }
                table.elements.insert(name.to_string(), elements);
            }
            _ => {}
        }
    }
    Ok(table)
}

impl Table {
    fn resolve(&self, chain: &str, weight: f64, depth: usize, f: &mut Frontend) {
        if depth > MAX_DEPTH {
            return;
        }
        let rules = self.rules.get(chain).map(Vec::as_slice).unwrap_or_default();
        if chain.starts_with("endpoint-") {
            if let Some((address, port)) = rules.iter().flatten().find_map(dnat) {
                f.backends.push(Backend::new(address, port, weight));
            }
        } else if chain.starts_with("service-") || chain.starts_with("local-") {
            for rule in rules {
                if let Some(set) = affinity_set(rule) {
                    f.affinity_seconds = self.timeouts.get(set).copied().or(f.affinity_seconds);
                    continue;
                }
                if let Some(targets) = rule.iter().find_map(numgen_targets) {
                    let share = weight / targets.len().max(1) as f64;
                    for t in targets {
                        self.resolve(&t, share, depth + 1, f);
                    }
                }
            }
        } else {
            // external-* (and firewall-*): what is left after the conditional
            // short-circuits is the last unconditional goto or jump.
            let last = rules
                .iter()
                .filter(|r| !r.iter().any(|e| e.get("match").is_some()))
                .filter_map(|r| r.iter().find_map(jump_target))
                .rfind(|t| *t != "mark-for-masquerade");
            if let Some(next) = last {
                self.resolve(next, weight, depth + 1, f);
            }
        }
    }
}

/// `goto X` / `jump X` → `X`.
fn target_of(verdict: &str) -> Option<&str> {
    verdict
        .strip_prefix("goto ")
        .or_else(|| verdict.strip_prefix("jump "))
}

fn jump_target(expr: &Value) -> Option<&str> {
    ["goto", "jump"]
        .iter()
        .find_map(|w| expr.get(w)?.get("target")?.as_str())
}

/// `ip saddr @affinity-…` → the set's name.
fn affinity_set(rule: &[Value]) -> Option<&str> {
    rule.iter().find_map(|e| {
        let name = e.get("match")?.get("right")?.as_str()?.strip_prefix('@')?;
        name.starts_with("affinity-").then_some(name)
    })
}

/// The targets of a `numgen random mod N vmap { i : goto X, ... }`, in index order.
fn numgen_targets(expr: &Value) -> Option<Vec<String>> {
    let vmap = expr.get("vmap")?;
    vmap.get("key")?.get("numgen")?;
    let mut entries: Vec<(u64, String)> = vmap
        .get("data")?
        .get("set")?
        .as_array()?
        .iter()
        .filter_map(|pair| {
            let pair = pair.as_array()?;
            let index = pair.first()?.as_u64()?;
            let target = jump_target(pair.get(1)?)?;
            Some((index, target.to_string()))
        })
        .collect();
    entries.sort();
    Some(entries.into_iter().map(|(_, t)| t).collect())
}

fn dnat(expr: &Value) -> Option<(IpAddr, u16)> {
    let d = expr.get("dnat")?;
    let addr = d.get("addr")?.as_str()?.parse().ok()?;
    let port = u16::try_from(d.get("port")?.as_u64()?).ok()?;
    Some((addr, port))
}

/// `"172.30.0.41 . tcp . 80"` (addressed) or `"tcp . 3001"` → key and address text.
fn parse_key(family: IpFamily, text: &str, addressed: bool) -> Option<(FrontendKey, Option<&str>)> {
    let parts: Vec<&str> = text.split(" . ").collect();
    let (address, proto, port) = match (addressed, parts.as_slice()) {
        (true, [a, p, n]) => (Some(*a), *p, *n),
        (false, [p, n]) => (None, *p, *n),
        _ => return None,
    };
    let key = FrontendKey {
        family,
        protocol: Protocol::from_kubernetes(&proto.to_ascii_uppercase())?,
        address: match address {
            Some(a) => Some(a.parse::<IpAddr>().ok()?),
            None => None,
        },
        port: port.parse().ok()?,
    };
    Some((key, address))
}

/// `service-ULMVA6XW-ns1/svc1/tcp/p80` → `ns1/svc1:p80` (upstream's chain names
/// carry the Service port's name after the hash).
fn service_of_chain(chain: &str) -> String {
    let base = chain.splitn(3, '-').nth(2).unwrap_or(chain);
    let parts: Vec<&str> = base.split('/').collect();
    match parts.as_slice() {
        [ns, name, _proto, ""] => format!("{ns}/{name}"),
        [ns, name, _proto, port] => format!("{ns}/{name}:{port}"),
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_give_service_ports() {
        assert_eq!(
            service_of_chain("service-ULMVA6XW-ns1/svc1/tcp/p80"),
            "ns1/svc1:p80"
        );
        assert_eq!(
            service_of_chain("external-42NFTM6N-my-ns/my-svc/udp/"),
            "my-ns/my-svc"
        );
    }

    #[test]
    fn keys_parse_with_and_without_address() {
        let (k, a) = parse_key(IpFamily::V6, "fd00::1 . udp . 53", true).unwrap();
        assert_eq!(a, Some("fd00::1"));
        assert_eq!((k.protocol, k.port), (Protocol::Udp, 53));
        let (k, a) = parse_key(IpFamily::V4, "sctp . 30001", false).unwrap();
        assert_eq!((a, k.address, k.protocol), (None, None, Protocol::Sctp));
        assert!(parse_key(IpFamily::V4, "tcp . 80", true).is_none());
        assert!(parse_key(IpFamily::V4, "x . tcp . 80", true).is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(frontends(IpFamily::V4, "not json").is_err());
        assert!(frontends(IpFamily::V4, "{}").is_err());
        let odd = r#"{"nftables": [{"map": {"family": "ip", "table": "kube-proxy", "name": "service-ips",
            "elem": [[{"concat": ["1.2.3.4", "tcp", 80]}, {"goto": {"target": "service-X-a/b/tcp/p"}}]]}},
            {"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-X-a/b/tcp/p",
            "expr": [{"vmap": {"key": {"numgen": {}}, "data": {"set": [[0, 7], "x"]}}}]}}]}"#;
        let view = frontends(IpFamily::V4, odd).unwrap();
        assert_eq!(view.len(), 1);
        assert!(view[0].backends.is_empty());
    }
}
