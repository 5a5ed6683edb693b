//! The proxy process itself at scale: the generated cluster is written as manifests
//! or served by an API server (`--source`), the real `kube-proxy-rs` binary reads it
//! in a fresh network namespace, and the report gives what an operator sees on the
//! node: time from start to the first full sync in the kernel, the process's peak and
//! steady resident memory and its CPU time, then the latency of one new Service from
//! its file or watch event to the kernel.
//!
//! Unlike the in-process rows (which include the generator's own objects), these are
//! the numbers of the process that runs in production.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1 as core;
use kpr_bench::generate::{NODE, Shape, service, slices};
use kpr_netns_lab::Netns;
use serde::Serialize;
use serde_json::json;

use crate::api::ApiServer;
use crate::{Mode, row};

/// Writes the manifests of `shape`: one JSON `List` per kind (`services.json`,
/// `endpointslices.json`), and `node.json` with this node (InternalIP 10.0.0.1).
pub fn write_manifests(dir: &Path, shape: &Shape) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    write_list(
        &dir.join("services.json"),
        (0..shape.services).map(|i| service(i, shape)),
    )?;
    write_list(
        &dir.join("endpointslices.json"),
        (0..shape.services).flat_map(|i| slices(i, shape)),
    )?;
    let node: core::Node = serde_json::from_value(json!({
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
    }))?;
    write_list(&dir.join("node.json"), std::iter::once(node))
}

/// Streams `items` as `{"apiVersion":"v1","kind":"List","items":[...]}` (each item
/// serialized on its own, so the whole list is never held in memory), under a
/// temporary name renamed at the end: a watching proxy never reads half a file.
fn write_list<T: Serialize>(path: &Path, items: impl Iterator<Item = T>) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let file =
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(br#"{"apiVersion":"v1","kind":"List","items":["#)?;
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut out, &item)?;
    }
    out.write_all(b"]}\n")?;
    out.flush()?;
    drop(out);
    std::fs::rename(&partial, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Kills the proxy however the benchmark ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Memory and CPU of a running process, from `/proc`.
pub struct Usage {
    /// Peak resident set size (VmHWM), KiB.
    pub peak_kib: u64,
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// The [`Usage`] of process `pid`.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("/proc/{pid}/status: no {key}"))?;
        Ok(line[key.len()..]
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()?)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th fields of the line, in clock ticks (100 per second on Linux).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Usage {
        peak_kib: kib("VmHWM:")?,
        rss_kib: kib("VmRSS:")?,
        cpu: Duration::from_millis(ticks * 10),
    })
}

/// Waits (polling every 20 ms, at most `limit`) until the proxy's log has `count`
/// lines containing every one of `needles`.
fn wait_for_log(
    log: &Path,
    needles: &[&str],
    count: usize,
    limit: Duration,
    proxy: &mut Proxy,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if count_lines(&text, needles) >= count {
            return Ok(start.elapsed());
        }
        // A failed sync is retried by the proxy, but a benchmark of it means nothing.
        if let Some(failed) = text.lines().find(|l| l.contains("sync failed")) {
            anyhow::bail!("the proxy could not program the kernel: {failed}");
        }
        if let Some(status) = proxy.0.try_wait()? {
            anyhow::bail!("the proxy exited ({status}); its log:\n{text}");
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "no {needles:?} line within {limit:?}; the proxy's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The proxy binary: `--proxy-bin`, else `kube-proxy-rs` next to this program.
fn proxy_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the bench binary")?
            .join("kube-proxy-rs"),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it (cargo build --release -p kube-proxy-rs) or pass --proxy-bin",
        path.display()
    );
    Ok(path)
}

/// Where the proxy under test reads the cluster from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// A manifest directory (`--manifests`): a change is a new file, and the proxy
    /// re-reads the directory.
    Manifests,
    /// An API server (`--master`): the fake of kpr-kube-source's tests, speaking the
    /// real list/watch protocol; a change is one watch event, as in production.
    Api,
}

/// The source, set up with the generated cluster.
enum Feed {
    Manifests(PathBuf),
    Api(ApiServer),
}

impl Feed {
    fn arg(&self) -> String {
        match self {
            Self::Manifests(dir) => format!("--manifests={}", dir.display()),
            Self::Api(api) => format!("--master={}", api.url()),
        }
    }

    /// Before the measured change: from the API, the EndpointSlices of generated
    /// Service `i` (then a second for the proxy to take them), so that the change is
    /// the Service's one watch event and one sync, not a race between the slices'
    /// events and the Service's.
    fn prepare(&self, i: usize, shape: &Shape) {
        if let Self::Api(api) = self {
            api.add_slices(i, shape);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Adds generated Service `i`: from manifests, one file with the Service and its
    /// EndpointSlices; from the API, the Service's watch event (after [`Feed::prepare`]).
    fn add_service(&self, i: usize, shape: &Shape) -> anyhow::Result<()> {
        match self {
            Self::Manifests(dir) => {
                let mut items = vec![serde_json::to_value(service(i, shape))?];
                for slice in slices(i, shape) {
                    items.push(serde_json::to_value(slice)?);
                }
                write_list(&dir.join("added.json"), items.into_iter())
            }
            Self::Api(api) => {
                api.add_service_only(i, shape);
                Ok(())
            }
        }
    }
}

/// Runs the process benchmark: see the module documentation.
pub fn run(
    mode: Mode,
    source: Source,
    shape: &Shape,
    backend: &str,
    bin: Option<&Path>,
    keep_log: Option<&Path>,
) -> anyhow::Result<()> {
    let bin = proxy_binary(bin)?;
    let dir = tempfile::tempdir()?;
    let ns = Netns::new("proc")?;
    let started = Instant::now();
    let feed = match source {
        Source::Manifests => {
            let manifests = dir.path().join("manifests");
            write_manifests(&manifests, shape)?;
            row(
                "write manifests (JSON Lists)",
                format!("{:.1} s", started.elapsed().as_secs_f64()),
            );
            Feed::Manifests(manifests)
        }
        Source::Api => {
            let api = ApiServer::start(&ns)?;
            api.load(shape);
            row(
                "load the API server",
                format!("{:.1} s", started.elapsed().as_secs_f64()),
            );
            Feed::Api(api)
        }
    };
    let mode_name = match mode {
        Mode::Iptables => "iptables",
        Mode::Nftables => "nftables",
        Mode::Ipvs => "ipvs",
    };
    let log = keep_log.map_or_else(|| dir.path().join("proxy.log"), Path::to_path_buf);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()]).arg(&bin).args([
        &feed.arg(),
        &format!("--proxy-mode={mode_name}"),
        &format!("--hostname-override={NODE}"),
        "--metrics-bind-address=127.0.0.1:10249",
        "--healthz-bind-address=127.0.0.1:10256",
        "--iptables-min-sync-period=0s",
        "--v=2",
    ]);
    if mode == Mode::Iptables && backend != "default" {
        // The proxy runs whatever `iptables` is on PATH (as upstream does); put the
        // chosen backend's tools first.
        let tools = dir.path().join("bin");
        std::fs::create_dir_all(&tools)?;
        for base in ["iptables", "ip6tables"] {
            for tail in ["", "-save", "-restore"] {
                let target = which(&format!("{base}-{backend}{tail}"))?;
                std::os::unix::fs::symlink(target, tools.join(format!("{base}{tail}")))?;
            }
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", tools.display()));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("start kube-proxy-rs")?;
    // `ip netns exec` execs the proxy in place: same pid.
    let pid = child.id();
    let mut proxy = Proxy(child);
    let limit = Duration::from_secs(3600);
    // The generated Services are IPv4: the IPv6 family's (empty) sync says nothing.
    let first = wait_for_log(
        &log,
        &["rules applied", "family=IPv4", "full=true"],
        1,
        limit,
        &mut proxy,
    )?;
    let after_first = usage(pid)?;
    row(
        "start to first full sync in the kernel",
        format!("{:.2} s", first.as_secs_f64()),
    );

    // One new Service. From manifests: a new file, and the directory is re-read
    // (every file: the cost of the manifest source); from the API: the Service's
    // watch event, its EndpointSlices already there. Then one partial sync.
    feed.prepare(shape.services, shape);
    let applied = ["rules applied", "family=IPv4"];
    let before = count_lines(&std::fs::read_to_string(&log)?, &applied);
    let change = Instant::now();
    feed.add_service(shape.services, shape)?;
    wait_for_log(&log, &applied, before + 1, limit, &mut proxy)?;
    let latency = change.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let settled = usage(pid)?;
    row(
        match source {
            Source::Manifests => "one new Service: file written to kernel",
            Source::Api => "one new Service: watch event to kernel",
        },
        format!("{:.0} ms", latency.as_secs_f64() * 1000.0),
    );
    row(
        "CPU time of the proxy to the first sync",
        format!("{:.2} s", after_first.cpu.as_secs_f64()),
    );
    row(
        "peak RSS of kube-proxy-rs",
        format!("{} MB", after_first.peak_kib.max(settled.peak_kib) / 1024),
    );
    row(
        "RSS of kube-proxy-rs after the change",
        format!("{} MB", settled.rss_kib / 1024),
    );
    drop(proxy);
    drop(feed);
    drop(ns);
    Ok(())
}

/// Lines of `text` containing every one of `needles`.
fn count_lines(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// The full path of `program` on PATH.
fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found on PATH"))
}
