//! The judgement of `check`: facts in, findings out, no I/O.

use kpr_config::ProxyMode;

use super::{Facts, Finding, Severity};

/// Usage of the conntrack table above which `check` warns, and fails.
const CONNTRACK_WARN: f64 = 0.75;
const CONNTRACK_FAIL: f64 = 0.90;

/// The findings for `facts`, in a fixed order.
pub fn evaluate(facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |check: &'static str, severity: Severity, message: String| {
        out.push(Finding {
            check,
            severity,
            message,
        });
    };
    let mode = facts.mode.unwrap_or(ProxyMode::Iptables);

    for p in &facts.other_proxies {
        add(
            "other-proxy",
            Severity::Fail,
            format!(
                "upstream kube-proxy is running (pid {}: {}): both would program the same rules; stop it first (kubectl -n kube-system delete daemonset kube-proxy, or systemctl stop kube-proxy)",
                p.0, p.1
            ),
        );
    }
    if facts.other_proxies.is_empty() {
        add(
            "other-proxy",
            Severity::Pass,
            "no upstream kube-proxy process".into(),
        );
    }

    match facts.ip_forward.as_deref().map(str::trim) {
        Some("1") => add(
            "ip_forward",
            Severity::Pass,
            "net.ipv4.ip_forward is 1".into(),
        ),
        Some(v) => add(
            "ip_forward",
            Severity::Fail,
            format!(
                "net.ipv4.ip_forward is {v}: Service traffic to pods on other nodes and from outside is dropped; run sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d/"
            ),
        ),
        None => add(
            "ip_forward",
            Severity::Warn,
            "cannot read net.ipv4.ip_forward".into(),
        ),
    }
    if let Some(v) = facts.ipv6_forwarding.as_deref().map(str::trim) {
        if v == "1" {
            add(
                "ipv6_forwarding",
                Severity::Pass,
                "net.ipv6.conf.all.forwarding is 1".into(),
            );
        } else if !facts.ipv6_cluster {
            add(
                "ipv6_forwarding",
                Severity::Pass,
                format!(
                    "net.ipv6.conf.all.forwarding is {v}: fine while clusterCIDR has no IPv6 range (a dual-stack cluster needs 1)"
                ),
            );
        } else {
            add(
                "ipv6_forwarding",
                Severity::Warn,
                format!(
                    "net.ipv6.conf.all.forwarding is {v}: IPv6 Services will not reach pods on other nodes; on a dual-stack cluster run sysctl -w net.ipv6.conf.all.forwarding=1"
                ),
            );
        }
    }

    bridge_netfilter(facts, &mut add);
    conntrack(facts, &mut add);
    backend(facts, mode, &mut add);
    kernel_features(facts, mode, &mut add);

    match (facts.route_localnet.as_deref().map(str::trim), facts.localhost_node_ports) {
        (Some("1"), false) => add(
            "route_localnet",
            Severity::Warn,
            "net.ipv4.conf.all.route_localnet is 1 but no NodePorts answer on 127.0.0.1 in this configuration: neighbors can reach services bound to 127.0.0.1 (CVE-2020-8558); set it to 0 unless another component needs it".into(),
        ),
        (_, true) => add(
            "route_localnet",
            Severity::Pass,
            "NodePorts answer on 127.0.0.1: kube-proxy-rs sets net.ipv4.conf.all.route_localnet=1 and drops martian localnet traffic from outside (as upstream)".into(),
        ),
        _ => add(
            "route_localnet",
            Severity::Pass,
            "net.ipv4.conf.all.route_localnet is off".into(),
        ),
    }
    out
}

type Add<'a> = dyn FnMut(&'static str, Severity, String) + 'a;

fn bridge_netfilter(facts: &Facts, add: &mut Add<'_>) {
    let bridges = facts.bridges.join(", ");
    match facts.bridge_nf_call_iptables.as_deref().map(str::trim) {
        None if facts.bridges.is_empty() => add(
            "br_netfilter",
            Severity::Pass,
            "no Linux bridge on this node: br_netfilter is not needed".into(),
        ),
        None => add(
            "br_netfilter",
            Severity::Fail,
            format!(
                "bridge {bridges} exists but br_netfilter is not loaded: a pod reaching a Service whose endpoint is on the same bridge gets replies from the pod IP instead of the Service IP (DNS: \"reply from unexpected source\"); run modprobe br_netfilter and sysctl -w net.bridge.bridge-nf-call-iptables=1 (persist both)"
            ),
        ),
        Some("1") => add(
            "br_netfilter",
            Severity::Pass,
            "br_netfilter is loaded and net.bridge.bridge-nf-call-iptables is 1".into(),
        ),
        Some(v) => add(
            "br_netfilter",
            if facts.bridges.is_empty() {
                Severity::Warn
            } else {
                Severity::Fail
            },
            format!(
                "net.bridge.bridge-nf-call-iptables is {v}: bridged pod-to-pod Service traffic bypasses the Service rules (replies from an unexpected source); run sysctl -w net.bridge.bridge-nf-call-iptables=1"
            ),
        ),
    }
    if facts.ipv6_forwarding.is_some()
        && facts.bridge_nf_call_iptables.is_some()
        && facts
            .bridge_nf_call_ip6tables
            .as_deref()
            .is_some_and(|v| v.trim() != "1")
    {
        add(
            "br_netfilter",
            Severity::Warn,
            "net.bridge.bridge-nf-call-ip6tables is not 1: bridged IPv6 Service traffic bypasses the rules; run sysctl -w net.bridge.bridge-nf-call-ip6tables=1".into(),
        );
    }
}

fn conntrack(facts: &Facts, add: &mut Add<'_>) {
    let (Some(count), Some(max)) = (facts.conntrack_count, facts.conntrack_max) else {
        add(
            "conntrack",
            Severity::Warn,
            "cannot read nf_conntrack_count/nf_conntrack_max: is the nf_conntrack module loaded? (modprobe nf_conntrack)".into(),
        );
        return;
    };
    let used = if max == 0 {
        1.0
    } else {
        count as f64 / max as f64
    };
    let pct = used * 100.0;
    if used >= CONNTRACK_FAIL {
        add(
            "conntrack",
            Severity::Fail,
            format!(
                "conntrack table {count} of {max} entries ({pct:.0}%): new connections will be dropped (\"nf_conntrack: table full, dropping packet\"); raise conntrack.maxPerCore/min or sysctl -w net.netfilter.nf_conntrack_max=<more>, and look for clients opening connections without reuse"
            ),
        );
    } else if used >= CONNTRACK_WARN {
        add(
            "conntrack",
            Severity::Warn,
            format!(
                "conntrack table {count} of {max} entries ({pct:.0}%): close to full; raise conntrack.maxPerCore/min or net.netfilter.nf_conntrack_max"
            ),
        );
    } else {
        add(
            "conntrack",
            Severity::Pass,
            format!("conntrack table {count} of {max} entries ({pct:.0}%)"),
        );
    }
    if let Some(wanted) = facts.conntrack_max_wanted
        && wanted > max
    {
        add(
            "conntrack",
            Severity::Warn,
            format!(
                "nf_conntrack_max is {max} but the configuration asks for {wanted}: kube-proxy-rs raises it at start where the sysctl is writable (not inside a container's network namespace); otherwise set it on the host"
            ),
        );
    }
}

fn backend(facts: &Facts, mode: ProxyMode, add: &mut Add<'_>) {
    let ours_nft = facts
        .iptables_version
        .as_deref()
        .is_some_and(|v| v.contains("nf_tables"));
    let (ours, other_name, other) = if ours_nft {
        ("iptables-nft", "iptables-legacy", facts.legacy_rules)
    } else {
        ("iptables-legacy", "iptables-nft", facts.nft_backend_rules)
    };
    if mode == ProxyMode::Nftables {
        let kube =
            facts.legacy_rules.map_or(0, |r| r.1) + facts.nft_backend_rules.map_or(0, |r| r.1);
        if kube > 0 {
            add(
                "iptables-backend",
                Severity::Warn,
                format!(
                    "{kube} iptables rules in KUBE- chains remain from iptables or IPVS mode: kube-proxy-rs removes them when it starts in nftables mode (or run kube-proxy-rs --cleanup)"
                ),
            );
        } else {
            add(
                "iptables-backend",
                Severity::Pass,
                "no iptables-mode kube-proxy rules left".into(),
            );
        }
        return;
    }
    if facts.iptables_version.is_none() {
        add(
            "iptables-backend",
            Severity::Fail,
            "iptables is not installed: install the iptables package".into(),
        );
        return;
    }
    match other {
        Some((_, kube)) if kube > 0 => add(
            "iptables-backend",
            Severity::Warn,
            format!(
                "{kube} rules in KUBE- chains of {other_name} while iptables here is {ours}: leftovers of a kube-proxy that used the other backend; packets pass both rule sets. Remove them with {other_name}-save/-restore, or run kube-proxy-rs --cleanup with the other backend as iptables"
            ),
        ),
        Some((rules, _)) if rules > 0 => add(
            "iptables-backend",
            Severity::Warn,
            format!(
                "{rules} rules in {other_name} while iptables here is {ours}: another component (CNI plugin, firewall) uses the other backend; both rule sets see every packet, which is hard to predict. Make every component use {ours}"
            ),
        ),
        _ => add(
            "iptables-backend",
            Severity::Pass,
            format!("iptables is {ours}, and {other_name} holds no rules"),
        ),
    }
}

fn kernel_features(facts: &Facts, mode: ProxyMode, add: &mut Add<'_>) {
    match mode {
        ProxyMode::Iptables => match &facts.iptables_usable {
            Some(Err(e)) => add(
                "kernel",
                Severity::Fail,
                format!(
                    "iptables cannot read the nat table ({e}): load the ip_tables/iptable_nat (or nf_tables) modules"
                ),
            ),
            _ => add(
                "kernel",
                Severity::Pass,
                "iptables can use the nat table".into(),
            ),
        },
        ProxyMode::Nftables => {
            if let Some(k) = &facts.kernel
                && version_below(k, (5, 13))
            {
                add(
                    "kernel",
                    Severity::Fail,
                    format!(
                        "kernel {k} is older than 5.13, which nftables mode needs (as upstream); use iptables mode on this node"
                    ),
                );
            }
            match &facts.nftables_usable {
                Some(Err(e)) => add(
                    "kernel",
                    Severity::Fail,
                    format!(
                        "the kernel rejects a table with what nftables mode needs ({e}): install nftables (nft) and load nf_tables, nft_numgen, nft_ct, nft_fib, nft_nat, nft_reject"
                    ),
                ),
                _ => add(
                    "kernel",
                    Severity::Pass,
                    "the kernel accepts every nftables feature the mode uses".into(),
                ),
            }
        }
        ProxyMode::Ipvs => match &facts.ipvs {
            None => add("kernel", Severity::Warn, "IPVS was not probed".into()),
            Some(ipvs) => {
                match &ipvs.table {
                    Err(e) => add(
                        "kernel",
                        Severity::Fail,
                        format!("{e}; IPVS mode refuses to start without it"),
                    ),
                    Ok(()) if ipvs.scheduler_loaded => add(
                        "kernel",
                        Severity::Pass,
                        format!("IPVS is available with scheduler {}", ipvs.scheduler),
                    ),
                    Ok(()) => add(
                        "kernel",
                        Severity::Warn,
                        format!(
                            "module ip_vs_{s} is not loaded: the kernel loads it when the first virtual server is created, and IPVS mode refuses to start if it cannot (modprobe ip_vs_{s} to be sure)",
                            s = ipvs.scheduler
                        ),
                    ),
                }
                match &ipvs.ipset {
                    Ok(v) => add("ipset", Severity::Pass, format!("ipset {v}")),
                    Err(e) => add(
                        "ipset",
                        Severity::Fail,
                        format!(
                            "{e}: IPVS mode needs the ipset tool (>= 6.0); install the ipset package"
                        ),
                    ),
                }
            }
        },
    }
}

/// True if a `uname -r` release is below `min` (major, minor).
fn version_below(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) < min
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
