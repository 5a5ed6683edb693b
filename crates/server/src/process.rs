//! Process metrics with the names the Prometheus Go client exports for every Go
//! program, upstream kube-proxy included (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` on each scrape.
//! prometheus-client has no process collector, so this small one is ours.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Values read from `/proc`; `None` where a file could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Start time since the epoch, seconds.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The open-files limit.
    pub max_fds: Option<u64>,
}

/// Kernel constants the `/proc/self/stat` units depend on.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    /// Clock ticks per second (`_SC_CLK_TCK`; 100 on Linux).
    pub ticks_per_second: f64,
    /// Page size in bytes.
    pub page_size: u64,
    /// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
    pub boot_time: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's statistics.
    pub fn read() -> Self {
        let units = Units {
            // Linux reports USER_HZ, fixed at 100 for user space on every architecture.
            ticks_per_second: 100.0,
            page_size: page_size(),
            boot_time: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| boot_time(&s)),
        };
        let mut stats = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .map(|s| parse_stat(&s, units))
            .unwrap_or_default();
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        stats
    }
}

/// The page size: `AT_PAGESZ` from the auxiliary vector the kernel gave this
/// process (4096 if it cannot be read).
fn page_size() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| {
            // Pairs of native-endian usize: (type, value); AT_PAGESZ = 6.
            auxv.chunks_exact(16).find_map(|pair| {
                let kind = u64::from_ne_bytes(pair[..8].try_into().ok()?);
                let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
                (kind == 6).then_some(value)
            })
        })
        .unwrap_or(4096)
}

/// `btime` of `/proc/stat`.
pub fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU, memory and start time from `/proc/self/stat`.
pub fn parse_stat(stat: &str, units: Units) -> ProcessStats {
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcessStats::default();
    };
    // Fields from 3 (state) on; utime is field 14, stime 15, starttime 22,
    // vsize 23, rss 24 (proc(5)).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    ProcessStats {
        cpu_seconds: match (num(14), num(15)) {
            (Some(u), Some(s)) => Some((u + s) as f64 / units.ticks_per_second),
            _ => None,
        },
        resident_bytes: num(24).map(|pages| pages * units.page_size),
        virtual_bytes: num(23),
        start_time_seconds: match (num(22), units.boot_time) {
            (Some(ticks), Some(boot)) => Some(boot + ticks as f64 / units.ticks_per_second),
            _ => None,
        },
        open_fds: None,
        max_fds: None,
    }
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
pub fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The collector registered at the top level of the registry (no prefix).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        // A command name with a space and a parenthesis.
        let stat = "4242 (kube (proxy) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 8 0 12345 104857600 2560 18446744073709551615";
        let units = Units {
            ticks_per_second: 100.0,
            page_size: 4096,
            boot_time: Some(1_700_000_000.0),
        };
        let s = parse_stat(stat, units);
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.virtual_bytes, Some(104_857_600));
        assert_eq!(s.resident_bytes, Some(2560 * 4096));
        assert_eq!(s.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(parse_stat("garbage", units), ProcessStats::default());
    }

    #[test]
    fn limits_and_boot_time_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1.7e9));
    }

    /// This process's own numbers are plausible.
    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.unwrap() > 1_000_000);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }
}
