//! Every golden ruleset, loaded by the real `iptables-restore` into a namespace of its
//! own (both backends), gives the kernel exactly the chains and rules the text says,
//! in the text's order: the check that our restore layout (each Service port's chains
//! declared just before its rules) means what upstream's layout means. A chain
//! declared after rules were added to it would lose them (a declaration flushes);
//! a jump to a chain not yet declared would fail the load.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kpr_iptables::dump::Dump;
use kpr_netns_lab::Netns;

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Per table and chain (sorted): the jump target of each rule in order.
fn shape(dump: &Dump) -> Vec<String> {
    let mut out = Vec::new();
    for table in &dump.tables {
        let mut chains: Vec<_> = table
            .chains
            .iter()
            .filter(|c| c.name.starts_with("KUBE-"))
            .collect();
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        for chain in chains {
            let jumps: Vec<&str> = chain
                .rules
                .iter()
                .map(|r| r.jump.as_deref().unwrap_or("-"))
                .collect();
            out.push(format!(
                "{} {}: {}",
                table.name,
                chain.name,
                jumps.join(" ")
            ));
        }
    }
    out.sort();
    out
}

/// Runs `program --noflush` in `ns` with `text` as its input.
fn restore_in(ns: &Netns, program: &str, text: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = ns
        .command(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn golden_rulesets_load_as_written() {
    let mut checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(golden_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        for (family, restore, save) in [
            ("v4", "iptables", "iptables"),
            ("v6", "ip6tables", "ip6tables"),
        ] {
            let path = dir.join(format!("iptables.{family}"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // The namespace has no nfacct counters to match on.
            let text = text.replace(" -m nfacct --nfacct-name localhost_nps_accepted_pkts", "");
            let text = text.replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "");
            let wanted = shape(&Dump::parse(&text).unwrap());
            for backend in ["legacy", "nft"] {
                let ns = Netns::new("golden").unwrap();
                let out = restore_in(&ns, &format!("{restore}-{backend}-restore"), &text);
                assert!(
                    out.status.success(),
                    "{} ({backend}): {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let saved = ns.exec(&format!("{save}-{backend}-save"), &[]).unwrap();
                let saved = String::from_utf8(saved.stdout).unwrap();
                let got = shape(&Dump::parse(&saved).unwrap());
                assert_eq!(got, wanted, "{} ({backend})", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 90, "only {checked} rulesets checked");
}
