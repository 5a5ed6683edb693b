//! `kpr-sandbox`: builds a two-node cluster in network namespaces (the test bed of
//! `kpr-netns-lab`), starts a pod with a TCP/UDP backend at every endpoint address of
//! the manifests that falls in the sandbox's pod networks, runs `kube-proxy-rs` on
//! both nodes from those manifests, sends a few requests to every Service address
//! (ClusterIP from a pod, NodePort and load-balancer IP from an external client),
//! prints which backend answered and what source it saw, and tears everything down.
//!
//! The sandbox's node addresses are 192.168.56.11 / .12 (fd56::11 / ::12) and its
//! pod networks 10.244.1.0/24 and 10.244.2.0/24 (fd44:1::/64, fd44:2::/64): endpoint
//! addresses there become pods on node1 or node2. Needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use kpr_model::{IpFamily, Store};
use kpr_netns_lab::backend::{Backend, serve};
use kpr_netns_lab::client::{self, Answer, RequestError};
use kpr_netns_lab::{Cluster, Host, Netns};

#[derive(Parser)]
#[command(
    about = "Run kube-proxy-rs on example manifests in a two-node sandbox and show where traffic goes"
)]
struct Args {
    /// Manifest directory.
    #[arg(long, default_value = "examples/manifests")]
    manifests: PathBuf,
    /// Data plane.
    #[arg(long, default_value = "iptables")]
    proxy_mode: String,
    /// Requests per Service address.
    #[arg(long, default_value_t = 9)]
    requests: usize,
    /// The kube-proxy-rs binary (default: next to this one).
    #[arg(long)]
    proxy: Option<PathBuf>,
}

/// Which pod an endpoint address belongs to: (node, host number).
fn pod_slot(ip: &IpAddr) -> Option<(u8, u8)> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 10 && o[1] == 244 && (1..=2).contains(&o[2]) && o[3] >= 2)
                .then_some((o[2], o[3]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0xfd44
                && (1..=2).contains(&s[1])
                && s[2..7].iter().all(|x| *x == 0)
                && (2..=255).contains(&s[7]))
            .then(|| (s[1] as u8, s[7] as u8))
        }
    }
}

fn proxy_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.proxy {
        return Ok(p.clone());
    }
    let me = std::env::current_exe()?;
    let p = me.with_file_name("kube-proxy-rs");
    if !p.exists() {
        bail!(
            "{} not found: build it (cargo build -p kube-proxy-rs) or pass --proxy",
            p.display()
        );
    }
    Ok(p)
}

fn last_sync(ns: &Netns) -> Option<f64> {
    ns.enter(|| -> Option<f64> {
        let mut s = TcpStream::connect_timeout(
            &"127.0.0.1:10249".parse().ok()?,
            Duration::from_millis(300),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .filter(|l| l.starts_with("kubeproxy_sync_proxy_rules_last_timestamp_seconds"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .reduce(f64::max)
    })
    .ok()
    .flatten()
}

fn describe(results: &[Result<Answer, RequestError>], client: &Host, v6: bool) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept = 0;
    for r in results {
        match r {
            Ok(a) => {
                *counts.entry(a.backend.clone()).or_insert(0) += 1;
                if a.seen_source.ip() == client.ip(v6) {
                    kept += 1;
                }
            }
            Err(e) => *counts.entry(format!("<{e}>")).or_insert(0) += 1,
        }
    }
    let answers: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let source = if ok == 0 {
        String::new()
    } else if kept == ok {
        " (client address kept)".into()
    } else if kept == 0 {
        " (masqueraded)".into()
    } else {
        format!(" ({kept} of {ok} kept the client address)")
    };
    format!("{}{source}", answers.join(", "))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the sandbox creates network namespaces: run it as root"
    );
    let proxy = proxy_binary(&args)?;
    let set = kpr_source::load_dir(&args.manifests)?;
    for p in &set.problems {
        println!("manifest problem: {p}");
    }
    for a in &set.allocations {
        println!("{a}");
    }
    let mut store = Store::new("node1");
    store.replace_all(&set.objects);
    let state = store.snapshot();

    println!("building the sandbox: LAN 192.168.56.0/24, node1 and node2, pods, external client");
    let mut cluster = Cluster::new(2)?;
    // One pod per endpoint address slot, named after the Service it backs first.
    let mut pods: BTreeMap<(u8, u8), (String, Vec<u16>)> = BTreeMap::new();
    let mut outside = Vec::new();
    for fam in IpFamily::ALL {
        for svc in state.family(fam).services.values() {
            for port in &svc.ports {
                for ep in &port.endpoints {
                    match pod_slot(&ep.ip) {
                        Some(slot) => {
                            let entry = pods.entry(slot).or_insert_with(|| {
                                (
                                    format!("{}-n{}-{}", svc.name.name, slot.0, slot.1),
                                    Vec::new(),
                                )
                            });
                            if !entry.1.contains(&ep.port) {
                                entry.1.push(ep.port);
                            }
                        }
                        None => outside.push(format!("{} ({})", ep.addr(), port.info.name)),
                    }
                }
            }
        }
    }
    let mut backends: Vec<Backend> = Vec::new();
    for ((node, p), (name, ports)) in &pods {
        let idx = cluster.add_pod_at(*node, name, *p)?;
        for port in ports {
            backends.push(serve(&cluster.pods[idx].ns, name, *port)?);
        }
        println!(
            "  pod {name} on node{node}: {} / {} serving {:?}",
            cluster.pods[idx].ip4, cluster.pods[idx].ip6, ports
        );
    }
    for o in &outside {
        println!("  endpoint {o} is outside the sandbox's pod networks: nothing answers there");
    }
    let client_pod = cluster.add_pod(1, "client")?;
    for c in [&cluster.client, &cluster.blocked_client] {
        for cidr in ["0.0.0.0/1", "128.0.0.0/1"] {
            // Send non-LAN destinations (external and load-balancer IPs) to node1.
            let _ = c.ns.ip(&["route", "replace", cidr, "via", "192.168.56.11"]);
        }
    }

    let work = std::env::temp_dir().join(format!("kpr-sandbox-{}", std::process::id()));
    let mut proxies: Vec<Child> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for i in 1..=2u8 {
            let dir = work.join(format!("node{i}"));
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&args.manifests)? {
                let path = entry?.path();
                if kpr_source::dir::is_manifest_file(&path) {
                    std::fs::copy(&path, dir.join(path.file_name().unwrap_or_default()))?;
                }
            }
            let log = std::fs::File::create(work.join(format!("node{i}.log")))?;
            let child = cluster
                .node(i)
                .host
                .ns
                .command(proxy.to_str().unwrap_or("kube-proxy-rs"))
                .args([
                    format!("--proxy-mode={}", args.proxy_mode),
                    format!("--manifests={}", dir.display()),
                    format!("--hostname-override=node{i}"),
                    "--cluster-cidr=10.244.0.0/16,fd44::/16".to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting kube-proxy-rs")?;
            proxies.push(child);
        }
        for i in 1..=2u8 {
            let deadline = Instant::now() + Duration::from_secs(15);
            while last_sync(&cluster.node(i).host.ns).is_none() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "kube-proxy-rs on node{i} did not sync; see {}",
                    work.join(format!("node{i}.log")).display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        println!(
            "kube-proxy-rs ({}) is running on node1 and node2\n",
            args.proxy_mode
        );
        let timeout = Duration::from_millis(800);
        for fam in IpFamily::ALL {
            let v6 = fam == IpFamily::V6;
            for svc in state.family(fam).services.values() {
                for port in &svc.ports {
                    let info = &port.info;
                    let proto = info.name.protocol;
                    let send =
                        |from: &Host, ip: IpAddr, p: u16| -> Vec<Result<Answer, RequestError>> {
                            (0..args.requests)
                                .map(|_| match proto {
                                    kpr_model::Protocol::Udp => {
                                        client::udp(&from.ns, 0, ip, p, timeout)
                                    }
                                    _ => client::tcp(&from.ns, ip, p, timeout),
                                })
                                .collect()
                        };
                    let name = format!("{} ({proto})", info.name);
                    let pod = &cluster.pods[client_pod];
                    println!(
                        "{name:<34} ClusterIP {:<22} from a pod:      {}",
                        format!("{}:{}", info.cluster_ip, info.port),
                        describe(&send(pod, info.cluster_ip, info.port), pod, v6)
                    );
                    if let Some(np) = info.node_port {
                        let node_ip = cluster.node(1).host.ip(v6);
                        let c = &cluster.client;
                        println!(
                            "{:<34} NodePort  {:<22} from outside:    {}",
                            "",
                            format!("{}", std::net::SocketAddr::new(node_ip, np)),
                            describe(&send(c, node_ip, np), c, v6)
                        );
                    }
                    for lb in info.load_balancer_vips.iter().chain(&info.external_ips) {
                        for c in [&cluster.client, &cluster.blocked_client] {
                            println!(
                                "{:<34} external  {:<22} from {:<12}   {}",
                                "",
                                format!("{}", std::net::SocketAddr::new(*lb, info.port)),
                                c.ip(v6),
                                describe(&send(c, *lb, info.port), c, v6)
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })();
    for mut p in proxies {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = p.wait();
    }
    drop(backends);
    drop(cluster);
    let logs = work.clone();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
        println!("\nsandbox torn down (namespaces, links and rules removed)");
    } else {
        println!("\nproxy logs kept in {}", logs.display());
    }
    result
}
