//! ServiceCIDRs: the ranges ClusterIPs are allocated from. nftables mode drops
//! traffic to addresses inside them that no Service uses (upstream
//! `OnServiceCIDRsChanged`), instead of letting it leave the node.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use crate::ip::parse_cidr_sloppy;
use crate::problem::{ObjectKind, Problem};

/// The name and ranges of a ServiceCIDR; unparsable ranges are reported and skipped.
pub fn convert_service_cidr(
    obj: &ServiceCIDR,
    problems: &mut Vec<Problem>,
) -> (String, Vec<IpNet>) {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let mut cidrs = Vec::new();
    let listed = obj.spec.iter().flat_map(|s| s.cidrs.iter().flatten());
    for (i, text) in listed.enumerate() {
        match parse_cidr_sloppy(text) {
            Some(net) => cidrs.push(net.trunc()),
            None => problems.push(Problem::new(
                ObjectKind::ServiceCidr,
                name.clone(),
                format!("spec.cidrs[{i}]"),
                format!("invalid CIDR {text:?}; skipped"),
            )),
        }
    }
    (name, cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_reports() {
        let obj: ServiceCIDR = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.0/12", "fd00:10:96::/112", "nonsense"]}
        }))
        .unwrap_or_default();
        let mut problems = Vec::new();
        let (name, cidrs) = convert_service_cidr(&obj, &mut problems);
        assert_eq!(name, "kubernetes");
        assert_eq!(cidrs.len(), 2);
        assert_eq!(
            problems[0].to_string(),
            "ServiceCIDR kubernetes: spec.cidrs[2]: invalid CIDR \"nonsense\"; skipped"
        );
    }
}
