#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// Kernel files in memory; some refuse writes with a given errno.
#[derive(Default)]
struct MemFiles {
    files: RefCell<BTreeMap<String, String>>,
    refuse: BTreeMap<String, i32>,
    writes: RefCell<Vec<String>>,
}

fn key(file: KernelFile) -> String {
    file.to_string()
}

impl MemFiles {
    fn with(mut self, file: KernelFile, value: &str) -> Self {
        self.files.get_mut().insert(key(file), value.to_string());
        self
    }
    fn refusing(mut self, file: KernelFile, errno: i32) -> Self {
        self.refuse.insert(key(file), errno);
        self
    }
    fn get(&self, file: KernelFile) -> Option<String> {
        self.files.borrow().get(&key(file)).cloned()
    }
}

impl KernelFiles for MemFiles {
    fn read(&self, file: KernelFile) -> io::Result<String> {
        self.get(file)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn write(&self, file: KernelFile, value: &str) -> io::Result<()> {
        if let Some(errno) = self.refuse.get(&key(file)) {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        if !self.files.borrow().contains_key(&key(file)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        self.writes.borrow_mut().push(format!("{file}={value}"));
        self.files
            .borrow_mut()
            .insert(key(file), format!("{value}\n"));
        Ok(())
    }
}

/// Upstream's defaults: 32768 per core, at least 131072, 24 h / 1 h TCP timeouts.
fn defaults() -> ConntrackSettings {
    ConntrackSettings {
        max_per_core: 32768,
        min: 131072,
        tcp_established_timeout: Some(Duration::from_secs(86400)),
        tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
        tcp_be_liberal: false,
        udp_timeout: None,
        udp_stream_timeout: None,
    }
}

/// A node whose kernel holds its own defaults, with `cpus` online.
fn node(cpus: &str, max: &str, hashsize: &str) -> MemFiles {
    MemFiles::default()
        .with(CPU_ONLINE, cpus)
        .with(CONNTRACK_MAX, max)
        .with(CONNTRACK_COUNT, "12")
        .with(HASHSIZE, hashsize)
        .with(TCP_ESTABLISHED, "432000")
        .with(TCP_CLOSE_WAIT, "60")
        .with(TCP_BE_LIBERAL, "0")
        .with(UDP_TIMEOUT, "30")
        .with(UDP_STREAM_TIMEOUT, "120")
}

fn lines(report: &SysctlReport) -> Vec<String> {
    report.outcomes.iter().map(ToString::to_string).collect()
}

/// `nf_conntrack_max` is max(maxPerCore x CPUs, min), nothing when maxPerCore is
/// 0, not capped at 1,048,576 (v1.35), clamped to what the sysctl accepts.
#[test]
fn conntrack_max_formula() {
    let s = defaults();
    assert_eq!(conntrack_max(&s, 2), Some(131072), "min wins on 2 CPUs");
    assert_eq!(conntrack_max(&s, 8), Some(262144));
    assert_eq!(conntrack_max(&s, 64), Some(2097152), "no 1M cap");
    let off = ConntrackSettings {
        max_per_core: 0,
        ..defaults()
    };
    assert_eq!(conntrack_max(&off, 64), None);
    let huge = ConntrackSettings {
        max_per_core: u32::MAX,
        ..defaults()
    };
    assert_eq!(conntrack_max(&huge, 1024), Some(i32::MAX as u64));
}

/// CPU lists as the kernel prints them are counted; garbage falls back.
#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3,6,8-9\n"), Some(7));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("x"), None);
    assert_eq!(online_cpus(&node("0-15", "1", "1")), 16);
    assert!(online_cpus(&MemFiles::default()) >= 1);
}

/// On 8 CPUs a smaller table is raised to 262144 with a hash of a quarter of
/// it, and the configured timeouts are written, in upstream's order.
#[test]
fn raises_max_and_hashsize_and_sets_timeouts() {
    let files = node("0-7", "65536", "16384");
    let report = apply_sysctls(&defaults(), &files);
    assert_eq!(report.cpus, 8);
    assert_eq!(
        lines(&report),
        [
            "set net.netfilter.nf_conntrack_max to 262144 (was 65536)",
            "set /sys/module/nf_conntrack/parameters/hashsize to 65536 (was 16384)",
            "set net.netfilter.nf_conntrack_tcp_timeout_established to 86400 (was 432000)",
            "set net.netfilter.nf_conntrack_tcp_timeout_close_wait to 3600 (was 60)",
        ]
    );
    assert_eq!(files.get(CONNTRACK_MAX).as_deref(), Some("262144\n"));
    assert_eq!(files.get(HASHSIZE).as_deref(), Some("65536\n"));
}

/// A bigger table or hash set by the operator is never lowered, and values
/// already right are not rewritten.
#[test]
fn never_lowers_and_skips_equal_values() {
    let files = node("0-1", "262144", "65536").with(TCP_ESTABLISHED, "86400\n");
    let report = apply_sysctls(&defaults(), &files);
    assert_eq!(
        lines(&report),
        [
            "net.netfilter.nf_conntrack_max is 262144, not lowered to 131072",
            "/sys/module/nf_conntrack/parameters/hashsize is 65536, not lowered to 32768",
            "net.netfilter.nf_conntrack_tcp_timeout_established is already 86400",
            "set net.netfilter.nf_conntrack_tcp_timeout_close_wait to 3600 (was 60)",
        ]
    );
    assert_eq!(
        *files.writes.borrow(),
        ["net.netfilter.nf_conntrack_tcp_timeout_close_wait=3600"]
    );
}

/// UDP timeouts and be_liberal are written only when configured; a timeout
/// under one second is skipped instead of written as 0.
#[test]
fn optional_settings() {
    let settings = ConntrackSettings {
        max_per_core: 0,
        tcp_established_timeout: None,
        tcp_close_wait_timeout: Some(Duration::from_millis(500)),
        tcp_be_liberal: true,
        udp_timeout: Some(Duration::from_secs(60)),
        udp_stream_timeout: Some(Duration::from_secs(120)),
        ..defaults()
    };
    let files = node("0", "1", "1");
    let report = apply_sysctls(&settings, &files);
    assert_eq!(
        lines(&report),
        [
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait not set to 0: 500ms is under one second; skipped",
            "set net.netfilter.nf_conntrack_tcp_be_liberal to 1 (was 0)",
            "set net.netfilter.nf_conntrack_udp_timeout to 60 (was 30)",
            "net.netfilter.nf_conntrack_udp_timeout_stream is already 120",
        ]
    );
}

/// Read-only and missing files are skipped with a one-line reason; other
/// errors are reported as failures; the rest is still applied.
#[test]
fn read_only_missing_and_failing_files() {
    let mut files = node("0-7", "65536", "16384")
        .refusing(CONNTRACK_MAX, 13)
        .refusing(HASHSIZE, 95)
        .refusing(TCP_CLOSE_WAIT, 22);
    files.files.get_mut().remove(&key(TCP_ESTABLISHED));
    let report = apply_sysctls(&defaults(), &files);
    let l = lines(&report);
    assert!(
        l[0].starts_with("net.netfilter.nf_conntrack_max not set to 262144: read-only here")
            && l[0].ends_with("set it on the host; skipped"),
        "{}",
        l[0]
    );
    assert!(
        l[1].contains("only from the host's initial network namespace"),
        "{}",
        l[1]
    );
    assert_eq!(
        l[2],
        "net.netfilter.nf_conntrack_tcp_timeout_established not set to 86400: \
         missing here (is the nf_conntrack module loaded?); skipped"
    );
    assert!(l[3].contains("Invalid argument"), "{}", l[3]);
    assert_eq!(report.skipped().count(), 3);
    assert_eq!(report.failed().count(), 1);
    assert!(l.iter().all(|l| !l.contains('\n')), "one line each");
    let ro = node("0", "1", "1").refusing(UDP_TIMEOUT, 30);
    let r = apply_sysctls(
        &ConntrackSettings {
            max_per_core: 0,
            udp_timeout: Some(Duration::from_secs(5)),
            ..defaults()
        },
        &ro,
    );
    assert!(
        matches!(&r.outcomes[2].action, SysctlAction::Skipped { reason } if reason.contains("Read-only file system")),
        "{:?}",
        r.outcomes
    );
}

/// Table usage reads count and max and warns above 90 %.
#[test]
fn table_usage() {
    let files = node("0", "1000", "1").with(CONNTRACK_COUNT, "900\n");
    let u = TableUsage::read(&files).unwrap();
    assert_eq!((u.count, u.max), (900, 1000));
    assert!(!u.is_nearly_full());
    assert!((u.ratio() - 0.9).abs() < 1e-9);
    let full = TableUsage {
        count: 901,
        max: 1000,
    };
    assert!(full.is_nearly_full());
    assert_eq!(TableUsage { count: 5, max: 0 }.ratio(), 0.0);
    let err = TableUsage::read(&MemFiles::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("net.netfilter.nf_conntrack_count: "),
        "{err}"
    );
}
