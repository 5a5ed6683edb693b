//! The command line as operators use it: dry runs, one-line errors with exit 1,
//! the seed configuration, broken manifests next to good ones, and `--cleanup`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kpr_netns_lab::Netns;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// `--dry-run` on the bundled examples prints both families' iptables-restore input
/// and needs no root-level change (it never touches the kernel).
#[test]
fn dry_run_examples() {
    let examples = root().join("examples/manifests");
    let out = run(&[
        "--manifests",
        examples.to_str().unwrap(),
        "--dry-run",
        "--hostname-override=node1",
        "--cluster-cidr=10.244.0.0/16,fd44::/16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# IPv4"), "{stdout}");
    let v6 = stdout.find("# IPv6").expect("IPv6 part");
    assert!(stdout[..v6].contains("-A KUBE-SERVICES -m comment --comment \"shop/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80"));
    assert!(
        stdout[v6..].contains("-d fd96::30 --dport 7"),
        "the dual-stack Service's IPv6 ClusterIP"
    );
    assert!(
        text(&out.stderr).contains("prod/my-service: no spec.clusterIP; allocated"),
        "allocation is reported"
    );
    // The output loads as it is into iptables-restore (a test namespace checks the syntax).
    let ns = Netns::new("dry").unwrap();
    let mut child = ns
        .command("iptables-restore")
        .arg("--test")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let v4_text: String = stdout[..v6]
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(v4_text.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "dry-run output is valid iptables-restore input"
    );
}

/// `--dry-run` in nftables mode prints one script that loads, as it is, into an
/// empty namespace, creating both families' tables.
#[test]
fn dry_run_nftables_loads() {
    let examples = root().join("examples/manifests");
    let out = run(&[
        "--proxy-mode=nftables",
        "--manifests",
        examples.to_str().unwrap(),
        "--dry-run",
        "--hostname-override=node1",
        "--cluster-cidr=10.244.0.0/16,fd44::/16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# IPv4"), "{stdout}");
    assert!(
        stdout.contains(
            "add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-"
        )
    );
    assert!(stdout.contains("# IPv6"), "IPv6 part");
    let ns = Netns::new("dry-nft").unwrap();
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdout.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "dry-run output loads with nft -f"
    );
    let tables = ns.sh("nft list tables").unwrap();
    assert!(
        tables.contains("table ip kube-proxy") && tables.contains("table ip6 kube-proxy"),
        "{tables}"
    );
}

/// `--dry-run` in IPVS mode prints, per family, the servers in `ipvsadm -Sn` form,
/// the ipsets in `ipset restore` form and the rules; the sets and rules load as they
/// are into an empty namespace (the rules need the sets).
#[test]
fn dry_run_ipvs_loads() {
    let examples = root().join("examples/manifests");
    let out = run(&[
        "--proxy-mode=ipvs",
        "--ipvs-scheduler=sh",
        "--manifests",
        examples.to_str().unwrap(),
        "--dry-run",
        "--hostname-override=node1",
        "--cluster-cidr=10.244.0.0/16,fd44::/16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("# IPv4 IPVS virtual and real servers (ipvsadm -Sn)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "-A -t 10.96.0.10:80 -s sh\n-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1\n"
        )
    );
    assert!(
        stdout.contains("-A -t [fd96::30]:7 -s sh"),
        "IPv6 ClusterIP"
    );
    // Split into the parts by their heading lines.
    let mut parts: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(head) = line.strip_prefix("# ") {
            parts.push((head.to_string(), String::new()));
        } else if let Some((_, body)) = parts.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let part = |start: &str| -> String {
        parts
            .iter()
            .filter(|(h, _)| h.starts_with(start))
            .map(|(_, b)| b.clone())
            .collect()
    };
    let ns = Netns::new("dry-ipvs").unwrap();
    use std::io::Write;
    for (program, input) in [
        ("ipset", part("IPv4 ipsets") + &part("IPv6 ipsets")),
        ("iptables-restore", part("IPv4 rules")),
        ("ip6tables-restore", part("IPv6 rules")),
    ] {
        let mut cmd = ns.command(program);
        if program == "ipset" {
            cmd.arg("restore");
        } else {
            cmd.arg("--noflush");
        }
        let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "{program} takes the dry-run part"
        );
    }
    let sets = ns.sh("ipset list -n").unwrap();
    assert!(sets.contains("KUBE-6-LOAD-BALANCER-SOURCE-CID"), "{sets}");
    let rules = ns.sh("iptables -t filter -S KUBE-IPVS-FILTER").unwrap();
    assert!(
        rules.contains("--match-set KUBE-IPVS-IPS dst -j REJECT"),
        "{rules}"
    );
    let _ = ns.sh("iptables -t nat -F; iptables -t filter -F; ip6tables -t nat -F; ip6tables -t filter -F; ipset destroy");
}

/// Each bad input gives one line naming the flag or field and the value, and exit 1.
#[test]
fn bad_input_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  minSyncPerod: 1s\n").unwrap();
    let bad_duration = dir.path().join("dur.yaml");
    std::fs::write(&bad_duration, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  syncPeriod: 15x\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--proxy-mode=ipvsx".into()],
            "--proxy-mode: invalid value \"ipvsx\"",
        ),
        (
            vec!["--iptables-masquerade-bit=32".into()],
            "--iptables-masquerade-bit: invalid value \"32\"",
        ),
        (vec!["--cluster-cidr=10.0.0.0/33".into()], "10.0.0.0/33"),
        (vec!["--ipvs-scheduler=fastest".into()], "fastest"),
        (vec!["--iptables-sync-period=soon".into()], "soon"),
        (
            vec![format!("--config={}", bad_config.display())],
            "iptables.minSyncPerod",
        ),
        (
            vec![format!("--config={}", bad_duration.display())],
            "iptables.syncPeriod",
        ),
        (vec!["--no-such-flag".into()], "--no-such-flag"),
    ];
    for (args, needle) in cases {
        let mut full = args.clone();
        full.extend([
            "--manifests=/nonexistent".to_string(),
            "--dry-run".to_string(),
        ]);
        let out = bin().args(&full).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not name {needle:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The configuration from the seed notes loads unchanged (with warnings for keys
/// upstream removed long ago).
#[test]
fn seed_config_loads() {
    let seed = root().join("crates/config/tests/data/seed-001.yaml");
    let examples = root().join("examples/manifests");
    let out = run(&[
        "--config",
        seed.to_str().unwrap(),
        "--manifests",
        examples.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("*nat"));
}

/// A broken manifest file next to a good one: the problem names file, document,
/// object and field; the good Service is still rendered.
#[test]
fn broken_manifest_next_to_good_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: ns, name: good}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: ns, name: bad}\nspec: {clusterIP: 10.96.0.6, ports: [{port: 80, protocl: TCP}]}\n---\nkind: [\n",
    )
    .unwrap();
    let out = run(&["--manifests", dir.path().to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "bad.yaml: document 1: Service ns/bad: unknown field \"spec.ports[0].protocl\"; skipped"
        ),
        "{err}"
    );
    assert!(err.contains("bad.yaml: document 2: invalid YAML"), "{err}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "\"ns/good has no endpoints\" -m tcp -p tcp -d 10.96.0.5 --dport 80 -j REJECT"
        ),
        "good Service rendered: {stdout}"
    );
    assert!(!stdout.contains("ns/bad"), "bad Service skipped");
}

/// `--write-config-to` writes the effective configuration, which loads back.
#[test]
fn write_config_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let out = run(&[
        "--proxy-mode=iptables",
        "--iptables-sync-period=10s",
        &format!("--write-config-to={}", path.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("\"syncPeriod\": \"10s\""), "{written}");
    let out = run(&[
        &format!("--config={}", path.display()),
        "--manifests=/nonexistent",
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("/nonexistent"),
        "config loaded, then the manifest dir failed"
    );
}

/// `--cleanup` removes ours and upstream's chains in both families and can run twice.
#[test]
fn cleanup_is_idempotent() {
    let ns = Netns::new("cln").unwrap();
    for tool in ["iptables", "ip6tables"] {
        ns.exec(tool, &["-t", "nat", "-N", "KUBE-SERVICES"])
            .unwrap();
        ns.exec(tool, &["-t", "nat", "-N", "KUBE-SVC-XPGD46QRK7WJZT7O"])
            .unwrap();
        ns.exec(
            tool,
            &[
                "-t",
                "nat",
                "-A",
                "KUBE-SERVICES",
                "-j",
                "KUBE-SVC-XPGD46QRK7WJZT7O",
            ],
        )
        .unwrap();
        ns.exec(
            tool,
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES",
            ],
        )
        .unwrap();
    }
    for _ in 0..2 {
        let out = ns
            .command(env!("CARGO_BIN_EXE_kube-proxy-rs"))
            .arg("--cleanup")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        let saved = text(&ns.exec(tool, &[]).unwrap().stdout);
        assert!(!saved.contains("KUBE-"), "{tool}: {saved}");
    }
}

/// Without `--manifests` the proxy needs an API server; a missing kubeconfig is one
/// line naming it, exit 1, before anything on the node is touched.
#[test]
fn api_source_without_credentials_fails_in_one_line() {
    let ns = Netns::new("noapi").unwrap();
    let out = ns
        .command(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args([
            "--kubeconfig=/nonexistent/kubeconfig",
            "--hostname-override=n1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cannot set up the API client")
            && last.contains("/nonexistent/kubeconfig"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("serving /healthz"),
        "fails before starting anything: {stderr}"
    );
}

/// `check` in a test namespace: a new namespace has IPv4 forwarding off, which
/// `check` reports as a failure with the fix (exit 1); once it is set the check
/// passes and nothing fails.
#[test]
fn check_finds_ip_forward_off_and_passes_once_set() {
    let ns = Netns::new("chk").unwrap();
    let check = |json: bool| {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_kube-proxy-rs"));
        cmd.arg("check");
        if json {
            cmd.args(["--output", "json"]);
        }
        cmd.output().unwrap()
    };
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"])
        .unwrap();
    let out = check(false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("FAIL ip_forward: net.ipv4.ip_forward is 0")
            && stdout.contains("sysctl -w net.ipv4.ip_forward=1"),
        "{stdout}"
    );
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let out = check(false);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PASS ip_forward"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_ne!(out.status.code(), Some(1), "{stdout}");
    // The same findings as JSON.
    let out = check(true);
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip_forward = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "ip_forward")
        .unwrap();
    assert_eq!(ip_forward["severity"], "pass");
}

/// `show` and `check` take `--output text|json` and reject anything else in one line.
#[test]
fn tool_output_flag_is_checked() {
    let out = run(&["show", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "--output \"yaml\": must be text or json"
    );
    let out = run(&["check", "-o"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "-o needs a value: text or json");
}
