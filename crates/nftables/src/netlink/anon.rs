//! Anonymous sets of kube-proxy's rules as nft sends them: the interval set of
//! `{ a/8, b/16 }` (ranges merged, a leading end at zero) and the verdict map of
//! `numgen ... vmap`. A rule is encoded after its set, referring to it by name and
//! batch id.

use std::net::IpAddr;

use ipnet::IpNet;
use kpr_model::IpFamily;

use super::Unsupported;
use crate::objects::{Family, Rule};

/// How a rule refers to the anonymous set sent before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnonRef {
    /// Its id in the batch.
    pub id: u32,
    /// Its name.
    pub name: String,
}

/// An anonymous set a rule needs, sent just before the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnonSet {
    /// Address intervals (`{ a/8, b/16 }`): elements as nft sends them, each key
    /// with its interval-end flag.
    Intervals {
        /// The address family.
        family: IpFamily,
        /// Source address (else destination) is the key: nft records which.
        source: bool,
        /// (key, is an interval end), ascending.
        elements: Vec<(Vec<u8>, bool)>,
    },
    /// `numgen ... vmap { 0 : goto a, 1 : goto b }`.
    Verdicts(Vec<String>),
}

pub(super) fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(super) fn family_len(f: IpFamily) -> usize {
    match f {
        IpFamily::V4 => 4,
        IpFamily::V6 => 16,
    }
}

fn to_bytes(v: u128, len: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - len..].to_vec()
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// Parses the source ranges of a firewall rule (addresses or CIDRs).
pub(super) fn nets(sources: &[String]) -> Result<Vec<IpNet>, Unsupported> {
    sources
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Unsupported(format!("source range {s:?}")))
        })
        .collect()
}

/// The interval elements nft sends for `nets`: overlapping and adjacent ranges merged,
/// ascending, a leading end at zero when the first range starts above it. A range
/// reaching the top address is sent by nft with extra flags we do not reproduce.
fn intervals(family: IpFamily, nets: &[IpNet]) -> Result<Vec<(Vec<u8>, bool)>, Unsupported> {
    let len = family_len(family);
    let max: u128 = if len == 4 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let mut ranges: Vec<(u128, u128)> = nets
        .iter()
        .map(|n| (to_u128(&n.network()), to_u128(&n.broadcast())))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == max || s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    if merged.iter().any(|r| r.1 == max) {
        return Err(Unsupported("an interval reaching the top address".into()));
    }
    let mut out = Vec::with_capacity(merged.len() * 2 + 1);
    if merged.first().is_some_and(|r| r.0 != 0) {
        out.push((to_bytes(0, len), true));
    }
    for (s, e) in merged {
        out.push((to_bytes(s, len), false));
        out.push((to_bytes(e + 1, len), true));
    }
    Ok(out)
}

/// The anonymous set `rule` needs, if any.
pub fn anonymous_set(fam: Family, rule: &Rule) -> Result<Option<AnonSet>, Unsupported> {
    let set = |source: bool, nets: &[IpNet]| -> Result<Option<AnonSet>, Unsupported> {
        if nets.len() < 2 {
            return Ok(None);
        }
        if nets.iter().any(|n| family_of(n) != fam.0) {
            return Err(Unsupported("a range of the other family".into()));
        }
        Ok(Some(AnonSet::Intervals {
            family: fam.0,
            source,
            elements: intervals(fam.0, nets)?,
        }))
    };
    match rule {
        Rule::DropUnallocated(cidrs) => set(false, cidrs),
        Rule::FirewallDrop(sources) => set(true, &nets(sources)?),
        Rule::NumgenVmap(chains) => Ok(Some(AnonSet::Verdicts(chains.clone()))),
        _ => Ok(None),
    }
}

fn family_of(n: &IpNet) -> IpFamily {
    match n {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_pad_like_nft() {
        let nets: Vec<IpNet> = ["10.96.0.0/12", "172.30.0.0/16", "10.100.0.0/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got = intervals(IpFamily::V4, &nets).unwrap();
        let want: Vec<(Vec<u8>, bool)> = vec![
            (vec![0, 0, 0, 0], true),
            (vec![10, 96, 0, 0], false),
            (vec![10, 112, 0, 0], true),
            (vec![172, 30, 0, 0], false),
            (vec![172, 31, 0, 0], true),
        ];
        assert_eq!(got, want);
        // Adjacent ranges become one; a range at zero needs no leading end.
        let nets: Vec<IpNet> = ["0.0.0.0/8", "1.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            intervals(IpFamily::V4, &nets).unwrap(),
            vec![(vec![0, 0, 0, 0], false), (vec![2, 0, 0, 0], true)]
        );
        let top: Vec<IpNet> = vec!["255.0.0.0/8".parse().unwrap()];
        assert!(intervals(IpFamily::V4, &top).is_err());
    }
}
