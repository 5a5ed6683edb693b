//! The filter table: REJECT and DROP for Services without (local) endpoints, the
//! load-balancer source-range firewall, health-check node ports, forwarding. Small
//! (a line per Service port that cannot deliver), so it is rendered whole.

use kpr_model::{FamilyState, Route, ServicePortState, Traffic};

use super::{Ctx, RenderStats};
use crate::buffer::LineBuffer;
use crate::names::*;

fn verdict(route: Route) -> &'static str {
    match route {
        Route::Reject => "REJECT",
        _ => "DROP",
    }
}

/// The whole `*filter` ... `COMMIT` section. Also counts the Service ports and those
/// without local endpoints into `stats`.
pub(super) fn render(ctx: &Ctx<'_>, state: &FamilyState, stats: &mut RenderStats) -> String {
    let config = ctx.config;
    let mut chains = LineBuffer::new();
    let mut rules = LineBuffer::new();
    for chain in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        chains.chain(chain);
    }
    if ctx.localhost_node_ports {
        // route_localnet opens a hole (kubernetes issue 90259) this rule closes; kubelet
        // keeps an identical copy of it.
        chains.chain(KUBE_FIREWALL);
        rules.line(&[
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

    for svc in state.services.values() {
        for port in &svc.ports {
            stats.service_ports += 1;
            render_port(port, &mut rules, stats);
        }
    }

    let mark = config.masquerade_mark.as_str();
    let mark_mask = format!("{mark}/{mark}");
    // Drop INVALID packets, which would otherwise cause unexpected resets, unless the
    // kernel is liberal about TCP windows (kubernetes issues 74839, 117924).
    if !config.conntrack_tcp_liberal {
        rules.line(&[
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
    rules.line(&[
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
    rules.line(&[
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
    stats.filter_rules = rules.lines();

    let mut text = String::with_capacity(chains.as_str().len() + rules.as_str().len() + 16);
    text.push_str("*filter\n");
    text.push_str(chains.as_str());
    text.push_str(rules.as_str());
    text.push_str("COMMIT\n");
    text
}

/// The filter rules of one Service port.
fn render_port(port: &ServicePortState, rules: &mut LineBuffer, stats: &mut RenderStats) {
    let info = &port.info;
    let traffic: Traffic = port.traffic();
    if traffic.has_endpoints && traffic.internal == Route::Drop {
        stats.no_local_endpoints_internal += 1;
    }
    if traffic.has_endpoints && traffic.external == Route::Drop {
        stats.no_local_endpoints_external += 1;
    }
    let external_refused = !traffic.external.is_delivered()
        && (!info.external_ips.is_empty()
            || !info.load_balancer_vips.is_empty()
            || info.node_port.is_some());
    if traffic.internal.is_delivered()
        && !external_refused
        && !traffic.uses_firewall
        && info.health_check_node_port.is_none()
    {
        // The common case: nothing of this port in the filter table.
        return;
    }

    let name = info.name.to_string();
    let proto = info.name.protocol.as_lower();
    let svc_port = info.port.to_string();
    let comment = |route: Route| -> String {
        if route == Route::Reject {
            format!("\"{name} has no endpoints\"")
        } else {
            format!("\"{name} has no local endpoints\"")
        }
    };
    let refuse = |rules: &mut LineBuffer, chain: &str, comment: &str, ip: &str, route| {
        rules.line(&[
            "-A",
            chain,
            "-m",
            "comment",
            "--comment",
            comment,
            "-m",
            proto,
            "-p",
            proto,
            "-d",
            ip,
            "--dport",
            &svc_port,
            "-j",
            verdict(route),
        ]);
    };

    if !traffic.internal.is_delivered() {
        let cluster_ip = info.cluster_ip.to_string();
        refuse(
            rules,
            KUBE_SERVICES,
            &comment(traffic.internal),
            &cluster_ip,
            traffic.internal,
        );
    }

    let external = (!traffic.external.is_delivered()).then(|| comment(traffic.external));
    if let Some(comment) = &external {
        for ip in &info.external_ips {
            let ip = ip.to_string();
            refuse(
                rules,
                KUBE_EXTERNAL_SERVICES,
                comment,
                &ip,
                traffic.external,
            );
        }
    }
    if traffic.uses_firewall {
        let firewall = ServiceChains::new(&name, proto).firewall;
        let comment = format!("\"{name} traffic not accepted by {firewall}\"");
        for ip in &info.load_balancer_vips {
            let ip = ip.to_string();
            refuse(rules, KUBE_PROXY_FIREWALL, &comment, &ip, Route::Drop);
        }
    }
    if let Some(comment) = &external {
        for ip in &info.load_balancer_vips {
            let ip = ip.to_string();
            refuse(
                rules,
                KUBE_EXTERNAL_SERVICES,
                comment,
                &ip,
                traffic.external,
            );
        }
        if let Some(node_port) = info.node_port {
            rules.line(&[
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
                &node_port.to_string(),
                "-j",
                verdict(traffic.external),
            ]);
        }
    }

    // Health-check node ports are accepted whether or not there are local endpoints.
    if let Some(hc) = info.health_check_node_port {
        rules.line(&[
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
}
