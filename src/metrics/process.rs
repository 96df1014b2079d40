//! The standard `process_*` metrics (CPU time, resident and virtual memory,
//! open and allowed file descriptors, threads, start time) read from
//! `/proc/self` at each scrape, and `roomhost_build_info`.
//!
//! Read on scrape by a [`Collector`], never sampled in the background: the
//! numbers are as fresh as the scrape and cost nothing between scrapes. On a
//! system without `/proc` the process families are left out, not zeroed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The version and commit this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the build saw (`build.rs`), or "unknown" outside a checkout.
pub const COMMIT: &str = match option_env!("ROOMHOST_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// What `/proc/self` says about this process now.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where it cannot be read or parsed.
    pub fn read() -> Option<ProcessSample> {
        ProcessSample::read_from(std::path::Path::new("/proc/self"))
    }

    /// Reads another process's `/proc/<pid>` directory (the load generator
    /// reads the server's CPU time this way).
    pub fn read_from(proc_dir: &std::path::Path) -> Option<ProcessSample> {
        let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut sample = parse_stat(&stat, &boot, ticks.max(1) as f64, page.max(1) as u64)?;
        sample.open_fds = std::fs::read_dir(proc_dir.join("fd")).ok()?.count() as u64;
        sample.max_fds = std::fs::read_to_string(proc_dir.join("limits"))
            .ok()
            .and_then(|limits| parse_max_open_files(&limits));
        Some(sample)
    }
}

/// Parses `/proc/self/stat` (see proc(5)) with the boot time from `/proc/stat`.
fn parse_stat(stat: &str, proc_stat: &str, ticks: f64, page: u64) -> Option<ProcessSample> {
    // The command name may hold spaces and parentheses: the fields start
    // after its last ')'. Field 3 (state) is then index 0.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let boot: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessSample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: 0,
        max_fds: None,
    })
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Encodes the process families (unprefixed, as every exporter names them).
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: i64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            clamp(p.resident_bytes),
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            clamp(p.virtual_bytes),
        )?;
        gauge(
            "process_open_fds",
            "Open file descriptors",
            clamp(p.open_fds),
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit)",
                clamp(max),
            )?;
        }
        gauge(
            "process_threads",
            "OS threads in the process",
            clamp(p.threads),
        )?;
        let start = ConstGauge::new(p.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            None,
            start.metric_type(),
        )?)
    }
}

/// Encodes `roomhost_build_info{version, commit} 1`.
#[derive(Debug)]
pub struct BuildInfoCollector;

impl Collector for BuildInfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1i64);
        let metric = encoder.encode_descriptor(
            "build_info",
            "The version and git commit of this build; always 1",
            None,
            info.metric_type(),
        )?;
        // Labels in alphabetical order, as in every other family.
        let labels = [("commit", COMMIT), ("version", VERSION)];
        let mut metric = metric;
        info.encode(metric.encode_family(&labels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 1000 \
                    8192000 300 18446744073709551615";
        let sample = parse_stat(stat, "cpu 1 2\nbtime 1700000000\n", 100.0, 4096).unwrap();
        assert_eq!(sample.cpu_seconds, 3.0);
        assert_eq!(sample.threads, 7);
        assert_eq!(sample.start_time_seconds, 1_700_000_010.0);
        assert_eq!(sample.virtual_bytes, 8_192_000);
        assert_eq!(sample.resident_bytes, 300 * 4096);
        assert_eq!(parse_stat("garbage", "btime 1\n", 100.0, 4096), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95000                95000                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_reads_itself() {
        let p = ProcessSample::read().expect("/proc/self");
        assert!(
            p.resident_bytes > 0 && p.open_fds > 0 && p.threads >= 1,
            "{p:?}"
        );
        assert!(p.start_time_seconds > 1.6e9, "{p:?}");
    }
}
