//! Pure rendering of model state into nftables objects, laid out exactly as upstream
//! kube-proxy's nftables mode (v1.35, `pkg/proxy/nftables/proxier.go`): the fixed
//! part ([`base`]) and one [`Fragment`] per Service port ([`service_port`]), so that a
//! change to one Service re-renders only that Service.

use std::net::IpAddr;

use ipnet::IpNet;
use kpr_model::{
    IpFamily, LocalDetector, NodePortAddresses, Route, ServicePortState, SessionAffinity,
};

use crate::names::*;
use crate::objects::{Chain, Element, Hook, Key, KeyType, Rule, Set, Verdict};

/// Settings for rendering one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The family.
    pub family: IpFamily,
    /// Masquerade mark as written (e.g. `0x00004000`).
    pub masquerade_mark: String,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// Local traffic detector of this family.
    pub local_detector: LocalDetector,
    /// Addresses taking NodePorts (loopback never does in nftables mode).
    pub node_port_addresses: NodePortAddresses,
    /// ServiceCIDRs of this family (traffic to unallocated ClusterIPs is dropped).
    pub service_cidrs: Vec<IpNet>,
    /// This node's primary IP of the family (source ranges containing it admit the
    /// load-balancer VIPs as sources too).
    pub node_ip: Option<IpAddr>,
}

impl RenderConfig {
    /// Defaults for a family: mark bit 14, all addresses take NodePorts.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            masquerade_mark: masquerade_mark(14),
            masquerade_all: false,
            local_detector: LocalDetector::None,
            node_port_addresses: NodePortAddresses::All,
            service_cidrs: Vec::new(),
            node_ip: None,
        }
    }
}

/// Objects rendered for one Service port, or the fixed part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Chains with their rules.
    pub chains: Vec<Chain>,
    /// Sets and maps.
    pub sets: Vec<Set>,
    /// Elements.
    pub elements: Vec<Element>,
}

fn base_chain(
    name: &str,
    kind: &'static str,
    hook: &'static str,
    priority: i32,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.into(),
        hook: Some(Hook {
            kind,
            hook,
            priority,
        }),
        comment: None,
        rules,
    }
}

fn map(name: &str, key: KeyType, comment: &'static str) -> Set {
    Set {
        name: name.into(),
        key,
        verdict_map: true,
        timeout: None,
        comment: Some(comment),
    }
}

/// The fixed part: base chains and their jumps, the helper chains, the sets and maps,
/// and the `nodeport-ips` elements.
pub fn base(config: &RenderConfig) -> Fragment {
    let mark = &config.masquerade_mark;
    let via_set = matches!(config.node_port_addresses, NodePortAddresses::Ips(_));
    let mut f = Fragment::default();
    f.chains.extend([
        base_chain(
            "filter-prerouting-pre-dnat",
            "filter",
            "prerouting",
            -110,
            vec![Rule::CtNewJump(FIREWALL_CHECK)],
        ),
        base_chain(
            "filter-output-pre-dnat",
            "filter",
            "output",
            -110,
            vec![Rule::CtNewJump(FIREWALL_CHECK)],
        ),
        base_chain(
            "filter-input",
            "filter",
            "input",
            0,
            vec![
                Rule::CtNewJump(NODEPORT_ENDPOINTS_CHECK),
                Rule::CtNewJump(SERVICE_ENDPOINTS_CHECK),
            ],
        ),
        base_chain(
            "filter-forward",
            "filter",
            "forward",
            0,
            vec![
                Rule::CtNewJump(SERVICE_ENDPOINTS_CHECK),
                Rule::CtNewJump(CLUSTER_IPS_CHECK),
            ],
        ),
        base_chain(
            "filter-output",
            "filter",
            "output",
            0,
            vec![
                Rule::CtNewJump(SERVICE_ENDPOINTS_CHECK),
                Rule::CtNewJump(CLUSTER_IPS_CHECK),
            ],
        ),
        base_chain(
            "nat-prerouting",
            "nat",
            "prerouting",
            -100,
            vec![Rule::Jump(SERVICES.into())],
        ),
        base_chain(
            "nat-output",
            "nat",
            "output",
            -100,
            vec![Rule::Jump(SERVICES.into())],
        ),
        base_chain(
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            vec![Rule::Jump(MASQUERADING.into())],
        ),
    ]);
    let mut cluster_check = vec![Rule::RejectClusterIpPorts];
    if !config.service_cidrs.is_empty() {
        cluster_check.push(Rule::DropUnallocated(config.service_cidrs.clone()));
    }
    f.chains.push(Chain::new(CLUSTER_IPS_CHECK, cluster_check));
    f.chains.push(Chain::new(
        FIREWALL_CHECK,
        vec![Rule::DestVmap(FIREWALL_IPS)],
    ));
    f.chains.push(Chain::new(
        MARK_FOR_MASQUERADE,
        vec![Rule::MarkOr(mark.clone())],
    ));
    f.chains.push(Chain::new(
        MASQUERADING,
        vec![
            Rule::ReturnUnmarked(mark.clone()),
            Rule::MarkXor(mark.clone()),
            Rule::MasqueradeFullyRandom,
        ],
    ));
    f.chains.push(Chain::new(
        NODEPORT_ENDPOINTS_CHECK,
        vec![Rule::NodePortVmap {
            map: NO_ENDPOINT_NODEPORTS,
            via_set,
            fib_local: false,
        }],
    ));
    f.chains.push(Chain {
        name: REJECT_CHAIN.into(),
        hook: None,
        comment: Some("helper for @no-endpoint-services / @no-endpoint-nodeports"),
        rules: vec![Rule::Reject],
    });
    f.chains.push(Chain::new(
        SERVICES,
        vec![
            Rule::DestVmap(SERVICE_IPS),
            Rule::NodePortVmap {
                map: SERVICE_NODEPORTS,
                via_set,
                fib_local: !via_set,
            },
        ],
    ));
    f.chains.push(Chain::new(
        SERVICE_ENDPOINTS_CHECK,
        vec![Rule::DestVmap(NO_ENDPOINT_SERVICES)],
    ));

    f.sets.push(Set {
        name: CLUSTER_IPS.into(),
        key: KeyType::Addr,
        verdict_map: false,
        timeout: None,
        comment: Some("Active ClusterIPs"),
    });
    if let NodePortAddresses::Ips(ips) = &config.node_port_addresses {
        f.sets.push(Set {
            name: NODEPORT_IPS.into(),
            key: KeyType::Addr,
            verdict_map: false,
            timeout: None,
            comment: Some("IPs that accept NodePort traffic"),
        });
        // Localhost NodePorts are not supported in nftables mode.
        for ip in ips
            .iter()
            .filter(|ip| !ip.is_loopback() && IpFamily::of(ip) == config.family)
        {
            f.elements.push(Element {
                set: NODEPORT_IPS,
                key: Key::Addr(*ip),
                value: None,
                comment: None,
            });
        }
    }
    f.sets.push(map(
        FIREWALL_IPS,
        KeyType::AddrProtoPort,
        "destinations that are subject to LoadBalancerSourceRanges",
    ));
    f.sets.push(map(
        NO_ENDPOINT_NODEPORTS,
        KeyType::ProtoPort,
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ));
    f.sets.push(map(
        NO_ENDPOINT_SERVICES,
        KeyType::AddrProtoPort,
        "vmap to drop or reject packets to services with no endpoints",
    ));
    f.sets.push(map(
        SERVICE_IPS,
        KeyType::AddrProtoPort,
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ));
    f.sets.push(map(
        SERVICE_NODEPORTS,
        KeyType::ProtoPort,
        "NodePort traffic",
    ));
    f
}

fn filter_verdict(route: Route) -> Verdict {
    match route {
        Route::Reject => Verdict::Goto(REJECT_CHAIN.into()),
        _ => Verdict::Drop,
    }
}

/// The chains, affinity sets and elements of one Service port.
pub fn service_port(port: &ServicePortState, config: &RenderConfig) -> Fragment {
    let info = &port.info;
    let traffic = port.traffic();
    let spn = &info.name;
    let proto = spn.protocol;
    let p = proto.as_lower();
    let ns = &spn.service.namespace;
    let svc = &spn.service.name;
    let base = service_base(ns, svc, p, &spn.port);
    let cluster_chain = format!("{SERVICE_PREFIX}{base}");
    let local_chain = format!("{LOCAL_PREFIX}{base}");
    let external_chain = format!("{EXTERNAL_PREFIX}{base}");
    let firewall_chain = format!("{FIREWALL_PREFIX}{base}");
    let policy_chain = |r: Route| {
        if r == Route::Local {
            local_chain.clone()
        } else {
            cluster_chain.clone()
        }
    };
    let comment = Some(spn.to_string());
    let affinity = match info.session_affinity {
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        SessionAffinity::None => None,
    };
    // Unlike iptables mode, upstream's nftables mode keeps the firewall for
    // load-balancer IPs even when the Service has no endpoints.
    let uses_firewall =
        !info.load_balancer_vips.is_empty() && !info.load_balancer_source_ranges.is_empty();

    let ep_names = |ep: &kpr_model::Endpoint| {
        let b = endpoint_base(ns, svc, p, &spn.port, &ep.ip, ep.port);
        (
            format!("{ENDPOINT_PREFIX}{b}"),
            format!("{AFFINITY_PREFIX}{b}"),
        )
    };

    let mut f = Fragment::default();
    let el =
        |set: &'static str, key: Key, value: Option<Verdict>, comment: Option<String>| Element {
            set,
            key,
            value,
            comment,
        };

    // Elements.
    f.elements
        .push(el(CLUSTER_IPS, Key::Addr(info.cluster_ip), None, None));
    let cip_key = Key::AddrProtoPort(info.cluster_ip, proto, info.port);
    if traffic.internal.is_delivered() {
        f.elements.push(el(
            SERVICE_IPS,
            cip_key,
            Some(Verdict::Goto(policy_chain(traffic.internal))),
            None,
        ));
    } else {
        f.elements.push(el(
            NO_ENDPOINT_SERVICES,
            cip_key,
            Some(filter_verdict(traffic.internal)),
            comment.clone(),
        ));
    }
    let external_blocked = !traffic.external.is_delivered();
    for ip in &info.external_ips {
        let key = Key::AddrProtoPort(*ip, proto, info.port);
        if traffic.has_endpoints {
            f.elements.push(el(
                SERVICE_IPS,
                key.clone(),
                Some(Verdict::Goto(external_chain.clone())),
                None,
            ));
        }
        if external_blocked {
            f.elements.push(el(
                NO_ENDPOINT_SERVICES,
                key,
                Some(filter_verdict(traffic.external)),
                comment.clone(),
            ));
        }
    }
    for ip in &info.load_balancer_vips {
        let key = Key::AddrProtoPort(*ip, proto, info.port);
        if traffic.has_endpoints {
            f.elements.push(el(
                SERVICE_IPS,
                key.clone(),
                Some(Verdict::Goto(external_chain.clone())),
                None,
            ));
        }
        if uses_firewall {
            f.elements.push(el(
                FIREWALL_IPS,
                key.clone(),
                Some(Verdict::Goto(firewall_chain.clone())),
                None,
            ));
        }
        if external_blocked {
            f.elements.push(el(
                NO_ENDPOINT_SERVICES,
                key,
                Some(filter_verdict(traffic.external)),
                comment.clone(),
            ));
        }
    }
    if let Some(np) = info.node_port {
        let key = Key::ProtoPort(proto, np);
        if traffic.has_endpoints {
            f.elements.push(el(
                SERVICE_NODEPORTS,
                key.clone(),
                Some(Verdict::Goto(external_chain.clone())),
                None,
            ));
        }
        if external_blocked {
            f.elements.push(el(
                NO_ENDPOINT_NODEPORTS,
                key,
                Some(filter_verdict(traffic.external)),
                comment.clone(),
            ));
        }
    }

    // The ClusterIP masquerade rule goes first into the internal policy chain.
    let masq_rule = traffic.internal.is_delivered().then(|| {
        if config.masquerade_all {
            Some(Rule::MasqueradeClusterIp {
                ip: info.cluster_ip,
                not_local: None,
            })
        } else if config.local_detector.is_implemented() {
            Some(Rule::MasqueradeClusterIp {
                ip: info.cluster_ip,
                not_local: Some(config.local_detector.clone()),
            })
        } else {
            None
        }
    });
    let masq_rule = masq_rule.flatten();
    let internal_is_local = traffic.internal == Route::Local;

    if traffic.uses_external_chain {
        let mut rules = Vec::new();
        if !info.external_policy_local {
            rules.push(Rule::Jump(MARK_FOR_MASQUERADE.into()));
        } else {
            if config.local_detector.is_implemented() {
                rules.push(Rule::ShortCircuitPods(
                    config.local_detector.clone(),
                    cluster_chain.clone(),
                ));
            }
            rules.push(Rule::MasqueradeLocal);
            rules.push(Rule::ShortCircuitLocal(cluster_chain.clone()));
        }
        if traffic.external.is_delivered() {
            rules.push(Rule::Goto(policy_chain(traffic.external)));
        }
        f.chains.push(Chain::new(external_chain.clone(), rules));
    }

    if uses_firewall {
        let mut sources: Vec<String> = info
            .load_balancer_source_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        if config.node_ip.is_some_and(|n| {
            info.load_balancer_source_ranges
                .iter()
                .any(|c| c.contains(&n))
        }) {
            sources.extend(info.load_balancer_vips.iter().map(ToString::to_string));
        }
        f.chains.push(Chain::new(
            firewall_chain.clone(),
            vec![Rule::FirewallDrop(sources)],
        ));
    }

    let dispatch = |chain_eps: Vec<&kpr_model::Endpoint>, masq: Option<Rule>| -> Vec<Rule> {
        let mut rules: Vec<Rule> = masq.into_iter().collect();
        if affinity.is_some() {
            for ep in &chain_eps {
                let (chain, set) = ep_names(ep);
                rules.push(Rule::AffinityGoto { set, chain });
            }
        }
        rules.push(Rule::NumgenVmap(
            chain_eps.iter().map(|ep| ep_names(ep).0).collect(),
        ));
        rules
    };
    if traffic.uses_cluster_chain {
        let masq = if internal_is_local {
            None
        } else {
            masq_rule.clone()
        };
        f.chains.push(Chain::new(
            cluster_chain.clone(),
            dispatch(port.cluster_endpoints().collect(), masq),
        ));
    }
    if traffic.uses_local_chain {
        let masq = if internal_is_local {
            masq_rule.clone()
        } else {
            None
        };
        f.chains.push(Chain::new(
            local_chain.clone(),
            dispatch(port.local_endpoints().collect(), masq),
        ));
    }

    for ep in port.reachable_endpoints() {
        let (chain, set) = ep_names(ep);
        let mut rules = vec![Rule::MasqueradeHairpin(ep.ip)];
        if let Some(timeout) = affinity {
            f.sets.push(Set {
                name: set.clone(),
                key: KeyType::Addr,
                verdict_map: false,
                timeout: Some(timeout),
                comment: None,
            });
            rules.push(Rule::AffinityUpdate(set));
        }
        rules.push(Rule::Dnat(proto, ep.ip, ep.port));
        f.chains.push(Chain::new(chain, rules));
    }
    f
}
