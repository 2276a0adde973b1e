//! The process's own CPU time, memory and descriptors, read from `/proc/self` at
//! each scrape.
//!
//! The names are the ones every Prometheus client library exports
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), not
//! `shardline_*`: dashboards and alert rules written for any process read them
//! as they are.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::encode_gauge;

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What `/proc/self/stat` says.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User plus system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parses `/proc/self/stat`; the command name in parentheses may hold spaces.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Fields after the name, counted from 0: state is 0, utime 11, stime 12,
    // starttime 19, vsize 20, rss 21.
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(11)? + num(12)?,
        start_ticks: num(19)?,
        virtual_bytes: num(20)?,
        resident_pages: num(21)?,
    })
}

/// Boot time in Unix seconds, from `/proc/stat`.
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a system setting.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            return Ok(());
        };
        let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
        let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
        let cpu = ConstCounter::new(stat.cpu_ticks as f64 / ticks);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        encode_gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            stat.resident_pages * page,
        )?;
        encode_gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.virtual_bytes,
        )?;
        if let Some(boot) = boot_time() {
            encode_gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                boot as f64 + stat.start_ticks as f64 / ticks,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            encode_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                fds.count() as u64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_past_a_name_with_spaces() {
        let text = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1234 567890 77 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 1234,
                virtual_bytes: 567890,
                resident_pages: 77,
            })
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&text).unwrap();
        assert!(stat.resident_pages > 0, "{text}");
    }
}
