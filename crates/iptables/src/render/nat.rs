//! The nat table, written one Service port at a time: the port's chains are declared,
//! then its rules follow (the `KUBE-SERVICES` and `KUBE-NODEPORTS` rules that lead to
//! it among them), so nothing but one port's lines is held at once.

use std::io::Write;

use kpr_model::{FamilyState, Route, ServicePortState, SessionAffinity, Traffic};

use super::{Ctx, ExistingChains, RenderStats, SyncMode, probability_string, write_nodeports_tail};
use crate::buffer::LineBuffer;
use crate::config::IptablesMatch;
use crate::names::*;

/// What one Service port puts in the nat table.
struct PortOut {
    /// Its per-service and per-endpoint chains, in declaration order.
    chains: Vec<String>,
    /// Its rules in the top-level chains (always written).
    top: LineBuffer,
    /// The rules of its own chains (only counted when a partial sync leaves them).
    rules: LineBuffer,
}

impl PortOut {
    fn new(rewrite: bool) -> Self {
        Self {
            chains: Vec::new(),
            top: LineBuffer::new(),
            rules: if rewrite {
                LineBuffer::new()
            } else {
                LineBuffer::discarding()
            },
        }
    }
}

/// The chains one Service port has (what [`render`] would declare for it).
pub(super) fn port_chains(ctx: &Ctx<'_>, port: &ServicePortState) -> Vec<String> {
    let mut out = PortOut::new(false);
    render_port(ctx, port, &mut out);
    out.chains
}

/// Writes the whole `*nat` ... `COMMIT` section to `out`.
pub(super) fn render(
    ctx: &Ctx<'_>,
    state: &FamilyState,
    mode: SyncMode<'_>,
    existing: Option<&ExistingChains>,
    out: &mut dyn Write,
    stats: &mut RenderStats,
) -> std::io::Result<()> {
    let config = ctx.config;
    let mut head = LineBuffer::new();
    head.line(&["*nat"]);
    for chain in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        head.chain(chain);
    }
    let mark = config.masquerade_mark.as_str();
    let mark_mask = format!("{mark}/{mark}");
    let mut rules_written = 0;
    let mut rules_skipped = 0;
    let mut fixed = LineBuffer::new();
    fixed.line(&[
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
    fixed.line(&["-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark]);
    fixed.line(&[
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
    fixed.line(&["-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark]);
    rules_written += fixed.lines();
    out.write_all(head.as_str().as_bytes())?;
    out.write_all(fixed.as_str().as_bytes())?;

    // Which existing chains the ruleset still uses.
    let mut used = vec![false; existing.map_or(0, ExistingChains::len)];
    let mut line = String::new();
    for (name, svc) in state.services.iter() {
        let rewrite = mode.rewrites(name);
        for port in &svc.ports {
            let mut port_out = PortOut::new(rewrite);
            render_port(ctx, port, &mut port_out);
            for chain in &port_out.chains {
                if let Some(i) = existing.and_then(|e| e.position(chain)) {
                    used[i] = true;
                }
                if rewrite {
                    line.clear();
                    line.push(':');
                    line.push_str(chain);
                    line.push_str(" - [0:0]\n");
                    out.write_all(line.as_bytes())?;
                }
            }
            out.write_all(port_out.top.as_str().as_bytes())?;
            out.write_all(port_out.rules.as_str().as_bytes())?;
            rules_written += port_out.top.lines();
            if rewrite {
                rules_written += port_out.rules.lines();
            } else {
                rules_skipped += port_out.rules.lines();
            }
        }
    }

    // Stale chains: declaring one flushes it, so all are declared before any is
    // deleted (one may jump to another).
    let mut tail = LineBuffer::new();
    if let Some(existing) = existing {
        let stale: Vec<&str> = existing
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|(name, _)| name)
            .collect();
        for chain in &stale {
            tail.chain(chain);
        }
        for chain in &stale {
            tail.line(&["-X", chain]);
        }
        stats.deleted_chains = stale.len();
    }
    let before = tail.lines();
    write_nodeports_tail(ctx, &mut tail);
    rules_written += tail.lines() - before;
    tail.line(&["COMMIT"]);
    out.write_all(tail.as_str().as_bytes())?;

    stats.nat_rules_written = rules_written;
    stats.nat_rules_total = rules_written + rules_skipped;
    Ok(())
}

fn render_port(ctx: &Ctx<'_>, port: &ServicePortState, out: &mut PortOut) {
    let PortOut {
        chains: declared,
        top,
        rules,
    } = out;
    let info = &port.info;
    let traffic: Traffic = port.traffic();
    let name = info.name.to_string();
    let proto = info.name.protocol.as_lower();
    let chains = ServiceChains::new(&name, proto);
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
    let cluster_ip_comment = format!("\"{name} cluster IP\"");

    // Capture the ClusterIP.
    if traffic.internal.is_delivered() {
        top.line(&[
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
    }

    // Capture external IPs.
    for ip in &info.external_ips {
        let ip = ip.to_string();
        if traffic.has_endpoints {
            top.line(&[
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
    }

    // Capture load-balancer ingress.
    for ip in &info.load_balancer_vips {
        let ip = ip.to_string();
        if traffic.has_endpoints {
            top.line(&[
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
    }

    // Capture NodePorts. (NodePorts are not subject to loadBalancerSourceRanges.)
    if let Some(node_port) = info.node_port {
        let node_port = node_port.to_string();
        if traffic.has_endpoints {
            if ctx.localhost_node_ports && ctx.config.nfacct.localhost_nodeports {
                top.line(&[
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
            top.line(&[
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
    }

    // Per-service chains: counted only when a partial sync leaves them be.
    let nat_rules = rules;

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
        declared.push(chains.external.clone());
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
        declared.push(chains.firewall.clone());
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
        declared.push(chains.cluster.clone());
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
        declared.push(chains.local.clone());
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
        declared.push(chain.clone());
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
