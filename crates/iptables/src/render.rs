//! Pure rendering of one family's [`FamilyState`] into `iptables-restore` input,
//! laid out exactly as upstream kube-proxy's iptables mode writes it
//! (`pkg/proxy/iptables/proxier.go`, `syncProxyRules` and
//! `writeServiceToEndpointRules`): the same chains, rule order, comments, marks and
//! probabilities, so that upstream's golden tests hold for our output.
//!
//! Service semantics (which endpoints, where each kind of traffic goes) come decided
//! from the model ([`Traffic`]); this module only spells them in iptables.

use std::collections::{BTreeSet, HashSet};

use kpr_model::{
    FamilyState, IpFamily, NamespacedName, Route, ServicePortState, SessionAffinity, Traffic,
};

use crate::buffer::LineBuffer;
use crate::config::{IptablesMatch, NodePortAddresses, RenderConfig};
use crate::names::*;

/// Full or partial sync.
#[derive(Clone, Copy, Debug)]
pub enum SyncMode<'a> {
    /// Rewrite every chain.
    Full,
    /// Rewrite the top-level chains and the chains of these Services only; leave the
    /// others' chains as they are in the kernel.
    Partial(&'a HashSet<NamespacedName>),
}

/// The result of rendering one family.
#[derive(Debug)]
pub struct Rendered {
    /// `iptables-restore` input (`*filter` ... `COMMIT`, `*nat` ... `COMMIT`).
    pub text: String,
    /// Every per-service and per-endpoint nat chain the ruleset uses (also those a
    /// partial sync did not rewrite): the next sync deletes chains not in this set.
    pub active_nat_chains: BTreeSet<String>,
    /// Counters for metrics and logs.
    pub stats: RenderStats,
}

/// Numbers about a rendered ruleset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Rules in the filter table.
    pub filter_rules: usize,
    /// nat rules written in this restore.
    pub nat_rules_written: usize,
    /// nat rules in the whole ruleset (written + left in place by a partial sync).
    pub nat_rules_total: usize,
    /// Stale chains deleted.
    pub deleted_chains: usize,
    /// Services whose ClusterIP traffic is dropped for lack of local endpoints.
    pub no_local_endpoints_internal: usize,
    /// Services whose external traffic is dropped for lack of local endpoints.
    pub no_local_endpoints_external: usize,
    /// Endpoint comments were omitted (more endpoints than the threshold).
    pub large_cluster_mode: bool,
    /// Service ports rendered.
    pub service_ports: usize,
    /// Endpoints of all services (the large-cluster-mode measure).
    pub endpoints: usize,
}

struct Buffers {
    filter_chains: LineBuffer,
    filter_rules: LineBuffer,
    nat_chains: LineBuffer,
    nat_rules: LineBuffer,
    skipped_chains: LineBuffer,
    skipped_rules: LineBuffer,
}

/// Renders `state` for `config.family`.
///
/// `existing_nat_chains` is what the kernel (or the previous sync) holds; service
/// chains found there but no longer used are deleted (`-X`). Pass `None` to skip the
/// clean-up (upstream skips it on most syncs of large clusters).
pub fn render(
    state: &FamilyState,
    config: &RenderConfig,
    mode: SyncMode<'_>,
    existing_nat_chains: Option<&BTreeSet<String>>,
) -> Rendered {
    let mut b = Buffers {
        filter_chains: LineBuffer::new(),
        filter_rules: LineBuffer::new(),
        nat_chains: LineBuffer::new(),
        nat_rules: LineBuffer::new(),
        skipped_chains: LineBuffer::discarding(),
        skipped_rules: LineBuffer::discarding(),
    };
    let mark = config.masquerade_mark.as_str();
    let mark_mask = format!("{mark}/{mark}");

    for chain in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        b.filter_chains.chain(chain);
    }
    for chain in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        b.nat_chains.chain(chain);
    }

    b.nat_rules.line(&[
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "mark",
        "!",
        "--mark",
        &mark_mask,
        "-j",
        "RETURN",
    ]);
    // Clear the mark so a packet traversing the stack again is not masqueraded twice.
    b.nat_rules
        .line(&["-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark]);
    b.nat_rules.line(&[
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes service traffic requiring SNAT\"",
        "-j",
        "MASQUERADE",
        if config.random_fully {
            "--random-fully"
        } else {
            ""
        },
    ]);
    b.nat_rules
        .line(&["-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark]);

    let is_v6 = config.family == IpFamily::V6;
    let localhost_node_ports = !is_v6 && config.localhost_node_ports;
    if localhost_node_ports {
        // route_localnet opens a hole (kubernetes issue 90259) this rule closes; kubelet
        // keeps an identical copy of it.
        b.filter_chains.chain(KUBE_FIREWALL);
        b.filter_rules.line(&[
            "-A",
            KUBE_FIREWALL,
            "-m",
            "comment",
            "--comment",
            "\"block incoming localnet connections\"",
            "-d",
            "127.0.0.0/8",
            "!",
            "-s",
            "127.0.0.0/8",
            "-m",
            "conntrack",
            "!",
            "--ctstate",
            "RELATED,ESTABLISHED,DNAT",
            "-j",
            "DROP",
        ]);
    }

    let total_endpoints = state.total_endpoints();
    let large_cluster_mode = total_endpoints > config.large_cluster_endpoints;
    let mut stats = RenderStats {
        large_cluster_mode,
        endpoints: total_endpoints,
        ..RenderStats::default()
    };
    let mut active = BTreeSet::new();
    let ctx = Ctx {
        config,
        large_cluster_mode,
        localhost_node_ports,
    };

    for (name, svc) in state.services.iter() {
        let rewrite = match mode {
            SyncMode::Full => true,
            SyncMode::Partial(changed) => changed.contains(name),
        };
        for port in &svc.ports {
            stats.service_ports += 1;
            render_port(&ctx, port, rewrite, &mut b, &mut active, &mut stats);
        }
    }

    if let Some(existing) = existing_nat_chains {
        for chain in existing
            .iter()
            .filter(|c| is_service_chain(c) && !active.contains(*c))
        {
            // Declaring the chain flushes it; then it can be deleted.
            b.nat_chains.chain(chain);
            b.nat_rules.line(&["-X", chain]);
            stats.deleted_chains += 1;
        }
    }

    // The tail call to KUBE-NODEPORTS must be the last rule of KUBE-SERVICES.
    const NODEPORTS_COMMENT: &str =
        "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &config.node_port_addresses {
        NodePortAddresses::All => {
            // Localhost NodePorts never work on IPv6, and on IPv4 only with route_localnet.
            let exclude = if is_v6 {
                "! -d ::1/128"
            } else if !localhost_node_ports {
                "! -d 127.0.0.0/8"
            } else {
                ""
            };
            b.nat_rules.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                NODEPORTS_COMMENT,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                exclude,
                "-j",
                KUBE_NODEPORTS,
            ]);
        }
        NodePortAddresses::Ips(ips) => {
            for ip in ips {
                if ip.is_loopback() && (is_v6 || !localhost_node_ports) {
                    continue;
                }
                let ip = ip.to_string();
                b.nat_rules.line(&[
                    "-A",
                    KUBE_SERVICES,
                    "-m",
                    "comment",
                    "--comment",
                    NODEPORTS_COMMENT,
                    "-d",
                    &ip,
                    "-j",
                    KUBE_NODEPORTS,
                ]);
            }
        }
    }

    // Drop INVALID packets, which would otherwise cause unexpected resets, unless the
    // kernel is liberal about TCP windows (kubernetes issues 74839, 117924).
    if !config.conntrack_tcp_liberal {
        b.filter_rules.line(&[
            "-A",
            KUBE_FORWARD,
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            if config.nfacct.ct_invalid_dropped {
                "-m nfacct --nfacct-name ct_state_invalid_dropped_pkts"
            } else {
                ""
            },
            "-j",
            "DROP",
        ]);
    }
    b.filter_rules.line(&[
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes forwarding rules\"",
        "-m",
        "mark",
        "--mark",
        &mark_mask,
        "-j",
        "ACCEPT",
    ]);
    b.filter_rules.line(&[
        "-A",
        KUBE_FORWARD,
        "-m",
        "comment",
        "--comment",
        "\"kubernetes forwarding conntrack rule\"",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]);

    stats.filter_rules = b.filter_rules.lines();
    stats.nat_rules_written = b.nat_rules.lines() - stats.deleted_chains;
    stats.nat_rules_total = stats.nat_rules_written + b.skipped_rules.lines();

    let mut text = String::with_capacity(
        b.filter_chains.as_str().len()
            + b.filter_rules.as_str().len()
            + b.nat_chains.as_str().len()
            + b.nat_rules.as_str().len()
            + 32,
    );
    text.push_str("*filter\n");
    text.push_str(b.filter_chains.as_str());
    text.push_str(b.filter_rules.as_str());
    text.push_str("COMMIT\n*nat\n");
    text.push_str(b.nat_chains.as_str());
    text.push_str(b.nat_rules.as_str());
    text.push_str("COMMIT\n");
    Rendered {
        text,
        active_nat_chains: active,
        stats,
    }
}

struct Ctx<'a> {
    config: &'a RenderConfig,
    large_cluster_mode: bool,
    localhost_node_ports: bool,
}

fn filter_verdict(route: Route) -> &'static str {
    match route {
        Route::Reject => "REJECT",
        _ => "DROP",
    }
}

fn render_port(
    ctx: &Ctx<'_>,
    port: &ServicePortState,
    rewrite: bool,
    b: &mut Buffers,
    active: &mut BTreeSet<String>,
    stats: &mut RenderStats,
) {
    let info = &port.info;
    let traffic: Traffic = port.traffic();
    let name = info.name.to_string();
    let proto = info.name.protocol.as_lower();
    let chains = crate::names::ServiceChains::new(&name, proto);
    let svc_port = info.port.to_string();
    let cluster_ip = info.cluster_ip.to_string();
    let policy_chain = |route: Route| -> &str {
        match route {
            Route::Local => &chains.local,
            _ => &chains.cluster,
        }
    };
    let internal_chain = policy_chain(traffic.internal);
    let external_policy_chain = policy_chain(traffic.external);
    let lb_chain = if traffic.uses_firewall {
        chains.firewall.as_str()
    } else {
        chains.external.as_str()
    };
    let filter_comment = |route: Route| -> String {
        if route == Route::Reject {
            format!("\"{name} has no endpoints\"")
        } else {
            format!("\"{name} has no local endpoints\"")
        }
    };
    if traffic.has_endpoints && traffic.internal == Route::Drop {
        stats.no_local_endpoints_internal += 1;
    }
    if traffic.has_endpoints && traffic.external == Route::Drop {
        stats.no_local_endpoints_external += 1;
    }
    let cluster_ip_comment = format!("\"{name} cluster IP\"");

    // Capture the ClusterIP.
    if traffic.internal.is_delivered() {
        b.nat_rules.line(&[
            "-A",
            KUBE_SERVICES,
            "-m",
            "comment",
            "--comment",
            &cluster_ip_comment,
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            &cluster_ip,
            "--dport",
            &svc_port,
            "-j",
            internal_chain,
        ]);
    } else {
        b.filter_rules.line(&[
            "-A",
            KUBE_SERVICES,
            "-m",
            "comment",
            "--comment",
            &filter_comment(traffic.internal),
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            &cluster_ip,
            "--dport",
            &svc_port,
            "-j",
            filter_verdict(traffic.internal),
        ]);
    }

    // Capture external IPs.
    let external_filter =
        (!traffic.external.is_delivered()).then(|| filter_comment(traffic.external));
    for ip in &info.external_ips {
        let ip = ip.to_string();
        if traffic.has_endpoints {
            b.nat_rules.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                &format!("\"{name} external IP\""),
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &svc_port,
                "-j",
                &chains.external,
            ]);
        }
        if let Some(comment) = &external_filter {
            b.filter_rules.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &svc_port,
                "-j",
                filter_verdict(traffic.external),
            ]);
        }
    }

    // Capture load-balancer ingress.
    for ip in &info.load_balancer_vips {
        let ip = ip.to_string();
        if traffic.has_endpoints {
            b.nat_rules.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                &format!("\"{name} loadbalancer IP\""),
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &svc_port,
                "-j",
                lb_chain,
            ]);
        }
        if traffic.uses_firewall {
            b.filter_rules.line(&[
                "-A",
                KUBE_PROXY_FIREWALL,
                "-m",
                "comment",
                "--comment",
                &format!("\"{name} traffic not accepted by {}\"", chains.firewall),
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &svc_port,
                "-j",
                "DROP",
            ]);
        }
    }
    if let Some(comment) = &external_filter {
        for ip in &info.load_balancer_vips {
            let ip = ip.to_string();
            b.filter_rules.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &ip,
                "--dport",
                &svc_port,
                "-j",
                filter_verdict(traffic.external),
            ]);
        }
    }

    // Capture NodePorts. (NodePorts are not subject to loadBalancerSourceRanges.)
    if let Some(node_port) = info.node_port {
        let node_port = node_port.to_string();
        if traffic.has_endpoints {
            if ctx.localhost_node_ports && ctx.config.nfacct.localhost_nodeports {
                b.nat_rules.line(&[
                    "-A",
                    KUBE_NODEPORTS,
                    "-m",
                    "comment",
                    "--comment",
                    &name,
                    "-m",
                    proto,
                    "-p",
                    proto,
                    "-d",
                    "127.0.0.0/8",
                    "--dport",
                    &node_port,
                    "-m",
                    "nfacct",
                    "--nfacct-name",
                    NFACCT_LOCALHOST_NODEPORTS,
                    "-j",
                    &chains.external,
                ]);
            }
            b.nat_rules.line(&[
                "-A",
                KUBE_NODEPORTS,
                "-m",
                "comment",
                "--comment",
                &name,
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                &node_port,
                "-j",
                &chains.external,
            ]);
        }
        if let Some(comment) = &external_filter {
            b.filter_rules.line(&[
                "-A",
                KUBE_EXTERNAL_SERVICES,
                "-m",
                "comment",
                "--comment",
                comment,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-m",
                proto,
                "-p",
                proto,
                "--dport",
                &node_port,
                "-j",
                filter_verdict(traffic.external),
            ]);
        }
    }

    // Health-check node ports are accepted whether or not there are local endpoints.
    if let Some(hc) = info.health_check_node_port {
        b.filter_rules.line(&[
            "-A",
            KUBE_NODEPORTS,
            "-m",
            "comment",
            "--comment",
            &format!("\"{name} health check node port\""),
            "-m",
            "tcp",
            "-p",
            "tcp",
            "--dport",
            &hc.to_string(),
            "-j",
            "ACCEPT",
        ]);
    }

    // Per-service chains: skipped (only counted) when a partial sync leaves them be.
    let (nat_chains, nat_rules) = if rewrite {
        (&mut b.nat_chains, &mut b.nat_rules)
    } else {
        (&mut b.skipped_chains, &mut b.skipped_rules)
    };

    if traffic.internal.is_delivered() {
        let masq_match = if ctx.config.masquerade_all {
            Some(String::new())
        } else {
            ctx.config.local_detector.if_not_local()
        };
        if let Some(masq_match) = masq_match {
            nat_rules.line(&[
                "-A",
                internal_chain,
                "-m",
                "comment",
                "--comment",
                &cluster_ip_comment,
                "-m",
                proto,
                "-p",
                proto,
                "-d",
                &cluster_ip,
                "--dport",
                &svc_port,
                &masq_match,
                "-j",
                KUBE_MARK_MASQ,
            ]);
        }
    }

    if traffic.uses_external_chain {
        nat_chains.chain(&chains.external);
        active.insert(chains.external.clone());
        if !info.external_policy_local {
            nat_rules.line(&[
                "-A",
                &chains.external,
                "-m",
                "comment",
                "--comment",
                &format!("\"masquerade traffic for {name} external destinations\""),
                "-j",
                KUBE_MARK_MASQ,
            ]);
        } else {
            // Pod -> external destination traffic is subject to neither policy: it
            // simulates going out to the load balancer and coming back in.
            if let Some(if_local) = ctx.config.local_detector.if_local() {
                nat_rules.line(&[
                    "-A",
                    &chains.external,
                    "-m",
                    "comment",
                    "--comment",
                    &format!("\"pod traffic for {name} external destinations\""),
                    &if_local,
                    "-j",
                    &chains.cluster,
                ]);
            }
            // Traffic from the node itself must be masqueraded (the VIP is local, so
            // it would be the source) and goes to the cluster-wide endpoints.
            nat_rules.line(&[
                "-A",
                &chains.external,
                "-m",
                "comment",
                "--comment",
                &format!("\"masquerade LOCAL traffic for {name} external destinations\""),
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-j",
                KUBE_MARK_MASQ,
            ]);
            nat_rules.line(&[
                "-A",
                &chains.external,
                "-m",
                "comment",
                "--comment",
                &format!("\"route LOCAL traffic for {name} external destinations\""),
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-j",
                &chains.cluster,
            ]);
        }
        if traffic.external.is_delivered() {
            nat_rules.line(&["-A", &chains.external, "-j", external_policy_chain]);
        }
    }

    if traffic.uses_firewall {
        nat_chains.chain(&chains.firewall);
        active.insert(chains.firewall.clone());
        let comment = format!("\"{name} loadbalancer IP\"");
        let mut allow_from_node = false;
        for cidr in &info.load_balancer_source_ranges {
            nat_rules.line(&[
                "-A",
                &chains.firewall,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-s",
                &cidr.to_string(),
                "-j",
                &chains.external,
            ]);
            if ctx.config.node_ip.is_some_and(|ip| cidr.contains(&ip)) {
                allow_from_node = true;
            }
        }
        // A VIP that is also a local address makes node -> VIP traffic loop back with
        // the VIP as source; let it through.
        if allow_from_node {
            for ip in &info.load_balancer_vips {
                nat_rules.line(&[
                    "-A",
                    &chains.firewall,
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-s",
                    &ip.to_string(),
                    "-j",
                    &chains.external,
                ]);
            }
        }
        // Whatever reaches the end was not DNATed; KUBE-PROXY-FIREWALL drops it.
        nat_rules.line(&[
            "-A",
            &chains.firewall,
            "-m",
            "comment",
            "--comment",
            &format!("\"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL\""),
        ]);
    }

    let endpoint_chain = |addr: &str| endpoint_chain(&name, proto, addr);
    if traffic.uses_cluster_chain {
        nat_chains.chain(&chains.cluster);
        active.insert(chains.cluster.clone());
        let eps: Vec<_> = port.cluster_endpoints().collect();
        write_endpoint_dispatch(
            ctx,
            port,
            &name,
            &chains.cluster,
            &eps,
            &endpoint_chain,
            nat_rules,
        );
    }
    if traffic.uses_local_chain {
        nat_chains.chain(&chains.local);
        active.insert(chains.local.clone());
        let eps: Vec<_> = port.local_endpoints().collect();
        write_endpoint_dispatch(
            ctx,
            port,
            &name,
            &chains.local,
            &eps,
            &endpoint_chain,
            nat_rules,
        );
    }

    for ep in port.reachable_endpoints() {
        let addr = ep.addr();
        let chain = endpoint_chain(&addr);
        nat_chains.chain(&chain);
        let comment: &[&str] = if ctx.large_cluster_mode {
            &[]
        } else {
            &["-m", "comment", "--comment", &name]
        };
        let ip = ep.ip.to_string();
        let mut words: Vec<&str> = Vec::with_capacity(24);
        words.extend(["-A", chain.as_str()]);
        words.extend(comment);
        words.extend(["-s", &ip, "-j", KUBE_MARK_MASQ]);
        nat_rules.line(&words);
        words.truncate(2 + comment.len());
        if matches!(info.session_affinity, SessionAffinity::ClientIp { .. }) {
            words.extend(["-m", "recent", "--name", chain.as_str(), "--set"]);
        }
        words.extend([
            "-m",
            proto,
            "-p",
            proto,
            "-j",
            "DNAT",
            "--to-destination",
            &addr,
        ]);
        nat_rules.line(&words);
        active.insert(chain);
    }
}

/// Writes the rules of a policy chain that spread connections over `endpoints`:
/// affinity checks first, then one probabilistic jump per endpoint (1/n, 1/(n-1) ...,
/// the last unconditional).
fn write_endpoint_dispatch(
    ctx: &Ctx<'_>,
    port: &ServicePortState,
    name: &str,
    chain: &str,
    endpoints: &[&kpr_model::Endpoint],
    endpoint_chain: &dyn Fn(&str) -> String,
    nat_rules: &mut LineBuffer,
) {
    if let SessionAffinity::ClientIp { timeout_seconds } = port.info.session_affinity {
        let seconds = timeout_seconds.to_string();
        for ep in endpoints {
            let addr = ep.addr();
            let ep_chain = endpoint_chain(&addr);
            let comment = format!("\"{name} -> {addr}\"");
            let mut words: Vec<&str> = vec!["-A", chain];
            if !ctx.large_cluster_mode {
                words.extend(["-m", "comment", "--comment", &comment]);
            }
            words.extend([
                "-m",
                "recent",
                "--name",
                &ep_chain,
                "--rcheck",
                "--seconds",
                &seconds,
                "--reap",
                "-j",
                &ep_chain,
            ]);
            nat_rules.line(&words);
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let addr = ep.addr();
        let ep_chain = endpoint_chain(&addr);
        let comment = format!("\"{name} -> {addr}\"");
        let probability;
        let mut words: Vec<&str> = vec!["-A", chain];
        if !ctx.large_cluster_mode {
            words.extend(["-m", "comment", "--comment", &comment]);
        }
        if i + 1 < n {
            probability = probability_string(n - i);
            words.extend([
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
            ]);
        }
        words.extend(["-j", &ep_chain]);
        nat_rules.line(&words);
    }
}

/// `1/n` with 10 decimals, as Go's `%0.10f` prints it (round half to even on the
/// exact binary value).
pub fn probability_string(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}
