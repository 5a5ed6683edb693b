//! The data-plane benchmark runs end to end at a small size (as root): a test bed,
//! nftables and iptables mode programmed, connections through the ClusterIP and
//! straight to the pod, and the figure written.

#![allow(clippy::unwrap_used)]

mod common;

use common::{bench, bench_ok};

#[test]
fn data_plane_benchmark_runs_small() {
    let dir = std::env::temp_dir().join(format!("kpr-dp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("dp.svg");
    let stdout = bench_ok(
        bench()
            .args([
                "--data-plane",
                "--modes",
                "nftables,iptables",
                "--sizes",
                "10",
            ])
            .args(["--connections", "50", "--plot"])
            .arg(&plot),
    );
    for mode in ["nftables", "iptables"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(mode) && l.contains(" us ")),
            "no {mode} row in:\n{stdout}"
        );
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("nftables: ClusterIP"));
    std::fs::remove_dir_all(&dir).unwrap();
}
