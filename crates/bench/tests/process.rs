//! The process benchmark runs end to end at a small size (as root): generated
//! manifests, the real `kube-proxy-rs` binary in a fresh namespace, its first sync,
//! one new Service, and the report rows. The written manifests are also what
//! `kube-proxy-rs --manifests` reads without a complaint.
//!
//! Uses the `kube-proxy-rs` binary next to `kpr-bench` (`cargo test --workspace`
//! builds both).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{bench, bench_ok};

fn proxy_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_kpr-bench"));
    let proxy = bench.with_file_name("kube-proxy-rs");
    assert!(
        proxy.is_file(),
        "{} missing: build it first (cargo build -p kube-proxy-rs)",
        proxy.display()
    );
    proxy
}

#[test]
fn process_benchmark_runs_small() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let stdout = bench_ok(
        bench()
            .args(["--process", "--mode", "nftables", "--services", "20"])
            .arg("--proxy-bin")
            .arg(proxy_binary())
            .arg("--proxy-log")
            .arg(&log),
    );
    for (row, unit) in [
        ("start to first full sync in the kernel", " s"),
        ("one new Service: files written to kernel", " ms"),
        ("peak RSS of kube-proxy-rs", " MB"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(row) && l.ends_with(unit)),
            "no {row:?} row in:\n{stdout}"
        );
    }
    // The proxy did a full sync of the 20 Services, then a partial one for the 21st.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("full=true services_changed=20 "), "{log}");
    assert!(log.contains("full=false services_changed=1 "), "{log}");
}

#[test]
fn written_manifests_load_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("m");
    bench_ok(
        bench()
            .args(["--services", "5", "--write-manifests"])
            .arg(&manifests),
    );
    let out = Command::new(proxy_binary())
        .arg(format!("--manifests={}", manifests.display()))
        .args([
            "--dry-run",
            "--proxy-mode=nftables",
            "--hostname-override=bench-node",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
    // Service 0's ClusterIP and NodePort-less port, Service 4 too.
    assert!(stdout.contains("10.96.0.10 . tcp . 80"), "{stdout}");
    assert!(stdout.contains("10.96.0.14 . tcp . 80"), "{stdout}");
}
