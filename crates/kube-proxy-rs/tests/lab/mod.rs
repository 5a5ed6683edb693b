//! The real-traffic lab: a two-node cluster in network namespaces (from
//! `kpr-netns-lab`), the real `kube-proxy-rs` binary running in each node namespace
//! from a manifest directory the test writes, and helpers to wait for syncs and to
//! send traffic. Everything is torn down on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use kpr_netns_lab::backend::{Backend, serve};
use kpr_netns_lab::client::{self, Answer, RequestError};
use kpr_netns_lab::{Cluster, Host, Netns};

pub mod manifests;
pub mod scenarios;

/// Timeout for one request.
pub const T: Duration = Duration::from_millis(1500);

/// The lab.
pub struct Lab {
    pub cluster: Cluster,
    pub mode: String,
    pub dir: PathBuf,
    proxies: Vec<Option<std::sync::Mutex<Child>>>,
    backends: Vec<Backend>,
    extra_args: Vec<String>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kube-proxy-rs")
}

impl Lab {
    /// Builds the cluster and a manifest directory per node (not yet started).
    pub fn new(mode: &str) -> Self {
        let cluster = Cluster::new(2).expect("test bed");
        let dir = std::env::temp_dir().join(format!(
            "kpr-lab-{}-{}",
            std::process::id(),
            cluster.nodes[0].host.ns.name()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            cluster,
            mode: mode.to_string(),
            dir,
            proxies: vec![None, None],
            backends: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// Extra flags for the proxies started after this call.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The manifest directory of node `i` (1-based).
    pub fn manifest_dir(&self, i: u8) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// Writes `text` as `name` into both nodes' manifest directories, atomically
    /// (write then rename), as an operator's tooling would.
    pub fn write_manifest(&self, name: &str, text: &str) {
        for i in 1..=2 {
            let d = self.manifest_dir(i);
            std::fs::create_dir_all(&d).unwrap();
            let tmp = d.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, d.join(name)).unwrap();
        }
    }

    /// Removes manifest `name` from both nodes.
    pub fn remove_manifest(&self, name: &str) {
        for i in 1..=2 {
            let _ = std::fs::remove_file(self.manifest_dir(i).join(name));
        }
    }

    /// Adds a pod with a backend answering on `port`.
    pub fn pod(&mut self, node: u8, name: &str, port: u16) -> usize {
        let idx = self.cluster.add_pod(node, name).unwrap();
        let b = serve(&self.cluster.pods[idx].ns, name, port).unwrap();
        self.backends.push(b);
        idx
    }

    /// A host-network backend on node `i`.
    pub fn host_backend(&mut self, node: u8, name: &str, port: u16) {
        let host = &self.cluster.node(node).host;
        let addrs = [IpAddr::V4(host.ip4), IpAddr::V6(host.ip6)];
        let b = kpr_netns_lab::backend::serve_on(&host.ns, name, &addrs, port).unwrap();
        self.backends.push(b);
    }

    /// Starts (or restarts) the proxy on node `i` and waits for its first sync.
    pub fn start_proxy(&mut self, i: u8) {
        let ns = &self.cluster.node(i).host.ns;
        std::fs::create_dir_all(self.manifest_dir(i)).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))
            .unwrap();
        let mut cmd = ns.command(bin());
        cmd.args([
            &format!("--proxy-mode={}", self.mode),
            &format!("--manifests={}", self.manifest_dir(i).display()),
            &format!("--hostname-override=node{i}"),
            "--cluster-cidr=10.244.0.0/16,fd44::/16",
            "--v=2",
        ])
        // Also sets nftables.minSyncPeriod (upstream shares the flag).
        .args(match self.mode.as_str() {
            "iptables" | "nftables" => vec!["--iptables-min-sync-period=0s"],
            "ipvs" => vec!["--ipvs-min-sync-period=0s"],
            _ => vec![],
        })
        .args(&self.extra_args)
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().expect("start kube-proxy-rs");
        self.proxies[usize::from(i) - 1] = Some(std::sync::Mutex::new(child));
        self.wait_synced(i, None);
    }

    /// Starts both proxies.
    pub fn start(&mut self) {
        self.start_proxy(1);
        self.start_proxy(2);
    }

    /// Stops the proxy on node `i` with SIGTERM (rules stay in place).
    pub fn stop_proxy(&mut self, i: u8) {
        if let Some(child) = self.proxies[usize::from(i) - 1].take() {
            let mut child = child.into_inner().unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        status.success(),
                        "kube-proxy-rs on node{i} exited with {status}:\n{}",
                        self.log(i)
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kube-proxy-rs on node{i} did not exit on SIGTERM:\n{}",
                self.log(i)
            );
        }
    }

    /// The proxy log of node `i`.
    pub fn log(&self, i: u8) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default()
    }

    fn metrics_text(ns: &Netns) -> Option<String> {
        let addr = "127.0.0.1:10249".parse().ok()?;
        client::http_get(ns, addr, "/metrics", Duration::from_secs(2))
            .ok()
            .map(|(_, body)| body)
    }

    /// One per-family gauge of node `i`'s proxy, e.g.
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`: (family, seconds).
    fn family_gauge(&self, i: u8, name: &str) -> Vec<(String, f64)> {
        let Some(text) = Self::metrics_text(&self.cluster.node(i).host.ns) else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| {
                let family = l.split("ip_family=\"").nth(1)?.split('"').next()?;
                let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
                Some((family.to_string(), value))
            })
            .collect()
    }

    /// Latest successful sync time reported by node `i`'s proxy.
    pub fn last_sync(&self, i: u8) -> Option<f64> {
        self.family_gauge(i, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
            .into_iter()
            .map(|(_, t)| t)
            .reduce(f64::max)
    }

    /// Whether node `i` has programmed everything written before `since`: a change
    /// was queued after `since` (the directory watch saw the write) and every
    /// family has synced since the latest queued change. A sync only reads the
    /// directory after the loop took the change, so such a sync saw the write;
    /// a sync that merely ended after `since` (a periodic one, or one woken by an
    /// earlier write) may not have.
    fn synced_since(&self, i: u8, since: f64) -> bool {
        let queued = self.family_gauge(
            i,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        );
        let synced = self.family_gauge(i, "kubeproxy_sync_proxy_rules_last_timestamp_seconds");
        !queued.is_empty()
            && queued
                .iter()
                .all(|(family, q)| *q > since && synced.iter().any(|(f, s)| f == family && s >= q))
    }

    /// Waits (at most 10 s, or 90 s inside the emulated VM where every process
    /// start is many times slower) until node `i` has synced what was written
    /// before `since`; `None`: until its first sync.
    pub fn wait_synced(&self, i: u8, since: Option<SystemTime>) {
        let since = since.map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        });
        let limit = if in_vm() { 90 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(limit);
        while Instant::now() < deadline {
            let done = match since {
                Some(since) => self.synced_since(i, since),
                None => self.last_sync(i).is_some(),
            };
            if done {
                return;
            }
            if let Some(Some(status)) = self.proxies[usize::from(i) - 1]
                .as_ref()
                .map(|c| c.lock().unwrap().try_wait().ok().flatten())
            {
                panic!(
                    "kube-proxy-rs on node{i} exited with {status}:\n{}",
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("node{i} did not sync within {limit} s:\n{}", self.log(i));
    }

    /// Writes a manifest and waits until both proxies have synced it.
    pub fn apply(&self, name: &str, text: &str) {
        let t = SystemTime::now();
        self.write_manifest(name, text);
        for i in 1..=2 {
            if self.proxies[usize::from(i) - 1].is_some() {
                self.wait_synced(i, Some(t));
            }
        }
    }

    /// Removes a manifest and waits until both proxies have synced.
    pub fn delete(&self, name: &str) {
        let t = SystemTime::now();
        self.remove_manifest(name);
        for i in 1..=2 {
            if self.proxies[usize::from(i) - 1].is_some() {
                self.wait_synced(i, Some(t));
            }
        }
    }

    /// One TCP request from `from`.
    pub fn tcp(&self, from: &Host, ip: IpAddr, port: u16) -> Result<Answer, RequestError> {
        client::tcp(&from.ns, ip, port, T)
    }

    /// One UDP exchange from `from` (source port 0: ephemeral).
    pub fn udp(
        &self,
        from: &Host,
        source_port: u16,
        ip: IpAddr,
        port: u16,
    ) -> Result<Answer, RequestError> {
        client::udp(&from.ns, source_port, ip, port, T)
    }

    /// `n` TCP requests; the backends that answered, in order.
    pub fn tcp_many(
        &self,
        from: &Host,
        ip: IpAddr,
        port: u16,
        n: usize,
    ) -> Vec<Result<Answer, RequestError>> {
        (0..n).map(|_| self.tcp(from, ip, port)).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.proxies.iter_mut().flatten() {
            if let Ok(c) = c.get_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for i in 1..=2 {
                eprintln!("--- kube-proxy-rs log, node{i} ---\n{}", self.log(i));
            }
            if self.mode == "ipvs" {
                let ns = &self.cluster.node(1).host.ns;
                let state = ns.sh(
                    "ipvsadm -Ln; ip addr show kube-ipvs0; ip route show table local | grep kube-ipvs0; ipset list -t | grep -E 'Name|entries'; iptables-save -t nat; iptables-save -t filter",
                );
                eprintln!(
                    "--- node1 kernel ---\n{}",
                    state.unwrap_or_else(|e| e.to_string())
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True inside the emulated VM (`kpr_netns_lab::vm`), where everything is several
/// times slower.
pub fn in_vm() -> bool {
    std::env::var_os(kpr_netns_lab::vm::IN_VM_VAR).is_some()
}

/// Counts answers per backend name.
pub fn tally(
    answers: &[Result<Answer, RequestError>],
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for a in answers {
        let key = match a {
            Ok(a) => a.backend.clone(),
            Err(e) => format!("error: {e}"),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// The path of the test's own binary directory (for debugging output).
pub fn log_dir(lab: &Lab) -> &Path {
    &lab.dir
}
