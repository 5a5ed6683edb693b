//! The process benchmark runs end to end at a small size (as root): generated
//! manifests or the fake API server, the real `kube-proxy-rs` binary in a fresh
//! namespace, its first sync, one new Service, and the report rows. The written manifests are also what
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

/// Runs the process benchmark on 20 Services from `source`; checks the report's rows
/// (the change's named `change_row`) and the proxy's syncs.
fn runs_small(source: &str, change_row: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let stdout = bench_ok(
        bench()
            .args(["--process", "--mode", "nftables", "--services", "20"])
            .args(["--source", source])
            .arg("--proxy-bin")
            .arg(proxy_binary())
            .arg("--proxy-log")
            .arg(&log),
    );
    for (row, unit) in [
        ("start to first full sync in the kernel", " s"),
        (change_row, " ms"),
        ("peak RSS of kube-proxy-rs", " MB"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(row) && l.ends_with(unit)),
            "no {row:?} row in:\n{stdout}"
        );
    }
    // The proxy did a full sync of the 20 Services, then a partial one for the 21st
    // that wrote its chains (its endpoints were there: not an empty Service).
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("full=true services_changed=20 "), "{log}");
    let partial = log
        .lines()
        .rfind(|l| l.contains("rules applied") && l.contains("full=false"))
        .unwrap_or_else(|| panic!("no partial sync in:\n{log}"));
    assert!(partial.contains("services_changed=1 "), "{partial}");
    let operations: usize = partial
        .split_once("operations=")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no operations count in {partial}"));
    assert!(
        operations > 12,
        "an empty Service's few operations: {partial}"
    );
}

#[test]
fn process_benchmark_runs_small() {
    runs_small("manifests", "one new Service: file written to kernel");
}

/// The same against the fake API server: the change is one watch event.
#[test]
fn process_benchmark_runs_small_from_the_api() {
    runs_small("api", "one new Service: watch event to kernel");
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
