//! Conntrack sysctls on real kernel files: in a network namespace made by the
//! test, where the per-namespace `net.netfilter` sysctls are writable and
//! `nf_conntrack_max` is read-only, and on a directory mounted read-only. The
//! host's own sysctls and `/sys` are never written: `/sys` is a directory of the
//! test's.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kpr_config::ConntrackSettings;
use kpr_conntrack::{HostFiles, SysctlAction, apply_sysctls};
use kpr_netns_lab::Netns;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kpr-conntrack-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, rel: &str, content: &str) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sysctl(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const HASHSIZE: &str = "module/nf_conntrack/parameters/hashsize";
const CPUS: &str = "devices/system/cpu/online";

/// In a fresh network namespace the timeouts and be_liberal are written (and
/// only there: the host keeps its values); `nf_conntrack_max`, read-only
/// outside the initial namespace, is skipped with a message; the hash size is
/// raised in the test's `/sys`.
#[test]
fn writable_netns_sysctls() {
    let ns = Netns::new("cts").unwrap();
    let sys = TempDir::new("sys");
    sys.file(HASHSIZE, "1024\n");
    sys.file(CPUS, "0-3\n");
    let host_udp = Path::new("/proc/sys/net/netfilter/nf_conntrack_udp_timeout");
    let host_before = sysctl(host_udp);
    let host_max = sysctl(Path::new("/proc/sys/net/netfilter/nf_conntrack_max"));
    // More than the kernel has, so that a write is attempted.
    let min = u32::try_from(host_max + 1000).unwrap();
    let udp_timeout = if host_before == 47 { 48 } else { 47 };
    let settings = ConntrackSettings {
        max_per_core: 1,
        min,
        tcp_established_timeout: Some(Duration::from_secs(7200)),
        tcp_close_wait_timeout: Some(Duration::from_secs(1800)),
        tcp_be_liberal: true,
        udp_timeout: Some(Duration::from_secs(udp_timeout)),
        udp_stream_timeout: Some(Duration::from_secs(150)),
    };
    let files = HostFiles {
        proc_sys: PathBuf::from("/proc/sys"),
        sys: sys.0.clone(),
    };
    let report = ns.enter(move || apply_sysctls(&settings, &files)).unwrap();
    let lines: Vec<String> = report.outcomes.iter().map(ToString::to_string).collect();
    assert_eq!(report.cpus, 4);
    assert!(
        lines[0].starts_with(&format!(
            "net.netfilter.nf_conntrack_max not set to {min}: read-only here"
        )),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "set /sys/module/nf_conntrack/parameters/hashsize to {} (was 1024)",
            min / 4
        )
    );
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.starts_with("set ") || l.contains("already")),
        "{lines:#?}"
    );
    assert_eq!(report.skipped().count(), 1);
    assert_eq!(report.failed().count(), 0);
    assert_eq!(sys.read(HASHSIZE), (min / 4).to_string());

    let read = |name: &str| -> u64 {
        let out = ns.exec("sysctl", &["-n", name]).unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(read("net.netfilter.nf_conntrack_udp_timeout"), udp_timeout);
    assert_eq!(read("net.netfilter.nf_conntrack_udp_timeout_stream"), 150);
    assert_eq!(
        read("net.netfilter.nf_conntrack_tcp_timeout_established"),
        7200
    );
    assert_eq!(
        read("net.netfilter.nf_conntrack_tcp_timeout_close_wait"),
        1800
    );
    assert_eq!(read("net.netfilter.nf_conntrack_tcp_be_liberal"), 1);
    assert_eq!(
        sysctl(host_udp),
        host_before,
        "the host's namespace is untouched"
    );
}

/// A read-only mount (a container's `/proc/sys` and `/sys`): every write is
/// skipped with a one-line "read-only" message and nothing changes.
#[test]
fn read_only_files_are_skipped() {
    let dir = TempDir::new("ro");
    dir.file("proc/net/netfilter/nf_conntrack_max", "65536\n");
    dir.file("proc/net/netfilter/nf_conntrack_udp_timeout", "30\n");
    dir.file("sys/module/nf_conntrack/parameters/hashsize", "16384\n");
    dir.file("sys/devices/system/cpu/online", "0-7\n");
    let root = dir.0.clone();
    let report = std::thread::spawn(move || {
        use nix::mount::{MsFlags, mount};
        use nix::sched::{CloneFlags, unshare};
        // A mount namespace of this thread only, private, so that nothing it
        // mounts is seen elsewhere; it goes away with the thread.
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        mount(
            Some(&root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        let settings = ConntrackSettings {
            max_per_core: 32768,
            min: 131072,
            tcp_established_timeout: None,
            tcp_close_wait_timeout: None,
            tcp_be_liberal: false,
            udp_timeout: Some(Duration::from_secs(60)),
            udp_stream_timeout: None,
        };
        let files = HostFiles {
            proc_sys: root.join("proc"),
            sys: root.join("sys"),
        };
        apply_sysctls(&settings, &files)
    })
    .join()
    .unwrap();
    let lines: Vec<String> = report.outcomes.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(report.skipped().count(), 3, "{lines:#?}");
    for (line, prefix) in lines.iter().zip([
        "net.netfilter.nf_conntrack_max not set to 262144: read-only here (Read-only file system",
        "/sys/module/nf_conntrack/parameters/hashsize not set to 65536: read-only here",
        "net.netfilter.nf_conntrack_udp_timeout not set to 60: read-only here",
    ]) {
        assert!(line.starts_with(prefix), "{line}");
        assert!(!line.contains('\n'));
    }
    assert!(matches!(
        report.outcomes[0].action,
        SysctlAction::Skipped { .. }
    ));
    assert_eq!(dir.read("proc/net/netfilter/nf_conntrack_max"), "65536\n");
    assert_eq!(
        dir.read("sys/module/nf_conntrack/parameters/hashsize"),
        "16384\n"
    );
}
