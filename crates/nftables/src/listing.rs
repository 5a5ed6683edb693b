//! What the kernel holds in our table: chain names, set and map names, and elements
//! as the text `nft` uses for keys and verdicts (so they compare with what we render).
//! Filled over netlink ([`crate::netlink::NfTables::list`]) or, as a fallback, from
//! `nft --json list chains|sets|maps` (here).
//!
//! Hand-written over `serde_json::Value`: the `nftables` crate cannot parse a
//! kube-proxy-shaped listing (concatenated keys with comments), and we need only these
//! few fields.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::names::TABLE;
use crate::objects::Family;

/// One family's `kube-proxy` table as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The table exists.
    pub table: bool,
    /// Chain names.
    pub chains: BTreeSet<String>,
    /// Set names (not maps).
    pub sets: BTreeSet<String>,
    /// Map names.
    pub maps: BTreeSet<String>,
    /// Elements of each set and map: key text → [`element_state`] text.
    pub elements: BTreeMap<String, BTreeMap<String, String>>,
}

/// A listing that does not have the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("unexpected `nft --json list` output: {0}")]
pub struct ListingError(pub String);

impl Listing {
    /// Adds the objects of one `nft --json list ...` output that belong to `family`'s
    /// `kube-proxy` table.
    pub fn add_json(&mut self, family: Family, json: &str) -> Result<(), ListingError> {
        let doc: Value = serde_json::from_str(json).map_err(|e| ListingError(e.to_string()))?;
        let items = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| ListingError("no \"nftables\" array".into()))?;
        for item in items {
            let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let ours = obj.get("family").and_then(Value::as_str) == Some(family.word())
                && obj.get("table").and_then(Value::as_str) == Some(TABLE);
            if !ours {
                continue;
            }
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match kind.as_str() {
                "chain" => {
                    self.table = true;
                    self.chains.insert(name);
                }
                "set" | "map" => {
                    self.table = true;
                    let mut elements = BTreeMap::new();
                    for e in obj
                        .get("elem")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let (k, v) = element(e)
                            .ok_or_else(|| ListingError(format!("element {e} of {name}")))?;
                        elements.insert(k, v);
                    }
                    if kind == "map" {
                        self.maps.insert(name.clone());
                    } else {
                        self.sets.insert(name.clone());
                    }
                    self.elements.insert(name, elements);
                }
                "table" => self.table = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Key text, verdict text (maps) and comment of one element, as
/// [`Listing::add_json`] reads them.
pub(crate) fn element_parts(e: &Value) -> Option<(String, Option<String>, Option<String>)> {
    let (k, v) = match e {
        Value::Array(pair) if pair.len() == 2 => (&pair[0], Some(verdict(&pair[1])?)),
        other => (other, None),
    };
    let comment = k
        .get("elem")
        .and_then(|i| i.get("comment"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((key(k)?, v, comment))
}

/// `(key, state)` text of one element: `"1.2.3.4"`, `{"concat": [...]}`, or
/// `{"elem": {"val": ..., "comment": ...}}`, paired with a verdict for maps. The state
/// is [`element_state`] of the verdict and comment.
fn element(e: &Value) -> Option<(String, String)> {
    let (k, v, comment) = element_parts(e)?;
    Some((k, element_state(v.as_deref(), comment.as_deref())))
}

/// What identifies an element's content besides its key: the verdict (maps) and the
/// comment, e.g. `goto reject-chain # ns/svc:p80`.
pub fn element_state(verdict: Option<&str>, comment: Option<&str>) -> String {
    match comment {
        Some(c) => format!("{} # {c}", verdict.unwrap_or_default()),
        None => verdict.unwrap_or_default().to_string(),
    }
}

fn key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            if let Some(parts) = o.get("concat").and_then(Value::as_array) {
                let parts: Option<Vec<String>> = parts.iter().map(key).collect();
                Some(parts?.join(" . "))
            } else if let Some(inner) = o.get("elem") {
                key(inner.get("val")?)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn verdict(v: &Value) -> Option<String> {
    let (word, arg) = v.as_object()?.iter().next()?;
    match arg {
        Value::Null => Some(word.clone()),
        Value::Object(o) => Some(format!("{word} {}", o.get("target")?.as_str()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpr_model::IpFamily;

    #[test]
    fn parses_chains_sets_maps_and_elements() {
        let chains = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 1}},
            {"chain": {"family": "ip", "table": "other", "name": "x", "handle": 1}},
            {"chain": {"family": "ip6", "table": "kube-proxy", "name": "y", "handle": 1}},
            {"chain": {"family": "ip", "table": "kube-proxy", "name": "endpoint-A-ns/s/tcp/p__10.0.0.1/80", "handle": 2}}]}"#;
        let sets = r#"{"nftables": [
            {"set": {"family": "ip", "name": "cluster-ips", "table": "kube-proxy", "type": "ipv4_addr", "elem": ["172.30.0.41", "172.30.0.42"]}},
            {"set": {"family": "ip", "name": "affinity-X", "table": "kube-proxy", "type": "ipv4_addr", "flags": ["timeout"], "timeout": 10800}}]}"#;
        let maps = r#"{"nftables": [
            {"map": {"family": "ip", "name": "no-endpoint-services", "table": "kube-proxy", "map": "verdict",
             "elem": [[{"elem": {"val": {"concat": ["1.2.3.4", "tcp", 80]}, "comment": "ns2/svc2:p80"}}, {"drop": null}],
                      [{"concat": ["172.30.0.46", "tcp", 80]}, {"goto": {"target": "reject-chain"}}]]}},
            {"map": {"family": "ip", "name": "service-nodeports", "table": "kube-proxy", "map": "verdict",
             "elem": [[{"concat": ["tcp", 3001]}, {"goto": {"target": "external-X-ns/s/tcp/p"}}]]}}]}"#;
        let mut l = Listing::default();
        let fam = Family(IpFamily::V4);
        l.add_json(fam, chains).unwrap();
        l.add_json(fam, sets).unwrap();
        l.add_json(fam, maps).unwrap();
        assert!(l.table);
        assert_eq!(l.chains.len(), 2);
        assert!(l.sets.contains("affinity-X") && l.maps.contains("service-nodeports"));
        assert_eq!(l.elements["cluster-ips"]["172.30.0.42"], "");
        assert_eq!(
            l.elements["no-endpoint-services"]["1.2.3.4 . tcp . 80"],
            "drop # ns2/svc2:p80"
        );
        assert_eq!(
            l.elements["no-endpoint-services"]["172.30.0.46 . tcp . 80"],
            "goto reject-chain"
        );
        assert_eq!(
            l.elements["service-nodeports"]["tcp . 3001"],
            "goto external-X-ns/s/tcp/p"
        );
        assert!(l.elements["affinity-X"].is_empty());
    }

    #[test]
    fn rejects_garbage() {
        let mut l = Listing::default();
        assert!(l.add_json(Family(IpFamily::V4), "not json").is_err());
        assert!(l.add_json(Family(IpFamily::V4), r#"{"x": 1}"#).is_err());
        let bad = r#"{"nftables": [{"set": {"family": "ip", "table": "kube-proxy", "name": "s", "elem": [{"range": [1, 2]}]}}]}"#;
        assert!(l.add_json(Family(IpFamily::V4), bad).is_err());
    }
}
