//! The operator tools against a running proxy: `show` reads the frontends, backends
//! and connection counts from the node's kernel, and finds drift from manifests.

use std::io::Read;
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

use super::super::manifests::{Ep, Port, Svc, nodes, slice};
use super::super::{Lab, T};
use super::{ip, until_all};

fn show(lab: &Lab, node: u8, extra: &[&str]) -> Output {
    let mut cmd = lab
        .cluster
        .node(node)
        .host
        .ns
        .command(env!("CARGO_BIN_EXE_kube-proxy-rs"));
    cmd.args(["show", "--output", "json"])
        .arg(format!("--proxy-mode={}", lab.mode))
        .arg(format!("--hostname-override=node{node}"))
        .args(extra);
    cmd.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "show printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The frontend with this address (or NodePort, for `None`) and port.
fn frontend<'a>(
    report: &'a serde_json::Value,
    addr: Option<&str>,
    port: u16,
) -> &'a serde_json::Value {
    report["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["address"].as_str() == addr && f["port"] == port)
        .unwrap_or_else(|| panic!("no frontend {addr:?}:{port} in {report:#}"))
}

/// `show` lists the ClusterIP with both backends at 50% and the NodePort, counts a
/// held connection as active on the backend that took it, lists the Service
/// without endpoints as rejecting, and reports no drift against the manifests the
/// proxy runs from but one against manifests with a Service it never saw.
pub fn show_reads_the_kernel(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c1 = lab.cluster.add_pod(1, "client1").unwrap();
    let ports = vec![Port::tcp(80, 8080).node_port(30080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    let mut web = Svc::new("web", "10.96.0.10", ports.clone());
    web.type_ = "NodePort";
    lab.write_manifest(
        "web.yaml",
        &(web.yaml()
            + &slice(
                "web",
                "web-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.write_manifest(
        "empty.yaml",
        &Svc::new("empty", "10.96.0.11", vec![Port::udp(53, 5353)]).yaml(),
    );
    lab.start();
    let vip = ip("10.96.0.10");
    let seen = until_all(&lab, &lab.cluster.pods[c1], vip, 80, false, &["a", "b"], 40);
    assert_eq!(seen.len(), 2);

    // Hold a connection open (the backend keeps it up to 2 s) while `show` runs;
    // bounded retries in case a slow machine lets it close first.
    let mut counted = false;
    for _ in 0..5 {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
        let holder = lab.cluster.pods[c1]
            .ns
            .spawn(move || {
                let mut s =
                    TcpStream::connect_timeout(&"10.96.0.10:80".parse().unwrap(), T).unwrap();
                s.set_read_timeout(Some(T)).unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                ready_tx.send(text).unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(5));
            })
            .unwrap();
        let answer = ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let backend = if answer.starts_with('a') { a4 } else { b4 };
        let out = show(&lab, 1, &[]);
        tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&out);
        let f = frontend(&report, Some("10.96.0.10"), 80);
        let b = f["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == backend.to_string())
            .unwrap_or_else(|| panic!("{backend} not a backend of {f:#}"));
        if b["activeConnections"].as_u64().unwrap() >= 1 {
            counted = true;
            break;
        }
    }
    assert!(counted, "a held connection is counted as active");

    let report = json(&show(&lab, 1, &[]));
    let f = frontend(&report, Some("10.96.0.10"), 80);
    assert_eq!(f["kind"], "clusterIp");
    // IPVS keeps no names: the kernel cannot say which Service a server is for.
    let name = if mode == "ipvs" { "" } else { "lab/web:tcp" };
    assert_eq!(f["service"], name);
    assert_eq!(f["verdict"], "forward");
    let shares: Vec<f64> = f["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["share"].as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 2, "{f:#}");
    assert!(shares.iter().all(|s| (s - 0.5).abs() < 1e-6), "{shares:?}");
    // IPVS has one virtual server per node address; the others one rule for all.
    let node_ip = lab.cluster.node(1).host.ip(false).to_string();
    let np = if mode == "ipvs" {
        frontend(&report, Some(&node_ip), 30080)
    } else {
        frontend(&report, None, 30080)
    };
    assert_eq!(np["kind"], "nodePort");
    assert_eq!(np["backends"].as_array().unwrap().len(), 2);
    let empty = frontend(&report, Some("10.96.0.11"), 53);
    assert_eq!(empty["verdict"], "reject");

    // Drift against the manifests the proxy runs from: none, exit 0.
    let dir = lab.manifest_dir(1);
    let out = show(&lab, 1, &[&format!("--manifests={}", dir.display())]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json(&out)["drift"], serde_json::json!([]));
    // Against manifests with one more Service: it is reported missing, exit 2.
    let other = lab.dir.join("drift");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        other.join("new.yaml"),
        Svc::new("new", "10.96.0.12", vec![Port::tcp(80, 8080)]).yaml(),
    )
    .unwrap();
    let out = show(&lab, 1, &[&format!("--manifests={}", other.display())]);
    assert_eq!(out.status.code(), Some(2));
    let drift = json(&out)["drift"].clone();
    assert_eq!(drift.as_array().unwrap().len(), 1, "{drift:#}");
    assert_eq!(drift[0]["kind"], "missing");
    assert_eq!(drift[0]["service"], "lab/new:tcp");
    // The text table names the same things.
    let mut cmd = lab
        .cluster
        .node(1)
        .host
        .ns
        .command(env!("CARGO_BIN_EXE_kube-proxy-rs"));
    let out = cmd
        .args(["show", &format!("--proxy-mode={mode}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TCP  10.96.0.10:80"), "{text}");
    assert!(text.contains(&format!("  -> {a4}:8080")), "{text}");
    assert!(
        text.contains("UDP  10.96.0.11:53") && text.contains("reject"),
        "{text}"
    );
}
