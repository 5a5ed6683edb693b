//! The data-plane benchmark: what a packet pays for the rules, not what a sync costs.
//!
//! For each mode and each size, a one-node test bed ([`Cluster`]) gets `size`
//! generated Services (10 endpoints each, none of them reachable) plus one Service
//! in front of a real pod, programmed by that mode's proxier in the node namespace.
//! A client pod on the same node then opens fresh TCP connections, alternating
//! between the Service's ClusterIP and the pod's own address (the baseline, measured
//! in the same run, through the same node and the same conntrack table). Each
//! connection is timed from `connect` to the server's one-line answer; only its
//! first packet walks the NAT rules, so this is the per-connection cost of the
//! Service lookup. The Service is named to sort last, so iptables mode walks its
//! whole `KUBE-SERVICES` chain (the worst case, as for the last Service created).
//!
//! Loops are bounded in count and time, and traffic only goes to the test bed's
//! own addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kpr_bench::generate::{NODE, Shape, objects};
use kpr_iptables::exec::Runner;
use kpr_model::{IpFamily, LocalDetector, NodePortAddresses, Objects, Store};
use kpr_netns_lab::cluster::addr;
use kpr_netns_lab::{Cluster, Netns};
use serde_json::json;

use crate::{InNetns, Mode};

/// The benchmark Service's ClusterIP (outside the generated 10.96.0.10+ range).
const TARGET_VIP: &str = "10.100.0.1";
const PORT: u16 = 8080;
/// Longest a whole measurement loop may take.
const LOOP_LIMIT: Duration = Duration::from_secs(120);

/// One measured series.
#[derive(Clone, Debug)]
pub struct Series {
    /// Mode.
    pub mode: String,
    /// Generated Services programmed besides the target.
    pub services: usize,
    /// Full sync that programmed them.
    pub sync: Duration,
    /// Through the ClusterIP.
    pub vip: Latencies,
    /// Straight to the pod.
    pub direct: Latencies,
    /// Connections that failed; they are left out of the latencies.
    pub failed: Failures,
}

/// Connections that failed in one series.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    /// Through the ClusterIP.
    pub vip: usize,
    /// Straight to the pod.
    pub direct: usize,
    /// The first error, with its address.
    pub first: Option<String>,
}

impl Failures {
    fn record(&mut self, to: SocketAddr, e: &std::io::Error, through_vip: bool) {
        if through_vip {
            self.vip += 1;
        } else {
            self.direct += 1;
        }
        self.first.get_or_insert_with(|| format!("{to}: {e}"));
    }
}

/// Latency percentiles of one series.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Connections per second, one at a time.
    pub rate: f64,
}

impl Latencies {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let total: Duration = v.iter().sum();
        Latencies {
            p50: at(0.5),
            p99: at(0.99),
            rate: v.len() as f64 / total.as_secs_f64(),
        }
    }
}

/// A TCP server answering each connection with one line and closing it, without
/// polling (the test bed's backends poll every 5 ms, too coarse for this).
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns) -> anyhow::Result<Self> {
        let listener = ns.enter(|| -> std::io::Result<TcpListener> {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            // accept() honours the receive timeout: the loop sees `stop` in time.
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            sock.bind(&SocketAddr::from(([0, 0, 0, 0], PORT)).into())?;
            sock.listen(1024)?;
            Ok(sock.into())
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok((mut conn, _)) = listener.accept() {
                    let _ = conn.write_all(b"ok\n");
                }
            }
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: connect, read the answer, close. Its duration.
fn connect_once(to: SocketAddr) -> std::io::Result<Duration> {
    let start = Instant::now();
    // Longer than TCP's first SYN retransmission (1 s): a SYN dropped on the way
    // (IPVS does so when a new connection reuses the port of an old one still in
    // its table) is measured as a slow connection, not reported as a failure.
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf)?;
    let elapsed = start.elapsed();
    if n == 0 {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    Ok(elapsed)
}

/// Latencies of the connections that succeeded, through the ClusterIP and straight
/// to the pod, and the failures.
type Measured = (Vec<Duration>, Vec<Duration>, Failures);

/// `n` connections to each of `vip` and `direct`, alternating, from inside `ns`.
/// The warm-up must succeed; after it a failed connection is counted, not fatal
/// (a data plane that loses some connections is a result to report).
fn measure(ns: &Netns, vip: SocketAddr, direct: SocketAddr, n: usize) -> anyhow::Result<Measured> {
    ns.enter(move || -> anyhow::Result<Measured> {
        // Warm-up: ARP, routes, caches.
        for _ in 0..20 {
            connect_once(vip)
                .map_err(|e| anyhow::anyhow!("warm-up connection to the ClusterIP {vip}: {e}"))?;
            connect_once(direct)
                .map_err(|e| anyhow::anyhow!("warm-up connection to the pod {direct}: {e}"))?;
        }
        let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut failed = Failures::default();
        let start = Instant::now();
        for _ in 0..n {
            anyhow::ensure!(
                start.elapsed() < LOOP_LIMIT,
                "measurement took over {LOOP_LIMIT:?}"
            );
            match connect_once(vip) {
                Ok(t) => a.push(t),
                Err(e) => failed.record(vip, &e, true),
            }
            match connect_once(direct) {
                Ok(t) => b.push(t),
                Err(e) => failed.record(direct, &e, false),
            }
        }
        anyhow::ensure!(
            !a.is_empty() && !b.is_empty(),
            "every connection failed: {}",
            failed.first.unwrap_or_default()
        );
        Ok((a, b, failed))
    })?
}

/// The generated Services plus the target Service in front of `pod`.
fn objects_with_target(services: usize, pod: IpAddr) -> anyhow::Result<Objects> {
    let mut objs = objects(&Shape {
        services,
        endpoints: 10,
        dual_stack: false,
    });
    objs.services.push(serde_json::from_value(json!({
        "metadata": {"namespace": "zz-bench", "name": "target"},
        "spec": {"type": "ClusterIP", "clusterIP": TARGET_VIP, "clusterIPs": [TARGET_VIP],
                 "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]}
    }))?);
    objs.slices.push(serde_json::from_value(json!({
        "metadata": {"namespace": "zz-bench", "name": "target-1",
                     "labels": {"kubernetes.io/service-name": "target"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod.to_string()], "nodeName": NODE,
                       "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}]
    }))?);
    Ok(objs)
}

/// Programs `objs` into `node` with `mode`'s proxier; returns the proxier (dropping
/// it leaves the rules) and the time the full sync took.
fn program(
    mode: Mode,
    backend: kpr_iptables::apply::Backend,
    node: &Netns,
    objs: &Objects,
) -> anyhow::Result<(Box<dyn std::any::Any>, Duration)> {
    let mut store = Store::new(NODE);
    store.replace_all(objs);
    let snap = store.snapshot();
    let state = snap.family(IpFamily::V4);
    let runner: Arc<dyn Runner> = Arc::new(InNetns(node.name().to_string()));
    let cluster_cidr = LocalDetector::Cidr("10.244.0.0/16".parse()?);
    let node_ip: IpAddr = addr::node4(1).into();
    let start = Instant::now();
    let proxier: Box<dyn std::any::Any> = match mode {
        Mode::Iptables => {
            use kpr_iptables::apply::Iptables;
            let config = kpr_iptables::RenderConfig {
                local_detector: cluster_cidr,
                // Test-bed namespaces have no nfacct objects.
                nfacct: kpr_iptables::NfacctCounters::NONE,
                ..kpr_iptables::RenderConfig::new(IpFamily::V4)
            };
            let ipt = Iptables::new(IpFamily::V4, backend, runner);
            let mut p = kpr_iptables::proxier::FamilyProxier::new(ipt, config);
            p.sync(state, true)?;
            Box::new(p)
        }
        Mode::Nftables => {
            let config = kpr_nftables::RenderConfig {
                local_detector: cluster_cidr,
                node_port_addresses: NodePortAddresses::Ips(vec![node_ip]),
                service_cidrs: vec!["10.96.0.0/12".parse()?, "10.100.0.0/16".parse()?],
                node_ip: Some(node_ip),
                ..kpr_nftables::RenderConfig::new(IpFamily::V4)
            };
            let nft = crate::nft_netlink(node, runner)?;
            let mut p = kpr_nftables::FamilyProxier::new(nft, config);
            p.sync(state, true)?;
            Box::new(p)
        }
        Mode::Ipvs => {
            use kpr_iptables::apply::Iptables;
            use kpr_ipvs::PlanConfig;
            use kpr_ipvs::device::Device;
            use kpr_ipvs::ipset::Ipset;
            let config = PlanConfig {
                local_detector: cluster_cidr,
                node_port_ips: vec![node_ip],
                node_addresses: [node_ip].into_iter().collect(),
                node_ip: Some(node_ip),
                ..PlanConfig::new(IpFamily::V4)
            };
            // What kube-proxy-rs sets at start in IPVS mode: without conntrack for
            // IPVS, replies bridged straight back to a client pod on the same node
            // miss the reverse NAT and every connection times out.
            for (path, value) in kpr_ipvs::SYSCTLS {
                node.exec(
                    "sysctl",
                    &["-qw", &format!("{}={value}", path.replace('/', "."))],
                )?;
            }
            let (table, links) = crate::ipvs::handles(node)?;
            let mut p = kpr_ipvs::FamilyProxier::new(
                config,
                Vec::new(),
                Box::new(table),
                Box::new(Device(links)),
                Ipset::new(runner.clone()),
                Iptables::new(IpFamily::V4, backend, runner),
            );
            p.sync(state, true)?;
            Box::new(p)
        }
    };
    Ok((proxier, start.elapsed()))
}

/// Measures one mode at one size in a fresh test bed.
pub fn run_one(
    mode: Mode,
    backend: kpr_iptables::apply::Backend,
    services: usize,
    connections: usize,
) -> anyhow::Result<Series> {
    let mut lab = Cluster::new(1)?;
    let web = lab.add_pod(1, "web")?;
    let cli = lab.add_pod(1, "cli")?;
    let pod_ip = IpAddr::V4(lab.pods[web].ip4);
    let server = Server::start(&lab.pods[web].ns)?;
    let objs = objects_with_target(services, pod_ip)?;
    let (proxier, sync) = program(mode, backend, &lab.node(1).host.ns, &objs)?;
    let vip = SocketAddr::new(TARGET_VIP.parse()?, 80);
    let direct = SocketAddr::new(pod_ip, PORT);
    let (a, b, failed) = measure(&lab.pods[cli].ns, vip, direct, connections)?;
    drop(server);
    drop(proxier);
    drop(lab);
    Ok(Series {
        mode: format!("{mode:?}").to_lowercase(),
        services,
        sync,
        vip: Latencies::of(a),
        direct: Latencies::of(b),
        failed,
    })
}

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

/// Runs every mode at every size and prints one table row per series.
pub fn run(
    modes: &[Mode],
    backend: kpr_iptables::apply::Backend,
    sizes: &[usize],
    connections: usize,
) -> anyhow::Result<Vec<Series>> {
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    // The client and the pod share a bridge: without br_netfilter the pod's replies
    // are bridged straight back, skip the reverse NAT, and every connection times out.
    anyhow::ensure!(
        std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists(),
        "br_netfilter is not loaded (run modprobe br_netfilter): replies between pods on \
         one bridge would skip the Service NAT"
    );
    println!(
        "data plane: {connections} new TCP connections each through the ClusterIP and \
         straight to the pod, alternating, from a pod on the same node"
    );
    println!(
        "{:<9} {:>8} {:>10} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "mode",
        "services",
        "full sync",
        "VIP p50",
        "VIP p99",
        "VIP c/s",
        "pod p50",
        "pod p99",
        "pod c/s"
    );
    let mut out = Vec::new();
    for &mode in modes {
        for &size in sizes {
            let s = run_one(mode, backend, size, connections)?;
            println!(
                "{:<9} {:>8} {:>10} | {:>9} {:>9} {:>9.0} | {:>9} {:>9} {:>9.0}",
                s.mode,
                s.services,
                crate::ms(s.sync),
                us(s.vip.p50),
                us(s.vip.p99),
                s.vip.rate,
                us(s.direct.p50),
                us(s.direct.p99),
                s.direct.rate
            );
            if let Some(first) = &s.failed.first {
                println!(
                    "          failed connections: {} through the ClusterIP, {} to the pod \
                     (first: {first})",
                    s.failed.vip, s.failed.direct
                );
            }
            out.push(s);
        }
    }
    Ok(out)
}
