//! Conntrack kernel tuning from the `conntrack` configuration, as upstream
//! kube-proxy applies it at start-up (v1.35 `pkg/proxy/conntrack/sysctls.go`,
//! `setSysctls` and `getConntrackMax`):
//!
//! - `nf_conntrack_max` = max(`maxPerCore` × CPUs, `min`) when `maxPerCore` > 0
//!   (0 leaves it, and `min`, alone). It is never lowered: a bigger value set by
//!   the operator stays (upstream PR 142035, after v1.35; v1.35 itself would
//!   lower it). Upstream 1.36+ also caps the value at 1,048,576 (PR 137002);
//!   we keep v1.35's uncapped value, so large machines get `maxPerCore` × CPUs.
//! - the module's `hashsize` (`/sys/module/nf_conntrack/parameters/hashsize`) is
//!   raised to a quarter of that value when smaller (never lowered).
//! - `nf_conntrack_tcp_timeout_established`, `_tcp_timeout_close_wait`,
//!   `_udp_timeout`, `_udp_timeout_stream`: set when configured (non-zero) and
//!   different; `nf_conntrack_tcp_be_liberal` set to 1 when `tcpBeLiberal`.
//!
//! CPUs are the node's online CPUs (`/sys/devices/system/cpu/online`, as
//! upstream's `cpuset.NumCPU`), not the process's CPU affinity.
//!
//! Unlike upstream, where any failure stops kube-proxy, a file that is read-only
//! (containers, `nf_conntrack_max` and `hashsize` outside the host's initial
//! network namespace) or missing is skipped with a one-line message in the
//! returned [`SysctlReport`]; other failures are reported as failed, for the
//! caller to decide.
//!
//! Files are reached through [`KernelFiles`], so tests can use a directory of
//! their own.

use std::fmt;
use std::io;
use std::path::PathBuf;

use kpr_config::ConntrackSettings;

use crate::error::ConntrackError;

/// A file of `/proc/sys` or `/sys`, relative to that root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFile {
    /// Under `/proc/sys` (a sysctl), e.g. `net/netfilter/nf_conntrack_max`.
    ProcSys(&'static str),
    /// Under `/sys`, e.g. `module/nf_conntrack/parameters/hashsize`.
    Sys(&'static str),
}

impl fmt::Display for KernelFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Sysctls are named as `sysctl` names them.
            KernelFile::ProcSys(p) => f.write_str(&p.replace('/', ".")),
            KernelFile::Sys(p) => write!(f, "/sys/{p}"),
        }
    }
}

/// `net.netfilter.nf_conntrack_max`.
pub const CONNTRACK_MAX: KernelFile = KernelFile::ProcSys("net/netfilter/nf_conntrack_max");
/// `net.netfilter.nf_conntrack_count` (read-only).
pub const CONNTRACK_COUNT: KernelFile = KernelFile::ProcSys("net/netfilter/nf_conntrack_count");
/// The conntrack module's hash table size.
pub const HASHSIZE: KernelFile = KernelFile::Sys("module/nf_conntrack/parameters/hashsize");
/// The node's online CPUs (`0-3,6`).
pub const CPU_ONLINE: KernelFile = KernelFile::Sys("devices/system/cpu/online");
const TCP_ESTABLISHED: KernelFile =
    KernelFile::ProcSys("net/netfilter/nf_conntrack_tcp_timeout_established");
const TCP_CLOSE_WAIT: KernelFile =
    KernelFile::ProcSys("net/netfilter/nf_conntrack_tcp_timeout_close_wait");
const TCP_BE_LIBERAL: KernelFile = KernelFile::ProcSys("net/netfilter/nf_conntrack_tcp_be_liberal");
const UDP_TIMEOUT: KernelFile = KernelFile::ProcSys("net/netfilter/nf_conntrack_udp_timeout");
const UDP_STREAM_TIMEOUT: KernelFile =
    KernelFile::ProcSys("net/netfilter/nf_conntrack_udp_timeout_stream");

/// Reads and writes kernel tuning files.
pub trait KernelFiles {
    /// The file's content.
    fn read(&self, file: KernelFile) -> io::Result<String>;
    /// Replaces the file's content with `value`.
    fn write(&self, file: KernelFile, value: &str) -> io::Result<()>;
}

/// Kernel files under two roots: `/proc/sys` and `/sys` on a real node. Sysctls
/// under `net/` are those of the calling thread's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFiles {
    /// Where `/proc/sys` is.
    pub proc_sys: PathBuf,
    /// Where `/sys` is.
    pub sys: PathBuf,
}

impl HostFiles {
    /// The real `/proc/sys` and `/sys`.
    pub fn real() -> Self {
        Self {
            proc_sys: PathBuf::from("/proc/sys"),
            sys: PathBuf::from("/sys"),
        }
    }

    fn path(&self, file: KernelFile) -> PathBuf {
        match file {
            KernelFile::ProcSys(p) => self.proc_sys.join(p),
            KernelFile::Sys(p) => self.sys.join(p),
        }
    }
}

impl KernelFiles for HostFiles {
    fn read(&self, file: KernelFile) -> io::Result<String> {
        std::fs::read_to_string(self.path(file))
    }

    fn write(&self, file: KernelFile, value: &str) -> io::Result<()> {
        // No create: a missing sysctl is missing, not a new file.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(file))?;
        f.write_all(value.as_bytes())
    }
}

/// What happened to one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlAction {
    /// Written.
    Set {
        /// The value before, when it could be read.
        from: Option<u64>,
    },
    /// Already right (or, for `nf_conntrack_max` and `hashsize`, bigger).
    Unchanged {
        /// The value found.
        value: u64,
    },
    /// Not written because the file is read-only or missing here; `reason` says
    /// which and what to do.
    Skipped {
        /// One line.
        reason: String,
    },
    /// Writing failed for another reason.
    Failed {
        /// The system's error.
        error: String,
    },
}

/// One setting: the file, the value wanted and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlOutcome {
    /// The file.
    pub file: KernelFile,
    /// The value wanted.
    pub wanted: u64,
    /// What happened.
    pub action: SysctlAction,
}

impl fmt::Display for SysctlOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, wanted) = (self.file, self.wanted);
        match &self.action {
            SysctlAction::Set { from: Some(from) } => {
                write!(f, "set {file} to {wanted} (was {from})")
            }
            SysctlAction::Set { from: None } => write!(f, "set {file} to {wanted}"),
            SysctlAction::Unchanged { value } if *value == wanted => {
                write!(f, "{file} is already {value}")
            }
            SysctlAction::Unchanged { value } => {
                write!(f, "{file} is {value}, not lowered to {wanted}")
            }
            SysctlAction::Skipped { reason } => {
                write!(f, "{file} not set to {wanted}: {reason}")
            }
            SysctlAction::Failed { error } => {
                write!(f, "{file} not set to {wanted}: {error}")
            }
        }
    }
}

/// What [`apply_sysctls`] did, setting by setting, in upstream's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlReport {
    /// Online CPUs used to size `nf_conntrack_max`.
    pub cpus: u64,
    /// One outcome per setting the configuration asks for.
    pub outcomes: Vec<SysctlOutcome>,
}

impl SysctlReport {
    /// Outcomes that were skipped (read-only or missing files).
    pub fn skipped(&self) -> impl Iterator<Item = &SysctlOutcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.action, SysctlAction::Skipped { .. }))
    }

    /// Outcomes that failed for another reason.
    pub fn failed(&self) -> impl Iterator<Item = &SysctlOutcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.action, SysctlAction::Failed { .. }))
    }
}

/// Online CPUs from a list such as `0-3,6,8-9`; `None` if unparsable or empty.
fn parse_cpu_list(s: &str) -> Option<u64> {
    let mut count = 0u64;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u64>().ok()?, hi.parse::<u64>().ok()?),
            None => {
                let n = part.parse::<u64>().ok()?;
                (n, n)
            }
        };
        count += hi.checked_sub(lo)? + 1;
    }
    (count > 0).then_some(count)
}

/// The node's online CPUs, else the CPUs this process may use.
pub fn online_cpus(files: &dyn KernelFiles) -> u64 {
    files
        .read(CPU_ONLINE)
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// The `nf_conntrack_max` the configuration asks for on `cpus` CPUs, as
/// upstream's `getConntrackMax` in v1.35 (no cap); `None` to leave it alone.
/// Values beyond what the sysctl accepts (a C int) are clamped.
pub fn conntrack_max(settings: &ConntrackSettings, cpus: u64) -> Option<u64> {
    if settings.max_per_core == 0 {
        return None;
    }
    let scaled = u64::from(settings.max_per_core).saturating_mul(cpus);
    Some(scaled.max(u64::from(settings.min)).min(i32::MAX as u64))
}

fn read_number(files: &dyn KernelFiles, file: KernelFile) -> io::Result<u64> {
    let text = files.read(file)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        )
    })
}

/// Sorts a write (or read) error into skipped or failed.
fn write_error(e: &io::Error) -> SysctlAction {
    const EROFS: i32 = 30;
    const EOPNOTSUPP: i32 = 95;
    let reason = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => {
            "missing here (is the nf_conntrack module loaded?); skipped".to_string()
        }
        (io::ErrorKind::PermissionDenied, _) | (_, Some(EROFS)) => format!(
            "read-only here ({e}): a container or a non-initial network namespace; \
             set it on the host; skipped"
        ),
        (_, Some(EOPNOTSUPP)) => format!(
            "the kernel allows it only from the host's initial network namespace ({e}); skipped"
        ),
        _ => {
            return SysctlAction::Failed {
                error: e.to_string(),
            };
        }
    };
    SysctlAction::Skipped { reason }
}

/// Sets `file` to `wanted` unless it already holds it (or, with `only_raise`,
/// more).
fn ensure(
    files: &dyn KernelFiles,
    file: KernelFile,
    wanted: u64,
    only_raise: bool,
) -> SysctlOutcome {
    let current = read_number(files, file);
    let action = match current {
        Ok(value) if value == wanted || (only_raise && value > wanted) => {
            SysctlAction::Unchanged { value }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_error(&e),
        current => match files.write(file, &wanted.to_string()) {
            Ok(()) => SysctlAction::Set { from: current.ok() },
            Err(e) => write_error(&e),
        },
    };
    SysctlOutcome {
        file,
        wanted,
        action,
    }
}

/// Applies the conntrack settings through `files` (use [`HostFiles::real`] on a
/// node). Never fails: every setting's outcome is in the report.
pub fn apply_sysctls(settings: &ConntrackSettings, files: &dyn KernelFiles) -> SysctlReport {
    let cpus = online_cpus(files);
    let mut outcomes = Vec::new();
    if let Some(max) = conntrack_max(settings, cpus) {
        outcomes.push(ensure(files, CONNTRACK_MAX, max, true));
        outcomes.push(ensure(files, HASHSIZE, max / 4, true));
    }
    let seconds = |file: KernelFile, d: Option<std::time::Duration>, out: &mut Vec<_>| {
        let Some(d) = d else { return };
        let secs = d.as_secs();
        if secs == 0 {
            // Upstream truncates to whole seconds and would write 0.
            out.push(SysctlOutcome {
                file,
                wanted: 0,
                action: SysctlAction::Skipped {
                    reason: format!("{d:?} is under one second; skipped"),
                },
            });
        } else {
            out.push(ensure(files, file, secs, false));
        }
    };
    seconds(
        TCP_ESTABLISHED,
        settings.tcp_established_timeout,
        &mut outcomes,
    );
    seconds(
        TCP_CLOSE_WAIT,
        settings.tcp_close_wait_timeout,
        &mut outcomes,
    );
    if settings.tcp_be_liberal {
        outcomes.push(ensure(files, TCP_BE_LIBERAL, 1, false));
    }
    seconds(UDP_TIMEOUT, settings.udp_timeout, &mut outcomes);
    seconds(
        UDP_STREAM_TIMEOUT,
        settings.udp_stream_timeout,
        &mut outcomes,
    );
    SysctlReport { cpus, outcomes }
}

/// How full the conntrack table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableUsage {
    /// Entries in the table (`nf_conntrack_count`, per network namespace).
    pub count: u64,
    /// The limit (`nf_conntrack_max`).
    pub max: u64,
}

impl TableUsage {
    /// Reads both numbers through `files`.
    pub fn read(files: &dyn KernelFiles) -> Result<Self, ConntrackError> {
        let number = |file: KernelFile| {
            read_number(files, file).map_err(|e| ConntrackError::File {
                path: file.to_string(),
                message: e.to_string(),
            })
        };
        Ok(Self {
            count: number(CONNTRACK_COUNT)?,
            max: number(CONNTRACK_MAX)?,
        })
    }

    /// `count / max` (0 when `max` is 0).
    pub fn ratio(&self) -> f64 {
        if self.max == 0 {
            0.0
        } else {
            self.count as f64 / self.max as f64
        }
    }

    /// More than 90 % full: new flows will soon be dropped ("table full").
    pub fn is_nearly_full(&self) -> bool {
        self.count.saturating_mul(10) > self.max.saturating_mul(9)
    }
}

/// The conntrack table usage of the calling thread's network namespace.
pub fn usage() -> Result<TableUsage, ConntrackError> {
    TableUsage::read(&HostFiles::real())
}

#[cfg(test)]
#[path = "sysctl_tests.rs"]
mod tests;
